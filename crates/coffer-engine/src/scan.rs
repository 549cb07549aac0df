//! The scanner: what is on the local disk now (the "local" tree of the sync
//! model), read through the [`Fs`] seam.
//!
//! A **full scan** ([`Scanner::scan`]) walks the sync root; a **targeted
//! scan** ([`Scanner::scan_paths`]) re-reads only the paths a watcher
//! reported. Both skip the state folder, ignored paths ([`IgnoreRules`],
//! reloaded on every scan) and excluded subtrees (selective sync: an excluded
//! path is not even listed), and never follow symlinks.
//!
//! Invariants the planner relies on:
//!
//! - **Nothing uncertain looks deleted.** A directory that cannot be listed,
//!   a path that cannot be stat'ed or read, or that vanished mid-scan, goes
//!   to [`ScanResult::unreadable`]; a file that changed while it was read goes
//!   to [`ScanResult::unstable`]. Neither is in `entries`, and their subtrees
//!   must be treated as unknown, not as deleted. An unlistable directory
//!   itself is still in `entries` (we know it exists). If the root itself
//!   cannot be listed the whole scan fails ([`ScanError::Root`]): an
//!   unmounted drive must not look like "everything was deleted".
//! - **Ignored is not deleted** either: the topmost ignored paths that exist
//!   are in [`ScanResult::ignored`].
//! - **Hashes are of stable bytes.** A file is stat'ed before and after it is
//!   read; if (kind, size, mtime, inode) moved, or the bytes read do not add
//!   up to the size, the hash is thrown away.
//! - **The cache is trusted only when it is safe.** A file whose stat equals
//!   the cached one (see [`Stat::same_identity`]) keeps its cached hash,
//!   unless it is *racily clean*: its mtime is at or after the scan's
//!   *horizon*, so it could have been written again in the same clock
//!   tick after it was hashed. Those are always re-read. For the same
//!   reason the engine does not cache a file whose mtime was that recent
//!   when it was read: a later scan, when the tick is long past, would
//!   otherwise trust a stat that a second write in that tick left as it
//!   was.
//! - **The horizon is the file system's own time.** The engine stamps a
//!   file in its state folder just before a scan ([`Fs::stamp`]) and takes
//!   the mtime the file system gave it, as git compares mtimes with its
//!   index file's. That time comes from the same clock, at the same
//!   granularity (2 s on FAT, 1 s on some, a kernel tick on ext4), as
//!   every later write to the folder: a file whose mtime is before it
//!   cannot be written again without its mtime moving. Without a stamp
//!   (the state folder not writable), the horizon is the system clock's
//!   time less [`RACY_WINDOW_NS`].
//!
//! Hashing uses up to [`Scanner::with_threads`] threads (default: the number
//! of cores, at most 4); each holds one chunker buffer (`4 × max` chunk size)
//! at a time, so memory is bounded whatever the file sizes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use coffer_crypto::{AccountKeys, ChunkIdKey, ChunkerSeed, ContentHash};

use crate::chunker::{ChunkerParams, Hints, StreamChunker};
use crate::fs::{display_path, Clock, Fs, Stat, StatKind, SystemClock};
use crate::ignore::{IgnoreError, IgnoreRules, IgnoreWarning};
use crate::model::{FileHash, Node, NodeKind, RelPath, STATE_DIR};

/// When the file system's time cannot be had ([`Fs::stamp`] failed), a
/// file modified less than this long before a scan started (by the system
/// clock) is re-hashed even if its stat matches the cache: the coarsest
/// mtime granularity there is (FAT's) and some skew between the system's
/// clock and the file system's.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Whether a file with this mtime, read after `horizon_ns` (see
/// [`racy_horizon`]), is *racily clean*: it could be written again within
/// the same clock tick after it was read, with no stat to tell. The one
/// rule for both trusting the cache and writing to it.
pub fn is_racy(mtime_ns: i64, horizon_ns: i64) -> bool {
    mtime_ns >= horizon_ns
}

/// The horizon of the racily-clean rule for what is read from now on: the
/// file system's time, as it stamped `marker` (a file of the engine's own,
/// on the same file system as the synced files); or, if the stamp fails,
/// `clock`'s time less [`RACY_WINDOW_NS`].
///
/// Sound because a write stamps a file with the file system's time then,
/// which is no earlier than the stamp taken before it, and a file whose
/// mtime is before the horizon can only be written again with a later one.
/// With the stamp, a file written a few milliseconds before a scan is
/// trusted by its stat on a file system with fine timestamps; the system
/// clock's window had to cover FAT's 2 s slots everywhere.
pub fn racy_horizon(fs: &dyn Fs, marker: &Path, clock: &dyn Clock) -> i64 {
    match fs.stamp(marker) {
        Ok(ns) => ns,
        Err(e) => {
            tracing::debug!(error = %e, marker = %marker.display(), "no file system time; the system clock's racy window applies");
            clock.now_ns().saturating_sub(RACY_WINDOW_NS)
        }
    }
}

/// What the scanner remembers from the last time it looked: the stat and
/// the node found then. The local index implements it.
pub trait StatCache {
    /// The cached stat and node of `path`, if any.
    fn lookup(&self, path: &RelPath) -> Option<(Stat, Node)>;

    /// The chunks (content hash, length, in order) `path` last had, if
    /// known: they let a large file that changed be chunked again without
    /// running FastCDC over what did not change ([`Hints`]).
    fn chunk_hints(&self, _path: &RelPath) -> Option<Vec<(ContentHash, u32)>> {
        None
    }
}

/// Files at least this large are chunked with hints from the cache, and
/// their chunk lists are kept for the upload.
const HINT_MIN_BYTES: u64 = 4 << 20;
/// Files at least this large, without hints, are chunked from both ends
/// of a split at once (see [`Scanner::cut_in_halves`]).
const HALVES_MIN_BYTES: u64 = 64 << 20;

/// A hashed file's entry, and its chunk list if it is large.
type Hashed = (LocalEntry, Option<Vec<(ContentHash, u32)>>);

impl<S: std::hash::BuildHasher> StatCache for HashMap<RelPath, (Stat, Node), S> {
    fn lookup(&self, path: &RelPath) -> Option<(Stat, Node)> {
        self.get(path).cloned()
    }
}

impl StatCache for BTreeMap<RelPath, (Stat, Node)> {
    fn lookup(&self, path: &RelPath) -> Option<(Stat, Node)> {
        self.get(path).cloned()
    }
}

/// A cache that knows nothing: every file is hashed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCache;

impl StatCache for NoCache {
    fn lookup(&self, _: &RelPath) -> Option<(Stat, Node)> {
        None
    }
}

/// One path found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEntry {
    /// What is there, as synced.
    pub node: Node,
    /// The stat it was found with (for the cache).
    pub stat: Stat,
}

/// What a scan found. Vectors are sorted by path.
#[derive(Clone, Debug, Default)]
pub struct ScanResult {
    /// Everything found and readable (dirs, files with hashes, symlinks).
    pub entries: BTreeMap<RelPath, LocalEntry>,
    /// Paths that could not be listed, stat'ed or read, with why. Their
    /// subtrees are unknown (never "deleted").
    pub unreadable: Vec<(RelPath, String)>,
    /// Files that changed while being read; read them again later.
    pub unstable: Vec<RelPath>,
    /// Things never synced, with why: sockets, FIFOs, devices, names that
    /// are not UTF-8 (reported under a lossy name) or not valid paths.
    pub skipped: Vec<(RelPath, String)>,
    /// Pairs of names in one directory that would be the same file on a
    /// case-insensitive or normalisation-insensitive filesystem. Both are
    /// also in `entries`.
    pub collisions: Vec<(RelPath, RelPath)>,
    /// Topmost ignored paths that exist (their subtrees are not listed).
    pub ignored: Vec<RelPath>,
    /// Lines of `.cofferignore` that were skipped.
    pub ignore_warnings: Vec<IgnoreWarning>,
    /// How many files were read and hashed (the rest came from the cache).
    pub files_hashed: usize,
    /// The chunk lists (content hash, length) of the large files this scan
    /// hashed, with the stat they were read at, so that their upload need
    /// not run FastCDC again ([`Hints`]). At most [`KEPT_LIST_ENTRIES`]
    /// entries in all.
    pub lists: HashMap<RelPath, (Stat, Vec<(ContentHash, u32)>)>,
}

