//! [`MetaStore`] on PostgreSQL: the store for several server instances on one
//! database.
//!
//! Concurrency: every write that reads before it writes locks what it reads.
//! A commit (and a chunk upload record) first locks the account row
//! (`SELECT ... FOR NO KEY UPDATE`), so commits of one account run one at a
//! time across every instance, while other accounts proceed in parallel; the
//! commit rules themselves are [`commit::apply`], shared with SQLite and
//! memory, so quota and revisions stay exact. A commit also locks each chunk
//! row it reads, and garbage collection marks only rows it can lock
//! (`FOR UPDATE SKIP LOCKED`) and still finds unreferenced, so a mark never
//! lands on a chunk a commit is about to reference. Transactions run at
//! `READ COMMITTED`; the rare deadlock or serialisation failure is retried.
//!
//! Wake-ups: each successful commit sends `NOTIFY coffer_journal,
//! '<account>:<head>'` inside its transaction, so PostgreSQL delivers it only
//! once the commit is visible; retention that dropped revisions sends
//! `'pruned'`, so every instance forgets the journal tails it keeps in memory. [`PostgresMetaStore::listen`] opens a
//! dedicated connection that receives them; the server feeds them to its
//! [`crate::notify::Notifier`], so a long-poll on one instance wakes for a
//! commit made through another.
//!
//! Connections: a small pool of synchronous `postgres` clients, opened on
//! demand. Callers run these methods on a blocking pool (the `postgres`
//! crate drives its own runtime and must not be called from async code).

mod schema;

use std::str::FromStr;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use coffer_proto::api::{
    Change, ChangeResult, EntryVersion, JournalPage, SessionId, SnapshotPage, UnixMillis, Usage,
};
use coffer_proto::{ChunkId, Cursor, DeviceId, EntryId, Revision, SealedMeta, SealedSettings, WrappedKey};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Transaction};

pub use schema::MIGRATIONS;

use super::commit::{self, AccountCounters, ChunkRow, CommitTx, EntryRow};
use super::{
    AccountId, AccountRecord, MetaStore, NewAccount, SessionRecord, StoreError, StoreResult, TokenHash,
};

/// The channel commits are announced on.
pub const CHANNEL: &str = "coffer_journal";

/// Connections kept open; more concurrent calls wait for one.
const MAX_CONNECTIONS: usize = 8;

/// Attempts of a transaction that hit a deadlock or serialisation failure.
const ATTEMPTS: u32 = 8;

/// The PostgreSQL metadata store.
pub struct PostgresMetaStore {
    config: postgres::Config,
    pool: Mutex<Pool>,
    free: Condvar,
}

impl std::fmt::Debug for PostgresMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration may hold a password: show only where it points.
        f.debug_struct("PostgresMetaStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Pool {
    idle: Vec<Client>,
    opened: usize,
}

/// A failure inside a transaction: a refusal to hand back, or a database
/// error that may call for another attempt.
enum TxError {
    Store(StoreError),
    Pg(postgres::Error),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> Self {
        Self::Pg(e)
    }
}

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Backend(format!("postgres: {e}"))
}

fn transient(e: &postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

fn is_code(e: &postgres::Error, code: &SqlState) -> bool {
    e.code() == Some(code)
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

fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("postgres: malformed {what} in database"))
}

const VERSION_COLS: &str = "r.seq, r.entry, r.rev, r.meta, r.chunks, r.device, r.time";

fn version_row(row: &Row) -> StoreResult<EntryVersion> {
    Ok(EntryVersion {
        seq: Cursor(u(row.get(0))),
        entry_id: EntryId::from_slice(row.get(1)).map_err(|_| bad("entry id"))?,
        revision: Revision(u(row.get(2))),
        meta: row.get::<_, Option<Vec<u8>>>(3).map(SealedMeta::from_sealed_bytes),
        chunks: decode_chunks(row.get(4)),
        device_id: DeviceId::from_slice(row.get(5)).map_err(|_| bad("device id"))?,
        time: UnixMillis(u(row.get(6))),
    })
}

const SESSION_COLS: &str = "id, account, device, token_hash, created_at, expires_at";

