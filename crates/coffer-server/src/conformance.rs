//! The conformance suites every [`MetaStore`] and [`BlobStore`] must pass
//! (SQLite, memory and disk here; PostgreSQL and S3 later). Each suite takes
//! a factory that makes a fresh, empty store, runs every case against its own
//! store, and panics with the case name on the first failure. Call them from
//! a test:
//!
//! ```ignore
//! coffer_server::conformance::meta_store(&|| Arc::new(MemoryMetaStore::new()));
//! ```
//!
//! The cases pin down the contract the service relies on: account and
//! session bookkeeping, the commit rules of [`crate::store::commit`] (chunk
//! presence, per-change conflicts, exact quota under concurrency), journal
//! and snapshot paging, retention and the journal floor, and the
//! mark/sweep protocol that makes garbage collection safe.

use std::sync::Arc;

use coffer_proto::api::{Change, ChangeResult, ChunkDelta, SessionId, UnixMillis};
use coffer_proto::{
    ChunkId, Cursor, DeviceId, EntryId, ListDigest, Revision, SealedMeta, SealedSettings, WrappedKey,
};

use crate::store::{AccountId, BlobStore, MetaStore, NewAccount, SessionRecord, StoreError, TokenHash};

/// Makes a fresh, empty metadata store.
pub type MetaFactory<'a> = &'a dyn Fn() -> Arc<dyn MetaStore>;
/// Makes a fresh, empty blob store.
pub type BlobFactory<'a> = &'a dyn Fn() -> Arc<dyn BlobStore>;

const T0: UnixMillis = UnixMillis(1_800_000_000_000);
const DEV: DeviceId = DeviceId::from_bytes([7; 16]);

fn chunk(n: u8) -> ChunkId {
    ChunkId::from_bytes([n; 32])
}

fn entry(n: u8) -> EntryId {
    EntryId::from_bytes([n; 32])
}

fn meta(tag: &str) -> Option<SealedMeta> {
    Some(SealedMeta::from_sealed_bytes(tag.as_bytes().to_vec()))
}

fn put(e: EntryId, base: u64, tag: &str, chunks: &[ChunkId]) -> Change {
    Change {
        entry_id: e,
        base_revision: Revision(base),
        meta: meta(tag),
        chunks: chunks.to_vec(),
        delta: None,
    }
}

fn del(e: EntryId, base: u64) -> Change {
    Change { entry_id: e, base_revision: Revision(base), meta: None, chunks: vec![], delta: None }
}

fn account(s: &dyn MetaStore, name: &str, quota: u64) -> AccountId {
    s.create_account(NewAccount {
        username: name.into(),
        opaque_record: vec![1, 2, 3],
        wrapped_key: WrappedKey::from_sealed_bytes(vec![9; 61]),
        settings: Some(SealedSettings::from_sealed_bytes(vec![7; 40])),
        quota_bytes: quota,
        created_at: T0,
    })
    .expect("create account")
}

fn applied(r: &ChangeResult) -> bool {
    matches!(r, ChangeResult::Applied { .. })
}

/// One named case of the metadata suite.
type Case = (&'static str, fn(&dyn MetaStore));

/// Runs every [`MetaStore`] case.
pub fn meta_store(make: MetaFactory<'_>) {
    let cases: &[Case] = &[
        ("accounts_and_secrets", accounts_and_secrets),
        ("sessions", sessions),
        ("chunk_bookkeeping", chunk_bookkeeping),
        ("commit_rules", commit_rules),
        ("commit_refuses_missing_chunks", commit_refuses_missing_chunks),
        ("commit_resolves_chunk_deltas", commit_resolves_chunk_deltas),
        ("quota_is_exact", quota_is_exact),
        ("journal_and_snapshot_paging", journal_and_snapshot_paging),
        ("versions_and_retention", versions_and_retention),
        ("gc_mark_and_sweep", gc_mark_and_sweep),
        ("accounts_are_isolated", accounts_are_isolated),
    ];
    for (name, case) in cases {
        let store = make();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&*store)));
        if let Err(e) = result {
            panic!("MetaStore conformance case `{name}` failed: {}", panic_text(&e));
        }
    }
    let store = make();
    concurrent_commits(&store);
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

