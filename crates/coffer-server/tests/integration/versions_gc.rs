//! Versions, restore (client-side reseal + commit), retention and GC.

use std::time::Duration;

use coffer_engine::remote::Remote;
use coffer_proto::api::{Change, ChangeResult, ErrorCode};
use coffer_proto::Revision;
use coffer_server::http::HttpConfig;
use coffer_server::ServiceConfig;

use super::support::{chunk, del, put, TestServer};

#[tokio::test]
async fn versions_and_restore() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let keys = d.master.derive();
    let id = keys.path.entry_id("docs/report.txt");
    let seal = |rng: &mut rand_chacha::ChaCha20Rng, rev: u64, text: &str| {
        keys.meta.seal(rng, &id, Revision(rev), text.as_bytes())
    };
    for (base, text) in [(0, "first"), (1, "second"), (2, "third")] {
        let meta = seal(&mut t.rng, base + 1, text);
        let change = Change {
            entry_id: id,
            base_revision: Revision(base),
            meta: Some(meta),
            chunks: vec![],
            delta: None,
        };
        let r = d.remote.commit(&[change]).await.unwrap();
        assert!(matches!(r.results[0], ChangeResult::Applied { .. }));
    }
    let versions = d.remote.versions(id).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.revision.0).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert!(versions.iter().all(|v| v.device_id == d.session.device_id));

    // Restore revision 1: fetch it, open it, reseal it for revision 4, commit.
    let old = d.remote.version(id, Revision(1)).await.unwrap();
    let plain = keys.meta.open(&id, Revision(1), old.meta.as_ref().unwrap()).unwrap();
    assert_eq!(plain, b"first");
    // The store cannot replay old metadata as new: it does not open at another revision.
    assert!(keys.meta.open(&id, Revision(4), old.meta.as_ref().unwrap()).is_err());
    let resealed = keys.meta.seal(&mut t.rng, &id, Revision(4), &plain);
    let change = Change {
        entry_id: id,
        base_revision: Revision(3),
        meta: Some(resealed),
        chunks: vec![],
        delta: None,
    };
    let r = d.remote.commit(&[change]).await.unwrap();
    assert!(matches!(r.results[0], ChangeResult::Applied { revision: Revision(4), .. }));

    // Deleted files are kept too, and restore the same way.
    d.remote.commit(&[del(id, 4)]).await.unwrap();
    let versions = d.remote.versions(id).await.unwrap();
    assert!(versions[0].is_deleted());
    let keep = versions.iter().find(|v| v.revision == Revision(4)).unwrap();
    let plain = keys.meta.open(&id, Revision(4), keep.meta.as_ref().unwrap()).unwrap();
    let resealed = keys.meta.seal(&mut t.rng, &id, Revision(6), &plain);
    let change = Change {
        entry_id: id,
        base_revision: Revision(5),
        meta: Some(resealed),
        chunks: vec![],
        delta: None,
    };
    let r = d.remote.commit(&[change]).await.unwrap();
    assert!(matches!(r.results[0], ChangeResult::Applied { revision: Revision(6), .. }));

    assert_eq!(d.remote.version(id, Revision(99)).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    let unknown = keys.path.entry_id("nope");
    assert_eq!(d.remote.versions(unknown).await.unwrap_err().code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn retention_and_garbage_collection() {
    let config = ServiceConfig {
        version_retention: Duration::from_secs(30 * 86_400),
        gc_grace: Duration::from_secs(3600),
        session_ttl: Duration::from_secs(365 * 86_400),
        ..ServiceConfig::default()
    };
    let mut t = TestServer::start_with(config, HttpConfig::default()).await;
    let d = t.user("alice").await;
    let (old, new, orphan, gone) =
        (chunk(b"old content"), chunk(b"new content"), chunk(b"never committed"), chunk(b"deleted file"));
    d.remote.upload_chunks(&[old.clone(), new.clone(), orphan.clone(), gone.clone()]).await.unwrap();
    let e1 = coffer_proto::EntryId::from_bytes([1; 32]);
    let e2 = coffer_proto::EntryId::from_bytes([2; 32]);
    d.remote.commit(&[put(e1, 0, b"v1", &[&old]), put(e2, 0, b"x", &[&gone])]).await.unwrap();
    d.remote.commit(&[put(e1, 1, b"v2", &[&new]), del(e2, 1)]).await.unwrap();

    // Within the grace period and retention, nothing goes.
    let report = t.service().maintain().await.unwrap();
    assert_eq!((report.revisions_pruned, report.chunks_collected), (0, 0));
    for c in [&old, &new, &orphan, &gone] {
        d.remote.download_chunk(c.id()).await.unwrap();
    }
    // Past the grace period: only the never-committed chunk goes.
    t.clock.advance_millis(2 * 3600 * 1000);
    let report = t.service().maintain().await.unwrap();
    assert_eq!((report.revisions_pruned, report.chunks_collected), (0, 1));
    assert_eq!(d.remote.download_chunk(orphan.id()).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    assert_eq!(d.remote.missing_chunks(&[orphan.id(), old.id()]).await.unwrap(), vec![orphan.id()]);
    assert_eq!(d.remote.versions(e1).await.unwrap().len(), 2);

    // Past retention: the superseded revision and the deleted file go, then their chunks.
    t.clock.advance_millis(31 * 86_400 * 1000);
    let report = t.service().maintain().await.unwrap();
    assert_eq!((report.revisions_pruned, report.chunks_collected), (3, 2));
    assert_eq!(d.remote.versions(e1).await.unwrap().len(), 1);
    assert_eq!(d.remote.versions(e2).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    for c in [&old, &gone] {
        assert_eq!(d.remote.download_chunk(c.id()).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    }
    assert_eq!(d.remote.download_chunk(new.id()).await.unwrap(), new);
    // A device whose cursor predates the pruned deletion must resnapshot.
    let err = d.remote.journal(coffer_proto::Cursor(0), None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CursorExpired));
    assert_eq!(d.remote.snapshot(None, None).await.unwrap().entries.len(), 1);
    // A collected chunk can be uploaded and used again.
    d.remote.upload_chunks(std::slice::from_ref(&old)).await.unwrap();
    d.remote.commit(&[put(e1, 2, b"v3", &[&old])]).await.unwrap();
    assert_eq!(d.remote.usage().await.unwrap().used_bytes, old.len() as u64);
}

type Hook = Box<dyn FnOnce(&dyn coffer_server::BlobStore) + Send>;

/// A blob store that runs a hook right after its next batch is written.
#[derive(Default)]
struct HookedBlobs {
    inner: coffer_server::store::memory::MemoryBlobStore,
    after_put: std::sync::Mutex<Option<Hook>>,
}

impl std::fmt::Debug for HookedBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedBlobs").finish_non_exhaustive()
    }
}

impl coffer_server::BlobStore for HookedBlobs {
    fn put(
        &self,
        a: coffer_server::store::AccountId,
        id: coffer_proto::ChunkId,
        b: &[u8],
    ) -> coffer_server::store::StoreResult<()> {
        self.put_many(a, &[(id, b)])
    }
    fn put_many(
        &self,
        a: coffer_server::store::AccountId,
        blobs: &[(coffer_proto::ChunkId, &[u8])],
    ) -> coffer_server::store::StoreResult<()> {
        self.inner.put_many(a, blobs)?;
        if let Some(hook) = self.after_put.lock().unwrap().take() {
            hook(&self.inner);
        }
        Ok(())
    }
    fn get(
        &self,
        a: coffer_server::store::AccountId,
        id: coffer_proto::ChunkId,
    ) -> coffer_server::store::StoreResult<Option<Vec<u8>>> {
        self.inner.get(a, id)
    }
    fn delete(
        &self,
        a: coffer_server::store::AccountId,
        id: coffer_proto::ChunkId,
    ) -> coffer_server::store::StoreResult<()> {
        self.inner.delete(a, id)
    }
    fn lacking(
        &self,
        a: coffer_server::store::AccountId,
        ids: &[coffer_proto::ChunkId],
    ) -> coffer_server::store::StoreResult<Vec<coffer_proto::ChunkId>> {
        self.inner.lacking(a, ids)
    }
}

/// A collection that marked a chunk before an upload asked what is
/// missing, deleted its blob right after the upload wrote it, and forgot
/// its row before the upload recorded it: the record then succeeds (there is
/// no mark left to refuse it) and, without a check, the store would list a
/// chunk whose bytes are gone, and a commit could name it. The upload finds
/// the blob gone and writes it again.
#[tokio::test]
async fn a_chunk_collected_while_it_is_uploaded_is_written_again() {
    use coffer_proto::api::{SessionId, UnixMillis};
    use coffer_proto::{ChunkId, DeviceId, SealedChunk, WrappedKey};
    use coffer_server::store::memory::MemoryMetaStore;
    use coffer_server::store::{MetaStore, NewAccount};
    use coffer_server::{BlobStore, Caller, Clock, ManualClock, Service};
    use rand_chacha::rand_core::SeedableRng;
    use std::sync::Arc;

    let meta = Arc::new(MemoryMetaStore::new());
    let blobs = Arc::new(HookedBlobs::default());
    let clock = Arc::new(ManualClock::new(UnixMillis(1_800_000_000_000)));
    let config = ServiceConfig::default();
    let grace = config.gc_grace;
    let service = Service::new(
        meta.clone(),
        blobs.clone(),
        clock.clone(),
        Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(1)),
        config,
    )
    .await
    .unwrap();
    let account = meta
        .create_account(NewAccount {
            username: "racer".into(),
            opaque_record: vec![],
            wrapped_key: WrappedKey::from_sealed_bytes(vec![1]),
            settings: None,
            quota_bytes: 1 << 30,
            created_at: clock.now(),
        })
        .unwrap();
    let caller =
        Caller { account, session: SessionId::from_bytes([1; 16]), device: DeviceId::from_bytes([1; 16]) };
    let bytes = b"sealed bytes of a chunk uploaded, dropped, then uploaded again".to_vec();
    let id = ChunkId::from_bytes(*blake3::hash(&bytes).as_bytes());
    let chunk = SealedChunk::from_parts(id, bytes.clone());

    // Uploaded, never committed, older than the grace period: collectable.
    service.upload_sealed(caller, vec![chunk.clone()]).await.unwrap();
    clock.advance_millis(u64::try_from(grace.as_millis()).unwrap() + 1000);
    let cutoff = UnixMillis(clock.now().0 - u64::try_from(grace.as_millis()).unwrap());
    assert_eq!(meta.gc_mark(cutoff, 100).unwrap(), vec![(account, id)]);

    // The upload again, with the collection's delete and sweep landing
    // between its write and its record.
    let sweeper = meta.clone();
    *blobs.after_put.lock().unwrap() = Some(Box::new(move |inner: &dyn BlobStore| {
        inner.delete(account, id).unwrap();
        sweeper.gc_sweep(&[(account, id)]).unwrap();
    }));
    service.upload_sealed(caller, vec![chunk]).await.unwrap();
    assert!(blobs.after_put.lock().unwrap().is_none(), "the collection ran inside the upload");
    assert_eq!(meta.missing_chunks(account, &[id]).unwrap(), vec![], "the store lists the chunk");
    assert_eq!(blobs.get(account, id).unwrap(), Some(bytes), "and holds its bytes");
}
