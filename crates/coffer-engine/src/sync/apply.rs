//! Applying a plan. Each op re-checks the disk before it touches anything
//! ("does the destination still match what was planned?"); an op whose
//! premise no longer holds is *deferred*, and the next round plans again.
//!
//! Rules that keep data safe:
//! - nothing is written in place: a download goes to a temp file in
//!   `.coffer/tmp`, is verified and fsynced, then renamed over the path;
//! - a node that sync removes or replaces goes to `.coffer/trash` first;
//! - parents are created only as real directories inside the root: a
//!   symlink or file on the way is refused, so nothing is written outside;
//! - the index is updated only after the disk and the store.
//!
//! Uploads of a round are committed together in batches, after their
//! chunks are on the store.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use coffer_proto::api::{Change, ChangeResult, ChunkDelta, CommitResponse, ErrorCode};
use coffer_proto::{ChunkId, ListDigest, Revision, SealedChunk};
use futures::future::{self, BoxFuture, FutureExt};
use futures::stream::{self, StreamExt};

use super::activity::ActivityKind;
use super::names::conflicted_copy;
use super::transfer::{ChunkBatcher, TransferError, PRESEAL_FILES};
use super::{Engine, EngineError, Problem, RoundReport};
use crate::chunklist;
use crate::fs::{Stat, StatKind};
use crate::model::{ChunkRef, EntryMeta, Node, NodeKind, RelPath};
use crate::plan::{Op, RemoteEntry, RemoteLive, SyncedEntry};
use crate::remote::Remote;
use crate::scan::ScanResult;

/// Changes per commit request.
const COMMIT_BATCH: usize = 500;
/// Chunk ids per commit request: a batch of large files ends here, well
/// within what the store takes (`MAX_CHUNK_REFS_PER_COMMIT`).
const COMMIT_REFS: usize = coffer_proto::api::MAX_CHUNK_REFS_PER_COMMIT / 2;

/// Chunk lists shorter than this go whole: a difference would save little.
const DELTA_MIN: usize = 16;
/// Fetched files placed (and their folders fsynced, their index rows
/// written) together.
const PLACE_BATCH: usize = 256;
/// Ops looked through for the next small files to read and seal ahead.
const PRESEAL_LOOKAHEAD: usize = 4 * PRESEAL_FILES;

/// A file or link fetched into a temp file, waiting to be placed.
struct Fetched {
    path: RelPath,
    tmp: PathBuf,
    node: Node,
    synced: SyncedEntry,
    /// The local node it replaces (see [`Engine::download`]).
    expect: Option<Stat>,
}

/// A download's outcome after its group was placed: path, size, result.
type Placed = (RelPath, u64, OpResult);

/// A download's outcome after its fetch: path, size, the temp file (`None`
/// when the path moved on).
type FetchedOne = (RelPath, u64, Result<Option<Fetched>, OpError>);

/// A small new file to write from its chunk fetched ahead
/// ([`Engine::fetch_prefetched`]).
struct QuickJob {
    tmp: PathBuf,
    chunk: ChunkRef,
    sealed: SealedChunk,
    executable: bool,
    mtime_ns: i64,
}

/// Gives a fetched temp file, made by `create_new` without executable
/// bits, its mode (only an executable needs a change) and its time.
fn set_mode_and_time(
    fs: &dyn crate::fs::Fs,
    tmp: &Path,
    executable: bool,
    mtime_ns: i64,
) -> std::io::Result<()> {
    if executable {
        fs.set_executable(tmp, true)?;
    }
    if mtime_ns != 0 {
        fs.set_mtime(tmp, mtime_ns)?;
    }
    Ok(())
}

/// Writes a [`QuickJob`]'s temp file with its mode and time: `Ok(false)`,
/// with nothing written, when the chunk does not open (it is fetched again
/// the usual way); an error removes the temp file.
fn write_quick(
    fs: &dyn crate::fs::Fs,
    keys: &coffer_crypto::AccountKeys,
    j: &QuickJob,
) -> Result<bool, String> {
    use std::io::Write as _;
    let Ok(plain) = super::transfer::open_chunk(keys, &j.chunk, j.sealed.as_bytes().to_vec()) else {
        return Ok(false);
    };
    let written = fs.create_new(&j.tmp).and_then(|mut f| {
        f.write_all(&plain)?;
        f.flush()
    });
    if let Err(e) = written {
        let _ = fs.remove_file(&j.tmp);
        return Err(format!("download failed: {e}"));
    }
    if let Err(e) = set_mode_and_time(fs, &j.tmp, j.executable, j.mtime_ns) {
        let _ = fs.remove_file(&j.tmp);
        return Err(format!("cannot set its mode or time: {e}"));
    }
    Ok(true)
}

/// A change waiting for its commit.
struct Pending {
    path: RelPath,
    change: Change,
    /// Pieces of a long chunk list to send before the commit.
    pieces: Vec<SealedChunk>,
    /// The ids the store keeps for the base revision (read once, at
    /// upload): what the commit may give as a difference. Empty when none
    /// is known.
    base_ids: HashSet<ChunkId>,
    /// `None` for a deletion.
    synced: Option<SyncedEntry>,
}

