//! The two storage seams of the cloud store, and their implementations.
//!
//! - [`MetaStore`]: accounts, sessions, chunk bookkeeping, entries with
//!   revisions, the change journal, quota. Each method is one atomic
//!   operation; the service never composes two of them into a transaction, so
//!   an implementation decides how to make each one atomic (SQLite: one
//!   `BEGIN IMMEDIATE` transaction on a single writer connection; PostgreSQL
//!   would lock the account row).
//! - [`BlobStore`]: sealed chunk bytes by (account, chunk id). Blobs are
//!   namespaced per account: accounts never share ciphertext (their keys
//!   differ, so there is nothing to deduplicate), which keeps isolation and
//!   garbage collection trivial.
//!
//! Both traits are synchronous: implementations do blocking I/O, and the
//! service calls them on tokio's blocking pool. Implementations here:
//! [`sqlite::SqliteMetaStore`], [`disk::DiskBlobStore`] (the embedded
//! default) and [`memory`] (the simulation's, and a reference). Every one
//! passes [`crate::conformance`].
//!
//! # Chunk bookkeeping
//! Each (account, chunk) row keeps its size, `refs` (kept revisions that name
//! it), `live_refs` (latest non-deleted revisions that name it),
//! `uploaded_at` and a `deleting` mark. Usage is the sum of sizes with
//! `live_refs > 0`, kept exact inside each commit. See [`crate::service::gc`]
//! for how the mark makes collection safe.

pub mod commit;
pub mod disk;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sqlite;

use std::fmt;

use coffer_proto::api::{
    Change, ChangeResult, EntryVersion, JournalPage, SessionId, SnapshotPage, UnixMillis, Usage,
};
use coffer_proto::{ChunkId, Cursor, DeviceId, EntryId, SealedSettings, WrappedKey};

/// An account, as the store numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// BLAKE3 hash of a session token: what the store keeps instead of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(****)")
    }
}

/// A stored account. The OPAQUE record lets the store run logins; it does
/// not reveal the password. The wrapped key opens only with the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Store id.
    pub id: AccountId,
    /// Login name.
    pub username: String,
    /// Serialised OPAQUE `ServerRegistration`.
    pub opaque_record: Vec<u8>,
    /// The master key, wrapped by the client.
    pub wrapped_key: WrappedKey,
    /// The account's settings, sealed by the client (none for accounts
    /// made before settings existed).
    pub settings: Option<SealedSettings>,
    /// Quota in bytes.
    pub quota_bytes: u64,
}

impl fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("quota_bytes", &self.quota_bytes)
            .finish_non_exhaustive()
    }
}

/// What [`MetaStore::create_account`] needs.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Login name (unique).
    pub username: String,
    /// Serialised OPAQUE `ServerRegistration`.
    pub opaque_record: Vec<u8>,
    /// The master key, wrapped by the client.
    pub wrapped_key: WrappedKey,
    /// The account's settings, sealed by the client.
    pub settings: Option<SealedSettings>,
    /// Quota in bytes.
    pub quota_bytes: u64,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// A device session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub id: SessionId,
    /// Owner.
    pub account: AccountId,
    /// Device.
    pub device: DeviceId,
    /// Hash of the bearer token.
    pub token_hash: TokenHash,
    /// Made at.
    pub created_at: UnixMillis,
    /// Stops working at.
    pub expires_at: UnixMillis,
}

/// A store failure. `is_retryable` tells transient faults from refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The account does not exist.
    #[error("no such account")]
    NoSuchAccount,
    /// The account name is taken.
    #[error("account name already taken")]
    AlreadyExists,
    /// A commit named chunks the store lacks (or is collecting). Nothing applied.
    #[error("{} chunk(s) missing", .0.len())]
    ChunkMissing(Vec<ChunkId>),
    /// A commit would exceed the quota. Nothing applied.
    #[error("quota exceeded: {needed} bytes needed, quota {quota}")]
    QuotaExceeded {
        /// Usage the commit would lead to.
        needed: u64,
        /// The quota.
        quota: u64,
    },
    /// A change given as a difference from its base revision's chunk list
    /// does not fit that list. Nothing applied.
    #[error("the chunk list change of entry {0} does not match its base revision")]
    DeltaMismatch(EntryId),
    /// A chunk being uploaded is being garbage collected right now.
    #[error("chunk is being garbage collected; retry")]
    ChunkBusy,
    /// The journal before this cursor was pruned.
    #[error("journal cursor {0} expired; take a fresh snapshot")]
    CursorExpired(Cursor),
    /// The backend failed (I/O, database). May be transient.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::ChunkBusy | Self::Backend(_))
    }
}

/// Shorthand.
pub type StoreResult<T> = Result<T, StoreError>;

