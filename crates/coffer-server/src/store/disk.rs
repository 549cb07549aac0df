//! [`BlobStore`] in a folder: `ROOT/<account>/<first 2 hex>/<chunk id hex>`.
//!
//! A put writes a uniquely named temp file in the same folder, fsyncs it and
//! renames it over the final name, so a reader sees a whole blob or none and
//! two concurrent puts of one id both succeed (the bytes are identical: the
//! id is their hash). A batch ([`BlobStore::put_many`]) runs such puts on
//! several threads, so their fsyncs overlap. Before a put returns, the
//! folders it wrote in are fsynced too (the blob's, the account's and the
//! root, which a new folder's entry lives in): a stored blob survives a
//! power cut, not only its bytes. A batch fsyncs its folders on several
//! threads too. (Not one `syncfs`: it also waits for whatever else is
//! dirty on that disk, which on a desktop running the embedded store can
//! be a lot.)

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use coffer_proto::ChunkId;

use super::{AccountId, BlobStore, StoreError, StoreResult};

/// Blobs written at once by [`BlobStore::put_many`].
const PUT_THREADS: usize = 16;
/// A batch that wrote in fewer folders fsyncs them one by one; more, on
/// [`PUT_THREADS`] threads at once.
const SYNC_THREADS_MIN_DIRS: usize = 8;

/// Chunks as files under one root folder.
#[derive(Debug)]
pub struct DiskBlobStore {
    root: PathBuf,
    tmp_counter: AtomicU64,
}

impl DiskBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io)?;
        Ok(Self { root, tmp_counter: AtomicU64::new(0) })
    }

    fn path(&self, account: AccountId, id: ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(account.0.to_string()).join(&hex[..2]).join(hex)
    }

    /// Makes the entries written in `dirs` (blob folders) durable, with
    /// their account folders and the root.
    fn sync_dirs<'a>(&self, dirs: impl IntoIterator<Item = &'a Path>) -> StoreResult<()> {
        let mut all = BTreeSet::new();
        for d in dirs {
            all.insert(d.to_path_buf());
            if let Some(account) = d.parent() {
                all.insert(account.to_path_buf());
            }
        }
        all.insert(self.root.clone());
        let all: Vec<PathBuf> = all.into_iter().collect();
        // Concurrent fsyncs share the disk's cache flushes.
        let threads = if all.len() < SYNC_THREADS_MIN_DIRS { 1 } else { PUT_THREADS };
        on_threads(&all, threads, |d| fs::File::open(d).and_then(|f| f.sync_all()).map_err(io))
    }

    /// Writes one blob (temp file, fsync, rename), without the folders'
    /// fsyncs; returns its folder.
    fn write_one(&self, account: AccountId, id: ChunkId, bytes: &[u8]) -> StoreResult<PathBuf> {
        let dest = self.path(account, id);
        let dir = dest.parent().expect("blob paths have a parent");
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = write_atomically(dir, &tmp, &dest, bytes);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)?;
        Ok(dir.to_path_buf())
    }
}

/// Runs `f` on each item, on up to `threads` threads; stops at the first
/// error (items not started by then are skipped) and returns it.
fn on_threads<T: Sync>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> StoreResult<()> + Sync,
) -> StoreResult<()> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().try_for_each(f);
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> StoreResult<()> {
                    while !failed.load(Ordering::Relaxed) {
                        let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                        if let Err(e) = f(item) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().map_err(|_| StoreError::Backend("a blob store thread panicked".into()))?
        })
    })
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("blob store I/O: {e}"))
}

fn write_atomically(dir: &Path, tmp: &Path, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut f = fs::File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, dest)
}

impl BlobStore for DiskBlobStore {
    fn put(&self, account: AccountId, id: ChunkId, bytes: &[u8]) -> StoreResult<()> {
        let dir = self.write_one(account, id, bytes)?;
        self.sync_dirs([dir.as_path()])
    }

    /// Each blob as [`BlobStore::put`] writes it (temp file, fsync,
    /// rename), on up to [`PUT_THREADS`] threads at once: one fsync after
    /// another costs a journal commit each, while concurrent ones share
    /// commits. An upload request of many small chunks was bound by that.
    /// Then the folders written in, once each.
    fn put_many(&self, account: AccountId, blobs: &[(ChunkId, &[u8])]) -> StoreResult<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        on_threads(blobs, PUT_THREADS, |(id, bytes)| self.write_one(account, *id, bytes).map(drop))?;
        let dirs: BTreeSet<PathBuf> = blobs
            .iter()
            .filter_map(|(id, _)| self.path(account, *id).parent().map(Path::to_path_buf))
            .collect();
        self.sync_dirs(dirs.iter().map(PathBuf::as_path))
    }

    fn get(&self, account: AccountId, id: ChunkId) -> StoreResult<Option<Vec<u8>>> {
        match fs::read(self.path(account, id)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn delete(&self, account: AccountId, id: ChunkId) -> StoreResult<()> {
        match fs::remove_file(self.path(account, id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}
