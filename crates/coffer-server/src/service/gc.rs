//! Retention and garbage collection.
//!
//! [`Service::maintain`] runs periodically (the server spawns it) and does
//! four things: drop expired sessions; drop revisions superseded more than
//! the retention period ago and entries deleted more than that ago; collect
//! chunks that no kept revision names any more; and let the blob store
//! reclaim the space of deleted blobs it has not yet
//! ([`crate::store::BlobStore::reclaim`]).
//!
//! # Why collection is safe against concurrent uploads and commits
//! A chunk goes through three steps, each atomic in the [`MetaStore`]:
//! 1. **Mark** (`gc_mark`): rows with no referencing revision (`refs = 0`)
//!    whose last upload is older than the grace period are marked
//!    `deleting`, in one statement.
//! 2. **Delete** the marked blobs.
//! 3. **Sweep** (`gc_sweep`): forget the marked rows.
//!
//! If deleting a blob fails, the pass stops with the rows still marked;
//! `gc_mark` hands them out again, so the next pass finishes the job.
//!
//! Against that, from the moment a chunk is marked:
//! - a commit naming it is refused `chunk_missing` (rule 1 of
//!   [`crate::store::commit`] treats marked rows as absent), so no revision
//!   can start referencing bytes about to vanish;
//! - `missing` reports it missing, so a client uploads it again; and that
//!   upload's `record_chunks` fails `retry_later` while the mark stands, so
//!   the client retries after the sweep, when the row is gone and the upload
//!   writes the blob and records it afresh.
//!
//! One interleaving slips between those: the mark comes before the upload's
//! `missing`, the delete after its blob write, and the sweep before its
//! `record_chunks`, which then finds no mark and records a chunk whose blob
//! is gone. So after recording, an upload asks the blob store which of the
//! blobs it wrote are gone and writes those again
//! ([`crate::store::BlobStore::lacking`]); recorded, they cannot be marked
//! within the grace period.
//!
//! And before the mark: recording an upload refreshes `uploaded_at`, so a
//! chunk uploaded within the grace period cannot be marked; a commit that
//! references it sets `refs > 0`, so it cannot be marked at all. The grace
//! period thus only needs to exceed the time between a client's upload and
//! its commit; past it, the worst case is a `chunk_missing` answer and a
//! re-upload, never a revision naming a missing blob.
//!
//! [`MetaStore`]: crate::store::MetaStore

use super::{millis, Service};
use crate::ServiceError;

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Expired sessions removed.
    pub sessions_expired: u64,
    /// Revisions dropped by retention.
    pub revisions_pruned: u64,
    /// Chunks collected.
    pub chunks_collected: u64,
    /// Space reclaimed by the blob store after deletes (disk store: packs
    /// rewritten or removed).
    pub packs_reclaimed: u64,
}

const GC_BATCH: u32 = 1000;

impl Service {
    /// One maintenance pass (see the module doc).
    pub async fn maintain(&self) -> Result<MaintenanceReport, ServiceError> {
        let now = self.now();
        let cfg = &self.inner.config;
        let sessions_expired = self.meta(move |m| m.delete_expired_sessions(now)).await?;
        let retention_cutoff = now.minus_millis(millis(cfg.version_retention));
        let revisions_pruned = self.meta(move |m| m.prune_versions(retention_cutoff)).await?;
        if revisions_pruned > 0 {
            self.inner.notifier.clear_tails();
        }
        let grace_cutoff = now.minus_millis(millis(cfg.gc_grace));
        let mut chunks_collected = 0;
        loop {
            let marked = self.meta(move |m| m.gc_mark(grace_cutoff, GC_BATCH)).await?;
            if marked.is_empty() {
                break;
            }
            let n = marked.len();
            let marked = self
                .blobs(move |b| {
                    let mut by_account: std::collections::BTreeMap<_, Vec<_>> = Default::default();
                    for (account, id) in &marked {
                        by_account.entry(*account).or_default().push(*id);
                    }
                    for (account, ids) in &by_account {
                        b.delete_many(*account, ids)?;
                    }
                    Ok(marked)
                })
                .await?;
            self.meta(move |m| m.gc_sweep(&marked)).await?;
            chunks_collected += n as u64;
            if n < GC_BATCH as usize {
                break;
            }
        }
        let packs_reclaimed = self.blobs(|b| b.reclaim()).await?;
        let report =
            MaintenanceReport { sessions_expired, revisions_pruned, chunks_collected, packs_reclaimed };
        if report != MaintenanceReport::default() {
            tracing::info!(?report, "maintenance");
        }
        Ok(report)
    }
}
