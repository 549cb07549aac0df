//! [`BlobStore`] in a folder: `ROOT/<account>/<first 2 hex>/<chunk id hex>`.
//!
//! A put writes a uniquely named temp file in the same folder, fsyncs it and
//! renames it over the final name, so a reader sees a whole blob or none and
//! two concurrent puts of one id both succeed (the bytes are identical: the
//! id is their hash). A batch ([`BlobStore::put_many`]) runs such puts on
//! several threads, so their fsyncs overlap.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use coffer_proto::ChunkId;

use super::{AccountId, BlobStore, StoreError, StoreResult};

/// Blobs written at once by [`BlobStore::put_many`].
const PUT_THREADS: usize = 16;

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
        let dest = self.path(account, id);
        let dir = dest.parent().expect("blob paths have a parent");
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = write_atomically(dir, &tmp, &dest, bytes);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Each blob as [`BlobStore::put`] writes it (temp file, fsync,
    /// rename), on up to [`PUT_THREADS`] threads at once: one fsync after
    /// another costs a journal commit each, while concurrent ones share
    /// commits. An upload request of many small chunks was bound by that.
    fn put_many(&self, account: AccountId, blobs: &[(ChunkId, &[u8])]) -> StoreResult<()> {
        let threads = PUT_THREADS.min(blobs.len());
        if threads <= 1 {
            return blobs.iter().try_for_each(|(id, bytes)| self.put(account, *id, bytes));
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> StoreResult<()> {
                        while !failed.load(Ordering::Relaxed) {
                            let Some((id, bytes)) = blobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                                break;
                            };
                            if let Err(e) = self.put(account, *id, bytes) {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join().map_err(|_| StoreError::Backend("a blob writer thread panicked".into()))?
            })
        })
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