impl<R: Remote> Engine<R> {
    pub(crate) async fn apply(
        &self,
        ops: Vec<Op>,
        scan: &ScanResult,
        report: &mut RoundReport,
    ) -> Result<(), EngineError> {
        let mut pending: Vec<Pending> = Vec::new();
        let mut batcher = ChunkBatcher::new(&self.remote);
        // File downloads are independent of each other once their folders
        // exist: they run concurrently, after the ops that make folders and
        // before local deletions (which run last, children first).
        let is_file_download = |op: &Op| {
            matches!(op, Op::Download { entry, .. }
                if entry.live.as_ref().is_some_and(|l| l.node.kind == NodeKind::File))
        };
        let (files, rest): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(is_file_download);
        let (deletions, first): (Vec<Op>, Vec<Op>) =
            rest.into_iter().partition(|op| matches!(op, Op::DeleteLocal { .. }));
        // A batch of uploads is committed (its chunks sent, then its
        // changes) while the next batch is read and sealed: for many small
        // files, each step alone leaves the other's resources idle. One
        // commit at a time, in order.
        let mut first: VecDeque<Op> = first.into();
        let mut committing: Option<BoxFuture<'_, Result<RoundReport, EngineError>>> = None;
        self.clear_presealed();
        while !first.is_empty() && !self.is_paused() {
            let prepare = async {
                while let Some(op) = first.pop_front() {
                    self.preseal_ahead(&op, &first, scan).await;
                    let path = op.path().clone();
                    self.touch_for(&op);
                    let result = self.apply_one(op, scan, &mut batcher, &mut pending, report).await;
                    self.settle(&path, result, report)?;
                    let refs: usize = pending.iter().map(|p| p.change.chunks.len()).sum();
                    if pending.len() >= COMMIT_BATCH || refs >= COMMIT_REFS || self.is_paused() {
                        break;
                    }
                }
                Ok::<(), EngineError>(())
            };
            let (prepared, committed) = match committing.take() {
                Some(job) => {
                    let (p, c) = future::join(prepare, job).await;
                    (p, Some(c))
                }
                None => (prepare.await, None),
            };
            if let Some(c) = committed {
                report.absorb(c?);
            }
            prepared?;
            if !pending.is_empty() {
                committing =
                    Some(self.commit_batch(batcher.split_off(), std::mem::take(&mut pending)).boxed());
            }
        }
        if let Some(job) = committing {
            report.absorb(job.await?);
        }
        self.clear_presealed();
        // Fetched files are placed a group at a time: their folders are
        // fsynced once per group and their index rows written in one
        // transaction, not each file on its own. The small files' chunks of
        // a group come first, in a few batched requests; those of the next
        // group are fetched while this one's files are written, and this
        // one's files wait for the disk while the next group is fetched
        // (except in the simulation, which keeps one order: see
        // [`Engine::overlaps`]).
        let mut windows: VecDeque<Vec<Op>> = VecDeque::new();
        let mut files = files.into_iter().peekable();
        while files.peek().is_some() {
            windows.push_back(files.by_ref().take(PLACE_BATCH).collect());
        }
        let mut ahead = None;
        let mut placing: Option<BoxFuture<'_, Result<Vec<Placed>, EngineError>>> = None;
        while let Some(window) = windows.pop_front() {
            if self.is_paused() {
                break;
            }
            let chunks = match ahead.take() {
                Some(chunks) => chunks,
                None => self.prefetch_small(&window).await,
            };
            self.set_prefetched(chunks);
            let (quick, window): (Vec<Op>, Vec<Op>) =
                window.into_iter().partition(|op| self.is_prefetched_new_file(op));
            let others = stream::iter(window)
                .map(|op| async move {
                    self.touch_for(&op);
                    let Op::Download { path, entry, replace } = op else {
                        unreachable!("partitioned as file downloads")
                    };
                    let expect = if replace { scan.entries.get(&path).map(|e| e.stat) } else { None };
                    let size = entry.live.as_ref().map_or(0, |l| l.node.size);
                    self.update_status(|s| {
                        s.current.push(path.to_string());
                        s.current_bytes_done = 0;
                        s.current_bytes_total = size;
                    });
                    let r = self.fetch(&path, &entry, expect).await;
                    self.update_status(|s| s.current.retain(|c| c != path.as_str()));
                    (path, size, r)
                })
                .buffer_unordered(self.config.parallel_downloads.max(1))
                .collect::<Vec<_>>();
            let fetching = async {
                let mut group = self.fetch_prefetched(quick).await;
                group.extend(others.await);
                group
            };
            let next = async {
                match windows.front() {
                    Some(w) => Some(self.prefetch_small(w).await),
                    None => None,
                }
            };
            let before = placing.take();
            let placed_before = async {
                match before {
                    Some(job) => Some(job.await),
                    None => None,
                }
            };
            let (group, next, placed_before) = future::join3(fetching, next, placed_before).await;
            ahead = next;
            self.clear_prefetched();
            if let Some(placed) = placed_before {
                self.settle_placed(placed?, report)?;
            }
            let job = self.place_group(group);
            if self.overlaps() {
                placing = Some(job.boxed());
            } else {
                self.settle_placed(job.await?, report)?;
            }
        }
        if let Some(job) = placing {
            self.settle_placed(job.await?, report)?;
        }
        for op in deletions {
            if self.is_paused() {
                break;
            }
            let path = op.path().clone();
            self.touch_for(&op);
            let result = self.apply_one(op, scan, &mut batcher, &mut pending, report).await;
            self.settle(&path, result, report)?;
        }
        self.commit(&mut batcher, &mut pending, report).await?;
        report.sent_bytes += batcher.sent_bytes;
        Ok(())
    }

    /// Before the upload of a small file not read yet: reads and seals it
    /// together with the next small files to upload, on one blocking
    /// thread ([`Engine::preseal_small`]). Looks [`PRESEAL_LOOKAHEAD`] ops
    /// ahead.
    async fn preseal_ahead(&self, op: &Op, next: &VecDeque<Op>, scan: &ScanResult) {
        let min = self.config.chunker.min as u64;
        let small = |op: &Op| match op {
            Op::Upload { path, .. } => scan
                .entries
                .get(path)
                .filter(|e| e.node.kind == NodeKind::File && e.stat.size <= min)
                .map(|e| (path.clone(), e.stat)),
            _ => None,
        };
        let Some(this) = small(op) else { return };
        if self.is_presealed(&this.0) {
            return;
        }
        let group: Vec<(RelPath, Stat)> = std::iter::once(this)
            .chain(
                next.iter().take(PRESEAL_LOOKAHEAD).filter_map(small).filter(|(p, _)| !self.is_presealed(p)),
            )
            .take(PRESEAL_FILES)
            .collect();
        // One file alone gains nothing: its upload reads it.
        if group.len() > 1 {
            self.preseal_small(group).await;
        }
    }

    /// Notes that `op` may write at its path on disk (see [`Engine::touch`]).
    fn touch_for(&self, op: &Op) {
        if matches!(op, Op::Download { .. } | Op::Conflict { .. } | Op::DeleteLocal { .. }) {
            self.touch(op.path());
        }
    }

