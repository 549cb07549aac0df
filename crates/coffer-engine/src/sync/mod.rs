//! The sync engine of one sync root: pull the store's changes, scan the
//! disk, plan, and apply (`DESIGN.md`, "Data flow" and "The sync model").
//!
//! A **round** is: [`Engine::pull`] the journal into the index (opening and
//! checking every entry's metadata), scan the root (trusting the stat cache),
//! [`crate::plan::plan`] over the three trees, check the mass-deletion guard,
//! then apply each op (see [`apply`]). Rounds repeat until a plan is empty;
//! because planning is idempotent and the index is written only after the
//! disk and the store, crash recovery is simply "run a round".
//!
//! Everything the engine touches comes through seams: the store through
//! [`Remote`], the disk through [`Fs`], time through [`Clock`], randomness
//! through an injected RNG, so the simulation can drive this very code.

pub mod actions;
pub mod activity;
mod apply;
mod inflight;
pub mod limit;
pub mod names;
mod preview;
mod pull;
pub mod status;
mod transfer;
pub mod trash;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_crypto::{AccountKeys, ContentHash};
use coffer_proto::DeviceId;
use tokio::sync::watch;

use crate::chunker::ChunkerParams;
use crate::fs::{Clock, Fs, Stat};
use crate::ignore::IgnoreRules;
use crate::index::{Index, IndexError};
use crate::model::{ChunkRef, Node, RelPath, STATE_DIR};
use crate::plan::{plan, Op, PlanInput};
use crate::remote::{Remote, RemoteError};
use crate::scan::{is_racy, ScanResult, Scanner};

pub use pull::open_entry;
pub use status::{Status, SyncState};

/// The engine's random source: a CSPRNG seeded from the OS in production
/// and from a fixed seed in tests and the simulation.
pub type EngineRng = rand_chacha::ChaCha20Rng;

/// How one root syncs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The folder kept in sync.
    pub root: PathBuf,
    /// This device.
    pub device_id: DeviceId,
    /// Its name, as conflicted copies show it.
    pub device_name: String,
    /// Chunk sizes: the account's (`AccountSettings`), which the caller
    /// must set; [`EngineConfig::new`] starts from those of accounts older
    /// than settings, not this build's default for new accounts.
    pub chunker: ChunkerParams,
    /// A plan that deletes more than this many entries (local and remote
    /// together) waits for confirmation.
    pub mass_delete_threshold: usize,
    /// Days a file stays in `.coffer/trash`.
    pub trash_days: u32,
    /// Files downloaded at once (each also fetches a few chunks ahead).
    /// The simulation sets 1: concurrent downloads finish in an order set
    /// by blocking-pool threads (chunks are opened there), which would make
    /// a seed's history vary from run to run. With 1, a group of downloads
    /// also waits for the disk inline instead of while the next group is
    /// fetched (`Engine::overlaps`), for the same reason.
    pub parallel_downloads: usize,
    /// Most distinct chunks a file may have: the store refuses a change
    /// naming more chunk ids than it takes in one commit, so a larger file
    /// is reported ("too large to sync"), before any of it is read or sent
    /// when the scan has just chunked it.
    pub max_chunks_per_file: usize,
}

impl EngineConfig {
    /// Defaults for `root`.
    pub fn new(root: PathBuf, device_id: DeviceId, device_name: String) -> Self {
        Self {
            root,
            device_id,
            device_name,
            chunker: ChunkerParams::LEGACY,
            mass_delete_threshold: 1000,
            trash_days: 30,
            parallel_downloads: 8,
            max_chunks_per_file: coffer_proto::api::MAX_CHUNK_REFS_PER_COMMIT,
        }
    }
}

/// Chunk lists of large files by path, with the stat they were read at.
type ScanLists = std::collections::HashMap<RelPath, (Stat, Vec<(ContentHash, u32)>)>;

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The local index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The store failed or could not be reached.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The sync root is not there or lost its marker (an unmounted disk):
    /// nothing is read as deleted, nothing is touched.
    #[error("the sync folder {0} is missing or is not the folder Coffer set up (is the disk mounted?); sync is stopped and nothing was changed")]
    RootMissing(PathBuf),
    /// The store went back in time (its journal is behind what this device
    /// already saw): refused.
    #[error("the store's history went backwards ({0}); refusing to sync against it")]
    Rollback(String),
    /// A plan would delete many entries.
    #[error("this round would delete {0} files or folders; confirm with `coffer sync --confirm-deletions` (or in the app) to go ahead")]
    MassDeletion(usize),
    /// A local I/O failure outside any single file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Sync is paused.
    #[error("sync is paused")]
    Paused,
    /// The disk holding the sync folder has no room left.
    #[error("the disk holding {root} is full: free some space there and sync resumes ({detail})")]
    DiskFull {
        /// The sync folder.
        root: PathBuf,
        /// The failure that ran into it, as reported.
        detail: String,
    },
}

impl EngineError {
    /// Whether a later round may succeed without anyone doing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Index(e) => e.is_retryable(),
            EngineError::Remote(e) => e.is_retryable(),
            EngineError::Io { .. } | EngineError::DiskFull { .. } => true,
            _ => false,
        }
    }
}

