//! [`RetryRemote`]: retries a [`Remote`]'s calls that failed in a way that
//! retrying can help (connection refused or reset, timeouts, 5xx, rate
//! limits, a chunk corrupted in transit), with exponential backoff and the
//! store's `retry_after_ms` when it gives one. A cross-cutting wrapper, as
//! restic's `backend/retry`: the engine keeps its own round-level backoff
//! for outages; this smooths over single failed requests inside a round.
//!
//! Every call is safe to repeat: uploads are idempotent, and a commit that
//! was applied but whose answer was lost comes back as `conflict` on the
//! retry (its base revision moved), which the next round resolves by
//! pulling the change and finding the same content.
//!
//! Long-polls are not retried here: their caller loops anyway.

use std::future::Future;
use std::time::Duration;

use coffer_proto::api::{
    Change, CommitResponse, EntryVersion, JournalPage, PreviewPage, SessionId, SessionInfo, SnapshotPage,
    UploadChunksResponse, Usage,
};
use coffer_proto::{ChunkId, Cursor, EntryId, Revision, SealedChunk, SealedPreview};

use super::{Remote, RemoteError};

/// A [`Remote`] that retries retryable failures.
#[derive(Debug, Clone)]
pub struct RetryRemote<R> {
    inner: R,
    attempts: u32,
    first_delay: Duration,
}

impl<R: Remote> RetryRemote<R> {
    /// Up to 4 attempts, waiting 200 ms, 400 ms, 800 ms between them.
    pub fn new(inner: R) -> Self {
        Self::with_policy(inner, 4, Duration::from_millis(200))
    }

    /// A custom policy (`attempts` at least 1).
    pub fn with_policy(inner: R, attempts: u32, first_delay: Duration) -> Self {
        Self { inner, attempts: attempts.max(1), first_delay }
    }

    /// The wrapped remote.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, RemoteError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RemoteError>>,
    {
        let mut delay = self.first_delay;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    let asked = match &e {
                        RemoteError::Api { body, .. } => body.retry_after_ms.map(Duration::from_millis),
                        _ => None,
                    };
                    let wait = asked.unwrap_or(delay).min(Duration::from_secs(30));
                    tracing::debug!(error = %e, attempt, ?wait, "retrying a store call");
                    tokio::time::sleep(wait).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl<R: Remote> Remote for RetryRemote<R> {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        self.retry(|| self.inner.missing_chunks(ids)).await
    }

    async fn upload_chunks(&self, chunks: &[SealedChunk]) -> Result<UploadChunksResponse, RemoteError> {
        self.retry(|| self.inner.upload_chunks(chunks)).await
    }

    async fn download_chunk(&self, id: ChunkId) -> Result<SealedChunk, RemoteError> {
        self.retry(|| self.inner.download_chunk(id)).await
    }

    async fn download_chunks(&self, ids: &[ChunkId]) -> Result<Vec<SealedChunk>, RemoteError> {
        self.retry(|| self.inner.download_chunks(ids)).await
    }

    async fn commit(&self, changes: &[Change]) -> Result<CommitResponse, RemoteError> {
        self.retry(|| self.inner.commit(changes)).await
    }

    async fn journal(&self, after: Cursor, limit: Option<u32>) -> Result<JournalPage, RemoteError> {
        self.retry(|| self.inner.journal(after, limit)).await
    }

    async fn wait_journal(&self, after: Cursor, timeout: Duration) -> Result<JournalPage, RemoteError> {
        self.inner.wait_journal(after, timeout).await
    }

    async fn snapshot(
        &self,
        after: Option<EntryId>,
        limit: Option<u32>,
    ) -> Result<SnapshotPage, RemoteError> {
        self.retry(|| self.inner.snapshot(after, limit)).await
    }

    async fn versions(&self, entry: EntryId) -> Result<Vec<EntryVersion>, RemoteError> {
        self.retry(|| self.inner.versions(entry)).await
    }

    async fn version(&self, entry: EntryId, revision: Revision) -> Result<EntryVersion, RemoteError> {
        self.retry(|| self.inner.version(entry, revision)).await
    }

    async fn usage(&self) -> Result<Usage, RemoteError> {
        self.retry(|| self.inner.usage()).await
    }

    async fn sessions(&self) -> Result<Vec<SessionInfo>, RemoteError> {
        self.retry(|| self.inner.sessions()).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<(), RemoteError> {
        self.retry(|| self.inner.revoke_session(id)).await
    }

    /// Not retried: a preview is a hint, and a late one is of no use.
    async fn post_preview(&self, sealed: &SealedPreview) -> Result<(), RemoteError> {
        self.inner.post_preview(sealed).await
    }

    async fn wait_previews(&self, after: Option<u64>, timeout: Duration) -> Result<PreviewPage, RemoteError> {
        self.inner.wait_previews(after, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use coffer_proto::api::{ErrorBody, ErrorCode};

    use super::*;

    /// Fails `fail` times with `err`, then answers usage.
    struct Flaky {
        fail: u32,
        calls: AtomicU32,
        err: fn() -> RemoteError,
    }

    impl Remote for Flaky {
        async fn missing_chunks(&self, _: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn upload_chunks(&self, _: &[SealedChunk]) -> Result<UploadChunksResponse, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn download_chunk(&self, _: ChunkId) -> Result<SealedChunk, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn commit(&self, _: &[Change]) -> Result<CommitResponse, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn journal(&self, _: Cursor, _: Option<u32>) -> Result<JournalPage, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn wait_journal(&self, _: Cursor, _: Duration) -> Result<JournalPage, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn snapshot(&self, _: Option<EntryId>, _: Option<u32>) -> Result<SnapshotPage, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn versions(&self, _: EntryId) -> Result<Vec<EntryVersion>, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn version(&self, _: EntryId, _: Revision) -> Result<EntryVersion, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn usage(&self) -> Result<Usage, RemoteError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                Err((self.err)())
            } else {
                Ok(Usage { used_bytes: 1, quota_bytes: 2 })
            }
        }
        async fn sessions(&self) -> Result<Vec<SessionInfo>, RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
        async fn revoke_session(&self, _: SessionId) -> Result<(), RemoteError> {
            Err(RemoteError::Protocol("unused".into()))
        }
    }

    fn flaky(fail: u32, err: fn() -> RemoteError) -> RetryRemote<Flaky> {
        RetryRemote::with_policy(Flaky { fail, calls: AtomicU32::new(0), err }, 4, Duration::from_millis(1))
    }

    #[tokio::test]
    async fn retries_transient_failures_then_gives_up() {
        let transport = || RemoteError::Transport("connection reset".into());
        let r = flaky(3, transport);
        assert_eq!(r.usage().await.unwrap().used_bytes, 1);
        assert_eq!(r.inner().calls.load(Ordering::SeqCst), 4);

        let r = flaky(4, transport);
        assert!(matches!(r.usage().await, Err(RemoteError::Transport(_))));
        assert_eq!(r.inner().calls.load(Ordering::SeqCst), 4, "gave up after 4 attempts");
    }

    #[tokio::test]
    async fn does_not_retry_what_cannot_succeed() {
        let denied = || RemoteError::Api {
            status: 401,
            body: ErrorBody {
                code: ErrorCode::Unauthorized,
                message: "revoked".into(),
                missing_chunks: vec![],
                retry_after_ms: None,
            },
        };
        let r = flaky(1, denied);
        assert!(r.usage().await.is_err());
        assert_eq!(r.inner().calls.load(Ordering::SeqCst), 1);
    }
}
