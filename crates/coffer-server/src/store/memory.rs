//! In-memory [`MetaStore`] and [`BlobStore`]: the simulation's stores (many
//! devices against one in-process service), and a plain reference for the
//! conformance suite. One mutex each; a commit works on an overlay of its
//! account and folds it in only if the whole batch succeeds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use coffer_proto::api::{
    Change, ChangeResult, EntryVersion, JournalPage, SessionId, SnapshotPage, UnixMillis, Usage,
};
use coffer_proto::{ChunkId, Cursor, DeviceId, EntryId, Revision};

use super::commit::{self, AccountCounters, ChunkRow, CommitTx, EntryRow};
use super::{
    AccountId, AccountRecord, BlobStore, MetaStore, NewAccount, SessionRecord, StoreError, StoreResult,
    TokenHash,
};

/// [`MetaStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryMetaStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    secrets: HashMap<String, Vec<u8>>,
    accounts: Vec<Account>,
    by_name: HashMap<String, AccountId>,
    sessions: HashMap<SessionId, SessionRecord>,
    by_token: HashMap<TokenHash, SessionId>,
}

#[derive(Debug)]
struct Account {
    record: AccountRecord,
    used: u64,
    head: u64,
    floor: u64,
    chunks: HashMap<ChunkId, (ChunkRow, UnixMillis)>,
    entries: BTreeMap<EntryId, EntryRow>,
    revisions: BTreeMap<(EntryId, Revision), EntryVersion>,
    journal: BTreeMap<u64, (EntryId, Revision)>,
}

impl Inner {
    fn account(&self, id: AccountId) -> StoreResult<&Account> {
        let idx = usize::try_from(id.0).ok().and_then(|i| i.checked_sub(1));
        idx.and_then(|i| self.accounts.get(i)).ok_or(StoreError::NoSuchAccount)
    }

    fn account_mut(&mut self, id: AccountId) -> StoreResult<&mut Account> {
        let idx = usize::try_from(id.0).ok().and_then(|i| i.checked_sub(1));
        idx.and_then(|i| self.accounts.get_mut(i)).ok_or(StoreError::NoSuchAccount)
    }
}

impl MemoryMetaStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct MemTx<'a> {
    account: &'a Account,
    chunks: HashMap<ChunkId, ChunkRow>,
    entries: HashMap<EntryId, EntryRow>,
    revisions: Vec<EntryVersion>,
    counters: Option<(u64, u64)>,
}

impl CommitTx for MemTx<'_> {
    fn counters(&mut self) -> StoreResult<AccountCounters> {
        let a = self.account;
        Ok(AccountCounters { quota: a.record.quota_bytes, used: a.used, head: a.head })
    }

    fn chunk(&mut self, id: &ChunkId) -> StoreResult<Option<ChunkRow>> {
        Ok(self.chunks.get(id).copied().or_else(|| self.account.chunks.get(id).map(|(row, _)| *row)))
    }

    fn set_chunk_refs(&mut self, id: &ChunkId, refs: u64, live_refs: u64) -> StoreResult<()> {
        let mut row = self.chunk(id)?.ok_or(StoreError::Backend("unknown chunk".into()))?;
        row.refs = refs;
        row.live_refs = live_refs;
        self.chunks.insert(*id, row);
        Ok(())
    }

    fn entry(&mut self, id: &EntryId) -> StoreResult<Option<EntryRow>> {
        Ok(self.entries.get(id).copied().or_else(|| self.account.entries.get(id).copied()))
    }

    fn revision_chunks(&mut self, id: &EntryId, revision: Revision) -> StoreResult<Vec<ChunkId>> {
        let own = self.revisions.iter().find(|v| v.entry_id == *id && v.revision == revision);
        Ok(own
            .or_else(|| self.account.revisions.get(&(*id, revision)))
            .map(|v| v.chunks.clone())
            .unwrap_or_default())
    }

    fn insert_revision(&mut self, version: &EntryVersion) -> StoreResult<()> {
        self.entries.insert(
            version.entry_id,
            EntryRow { revision: version.revision, deleted: version.meta.is_none() },
        );
        self.revisions.push(version.clone());
        Ok(())
    }

    fn set_counters(&mut self, used: u64, head: u64) -> StoreResult<()> {
        self.counters = Some((used, head));
        Ok(())
    }
}