/// Chunk list entries a scan keeps for uploads (36 bytes each: 36 MiB).
pub const KEPT_LIST_ENTRIES: usize = 1 << 20;

impl ScanResult {
    fn sort(&mut self) {
        self.unreadable.sort();
        self.unstable.sort();
        self.skipped.sort();
        self.collisions.sort();
        self.ignored.sort();
    }
}

/// What a targeted scan found.
#[derive(Clone, Debug, Default)]
pub struct TargetedScan {
    /// The requested paths whose subtrees this scan describes: the requests,
    /// less those inside another request and those excluded. For each, an
    /// entry under it that is not in `result` (nor under an unreadable,
    /// unstable or ignored path) is gone. Directories above a covered path
    /// are not re-stat'ed (their mtimes, which sync ignores, may be stale).
    pub covered: Vec<RelPath>,
    /// Covered paths where nothing is any more (or whose parent is no longer
    /// a directory).
    pub missing: Vec<RelPath>,
    /// What was found under the covered paths.
    pub result: ScanResult,
}

/// A file read and hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedFile {
    /// The file node (size, mtime, executable bit, hash).
    pub node: Node,
    /// The stat before reading (equal to the one after).
    pub stat: Stat,
    /// Content hash and length of each chunk, in order.
    pub chunks: Vec<(ContentHash, u32)>,
}

/// Why a scan or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The sync root cannot be listed (missing, unmounted, not a directory,
    /// no permission).
    #[error("cannot read the sync folder {path}: {source}; check that it exists and is readable")]
    Root {
        /// The root.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The ignore file exists but cannot be read.
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    /// A path cannot be stat'ed or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file changed while it was read.
    #[error("{path} changed while it was being read; it will be read again")]
    Unstable {
        /// The path.
        path: String,
    },
    /// Not a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

impl ScanError {
    /// Whether trying again later can help: a file being written, a root
    /// being mounted, an interrupted read. Permissions and wrong kinds need
    /// the user.
    pub fn is_retryable(&self) -> bool {
        match self {
            ScanError::Root { source, .. } | ScanError::Io { source, .. } => transient(source),
            ScanError::Ignore(e) => e.is_retryable(),
            ScanError::Unstable { .. } => true,
            ScanError::NotAFile { .. } => false,
        }
    }
}

/// Reads the local tree of one sync root (see the module doc).
#[derive(Debug)]
pub struct Scanner {
    fs: Arc<dyn Fs>,
    root: PathBuf,
    chunk_id: ChunkIdKey,
    seed: ChunkerSeed,
    params: ChunkerParams,
    clock: Arc<dyn Clock>,
    /// The racily-clean rule's horizon, if taken before the scan.
    horizon_ns: Option<i64>,
    threads: usize,
    /// New files at least this large are cut in two halves at once
    /// ([`Scanner::cut_in_halves`]) when there are threads to spare.
    halves_min: u64,
}

/// Counts what passes through, so a short read can be detected.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// A path to report a bad name under: `dir/name` if valid, else something
/// close to it that is.
fn report_path(dir: Option<&RelPath>, name: &str) -> RelPath {
    let join = |n: &str| match dir {
        Some(d) => d.join(n),
        None => RelPath::new(n),
    };
    let mut short = name.replace('\0', "\u{fffd}");
    while short.len() > 200 {
        short.pop();
    }
    join(name)
        .or_else(|_| join(&short))
        .ok()
        .or_else(|| dir.cloned())
        .or_else(|| RelPath::new("\u{fffd}").ok())
        .unwrap_or_else(|| unreachable!("U+FFFD is a valid path"))
}

struct Walker<'a> {
    sc: &'a Scanner,
    cache: &'a dyn StatCache,
    excluded: &'a BTreeSet<RelPath>,
    rules: IgnoreRules,
    horizon_ns: i64,
    out: ScanResult,
    jobs: Vec<(RelPath, Stat)>,
}

impl Walker<'_> {
    /// Records the node at `rel`; true if it is a directory to descend into.
    fn node(&mut self, rel: RelPath, stat: Stat) -> bool {
        match stat.kind {
            StatKind::Dir => {
                let node = Node { mtime_ns: stat.mtime_ns, ..Node::dir() };
                self.out.entries.insert(rel, LocalEntry { node, stat });
                true
            }
            StatKind::Symlink => {
                match self.sc.fs.read_link(&self.sc.abs(&rel)) {
                    Ok(target) => {
                        let node = Node {
                            kind: NodeKind::Symlink,
                            size: 0,
                            mtime_ns: stat.mtime_ns,
                            executable: false,
                            hash: None,
                            target: Some(target),
                        };
                        self.out.entries.insert(rel, LocalEntry { node, stat });
                    }
                    Err(e) => self.out.unreadable.push((rel, e.to_string())),
                }
                false
            }
            StatKind::File => {
                match self.cached(&rel, &stat) {
                    Some(node) => {
                        self.out.entries.insert(rel, LocalEntry { node, stat });
                    }
                    None => self.jobs.push((rel, stat)),
                }
                false
            }
            StatKind::Other => {
                self.out
                    .skipped
                    .push((rel, "a socket, FIFO or device; only files, folders and links sync".into()));
                false
            }
        }
    }

    /// The cached node of an unchanged, not racily clean file.
    fn cached(&self, rel: &RelPath, stat: &Stat) -> Option<Node> {
        let (cstat, cnode) = self.cache.lookup(rel)?;
        let usable = cstat.same_identity(stat)
            && cnode.kind == NodeKind::File
            && cnode.hash.is_some()
            && !is_racy(stat.mtime_ns, self.horizon_ns);
        usable.then(|| Node {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            executable: stat.is_executable(),
            ..cnode
        })
    }

    /// Lists one directory (`None`: the root), recording its children and
    /// pushing subdirectories onto `stack`.
    fn list(&mut self, dir: Option<&RelPath>, stack: &mut Vec<RelPath>) -> io::Result<()> {
        let abs = dir.map_or_else(|| self.sc.root.clone(), |d| self.sc.abs(d));
        let names = self.sc.fs.read_dir(&abs)?;
        let mut keys: HashMap<String, RelPath> = HashMap::new();
        for name in names {
            let name = match name {
                Ok(n) => n,
                Err(bad) => {
                    self.out.skipped.push((report_path(dir, &bad.lossy), bad.to_string()));
                    continue;
                }
            };
            if dir.is_none() && name == STATE_DIR {
                continue;
            }
            let joined = match dir {
                Some(d) => d.join(&name),
                None => RelPath::new(name.as_str()),
            };
            let rel = match joined {
                Ok(r) => r,
                Err(e) => {
                    self.out.skipped.push((report_path(dir, &name), e.to_string()));
                    continue;
                }
            };
            if self.excluded.contains(&rel) {
                continue;
            }
            let stat = match self.sc.fs.symlink_metadata(&abs.join(&name)) {
                Ok(s) => s,
                Err(e) => {
                    self.out.unreadable.push((rel, e.to_string()));
                    continue;
                }
            };
            if self.rules.matches(&rel, stat.kind == StatKind::Dir) {
                self.out.ignored.push(rel);
                continue;
            }
            match keys.entry(rel.collision_key()) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    self.out.collisions.push((o.get().clone(), rel.clone()))
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(rel.clone());
                }
            }
            if self.node(rel.clone(), stat) {
                stack.push(rel);
            }
        }
        Ok(())
    }

    /// Lists everything under the directories on `stack`.
    fn drain(&mut self, mut stack: Vec<RelPath>) {
        while let Some(d) = stack.pop() {
            if let Err(e) = self.list(Some(&d), &mut stack) {
                self.out.unreadable.push((d, e.to_string()));
            }
        }
    }

    /// Hashes the queued files and returns the result.
    fn finish(mut self) -> ScanResult {
        // Hints are loaded up front (the cache is not shared between the
        // hashing threads), up to KEPT_LIST_ENTRIES entries in all.
        let mut hinted = 0;
        let jobs: Vec<(RelPath, Stat, Option<Hints>)> = std::mem::take(&mut self.jobs)
            .into_iter()
            .map(|(rel, stat)| {
                let hints = (stat.size >= HINT_MIN_BYTES && hinted < KEPT_LIST_ENTRIES)
                    .then(|| self.cache.chunk_hints(&rel))
                    .flatten()
                    .map(|h| {
                        hinted += h.len();
                        Hints::new(&self.sc.chunk_id, h)
                    });
                (rel, stat, hints)
            })
            .collect();
        self.out.files_hashed = jobs.len();
        for ((rel, _, _), r) in jobs.iter().zip(self.sc.hash_many(&jobs)) {
            match r {
                Ok((entry, list)) => {
                    if let Some(list) = list {
                        self.out.lists.insert(rel.clone(), (entry.stat, list));
                    }
                    self.out.entries.insert(rel.clone(), entry);
                }
                Err(ScanError::Unstable { .. } | ScanError::NotAFile { .. }) => {
                    self.out.unstable.push(rel.clone())
                }
                Err(ScanError::Io { source, .. }) => {
                    self.out.unreadable.push((rel.clone(), source.to_string()))
                }
                Err(e) => self.out.unreadable.push((rel.clone(), e.to_string())),
            }
        }
        self.out.ignore_warnings = self.rules.warnings().to_vec();
        self.out.sort();
        self.out
    }
}

