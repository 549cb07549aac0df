//! Every request, response and error type of the cloud store's HTTP API
//! (`docs/api.md` is the table of endpoints). The client (`coffer-engine`'s
//! `remote`) and the server (`coffer-server`'s `http`) both use these, so the
//! two cannot drift apart.
//!
//! Conventions:
//! - JSON bodies, except chunk bytes: an upload is a [`chunk_batch`] frame
//!   sequence and a download is the raw sealed bytes.
//! - Times are [`UnixMillis`]. Binary values (OPAQUE messages, sealed data)
//!   are base64 in JSON; ids are lowercase hex.
//! - Every error is an [`ErrorBody`] with a stable [`ErrorCode`]; the HTTP
//!   status of each code is fixed by [`ErrorCode::http_status`], in this one
//!   place.
//! - A commit names, beside its sealed metadata, the chunk ids that metadata
//!   references. Chunk ids reveal nothing about content; the store needs them
//!   to refuse commits naming chunks it lacks, for quota and for garbage
//!   collection.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{
    ChunkId, Cursor, DeviceId, EntryId, ListDigest, Revision, SealedChunk, SealedMeta, SealedPreview,
    SealedSettings, WrappedKey,
};

/// Why a textual session or login id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: expected {len} hex characters")]
pub struct TokenParseError {
    kind: &'static str,
    len: usize,
}

/// Path prefix of every endpoint.
pub const API_PREFIX: &str = "/v1";

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self + ms`, saturating.
    #[must_use]
    pub const fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// `self - ms`, saturating at the epoch.
    #[must_use]
    pub const fn minus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_sub(ms))
    }
}

/// Base64 bytes in JSON: OPAQUE protocol messages and other opaque blobs.
#[derive(Clone, PartialEq, Eq)]
pub struct Base64Bytes(pub Vec<u8>);

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        data_encoding::BASE64.decode(s.as_bytes()).map(Self).map_err(serde::de::Error::custom)
    }
}

macro_rules! define_hex_token {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), hex::encode(self.0))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl FromStr for $name {
            type Err = TokenParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; $len];
                if s.len() != $len * 2 || hex::decode_to_slice(s, &mut out).is_err() {
                    return Err(TokenParseError { kind: stringify!($name), len: $len * 2 });
                }
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_hex_token!(
    /// A device session (one login of one device). Not a secret: it names
    /// the session for listing and revocation; the [`SessionToken`] is the
    /// credential.
    SessionId,
    16
);
define_hex_token!(
    /// Names a login in progress between its two round trips. Used once.
    LoginId,
    16
);

/// The bearer credential of a session: 256 random bits, hex. The store keeps
/// only its BLAKE3 hash. It must travel once (in the login answer) and then
/// in every `Authorization: Bearer` header, so it serialises, but it prints as
/// `****` and is zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionToken(String);

impl SessionToken {
    /// Wraps a token string.
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token, for the `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(****)")
    }
}

// ---------------------------------------------------------------- errors

/// Stable error codes. Clients match on these, never on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, unknown, expired or revoked session token; or a failed login.
    Unauthorized,
    /// The thing asked for does not exist (for this account).
    NotFound,
    /// Optimistic concurrency failed (see [`ChangeResult::Conflict`]).
    Conflict,
    /// The account name is taken.
    AlreadyExists,
    /// The commit would take the account over its quota. Nothing was applied.
    QuotaExceeded,
    /// The commit names chunks the store lacks ([`ErrorBody::missing_chunks`]).
    /// Nothing was applied; upload them and commit again.
    ChunkMissing,
    /// An uploaded chunk does not hash to its id. Nothing was stored.
    ChunkHashMismatch,
    /// The request body is over the size limit.
    PayloadTooLarge,
    /// Malformed request: bad JSON, bad framing, bad parameter.
    BadRequest,
    /// Too many login attempts; wait [`ErrorBody::retry_after_ms`].
    RateLimited,
    /// The journal before this cursor was pruned (old deletions expire): take
    /// a fresh snapshot.
    CursorExpired,
    /// The store is busy with this object (a chunk being garbage collected):
    /// retry shortly.
    RetryLater,
    /// The client was too slow sending its request.
    Timeout,
    /// A fault in the store. Retry later.
    Internal,
    /// A code this build does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status that carries this code. The one mapping.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::Conflict | Self::AlreadyExists | Self::ChunkMissing => 409,
            Self::CursorExpired => 410,
            Self::QuotaExceeded => 507,
            Self::ChunkHashMismatch | Self::BadRequest => 400,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::RetryLater => 503,
            Self::Timeout => 408,
            Self::Internal | Self::Unknown => 500,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::RetryLater | Self::Timeout | Self::Internal)
    }

    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::AlreadyExists => "already_exists",
            Self::QuotaExceeded => "quota_exceeded",
            Self::ChunkMissing => "chunk_missing",
            Self::ChunkHashMismatch => "chunk_hash_mismatch",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BadRequest => "bad_request",
            Self::RateLimited => "rate_limited",
            Self::CursorExpired => "cursor_expired",
            Self::RetryLater => "retry_later",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// A sentence a person can read; not for matching.
    pub message: String,
    /// With [`ErrorCode::ChunkMissing`]: the chunks to upload first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_chunks: Vec<ChunkId>,
    /// With [`ErrorCode::RateLimited`]: how long to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

