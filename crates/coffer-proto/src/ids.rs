//! One newtype per identifier, so that a chunk id can never be passed where an
//! entry id is expected. Hash-like ids print and serialise as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a textual id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: expected {len} hex characters")]
pub struct IdParseError {
    kind: &'static str,
    len: usize,
}

macro_rules! define_hash_id {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex, as it travels on the wire.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses from a byte slice of exactly the right length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdParseError> {
                <[u8; $len]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| IdParseError { kind: stringify!($name), len: $len * 2 })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Short prefix: enough to tell ids apart in logs.
                write!(f, concat!(stringify!($name), "({})"), &self.to_hex()[..12])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdParseError { kind: stringify!($name), len: $len * 2 };
                if s.len() != $len * 2 {
                    return Err(err());
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_hash_id!(
    /// BLAKE3 hash of a sealed chunk: the store's name for it.
    ChunkId,
    32
);
define_hash_id!(
    /// Keyed hash of an entry's normalised path: the store's name for a file.
    EntryId,
    32
);
define_hash_id!(
    /// BLAKE3 of a chunk list (its ids sorted, deduplicated, concatenated):
    /// checks a change given as a difference (`api::ChunkDelta`).
    ListDigest,
    32
);

impl ListDigest {
    /// The digest of `ids` (in any order, duplicates counted once).
    pub fn of<'a>(ids: impl IntoIterator<Item = &'a ChunkId>) -> Self {
        let mut sorted: Vec<&ChunkId> = ids.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut h = blake3::Hasher::new();
        for id in sorted {
            h.update(id.as_bytes());
        }
        Self::from_bytes(*h.finalize().as_bytes())
    }
}

define_hash_id!(
    /// A device (one install of the client), random at first start.
    DeviceId,
    16
);

macro_rules! define_counter {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value.
            pub const ZERO: Self = Self(0);

            /// The next value; saturates rather than wrapping.
            #[must_use]
            pub const fn next(self) -> Self {
                Self(self.0.saturating_add(1))
            }

            /// The raw number.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

define_counter!(
    /// Per-entry revision. 0 means "the entry does not exist yet"; the first
    /// commit creates revision 1, and each accepted commit adds one.
    Revision
);
define_counter!(
    /// A position in an account's change journal: the sequence number of the
    /// last change a reader has seen (0 before the first).
    Cursor
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_json() {
        let id = ChunkId::from_bytes([0xab; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ChunkId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("zz".repeat(32).parse::<ChunkId>().is_err());
        assert!("ab".repeat(31).parse::<ChunkId>().is_err());
        assert!(serde_json::from_str::<EntryId>("\"00\"").is_err());
        assert!("ab".repeat(16).parse::<DeviceId>().is_ok());
    }

    #[test]
    fn counters_are_transparent() {
        assert_eq!(serde_json::to_string(&Revision(7)).unwrap(), "7");
        assert_eq!(Revision(u64::MAX).next(), Revision(u64::MAX));
        assert_eq!(Cursor::ZERO.next(), Cursor(1));
    }
}