fn accounts_and_secrets(s: &dyn MetaStore) {
    assert_eq!(s.server_secret("k", b"first").unwrap(), b"first");
    assert_eq!(s.server_secret("k", b"second").unwrap(), b"first", "first value wins");
    let a = account(s, "alice", 100);
    let err = s
        .create_account(NewAccount {
            username: "alice".into(),
            opaque_record: vec![],
            wrapped_key: WrappedKey::from_sealed_bytes(vec![1]),
            settings: None,
            quota_bytes: 1,
            created_at: T0,
        })
        .unwrap_err();
    assert_eq!(err, StoreError::AlreadyExists);
    let rec = s.account_by_name("alice").unwrap().unwrap();
    assert_eq!(rec.id, a);
    assert_eq!(rec.opaque_record, vec![1, 2, 3]);
    assert_eq!(rec.wrapped_key.as_bytes(), &[9; 61]);
    assert_eq!(rec.settings.as_ref().map(SealedSettings::as_bytes), Some(&[7; 40][..]));
    // An account without settings (made before they existed) reads back
    // without, not with empty ones.
    let old = s
        .create_account(NewAccount {
            username: "old".into(),
            opaque_record: vec![4],
            wrapped_key: WrappedKey::from_sealed_bytes(vec![2]),
            settings: None,
            quota_bytes: 1,
            created_at: T0,
        })
        .unwrap();
    assert_eq!(s.account(old).unwrap().unwrap().settings, None);
    assert_eq!(s.account(a).unwrap().unwrap().username, "alice");
    assert!(s.account_by_name("bob").unwrap().is_none());
    assert!(s.account(AccountId(999_999)).unwrap().is_none());
    s.set_quota(a, 555).unwrap();
    assert_eq!(s.usage(a).unwrap().quota_bytes, 555);
    assert_eq!(s.usage(a).unwrap().used_bytes, 0);
}

fn sessions(s: &dyn MetaStore) {
    let a = account(s, "alice", 100);
    let b = account(s, "bob", 100);
    let mk = |n: u8, acc, expires| SessionRecord {
        id: SessionId::from_bytes([n; 16]),
        account: acc,
        device: DEV,
        token_hash: TokenHash([n; 32]),
        created_at: T0.plus_millis(u64::from(n)),
        expires_at: expires,
    };
    s.create_session(&mk(1, a, T0.plus_millis(1000))).unwrap();
    s.create_session(&mk(2, a, T0.plus_millis(10))).unwrap();
    s.create_session(&mk(3, b, T0.plus_millis(1000))).unwrap();
    assert_eq!(s.session_by_token(&TokenHash([1; 32])).unwrap(), Some(mk(1, a, T0.plus_millis(1000))));
    assert!(s.session_by_token(&TokenHash([4; 32])).unwrap().is_none());
    let ids: Vec<_> = s.sessions(a).unwrap().iter().map(|x| x.id).collect();
    assert_eq!(ids, vec![SessionId::from_bytes([1; 16]), SessionId::from_bytes([2; 16])]);
    assert!(!s.revoke_session(a, SessionId::from_bytes([3; 16])).unwrap(), "cannot revoke another account's");
    assert!(s.revoke_session(a, SessionId::from_bytes([1; 16])).unwrap());
    assert!(!s.revoke_session(a, SessionId::from_bytes([1; 16])).unwrap());
    assert!(s.session_by_token(&TokenHash([1; 32])).unwrap().is_none());
    assert_eq!(s.delete_expired_sessions(T0.plus_millis(100)).unwrap(), 1);
    assert!(s.sessions(a).unwrap().is_empty());
    assert_eq!(s.sessions(b).unwrap().len(), 1);
}

fn chunk_bookkeeping(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    assert_eq!(
        s.missing_chunks(a, &[chunk(1), chunk(2), chunk(3)]).unwrap(),
        vec![chunk(1), chunk(2), chunk(3)]
    );
    s.record_chunks(a, &[(chunk(2), 10)], T0).unwrap();
    s.record_chunks(a, &[(chunk(2), 10)], T0).unwrap();
    assert_eq!(s.missing_chunks(a, &[chunk(1), chunk(2), chunk(3)]).unwrap(), vec![chunk(1), chunk(3)]);
    assert_eq!(s.usage(a).unwrap().used_bytes, 0, "uploaded but unreferenced chunks do not count");
}

