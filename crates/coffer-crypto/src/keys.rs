//! The key hierarchy: one random master key, one derived subkey per purpose.
//!
//! Derivation is BLAKE3 `derive_key(context, master)`. Context strings are
//! globally unique and never reused for another purpose; changing one changes
//! every derived key, so they are frozen (see the test vectors below).

use std::fmt;

use coffer_proto::EntryId;
use rand_core::CryptoRngCore;
use unicode_normalization::UnicodeNormalization;
use zeroize::{Zeroize, ZeroizeOnDrop};

const CTX_CHUNK: &str = "coffer 2026-11-26 chunk encryption key v1";
const CTX_CHUNK_ID: &str = "coffer 2026-11-26 chunk id key v1";
const CTX_META: &str = "coffer 2026-11-26 metadata key v1";
const CTX_PATH: &str = "coffer 2026-11-26 path key v1";
const CTX_CHUNKER: &str = "coffer 2026-11-26 chunker gear seed v1";

macro_rules! define_key {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps raw key bytes (from storage or a test vector).
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw key bytes. Handle with care: do not log or persist
            /// them unencrypted.
            pub fn expose_secret(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(****)"))
            }
        }
    };
}

define_key!(
    /// The account's root secret. Made once at signup; everything else
    /// derives from it.
    MasterKey
);
define_key!(
    /// Derives a per-content AES-256-GCM key from a chunk's content hash.
    ChunkKey
);
define_key!(
    /// Keys the BLAKE3 hash of chunk plaintext, so that the store (which never
    /// sees these hashes anyway) could not confirm a guess of content even if
    /// one leaked.
    ChunkIdKey
);
define_key!(
    /// Seals entry metadata.
    MetaKey
);
define_key!(
    /// Keys the hash of a path into an entry id.
    PathKey
);

impl MasterKey {
    /// A fresh random master key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Derives every subkey.
    pub fn derive(&self) -> AccountKeys {
        let d = |ctx| blake3::derive_key(ctx, &self.0);
        let seed = d(CTX_CHUNKER);
        AccountKeys {
            chunk: ChunkKey(d(CTX_CHUNK)),
            chunk_id: ChunkIdKey(d(CTX_CHUNK_ID)),
            meta: MetaKey(d(CTX_META)),
            path: PathKey(d(CTX_PATH)),
            chunker_seed: ChunkerSeed(u64::from_le_bytes(seed[..8].try_into().unwrap_or([0; 8]))),
        }
    }
}

/// Every subkey of an account, derived from its [`MasterKey`].
#[derive(Clone, Debug)]
pub struct AccountKeys {
    /// Chunk encryption.
    pub chunk: ChunkKey,
    /// Chunk content hashes.
    pub chunk_id: ChunkIdKey,
    /// Metadata sealing.
    pub meta: MetaKey,
    /// Entry ids.
    pub path: PathKey,
    /// Chunker gear-table seed.
    pub chunker_seed: ChunkerSeed,
}

/// Seed for the chunker's gear table, so that chunk boundaries (and hence
/// chunk sizes, which the store sees) do not fingerprint well-known files.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChunkerSeed(u64);

impl ChunkerSeed {
    /// Wraps a raw seed (tests).
    pub fn from_u64(seed: u64) -> Self {
        Self(seed)
    }

    /// The raw seed, for the chunker. Never zero for a derived seed in
    /// practice; a zero seed means "unkeyed" to the chunker.
    pub fn expose_secret(&self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ChunkerSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkerSeed(****)")
    }
}

impl PathKey {
    /// The entry id of a relative path: keyed BLAKE3 of its NFC form, so that
    /// the same name typed on macOS (NFD) and Linux (NFC) is the same entry.
    pub fn entry_id(&self, rel_path: &str) -> EntryId {
        let nfc: String = rel_path.nfc().collect();
        EntryId::from_bytes(*blake3::keyed_hash(&self.0, nfc.as_bytes()).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_are_distinct_and_frozen() {
        let keys = MasterKey::from_bytes([7; 32]).derive();
        let all = [
            keys.chunk.expose_secret(),
            keys.chunk_id.expose_secret(),
            keys.meta.expose_secret(),
            keys.path.expose_secret(),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Frozen: a change here would make every existing account unreadable.
        assert_eq!(
            hex::encode(keys.meta.expose_secret()),
            hex::encode(blake3::derive_key(CTX_META, &[7; 32]))
        );
        assert_eq!(hex::encode(keys.path.entry_id("docs/report.txt").as_bytes()), FROZEN_ENTRY_ID);
    }

    const FROZEN_ENTRY_ID: &str = "76f1bfe711ee288828183902c0c2091f8c4a9f7433f9434586b979784dbf8ee4";

    #[test]
    fn entry_id_is_normalisation_insensitive() {
        let keys = MasterKey::from_bytes([1; 32]).derive();
        let nfc = "caf\u{e9}.txt";
        let nfd = "cafe\u{301}.txt";
        assert_eq!(keys.path.entry_id(nfc), keys.path.entry_id(nfd));
        assert_ne!(keys.path.entry_id(nfc), keys.path.entry_id("Caf\u{e9}.txt"));
    }

    #[test]
    fn debug_is_redacted() {
        let keys = MasterKey::from_bytes([0xAB; 32]).derive();
        let shown = format!("{keys:?} {:?}", MasterKey::from_bytes([0xAB; 32]));
        assert!(!shown.to_lowercase().contains("ab, "), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("****"));
    }
}
