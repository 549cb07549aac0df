//! Coffer's cryptography: the key hierarchy and every sealed format. Pure: no
//! I/O, no clock; randomness is passed in (`rand_core::CryptoRngCore`) so that
//! tests and the simulation can replay it.
//!
//! # Keys
//! A random 256-bit [`MasterKey`] is made once per account. Every other key is
//! derived from it with BLAKE3's `derive_key` under its own context string, one
//! key per purpose ([`AccountKeys`]):
//!
//! | key | purpose |
//! |---|---|
//! | [`ChunkIdKey`] | keyed BLAKE3 of chunk plaintext: the [`ContentHash`] |
//! | [`ChunkKey`] | derives a per-content AES-256-GCM key from a content hash |
//! | [`MetaKey`] | AES-256-GCM for entry metadata |
//! | [`PathKey`] | keyed BLAKE3 of an NFC path: the [`EntryId`](coffer_proto::EntryId) |
//! | [`ChunkerSeed`] | seeds the content-defined chunker's gear table |
//!
//! The master key leaves the device only as a [`recovery`] key shown once to
//! the person, or [`wrap`]ped under a key from their login.
//!
//! # Sealed formats
//! Every sealed format starts with a version byte ([`chunk`], [`meta`],
//! [`wrap`]); an unknown version is refused, never guessed at.
//!
//! # Secrets
//! Key types are not `Copy`, not `Serialize`, print as `****` in `Debug`, and
//! are zeroized on drop.

mod aead;
pub mod chunk;
mod error;
pub mod keys;
pub mod login;
pub mod meta;
pub mod recovery;
pub mod wrap;

pub use chunk::ContentHash;
pub use error::CryptoError;
pub use keys::{AccountKeys, ChunkIdKey, ChunkKey, ChunkerSeed, MasterKey, MetaKey, PathKey};
pub use recovery::RecoveryKey;
pub use wrap::WrapKey;
