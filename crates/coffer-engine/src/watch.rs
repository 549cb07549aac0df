//! The watcher: filesystem events under a sync root, debounced and
//! coalesced into batches of paths to rescan.
//!
//! Events come from inotify, read directly (through `rustix`) by one
//! thread that also debounces them. Not through `notify`: notify 8 asks
//! inotify for `IN_OPEN` on every folder it watches, so every open of
//! every file in the root (our own scans and uploads, the user's editor,
//! an indexer, a backup tool) woke its thread, only for the event to be
//! dropped; that was a tenth of each daemon's CPU when syncing many small
//! files. Here the kernel is asked only for what can change a file:
//! create, delete, modify, attributes, close after writing, and moves.
//!
//! A batch is a hint, never a verdict: it says where to look
//! ([`crate::scan::Scanner::scan_paths`]), not what changed, so lost or
//! spurious events cost at most a rescan. The periodic full scan remains
//! the safety net.
//!
//! Rules:
//!
//! - Every real directory under the root is watched, except the root's
//!   state folder (`.coffer`: its temp files and the index's journal would
//!   be most of the events). Symlinks are not followed, as the scanner does
//!   not follow them.
//! - A new directory (created or moved in) is watched, with everything
//!   already in it, before its path is reported; the scan of that path,
//!   which comes after, finds what was written into it before its watch.
//!   A directory moved away has its watches removed, so a folder moved out
//!   of the root is no longer watched, and one moved within it is watched
//!   under its new name.
//! - Past the kernel's limit of watches (`fs.inotify.max_user_watches`),
//!   watching goes on for what could be watched, the limit is warned about
//!   once, and the folders left out are covered by the periodic full scans
//!   only.
//! - A batch is sent once no event arrived for `debounce`, or at the latest
//!   [`MAX_DELAY_FACTOR`] × `debounce` after its first event (so a file
//!   written continuously is still looked at; its read will just be
//!   unstable until it settles).
//! - Many events on one path are one entry. An event on a directory names
//!   the directory, which a targeted scan walks.
//! - `full_rescan` is set when a targeted scan cannot be trusted: the kernel
//!   queue overflowed (the watches are then set up again from scratch), a
//!   new directory could not be watched (the watch limit), the root itself
//!   was deleted, moved or unmounted (its watch is then gone, and is not
//!   set up again if the root comes back: the periodic full scans cover it
//!   until the daemon restarts), inotify itself failed (the watcher then
//!   ends), or a batch grew beyond [`MAX_BATCH_PATHS`] paths (then `paths`
//!   is empty: bounded memory).
//! - A name that is not valid UTF-8 (or not a valid [`RelPath`]) is reported
//!   as its nearest valid ancestor directory, or as a full rescan at the top.
//! - If the receiver falls behind, batches are merged rather than queued.
//!
//! Dropping the [`WatchHandle`] stops watching and ends the thread; the
//! receiver then yields `None`.

#[cfg(not(target_os = "linux"))]
compile_error!("coffer-engine's watcher reads inotify: it builds on Linux only");

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use tokio::sync::mpsc;

use crate::model::{RelPath, STATE_DIR};

/// A batch larger than this becomes a full rescan.
pub const MAX_BATCH_PATHS: usize = 10_000;

/// A batch is sent at most this many debounce periods after its first event.
pub const MAX_DELAY_FACTOR: u32 = 10;

/// Batches the sync loop may hold before the watcher merges further ones.
const CHANNEL_CAPACITY: usize = 8;

/// What each directory's watch asks the kernel for: everything that can
/// change an entry, nothing that only reads one (no `IN_OPEN`, `IN_ACCESS`
/// or `IN_CLOSE_NOWRITE`). `EXCL_UNLINK`: no events from files already
/// unlinked but still open.
const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// The read buffer: many events per system call (each is 16 bytes plus
/// its name, padded).
const READ_BUFFER: usize = 64 * 1024;

/// Paths to rescan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchBatch {
    /// Paths (files or directories, existing or not) to rescan.
    pub paths: BTreeSet<RelPath>,
    /// Events may have been lost: scan everything.
    pub full_rescan: bool,
}

/// The watcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {source}{hint}")]
pub struct WatchError {
    /// The root.
    pub path: String,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
    hint: &'static str,
}

