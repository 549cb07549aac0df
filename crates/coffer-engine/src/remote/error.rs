//! Errors of the remote client. An API refusal carries the store's stable
//! [`ErrorCode`]; transport failures are retryable; a chunk that does not
//! match its id is retryable too (fetch it again), since it was damaged in
//! transit or storage, not by the request.

use coffer_crypto::login::LoginError;
use coffer_proto::api::{ErrorBody, ErrorCode};
use coffer_proto::ChunkId;

/// Why a call to the store failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The store answered with an error.
    #[error("store refused ({status} {}): {}", .body.code, .body.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The store's error body.
        body: ErrorBody,
    },
    /// The request did not complete (connection, timeout, TLS).
    #[error("cannot reach the store: {0}")]
    Transport(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer from the store: {0}")]
    Protocol(String),
    /// A downloaded chunk does not hash to its id.
    #[error("chunk {0} arrived corrupted")]
    CorruptChunk(ChunkId),
    /// Login or signup failed on the client side.
    #[error(transparent)]
    Login(#[from] LoginError),
}

impl RemoteError {
    /// The store's error code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { body, .. } => body.code.is_retryable(),
            Self::Transport(_) | Self::CorruptChunk(_) => true,
            Self::Protocol(_) => false,
            Self::Login(e) => e.is_retryable(),
        }
    }
}

impl From<reqwest::Error> for RemoteError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            Self::Protocol(e.to_string())
        } else {
            Self::Transport(e.to_string())
        }
    }
}
