//! Previews: a large new file's download overlaps its upload.
//!
//! Without them, another device starts fetching a file only once its
//! upload is committed, so the two halves add up (for a 1 GiB file, about
//! 3 s of upload and 3 s of download here). With them, the uploading
//! device posts, as its batches reach the store, a sealed *preview*: this
//! upload of this path holds, from offset `start`, these chunks. The
//! account's other devices long-poll previews ([`preview_loop`]) and fetch
//! those chunks at once, in order, into a staging file in the state
//! folder. When the commit arrives, the download of that path
//! ([`Engine::take_staged`]) continues the staging file where it stopped,
//! after checking that what it holds is exactly the start of the committed
//! chunk list; whatever does not match is dropped and fetched as usual.
//!
//! Nothing depends on previews but speed:
//! - A preview is sealed with the metadata key (the store can drop or
//!   replay one, not forge or alter one), and every staged chunk is
//!   verified like any download (store id, AEAD tag, content hash).
//! - The user's tree is never touched: a staging file becomes the file only
//!   through the ordinary download of a committed entry, which checks it
//!   against the commit's chunk list and makes it durable like any other.
//! - A file is staged only where this device would download it as new: no
//!   local node at its path (an edit is served from the local copy), not
//!   excluded, not ignored; at most [`MAX_STAGED`] at once; each from its
//!   start, contiguously (after a preview missing in between, it grows no
//!   more, and the download after the commit goes on from what it holds).
//! - A staging file that no preview moved on for [`STAGED_IDLE`] (the
//!   upload was abandoned, or committed while this device looked away) is
//!   removed; any left by a process that died are removed when the next
//!   one starts previewing.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coffer_proto::api::ErrorCode;
use coffer_proto::{DeviceId, SealedPreview};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Engine;
use crate::fs::WriteFile;
use crate::ignore::IgnoreRules;
use crate::model::{ChunkRef, RelPath};
use crate::remote::Remote;

/// Files at least this large post previews of their upload.
pub(crate) const PREVIEW_MIN_BYTES: u64 = 32 << 20;
/// Stored bytes of a file gathered before a preview is posted.
pub(crate) const PREVIEW_STEP_BYTES: u64 = 4 << 20;
/// Most chunks named by one preview (about 40 KiB sealed).
const PREVIEW_MAX_CHUNKS: usize = 256;
/// Files staged at once.
const MAX_STAGED: usize = 4;
/// A staging file no preview moved on for this long is removed.
const STAGED_IDLE: Duration = Duration::from_secs(600);
/// How long one long-poll for previews is held.
const WAIT: Duration = Duration::from_secs(30);
/// Sealed bytes of previews waiting to be staged (about 100,000 chunks).
const QUEUED_BYTES: usize = 16 << 20;
/// Longest wait for the store to take a preview.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait of a download for the preview being staged into its file.
const TAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefix of staging files in the state folder's `tmp`.
const STAGED_PREFIX: &str = "pv-";

/// What one preview says, sealed: the chunks of an upload of `path` that
/// the store holds, from byte `start` of the file, in file order.
#[derive(Serialize, Deserialize)]
struct Preview {
    device: DeviceId,
    upload: u64,
    path: RelPath,
    start: u64,
    chunks: Vec<ChunkRef>,
}

/// A file being staged from previews.
pub(crate) struct Staged {
    upload: u64,
    pub(crate) tmp: PathBuf,
    pub(crate) file: Box<dyn WriteFile>,
    /// The chunks written, from the file's start.
    pub(crate) list: Vec<ChunkRef>,
    bytes: u64,
    touched: Instant,
}

/// One path's staging, locked while a preview writes to it or a download
/// takes it.
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<Staged>>>;

/// The previews one upload posts, as its chunks reach the store.
pub(crate) struct PreviewFeed {
    upload: u64,
    path: RelPath,
    /// For each chunk of the file so far, the batcher's count of chunks
    /// offered once it was (see [`super::transfer::ChunkBatcher::stored`]).
    marks: Vec<u64>,
    /// Chunks already named by a preview, and their bytes.
    posted: usize,
    posted_bytes: u64,
    /// No more previews for this upload (the store was too slow).
    stopped: bool,
}