// ---------------------------------------------------------------- accounts

/// `POST /v1/accounts/register/start`: OPAQUE registration, first message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterStartRequest {
    /// Account name (e.g. an e-mail address). The store sees it.
    pub username: String,
    /// OPAQUE `RegistrationRequest`.
    pub request: Base64Bytes,
}

/// Answer to [`RegisterStartRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterStartResponse {
    /// OPAQUE `RegistrationResponse`.
    pub response: Base64Bytes,
}

/// `POST /v1/accounts/register/finish`: stores the OPAQUE record and the
/// wrapped master key. Fails with `already_exists` if the name is taken.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterFinishRequest {
    /// Same name as in the start message.
    pub username: String,
    /// OPAQUE `RegistrationUpload` (the record the store keeps).
    pub upload: Base64Bytes,
    /// The master key wrapped under the key from the OPAQUE export key.
    pub wrapped_key: WrappedKey,
    /// The account's settings, sealed (at most 1 KiB). Accounts made
    /// before settings existed have none, and keep the sizes of then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SealedSettings>,
}

/// Answer to [`RegisterFinishRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterFinishResponse {
    /// The account's quota in bytes.
    pub quota_bytes: u64,
}

/// `POST /v1/accounts/login/start`: OPAQUE login, first message (KE1). The
/// answer looks the same whether or not the account exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginStartRequest {
    /// Account name.
    pub username: String,
    /// OPAQUE `CredentialRequest`.
    pub request: Base64Bytes,
}

/// Answer to [`LoginStartRequest`] (KE2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginStartResponse {
    /// Names this login for the finish message; valid once, for a minute.
    pub login_id: LoginId,
    /// OPAQUE `CredentialResponse`.
    pub response: Base64Bytes,
}

/// `POST /v1/accounts/login/finish` (KE3): on success, a new device session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginFinishRequest {
    /// From [`LoginStartResponse`].
    pub login_id: LoginId,
    /// OPAQUE `CredentialFinalization`.
    pub finalization: Base64Bytes,
    /// The device logging in.
    pub device_id: DeviceId,
    /// The client honours the account's settings (every client since
    /// settings exist says so). The store refuses a login without it to an
    /// account that has settings: a client that ignored them would cut
    /// chunks with other sizes than the account's other devices.
    #[serde(default)]
    pub honours_settings: bool,
}

/// Answer to [`LoginFinishRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginFinishResponse {
    /// The bearer credential of the new session.
    pub token: SessionToken,
    /// The new session.
    pub session: SessionInfo,
    /// The master key, wrapped; the client unwraps it with its export key.
    pub wrapped_key: WrappedKey,
    /// The account's settings as sealed at signup, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SealedSettings>,
}

/// One device session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id (not a credential).
    pub id: SessionId,
    /// The device it belongs to.
    pub device_id: DeviceId,
    /// When it was made.
    pub created_at: UnixMillis,
    /// When it stops working.
    pub expires_at: UnixMillis,
    /// True for the session making the request.
    pub current: bool,
}

/// `GET /v1/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionsResponse {
    /// Live sessions of the account, oldest first.
    pub sessions: Vec<SessionInfo>,
}