impl WatchError {
    fn new(path: &Path, source: std::io::Error) -> Self {
        let hint = match Errno::from_io_error(&source) {
            Some(Errno::NOSPC) => {
                "; the limit of watched folders is reached: raise it (sysctl fs.inotify.max_user_watches)"
            }
            Some(Errno::MFILE) => {
                "; too many watchers are running: raise the limit (sysctl fs.inotify.max_user_instances)"
            }
            _ => "",
        };
        Self { path: crate::fs::display_path(path), source, hint }
    }

    /// Whether starting again can help (the root may be mounted later).
    /// Watch limits need the user.
    pub fn is_retryable(&self) -> bool {
        matches!(self.source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::Interrupted)
    }
}

/// Accumulates paths into one batch (pure; the thread below drives it).
#[derive(Debug)]
struct Coalescer {
    batch: WatchBatch,
    max_paths: usize,
}

impl Coalescer {
    fn new(max_paths: usize) -> Self {
        Self { batch: WatchBatch::default(), max_paths }
    }

    fn is_empty(&self) -> bool {
        self.batch.paths.is_empty() && !self.batch.full_rescan
    }

    fn full_rescan(&mut self) {
        self.batch.full_rescan = true;
        self.batch.paths.clear();
    }

    /// `rel`: a path relative to the root, not necessarily valid as a
    /// [`RelPath`]; the root itself (empty) asks for a full rescan.
    fn add_path(&mut self, rel: &Path) {
        if self.batch.full_rescan {
            return;
        }
        // Keep the longest valid prefix of the path.
        let mut best: Option<RelPath> = None;
        for (i, c) in rel.components().enumerate() {
            let name = match c {
                Component::Normal(n) => n.to_str(),
                _ => None,
            };
            let next = match (name, &best) {
                (Some(n), _) if i == 0 && n.eq_ignore_ascii_case(STATE_DIR) => return,
                (Some(n), None) if i == 0 => RelPath::new(n).ok(),
                (Some(n), Some(b)) => b.join(n).ok(),
                _ => None,
            };
            match next {
                Some(n) => best = Some(n),
                None => break,
            }
        }
        match best {
            None => self.full_rescan(),
            Some(p) => {
                self.batch.paths.insert(p);
                if self.batch.paths.len() > self.max_paths {
                    self.full_rescan();
                }
            }
        }
    }

    fn merge(&mut self, b: WatchBatch) {
        if b.full_rescan {
            return self.full_rescan();
        }
        if self.batch.full_rescan {
            return;
        }
        self.batch.paths.extend(b.paths);
        if self.batch.paths.len() > self.max_paths {
            self.full_rescan();
        }
    }

    fn take(&mut self) -> Option<WatchBatch> {
        (!self.is_empty()).then(|| std::mem::take(&mut self.batch))
    }
}

/// The watched directories: inotify's watch descriptors and the path each
/// stands for, relative to the root (empty for the root).
struct Tree {
    /// Shared with the reading loop, which reads while the tree changes.
    fd: Arc<OwnedFd>,
    root: PathBuf,
    root_wd: i32,
    dirs: HashMap<i32, PathBuf>,
    /// The watch limit was hit (warned once until a walk succeeds).
    at_limit: bool,
}