impl PreviewFeed {
    /// Notes that the file's next chunk was offered to the batcher when it
    /// had been offered `mark` chunks.
    pub(crate) fn offered(&mut self, mark: u64) {
        self.marks.push(mark);
    }
}

impl<R: Remote> Engine<R> {
    /// A feed for the upload of `path`, if it is large enough to preview
    /// and the store takes previews.
    pub(crate) fn preview_feed(&self, path: &RelPath, size: u64) -> Option<PreviewFeed> {
        if size < PREVIEW_MIN_BYTES || self.previews_off.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut b = [0u8; 8];
        if let Ok(mut rng) = self.rng.lock() {
            rand_core::RngCore::fill_bytes(&mut *rng, &mut b);
        }
        Some(PreviewFeed {
            upload: u64::from_le_bytes(b),
            path: path.clone(),
            marks: Vec::new(),
            posted: 0,
            posted_bytes: 0,
            stopped: false,
        })
    }

    /// Posts previews of the chunks of `chunks` (the file so far) that the
    /// store now holds: every chunk offered up to `stored` (the batcher's
    /// mark), once at least [`PREVIEW_STEP_BYTES`] are new, or all of them
    /// with `all`. A failed post is tried again with the next; a store
    /// without previews turns them off.
    pub(crate) async fn post_previews(
        &self,
        feed: &mut PreviewFeed,
        chunks: &[ChunkRef],
        stored: u64,
        all: bool,
    ) {
        if feed.stopped {
            return;
        }
        let mut end = feed.posted;
        let mut bytes = 0u64;
        while end < chunks.len() && feed.marks.get(end).is_some_and(|m| *m <= stored) {
            bytes += u64::from(chunks[end].len);
            end += 1;
        }
        if end == feed.posted || (bytes < PREVIEW_STEP_BYTES && !all) {
            return;
        }
        while feed.posted < end {
            let to = end.min(feed.posted + PREVIEW_MAX_CHUNKS);
            let preview = Preview {
                device: self.config.device_id,
                upload: feed.upload,
                path: feed.path.clone(),
                start: feed.posted_bytes,
                chunks: chunks[feed.posted..to].to_vec(),
            };
            let Ok(plain) = serde_json::to_vec(&preview) else { return };
            let sealed = match self.rng.lock() {
                Ok(mut rng) => self.keys.meta.seal_preview(&mut *rng, &plain),
                Err(_) => return,
            };
            // A store slow to take a hint must not hold the upload up.
            match tokio::time::timeout(POST_TIMEOUT, self.remote.post_preview(&sealed)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.code() == Some(ErrorCode::NotFound) => {
                    tracing::debug!("the store takes no previews");
                    self.previews_off.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "a preview was not posted");
                    return;
                }
                Err(_) => {
                    tracing::debug!("the store is slow to take previews; none more for this file");
                    feed.stopped = true;
                    return;
                }
            }
            feed.posted_bytes += chunks[feed.posted..to].iter().map(|c| u64::from(c.len)).sum::<u64>();
            feed.posted = to;
        }
    }

    /// Takes the staging of `path`, if there is one: the caller continues
    /// it (after checking it against the committed list) or removes it.
    /// Waits for a preview being written to it.
    pub(crate) async fn take_staged(&self, path: &RelPath) -> Option<Staged> {
        let slot = self.staged.lock().ok()?.get(path).cloned()?;
        let Ok(mut held) = tokio::time::timeout(TAKE_TIMEOUT, slot.lock()).await else {
            // The store is slow with a preview's chunks: download as if
            // there were none; the preview task drops what it staged.
            tracing::debug!(%path, "a preview is slow to stage; downloading without it");
            self.forget_slot(path, &slot);
            return None;
        };
        // Removed under the slot's lock: a preview that waited on it finds
        // its slot gone, and stages nothing more into it.
        self.forget_slot(path, &slot);
        held.take()
    }

    /// Removes a staging file that is of no use.
    pub(crate) fn drop_staged(&self, staged: Staged) {
        let Staged { tmp, file, .. } = staged;
        drop(file);
        self.remove_staging_file(&tmp);
    }

    fn remove_staging_file(&self, tmp: &std::path::Path) {
        if let Err(e) = self.fs.remove_file(tmp) {
            tracing::debug!(error = %e, "cannot remove a staging file");
        }
    }

    /// Whether this device would download `path` as a new file.
    fn wants_staged(&self, path: &RelPath) -> bool {
        if self.fs.symlink_metadata(&self.abs(path)).is_ok() {
            return false;
        }
        if self.index.excluded().is_ok_and(|ex| ex.iter().any(|e| path.starts_with(e))) {
            return false;
        }
        let rules =
            IgnoreRules::load(self.fs.as_ref(), &self.config.root).unwrap_or_else(|_| IgnoreRules::builtin());
        !rules.filter().is_ignored(path, false)
    }

    /// Takes in one preview: stages its chunks if it continues a staging
    /// (or starts one), else ends that staging or leaves it.
    async fn take_preview(&self, sealed: &SealedPreview) {
        let preview = match self
            .keys
            .meta
            .open_preview(sealed)
            .map_err(|e| e.to_string())
            .and_then(|plain| serde_json::from_slice::<Preview>(&plain).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "a preview from the store does not open; ignored");
                return;
            }
        };
        if preview.device == self.config.device_id || preview.chunks.is_empty() {
            return;
        }
        let slot = {
            let Ok(mut map) = self.staged.lock() else { return };
            match map.get(&preview.path) {
                Some(s) => s.clone(),
                None if preview.start == 0 && map.len() < MAX_STAGED => {
                    let s = Slot::default();
                    map.insert(preview.path.clone(), s.clone());
                    s
                }
                None => return,
            }
        };
        let mut held = slot.lock().await;
        if !self.holds_slot(&preview.path, &slot) {
            return; // taken by a download meanwhile
        }
        let continues = held.as_ref().is_some_and(|s| s.upload == preview.upload && s.bytes == preview.start);
        if !continues {
            if preview.start != 0 {
                // After a gap (a preview the store dropped), or another
                // upload's: what is staged stays, and may still be the
                // start of what is committed.
                if held.is_none() {
                    self.forget_slot(&preview.path, &slot);
                }
                return;
            }
            // A new upload of the path starts over.
            if let Some(old) = held.take() {
                self.drop_staged(old);
            }
            if !self.wants_staged(&preview.path) {
                self.forget_slot(&preview.path, &slot);
                return;
            }
            let tmp = self.temp_path_named(STAGED_PREFIX);
            let file = match self.fs.create_new(&tmp) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot create a staging file");
                    self.forget_slot(&preview.path, &slot);
                    return;
                }
            };
            *held = Some(Staged {
                upload: preview.upload,
                tmp,
                file,
                list: Vec::new(),
                bytes: 0,
                touched: Instant::now(),
            });
        }
        let staged = held.take().expect("staged above");
        match self.stage(staged, &preview.chunks).await {
            // A download that gave up waiting has forgotten the slot.
            Ok(staged) if !self.holds_slot(&preview.path, &slot) => self.drop_staged(staged),
            Ok(staged) => *held = Some(staged),
            Err(why) => {
                tracing::debug!(path = %preview.path, why, "staging stopped");
                self.forget_slot(&preview.path, &slot);
            }
        }
    }

    /// Whether `slot` is still the one for `path`.
    fn holds_slot(&self, path: &RelPath, slot: &Slot) -> bool {
        self.staged.lock().is_ok_and(|m| m.get(path).is_some_and(|s| Arc::ptr_eq(s, slot)))
    }

    /// Removes `slot` from the map if it is still the one for `path`.
    fn forget_slot(&self, path: &RelPath, slot: &Slot) {
        if let Ok(mut map) = self.staged.lock() {
            if map.get(path).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                map.remove(path);
            }
        }
    }

    /// Fetches `chunks` (one request, as a download's batch), verified,
    /// and appends them to the staging file; on failure, removes the
    /// staging file and says why.
    async fn stage(&self, staged: Staged, chunks: &[ChunkRef]) -> Result<Staged, String> {
        let Staged { upload, tmp, file, mut list, bytes, .. } = staged;
        let fail = |file: Option<Box<dyn WriteFile>>, why: String| {
            drop(file);
            self.remove_staging_file(&tmp);
            why
        };
        let plain = match self.fetch_batch(chunks).await {
            Ok(plain) => plain,
            Err(e) => return Err(fail(Some(file), format!("fetching: {e}"))),
        };
        let more: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        self.limits.down.take(more).await;
        let done = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let written = plain.iter().try_for_each(|p| file.write_all(p));
            (file, written)
        })
        .await;
        let file = match done {
            Ok((file, Ok(()))) => file,
            Ok((file, Err(e))) => return Err(fail(Some(file), format!("writing: {e}"))),
            Err(e) => return Err(fail(None, format!("the writer stopped: {e}"))),
        };
        list.extend_from_slice(chunks);
        Ok(Staged { upload, tmp, file, list, bytes: bytes + more, touched: Instant::now() })
    }

    /// Removes staging files no preview moved on for [`STAGED_IDLE`].
    async fn expire_staged(&self) {
        let slots: Vec<(RelPath, Slot)> = self
            .staged
            .lock()
            .map(|m| m.iter().map(|(p, s)| (p.clone(), s.clone())).collect())
            .unwrap_or_default();
        for (path, slot) in slots {
            let Ok(mut held) = slot.try_lock() else { continue };
            if held.as_ref().is_some_and(|s| s.touched.elapsed() > STAGED_IDLE) {
                if let Some(old) = held.take() {
                    tracing::debug!(%path, "a staged upload went quiet; removed");
                    self.drop_staged(old);
                }
                self.forget_slot(&path, &slot);
            }
        }
    }

    /// Removes staging files a process that died left behind.
    fn sweep_staged_files(&self) {
        let tmp = self.state_dir().join("tmp");
        let Ok(names) = self.fs.read_dir(&tmp) else { return };
        for name in names.into_iter().flatten() {
            if name.starts_with(STAGED_PREFIX) && name.ends_with(".part") {
                let _ = self.fs.remove_file(&tmp.join(&name));
            }
        }
    }
}

