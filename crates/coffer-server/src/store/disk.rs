//! [`BlobStore`] in a folder: chunks appended to pack files, found through
//! an index.
//!
//! ```text
//! ROOT/lock                          locked while a process has the store open
//! ROOT/index.db                      SQLite (WAL, synchronous = FULL): where each blob is
//! ROOT/packs/<account>/<seq>.pack    records appended one after another
//! ROOT/<account>/<2 hex>/<id hex>    blobs of stores written before packs (read and deleted)
//! ```
//!
//! A record is the chunk id (32 bytes), the length (u32, little endian) and
//! the sealed bytes. Each account appends to its newest pack until it holds
//! [`DiskBlobStore::DEFAULT_PACK_BYTES`]; packs are never shared between
//! accounts, so accounts never share a file and collecting one account's
//! chunks never touches another's.
//!
//! # Why packs
//! One file per chunk cost the store an inode, a file creation, an fsync
//! and a rename for every chunk: 12,000 files for a 1 GiB file at 80 KiB
//! chunks, and a third of the store's CPU time went into ext4's inode
//! allocation (docs/benchmarks.md). A batch ([`BlobStore::put_many`], one
//! upload request) is now one append, one `fdatasync` of the pack and one
//! index transaction.
//!
//! # Durability and crashes
//! A batch is appended and `fdatasync`ed before its index rows are
//! committed (with `synchronous = FULL`, so the commit is on disk when
//! `put_many` returns). A crash in between leaves bytes at the end of the
//! pack that no row points to: dead space, never read. Appends always go to
//! the end of the file as it is on disk, so a torn or failed append is
//! never mistaken for a record. A new pack's folder entries are fsynced
//! before its first rows are committed.
//!
//! A read checks the record's header (id and length) against the index, so
//! a stale or damaged index yields an error, never another chunk's bytes.
//!
//! # Deletes and compaction
//! A delete removes the blob's row and lowers its pack's live byte count.
//! A pack other than the account's newest is removed once nothing in it is
//! live, and rewritten when less than half of it is: its live records are
//! appended to the newest pack, their rows moved in one transaction, then
//! the old file removed (a crash between the two leaves a file no row
//! names, removed at the account's next append after a restart). A reader
//! that looked a blob up before the move and
//! finds the old pack gone looks it up again. Pack numbers only grow (the
//! highest-numbered pack in the index is never removed), so a stale
//! location can only name a file that holds that very record, or no file.
//!
//! # Concurrency
//! One process at a time: opening takes an exclusive lock on `ROOT/lock`
//! (appends from two processes would interleave in one pack). Within it,
//! writes and deletes of one account run one at a time (a lock per
//! account); accounts do not wait for each other except on the index's
//! writer connection. Reads take neither: WAL lets the pooled reader
//! connections run beside the writer.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use coffer_proto::ChunkId;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{AccountId, BlobStore, StoreError, StoreResult};

/// Bytes before a blob's sealed bytes in a pack: the id and the length.
const HEADER: usize = 32 + 4;

/// Blobs this large or larger are appended from their own memory, not
/// copied into the append's buffer, and read without a copy.
const WRITE_BUFFER: usize = 64 << 10;
/// How often a read looks a blob up again after its pack vanished under a
/// compaction.
const READ_ATTEMPTS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS packs (
    account INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    size INTEGER NOT NULL,
    live INTEGER NOT NULL,
    PRIMARY KEY (account, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    account INTEGER NOT NULL,
    id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL,
    PRIMARY KEY (account, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_pack ON blobs (account, seq);
";

/// Chunks in pack files under one root folder (see the module doc).
#[derive(Debug)]
pub struct DiskBlobStore {
    root: PathBuf,
    /// Held (locked) while the store is open: one process per folder.
    _lock: fs::File,
    pack_bytes: u64,
    index: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    accounts: Mutex<HashMap<AccountId, Arc<Mutex<Tail>>>>,
}

/// Where an account appends: its newest pack, once looked up. No file
/// stays open between batches (a server has many accounts).
#[derive(Debug, Default)]
struct Tail {
    seq: Option<u64>,
    /// The pack whose folder entry this process has made durable.
    synced: Option<u64>,
}

/// Accounts whose [`Tail`] is remembered before idle ones are forgotten.
const TAILS_KEPT: usize = 4096;

/// What [`DiskBlobStore::append`] wrote.
struct Appended {
    seq: u64,
    /// The pack's length after the append.
    size: u64,
    locations: Vec<Location>,
    /// The pack that was full, when this append started a new one.
    rolled_from: Option<u64>,
}

/// Where a blob is.
#[derive(Clone, Copy, Debug)]
struct Location {
    seq: u64,
    offset: u64,
    len: u64,
}

impl Location {
    fn record_len(&self) -> u64 {
        HEADER as u64 + self.len
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("blob store I/O: {e}"))
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("blob index: {e}"))
}

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn open_index(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // A committed row must survive a power cut: the metadata store records
    // the chunk as stored right after `put_many` returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Where the index says a blob is.
fn locate_in(c: &Connection, account: AccountId, id: ChunkId) -> rusqlite::Result<Option<Location>> {
    c.prepare_cached("SELECT seq, offset, len FROM blobs WHERE account = ?1 AND id = ?2")?
        .query_row(params![sql_int(account.0), id.as_bytes().as_slice()], |r| {
            Ok(Location { seq: r.get(0)?, offset: r.get(1)?, len: r.get(2)? })
        })
        .optional()
}

/// Reads the record at `at` of an open pack and checks its header
/// against the index. A small record is read whole, in one call; a large
/// one's head is read on its own and its blob straight into a buffer of
/// its size, which is neither zeroed first nor shifted after (a download of
/// 1 GiB would otherwise set and move 1 GiB more in the store), in one
/// `pread` as a rule (`Read::take` and `read_to_end` had read it in
/// growing pieces from 8 KiB, after a seek).
fn read_record_in(file: &fs::File, id: ChunkId, at: Location) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(at.len).map_err(|_| std::io::Error::other("blob length"))?;
    let check = |head: &[u8]| {
        let header_len = u32::from_le_bytes(head[32..HEADER].try_into().expect("4 bytes"));
        if head[..32] != *id.as_bytes() || u64::from(header_len) != at.len {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("pack {} at {} does not hold chunk {}", at.seq, at.offset, id.to_hex()),
            ));
        }
        Ok(())
    };
    let cut_short = || {
        std::io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("pack {} ends inside chunk {}", at.seq, id.to_hex()),
        )
    };
    let eof = |e: std::io::Error| if e.kind() == ErrorKind::UnexpectedEof { cut_short() } else { e };
    if len < WRITE_BUFFER {
        let mut buf = vec![0u8; HEADER + len];
        file.read_exact_at(&mut buf, at.offset).map_err(eof)?;
        check(&buf)?;
        buf.drain(..HEADER);
        return Ok(buf);
    }
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, at.offset).map_err(eof)?;
    check(&head)?;
    // Read into the buffer's spare capacity: not zeroed first.
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let from = at.offset + (HEADER + buf.len()) as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), from) {
            Ok(0) => return Err(cut_short()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The allocation may be larger than asked: what was read past the
    // record is not its.
    buf.truncate(len);
    Ok(buf)
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io)
}