impl Scanner {
    /// A scanner of the sync root `root`, hashing with the account's keys.
    ///
    /// # Panics
    /// If `params` fails [`ChunkerParams::validate`] (parameters are
    /// constants or validated configuration).
    pub fn new(fs: Arc<dyn Fs>, root: PathBuf, keys: &AccountKeys, params: ChunkerParams) -> Self {
        Self::with_keys(fs, root, keys.chunk_id.clone(), keys.chunker_seed.clone(), params)
    }

    /// Like [`Scanner::new`], from just the two keys hashing needs.
    ///
    /// # Panics
    /// As [`Scanner::new`].
    pub fn with_keys(
        fs: Arc<dyn Fs>,
        root: PathBuf,
        chunk_id: ChunkIdKey,
        seed: ChunkerSeed,
        params: ChunkerParams,
    ) -> Self {
        if let Err(e) = params.validate() {
            panic!("invalid chunker parameters {params:?}: {e}");
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        Self {
            fs,
            root,
            chunk_id,
            seed,
            params,
            clock: Arc::new(SystemClock),
            horizon_ns: None,
            threads,
            halves_min: HALVES_MIN_BYTES,
        }
    }

    /// Uses `clock` for the scan start time (the racily-clean rule, when
    /// no horizon is given).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `horizon_ns` (see [`racy_horizon`]), taken before the scan, for
    /// the racily-clean rule, instead of the clock's time less
    /// [`RACY_WINDOW_NS`].
    pub fn with_racy_horizon(mut self, horizon_ns: i64) -> Self {
        self.horizon_ns = Some(horizon_ns);
        self
    }

    /// Hashes with at most `n` threads (at least 1).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// The sync root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `rel`.
    pub fn abs(&self, rel: &RelPath) -> PathBuf {
        self.root.join(rel.as_str())
    }

    fn walker<'a>(
        &'a self,
        cache: &'a dyn StatCache,
        excluded: &'a BTreeSet<RelPath>,
    ) -> Result<Walker<'a>, ScanError> {
        let rules = IgnoreRules::load(self.fs.as_ref(), &self.root)?;
        Ok(Walker {
            sc: self,
            cache,
            excluded,
            rules,
            horizon_ns: self.horizon_ns.unwrap_or_else(|| self.clock.now_ns().saturating_sub(RACY_WINDOW_NS)),
            out: ScanResult::default(),
            jobs: Vec::new(),
        })
    }

    /// Scans the whole root (see the module doc). `excluded` are the roots
    /// of subtrees not synced to this device.
    pub fn scan(&self, cache: &dyn StatCache, excluded: &BTreeSet<RelPath>) -> Result<ScanResult, ScanError> {
        let mut w = self.walker(cache, excluded)?;
        let mut stack = Vec::new();
        w.list(None, &mut stack)
            .map_err(|source| ScanError::Root { path: display_path(&self.root), source })?;
        w.drain(stack);
        Ok(w.finish())
    }

    /// Re-reads just `paths` (walking those that are directories), e.g.
    /// after watcher events. See [`TargetedScan`] for what the result covers.
    /// Collisions are reported for names listed here and between each
    /// covered path and its siblings (one listing of each parent).
    pub fn scan_paths(
        &self,
        paths: &[RelPath],
        cache: &dyn StatCache,
        excluded: &BTreeSet<RelPath>,
    ) -> Result<TargetedScan, ScanError> {
        let mut w = self.walker(cache, excluded)?;
        let requested: BTreeSet<RelPath> = paths.iter().cloned().collect();
        let inside =
            |p: &RelPath, set: &BTreeSet<RelPath>| p.self_and_ancestors().skip(1).any(|a| set.contains(&a));
        let mut covered = Vec::new();
        let mut missing = Vec::new();
        let mut stack = Vec::new();
        // What each ancestor is, looked at once per scan (many paths
        // share their folders): `Ok(true)` a real directory, `Ok(false)`
        // anything else or nothing, `Err` unreadable.
        let mut folders: HashMap<RelPath, Result<bool, String>> = HashMap::new();
        'paths: for p in &requested {
            if inside(p, &requested) || excluded.contains(p) || inside(p, excluded) {
                continue;
            }
            covered.push(p.clone());
            // Every ancestor must still be a real directory (not a symlink):
            // otherwise nothing of the synced tree is at `p` any more.
            let ancestors: Vec<RelPath> = p.self_and_ancestors().skip(1).collect();
            for a in ancestors.iter().rev() {
                let state = folders.entry(a.clone()).or_insert_with(|| {
                    match self.fs.symlink_metadata(&self.abs(a)) {
                        Ok(s) => Ok(s.kind == StatKind::Dir),
                        Err(e)
                            if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(format!("{a}: {e}")),
                    }
                });
                match state {
                    Ok(true) => {}
                    Ok(false) => {
                        missing.push(p.clone());
                        continue 'paths;
                    }
                    Err(why) => {
                        w.out.unreadable.push((p.clone(), why.clone()));
                        continue 'paths;
                    }
                }
            }
            let stat = match self.fs.symlink_metadata(&self.abs(p)) {
                Ok(s) => s,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    missing.push(p.clone());
                    continue;
                }
                Err(e) => {
                    w.out.unreadable.push((p.clone(), e.to_string()));
                    continue;
                }
            };
            if w.rules.is_ignored(p, stat.kind == StatKind::Dir) {
                w.out.ignored.push(p.clone());
                continue;
            }
            if w.node(p.clone(), stat) {
                stack.push(p.clone());
            }
        }
        w.drain(stack);
        self.sibling_collisions(&mut w, &covered);
        Ok(TargetedScan { covered, missing, result: w.finish() })
    }

    /// Adds collisions between each covered path that exists and its
    /// siblings (which a targeted scan does not otherwise list).
    fn sibling_collisions(&self, w: &mut Walker<'_>, covered: &[RelPath]) {
        let mut by_parent: BTreeMap<Option<RelPath>, Vec<&RelPath>> = BTreeMap::new();
        let queued: BTreeSet<&RelPath> = w.jobs.iter().map(|(p, _)| p).collect();
        let present = |p: &RelPath| w.out.entries.contains_key(p) || queued.contains(p);
        for p in covered.iter().filter(|p| present(p)) {
            by_parent.entry(p.parent()).or_default().push(p);
        }
        for (parent, found) in by_parent {
            let abs = parent.as_ref().map_or_else(|| self.root.clone(), |d| self.abs(d));
            // A parent that cannot be listed now was reported (or will be) by
            // the scan of its own path; collisions wait for the next scan.
            let Ok(names) = self.fs.read_dir(&abs) else { continue };
            let mut keys: HashMap<String, Vec<RelPath>> = HashMap::new();
            for name in names.into_iter().flatten() {
                if parent.is_none() && name == STATE_DIR {
                    continue;
                }
                let rel = match &parent {
                    Some(d) => d.join(&name),
                    None => RelPath::new(name.as_str()),
                };
                if let Ok(rel) = rel {
                    keys.entry(rel.collision_key()).or_default().push(rel);
                }
            }
            for p in found {
                for other in keys.get(&p.collision_key()).into_iter().flatten().filter(|o| *o != p) {
                    if w.excluded.contains(other) {
                        continue;
                    }
                    let Ok(stat) = self.fs.symlink_metadata(&self.abs(other)) else { continue };
                    if stat.kind.node_kind().is_none() || w.rules.matches(other, stat.kind == StatKind::Dir) {
                        continue;
                    }
                    let pair =
                        if p < other { (p.clone(), other.clone()) } else { (other.clone(), p.clone()) };
                    w.out.collisions.push(pair);
                }
            }
        }
        w.out.collisions.sort();
        w.out.collisions.dedup();
    }

    /// Reads and hashes the regular file at `path` (absolute; any file, e.g.
    /// a temp file in the state folder), with the stability check.
    pub fn hash_file(&self, path: &Path) -> Result<HashedFile, ScanError> {
        let stat = self
            .fs
            .symlink_metadata(path)
            .map_err(|source| ScanError::Io { path: display_path(path), source })?;
        if stat.kind != StatKind::File {
            return Err(ScanError::NotAFile { path: display_path(path) });
        }
        self.hash_stable(path, stat, None)
    }

    /// Hashes `jobs` (relative paths with their stats before reading), on
    /// up to `threads` threads; results in the same order.
    /// Chunk lists are dropped as soon as each file is done, so a scan holds
    /// one node per file, not its chunks.
    /// Large files' chunk lists are kept while the scan's budget of
    /// [`KEPT_LIST_ENTRIES`] lasts (the others dropped as each is done).
    fn hash_many(&self, jobs: &[(RelPath, Stat, Option<Hints>)]) -> Vec<Result<Hashed, ScanError>> {
        let budget = AtomicUsize::new(KEPT_LIST_ENTRIES);
        let threads = self.threads.min(jobs.len());
        if threads <= 1 {
            return jobs
                .iter()
                .map(|(rel, stat, h)| self.hash_entry(&self.abs(rel), *stat, h.clone(), &budget))
                .collect();
        }
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(usize, Result<Hashed, ScanError>)>> = Mutex::new(Vec::with_capacity(jobs.len()));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, stat, hints)) = jobs.get(i) else { break };
                    let r = self.hash_entry(&self.abs(rel), *stat, hints.clone(), &budget);
                    done.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
                });
            }
        });
        let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    }

    /// A file's entry, and its chunk list if it is large and `budget`
    /// (list entries) still allows it.
    fn hash_entry(
        &self,
        path: &Path,
        before: Stat,
        hints: Option<Hints>,
        budget: &AtomicUsize,
    ) -> Result<Hashed, ScanError> {
        self.hash_stable(path, before, hints).map(|h| {
            let keep = h.node.size >= HINT_MIN_BYTES
                && budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(h.chunks.len()))
                    .is_ok();
            (LocalEntry { node: h.node, stat: h.stat }, keep.then_some(h.chunks))
        })
    }

    /// Reads and hashes a file that had `before` as its stat, checking that
    /// it did not change meanwhile; `hints` (its previous chunks) spare
    /// FastCDC over what did not change.
    fn hash_stable(&self, path: &Path, before: Stat, hints: Option<Hints>) -> Result<HashedFile, ScanError> {
        let io_err = |source| ScanError::Io { path: display_path(path), source };
        let halves = hints.is_none() && before.size >= self.halves_min && self.threads > 1;
        let chunks = if halves {
            // It checks the length it read itself.
            self.cut_in_halves(path, before.size)?
        } else {
            self.cut_in_one_pass(path, before, hints)?
        };
        let after = self.fs.symlink_metadata(path).map_err(io_err)?;
        if !after.same_identity(&before) {
            return Err(ScanError::Unstable { path: display_path(path) });
        }
        let node = Node {
            kind: NodeKind::File,
            size: before.size,
            mtime_ns: before.mtime_ns,
            executable: after.is_executable(),
            hash: Some(FileHash::of_chunks(chunks.iter().map(|(h, l)| (h, *l)))),
            target: None,
        };
        Ok(HashedFile { node, stat: Stat { mode: after.mode, ..before }, chunks })
    }

    /// Chunks and hashes a file in one pass from its start, checking that
    /// it is `before.size` bytes long as read.
    fn cut_in_one_pass(
        &self,
        path: &Path,
        before: Stat,
        hints: Option<Hints>,
    ) -> Result<Vec<(ContentHash, u32)>, ScanError> {
        let io_err = |source| ScanError::Io { path: display_path(path), source };
        let reader = self.fs.open_read(path).map_err(io_err)?;
        let mut chunks = Vec::new();
        let mut counting = Counting { inner: reader, n: 0 };
        if before.size <= self.params.min as u64 {
            // Small file: one chunk (or none), as the chunker would cut it,
            // without allocating the chunker's buffer.
            let mut data = Vec::with_capacity(before.size as usize);
            (&mut counting).take(self.params.min as u64 + 1).read_to_end(&mut data).map_err(io_err)?;
            if data.len() > self.params.min {
                return Err(ScanError::Unstable { path: display_path(path) });
            }
            if !data.is_empty() {
                chunks.push((self.chunk_id.content_hash(&data), data.len() as u32));
            }
        } else {
            let mut chunker = StreamChunker::new(&mut counting, self.params, &self.seed).with_hints(hints);
            while let Some(chunk) = chunker.next_hash(&self.chunk_id).map_err(io_err)? {
                chunks.push(chunk);
            }
        }
        if counting.n != before.size {
            return Err(ScanError::Unstable { path: display_path(path) });
        }
        Ok(chunks)
    }
}