/// A problem with one path that did not stop the round.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The path (or the entry, for refused remote metadata).
    pub path: String,
    /// What happened, in words a person can act on.
    pub message: String,
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoundReport {
    /// Remote changes pulled.
    pub pulled: usize,
    /// Ops planned.
    pub planned: usize,
    /// Files and folders uploaded (new revisions committed).
    pub uploaded: usize,
    /// Files and folders written locally.
    pub downloaded: usize,
    /// Entries deleted (locally to the trash, or on the store).
    pub deleted: usize,
    /// Conflicts made.
    pub conflicts: usize,
    /// Sealed chunk bytes sent to the store (the deltas).
    pub sent_bytes: u64,
    /// Ops skipped because the disk or the store moved on (planned again
    /// next round).
    pub deferred: usize,
    /// Per-path problems.
    pub problems: Vec<Problem>,
}

impl RoundReport {
    /// Adds what `part` of the round did (a batch committed on its own).
    pub(crate) fn absorb(&mut self, part: RoundReport) {
        let RoundReport {
            pulled,
            planned,
            uploaded,
            downloaded,
            deleted,
            conflicts,
            sent_bytes,
            deferred,
            problems,
        } = part;
        self.pulled += pulled;
        self.planned += planned;
        self.uploaded += uploaded;
        self.downloaded += downloaded;
        self.deleted += deleted;
        self.conflicts += conflicts;
        self.sent_bytes += sent_bytes;
        self.deferred += deferred;
        self.problems.extend(problems);
    }

    /// True when the round found nothing to do.
    pub fn is_quiet(&self) -> bool {
        self.planned == 0 && self.pulled == 0
    }
}

/// The sync engine of one root.
pub struct Engine<R: Remote> {
    pub(crate) remote: R,
    pub(crate) keys: Arc<AccountKeys>,
    pub(crate) index: Index,
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Mutex<EngineRng>,
    pub(crate) config: EngineConfig,
    status: watch::Sender<Status>,
    paused: AtomicBool,
    confirmed_deletions: AtomicBool,
    problems: Mutex<Vec<Problem>>,
    /// The last scan, kept between rounds so that watcher events need only
    /// a targeted rescan of what they name.
    last_scan: Mutex<Option<ScanResult>>,
    /// Paths the watcher reported since the last round; `None` asks for a
    /// full scan.
    dirty: Mutex<Option<BTreeSet<RelPath>>>,
    /// Paths the current round's ops may have written on disk.
    touched: Mutex<BTreeSet<RelPath>>,
    /// Whether a watcher reports the user's changes ([`Engine::run`], or
    /// [`Engine::set_watched`]): then a round that wrote to disk keeps its
    /// scan, and the next one rescans just what it wrote and what the
    /// watcher reported, rather than the whole tree.
    watched: AtomicBool,
    /// Recent completed ops, for the faces.
    pub(crate) activity: activity::ActivityLog,
    /// Bandwidth limits.
    pub(crate) limits: limit::Limits,
    /// Asks the daemon for a round now (after a change it cannot see on
    /// disk or in the journal, like including a folder again).
    wake: tokio::sync::Notify,
    /// Whether an edit of a large file may leave out the chunks its base
    /// revision already has: neither asked about nor uploaded, and the
    /// commit names only the difference ([`coffer_proto::api::ChunkDelta`]).
    /// Cleared for good if the store ever finds a difference that does not
    /// fit its base (this device's idea of the base is then not to be
    /// trusted).
    pub(crate) deltas: AtomicBool,
    /// Chunks of small files fetched in batches ahead of their downloads
    /// ([`Engine::fetch_verified`] takes them from here first); emptied after
    /// each group of downloads.
    pub(crate) prefetched: Mutex<std::collections::HashMap<coffer_proto::ChunkId, coffer_proto::SealedChunk>>,
    /// Small files read and sealed ahead of their uploads, by path
    /// ([`Engine::preseal_small`]); emptied after each round's uploads.
    pub(crate) presealed: Mutex<std::collections::HashMap<RelPath, transfer::Presealed>>,
    /// The chunk lists of the large files the last scan hashed, with the
    /// stat they were read at: their upload takes them as hints rather
    /// than running FastCDC again (see [`crate::chunker::Hints`]).
    pub(crate) scan_lists: Mutex<ScanLists>,
    /// New files being staged from previews of their upload on another
    /// device, by path ([`preview`]).
    pub(crate) staged: Mutex<std::collections::HashMap<RelPath, preview::Slot>>,
    /// Set once the store is found to take no previews.
    pub(crate) previews_off: AtomicBool,
}

impl<R: Remote> std::fmt::Debug for Engine<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("root", &self.config.root).finish_non_exhaustive()
    }
}

/// Says "the disk is full" when that is why `e` happened. SQLite reports a
/// full disk as "database or disk is full" or, when its shared-memory file
/// cannot grow, as an I/O error of `xShmMap`; neither tells a person what to
/// do. So on an index or local I/O error, a 64 KiB probe is written and
/// fsynced in the state folder: if that hits ENOSPC (or a quota), the
/// error becomes [`EngineError::DiskFull`].
pub fn explain_disk_full(fs: &dyn Fs, root: &Path, e: EngineError) -> EngineError {
    if !matches!(e, EngineError::Index(_) | EngineError::Io { .. }) {
        return e;
    }
    let is_full = |e: &std::io::Error| {
        matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
    };
    let probe = root.join(STATE_DIR).join("tmp").join("space-probe");
    let _ = fs.remove_file(&probe);
    let full = match fs.create_new(&probe) {
        Err(e) => is_full(&e),
        Ok(mut f) => f.write_all(&[0u8; 64 << 10]).and_then(|()| f.sync_all()).is_err_and(|e| is_full(&e)),
    };
    let _ = fs.remove_file(&probe);
    if full {
        EngineError::DiskFull { root: root.to_path_buf(), detail: e.to_string() }
    } else {
        e
    }
}

