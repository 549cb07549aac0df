//! [`MetaStore`] on SQLite, one file, WAL mode: the embedded default.
//!
//! Concurrency: one writer connection behind a mutex, so every write (and
//! in particular every commit, with its quota arithmetic) runs alone in a
//! `BEGIN IMMEDIATE` transaction: accounting is exact under concurrent
//! commits, and a commit's reads see exactly the state it changes. Reads use
//! a small pool of extra connections, which WAL lets run beside the writer.
//! `synchronous = NORMAL`: a power cut may lose the last transactions but
//! never corrupts the database. Callers run these methods on a blocking pool.
//!
//! Group commit: concurrent commits queue up while one of them holds the
//! writer; the holder then applies every queued commit in one transaction,
//! each inside its own savepoint (a refused commit rolls back to its
//! savepoint and leaves the others alone). Each commit still sees the state
//! left by the ones before it, so the rules and the exact quota arithmetic
//! are unchanged; the WAL is written once per group instead of once per
//! commit. The others find their result ready when they get the writer.

mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use coffer_proto::api::{
    Change, ChangeResult, EntryVersion, JournalPage, SessionId, SnapshotPage, UnixMillis, Usage,
};
use coffer_proto::{ChunkId, Cursor, DeviceId, EntryId, Revision, SealedMeta, SealedSettings, WrappedKey};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

pub use schema::MIGRATIONS;

use super::commit::{self, AccountCounters, ChunkRow, CommitTx, EntryRow};
use super::{
    AccountId, AccountRecord, MetaStore, NewAccount, SessionRecord, StoreError, StoreResult, TokenHash,
};

/// Reader connections kept open; more concurrent reads wait for one.
const READERS: usize = 8;

/// The SQLite metadata store.
#[derive(Debug)]
pub struct SqliteMetaStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    queued: Mutex<Vec<Arc<QueuedCommit>>>,
    readers: Mutex<Readers>,
    reader_free: std::sync::Condvar,
}

type CommitResult = StoreResult<(Vec<ChangeResult>, Cursor)>;

/// A commit waiting for the writer (see the module doc).
#[derive(Debug)]
struct QueuedCommit {
    account: AccountId,
    device: DeviceId,
    now: UnixMillis,
    changes: Vec<Change>,
    result: Mutex<Option<CommitResult>>,
}

/// Most commits applied in one transaction.
const MAX_GROUP: usize = 256;

#[derive(Debug, Default)]
struct Readers {
    idle: Vec<Connection>,
    opened: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals in memory: a commit's inserts each keep one (the
    // tables have unique indexes), and on a temp file each page they
    // touch cost a write(2).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn encode_chunks(ids: &[ChunkId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.as_bytes().iter().copied()).collect()
}

fn decode_chunks(b: &[u8]) -> Vec<ChunkId> {
    b.chunks_exact(32).map(|c| ChunkId::from_slice(c).expect("32 bytes")).collect()
}

fn blob_id<T>(b: Vec<u8>, parse: impl Fn(&[u8]) -> Option<T>) -> rusqlite::Result<T> {
    parse(&b).ok_or_else(|| rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob))
}

const VERSION_COLS: &str = "r.seq, r.entry, r.rev, r.meta, r.chunks, r.device, r.time";

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntryVersion> {
    Ok(EntryVersion {
        seq: Cursor(u(row.get(0)?)),
        entry_id: blob_id(row.get(1)?, |b| EntryId::from_slice(b).ok())?,
        revision: Revision(u(row.get(2)?)),
        meta: row.get::<_, Option<Vec<u8>>>(3)?.map(SealedMeta::from_sealed_bytes),
        chunks: decode_chunks(&row.get::<_, Vec<u8>>(4)?),
        device_id: blob_id(row.get(5)?, |b| DeviceId::from_slice(b).ok())?,
        time: UnixMillis(u(row.get(6)?)),
    })
}

