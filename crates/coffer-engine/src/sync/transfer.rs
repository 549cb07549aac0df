//! Moving bytes: reading a local file into sealed chunks for the store, and
//! fetching, verifying and writing a remote file into a temp file.
//!
//! Uploads stream: chunks are sealed on every core (`ingest`) and sent in
//! batches of at most [`BATCH_BYTES`], after asking the store which it
//! lacks, so memory stays bounded whatever the file size and only the deltas
//! travel; a large file's batches are sent while the next are sealed, up to
//! [`UPLOAD_AHEAD`] at once. Downloads fetch chunks in batched requests of
//! up to 4 MiB, up to [`FETCH_AHEAD`] requests at once, verify each
//! (store id, AEAD tag, content hash), and write them in order to a temp file
//! in the root's state folder, which the caller renames into place.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use coffer_crypto::{ChunkIdKey, ContentHash};
use coffer_proto::{ChunkId, SealedChunk};
use futures::future::BoxFuture;
use futures::stream::{self, FuturesUnordered, StreamExt};

use super::{Engine, EngineError};
use crate::chunker::{RawChunk, StreamChunker};
use crate::fs::Stat;
use crate::ingest::{
    ingest_changed, ingest_skipping, seal_chunk, BaseChunks, IngestError, Ingested, IngestedChunk,
};
use crate::model::{ChunkRef, FileHash, RelPath};
use crate::plan::Op;
use crate::remote::{Remote, RemoteError};

/// Sealed bytes sent per upload request.
pub(crate) const BATCH_BYTES: usize = 8 << 20;
/// Most plaintext bytes of small files read and sealed ahead at once
/// ([`Engine::preseal_small`]).
pub(crate) const PRESEAL_BYTES: u64 = 4 << 20;
/// Most small files read and sealed ahead at once.
pub(crate) const PRESEAL_FILES: usize = 128;
/// Upload requests in flight while a large file's next batch is sealed.
pub(crate) const UPLOAD_AHEAD: usize = 2;
/// Batched chunk requests in flight per download.
pub(crate) const FETCH_AHEAD: usize = 3;
/// Plaintext bytes asked for in one batched chunk request per download.
const FETCH_BATCH_BYTES: u64 = 4 << 20;
/// Bytes copied from a replaced file's old version between progress updates.
const LOCAL_RUN_BYTES: u64 = 64 << 20;
/// A download with at least this many bytes to fetch writes them on a
/// thread of its own ([`ChunkWriter`]).
const WRITER_THREAD_BYTES: u64 = 16 << 20;
/// Opened chunks waiting for a [`ChunkWriter`] at most.
const WRITER_QUEUE: usize = 32;

/// Where a download writes the chunks it receives, in file order.
enum WriteTo {
    /// On the download's own task.
    Here(Box<dyn crate::fs::WriteFile>),
    /// On a thread of its own, for a large download.
    Thread(ChunkWriter),
}

impl WriteTo {
    /// The file, once everything handed over is written; the first write
    /// error if any.
    async fn into_file(self) -> std::io::Result<Box<dyn crate::fs::WriteFile>> {
        match self {
            WriteTo::Here(file) => Ok(file),
            WriteTo::Thread(writer) => writer.finish().await,
        }
    }
}

/// A large download's chunks written on a blocking thread, in order, while
/// the download's task receives and opens the next ones. In the tail of
/// W1 (after the upload ends, the rest of a 1 GiB file fetched) the writes
/// are most of the download's CPU, the kernel's copy into the page cache;
/// done on the download's task they left the other core idle
/// (docs/benchmarks.md, sixteenth pass). At most [`WRITER_QUEUE`] chunks
/// wait.
struct ChunkWriter {
    queue: tokio::sync::mpsc::Sender<Vec<u8>>,
    done: tokio::task::JoinHandle<(Box<dyn crate::fs::WriteFile>, std::io::Result<()>)>,
}

impl ChunkWriter {
    fn start(mut file: Box<dyn crate::fs::WriteFile>) -> Self {
        let (queue, mut chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(WRITER_QUEUE);
        let done = tokio::task::spawn_blocking(move || {
            while let Some(bytes) = chunks.blocking_recv() {
                if let Err(e) = file.write_all(&bytes) {
                    return (file, Err(e));
                }
            }
            (file, Ok(()))
        });
        Self { queue, done }
    }

    /// Queues `bytes` after those before; `false` once the writer has
    /// stopped at an error ([`ChunkWriter::finish`] returns it).
    async fn write(&self, bytes: Vec<u8>) -> bool {
        self.queue.send(bytes).await.is_ok()
    }

    /// Waits until everything queued is written; the file back, or the
    /// first write error.
    async fn finish(self) -> std::io::Result<Box<dyn crate::fs::WriteFile>> {
        drop(self.queue);
        let (file, written) = self.done.await.map_err(|e| std::io::Error::other(e.to_string()))?;
        written.map(|()| file)
    }
}

/// Why moving one file failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    /// The file changed while it was read: try again next round.
    #[error("changed while being read")]
    Unstable,
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A chunk did not verify.
    #[error("a chunk from the store failed verification: {0}")]
    Corrupt(String),
    /// The file has more chunks than one change may name (at least this many).
    #[error("{}", too_large(*.0, *.1))]
    TooLarge(usize, usize),
}

/// What a file with `chunks` chunks, over the store's `most`, is told.
pub(crate) fn too_large(chunks: usize, most: usize) -> String {
    format!("too large to sync: {chunks} chunks, and the store takes at most {most} in one change")
}

impl From<TransferError> for EngineError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Remote(r) => EngineError::Remote(r),
            other => {
                EngineError::Io { what: "transfer".into(), source: std::io::Error::other(other.to_string()) }
            }
        }
    }
}

/// Chunks up to this size are opened on the async thread (sealing work of a
/// few microseconds costs less than a hop to the blocking pool).
const SMALL_CHUNK: u32 = 64 << 10;
/// Files up to this size, in one chunk, are fetched in batches.
const PREFETCH_FILE_MAX: u64 = 64 << 10;
/// Plaintext bytes asked for in one batched fetch (the store allows 16 MiB).
const PREFETCH_REQUEST_BYTES: u64 = 4 << 20;

/// Opens a fetched chunk in the buffer it came in and checks its length:
/// the plaintext, or why it is not the chunk `c` names. Its sealed bytes
/// are not hashed again: every chunk the engine opens this way came from
/// [`Remote::download_chunk`] or [`Remote::download_chunks`] under `c.id`,
/// which check each against its id.
pub(crate) fn open_chunk(
    keys: &coffer_crypto::AccountKeys,
    c: &ChunkRef,
    sealed: Vec<u8>,
) -> Result<Vec<u8>, String> {
    match keys.chunk.open_downloaded(&keys.chunk_id, &c.content, sealed) {
        Ok(plain) if plain.len() == c.len as usize => Ok(plain),
        Ok(_) => Err(format!("chunk {} has the wrong length", c.id)),
        Err(e) => Err(format!("chunk {}: {e}", c.id)),
    }
}

/// Opens the chunks of a batched download, for the refs of `group` in
/// order, each in the buffer it came in; a chunk that several refs name
/// (content that repeats) is copied for each but the last. `None` for one
/// the answer lacked or that does not open.
fn open_batch(
    keys: &coffer_crypto::AccountKeys,
    group: &[ChunkRef],
    mut got: HashMap<ChunkId, SealedChunk>,
) -> Vec<Option<Vec<u8>>> {
    let mut uses: HashMap<ChunkId, usize> = HashMap::new();
    for c in group {
        *uses.entry(c.id).or_default() += 1;
    }
    group
        .iter()
        .map(|c| {
            let left = uses.get_mut(&c.id).expect("every ref is counted");
            *left -= 1;
            let sealed = if *left == 0 {
                got.remove(&c.id)?.into_bytes()
            } else {
                got.get(&c.id)?.as_bytes().to_vec()
            };
            open_chunk(keys, c, sealed).ok()
        })
        .collect()
}

