//! The local index: one SQLite file per sync root (`.coffer/index.db`, WAL),
//! holding what must survive a restart:
//!
//! - `synced`: the synced tree, the last state this device and the store
//!   agreed on, per path;
//! - `remote`: the store's latest revision of every entry seen, live or
//!   deleted, with its opened metadata (the device holds the keys anyway);
//! - `stat_cache`: the last observed local state (size, mtime, inode, mode)
//!   with the node it hashed to, so a rescan hashes only what changed;
//! - `meta`: the journal cursor and small settings;
//! - `conflicts` and `excluded` (selective sync).
//!
//! Invariant: the index is written only after the disk and the store (a
//! crash in between leaves the index behind reality, and "scan and plan
//! again" repairs it). Migrations are numbered and only ever appended.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use coffer_proto::{Cursor, DeviceId, EntryId, Revision};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::model::{ChunkRef, Node, RelPath};
use crate::plan::{RemoteEntry, RemoteLive, SyncedEntry};

/// Errors of the local index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite failed (disk full, corrupt file, locked by another process).
    #[error("local index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row did not parse (a corrupt or newer index).
    #[error("local index holds an unreadable row: {0}")]
    Corrupt(String),
}

impl IndexError {
    /// A busy database may free up; corruption will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, IndexError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy || e.code == rusqlite::ErrorCode::DatabaseLocked)
    }
}

type Result<T, E = IndexError> = std::result::Result<T, E>;

const MIGRATIONS: &[&str] = &[
    // 1: the three trees' persistent parts, settings, conflicts, exclusions.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE synced (
        path TEXT PRIMARY KEY, entry_id BLOB NOT NULL, revision INTEGER NOT NULL,
        node TEXT NOT NULL, chunks TEXT NOT NULL);
     CREATE TABLE remote (
        entry_id BLOB PRIMARY KEY, revision INTEGER NOT NULL, path TEXT,
        live TEXT);
     CREATE INDEX remote_path ON remote(path);
     CREATE TABLE stat_cache (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL, mode INTEGER NOT NULL, node TEXT NOT NULL);
     CREATE TABLE conflicts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, copy_path TEXT NOT NULL,
        remote_device TEXT NOT NULL, created_ms INTEGER NOT NULL, resolved INTEGER NOT NULL DEFAULT 0);
     CREATE TABLE excluded (path TEXT PRIMARY KEY);",
    // 2: chunk lists (`synced.chunks`, `remote.live`) are written compact
    // (see `compact_chunks`); rows of schema 1 still read. The bump makes
    // an older Coffer refuse the index instead of calling it corrupt.
    "-- compact chunk lists",
];

/// A file just placed on disk: its path, the entry it is synced at, and
/// (if it could be stat'ed) its cache row.
pub type Placed = (RelPath, SyncedEntry, Option<(CachedStat, Node)>);

/// A stat as the cache keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time in ns.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Permission bits.
    pub mode: u32,
}

/// A recorded conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictRecord {
    /// Row id.
    pub id: i64,
    /// The path that kept the remote version.
    pub path: RelPath,
    /// Where the local version went.
    pub copy_path: RelPath,
    /// The device that made the remote version.
    pub remote_device: String,
    /// When (ms since the epoch).
    pub created_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct LiveRow {
    node: Node,
    #[serde(with = "compact_chunks")]
    chunks: Vec<ChunkRef>,
    device: DeviceId,
    #[serde(default)]
    device_name: String,
    /// Absent in rows written before format 2: such a revision's list was
    /// inline.
    #[serde(default)]
    listed: bool,
}

/// A live remote row without its chunk list (serde skips the field).
#[derive(Deserialize)]
struct LiveHead {
    node: Node,
    device: DeviceId,
    #[serde(default)]
    device_name: String,
    #[serde(default)]
    listed: bool,
}

/// [`LiveRow`] as written, borrowing its parts.
#[derive(Serialize)]
struct LiveRowRef<'a> {
    node: &'a Node,
    #[serde(with = "compact_chunks")]
    chunks: &'a [ChunkRef],
    device: DeviceId,
    device_name: &'a str,
    listed: bool,
}

/// A chunk list as the index keeps it: a JSON string of the binary form
/// of a piece, base64 (91 bytes an entry, and several times faster to
/// write and read than the JSON objects with hex fields of schema 1, which
/// for a 1 GiB file in 80 KiB chunks took about 9 ms to write and 5 ms to
/// read, several times an edit). A JSON array (a row of schema 1) still reads.
mod compact_chunks {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::model::ChunkRef;

    pub fn serialize<S: Serializer>(v: &[ChunkRef], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::chunklist::to_base64(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkRef>, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Vec<ChunkRef>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chunk list (base64, or an array of chunks)")
            }

            fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
                crate::chunklist::from_base64(text).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(c) = seq.next_element()? {
                    out.push(c);
                }
                Ok(out)
            }
        }
        d.deserialize_any(List)
    }
}

