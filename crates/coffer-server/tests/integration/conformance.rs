//! Every store implementation passes the shared suites.

use std::sync::Arc;

use coffer_server::conformance;
use coffer_server::store::disk::DiskBlobStore;
use coffer_server::store::memory::{MemoryBlobStore, MemoryMetaStore};
use coffer_server::store::sqlite::SqliteMetaStore;
use coffer_server::{BlobStore, MetaStore};

#[test]
fn memory_meta_store() {
    conformance::meta_store(&|| Arc::new(MemoryMetaStore::new()) as Arc<dyn MetaStore>);
}

#[test]
fn sqlite_meta_store() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::meta_store(&|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(SqliteMetaStore::open(dir.path().join(format!("m{i}.db"))).unwrap()) as Arc<dyn MetaStore>
    });
}

#[test]
fn sqlite_reopens_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let s = SqliteMetaStore::open(&path).unwrap();
    assert_eq!(s.server_secret("k", b"v1").unwrap(), b"v1");
    drop(s);
    let s = SqliteMetaStore::open(&path).unwrap();
    assert_eq!(s.server_secret("k", b"v2").unwrap(), b"v1", "migrations are not re-run, data survives");
}

#[test]
fn memory_blob_store() {
    conformance::blob_store(&|| Arc::new(MemoryBlobStore::new()) as Arc<dyn BlobStore>);
}

#[test]
fn disk_blob_store() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::blob_store(&|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(DiskBlobStore::open(dir.path().join(format!("b{i}"))).unwrap()) as Arc<dyn BlobStore>
    });
}
