//! Entries: commit, journal (paged and long-poll), snapshot, versions.
//!
//! A restore is not a separate operation: metadata is sealed to its entry
//! and revision, so the client fetches the old revision
//! ([`Service::version`]), reseals it for the next revision and commits it.

use std::time::Duration;

use coffer_proto::api::Change;
use coffer_proto::api::{
    CommitResponse, EntryVersion, JournalPage, SnapshotPage, VersionsResponse, MAX_IDS_PER_REQUEST,
};
use coffer_proto::{Cursor, EntryId, Revision};

use super::{Caller, Service};
use crate::ServiceError;

impl Service {
    /// Applies a batch of changes (rules: [`crate::store::commit`]) and wakes
    /// the account's long-polls.
    pub async fn commit(&self, caller: Caller, changes: Vec<Change>) -> Result<CommitResponse, ServiceError> {
        if changes.is_empty() || changes.len() > MAX_IDS_PER_REQUEST {
            return Err(ServiceError::BadRequest(format!(
                "a commit holds 1 to {MAX_IDS_PER_REQUEST} changes"
            )));
        }
        let chunk_refs: usize = changes.iter().map(|c| c.chunks.len()).sum();
        if chunk_refs > 16 * MAX_IDS_PER_REQUEST {
            return Err(ServiceError::BadRequest("too many chunk references in one commit".into()));
        }
        let now = self.now();
        let (results, cursor) =
            self.meta(move |m| m.commit(caller.account, caller.device, now, &changes)).await?;
        self.inner.notifier.publish(caller.account, cursor);
        Ok(CommitResponse { results, cursor })
    }

    fn page_limit(&self, limit: Option<u32>) -> u32 {
        limit.unwrap_or(self.inner.config.max_page).clamp(1, self.inner.config.max_page)
    }

    /// Journal changes after `after`.
    pub async fn journal(
        &self,
        caller: Caller,
        after: Cursor,
        limit: Option<u32>,
    ) -> Result<JournalPage, ServiceError> {
        let limit = self.page_limit(limit);
        self.meta(move |m| m.journal(caller.account, after, limit)).await
    }

    /// Like [`Service::journal`], but when nothing is new, waits up to
    /// `timeout` (capped by the configuration) for a commit, and returns an
    /// empty page if none comes.
    pub async fn wait_journal(
        &self,
        caller: Caller,
        after: Cursor,
        limit: Option<u32>,
        timeout: Duration,
    ) -> Result<JournalPage, ServiceError> {
        let timeout = timeout.min(self.inner.config.max_long_poll);
        let (mut rx, fresh) = self.inner.notifier.subscribe(caller.account);
        if fresh {
            let head = self.meta(move |m| m.head(caller.account)).await?;
            self.inner.notifier.seed(caller.account, head);
        }
        let woke = *rx.borrow_and_update() > after.0
            || matches!(tokio::time::timeout(timeout, rx.wait_for(|h| *h > after.0)).await, Ok(Ok(_)));
        if !woke {
            // Still check the store: a cursor below the journal floor must hear so.
            let limit = self.page_limit(limit);
            return self.meta(move |m| m.journal(caller.account, after, limit)).await;
        }
        self.journal(caller, after, limit).await
    }

    /// How many long-polls this service holds right now.
    pub fn long_polls_waiting(&self) -> usize {
        self.inner.notifier.waiting()
    }

    /// A page of live entries (see [`SnapshotPage`] for how a new device uses it).
    pub async fn snapshot(
        &self,
        caller: Caller,
        after: Option<EntryId>,
        limit: Option<u32>,
    ) -> Result<SnapshotPage, ServiceError> {
        let limit = self.page_limit(limit);
        self.meta(move |m| m.snapshot(caller.account, after, limit)).await
    }

    /// Every kept revision of an entry, newest first.
    pub async fn versions(&self, caller: Caller, entry: EntryId) -> Result<VersionsResponse, ServiceError> {
        let versions = self.meta(move |m| m.versions(caller.account, entry)).await?;
        if versions.is_empty() {
            return Err(ServiceError::NotFound("entry"));
        }
        Ok(VersionsResponse { versions })
    }

    /// One kept revision of an entry.
    pub async fn version(
        &self,
        caller: Caller,
        entry: EntryId,
        revision: Revision,
    ) -> Result<EntryVersion, ServiceError> {
        let versions = self.meta(move |m| m.versions(caller.account, entry)).await?;
        versions.into_iter().find(|v| v.revision == revision).ok_or(ServiceError::NotFound("revision"))
    }
}