/// A chunk list as a `synced.chunks` value.
fn chunks_json(v: &[ChunkRef]) -> String {
    #[derive(Serialize)]
    struct Compact<'a>(#[serde(with = "compact_chunks")] &'a [ChunkRef]);
    json(&Compact(v))
}

/// A `synced.chunks` value read back (either form).
fn chunks_unjson(s: &str) -> Result<Vec<ChunkRef>> {
    let mut de = serde_json::Deserializer::from_str(s);
    let v = compact_chunks::deserialize(&mut de).map_err(|e| IndexError::Corrupt(e.to_string()))?;
    de.end().map_err(|e| IndexError::Corrupt(e.to_string()))?;
    Ok(v)
}

/// The local index of one sync root.
#[derive(Debug)]
pub struct Index {
    conn: Mutex<Connection>,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("index rows always serialise")
}

fn unjson<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| IndexError::Corrupt(e.to_string()))
}

fn rel(s: String) -> Result<RelPath> {
    RelPath::new(s).map_err(|e| IndexError::Corrupt(e.to_string()))
}

fn entry_id(b: Vec<u8>) -> Result<EntryId> {
    EntryId::from_slice(&b).map_err(|e| IndexError::Corrupt(e.to_string()))
}

fn u64_of(i: i64) -> u64 {
    u64::try_from(i).unwrap_or(0)
}

/// The columns of a `stat_cache` row as selected by `all_cached` and
/// `cached_under` (path, size, mtime_ns, inode, mode, node), for
/// [`cache_row`].
type CacheColumns = (String, i64, i64, i64, i64, String);

fn cache_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<CacheColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

/// One `stat_cache` row's columns, parsed.
fn cache_row(size: i64, mtime_ns: i64, inode: i64, mode: i64, node: &str) -> Result<(CachedStat, Node)> {
    let stat = CachedStat {
        size: u64_of(size),
        mtime_ns,
        inode: u64_of(inode),
        mode: u32::try_from(mode).unwrap_or(0),
    };
    Ok((stat, unjson(node)?))
}

fn i64_of(u: u64) -> i64 {
    i64::try_from(u).unwrap_or(i64::MAX)
}

/// A map of `rows` built in bulk: rows come back from SQLite about in key
/// order, and inserting sorted keys one by one leaves every B-tree node
/// half empty, which for a tree of 200,000 entries is tens of megabytes.
/// A later row wins over an earlier one with the same key, as with
/// inserts.
fn full_map<K: Ord, V>(rows: Vec<(K, V)>) -> BTreeMap<K, V> {
    rows.into_iter().collect()
}

