//! Chunks, commits, conflicts, quota.

use coffer_engine::remote::Remote;
use coffer_proto::api::{ChangeResult, ErrorCode};
use coffer_proto::{Cursor, Revision};
use coffer_server::http::HttpConfig;
use coffer_server::ServiceConfig;

use super::support::{chunk, del, entry, put, TestServer};

#[tokio::test]
async fn chunk_and_commit_flow() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let (a, b) = (chunk(b"chunk a"), chunk(&[7u8; 5000]));
    let ids = [a.id(), b.id()];
    assert_eq!(d.remote.missing_chunks(&ids).await.unwrap(), ids.to_vec());
    let up = d.remote.upload_chunks(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!((up.stored, up.already_present), (2, 0));
    assert!(d.remote.missing_chunks(&ids).await.unwrap().is_empty());
    let again = d.remote.upload_chunks(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!((again.stored, again.already_present), (0, 1), "uploads are idempotent");

    let r = d
        .remote
        .commit(&[put(entry(1), 0, b"meta1", &[&a, &b]), put(entry(2), 0, b"meta2", &[&a])])
        .await
        .unwrap();
    assert_eq!(r.cursor, Cursor(2));
    assert!(r.results.iter().all(|r| matches!(r, ChangeResult::Applied { revision: Revision(1), .. })));
    assert_eq!(d.remote.download_chunk(b.id()).await.unwrap(), b);
    let usage = d.remote.usage().await.unwrap();
    assert_eq!(usage.used_bytes, (a.len() + b.len()) as u64, "shared chunk counted once");

    // A stale change conflicts; the rest of the batch applies.
    let r = d.remote.commit(&[put(entry(1), 0, b"stale", &[]), del(entry(2), 1)]).await.unwrap();
    assert_eq!(r.results[0], ChangeResult::Conflict { entry_id: entry(1), current_revision: Revision(1) });
    assert!(matches!(r.results[1], ChangeResult::Applied { revision: Revision(2), .. }));
    assert_eq!(d.remote.usage().await.unwrap().used_bytes, (a.len() + b.len()) as u64);
    let r = d.remote.commit(&[del(entry(1), 1)]).await.unwrap();
    assert!(matches!(r.results[0], ChangeResult::Applied { .. }));
    assert_eq!(d.remote.usage().await.unwrap().used_bytes, 0, "deleted files do not count");
}

/// `POST /v1/chunks/get`: the chunks asked for that the store has, in
/// request order, each checked by the client against its id; another
/// account's chunk is as absent as a chunk nobody uploaded; past 16 MiB of
/// answer, a clear refusal.
#[tokio::test]
async fn chunks_come_in_batches() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let other = t.user("bob").await;
    let (a, b, c) = (chunk(b"a"), chunk(&[2u8; 3000]), chunk(b"c"));
    d.remote.upload_chunks(&[a.clone(), b.clone(), c.clone()]).await.unwrap();
    let theirs = chunk(b"bob's");
    other.remote.upload_chunks(std::slice::from_ref(&theirs)).await.unwrap();
    let got = d.remote.download_chunks(&[c.id(), chunk(b"never").id(), a.id(), theirs.id(), b.id()]).await;
    assert_eq!(got.unwrap(), vec![c.clone(), a.clone(), b.clone()]);
    assert!(d.remote.download_chunks(&[]).await.unwrap().is_empty());
    let too_many = vec![a.id(); coffer_proto::api::MAX_IDS_PER_REQUEST + 1];
    let err = d.remote.download_chunks(&too_many).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    let big: Vec<_> = (0..3u8).map(|n| chunk(&vec![n; 6 << 20])).collect();
    d.remote.upload_chunks(&big).await.unwrap();
    let err = d.remote.download_chunks(&big.iter().map(|c| c.id()).collect::<Vec<_>>()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert_eq!(d.remote.download_chunks(&[big[0].id(), big[1].id()]).await.unwrap(), big[..2].to_vec());
}

#[tokio::test]
async fn two_concurrent_commits_on_one_entry_exactly_one_wins() {
    let mut t = TestServer::start().await;
    let d1 = t.user("alice").await;
    let d2 = t.login("alice", 2).await;
    for round in 0..10u64 {
        let (c1, c2) = ([put(entry(1), round, b"from 1", &[])], [put(entry(1), round, b"from 2", &[])]);
        let (r1, r2) = tokio::join!(d1.remote.commit(&c1), d2.remote.commit(&c2));
        let results = [r1.unwrap().results.remove(0), r2.unwrap().results.remove(0)];
        let wins = results.iter().filter(|r| matches!(r, ChangeResult::Applied { .. })).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        let loser = results.iter().find(|r| matches!(r, ChangeResult::Conflict { .. })).unwrap();
        assert_eq!(
            *loser,
            ChangeResult::Conflict { entry_id: entry(1), current_revision: Revision(round + 1) }
        );
    }
    assert_eq!(d1.remote.versions(entry(1)).await.unwrap().len(), 10);
}

#[tokio::test]
async fn commit_naming_a_missing_chunk_is_refused_and_stores_nothing() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let (have, lack) = (chunk(b"have"), chunk(b"lack"));
    d.remote.upload_chunks(std::slice::from_ref(&have)).await.unwrap();
    let err = d
        .remote
        .commit(&[put(entry(1), 0, b"ok", &[&have]), put(entry(2), 0, b"bad", &[&have, &lack])])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChunkMissing));
    match &err {
        coffer_engine::remote::RemoteError::Api { status, body } => {
            assert_eq!(*status, 409);
            assert_eq!(body.missing_chunks, vec![lack.id()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.remote.journal(Cursor(0), None).await.unwrap().changes.len(), 0, "nothing applied");
    assert_eq!(d.remote.usage().await.unwrap().used_bytes, 0);
    d.remote.upload_chunks(std::slice::from_ref(&lack)).await.unwrap();
    d.remote.commit(&[put(entry(2), 0, b"now", &[&have, &lack])]).await.unwrap();
}

#[tokio::test]
async fn quota_exceeded_is_refused_and_exact() {
    let config = ServiceConfig { default_quota_bytes: 10_000, ..ServiceConfig::default() };
    let mut t = TestServer::start_with(config, HttpConfig::default()).await;
    let d1 = t.user("alice").await;
    let d2 = t.login("alice", 2).await;
    let chunks: Vec<_> = (0..8u8).map(|n| chunk(&[n; 2000])).collect();
    d1.remote.upload_chunks(&chunks).await.unwrap();
    // Eight concurrent commits of one distinct 2000-byte file each: five fit.
    let mut tasks = Vec::new();
    for (n, c) in chunks.iter().enumerate() {
        let remote = if n % 2 == 0 { d1.remote.clone() } else { d2.remote.clone() };
        let change = put(entry(n as u8), 0, b"m", &[c]);
        tasks.push(tokio::spawn(async move { remote.commit(&[change]).await }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded)),
        }
    }
    assert_eq!(ok, 5);
    let usage = d1.remote.usage().await.unwrap();
    assert_eq!((usage.used_bytes, usage.quota_bytes), (10_000, 10_000));
    assert_eq!(
        d1.remote.journal(Cursor(0), None).await.unwrap().changes.len(),
        5,
        "refused commits left nothing"
    );
    // Per-account quota: raise it and the rest fit.
    t.service().set_quota("alice", 20_000).await.unwrap();
    let rest: Vec<_> = (0..8u8).map(|n| put(entry(n), 0, b"m", &[&chunks[n as usize]])).collect();
    let r = d1.remote.commit(&rest).await.unwrap();
    let applied = r.results.iter().filter(|r| matches!(r, ChangeResult::Applied { .. })).count();
    assert_eq!(applied, 3);
    assert_eq!(d1.remote.usage().await.unwrap().used_bytes, 16_000);
}