impl Scanner {
    /// Cuts new files from `bytes` on in halves (tests use small files).
    #[cfg(test)]
    fn halving_from(mut self, bytes: u64) -> Self {
        self.halves_min = bytes;
        self
    }

    /// Chunks and hashes a large file on two threads, with the very cuts
    /// one pass from the start would make. FastCDC is sequential (where a
    /// chunk ends depends on where it starts), so: one thread chunks from
    /// the middle on, the other from the start; the first then goes on
    /// past the middle until it cuts where the second also cut, and from
    /// that shared cut on both would cut alike, so the rest is the
    /// second's. Content-defined cuts meet again within a few chunks; on
    /// input where they never do (a run of zeros cut at the maximum size,
    /// out of phase), the first thread simply reads to the end. Checks
    /// that the file is `size` bytes long as read (the caller checks its
    /// stat).
    fn cut_in_halves(&self, path: &Path, size: u64) -> Result<Vec<(ContentHash, u32)>, ScanError> {
        use std::io::{Seek, SeekFrom};
        let io_err = |source| ScanError::Io { path: display_path(path), source };
        let unstable = || ScanError::Unstable { path: display_path(path) };
        let mid = size / 2;
        let head = self.fs.open_read(path).map_err(io_err)?;
        let mut tail = self.fs.open_read(path).map_err(io_err)?;
        tail.seek(SeekFrom::Start(mid)).map_err(io_err)?;
        let (params, seed, key) = (self.params, &self.seed, &self.chunk_id);
        std::thread::scope(|s| {
            // (start offset, hash, length) of each chunk from the middle on,
            // and where the file ended.
            type Tail = (Vec<(u64, ContentHash, u32)>, u64);
            let second = s.spawn(move || -> io::Result<Tail> {
                let mut chunker = StreamChunker::new(tail, params, seed);
                let (mut out, mut at) = (Vec::new(), mid);
                while let Some((hash, len)) = chunker.next_hash(key)? {
                    out.push((at, hash, len));
                    at += u64::from(len);
                }
                Ok((out, at))
            });
            let mut chunker = StreamChunker::new(head, params, seed);
            let (mut out, mut at) = (Vec::new(), 0u64);
            while at < mid {
                let Some((hash, len)) = chunker.next_hash(key).map_err(io_err)? else { break };
                out.push((hash, len));
                at += u64::from(len);
            }
            let (rest, end) = second
                .join()
                .map_err(|_| io_err(io::Error::other("a hashing thread panicked")))?
                .map_err(io_err)?;
            if end != size {
                return Err(unstable());
            }
            let starts: HashMap<u64, usize> = rest.iter().enumerate().map(|(i, (o, _, _))| (*o, i)).collect();
            loop {
                if let Some(&i) = starts.get(&at) {
                    out.extend(rest[i..].iter().map(|(_, hash, len)| (*hash, *len)));
                    return Ok(out);
                }
                match chunker.next_hash(key).map_err(io_err)? {
                    Some((hash, len)) => {
                        out.push((hash, len));
                        at += u64::from(len);
                    }
                    None if at == size => return Ok(out),
                    None => return Err(unstable()),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use crate::fs::{MemFs, NonUtf8Name, ReadFile, RealFs, WriteFile};

    const PARAMS: ChunkerParams = ChunkerParams { min: 64, avg: 256, max: 1024 };

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn chunk_key() -> ChunkIdKey {
        ChunkIdKey::from_bytes([7; 32])
    }

    fn scanner(fs: Arc<dyn Fs>, root: &Path) -> Scanner {
        Scanner::with_keys(fs, root.to_path_buf(), chunk_key(), ChunkerSeed::from_u64(99), PARAMS)
    }

    fn put(fs: &dyn Fs, path: &Path, data: &[u8]) {
        let mut w: Box<dyn WriteFile> = fs.create_new(path).unwrap();
        w.write_all(data).unwrap();
        w.sync_all().unwrap();
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
    }

    /// The reference hash: every chunk the streaming chunker cuts.
    fn reference(data: &[u8]) -> FileHash {
        let chunks: Vec<(ContentHash, u32)> = StreamChunker::new(data, PARAMS, &ChunkerSeed::from_u64(99))
            .map(|c| {
                let c = c.unwrap();
                (chunk_key().content_hash(&c.data), c.data.len() as u32)
            })
            .collect();
        FileHash::of_chunks(chunks.iter().map(|(h, l)| (h, *l)))
    }

    /// Whatever the file, the halves give the chunks of one pass from the
    /// start: random bytes (the cuts meet again soon after the middle),
    /// zeros cut at the maximum out of phase with the middle (they never
    /// meet: the first half's pass reads to the end) and in phase (they
    /// meet at the middle), and a short repeating pattern.
    #[test]
    fn halves_cut_where_one_pass_does() {
        let fs = Arc::new(MemFs::new());
        let root = Path::new("/r");
        fs.create_dir_all(root).unwrap();
        let pattern: Vec<u8> = (0..30_000u32).map(|i| (i % 97) as u8).collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("random 3000", bytes(3000, 3)),
            ("random 10000", bytes(10_000, 4)),
            ("random 65537", bytes(65_537, 5)),
            ("random 200000", bytes(200_000, 6)),
            ("zeros out of phase", vec![0; 50_000]),
            ("zeros in phase", vec![0; 40_960]),
            ("pattern", pattern),
        ];
        let halves = scanner(fs.clone(), root).with_threads(2).halving_from(0);
        let one_pass = scanner(fs.clone(), root).with_threads(2);
        for (what, data) in cases {
            let path = root.join("f");
            let _ = fs.remove_file(&path);
            put(fs.as_ref(), &path, &data);
            let want: Vec<(ContentHash, u32)> =
                StreamChunker::new(&data[..], PARAMS, &ChunkerSeed::from_u64(99))
                    .map(|c| {
                        let c = c.unwrap();
                        (chunk_key().content_hash(&c.data), c.data.len() as u32)
                    })
                    .collect();
            let got = halves.hash_file(&path).unwrap();
            assert!(got.chunks == want, "{what}: {} chunks against {}", got.chunks.len(), want.len());
            assert_eq!(got.node.hash, Some(reference(&data)), "{what}");
            assert_eq!(one_pass.hash_file(&path).unwrap().node.hash, got.node.hash, "{what}");
        }
    }

    /// A file that grows or shrinks while its halves are read is unstable.
    #[test]
    fn halves_of_a_file_that_changed_size_are_unstable() {
        let fs = Arc::new(MemFs::new());
        let root = Path::new("/r");
        fs.create_dir_all(root).unwrap();
        let path = root.join("f");
        put(fs.as_ref(), &path, &bytes(20_000, 7));
        let halves = scanner(fs.clone(), root).with_threads(2).halving_from(0);
        assert!(matches!(halves.cut_in_halves(&path, 19_000), Err(ScanError::Unstable { .. })));
        assert!(matches!(halves.cut_in_halves(&path, 21_000), Err(ScanError::Unstable { .. })));
        assert!(halves.cut_in_halves(&path, 20_000).is_ok());
    }

    /// Builds the same tree through any `Fs` and checks what a full scan sees.
    fn full_scan_on(fs: Arc<dyn Fs>, root: &Path) {
        let big = bytes(10_000, 1);
        fs.create_dir(&root.join("docs")).unwrap();
        put(fs.as_ref(), &root.join("docs/a.txt"), b"alpha");
        put(fs.as_ref(), &root.join("docs/big.bin"), &big);
        put(fs.as_ref(), &root.join("run.sh"), b"#!/bin/sh\n");
        fs.set_executable(&root.join("run.sh"), true).unwrap();
        put(fs.as_ref(), &root.join("empty"), b"");
        fs.create_dir(&root.join("emptydir")).unwrap();
        fs.symlink("docs", &root.join("docs-link")).unwrap();
        fs.symlink("/nowhere", &root.join("dangling")).unwrap();
        fs.create_dir(&root.join(STATE_DIR)).unwrap();
        put(fs.as_ref(), &root.join(".coffer/index.db"), b"state");
        put(fs.as_ref(), &root.join("docs/x.tmp"), b"temp");
        put(fs.as_ref(), &root.join(".cofferignore"), b"*.log\nbuild/\n");
        put(fs.as_ref(), &root.join("app.log"), b"log");
        fs.create_dir(&root.join("build")).unwrap();
        put(fs.as_ref(), &root.join("build/out"), b"o");
        fs.create_dir(&root.join("photos")).unwrap();
        fs.create_dir(&root.join("photos/2026")).unwrap();
        put(fs.as_ref(), &root.join("photos/2026/p.jpg"), b"jpg");

        let sc = scanner(fs.clone(), root);
        let excluded = BTreeSet::from([p("photos/2026")]);
        let r = sc.scan(&NoCache, &excluded).unwrap();
        let paths: Vec<&str> = r.entries.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".cofferignore",
                "dangling",
                "docs",
                "docs-link",
                "docs/a.txt",
                "docs/big.bin",
                "empty",
                "emptydir",
                "photos",
                "run.sh"
            ]
        );
        assert_eq!(r.ignored, [p("app.log"), p("build"), p("docs/x.tmp")]);
        assert!(r.unreadable.is_empty() && r.unstable.is_empty() && r.skipped.is_empty(), "{r:?}");
        assert_eq!(r.files_hashed, 5);

        let e = |s: &str| &r.entries[&p(s)];
        assert_eq!(e("docs").node.kind, NodeKind::Dir);
        assert_eq!(e("docs-link").node.target.as_deref(), Some("docs"), "links are not followed");
        assert_eq!(e("dangling").node.kind, NodeKind::Symlink);
        assert_eq!(e("docs/big.bin").node.hash, Some(reference(&big)));
        assert_eq!(e("docs/big.bin").node.size, 10_000);
        assert_eq!(e("docs/a.txt").node.hash, Some(reference(b"alpha")));
        assert_eq!(e("empty").node.hash, Some(FileHash::of_chunks([])));
        assert!(e("run.sh").node.executable);
        assert!(!e("docs/a.txt").node.executable);
        let st = fs.symlink_metadata(&root.join("docs/a.txt")).unwrap();
        assert_eq!(e("docs/a.txt").stat, st);
        assert_eq!(e("docs/a.txt").node.mtime_ns, st.mtime_ns);

        let h = sc.hash_file(&root.join("docs/big.bin")).unwrap();
        assert_eq!(Some(h.node.hash.unwrap()), e("docs/big.bin").node.hash);
        assert!(h.chunks.len() > 5, "a 10 kB file with 256 B chunks");
        assert_eq!(h.chunks.iter().map(|(_, l)| *l as u64).sum::<u64>(), 10_000);
        assert!(matches!(sc.hash_file(&root.join("docs")), Err(ScanError::NotAFile { .. })));

        // The root itself unreadable is an error, never an empty tree.
        let gone = scanner(fs.clone(), &root.join("no-such-root"));
        let err = gone.scan(&NoCache, &BTreeSet::new()).unwrap_err();
        assert!(matches!(err, ScanError::Root { .. }) && err.is_retryable(), "{err}");
    }

    #[test]
    fn full_scan_mem_fs() {
        let fs = Arc::new(MemFs::new());
        fs.create_dir_all(Path::new("/sync")).unwrap();
        full_scan_on(fs.clone(), Path::new("/sync"));
        // An excluded subtree is not even listed: make listing it fail.
        fs.deny(Path::new("/sync/photos/2026"), true);
        let sc = scanner(fs.clone(), Path::new("/sync"));
        let r = sc.scan(&NoCache, &BTreeSet::from([p("photos/2026")])).unwrap();
        assert!(r.unreadable.is_empty());
        let r = sc.scan(&NoCache, &BTreeSet::new()).unwrap();
        assert_eq!(r.unreadable.len(), 1, "without the exclusion it is listed");
    }

    #[test]
    fn full_scan_real_fs() {
        let dir = tempfile::tempdir().unwrap();
        full_scan_on(Arc::new(RealFs), dir.path());
        // A socket is skipped with a reason.
        let _l = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let r = scanner(Arc::new(RealFs), dir.path()).scan(&NoCache, &BTreeSet::new()).unwrap();
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].0, p("sock"));
    }