/// `GET /v1/usage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Unique chunk bytes referenced by live files.
    pub used_bytes: u64,
    /// The account's limit.
    pub quota_bytes: u64,
}

// ---------------------------------------------------------------- chunks

/// `POST /v1/chunks/missing`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingChunksRequest {
    /// Ids to ask about (at most [`MAX_IDS_PER_REQUEST`]).
    pub ids: Vec<ChunkId>,
}

/// `POST /v1/chunks/get`: several chunks in one answer, for the many small
/// files of a sync (one request per chunk costs more than the chunk). The
/// answer is a [`chunk_batch`] body holding, in request order, the chunks
/// the store has; one it lacks is left out (ask for it alone to hear
/// `not_found`). At most [`MAX_IDS_PER_REQUEST`] ids and
/// [`MAX_BATCH_ANSWER_BYTES`] of sealed bytes: more is `bad_request`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetChunksRequest {
    /// The chunks wanted.
    pub ids: Vec<ChunkId>,
}

/// Most sealed bytes one [`GetChunksRequest`] answer may hold.
pub const MAX_BATCH_ANSWER_BYTES: usize = 16 << 20;

/// Answer to [`MissingChunksRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingChunksResponse {
    /// The subset the store lacks, in request order.
    pub missing: Vec<ChunkId>,
}

/// Most ids or changes in one request.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;

/// Most chunk ids one commit may name (its changes' `chunks` and deltas'
/// `dropped` together): a file whose list is longer cannot be committed
/// (about 13 GiB in 80 KiB chunks, 22 GiB in 128 KiB ones).
pub const MAX_CHUNK_REFS_PER_COMMIT: usize = 16 * MAX_IDS_PER_REQUEST;

/// Answer to `POST /v1/chunks` (a [`chunk_batch`] body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChunksResponse {
    /// Chunks written by this request.
    pub stored: u32,
    /// Chunks the store already had (uploads are idempotent).
    pub already_present: u32,
}

/// The binary body of a chunk upload: frames of
/// `id (32 bytes) || length (u32, big endian) || sealed bytes`, back to back,
/// with nothing before, between or after. Content type
/// `application/octet-stream`.
pub mod chunk_batch {
    use bytes::Bytes;

    use super::{ChunkId, SealedChunk};

    /// Why a body is not a valid frame sequence.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    #[error("malformed chunk batch at byte {offset}: {why}")]
    pub struct FramingError {
        /// Where parsing stopped.
        pub offset: usize,
        /// What was wrong.
        pub why: &'static str,
    }

    /// Bytes in a frame's head (id and length).
    pub const HEAD: usize = 36;

    /// The head of `c`'s frame: its id and length. A body is each chunk's
    /// head followed by its bytes (what [`encode`] writes into one buffer).
    pub fn head(c: &SealedChunk) -> [u8; HEAD] {
        let mut head = [0u8; HEAD];
        head[..32].copy_from_slice(c.id().as_bytes());
        head[32..].copy_from_slice(&u32::try_from(c.len()).unwrap_or(u32::MAX).to_be_bytes());
        head
    }

