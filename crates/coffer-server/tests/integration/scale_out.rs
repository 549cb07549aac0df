//! The scale-out stores against real services: PostgreSQL `MetaStore` and
//! S3 (SeaweedFS) `BlobStore` pass the shared conformance suites, and two
//! PostgreSQL stores on one database (as two server instances would hold)
//! stay exact under concurrent commits and hear each other's commits.
//! See `services.rs` for how the services start, and when a test skips.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use coffer_proto::api::{Change, ChangeResult, UnixMillis};
use coffer_proto::{ChunkId, Cursor, DeviceId, EntryId, Revision, SealedMeta, WrappedKey};
use coffer_server::conformance;
use coffer_server::store::postgres::{Announcement, PostgresMetaStore};
use coffer_server::store::s3::{S3BlobStore, S3Config};
use coffer_server::store::{AccountId, NewAccount, StoreError};
use coffer_server::{BlobStore, MetaStore};

use super::services::{shared, Postgres, SeaweedS3};

/// One PostgreSQL for the tests running at once (each takes fresh databases).
fn postgres() -> Option<Arc<Postgres>> {
    static PG: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
    shared(&PG, Postgres::start)
}

fn seaweed() -> Option<Arc<SeaweedS3>> {
    static S3: Mutex<Weak<SeaweedS3>> = Mutex::new(Weak::new());
    shared(&S3, SeaweedS3::start)
}

fn s3_config(s3: &SeaweedS3, bucket: String) -> S3Config {
    S3Config {
        bucket,
        prefix: "chunks".into(),
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("coffer-test".into()),
        secret_access_key: Some("coffer-test-secret".into()),
        allow_http: false,
    }
}

#[test]
fn postgres_meta_store() {
    let Some(pg) = postgres() else { return };
    conformance::meta_store(&|| {
        Arc::new(PostgresMetaStore::open(&pg.fresh_database()).expect("open PostgreSQL store"))
            as Arc<dyn MetaStore>
    });
}

#[test]
fn postgres_reopens_and_keeps_data() {
    let Some(pg) = postgres() else { return };
    let url = pg.fresh_database();
    let s = PostgresMetaStore::open(&url).unwrap();
    assert_eq!(s.server_secret("k", b"v1").unwrap(), b"v1");
    drop(s);
    let s = PostgresMetaStore::open(&url).unwrap();
    assert_eq!(s.server_secret("k", b"v2").unwrap(), b"v1", "migrations are not re-run, data survives");
}

#[test]
fn s3_blob_store() {
    let Some(s3) = seaweed() else { return };
    conformance::blob_store(&|| {
        Arc::new(S3BlobStore::open(&s3_config(&s3, s3.fresh_bucket())).expect("open S3 store"))
            as Arc<dyn BlobStore>
    });
}

#[test]
fn s3_errors_are_reported_not_hidden() {
    let Some(s3) = seaweed() else { return };
    let store = S3BlobStore::open(&s3_config(&s3, "no-such-bucket-here".into())).unwrap();
    let err = store.put(AccountId(1), ChunkId::from_bytes([1; 32]), b"x").unwrap_err();
    assert!(err.is_retryable() && matches!(err, StoreError::Backend(_)), "{err:?}");
}

const T0: UnixMillis = UnixMillis(1_800_000_000_000);
const DEV: DeviceId = DeviceId::from_bytes([3; 16]);

fn put(n: u8, chunks: &[ChunkId]) -> Change {
    Change {
        entry_id: EntryId::from_bytes([n; 32]),
        base_revision: Revision(0),
        meta: Some(SealedMeta::from_sealed_bytes(vec![n])),
        chunks: chunks.to_vec(),
        delta: None,
    }
}