fn session_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: blob_id(row.get(0)?, |b| <[u8; 16]>::try_from(b).ok().map(SessionId::from_bytes))?,
        account: AccountId(u(row.get(1)?)),
        device: blob_id(row.get(2)?, |b| DeviceId::from_slice(b).ok())?,
        token_hash: blob_id(row.get(3)?, |b| <[u8; 32]>::try_from(b).ok().map(TokenHash))?,
        created_at: UnixMillis(u(row.get(4)?)),
        expires_at: UnixMillis(u(row.get(5)?)),
    })
}

const SESSION_COLS: &str = "id, account, device, token_hash, created_at, expires_at";

fn account_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        id: AccountId(u(row.get(0)?)),
        username: row.get(1)?,
        opaque_record: row.get(2)?,
        wrapped_key: WrappedKey::from_sealed_bytes(row.get(3)?),
        quota_bytes: u(row.get(4)?),
        settings: row.get::<_, Option<Vec<u8>>>(5)?.map(SealedSettings::from_sealed_bytes),
    })
}

const ACCOUNT_COLS: &str = "id, username, opaque_record, wrapped_key, quota, settings";

impl SqliteMetaStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: impl Into<PathBuf>) -> StoreResult<Self> {
        let path = path.into();
        let mut writer = open_conn(&path).map_err(db)?;
        schema::migrate(&mut writer).map_err(db)?;
        Ok(Self {
            path,
            writer: Mutex::new(writer),
            queued: Mutex::new(Vec::new()),
            readers: Mutex::new(Readers::default()),
            reader_free: std::sync::Condvar::new(),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = {
            let mut pool = self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(c) = pool.idle.pop() {
                    break Some(c);
                }
                if pool.opened < READERS {
                    pool.opened += 1;
                    break None;
                }
                pool = self.reader_free.wait(pool).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let conn = match conn {
            Some(c) => c,
            None => match open_conn(&self.path) {
                Ok(c) => c,
                Err(e) => {
                    self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).opened -= 1;
                    self.reader_free.notify_one();
                    return Err(db(e));
                }
            },
        };
        let out = f(&conn).map_err(db);
        self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).idle.push(conn);
        self.reader_free.notify_one();
        out
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let out = f(&tx)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }
}

fn floor_check(conn: &Connection, account: AccountId, after: Cursor) -> StoreResult<()> {
    let floor: Option<i64> = conn
        .query_row("SELECT journal_floor FROM accounts WHERE id = ?1", [i(account.0)], |r| r.get(0))
        .optional()
        .map_err(db)?;
    match floor {
        None => Err(StoreError::NoSuchAccount),
        Some(f) if after.0 < u(f) => Err(StoreError::CursorExpired(after)),
        Some(_) => Ok(()),
    }
}

struct SqlTx<'a, 'c> {
    tx: &'a Transaction<'c>,
    account: i64,
}