/// The file in the state folder whose mtime the engine sets to
/// the file system's time before a scan or a placement (the racily-clean
/// rule's horizon).
pub const CLOCK_MARKER: &str = "clock";

/// The file beside the index that marks a folder as a set-up sync root.
pub const ROOT_MARKER: &str = "root-id";

/// Makes `root` a sync root: creates it, its state folder and the marker.
/// Idempotent.
pub fn init_root(fs: &dyn Fs, root: &Path, root_id: &str) -> Result<(), EngineError> {
    let io = |what: &str| {
        let what = format!("{what} in {}", root.display());
        move |source| EngineError::Io { what, source }
    };
    for dir in [root.to_path_buf(), root.join(STATE_DIR), root.join(STATE_DIR).join("tmp")] {
        if !fs.exists(&dir).map_err(io("checking the sync folder"))? {
            fs.create_dir(&dir).map_err(io("creating the sync folder"))?;
        }
    }
    let marker = root.join(STATE_DIR).join(ROOT_MARKER);
    if !fs.exists(&marker).map_err(io("checking the root marker"))? {
        let tmp = root.join(STATE_DIR).join("tmp").join("root-id.new");
        // Left by a process killed right here: it would block `create_new`.
        let _ = fs.remove_file(&tmp);
        let mut f = fs.create_new(&tmp).map_err(io("writing the root marker"))?;
        f.write_all(root_id.as_bytes()).map_err(io("writing the root marker"))?;
        f.sync_all().map_err(io("writing the root marker"))?;
        drop(f);
        fs.rename(&tmp, &marker).map_err(io("writing the root marker"))?;
    }
    Ok(())
}

impl<R: Remote> Engine<R> {
    /// An engine over an existing sync root (see [`init_root`]) whose index
    /// is `index`.
    pub fn new(
        remote: R,
        keys: AccountKeys,
        index: Index,
        fs: Arc<dyn Fs>,
        clock: Arc<dyn Clock>,
        rng: EngineRng,
        config: EngineConfig,
    ) -> Self {
        let (status, _) = watch::channel(Status::default());
        Self {
            remote,
            keys: Arc::new(keys),
            index,
            fs,
            clock,
            rng: Mutex::new(rng),
            config,
            status,
            paused: AtomicBool::new(false),
            confirmed_deletions: AtomicBool::new(false),
            problems: Mutex::new(Vec::new()),
            last_scan: Mutex::new(None),
            dirty: Mutex::new(None),
            touched: Mutex::new(BTreeSet::new()),
            watched: AtomicBool::new(false),
            activity: activity::ActivityLog::default(),
            limits: limit::Limits::default(),
            wake: tokio::sync::Notify::new(),
            deltas: AtomicBool::new(true),
            prefetched: Mutex::new(std::collections::HashMap::new()),
            presealed: Mutex::new(std::collections::HashMap::new()),
            scan_lists: Mutex::new(ScanLists::new()),
            staged: Mutex::new(std::collections::HashMap::new()),
            previews_off: AtomicBool::new(false),
        }
    }

    /// Runs a round soon in the daemon ([`Engine::run`]), as if something
    /// had changed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Recent activity (uploads, downloads, deletions, conflicts).
    pub fn activity(&self) -> &activity::ActivityLog {
        &self.activity
    }

    /// Bandwidth limits, changeable while running.
    pub fn limits(&self) -> &limit::Limits {
        &self.limits
    }

    pub(crate) fn record(&self, kind: activity::ActivityKind, path: &RelPath, bytes: u64) {
        let time_ms = self.now_ns() / 1_000_000;
        self.activity.record(activity::Activity { time_ms, kind, path: path.to_string(), bytes });
    }

    /// The local index (for status, conflicts, selective sync).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The store.
    pub fn remote(&self) -> &R {
        &self.remote
    }

