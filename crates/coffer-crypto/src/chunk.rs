//! Chunk sealing: convergent AES-256-GCM with one key per distinct content.
//!
//! For plaintext `p`:
//! - content hash `h = BLAKE3_keyed(chunk_id_key, p)` ([`ContentHash`]);
//! - content key  `k = BLAKE3_keyed(chunk_key, h)`;
//! - sealed       `s = 0x01 || AES-256-GCM(k, nonce = 0^96, aad = "coffer chunk v1", p)`;
//! - store id     `BLAKE3(s)` ([`ChunkId`]).
//!
//! A fixed nonce is safe because each key only ever encrypts one plaintext
//! (the one whose hash made it). Identical chunks seal to identical bytes, so
//! the store deduplicates them within an account; across accounts the keys
//! differ, so it learns nothing. The content hash lives only inside sealed
//! metadata, beside the store id.
//!
//! Opening checks the store id, then the AEAD tag, then the content hash: a
//! chunk swapped for another chunk of the same account is caught too.
//! [`ChunkKey::open_downloaded`] leaves the store id to the download that
//! checked it; the tag and the content hash alone already refuse any bytes
//! but the chunk's.

use std::fmt;

use coffer_proto::{ChunkId, SealedChunk};
use zeroize::Zeroizing;

use crate::aead::{open_in_place, open_shifted, seal_in_place, TAG_LEN};
use crate::{ChunkIdKey, ChunkKey, CryptoError};

/// Version byte of the sealed chunk format.
pub const CHUNK_VERSION: u8 = 1;
/// Bytes a seal adds to a chunk: version byte and tag.
pub const CHUNK_OVERHEAD: usize = 1 + 16;
const CHUNK_AAD: &[u8] = b"coffer chunk v1";

/// Keyed BLAKE3 of a chunk's plaintext. Kept inside sealed metadata only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// Wraps raw bytes (from sealed metadata).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl ChunkIdKey {
    /// The content hash of a chunk's plaintext.
    pub fn content_hash(&self, plaintext: &[u8]) -> ContentHash {
        let mut h = blake3::Hasher::new_keyed(self.expose_secret());
        h.update(plaintext);
        ContentHash(*h.finalize().as_bytes())
    }
}