/// Two stores on one database, as two server instances hold them: racing
/// commits through both stay exact (one winner per entry, quota to the byte,
/// a gapless journal).
#[test]
fn two_instances_commit_exactly() {
    let Some(pg) = postgres() else { return };
    let url = pg.fresh_database();
    let stores: [Arc<dyn MetaStore>; 2] =
        [Arc::new(PostgresMetaStore::open(&url).unwrap()), Arc::new(PostgresMetaStore::open(&url).unwrap())];
    let a = stores[0]
        .create_account(NewAccount {
            username: "alice".into(),
            opaque_record: vec![1],
            wrapped_key: WrappedKey::from_sealed_bytes(vec![2; 61]),
            settings: None,
            quota_bytes: 70,
            created_at: T0,
        })
        .unwrap();
    let chunks: Vec<(ChunkId, u64)> = (0..24u8).map(|n| (ChunkId::from_bytes([n; 32]), 10)).collect();
    stores[1].record_chunks(a, &chunks, T0).unwrap();
    // 24 threads, alternating instances: each wants its own 10-byte chunk
    // under a 70-byte quota, and each also races for entry 200.
    let (fits, wins): (usize, usize) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24u8)
            .map(|n| {
                let s = stores[usize::from(n % 2)].clone();
                scope.spawn(move || {
                    let fit = match s.commit(a, DEV, T0, &[put(n, &[ChunkId::from_bytes([n; 32])])]) {
                        Ok(_) => 1,
                        Err(StoreError::QuotaExceeded { .. }) => 0,
                        Err(e) => panic!("unexpected {e}"),
                    };
                    let (r, _) = s.commit(a, DEV, T0, &[put(200, &[])]).unwrap();
                    (fit, usize::from(matches!(r[0], ChangeResult::Applied { .. })))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1))
    });
    assert_eq!(fits, 7, "the quota admits exactly seven 10-byte chunks across both instances");
    assert_eq!(wins, 1, "exactly one racing create of one entry wins across both instances");
    for s in &stores {
        assert_eq!(s.usage(a).unwrap().used_bytes, 70);
        assert_eq!(s.head(a).unwrap(), Cursor(8));
        let seqs: Vec<u64> = s.journal(a, Cursor(0), 100).unwrap().changes.iter().map(|c| c.seq.0).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>(), "one gapless journal");
    }
}

/// A commit through one store is announced to a listener opened by another
/// (what wakes long-polls on other instances).
#[test]
fn commits_are_announced_to_other_instances() {
    let Some(pg) = postgres() else { return };
    let url = pg.fresh_database();
    let one = PostgresMetaStore::open(&url).unwrap();
    let two = PostgresMetaStore::open(&url).unwrap();
    let mut listener = two.listen().unwrap();
    let a = one
        .create_account(NewAccount {
            username: "alice".into(),
            opaque_record: vec![1],
            wrapped_key: WrappedKey::from_sealed_bytes(vec![2; 61]),
            settings: None,
            quota_bytes: 100,
            created_at: T0,
        })
        .unwrap();
    // A refused commit announces nothing.
    let missing = one.commit(a, DEV, T0, &[put(1, &[ChunkId::from_bytes([9; 32])])]).unwrap_err();
    assert!(matches!(missing, StoreError::ChunkMissing(_)));
    assert!(listener.wait(Duration::from_millis(300)).unwrap().is_empty());
    let start = Instant::now();
    one.commit(a, DEV, T0, &[put(1, &[])]).unwrap();
    let mut got = Vec::new();
    while got.is_empty() && start.elapsed() < Duration::from_secs(10) {
        got = listener.wait(Duration::from_secs(1)).unwrap();
    }
    let took = start.elapsed();
    assert_eq!(got, vec![Announcement::Commit(a, Cursor(1))]);
    eprintln!("cross-instance commit announcement arrived after {took:?}");
    // Retention that drops something is announced too (tails are then stale).
    one.commit(a, DEV, T0, &[Change { base_revision: Revision(1), ..put(1, &[]) }]).unwrap();
    assert_eq!(one.prune_versions(UnixMillis(T0.0 + 1)).unwrap(), 1);
    let mut got = Vec::new();
    while !got.contains(&Announcement::Pruned) && start.elapsed() < Duration::from_secs(10) {
        got.extend(listener.wait(Duration::from_secs(1)).unwrap());
    }
    assert_eq!(got, vec![Announcement::Commit(a, Cursor(2)), Announcement::Pruned]);
}