/// The daemon's preview task: long-polls the previews of the account's
/// other devices and stages what they upload (see the module doc). Ends
/// at once with a store that has no previews.
///
/// The long-poll goes on while previews are staged, and what it brings
/// waits in a queue here (up to [`QUEUED_BYTES`]): the store keeps only a
/// few previews, and a device staging more slowly than the upload goes
/// would otherwise find the ones it had not asked for yet gone, and lose
/// its staging at the gap.
pub(crate) async fn preview_loop<R: Remote + 'static>(engine: Arc<Engine<R>>) {
    engine.sweep_staged_files();
    let mut queue: VecDeque<SealedPreview> = VecDeque::new();
    let mut queued = 0usize;
    let mut after = None;
    let mut backoff = Duration::from_millis(500);
    let mut poll: BoxFuture<'_, _> = Box::pin(engine.remote.wait_previews(after, WAIT));
    let mut work: Option<BoxFuture<'_, ()>> = None;
    loop {
        if work.is_none() {
            if let Some(sealed) = queue.pop_front() {
                queued -= sealed.len();
                let engine = &engine;
                work = Some(Box::pin(async move { engine.take_preview(&sealed).await }));
            }
        }
        tokio::select! {
            page = &mut poll => {
                let wait = match page {
                    Ok(page) => {
                        backoff = Duration::from_millis(500);
                        after = Some(page.cursor);
                        for sealed in page.previews {
                            if queued + sealed.len() > QUEUED_BYTES {
                                tracing::debug!("too many previews waiting; one dropped");
                                continue;
                            }
                            queued += sealed.len();
                            queue.push_back(sealed);
                        }
                        Duration::ZERO
                    }
                    Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                        tracing::debug!("the store has no previews; not waiting for any");
                        return;
                    }
                    Err(_) => {
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        backoff
                    }
                };
                engine.expire_staged().await;
                let remote = &engine.remote;
                poll = Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    remote.wait_previews(after, WAIT).await
                });
            }
            () = async { work.as_mut().expect("checked").await }, if work.is_some() => work = None,
        }
    }
}
