//! The PostgreSQL schema, as numbered migrations. A migration is only ever
//! appended, never edited: the `coffer_migrations` table records which have
//! run, and opening the store runs the rest in one transaction under an
//! advisory lock, so instances starting together migrate once.
//!
//! Counters and times are `BIGINT` (every stored value is below 2^63). Ids
//! are `BYTEA` of their raw bytes; a revision's chunk list is one `BYTEA` of
//! back-to-back 32-byte ids, as in the SQLite schema.

use postgres::Client;

/// Every migration, in order. Append only.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema (the same shape as SQLite's migrations 1 and 2).
    r"
    CREATE TABLE secrets (
        name  TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE accounts (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE,
        opaque_record BYTEA NOT NULL,
        wrapped_key   BYTEA NOT NULL,
        quota         BIGINT NOT NULL,
        used          BIGINT NOT NULL DEFAULT 0,
        head          BIGINT NOT NULL DEFAULT 0,
        journal_floor BIGINT NOT NULL DEFAULT 0,
        created_at    BIGINT NOT NULL
    );
    CREATE TABLE sessions (
        id         BYTEA PRIMARY KEY,
        account    BIGINT NOT NULL REFERENCES accounts(id),
        device     BYTEA NOT NULL,
        token_hash BYTEA NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX sessions_by_account ON sessions(account, created_at);
    CREATE INDEX sessions_by_expiry ON sessions(expires_at);
    CREATE TABLE chunks (
        account     BIGINT NOT NULL REFERENCES accounts(id),
        id          BYTEA NOT NULL,
        size        BIGINT NOT NULL,
        refs        BIGINT NOT NULL DEFAULT 0,
        live_refs   BIGINT NOT NULL DEFAULT 0,
        uploaded_at BIGINT NOT NULL,
        deleting    BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (account, id)
    );
    CREATE INDEX chunks_unreferenced ON chunks(uploaded_at) WHERE refs = 0 AND NOT deleting;
    CREATE INDEX chunks_marked ON chunks(account, id) WHERE deleting;
    CREATE TABLE entries (
        account BIGINT NOT NULL,
        entry   BYTEA NOT NULL,
        rev     BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL,
        PRIMARY KEY (account, entry)
    );
    CREATE INDEX entries_deleted ON entries(account, entry) WHERE deleted;
    CREATE TABLE revisions (
        account BIGINT NOT NULL,
        entry   BYTEA NOT NULL,
        rev     BIGINT NOT NULL,
        seq     BIGINT NOT NULL,
        meta    BYTEA,
        chunks  BYTEA NOT NULL,
        device  BYTEA NOT NULL,
        time    BIGINT NOT NULL,
        PRIMARY KEY (account, entry, rev)
    );
    CREATE UNIQUE INDEX revisions_by_seq ON revisions(account, seq);
    ",
    // 2: the account's sealed settings (NULL for accounts made before), as
    // SQLite's migration 3.
    r"
    ALTER TABLE accounts ADD COLUMN settings BYTEA;
    ",
];

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x00c0_ffe7_0000_0009;

/// Runs the migrations not yet applied.
pub fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let fresh: bool = tx.query_one("SELECT to_regclass('coffer_migrations') IS NULL", &[])?.get(0);
    if fresh {
        tx.batch_execute("CREATE TABLE coffer_migrations (version INTEGER PRIMARY KEY)")?;
    }
    let done: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM coffer_migrations", &[])?.get(0);
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO coffer_migrations (version) VALUES ($1)", &[&((n + 1) as i32)])?;
    }
    tx.commit()
}