impl CommitTx for SqlTx<'_, '_> {
    fn counters(&mut self) -> StoreResult<AccountCounters> {
        self.tx
            .prepare_cached("SELECT quota, used, head FROM accounts WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([self.account], |r| {
                    Ok(AccountCounters { quota: u(r.get(0)?), used: u(r.get(1)?), head: u(r.get(2)?) })
                })
                .optional()
            })
            .map_err(db)?
            .ok_or(StoreError::NoSuchAccount)
    }

    fn chunk(&mut self, id: &ChunkId) -> StoreResult<Option<ChunkRow>> {
        self.tx
            .prepare_cached(
                "SELECT size, refs, live_refs, deleting FROM chunks WHERE account = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![self.account, &id.as_bytes()[..]], |r| {
                    Ok(ChunkRow {
                        size: u(r.get(0)?),
                        refs: u(r.get(1)?),
                        live_refs: u(r.get(2)?),
                        deleting: r.get::<_, i64>(3)? != 0,
                    })
                })
                .optional()
            })
            .map_err(db)
    }

    fn set_chunk_refs(&mut self, id: &ChunkId, refs: u64, live_refs: u64) -> StoreResult<()> {
        self.tx
            .prepare_cached("UPDATE chunks SET refs = ?3, live_refs = ?4 WHERE account = ?1 AND id = ?2")
            .and_then(|mut s| s.execute(params![self.account, &id.as_bytes()[..], i(refs), i(live_refs)]))
            .map_err(db)?;
        Ok(())
    }

    fn entry(&mut self, id: &EntryId) -> StoreResult<Option<EntryRow>> {
        self.tx
            .prepare_cached("SELECT rev, deleted FROM entries WHERE account = ?1 AND entry = ?2")
            .and_then(|mut s| {
                s.query_row(params![self.account, &id.as_bytes()[..]], |r| {
                    Ok(EntryRow { revision: Revision(u(r.get(0)?)), deleted: r.get::<_, i64>(1)? != 0 })
                })
                .optional()
            })
            .map_err(db)
    }

    fn revision_chunks(&mut self, id: &EntryId, revision: Revision) -> StoreResult<Vec<ChunkId>> {
        let b: Option<Vec<u8>> = self
            .tx
            .prepare_cached("SELECT chunks FROM revisions WHERE account = ?1 AND entry = ?2 AND rev = ?3")
            .and_then(|mut s| {
                s.query_row(params![self.account, &id.as_bytes()[..], i(revision.0)], |r| r.get(0)).optional()
            })
            .map_err(db)?;
        Ok(b.map(|b| decode_chunks(&b)).unwrap_or_default())
    }

    fn insert_revision(&mut self, v: &EntryVersion) -> StoreResult<()> {
        let entry = &v.entry_id.as_bytes()[..];
        self.tx
            .prepare_cached(
                "INSERT INTO revisions (account, entry, rev, seq, meta, chunks, device, time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.account,
                    entry,
                    i(v.revision.0),
                    i(v.seq.0),
                    v.meta.as_ref().map(|m| m.as_bytes()),
                    encode_chunks(&v.chunks),
                    &v.device_id.as_bytes()[..],
                    i(v.time.0),
                ])
            })
            .map_err(db)?;
        self.tx
            .prepare_cached(
                "INSERT INTO entries (account, entry, rev, deleted) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, entry) DO UPDATE SET rev = excluded.rev, deleted = excluded.deleted",
            )
            .and_then(|mut s| {
                s.execute(params![self.account, entry, i(v.revision.0), v.meta.is_none() as i64])
            })
            .map_err(db)?;
        Ok(())
    }

    fn set_counters(&mut self, used: u64, head: u64) -> StoreResult<()> {
        self.tx
            .prepare_cached("UPDATE accounts SET used = ?2, head = ?3 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![self.account, i(used), i(head)]))
            .map_err(db)?;
        Ok(())
    }
}