/// Reads a small file to its end into `data`, which has room for the size
/// the scan saw. Not `File::read_to_end`, which asks the file its size and
/// position first (two system calls per file for the many small files of
/// an upload).
fn read_whole<R: std::io::Read + ?Sized>(reader: &mut R, data: &mut Vec<u8>) -> std::io::Result<usize> {
    std::io::Read::read_to_end(&mut std::io::Read::take(reader, u64::MAX), data)
}

/// Whether `staged` is the start of `chunks` (same contents, same lengths).
fn is_start_of(staged: &[ChunkRef], chunks: &[ChunkRef]) -> bool {
    staged.len() <= chunks.len()
        && staged.iter().zip(chunks).all(|(a, b)| a.content == b.content && a.len == b.len)
}

/// Where each chunk of `list` lies in the file it describes.
fn offsets_of(list: &[ChunkRef]) -> Vec<(ContentHash, u64, u32)> {
    let mut at = 0u64;
    list.iter()
        .map(|c| {
            let here = at;
            at += u64::from(c.len);
            (c.content, here, c.len)
        })
        .collect()
}

/// A small file read and sealed ahead of its upload.
pub(crate) struct Presealed {
    /// Its stat before it was read.
    before: Stat,
    /// Its one chunk; `None` if it is empty.
    sealed: Option<IngestedChunk>,
}

/// Consecutive runs of `wanted` of at most `cap` bytes each, by `len` (a
/// larger item alone), and at most 1,000 items.
fn batches<T>(wanted: &[T], cap: u64, len: impl Fn(&T) -> u64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < wanted.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < wanted.len() && end - start < 1000 && (end == start || bytes + len(&wanted[end]) <= cap) {
            bytes += len(&wanted[end]);
            end += 1;
        }
        out.push(&wanted[start..end]);
        start = end;
    }
    out
}

/// Collects sealed chunks and sends those the store lacks, a batch at a time.
///
/// [`ChunkBatcher::add`] sends a full batch before it returns.
/// [`ChunkBatcher::add_ahead`] only starts it: the batch is sent while the
/// caller seals the next ones, up to [`UPLOAD_AHEAD`] batches in flight, as
/// long as the caller drives them ([`ChunkBatcher::drive`]); a large file's
/// reading and sealing then overlap the store's checking and writing (and
/// the store's work on one request its disk flush for the one before)
/// instead of taking turns with them. Whatever is in flight is awaited by
/// [`ChunkBatcher::settle`] and [`ChunkBatcher::flush`] (which `add` calls
/// for a full batch), and goes along with [`ChunkBatcher::split_off`], so a
/// commit never overtakes the chunks it names.
pub(crate) struct ChunkBatcher<'a, R: Remote> {
    remote: &'a R,
    pending: Vec<SealedChunk>,
    /// The ids in `pending`: a batch holds up to 1,000 chunks, and every
    /// chunk offered is looked up.
    pending_ids: HashSet<ChunkId>,
    pending_bytes: usize,
    /// The batches being sent (by [`ChunkBatcher::add_ahead`]): each
    /// gives its mark (see `offered`) and the sealed bytes it sent, once
    /// done.
    sending: FuturesUnordered<BoxFuture<'a, (u64, Result<u64, RemoteError>)>>,
    /// Chunks offered so far (duplicates too). A batch's mark is this
    /// count when it was sent: it holds every chunk offered before that
    /// not in an earlier batch.
    offered: u64,
    /// Marks of the batches in flight, and of those done out of order.
    in_flight: BTreeSet<u64>,
    done: BTreeSet<u64>,
    /// Every chunk offered up to this count is on the store.
    stored: u64,
    /// Sealed bytes actually sent.
    pub sent_bytes: u64,
}

impl<'a, R: Remote> ChunkBatcher<'a, R> {
    pub fn new(remote: &'a R) -> Self {
        Self {
            remote,
            pending: Vec::new(),
            pending_ids: HashSet::new(),
            pending_bytes: 0,
            sending: FuturesUnordered::new(),
            offered: 0,
            in_flight: BTreeSet::new(),
            done: BTreeSet::new(),
            stored: 0,
            sent_bytes: 0,
        }
    }

    /// Chunks offered so far ([`ChunkBatcher::add`] and
    /// [`ChunkBatcher::add_ahead`] calls).
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Every chunk offered up to this count (of [`ChunkBatcher::offered`])
    /// is on the store.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Queues a chunk (duplicates within a batch are dropped); sends the
    /// batch first if the chunk would take it past [`BATCH_BYTES`], so a
    /// batch is one upload request.
    pub async fn add(&mut self, chunk: SealedChunk) -> Result<(), RemoteError> {
        if self.holds(&chunk) {
            self.offered += 1;
            return Ok(());
        }
        if self.is_full_for(&chunk) {
            self.flush().await?;
        }
        self.offered += 1;
        self.queue(chunk);
        Ok(())
    }

    /// Like [`ChunkBatcher::add`], but a full batch is only started: this
    /// waits, if [`UPLOAD_AHEAD`] batches are in flight, for one of them,
    /// not for its own.
    pub async fn add_ahead(&mut self, chunk: SealedChunk) -> Result<(), RemoteError> {
        if self.holds(&chunk) {
            self.offered += 1;
            return Ok(());
        }
        if self.is_full_for(&chunk) {
            while self.sending.len() >= UPLOAD_AHEAD {
                self.drive().await?;
            }
            let batch = self.take_pending();
            let (remote, mark) = (self.remote, self.offered);
            self.in_flight.insert(mark);
            self.sending.push(Box::pin(async move { (mark, send_batch(remote, batch).await) }));
        }
        self.offered += 1;
        self.queue(chunk);
        Ok(())
    }

    /// Whether a batch is in flight.
    pub fn is_sending(&self) -> bool {
        !self.sending.is_empty()
    }

    /// Drives the batches in flight until one is sent; never returns if
    /// there is none. Cancel-safe: dropped unfinished, they stay in flight.
    pub async fn drive(&mut self) -> Result<(), RemoteError> {
        match self.sending.next().await {
            Some((mark, sent)) => {
                self.sent_bytes += sent?;
                self.in_flight.remove(&mark);
                self.done.insert(mark);
                // Done in order up to the first still in flight.
                let first = self.in_flight.first().copied().unwrap_or(u64::MAX);
                while let Some(d) = self.done.first().copied().filter(|d| *d < first) {
                    self.stored = self.stored.max(d);
                    self.done.pop_first();
                }
                Ok(())
            }
            None => std::future::pending().await,
        }
    }

    /// Waits for the batches in flight, if any.
    pub async fn settle(&mut self) -> Result<(), RemoteError> {
        while self.is_sending() {
            self.drive().await?;
        }
        Ok(())
    }

    /// Whether the queued batch holds this chunk already.
    fn holds(&self, chunk: &SealedChunk) -> bool {
        self.pending_ids.contains(&chunk.id())
    }

    /// Whether `chunk` would take the queued batch past its bounds.
    fn is_full_for(&self, chunk: &SealedChunk) -> bool {
        self.pending_bytes + chunk.len() > BATCH_BYTES || self.pending.len() >= 1000
    }

    fn queue(&mut self, chunk: SealedChunk) {
        self.pending_bytes += chunk.len();
        self.pending_ids.insert(chunk.id());
        self.pending.push(chunk);
    }

    /// The queued batch, which this batcher no longer holds.
    fn take_pending(&mut self) -> Vec<SealedChunk> {
        self.pending_bytes = 0;
        self.pending_ids.clear();
        std::mem::take(&mut self.pending)
    }

    /// Hands what is queued, unsent, and the batches in flight to a
    /// batcher of its own (to send apart, as a commit's batch); this one
    /// goes on empty.
    pub fn split_off(&mut self) -> Self {
        Self {
            remote: self.remote,
            pending: std::mem::take(&mut self.pending),
            pending_ids: std::mem::take(&mut self.pending_ids),
            pending_bytes: std::mem::take(&mut self.pending_bytes),
            sending: std::mem::take(&mut self.sending),
            offered: self.offered,
            in_flight: std::mem::take(&mut self.in_flight),
            done: std::mem::take(&mut self.done),
            stored: self.stored,
            sent_bytes: 0,
        }
    }

