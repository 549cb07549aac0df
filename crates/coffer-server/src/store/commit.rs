//! The commit rules, written once over a small transaction interface
//! ([`CommitTx`]) that every [`MetaStore`](super::MetaStore) provides, so that
//! SQLite, memory and any later store agree on them exactly.
//!
//! Rules for a batch:
//! 1. Every chunk named by a non-deleting change must be recorded for the
//!    account and not marked for collection; otherwise the whole batch is
//!    refused with `ChunkMissing` (nothing applied).
//! 2. Changes apply in order. A change whose `base_revision` is not the
//!    entry's current revision (0 when it does not exist) is answered
//!    `Conflict` with the current revision; so is deleting an entry that does
//!    not exist or is already deleted. The rest of the batch still applies.
//! 3. An accepted change makes revision `base + 1` and takes the account's
//!    next journal sequence number.
//! 4. Usage counts each chunk once while any latest, non-deleted revision
//!    names it (`live_refs > 0`). If the batch raises usage above the quota,
//!    the whole batch is refused with `QuotaExceeded`. A batch that lowers or
//!    keeps usage is always accepted.
//!
//! 5. A change may give its chunk list as a difference from its base
//!    revision's ([`ChunkDelta`]): the whole list is the base's ids, less the
//!    dropped ones, plus the change's. A dropped id the base does not list, or
//!    a result whose digest differs from the change's, refuses the whole batch
//!    with `DeltaMismatch` (nothing applied). Rule 1 checks only the ids the
//!    change names: the base's are kept by the base revision.
//!
//! The caller runs [`apply`] inside one transaction and rolls back on error.

use coffer_proto::api::{Change, ChangeResult, ChunkDelta, EntryVersion, UnixMillis};
use coffer_proto::{ChunkId, Cursor, DeviceId, EntryId, ListDigest, Revision};

use super::{StoreError, StoreResult};

/// One chunk's bookkeeping row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRow {
    /// Sealed size in bytes.
    pub size: u64,
    /// Kept revisions naming it.
    pub refs: u64,
    /// Latest live revisions naming it.
    pub live_refs: u64,
    /// Marked for collection.
    pub deleting: bool,
}

/// One entry's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRow {
    /// Current revision.
    pub revision: Revision,
    /// Whether that revision is a deletion.
    pub deleted: bool,
}

/// Account counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountCounters {
    /// Quota in bytes.
    pub quota: u64,
    /// Usage in bytes.
    pub used: u64,
    /// Journal head.
    pub head: u64,
}

/// The reads and writes a commit needs, inside one transaction. Reads see
/// the transaction's own earlier writes.
pub trait CommitTx {
    /// The account's counters (`NoSuchAccount` if absent).
    fn counters(&mut self) -> StoreResult<AccountCounters>;
    /// A chunk's row.
    fn chunk(&mut self, id: &ChunkId) -> StoreResult<Option<ChunkRow>>;
    /// Writes a chunk's reference counts.
    fn set_chunk_refs(&mut self, id: &ChunkId, refs: u64, live_refs: u64) -> StoreResult<()>;
    /// An entry's current state.
    fn entry(&mut self, id: &EntryId) -> StoreResult<Option<EntryRow>>;
    /// The chunk ids of one kept revision.
    fn revision_chunks(&mut self, id: &EntryId, revision: Revision) -> StoreResult<Vec<ChunkId>>;
    /// Stores a new revision (its `seq` is new) and makes it current.
    fn insert_revision(&mut self, version: &EntryVersion) -> StoreResult<()>;
    /// Writes the account's usage and head.
    fn set_counters(&mut self, used: u64, head: u64) -> StoreResult<()>;
}

/// Sorted, deduplicated chunk list of a change.
pub fn unique_chunks(chunks: &[ChunkId]) -> Vec<ChunkId> {
    let mut v = chunks.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// A transaction whose chunk rows are read once per batch: rule 1 reads
/// every named chunk, and the reference counts read most of them again.
/// Writes go through to the transaction and update the copy kept here, so
/// reads still see the batch's own writes.
struct ChunkRows<'t, T: CommitTx> {
    inner: &'t mut T,
    rows: std::collections::HashMap<ChunkId, Option<ChunkRow>>,
}