    /// Encodes chunks into one body.
    pub fn encode<'a>(chunks: impl IntoIterator<Item = &'a SealedChunk> + Clone) -> Vec<u8> {
        // Sized once: a batch is megabytes, and growing by doubling would
        // copy it several times and may leave twice its size allocated.
        let mut out = Vec::with_capacity(chunks.clone().into_iter().map(|c| HEAD + c.len()).sum());
        for c in chunks {
            out.extend_from_slice(&head(c));
            out.extend_from_slice(c.as_bytes());
        }
        out
    }

    /// Chunks of this many bytes or more are frames of their own in
    /// [`frames`].
    pub const OWN_FRAME: usize = 64 * 1024;

    /// A body in the pieces it can be sent in without copying the large
    /// chunks: the heads and the small chunks copied into one buffer, sized
    /// once, and sent as slices of it between the large chunks, which go as
    /// handles on their own bytes. Together the pieces are [`encode`]'s
    /// body. (As pieces of their own, thousands of small chunks would cost
    /// more in polls and vectored-write entries than their copy.)
    pub fn frames(chunks: &[SealedChunk]) -> Vec<Bytes> {
        let copied = |c: &SealedChunk| HEAD + if c.len() < OWN_FRAME { c.len() } else { 0 };
        let mut buf = Vec::with_capacity(chunks.iter().map(copied).sum());
        // Each large chunk, with where the copied run before it ends.
        let mut large = Vec::new();
        for c in chunks {
            buf.extend_from_slice(&head(c));
            if c.len() < OWN_FRAME {
                buf.extend_from_slice(c.as_bytes());
            } else {
                large.push((buf.len(), c.shared()));
            }
        }
        let buf = Bytes::from(buf);
        let mut frames = Vec::with_capacity(2 * large.len() + 1);
        let mut start = 0;
        for (end, chunk) in large {
            frames.push(buf.slice(start..end));
            frames.push(chunk);
            start = end;
        }
        if start < buf.len() {
            frames.push(buf.slice(start..));
        }
        frames
    }

    /// Decodes a body. Does not check hashes (the store does).
    pub fn decode(body: &[u8]) -> Result<Vec<SealedChunk>, FramingError> {
        let mut d = Decoder::new(body.len());
        d.feed(body)?;
        d.finish()
    }

    /// Decodes a body as it arrives, in the pieces the transport hands
    /// over: each chunk's bytes are copied once, from those pieces into a
    /// buffer of the chunk's own (collecting the body first and copying
    /// each chunk out of it would copy every byte twice). Does not check
    /// hashes.
    ///
    /// A body longer than the `limit` it was made with is refused, and no
    /// chunk reserves more than what is left of that limit: a length in a
    /// head cannot make it reserve memory the body does not bring.
    #[derive(Debug)]
    pub struct Decoder {
        limit: usize,
        /// Bytes fed so far.
        seen: usize,
        /// Where the frame being read starts.
        frame_at: usize,
        head: [u8; HEAD],
        /// Bytes of `head` read (a head can span pieces).
        head_len: usize,
        /// The chunk whose bytes are being read: its id, its bytes so far
        /// and its length.
        chunk: Option<(ChunkId, Vec<u8>, usize)>,
        done: Vec<SealedChunk>,
    }

    impl Decoder {
        /// A decoder for a body of at most `limit` bytes.
        pub fn new(limit: usize) -> Self {
            Self { limit, seen: 0, frame_at: 0, head: [0; HEAD], head_len: 0, chunk: None, done: Vec::new() }
        }

        /// Takes the next piece of the body.
        pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), FramingError> {
            if piece.len() > self.limit - self.seen {
                return Err(FramingError { offset: self.limit, why: "longer than its limit" });
            }
            while !piece.is_empty() {
                if let Some((_, bytes, len)) = &mut self.chunk {
                    let take = (*len - bytes.len()).min(piece.len());
                    bytes.extend_from_slice(&piece[..take]);
                    (piece, self.seen) = (&piece[take..], self.seen + take);
                    if bytes.len() == *len {
                        let (id, bytes, _) = self.chunk.take().expect("a chunk is being read");
                        self.done.push(SealedChunk::from_parts(id, bytes));
                        self.frame_at = self.seen;
                    }
                    continue;
                }
                let take = (HEAD - self.head_len).min(piece.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&piece[..take]);
                (piece, self.seen, self.head_len) = (&piece[take..], self.seen + take, self.head_len + take);
                if self.head_len < HEAD {
                    continue;
                }
                self.head_len = 0;
                let id = ChunkId::from_slice(&self.head[..32]).expect("32 bytes");
                let len = u32::from_be_bytes(self.head[32..].try_into().expect("4 bytes")) as usize;
                if len == 0 {
                    return Err(FramingError { offset: self.frame_at, why: "empty chunk" });
                }
                if len > self.limit - self.seen {
                    return Err(FramingError { offset: self.frame_at, why: "truncated chunk" });
                }
                self.chunk = Some((id, Vec::with_capacity(len), len));
            }
            Ok(())
        }

        /// The chunks, once the body has ended.
        pub fn finish(self) -> Result<Vec<SealedChunk>, FramingError> {
            if self.head_len > 0 {
                return Err(FramingError { offset: self.frame_at, why: "truncated header" });
            }
            if self.chunk.is_some() {
                return Err(FramingError { offset: self.frame_at, why: "truncated chunk" });
            }
            Ok(self.done)
        }
    }

    /// Decodes a body into each chunk's id and where its bytes lie in
    /// `body`, without copying them (the store slices a received body).
    /// Does not check hashes.
    pub fn decode_ranges(body: &[u8]) -> Result<Vec<(ChunkId, std::ops::Range<usize>)>, FramingError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let header = body.get(at..at + 36).ok_or(FramingError { offset: at, why: "truncated header" })?;
            let id = ChunkId::from_slice(&header[..32]).expect("32 bytes");
            let len = u32::from_be_bytes(header[32..36].try_into().expect("4 bytes")) as usize;
            let start = at + 36;
            let end = start.saturating_add(len);
            if end > body.len() {
                return Err(FramingError { offset: at, why: "truncated chunk" });
            }
            if len == 0 {
                return Err(FramingError { offset: at, why: "empty chunk" });
            }
            out.push((id, start..end));
            at = end;
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- entries