fn check_cursor(a: &Account, after: Cursor) -> StoreResult<()> {
    if after.0 < a.floor {
        return Err(StoreError::CursorExpired(after));
    }
    Ok(())
}

impl MetaStore for MemoryMetaStore {
    fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        let mut g = self.lock();
        Ok(g.secrets.entry(name.to_owned()).or_insert_with(|| fresh.to_vec()).clone())
    }

    fn create_account(&self, new: NewAccount) -> StoreResult<AccountId> {
        let mut g = self.lock();
        if g.by_name.contains_key(&new.username) {
            return Err(StoreError::AlreadyExists);
        }
        let id = AccountId(g.accounts.len() as u64 + 1);
        g.by_name.insert(new.username.clone(), id);
        g.accounts.push(Account {
            record: AccountRecord {
                id,
                username: new.username,
                opaque_record: new.opaque_record,
                wrapped_key: new.wrapped_key,
                settings: new.settings,
                quota_bytes: new.quota_bytes,
            },
            used: 0,
            head: 0,
            floor: 0,
            chunks: HashMap::new(),
            entries: BTreeMap::new(),
            revisions: BTreeMap::new(),
            journal: BTreeMap::new(),
        });
        Ok(id)
    }

    fn account_by_name(&self, username: &str) -> StoreResult<Option<AccountRecord>> {
        let g = self.lock();
        Ok(g.by_name.get(username).and_then(|id| g.account(*id).ok()).map(|a| a.record.clone()))
    }

    fn account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>> {
        Ok(self.lock().account(id).ok().map(|a| a.record.clone()))
    }

    fn set_quota(&self, id: AccountId, quota_bytes: u64) -> StoreResult<()> {
        self.lock().account_mut(id)?.record.quota_bytes = quota_bytes;
        Ok(())
    }

    fn usage(&self, id: AccountId) -> StoreResult<Usage> {
        let g = self.lock();
        let a = g.account(id)?;
        Ok(Usage { used_bytes: a.used, quota_bytes: a.record.quota_bytes })
    }

    fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        let mut g = self.lock();
        g.account(s.account)?;
        g.by_token.insert(s.token_hash, s.id);
        g.sessions.insert(s.id, s.clone());
        Ok(())
    }

    fn session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let g = self.lock();
        Ok(g.by_token.get(hash).and_then(|id| g.sessions.get(id)).cloned())
    }

    fn sessions(&self, account: AccountId) -> StoreResult<Vec<SessionRecord>> {
        let g = self.lock();
        let mut v: Vec<_> = g.sessions.values().filter(|s| s.account == account).cloned().collect();
        v.sort_by_key(|s| (s.created_at, s.id));
        Ok(v)
    }

    fn revoke_session(&self, account: AccountId, id: SessionId) -> StoreResult<bool> {
        let mut g = self.lock();
        match g.sessions.get(&id) {
            Some(s) if s.account == account => {
                let hash = s.token_hash;
                g.sessions.remove(&id);
                g.by_token.remove(&hash);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete_expired_sessions(&self, now: UnixMillis) -> StoreResult<u64> {
        let mut g = self.lock();
        let expired: Vec<_> =
            g.sessions.values().filter(|s| s.expires_at <= now).map(|s| (s.id, s.token_hash)).collect();
        for (id, hash) in &expired {
            g.sessions.remove(id);
            g.by_token.remove(hash);
        }
        Ok(expired.len() as u64)
    }

    fn missing_chunks(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>> {
        let g = self.lock();
        let a = g.account(account)?;
        Ok(ids
            .iter()
            .filter(|id| !matches!(a.chunks.get(id), Some((row, _)) if !row.deleting))
            .copied()
            .collect())
    }

    fn record_chunks(
        &self,
        account: AccountId,
        chunks: &[(ChunkId, u64)],
        now: UnixMillis,
    ) -> StoreResult<()> {
        let mut g = self.lock();
        let a = g.account_mut(account)?;
        if chunks.iter().any(|(id, _)| matches!(a.chunks.get(id), Some((row, _)) if row.deleting)) {
            return Err(StoreError::ChunkBusy);
        }
        for (id, size) in chunks {
            let entry = a
                .chunks
                .entry(*id)
                .or_insert((ChunkRow { size: *size, refs: 0, live_refs: 0, deleting: false }, now));
            entry.1 = now;
        }
        Ok(())
    }

    fn commit(
        &self,
        account: AccountId,
        device: DeviceId,
        now: UnixMillis,
        changes: &[Change],
    ) -> StoreResult<(Vec<ChangeResult>, Cursor)> {
        let mut g = self.lock();
        let a = g.account_mut(account)?;
        let (out, chunks, revisions, counters) = {
            let mut tx = MemTx {
                account: a,
                chunks: HashMap::new(),
                entries: HashMap::new(),
                revisions: vec![],
                counters: None,
            };
            let out = commit::apply(&mut tx, device, now, changes)?;
            (out, tx.chunks, tx.revisions, tx.counters)
        };
        for (id, row) in chunks {
            if let Some(slot) = a.chunks.get_mut(&id) {
                slot.0 = row;
            }
        }
        for v in revisions {
            a.entries.insert(v.entry_id, EntryRow { revision: v.revision, deleted: v.meta.is_none() });
            a.journal.insert(v.seq.0, (v.entry_id, v.revision));
            a.revisions.insert((v.entry_id, v.revision), v);
        }
        if let Some((used, head)) = counters {
            a.used = used;
            a.head = head;
        }
        Ok(out)
    }

    fn head(&self, account: AccountId) -> StoreResult<Cursor> {
        Ok(Cursor(self.lock().account(account)?.head))
    }

    fn journal(&self, account: AccountId, after: Cursor, limit: u32) -> StoreResult<JournalPage> {
        let g = self.lock();
        let a = g.account(account)?;
        check_cursor(a, after)?;
        let mut iter = a.journal.range(after.0 + 1..);
        let changes: Vec<EntryVersion> =
            iter.by_ref().take(limit as usize).filter_map(|(_, k)| a.revisions.get(k).cloned()).collect();
        let more = iter.next().is_some();
        let cursor = changes.last().map_or(after, |v| v.seq);
        Ok(JournalPage { changes, cursor, more })
    }

    fn snapshot(&self, account: AccountId, after: Option<EntryId>, limit: u32) -> StoreResult<SnapshotPage> {
        let g = self.lock();
        let a = g.account(account)?;
        let range = match after {
            Some(e) => a.entries.range((std::ops::Bound::Excluded(e), std::ops::Bound::Unbounded)),
            None => a.entries.range(..),
        };
        let mut entries = Vec::new();
        let mut next = None;
        for (id, row) in range.filter(|(_, row)| !row.deleted) {
            if entries.len() == limit as usize {
                next = entries.last().map(|v: &EntryVersion| v.entry_id);
                break;
            }
            if let Some(v) = a.revisions.get(&(*id, row.revision)) {
                entries.push(v.clone());
            }
        }
        Ok(SnapshotPage { entries, cursor: Cursor(a.head), next })
    }

    fn versions(&self, account: AccountId, entry: EntryId) -> StoreResult<Vec<EntryVersion>> {
        let g = self.lock();
        let a = g.account(account)?;
        let range = a.revisions.range((entry, Revision::ZERO)..=(entry, Revision(u64::MAX)));
        Ok(range.rev().map(|(_, v)| v.clone()).collect())
    }

    fn prune_versions(&self, cutoff: UnixMillis) -> StoreResult<u64> {
        let mut g = self.lock();
        let mut dropped = 0;
        for a in &mut g.accounts {
            let mut doomed: Vec<(EntryId, Revision)> = Vec::new();
            let mut gone_entries = Vec::new();
            for ((entry, rev), _) in a.revisions.iter() {
                let superseded = a.revisions.get(&(*entry, rev.next())).is_some_and(|n| n.time < cutoff);
                if superseded {
                    doomed.push((*entry, *rev));
                }
            }
            for (entry, row) in &a.entries {
                let tomb = a.revisions.get(&(*entry, row.revision));
                if let Some(t) = tomb.filter(|t| row.deleted && t.time < cutoff) {
                    gone_entries.push((*entry, t.seq.0));
                    let all = a.revisions.range((*entry, Revision::ZERO)..=(*entry, row.revision));
                    doomed.extend(all.map(|(k, _)| *k));
                }
            }
            doomed.sort_unstable();
            doomed.dedup();
            for key in doomed {
                if let Some(v) = a.revisions.remove(&key) {
                    dropped += 1;
                    a.journal.remove(&v.seq.0);
                    for id in &v.chunks {
                        if let Some((row, _)) = a.chunks.get_mut(id) {
                            row.refs = row.refs.saturating_sub(1);
                        }
                    }
                }
            }
            for (entry, seq) in gone_entries {
                a.entries.remove(&entry);
                a.floor = a.floor.max(seq);
            }
        }
        Ok(dropped)
    }

    fn gc_mark(&self, cutoff: UnixMillis, limit: u32) -> StoreResult<Vec<(AccountId, ChunkId)>> {
        let mut g = self.lock();
        let mut newly = 0;
        let mut out = Vec::new();
        for a in &mut g.accounts {
            for (id, (row, uploaded)) in a.chunks.iter_mut() {
                if newly < limit && row.refs == 0 && !row.deleting && *uploaded < cutoff {
                    row.deleting = true;
                    newly += 1;
                }
                if row.deleting {
                    out.push((a.record.id, *id));
                }
            }
        }
        out.sort_unstable();
        out.truncate(limit as usize);
        Ok(out)
    }

    fn gc_sweep(&self, marked: &[(AccountId, ChunkId)]) -> StoreResult<()> {
        let mut g = self.lock();
        for (account, id) in marked {
            if let Ok(a) = g.account_mut(*account) {
                if a.chunks.get(id).is_some_and(|(row, _)| row.deleting) {
                    a.chunks.remove(id);
                }
            }
        }
        Ok(())
    }
}

/// [`BlobStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<HashMap<(AccountId, ChunkId), Vec<u8>>>,
}

impl MemoryBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AccountId, ChunkId), Vec<u8>>> {
        self.blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl BlobStore for MemoryBlobStore {
    fn put(&self, account: AccountId, id: ChunkId, bytes: &[u8]) -> StoreResult<()> {
        self.lock().insert((account, id), bytes.to_vec());
        Ok(())
    }

    fn get(&self, account: AccountId, id: ChunkId) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.lock().get(&(account, id)).cloned())
    }

    fn delete(&self, account: AccountId, id: ChunkId) -> StoreResult<()> {
        self.lock().remove(&(account, id));
        Ok(())
    }

    fn lacking(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>> {
        let blobs = self.lock();
        Ok(ids.iter().filter(|id| !blobs.contains_key(&(account, **id))).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default batch read: in order, `None` for what is not held, and
    /// nothing past the budget.
    #[test]
    fn a_batch_read_keeps_order_and_budget() {
        let s = MemoryBlobStore::new();
        let a = AccountId(1);
        let id = |i: u8| ChunkId::from_bytes([i; 32]);
        s.put(a, id(1), &[1; 10]).unwrap();
        s.put(a, id(2), &[2; 20]).unwrap();
        let got = s.get_many(a, &[id(2), id(3), id(1)], 30).unwrap().unwrap();
        assert_eq!(got, [Some(vec![2; 20]), None, Some(vec![1; 10])]);
        assert_eq!(s.get_many(a, &[id(2), id(3), id(1)], 29).unwrap(), None);
        assert_eq!(s.get_many(AccountId(2), &[id(1)], 0).unwrap(), Some(vec![None]));
    }
}
