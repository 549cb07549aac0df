//! The service's one error type. Each variant maps to one stable wire
//! [`ErrorCode`]; the HTTP layer turns it into a status and an [`ErrorBody`]
//! through [`ServiceError::body`] and [`ErrorCode::http_status`], in one
//! place. Internal details (database messages, I/O paths) are logged, never
//! sent to the client.

use coffer_proto::api::{ErrorBody, ErrorCode};
use coffer_proto::ChunkId;

use crate::store::StoreError;

/// Why a service call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No valid session, or a failed login.
    #[error("not authorised: log in again")]
    Unauthorized,
    /// The named thing does not exist for this account.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The account name is taken.
    #[error("that account name is already taken")]
    AlreadyExists,
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An uploaded chunk does not hash to its id.
    #[error("chunk {0} does not match its id")]
    ChunkHashMismatch(ChunkId),
    /// A commit named chunks the store lacks.
    #[error("{} chunk(s) must be uploaded before this commit", .0.len())]
    ChunkMissing(Vec<ChunkId>),
    /// A commit would exceed the quota.
    #[error("quota exceeded: this commit needs {needed} bytes, the quota is {quota}")]
    QuotaExceeded {
        /// Usage after the commit.
        needed: u64,
        /// The quota.
        quota: u64,
    },
    /// Too many login attempts.
    #[error("too many login attempts; retry in {retry_after_ms} ms")]
    RateLimited {
        /// Wait this long.
        retry_after_ms: u64,
    },
    /// The journal cursor predates pruning.
    #[error("journal cursor expired; take a fresh snapshot")]
    CursorExpired,
    /// Busy with this object; retry shortly.
    #[error("busy; retry shortly")]
    RetryLater,
    /// The body is over its limit.
    #[error("request body too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The client was too slow.
    #[error("request timed out")]
    Timeout,
    /// A fault in the store.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The stable wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists => ErrorCode::AlreadyExists,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::ChunkHashMismatch(_) => ErrorCode::ChunkHashMismatch,
            Self::ChunkMissing(_) => ErrorCode::ChunkMissing,
            Self::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::CursorExpired => ErrorCode::CursorExpired,
            Self::RetryLater => ErrorCode::RetryLater,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::Timeout => ErrorCode::Timeout,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }

    /// The JSON body sent to the client.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            Self::Internal(_) => "internal error; retry later".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            code: self.code(),
            message,
            missing_chunks: match self {
                Self::ChunkMissing(ids) => ids.clone(),
                _ => Vec::new(),
            },
            retry_after_ms: match self {
                Self::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchAccount => Self::Unauthorized,
            StoreError::AlreadyExists => Self::AlreadyExists,
            StoreError::ChunkMissing(ids) => Self::ChunkMissing(ids),
            StoreError::QuotaExceeded { needed, quota } => Self::QuotaExceeded { needed, quota },
            e @ StoreError::DeltaMismatch(_) => Self::BadRequest(e.to_string()),
            StoreError::ChunkBusy => Self::RetryLater,
            StoreError::CursorExpired(_) => Self::CursorExpired,
            StoreError::Backend(m) => Self::Internal(m),
        }
    }
}