/// One entry change in a commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The entry.
    pub entry_id: EntryId,
    /// The revision the client based this change on (0: the entry is new).
    /// The new revision is always `base_revision + 1`.
    pub base_revision: Revision,
    /// The new sealed metadata (bound to `entry_id` and `base_revision + 1`),
    /// or `None` to delete the entry.
    pub meta: Option<SealedMeta>,
    /// Every chunk id the metadata references (data chunks and chunk-list
    /// chunks). Empty for a deletion. With `delta`, only the ids the new
    /// revision adds to its base revision's list.
    #[serde(default)]
    pub chunks: Vec<ChunkId>,
    /// Present when `chunks` is a difference from the base revision's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<ChunkDelta>,
}

/// A change's chunk list given as a difference from its base revision's, so
/// that a small edit of a large file does not resend every id. The store
/// works out the whole list: the base revision's ids, less `dropped`, plus
/// the change's `chunks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDelta {
    /// Ids of the base revision's list that the new revision drops; each
    /// must be in that list.
    pub dropped: Vec<ChunkId>,
    /// [`ListDigest::of`] the whole new list. The store refuses the batch
    /// (`bad_request`, nothing applied) when the list it works out differs,
    /// so a client whose idea of the base is wrong can never leave the store
    /// with a list that misses a chunk.
    pub digest: ListDigest,
}

/// `POST /v1/commit`: a batch of changes. Each is applied or answered
/// `conflict` on its own; the batch is refused as a whole (nothing applied)
/// only for `chunk_missing` and `quota_exceeded`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The changes, applied in order.
    pub changes: Vec<Change>,
}

/// The fate of one [`Change`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChangeResult {
    /// Accepted: the entry is now at `revision`, journal position `seq`.
    Applied {
        /// The entry.
        entry_id: EntryId,
        /// Its new revision.
        revision: Revision,
        /// The change's journal position.
        seq: Cursor,
    },
    /// Refused: the entry is not at the base revision any more.
    Conflict {
        /// The entry.
        entry_id: EntryId,
        /// Where it is now (0: it does not exist).
        current_revision: Revision,
    },
}

/// Answer to [`CommitRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitResponse {
    /// One result per change, in order.
    pub results: Vec<ChangeResult>,
    /// The journal head after this commit.
    pub cursor: Cursor,
}

/// One accepted change as the journal, the snapshot and the versions list
/// report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryVersion {
    /// Journal position of this change.
    pub seq: Cursor,
    /// The entry.
    pub entry_id: EntryId,
    /// The revision this change made.
    pub revision: Revision,
    /// Sealed metadata, or `None` for a deletion.
    pub meta: Option<SealedMeta>,
    /// Chunk ids the metadata references. The store keeps them for its
    /// own bookkeeping and leaves them out of journal and snapshot pages
    /// (clients read the chunk list from the metadata).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkId>,
    /// The device that made it.
    pub device_id: DeviceId,
    /// When the store accepted it.
    pub time: UnixMillis,
}

impl EntryVersion {
    /// True for a deletion.
    pub fn is_deleted(&self) -> bool {
        self.meta.is_none()
    }
}

/// Query of `GET /v1/journal` and `GET /v1/journal/wait`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct JournalQuery {
    /// The last position the client has seen.
    pub after: Cursor,
    /// Most changes to return (server caps it). On the long-poll, `0` asks
    /// only to be woken: the page holds no changes and its cursor is the
    /// journal head, for a client that pulls the journal itself.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Long-poll only: how long to hold the request when nothing is new
    /// (server caps it).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A page of the journal, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalPage {
    /// Changes with `seq > after`, in order.
    pub changes: Vec<EntryVersion>,
    /// The position to ask from next (the last `seq` returned, or `after`).
    pub cursor: Cursor,
    /// True when more changes wait beyond this page.
    pub more: bool,
}