    #[test]
    fn the_racy_horizon_is_the_file_systems_time_when_it_can_be_had() {
        let fs = Arc::new(MemFs::new());
        fs.write_file(Path::new("/r/f"), b"content").unwrap();
        fs.create_dir_all(Path::new("/r/.coffer/tmp")).unwrap();
        let stat = fs.symlink_metadata(Path::new("/r/f")).unwrap();
        let fake = Node {
            kind: NodeKind::File,
            size: 7,
            mtime_ns: 0,
            executable: false,
            hash: Some(FileHash([9; 32])),
            target: None,
        };
        let cache = HashMap::from([(p("f"), (stat, fake.clone()))]);
        let none = BTreeSet::new();
        let marker = Path::new("/r/.coffer/clock");
        // The marker stamped in the tick the file was written: racy.
        let h = racy_horizon(fs.as_ref(), marker, fs.as_ref());
        assert_eq!(h, stat.mtime_ns);
        let sc = scanner(fs.clone(), Path::new("/r")).with_clock(fs.clone());
        let r = sc.with_racy_horizon(h).scan(&cache, &none).unwrap();
        assert_eq!((r.files_hashed, r.entries[&p("f")].node.hash), (1, Some(reference(b"content"))));
        // One nanosecond later, the file system's time has moved on: the
        // stat is trusted, where the clock's 2 s window would not.
        fs.advance(1);
        let h = racy_horizon(fs.as_ref(), marker, fs.as_ref());
        assert_eq!(h, stat.mtime_ns + 1);
        let sc = scanner(fs.clone(), Path::new("/r")).with_clock(fs.clone());
        let r = sc.with_racy_horizon(h).scan(&cache, &none).unwrap();
        assert_eq!((r.files_hashed, r.entries[&p("f")].node.hash), (0, fake.hash));
        // No stamp to be had (no state folder): the clock less the window.
        let h = racy_horizon(fs.as_ref(), Path::new("/nowhere/clock"), fs.as_ref());
        assert_eq!(h, fs.now_ns() - RACY_WINDOW_NS);
        assert!(is_racy(stat.mtime_ns, h) && !is_racy(h - 1, h));
    }

