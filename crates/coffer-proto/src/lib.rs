//! Wire types of Coffer's HTTP API, shared by the client (`coffer-engine`) and
//! the cloud store (`coffer-server`) so that the two cannot drift apart.
//!
//! Words used here:
//! - **chunk id** ([`ChunkId`]): the BLAKE3 hash of a sealed chunk's bytes. The
//!   store can check an upload against it; it reveals nothing about plaintext.
//! - **entry id** ([`EntryId`]): a keyed hash of a normalised path. The store
//!   orders and versions entries by it without learning names.
//! - **revision** ([`Revision`]): per-entry counter, starting at 1 for the first
//!   commit; a commit names the revision it was based on (0 for "new").
//! - **cursor** ([`Cursor`]): a position in an account's change journal.
//!
//! Everything here is plain data: no I/O, no secrets. Sealed payloads travel as
//! opaque bytes; only `coffer-crypto` can make or open them.

pub mod api;
pub mod ids;
pub mod sealed;

pub use ids::{ChunkId, Cursor, DeviceId, EntryId, IdParseError, ListDigest, Revision};
pub use sealed::{SealedChunk, SealedMeta, SealedPreview, SealedSettings, WrappedKey};