/// A small setting, read on `conn` (a transaction, too).
fn get_meta_in(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Sets a small setting on `conn`.
fn set_meta_in(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The journal cursor as recorded on `conn` (0 before the first pull).
fn cursor_in(conn: &Connection) -> Result<Cursor> {
    Ok(Cursor(get_meta_in(conn, "cursor")?.and_then(|s| s.parse().ok()).unwrap_or(0)))
}

/// Upserts remote rows (a path of `None` keeps the known one).
fn write_remote(tx: &rusqlite::Transaction<'_>, entries: &[(Option<RelPath>, RemoteEntry)]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO remote(entry_id, revision, path, live) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(entry_id) DO UPDATE SET revision = excluded.revision,
            path = COALESCE(excluded.path, remote.path), live = excluded.live",
    )?;
    for (path, e) in entries {
        let live = e.live.as_ref().map(|l| {
            json(&LiveRowRef {
                node: &l.node,
                chunks: &l.chunks,
                device: l.device,
                device_name: &l.device_name,
                listed: l.listed,
            })
        });
        stmt.execute(params![
            e.entry_id.as_bytes().as_slice(),
            i64_of(e.revision.get()),
            path.as_ref().map(RelPath::as_str),
            live
        ])?;
    }
    Ok(())
}

impl Index {
    /// Opens (creating and migrating) the index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// An index in memory (tests, simulation).
    pub fn in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if version > known {
            return Err(IndexError::Corrupt(format!(
                "the index was written by a newer Coffer (schema {version}, this build knows {known})"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
            tx.commit()?;
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A small setting.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>> {
        get_meta_in(&self.db(), key)
    }

    /// Sets a small setting.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        set_meta_in(&self.db(), key, value)
    }

    /// The journal cursor (0 before the first pull).
    pub fn cursor(&self) -> Result<Cursor> {
        cursor_in(&self.db())
    }

    /// The synced tree.
    pub fn synced(&self) -> Result<BTreeMap<RelPath, SyncedEntry>> {
        self.synced_rows(true)
    }

    /// The synced tree as the planner reads it: every entry's `chunks` is
    /// left empty (the planner compares nodes and revisions only), which
    /// for a large tree saves an allocation and a parse per entry.
    pub fn synced_for_plan(&self) -> Result<BTreeMap<RelPath, SyncedEntry>> {
        self.synced_rows(false)
    }

    fn synced_rows(&self, with_chunks: bool) -> Result<BTreeMap<RelPath, SyncedEntry>> {
        let db = self.db();
        let sql = if with_chunks {
            "SELECT path, entry_id, revision, node, chunks FROM synced"
        } else {
            "SELECT path, entry_id, revision, node, '[]' FROM synced"
        };
        let mut stmt = db.prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (path, id, rev, node, chunks) = row?;
            out.push((
                rel(path)?,
                SyncedEntry {
                    entry_id: entry_id(id)?,
                    revision: Revision(u64_of(rev)),
                    node: unjson(&node)?,
                    chunks: chunks_unjson(&chunks)?,
                },
            ));
        }
        Ok(full_map(out))
    }

    /// The chunk list `path` was last synced with, if it is a synced file.
    pub fn synced_chunks(&self, path: &RelPath) -> Result<Option<Vec<ChunkRef>>> {
        let chunks: Option<String> = self
            .db()
            .prepare_cached("SELECT chunks FROM synced WHERE path = ?1")?
            .query_row([path.as_str()], |r| r.get(0))
            .optional()?;
        chunks.map(|c| chunks_unjson(&c)).transpose()
    }

    /// Records that `path` is synced at `entry`.
    pub fn put_synced(&self, path: &RelPath, entry: &SyncedEntry) -> Result<()> {
        self.db().execute(
            "INSERT INTO synced(path, entry_id, revision, node, chunks) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(path) DO UPDATE SET entry_id = excluded.entry_id, revision = excluded.revision,
                node = excluded.node, chunks = excluded.chunks",
            params![
                path.as_str(),
                entry.entry_id.as_bytes().as_slice(),
                i64_of(entry.revision.get()),
                json(&entry.node),
                chunks_json(&entry.chunks)
            ],
        )?;
        Ok(())
    }

    /// Records a group of files just placed on disk, in one transaction:
    /// each path is synced at its entry and, with a stat, cached with it
    /// (so the next scan does not rehash what sync itself wrote).
    pub fn record_placed(&self, placed: &[Placed]) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut synced = tx.prepare_cached(
                "INSERT INTO synced(path, entry_id, revision, node, chunks) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(path) DO UPDATE SET entry_id = excluded.entry_id, revision = excluded.revision,
                    node = excluded.node, chunks = excluded.chunks",
            )?;
            let mut cache = tx.prepare_cached(
                "INSERT INTO stat_cache(path, size, mtime_ns, inode, mode, node) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                    inode = excluded.inode, mode = excluded.mode, node = excluded.node",
            )?;
            for (path, entry, stat) in placed {
                synced.execute(params![
                    path.as_str(),
                    entry.entry_id.as_bytes().as_slice(),
                    i64_of(entry.revision.get()),
                    json(&entry.node),
                    chunks_json(&entry.chunks)
                ])?;
                if let Some((s, n)) = stat {
                    cache.execute(params![
                        path.as_str(),
                        i64_of(s.size),
                        s.mtime_ns,
                        i64_of(s.inode),
                        s.mode,
                        json(n)
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the synced record of `path`.
    pub fn remove_synced(&self, path: &RelPath) -> Result<()> {
        self.db().execute("DELETE FROM synced WHERE path = ?1", [path.as_str()])?;
        Ok(())
    }

    /// The remote tree by path (entries whose path was never seen are left out).
    pub fn remote(&self) -> Result<BTreeMap<RelPath, RemoteEntry>> {
        self.remote_rows(true)
    }

    /// The remote tree as the planner reads it: every live entry's `chunks`
    /// is left empty; [`Index::remote_chunks`] fetches them for the ops that
    /// move content.
    pub fn remote_for_plan(&self) -> Result<BTreeMap<RelPath, RemoteEntry>> {
        self.remote_rows(false)
    }

    fn remote_rows(&self, with_chunks: bool) -> Result<BTreeMap<RelPath, RemoteEntry>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT entry_id, revision, path, live FROM remote WHERE path IS NOT NULL")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rev, path, live) = row?;
            let live = match live {
                Some(s) if with_chunks => {
                    let l: LiveRow = unjson(&s)?;
                    Some(RemoteLive {
                        node: l.node,
                        chunks: l.chunks,
                        device: l.device,
                        device_name: l.device_name,
                        listed: l.listed,
                    })
                }
                Some(s) => {
                    let l: LiveHead = unjson(&s)?;
                    Some(RemoteLive {
                        node: l.node,
                        chunks: Vec::new(),
                        device: l.device,
                        device_name: l.device_name,
                        listed: l.listed,
                    })
                }
                None => None,
            };
            out.push((
                rel(path)?,
                RemoteEntry { entry_id: entry_id(id)?, revision: Revision(u64_of(rev)), live },
            ));
        }
        Ok(full_map(out))
    }

    /// The chunk list of an entry's latest live revision (empty for a
    /// deletion or an unknown entry).
    pub fn remote_chunks(&self, id: &EntryId) -> Result<Vec<ChunkRef>> {
        let live: Option<Option<String>> = self
            .db()
            .prepare_cached("SELECT live FROM remote WHERE entry_id = ?1")?
            .query_row([id.as_bytes().as_slice()], |r| r.get(0))
            .optional()?;
        match live.flatten() {
            Some(s) => Ok(unjson::<LiveRow>(&s)?.chunks),
            None => Ok(Vec::new()),
        }
    }

    /// The chunk lists of many entries, as [`Index::remote_chunks`] gives
    /// each, in the order given: read in one transaction rather than one
    /// each (a round planning thousands of downloads).
    pub fn remote_chunks_of(&self, ids: &[EntryId]) -> Result<Vec<Vec<ChunkRef>>> {
        self.read_batch(|tx| {
            let mut stmt = tx.prepare_cached("SELECT live FROM remote WHERE entry_id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let live: Option<Option<String>> =
                    stmt.query_row([id.as_bytes().as_slice()], |r| r.get(0)).optional()?;
                out.push(match live.flatten() {
                    Some(s) => unjson::<LiveRow>(&s)?.chunks,
                    None => Vec::new(),
                });
            }
            Ok(out)
        })
    }

    /// The latest revision seen of each of these entries that the index
    /// knows, read in one transaction.
    pub fn remote_revisions(&self, ids: &[&EntryId]) -> Result<HashMap<EntryId, Revision>> {
        self.read_batch(|tx| {
            let mut stmt = tx.prepare_cached("SELECT revision FROM remote WHERE entry_id = ?1")?;
            let mut out = HashMap::with_capacity(ids.len());
            for id in ids {
                let rev: Option<i64> = stmt.query_row([id.as_bytes().as_slice()], |r| r.get(0)).optional()?;
                if let Some(rev) = rev {
                    out.insert(**id, Revision(u64_of(rev)));
                }
            }
            Ok(out)
        })
    }

    /// Runs a batch of reads in one read transaction: SQLite takes its
    /// locks once, not once per statement (a round reads thousands).
    fn read_batch<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// The chunk list of an entry's revision `revision`, and whether its
    /// metadata keeps it in pieces, if that is the latest revision seen and
    /// not a deletion.
    pub fn remote_chunks_at(
        &self,
        id: &EntryId,
        revision: Revision,
    ) -> Result<Option<(Vec<ChunkRef>, bool)>> {
        let row: Option<(i64, Option<String>)> = self
            .db()
            .prepare_cached("SELECT revision, live FROM remote WHERE entry_id = ?1")?
            .query_row([id.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((rev, Some(s))) if u64_of(rev) == revision.get() => {
                let l = unjson::<LiveRow>(&s)?;
                Ok(Some((l.chunks, l.listed)))
            }
            _ => Ok(None),
        }
    }

    /// The latest revision seen of an entry, and its last known path.
    pub fn remote_entry(&self, id: &EntryId) -> Result<Option<(Revision, Option<RelPath>)>> {
        let row: Option<(i64, Option<String>)> = self
            .db()
            .prepare_cached("SELECT revision, path FROM remote WHERE entry_id = ?1")?
            .query_row([id.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(rev, path)| Ok((Revision(u64_of(rev)), path.map(rel).transpose()?))).transpose()
    }

    /// Records remote states (from the journal, a snapshot or our own
    /// commits) and, if given, the new cursor, in one transaction. A path of
    /// `None` keeps the last known path (deletions carry no metadata).
    pub fn put_remote(
        &self,
        entries: &[(Option<RelPath>, RemoteEntry)],
        cursor: Option<Cursor>,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        write_remote(&tx, entries)?;
        if let Some(c) = cursor {
            set_meta_in(&tx, "cursor", &c.get().to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records what a commit request did, in one transaction: each path
    /// synced at its new entry (`None`: a deletion, the record goes), and
    /// the store's new state of each entry as [`Index::put_remote`] would.
    ///
    /// `seqs` are the journal positions the store gave the accepted
    /// changes. If they are exactly the positions right after the cursor
    /// (no other change landed between), the cursor moves past them in the
    /// same transaction: the rows written here are what those journal
    /// entries would record, so the next pull does not fetch this device's
    /// own changes back (for an edit of a 1 GiB file, 7 KB of metadata).
    /// Only once the first snapshot is in (`bootstrapped`); otherwise, and
    /// whenever another change lies between, the cursor stays the pull's.
    pub fn record_commit(
        &self,
        synced: &[(RelPath, Option<SyncedEntry>)],
        remote: &[(Option<RelPath>, RemoteEntry)],
        seqs: &[Cursor],
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if !seqs.is_empty() && get_meta_in(&tx, "bootstrapped")?.is_some() {
            let cursor = cursor_in(&tx)?.get();
            let mut sorted: Vec<u64> = seqs.iter().map(|c| c.get()).collect();
            sorted.sort_unstable();
            let next_in_line =
                sorted.iter().enumerate().all(|(i, &s)| Some(s) == cursor.checked_add(i as u64 + 1));
            if next_in_line {
                set_meta_in(&tx, "cursor", &sorted[sorted.len() - 1].to_string())?;
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO synced(path, entry_id, revision, node, chunks) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(path) DO UPDATE SET entry_id = excluded.entry_id, revision = excluded.revision,
                    node = excluded.node, chunks = excluded.chunks",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM synced WHERE path = ?1")?;
            for (path, entry) in synced {
                match entry {
                    Some(e) => put.execute(params![
                        path.as_str(),
                        e.entry_id.as_bytes().as_slice(),
                        i64_of(e.revision.get()),
                        json(&e.node),
                        chunks_json(&e.chunks)
                    ])?,
                    None => del.execute([path.as_str()])?,
                };
            }
        }
        write_remote(&tx, remote)?;
        tx.commit()?;
        Ok(())
    }

    /// The cached stat and node of a path.
    pub fn cached(&self, path: &RelPath) -> Result<Option<(CachedStat, Node)>> {
        let row: Option<(i64, i64, i64, i64, String)> = self
            .db()
            .prepare_cached("SELECT size, mtime_ns, inode, mode, node FROM stat_cache WHERE path = ?1")?
            .query_row([path.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()?;
        row.map(|(size, mtime_ns, inode, mode, node)| cache_row(size, mtime_ns, inode, mode, &node))
            .transpose()
    }

    /// Every cached stat (a full scan reads them all at once).
    pub fn all_cached(&self) -> Result<BTreeMap<RelPath, (CachedStat, Node)>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT path, size, mtime_ns, inode, mode, node FROM stat_cache")?;
        let rows = stmt.query_map([], cache_columns)?;
        let mut out = Vec::new();
        for row in rows {
            let (path, size, mtime_ns, inode, mode, node) = row?;
            out.push((rel(path)?, cache_row(size, mtime_ns, inode, mode, &node)?));
        }
        Ok(full_map(out))
    }

    /// The cached stats of `paths` and of everything under them (a targeted
    /// rescan reads only the subtrees it covers, not the whole cache).
    pub fn cached_under(&self, paths: &[RelPath]) -> Result<BTreeMap<RelPath, (CachedStat, Node)>> {
        let wanted: BTreeSet<&RelPath> = paths.iter().collect();
        let out = self.read_batch(|tx| {
            // Under "a" are the paths from "a/" up to (not including) "a0":
            // '0' follows '/' in byte order, and SQLite compares TEXT bytewise.
            let mut stmt = tx.prepare_cached(
                "SELECT path, size, mtime_ns, inode, mode, node FROM stat_cache
                 WHERE path = ?1 OR (path >= ?1 || '/' AND path < ?1 || '0')",
            )?;
            let mut out = Vec::new();
            for p in paths {
                let nested = p.self_and_ancestors().skip(1).any(|a| wanted.contains(&a));
                if nested {
                    continue;
                }
                let rows = stmt.query_map([p.as_str()], cache_columns)?;
                for row in rows {
                    let (path, size, mtime_ns, inode, mode, node) = row?;
                    out.push((rel(path)?, cache_row(size, mtime_ns, inode, mode, &node)?));
                }
            }
            Ok(out)
        })?;
        Ok(full_map(out))
    }

    /// Replaces cache rows: `put` are upserted, `gone` deleted, in one
    /// transaction.
    pub fn update_cache(&self, put: &[(RelPath, CachedStat, Node)], gone: &[RelPath]) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut up = tx.prepare(
                "INSERT INTO stat_cache(path, size, mtime_ns, inode, mode, node) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                    inode = excluded.inode, mode = excluded.mode, node = excluded.node",
            )?;
            for (p, s, n) in put {
                up.execute(params![
                    p.as_str(),
                    i64_of(s.size),
                    s.mtime_ns,
                    i64_of(s.inode),
                    s.mode,
                    json(n)
                ])?;
            }
            let mut del = tx.prepare("DELETE FROM stat_cache WHERE path = ?1")?;
            for p in gone {
                del.execute([p.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a conflict.
    pub fn add_conflict(&self, path: &RelPath, copy: &RelPath, device: &str, now_ms: i64) -> Result<()> {
        self.db().execute(
            "INSERT INTO conflicts(path, copy_path, remote_device, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![path.as_str(), copy.as_str(), device, now_ms],
        )?;
        Ok(())
    }

    /// Unresolved conflicts, oldest first.
    pub fn conflicts(&self) -> Result<Vec<ConflictRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, path, copy_path, remote_device, created_ms FROM conflicts WHERE resolved = 0 ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.map(|row| {
            let (id, path, copy, remote_device, created_ms) = row?;
            Ok(ConflictRecord { id, path: rel(path)?, copy_path: rel(copy)?, remote_device, created_ms })
        })
        .collect()
    }

    /// Marks a conflict resolved.
    pub fn resolve_conflict(&self, id: i64) -> Result<()> {
        self.db().execute("UPDATE conflicts SET resolved = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Folders excluded from this device (selective sync).
    pub fn excluded(&self) -> Result<BTreeSet<RelPath>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT path FROM excluded")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| rel(r?)).collect()
    }

    /// Excludes or includes a folder.
    pub fn set_excluded(&self, path: &RelPath, excluded: bool) -> Result<()> {
        if excluded {
            self.db().execute("INSERT OR IGNORE INTO excluded(path) VALUES (?1)", [path.as_str()])?;
        } else {
            self.db().execute("DELETE FROM excluded WHERE path = ?1", [path.as_str()])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileHash, NodeKind};
    use coffer_crypto::ContentHash;
    use coffer_proto::ChunkId;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn node(n: u8) -> Node {
        Node {
            kind: NodeKind::File,
            size: 3,
            mtime_ns: 7,
            executable: true,
            hash: Some(FileHash([n; 32])),
            target: None,
        }
    }

    #[test]
    fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        {
            let ix = Index::open(&path).unwrap();
            let e = SyncedEntry {
                entry_id: EntryId::from_bytes([1; 32]),
                revision: Revision(3),
                node: node(1),
                chunks: vec![],
            };
            ix.put_synced(&p("a/b"), &e).unwrap();
            let live = RemoteLive {
                node: node(2),
                chunks: vec![],
                device: DeviceId::from_bytes([9; 16]),
                device_name: "pc".into(),
                listed: false,
            };
            let r = RemoteEntry {
                entry_id: EntryId::from_bytes([2; 32]),
                revision: Revision(5),
                live: Some(live),
            };
            ix.put_remote(&[(Some(p("c")), r)], Some(Cursor(42))).unwrap();
            // A deletion without a path keeps the known path.
            let del =
                RemoteEntry { entry_id: EntryId::from_bytes([2; 32]), revision: Revision(6), live: None };
            ix.put_remote(&[(None, del)], Some(Cursor(43))).unwrap();
            ix.update_cache(
                &[(p("a/b"), CachedStat { size: 3, mtime_ns: 7, inode: 11, mode: 0o755 }, node(1))],
                &[],
            )
            .unwrap();
            ix.set_excluded(&p("big"), true).unwrap();
            ix.add_conflict(&p("x"), &p("x (conflicted copy)"), "laptop", 1).unwrap();
        }
        let ix = Index::open(&path).unwrap();
        assert_eq!(ix.cursor().unwrap(), Cursor(43));
        assert_eq!(ix.synced().unwrap()[&p("a/b")].revision, Revision(3));
        let remote = ix.remote().unwrap();
        assert_eq!(remote[&p("c")].revision, Revision(6));
        assert!(remote[&p("c")].live.is_none());
        assert_eq!(ix.cached(&p("a/b")).unwrap().unwrap().0.inode, 11);
        assert!(ix.excluded().unwrap().contains(&p("big")));
        let c = ix.conflicts().unwrap();
        assert_eq!(c.len(), 1);
        ix.resolve_conflict(c[0].id).unwrap();
        assert!(ix.conflicts().unwrap().is_empty());
        ix.update_cache(&[], &[p("a/b")]).unwrap();
        assert!(ix.cached(&p("a/b")).unwrap().is_none());
    }

    #[test]
    fn cached_under_reads_just_the_subtrees() {
        let ix = Index::in_memory().unwrap();
        let st = CachedStat { size: 3, mtime_ns: 7, inode: 11, mode: 0o644 };
        // "a-x" and "a0" sort between "a" and "a/…" or just after: not under "a".
        let all = ["a", "a/b", "a/b/c", "a-x", "a-x/y", "a0", "ab", "b", "b/a"];
        let rows: Vec<_> = all.iter().map(|s| (p(s), st, node(1))).collect();
        ix.update_cache(&rows, &[]).unwrap();
        let keys = |paths: &[&str]| {
            let paths: Vec<RelPath> = paths.iter().map(|s| p(s)).collect();
            ix.cached_under(&paths).unwrap().into_keys().map(|k| k.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(keys(&["a"]), ["a", "a/b", "a/b/c"]);
        assert_eq!(keys(&["a/b", "a"]), ["a", "a/b", "a/b/c"], "nested requests read once");
        assert_eq!(keys(&["a-x", "b/a", "missing"]), ["a-x", "a-x/y", "b/a"]);
        assert!(keys(&[]).is_empty());
    }

    #[test]
    fn record_placed_writes_synced_and_cache_rows_together() {
        let ix = Index::in_memory().unwrap();
        let e = |n: u8| SyncedEntry {
            entry_id: EntryId::from_bytes([n; 32]),
            revision: Revision(u64::from(n)),
            node: node(n),
            chunks: vec![],
        };
        let st = CachedStat { size: 3, mtime_ns: 9, inode: 12, mode: 0o644 };
        ix.record_placed(&[(p("x"), e(1), Some((st, node(1)))), (p("d/y"), e(2), None)]).unwrap();
        let synced = ix.synced().unwrap();
        assert_eq!(synced[&p("x")], e(1));
        assert_eq!(synced[&p("d/y")], e(2));
        assert_eq!(ix.cached(&p("x")).unwrap(), Some((st, node(1))));
        assert_eq!(ix.cached(&p("d/y")).unwrap(), None, "no stat, no cache row");
        // A later placement of the same path replaces both rows.
        let st2 = CachedStat { inode: 13, ..st };
        ix.record_placed(&[(p("x"), e(3), Some((st2, node(3))))]).unwrap();
        assert_eq!(ix.synced().unwrap()[&p("x")], e(3));
        assert_eq!(ix.cached(&p("x")).unwrap(), Some((st2, node(3))));
    }

    #[test]
    fn record_commit_writes_synced_and_remote_rows_together() {
        let ix = Index::in_memory().unwrap();
        let id = |n: u8| EntryId::from_bytes([n; 32]);
        let synced =
            |n: u8| SyncedEntry { entry_id: id(n), revision: Revision(2), node: node(n), chunks: vec![] };
        ix.put_synced(&p("gone"), &synced(9)).unwrap();
        let live = RemoteLive {
            node: node(1),
            chunks: vec![],
            device: DeviceId::from_bytes([9; 16]),
            device_name: "pc".into(),
            listed: false,
        };
        let remote = vec![
            (Some(p("new")), RemoteEntry { entry_id: id(1), revision: Revision(2), live: Some(live) }),
            (Some(p("gone")), RemoteEntry { entry_id: id(9), revision: Revision(3), live: None }),
        ];
        ix.record_commit(&[(p("new"), Some(synced(1))), (p("gone"), None)], &remote, &[Cursor(1), Cursor(2)])
            .unwrap();
        let s = ix.synced().unwrap();
        assert_eq!(s.get(&p("new")), Some(&synced(1)));
        assert!(!s.contains_key(&p("gone")), "a committed deletion forgets the synced record");
        let r = ix.remote().unwrap();
        assert_eq!(r[&p("new")].revision, Revision(2));
        assert!(r[&p("gone")].live.is_none());
        assert_eq!(ix.cursor().unwrap(), Cursor(0), "before the first snapshot the cursor is the pull's");
    }

    #[test]
    fn record_commit_moves_the_cursor_only_over_its_own_changes() {
        let ix = Index::in_memory().unwrap();
        ix.set_meta("bootstrapped", "1").unwrap();
        ix.put_remote(&[], Some(Cursor(10))).unwrap();
        let row = |n: u8| {
            (
                Some(p(&format!("f{n}"))),
                RemoteEntry { entry_id: EntryId::from_bytes([n; 32]), revision: Revision(1), live: None },
            )
        };
        // Another device's change (11) lies between: the pull must see it.
        ix.record_commit(&[], &[row(1)], &[Cursor(12)]).unwrap();
        assert_eq!(ix.cursor().unwrap(), Cursor(10));
        // A gap inside the commit's own positions: also left to the pull.
        ix.record_commit(&[], &[row(2), row(3)], &[Cursor(11), Cursor(13)]).unwrap();
        assert_eq!(ix.cursor().unwrap(), Cursor(10));
        // Exactly the next positions, in any order: the cursor moves past them.
        ix.record_commit(&[], &[row(4), row(5)], &[Cursor(12), Cursor(11)]).unwrap();
        assert_eq!(ix.cursor().unwrap(), Cursor(12));
        // Nothing accepted (every change refused): nothing moves.
        ix.record_commit(&[], &[], &[]).unwrap();
        assert_eq!(ix.cursor().unwrap(), Cursor(12));
    }

    /// Chunk lists are written compact; rows written as JSON arrays (schema
    /// 1) still read; an empty list and a damaged row are handled.
    #[test]
    fn chunk_lists_are_written_compact_and_old_rows_still_read() {
        let ix = Index::in_memory().unwrap();
        let chunks: Vec<ChunkRef> = (1..=3u8)
            .map(|n| ChunkRef {
                id: ChunkId::from_bytes([n; 32]),
                content: ContentHash::from_bytes([n + 10; 32]),
                len: u32::from(n) * 1000,
            })
            .collect();
        let id = EntryId::from_bytes([1; 32]);
        let e = SyncedEntry { entry_id: id, revision: Revision(2), node: node(1), chunks: chunks.clone() };
        ix.put_synced(&p("f"), &e).unwrap();
        ix.put_synced(&p("empty"), &SyncedEntry { chunks: vec![], ..e.clone() }).unwrap();
        let stored: String =
            ix.db().query_row("SELECT chunks FROM synced WHERE path = 'f'", [], |r| r.get(0)).unwrap();
        assert!(stored.starts_with('"') && stored.len() < 3 * 91 + 3, "{stored}");
        assert_eq!(ix.synced_chunks(&p("f")).unwrap(), Some(chunks.clone()));
        assert_eq!(ix.synced_chunks(&p("empty")).unwrap(), Some(vec![]));

        // Schema 1 rows: JSON arrays, in both tables.
        let old_list = serde_json::to_string(&chunks).unwrap();
        ix.db().execute("UPDATE synced SET chunks = ?1 WHERE path = 'f'", [&old_list]).unwrap();
        let old_live = format!(
            r#"{{"node":{},"chunks":{old_list},"device":"{}","device_name":"pc","listed":true}}"#,
            serde_json::to_string(&node(1)).unwrap(),
            DeviceId::from_bytes([9; 16])
        );
        ix.db()
            .execute(
                "INSERT INTO remote(entry_id, revision, path, live) VALUES (?1, 2, 'f', ?2)",
                params![id.as_bytes().as_slice(), old_live],
            )
            .unwrap();
        assert_eq!(ix.synced().unwrap()[&p("f")], e);
        assert_eq!(ix.remote_chunks(&id).unwrap(), chunks);
        assert_eq!(ix.remote().unwrap()[&p("f")].live.as_ref().unwrap().chunks, chunks);

        ix.db().execute("UPDATE synced SET chunks = '\"AAAA\"' WHERE path = 'f'", []).unwrap();
        assert!(matches!(ix.synced_chunks(&p("f")), Err(IndexError::Corrupt(_))), "a torn entry");
    }

    #[test]
    fn the_planner_trees_leave_chunks_to_remote_chunks() {
        let ix = Index::in_memory().unwrap();
        let chunks = vec![ChunkRef {
            id: ChunkId::from_bytes([3; 32]),
            content: ContentHash::from_bytes([4; 32]),
            len: 9,
        }];
        let e = SyncedEntry {
            entry_id: EntryId::from_bytes([1; 32]),
            revision: Revision(2),
            node: node(1),
            chunks: chunks.clone(),
        };
        ix.put_synced(&p("f"), &e).unwrap();
        let live = RemoteLive {
            node: node(1),
            chunks: chunks.clone(),
            device: DeviceId::from_bytes([9; 16]),
            device_name: "pc".into(),
            listed: true,
        };
        let r = RemoteEntry { entry_id: e.entry_id, revision: Revision(2), live: Some(live) };
        let gone = RemoteEntry { entry_id: EntryId::from_bytes([5; 32]), revision: Revision(4), live: None };
        ix.put_remote(&[(Some(p("f")), r.clone()), (Some(p("g")), gone.clone())], None).unwrap();
        assert_eq!(ix.synced().unwrap()[&p("f")], e);
        assert_eq!(ix.synced_for_plan().unwrap()[&p("f")], SyncedEntry { chunks: vec![], ..e.clone() });
        let mut bare = r.clone();
        bare.live.as_mut().unwrap().chunks.clear();
        let planned = ix.remote_for_plan().unwrap();
        assert_eq!(planned[&p("f")], bare);
        assert_eq!(planned[&p("g")], gone);
        assert_eq!(ix.remote().unwrap()[&p("f")], r);
        assert_eq!(ix.remote_chunks(&e.entry_id).unwrap(), chunks);
        assert!(ix.remote_chunks(&gone.entry_id).unwrap().is_empty());
        assert!(ix.remote_chunks(&EntryId::from_bytes([7; 32])).unwrap().is_empty());
        // Many at once: the same answers, in the order asked.
        let unknown = EntryId::from_bytes([7; 32]);
        assert_eq!(
            ix.remote_chunks_of(&[gone.entry_id, e.entry_id, unknown, e.entry_id]).unwrap(),
            [vec![], chunks.clone(), vec![], chunks.clone()]
        );
        let revisions = ix.remote_revisions(&[&e.entry_id, &gone.entry_id, &unknown]).unwrap();
        assert_eq!(revisions.len(), 2);
        assert_eq!((revisions[&e.entry_id], revisions[&gone.entry_id]), (Revision(2), Revision(4)));
        // The list of the latest revision, with whether it is in pieces;
        // nothing for another revision or a deletion.
        assert_eq!(ix.remote_chunks_at(&e.entry_id, Revision(2)).unwrap(), Some((chunks.clone(), true)));
        assert_eq!(ix.remote_chunks_at(&e.entry_id, Revision(1)).unwrap(), None);
        assert_eq!(ix.remote_chunks_at(&gone.entry_id, Revision(4)).unwrap(), None);
    }

    #[test]
    fn refuses_an_index_from_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        drop(Index::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(Index::open(&path), Err(IndexError::Corrupt(_))));
    }
}