impl Tree {
    /// Watches `root` and every directory under it.
    fn new(root: &Path) -> Result<Self, WatchError> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| WatchError::new(root, e.into()))?;
        // The root itself may be a symlink to the real folder (followed,
        // as the scanner opens it); nothing under it is.
        let root_wd = inotify::add_watch(&fd, root, EVENTS).map_err(|e| WatchError::new(root, e.into()))?;
        let mut tree = Self {
            fd: Arc::new(fd),
            root: root.to_path_buf(),
            root_wd,
            dirs: HashMap::from([(root_wd, PathBuf::new())]),
            at_limit: false,
        };
        if tree.watch_under(Path::new("")).is_err() {
            // Past the watch limit: what is watched stays watched, and the
            // periodic full scans find the rest's changes.
            tree.warn_limit();
        }
        Ok(tree)
    }

    /// Watches `rel` (unless it is the root, watched from the start) and
    /// every directory under it, each before it is listed, so that a
    /// directory created while the walk runs is either listed or reported.
    /// A directory that vanished, cannot be read, or turned out not to be
    /// one is skipped: the scanner will meet it as it is. Only the watch
    /// limit is an error.
    fn watch_under(&mut self, rel: &Path) -> Result<(), Errno> {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let abs = self.root.join(&dir);
            if !dir.as_os_str().is_empty() {
                match inotify::add_watch(&self.fd, &abs, EVENTS | WatchFlags::DONT_FOLLOW) {
                    // The same directory already watched (under another
                    // name, before a move) keeps its descriptor.
                    Ok(wd) => {
                        self.dirs.insert(wd, dir.clone());
                    }
                    Err(Errno::NOSPC) => return Err(Errno::NOSPC),
                    Err(_) => continue,
                }
            }
            let Ok(entries) = std::fs::read_dir(&abs) else { continue };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let name = entry.file_name();
                if is_dir && !(dir.as_os_str().is_empty() && is_state_dir(&name)) {
                    stack.push(dir.join(name));
                }
            }
        }
        self.at_limit = false;
        Ok(())
    }

    /// Stops watching `rel` and everything under it (moved away).
    fn unwatch_under(&mut self, rel: &Path) {
        let gone: Vec<i32> =
            self.dirs.iter().filter(|(_, p)| p.starts_with(rel)).map(|(wd, _)| *wd).collect();
        for wd in gone {
            self.dirs.remove(&wd);
            // Fails only if the kernel dropped the watch already.
            let _ = inotify::remove_watch(&self.fd, wd);
        }
    }

    /// Everything from scratch: after the queue overflowed, the directories
    /// created, moved or deleted meanwhile are unknown.
    fn rewatch(&mut self, co: &mut Coalescer) {
        co.full_rescan();
        let root_wd = self.root_wd;
        let old: Vec<i32> = self.dirs.keys().copied().filter(|wd| *wd != root_wd).collect();
        for wd in old {
            self.dirs.remove(&wd);
            let _ = inotify::remove_watch(&self.fd, wd);
        }
        if self.watch_under(Path::new("")).is_err() {
            self.warn_limit();
        }
    }

    fn warn_limit(&mut self) {
        if !self.at_limit {
            self.at_limit = true;
            tracing::warn!(
                "some folders under {} cannot be watched: the limit of watched folders is reached; \
                 raise it (sysctl fs.inotify.max_user_watches). Until then, their changes are found \
                 by the periodic full scans",
                crate::fs::display_path(&self.root)
            );
        }
    }

    /// One event: what to watch, unwatch and report.
    fn on_event(&mut self, wd: i32, flags: ReadFlags, name: Option<&OsStr>, co: &mut Coalescer) {
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            return self.rewatch(co);
        }
        if flags.contains(ReadFlags::IGNORED) {
            // The watch is gone (its directory deleted or unmounted, or
            // removed by us).
            self.dirs.remove(&wd);
            if wd == self.root_wd {
                co.full_rescan();
            }
            return;
        }
        let Some(dir) = self.dirs.get(&wd) else {
            return; // A watch removed since (moved away).
        };
        let Some(name) = name else {
            // An event on a watched directory itself. Its parent reports
            // the same change by name, except the root's, which has no
            // parent here, and an unmount, where what was mounted is gone
            // and the folder under it shows again.
            if wd == self.root_wd
                && flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::UNMOUNT)
            {
                co.full_rescan();
            } else if flags.contains(ReadFlags::UNMOUNT) {
                let dir = dir.clone();
                co.add_path(&dir);
            }
            return;
        };
        if dir.as_os_str().is_empty() && is_state_dir(name) {
            return;
        }
        let rel = dir.join(name);
        if flags.contains(ReadFlags::ISDIR) {
            if flags.contains(ReadFlags::MOVED_FROM) {
                self.unwatch_under(&rel);
            }
            if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) && self.watch_under(&rel).is_err() {
                // Not watched: only a full scan can see into it now.
                self.warn_limit();
                co.full_rescan();
            }
        }
        co.add_path(&rel);
    }
}

fn is_state_dir(name: &OsStr) -> bool {
    name.as_bytes().eq_ignore_ascii_case(STATE_DIR.as_bytes())
}

/// Starts watchers.
#[derive(Debug)]
pub struct Watcher;

/// A running watcher; dropping it stops watching.
pub struct WatchHandle {
    /// Closing it wakes the thread to stop.
    stop: Option<UnixStream>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// How many events the kernel has delivered so far (what watching
    /// costs).
    pub fn events_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            // The thread exits as soon as it sees the stop socket close.
            let _ = t.join();
        }
    }
}