impl ChunkKey {
    fn key_for(&self, content: &ContentHash) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*blake3::keyed_hash(self.expose_secret(), &content.0).as_bytes())
    }

    /// Seals a chunk whose content hash is `content` (from
    /// [`ChunkIdKey::content_hash`] over the same plaintext).
    pub fn seal(&self, content: &ContentHash, plaintext: &[u8]) -> SealedChunk {
        let mut out = Vec::with_capacity(plaintext.len() + CHUNK_OVERHEAD);
        out.push(CHUNK_VERSION);
        out.extend_from_slice(plaintext);
        let tag = seal_in_place(&self.key_for(content), [0; 12], CHUNK_AAD, &mut out[1..]);
        out.extend_from_slice(&tag);
        let id = ChunkId::from_bytes(*blake3::hash(&out).as_bytes());
        SealedChunk::from_parts(id, out)
    }

    /// Opens a sealed chunk fetched under `expected_id` that the metadata says
    /// has content hash `content`. Any mismatch is an error; nothing partial
    /// is returned.
    pub fn open(
        &self,
        id_key: &ChunkIdKey,
        expected_id: ChunkId,
        content: &ContentHash,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if blake3::hash(sealed).as_bytes() != expected_id.as_bytes() {
            return Err(CryptoError::IdMismatch);
        }
        let (&version, rest) =
            sealed.split_first().ok_or(CryptoError::Malformed { what: "sealed chunk", why: "empty" })?;
        if version != CHUNK_VERSION {
            return Err(CryptoError::UnsupportedVersion { found: version, expected: CHUNK_VERSION });
        }
        if rest.len() < TAG_LEN {
            return Err(CryptoError::Malformed { what: "sealed chunk", why: "shorter than its tag" });
        }
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = body.to_vec();
        open_in_place(&self.key_for(content), [0; 12], CHUNK_AAD, &mut plain, tag)
            .map_err(|()| CryptoError::Authentication)?;
        if id_key.content_hash(&plain) != *content {
            return Err(CryptoError::Authentication);
        }
        Ok(plain)
    }

    /// Opens sealed bytes that their download has already checked against
    /// the store id (as `Remote::download_chunks` does), in the buffer they
    /// came in: the plaintext is written over them, one byte to the front,
    /// as it is decrypted. No copy of the chunk, and no second hash of its
    /// sealed bytes. The tag and the content hash are checked as by
    /// [`ChunkKey::open`]: other bytes under the right id cannot exist, and
    /// bytes that are not this chunk's fail one or the other.
    pub fn open_downloaded(
        &self,
        id_key: &ChunkIdKey,
        content: &ContentHash,
        mut sealed: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        match sealed.first() {
            None => return Err(CryptoError::Malformed { what: "sealed chunk", why: "empty" }),
            Some(&v) if v != CHUNK_VERSION => {
                return Err(CryptoError::UnsupportedVersion { found: v, expected: CHUNK_VERSION })
            }
            Some(_) => {}
        }
        let Some(body_end) = sealed.len().checked_sub(TAG_LEN).filter(|&end| end >= 1) else {
            return Err(CryptoError::Malformed { what: "sealed chunk", why: "shorter than its tag" });
        };
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[body_end..]);
        sealed.truncate(body_end);
        open_shifted(&self.key_for(content), [0; 12], CHUNK_AAD, &mut sealed, 1, &tag)
            .map_err(|()| CryptoError::Authentication)?;
        sealed.truncate(body_end - 1);
        if id_key.content_hash(&sealed) != *content {
            return Err(CryptoError::Authentication);
        }
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::MasterKey;

    fn keys() -> crate::AccountKeys {
        MasterKey::from_bytes([42; 32]).derive()
    }

    fn seal(data: &[u8]) -> (ContentHash, SealedChunk) {
        let k = keys();
        let h = k.chunk_id.content_hash(data);
        (h, k.chunk.seal(&h, data))
    }

    #[test]
    fn frozen_vector() {
        let (h, s) = seal(b"hello, coffer");
        assert_eq!(hex::encode(h.as_bytes()), FROZEN_HASH);
        assert_eq!(hex::encode(s.as_bytes()), FROZEN_SEALED);
        assert_eq!(s.id().to_hex(), FROZEN_ID);
        // And the frozen bytes open with today's code.
        let k = keys();
        let bytes = hex::decode(FROZEN_SEALED).unwrap();
        let id: ChunkId = FROZEN_ID.parse().unwrap();
        assert_eq!(k.chunk.open(&k.chunk_id, id, &h, &bytes).unwrap(), b"hello, coffer");
    }

    const FROZEN_HASH: &str = "dc8bbe89d4e388d496668d95557c08f38be68f11da093f6d762950b7f33e013a";
    const FROZEN_SEALED: &str = "01cf9e3b4169b737f9d6d819177fdfe9eab203f3af3740af17ea65abb78e";
    const FROZEN_ID: &str = "b2cb338a2d6cb3aa9af91bfbbd6e436d8e6f353d4f3d2253d8845b2d0b987135";

    #[test]
    fn identical_content_dedups_and_keys_differ_per_account() {
        let (_, a) = seal(b"same");
        let (_, b) = seal(b"same");
        assert_eq!(a, b);
        let other = MasterKey::from_bytes([43; 32]).derive();
        let h = other.chunk_id.content_hash(b"same");
        assert_ne!(other.chunk.seal(&h, b"same").id(), a.id());
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let k = keys();
        let (h, s) = seal(b"a short chunk of data that we will damage, bit by bit");
        let bytes = s.as_bytes().to_vec();
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            // Even if an attacker also fixes the id, the tag catches it.
            let bad_id = ChunkId::from_bytes(*blake3::hash(&bad).as_bytes());
            assert!(k.chunk.open(&k.chunk_id, s.id(), &h, &bad).is_err(), "bit {i}");
            assert!(k.chunk.open(&k.chunk_id, bad_id, &h, &bad).is_err(), "bit {i} with fixed id");
        }
    }

    #[test]
    fn swapped_chunk_and_wrong_hash_are_rejected() {
        let k = keys();
        let (ha, a) = seal(b"chunk a");
        let (hb, b) = seal(b"chunk b");
        // The metadata says "a" but the store hands back "b" (with b's id).
        assert!(k.chunk.open(&k.chunk_id, b.id(), &ha, b.as_bytes()).is_err());
        assert!(k.chunk.open(&k.chunk_id, a.id(), &hb, a.as_bytes()).is_err());
        assert_eq!(k.chunk.open(&k.chunk_id, a.id(), &ha, b.as_bytes()), Err(CryptoError::IdMismatch));
    }

    #[test]
    fn a_downloaded_chunk_opens_in_place_to_what_open_gives() {
        let k = keys();
        for data in [&b"x"[..], b"hello, coffer", &[7u8; 100_000]] {
            let (h, s) = seal(data);
            let opened = k.chunk.open_downloaded(&k.chunk_id, &h, s.as_bytes().to_vec()).unwrap();
            assert_eq!(opened, data);
            assert_eq!(opened, k.chunk.open(&k.chunk_id, s.id(), &h, s.as_bytes()).unwrap());
        }
        // The frozen bytes too.
        let bytes = hex::decode(FROZEN_SEALED).unwrap();
        let h = ContentHash::from_bytes(hex::decode(FROZEN_HASH).unwrap().try_into().unwrap());
        assert_eq!(k.chunk.open_downloaded(&k.chunk_id, &h, bytes).unwrap(), b"hello, coffer");
    }

    #[test]
    fn a_downloaded_chunk_that_is_not_the_one_named_does_not_open() {
        let k = keys();
        let (ha, a) = seal(b"chunk a");
        let (_, b) = seal(b"chunk b");
        // Another chunk of the account, under the first one's content hash.
        assert_eq!(
            k.chunk.open_downloaded(&k.chunk_id, &ha, b.as_bytes().to_vec()),
            Err(CryptoError::Authentication)
        );
        // Any flipped bit, any cut, another version.
        let bytes = a.as_bytes().to_vec();
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(k.chunk.open_downloaded(&k.chunk_id, &ha, bad).is_err(), "bit {i}");
        }
        for len in 0..bytes.len() {
            assert!(
                k.chunk.open_downloaded(&k.chunk_id, &ha, bytes[..len].to_vec()).is_err(),
                "cut at {len}"
            );
        }
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            k.chunk.open_downloaded(&k.chunk_id, &ha, v2),
            Err(CryptoError::UnsupportedVersion { found: 2, expected: 1 })
        );
    }

    #[test]
    fn truncated_and_unknown_versions_are_rejected() {
        let k = keys();
        let (h, s) = seal(b"data");
        for len in 0..s.len() {
            let cut = &s.as_bytes()[..len];
            let id = ChunkId::from_bytes(*blake3::hash(cut).as_bytes());
            assert!(k.chunk.open(&k.chunk_id, id, &h, cut).is_err());
        }
        let mut v2 = s.as_bytes().to_vec();
        v2[0] = 2;
        let id = ChunkId::from_bytes(*blake3::hash(&v2).as_bytes());
        assert_eq!(
            k.chunk.open(&k.chunk_id, id, &h, &v2),
            Err(CryptoError::UnsupportedVersion { found: 2, expected: 1 })
        );
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let k = keys();
            let (h, s) = seal(&data);
            prop_assert_eq!(s.len(), data.len() + CHUNK_OVERHEAD);
            prop_assert_eq!(k.chunk.open(&k.chunk_id, s.id(), &h, s.as_bytes()).unwrap(), data.clone());
            prop_assert_eq!(k.chunk.open_downloaded(&k.chunk_id, &h, s.into_bytes()).unwrap(), data);
        }
    }
}
