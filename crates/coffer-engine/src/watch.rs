//! The watcher: filesystem events under a sync root, debounced and
//! coalesced into batches of paths to rescan.
//!
//! Events come from `notify`'s recommended watcher (inotify on Linux),
//! recursive on the root. A batch is a hint, never a verdict: it says where
//! to look ([`crate::scan::Scanner::scan_paths`]), not what changed, so lost
//! or spurious events cost at most a rescan. The periodic full scan remains
//! the safety net.
//!
//! Rules:
//!
//! - Paths in the root's state folder (`.coffer`) are dropped: they are ours.
//!   Where the backend allows (inotify), that folder is not watched at all.
//! - Read-only access events (open, read, close without write) are dropped:
//!   the scanner reading a file must not trigger another scan of it.
//! - A batch is sent once no event arrived for `debounce`, or at the latest
//!   [`MAX_DELAY_FACTOR`] × `debounce` after its first event (so a file
//!   written continuously is still looked at; its read will just be
//!   unstable until it settles).
//! - Many events on one path are one entry. An event on a directory names
//!   the directory, which a targeted scan walks.
//! - `full_rescan` is set when a targeted scan cannot be trusted: the kernel
//!   queue overflowed (notify's `Rescan` flag), the watcher reported an
//!   error, the root itself changed, or a batch grew beyond
//!   [`MAX_BATCH_PATHS`] paths (then `paths` is empty: bounded memory).
//! - A name that is not valid UTF-8 (or not a valid [`RelPath`]) is reported
//!   as its nearest valid ancestor directory, or as a full rescan at the top.
//! - If the receiver falls behind, batches are merged rather than queued.
//!
//! Dropping the [`WatchHandle`] stops watching and ends the background
//! thread; the receiver then yields `None`.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver as CbReceiver, Sender as CbSender};
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as NotifyWatcher};
use tokio::sync::mpsc;

use crate::model::{RelPath, STATE_DIR};

/// A batch larger than this becomes a full rescan.
pub const MAX_BATCH_PATHS: usize = 10_000;

/// A batch is sent at most this many debounce periods after its first event.
pub const MAX_DELAY_FACTOR: u32 = 10;

/// Batches the sync loop may hold before the watcher merges further ones.
const CHANNEL_CAPACITY: usize = 8;

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
    /// What notify said.
    #[source]
    pub source: notify::Error,
    hint: &'static str,
}

impl WatchError {
    fn new(path: &Path, source: notify::Error) -> Self {
        let hint = match source.kind {
            notify::ErrorKind::MaxFilesWatch => {
                "; raise the limit (sysctl fs.inotify.max_user_watches) — until then, changes are found by periodic scans"
            }
            _ => "",
        };
        Self { path: crate::fs::display_path(path), source, hint }
    }

    /// Whether starting again can help (the root may be mounted later).
    /// Watch limits need the user.
    pub fn is_retryable(&self) -> bool {
        match &self.source.kind {
            notify::ErrorKind::PathNotFound => true,
            notify::ErrorKind::Io(e) => {
                matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::Interrupted)
            }
            _ => false,
        }
    }
}

/// Accumulates events into one batch (pure; the thread below drives it).
#[derive(Debug)]
struct Coalescer {
    roots: Vec<PathBuf>,
    batch: WatchBatch,
    max_paths: usize,
}

impl Coalescer {
    fn new(root: &Path, max_paths: usize) -> Self {
        let mut roots = vec![root.to_path_buf()];
        if let Ok(c) = root.canonicalize() {
            if c != root {
                roots.push(c);
            }
        }
        Self { roots, batch: WatchBatch::default(), max_paths }
    }

    fn is_empty(&self) -> bool {
        self.batch.paths.is_empty() && !self.batch.full_rescan
    }

    fn full_rescan(&mut self) {
        self.batch.full_rescan = true;
        self.batch.paths.clear();
    }