impl Watcher {
    /// Watches `root` recursively; batches arrive on the receiver (see the
    /// module doc for how they are formed).
    pub fn start(
        root: &Path,
        debounce: Duration,
    ) -> Result<(WatchHandle, mpsc::Receiver<WatchBatch>), WatchError> {
        let tree = Tree::new(root)?;
        let (stop_tx, stop_rx) = UnixStream::pair().map_err(|e| WatchError::new(root, e))?;
        let received = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counter = received.clone();
        let thread = std::thread::Builder::new()
            .name("coffer-watch".into())
            .spawn(move || run(tree, stop_rx, tx, debounce, &counter))
            .map_err(|e| WatchError::new(root, e))?;
        Ok((WatchHandle { stop: Some(stop_tx), received, thread: Some(thread) }, rx))
    }
}

/// Inotify failed (never seen): the watcher ends, after asking for a full
/// rescan of what it may have missed; the periodic full scans take over.
fn give_up(tx: &mpsc::Sender<WatchBatch>, why: &str) {
    tracing::warn!("the file watcher stopped: {why}; changes are found by the periodic full scans");
    let _ = tx.try_send(WatchBatch { paths: BTreeSet::new(), full_rescan: true });
}

/// The thread: reads events as they come, sends a batch after a quiet
/// `debounce` (or the maximum delay), merges when the receiver is full, and
/// ends when stopped, when the receiver is gone, or if inotify fails.
fn run(
    mut tree: Tree,
    stop: UnixStream,
    tx: mpsc::Sender<WatchBatch>,
    debounce: Duration,
    received: &AtomicU64,
) {
    let max_delay = debounce.saturating_mul(MAX_DELAY_FACTOR);
    let mut co = Coalescer::new(MAX_BATCH_PATHS);
    let mut buf = vec![MaybeUninit::<u8>::uninit(); READ_BUFFER];
    let fd = tree.fd.clone();
    // (first event, last event) of the pending batch.
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        let due = pending.map(|(first, last)| (last + debounce).min(first + max_delay));
        if due.is_some_and(|d| d <= Instant::now()) {
            if let Some(batch) = co.take() {
                match tx.try_send(batch) {
                    Ok(()) => pending = None,
                    Err(mpsc::error::TrySendError::Full(b)) => {
                        co.merge(b);
                        let now = Instant::now();
                        pending = Some((now, now));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            } else {
                pending = None;
            }
            continue;
        }
        let timeout = due.map(|d| {
            let wait = d.saturating_duration_since(Instant::now());
            Timespec::try_from(wait).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 })
        });
        let mut fds = [PollFd::new(&*fd, PollFlags::IN), PollFd::new(&stop, PollFlags::IN)];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return give_up(&tx, &e.to_string()),
        }
        if !fds[1].revents().is_empty() {
            return; // The handle closed its end: stop.
        }
        let ready = fds[0].revents();
        if ready.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
            return give_up(&tx, "inotify closed");
        }
        if !ready.contains(PollFlags::IN) {
            continue; // The timeout: the batch is due.
        }
        let mut reader = inotify::Reader::new(&*fd, &mut buf);
        let mut n = 0u64;
        loop {
            match reader.next() {
                Ok(e) => {
                    n += 1;
                    let name = e.file_name().map(|c| OsStr::from_bytes(c.to_bytes()));
                    tree.on_event(e.wd(), e.events(), name, &mut co);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break, // All read.
                Err(e) => return give_up(&tx, &e.to_string()),
            }
        }
        received.fetch_add(n, Ordering::Relaxed);
        if n > 0 && !co.is_empty() {
            let now = Instant::now();
            pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn coalescing_rules() {
        let mut co = Coalescer::new(5);
        for _ in 0..100 {
            co.add_path(Path::new("a/b.txt"));
        }
        co.add_path(Path::new("dir"));
        co.add_path(Path::new(".coffer/tmp/x"));
        co.add_path(Path::new(".COFFER"));
        co.add_path(Path::new("sub/.coffer"));
        co.add_path(&Path::new("d").join(OsStr::from_bytes(b"bad\xff")).join("deeper"));
        let b = co.take().unwrap();
        assert!(!b.full_rescan);
        assert_eq!(b.paths, BTreeSet::from([p("a/b.txt"), p("dir"), p("sub/.coffer"), p("d")]));
        assert!(co.take().is_none(), "taking empties the batch");

        // The root itself, a bad top-level name and too many paths: full rescan.
        co.add_path(Path::new(""));
        assert_eq!(co.take(), Some(WatchBatch { paths: BTreeSet::new(), full_rescan: true }));
        co.add_path(Path::new(OsStr::from_bytes(b"\xff")));
        assert!(co.take().unwrap().full_rescan, "a bad top-level name");
        for i in 0..6 {
            co.add_path(Path::new(&format!("f{i}")));
        }
        let b = co.take().unwrap();
        assert!(b.full_rescan && b.paths.is_empty());
        co.full_rescan();
        co.add_path(Path::new("after"));
        assert!(co.take().unwrap().paths.is_empty(), "a full rescan covers later paths");

        // Merging a batch back keeps its paths.
        co.merge(WatchBatch { paths: BTreeSet::from([p("m")]), full_rescan: false });
        co.add_path(Path::new("n"));
        assert_eq!(co.take().unwrap().paths, BTreeSet::from([p("m"), p("n")]));
    }

    /// What the kernel can say beyond a name in a folder.
    #[test]
    fn overflow_and_the_root_going_away_ask_for_a_full_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let mut tree = Tree::new(&root).unwrap();
        let mut co = Coalescer::new(MAX_BATCH_PATHS);
        assert_eq!(tree.dirs.len(), 3, "{:?}", tree.dirs.values().collect::<Vec<_>>());
        let root_wd = tree.root_wd;

        // An event for a watch removed since is dropped.
        tree.on_event(root_wd + 1000, ReadFlags::MODIFY, Some(OsStr::new("x")), &mut co);
        assert!(co.take().is_none());
        // A subfolder's own deletion is reported by its parent, by name.
        let b_wd = *tree.dirs.iter().find(|(_, p)| p == &Path::new("a/b")).unwrap().0;
        tree.on_event(b_wd, ReadFlags::DELETE_SELF, None, &mut co);
        assert!(co.take().is_none());
        // A subfolder's mount gone: the folder itself is to be looked at.
        tree.on_event(b_wd, ReadFlags::UNMOUNT, None, &mut co);
        assert_eq!(co.take().unwrap().paths, BTreeSet::from([p("a/b")]));

        // The queue overflowed: full rescan, and the watches are set up
        // again, a folder made meanwhile included.
        std::fs::create_dir(root.join("a/new")).unwrap();
        tree.on_event(-1, ReadFlags::QUEUE_OVERFLOW, None, &mut co);
        assert!(co.take().unwrap().full_rescan);
        let mut watched: Vec<_> = tree.dirs.values().map(|p| p.to_str().unwrap().to_owned()).collect();
        watched.sort();
        assert_eq!(watched, ["", "a", "a/b", "a/new"]);

        for flags in [ReadFlags::DELETE_SELF, ReadFlags::MOVE_SELF, ReadFlags::UNMOUNT] {
            tree.on_event(root_wd, flags, None, &mut co);
            assert!(co.take().unwrap().full_rescan, "{flags:?}");
        }
        tree.on_event(root_wd, ReadFlags::ATTRIB, None, &mut co);
        assert!(co.take().is_none(), "the root's own mode is not synced");
        tree.on_event(root_wd, ReadFlags::IGNORED, None, &mut co);
        assert!(co.take().unwrap().full_rescan, "the root's watch is gone");
    }

    /// Receives batches until `done` holds for the union of their paths, or
    /// the deadline passes.
    async fn collect_until(
        rx: &mut mpsc::Receiver<WatchBatch>,
        deadline: Duration,
        done: impl Fn(&BTreeSet<RelPath>) -> bool,
    ) -> (BTreeSet<RelPath>, usize) {
        let end = tokio::time::Instant::now() + deadline;
        let mut seen = BTreeSet::new();
        let mut batches = 0;
        while !done(&seen) {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(b)) => {
                    assert!(!b.full_rescan, "unexpected full rescan");
                    batches += 1;
                    seen.extend(b.paths);
                }
                Ok(None) => panic!("watcher stopped"),
                Err(_) => panic!("timed out; saw {seen:?}"),
            }
        }
        (seen, batches)
    }

    /// Fails if a batch arrives within `wait`.
    async fn expect_quiet(rx: &mut mpsc::Receiver<WatchBatch>, wait: Duration, what: &str) {
        if let Ok(b) = tokio::time::timeout(wait, rx.recv()).await {
            panic!("{what}, yet a batch came: {b:?}");
        }
    }

    fn watched_root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(STATE_DIR)).unwrap();
        (dir, root)
    }

    #[tokio::test]
    async fn watches_a_real_directory() {
        let (_dir, root) = watched_root();
        let (handle, mut rx) = Watcher::start(&root, Duration::from_millis(250)).unwrap();

        // A burst of writes to one file, a new folder with a file, and
        // state-folder noise.
        for i in 0..20 {
            std::fs::write(root.join("a.txt"), format!("v{i}")).unwrap();
        }
        std::fs::write(root.join(".coffer/tmp"), b"ours").unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/inner.txt"), b"x").unwrap();
        let (seen, batches) = collect_until(&mut rx, Duration::from_secs(20), |s| {
            s.contains(&p("a.txt")) && s.contains(&p("d"))
        })
        .await;
        assert!(batches <= 5, "20 writes were not coalesced: {batches} batches");
        assert!(
            seen.iter().all(|p| p.as_str() == "a.txt" || p.starts_with(&RelPath::new("d").unwrap())),
            "{seen:?}"
        );

        // A rename reports both names; a mode change and a delete are seen.
        std::fs::rename(root.join("a.txt"), root.join("b.txt")).unwrap();
        let (seen, _) = collect_until(&mut rx, Duration::from_secs(20), |s| {
            s.contains(&p("a.txt")) && s.contains(&p("b.txt"))
        })
        .await;
        assert!(seen.iter().all(|p| ["a.txt", "b.txt"].contains(&p.as_str())), "{seen:?}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("b.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("b.txt"))).await;
        std::fs::remove_file(root.join("d/inner.txt")).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("d/inner.txt"))).await;

        // Dropping the handle stops the watcher: the channel closes.
        drop(handle);
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(None) => break,
                Ok(Some(_)) => continue,
                Err(_) => panic!("the channel did not close after the handle was dropped"),
            }
        }
    }

    /// Reading, listing and stat'ing files (the scanner, an upload, the
    /// user's editor or indexer) does not even wake the watcher's thread.
    #[tokio::test]
    async fn reading_files_wakes_nothing() {
        let (_dir, root) = watched_root();
        std::fs::create_dir(root.join("docs")).unwrap();
        for i in 0..50 {
            std::fs::write(root.join(format!("docs/f{i}.txt")), b"content").unwrap();
        }
        let (handle, mut rx) = Watcher::start(&root, Duration::from_millis(50)).unwrap();
        for _ in 0..5 {
            for e in std::fs::read_dir(root.join("docs")).unwrap() {
                let path = e.unwrap().path();
                let _ = std::fs::metadata(&path).unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), b"content");
            }
        }
        expect_quiet(&mut rx, Duration::from_millis(300), "files were only read").await;
        assert_eq!(handle.events_received(), 0, "reads reached the watcher");

        // It is still watching.
        std::fs::write(root.join("docs/f7.txt"), b"changed").unwrap();
        let (seen, _) = collect_until(&mut rx, Duration::from_secs(20), |s| !s.is_empty()).await;
        assert_eq!(seen, BTreeSet::from([p("docs/f7.txt")]));
    }

    /// A folder made after the start is watched at every depth, whether it
    /// was created in place or moved in from outside the root with
    /// folders already in it.
    #[tokio::test]
    async fn new_folders_are_watched_at_every_depth() {
        let (dir, root) = watched_root();
        let (_handle, mut rx) = Watcher::start(&root, Duration::from_millis(50)).unwrap();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("a"))).await;
        std::fs::write(root.join("a/b/c/f.txt"), b"x").unwrap();
        let (seen, _) =
            collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("a/b/c/f.txt"))).await;
        assert!(seen.iter().all(|s| s.starts_with(&p("a"))), "{seen:?}");

        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("x/y")).unwrap();
        std::fs::rename(&outside, root.join("in")).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("in"))).await;
        std::fs::write(root.join("in/x/y/g.txt"), b"x").unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("in/x/y/g.txt"))).await;
    }

    /// A folder moved within the root is reported under its new name from
    /// then on; one moved out of the root, or deleted, is no longer
    /// watched; one made again under an old name is.
    #[tokio::test]
    async fn moved_and_deleted_folders() {
        let (dir, root) = watched_root();
        std::fs::create_dir_all(root.join("d1/sub")).unwrap();
        std::fs::create_dir_all(root.join("gone/deep")).unwrap();
        let (_handle, mut rx) = Watcher::start(&root, Duration::from_millis(50)).unwrap();

        std::fs::rename(root.join("d1"), root.join("d2")).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("d1")) && s.contains(&p("d2")))
            .await;
        std::fs::write(root.join("d2/sub/f.txt"), b"x").unwrap();
        let (seen, _) = collect_until(&mut rx, Duration::from_secs(20), |s| !s.is_empty()).await;
        assert_eq!(seen, BTreeSet::from([p("d2/sub/f.txt")]));

        let away = dir.path().join("away");
        std::fs::rename(root.join("d2"), &away).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("d2"))).await;
        std::fs::write(away.join("sub/g.txt"), b"x").unwrap();
        expect_quiet(&mut rx, Duration::from_millis(400), "the folder left the root").await;

        std::fs::remove_dir_all(root.join("gone")).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("gone"))).await;
        std::fs::create_dir_all(root.join("gone/deep")).unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("gone"))).await;
        std::fs::write(root.join("gone/deep/h.txt"), b"x").unwrap();
        collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("gone/deep/h.txt"))).await;
    }

    /// Links are not followed (the scanner does not follow them either):
    /// a change in the folder a link points to is no change in the root.
    #[tokio::test]
    async fn symlinked_folders_are_not_followed() {
        let (dir, root) = watched_root();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("link")).unwrap();
        let (_handle, mut rx) = Watcher::start(&root, Duration::from_millis(50)).unwrap();
        std::fs::write(elsewhere.join("f.txt"), b"x").unwrap();
        expect_quiet(&mut rx, Duration::from_millis(300), "only a linked folder changed").await;
        std::fs::write(root.join("mine.txt"), b"x").unwrap();
        let (seen, _) = collect_until(&mut rx, Duration::from_secs(20), |s| !s.is_empty()).await;
        assert_eq!(seen, BTreeSet::from([p("mine.txt")]));
    }

    /// The state folder's own writes (every download's temp file) do not
    /// even reach the watcher's thread.
    #[tokio::test]
    async fn the_state_folder_is_not_watched() {
        let (_dir, root) = watched_root();
        std::fs::create_dir_all(root.join(STATE_DIR).join("tmp")).unwrap();
        let (handle, mut rx) = Watcher::start(&root, Duration::from_millis(100)).unwrap();
        for i in 0..200 {
            std::fs::write(root.join(STATE_DIR).join("tmp").join(format!("t{i}")), b"ours").unwrap();
        }
        std::fs::create_dir(root.join(STATE_DIR).join("later")).unwrap();
        std::fs::write(root.join(STATE_DIR).join("later/x"), b"ours").unwrap();
        std::fs::write(root.join("a.txt"), b"theirs").unwrap();
        let (seen, _) = collect_until(&mut rx, Duration::from_secs(20), |s| s.contains(&p("a.txt"))).await;
        assert_eq!(seen, BTreeSet::from([p("a.txt")]));
        // a.txt's own events (create, modify, close) and those of the state
        // folder's entry in the root, against three or more for each of
        // the 200 files in the state folder if it were watched.
        let n = handle.events_received();
        assert!(n < 10, "{n} events for one file outside the state folder");
    }

    /// The root itself deleted: nothing a targeted scan could trust.
    #[tokio::test]
    async fn the_root_deleted_asks_for_a_full_rescan() {
        let (_dir, root) = watched_root();
        let (_handle, mut rx) = Watcher::start(&root, Duration::from_millis(50)).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(b)) if b.full_rescan => break,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watcher stopped without asking for a full rescan"),
                Err(_) => panic!("no full rescan after the root was deleted"),
            }
        }
    }

    #[test]
    fn start_on_a_missing_root_fails_clearly() {
        let e = Watcher::start(Path::new("/no/such/coffer/root"), Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("/no/such/coffer/root"), "{e}");
        assert!(e.is_retryable());
    }
}