/// Metadata: accounts, sessions, chunk bookkeeping, entries, journal, quota.
/// Every method is atomic. See the module doc.
pub trait MetaStore: Send + Sync + fmt::Debug + 'static {
    /// Returns the stored value of a server secret, storing `fresh` first if
    /// there is none (so every instance agrees on one value).
    fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>>;

    /// Creates an account; `AlreadyExists` if the name is taken.
    fn create_account(&self, account: NewAccount) -> StoreResult<AccountId>;
    /// Looks an account up by name.
    fn account_by_name(&self, username: &str) -> StoreResult<Option<AccountRecord>>;
    /// Looks an account up by id.
    fn account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>>;
    /// Sets an account's quota.
    fn set_quota(&self, id: AccountId, quota_bytes: u64) -> StoreResult<()>;
    /// Current usage and quota.
    fn usage(&self, id: AccountId) -> StoreResult<Usage>;

    /// Stores a new session.
    fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// Finds a session by token hash (expired ones included; the caller checks).
    fn session_by_token(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>>;
    /// Sessions of an account, oldest first.
    fn sessions(&self, account: AccountId) -> StoreResult<Vec<SessionRecord>>;
    /// Deletes a session of this account; false if there was none.
    fn revoke_session(&self, account: AccountId, id: SessionId) -> StoreResult<bool>;
    /// Deletes sessions expired at `now`; returns how many.
    fn delete_expired_sessions(&self, now: UnixMillis) -> StoreResult<u64>;

    /// The subset of `ids` the account lacks (or that are being collected),
    /// in input order.
    fn missing_chunks(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>>;
    /// Records chunks whose bytes are now in the blob store, and refreshes
    /// the upload time of those already known. `ChunkBusy` (and nothing
    /// recorded) if any is marked for collection.
    fn record_chunks(
        &self,
        account: AccountId,
        chunks: &[(ChunkId, u64)],
        now: UnixMillis,
    ) -> StoreResult<()>;

    /// Applies a batch of changes (see [`commit::apply`] for the rules).
    fn commit(
        &self,
        account: AccountId,
        device: DeviceId,
        now: UnixMillis,
        changes: &[Change],
    ) -> StoreResult<(Vec<ChangeResult>, Cursor)>;
    /// The account's journal head.
    fn head(&self, account: AccountId) -> StoreResult<Cursor>;
    /// Journal changes after `after`, oldest first. `CursorExpired` if the
    /// journal before `after` was pruned.
    fn journal(&self, account: AccountId, after: Cursor, limit: u32) -> StoreResult<JournalPage>;
    /// Live entries after `after` in entry-id order, with the current head.
    fn snapshot(&self, account: AccountId, after: Option<EntryId>, limit: u32) -> StoreResult<SnapshotPage>;
    /// Every kept revision of an entry, newest first.
    fn versions(&self, account: AccountId, entry: EntryId) -> StoreResult<Vec<EntryVersion>>;

    /// Drops revisions superseded before `cutoff`, and deleted entries whose
    /// deletion is older than `cutoff` (raising the journal floor). Returns
    /// the number of revisions dropped.
    fn prune_versions(&self, cutoff: UnixMillis) -> StoreResult<u64>;
    /// Marks chunks that no kept revision names and that were last uploaded
    /// before `cutoff`, and returns every marked chunk (these and any left
    /// marked by an interrupted pass), at most `limit`. Marked chunks count as
    /// missing and cannot be committed or re-recorded until swept.
    fn gc_mark(&self, cutoff: UnixMillis, limit: u32) -> StoreResult<Vec<(AccountId, ChunkId)>>;
    /// Forgets marked chunks (after their blobs are gone).
    fn gc_sweep(&self, marked: &[(AccountId, ChunkId)]) -> StoreResult<()>;
}

/// Sealed chunk bytes by (account, chunk id). Writes are atomic (a reader
/// sees all of a blob or none) and idempotent.
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a blob (overwriting an identical one is fine).
    fn put(&self, account: AccountId, id: ChunkId, bytes: &[u8]) -> StoreResult<()>;
    /// Reads a blob.
    fn get(&self, account: AccountId, id: ChunkId) -> StoreResult<Option<Vec<u8>>>;
    /// Reads a batch of blobs, in the order of `ids` (`None` for one the
    /// store does not hold); `Ok(None)` if their bytes would come to more
    /// than `budget`. The default reads one after the other, and stops at
    /// the one that goes over.
    fn get_many(
        &self,
        account: AccountId,
        ids: &[ChunkId],
        budget: usize,
    ) -> StoreResult<Option<Vec<Option<Vec<u8>>>>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut total = 0usize;
        for id in ids {
            let blob = self.get(account, *id)?;
            total = total.saturating_add(blob.as_ref().map_or(0, Vec::len));
            if total > budget {
                return Ok(None);
            }
            out.push(blob);
        }
        Ok(Some(out))
    }
    /// Deletes a blob; no error if absent.
    fn delete(&self, account: AccountId, id: ChunkId) -> StoreResult<()>;
    /// Stores a batch of blobs: when it returns `Ok`, every one is stored
    /// as [`BlobStore::put`] would have. A store may write them in
    /// parallel and make them durable together (one upload request's
    /// chunks); on an error some may be stored, which is harmless (a blob
    /// is its id's bytes).
    fn put_many(&self, account: AccountId, blobs: &[(ChunkId, &[u8])]) -> StoreResult<()> {
        blobs.iter().try_for_each(|(id, bytes)| self.put(account, *id, bytes))
    }
    /// Those of `ids` the store does not hold, in input order. The default
    /// reads each blob; stores override it with a cheaper check.
    fn lacking(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<Vec<ChunkId>> {
        let mut out = Vec::new();
        for id in ids {
            if self.get(account, *id)?.is_none() {
                out.push(*id);
            }
        }
        Ok(out)
    }
    /// Housekeeping a maintenance pass runs after collecting: reclaims the
    /// space of deleted blobs where a store does not at once. Returns how
    /// many units (packs, for the disk store) it reclaimed.
    fn reclaim(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// Deletes blobs of one account, as [`BlobStore::delete`] each (no
    /// error for absent ones). On an error some may be deleted.
    fn delete_many(&self, account: AccountId, ids: &[ChunkId]) -> StoreResult<()> {
        ids.iter().try_for_each(|id| self.delete(account, *id))
    }
}
