//! A hostile store over real HTTP: [`HostileServer`] listens on a loopback
//! port, speaks the real protocol by forwarding every request to a real
//! `coffer server`, and rewrites the answers the way a compromised store
//! could: flipped bits in chunks and in sealed metadata, forged journal
//! entries (deletions, replays of old revisions, metadata moved between
//! entries), a journal cursor that goes backwards, login answers
//! without the account's settings, and batched chunk answers followed by
//! far more junk than an answer may hold.
//!
//! It holds no account keys, only what any store holds: ciphertext and the
//! session token clients send it. Attacks that need keys (names inside
//! sealed metadata) are made by a malicious *device* of the same account,
//! [`MaliciousDevice`], which logs in like any device and commits hostile
//! metadata through the real store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_proto::api::{Change, EntryVersion, JournalPage, SnapshotPage, VersionsResponse};
use coffer_proto::{Cursor, EntryId, Revision, SealedMeta};

/// What the hostile store does to the answers passing through it.
#[derive(Debug, Default)]
pub struct Attacks {
    /// Flip a bit in every chunk served.
    pub tamper_chunks: bool,
    /// Flip a bit in every sealed metadata of journal and snapshot pages.
    pub tamper_meta: bool,
    /// Entries to append to the next journal page (then cleared).
    pub inject: Vec<EntryVersion>,
    /// Claim this journal cursor in every journal page.
    pub cursor: Option<Cursor>,
    /// Leave the account's settings out of login answers (as a store too
    /// old to keep them would).
    pub withhold_settings: bool,
    /// Follow every batched chunk answer (`chunks/get`) with 256 MiB of
    /// junk frames, far more than any answer may hold (the cap keeps a
    /// client that reads it all from filling the machine's memory).
    pub overlong_batches: bool,
    /// The most junk bytes one such answer had sent when its reader hung
    /// up (or so far).
    pub overlong_most: Arc<AtomicU64>,
    /// How many answers were rewritten.
    pub rewritten: usize,
    /// The last bearer token a client sent (a store sees every one).
    token: Option<String>,
}

/// The hostile store: a rewriting proxy in front of a real one. Dropping it
/// stops it.
#[derive(Debug)]
pub struct HostileServer {
    /// Its base URL (give this to clients).
    pub url: String,
    upstream: String,
    /// The attacks in force; change them at any time.
    pub attacks: Arc<Mutex<Attacks>>,
    rt: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    attacks: Arc<Mutex<Attacks>>,
}

impl HostileServer {
    /// Starts one on a free loopback port, in front of `upstream`.
    pub fn start(upstream: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let attacks = Arc::new(Mutex::new(Attacks::default()));
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            attacks: attacks.clone(),
        };
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let app = axum::Router::new().fallback(forward).with_state(shared);
        rt.spawn(async move { axum::serve(listener, app).await });
        Self { url, upstream: upstream.trim_end_matches('/').to_owned(), attacks, rt }
    }

    /// Changes the attacks.
    pub fn set(&self, f: impl FnOnce(&mut Attacks)) {
        f(&mut self.attacks.lock().expect("attacks"));
    }

    /// How many answers were rewritten so far.
    pub fn rewritten(&self) -> usize {
        self.attacks.lock().expect("attacks").rewritten
    }

    /// GETs `path` (after `/v1`) from the real store with the token a client
    /// sent: what a compromised store can read of its own data.
    pub fn read<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let token = self.attacks.lock().expect("attacks").token.clone().expect("no client has called yet");
        let url = format!("{}/v1{path}", self.upstream);
        self.rt.block_on(async {
            let r = reqwest::Client::new().get(url).header("authorization", token).send().await.expect("GET");
            assert!(r.status().is_success(), "GET {path}: {}", r.status());
            r.json().await.expect("JSON")
        })
    }

    /// Every revision of an entry, newest first.
    pub fn versions(&self, entry: &EntryId) -> Vec<EntryVersion> {
        self.read::<VersionsResponse>(&format!("/entries/{entry}/versions")).versions
    }

    /// Every live entry.
    pub fn live(&self) -> Vec<EntryVersion> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.read::<SnapshotPage>(&format!("/snapshot?limit=1000{after}"));
            out.extend(page.entries);
            match page.next {
                Some(n) => after = format!("&after={n}"),
                None => return out,
            }
        }
    }
}