/// Largest sealed preview the store takes (`POST /v1/previews`), bytes.
pub const MAX_PREVIEW_BYTES: usize = 64 << 10;

/// Body of `POST /v1/previews`: a preview of a large upload under way,
/// for the account's other devices (see [`SealedPreview`]). A hint only:
/// the store may drop it at any time, and nothing depends on it but speed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PostPreview {
    /// The sealed preview, at most [`MAX_PREVIEW_BYTES`].
    pub sealed: SealedPreview,
}

/// Query of `GET /v1/previews/wait`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct PreviewQuery {
    /// The last preview position the client has seen; without it, the
    /// answer is at once the current position and no previews (a client
    /// starts from now: older previews are of uploads it can no longer
    /// follow from their start).
    #[serde(default)]
    pub after: Option<u64>,
    /// How long to hold the request when nothing is new (server caps it).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Answer of `GET /v1/previews/wait`: the previews other devices of the
/// account posted after `after` that the store still holds, oldest first.
/// Some may be missing (the store keeps few, briefly).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PreviewPage {
    /// The position to ask from next.
    pub cursor: u64,
    /// The previews, oldest first.
    pub previews: Vec<SealedPreview>,
}

/// Query of `GET /v1/snapshot`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SnapshotQuery {
    /// Continue after this entry id (from [`SnapshotPage::next`]).
    #[serde(default)]
    pub after: Option<EntryId>,
    /// Most entries to return (server caps it).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A page of the current state: the latest revision of every live entry,
/// ordered by entry id. A new device keeps the `cursor` of its **first**
/// page, reads every page, then follows the journal from that cursor. Pages
/// read later may already show newer revisions; the journal replays those
/// changes too, and the client ignores any revision not above what it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// Live entries.
    pub entries: Vec<EntryVersion>,
    /// The journal head when this page was read.
    pub cursor: Cursor,
    /// Where the next page starts, if there is one.
    pub next: Option<EntryId>,
}

