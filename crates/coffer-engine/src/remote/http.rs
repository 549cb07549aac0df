//! [`Remote`] over HTTP(S) with `reqwest` (rustls). One [`HttpRemote`] is one
//! device session: it sends `Authorization: Bearer <token>` on every call.
//! Clone it freely (the connection pool is shared).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use coffer_proto::api::{
    chunk_batch, Change, CommitRequest, CommitResponse, EntryVersion, ErrorBody, ErrorCode, GetChunksRequest,
    JournalPage, MissingChunksRequest, MissingChunksResponse, PostPreview, PreviewPage, SessionId,
    SessionInfo, SessionToken, SessionsResponse, SnapshotPage, UploadChunksResponse, Usage, VersionsResponse,
    API_PREFIX, MAX_BATCH_ANSWER_BYTES,
};
use coffer_proto::{ChunkId, Cursor, EntryId, Revision, SealedChunk, SealedPreview};
use reqwest::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;

use super::{Remote, RemoteError};

/// Slack added to a long-poll's own timeout before the client gives up.
const WAIT_SLACK: Duration = Duration::from_secs(15);

/// A chunk upload's body as it lies in memory ([`chunk_batch::frames`]):
/// each large chunk sent from its own buffer rather than copied into one
/// body first. Its length is known, so it goes with a `Content-Length`.
struct Frames {
    frames: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl Frames {
    fn of(chunks: &[SealedChunk]) -> Self {
        let frames: std::collections::VecDeque<Bytes> = chunk_batch::frames(chunks).into();
        let left = frames.iter().map(|f| f.len() as u64).sum();
        Self { frames, left }
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let next = this.frames.pop_front();
        if let Some(f) = &next {
            this.left -= f.len() as u64;
        }
        std::task::Poll::Ready(next.map(|f| Ok(http_body::Frame::data(f))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// A logged-in device session against a store.
#[derive(Clone)]
pub struct HttpRemote {
    client: Client,
    base: String,
    token: SessionToken,
}

impl fmt::Debug for HttpRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRemote").field("base", &self.base).field("token", &self.token).finish()
    }
}

/// A `reqwest` client with Coffer's defaults (rustls, timeouts).
pub fn default_client() -> Result<Client, RemoteError> {
    Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(RemoteError::from)
}

pub(super) async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, RemoteError> {
    let resp = check(resp).await?;
    let bytes = body(resp).await?;
    serde_json::from_slice(bytes.as_ref()).map_err(|e| RemoteError::Protocol(e.to_string()))
}

/// The whole body of an answer. `reqwest` reports a body cut off in transit
/// (a reset or a closed connection before its length) as a *decode* error;
/// it is a transport failure, and retrying can help. Only bytes that did
/// arrive whole and still do not parse are a protocol error.
async fn body(resp: Response) -> Result<impl AsRef<[u8]> + Into<Vec<u8>>, RemoteError> {
    resp.bytes().await.map_err(cut_off)
}

fn cut_off(e: reqwest::Error) -> RemoteError {
    RemoteError::Transport(format!("the answer was cut off: {e}"))
}

pub(super) async fn check(resp: Response) -> Result<Response, RemoteError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let bytes = body(resp).await?;
    let body = serde_json::from_slice::<ErrorBody>(bytes.as_ref()).unwrap_or_else(|_| ErrorBody {
        code: if status.is_server_error() { ErrorCode::Internal } else { ErrorCode::Unknown },
        message: format!("HTTP {status} without an error body"),
        missing_chunks: vec![],
        retry_after_ms: None,
    });
    Err(RemoteError::Api { status: status.as_u16(), body })
}

impl HttpRemote {
    /// A session at `base_url` (`https://host:port`) with its token.
    pub fn new(base_url: &str, token: SessionToken) -> Result<Self, RemoteError> {
        Ok(Self::with_client(default_client()?, base_url, token))
    }

    /// Same, sharing an existing client (and its connection pool).
    pub fn with_client(client: Client, base_url: &str, token: SessionToken) -> Self {
        Self { client, base: base_url.trim_end_matches('/').to_owned(), token }
    }

    /// The session's bearer token (to hand to another process; never log it).
    pub fn token(&self) -> &SessionToken {
        &self.token
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(self.token.expose_secret())
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(self.token.expose_secret())
    }
}

impl Remote for HttpRemote {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        let req = MissingChunksRequest { ids: ids.to_vec() };
        let resp: MissingChunksResponse =
            decode(self.post("/chunks/missing").json(&req).send().await?).await?;
        Ok(resp.missing)
    }

    async fn upload_chunks(&self, chunks: &[SealedChunk]) -> Result<UploadChunksResponse, RemoteError> {
        let body = reqwest::Body::wrap(Frames::of(chunks));
        let req =
            self.post("/chunks").header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(body);
        decode(req.send().await?).await
    }

    async fn download_chunk(&self, id: ChunkId) -> Result<SealedChunk, RemoteError> {
        let resp = check(self.get(&format!("/chunks/{id}")).send().await?).await?;
        let bytes = body(resp).await?;
        if blake3::hash(bytes.as_ref()).as_bytes() != id.as_bytes() {
            return Err(RemoteError::CorruptChunk(id));
        }
        Ok(SealedChunk::from_parts(id, bytes.into()))
    }

    async fn download_chunks(&self, ids: &[ChunkId]) -> Result<Vec<SealedChunk>, RemoteError> {
        let req = GetChunksRequest { ids: ids.to_vec() };
        let mut resp = check(self.post("/chunks/get").json(&req).send().await?).await?;
        // Decoded as it arrives, each chunk's bytes copied once into a
        // buffer of its own (which opening then decrypts in place); and no
        // longer than an answer to these ids may be.
        let bad = |e: chunk_batch::FramingError| RemoteError::Protocol(format!("chunk batch answer: {e}"));
        let mut decoder = chunk_batch::Decoder::new(MAX_BATCH_ANSWER_BYTES + ids.len() * chunk_batch::HEAD);
        while let Some(piece) = resp.chunk().await.map_err(cut_off)? {
            decoder.feed(&piece).map_err(bad)?;
        }
        let chunks = decoder.finish().map_err(bad)?;
        for c in &chunks {
            if !ids.contains(&c.id()) {
                return Err(RemoteError::Protocol(format!("the store sent chunk {} unasked", c.id())));
            }
            if blake3::hash(c.as_bytes()).as_bytes() != c.id().as_bytes() {
                return Err(RemoteError::CorruptChunk(c.id()));
            }
        }
        Ok(chunks)
    }

    async fn commit(&self, changes: &[Change]) -> Result<CommitResponse, RemoteError> {
        let req = CommitRequest { changes: changes.to_vec() };
        decode(self.post("/commit").json(&req).send().await?).await
    }

    async fn journal(&self, after: Cursor, limit: Option<u32>) -> Result<JournalPage, RemoteError> {
        let mut q = vec![("after", after.0.to_string())];
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        decode(self.get("/journal").query(&q).send().await?).await
    }

    async fn wait_journal(&self, after: Cursor, timeout: Duration) -> Result<JournalPage, RemoteError> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // limit=0: wake us, no changes (the round pulls them).
        let q = [("after", after.0.to_string()), ("timeout_ms", ms.to_string()), ("limit", "0".into())];
        let req = self.get("/journal/wait").query(&q).timeout(timeout + WAIT_SLACK);
        decode(req.send().await?).await
    }

