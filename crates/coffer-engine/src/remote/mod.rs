//! The client side of the cloud store's wire: the [`Remote`] trait, the
//! narrow seam through which the sync engine talks to the store, and
//! [`HttpRemote`], its HTTP implementation (plus [`Accounts`] for signup and
//! login, which happen before there is a session).
//!
//! The trait is dyn-free (methods return `impl Future + Send`), so wrappers
//! for retry, rate limiting, logging or fault injection implement it around
//! another `Remote`, and the simulation can implement it over an in-process
//! service.
//!
//! Everything that comes back is checked where it can be: a downloaded chunk
//! must hash to its id. Errors say whether retrying can help
//! ([`RemoteError::is_retryable`]).

mod account;
mod error;
mod http;
mod retry;

use std::future::Future;
use std::time::Duration;

use coffer_proto::api::{
    Change, CommitResponse, EntryVersion, ErrorBody, ErrorCode, JournalPage, PreviewPage, SessionId,
    SessionInfo, SnapshotPage, UploadChunksResponse, Usage,
};
use coffer_proto::{ChunkId, Cursor, EntryId, Revision, SealedChunk, SealedPreview};

pub use account::{Accounts, LoggedIn};
pub use error::RemoteError;
pub use http::HttpRemote;
pub use retry::RetryRemote;

/// What the sync engine needs from the cloud store, for one logged-in
/// device session.
pub trait Remote: Send + Sync {
    /// The subset of `ids` the store lacks.
    fn missing_chunks(
        &self,
        ids: &[ChunkId],
    ) -> impl Future<Output = Result<Vec<ChunkId>, RemoteError>> + Send;
    /// Uploads a batch of sealed chunks (idempotent).
    fn upload_chunks(
        &self,
        chunks: &[SealedChunk],
    ) -> impl Future<Output = Result<UploadChunksResponse, RemoteError>> + Send;
    /// Downloads one chunk, verified against its id.
    fn download_chunk(&self, id: ChunkId) -> impl Future<Output = Result<SealedChunk, RemoteError>> + Send;
    /// Downloads several chunks at once, each verified against its id; one
    /// the store lacks is left out. By default one [`Remote::download_chunk`]
    /// after another.
    fn download_chunks(
        &self,
        ids: &[ChunkId],
    ) -> impl Future<Output = Result<Vec<SealedChunk>, RemoteError>> + Send {
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match self.download_chunk(*id).await {
                    Ok(c) => out.push(c),
                    Err(e) if e.code() == Some(coffer_proto::api::ErrorCode::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        }
    }
    /// Commits a batch of entry changes.
    fn commit(&self, changes: &[Change]) -> impl Future<Output = Result<CommitResponse, RemoteError>> + Send;
    /// A page of the journal after `after`.
    fn journal(
        &self,
        after: Cursor,
        limit: Option<u32>,
    ) -> impl Future<Output = Result<JournalPage, RemoteError>> + Send;
    /// Long-poll: the journal after `after`, as soon as there is something,
    /// or an empty page after `timeout`.
    fn wait_journal(
        &self,
        after: Cursor,
        timeout: Duration,
    ) -> impl Future<Output = Result<JournalPage, RemoteError>> + Send;
    /// A page of live entries (a new device's starting state).
    fn snapshot(
        &self,
        after: Option<EntryId>,
        limit: Option<u32>,
    ) -> impl Future<Output = Result<SnapshotPage, RemoteError>> + Send;
    /// Every kept revision of an entry, newest first.
    fn versions(&self, entry: EntryId)
        -> impl Future<Output = Result<Vec<EntryVersion>, RemoteError>> + Send;
    /// One kept revision of an entry.
    fn version(
        &self,
        entry: EntryId,
        revision: Revision,
    ) -> impl Future<Output = Result<EntryVersion, RemoteError>> + Send;
    /// Bytes used and quota.
    fn usage(&self) -> impl Future<Output = Result<Usage, RemoteError>> + Send;
    /// The account's device sessions.
    fn sessions(&self) -> impl Future<Output = Result<Vec<SessionInfo>, RemoteError>> + Send;
    /// Revokes a session (this one included: it stops working at once).
    fn revoke_session(&self, id: SessionId) -> impl Future<Output = Result<(), RemoteError>> + Send;
    /// Posts a preview of a large upload under way for the account's other
    /// devices (a hint, see `sync::preview`). By default the store has no
    /// previews, as a store from before them answers.
    fn post_preview(&self, sealed: &SealedPreview) -> impl Future<Output = Result<(), RemoteError>> + Send {
        let _ = sealed;
        async { Err(no_previews()) }
    }
    /// Long-poll: the previews the account's other devices posted after
    /// `after` (without it, at once: the current position). By default the
    /// store has no previews.
    fn wait_previews(
        &self,
        after: Option<u64>,
        timeout: Duration,
    ) -> impl Future<Output = Result<PreviewPage, RemoteError>> + Send {
        let _ = (after, timeout);
        async { Err(no_previews()) }
    }
}

/// What a store without previews answers about them (`404 not_found`).
pub fn no_previews() -> RemoteError {
    RemoteError::Api {
        status: 404,
        body: ErrorBody {
            code: ErrorCode::NotFound,
            message: "endpoint not found".into(),
            missing_chunks: vec![],
            retry_after_ms: None,
        },
    }
}