    /// Sends whatever is queued that the store lacks, after the batches
    /// in flight.
    pub async fn flush(&mut self) -> Result<(), RemoteError> {
        self.settle().await?;
        if !self.pending.is_empty() {
            let batch = self.take_pending();
            self.sent_bytes += send_batch(self.remote, batch).await?;
        }
        self.stored = self.offered;
        Ok(())
    }
}

/// Sends the chunks of `batch` that the store lacks, in requests under its
/// body limit; returns the sealed bytes sent.
async fn send_batch<R: Remote>(remote: &R, batch: Vec<SealedChunk>) -> Result<u64, RemoteError> {
    let ids: Vec<ChunkId> = batch.iter().map(SealedChunk::id).collect();
    let missing = remote.missing_chunks(&ids).await?;
    if missing.is_empty() {
        return Ok(0);
    }
    let missing: HashSet<ChunkId> = missing.into_iter().collect();
    let send: Vec<SealedChunk> = batch.into_iter().filter(|c| missing.contains(&c.id())).collect();
    let mut sent = 0u64;
    let mut start = 0;
    while start < send.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < send.len() && (end == start || bytes + send[end].len() <= BATCH_BYTES) {
            bytes += send[end].len();
            end += 1;
        }
        remote.upload_chunks(&send[start..end]).await?;
        sent += bytes as u64;
        start = end;
    }
    fail::fail_point!("upload-chunks-sent");
    Ok(sent)
}