    /// Whether a group of fetched files waits for the disk while the next
    /// group is fetched. Not in the simulation (one download at a time),
    /// whose seeds must replay in one order of disk operations.
    fn overlaps(&self) -> bool {
        self.config.parallel_downloads > 1
    }

    /// Runs `f` on the disk: on a blocking thread when downloads overlap
    /// (it waits for the device), inline otherwise ([`Engine::overlaps`]).
    async fn on_disk<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn crate::fs::Fs) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        if !self.overlaps() {
            return f(self.fs.as_ref());
        }
        let fs = self.fs.clone();
        tokio::task::spawn_blocking(move || f(fs.as_ref()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the disk task stopped: {e}"))))
    }

    /// A new file of one chunk, fetched ahead ([`Engine::prefetch_small`])
    /// and not being staged from a preview: most files of a first sync.
    fn is_prefetched_new_file(&self, op: &Op) -> bool {
        let Op::Download { path, entry, replace: false } = op else { return false };
        let Some(live) = entry.live.as_ref() else { return false };
        let [c] = live.chunks.as_slice() else { return false };
        live.node.kind == NodeKind::File
            && self.prefetched.lock().is_ok_and(|p| p.contains_key(&c.id))
            && self.staged.lock().is_ok_and(|s| !s.contains_key(path))
    }

    /// Fetches the downloads `ops` (each [`Engine::is_prefetched_new_file`])
    /// into temp files. Each is opened, written and given its mode and time
    /// on the disk's side, the group in two halves at once
    /// ([`Engine::on_disk`]): on two threads rather than on the round's one
    /// task, with two hand-offs rather than one per file. A chunk that does
    /// not open is fetched again the usual way ([`Engine::fetch`]).
    async fn fetch_prefetched(&self, ops: Vec<Op>) -> Vec<FetchedOne> {
        let mut out: Vec<FetchedOne> = Vec::with_capacity(ops.len());
        // Index in `out`, the entry (for a second fetch) and the job.
        let mut jobs: Vec<(usize, RemoteEntry, QuickJob)> = Vec::new();
        for op in ops {
            self.touch_for(&op);
            let internal = || Err(OpError::Path("internal: not a download of one chunk".into()));
            let Op::Download { path, entry, .. } = op else {
                out.push((op.path().clone(), 0, internal()));
                continue;
            };
            let Some((live, c)) = entry.live.as_ref().and_then(|l| Some((l, *l.chunks.first()?))) else {
                out.push((path, 0, internal()));
                continue;
            };
            let size = live.node.size;
            let sealed = self.prefetched.lock().ok().and_then(|p| p.get(&c.id).cloned());
            match (self.ensure_parents(&path), sealed) {
                (Err(e), _) => out.push((path, size, Err(e))),
                (Ok(()), None) => {
                    out.push((path, size, Err(OpError::Path("internal: not fetched ahead".into()))))
                }
                (Ok(()), Some(sealed)) => {
                    let job = QuickJob {
                        tmp: self.temp_path(),
                        chunk: c,
                        sealed,
                        executable: live.node.executable,
                        mtime_ns: live.node.mtime_ns,
                    };
                    jobs.push((out.len(), entry, job));
                    out.push((path, size, Ok(None)));
                }
            }
        }
        if jobs.is_empty() {
            return out;
        }
        self.limits.down.take(jobs.iter().map(|(_, _, j)| u64::from(j.chunk.len)).sum()).await;
        fail::fail_point!("download-chunk-received");
        let run = |half: Vec<QuickJob>| {
            let keys = self.keys.clone();
            async move {
                if half.is_empty() {
                    return Ok(Vec::new());
                }
                self.on_disk(move |fs| Ok(half.iter().map(|j| write_quick(fs, &keys, j)).collect::<Vec<_>>()))
                    .await
            }
        };
        // Where each result goes, in the order of the jobs.
        let (meta, mut first): (Vec<_>, Vec<QuickJob>) = jobs
            .into_iter()
            .map(|(at, entry, job)| ((at, entry, job.tmp.clone(), job.chunk.len), job))
            .unzip();
        let second = first.split_off(first.len().div_ceil(2));
        let sizes = [first.len(), second.len()];
        let (a, b) = future::join(run(first), run(second)).await;
        let results = [a, b].into_iter().zip(sizes).flat_map(|(r, n)| match r {
            Ok(v) => v,
            Err(e) => vec![Err(format!("download failed: {e}")); n],
        });
        fail::fail_point!("download-temp-written");
        for ((at, entry, tmp, len), written) in meta.into_iter().zip(results) {
            let path = out[at].0.clone();
            out[at].2 = match written {
                Ok(true) => {
                    self.progressed(u64::from(len));
                    match (entry.to_synced(), entry.live) {
                        (Some(synced), Some(live)) => {
                            Ok(Some(Fetched { path, tmp, node: live.node, synced, expect: None }))
                        }
                        _ => {
                            let _ = self.fs.remove_file(&tmp);
                            Err(OpError::Path("internal: not live".into()))
                        }
                    }
                }
                Ok(false) => self.fetch(&path, &entry, None).await,
                Err(e) => Err(OpError::Path(e)),
            };
        }
        out
    }

    /// Places the files of a fetched group ([`Engine::place_fetched`]);
    /// returns each download's outcome, in the order given.
    async fn place_group(
        &self,
        group: Vec<(RelPath, u64, Result<Option<Fetched>, OpError>)>,
    ) -> Result<Vec<Placed>, EngineError> {
        let mut fetched = Vec::new();
        let mut results: Vec<(RelPath, u64, Option<OpResult>)> = Vec::new();
        for (path, size, r) in group {
            match r {
                Ok(Some(f)) => {
                    fetched.push(f);
                    results.push((path, size, None));
                }
                Ok(None) => results.push((path, size, Some(Ok(false)))),
                Err(e) => results.push((path, size, Some(Err(e)))),
            }
        }
        let mut placed = self.place_fetched(fetched).await?.into_iter();
        Ok(results
            .into_iter()
            .map(|(path, size, r)| {
                let result = match r {
                    Some(r) => r,
                    None => placed.next().map_or(Ok(false), |(_, r)| r),
                };
                (path, size, result)
            })
            .collect())
    }

    /// Books the outcomes of a placed group.
    fn settle_placed(&self, placed: Vec<Placed>, report: &mut RoundReport) -> Result<(), EngineError> {
        for (path, size, result) in placed {
            if matches!(result, Ok(true)) {
                self.record(ActivityKind::Downloaded, &path, size);
                report.downloaded += 1;
            }
            self.settle(&path, result, report)?;
        }
        Ok(())
    }

    /// Books one op's outcome: a per-path problem is recorded and the round
    /// goes on; a fatal error stops it.
    fn settle(
        &self,
        path: &RelPath,
        result: Result<bool, OpError>,
        report: &mut RoundReport,
    ) -> Result<(), EngineError> {
        match result {
            Ok(true) => {}
            Ok(false) => report.deferred += 1,
            Err(OpError::Fatal(e)) => return Err(e),
            Err(OpError::Path(message)) => {
                report.deferred += 1;
                report.problems.push(Problem { path: path.to_string(), message });
            }
        }
        self.update_status(|s| s.files_done += 1);
        Ok(())
    }

    /// Runs one op (all but the concurrent file downloads).
    async fn apply_one(
        &self,
        op: Op,
        scan: &ScanResult,
        batcher: &mut ChunkBatcher<'_, R>,
        pending: &mut Vec<Pending>,
        report: &mut RoundReport,
    ) -> Result<bool, OpError> {
        let (kind, size) = activity_of(&op, scan);
        let path = op.path().clone();
        self.update_status(|s| {
            s.current = vec![path.to_string()];
            s.current_bytes_done = 0;
            s.current_bytes_total = size;
        });
        let result = match op {
            Op::Upload { path, base } => self.prepare_upload(&path, base, scan, batcher, pending).await,
            Op::DeleteRemote { path, entry_id, base } => {
                pending.push(Pending {
                    path,
                    change: Change { entry_id, base_revision: base, meta: None, chunks: vec![], delta: None },
                    pieces: Vec::new(),
                    base_ids: HashSet::new(),
                    synced: None,
                });
                Ok(true)
            }
            Op::Download { path, entry, replace } => {
                let expect = if replace { scan.entries.get(&path).map(|e| e.stat) } else { None };
                let done = self.download(&path, &entry, expect).await?;
                report.downloaded += usize::from(done);
                Ok(done)
            }
            Op::DeleteLocal { path } => match scan.entries.get(&path) {
                Some(e) => self.delete_local(&path, &e.stat, pending).await,
                None => Ok(false),
            },
            Op::Conflict { path, entry } => match scan.entries.get(&path) {
                Some(e) => {
                    let done = self.conflict(&path, &e.stat, &entry).await?;
                    report.conflicts += usize::from(done);
                    report.downloaded += usize::from(done);
                    Ok(done)
                }
                None => Ok(false),
            },
            Op::Agree { path, entry } => {
                self.index.put_synced(&path, &entry).map(|()| true).map_err(Into::into)
            }
            Op::Forget { path } => self.index.remove_synced(&path).map(|()| true).map_err(Into::into),
        };
        if let (Ok(true), Some(kind)) = (&result, kind) {
            self.record(kind, &path, size);
        }
        result
    }

    /// Reads and seals a local node, queueing its chunks and its change.
    async fn prepare_upload(
        &self,
        path: &RelPath,
        base: Revision,
        scan: &ScanResult,
        batcher: &mut ChunkBatcher<'_, R>,
        pending: &mut Vec<Pending>,
    ) -> Result<bool, OpError> {
        let Some(local) = scan.entries.get(path) else { return Ok(false) };
        let mut node = local.node.clone();
        let mut chunks = Vec::new();
        let (base_list, listed) = match node.kind {
            NodeKind::File => self.base_chunks(path, base, local.stat.size)?,
            _ => (Vec::new(), false),
        };
        let on_store: HashSet<ChunkId> =
            chunklist::store_ids(&self.keys, &base_list, listed).into_iter().collect();
        if node.kind == NodeKind::File {
            match self.upload_file(path, &local.stat, &base_list, base == Revision::ZERO, batcher).await {
                Ok((c, hash)) => {
                    if Some(hash) != node.hash {
                        // Changed since the scan; or changed without its
                        // size or time moving (a coarse clock, a write in
                        // the same tick as our own), so the stat cache
                        // vouched for old content. Forget the cached hash
                        // and rescan the path: the next round reads it.
                        self.index.update_cache(&[], std::slice::from_ref(path))?;
                        self.touch(path);
                        return Ok(false);
                    }
                    node.hash = Some(hash);
                    chunks = c;
                }
                Err(TransferError::Unstable) => {
                    self.touch(path);
                    return Ok(false);
                }
                Err(TransferError::Remote(e)) => return Err(OpError::Fatal(e.into())),
                // Reported on the file, not a failed round forever: the
                // store would refuse every commit that carried it.
                Err(e @ TransferError::TooLarge(..)) => return Err(OpError::Path(e.to_string())),
                Err(e) => return Err(OpError::Path(format!("could not read it: {e}"))),
            }
        }
        self.queue_change(path, base, node, chunks, on_store, pending)?;
        Ok(true)
    }

    /// The chunk list of `path`'s base revision, whose chunks (and list
    /// pieces, if it is `listed`) the store keeps while that revision is
    /// current: an edit need not seal or send them again. Empty for a new
    /// file, a small one (a single chunk), or when deltas are off.
    fn base_chunks(
        &self,
        path: &RelPath,
        base: Revision,
        size: u64,
    ) -> Result<(Vec<ChunkRef>, bool), OpError> {
        if base == Revision::ZERO
            || size <= self.config.chunker.min as u64
            || !self.deltas.load(Ordering::Relaxed)
        {
            return Ok((Vec::new(), false));
        }
        let entry_id = self.keys.path.entry_id(path.as_str());
        Ok(self.index.remote_chunks_at(&entry_id, base)?.unwrap_or_default())
    }

    /// `p`'s change with its chunk list given as a difference from the ids
    /// its base revision keeps ([`ChunkDelta`]), when that is shorter.
    fn as_delta(p: &Pending) -> Option<Change> {
        let change = &p.change;
        if change.meta.is_none() || p.base_ids.is_empty() || change.chunks.len() < DELTA_MIN {
            return None;
        }
        let new: BTreeSet<ChunkId> = change.chunks.iter().copied().collect();
        let mut added: Vec<ChunkId> = new.iter().filter(|id| !p.base_ids.contains(id)).copied().collect();
        let mut dropped: Vec<ChunkId> = p.base_ids.iter().filter(|id| !new.contains(id)).copied().collect();
        if added.len() + dropped.len() >= new.len() {
            return None;
        }
        added.sort_unstable();
        dropped.sort_unstable();
        Some(Change {
            chunks: added,
            delta: Some(ChunkDelta { dropped, digest: ListDigest::of(&new) }),
            ..change.clone()
        })
    }

    /// Commits `batch`'s changes, each of a large file's edits as a
    /// difference from its base when deltas are on. If the store finds a
    /// difference that does not fit (`bad_request`; nothing was applied),
    /// deltas go off for good and the same changes go again with whole lists.
    async fn commit_changes(&self, batch: &[Pending]) -> Result<CommitResponse, EngineError> {
        let changes: Vec<Change> = batch.iter().map(|p| p.change.clone()).collect();
        if !self.deltas.load(Ordering::Relaxed) {
            return Ok(self.remote.commit(&changes).await?);
        }
        let sent: Vec<Change> =
            batch.iter().map(|p| Self::as_delta(p).unwrap_or_else(|| p.change.clone())).collect();
        match self.remote.commit(&sent).await {
            Err(e) if e.code() == Some(ErrorCode::BadRequest) && sent.iter().any(|c| c.delta.is_some()) => {
                tracing::warn!(
                    error = %e,
                    "the store refused a chunk list given as a difference; sending whole lists from now on"
                );
                self.deltas.store(false, Ordering::Relaxed);
                Ok(self.remote.commit(&changes).await?)
            }
            r => Ok(r?),
        }
    }

    /// Seals the metadata of `node` at `path` for revision `base + 1` and
    /// queues the change for the next commit.
    /// The pieces of a long chunk list that the store lacks (those not in
    /// `on_store`) go with it.
    fn queue_change(
        &self,
        path: &RelPath,
        base: Revision,
        node: Node,
        chunks: Vec<crate::model::ChunkRef>,
        on_store: HashSet<ChunkId>,
        pending: &mut Vec<Pending>,
    ) -> Result<(), OpError> {
        let (change, mut pieces) = self.change_for(path, base, &node, &chunks);
        let most = self.config.max_chunks_per_file;
        if change.chunks.len() > most {
            // Reported on the file, not a failed round forever: the store
            // would refuse every commit that carried it. (The upload checks
            // this before reading; a file that grew while read ends here.)
            return Err(OpError::Path(super::transfer::too_large(change.chunks.len(), most)));
        }
        pieces.retain(|p| !on_store.contains(&p.id()));
        let entry_id = change.entry_id;
        pending.push(Pending {
            path: path.clone(),
            change,
            pieces,
            base_ids: on_store,
            synced: Some(SyncedEntry { entry_id, revision: base.next(), node, chunks }),
        });
        Ok(())
    }

    /// The change that makes `node` (with `chunks`) the next revision of
    /// `path` after `base`: metadata sealed for that entry and revision, and
    /// the chunk ids it references; with a long chunk list, also the sealed
    /// pieces of that list ([`chunklist`]), to send before the commit.
    /// Shared by uploads and restores.
    pub(crate) fn change_for(
        &self,
        path: &RelPath,
        base: Revision,
        node: &Node,
        chunks: &[crate::model::ChunkRef],
    ) -> (Change, Vec<SealedChunk>) {
        let entry_id = self.keys.path.entry_id(path.as_str());
        let pieces = chunklist::pieces(&self.keys, chunks);
        let (inline, list) = if pieces.is_empty() {
            (chunks.to_vec(), Vec::new())
        } else {
            (Vec::new(), pieces.iter().map(|p| p.r).collect())
        };
        let meta = EntryMeta {
            v: EntryMeta::VERSION_COMPACT,
            path: path.clone(),
            node: node.clone(),
            chunks: inline,
            list,
            device_name: self.config.device_name.clone(),
        };
        // The RNG holds no invariant a panic elsewhere could break.
        let sealed = {
            let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.keys.meta.seal(&mut *rng, &entry_id, base.next(), &meta.to_bytes())
        };
        let mut ids: Vec<_> = chunks.iter().map(|c| c.id).chain(pieces.iter().map(|p| p.r.id)).collect();
        ids.sort_unstable();
        ids.dedup();
        let change = Change { entry_id, base_revision: base, meta: Some(sealed), chunks: ids, delta: None };
        (change, pieces.into_iter().map(|p| p.sealed).collect())
    }

    /// Sends queued chunks, then commits queued changes; records what the
    /// store accepted.
    async fn commit(
        &self,
        batcher: &mut ChunkBatcher<'_, R>,
        pending: &mut Vec<Pending>,
        report: &mut RoundReport,
    ) -> Result<(), EngineError> {
        report.absorb(self.commit_batch(batcher.split_off(), std::mem::take(pending)).await?);
        Ok(())
    }

    /// Sends the chunks queued on `sender` and the list pieces of `batch`,
    /// then commits `batch`'s changes; records what the store accepted.
    /// Returns what it did (uploads, deletions, refusals, bytes sent) for
    /// the round's report.
    async fn commit_batch(
        &self,
        mut sender: ChunkBatcher<'_, R>,
        mut batch: Vec<Pending>,
    ) -> Result<RoundReport, EngineError> {
        let started = Instant::now();
        let mut report = RoundReport::default();
        for p in &mut batch {
            for piece in std::mem::take(&mut p.pieces) {
                sender.add(piece).await?;
            }
        }
        sender.flush().await?;
        report.sent_bytes = sender.sent_bytes;
        if batch.is_empty() {
            return Ok(report);
        }
        let flushed = Instant::now();
        let noted = self.note_in_flight(batch.iter().filter_map(|p| Some((&p.path, p.synced.as_ref()?))))?;
        fail::fail_point!("upload-before-commit");
        let sent = Instant::now();
        let resp = self.commit_changes(&batch).await?;
        fail::fail_point!("upload-after-commit");
        let answered = Instant::now();
        let changes = batch.len();
        let mut remote_rows = Vec::new();
        let mut refused = Vec::new();
        let mut synced_rows = Vec::new();
        let mut seqs = Vec::new();
        for (p, result) in batch.into_iter().zip(resp.results) {
            match result {
                ChangeResult::Applied { revision, seq, .. } => {
                    seqs.push(seq);
                    let live = p.synced.as_ref().map(|s| RemoteLive {
                        node: s.node.clone(),
                        chunks: s.chunks.clone(),
                        device: self.config.device_id,
                        device_name: self.config.device_name.clone(),
                        listed: s.chunks.len() > chunklist::INLINE_MAX,
                    });
                    match &p.synced {
                        Some(s) => {
                            synced_rows.push((p.path.clone(), Some(SyncedEntry { revision, ..s.clone() })));
                            report.uploaded += 1;
                            self.record(ActivityKind::Uploaded, &p.path, s.node.size);
                        }
                        None => {
                            synced_rows.push((p.path.clone(), None));
                            report.deleted += 1;
                            self.record(ActivityKind::DeletedRemote, &p.path, 0);
                        }
                    }
                    remote_rows
                        .push((Some(p.path), RemoteEntry { entry_id: p.change.entry_id, revision, live }));
                }
                // Someone else committed first: the next round pulls their
                // change and plans again (a conflict if both differ).
                ChangeResult::Conflict { entry_id, current_revision } => {
                    report.deferred += 1;
                    refused.push(p.path.clone());
                    // Except a deletion from before this device's first
                    // snapshot: no page it reads will ever name it, so learn
                    // it here, or an upload at this path builds on base 0
                    // and is refused forever.
                    if current_revision > Revision::ZERO && self.index.remote_entry(&entry_id)?.is_none() {
                        if let Ok(v) = self.remote.version(entry_id, current_revision).await {
                            if v.meta.is_none() {
                                let tombstone =
                                    RemoteEntry { entry_id, revision: current_revision, live: None };
                                remote_rows.push((Some(p.path), tombstone));
                            }
                        }
                    }
                }
            }
        }
        // One transaction for the whole request (it was one per file), which
        // also moves the cursor past these changes if nothing else came
        // between: the journal would only echo what is recorded here.
        self.index.record_commit(&synced_rows, &remote_rows, &seqs)?;
        fail::fail_point!("upload-after-index");
        self.settle_in_flight(&noted, &refused)?;
        tracing::debug!(
            changes,
            flush_ms = (flushed - started).as_millis() as u64,
            note_ms = (sent - flushed).as_millis() as u64,
            commit_ms = (answered - sent).as_millis() as u64,
            record_ms = answered.elapsed().as_millis() as u64,
            "committed"
        );
        Ok(report)
    }

    /// True when the node at `path` is still what the scan saw (`expect`),
    /// or absent when `expect` is `None`.
    fn unchanged(&self, path: &RelPath, expect: Option<&Stat>) -> Result<bool, OpError> {
        match (self.fs.symlink_metadata(&self.abs(path)), expect) {
            // A folder's mtime moves whenever its children change (sync's
            // own work included): a folder is unchanged while it is the
            // same folder.
            (Ok(now), Some(e)) if e.kind == StatKind::Dir => {
                Ok(now.kind == StatKind::Dir && now.inode == e.inode)
            }
            (Ok(now), Some(e)) => Ok(now.same_identity(e)),
            (Err(e), None) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            (Ok(_), None) => Ok(false),
            (Err(e), Some(_)) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            (Err(e), _) => Err(OpError::Path(format!("cannot check it: {e}"))),
        }
    }

    /// Creates the missing parents of `path` as real directories. Refuses a
    /// symlink or file on the way: nothing is ever written outside the root.
    fn ensure_parents(&self, path: &RelPath) -> Result<(), OpError> {
        let ancestors: Vec<RelPath> = path.self_and_ancestors().skip(1).collect();
        for a in ancestors.iter().rev() {
            let abs = self.abs(a);
            match self.fs.symlink_metadata(&abs) {
                Ok(s) if s.kind == StatKind::Dir => {}
                Ok(_) => {
                    return Err(OpError::Path(format!(
                        "\"{a}\" is not a folder here (a file or link is in the way); not writing through it"
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.fs.create_dir(&abs) {
                    Ok(()) => self.touch(a),
                    // A concurrent download made it first: fine if it is a folder.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AlreadyExists
                            && self.fs.symlink_metadata(&abs).is_ok_and(|s| s.kind == StatKind::Dir) => {}
                    Err(e) => return Err(OpError::Path(format!("cannot create \"{a}\": {e}"))),
                },
                Err(e) => return Err(OpError::Path(format!("cannot check \"{a}\": {e}"))),
            }
        }
        Ok(())
    }

    /// Materialises `entry` at `path`. `expect` is the stat of the local
    /// node being replaced (which goes to the trash), `None` if the path
    /// must be free.
    async fn download(
        &self,
        path: &RelPath,
        entry: &RemoteEntry,
        expect: Option<Stat>,
    ) -> Result<bool, OpError> {
        let Some(live) = &entry.live else { return Ok(false) };
        if live.node.kind != NodeKind::Dir {
            let Some(f) = self.fetch(path, entry, expect).await? else { return Ok(false) };
            return self.place_fetched(vec![f]).await?.pop().map_or(Ok(false), |(_, r)| r);
        }
        if !self.unchanged(path, expect.as_ref())? {
            return Ok(false);
        }
        self.ensure_parents(path)?;
        let abs = self.abs(path);
        let synced = entry.to_synced().ok_or_else(|| OpError::Path("internal: not live".into()))?;
        match expect {
            Some(s) if s.kind == StatKind::Dir => {}
            Some(_) => {
                self.trash_node(path)
                    .map_err(|e| OpError::Path(format!("cannot move it to the trash: {e}")))?;
                self.fs.create_dir(&abs).map_err(|e| OpError::Path(format!("cannot create it: {e}")))?;
            }
            None => self.fs.create_dir(&abs).map_err(|e| OpError::Path(format!("cannot create it: {e}")))?,
        }
        let stat = self
            .fs
            .symlink_metadata(&abs)
            .ok()
            .map(|st| (super::to_cached(&st), Node { mtime_ns: st.mtime_ns, ..live.node.clone() }));
        self.index.record_placed(&[(path.clone(), synced, stat)]).map_err(|e| OpError::Fatal(e.into()))?;
        fail::fail_point!("download-after-index");
        Ok(true)
    }

    /// The first half of downloading a file or link: checks that the path
    /// is still as planned, creates its parents, and fetches it into a
    /// verified temp file with its mode and time set. `None` when the path
    /// moved on (deferred).
    async fn fetch(
        &self,
        path: &RelPath,
        entry: &RemoteEntry,
        expect: Option<Stat>,
    ) -> Result<Option<Fetched>, OpError> {
        let Some(live) = &entry.live else { return Ok(None) };
        // A node that changed since the scan is not fetched over. A path
        // that must be free is not looked at here: the no-clobber rename
        // that places the file checks it (a file saved there meanwhile
        // costs one wasted fetch, and is kept).
        if expect.is_some() && !self.unchanged(path, expect.as_ref())? {
            return Ok(None);
        }
        self.ensure_parents(path)?;
        let abs = self.abs(path);
        let synced = entry.to_synced().ok_or_else(|| OpError::Path("internal: not live".into()))?;
        let tmp = if live.node.kind == NodeKind::File {
            let reuse = match expect.filter(|s| s.kind == StatKind::File) {
                // Replacing a file: the planner saw it unchanged since it
                // was synced, so its synced chunk list says where its
                // chunks lie.
                Some(_) => Some((
                    abs.as_path(),
                    self.index.synced_chunks(path).map_err(|e| OpError::Fatal(e.into()))?,
                )),
                None => None,
            };
            match self.download_to_temp(path, &live.chunks, reuse).await {
                Ok(t) => t,
                Err(TransferError::Remote(e)) if e.is_retryable() => return Err(OpError::Fatal(e.into())),
                Err(e) => return Err(OpError::Path(format!("download failed: {e}"))),
            }
        } else {
            let tmp = self.temp_path();
            let target = live.node.target.clone().unwrap_or_default();
            self.fs
                .symlink(&target, &tmp)
                .map_err(|e| OpError::Path(format!("cannot create the link: {e}")))?;
            tmp
        };
        if live.node.kind == NodeKind::File {
            let set = set_mode_and_time(self.fs.as_ref(), &tmp, live.node.executable, live.node.mtime_ns);
            if let Err(e) = set {
                let _ = self.fs.remove_file(&tmp);
                return Err(OpError::Path(format!("cannot set its mode or time: {e}")));
            }
        }
        Ok(Some(Fetched { path: path.clone(), tmp, node: live.node.clone(), synced, expect }))
    }

    /// The second half: makes the fetched temp files durable (together: one
    /// `syncfs` rather than an fsync each, for a group of small files),
    /// renames each into place (after a last check that the destination is
    /// still what was planned), fsyncs each folder that received one, and
    /// only then records them as synced, all in one index transaction. A
    /// file is never renamed before its bytes are durable, nor marked
    /// synced before it is durably in place. Results are in the order given.
    async fn place_fetched(&self, fetched: Vec<Fetched>) -> Result<Vec<(RelPath, OpResult)>, EngineError> {
        let mut results: Vec<(RelPath, OpResult)> = Vec::with_capacity(fetched.len());
        let files: Vec<PathBuf> =
            fetched.iter().filter(|f| f.node.kind == NodeKind::File).map(|f| f.tmp.clone()).collect();
        let durable =
            if files.is_empty() { Ok(()) } else { self.on_disk(move |fs| fs.sync_files(&files)).await };
        if let Err(e) = durable {
            for f in fetched {
                let _ = self.fs.remove_file(&f.tmp);
                results.push((f.path, Err(OpError::Path(format!("cannot write it to the disk: {e}")))));
            }
            return Ok(results);
        }
        fail::fail_point!("download-temp-synced");
        // Taken before any of them is in place, where a user could write it.
        let horizon = self.racy_horizon();
        let mut placed = Vec::new();
        for f in fetched {
            let r = self.place(&f.tmp, &f.path, f.expect.as_ref());
            if !matches!(r, Ok(true)) {
                let _ = self.fs.remove_file(&f.tmp);
            }
            results.push((f.path.clone(), r));
            if matches!(results.last(), Some((_, Ok(true)))) {
                placed.push((results.len() - 1, f));
            }
        }
        // Each folder once: `None` when its fsync worked.
        let parents: BTreeSet<PathBuf> =
            placed.iter().filter_map(|(_, f)| self.abs(&f.path).parent().map(Path::to_path_buf)).collect();
        let dirs = self
            .on_disk(move |fs| {
                Ok(parents
                    .into_iter()
                    .map(|p| {
                        let e = fs.sync_dir(&p).err().map(|e| e.to_string());
                        (p, e)
                    })
                    .collect::<BTreeMap<PathBuf, Option<String>>>())
            })
            .await;
        let mut rows = Vec::with_capacity(placed.len());
        for (i, f) in placed {
            let abs = self.abs(&f.path);
            let failed = match &dirs {
                Ok(dirs) => abs.parent().and_then(|p| dirs.get(p)).cloned().flatten(),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failed {
                results[i].1 = Err(OpError::Path(format!("cannot sync its folder: {e}")));
                continue;
            }
            // Remember what we wrote, so the next scan does not rehash it:
            // unless its mtime (the other device's) is at or after the
            // horizon, where a save after the rename could leave the stat
            // as it was (see `Engine::scan`).
            let stat = self
                .fs
                .symlink_metadata(&abs)
                .ok()
                .filter(|st| st.kind != StatKind::File || !crate::scan::is_racy(st.mtime_ns, horizon))
                .map(|st| (super::to_cached(&st), Node { mtime_ns: st.mtime_ns, ..f.node.clone() }));
            rows.push((f.path, f.synced, stat));
        }
        self.index.record_placed(&rows)?;
        fail::fail_point!("download-after-index");
        Ok(results)
    }

    /// Renames a finished temp file over `path`, after one last check that
    /// the destination is still what was planned. The caller fsyncs the
    /// folder.
    fn place(&self, tmp: &Path, path: &RelPath, expect: Option<&Stat>) -> Result<bool, OpError> {
        let err = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| OpError::Path(format!("{what}: {e}"))
        };
        // A path that must be free needs no check here: the no-clobber
        // rename below is that check, made atomically.
        if expect.is_some() {
            if !self.unchanged(path, expect)? {
                return Ok(false);
            }
            self.trash_node(path).map_err(err("cannot move the old version to the trash"))?;
        }
        fail::fail_point!("download-before-rename");
        // Never over a file saved there since the check above (the old
        // version is in the trash by now): that is the user's, keep it.
        match self.fs.rename_noreplace(tmp, &self.abs(path)) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            r => {
                r.map_err(err("cannot move it into place"))?;
                fail::fail_point!("download-after-rename");
                Ok(true)
            }
        }
    }

    /// The store deleted `path` and the local node has no unsynced change:
    /// to the trash. A folder that still holds something sync keeps (new or
    /// changed files, which their own ops upload) stays, and is sent to the
    /// store again: never lose data. A folder holding only ignored files
    /// goes to the trash whole, where they can still be found.
    async fn delete_local(
        &self,
        path: &RelPath,
        stat: &Stat,
        pending: &mut Vec<Pending>,
    ) -> Result<bool, OpError> {
        if !self.unchanged(path, Some(stat))? {
            return Ok(false);
        }
        if stat.kind == StatKind::Dir {
            // Children were handled first (deletions run children first):
            // look at what is left now, not at what the scan saw.
            let abs = self.abs(path);
            let left = self.fs.read_dir(&abs).map_err(|e| OpError::Path(format!("cannot list it: {e}")))?;
            let ignore = crate::ignore::IgnoreRules::load(self.fs.as_ref(), &self.config.root)
                .unwrap_or_else(|_| crate::ignore::IgnoreRules::builtin());
            let keeps_something = left.iter().any(|name| match name {
                Ok(name) => path.join(name).map_or(true, |child| {
                    let is_dir =
                        self.fs.symlink_metadata(&self.abs(&child)).is_ok_and(|s| s.kind == StatKind::Dir);
                    !ignore.is_ignored(&child, is_dir)
                }),
                Err(_) => true,
            });
            if keeps_something {
                // Holds new or changed files (their own ops upload them):
                // keep the folder, on the store too.
                let entry_id = self.keys.path.entry_id(path.as_str());
                let base = self
                    .index
                    .remote_entry(&entry_id)
                    .map_err(|e| OpError::Fatal(e.into()))?
                    .map_or(Revision::ZERO, |(r, _)| r);
                self.queue_change(path, base, Node::dir(), Vec::new(), HashSet::new(), pending)?;
                return Ok(true);
            }
            if left.is_empty() {
                self.fs.remove_dir(&abs).map_err(|e| OpError::Path(format!("cannot remove it: {e}")))?;
                self.index.remove_synced(path).map_err(|e| OpError::Fatal(e.into()))?;
                self.index
                    .update_cache(&[], std::slice::from_ref(path))
                    .map_err(|e| OpError::Fatal(e.into()))?;
                return Ok(true);
            }
        }
        self.trash_node(path).map_err(|e| OpError::Path(format!("cannot move it to the trash: {e}")))?;
        self.index.remove_synced(path).map_err(|e| OpError::Fatal(e.into()))?;
        self.index.update_cache(&[], std::slice::from_ref(path)).map_err(|e| OpError::Fatal(e.into()))?;
        Ok(true)
    }

    /// Both sides changed: the local node moves aside as a conflicted copy
    /// (a new file, uploaded next round), the remote one takes the name.
    async fn conflict(&self, path: &RelPath, stat: &Stat, entry: &RemoteEntry) -> Result<bool, OpError> {
        if !self.unchanged(path, Some(stat))? {
            return Ok(false);
        }
        let now = self.now_ns();
        let mut copy = None;
        for attempt in 1..100 {
            let c = conflicted_copy(path, &self.config.device_name, now, attempt);
            if !self.fs.exists(&self.abs(&c)).map_err(|e| OpError::Path(e.to_string()))? {
                copy = Some(c);
                break;
            }
        }
        let copy = copy.ok_or_else(|| OpError::Path("no free name for a conflicted copy".into()))?;
        self.touch(&copy);
        self.fs
            .rename(&self.abs(path), &self.abs(&copy))
            .map_err(|e| OpError::Path(format!("cannot make the conflicted copy: {e}")))?;
        let device = entry.live.as_ref().map(|l| l.device.to_string()).unwrap_or_default();
        self.index
            .add_conflict(path, &copy, &device, now / 1_000_000)
            .map_err(|e| OpError::Fatal(e.into()))?;
        self.download(path, entry, None).await
    }
}

/// The activity an op records when it completes in `apply_one` (uploads
/// and remote deletions are recorded when their commit is accepted), and
/// the size its progress counts.
fn activity_of(op: &Op, scan: &ScanResult) -> (Option<ActivityKind>, u64) {
    let live_size = |e: &RemoteEntry| e.live.as_ref().map_or(0, |l| l.node.size);
    match op {
        Op::Upload { path, .. } => (None, scan.entries.get(path).map_or(0, |e| e.node.size)),
        Op::Download { entry, .. } => (Some(ActivityKind::Downloaded), live_size(entry)),
        Op::Conflict { entry, .. } => (Some(ActivityKind::Conflict), live_size(entry)),
        Op::DeleteLocal { .. } => (Some(ActivityKind::DeletedLocal), 0),
        _ => (None, 0),
    }
}

/// One op's outcome: done (`true`) or deferred (`false`), or how it failed.
type OpResult = Result<bool, OpError>;

/// How one op failed.
pub(crate) enum OpError {
    /// The round cannot go on (store unreachable, index broken).
    Fatal(EngineError),
    /// This path has a problem; others go on.
    Path(String),
}

impl From<crate::index::IndexError> for OpError {
    fn from(e: crate::index::IndexError) -> Self {
        OpError::Fatal(e.into())
    }
}

impl From<EngineError> for OpError {
    fn from(e: EngineError) -> Self {
        OpError::Fatal(e)
    }
}
