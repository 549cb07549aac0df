//! Entries: commit, journal (paged and long-poll), snapshot, versions.
//!
//! A restore is not a separate operation: metadata is sealed to its entry
//! and revision, so the client fetches the old revision
//! ([`Service::version`]), reseals it for the next revision and commits it.

use std::time::Duration;

use coffer_proto::api::{Change, ChangeResult};
use coffer_proto::api::{
    CommitResponse, EntryVersion, JournalPage, SnapshotPage, VersionsResponse, MAX_CHUNK_REFS_PER_COMMIT,
    MAX_IDS_PER_REQUEST,
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
        let chunk_refs: usize =
            changes.iter().map(|c| c.chunks.len() + c.delta.as_ref().map_or(0, |d| d.dropped.len())).sum();
        if chunk_refs > MAX_CHUNK_REFS_PER_COMMIT {
            return Err(ServiceError::BadRequest("too many chunk references in one commit".into()));
        }
        crate::metrics::Metrics::add(&self.inner.metrics.chunk_ids_named, chunk_refs as u64);
        let now = self.now();
        let ((results, cursor), changes) = self
            .meta(move |m| m.commit(caller.account, caller.device, now, &changes).map(|r| (r, changes)))
            .await?;
        let accepted: Vec<EntryVersion> = results
            .iter()
            .zip(changes)
            .filter_map(|(r, c)| match *r {
                ChangeResult::Applied { entry_id, revision, seq } => Some(EntryVersion {
                    seq,
                    entry_id,
                    revision,
                    // Journal pages leave chunk lists out ([`strip_chunks`]).
                    chunks: Vec::new(),
                    meta: c.meta,
                    device_id: caller.device,
                    time: now,
                }),
                ChangeResult::Conflict { .. } => None,
            })
            .collect();
        crate::metrics::Metrics::add(&self.inner.metrics.commits, 1);
        crate::metrics::Metrics::add(&self.inner.metrics.changes_applied, accepted.len() as u64);
        self.inner.notifier.publish(caller.account, cursor, accepted);
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
        if let Some(page) = self.inner.notifier.page(caller.account, after, limit) {
            return Ok(page);
        }
        let mut page = self.meta(move |m| m.journal(caller.account, after, limit)).await?;
        strip_chunks(&mut page.changes);
        Ok(page)
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
        let woke = rx.borrow_and_update().head() > after
            || matches!(tokio::time::timeout(timeout, rx.wait_for(|f| f.head() > after)).await, Ok(Ok(_)));
        let head = rx.borrow().head();
        drop(rx);
        // `limit=0` asks only to be woken: the client pulls the journal
        // itself, so the changes would cross the wire twice.
        let peek = limit == Some(0);
        if !woke {
            // Still check the store: a cursor below the journal floor must hear so.
            let limit = if peek { 1 } else { self.page_limit(limit) };
            let mut page = self.meta(move |m| m.journal(caller.account, after, limit)).await?;
            if peek {
                page.changes.clear();
            }
            strip_chunks(&mut page.changes);
            return Ok(page);
        }
        if peek {
            return Ok(JournalPage { changes: Vec::new(), cursor: head, more: false });
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
        let mut page = self.meta(move |m| m.snapshot(caller.account, after, limit)).await?;
        strip_chunks(&mut page.entries);
        Ok(page)
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

/// Leaves the chunk ids out of journal and snapshot pages: a client reads a
/// revision's chunk list from its sealed metadata, and the ids would about
/// double the size of a large file's change on the wire. (Versions keep
/// them: they are read one entry at a time.)
fn strip_chunks(versions: &mut [EntryVersion]) {
    for v in versions {
        v.chunks = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use coffer_proto::api::{SessionId, UnixMillis};
    use coffer_proto::{ChunkId, DeviceId, SealedMeta, WrappedKey};
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::memory::{MemoryBlobStore, MemoryMetaStore};
    use crate::store::{MetaStore, NewAccount};

    /// The in-memory journal tail serves exactly what the store would.
    #[tokio::test]
    async fn journal_tail_matches_the_store() {
        let meta = Arc::new(MemoryMetaStore::new());
        let svc = Service::new(
            meta.clone(),
            Arc::new(MemoryBlobStore::new()),
            Arc::new(ManualClock::new(UnixMillis(1_000))),
            Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(9)),
            super::super::ServiceConfig::default(),
        )
        .await
        .unwrap();
        let account = meta
            .create_account(NewAccount {
                username: "a".into(),
                opaque_record: vec![],
                wrapped_key: WrappedKey::from_sealed_bytes(vec![1]),
                settings: None,
                quota_bytes: u64::MAX / 2,
                created_at: UnixMillis(0),
            })
            .unwrap();
        let c = |n: u8| ChunkId::from_bytes([n; 32]);
        meta.record_chunks(account, &[(c(1), 5), (c(2), 6)], UnixMillis(0)).unwrap();
        let caller = Caller {
            account,
            session: SessionId::from_bytes([0; 16]),
            device: DeviceId::from_bytes([3; 16]),
        };
        let (_rx, fresh) = svc.inner.notifier.subscribe(account);
        assert!(fresh);
        svc.inner.notifier.seed(account, Cursor(0));
        let e = |n: u8| EntryId::from_bytes([n; 32]);
        let m = |t: &str| Some(SealedMeta::from_sealed_bytes(t.as_bytes().to_vec()));
        let ch = |entry, base, meta, chunks: Vec<ChunkId>| Change {
            entry_id: entry,
            base_revision: Revision(base),
            meta,
            chunks,
            delta: None,
        };
        svc.commit(caller, vec![ch(e(1), 0, m("a"), vec![c(2), c(1), c(2)]), ch(e(2), 0, m("b"), vec![])])
            .await
            .unwrap();
        svc.commit(caller, vec![ch(e(1), 0, m("stale"), vec![]), ch(e(1), 1, None, vec![c(1)])])
            .await
            .unwrap();
        svc.commit(caller, vec![ch(e(3), 0, m("c"), vec![c(1)]), ch(e(1), 2, m("back"), vec![])])
            .await
            .unwrap();
        let head = meta.head(account).unwrap();
        assert_eq!(head, Cursor(5));
        for after in 0..=head.0 {
            for limit in [1, 2, 10] {
                let mut want = meta.journal(account, Cursor(after), limit).unwrap();
                strip_chunks(&mut want.changes);
                match svc.inner.notifier.page(account, Cursor(after), limit) {
                    Some(got) => {
                        assert_eq!(got.changes, want.changes, "after {after} limit {limit}");
                        assert_eq!((got.cursor, got.more), (want.cursor, want.more));
                    }
                    None => assert_eq!(after, head.0, "only an up-to-date cursor misses the tail"),
                }
            }
        }
        // Pages leave the chunk ids out; the store keeps them.
        let page = svc.journal(caller, Cursor(0), None).await.unwrap();
        assert!(page.changes.iter().all(|v| v.chunks.is_empty()));
        assert_eq!(meta.journal(account, Cursor(0), 1).unwrap().changes[0].chunks, vec![c(1), c(2)]);
        let snapshot = svc.snapshot(caller, None, None).await.unwrap();
        assert_eq!(snapshot.entries.len(), 3);
        assert!(snapshot.entries.iter().all(|v| v.chunks.is_empty()));
        // A long-poll with limit 0 only wakes: no changes, the head as cursor.
        let woken = svc.wait_journal(caller, Cursor(1), Some(0), Duration::from_millis(10)).await.unwrap();
        assert!(woken.changes.is_empty());
        assert_eq!(woken.cursor, head);
        let idle = svc.wait_journal(caller, head, Some(0), Duration::from_millis(10)).await.unwrap();
        assert!(idle.changes.is_empty());
        assert_eq!(idle.cursor, head);
        let full = svc.wait_journal(caller, Cursor(1), None, Duration::from_millis(10)).await.unwrap();
        assert_eq!(full.changes.len(), 4);
    }
}