fn flip_last(bytes: &mut [u8]) {
    if let Some(b) = bytes.last_mut() {
        *b ^= 1;
    }
}

async fn forward(State(s): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let Ok(body) = axum::body::to_bytes(body, 256 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response();
    };
    let mut up = s.client.request(parts.method.clone(), format!("{}{path}{query}", s.upstream));
    for name in ["authorization", "content-type"] {
        if let Some(v) = parts.headers.get(name) {
            up = up.header(name, v);
        }
    }
    if let Some(t) = parts.headers.get("authorization").and_then(|v| v.to_str().ok()) {
        s.attacks.lock().expect("attacks").token = Some(t.to_owned());
    }
    let answer = match up.body(body).send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get("content-type").cloned();
    let Ok(bytes) = answer.bytes().await else {
        return (StatusCode::BAD_GATEWAY, "upstream body").into_response();
    };
    let bytes = if status.is_success() { rewrite(&s, &path, bytes) } else { bytes };
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert("content-type", ct);
    } else {
        headers.insert("content-type", HeaderValue::from_static("application/octet-stream"));
    }
    let overlong = {
        let mut a = s.attacks.lock().expect("attacks");
        let on = status.is_success() && path == "/v1/chunks/get" && a.overlong_batches;
        a.rewritten += usize::from(on);
        on.then(|| a.overlong_most.clone())
    };
    if let Some(most) = overlong {
        return (status, headers, axum::body::Body::from_stream(junk_after(bytes, most))).into_response();
    }
    (status, headers, bytes).into_response()
}

/// `answer`, then 256 frames of junk (a made-up id, 1 MiB of zeros each),
/// counting into `most` how much junk this answer has sent.
fn junk_after(
    answer: Bytes,
    most: Arc<AtomicU64>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    const JUNK: usize = 1 << 20;
    let mut frame = vec![0xAB; 32];
    frame.extend_from_slice(&(JUNK as u32).to_be_bytes());
    frame.resize(36 + JUNK, 0);
    let frame = Bytes::from(frame);
    let junk = futures::stream::unfold(0u64, move |sent| {
        let (frame, most) = (frame.clone(), most.clone());
        async move {
            if sent >= 256 << 20 {
                return None;
            }
            let sent = sent + frame.len() as u64;
            most.fetch_max(sent, Ordering::Relaxed);
            Some((Ok(frame), sent))
        }
    });
    futures::StreamExt::chain(futures::stream::once(async move { Ok(answer) }), junk)
}