/// Two running instances (the real HTTP service) on one database and
/// bucket: a long-poll held by one wakes for a commit made through the
/// other, and still does after both instances lose their listening
/// connections (they reconnect and re-read the heads they watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_wake_across_instances_and_survive_a_lost_listener() {
    use coffer_engine::remote::{Accounts, Remote};
    use coffer_server::http::HttpConfig;
    use coffer_server::server::{open_stores, serve, BlobLocation, ListenConfig, MetaLocation};
    use coffer_server::ServiceConfig;
    use rand_chacha::rand_core::SeedableRng;

    let (Some(pg), Some(s3)) = (postgres(), seaweed()) else { return };
    let url = pg.fresh_database();
    let config = s3_config(&s3, s3.fresh_bucket());
    let mut servers = Vec::new();
    for _ in 0..2 {
        let service = open_stores(
            MetaLocation::Postgres(url.clone()),
            BlobLocation::S3(config.clone()),
            ServiceConfig::default(),
        )
        .await
        .unwrap();
        let listen = ListenConfig {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            insecure_plain_http: false,
            maintenance_every: Duration::from_secs(3600),
        };
        servers.push(serve(service, HttpConfig::default(), listen).await.unwrap());
    }
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let ksf = super::support::KSF;
    let master = coffer_crypto::MasterKey::generate(&mut rng);
    let on_one = Accounts::new(&servers[0].base_url()).unwrap();
    let on_two = Accounts::new(&servers[1].base_url()).unwrap();
    let settings = coffer_engine::settings::AccountSettings::for_new_account();
    on_one.signup(&mut rng, "alice", super::support::PASSWORD, &master, &settings, &ksf).await.unwrap();
    let writer = on_one
        .login(&mut rng, "alice", super::support::PASSWORD, DeviceId::from_bytes([1; 16]), &ksf)
        .await
        .unwrap();
    let reader = on_two
        .login(&mut rng, "alice", super::support::PASSWORD, DeviceId::from_bytes([2; 16]), &ksf)
        .await
        .unwrap();
    // Bytes uploaded through one instance are served by the other.
    let sealed = super::support::chunk(b"sealed bytes through instance one");
    writer.remote.upload_chunks(std::slice::from_ref(&sealed)).await.unwrap();

    for round in 1..=2u64 {
        if round == 2 {
            // Cut both instances' LISTEN connections, as a database restart
            // or a network blip would.
            let url = url.clone();
            let cut = tokio::task::spawn_blocking(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .len()
            })
            .await
            .unwrap();
            assert_eq!(cut, 2, "one listening connection per instance");
        }
        let after = Cursor(round - 1);
        let waiting = tokio::spawn({
            let remote = reader.remote.clone();
            async move {
                let page = remote.wait_journal(after, Duration::from_secs(30)).await.unwrap();
                (page, Instant::now())
            }
        });
        let two = servers[1].service().clone();
        let end = Instant::now() + Duration::from_secs(10);
        while two.long_polls_waiting() == 0 {
            assert!(Instant::now() < end, "the long-poll is never held");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let committed = Instant::now();
        let change = Change {
            entry_id: EntryId::from_bytes([round as u8; 32]),
            base_revision: Revision(0),
            meta: Some(SealedMeta::from_sealed_bytes(vec![round as u8])),
            chunks: vec![sealed.id()],
            delta: None,
        };
        writer.remote.commit(&[change]).await.unwrap();
        let (page, woke) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the long-poll on instance two did not wake (its own timeout is 30 s)")
            .unwrap();
        // The client's long-poll only wakes (`limit=0`): the head, then
        // the journal holds the change.
        assert!(page.changes.is_empty());
        assert_eq!(page.cursor, Cursor(round));
        let journal = reader.remote.journal(after, None).await.unwrap();
        assert_eq!(journal.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![Cursor(round)]);
        eprintln!("round {round}: instance two woke {:?} after the commit on instance one", woke - committed);
    }
    assert_eq!(reader.remote.download_chunk(sealed.id()).await.unwrap(), sealed);
}