fn session_row(row: &Row) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: <[u8; 16]>::try_from(row.get::<_, &[u8]>(0))
            .map(SessionId::from_bytes)
            .map_err(|_| bad("session"))?,
        account: AccountId(u(row.get(1))),
        device: DeviceId::from_slice(row.get(2)).map_err(|_| bad("device id"))?,
        token_hash: <[u8; 32]>::try_from(row.get::<_, &[u8]>(3)).map(TokenHash).map_err(|_| bad("token"))?,
        created_at: UnixMillis(u(row.get(4))),
        expires_at: UnixMillis(u(row.get(5))),
    })
}

const ACCOUNT_COLS: &str = "id, username, opaque_record, wrapped_key, quota, settings";

fn account_row(row: &Row) -> AccountRecord {
    AccountRecord {
        id: AccountId(u(row.get(0))),
        username: row.get(1),
        opaque_record: row.get(2),
        wrapped_key: WrappedKey::from_sealed_bytes(row.get(3)),
        quota_bytes: u(row.get(4)),
        settings: row.get::<_, Option<Vec<u8>>>(5).map(SealedSettings::from_sealed_bytes),
    }
}

fn lock(m: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PostgresMetaStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db`, or the
    /// key=value form), and creates or migrates the schema.
    pub fn open(url: &str) -> StoreResult<Self> {
        let config = postgres::Config::from_str(url)
            .map_err(|e| StoreError::Backend(format!("postgres: bad connection URL: {e}")))?;
        let mut first = config.connect(NoTls).map_err(pg)?;
        schema::migrate(&mut first).map_err(pg)?;
        let store = Self { config, pool: Mutex::new(Pool::default()), free: Condvar::new() };
        {
            let mut pool = lock(&store.pool);
            pool.idle.push(first);
            pool.opened = 1;
        }
        Ok(store)
    }

    /// Opens a dedicated connection that receives commit announcements.
    pub fn listen(&self) -> StoreResult<CommitListener> {
        let mut client = self.config.connect(NoTls).map_err(pg)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}")).map_err(pg)?;
        Ok(CommitListener { client: Some(client) })
    }

    fn checkout(&self) -> StoreResult<Client> {
        {
            let mut pool = lock(&self.pool);
            loop {
                if let Some(c) = pool.idle.pop() {
                    if !c.is_closed() {
                        return Ok(c);
                    }
                    pool.opened -= 1;
                    drop_client(c);
                    continue;
                }
                if pool.opened < MAX_CONNECTIONS {
                    pool.opened += 1;
                    break;
                }
                pool = self.free.wait(pool).unwrap_or_else(PoisonError::into_inner);
            }
        }
        self.config.connect(NoTls).map_err(|e| {
            lock(&self.pool).opened -= 1;
            self.free.notify_one();
            pg(e)
        })
    }

    fn checkin(&self, client: Client) {
        let mut pool = lock(&self.pool);
        if client.is_closed() {
            pool.opened -= 1;
            drop(pool);
            drop_client(client);
        } else {
            pool.idle.push(client);
        }
        self.free.notify_one();
    }

    /// Runs `f` with a pooled connection.
    fn read<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, TxError>) -> StoreResult<T> {
        let mut client = self.checkout()?;
        let out = f(&mut client);
        self.checkin(client);
        match out {
            Ok(v) => Ok(v),
            Err(TxError::Store(e)) => Err(e),
            Err(TxError::Pg(e)) => Err(pg(e)),
        }
    }

    /// Runs `f` in a transaction, again if it hits a deadlock or a
    /// serialisation failure.
    fn write<T>(&self, mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, TxError>) -> StoreResult<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.checkout()?;
            let out = (|| -> Result<T, TxError> {
                let mut tx = client.transaction()?;
                let v = f(&mut tx)?;
                tx.commit()?;
                Ok(v)
            })();
            self.checkin(client);
            match out {
                Ok(v) => return Ok(v),
                Err(TxError::Store(e)) => return Err(e),
                Err(TxError::Pg(e)) if transient(&e) && attempt < ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(u64::from(attempt) * 5));
                }
                Err(TxError::Pg(e)) => return Err(pg(e)),
            }
        }
    }
}

/// Drops a client off any async context: the `postgres` crate owns a tokio
/// runtime per connection, and a runtime must not be dropped in async code.
fn drop_client(client: Client) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::spawn(move || drop(client)).join();
    } else {
        drop(client);
    }
}

impl Drop for PostgresMetaStore {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut lock(&self.pool).idle);
        for c in idle {
            drop_client(c);
        }
    }
}

/// A dedicated connection receiving commit announcements
/// (`(account, head)` pairs). Blocking; run it on its own thread.
pub struct CommitListener {
    client: Option<Client>,
}

impl std::fmt::Debug for CommitListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitListener").finish_non_exhaustive()
    }
}

impl CommitListener {
    /// Waits up to `timeout` for announcements and returns those that came
    /// (empty on timeout). An error means the connection is gone: open a new
    /// listener, and re-read the heads of watched accounts, since
    /// announcements sent meanwhile are lost.
    pub fn wait(&mut self, timeout: Duration) -> StoreResult<Vec<Announcement>> {
        let client = self.client.as_mut().ok_or_else(|| StoreError::Backend("listener closed".into()))?;
        let mut out = Vec::new();
        {
            use postgres::fallible_iterator::FallibleIterator;
            let mut notes = client.notifications();
            // Wait for the first, then take whatever else already arrived.
            let first = notes.timeout_iter(timeout).next().map_err(pg)?;
            if let Some(n) = first {
                out.extend(parse_note(n.payload()));
                let mut rest = notes.iter();
                while let Some(n) = rest.next().map_err(pg)? {
                    out.extend(parse_note(n.payload()));
                }
            }
        }
        if out.is_empty() && client.is_closed() {
            return Err(StoreError::Backend("postgres: listener connection closed".into()));
        }
        Ok(out)
    }
}

impl Drop for CommitListener {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            drop_client(c);
        }
    }
}

/// What another instance (or this one) announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// A commit raised the account's journal head.
    Commit(AccountId, Cursor),
    /// Retention dropped revisions: journal tails kept in memory may be stale.
    Pruned,
}

const PRUNED: &str = "pruned";

fn parse_note(payload: &str) -> Option<Announcement> {
    if payload == PRUNED {
        return Some(Announcement::Pruned);
    }
    let (a, h) = payload.split_once(':')?;
    Some(Announcement::Commit(AccountId(a.parse().ok()?), Cursor(h.parse().ok()?)))
}

/// Locks the account row for the rest of the transaction; `NoSuchAccount`
/// if there is none.
fn lock_account(tx: &mut Transaction<'_>, account: i64) -> Result<AccountCounters, TxError> {
    let row = tx
        .query_opt("SELECT quota, used, head FROM accounts WHERE id = $1 FOR NO KEY UPDATE", &[&account])?
        .ok_or(StoreError::NoSuchAccount)?;
    Ok(AccountCounters { quota: u(row.get(0)), used: u(row.get(1)), head: u(row.get(2)) })
}

struct PgTx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    account: i64,
    /// The database error behind a `Backend` result, kept so a transient
    /// one can be retried.
    failed: Option<postgres::Error>,
}

impl CommitTx for PgTx<'_, '_> {
    fn counters(&mut self) -> StoreResult<AccountCounters> {
        match lock_account(self.tx, self.account) {
            Ok(c) => Ok(c),
            Err(TxError::Store(e)) => Err(e),
            Err(TxError::Pg(e)) => Err(self.remember(e)),
        }
    }

    fn chunk(&mut self, id: &ChunkId) -> StoreResult<Option<ChunkRow>> {
        let row = self.tx.query_opt(
            "SELECT size, refs, live_refs, deleting FROM chunks WHERE account = $1 AND id = $2 FOR UPDATE",
            &[&self.account, &&id.as_bytes()[..]],
        );
        let row = row.map_err(|e| self.remember(e))?;
        Ok(row.map(|r| ChunkRow {
            size: u(r.get(0)),
            refs: u(r.get(1)),
            live_refs: u(r.get(2)),
            deleting: r.get(3),
        }))
    }

    fn set_chunk_refs(&mut self, id: &ChunkId, refs: u64, live_refs: u64) -> StoreResult<()> {
        self.tx
            .execute(
                "UPDATE chunks SET refs = $3, live_refs = $4 WHERE account = $1 AND id = $2",
                &[&self.account, &&id.as_bytes()[..], &i(refs), &i(live_refs)],
            )
            .map_err(|e| self.remember(e))?;
        Ok(())
    }

    fn entry(&mut self, id: &EntryId) -> StoreResult<Option<EntryRow>> {
        let row = self
            .tx
            .query_opt(
                "SELECT rev, deleted FROM entries WHERE account = $1 AND entry = $2",
                &[&self.account, &&id.as_bytes()[..]],
            )
            .map_err(|e| self.remember(e))?;
        Ok(row.map(|r| EntryRow { revision: Revision(u(r.get(0))), deleted: r.get(1) }))
    }

    fn revision_chunks(&mut self, id: &EntryId, revision: Revision) -> StoreResult<Vec<ChunkId>> {
        let row = self
            .tx
            .query_opt(
                "SELECT chunks FROM revisions WHERE account = $1 AND entry = $2 AND rev = $3",
                &[&self.account, &&id.as_bytes()[..], &i(revision.0)],
            )
            .map_err(|e| self.remember(e))?;
        Ok(row.map(|r| decode_chunks(r.get(0))).unwrap_or_default())
    }

    fn insert_revision(&mut self, v: &EntryVersion) -> StoreResult<()> {
        let entry = &v.entry_id.as_bytes()[..];
        self.tx
            .execute(
                "INSERT INTO revisions (account, entry, rev, seq, meta, chunks, device, time)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &self.account,
                    &entry,
                    &i(v.revision.0),
                    &i(v.seq.0),
                    &v.meta.as_ref().map(|m| m.as_bytes()),
                    &encode_chunks(&v.chunks),
                    &&v.device_id.as_bytes()[..],
                    &i(v.time.0),
                ],
            )
            .map_err(|e| self.remember(e))?;
        self.tx
            .execute(
                "INSERT INTO entries (account, entry, rev, deleted) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (account, entry) DO UPDATE SET rev = excluded.rev, deleted = excluded.deleted",
                &[&self.account, &entry, &i(v.revision.0), &v.meta.is_none()],
            )
            .map_err(|e| self.remember(e))?;
        Ok(())
    }

    fn set_counters(&mut self, used: u64, head: u64) -> StoreResult<()> {
        self.tx
            .execute(
                "UPDATE accounts SET used = $2, head = $3 WHERE id = $1",
                &[&self.account, &i(used), &i(head)],
            )
            .map_err(|e| self.remember(e))?;
        Ok(())
    }
}

impl PgTx<'_, '_> {
    fn remember(&mut self, e: postgres::Error) -> StoreError {
        let out = StoreError::Backend(format!("postgres: {e}"));
        self.failed = Some(e);
        out
    }
}

impl MetaStore for PostgresMetaStore {
    fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh],
            )?;
            Ok(tx.query_one("SELECT value FROM secrets WHERE name = $1", &[&name])?.get(0))
        })
    }

    fn create_account(&self, a: NewAccount) -> StoreResult<AccountId> {
        self.write(|tx| {
            let row = tx
                .query_opt(
                    "INSERT INTO accounts (username, opaque_record, wrapped_key, quota, created_at, settings)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) DO NOTHING RETURNING id",
                    &[
                        &a.username,
                        &a.opaque_record,
                        &a.wrapped_key.as_bytes(),
                        &i(a.quota_bytes),
                        &i(a.created_at.0),
                        &a.settings.as_ref().map(SealedSettings::as_bytes),
                    ],
                )?
                .ok_or(StoreError::AlreadyExists)?;
            Ok(AccountId(u(row.get(0))))
        })
    }

    fn account_by_name(&self, username: &str) -> StoreResult<Option<AccountRecord>> {
        self.read(|c| {
            Ok(c.query_opt(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE username = $1"),
                &[&username],
            )?
            .as_ref()
            .map(account_row))
        })
    }

    fn account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>> {
        self.read(|c| {
            Ok(c.query_opt(&format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1"), &[&i(id.0)])?
                .as_ref()
                .map(account_row))
        })
    }

    fn set_quota(&self, id: AccountId, quota_bytes: u64) -> StoreResult<()> {
        self.write(|tx| {
            let n =
                tx.execute("UPDATE accounts SET quota = $2 WHERE id = $1", &[&i(id.0), &i(quota_bytes)])?;
            if n == 0 {
                return Err(StoreError::NoSuchAccount.into());
            }
            Ok(())
        })
    }

    fn usage(&self, id: AccountId) -> StoreResult<Usage> {
        self.read(|c| {
            let row = c
                .query_opt("SELECT used, quota FROM accounts WHERE id = $1", &[&i(id.0)])?
                .ok_or(StoreError::NoSuchAccount)?;
            Ok(Usage { used_bytes: u(row.get(0)), quota_bytes: u(row.get(1)) })
        })
    }

    fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                &[
                    &&s.id.as_bytes()[..],
                    &i(s.account.0),
                    &&s.device.as_bytes()[..],
                    &&s.token_hash.0[..],
                    &i(s.created_at.0),
                    &i(s.expires_at.0),
                ],
            )
            .map_err(|e| {
                if is_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                    TxError::Store(StoreError::NoSuchAccount)
                } else {
                    TxError::Pg(e)
                }
            })?;
            Ok(())
        })
    }

    fn session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.read(|c| {
            let row = c.query_opt(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE token_hash = $1"),
                &[&&hash.0[..]],
            )?;
            Ok(row.as_ref().map(session_row).transpose()?)
        })
    }

    fn sessions(&self, account: AccountId) -> StoreResult<Vec<SessionRecord>> {
        self.read(|c| {
            let rows = c.query(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE account = $1 ORDER BY created_at, id"),
                &[&i(account.0)],
            )?;
            Ok(rows.iter().map(session_row).collect::<StoreResult<_>>()?)
        })
    }

    fn revoke_session(&self, account: AccountId, id: SessionId) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM sessions WHERE id = $1 AND account = $2",
                &[&&id.as_bytes()[..], &i(account.0)],
            )?;
            Ok(n > 0)
        })
    }

    fn delete_expired_sessions(&self, now: UnixMillis) -> StoreResult<u64> {
        self.write(|tx| Ok(tx.execute("DELETE FROM sessions WHERE expires_at <= $1", &[&i(now.0)])?))
    }

    fn missing_chunks(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>> {
        let keys: Vec<&[u8]> = ids.iter().map(|id| &id.as_bytes()[..]).collect();
        let present: std::collections::HashSet<Vec<u8>> = self.read(|c| {
            let rows = c.query(
                "SELECT id FROM chunks WHERE account = $1 AND id = ANY($2) AND NOT deleting",
                &[&i(account.0), &keys],
            )?;
            Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })?;
        Ok(ids.iter().filter(|id| !present.contains(&id.as_bytes()[..])).copied().collect())
    }

    fn record_chunks(
        &self,
        account: AccountId,
        chunks: &[(ChunkId, u64)],
        now: UnixMillis,
    ) -> StoreResult<()> {
        let a = i(account.0);
        let keys: Vec<&[u8]> = chunks.iter().map(|(id, _)| &id.as_bytes()[..]).collect();
        self.write(|tx| {
            // Serialises with this account's commits; see the module doc.
            lock_account(tx, a)?;
            let busy = tx.query_opt(
                "SELECT 1 FROM chunks WHERE account = $1 AND id = ANY($2) AND deleting LIMIT 1",
                &[&a, &keys],
            )?;
            if busy.is_some() {
                return Err(StoreError::ChunkBusy.into());
            }
            let stmt = tx.prepare(
                "INSERT INTO chunks (account, id, size, uploaded_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (account, id) DO UPDATE SET uploaded_at = excluded.uploaded_at",
            )?;
            for (id, size) in chunks {
                tx.execute(&stmt, &[&a, &&id.as_bytes()[..], &i(*size), &i(now.0)])?;
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
        self.write(|tx| {
            let mut sub = tx.savepoint("commit_rules")?;
            let mut ctx = PgTx { tx: &mut sub, account: i(account.0), failed: None };
            let outcome = commit::apply(&mut ctx, device, now, changes);
            let failed = ctx.failed.take();
            match outcome {
                Ok((results, head)) => {
                    sub.commit()?;
                    tx.execute(
                        "SELECT pg_notify($1, $2)",
                        &[&CHANNEL, &format!("{}:{}", account.0, head.0)],
                    )?;
                    Ok((results, head))
                }
                Err(e) => match failed {
                    Some(pe) => Err(TxError::Pg(pe)),
                    // A refusal: the savepoint rolls back on drop and the
                    // (empty) transaction commits.
                    None => Err(e.into()),
                },
            }
        })
    }

    fn head(&self, account: AccountId) -> StoreResult<Cursor> {
        self.read(|c| {
            let row = c
                .query_opt("SELECT head FROM accounts WHERE id = $1", &[&i(account.0)])?
                .ok_or(StoreError::NoSuchAccount)?;
            Ok(Cursor(u(row.get(0))))
        })
    }

    fn journal(&self, account: AccountId, after: Cursor, limit: u32) -> StoreResult<JournalPage> {
        self.read(|c| {
            let mut tx = c.build_transaction().read_only(true).isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
            let floor = tx
                .query_opt("SELECT journal_floor FROM accounts WHERE id = $1", &[&i(account.0)])?
                .ok_or(StoreError::NoSuchAccount)?;
            if after.0 < u(floor.get(0)) {
                return Err(StoreError::CursorExpired(after).into());
            }
            let rows = tx.query(
                &format!(
                    "SELECT {VERSION_COLS} FROM revisions r WHERE r.account = $1 AND r.seq > $2 ORDER BY r.seq LIMIT $3"
                ),
                &[&i(account.0), &i(after.0), &(i64::from(limit) + 1)],
            )?;
            tx.commit()?;
            let mut changes = rows.iter().map(version_row).collect::<StoreResult<Vec<_>>>()?;
            let more = changes.len() > limit as usize;
            changes.truncate(limit as usize);
            let cursor = changes.last().map_or(after, |v| v.seq);
            Ok(JournalPage { changes, cursor, more })
        })
    }

    fn snapshot(&self, account: AccountId, after: Option<EntryId>, limit: u32) -> StoreResult<SnapshotPage> {
        let after_bytes: Vec<u8> = after.map(|e| e.as_bytes().to_vec()).unwrap_or_default();
        self.read(|c| {
            let mut tx = c
                .build_transaction()
                .read_only(true)
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .start()?;
            let head = tx
                .query_opt("SELECT head FROM accounts WHERE id = $1", &[&i(account.0)])?
                .ok_or(StoreError::NoSuchAccount)?;
            let rows = tx.query(
                &format!(
                    "SELECT {VERSION_COLS} FROM entries e JOIN revisions r
                       ON r.account = e.account AND r.entry = e.entry AND r.rev = e.rev
                     WHERE e.account = $1 AND NOT e.deleted AND e.entry > $2
                     ORDER BY e.entry LIMIT $3"
                ),
                &[&i(account.0), &after_bytes, &(i64::from(limit) + 1)],
            )?;
            tx.commit()?;
            let mut entries = rows.iter().map(version_row).collect::<StoreResult<Vec<_>>>()?;
            let next = if entries.len() > limit as usize {
                entries.truncate(limit as usize);
                entries.last().map(|v| v.entry_id)
            } else {
                None
            };
            Ok(SnapshotPage { entries, cursor: Cursor(u(head.get(0))), next })
        })
    }

    fn versions(&self, account: AccountId, entry: EntryId) -> StoreResult<Vec<EntryVersion>> {
        self.read(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {VERSION_COLS} FROM revisions r WHERE r.account = $1 AND r.entry = $2 ORDER BY r.rev DESC"
                ),
                &[&i(account.0), &&entry.as_bytes()[..]],
            )?;
            Ok(rows.iter().map(version_row).collect::<StoreResult<_>>()?)
        })
    }

    fn prune_versions(&self, cutoff: UnixMillis) -> StoreResult<u64> {
        self.write(|tx| {
            let cut = i(cutoff.0);
            // Lock every account concerned, in id order (commits lock one
            // account, so no cycle), before reading what to drop.
            tx.query(
                "SELECT id FROM accounts WHERE id IN (
                     SELECT r.account FROM revisions r JOIN revisions n
                       ON n.account = r.account AND n.entry = r.entry AND n.rev = r.rev + 1
                     WHERE n.time < $1
                     UNION
                     SELECT e.account FROM entries e JOIN revisions r
                       ON r.account = e.account AND r.entry = e.entry AND r.rev = e.rev
                     WHERE e.deleted AND r.time < $1)
                 ORDER BY id FOR NO KEY UPDATE",
                &[&cut],
            )?;
            // Superseded revisions: the next revision exists and is older than the cutoff.
            let mut doomed: Vec<(i64, Vec<u8>, i64, Vec<u8>)> = tx
                .query(
                    "SELECT r.account, r.entry, r.rev, r.chunks FROM revisions r JOIN revisions n
                       ON n.account = r.account AND n.entry = r.entry AND n.rev = r.rev + 1
                     WHERE n.time < $1",
                    &[&cut],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            // Entries deleted before the cutoff: every revision goes, and the entry.
            let tombs: Vec<(i64, Vec<u8>, i64, i64)> = tx
                .query(
                    "SELECT e.account, e.entry, e.rev, r.seq FROM entries e JOIN revisions r
                       ON r.account = e.account AND r.entry = e.entry AND r.rev = e.rev
                     WHERE e.deleted AND r.time < $1",
                    &[&cut],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            for (account, entry, rev, _) in &tombs {
                let rest = tx.query(
                    "SELECT account, entry, rev, chunks FROM revisions
                         WHERE account = $1 AND entry = $2 AND rev <= $3",
                    &[account, entry, rev],
                )?;
                doomed.extend(rest.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))));
            }
            doomed.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
            doomed.dedup_by(|a, b| (a.0, &a.1, a.2) == (b.0, &b.1, b.2));
            let mut dropped = 0;
            for (account, entry, rev, chunks) in &doomed {
                dropped += tx.execute(
                    "DELETE FROM revisions WHERE account = $1 AND entry = $2 AND rev = $3",
                    &[account, entry, rev],
                )?;
                for id in decode_chunks(chunks) {
                    tx.execute(
                        "UPDATE chunks SET refs = GREATEST(refs - 1, 0) WHERE account = $1 AND id = $2",
                        &[account, &&id.as_bytes()[..]],
                    )?;
                }
            }
            for (account, entry, _, seq) in &tombs {
                tx.execute("DELETE FROM entries WHERE account = $1 AND entry = $2", &[account, entry])?;
                tx.execute(
                    "UPDATE accounts SET journal_floor = GREATEST(journal_floor, $2) WHERE id = $1",
                    &[account, seq],
                )?;
            }
            if dropped > 0 || !tombs.is_empty() {
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &PRUNED])?;
            }
            Ok(dropped)
        })
    }

    fn gc_mark(&self, cutoff: UnixMillis, limit: u32) -> StoreResult<Vec<(AccountId, ChunkId)>> {
        self.write(|tx| {
            // Only rows no commit holds, re-checked once locked (READ COMMITTED).
            tx.execute(
                "UPDATE chunks SET deleting = TRUE WHERE (account, id) IN (
                     SELECT account, id FROM chunks
                     WHERE refs = 0 AND NOT deleting AND uploaded_at < $1
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&i(cutoff.0), &i64::from(limit)],
            )?;
            let rows = tx.query(
                "SELECT account, id FROM chunks WHERE deleting ORDER BY account, id LIMIT $1",
                &[&i64::from(limit)],
            )?;
            Ok(rows
                .iter()
                .map(|r| {
                    ChunkId::from_slice(r.get(1))
                        .map(|id| (AccountId(u(r.get(0))), id))
                        .map_err(|_| bad("chunk id"))
                })
                .collect::<StoreResult<Vec<_>>>()?)
        })
    }

    fn gc_sweep(&self, marked: &[(AccountId, ChunkId)]) -> StoreResult<()> {
        self.write(|tx| {
            let stmt = tx.prepare("DELETE FROM chunks WHERE account = $1 AND id = $2 AND deleting")?;
            for (a, id) in marked {
                tx.execute(&stmt, &[&i(a.0), &&id.as_bytes()[..]])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads_parse() {
        assert_eq!(parse_note("12:345"), Some(Announcement::Commit(AccountId(12), Cursor(345))));
        assert_eq!(parse_note("pruned"), Some(Announcement::Pruned));
        assert_eq!(parse_note("12"), None);
        assert_eq!(parse_note("x:1"), None);
    }
}