    #[test]
    fn racily_clean_rule_and_cache_trust() {
        let fs = Arc::new(MemFs::new());
        fs.write_file(Path::new("/r/f"), b"content").unwrap();
        let sc = scanner(fs.clone(), Path::new("/r")).with_clock(fs.clone());
        let stat = fs.symlink_metadata(Path::new("/r/f")).unwrap();
        // A cached node with a deliberately wrong hash shows whether the
        // cache was used.
        let fake = Node {
            kind: NodeKind::File,
            size: 7,
            mtime_ns: 0,
            executable: true,
            hash: Some(FileHash([9; 32])),
            target: None,
        };
        let cache = HashMap::from([(p("f"), (stat, fake.clone()))]);
        let none = BTreeSet::new();

        // Modified 1 s before the scan started: racily clean, re-hashed.
        fs.advance(1_000_000_000);
        let r = sc.scan(&cache, &none).unwrap();
        assert_eq!(r.entries[&p("f")].node.hash, Some(reference(b"content")));
        assert_eq!(r.files_hashed, 1);

        // 3 s later it is trusted; mtime and mode come from the stat.
        fs.advance(2_000_000_000);
        let r = sc.scan(&cache, &none).unwrap();
        let n = &r.entries[&p("f")].node;
        assert_eq!((n.hash, n.mtime_ns, n.executable), (fake.hash, stat.mtime_ns, false));
        assert_eq!(r.files_hashed, 0);

        // Any identity change means a re-hash: size, mtime, inode.
        for changed in [
            Stat { size: 8, ..stat },
            Stat { mtime_ns: stat.mtime_ns - 1, ..stat },
            Stat { inode: stat.inode + 100, ..stat },
        ] {
            let cache = HashMap::from([(p("f"), (changed, fake.clone()))]);
            let r = sc.scan(&cache, &none).unwrap();
            assert_eq!(r.entries[&p("f")].node.hash, Some(reference(b"content")), "{changed:?}");
        }
        // A permission change alone does not force a read.
        fs.set_executable(Path::new("/r/f"), true).unwrap();
        let r = sc.scan(&cache, &none).unwrap();
        assert_eq!(r.files_hashed, 0);
        assert!(r.entries[&p("f")].node.executable);
    }

    /// An `Fs` whose reader of one path rewrites that file after the first
    /// read, as an editor saving mid-scan would.
    #[derive(Debug)]
    struct MutatingFs {
        inner: Arc<MemFs>,
        victim: PathBuf,
        new_content: Vec<u8>,
    }

    struct MutatingReader {
        inner: Box<dyn ReadFile>,
        fs: Arc<MemFs>,
        victim: PathBuf,
        new_content: Vec<u8>,
        done: bool,
    }