    async fn snapshot(
        &self,
        after: Option<EntryId>,
        limit: Option<u32>,
    ) -> Result<SnapshotPage, RemoteError> {
        let mut q = Vec::new();
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        decode(self.get("/snapshot").query(&q).send().await?).await
    }

    async fn versions(&self, entry: EntryId) -> Result<Vec<EntryVersion>, RemoteError> {
        let resp: VersionsResponse =
            decode(self.get(&format!("/entries/{entry}/versions")).send().await?).await?;
        Ok(resp.versions)
    }

    async fn version(&self, entry: EntryId, revision: Revision) -> Result<EntryVersion, RemoteError> {
        decode(self.get(&format!("/entries/{entry}/versions/{}", revision.0)).send().await?).await
    }

    async fn usage(&self) -> Result<Usage, RemoteError> {
        decode(self.get("/usage").send().await?).await
    }

    async fn sessions(&self) -> Result<Vec<SessionInfo>, RemoteError> {
        let resp: SessionsResponse = decode(self.get("/sessions").send().await?).await?;
        Ok(resp.sessions)
    }

    async fn revoke_session(&self, id: SessionId) -> Result<(), RemoteError> {
        let req =
            self.client.delete(self.url(&format!("/sessions/{id}"))).bearer_auth(self.token.expose_secret());
        check(req.send().await?).await.map(drop)
    }

    async fn post_preview(&self, sealed: &SealedPreview) -> Result<(), RemoteError> {
        let req = PostPreview { sealed: sealed.clone() };
        check(self.post("/previews").json(&req).send().await?).await.map(drop)
    }

    async fn wait_previews(&self, after: Option<u64>, timeout: Duration) -> Result<PreviewPage, RemoteError> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut q = vec![("timeout_ms", ms.to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let req = self.get("/previews/wait").query(&q).timeout(timeout + WAIT_SLACK);
        decode(req.send().await?).await
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A one-shot HTTP server that answers `answer` (then closes) to the
    /// first request; returns its base URL.
    fn answer_once(answer: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(answer);
        });
        url
    }

    fn remote(url: &str) -> HttpRemote {
        HttpRemote::new(url, SessionToken::new("t".into())).unwrap()
    }

    #[tokio::test]
    async fn an_answer_cut_off_in_transit_is_a_retryable_transport_error() {
        let url = answer_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"used_bytes\":",
        );
        let e = remote(&url).usage().await.unwrap_err();
        assert!(matches!(e, RemoteError::Transport(_)), "{e:?}");
        assert!(e.is_retryable());
    }

    #[tokio::test]
    async fn a_whole_answer_that_does_not_parse_is_a_protocol_error() {
        let url = answer_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nnope!",
        );
        let e = remote(&url).usage().await.unwrap_err();
        assert!(matches!(e, RemoteError::Protocol(_)), "{e:?}");
        assert!(!e.is_retryable());
    }
}