fn rewrite(s: &Shared, path: &str, bytes: Bytes) -> Bytes {
    let mut a = s.attacks.lock().expect("attacks");
    let tamper = |m: &mut Option<SealedMeta>| {
        if let Some(sealed) = m.take() {
            let mut b = sealed.into_bytes();
            flip_last(&mut b);
            *m = Some(SealedMeta::from_sealed_bytes(b));
        }
    };
    if path == "/v1/accounts/login/finish" && a.withhold_settings {
        let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return bytes };
        if let Some(o) = answer.as_object_mut() {
            o.remove("settings");
        }
        a.rewritten += 1;
        return serde_json::to_vec(&answer).expect("answer").into();
    }
    if path.starts_with("/v1/chunks/") && a.tamper_chunks {
        a.rewritten += 1;
        let mut b = bytes.to_vec();
        flip_last(&mut b);
        return b.into();
    }
    if path == "/v1/journal" || path == "/v1/journal/wait" {
        let Ok(mut page) = serde_json::from_slice::<JournalPage>(&bytes) else { return bytes };
        let before = a.rewritten;
        if a.tamper_meta && !page.changes.is_empty() {
            page.changes.iter_mut().for_each(|v| tamper(&mut v.meta));
            a.rewritten += 1;
        }
        if !a.inject.is_empty() {
            let cursor = page.cursor;
            page.changes.extend(a.inject.drain(..).map(|v| EntryVersion { seq: cursor, ..v }));
            a.rewritten += 1;
        }
        if let Some(c) = a.cursor {
            page.cursor = c;
            a.rewritten += 1;
        }
        if a.rewritten != before {
            return serde_json::to_vec(&page).expect("page").into();
        }
    }
    if path == "/v1/snapshot" && a.tamper_meta {
        let Ok(mut page) = serde_json::from_slice::<SnapshotPage>(&bytes) else { return bytes };
        page.entries.iter_mut().for_each(|v| tamper(&mut v.meta));
        a.rewritten += 1;
        return serde_json::to_vec(&page).expect("page").into();
    }
    bytes
}

/// A forged deletion of `v`'s entry: the next revision, no metadata. Any
/// store can make one; it needs no key.
pub fn forged_deletion(v: &EntryVersion) -> EntryVersion {
    EntryVersion { revision: Revision(v.revision.0 + 1), meta: None, chunks: vec![], ..v.clone() }
}

/// A malicious device of the same account: it knows the password, so it
/// holds the account's keys and can seal anything, and commits through the
/// real store like any device.
pub struct MaliciousDevice {
    rt: tokio::runtime::Runtime,
    remote: coffer_engine::remote::HttpRemote,
    keys: coffer_crypto::AccountKeys,
}

impl std::fmt::Debug for MaliciousDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaliciousDevice(****)")
    }
}

impl MaliciousDevice {
    /// Logs in to `email` at the store `url` with the test password.
    pub fn login(url: &str, email: &str) -> Self {
        use rand::SeedableRng;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let accounts = coffer_engine::remote::Accounts::new(url).expect("client");
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
        let done = rt
            .block_on(accounts.login(
                &mut rng,
                email,
                crate::PASSWORD,
                coffer_proto::DeviceId::from_bytes([0xee; 16]),
                &coffer_crypto::login::KsfParams::INSECURE_FAST,
            ))
            .expect("the malicious device logs in");
        Self { rt, remote: done.remote, keys: done.master.derive() }
    }

    /// Commits, as a new entry (or over `base`), metadata naming `path` with
    /// `node` (JSON of the engine's `Node`), sealed for `entry`; returns the
    /// store's answer.
    pub fn commit_raw(&self, entry: EntryId, base: u64, path: &str, node: serde_json::Value) -> String {
        use coffer_engine::remote::Remote;
        use rand::SeedableRng;
        let plain =
            serde_json::to_vec(&serde_json::json!({"v": 1, "path": path, "node": node})).expect("json");
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(base);
        let meta = self.keys.meta.seal(&mut rng, &entry, Revision(base + 1), &plain);
        let change = Change {
            entry_id: entry,
            base_revision: Revision(base),
            meta: Some(meta),
            chunks: vec![],
            delta: None,
        };
        format!("{:?}", self.rt.block_on(self.remote.commit(&[change])).expect("commit"))
    }

    /// Commits a new folder at `path`, under the entry id that path hashes to
    /// (so only the engine's name checks stand in the way).
    pub fn mkdir(&self, path: &str) -> String {
        let node = serde_json::json!({"kind": "dir", "size": 0, "mtime_ns": 0, "executable": false, "hash": null, "target": null});
        self.commit_raw(self.keys.path.entry_id(path), 0, path, node)
    }

    /// The entry id of a path, for this account.
    pub fn entry_id(&self, path: &str) -> EntryId {
        self.keys.path.entry_id(path)
    }
}