fn commit_rules(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    s.record_chunks(a, &[(chunk(1), 10), (chunk(2), 20)], T0).unwrap();
    let (r, cur) = s.commit(a, DEV, T0, &[put(entry(1), 0, "v1", &[chunk(1)])]).unwrap();
    assert_eq!(r, vec![ChangeResult::Applied { entry_id: entry(1), revision: Revision(1), seq: Cursor(1) }]);
    assert_eq!(cur, Cursor(1));
    // A stale change conflicts; the rest of the batch applies.
    let (r, cur) = s
        .commit(
            a,
            DEV,
            T0,
            &[
                put(entry(1), 0, "stale", &[]),
                put(entry(2), 0, "new", &[chunk(2)]),
                put(entry(1), 1, "v2", &[]),
            ],
        )
        .unwrap();
    assert_eq!(r[0], ChangeResult::Conflict { entry_id: entry(1), current_revision: Revision(1) });
    assert_eq!(r[1], ChangeResult::Applied { entry_id: entry(2), revision: Revision(1), seq: Cursor(2) });
    assert_eq!(r[2], ChangeResult::Applied { entry_id: entry(1), revision: Revision(2), seq: Cursor(3) });
    assert_eq!(cur, Cursor(3));
    assert_eq!(s.head(a).unwrap(), Cursor(3));
    // Deleting: needs the current revision; deleting the absent conflicts.
    let (r, _) = s.commit(a, DEV, T0, &[del(entry(2), 1), del(entry(2), 2), del(entry(9), 0)]).unwrap();
    assert!(applied(&r[0]));
    assert_eq!(r[1], ChangeResult::Conflict { entry_id: entry(2), current_revision: Revision(2) });
    assert_eq!(r[2], ChangeResult::Conflict { entry_id: entry(9), current_revision: Revision(0) });
    // Re-creating a deleted entry builds on the tombstone's revision.
    let (r, _) = s.commit(a, DEV, T0, &[put(entry(2), 0, "x", &[]), put(entry(2), 2, "back", &[])]).unwrap();
    assert!(!applied(&r[0]));
    assert_eq!(r[1], ChangeResult::Applied { entry_id: entry(2), revision: Revision(3), seq: Cursor(5) });
    let v = s.versions(a, entry(2)).unwrap();
    assert_eq!(v.iter().map(|v| v.revision.0).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert!(v[1].is_deleted());
    assert_eq!(v[0].meta, meta("back"));
    assert_eq!(v[2].chunks, vec![chunk(2)]);
    assert_eq!(v[0].device_id, DEV);
}

fn commit_refuses_missing_chunks(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    s.record_chunks(a, &[(chunk(1), 10)], T0).unwrap();
    let err = s
        .commit(
            a,
            DEV,
            T0,
            &[put(entry(1), 0, "ok", &[chunk(1)]), put(entry(2), 0, "bad", &[chunk(3), chunk(4), chunk(3)])],
        )
        .unwrap_err();
    assert_eq!(err, StoreError::ChunkMissing(vec![chunk(3), chunk(4)]));
    assert_eq!(s.head(a).unwrap(), Cursor(0), "nothing applied");
    assert!(s.versions(a, entry(1)).unwrap().is_empty());
    assert_eq!(s.usage(a).unwrap().used_bytes, 0);
    // A deletion names no chunks and needs none.
    s.commit(a, DEV, T0, &[put(entry(1), 0, "ok", &[chunk(1)])]).unwrap();
    s.commit(a, DEV, T0, &[Change { chunks: vec![chunk(5)], ..del(entry(1), 1) }]).unwrap();
}

/// A change given as a difference from its base (rule 5): the store keeps
/// the whole list, refs and usage follow it, and a difference that does not
/// fit the base refuses the batch.
fn commit_resolves_chunk_deltas(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    s.record_chunks(a, &[(chunk(1), 10), (chunk(2), 20), (chunk(3), 30), (chunk(4), 40)], T0).unwrap();
    s.commit(a, DEV, T0, &[put(entry(1), 0, "v1", &[chunk(1), chunk(2), chunk(3)])]).unwrap();
    assert_eq!(s.usage(a).unwrap().used_bytes, 60);
    let delta = |base: u64, added: &[ChunkId], dropped: &[ChunkId], whole: &[ChunkId]| Change {
        chunks: added.to_vec(),
        delta: Some(ChunkDelta { dropped: dropped.to_vec(), digest: ListDigest::of(whole) }),
        ..put(entry(1), base, "v", &[])
    };
    // Drops chunk 2, adds chunk 4: the stored list is 1, 3, 4.
    let (r, _) =
        s.commit(a, DEV, T0, &[delta(1, &[chunk(4)], &[chunk(2)], &[chunk(1), chunk(3), chunk(4)])]).unwrap();
    assert!(applied(&r[0]));
    assert_eq!(s.versions(a, entry(1)).unwrap()[0].chunks, vec![chunk(1), chunk(3), chunk(4)]);
    assert_eq!(s.usage(a).unwrap().used_bytes, 80, "chunk 2 no longer counts, chunk 4 does");
    let before = s.head(a).unwrap();
    // A dropped id the base does not list, a digest of another list, and a
    // base that names other chunks than the client thinks: each refused
    // whole, with the valid change beside it not applied either.
    let ok = put(entry(2), 0, "other", &[chunk(1)]);
    for bad in [
        delta(2, &[], &[chunk(2)], &[chunk(1), chunk(3), chunk(4)]),
        delta(2, &[chunk(2)], &[], &[chunk(1), chunk(2)]),
        delta(2, &[], &[chunk(4)], &[chunk(1), chunk(2)]),
    ] {
        let err = s.commit(a, DEV, T0, &[ok.clone(), bad]).unwrap_err();
        assert_eq!(err, StoreError::DeltaMismatch(entry(1)));
        assert_eq!(s.head(a).unwrap(), before, "nothing applied");
        assert_eq!(s.usage(a).unwrap().used_bytes, 80);
    }
    // A stale base is a conflict, as for a whole list.
    let (r, _) = s.commit(a, DEV, T0, &[delta(1, &[], &[chunk(1)], &[chunk(3), chunk(4)])]).unwrap();
    assert_eq!(r[0], ChangeResult::Conflict { entry_id: entry(1), current_revision: Revision(2) });
    // Added ids must be present (rule 1); the base's need not be named.
    let err = s.commit(a, DEV, T0, &[delta(2, &[chunk(9)], &[], &[chunk(1), chunk(3), chunk(4), chunk(9)])]);
    assert_eq!(err.unwrap_err(), StoreError::ChunkMissing(vec![chunk(9)]));
    // An unchanged list: an empty difference keeps every chunk.
    let (r, _) = s.commit(a, DEV, T0, &[delta(2, &[], &[], &[chunk(1), chunk(3), chunk(4)])]).unwrap();
    assert!(applied(&r[0]));
    assert_eq!(s.versions(a, entry(1)).unwrap()[0].chunks, vec![chunk(1), chunk(3), chunk(4)]);
    assert_eq!(s.usage(a).unwrap().used_bytes, 80);
}

fn quota_is_exact(s: &dyn MetaStore) {
    let a = account(s, "alice", 100);
    s.record_chunks(a, &[(chunk(1), 40), (chunk(2), 50), (chunk(3), 30)], T0).unwrap();
    // Shared chunks count once, within a change and across entries.
    s.commit(
        a,
        DEV,
        T0,
        &[put(entry(1), 0, "a", &[chunk(1), chunk(1)]), put(entry(2), 0, "b", &[chunk(1), chunk(2)])],
    )
    .unwrap();
    assert_eq!(s.usage(a).unwrap().used_bytes, 90);
    // Over quota: refused whole, nothing applied.
    let err = s.commit(a, DEV, T0, &[put(entry(3), 0, "c", &[chunk(3)])]).unwrap_err();
    assert_eq!(err, StoreError::QuotaExceeded { needed: 120, quota: 100 });
    assert_eq!(s.usage(a).unwrap().used_bytes, 90);
    assert_eq!(s.head(a).unwrap(), Cursor(2));
    // Replacing entry 2's content frees chunk 2 in the same batch.
    let (r, _) = s
        .commit(a, DEV, T0, &[put(entry(2), 1, "b2", &[chunk(1)]), put(entry(3), 0, "c", &[chunk(3)])])
        .unwrap();
    assert!(r.iter().all(applied));
    assert_eq!(s.usage(a).unwrap().used_bytes, 70);
    // Deleting frees; old revisions do not count.
    s.commit(a, DEV, T0, &[del(entry(3), 1)]).unwrap();
    assert_eq!(s.usage(a).unwrap().used_bytes, 40);
    // Lowering the quota below usage still allows commits that do not grow usage.
    s.set_quota(a, 10).unwrap();
    s.commit(a, DEV, T0, &[put(entry(1), 1, "a2", &[chunk(1)])]).unwrap();
    let err = s.commit(a, DEV, T0, &[put(entry(4), 0, "d", &[chunk(2)])]).unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }));
    s.commit(a, DEV, T0, &[del(entry(1), 2), del(entry(2), 2)]).unwrap();
    assert_eq!(s.usage(a).unwrap().used_bytes, 0);
}