    impl Read for MutatingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            if !self.done {
                self.done = true;
                self.fs.advance(1);
                self.fs.write_file(&self.victim, &self.new_content)?;
            }
            Ok(n)
        }
    }

    impl io::Seek for MutatingReader {
        fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    impl Fs for MutatingFs {
        fn symlink_metadata(&self, path: &Path) -> io::Result<Stat> {
            self.inner.symlink_metadata(path)
        }
        fn read_dir(&self, path: &Path) -> io::Result<Vec<Result<String, NonUtf8Name>>> {
            self.inner.read_dir(path)
        }
        fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
            let inner = self.inner.open_read(path)?;
            if path != self.victim {
                return Ok(inner);
            }
            Ok(Box::new(MutatingReader {
                inner,
                fs: self.inner.clone(),
                victim: self.victim.clone(),
                new_content: self.new_content.clone(),
                done: false,
            }))
        }
        fn read_link(&self, path: &Path) -> io::Result<String> {
            self.inner.read_link(path)
        }
        fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
            self.inner.create_new(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_file(path)
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_dir(path)
        }
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            self.inner.create_dir(path)
        }
        fn symlink(&self, target: &str, at: &Path) -> io::Result<()> {
            self.inner.symlink(target, at)
        }
        fn set_mtime(&self, path: &Path, mtime_ns: i64) -> io::Result<()> {
            self.inner.set_mtime(path, mtime_ns)
        }
        fn stamp(&self, path: &Path) -> io::Result<i64> {
            self.inner.stamp(path)
        }
        fn set_executable(&self, path: &Path, executable: bool) -> io::Result<()> {
            self.inner.set_executable(path, executable)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.inner.sync_dir(path)
        }
        fn sync_files(&self, paths: &[PathBuf]) -> io::Result<()> {
            self.inner.sync_files(paths)
        }
        fn exists(&self, path: &Path) -> io::Result<bool> {
            self.inner.exists(path)
        }
    }

    #[test]
    fn file_changed_while_read_is_unstable() {
        for (old, new) in [(bytes(5_000, 2), bytes(5_000, 3)), (b"small".to_vec(), b"small!".to_vec())] {
            let mem = Arc::new(MemFs::new());
            mem.write_file(Path::new("/r/victim"), &old).unwrap();
            mem.write_file(Path::new("/r/calm"), b"calm").unwrap();
            let fs = Arc::new(MutatingFs {
                inner: mem.clone(),
                victim: "/r/victim".into(),
                new_content: new.clone(),
            });
            let sc = scanner(fs, Path::new("/r"));
            let r = sc.scan(&NoCache, &BTreeSet::new()).unwrap();
            assert_eq!(r.unstable, [p("victim")]);
            assert!(!r.entries.contains_key(&p("victim")), "an unstable read is never reported as a change");
            assert!(r.entries.contains_key(&p("calm")));
            let e = sc.hash_file(Path::new("/r/victim")).unwrap_err();
            assert!(matches!(e, ScanError::Unstable { .. }) && e.is_retryable());
            // Once it has settled (no further mutation), it reads fine.
            let settled = scanner(mem.clone(), Path::new("/r"));
            assert_eq!(settled.hash_file(Path::new("/r/victim")).unwrap().node.hash, Some(reference(&new)));
        }
    }

    #[test]
    fn unreadable_paths_are_reported_precisely() {
        let fs = Arc::new(MemFs::new());
        fs.write_file(Path::new("/r/locked/inner/f"), b"x").unwrap();
        fs.write_file(Path::new("/r/open/secret"), b"s").unwrap();
        fs.write_file(Path::new("/r/open/fine"), b"f").unwrap();
        fs.deny(Path::new("/r/locked"), true);
        fs.deny(Path::new("/r/open/secret"), true);
        let sc = scanner(fs.clone(), Path::new("/r"));
        let r = sc.scan(&NoCache, &BTreeSet::new()).unwrap();
        let un: Vec<&str> = r.unreadable.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(un, ["locked", "open/secret"]);
        assert!(r.unreadable.iter().all(|(_, why)| why.contains("permission denied")), "{r:?}");
        assert!(r.entries.contains_key(&p("locked")), "an unlistable dir is known to exist");
        assert!(!r.entries.contains_key(&p("locked/inner")));
        assert!(r.entries.contains_key(&p("open/fine")));
        fs.deny(Path::new("/r"), true);
        assert!(matches!(sc.scan(&NoCache, &BTreeSet::new()), Err(ScanError::Root { .. })));
    }

    #[test]
    fn skipped_names_and_special_files() {
        let fs = Arc::new(MemFs::new());
        fs.create_dir_all(Path::new("/r/d")).unwrap();
        fs.write_file(&Path::new("/r/d").join(OsStr::from_bytes(b"bad\xff")), b"x").unwrap();
        fs.write_file(&Path::new("/r").join(OsStr::from_bytes(b"\xfe")), b"x").unwrap();
        fs.make_special(Path::new("/r/d/fifo")).unwrap();
        let r = scanner(fs, Path::new("/r")).scan(&NoCache, &BTreeSet::new()).unwrap();
        let skipped: Vec<&str> = r.skipped.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(skipped, ["d/bad\u{fffd}", "d/fifo", "\u{fffd}"]);
        assert!(r.skipped[0].1.contains("UTF-8"));
        assert_eq!(r.entries.len(), 1, "only `d` is synced: {r:?}");
    }

    #[test]
    fn collisions_are_reported_and_both_listed() {
        let fs = Arc::new(MemFs::new());
        fs.write_file(Path::new("/r/README.md"), b"1").unwrap();
        fs.write_file(Path::new("/r/Readme.md"), b"2").unwrap();
        fs.write_file(Path::new("/r/sub/caf\u{e9}"), b"nfc").unwrap();
        fs.write_file(Path::new("/r/sub/cafe\u{301}"), b"nfd").unwrap();
        fs.write_file(Path::new("/r/sub/other"), b"o").unwrap();
        let r = scanner(fs, Path::new("/r")).scan(&NoCache, &BTreeSet::new()).unwrap();
        assert_eq!(
            r.collisions,
            [(p("README.md"), p("Readme.md")), (p("sub/cafe\u{301}"), p("sub/caf\u{e9}"))]
        );
        for k in ["README.md", "Readme.md", "sub/caf\u{e9}", "sub/cafe\u{301}"] {
            assert!(r.entries.contains_key(&p(k)), "{k}");
        }
    }

    #[test]
    fn targeted_scan() {
        let fs = Arc::new(MemFs::new());
        fs.write_file(Path::new("/r/keep"), b"k").unwrap();
        fs.write_file(Path::new("/r/edit"), b"v1").unwrap();
        fs.write_file(Path::new("/r/gone"), b"g").unwrap();
        fs.write_file(Path::new("/r/was-dir/x"), b"x").unwrap();
        fs.write_file(Path::new("/r/ex/secret"), b"s").unwrap();
        let sc = scanner(fs.clone(), Path::new("/r"));
        let excluded = BTreeSet::from([p("ex")]);

        fs.write_file(Path::new("/r/edit"), b"v2").unwrap();
        fs.remove_file(Path::new("/r/gone")).unwrap();
        fs.write_file(Path::new("/r/new/a"), b"a").unwrap();
        fs.write_file(Path::new("/r/new/deep/b"), b"b").unwrap();
        fs.remove_file(Path::new("/r/was-dir/x")).unwrap();
        fs.remove_dir(Path::new("/r/was-dir")).unwrap();
        fs.write_file(Path::new("/r/was-dir"), b"now a file").unwrap();
        fs.write_file(Path::new("/r/x.tmp"), b"t").unwrap();

        let req = [
            p("edit"),
            p("gone"),
            p("new"),
            p("new/deep/b"),
            p("was-dir/x"),
            p("ex/secret"),
            p("x.tmp"),
            p("edit"),
        ];
        let t = sc.scan_paths(&req, &NoCache, &excluded).unwrap();
        assert_eq!(t.covered, [p("edit"), p("gone"), p("new"), p("was-dir/x"), p("x.tmp")]);
        assert_eq!(t.missing, [p("gone"), p("was-dir/x")]);
        let paths: Vec<&str> = t.result.entries.keys().map(|k| k.as_str()).collect();
        assert_eq!(paths, ["edit", "new", "new/a", "new/deep", "new/deep/b"]);
        assert_eq!(t.result.entries[&p("edit")].node.hash, Some(reference(b"v2")));
        assert_eq!(t.result.ignored, [p("x.tmp")]);
        assert!(!t.result.entries.contains_key(&p("keep")), "only the requested paths are read");

        // A new name that collides with an existing sibling is reported,
        // once, even when both are requested.
        fs.write_file(Path::new("/r/EDIT"), b"other").unwrap();
        let t = sc.scan_paths(&[p("EDIT")], &NoCache, &excluded).unwrap();
        assert_eq!(t.result.collisions, [(p("EDIT"), p("edit"))]);
        let t = sc.scan_paths(&[p("EDIT"), p("edit")], &NoCache, &excluded).unwrap();
        assert_eq!(t.result.collisions, [(p("EDIT"), p("edit"))]);
        let t = sc.scan_paths(&[p("keep")], &NoCache, &excluded).unwrap();
        assert!(t.result.collisions.is_empty());

        // A path under a symlinked dir is not in the synced tree.
        fs.symlink("new", Path::new("/r/alias")).unwrap();
        let t = sc.scan_paths(&[p("alias/a")], &NoCache, &BTreeSet::new()).unwrap();
        assert_eq!(t.missing, [p("alias/a")]);
        assert!(t.result.entries.is_empty());
    }

    #[test]
    fn parallel_hashing_matches_sequential() {
        let fs = Arc::new(MemFs::new());
        let mut expected = BTreeMap::new();
        for i in 0..40u8 {
            let data = bytes(usize::from(i) * 97, i);
            fs.write_file(&PathBuf::from(format!("/r/f{i:02}")), &data).unwrap();
            expected.insert(p(&format!("f{i:02}")), reference(&data));
        }
        let par =
            scanner(fs.clone(), Path::new("/r")).with_threads(4).scan(&NoCache, &BTreeSet::new()).unwrap();
        let seq =
            scanner(fs.clone(), Path::new("/r")).with_threads(1).scan(&NoCache, &BTreeSet::new()).unwrap();
        assert_eq!(par.entries, seq.entries);
        let got: BTreeMap<RelPath, FileHash> =
            par.entries.iter().map(|(k, e)| (k.clone(), e.node.hash.unwrap())).collect();
        assert_eq!(got, expected);
    }

    /// A changed large file is chunked with the cache's hints (its previous
    /// chunks), and hashes as it would without them.
    #[test]
    fn large_files_are_hashed_with_hints() {
        struct Hinting(Vec<(ContentHash, u32)>, std::sync::atomic::AtomicUsize);
        impl StatCache for Hinting {
            fn lookup(&self, _: &RelPath) -> Option<(Stat, Node)> {
                None
            }
            fn chunk_hints(&self, _: &RelPath) -> Option<Vec<(ContentHash, u32)>> {
                self.1.fetch_add(1, Ordering::Relaxed);
                Some(self.0.clone())
            }
        }
        let fs = Arc::new(MemFs::new());
        let old = bytes(HINT_MIN_BYTES as usize + 5000, 3);
        let hints: Vec<(ContentHash, u32)> = StreamChunker::new(&old[..], PARAMS, &ChunkerSeed::from_u64(99))
            .map(|c| {
                let c = c.unwrap();
                (chunk_key().content_hash(&c.data), c.data.len() as u32)
            })
            .collect();
        let mut new = old.clone();
        new.splice(1_000_000..1_000_000, *b"inserted");
        new[3_000_000] ^= 0xff;
        fs.write_file(Path::new("/r/big"), &new).unwrap();
        fs.write_file(Path::new("/r/small"), b"small").unwrap();
        let cache = Hinting(hints, std::sync::atomic::AtomicUsize::new(0));
        let got = scanner(fs.clone(), Path::new("/r")).scan(&cache, &BTreeSet::new()).unwrap();
        assert_eq!(got.entries[&p("big")].node.hash, Some(reference(&new)));
        assert_eq!(got.entries[&p("small")].node.hash, Some(reference(b"small")));
        assert_eq!(cache.1.load(Ordering::Relaxed), 1, "only the large file asks for hints");
        // Its new chunk list is kept for the upload; a small file's is not.
        let (stat, list) = &got.lists[&p("big")];
        assert_eq!(*stat, got.entries[&p("big")].stat);
        assert_eq!(FileHash::of_chunks(list.iter().map(|(h, l)| (h, *l))), reference(&new));
        assert!(!got.lists.contains_key(&p("small")));
    }

    #[test]
    fn small_file_path_agrees_with_the_chunker() {
        let fs = Arc::new(MemFs::new());
        let sc = scanner(fs.clone(), Path::new("/r"));
        for len in [0, 1, 63, 64, 65, 1023, 1024, 1025, 5000] {
            let data = bytes(len, 5);
            let path = PathBuf::from(format!("/r/{len}"));
            fs.write_file(&path, &data).unwrap();
            let h = sc.hash_file(&path).unwrap();
            assert_eq!(h.node.hash, Some(reference(&data)), "len {len}");
            assert_eq!(h.node.size, len as u64);
        }
    }

    /// A change to a tree, as a user or program would make it.
    #[derive(Clone, Debug)]
    enum Op {
        Write(Vec<usize>, u8),
        Mkdir(Vec<usize>),
        Remove(Vec<usize>),
        Rename(Vec<usize>, Vec<usize>),
    }

    const NAMES: [&str; 3] = ["a", "b", "C"];

    fn rel_of(ix: &[usize]) -> RelPath {
        p(&ix.iter().map(|i| NAMES[*i]).collect::<Vec<_>>().join("/"))
    }

    fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let path = || proptest::collection::vec(0..NAMES.len(), 1..=3);
        prop_oneof![
            3 => (path(), any::<u8>()).prop_map(|(p, b)| Op::Write(p, b)),
            1 => path().prop_map(Op::Mkdir),
            1 => path().prop_map(Op::Remove),
            1 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        ]
    }

    fn remove_all(fs: &MemFs, path: &Path) {
        if fs.symlink_metadata(path).is_ok_and(|s| s.kind == StatKind::Dir) {
            for name in fs.read_dir(path).unwrap().into_iter().flatten() {
                remove_all(fs, &path.join(name));
            }
            let _ = fs.remove_dir(path);
        } else {
            let _ = fs.remove_file(path);
        }
    }

    /// Applies `op` under `/r`, returning the paths a watcher would report:
    /// each path changed, and each directory the op created on the way.
    fn apply(fs: &MemFs, op: &Op) -> Vec<RelPath> {
        let abs = |r: &RelPath| Path::new("/r").join(r.as_str());
        let exists = |r: &RelPath| fs.exists(&abs(r)).unwrap_or(false);
        match op {
            Op::Write(ix, b) => {
                let rel = rel_of(ix);
                let mut touched: Vec<RelPath> = Vec::new();
                let mut cur = Some(rel.clone());
                while let Some(c) = cur {
                    if !exists(&c) {
                        touched.push(c.clone());
                    }
                    cur = c.parent();
                }
                touched.push(rel.clone());
                match fs.write_file(&abs(&rel), &bytes(usize::from(*b) * 7, *b)) {
                    Ok(()) => touched,
                    Err(_) => Vec::new(),
                }
            }
            Op::Mkdir(ix) => {
                let rel = rel_of(ix);
                fs.create_dir(&abs(&rel)).map_or_else(|_| Vec::new(), |_| vec![rel])
            }
            Op::Remove(ix) => {
                let rel = rel_of(ix);
                remove_all(fs, &abs(&rel));
                vec![rel]
            }
            Op::Rename(a, b) => {
                let (a, b) = (rel_of(a), rel_of(b));
                fs.rename(&abs(&a), &abs(&b)).map_or_else(|_| Vec::new(), |_| vec![a, b])
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xC0FFE),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The targeted-scan contract: the last full scan, with each covered
        /// subtree replaced by the targeted result, is the new full scan.
        #[test]
        fn targeted_scan_patches_a_full_scan(
            before in proptest::collection::vec(op_strategy(), 0..12),
            after in proptest::collection::vec(op_strategy(), 1..6),
        ) {
            let fs = Arc::new(MemFs::new());
            fs.create_dir_all(Path::new("/r")).unwrap();
            for op in &before {
                apply(&fs, op);
            }
            let sc = scanner(fs.clone(), Path::new("/r"));
            let none = BTreeSet::new();
            let old = sc.scan(&NoCache, &none).unwrap();
            let mut touched = Vec::new();
            for op in &after {
                fs.advance(1_000);
                touched.extend(apply(&fs, op));
            }
            let t = sc.scan_paths(&touched, &NoCache, &none).unwrap();
            let new = sc.scan(&NoCache, &none).unwrap();

            let under = |k: &RelPath| t.covered.iter().any(|c| k.starts_with(c));
            let mut patched: BTreeMap<RelPath, LocalEntry> =
                old.entries.into_iter().filter(|(k, _)| !under(k)).collect();
            proptest::prop_assert!(t.result.entries.keys().all(&under));
            patched.extend(t.result.entries.clone());
            // Parents of covered paths are not re-stat'ed: their mtimes are
            // stale, which sync ignores for directories.
            let no_dir_mtime = |m: &BTreeMap<RelPath, LocalEntry>| -> BTreeMap<RelPath, LocalEntry> {
                m.iter()
                    .map(|(k, e)| {
                        let mut e = e.clone();
                        if e.node.kind == NodeKind::Dir {
                            e.node.mtime_ns = 0;
                            e.stat.mtime_ns = 0;
                        }
                        (k.clone(), e)
                    })
                    .collect()
            };
            proptest::prop_assert_eq!(no_dir_mtime(&patched), no_dir_mtime(&new.entries));
            for c in &t.covered {
                proptest::prop_assert_eq!(t.missing.contains(c), !new.entries.contains_key(c), "{}", c);
            }
            let mut expected = new.collisions.clone();
            expected.retain(|(a, b)| under(a) || under(b));
            for pair in &expected {
                proptest::prop_assert!(t.result.collisions.contains(pair), "{:?} not reported", pair);
            }
        }
    }
}
