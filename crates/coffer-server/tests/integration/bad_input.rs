//! Bad input: each gets its stable error code, and nothing is stored.

use coffer_engine::remote::{HttpRemote, Remote};
use coffer_proto::api::{ErrorBody, ErrorCode};
use coffer_proto::{ChunkId, Cursor, SealedChunk};
use coffer_server::http::HttpConfig;
use coffer_server::ServiceConfig;

use super::support::{chunk, entry, put, TestServer};

async fn raw(resp: reqwest::Response) -> (u16, ErrorBody) {
    let status = resp.status().as_u16();
    let body: ErrorBody = resp.json().await.expect("every error has a JSON body");
    (status, body)
}

#[tokio::test]
async fn wrong_chunk_hash_stores_nothing() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let good = chunk(b"good");
    let bad = SealedChunk::from_parts(ChunkId::from_bytes([9; 32]), b"not matching".to_vec());
    let err = d.remote.upload_chunks(&[good.clone(), bad.clone()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChunkHashMismatch));
    assert!(!err.is_retryable());
    assert_eq!(d.remote.missing_chunks(&[good.id(), bad.id()]).await.unwrap(), vec![good.id(), bad.id()]);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let http = HttpConfig { json_body_limit: 4096, chunk_body_limit: 8192, ..HttpConfig::default() };
    let mut t = TestServer::start_with(ServiceConfig::default(), http).await;
    let d = t.user("alice").await;
    let big = chunk(&[1u8; 10_000]);
    let err = d.remote.upload_chunks(std::slice::from_ref(&big)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PayloadTooLarge));
    match &err {
        coffer_engine::remote::RemoteError::Api { status, .. } => assert_eq!(*status, 413),
        other => panic!("{other:?}"),
    }
    let ids: Vec<ChunkId> = (0..200u8).map(|n| ChunkId::from_bytes([n; 32])).collect();
    let err = d.remote.missing_chunks(&ids).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PayloadTooLarge));
    assert_eq!(d.remote.missing_chunks(&[big.id()]).await.unwrap(), vec![big.id()]);
}

/// A commit may be larger than other JSON bodies: the ids of a file of
/// 100,000 chunks (about 8 GiB in 80 KiB chunks, 6.7 MB of JSON) reach the
/// commit's rules (here: the chunks were never uploaded), and one over
/// `MAX_CHUNK_REFS_PER_COMMIT` is refused as such.
#[tokio::test]
async fn a_commit_may_name_the_chunks_of_a_large_file() {
    use coffer_proto::api::MAX_CHUNK_REFS_PER_COMMIT;
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let id = |i: usize| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        ChunkId::from_bytes(b)
    };
    let mut change = put(entry(1), 0, b"meta", &[]);
    change.chunks = (0..100_000).map(id).collect();
    let err = d.remote.commit(std::slice::from_ref(&change)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChunkMissing), "{err}");
    change.chunks = (0..=MAX_CHUNK_REFS_PER_COMMIT).map(id).collect();
    let err = d.remote.commit(&[change]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("too many chunk references"), "{err}");
}

#[tokio::test]
async fn malformed_requests_are_bad_requests() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let token = bearer(&d.remote);
    let base = t.server.base_url();
    let client = reqwest::Client::new();
    let cases: Vec<reqwest::RequestBuilder> = vec![
        client
            .post(format!("{base}/v1/commit"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{not json"),
        client
            .post(format!("{base}/v1/commit"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(r#"{"changes":[{"entry_id":"zz"}]}"#),
        client
            .post(format!("{base}/v1/commit"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(r#"{"changes":[]}"#),
        client.post(format!("{base}/v1/chunks")).bearer_auth(&token).body(vec![1u8; 40]),
        client.get(format!("{base}/v1/chunks/not-hex")).bearer_auth(&token),
        client.get(format!("{base}/v1/journal?after=minus-one")).bearer_auth(&token),
        client
            .post(format!("{base}/v1/accounts/login/start"))
            .header("content-type", "application/json")
            .body(r#"{"username":"alice","request":"AAAA"}"#),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let (status, body) = raw(req.send().await.unwrap()).await;
        assert_eq!((status, body.code), (400, ErrorCode::BadRequest), "case {i}: {}", body.message);
    }
    let (status, body) = raw(client.get(format!("{base}/v1/nowhere")).send().await.unwrap()).await;
    assert_eq!((status, body.code), (404, ErrorCode::NotFound));
    assert_eq!(d.remote.journal(Cursor(0), None).await.unwrap().changes.len(), 0, "nothing stored");
}

#[tokio::test]
async fn bad_tokens_are_unauthorized() {
    let mut t = TestServer::start().await;
    let base = t.server.base_url();
    let client = reqwest::Client::new();
    for auth in
        [None, Some("Bearer nonsense"), Some(&*format!("Bearer {}", "ab".repeat(32))), Some("Basic abc")]
    {
        let mut req = client.get(format!("{base}/v1/usage"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let (status, body) = raw(req.send().await.unwrap()).await;
        assert_eq!((status, body.code), (401, ErrorCode::Unauthorized), "{auth:?}");
    }
    // A revoked token.
    let d = t.user("alice").await;
    d.remote.revoke_session(d.session.id).await.unwrap();
    let err = d.remote.commit(&[put(entry(1), 0, b"m", &[])]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    let again = t.login("alice", 2).await;
    assert_eq!(again.remote.journal(Cursor(0), None).await.unwrap().changes.len(), 0, "nothing stored");
}

#[tokio::test]
async fn another_accounts_token_sees_nothing_of_this_one() {
    let mut t = TestServer::start().await;
    let alice = t.user("alice").await;
    let mallory = t.user("mallory").await;
    let c = chunk(b"alice's secret chunk");
    alice.remote.upload_chunks(std::slice::from_ref(&c)).await.unwrap();
    alice.remote.commit(&[put(entry(1), 0, b"meta", &[&c])]).await.unwrap();

    assert_eq!(mallory.remote.download_chunk(c.id()).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    assert_eq!(mallory.remote.missing_chunks(&[c.id()]).await.unwrap(), vec![c.id()]);
    assert_eq!(mallory.remote.versions(entry(1)).await.unwrap_err().code(), Some(ErrorCode::NotFound));
    assert!(mallory.remote.journal(Cursor(0), None).await.unwrap().changes.is_empty());
    assert!(mallory.remote.snapshot(None, None).await.unwrap().entries.is_empty());
    let err = mallory.remote.commit(&[put(entry(2), 0, b"m", &[&c])]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ChunkMissing), "cannot reference another account's chunk");
    let err = mallory.remote.revoke_session(alice.session.id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    alice.remote.usage().await.unwrap();
    assert_eq!(alice.remote.journal(Cursor(0), None).await.unwrap().changes.len(), 1);
}

/// The bearer token of a remote, through its Debug-free accessor.
fn bearer(remote: &HttpRemote) -> String {
    remote.token().expose_secret().to_owned()
}

#[tokio::test]
async fn slow_clients_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = HttpConfig { request_timeout: std::time::Duration::from_millis(300), ..HttpConfig::default() };
    let t = TestServer::start_with(ServiceConfig::default(), http).await;
    let mut conn = tokio::net::TcpStream::connect(t.server.addr()).await.unwrap();
    // Headers promise a body that never comes.
    conn.write_all(
        b"POST /v1/accounts/register/start HTTP/1.1\r\nHost: coffer\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the server must answer a stalled body, not wait for it");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"timeout""#), "{text}");
}