fn journal_and_snapshot_paging(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    for n in 1..=5u8 {
        s.commit(a, DEV, T0.plus_millis(u64::from(n)), &[put(entry(n), 0, "v1", &[])]).unwrap();
    }
    s.commit(a, DEV, T0, &[del(entry(2), 1), put(entry(3), 1, "v2", &[])]).unwrap();
    let p = s.journal(a, Cursor(0), 4).unwrap();
    assert_eq!(p.changes.iter().map(|c| c.seq.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!((p.cursor, p.more), (Cursor(4), true));
    assert_eq!(p.changes[0].entry_id, entry(1));
    assert_eq!(p.changes[0].time, T0.plus_millis(1));
    let p = s.journal(a, p.cursor, 4).unwrap();
    assert_eq!(p.changes.iter().map(|c| c.seq.0).collect::<Vec<_>>(), vec![5, 6, 7]);
    assert!(p.changes[1].is_deleted());
    assert_eq!((p.cursor, p.more), (Cursor(7), false));
    let p = s.journal(a, Cursor(7), 4).unwrap();
    assert!(p.changes.is_empty() && !p.more && p.cursor == Cursor(7));

    let p1 = s.snapshot(a, None, 2).unwrap();
    assert_eq!(p1.cursor, Cursor(7));
    assert_eq!(p1.entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(), vec![entry(1), entry(3)]);
    assert_eq!(p1.entries[1].revision, Revision(2));
    assert_eq!(p1.next, Some(entry(3)));
    let p2 = s.snapshot(a, p1.next, 2).unwrap();
    assert_eq!(p2.entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(), vec![entry(4), entry(5)]);
    assert_eq!(p2.next, None);
}

fn versions_and_retention(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    s.record_chunks(a, &[(chunk(1), 10), (chunk(2), 10)], T0).unwrap();
    let day = 86_400_000;
    s.commit(a, DEV, T0, &[put(entry(1), 0, "v1", &[chunk(1)]), put(entry(2), 0, "x", &[chunk(2)])]).unwrap();
    s.commit(a, DEV, T0.plus_millis(day), &[put(entry(1), 1, "v2", &[])]).unwrap();
    s.commit(a, DEV, T0.plus_millis(2 * day), &[put(entry(1), 2, "v3", &[]), del(entry(2), 1)]).unwrap();
    assert_eq!(s.versions(a, entry(1)).unwrap().len(), 3);
    // Cutoff between day 1 and day 2: v1 (superseded at day 1) goes; v2 stays.
    assert_eq!(s.prune_versions(T0.plus_millis(day + 1)).unwrap(), 1);
    let revs: Vec<u64> = s.versions(a, entry(1)).unwrap().iter().map(|v| v.revision.0).collect();
    assert_eq!(revs, vec![3, 2]);
    assert_eq!(s.versions(a, entry(2)).unwrap().len(), 2, "deletion younger than the cutoff keeps history");
    assert!(s.journal(a, Cursor(0), 10).is_ok());
    // Later cutoff: the deleted entry goes entirely, and the journal floor rises.
    s.prune_versions(T0.plus_millis(3 * day)).unwrap();
    assert!(s.versions(a, entry(2)).unwrap().is_empty());
    assert_eq!(s.versions(a, entry(1)).unwrap().len(), 1, "the live revision always stays");
    assert_eq!(s.journal(a, Cursor(0), 10).unwrap_err(), StoreError::CursorExpired(Cursor(0)));
    let p = s.journal(a, Cursor(5), 10).unwrap();
    assert!(p.changes.is_empty());
    assert_eq!(s.snapshot(a, None, 10).unwrap().entries.len(), 1);
    // Nothing references the chunks any more: both can be collected.
    let marked = s.gc_mark(T0.plus_millis(3 * day), 10).unwrap();
    assert_eq!(marked.len(), 2);
}

fn gc_mark_and_sweep(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    s.record_chunks(a, &[(chunk(1), 10), (chunk(2), 10), (chunk(3), 10)], T0).unwrap();
    s.commit(a, DEV, T0, &[put(entry(1), 0, "v1", &[chunk(1)])]).unwrap();
    // chunk 3 is re-uploaded later: its grace period restarts.
    s.record_chunks(a, &[(chunk(3), 10)], T0.plus_millis(500)).unwrap();
    let marked = s.gc_mark(T0.plus_millis(100), 10).unwrap();
    assert_eq!(marked, vec![(a, chunk(2))], "only unreferenced chunks past their grace");
    assert_eq!(s.gc_mark(T0.plus_millis(100), 10).unwrap(), marked, "marked chunks come back until swept");
    // While marked: missing, not recordable, not committable.
    assert_eq!(s.missing_chunks(a, &[chunk(1), chunk(2)]).unwrap(), vec![chunk(2)]);
    assert_eq!(
        s.record_chunks(a, &[(chunk(2), 10)], T0.plus_millis(200)).unwrap_err(),
        StoreError::ChunkBusy
    );
    let err = s.commit(a, DEV, T0, &[put(entry(2), 0, "v", &[chunk(2)])]).unwrap_err();
    assert_eq!(err, StoreError::ChunkMissing(vec![chunk(2)]));
    s.gc_sweep(&marked).unwrap();
    assert!(s.gc_mark(T0.plus_millis(100), 10).unwrap().is_empty(), "nothing left marked");
    assert_eq!(s.missing_chunks(a, &[chunk(2)]).unwrap(), vec![chunk(2)]);
    // After the sweep, an upload records it afresh.
    s.record_chunks(a, &[(chunk(2), 10)], T0.plus_millis(300)).unwrap();
    s.commit(a, DEV, T0, &[put(entry(2), 0, "v", &[chunk(2)])]).unwrap();
    assert_eq!(s.usage(a).unwrap().used_bytes, 20);
}

fn accounts_are_isolated(s: &dyn MetaStore) {
    let a = account(s, "alice", 1000);
    let b = account(s, "bob", 1000);
    s.record_chunks(a, &[(chunk(1), 10)], T0).unwrap();
    s.commit(a, DEV, T0, &[put(entry(1), 0, "a", &[chunk(1)])]).unwrap();
    assert_eq!(s.missing_chunks(b, &[chunk(1)]).unwrap(), vec![chunk(1)]);
    let err = s.commit(b, DEV, T0, &[put(entry(1), 0, "b", &[chunk(1)])]).unwrap_err();
    assert!(matches!(err, StoreError::ChunkMissing(_)));
    let (r, _) = s.commit(b, DEV, T0, &[put(entry(1), 0, "b", &[])]).unwrap();
    assert!(applied(&r[0]), "entry ids are per account");
    assert_eq!(s.head(b).unwrap(), Cursor(1));
    assert_eq!(s.journal(b, Cursor(0), 10).unwrap().changes[0].meta, meta("b"));
    assert_eq!(s.usage(b).unwrap().used_bytes, 0);
    assert_eq!(s.usage(a).unwrap().used_bytes, 10);
}

fn concurrent_commits(s: &Arc<dyn MetaStore>) {
    let a = account(&**s, "alice", 50);
    let ids: Vec<(ChunkId, u64)> = (0..16u8).map(|n| (chunk(n), 10)).collect();
    s.record_chunks(a, &ids, T0).unwrap();
    // Sixteen threads race to create one entry: exactly one wins.
    let wins: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16u8)
            .map(|n| {
                let s = s.clone();
                scope.spawn(move || {
                    let (r, _) = s.commit(a, DEV, T0, &[put(entry(200), 0, &format!("t{n}"), &[])]).unwrap();
                    usize::from(applied(&r[0]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 1, "MetaStore conformance case `concurrent_commits`: exactly one racing commit wins");
    // Sixteen threads each add a distinct 10-byte chunk under a 50-byte quota:
    // exactly five fit, and usage is exact.
    let fits: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16u8)
            .map(|n| {
                let s = s.clone();
                scope.spawn(move || match s.commit(a, DEV, T0, &[put(entry(n), 0, "q", &[chunk(n)])]) {
                    Ok(_) => 1,
                    Err(StoreError::QuotaExceeded { .. }) => 0,
                    Err(e) => panic!("unexpected {e}"),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(fits, 5, "MetaStore conformance case `concurrent_commits`: quota admits exactly five");
    assert_eq!(s.usage(a).unwrap().used_bytes, 50);
    assert_eq!(s.head(a).unwrap(), Cursor(6));
}

/// Runs every [`BlobStore`] case.
pub fn blob_store(make: BlobFactory<'_>) {
    let s = make();
    let (a, b) = (AccountId(1), AccountId(2));
    assert_eq!(s.get(a, chunk(1)).unwrap(), None);
    s.put(a, chunk(1), b"hello").unwrap();
    s.put(a, chunk(1), b"hello").unwrap();
    assert_eq!(s.get(a, chunk(1)).unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(s.get(b, chunk(1)).unwrap(), None, "blobs are per account");
    s.delete(a, chunk(1)).unwrap();
    s.delete(a, chunk(1)).unwrap();
    assert_eq!(s.get(a, chunk(1)).unwrap(), None);
    // Concurrent puts of one id and reads never see a partial blob.
    let big = vec![0xA5u8; 1 << 20];
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let s = s.clone();
            let big = &big;
            scope.spawn(move || {
                for _ in 0..5 {
                    s.put(b, chunk(2), big).unwrap();
                    if let Some(got) = s.get(b, chunk(2)).unwrap() {
                        assert_eq!(got.len(), big.len(), "BlobStore conformance: partial blob visible");
                    }
                }
            });
        }
    });
    assert_eq!(s.get(b, chunk(2)).unwrap().unwrap(), big);
    // A batch: every blob readable afterwards, a repeat and a duplicate
    // within the batch are fine.
    let bodies: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    let mut batch: Vec<(ChunkId, &[u8])> =
        bodies.iter().enumerate().map(|(i, v)| (chunk(100 + i as u8), v.as_slice())).collect();
    batch.push(batch[0]);
    s.put_many(a, &batch).unwrap();
    s.put_many(a, &batch[..3]).unwrap();
    s.put_many(a, &[]).unwrap();
    for (id, bytes) in &batch {
        assert_eq!(s.get(a, *id).unwrap().as_deref(), Some(*bytes), "BlobStore conformance: put_many");
        assert_eq!(s.get(b, *id).unwrap(), None, "blobs are per account");
    }
    // A batch delete: absent ids and other accounts' blobs are left alone.
    s.put(b, chunk(100), b"b's own").unwrap();
    s.delete_many(a, &[chunk(100), chunk(101), chunk(99)]).unwrap();
    assert_eq!(s.get(a, chunk(100)).unwrap(), None, "BlobStore conformance: delete_many");
    assert_eq!(s.get(a, chunk(101)).unwrap(), None, "BlobStore conformance: delete_many");
    assert_eq!(s.get(a, chunk(102)).unwrap().as_deref(), Some(batch[2].1));
    assert_eq!(s.get(b, chunk(100)).unwrap().as_deref(), Some(&b"b's own"[..]));
    s.delete_many(a, &[]).unwrap();
    // What a store lacks, in input order; a deleted id can be stored again.
    assert_eq!(
        s.lacking(a, &[chunk(100), chunk(102), chunk(99), chunk(101)]).unwrap(),
        vec![chunk(100), chunk(99), chunk(101)],
        "BlobStore conformance: lacking"
    );
    s.put(a, chunk(100), b"back again").unwrap();
    assert_eq!(s.get(a, chunk(100)).unwrap().as_deref(), Some(&b"back again"[..]));
    assert_eq!(s.lacking(a, &[chunk(100)]).unwrap(), vec![]);
}