    /// The account keys.
    pub fn keys(&self) -> &AccountKeys {
        &self.keys
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Watches the engine's status.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Says that syncing has stopped and why (the engine's loop ended on
    /// its own, or could not start), for the status file, the tray and the
    /// window; the next round, if one runs, replaces it.
    pub fn report_stopped(&self, why: String) {
        self.update_status(|s| {
            s.state = SyncState::Error;
            s.current.clear();
            s.last_error = Some(why);
        });
    }

    pub(crate) fn update_status(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }

    /// Pauses or resumes: a paused engine finishes the op at hand and then
    /// does nothing until resumed.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.update_status(|s| {
            s.state = if paused { SyncState::Paused } else { SyncState::Syncing };
        });
    }

    /// Whether sync is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Lets the next round run a plan above the mass-deletion threshold.
    pub fn confirm_deletions(&self) {
        self.confirmed_deletions.store(true, Ordering::SeqCst);
    }

    /// Problems of the last round.
    pub fn problems(&self) -> Vec<Problem> {
        self.problems.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub(crate) fn abs(&self, p: &RelPath) -> PathBuf {
        self.config.root.join(p.as_str())
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.config.root.join(STATE_DIR)
    }

    pub(crate) fn now_ns(&self) -> i64 {
        self.clock.now_ns()
    }

    /// Refuses to run on a root whose marker is gone (an unmounted disk
    /// looks like an empty folder: reading it as "everything deleted" would
    /// empty the store).
    pub fn check_root(&self) -> Result<(), EngineError> {
        let marker = self.state_dir().join(ROOT_MARKER);
        match self.fs.exists(&marker) {
            Ok(true) => Ok(()),
            _ => Err(EngineError::RootMissing(self.config.root.clone())),
        }
    }

    /// Removes download temp files (`.coffer/tmp/dl-*.part`) left by a
    /// process that died mid-download: between rounds this engine has none
    /// in flight, and without the sweep every crash would leak up to a
    /// whole file's size for good. One root is synced by one process at a
    /// time; a second one on the same root would at worst see a download
    /// deferred to its next round.
    fn sweep_temp_files(&self) {
        let tmp = self.state_dir().join("tmp");
        let Ok(names) = self.fs.read_dir(&tmp) else { return };
        for name in names.into_iter().flatten() {
            if name.starts_with("dl-") && name.ends_with(".part") {
                if let Err(e) = self.fs.remove_file(&tmp.join(&name)) {
                    tracing::warn!(error = %e, file = %name, "cannot remove a stale download temp file");
                }
            }
        }
    }

    /// Notes what the watcher saw: the next round rescans just these paths
    /// (or everything, for a batch that lost events).
    pub fn note_changes(&self, batch: &crate::watch::WatchBatch) {
        if let Ok(mut d) = self.dirty.lock() {
            // New ignore rules change what every path means: rescan all.
            let rules_changed = batch.paths.iter().any(|p| p.as_str() == crate::ignore::IGNORE_FILE);
            match (&mut *d, batch.full_rescan || rules_changed) {
                (Some(paths), false) => paths.extend(batch.paths.iter().cloned()),
                _ => *d = None,
            }
        }
    }

    /// Tells the engine that every change to the root other than its own
    /// is reported through [`Engine::note_changes`] (the daemon's watcher;
    /// the simulation's). [`Engine::run`] sets it.
    pub fn set_watched(&self, watched: bool) {
        self.watched.store(watched, Ordering::SeqCst);
    }

    /// Notes that the current round may have written at `path`.
    pub(crate) fn touch(&self, path: &RelPath) {
        if let Ok(mut t) = self.touched.lock() {
            t.insert(path.clone());
        }
    }

    /// Keeps the chunk lists a scan made for the uploads that follow, in
    /// place of the last scan's.
    fn keep_lists(&self, lists: ScanLists) {
        if let Ok(mut kept) = self.scan_lists.lock() {
            *kept = lists;
        }
    }

    /// The chunk list the last scan made of `path`, if it read the file as
    /// it is now (`expect`); taken, so it is used once.
    pub(crate) fn scan_list(&self, path: &RelPath, expect: &Stat) -> Option<Vec<(ContentHash, u32)>> {
        let (stat, list) = self.scan_lists.lock().ok()?.remove(path)?;
        stat.same_identity(expect).then_some(list)
    }

    /// Asks the next round for a full scan (the periodic safety net).
    pub fn request_full_scan(&self) {
        if let Ok(mut s) = self.last_scan.lock() {
            *s = None;
        }
    }

    /// The racily-clean rule's horizon for what is read or written from
    /// now on: the file system's time, stamped on a file in the state
    /// folder (see [`crate::scan::racy_horizon`]).
    pub(crate) fn racy_horizon(&self) -> i64 {
        let marker = self.state_dir().join(CLOCK_MARKER);
        crate::scan::racy_horizon(self.fs.as_ref(), &marker, self.clock.as_ref())
    }

    /// The local tree: the last scan patched by a targeted rescan of what
    /// the watcher reported, or a full scan (trusting the stat cache) when
    /// there is no last scan or events were lost. Refreshes the cache.
    ///
    /// A targeted rescan reads only the cache rows of the subtrees it
    /// covers; only a full scan reads the whole cache (and drops it before
    /// the round loads the other trees).
    pub(crate) fn scan(&self) -> Result<ScanResult, EngineError> {
        let started = std::time::Instant::now();
        // Whatever the scan reads, it reads after this.
        let horizon = self.racy_horizon();
        let excluded = self.index.excluded()?;
        let scanner =
            Scanner::new(self.fs.clone(), self.config.root.clone(), &self.keys, self.config.chunker)
                .with_clock(self.clock.clone())
                .with_racy_horizon(horizon);
        let io = |e: crate::scan::ScanError| EngineError::Io {
            what: "scanning the sync folder".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let dirty = self.dirty.lock().map(|mut d| d.replace(BTreeSet::new())).unwrap_or(None);
        let previous = self.last_scan.lock().ok().and_then(|mut s| s.take());
        let mut hashed = 0;
        let (result, cached, covered) = match (previous, dirty) {
            (Some(base), Some(paths)) if paths.is_empty() => (base, BTreeMap::new(), Some(Vec::new())),
            (Some(mut base), Some(paths)) => {
                let paths: Vec<RelPath> = paths.into_iter().collect();
                let cached = self.index.cached_under(&paths)?;
                let mut t =
                    scanner.scan_paths(&paths, &CacheView(&cached, &self.index), &excluded).map_err(io)?;
                self.keep_lists(std::mem::take(&mut t.result.lists));
                hashed = t.result.files_hashed;
                merge_targeted(&mut base, &t);
                (base, cached, Some(t.covered))
            }
            _ => {
                let cached = self.index.all_cached()?;
                let mut result = scanner.scan(&CacheView(&cached, &self.index), &excluded).map_err(io)?;
                self.keep_lists(std::mem::take(&mut result.lists));
                hashed = result.files_hashed;
                (result, cached, None)
            }
        };
        let walked_at = started.elapsed();
        // The root vanished during the scan: never trust an empty result.
        self.check_root()?;
        let covered_set: Option<BTreeSet<&RelPath>> = covered.as_ref().map(|c| c.iter().collect());
        // Whether `p` or one of its ancestors was covered (always, for a full scan).
        let in_scope = |p: &RelPath| covered_set.as_ref().is_none_or(|set| covered_by(set, p));
        let changed = |p: &RelPath, e: &crate::scan::LocalEntry| {
            cached.get(p).is_none_or(|(s, n)| !same_cached(s, &e.stat) || n != &e.node)
        };
        let scanned: Vec<(&RelPath, &crate::scan::LocalEntry)> = match &covered {
            // A targeted scan: only what it covered can have changed.
            Some(covered) => covered
                .iter()
                .flat_map(|c| subtree(&result.entries, c))
                .filter(|(p, e)| changed(p, e))
                .collect(),
            None => result.entries.iter().filter(|(p, e)| changed(p, e)).collect(),
        };
        // A file whose mtime is at or after the horizon may be written
        // again within the same clock tick after it was read, with the same
        // size: its stat would then vouch for content it no longer has, for
        // good once the tick is old (the scanner's racily-clean rule looks
        // at the mtime against the horizon of the scan that reads the
        // cache, not of the one that wrote it). Such a file is not cached:
        // the next scan that covers it (the watcher reports that write)
        // reads it again.
        let (racy_now, put): (Vec<_>, Vec<_>) = scanned.into_iter().partition(|(_, e)| {
            e.node.kind == crate::model::NodeKind::File && is_racy(e.stat.mtime_ns, horizon)
        });
        let put: Vec<_> =
            put.into_iter().map(|(p, e)| (p.clone(), to_cached(&e.stat), e.node.clone())).collect();
        let gone: Vec<_> = cached
            .keys()
            .filter(|p| in_scope(p))
            .filter(|p| {
                !result.entries.contains_key(*p) && !result.unreadable.iter().any(|(u, _)| p.starts_with(u))
            })
            .chain(racy_now.into_iter().filter(|(p, _)| cached.contains_key(*p)).map(|(p, _)| p))
            .cloned()
            .collect();
        drop(cached);
        self.index.update_cache(&put, &gone)?;
        tracing::debug!(
            walk_ms = walked_at.as_millis() as u64,
            update_ms = (started.elapsed() - walked_at).as_millis() as u64,
            targeted = covered.is_some(),
            hashed,
            put = put.len(),
            gone = gone.len(),
            "scanned"
        );
        Ok(result)
    }

    /// Keeps `scan` as the last scan when nothing was changed on disk by
    /// our hand since it was taken: the next round can start from it and
    /// rescan only what the watcher reports.
    fn keep_scan(&self, scan: ScanResult) {
        if let Ok(mut keep) = self.last_scan.lock() {
            *keep = Some(scan);
        }
    }

    /// One round: pull and scan, plan, apply. Returns what it did.
    pub async fn round(&self) -> Result<RoundReport, EngineError> {
        // `coffer pause` from another process sets this flag in the index.
        let paused_by_flag = self.index.get_meta("paused")?.as_deref() == Some("1");
        if paused_by_flag != self.is_paused() {
            self.set_paused(paused_by_flag);
        }
        if self.is_paused() {
            return Err(EngineError::Paused);
        }
        self.check_root()?;
        self.sweep_temp_files();
        let mut report = RoundReport::default();
        let started = std::time::Instant::now();
        // The pull waits for the store while the scan reads the disk: the
        // pull is polled first, so its request is out before the scan
        // (which does not wait on anything) runs. Neither reads what the
        // other writes.
        let pulling = async {
            let pulled = self.pull(&mut report.problems).await?;
            self.adopt_own_commits()?;
            Ok::<_, EngineError>((pulled, started.elapsed()))
        };
        let scanning = async {
            let scanning = std::time::Instant::now();
            self.scan().map(|scan| (scan, scanning.elapsed()))
        };
        let (pulled, scanned) = futures::future::join(pulling, scanning).await;
        let (scan, scan_time) = scanned?;
        let (pulled, pulled_at) = match pulled {
            Ok(p) => p,
            Err(e) => {
                // The scan stands (it refreshed the cache): the next round
                // starts from it, as after a round with nothing to do,
                // rather than scanning everything again while offline.
                self.keep_scan(scan);
                return Err(e);
            }
        };
        report.pulled = pulled;
        let ready_at = started.elapsed();
        // Loaded without chunk lists: the planner does not read them, and
        // for a large tree they are a good part of the round's memory.
        let synced = self.index.synced_for_plan()?;
        let mut remote = self.index.remote_for_plan()?;
        let excluded = self.index.excluded()?;
        let ignore =
            IgnoreRules::load(self.fs.as_ref(), &self.config.root).unwrap_or_else(|_| IgnoreRules::builtin());
        // Remote entries this device does not materialise: ignored names.
        let mut ignored = ignore.filter();
        remote.retain(|p, e| {
            let is_dir = e.live.as_ref().is_some_and(|l| l.node.kind == crate::model::NodeKind::Dir);
            !ignored.is_ignored(p, is_dir)
        });
        drop(ignored);
        let mut frozen: BTreeSet<RelPath> = excluded;
        frozen.extend(scan.unreadable.iter().map(|(p, _)| p.clone()));
        frozen.extend(scan.unstable.iter().cloned());
        // Ignored paths keep whatever the store has: adding a pattern to
        // .cofferignore must not delete files from other devices.
        frozen.extend(scan.ignored.iter().cloned());
        for (p, why) in scan.unreadable.iter().chain(scan.skipped.iter()) {
            report.problems.push(Problem { path: p.to_string(), message: why.clone() });
        }
        for (a, b) in &scan.collisions {
            frozen.insert(a.clone());
            frozen.insert(b.clone());
            report.problems.push(Problem {
                path: a.to_string(),
                message: format!(
                    "\"{a}\" and \"{b}\" differ only by case or Unicode form; other devices cannot hold both. Rename one to sync them."
                ),
            });
        }
        let loaded_at = started.elapsed();
        let ops = plan(PlanInput { local: &scan.entries, synced: &synced, remote: &remote, frozen: &frozen });
        drop((synced, remote, frozen));
        let chunks_from = started.elapsed();
        let ops = self.with_chunks(ops)?;
        report.planned = ops.len();
        // Where a round's time goes, for profiling at scale (RUST_LOG=coffer_engine=debug).
        tracing::debug!(
            pull_ms = pulled_at.as_millis() as u64,
            scan_ms = scan_time.as_millis() as u64,
            plan_ms = (started.elapsed() - ready_at).as_millis() as u64,
            load_ms = (loaded_at - ready_at).as_millis() as u64,
            chunks_ms = (started.elapsed() - chunks_from).as_millis() as u64,
            entries = scan.entries.len(),
            ops = ops.len(),
            "round planned"
        );
        let deletions = ops.iter().filter(|o| o.is_deletion()).count();
        if deletions > self.config.mass_delete_threshold
            && !self.confirmed_deletions.swap(false, Ordering::SeqCst)
        {
            self.update_status(|s| {
                s.state = SyncState::NeedsConfirmation;
                s.pending_deletions = deletions as u64;
            });
            return Err(EngineError::MassDeletion(deletions));
        }
        if !ops.is_empty() {
            self.update_status(|s| {
                s.state = SyncState::Syncing;
                s.files_total = ops.len() as u64;
                s.files_done = 0;
                s.bytes_total = ops.iter().map(|o| op_bytes(o, &scan.entries)).sum();
                s.bytes_done = 0;
                s.pending_deletions = 0;
            });
            let applying = std::time::Instant::now();
            if let Ok(mut t) = self.touched.lock() {
                t.clear();
            }
            self.apply(ops, &scan, &mut report).await?;
            tracing::debug!(apply_ms = applying.elapsed().as_millis() as u64, "round applied");
            let touched = self.touched.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
            // The scan is stale only where the round wrote: with a watcher
            // reporting everyone else's changes, the next round rescans
            // just those paths (a first sync of many files would otherwise
            // rescan the whole growing tree after every batch).
            if self.watched.load(Ordering::SeqCst) {
                if let (Ok(mut dirty), Ok(mut keep)) = (self.dirty.lock(), self.last_scan.lock()) {
                    if let Some(d) = dirty.as_mut() {
                        d.extend(touched);
                        *keep = Some(scan);
                    }
                }
            }
        } else {
            self.keep_scan(scan);
        }
        let conflicts = self.index.conflicts()?.len() as u64;
        if let Ok(mut p) = self.problems.lock() {
            p.clone_from(&report.problems);
        }
        self.update_status(|s| {
            s.conflicts = conflicts;
            s.current.clear();
            s.last_error = report.problems.first().map(|p| format!("{}: {}", p.path, p.message));
        });
        Ok(report)
    }

    /// Gives the ops that move content the chunk lists the planner's trees
    /// were loaded without.
    fn with_chunks(&self, mut ops: Vec<Op>) -> Result<Vec<Op>, EngineError> {
        let mut wanted: Vec<&mut Vec<ChunkRef>> = Vec::new();
        let mut ids = Vec::new();
        for op in &mut ops {
            match op {
                Op::Download { entry, .. } | Op::Conflict { entry, .. } => {
                    if let Some(live) = entry.live.as_mut() {
                        ids.push(entry.entry_id);
                        wanted.push(&mut live.chunks);
                    }
                }
                Op::Agree { entry, .. } => {
                    ids.push(entry.entry_id);
                    wanted.push(&mut entry.chunks);
                }
                _ => {}
            }
        }
        let lists = self.index.remote_chunks_of(&ids)?;
        for (slot, list) in wanted.into_iter().zip(lists) {
            *slot = list;
        }
        Ok(ops)
    }

    /// Runs rounds until one finds nothing to do (or `max_rounds` pass).
    pub async fn sync_until_quiet(&self, max_rounds: usize) -> Result<Vec<RoundReport>, EngineError> {
        let mut reports = Vec::new();
        for _ in 0..max_rounds.max(1) {
            let r =
                self.round().await.map_err(|e| explain_disk_full(self.fs.as_ref(), &self.config.root, e))?;
            let quiet = r.is_quiet() || (r.planned == r.deferred && r.pulled == 0 && !reports.is_empty());
            reports.push(r);
            if quiet {
                self.update_status(|s| {
                    if s.state == SyncState::Syncing {
                        s.state = SyncState::UpToDate;
                    }
                });
                break;
            }
        }
        self.trash_purge();
        Ok(reports)
    }

    /// The daemon: rounds whenever the disk or the store changes, a full
    /// rescan every `rescan_every` as a safety net, backoff while offline.
    /// Returns when `shutdown` fires (or its sender is dropped).
    pub async fn run(
        self: Arc<Self>,
        mut local_changes: tokio::sync::mpsc::Receiver<crate::watch::WatchBatch>,
        rescan_every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) where
        R: 'static,
    {
        self.set_watched(true);
        let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
        // The furthest journal position the long-poll has heard of.
        let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Aborted however this loop ends: also if a round panics, so that a
        // restarted loop does not leave it polling beside its own.
        let poller = AbortOnDrop(tokio::spawn(pull::long_poll_loop(self.clone(), wake_tx, heard.clone())));
        let previewer = AbortOnDrop(tokio::spawn(preview::preview_loop(self.clone())));
        let mut backoff = Duration::from_millis(250);
        loop {
            // Whether the last round found nothing to do: no op planned,
            // none deferred, nothing pulled.
            let mut settled = false;
            let next_wait = match self.sync_until_quiet(50).await {
                Ok(reports) => {
                    settled = reports.last().is_some_and(RoundReport::is_quiet);
                    backoff = Duration::from_millis(250);
                    self.update_status(|s| {
                        if matches!(s.state, SyncState::Syncing | SyncState::Offline | SyncState::Error) {
                            s.state = SyncState::UpToDate;
                        }
                    });
                    rescan_every
                }
                Err(EngineError::Paused) => Duration::from_secs(1),
                Err(e) => {
                    let offline = matches!(&e, EngineError::Remote(r) if r.is_retryable());
                    let msg = e.to_string();
                    tracing::warn!(error = %msg, "sync round failed");
                    self.update_status(|s| {
                        if s.state != SyncState::NeedsConfirmation {
                            s.state = if offline { SyncState::Offline } else { SyncState::Error };
                        }
                        s.last_error = Some(msg);
                    });
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    if e.is_retryable() {
                        wait
                    } else {
                        rescan_every.min(Duration::from_secs(30))
                    }
                }
            };
            let rescan_at = tokio::time::Instant::now() + next_wait;
            let mut stop = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(rescan_at) => self.request_full_scan(),
                    Some(batch) = local_changes.recv() => {
                        // No wait of our own here: the watcher only sends a
                        // batch once its debounce saw the burst settle.
                        self.note_changes(&batch);
                        while let Ok(more) = local_changes.try_recv() {
                            self.note_changes(&more);
                        }
                    }
                    Some(()) = wake_rx.recv() => {
                        // News of changes the rounds have already pulled:
                        // mostly this device's own commits, heard of while
                        // its round made them. After a round that found
                        // nothing to do, another one would only load and
                        // plan the whole tree again to find nothing.
                        let pulled = self.index.cursor().is_ok_and(|c| c.get() >= heard.load(Ordering::SeqCst));
                        if settled && pulled {
                            continue;
                        }
                    }
                    () = self.wake.notified() => {}
                    _ = shutdown.changed() => stop = true,
                }
                break;
            }
            if stop || *shutdown.borrow() {
                break;
            }
        }
        drop((poller, previewer));
    }
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `p` or one of its ancestors is in `set`: a lookup per level,
/// not a comparison with every member.
fn covered_by(set: &BTreeSet<&RelPath>, p: &RelPath) -> bool {
    p.self_and_ancestors().any(|a| set.contains(&a))
}