    fn add(&mut self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(e) => e,
            Err(_) => return self.full_rescan(),
        };
        if event.need_rescan() {
            return self.full_rescan();
        }
        if is_read_only(&event) {
            return;
        }
        for p in &event.paths {
            self.add_path(p);
        }
    }

    fn add_path(&mut self, path: &Path) {
        if self.batch.full_rescan {
            return;
        }
        let Some(rel) = self.roots.iter().find_map(|r| path.strip_prefix(r).ok()) else {
            return; // Not under the root.
        };
        // Keep the longest valid prefix of the path.
        let mut best: Option<RelPath> = None;
        for (i, c) in rel.components().enumerate() {
            let name = match c {
                Component::Normal(n) => n.to_str(),
                _ => None,
            };
            let next = match (name, &best) {
                (Some(n), _) if i == 0 && n == STATE_DIR => return,
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

/// An access that changes nothing (open, read, close without writing):
/// the scanner reading a file must not trigger another scan of it.
fn is_read_only(event: &notify::Event) -> bool {
    !event.need_rescan()
        && matches!(event.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
}

/// Starts watchers.
#[derive(Debug)]
pub struct Watcher;

/// A running watcher; dropping it stops watching.
pub struct WatchHandle {
    stop: Option<CbSender<()>>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// How many events the backend has delivered so far, dropped ones
    /// included (what watching costs).
    pub fn events_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            // The thread exits as soon as it sees the stop channel close.
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
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<notify::Result<notify::Event>>();
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            counter.fetch_add(1, Ordering::Relaxed);
            // Dropped here rather than after a hand-off to the debounce
            // thread: every file read (ours, the user's) makes two.
            if !e.as_ref().is_ok_and(is_read_only) {
                let _ = ev_tx.send(e);
            }
        })
        .map_err(|e| WatchError::new(root, e))?;
        watcher.watch(root, RecursiveMode::Recursive).map_err(|e| WatchError::new(root, e))?;
        // Not our own state folder: its temp files (every download is
        // written there first) and the index's journal would be most of the
        // events, each read, sent and dropped by the rules below. Where the
        // backend cannot drop part of a recursive watch, the rules still do.
        let _ = watcher.unwatch(&root.join(STATE_DIR));
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let co = Coalescer::new(root, MAX_BATCH_PATHS);
        let thread = std::thread::Builder::new()
            .name("coffer-watch".into())
            .spawn(move || run(ev_rx, stop_rx, tx, co, debounce))
            .map_err(|e| WatchError::new(root, notify::Error::io(e)))?;
        Ok((WatchHandle { stop: Some(stop_tx), received, thread: Some(thread), _watcher: watcher }, rx))
    }
}

/// The debounce loop: collects events, sends a batch after a quiet
/// `debounce` (or the maximum delay), merges when the receiver is full, and
/// ends when stopped, when the watcher is gone, or when the receiver is.
fn run(
    events: CbReceiver<notify::Result<notify::Event>>,
    stop: CbReceiver<()>,
    tx: mpsc::Sender<WatchBatch>,
    mut co: Coalescer,
    debounce: Duration,
) {
    let max_delay = debounce.saturating_mul(MAX_DELAY_FACTOR);
    // (first event, last event) of the pending batch.
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        let event = match pending {
            None => select! {
                recv(events) -> e => e,
                recv(stop) -> _ => return,
            },
            Some((first, last)) => {
                let due = (last + debounce).min(first + max_delay);
                let wait = due.saturating_duration_since(Instant::now());
                select! {
                    recv(events) -> e => e,
                    recv(stop) -> _ => return,
                    default(wait) => {
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
                }
            }
        };
        let Ok(event) = event else { return };
        co.add(event);
        if !co.is_empty() {
            let now = Instant::now();
            pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use notify::event::{CreateKind, DataChange, Flag, ModifyKind};
    use notify::Event;

    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn ev(kind: EventKind, paths: &[&Path]) -> notify::Result<Event> {
        let mut e = Event::new(kind);
        for path in paths {
            e = e.add_path(path.to_path_buf());
        }
        Ok(e)
    }

    #[test]
    fn coalescing_rules() {
        let root = Path::new("/no/such/root");
        let mut co = Coalescer::new(root, 5);
        let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        for _ in 0..100 {
            co.add(ev(modify, &[&root.join("a/b.txt")]));
        }
        co.add(ev(EventKind::Create(CreateKind::Folder), &[&root.join("dir")]));
        co.add(ev(EventKind::Access(AccessKind::Open(AccessMode::Any)), &[&root.join("read-only")]));
        co.add(ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &[&root.join("written")]));
        co.add(ev(modify, &[&root.join(".coffer/tmp/x")]));
        co.add(ev(modify, &[&root.join("sub/.coffer")]));
        co.add(ev(modify, &[Path::new("/elsewhere/x")]));
        co.add(ev(modify, &[&root.join("d").join(OsStr::from_bytes(b"bad\xff")).join("deeper")]));
        let b = co.take().unwrap();
        assert!(!b.full_rescan);
        assert_eq!(b.paths, BTreeSet::from([p("a/b.txt"), p("dir"), p("written"), p("sub/.coffer"), p("d")]));
        assert!(co.take().is_none(), "taking empties the batch");

        // Overflow, errors, the root itself and too many paths: full rescan.
        co.add(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)));
        assert_eq!(co.take(), Some(WatchBatch { paths: BTreeSet::new(), full_rescan: true }));
        co.add(Err(notify::Error::generic("queue overflow")));
        assert!(co.take().unwrap().full_rescan);
        co.add(ev(EventKind::Remove(notify::event::RemoveKind::Folder), &[root]));
        assert!(co.take().unwrap().full_rescan);
        co.add(ev(modify, &[&root.join(OsStr::from_bytes(b"\xff"))]));
        assert!(co.take().unwrap().full_rescan, "a bad top-level name");
        for i in 0..6 {
            co.add(ev(modify, &[&root.join(format!("f{i}"))]));
        }
        let b = co.take().unwrap();
        assert!(b.full_rescan && b.paths.is_empty());

        // Merging a batch back keeps its paths.
        co.merge(WatchBatch { paths: BTreeSet::from([p("m")]), full_rescan: false });
        co.add(ev(modify, &[&root.join("n")]));
        assert_eq!(co.take().unwrap().paths, BTreeSet::from([p("m"), p("n")]));
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

    #[tokio::test]
    async fn watches_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join(STATE_DIR)).unwrap();
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

        // A rename reports both names.
        let _ = std::fs::read(root.join("a.txt")).unwrap();
        std::fs::rename(root.join("a.txt"), root.join("b.txt")).unwrap();
        let (seen, _) = collect_until(&mut rx, Duration::from_secs(20), |s| {
            s.contains(&p("a.txt")) && s.contains(&p("b.txt"))
        })
        .await;
        assert!(seen.iter().all(|p| ["a.txt", "b.txt"].contains(&p.as_str())), "{seen:?}");

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

    /// The state folder's own writes (every download's temp file) do not
    /// even reach the watcher's thread.
    #[tokio::test]
    async fn the_state_folder_is_not_watched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
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
        // a.txt's own events (create, open, modify, close) and those of the
        // state folder's entry in the root, against four or more for each
        // of the 200 files in the state folder if it were watched.
        let n = handle.events_received();
        assert!(n < 20, "{n} events for one file outside the state folder");
    }

    #[test]
    fn start_on_a_missing_root_fails_clearly() {
        let e = Watcher::start(Path::new("/no/such/coffer/root"), Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("/no/such/coffer/root"), "{e}");
        assert!(e.is_retryable());
    }
}