/// `GET /v1/entries/{entry_id}/versions`: every kept revision, newest first.
/// A restore is an ordinary commit of the old metadata resealed by the client
/// for the next revision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionsResponse {
    /// Kept revisions (deletions included), newest first.
    pub versions: Vec<EntryVersion>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_batch_round_trip_and_malformed_bodies() {
        let a = SealedChunk::from_parts(ChunkId::from_bytes([1; 32]), vec![1, 2, 3]);
        let b = SealedChunk::from_parts(ChunkId::from_bytes([2; 32]), vec![9; 1000]);
        let body = chunk_batch::encode([&a, &b]);
        assert_eq!(body.len(), 2 * 36 + 3 + 1000);
        assert_eq!(chunk_batch::decode(&body).unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(chunk_batch::decode_ranges(&body).unwrap(), vec![(a.id(), 36..39), (b.id(), 75..1075)]);
        assert_eq!(chunk_batch::decode(&[]).unwrap(), vec![]);
        assert_eq!(chunk_batch::decode(&body[..10]).unwrap_err().why, "truncated header");
        assert_eq!(chunk_batch::decode(&body[..38]).unwrap_err().why, "truncated chunk");
        let mut empty = chunk_batch::encode([&a]);
        empty[32..36].copy_from_slice(&0u32.to_be_bytes());
        empty.truncate(36);
        assert_eq!(chunk_batch::decode(&empty).unwrap_err().why, "empty chunk");
    }

    #[test]
    fn the_frames_are_the_encoded_batch_with_large_chunks_uncopied() {
        use chunk_batch::{HEAD, OWN_FRAME};
        let chunk = |n: u8, len: usize| SealedChunk::from_parts(ChunkId::from_bytes([n; 32]), vec![n; len]);
        let chunks = vec![
            chunk(1, 10),
            chunk(2, OWN_FRAME),
            chunk(3, 0),
            chunk(4, OWN_FRAME - 1),
            chunk(5, 3 * OWN_FRAME),
            chunk(6, 7),
        ];
        let framed = chunk_batch::frames(&chunks);
        let lens: Vec<usize> = framed.iter().map(|f| f.len()).collect();
        let h = HEAD;
        assert_eq!(lens, [h + 10 + h, OWN_FRAME, h + h + OWN_FRAME - 1 + h, 3 * OWN_FRAME, h + 7]);
        assert_eq!(framed.concat(), chunk_batch::encode(&chunks));
        // The large chunks are their own bytes, not copies.
        assert_eq!(framed[1].as_ptr(), chunks[1].as_bytes().as_ptr());
        assert_eq!(framed[3].as_ptr(), chunks[4].as_bytes().as_ptr());
        assert!(chunk_batch::frames(&[]).is_empty());
    }

    #[test]
    fn a_batch_decodes_the_same_in_any_pieces_and_not_beyond_its_limit() {
        let chunks: Vec<SealedChunk> = (1..=4u8)
            .map(|i| SealedChunk::from_parts(ChunkId::from_bytes([i; 32]), vec![i; 37 * usize::from(i)]))
            .collect();
        let body = chunk_batch::encode(&chunks);
        for piece in [1, 2, 7, 35, 36, 37, 100, body.len()] {
            let mut d = chunk_batch::Decoder::new(body.len());
            for p in body.chunks(piece) {
                d.feed(p).unwrap();
            }
            assert_eq!(d.finish().unwrap(), chunks, "pieces of {piece}");
        }
        // Cut anywhere, the body is refused as decode_ranges refuses it.
        for cut in 1..body.len() {
            let mut d = chunk_batch::Decoder::new(body.len());
            d.feed(&body[..cut]).unwrap();
            match (d.finish(), chunk_batch::decode_ranges(&body[..cut])) {
                (Ok(got), Ok(ranges)) => assert_eq!(got, chunks[..ranges.len()], "cut at {cut}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "cut at {cut}"),
                (a, b) => panic!("cut at {cut}: {a:?} against {b:?}"),
            }
        }
        // A body longer than the limit, and a head that claims more than
        // the limit leaves, are refused as they arrive.
        let mut d = chunk_batch::Decoder::new(body.len() - 1);
        assert_eq!(d.feed(&body).unwrap_err().why, "longer than its limit");
        let mut d = chunk_batch::Decoder::new(1 << 20);
        let mut huge = body[..36].to_vec();
        huge[32..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            d.feed(&huge).unwrap_err(),
            chunk_batch::FramingError { offset: 0, why: "truncated chunk" }
        );
    }

    #[test]
    fn error_codes_are_stable_strings() {
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::AlreadyExists,
            ErrorCode::QuotaExceeded,
            ErrorCode::ChunkMissing,
            ErrorCode::ChunkHashMismatch,
            ErrorCode::PayloadTooLarge,
            ErrorCode::BadRequest,
            ErrorCode::RateLimited,
            ErrorCode::CursorExpired,
            ErrorCode::RetryLater,
            ErrorCode::Timeout,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.http_status()));
        }
        let body: ErrorBody = serde_json::from_str(r#"{"code":"from_the_future","message":"m"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
    }

    #[test]
    fn tokens_never_print() {
        let token = SessionToken::new("super-secret-token".into());
        assert_eq!(format!("{token:?}"), "SessionToken(****)");
        let resp = LoginFinishResponse {
            token,
            session: SessionInfo {
                id: SessionId::from_bytes([1; 16]),
                device_id: DeviceId::from_bytes([2; 16]),
                created_at: UnixMillis(1),
                expires_at: UnixMillis(2),
                current: true,
            },
            wrapped_key: WrappedKey::from_sealed_bytes(vec![7; 61]),
            settings: None,
        };
        assert!(!format!("{resp:?}").contains("super-secret"));
        let json = serde_json::to_string(&resp).unwrap();
        assert!(json.contains("super-secret-token"), "the wire carries it once");
        // An account without settings: the field is left out, and an answer
        // from a store that predates settings parses.
        assert!(!json.contains("settings"), "{json}");
        let back: LoginFinishResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back.settings, None);
        let with =
            LoginFinishResponse { settings: Some(SealedSettings::from_sealed_bytes(vec![1, 2])), ..back };
        let back: LoginFinishResponse = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.settings, Some(SealedSettings::from_sealed_bytes(vec![1, 2])));
    }
}
