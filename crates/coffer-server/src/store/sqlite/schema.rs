//! The SQLite schema, as numbered migrations. A migration is only ever
//! appended, never edited: `PRAGMA user_version` records how many have run,
//! and opening a database runs the rest in one transaction.
//!
//! Integers are SQLite's signed 64-bit; every stored counter and time is
//! below 2^63. Ids are blobs of their raw bytes. A revision's chunk list is
//! one blob of back-to-back 32-byte ids.

use rusqlite::Connection;

/// Every migration, in order. Append only.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r"
    CREATE TABLE secrets (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE accounts (
        id            INTEGER PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE,
        opaque_record BLOB NOT NULL,
        wrapped_key   BLOB NOT NULL,
        quota         INTEGER NOT NULL,
        used          INTEGER NOT NULL DEFAULT 0,
        head          INTEGER NOT NULL DEFAULT 0,
        journal_floor INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id         BLOB PRIMARY KEY,
        account    INTEGER NOT NULL REFERENCES accounts(id),
        device     BLOB NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_account ON sessions(account, created_at);
    CREATE TABLE chunks (
        account     INTEGER NOT NULL,
        id          BLOB NOT NULL,
        size        INTEGER NOT NULL,
        refs        INTEGER NOT NULL DEFAULT 0,
        live_refs   INTEGER NOT NULL DEFAULT 0,
        uploaded_at INTEGER NOT NULL,
        deleting    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account, id)
    ) WITHOUT ROWID;
    CREATE INDEX chunks_unreferenced ON chunks(uploaded_at) WHERE refs = 0 AND deleting = 0;
    CREATE TABLE entries (
        account INTEGER NOT NULL,
        entry   BLOB NOT NULL,
        rev     INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        PRIMARY KEY (account, entry)
    ) WITHOUT ROWID;
    CREATE TABLE revisions (
        account INTEGER NOT NULL,
        entry   BLOB NOT NULL,
        rev     INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        meta    BLOB,
        chunks  BLOB NOT NULL,
        device  BLOB NOT NULL,
        time    INTEGER NOT NULL,
        PRIMARY KEY (account, entry, rev)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX revisions_by_seq ON revisions(account, seq);
    ",
    // 2: find chunks left marked by an interrupted collection.
    r"
    CREATE INDEX chunks_marked ON chunks(account) WHERE deleting = 1;
    ",
    // 3: the account's sealed settings (NULL for accounts made before).
    r"
    ALTER TABLE accounts ADD COLUMN settings BLOB;
    ",
    // 4: revisions kept in journal order. Keyed by entry, a commit of many
    // new entries inserted its rows (each with its sealed metadata) at
    // random places in the table, writing most of its pages again at every
    // commit. Keyed by (account, seq), they are appended; the lookup by
    // entry goes through a compact index.
    r"
    CREATE TABLE revisions_by_seq_new (
        account INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        entry   BLOB NOT NULL,
        rev     INTEGER NOT NULL,
        meta    BLOB,
        chunks  BLOB NOT NULL,
        device  BLOB NOT NULL,
        time    INTEGER NOT NULL,
        PRIMARY KEY (account, seq)
    ) WITHOUT ROWID;
    INSERT INTO revisions_by_seq_new (account, seq, entry, rev, meta, chunks, device, time)
        SELECT account, seq, entry, rev, meta, chunks, device, time FROM revisions;
    DROP TABLE revisions;
    ALTER TABLE revisions_by_seq_new RENAME TO revisions;
    CREATE UNIQUE INDEX revisions_by_entry ON revisions(account, entry, rev);
    ",
];

/// Runs the migrations not yet applied.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}