/// The entries of `map` at `c` or under it. Every path that starts with
/// `c`'s text sorts together, so this is one range of the map, found in
/// O(log n).
fn subtree<'a, V>(
    map: &'a BTreeMap<RelPath, V>,
    c: &'a RelPath,
) -> impl Iterator<Item = (&'a RelPath, &'a V)> {
    map.range(c.clone()..)
        .take_while(move |(p, _)| p.as_str().starts_with(c.as_str()))
        .filter(move |(p, _)| p.starts_with(c))
}

/// Replaces what `base` says about the subtrees `t` covered with what `t`
/// found there. Costs the size of those subtrees, not the size of `base`
/// times the number of covered paths: after a round that downloaded
/// thousands of files, a targeted rescan covers thousands of paths in a
/// tree of as many entries.
fn merge_targeted(base: &mut ScanResult, t: &crate::scan::TargetedScan) {
    let set: BTreeSet<&RelPath> = t.covered.iter().collect();
    let under = |p: &RelPath| covered_by(&set, p);
    let stale: Vec<RelPath> =
        t.covered.iter().flat_map(|c| subtree(&base.entries, c).map(|(p, _)| p.clone())).collect();
    for p in &stale {
        base.entries.remove(p);
    }
    base.unreadable.retain(|(p, _)| !under(p));
    base.unstable.retain(|p| !under(p));
    base.skipped.retain(|(p, _)| !under(p));
    base.ignored.retain(|p| !under(p));
    base.collisions.retain(|(a, b)| !under(a) && !under(b));
    base.entries.extend(t.result.entries.iter().map(|(p, e)| (p.clone(), e.clone())));
    base.unreadable.extend(t.result.unreadable.iter().cloned());
    base.unstable.extend(t.result.unstable.iter().cloned());
    base.skipped.extend(t.result.skipped.iter().cloned());
    base.ignored.extend(t.result.ignored.iter().cloned());
    base.collisions.extend(t.result.collisions.iter().cloned());
}