impl MetaStore for SqliteMetaStore {
    fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        self.write(|tx| {
            tx.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)", params![name, fresh])
                .map_err(db)?;
            tx.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get(0)).map_err(db)
        })
    }

    fn create_account(&self, a: NewAccount) -> StoreResult<AccountId> {
        self.write(|tx| {
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO accounts (username, opaque_record, wrapped_key, quota, created_at, settings)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        a.username,
                        a.opaque_record,
                        a.wrapped_key.as_bytes(),
                        i(a.quota_bytes),
                        i(a.created_at.0),
                        a.settings.as_ref().map(SealedSettings::as_bytes)
                    ],
                )
                .map_err(db)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists);
            }
            Ok(AccountId(u(tx.last_insert_rowid())))
        })
    }

    fn account_by_name(&self, username: &str) -> StoreResult<Option<AccountRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE username = ?1"),
                [username],
                account_row,
            )
            .optional()
        })
    }

    fn account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>> {
        self.read(|c| {
            c.query_row(&format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"), [i(id.0)], account_row)
                .optional()
        })
    }

    fn set_quota(&self, id: AccountId, quota_bytes: u64) -> StoreResult<()> {
        self.write(|tx| {
            let n = tx
                .execute("UPDATE accounts SET quota = ?2 WHERE id = ?1", params![i(id.0), i(quota_bytes)])
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::NoSuchAccount);
            }
            Ok(())
        })
    }

    fn usage(&self, id: AccountId) -> StoreResult<Usage> {
        self.read(|c| {
            c.query_row("SELECT used, quota FROM accounts WHERE id = ?1", [i(id.0)], |r| {
                Ok(Usage { used_bytes: u(r.get(0)?), quota_bytes: u(r.get(1)?) })
            })
            .optional()
        })?
        .ok_or(StoreError::NoSuchAccount)
    }

    fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    &s.id.as_bytes()[..],
                    i(s.account.0),
                    &s.device.as_bytes()[..],
                    &s.token_hash.0[..],
                    i(s.created_at.0),
                    i(s.expires_at.0)
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::NoSuchAccount
                }
                e => db(e),
            })?;
            Ok(())
        })
    }

    fn session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {SESSION_COLS} FROM sessions WHERE token_hash = ?1"))?
                .query_row([&hash.0[..]], session_row)
                .optional()
        })
    }

    fn sessions(&self, account: AccountId) -> StoreResult<Vec<SessionRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE account = ?1 ORDER BY created_at, id"
            ))?
            .query_map([i(account.0)], session_row)?
            .collect()
        })
    }

    fn revoke_session(&self, account: AccountId, id: SessionId) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM sessions WHERE id = ?1 AND account = ?2",
                    params![&id.as_bytes()[..], i(account.0)],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
    }

    fn delete_expired_sessions(&self, now: UnixMillis) -> StoreResult<u64> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [i(now.0)]).map_err(db)?;
            Ok(n as u64)
        })
    }

    fn missing_chunks(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>> {
        self.read(|c| {
            // One read transaction for the batch, not one per id.
            let tx = c.unchecked_transaction()?;
            let mut missing = Vec::new();
            {
                let mut stmt =
                    tx.prepare_cached("SELECT deleting FROM chunks WHERE account = ?1 AND id = ?2")?;
                for id in ids {
                    let deleting: Option<i64> =
                        stmt.query_row(params![i(account.0), &id.as_bytes()[..]], |r| r.get(0)).optional()?;
                    if !matches!(deleting, Some(0)) {
                        missing.push(*id);
                    }
                }
            }
            tx.commit()?;
            Ok(missing)
        })
    }

    fn record_chunks(
        &self,
        account: AccountId,
        chunks: &[(ChunkId, u64)],
        now: UnixMillis,
    ) -> StoreResult<()> {
        self.write(|tx| {
            let mut check = tx
                .prepare_cached("SELECT deleting FROM chunks WHERE account = ?1 AND id = ?2")
                .map_err(db)?;
            for (id, _) in chunks {
                let deleting: Option<i64> = check
                    .query_row(params![i(account.0), &id.as_bytes()[..]], |r| r.get(0))
                    .optional()
                    .map_err(db)?;
                if deleting == Some(1) {
                    return Err(StoreError::ChunkBusy);
                }
            }
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO chunks (account, id, size, uploaded_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (account, id) DO UPDATE SET uploaded_at = excluded.uploaded_at",
                )
                .map_err(db)?;
            for (id, size) in chunks {
                upsert.execute(params![i(account.0), &id.as_bytes()[..], i(*size), i(now.0)]).map_err(
                    |e| match e {
                        rusqlite::Error::SqliteFailure(f, _)
                            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                        {
                            StoreError::NoSuchAccount
                        }
                        e => db(e),
                    },
                )?;
            }
            Ok(())
        })
    }

    fn commit(
        &self,
        account: AccountId,
        device: DeviceId,
        now: UnixMillis,
        changes: &[Change],
    ) -> StoreResult<(Vec<ChangeResult>, Cursor)> {
        let mine = Arc::new(QueuedCommit {
            account,
            device,
            now,
            changes: changes.to_vec(),
            result: Mutex::new(None),
        });
        lock(&self.queued).push(mine.clone());
        let mut conn = lock(&self.writer);
        if let Some(done) = lock(&mine.result).take() {
            return done;
        }
        let group: Vec<Arc<QueuedCommit>> = {
            let mut q = lock(&self.queued);
            let n = q.len().min(MAX_GROUP);
            let mut group: Vec<_> = q.drain(..n).collect();
            if !group.iter().any(|c| Arc::ptr_eq(c, &mine)) {
                // Ours was queued behind a full group: take it out of turn.
                q.retain(|c| !Arc::ptr_eq(c, &mine));
                group.push(mine.clone());
            }
            group
        };
        let outcome = (|| -> StoreResult<Vec<CommitResult>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let mut results = Vec::with_capacity(group.len());
            for c in &group {
                tx.execute_batch("SAVEPOINT c").map_err(db)?;
                let r = commit::apply(
                    &mut SqlTx { tx: &tx, account: i(c.account.0) },
                    c.device,
                    c.now,
                    &c.changes,
                );
                if r.is_err() {
                    tx.execute_batch("ROLLBACK TO c").map_err(db)?;
                }
                tx.execute_batch("RELEASE c").map_err(db)?;
                results.push(r);
            }
            tx.commit().map_err(db)?;
            Ok(results)
        })();
        match outcome {
            Ok(results) => {
                for (c, r) in group.iter().zip(results) {
                    *lock(&c.result) = Some(r);
                }
            }
            Err(e) => {
                for c in &group {
                    *lock(&c.result) = Some(Err(e.clone()));
                }
            }
        }
        drop(conn);
        let done = lock(&mine.result).take();
        done.unwrap_or_else(|| Err(StoreError::Backend("commit result lost".into())))
    }

    fn head(&self, account: AccountId) -> StoreResult<Cursor> {
        self.read(|c| {
            c.query_row("SELECT head FROM accounts WHERE id = ?1", [i(account.0)], |r| r.get(0)).optional()
        })?
        .map(|h: i64| Cursor(u(h)))
        .ok_or(StoreError::NoSuchAccount)
    }

    fn journal(&self, account: AccountId, after: Cursor, limit: u32) -> StoreResult<JournalPage> {
        let (page, floor_ok) = self.read(|c| {
            let floor_ok = floor_check(c, account, after);
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM revisions r WHERE r.account = ?1 AND r.seq > ?2 ORDER BY r.seq LIMIT ?3"
            ))?;
            let mut changes: Vec<EntryVersion> =
                stmt.query_map(params![i(account.0), i(after.0), i64::from(limit) + 1], version_row)?.collect::<Result<_, _>>()?;
            let more = changes.len() > limit as usize;
            changes.truncate(limit as usize);
            let cursor = changes.last().map_or(after, |v| v.seq);
            Ok((JournalPage { changes, cursor, more }, floor_ok))
        })?;
        floor_ok?;
        Ok(page)
    }

    fn snapshot(&self, account: AccountId, after: Option<EntryId>, limit: u32) -> StoreResult<SnapshotPage> {
        let after_bytes: Vec<u8> = after.map(|e| e.as_bytes().to_vec()).unwrap_or_default();
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let head: i64 =
                tx.query_row("SELECT head FROM accounts WHERE id = ?1", [i(account.0)], |r| r.get(0))?;
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM entries e JOIN revisions r
                   ON r.account = e.account AND r.entry = e.entry AND r.rev = e.rev
                 WHERE e.account = ?1 AND e.deleted = 0 AND e.entry > ?2
                 ORDER BY e.entry LIMIT ?3"
            ))?;
            let mut entries: Vec<EntryVersion> = stmt
                .query_map(params![i(account.0), after_bytes, i64::from(limit) + 1], version_row)?
                .collect::<Result<_, _>>()?;
            let next = if entries.len() > limit as usize {
                entries.truncate(limit as usize);
                entries.last().map(|v| v.entry_id)
            } else {
                None
            };
            drop(stmt);
            tx.finish()?;
            Ok(SnapshotPage { entries, cursor: Cursor(u(head)), next })
        })
        .map_err(|e| match e {
            StoreError::Backend(m) if m.contains("no rows") => StoreError::NoSuchAccount,
            e => e,
        })
    }

    fn versions(&self, account: AccountId, entry: EntryId) -> StoreResult<Vec<EntryVersion>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM revisions r WHERE r.account = ?1 AND r.entry = ?2 ORDER BY r.rev DESC"
            ))?
            .query_map(params![i(account.0), &entry.as_bytes()[..]], version_row)?
            .collect()
        })
    }

    fn prune_versions(&self, cutoff: UnixMillis) -> StoreResult<u64> {
        self.write(|tx| {
            // Superseded revisions: the next revision exists and is older than the cutoff.
            let mut doomed: Vec<(i64, Vec<u8>, i64, Vec<u8>)> = tx
                .prepare(
                    "SELECT r.account, r.entry, r.rev, r.chunks FROM revisions r JOIN revisions n
                       ON n.account = r.account AND n.entry = r.entry AND n.rev = r.rev + 1
                     WHERE n.time < ?1",
                )
                .and_then(|mut s| {
                    s.query_map([i(cutoff.0)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect()
                })
                .map_err(db)?;
            // Entries deleted before the cutoff: every revision goes, and the entry.
            let tombs: Vec<(i64, Vec<u8>, i64, i64)> = tx
                .prepare(
                    "SELECT e.account, e.entry, e.rev, r.seq FROM entries e JOIN revisions r
                       ON r.account = e.account AND r.entry = e.entry AND r.rev = e.rev
                     WHERE e.deleted = 1 AND r.time < ?1",
                )
                .and_then(|mut s| {
                    s.query_map([i(cutoff.0)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect()
                })
                .map_err(db)?;
            for (account, entry, rev, _) in &tombs {
                let rest: Vec<(i64, Vec<u8>, i64, Vec<u8>)> = tx
                    .prepare(
                        "SELECT account, entry, rev, chunks FROM revisions WHERE account = ?1 AND entry = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![account, entry], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })?
                        .collect()
                    })
                    .map_err(db)?;
                doomed.extend(rest.into_iter().filter(|d| d.2 <= *rev));
            }
            doomed.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
            doomed.dedup_by(|a, b| (a.0, &a.1, a.2) == (b.0, &b.1, b.2));
            let mut dropped = 0;
            for (account, entry, rev, chunks) in &doomed {
                dropped += tx
                    .execute(
                        "DELETE FROM revisions WHERE account = ?1 AND entry = ?2 AND rev = ?3",
                        params![account, entry, rev],
                    )
                    .map_err(db)? as u64;
                for id in decode_chunks(chunks) {
                    tx.execute(
                        "UPDATE chunks SET refs = MAX(refs - 1, 0) WHERE account = ?1 AND id = ?2",
                        params![account, &id.as_bytes()[..]],
                    )
                    .map_err(db)?;
                }
            }
            for (account, entry, _, seq) in &tombs {
                tx.execute("DELETE FROM entries WHERE account = ?1 AND entry = ?2", params![account, entry])
                    .map_err(db)?;
                tx.execute(
                    "UPDATE accounts SET journal_floor = MAX(journal_floor, ?2) WHERE id = ?1",
                    params![account, seq],
                )
                .map_err(db)?;
            }
            Ok(dropped)
        })
    }

    fn gc_mark(&self, cutoff: UnixMillis, limit: u32) -> StoreResult<Vec<(AccountId, ChunkId)>> {
        self.write(|tx| {
            tx.execute(
                "UPDATE chunks SET deleting = 1
                 WHERE (account, id) IN (SELECT account, id FROM chunks
                   WHERE refs = 0 AND deleting = 0 AND uploaded_at < ?1 LIMIT ?2)",
                params![i(cutoff.0), i64::from(limit)],
            )
            .map_err(db)?;
            let marked: Vec<(i64, Vec<u8>)> = tx
                .prepare("SELECT account, id FROM chunks WHERE deleting = 1 ORDER BY account, id LIMIT ?1")
                .and_then(|mut s| s.query_map([i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(db)?;
            marked
                .into_iter()
                .map(|(a, id)| {
                    ChunkId::from_slice(&id)
                        .map(|id| (AccountId(u(a)), id))
                        .map_err(|_| StoreError::Backend("bad chunk id in database".into()))
                })
                .collect()
        })
    }

    fn gc_sweep(&self, marked: &[(AccountId, ChunkId)]) -> StoreResult<()> {
        self.write(|tx| {
            let mut stmt = tx
                .prepare_cached("DELETE FROM chunks WHERE account = ?1 AND id = ?2 AND deleting = 1")
                .map_err(db)?;
            for (a, id) in marked {
                stmt.execute(params![i(a.0), &id.as_bytes()[..]]).map_err(db)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made before accounts had settings opens, migrates, and
    /// reads its accounts as having none.
    #[test]
    fn an_older_database_migrates_and_keeps_its_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &schema::MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO accounts (username, opaque_record, wrapped_key, quota, created_at)
                 VALUES ('old', x'01', x'0203', 10, 0)",
                [],
            )
            .unwrap();
        }
        let s = SqliteMetaStore::open(&path).unwrap();
        let old = s.account_by_name("old").unwrap().unwrap();
        assert_eq!(old.wrapped_key.as_bytes(), &[2, 3]);
        assert_eq!(old.settings, None);
        let new = s
            .create_account(NewAccount {
                username: "new".into(),
                opaque_record: vec![1],
                wrapped_key: WrappedKey::from_sealed_bytes(vec![4]),
                settings: Some(SealedSettings::from_sealed_bytes(vec![5, 6])),
                quota_bytes: 10,
                created_at: UnixMillis(0),
            })
            .unwrap();
        let new = s.account(new).unwrap().unwrap();
        assert_eq!(new.settings.as_ref().map(SealedSettings::as_bytes), Some(&[5, 6][..]));
    }

    /// A database whose revisions were keyed by entry (schema 3) keeps
    /// every revision through the move to journal order: the journal, an
    /// entry's versions and the snapshot read as before, and the unique
    /// (entry, revision) still refuses a second row.
    #[test]
    fn revisions_keep_through_the_move_to_journal_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let (a, b) = ([0xaa_u8; 32], [0x11_u8; 32]);
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &schema::MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO accounts (username, opaque_record, wrapped_key, quota, head, created_at)
                 VALUES ('old', x'01', x'0203', 10, 3, 0)",
                [],
            )
            .unwrap();
            // Entry a at revisions 1 and 2 (seq 1 and 3), entry b at 1 (seq 2).
            for (entry, rev, seq) in [(a, 1, 1), (b, 1, 2), (a, 2, 3)] {
                conn.execute(
                    "INSERT INTO revisions (account, entry, rev, seq, meta, chunks, device, time)
                     VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?3)",
                    params![&entry[..], rev, seq, vec![seq as u8; 3], vec![seq as u8; 32], &[7u8; 16][..]],
                )
                .unwrap();
            }
            for entry in [a, b] {
                let rev = if entry == a { 2 } else { 1 };
                conn.execute(
                    "INSERT INTO entries (account, entry, rev, deleted) VALUES (1, ?1, ?2, 0)",
                    params![&entry[..], rev],
                )
                .unwrap();
            }
        }
        let s = SqliteMetaStore::open(&path).unwrap();
        let account = AccountId(1);
        let page = s.journal(account, Cursor(0), 10).unwrap();
        let seen: Vec<(u64, [u8; 32], u64)> =
            page.changes.iter().map(|v| (v.seq.0, *v.entry_id.as_bytes(), v.revision.0)).collect();
        assert_eq!(seen, vec![(1, a, 1), (2, b, 1), (3, a, 2)]);
        assert_eq!(page.changes[2].meta.as_ref().map(SealedMeta::as_bytes), Some(&[3u8; 3][..]));
        assert_eq!(page.changes[2].chunks, vec![ChunkId::from_slice(&[3u8; 32]).unwrap()]);
        let of_a = s.versions(account, EntryId::from_slice(&a).unwrap()).unwrap();
        assert_eq!(of_a.iter().map(|v| (v.revision.0, v.seq.0)).collect::<Vec<_>>(), vec![(2, 3), (1, 1)]);
        let snap = s.snapshot(account, None, 10).unwrap();
        let mut live: Vec<(u64, u64)> = snap.entries.iter().map(|v| (v.revision.0, v.seq.0)).collect();
        live.sort_unstable();
        assert_eq!(live, vec![(1, 2), (2, 3)]);
        let conn = Connection::open(&path).unwrap();
        let again = conn.execute(
            "INSERT INTO revisions (account, entry, rev, seq, meta, chunks, device, time)
             VALUES (1, ?1, 2, 4, NULL, x'', x'00', 0)",
            params![&a[..]],
        );
        assert!(again.is_err(), "a second row for (entry, revision) must be refused");
    }
}
