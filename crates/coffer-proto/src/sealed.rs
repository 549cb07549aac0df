//! Sealed (encrypted and authenticated) payloads as they travel and rest on the
//! store. Only `coffer-crypto` makes or opens them; the store handles them as
//! opaque bytes. Keeping them as distinct types means a function that talks to
//! the store cannot be handed plaintext by mistake.
//!
//! Every sealed format starts with a version byte (see `coffer-crypto`).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ChunkId;

macro_rules! define_sealed {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// Wraps bytes that are already sealed (read from the wire or disk).
            pub fn from_sealed_bytes(bytes: Vec<u8>) -> Self {
                Self(bytes)
            }

            /// The sealed bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The sealed bytes, owned.
            pub fn into_bytes(self) -> Vec<u8> {
                self.0
            }

            /// Length in bytes.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// True when empty (never the case for a well-formed seal).
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({} bytes)"), self.0.len())
            }
        }

        /// Base64 (standard alphabet, padded) in JSON.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&data_encoding::BASE64.encode(&self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                data_encoding::BASE64
                    .decode(s.as_bytes())
                    .map(Self)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

define_sealed!(
    /// An entry's metadata (path, size, times, chunk list), sealed with the
    /// account's metadata key and bound to one entry id and revision.
    SealedMeta
);
define_sealed!(
    /// The account's master key wrapped under a key the client derives from
    /// the login (the OPAQUE export key). The store keeps it for new devices.
    WrappedKey
);
define_sealed!(
    /// The account's settings (the chunk sizes all its devices cut with),
    /// sealed by the client with the metadata key when the account is made.
    /// The store keeps it for new devices and cannot change it unnoticed.
    SealedSettings
);

define_sealed!(
    /// A preview of a large upload under way (which chunks of which file
    /// the store holds so far), sealed by the uploading client with the
    /// metadata key, so that the account's other devices can fetch them
    /// before the commit. The store keeps it briefly and in memory only.
    SealedPreview
);

/// A sealed chunk together with its store id (BLAKE3 of `bytes`). Its bytes
/// are a shared buffer: a handle on them ([`SealedChunk::shared`]) goes
/// into a request body without a copy, and [`SealedChunk::into_bytes`]
/// gives back the buffer itself when nothing else holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedChunk {
    id: ChunkId,
    bytes: Bytes,
}

impl SealedChunk {
    /// Pairs sealed bytes with their id. The caller vouches that `id` is the
    /// BLAKE3 hash of `bytes`; the store checks it on upload, a client's
    /// download on arrival.
    pub fn from_parts(id: ChunkId, bytes: Vec<u8>) -> Self {
        Self { id, bytes: Bytes::from(bytes) }
    }

    /// The same from a shared buffer.
    pub fn from_shared(id: ChunkId, bytes: Bytes) -> Self {
        Self { id, bytes }
    }

    /// The store id.
    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// The sealed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Another handle on the sealed bytes (no copy).
    pub fn shared(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The sealed bytes, owned: the buffer itself when this was its only
    /// handle, else a copy.
    pub fn into_bytes(self) -> Vec<u8> {
        Vec::from(self.bytes)
    }

    /// The sealed bytes as a shared buffer (no copy).
    pub fn into_shared(self) -> Bytes {
        self.bytes
    }

    /// Length of the sealed bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when empty (never the case for a well-formed seal).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for SealedChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedChunk({:?}, {} bytes)", self.id, self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_chunk_gives_back_its_own_buffer_unless_shared() {
        let id = ChunkId::from_bytes([3; 32]);
        let bytes = vec![7u8; 1000];
        let at = bytes.as_ptr();
        let c = SealedChunk::from_parts(id, bytes);
        assert_eq!(c.shared().as_ptr(), at);
        assert_eq!(c.clone().into_shared().as_ptr(), at);
        // Held elsewhere too: a copy, and the other handle keeps its bytes.
        let other = c.shared();
        let copied = c.into_bytes();
        assert_ne!(copied.as_ptr(), at);
        assert_eq!((copied.as_slice(), other.as_ptr()), (&[7u8; 1000][..], at));
        drop(other);
        // The only handle: the buffer itself.
        let c = SealedChunk::from_parts(id, vec![1, 2, 3]);
        let at = c.as_bytes().as_ptr();
        let own = c.into_bytes();
        assert_eq!(own.as_ptr(), at);
    }

    #[test]
    fn base64_round_trip() {
        let m = SealedMeta::from_sealed_bytes(vec![1, 2, 3, 255]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"AQID/w==\"");
        assert_eq!(serde_json::from_str::<SealedMeta>(&json).unwrap(), m);
        assert!(serde_json::from_str::<SealedMeta>("\"not base64!\"").is_err());
        assert_eq!(format!("{m:?}"), "SealedMeta(4 bytes)");
    }
}