fn op_bytes(op: &Op, local: &BTreeMap<RelPath, crate::scan::LocalEntry>) -> u64 {
    match op {
        Op::Upload { path, .. } => local.get(path).map_or(0, |e| e.node.size),
        Op::Download { entry, .. } | Op::Conflict { entry, .. } => {
            entry.live.as_ref().map_or(0, |l| l.node.size)
        }
        _ => 0,
    }
}

fn same_cached(c: &crate::index::CachedStat, s: &Stat) -> bool {
    c.size == s.size && c.mtime_ns == s.mtime_ns && c.inode == s.inode && c.mode == s.mode
}

fn to_cached(s: &Stat) -> crate::index::CachedStat {
    crate::index::CachedStat { size: s.size, mtime_ns: s.mtime_ns, inode: s.inode, mode: s.mode }
}

/// The index's stat cache as the scanner sees it.
struct CacheView<'a>(&'a BTreeMap<RelPath, (crate::index::CachedStat, Node)>, &'a Index);

impl crate::scan::StatCache for CacheView<'_> {
    fn lookup(&self, path: &RelPath) -> Option<(Stat, Node)> {
        self.0.get(path).map(|(c, n)| {
            let kind = n.kind.into();
            (Stat { kind, size: c.size, mtime_ns: c.mtime_ns, inode: c.inode, mode: c.mode }, n.clone())
        })
    }

    /// The list the file was last synced with (a hint, checked chunk by chunk).
    fn chunk_hints(&self, path: &RelPath) -> Option<Vec<(ContentHash, u32)>> {
        let list = self.1.synced_chunks(path).ok().flatten()?;
        Some(list.iter().map(|c| (c.content, c.len)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StatKind;
    use crate::scan::{LocalEntry, TargetedScan};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn entry(size: u64) -> LocalEntry {
        let stat = Stat { kind: StatKind::Dir, size, mtime_ns: 0, inode: size, mode: 0o755 };
        LocalEntry { node: Node::dir(), stat }
    }

    fn scan_of(paths: &[&str], size: u64) -> ScanResult {
        ScanResult { entries: paths.iter().map(|s| (p(s), entry(size))).collect(), ..Default::default() }
    }

    /// A covered path replaces its whole subtree and nothing else: not a
    /// sibling whose name only starts with the same text ("a b", "ab",
    /// "a.txt" sort between "a" and "a/..." or right after it).
    #[test]
    fn a_targeted_scan_replaces_exactly_the_covered_subtrees() {
        let mut base = scan_of(&["a", "a b", "a.txt", "a/x", "a/y/z", "ab", "b", "b/c", "c", "d/e"], 1);
        base.unstable = vec![p("a/y/z"), p("ab")];
        base.unreadable = vec![(p("d/e"), "denied".into())];
        base.ignored = vec![p("a/x"), p("c")];
        base.collisions = vec![(p("a b"), p("a/x"))];
        let mut found = scan_of(&["a", "a/new", "d/e"], 2);
        found.unstable = vec![p("a/new")];
        let t = TargetedScan { covered: vec![p("a"), p("d/e")], missing: vec![], result: found };
        merge_targeted(&mut base, &t);
        let sizes: Vec<(String, u64)> =
            base.entries.iter().map(|(k, v)| (k.to_string(), v.stat.size)).collect();
        let want: Vec<(String, u64)> = [
            ("a", 2),
            ("a b", 1),
            ("a.txt", 1),
            ("a/new", 2),
            ("ab", 1),
            ("b", 1),
            ("b/c", 1),
            ("c", 1),
            ("d/e", 2),
        ]
        .iter()
        .map(|(k, s)| (k.to_string(), *s))
        .collect();
        assert_eq!(sizes, want);
        assert_eq!(base.unstable, vec![p("ab"), p("a/new")]);
        assert!(base.unreadable.is_empty());
        assert_eq!(base.ignored, vec![p("c")]);
        assert!(base.collisions.is_empty());
    }

    #[test]
    fn covered_by_looks_at_each_ancestor() {
        let (a, bc) = (p("a"), p("b/c"));
        let set: BTreeSet<&RelPath> = [&a, &bc].into_iter().collect();
        for (q, want) in [
            ("a", true),
            ("a/b/c", true),
            ("ab", false),
            ("a b/c", false),
            ("b", false),
            ("b/c/d", true),
            ("b/cd", false),
        ] {
            assert_eq!(covered_by(&set, &p(q)), want, "{q}");
        }
    }
}