impl DiskBlobStore {
    /// Size at which an account starts a new pack.
    pub const DEFAULT_PACK_BYTES: u64 = 64 << 20;

    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        Self::open_with_pack_bytes(root, Self::DEFAULT_PACK_BYTES)
    }

    /// As [`Self::open`], starting a new pack once one holds `pack_bytes`
    /// (tests use small packs to exercise rollover and compaction).
    pub fn open_with_pack_bytes(root: impl Into<PathBuf>, pack_bytes: u64) -> StoreResult<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("packs")).map_err(io)?;
        // The folders' own entries, once per process: a crash may have
        // come between an earlier run's creation of them and its fsync.
        sync_dir(&root.join("packs"))?;
        sync_dir(&root)?;
        let lock = fs::File::create(root.join("lock")).map_err(io)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Backend(format!(
                    "the chunk folder {} is in use by another process; a disk store serves one \
                     instance (several instances share an S3 bucket: --blobs s3://...)",
                    root.display()
                )))
            }
            Err(e) => return Err(io(e.into())),
        }
        let index = open_index(&root.join("index.db")).map_err(db)?;
        index.execute_batch(SCHEMA).map_err(db)?;
        Ok(Self {
            root,
            _lock: lock,
            pack_bytes: pack_bytes.max(1),
            index: Mutex::new(index),
            readers: Mutex::new(Vec::new()),
            accounts: Mutex::new(HashMap::new()),
        })
    }

    fn account_dir(&self, account: AccountId) -> PathBuf {
        self.root.join("packs").join(account.0.to_string())
    }

    fn pack_path(&self, account: AccountId, seq: u64) -> PathBuf {
        self.account_dir(account).join(format!("{seq:08}.pack"))
    }

    /// Where a store written before packs kept this blob.
    fn legacy_path(&self, account: AccountId, id: ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(account.0.to_string()).join(&hex[..2]).join(hex)
    }

    fn tail(&self, account: AccountId) -> Arc<Mutex<Tail>> {
        let mut tails = lock(&self.accounts);
        if tails.len() >= TAILS_KEPT {
            tails.retain(|_, t| Arc::strong_count(t) > 1);
        }
        tails.entry(account).or_default().clone()
    }

    /// Runs `f` on a pooled connection, in one read transaction: a batch
    /// of lookups takes SQLite's locks once, not once per statement.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => open_index(&self.root.join("index.db")).map_err(db)?,
        };
        let out = conn
            .unchecked_transaction()
            .and_then(|tx| {
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            })
            .map_err(db);
        lock(&self.readers).push(conn);
        out
    }

    fn locate(&self, account: AccountId, id: ChunkId) -> StoreResult<Option<Location>> {
        self.read(|c| locate_in(c, account, id))
    }

    /// Those of `ids` the index has, looked up in one read.
    fn stored(
        &self,
        account: AccountId,
        ids: impl Iterator<Item = ChunkId>,
    ) -> StoreResult<HashSet<ChunkId>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT 1 FROM blobs WHERE account = ?1 AND id = ?2")?;
            let mut out = HashSet::new();
            for id in ids {
                if st.exists(params![sql_int(account.0), id.as_bytes().as_slice()])? {
                    out.insert(id);
                }
            }
            Ok(out)
        })
    }

    /// The account's newest pack number, from the index.
    fn newest_seq(&self, account: AccountId) -> StoreResult<Option<u64>> {
        let conn = lock(&self.index);
        conn.query_row("SELECT max(seq) FROM packs WHERE account = ?1", [sql_int(account.0)], |r| r.get(0))
            .map_err(db)
    }

    fn file_len(&self, account: AccountId, seq: u64) -> StoreResult<u64> {
        match fs::metadata(self.pack_path(account, seq)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(e)),
        }
    }

    /// The pack to append to: the newest, or a new one once that is full
    /// (then also the one it follows).
    fn pack_for_append(&self, account: AccountId, tail: &mut Tail) -> StoreResult<(u64, Option<u64>)> {
        let newest = match tail.seq {
            Some(s) => Some(s),
            None => {
                let newest = self.newest_seq(account)?;
                self.remove_orphans(account, newest)?;
                newest
            }
        };
        let (seq, full) = match newest {
            Some(s) if self.file_len(account, s)? < self.pack_bytes => (s, None),
            Some(s) => (s + 1, Some(s)),
            None => (1, None),
        };
        tail.seq = Some(seq);
        Ok((seq, full))
    }

    /// Removes pack files below the newest that the index has no row for:
    /// a crash between a compaction's commit and its removal of the old
    /// file leaves one. Runs at an account's first append in a process.
    fn remove_orphans(&self, account: AccountId, newest: Option<u64>) -> StoreResult<()> {
        let Some(newest) = newest else { return Ok(()) };
        let known: HashSet<u64> = self.packs(account)?.into_iter().map(|(seq, _, _)| seq).collect();
        let entries = match fs::read_dir(self.account_dir(account)) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(seq) =
                name.to_str().and_then(|n| n.strip_suffix(".pack")).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if seq < newest && !known.contains(&seq) {
                tracing::info!(account = account.0, pack = seq, "removing a pack a compaction left behind");
                match fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        Ok(())
    }

    /// Opens a pack for appending. Its folder entries are made durable
    /// before anything points into it: at the first append to it in this
    /// process, whether or not this call created it (an earlier run may
    /// have created it and crashed before its fsync).
    fn open_pack(&self, account: AccountId, seq: u64, tail: &mut Tail) -> StoreResult<fs::File> {
        let dir = self.account_dir(account);
        fs::create_dir_all(&dir).map_err(io)?;
        let path = self.pack_path(account, seq);
        let file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        if tail.synced != Some(seq) {
            sync_dir(&dir)?;
            sync_dir(&self.root.join("packs"))?;
            tail.synced = Some(seq);
        }
        Ok(file)
    }

    /// Appends records at the end of the account's pack as it is on disk
    /// and makes them durable; returns the pack, its new length and where
    /// each record went. The caller holds the account's lock.
    fn append(
        &self,
        account: AccountId,
        tail: &mut Tail,
        blobs: &[(ChunkId, &[u8])],
    ) -> StoreResult<Appended> {
        let (seq, rolled_from) = self.pack_for_append(account, tail)?;
        let file = self.open_pack(account, seq, tail)?;
        let start = file.metadata().map_err(io)?.len();
        let mut locations = Vec::with_capacity(blobs.len());
        let mut offset = start;
        // Heads and small blobs are gathered in a buffer of up to 1 MiB;
        // a blob of `WRITE_BUFFER` bytes or more is written from where it
        // lies, with no copy. Plain writes: a `writev` of the same records
        // made the kernel's copy into the page cache many times slower
        // here (`perf`: half the store's time in
        // `copy_folio_from_iter_atomic`, against 6 %).
        let mut out = &file;
        let copied: usize =
            blobs.iter().map(|(_, b)| HEADER + if b.len() >= WRITE_BUFFER { 0 } else { b.len() }).sum();
        let mut buf: Vec<u8> = Vec::with_capacity(copied.min(1 << 20));
        for (id, bytes) in blobs {
            let len = u32::try_from(bytes.len())
                .map_err(|_| StoreError::Backend("a blob over 4 GiB cannot be stored".into()))?;
            let large = bytes.len() >= WRITE_BUFFER;
            if buf.len() + HEADER + if large { 0 } else { bytes.len() } > buf.capacity() {
                out.write_all(&buf).map_err(io)?;
                buf.clear();
            }
            buf.extend_from_slice(id.as_bytes());
            buf.extend_from_slice(&len.to_le_bytes());
            if large {
                out.write_all(&buf).map_err(io)?;
                buf.clear();
                out.write_all(bytes).map_err(io)?;
            } else {
                buf.extend_from_slice(bytes);
            }
            locations.push(Location { seq, offset, len: u64::from(len) });
            offset += HEADER as u64 + u64::from(len);
        }
        out.write_all(&buf).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Appended { seq, size: offset, locations, rolled_from })
    }

    /// Records where an append put `blobs` (new rows, or moved ones for a
    /// compaction) and the pack's new length and live bytes, with `also`,
    /// in one index transaction.
    fn record_appended(
        &self,
        account: AccountId,
        blobs: &[(ChunkId, &[u8])],
        appended: &Appended,
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut conn = lock(&self.index);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO blobs (account, id, seq, offset, len) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account, id) DO UPDATE SET seq = excluded.seq, offset = excluded.offset",
            )
            .map_err(db)?;
        let mut added = 0u64;
        for ((id, _), at) in blobs.iter().zip(&appended.locations) {
            let (a, seq, offset, len) =
                (sql_int(account.0), sql_int(at.seq), sql_int(at.offset), sql_int(at.len));
            upsert.execute(params![a, id.as_bytes().as_slice(), seq, offset, len]).map_err(db)?;
            added += at.record_len();
        }
        drop(upsert);
        add_to_pack(&tx, account, appended.seq, appended.size, added)?;
        also(&tx)?;
        tx.commit().map_err(db)
    }

    /// Reads a record and checks its header against the index.
    fn read_record(&self, account: AccountId, id: ChunkId, at: Location) -> std::io::Result<Vec<u8>> {
        let file = fs::File::open(self.pack_path(account, at.seq))?;
        read_record_in(&file, id, at)
    }

    /// Rewrites a mostly dead pack: its live records go to the newest pack,
    /// their rows move in one transaction, then the file is removed. The
    /// caller holds the account's lock. Returns the pack that filled up,
    /// if the rewrite started a new one.
    fn compact(&self, account: AccountId, tail: &mut Tail, seq: u64) -> StoreResult<Option<u64>> {
        let rows: Vec<(ChunkId, Location)> = {
            let conn = lock(&self.index);
            let mut stmt = conn
                .prepare("SELECT id, offset, len FROM blobs WHERE account = ?1 AND seq = ?2")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![sql_int(account.0), sql_int(seq)], |r| {
                    let id: Vec<u8> = r.get(0)?;
                    Ok((id, Location { seq, offset: r.get(1)?, len: r.get(2)? }))
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(id, at)| {
                    ChunkId::from_slice(&id)
                        .map(|id| (id, at))
                        .map_err(|_| StoreError::Backend("blob index: a malformed chunk id".into()))
                })
                .collect::<StoreResult<_>>()?
        };
        let mut live = Vec::with_capacity(rows.len());
        for (id, at) in &rows {
            live.push((*id, self.read_record(account, *id, *at).map_err(io)?));
        }
        let blobs: Vec<(ChunkId, &[u8])> = live.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        let mut rolled_from = None;
        let forget_old = |tx: &rusqlite::Transaction<'_>| {
            tx.execute(
                "DELETE FROM packs WHERE account = ?1 AND seq = ?2",
                params![sql_int(account.0), sql_int(seq)],
            )
            .map(drop)
            .map_err(db)
        };
        if blobs.is_empty() {
            let mut conn = lock(&self.index);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            forget_old(&tx)?;
            tx.commit().map_err(db)?;
        } else {
            let appended = self.append(account, tail, &blobs)?;
            rolled_from = appended.rolled_from;
            self.record_appended(account, &blobs, &appended, forget_old)?;
        }
        match fs::remove_file(self.pack_path(account, seq)) {
            Ok(()) => Ok(rolled_from),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(rolled_from),
            Err(e) => Err(io(e)),
        }
    }

    /// Removes or rewrites a pack less than half live, unless it is the
    /// account's newest (see the module doc). The caller holds the
    /// account's lock.
    fn tidy(&self, account: AccountId, tail: &mut Tail, seq: u64) -> StoreResult<u64> {
        let pack: Option<(u64, u64)> = {
            let conn = lock(&self.index);
            conn.query_row(
                "SELECT size, live FROM packs WHERE account = ?1 AND seq = ?2",
                params![sql_int(account.0), sql_int(seq)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?
        };
        let Some((size, live)) = pack else { return Ok(0) };
        // The pack with the highest number in the index is never removed,
        // so numbers are never used twice (a new pack a failed append left
        // without rows may still be the one appended to later).
        if live * 2 >= size || Some(seq) == self.newest_seq(account)? {
            return Ok(0);
        }
        match self.compact(account, tail, seq)? {
            // The rewrite filled the newest pack: that one may be mostly
            // dead too. Each step leaves one pack fewer below half live.
            Some(full) => Ok(1 + self.tidy(account, tail, full)?),
            None => Ok(1),
        }
    }

    /// [`Self::tidy`] after the caller's own change is committed: a pack
    /// that cannot be rewritten now (a full disk has no room for its live
    /// part, a damaged record) is logged and tried again later (its next
    /// delete, a rollover, or [`BlobStore::reclaim`]), not reported as the
    /// caller's failure. Returns how many packs it rewrote or removed.
    fn tidy_or_log(&self, account: AccountId, tail: &mut Tail, seq: u64) -> u64 {
        self.tidy(account, tail, seq).unwrap_or_else(|e| {
            tracing::warn!(account = account.0, pack = seq, error = %e, "could not compact a blob pack");
            0
        })
    }

    /// The pack numbers of an account with their size and live bytes
    /// (for tests and diagnostics).
    pub fn packs(&self, account: AccountId) -> StoreResult<Vec<(u64, u64, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT seq, size, live FROM packs WHERE account = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([sql_int(account.0)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }
}

/// Records `added` live bytes in a pack now `size` long.
fn add_to_pack(
    tx: &rusqlite::Transaction<'_>,
    account: AccountId,
    seq: u64,
    size: u64,
    added: u64,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO packs (account, seq, size, live) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (account, seq) DO UPDATE SET size = excluded.size, live = live + excluded.live",
        params![sql_int(account.0), sql_int(seq), sql_int(size), sql_int(added)],
    )
    .map_err(db)?;
    Ok(())
}

impl BlobStore for DiskBlobStore {
    fn put(&self, account: AccountId, id: ChunkId, bytes: &[u8]) -> StoreResult<()> {
        self.put_many(account, &[(id, bytes)])
    }

    /// One append of the blobs the pack index lacks, one `fdatasync`, one
    /// index transaction (see the module doc).
    fn put_many(&self, account: AccountId, blobs: &[(ChunkId, &[u8])]) -> StoreResult<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        let tail = self.tail(account);
        let mut tail = lock(&tail);
        let mut seen = HashSet::with_capacity(blobs.len());
        let stored = self.stored(account, blobs.iter().map(|(id, _)| *id))?;
        let mut new = Vec::with_capacity(blobs.len());
        for &(id, bytes) in blobs {
            if seen.insert(id) && !stored.contains(&id) {
                new.push((id, bytes));
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let appended = self.append(account, &mut tail, &new)?;
        self.record_appended(account, &new, &appended, |_| Ok(()))?;
        // A pack that filled up may be mostly dead already (its blobs
        // deleted while it was the newest, when deletes leave it alone).
        if let Some(full) = appended.rolled_from {
            self.tidy_or_log(account, &mut tail, full);
        }
        Ok(())
    }

    fn get(&self, account: AccountId, id: ChunkId) -> StoreResult<Option<Vec<u8>>> {
        let mut tried = None;
        for _ in 0..READ_ATTEMPTS {
            let Some(at) = self.locate(account, id)? else {
                return match fs::read(self.legacy_path(account, id)) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(e)),
                };
            };
            if tried == Some((at.seq, at.offset)) {
                break;
            }
            match self.read_record(account, id, at) {
                Ok(bytes) => return Ok(Some(bytes)),
                // Compacted away since the lookup: look again.
                Err(e) if e.kind() == ErrorKind::NotFound => tried = Some((at.seq, at.offset)),
                Err(e) => return Err(io(e)),
            }
        }
        Err(StoreError::Backend(format!(
            "chunk {} of account {account}: its pack file {} is missing",
            id.to_hex(),
            tried.map_or(0, |t| t.0)
        )))
    }

    /// The index rows of all of `ids` in one read; their sizes
    /// checked against `budget` before any byte is read; each pack file
    /// opened once. A blob not in the index (the old layout), or whose
    /// pack was compacted away since the lookup, is read as
    /// [`BlobStore::get`] reads it.
    fn get_many(
        &self,
        account: AccountId,
        ids: &[ChunkId],
        budget: usize,
    ) -> StoreResult<Option<Vec<Option<Vec<u8>>>>> {
        let located: Vec<Option<Location>> =
            self.read(|c| ids.iter().map(|id| locate_in(c, account, *id)).collect())?;
        let budget = budget as u64;
        let mut total = located.iter().flatten().fold(0u64, |t, at| t.saturating_add(at.len));
        if total > budget {
            return Ok(None);
        }
        let mut packs: HashMap<u64, Option<fs::File>> = HashMap::new();
        let mut out = Vec::with_capacity(ids.len());
        for (id, at) in ids.iter().zip(located) {
            let read = at.and_then(|at| {
                let file = packs
                    .entry(at.seq)
                    .or_insert_with(|| fs::File::open(self.pack_path(account, at.seq)).ok())
                    .as_ref()?;
                Some(read_record_in(file, *id, at))
            });
            let blob = match read {
                Some(Ok(bytes)) => Some(bytes),
                Some(Err(e)) if e.kind() != ErrorKind::NotFound => return Err(io(e)),
                // Not in the index, or its pack gone since the lookup.
                _ => {
                    let blob = self.get(account, *id)?;
                    let counted = at.map_or(0, |at| at.len);
                    let now = blob.as_ref().map_or(0, |b| b.len() as u64);
                    total = total.saturating_sub(counted).saturating_add(now);
                    if total > budget {
                        return Ok(None);
                    }
                    blob
                }
            };
            out.push(blob);
        }
        Ok(Some(out))
    }

    fn delete(&self, account: AccountId, id: ChunkId) -> StoreResult<()> {
        self.delete_many(account, &[id])
    }

    /// One index lookup each (and, for those not in it, the old layout's
    /// file).
    fn lacking(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>> {
        let stored = self.stored(account, ids.iter().copied())?;
        Ok(ids
            .iter()
            .filter(|id| !stored.contains(id) && !self.legacy_path(account, **id).exists())
            .copied()
            .collect())
    }

    /// Rewrites or removes every pack less than half live (other than an
    /// account's newest): those a failed compaction left (a full disk),
    /// and any a delete did not reach.
    fn reclaim(&self) -> StoreResult<u64> {
        let packs: Vec<(u64, u64)> = self.read(|c| {
            let mut st = c.prepare(
                "SELECT account, seq FROM packs AS p WHERE live * 2 < size
                 AND seq < (SELECT max(seq) FROM packs WHERE account = p.account)",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        let mut reclaimed = 0;
        for (account, seq) in packs {
            let account = AccountId(account);
            let tail = self.tail(account);
            let mut tail = lock(&tail);
            // One pack that cannot be rewritten does not hold up the others.
            reclaimed += self.tidy_or_log(account, &mut tail, seq);
        }
        Ok(reclaimed)
    }

    /// One index transaction for all of them, then the packs they were in
    /// tidied (see the module doc).
    fn delete_many(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<()> {
        // The old layout's files, where the account has any (one check,
        // not a failed unlink per chunk).
        let legacy = self.root.join(account.0.to_string()).is_dir();
        for id in ids.iter().filter(|_| legacy) {
            match fs::remove_file(self.legacy_path(account, *id)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        let tail = self.tail(account);
        let mut tail = lock(&tail);
        let mut touched = std::collections::BTreeSet::new();
        {
            let mut conn = lock(&self.index);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let mut delete = tx
                .prepare_cached("DELETE FROM blobs WHERE account = ?1 AND id = ?2 RETURNING seq, len")
                .map_err(db)?;
            let mut lower = tx
                .prepare_cached("UPDATE packs SET live = max(live - ?3, 0) WHERE account = ?1 AND seq = ?2")
                .map_err(db)?;
            for id in ids {
                let at = delete
                    .query_row(params![sql_int(account.0), id.as_bytes().as_slice()], |r| {
                        Ok(Location { seq: r.get(0)?, offset: 0, len: r.get(1)? })
                    })
                    .optional()
                    .map_err(db)?;
                let Some(at) = at else { continue };
                lower
                    .execute(params![sql_int(account.0), sql_int(at.seq), sql_int(at.record_len())])
                    .map_err(db)?;
                touched.insert(at.seq);
            }
            drop((delete, lower));
            tx.commit().map_err(db)?;
        }
        // The deletes are committed; a pack that cannot be tidied now is
        // tried again later.
        for seq in touched {
            self.tidy_or_log(account, &mut tail, seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u32) -> (ChunkId, Vec<u8>) {
        let bytes: Vec<u8> = (0..1000 + i * 37).map(|b| (b ^ i) as u8).collect();
        (ChunkId::from_bytes(*blake3::hash(&bytes).as_bytes()), bytes)
    }

    fn put_all(s: &DiskBlobStore, a: AccountId, chunks: &[(ChunkId, Vec<u8>)]) {
        let batch: Vec<(ChunkId, &[u8])> = chunks.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        s.put_many(a, &batch).unwrap();
    }

    /// A store at `root` starting a new pack every `pack_bytes`, with
    /// chunks `0..n` of account 1 put `per_put` at a time.
    fn filled(
        root: &Path,
        pack_bytes: u64,
        n: u32,
        per_put: usize,
    ) -> (DiskBlobStore, Vec<(ChunkId, Vec<u8>)>) {
        let s = DiskBlobStore::open_with_pack_bytes(root, pack_bytes).unwrap();
        let chunks: Vec<_> = (0..n).map(chunk).collect();
        for c in chunks.chunks(per_put) {
            put_all(&s, AccountId(1), c);
        }
        (s, chunks)
    }

    fn assert_holds(s: &DiskBlobStore, a: AccountId, (id, bytes): &(ChunkId, Vec<u8>)) {
        assert_eq!(s.get(a, *id).unwrap().as_deref(), Some(bytes.as_slice()));
    }

    #[test]
    fn blobs_survive_a_reopen_and_appends_skip_bytes_no_row_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(7);
        let chunks: Vec<_> = (0..20).map(chunk).collect();
        {
            let s = DiskBlobStore::open(dir.path()).unwrap();
            put_all(&s, a, &chunks[..10]);
        }
        // A crash after an append and before its index commit leaves a torn
        // record at the end of the pack.
        let pack = dir.path().join("packs/7/00000001.pack");
        let before = fs::metadata(&pack).unwrap().len();
        fs::OpenOptions::new().append(true).open(&pack).unwrap().write_all(&[0xEE; 50]).unwrap();
        let s = DiskBlobStore::open(dir.path()).unwrap();
        put_all(&s, a, &chunks[10..]);
        for c in &chunks {
            assert_holds(&s, a, c);
        }
        let packs = s.packs(a).unwrap();
        assert_eq!(packs.len(), 1);
        let (_, size, live) = packs[0];
        assert_eq!(size, fs::metadata(&pack).unwrap().len());
        assert_eq!(live + 50, size, "the torn bytes count as dead: {packs:?}");
        assert!(size > before + 50);
    }

    #[test]
    fn a_second_process_cannot_open_the_folder_while_it_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskBlobStore::open(dir.path()).unwrap();
        let err = DiskBlobStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("in use by another process"), "{err}");
        drop(s);
        DiskBlobStore::open(dir.path()).unwrap();
    }

    #[test]
    fn blobs_written_before_packs_are_read_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(3);
        let (id, bytes) = chunk(1);
        let s = DiskBlobStore::open(dir.path()).unwrap();
        let legacy = s.legacy_path(a, id);
        fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        fs::write(&legacy, &bytes).unwrap();
        assert_eq!(s.get(a, id).unwrap().as_deref(), Some(bytes.as_slice()));
        assert_eq!(s.get(AccountId(4), id).unwrap(), None);
        s.delete(a, id).unwrap();
        assert!(!legacy.exists());
        assert_eq!(s.get(a, id).unwrap(), None);
    }

    #[test]
    fn packs_roll_over_and_dead_packs_are_removed_or_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(1);
        let (s, chunks) = filled(dir.path(), 8_000, 40, 4);
        let packs = s.packs(a).unwrap();
        assert!(packs.len() >= 4, "{packs:?}");
        let (first, _, _) = packs[0];
        let in_first: Vec<ChunkId> = chunks
            .iter()
            .filter(|(id, _)| s.locate(a, *id).unwrap().unwrap().seq == first)
            .map(|(id, _)| *id)
            .collect();
        assert!(in_first.len() >= 3, "{in_first:?}");
        // Deleting most of the first pack rewrites the rest elsewhere.
        for id in &in_first[..in_first.len() - 1] {
            s.delete(a, *id).unwrap();
        }
        assert!(!s.pack_path(a, first).exists(), "the first pack is rewritten and removed");
        assert!(s.packs(a).unwrap().iter().all(|(seq, _, _)| *seq != first));
        let kept = in_first.last().unwrap();
        assert_ne!(s.locate(a, *kept).unwrap().unwrap().seq, first);
        // Deleting everything removes every pack but the newest.
        for c in &chunks {
            if in_first[..in_first.len() - 1].contains(&c.0) {
                assert_eq!(s.get(a, c.0).unwrap(), None);
            } else {
                assert_holds(&s, a, c);
                s.delete(a, c.0).unwrap();
            }
        }
        let packs = s.packs(a).unwrap();
        assert_eq!(packs.len(), 1, "{packs:?}");
        assert_eq!(packs[0].2, 0);
        let files = fs::read_dir(dir.path().join("packs/1")).unwrap().count();
        assert_eq!(files, 1);
        // And the store still takes new blobs.
        put_all(&s, a, &chunks[..2]);
        assert_eq!(s.get(a, chunks[1].0).unwrap().as_deref(), Some(chunks[1].1.as_slice()));
    }

    #[test]
    fn a_pack_a_compaction_left_behind_is_removed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(1);
        let chunks = {
            let (s, chunks) = filled(dir.path(), 2_000, 12, 3);
            assert!(s.packs(a).unwrap().len() >= 3);
            chunks
        };
        // A compaction of pack 1 that committed and crashed before removing
        // the file: the rows are gone, the file is not.
        let orphan = dir.path().join("packs/1/00000001.pack");
        fs::copy(dir.path().join("packs/1/00000002.pack"), &orphan).unwrap();
        {
            let s = DiskBlobStore::open_with_pack_bytes(dir.path(), 2_000).unwrap();
            s.read(|c| c.execute("DELETE FROM packs WHERE account = 1 AND seq = 1", [])).unwrap();
            s.read(|c| c.execute("DELETE FROM blobs WHERE account = 1 AND seq = 1", [])).unwrap();
        }
        let s = DiskBlobStore::open_with_pack_bytes(dir.path(), 2_000).unwrap();
        let extra = chunk(99);
        put_all(&s, a, std::slice::from_ref(&extra));
        assert!(!orphan.exists(), "the orphan pack is removed");
        assert!(dir.path().join("packs/1/00000002.pack").exists());
        assert_holds(&s, a, &extra);
        assert_holds(&s, a, &chunks[11]);
    }

    #[test]
    fn reclaim_rewrites_packs_a_delete_left_mostly_dead() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(1);
        let (s, chunks) = filled(dir.path(), 2_000, 12, 3);
        assert_eq!(s.reclaim().unwrap(), 0, "nothing to reclaim yet");
        // Deletes whose compaction failed (say, a full disk): the rows are
        // gone, the pack is still there.
        let first: Vec<ChunkId> = chunks[..3].iter().map(|(id, _)| *id).collect();
        s.read(|c| c.execute("DELETE FROM blobs WHERE account = 1 AND seq = 1", [])).unwrap();
        s.read(|c| c.execute("UPDATE packs SET live = 0 WHERE account = 1 AND seq = 1", [])).unwrap();
        assert!(s.pack_path(a, 1).exists());
        assert_eq!(s.reclaim().unwrap(), 1);
        assert!(!s.pack_path(a, 1).exists());
        assert_eq!(s.lacking(a, &first).unwrap(), first);
        for c in &chunks[3..] {
            assert_holds(&s, a, c);
        }
    }

    #[test]
    fn puts_deletes_and_reads_of_one_account_at_once_keep_every_live_blob() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(1);
        let s = DiskBlobStore::open_with_pack_bytes(dir.path(), 6_000).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let s = &s;
                scope.spawn(move || {
                    let mine: Vec<_> = (0..30).map(|i| chunk(1000 * (t + 1) + i)).collect();
                    for (round, batch) in mine.chunks(3).enumerate() {
                        put_all(s, a, batch);
                        // Every other batch goes again at once: its packs
                        // die and are rewritten while others append.
                        if round % 2 == 1 {
                            let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
                            s.delete_many(a, &ids).unwrap();
                        }
                        for (j, (id, bytes)) in mine[..(round + 1) * 3].iter().enumerate() {
                            let live = (j / 3) % 2 == 0;
                            let got = s.get(a, *id).unwrap();
                            assert_eq!(
                                got.as_deref(),
                                live.then_some(bytes.as_slice()),
                                "thread {t} chunk {j}"
                            );
                        }
                    }
                });
            }
        });
        let packs = s.packs(a).unwrap();
        let live: u64 = packs.iter().map(|p| p.2).sum();
        let expected: u64 = (0..4u32)
            .flat_map(|t| (0..30u32).filter(|i| (i / 3) % 2 == 0).map(move |i| chunk(1000 * (t + 1) + i)))
            .map(|(_, b)| (HEADER + b.len()) as u64)
            .sum();
        assert_eq!(live, expected, "{packs:?}");
    }

    #[test]
    fn a_batch_reads_packs_and_the_old_layout_in_order_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        // Small packs: the batch spans several.
        let (s, chunks) = filled(dir.path(), 4_000, 12, 3);
        let a = AccountId(1);
        let (old_id, old_bytes) = chunk(99);
        let legacy = s.legacy_path(a, old_id);
        fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        fs::write(&legacy, &old_bytes).unwrap();
        let absent = chunk(100).0;
        let mut ids: Vec<ChunkId> = chunks.iter().rev().map(|c| c.0).collect();
        ids.insert(3, absent);
        ids.insert(5, old_id);
        let got = s.get_many(a, &ids, usize::MAX).unwrap().unwrap();
        assert_eq!(got.len(), ids.len());
        for (id, blob) in ids.iter().zip(&got) {
            let want = chunks.iter().find(|c| c.0 == *id).map(|c| c.1.clone());
            let want = if *id == old_id { Some(old_bytes.clone()) } else { want };
            assert_eq!(blob, &want, "{id:?}");
        }
        // Another account holds none of them.
        assert!(s.get_many(AccountId(2), &ids, usize::MAX).unwrap().unwrap().iter().all(Option::is_none));
        // The budget counts every byte asked for, from the old layout too.
        let all: usize = chunks.iter().map(|c| c.1.len()).sum::<usize>() + old_bytes.len();
        assert!(s.get_many(a, &ids, all).unwrap().is_some());
        assert_eq!(s.get_many(a, &ids, all - 1).unwrap(), None);
        // A pack gone is an error naming it, as for a single read.
        fs::remove_file(s.pack_path(a, 1)).unwrap();
        let err = s.get_many(a, &ids, usize::MAX).unwrap_err();
        assert!(err.to_string().contains("its pack file 1 is missing"), "{err}");
    }

    #[test]
    fn a_missing_pack_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(1);
        let s = DiskBlobStore::open(dir.path()).unwrap();
        let (id, bytes) = chunk(5);
        s.put(a, id, &bytes).unwrap();
        fs::remove_file(s.pack_path(a, 1)).unwrap();
        let err = s.get(a, id).unwrap_err();
        assert!(err.to_string().contains("its pack file 1 is missing"), "{err}");
    }

    #[test]
    fn a_damaged_record_is_an_error_not_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(1);
        let s = DiskBlobStore::open(dir.path()).unwrap();
        let chunks: Vec<_> = (0..3).map(chunk).collect();
        put_all(&s, a, &chunks);
        let at = s.locate(a, chunks[1].0).unwrap().unwrap();
        let f = fs::OpenOptions::new().write(true).open(s.pack_path(a, at.seq)).unwrap();
        f.write_all_at(&[0u8; 4], at.offset).unwrap();
        let err = s.get(a, chunks[1].0).unwrap_err();
        assert!(err.to_string().contains("does not hold chunk"), "{err}");
        assert_eq!(s.get(a, chunks[2].0).unwrap().as_deref(), Some(chunks[2].1.as_slice()));
    }

    #[test]
    fn a_pack_cut_short_inside_a_record_is_an_error_not_fewer_bytes() {
        let a = AccountId(1);
        let before = chunk(1);
        let small = chunk(2);
        // Small records are read whole, large ones head and blob apart.
        let big: Vec<u8> = (0..3 * WRITE_BUFFER).map(|i| (i % 251) as u8).collect();
        let big = (ChunkId::from_bytes(*blake3::hash(&big).as_bytes()), big);
        for last in [&small, &big] {
            // Cut inside the blob, and inside the head.
            for keep in [HEADER as u64 + last.1.len() as u64 - 1, 6] {
                let dir = tempfile::tempdir().unwrap();
                let s = DiskBlobStore::open(dir.path()).unwrap();
                put_all(&s, a, &[before.clone(), last.clone()]);
                let at = s.locate(a, last.0).unwrap().unwrap();
                let f = fs::OpenOptions::new().write(true).open(s.pack_path(a, at.seq)).unwrap();
                f.set_len(at.offset + keep).unwrap();
                let err = s.get(a, last.0).unwrap_err();
                assert!(
                    err.to_string().contains("ends inside chunk"),
                    "{} bytes, {keep} kept: {err}",
                    last.1.len()
                );
                assert!(s.get_many(a, &[before.0, last.0], usize::MAX).is_err());
                assert_eq!(s.get(a, before.0).unwrap().as_deref(), Some(before.1.as_slice()));
            }
        }
    }

    #[test]
    fn reads_during_compaction_always_find_their_blob() {
        let dir = tempfile::tempdir().unwrap();
        let a = AccountId(1);
        let (s, chunks) = filled(dir.path(), 4_000, 60, 2);
        // Keep every third chunk; delete the rest while readers read the kept ones.
        let (kept, gone): (Vec<_>, Vec<_>) = chunks.iter().enumerate().partition(|(i, _)| i % 3 == 0);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        for (_, c) in &kept {
                            assert_holds(&s, a, c);
                        }
                    }
                });
            }
            for (_, (id, _)) in &gone {
                s.delete(a, *id).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let packs = s.packs(a).unwrap();
        assert!(packs.len() < 20, "compaction removed packs: {packs:?}");
        let live: u64 = packs.iter().map(|p| p.2).sum();
        let expected: u64 = kept.iter().map(|(_, (_, b))| (HEADER + b.len()) as u64).sum();
        assert_eq!(live, expected);
    }
}