impl<T: CommitTx> ChunkRows<'_, T> {
    fn chunk(&mut self, id: &ChunkId) -> StoreResult<Option<ChunkRow>> {
        if let Some(row) = self.rows.get(id) {
            return Ok(*row);
        }
        let row = self.inner.chunk(id)?;
        self.rows.insert(*id, row);
        Ok(row)
    }

    fn set_chunk_refs(&mut self, id: &ChunkId, row: ChunkRow, refs: u64, live_refs: u64) -> StoreResult<()> {
        self.inner.set_chunk_refs(id, refs, live_refs)?;
        self.rows.insert(*id, Some(ChunkRow { refs, live_refs, ..row }));
        Ok(())
    }
}

/// Applies a batch under the rules of the module doc.
pub fn apply(
    tx: &mut impl CommitTx,
    device: DeviceId,
    now: UnixMillis,
    changes: &[Change],
) -> StoreResult<(Vec<ChangeResult>, Cursor)> {
    let counters = tx.counters()?;
    let mut tx = ChunkRows { inner: tx, rows: std::collections::HashMap::new() };

    // Rule 1: every named chunk must be present.
    let mut missing = Vec::new();
    for change in changes.iter().filter(|c| c.meta.is_some()) {
        for id in &change.chunks {
            let present = matches!(tx.chunk(id)?, Some(row) if !row.deleting);
            if !present && !missing.contains(id) {
                missing.push(*id);
            }
        }
    }
    if !missing.is_empty() {
        return Err(StoreError::ChunkMissing(missing));
    }

    let mut used = counters.used;
    let mut head = counters.head;
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let current = tx.inner.entry(&change.entry_id)?;
        let current_rev = current.map_or(Revision::ZERO, |e| e.revision);
        let live = matches!(current, Some(e) if !e.deleted);
        if change.base_revision != current_rev || (change.meta.is_none() && !live) {
            results.push(ChangeResult::Conflict { entry_id: change.entry_id, current_revision: current_rev });
            continue;
        }
        let revision = current_rev.next();
        head += 1;

        let base_chunks =
            if live { tx.inner.revision_chunks(&change.entry_id, current_rev)? } else { Vec::new() };
        let chunks = match (&change.meta, &change.delta) {
            (None, _) => Vec::new(),
            (Some(_), None) => unique_chunks(&change.chunks),
            (Some(_), Some(delta)) => resolve_delta(&base_chunks, &change.chunks, delta)
                .ok_or(StoreError::DeltaMismatch(change.entry_id))?,
        };
        for id in &base_chunks {
            let row = tx.chunk(id)?.ok_or_else(|| dangling(id))?;
            let live_refs = row.live_refs.saturating_sub(1);
            if live_refs == 0 && row.live_refs > 0 {
                used = used.saturating_sub(row.size);
            }
            tx.set_chunk_refs(id, row, row.refs, live_refs)?;
        }
        for id in &chunks {
            let row = tx.chunk(id)?.ok_or_else(|| dangling(id))?;
            if row.live_refs == 0 {
                used += row.size;
            }
            tx.set_chunk_refs(id, row, row.refs + 1, row.live_refs + 1)?;
        }
        let seq = Cursor(head);
        tx.inner.insert_revision(&EntryVersion {
            seq,
            entry_id: change.entry_id,
            revision,
            meta: change.meta.clone(),
            chunks,
            device_id: device,
            time: now,
        })?;
        results.push(ChangeResult::Applied { entry_id: change.entry_id, revision, seq });
    }

    // Rule 4: quota, on the batch as a whole.
    if used > counters.quota && used > counters.used {
        return Err(StoreError::QuotaExceeded { needed: used, quota: counters.quota });
    }
    tx.inner.set_counters(used, head)?;
    Ok((results, Cursor(head)))
}

/// The whole list of a change given as a difference (rule 5), or `None`
/// when it does not fit the base.
fn resolve_delta(base: &[ChunkId], added: &[ChunkId], delta: &ChunkDelta) -> Option<Vec<ChunkId>> {
    let dropped = unique_chunks(&delta.dropped);
    let mut list: Vec<ChunkId> = unique_chunks(base);
    if dropped.iter().any(|d| list.binary_search(d).is_err()) {
        return None;
    }
    list.retain(|id| dropped.binary_search(id).is_err());
    list.extend_from_slice(added);
    let list = unique_chunks(&list);
    (ListDigest::of(&list) == delta.digest).then_some(list)
}

fn dangling(id: &ChunkId) -> StoreError {
    StoreError::Backend(format!("revision names unrecorded chunk {id:?}"))
}