impl<R: Remote> Engine<R> {
    /// Reads `path`, seals its chunks and queues them on `batcher`. Returns
    /// the chunk list and file hash, or `Unstable` if the file no longer
    /// matches `expect` (it changed since the scan, or while being read).
    /// Chunks of `base` (the base revision's, which the store keeps) are
    /// neither sealed, asked about nor sent again. A large file that is
    /// `new` on the store (no revision yet) is previewed to the other
    /// devices as it goes ([`super::preview`]); they hold an edited one.
    pub(crate) async fn upload_file(
        &self,
        path: &RelPath,
        expect: &Stat,
        base: &[ChunkRef],
        new: bool,
        batcher: &mut ChunkBatcher<'_, R>,
    ) -> Result<(Vec<ChunkRef>, FileHash), TransferError> {
        let abs = self.abs(path);
        let params = self.config.chunker;
        let small = expect.size <= params.min as u64;
        if let Some(p) = self.take_presealed(path, expect).filter(|_| small) {
            fail::fail_point!("upload-read");
            return self.upload_small(&abs, &p.before, p.sealed, batcher).await;
        }
        let before = self.fs.symlink_metadata(&abs)?;
        if !before.same_identity(expect) {
            return Err(TransferError::Unstable);
        }
        let mut reader = self.fs.open_read(&abs)?;
        fail::fail_point!("upload-read");
        let keys = self.keys.clone();
        if small {
            // A small file is one chunk: read, hash and seal it on one
            // blocking thread, without the pipeline's thread start-up.
            let size = usize::try_from(expect.size).unwrap_or(0);
            let sealed = tokio::task::spawn_blocking(move || {
                let mut data = Vec::with_capacity(size);
                read_whole(&mut *reader, &mut data)?;
                Ok::<_, std::io::Error>(
                    (!data.is_empty()).then(|| seal_chunk(&keys, &RawChunk::new(0, data))),
                )
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            return self.upload_small(&abs, &before, sealed, batcher).await;
        }
        let mut chunks = Vec::new();
        // Sealing runs on blocking threads; sealed chunks come back over a
        // bounded channel so the upload can proceed while reading goes on.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Ingested>(4);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let base = BaseChunks::new(base.to_vec());
        let scanned = self.scan_list(path, expect);
        // Known before reading when the scan has just chunked the file: the
        // store counts distinct chunks (a repetitive file names one chunk
        // many times), and equal contents seal to equal chunks.
        if let Some(list) = &scanned {
            let distinct = list.iter().map(|(hash, _)| hash).collect::<HashSet<_>>().len();
            if distinct > self.config.max_chunks_per_file {
                return Err(TransferError::TooLarge(distinct, self.config.max_chunks_per_file));
            }
        }
        let reading = tokio::task::spawn_blocking(move || {
            let sink = |c| tx.blocking_send(c).map_err(|_| "upload stopped".to_string());
            match scanned {
                // An edit the scan has just read: only what changed is read again.
                Some(list) if base.cover_most(&list) => {
                    ingest_changed(&mut reader, &keys, &base, &list, sink)
                }
                scanned => ingest_skipping(reader, &keys, params, workers, &base, scanned, sink),
            }
        });
        // A large new file's other devices fetch what is stored as it goes.
        let mut feed = if new { self.preview_feed(path, expect.size) } else { None };
        let mut failed = None;
        loop {
            // The batches in flight are driven while the next is sealed.
            let c = tokio::select! {
                biased;
                sent = batcher.drive(), if batcher.is_sending() => {
                    if let Err(e) = sent {
                        failed = Some(e);
                        break;
                    }
                    if let Some(feed) = feed.as_mut() {
                        self.post_previews(feed, &chunks, batcher.stored(), false).await;
                    }
                    continue;
                }
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
            };
            let c = match c {
                Ingested::Known(r) => {
                    // On the store already: nothing to send or to pace.
                    chunks.push(r);
                    if let Some(feed) = feed.as_mut() {
                        feed.offered(batcher.offered());
                    }
                    self.progressed(u64::from(r.len));
                    continue;
                }
                Ingested::Sealed(c) => c,
            };
            self.moved_up(c.len).await;
            chunks.push(ChunkRef { id: c.sealed.id(), content: c.content, len: c.len });
            fail::fail_point!("upload-sealed");
            if let Err(e) = batcher.add_ahead(c.sealed).await {
                failed = Some(e);
                break;
            }
            if let Some(feed) = feed.as_mut() {
                feed.offered(batcher.offered());
                self.post_previews(feed, &chunks, batcher.stored(), false).await;
            }
        }
        // Nothing of this file stays in flight undriven once it is read
        // (the last, partial batch stays queued, as for a small file).
        if failed.is_none() {
            failed = batcher.settle().await.err();
        }
        if let (None, Some(feed)) = (&failed, feed.as_mut()) {
            self.post_previews(feed, &chunks, batcher.stored(), true).await;
        }
        drop(rx);
        let read = reading.await.map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        match read {
            Ok(_) => {}
            Err(IngestError::Read(e)) => return Err(e.into()),
            Err(IngestError::Sink(_) | IngestError::Changed) => return Err(TransferError::Unstable),
        }
        self.finish_upload(&abs, &before, chunks)
    }

    /// Paces one chunk of an upload (bandwidth limit) and counts it in the
    /// progress.
    async fn moved_up(&self, len: u32) {
        self.limits.up.take(u64::from(len)).await;
        self.progressed(u64::from(len));
    }

    /// Counts `bytes` of the current file as done, in the round's progress too.
    pub(crate) fn progressed(&self, bytes: u64) {
        self.update_status(|s| {
            s.bytes_done += bytes;
            s.current_bytes_done += bytes;
        });
    }

    /// Queues a small file's one chunk (none if it is empty), read and
    /// sealed when it had the stat `before`.
    async fn upload_small(
        &self,
        abs: &Path,
        before: &Stat,
        sealed: Option<IngestedChunk>,
        batcher: &mut ChunkBatcher<'_, R>,
    ) -> Result<(Vec<ChunkRef>, FileHash), TransferError> {
        let mut chunks = Vec::new();
        if let Some(c) = sealed {
            self.moved_up(c.len).await;
            chunks.push(ChunkRef { id: c.sealed.id(), content: c.content, len: c.len });
            fail::fail_point!("upload-sealed");
            batcher.add(c.sealed).await?;
        }
        self.finish_upload(abs, before, chunks)
    }

    /// Reads and seals a group of small files (one chunk each, at most
    /// [`PRESEAL_BYTES`] in all) on one blocking thread, ahead of their
    /// uploads, which take them from here ([`Engine::upload_file`]): one
    /// hand-off to a blocking thread for the group instead of one for each
    /// file, which on a busy machine each wait for a core. Best effort: a
    /// file that cannot be read, or is no longer what the scan saw, is left
    /// to its upload, which reads it again and says what is wrong.
    pub(crate) async fn preseal_small(&self, files: Vec<(RelPath, Stat)>) {
        let (fs, keys, root) = (self.fs.clone(), self.keys.clone(), self.config.root.clone());
        let sealed = tokio::task::spawn_blocking(move || {
            let mut bytes = 0u64;
            files
                .into_iter()
                .take_while(|(_, expect)| {
                    bytes += expect.size;
                    bytes <= PRESEAL_BYTES
                })
                .filter_map(|(path, expect)| {
                    let abs = root.join(path.as_str());
                    let before = fs.symlink_metadata(&abs).ok().filter(|b| b.same_identity(&expect))?;
                    let mut data = Vec::with_capacity(usize::try_from(expect.size).unwrap_or(0));
                    read_whole(&mut *fs.open_read(&abs).ok()?, &mut data).ok()?;
                    let sealed = (!data.is_empty()).then(|| seal_chunk(&keys, &RawChunk::new(0, data)));
                    Some((path, Presealed { before, sealed }))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if let Ok(mut p) = self.presealed.lock() {
            p.extend(sealed);
        }
    }

    /// Whether `path` was read and sealed ahead ([`Engine::preseal_small`]).
    pub(crate) fn is_presealed(&self, path: &RelPath) -> bool {
        self.presealed.lock().is_ok_and(|p| p.contains_key(path))
    }

    /// Takes what was sealed ahead of `path`'s upload, if it was read as
    /// the scan saw it (`expect`).
    fn take_presealed(&self, path: &RelPath, expect: &Stat) -> Option<Presealed> {
        let p = self.presealed.lock().ok()?.remove(path)?;
        p.before.same_identity(expect).then_some(p)
    }

    /// Forgets what was sealed ahead and not uploaded.
    pub(crate) fn clear_presealed(&self) {
        if let Ok(mut p) = self.presealed.lock() {
            p.clear();
        }
    }

    /// The stability check after reading: the file must not have changed.
    fn finish_upload(
        &self,
        abs: &Path,
        before: &Stat,
        chunks: Vec<ChunkRef>,
    ) -> Result<(Vec<ChunkRef>, FileHash), TransferError> {
        let after = self.fs.symlink_metadata(abs)?;
        if !after.same_identity(before) {
            return Err(TransferError::Unstable);
        }
        let hash = FileHash::of_chunks(chunks.iter().map(|c| (&c.content, c.len)));
        Ok((chunks, hash))
    }

    /// Fetches and verifies `chunks` into a new temp file; returns its path.
    /// The caller makes it durable ([`crate::fs::Fs::sync_files`], a group
    /// of them at once) and renames it into place, or removes it.
    /// `reuse` names the local file being replaced, with the chunk list it
    /// was synced with if known: chunks it already holds (by content hash)
    /// are copied from it instead of fetched, so a small edit to a large
    /// file downloads about one chunk.
    ///
    /// A new file (`reuse` is `None`) may have been staged from previews
    /// of its upload ([`super::preview`]): if the staging file holds the
    /// start of `chunks`, the download goes on from there.
    pub(crate) async fn download_to_temp(
        &self,
        path: &RelPath,
        chunks: &[ChunkRef],
        reuse: Option<(&Path, Option<Vec<ChunkRef>>)>,
    ) -> Result<PathBuf, TransferError> {
        let mut staged = self.take_staged(path).await;
        if let Some(s) = staged.take_if(|s| reuse.is_some() || !is_start_of(&s.list, chunks)) {
            tracing::debug!(%path, "a staged upload is not what was committed; dropped");
            self.drop_staged(s);
        }
        let (tmp, start) = match staged {
            Some(s) => {
                tracing::debug!(%path, chunks = s.list.len(), of = chunks.len(), "continuing a staged download");
                (s.tmp, Some((s.file, s.list.len())))
            }
            None => (self.temp_path(), None),
        };
        let result = self.download_into(&tmp, chunks, reuse, start).await;
        if result.is_err() {
            let _ = self.fs.remove_file(&tmp);
        }
        result.map(|()| tmp)
    }

    /// Where in the local file each content hash the new version needs
    /// lies: (content, offset, length) in file order. Chunking the old
    /// version with the account's seed finds the same boundaries the
    /// uploading device found around unchanged regions.
    async fn local_chunks(&self, path: &Path, needed: &[ChunkRef]) -> Vec<(ContentHash, u64, u32)> {
        let needed: std::collections::HashSet<ContentHash> = needed.iter().map(|c| c.content).collect();
        let Ok(reader) = self.fs.open_read(path) else { return Vec::new() };
        let keys = self.keys.clone();
        let params = self.config.chunker;
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for chunk in StreamChunker::new(reader, params, &keys.chunker_seed) {
                let Ok(chunk) = chunk else { return Vec::new() };
                let content = keys.chunk_id.content_hash(&chunk.data);
                if needed.contains(&content) {
                    out.push((content, chunk.offset, u32::try_from(chunk.data.len()).unwrap_or(u32::MAX)));
                }
            }
            out
        })
        .await
        .unwrap_or_default()
    }

    /// `start`: the file is written already, with this many chunks of
    /// `chunks` (staged from previews); the rest are appended to it.
    async fn download_into(
        &self,
        tmp: &Path,
        chunks: &[ChunkRef],
        reuse: Option<(&Path, Option<Vec<ChunkRef>>)>,
        start: Option<(Box<dyn crate::fs::WriteFile>, usize)>,
    ) -> Result<(), TransferError> {
        // Plan: each chunk comes from the local file (at an offset not
        // before the previous local one, so one forward pass reads them) or
        // from the store.
        let mut from_local: Vec<Option<u64>> = vec![None; chunks.len()];
        let mut local_reader = None;
        if let Some((path, synced)) = reuse.filter(|_| chunks.len() > 1) {
            // The list the file was synced with says where its chunks lie,
            // without reading it twice; every copied chunk is still checked
            // against its content hash below (and fetched if it differs).
            // (A list cut with other chunk sizes may share no chunk with
            // the new one: then the file is chunked again with today's.)
            let needed: HashSet<ContentHash> = chunks.iter().map(|c| c.content).collect();
            let local = match synced.map(|l| offsets_of(&l)) {
                Some(l) if l.iter().any(|(c, _, _)| needed.contains(c)) => l,
                _ => self.local_chunks(path, chunks).await,
            };
            let mut at: std::collections::HashMap<ContentHash, Vec<u64>> = std::collections::HashMap::new();
            for (content, offset, _) in &local {
                at.entry(*content).or_default().push(*offset);
            }
            let mut next = 0u64;
            for (i, c) in chunks.iter().enumerate() {
                if let Some(off) = at.get(&c.content).and_then(|v| v.iter().copied().find(|o| *o >= next)) {
                    from_local[i] = Some(off);
                    next = off + u64::from(c.len);
                }
            }
            if from_local.iter().any(Option::is_some) {
                local_reader = self.fs.open_read(path).ok().map(|r| LocalCursor { reader: r, pos: 0 });
            }
        }
        let (file, done) = match start {
            Some((file, done)) => {
                self.progressed(chunks[..done].iter().map(|c| u64::from(c.len)).sum());
                (file, done)
            }
            None => (self.fs.create_new(tmp)?, 0),
        };
        // The rest comes from the store in batches of up to
        // FETCH_BATCH_BYTES, one request each, FETCH_AHEAD batches ahead.
        let wanted: Vec<ChunkRef> =
            chunks.iter().zip(&from_local).skip(done).filter(|(_, l)| l.is_none()).map(|(c, _)| *c).collect();
        let to_fetch: u64 = wanted.iter().map(|c| u64::from(c.len)).sum();
        let mut sink = if local_reader.is_none() && to_fetch >= WRITER_THREAD_BYTES {
            WriteTo::Thread(ChunkWriter::start(file))
        } else {
            WriteTo::Here(file)
        };
        let groups: Vec<Vec<ChunkRef>> = batches(&wanted, FETCH_BATCH_BYTES, |c| u64::from(c.len))
            .into_iter()
            .map(<[_]>::to_vec)
            .collect();
        let mut batches = stream::iter(groups)
            .map(|group| async move { self.fetch_batch(&group).await })
            .buffered(FETCH_AHEAD);
        let mut ready = std::collections::VecDeque::new();
        let mut i = done;
        while i < chunks.len() {
            let c = &chunks[i];
            let plain = match from_local[i] {
                Some(_) if local_reader.is_some() => {
                    // A run of chunks from the local file (up to
                    // LOCAL_RUN_BYTES, so progress moves): copied on
                    // blocking threads (reading and checking on one,
                    // writing on the other). One that does not check out
                    // ends the run and is fetched after all.
                    let mut end = i;
                    let mut run_bytes = 0u64;
                    while end < chunks.len() && from_local[end].is_some() && run_bytes < LOCAL_RUN_BYTES {
                        run_bytes += u64::from(chunks[end].len);
                        end += 1;
                    }
                    let run: Vec<(ChunkRef, u64)> = chunks[i..end]
                        .iter()
                        .zip(&from_local[i..end])
                        .filter_map(|(c, o)| Some((*c, (*o)?)))
                        .collect();
                    let (key, mut reader) =
                        (self.keys.chunk_id.clone(), local_reader.take().expect("checked"));
                    let mut file = sink.into_file().await?;
                    let (back, reader, copied) = tokio::task::spawn_blocking(move || {
                        let copied = copy_local_run(&key, &mut reader, file.as_mut(), &run);
                        (file, reader, copied)
                    })
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                    (sink, local_reader) = (WriteTo::Here(back), Some(reader));
                    let copied = copied?;
                    let bytes: u64 = chunks[i..i + copied].iter().map(|c| u64::from(c.len)).sum();
                    self.progressed(bytes);
                    i += copied;
                    if i == end {
                        continue;
                    }
                    // Chunk `i` did not check out: fetched; the run goes on
                    // after it.
                    self.fetch_verified(&chunks[i]).await?
                }
                Some(_) => self.fetch_verified(c).await?,
                None => {
                    while ready.is_empty() {
                        let batch = batches
                            .next()
                            .await
                            .ok_or_else(|| std::io::Error::other("download stream ended early"))??;
                        ready.extend(batch);
                    }
                    let plain: Vec<u8> = ready.pop_front().expect("a batch holds at least one chunk");
                    self.limits.down.take(plain.len() as u64).await;
                    plain
                }
            };
            fail::fail_point!("download-chunk-received");
            let len = plain.len() as u64;
            match &mut sink {
                WriteTo::Here(file) => file.write_all(&plain)?,
                WriteTo::Thread(writer) => {
                    if !writer.write(plain).await {
                        // Stopped at an error, which `into_file` returns.
                        break;
                    }
                }
            }
            self.progressed(len);
            i += 1;
        }
        let mut file = sink.into_file().await?;
        // Waits for the data written out early (a large file on the real
        // disk), whose error the durability step by path would not see; on
        // a blocking thread, as that can take a while on a slow disk. A
        // file with nothing written out early has nothing to wait for: no
        // hand-off to another thread for each of many small files.
        if !file.flush_waits() {
            file.flush()?;
        } else {
            tokio::task::spawn_blocking(move || file.flush())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        fail::fail_point!("download-temp-written");
        Ok(())
    }

    /// Fetches a run of chunks in one request and opens them on a blocking
    /// thread; in order. A chunk the answer lacks or that does not open, or
    /// every chunk of a request that failed, is fetched alone
    /// ([`Engine::fetch_verified`]: retries, and the error a person sees).
    pub(crate) async fn fetch_batch(&self, group: &[ChunkRef]) -> Result<Vec<Vec<u8>>, TransferError> {
        if let [c] = group {
            return Ok(vec![self.fetch_verified(c).await?]);
        }
        let ids: Vec<ChunkId> = group.iter().map(|c| c.id).collect();
        let got: std::collections::HashMap<ChunkId, SealedChunk> =
            match self.remote.download_chunks(&ids).await {
                Ok(chunks) => chunks.into_iter().map(|c| (c.id(), c)).collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "batched chunk download failed; fetching one by one");
                    std::collections::HashMap::new()
                }
            };
        let keys = self.keys.clone();
        let refs = group.to_vec();
        let opened: Vec<Option<Vec<u8>>> = tokio::task::spawn_blocking(move || open_batch(&keys, &refs, got))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut out = Vec::with_capacity(group.len());
        for (c, plain) in group.iter().zip(opened) {
            out.push(match plain {
                Some(p) => p,
                None => self.fetch_verified(c).await?,
            });
        }
        Ok(out)
    }

    /// Downloads one chunk and opens it; one retry on a corrupt transfer.
    /// A chunk fetched ahead ([`Engine::prefetch_small`]) is used first; if
    /// it does not open, it is fetched again like any other.
    pub(crate) async fn fetch_verified(&self, c: &ChunkRef) -> Result<Vec<u8>, TransferError> {
        // Copied out, not taken (the same chunk can be the whole of several
        // files), and opened inline like any small chunk: chunks fetched
        // ahead are small.
        let ahead = self.prefetched.lock().ok().and_then(|p| p.get(&c.id).map(|s| s.as_bytes().to_vec()));
        let ahead = ahead.map(|sealed| open_chunk(&self.keys, c, sealed));
        if let Some(Ok(plain)) = ahead {
            return Ok(plain);
        }
        let mut last = String::new();
        for _ in 0..2 {
            let sealed = match self.remote.download_chunk(c.id).await {
                Ok(s) => s,
                Err(RemoteError::CorruptChunk(id)) => {
                    last = format!("chunk {id} arrived corrupted");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match self.open_fetched(c, sealed).await? {
                Ok(plain) => return Ok(plain),
                Err(why) => last = why,
            }
        }
        Err(TransferError::Corrupt(last))
    }

    /// Opens a fetched chunk (on a blocking thread unless it is small) and
    /// checks its length; `Ok(Err)` says why it is not the chunk asked for.
    async fn open_fetched(
        &self,
        c: &ChunkRef,
        sealed: SealedChunk,
    ) -> Result<Result<Vec<u8>, String>, TransferError> {
        if c.len <= SMALL_CHUNK {
            return Ok(open_chunk(&self.keys, c, sealed.into_bytes()));
        }
        let keys = self.keys.clone();
        let c = *c;
        Ok(tokio::task::spawn_blocking(move || open_chunk(&keys, &c, sealed.into_bytes()))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?)
    }

    /// Fetches the chunks of a group's small files (one chunk, at most
    /// [`PREFETCH_FILE_MAX`] bytes) in batched requests, for
    /// [`Engine::fetch_verified`] to take once they are set
    /// ([`Engine::set_prefetched`]): one request per few hundred small files
    /// instead of one each. Best effort: after a failure the rest are
    /// fetched one by one.
    pub(crate) async fn prefetch_small(&self, group: &[Op]) -> HashMap<ChunkId, SealedChunk> {
        let mut wanted: Vec<(ChunkId, u32)> = group
            .iter()
            .filter_map(|op| match op {
                Op::Download { entry, .. } => entry
                    .live
                    .as_ref()
                    .filter(|l| l.chunks.len() == 1 && l.node.size <= PREFETCH_FILE_MAX)
                    .map(|l| (l.chunks[0].id, l.chunks[0].len)),
                _ => None,
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup_by_key(|w| w.0);
        let mut fetched = HashMap::new();
        if wanted.len() < 2 {
            return fetched;
        }
        for batch in batches(&wanted, PREFETCH_REQUEST_BYTES, |w| u64::from(w.1)) {
            let ids: Vec<ChunkId> = batch.iter().map(|w| w.0).collect();
            match self.remote.download_chunks(&ids).await {
                Ok(chunks) => fetched.extend(chunks.into_iter().map(|c| (c.id(), c))),
                Err(e) => {
                    tracing::debug!(error = %e, "batched chunk download failed; fetching one by one");
                    break;
                }
            }
        }
        fetched
    }

    /// Makes `chunks` (from [`Engine::prefetch_small`]) the chunks fetched
    /// ahead that downloads take first.
    pub(crate) fn set_prefetched(&self, chunks: HashMap<ChunkId, SealedChunk>) {
        if let Ok(mut p) = self.prefetched.lock() {
            *p = chunks;
        }
    }

    /// Forgets chunks fetched ahead that no download took.
    pub(crate) fn clear_prefetched(&self) {
        if let Ok(mut p) = self.prefetched.lock() {
            p.clear();
        }
    }

    /// A fresh temp path in the state folder (same filesystem as the root,
    /// so the final rename is atomic).
    pub(crate) fn temp_path(&self) -> PathBuf {
        self.temp_path_named("dl-")
    }

    /// A fresh `<prefix><random>.part` path in the state folder's `tmp`.
    pub(crate) fn temp_path_named(&self, prefix: &str) -> PathBuf {
        let mut b = [0u8; 8];
        if let Ok(mut rng) = self.rng.lock() {
            rand_core::RngCore::fill_bytes(&mut *rng, &mut b);
        }
        self.state_dir().join("tmp").join(format!("{prefix}{}.part", hex::encode(b)))
    }
}

use std::io::Write as _;

/// Most bytes the local copy reads, hands over and writes at once: a block
/// of chunks that lie back to back in the local file (as nearly all do),
/// so that the cost per chunk (two system calls and two thread wake-ups,
/// about 35 µs) is paid per block instead; with 80 KiB chunks that was
/// 0.17 s of a 1 GiB file's copy.
const COPY_BLOCK_BYTES: u64 = 1 << 20;

/// Chunks of a run read into one buffer: `first` is the run index of the
/// first, `good` how many of them (from the first) can be written; fewer
/// than `lens.len()` when one could not be read or did not check out.
struct CopyBlock {
    first: usize,
    lens: Vec<u32>,
    good: usize,
    buf: Vec<u8>,
}

/// Copies `run` (chunks with their offsets in the local file, in order) from
/// `reader` into `file`, each checked against its content hash: one thread
/// reads and hashes while this one writes, in blocks of chunks that lie
/// back to back (up to [`COPY_BLOCK_BYTES`]). Stops before the first chunk
/// that cannot be read or does not match; returns how many were copied.
fn copy_local_run(
    key: &ChunkIdKey,
    reader: &mut LocalCursor,
    file: &mut dyn crate::fs::WriteFile,
    run: &[(ChunkRef, u64)],
) -> std::io::Result<usize> {
    let (tx, rx) = crossbeam_channel::bounded::<CopyBlock>(4);
    // Written buffers go back to the reader, which reads into them again:
    // no allocation, page faults or zeroing per block.
    let (give_back, returned) = crossbeam_channel::bounded::<Vec<u8>>(8);
    // The two threads share the hashing: the reader checks every other
    // chunk, the writer the rest (reading and hashing alone were the
    // slower half: about 30 ms for 64 MiB against the writer's 15).
    let checked = |i: usize, data: &[u8]| key.content_hash(data) == run[i].0.content;
    std::thread::scope(|s| {
        // Dropped when this closure returns, even on a write error or a bad
        // chunk, so the reading thread stops rather than waiting to send.
        let rx = rx;
        s.spawn(move || {
            let mut i = 0;
            while i < run.len() {
                // The chunks from `i` that follow each other in the file.
                let (start, mut end, mut bytes) = (run[i].1, i + 1, u64::from(run[i].0.len));
                while end < run.len()
                    && run[end].1 == start + bytes
                    && bytes + u64::from(run[end].0.len) <= COPY_BLOCK_BYTES
                {
                    bytes += u64::from(run[end].0.len);
                    end += 1;
                }
                let lens: Vec<u32> = run[i..end].iter().map(|(c, _)| c.len).collect();
                let mut buf = returned.try_recv().unwrap_or_default();
                let mut good = lens.len();
                if reader.read_into(&mut buf, start, bytes).is_err() {
                    // Read what can be, chunk by chunk: the copy stops
                    // before the first chunk that cannot be read.
                    buf.clear();
                    let mut one = Vec::new();
                    good = 0;
                    for (c, offset) in &run[i..end] {
                        if reader.read_into(&mut one, *offset, u64::from(c.len)).is_err() {
                            break;
                        }
                        buf.extend_from_slice(&one);
                        good += 1;
                    }
                }
                let mut at = 0;
                for (k, len) in lens[..good].iter().enumerate() {
                    let data = &buf[at..at + *len as usize];
                    if (i + k) % 2 == 0 && !checked(i + k, data) {
                        good = k;
                        break;
                    }
                    at += *len as usize;
                }
                let whole = good == lens.len();
                // Ends at the first bad chunk, or when the writer stopped.
                if tx.send(CopyBlock { first: i, lens, good, buf }).is_err() || !whole {
                    break;
                }
                i = end;
            }
        });
        let mut copied = 0;
        for block in rx.iter() {
            let mut good = block.good;
            let mut at = 0;
            for (k, len) in block.lens[..good].iter().enumerate() {
                let data = &block.buf[at..at + *len as usize];
                if (block.first + k) % 2 == 1 && !checked(block.first + k, data) {
                    good = k;
                    break;
                }
                fail::fail_point!("download-chunk-received");
                at += *len as usize;
            }
            file.write_all(&block.buf[..at])?;
            copied += good;
            if good < block.lens.len() {
                break;
            }
            // Full: the reader has enough; this one is freed.
            let _ = give_back.try_send(block.buf);
        }
        Ok(copied)
    })
}

struct LocalCursor {
    reader: Box<dyn crate::fs::ReadFile>,
    pos: u64,
}

impl LocalCursor {
    /// Reads `len` bytes at `offset` into `buf` (resized to `len`; only
    /// what it grows by is zeroed first).
    fn read_into(&mut self, buf: &mut Vec<u8>, offset: u64, len: u64) -> std::io::Result<()> {
        if offset != self.pos {
            self.pos = self.reader.seek(std::io::SeekFrom::Start(offset))?;
        }
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        buf.resize(len, 0);
        let read = std::io::Read::read_exact(&mut self.reader, buf);
        if read.is_err() {
            // Where the file stands after a short read is unknown.
            self.pos = u64::MAX;
        }
        read?;
        self.pos += len as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn a_batch_opens_each_ref_in_order_and_a_repeated_chunk_for_each() {
        let keys = coffer_crypto::MasterKey::from_bytes([5; 32]).derive();
        let sealed = |data: &[u8]| {
            let content = keys.chunk_id.content_hash(data);
            let s = keys.chunk.seal(&content, data);
            (ChunkRef { id: s.id(), content, len: data.len() as u32 }, s)
        };
        let (a, sa) = sealed(b"the same content twice");
        let (b, sb) = sealed(b"another");
        let (lacking, _) = sealed(b"not in the answer");
        let (wrong_len, sw) = sealed(b"its ref says a length it does not have");
        let wrong_len = ChunkRef { len: wrong_len.len + 1, ..wrong_len };
        let got: HashMap<ChunkId, SealedChunk> = [sa, sb, sw].into_iter().map(|s| (s.id(), s)).collect();
        let opened = open_batch(&keys, &[a, b, lacking, a, wrong_len], got);
        assert_eq!(
            opened,
            vec![
                Some(b"the same content twice".to_vec()),
                Some(b"another".to_vec()),
                None,
                Some(b"the same content twice".to_vec()),
                None,
            ]
        );
    }

    struct Sink(Vec<u8>, Option<usize>);
    impl io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            match self.1 {
                Some(0) => Err(io::Error::other("disk full")),
                _ => {
                    self.1 = self.1.map(|n| n - 1);
                    self.0.extend_from_slice(b);
                    Ok(b.len())
                }
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl crate::fs::WriteFile for Sink {
        fn sync_all(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// 20 chunks of 1,000 bytes; the old file's bytes and the run.
    fn old_file(key: &ChunkIdKey) -> (Vec<u8>, Vec<(ChunkRef, u64)>) {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let run = (0..20u64)
            .map(|i| {
                let bytes = &data[i as usize * 1000..(i as usize + 1) * 1000];
                let id = ChunkId::from_bytes(*blake3::hash(bytes).as_bytes());
                (ChunkRef { id, content: key.content_hash(bytes), len: 1000 }, i * 1000)
            })
            .collect();
        (data, run)
    }

    fn cursor(data: Vec<u8>) -> LocalCursor {
        LocalCursor { reader: Box::new(io::Cursor::new(data)), pos: 0 }
    }

    #[test]
    fn a_local_run_stops_before_a_chunk_that_does_not_check_out() {
        let key = ChunkIdKey::from_bytes([3; 32]);
        let (mut data, run) = old_file(&key);
        let mut out = Sink(Vec::new(), None);
        assert_eq!(copy_local_run(&key, &mut cursor(data.clone()), &mut out, &run).unwrap(), 20);
        assert_eq!(out.0, data);

        // Chunk 7 (checked by the writer) or 12 (by the reader) changed
        // since it was synced.
        for bad in [7, 12] {
            let mut data = data.clone();
            data[bad * 1000 + 500] ^= 1;
            let mut out = Sink(Vec::new(), None);
            let mut reader = cursor(data.clone());
            assert_eq!(copy_local_run(&key, &mut reader, &mut out, &run).unwrap(), bad);
            assert_eq!(out.0, data[..bad * 1000]);
            // The run goes on after the bad chunk (the reader may have read
            // ahead of it).
            let rest = copy_local_run(&key, &mut reader, &mut out, &run[bad + 1..]).unwrap();
            assert_eq!(rest, 19 - bad);
            assert_eq!(out.0[bad * 1000..], data[(bad + 1) * 1000..]);
        }
        data[19_999] ^= 1;
        let mut out = Sink(Vec::new(), None);
        assert_eq!(copy_local_run(&key, &mut cursor(data), &mut out, &run).unwrap(), 19, "the last chunk");
    }

    /// A write error ends the copy with that error; the reading thread
    /// does not wait forever with blocks to hand over.
    #[test]
    fn a_write_error_ends_a_local_run() {
        let key = ChunkIdKey::from_bytes([3; 32]);
        let (data, run) = old_file(&key);
        let mut out = Sink(Vec::new(), Some(0));
        let err = copy_local_run(&key, &mut cursor(data.clone()), &mut out, &run).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert!(out.0.is_empty());
        // Every other chunk: none lies right after the one before, so each
        // is a block of its own, and the reader has many to hand over.
        let sparse: Vec<_> = run.iter().step_by(2).copied().collect();
        let mut out = Sink(Vec::new(), Some(2));
        let err = copy_local_run(&key, &mut cursor(data), &mut out, &sparse).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(out.0.len(), 2_000);
    }

    /// Chunks are read in blocks of those that lie back to back, at most
    /// COPY_BLOCK_BYTES each; out of order or apart, they still come out in
    /// the run's order, and a file cut short stops the copy before the
    /// first chunk it no longer holds.
    #[test]
    fn local_runs_copy_in_blocks_and_stop_where_the_file_ends() {
        let key = ChunkIdKey::from_bytes([3; 32]);
        let (data, run) = old_file(&key);
        let mut shuffled = run.clone();
        shuffled.swap(3, 15);
        shuffled.swap(4, 5);
        let mut out = Sink(Vec::new(), None);
        assert_eq!(copy_local_run(&key, &mut cursor(data.clone()), &mut out, &shuffled).unwrap(), 20);
        let expect: Vec<u8> = shuffled
            .iter()
            .flat_map(|(c, o)| data[*o as usize..*o as usize + c.len as usize].to_vec())
            .collect();
        assert_eq!(out.0, expect);

        // Chunks larger than a block, back to back: one block each.
        let big: Vec<u8> = (0..3 * (COPY_BLOCK_BYTES as usize + 7)).map(|i| (i % 253) as u8).collect();
        let len = COPY_BLOCK_BYTES as usize + 7;
        let big_run: Vec<(ChunkRef, u64)> = (0..3)
            .map(|i| {
                let bytes = &big[i * len..(i + 1) * len];
                let id = ChunkId::from_bytes(*blake3::hash(bytes).as_bytes());
                (ChunkRef { id, content: key.content_hash(bytes), len: len as u32 }, (i * len) as u64)
            })
            .collect();
        let mut out = Sink(Vec::new(), None);
        assert_eq!(copy_local_run(&key, &mut cursor(big.clone()), &mut out, &big_run).unwrap(), 3);
        assert!(out.0 == big);

        // A read error inside a block (an unreadable sector in chunk 7):
        // the chunks before it are copied, the copy stops there although
        // the chunks after it could be read.
        struct BadSector(io::Cursor<Vec<u8>>, u64);
        impl io::Read for BadSector {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let at = self.0.position();
                if (at..at + out.len() as u64).contains(&self.1) {
                    return Err(io::Error::other("I/O error"));
                }
                self.0.read(out)
            }
        }
        impl io::Seek for BadSector {
            fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
                self.0.seek(to)
            }
        }
        let mut reader =
            LocalCursor { reader: Box::new(BadSector(io::Cursor::new(data.clone()), 7_500)), pos: 0 };
        let mut out = Sink(Vec::new(), None);
        assert_eq!(copy_local_run(&key, &mut reader, &mut out, &run).unwrap(), 7);
        assert_eq!(out.0, data[..7_000]);
        let rest = copy_local_run(&key, &mut reader, &mut out, &run[8..]).unwrap();
        assert_eq!(rest, 12, "the cursor seeks again after the failed read");
        assert_eq!(out.0[7_000..], data[8_000..]);

        // The file now ends inside chunk 15.
        let mut out = Sink(Vec::new(), None);
        assert_eq!(copy_local_run(&key, &mut cursor(data[..15_500].to_vec()), &mut out, &run).unwrap(), 15);
        assert_eq!(out.0, data[..15_000]);
    }

    /// A store whose uploads wait for a permit each (none at first unless
    /// given) and count how many run at once.
    struct GatedStore {
        gate: tokio::sync::Semaphore,
        running: std::sync::atomic::AtomicUsize,
        most_running: std::sync::atomic::AtomicUsize,
        started: std::sync::atomic::AtomicUsize,
        stored: std::sync::Mutex<Vec<ChunkId>>,
        refuse: bool,
        /// The first upload also waits for a permit of this.
        first: tokio::sync::Semaphore,
    }

    impl Default for GatedStore {
        fn default() -> Self {
            Self {
                first: tokio::sync::Semaphore::new(1000),
                gate: tokio::sync::Semaphore::new(0),
                running: Default::default(),
                most_running: Default::default(),
                started: Default::default(),
                stored: Default::default(),
                refuse: false,
            }
        }
    }

    fn unused<T>() -> Result<T, RemoteError> {
        Err(RemoteError::Protocol("unused".into()))
    }

    impl Remote for GatedStore {
        async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
            let stored = self.stored.lock().unwrap();
            Ok(ids.iter().filter(|id| !stored.contains(id)).copied().collect())
        }
        async fn upload_chunks(
            &self,
            chunks: &[SealedChunk],
        ) -> Result<coffer_proto::api::UploadChunksResponse, RemoteError> {
            use std::sync::atomic::Ordering::SeqCst;
            let call = self.started.fetch_add(1, SeqCst);
            let now = self.running.fetch_add(1, SeqCst) + 1;
            if call == 0 {
                self.first.acquire().await.expect("open").forget();
            }
            self.most_running.fetch_max(now, SeqCst);
            self.gate.acquire().await.expect("open").forget();
            tokio::task::yield_now().await;
            self.running.fetch_sub(1, SeqCst);
            if self.refuse {
                return Err(RemoteError::Transport("connection reset".into()));
            }
            self.stored.lock().unwrap().extend(chunks.iter().map(SealedChunk::id));
            Ok(coffer_proto::api::UploadChunksResponse { stored: chunks.len() as u32, already_present: 0 })
        }
        async fn download_chunk(&self, _: ChunkId) -> Result<SealedChunk, RemoteError> {
            unused()
        }
        async fn commit(
            &self,
            _: &[coffer_proto::api::Change],
        ) -> Result<coffer_proto::api::CommitResponse, RemoteError> {
            unused()
        }
        async fn journal(
            &self,
            _: coffer_proto::Cursor,
            _: Option<u32>,
        ) -> Result<coffer_proto::api::JournalPage, RemoteError> {
            unused()
        }
        async fn wait_journal(
            &self,
            _: coffer_proto::Cursor,
            _: std::time::Duration,
        ) -> Result<coffer_proto::api::JournalPage, RemoteError> {
            unused()
        }
        async fn snapshot(
            &self,
            _: Option<coffer_proto::EntryId>,
            _: Option<u32>,
        ) -> Result<coffer_proto::api::SnapshotPage, RemoteError> {
            unused()
        }
        async fn versions(
            &self,
            _: coffer_proto::EntryId,
        ) -> Result<Vec<coffer_proto::api::EntryVersion>, RemoteError> {
            unused()
        }
        async fn version(
            &self,
            _: coffer_proto::EntryId,
            _: coffer_proto::Revision,
        ) -> Result<coffer_proto::api::EntryVersion, RemoteError> {
            unused()
        }
        async fn usage(&self) -> Result<coffer_proto::api::Usage, RemoteError> {
            unused()
        }
        async fn sessions(&self) -> Result<Vec<coffer_proto::api::SessionInfo>, RemoteError> {
            unused()
        }
        async fn revoke_session(&self, _: coffer_proto::api::SessionId) -> Result<(), RemoteError> {
            unused()
        }
    }

    /// Chunks just over half a batch: each fills a batch of its own.
    fn big_chunks(n: u8) -> Vec<SealedChunk> {
        (0..n)
            .map(|i| {
                let bytes = vec![i; BATCH_BYTES / 2 + 1];
                SealedChunk::from_parts(ChunkId::from_bytes(*blake3::hash(&bytes).as_bytes()), bytes)
            })
            .collect()
    }

    /// A [`Sink`] the test can read while a [`ChunkWriter`] owns it.
    struct Shared(std::sync::Arc<std::sync::Mutex<Sink>>);
    impl io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl crate::fs::WriteFile for Shared {
        fn sync_all(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A [`Shared`] sink that fails every write after the first `fail_after`, if set.
    fn shared(fail_after: Option<usize>) -> (std::sync::Arc<std::sync::Mutex<Sink>>, Box<Shared>) {
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Sink(Vec::new(), fail_after)));
        (sink.clone(), Box::new(Shared(sink)))
    }

    #[tokio::test]
    async fn a_writer_thread_writes_every_chunk_in_order() {
        let (bytes, file) = shared(None);
        let writer = ChunkWriter::start(file);
        // More chunks than the queue holds, so the sender waits on the writer.
        let chunks: Vec<Vec<u8>> =
            (0..WRITER_QUEUE as u32 * 4).map(|i| vec![(i % 251) as u8; 1000 + i as usize]).collect();
        for c in &chunks {
            assert!(writer.write(c.clone()).await);
        }
        writer.finish().await.unwrap();
        assert!(bytes.lock().unwrap().0 == chunks.concat(), "the bytes differ from the chunks in order");
    }

    #[tokio::test]
    async fn a_writer_thread_stops_at_a_write_error_and_returns_it() {
        let (bytes, file) = shared(Some(3));
        let writer = ChunkWriter::start(file);
        // The writer stops at the fourth chunk; the sends after it fail
        // once the queue is gone (a few may still have been queued).
        let mut refused = 0;
        for i in 0..WRITER_QUEUE * 4 {
            if !writer.write(vec![i as u8; 100]).await {
                refused += 1;
            }
        }
        assert!(refused > 0, "every chunk was taken after the writer failed");
        let Err(e) = writer.finish().await else { panic!("the write error was lost") };
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(bytes.lock().unwrap().0.len(), 300, "only the chunks before the error were written");
    }

    #[tokio::test]
    async fn batches_sent_ahead_are_bounded_and_go_with_the_commit() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = GatedStore::default();
        let chunks = big_chunks(3);
        let mut batcher = ChunkBatcher::new(&store);
        for c in &chunks {
            batcher.add_ahead(c.clone()).await.unwrap();
        }
        // The first two batches are in flight (and held by the store), the
        // third is queued.
        assert!(batcher.is_sending());
        let driven = tokio::time::timeout(std::time::Duration::from_millis(50), batcher.drive()).await;
        assert!(driven.is_err(), "a held upload cannot finish");
        assert_eq!(store.started.load(SeqCst), 2);
        // A commit's batcher takes them along: its flush returns only once
        // every chunk is stored, so the commit cannot overtake them.
        let mut commit = batcher.split_off();
        assert!(!batcher.is_sending());
        {
            let flushing = commit.flush();
            tokio::pin!(flushing);
            assert!(tokio::time::timeout(std::time::Duration::from_millis(50), &mut flushing).await.is_err());
            store.gate.add_permits(3);
            flushing.await.unwrap();
        }
        let mut stored = store.stored.lock().unwrap().clone();
        stored.sort();
        let mut want: Vec<ChunkId> = chunks.iter().map(SealedChunk::id).collect();
        want.sort();
        assert_eq!(stored, want);
        assert_eq!(commit.sent_bytes, chunks.iter().map(|c| c.len() as u64).sum::<u64>());
    }

    #[tokio::test]
    async fn at_most_upload_ahead_batches_are_in_flight() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = GatedStore::default();
        store.gate.add_permits(1000);
        let mut batcher = ChunkBatcher::new(&store);
        for c in big_chunks(8) {
            batcher.add_ahead(c).await.unwrap();
        }
        batcher.flush().await.unwrap();
        assert_eq!(store.started.load(SeqCst), 8);
        assert_eq!(store.most_running.load(SeqCst), UPLOAD_AHEAD, "batches overlap, up to the bound");
        assert_eq!(store.stored.lock().unwrap().len(), 8);
    }

    #[tokio::test]
    async fn a_failed_batch_sent_ahead_fails_the_flush() {
        let store = GatedStore { refuse: true, ..GatedStore::default() };
        store.gate.add_permits(1000);
        let mut batcher = ChunkBatcher::new(&store);
        let mut failed = false;
        for c in big_chunks(2) {
            failed |= batcher.add_ahead(c).await.is_err();
        }
        failed |= batcher.flush().await.is_err();
        assert!(failed, "the store's refusal surfaces");
        assert!(store.stored.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn stored_counts_only_chunks_every_earlier_one_of_which_is_stored() {
        let store = GatedStore { first: tokio::sync::Semaphore::new(0), ..GatedStore::default() };
        let chunks = big_chunks(3);
        let mut batcher = ChunkBatcher::new(&store);
        for c in &chunks {
            batcher.add_ahead(c.clone()).await.unwrap();
        }
        assert_eq!((batcher.offered(), batcher.stored()), (3, 0));
        // The second batch is stored before the first: nothing counts yet.
        store.gate.add_permits(2);
        batcher.drive().await.unwrap();
        assert_eq!(batcher.stored(), 0, "the first chunk is not stored yet");
        assert_eq!(store.stored.lock().unwrap().as_slice(), &[chunks[1].id()]);
        store.first.add_permits(1);
        batcher.drive().await.unwrap();
        assert_eq!(batcher.stored(), 2, "both sent chunks");
        // The queued one counts once flushed; so does a duplicate of a
        // chunk in a batch, when that batch is stored.
        batcher.add_ahead(chunks[2].clone()).await.unwrap();
        assert_eq!((batcher.offered(), batcher.stored()), (4, 2));
        store.gate.add_permits(1);
        batcher.flush().await.unwrap();
        assert_eq!((batcher.offered(), batcher.stored()), (4, 4));
    }
}
