//! Metadata sealing: AES-256-GCM under the account's [`MetaKey`] with a random
//! 96-bit nonce, bound to one entry and one revision.
//!
//! `sealed = 0x01 || nonce(12) || ciphertext || tag(16)`, with associated data
//! `"coffer meta v1" || entry_id(32) || revision(u64 big-endian)`. The store
//! therefore cannot move metadata to another entry or replay an old revision
//! as a new one: it would fail to open.
//!
//! The account's settings are sealed the same way under the same key, with
//! the associated data `"coffer settings v1"` alone: one value per account,
//! which the store can neither alter nor pass off as metadata.
//!
//! Previews of uploads under way are sealed the same way again, with the
//! associated data `"coffer preview v1"`: the store can drop or replay
//! one, never forge or alter one, and none opens as metadata or settings.
//!
//! Random nonces under one key are safe up to about 2^32 seals; an account
//! that commits a million changes a day would need ten thousand years.

use coffer_proto::{EntryId, Revision, SealedMeta, SealedPreview, SealedSettings};
use rand_core::CryptoRngCore;

use crate::aead::{open_in_place, seal_in_place, TAG_LEN};
use crate::{CryptoError, MetaKey};

/// Version byte of the sealed metadata format.
pub const META_VERSION: u8 = 1;
const META_LABEL: &[u8] = b"coffer meta v1";
const SETTINGS_LABEL: &[u8] = b"coffer settings v1";
const PREVIEW_LABEL: &[u8] = b"coffer preview v1";
const HEADER: usize = 1 + 12;

fn aad(entry: &EntryId, revision: Revision) -> [u8; 14 + 32 + 8] {
    let mut a = [0u8; 14 + 32 + 8];
    a[..14].copy_from_slice(META_LABEL);
    a[14..46].copy_from_slice(entry.as_bytes());
    a[46..].copy_from_slice(&revision.get().to_be_bytes());
    a
}

impl MetaKey {
    /// Seals `plaintext` as the metadata of `entry` at `revision`.
    pub fn seal(
        &self,
        rng: &mut impl CryptoRngCore,
        entry: &EntryId,
        revision: Revision,
        plaintext: &[u8],
    ) -> SealedMeta {
        SealedMeta::from_sealed_bytes(self.seal_with(rng, &aad(entry, revision), plaintext))
    }

    /// Opens metadata that the store says belongs to `entry` at `revision`.
    pub fn open(
        &self,
        entry: &EntryId,
        revision: Revision,
        sealed: &SealedMeta,
    ) -> Result<Vec<u8>, CryptoError> {
        self.open_with(&aad(entry, revision), sealed.as_bytes(), "sealed metadata")
    }

    /// Seals the account's settings: the same format as metadata, with the
    /// associated data `"coffer settings v1"` (so neither opens as the other).
    pub fn seal_settings(&self, rng: &mut impl CryptoRngCore, plaintext: &[u8]) -> SealedSettings {
        SealedSettings::from_sealed_bytes(self.seal_with(rng, SETTINGS_LABEL, plaintext))
    }

    /// Opens the account's settings.
    pub fn open_settings(&self, sealed: &SealedSettings) -> Result<Vec<u8>, CryptoError> {
        self.open_with(SETTINGS_LABEL, sealed.as_bytes(), "sealed settings")
    }

    /// Seals a preview of an upload under way (see [`SealedPreview`]).
    pub fn seal_preview(&self, rng: &mut impl CryptoRngCore, plaintext: &[u8]) -> SealedPreview {
        SealedPreview::from_sealed_bytes(self.seal_with(rng, PREVIEW_LABEL, plaintext))
    }

    /// Opens a preview another device of the account sealed.
    pub fn open_preview(&self, sealed: &SealedPreview) -> Result<Vec<u8>, CryptoError> {
        self.open_with(PREVIEW_LABEL, sealed.as_bytes(), "sealed preview")
    }

    fn seal_with(&self, rng: &mut impl CryptoRngCore, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER + plaintext.len() + 16);
        out.push(META_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = seal_in_place(self.expose_secret(), nonce, aad, &mut out[HEADER..]);
        out.extend_from_slice(&tag);
        out
    }

    fn open_with(&self, aad: &[u8], bytes: &[u8], what: &'static str) -> Result<Vec<u8>, CryptoError> {
        let &version = bytes.first().ok_or(CryptoError::Malformed { what, why: "empty" })?;
        if version != META_VERSION {
            return Err(CryptoError::UnsupportedVersion { found: version, expected: META_VERSION });
        }
        if bytes.len() < HEADER + TAG_LEN {
            return Err(CryptoError::Malformed { what, why: "too short" });
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[1..HEADER]);
        let (body, tag) = bytes[HEADER..].split_at(bytes.len() - HEADER - TAG_LEN);
        let mut plain = body.to_vec();
        open_in_place(self.expose_secret(), nonce, aad, &mut plain, tag)
            .map_err(|()| CryptoError::Authentication)?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::MasterKey;

    fn key() -> MetaKey {
        MasterKey::from_bytes([9; 32]).derive().meta
    }

    fn entry(b: u8) -> EntryId {
        EntryId::from_bytes([b; 32])
    }

    #[test]
    fn frozen_vector() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let sealed = key().seal(&mut rng, &entry(1), Revision(3), b"{\"path\":\"a.txt\"}");
        assert_eq!(hex::encode(sealed.as_bytes()), FROZEN_SEALED);
        let frozen = SealedMeta::from_sealed_bytes(hex::decode(FROZEN_SEALED).unwrap());
        assert_eq!(key().open(&entry(1), Revision(3), &frozen).unwrap(), b"{\"path\":\"a.txt\"}");
    }

    const FROZEN_SEALED: &str =
        "019a3744504560639ec670b7a19631349b8d4c6a28c6093833b17d6c8c6b10e3e105a80c8090f87f09432d5172";

    #[test]
    fn bound_to_entry_and_revision() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let sealed = key().seal(&mut rng, &entry(1), Revision(3), b"meta");
        assert!(key().open(&entry(2), Revision(3), &sealed).is_err(), "moved to another entry");
        assert!(key().open(&entry(1), Revision(4), &sealed).is_err(), "replayed as a newer revision");
        assert!(key().open(&entry(1), Revision(2), &sealed).is_err(), "replayed as an older revision");
        let other = MasterKey::from_bytes([10; 32]).derive().meta;
        assert_eq!(other.open(&entry(1), Revision(3), &sealed), Err(CryptoError::Authentication));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let sealed = key().seal(&mut rng, &entry(5), Revision(1), b"some metadata to damage");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.as_bytes().to_vec();
            bad[i / 8] ^= 1 << (i % 8);
            let bad = SealedMeta::from_sealed_bytes(bad);
            assert!(key().open(&entry(5), Revision(1), &bad).is_err(), "bit {i}");
        }
        for len in 0..sealed.len() {
            let cut = SealedMeta::from_sealed_bytes(sealed.as_bytes()[..len].to_vec());
            assert!(key().open(&entry(5), Revision(1), &cut).is_err(), "length {len}");
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let a = key().seal(&mut rng, &entry(1), Revision(1), b"same");
        let b = key().seal(&mut rng, &entry(1), Revision(1), b"same");
        assert_ne!(a, b);
    }

    #[test]
    fn previews_open_only_as_previews_of_this_account() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let sealed = key().seal_preview(&mut rng, b"preview");
        assert_eq!(key().open_preview(&sealed).unwrap(), b"preview");
        let other = MasterKey::from_bytes([10; 32]).derive().meta;
        assert_eq!(other.open_preview(&sealed), Err(CryptoError::Authentication));
        let as_settings = SealedSettings::from_sealed_bytes(sealed.as_bytes().to_vec());
        assert!(key().open_settings(&as_settings).is_err(), "a preview opened as settings");
        let as_meta = SealedMeta::from_sealed_bytes(sealed.as_bytes().to_vec());
        assert!(key().open(&entry(0), Revision(0), &as_meta).is_err(), "a preview opened as metadata");
        let settings = key().seal_settings(&mut rng, b"preview");
        let as_preview = SealedPreview::from_sealed_bytes(settings.into_bytes());
        assert!(key().open_preview(&as_preview).is_err(), "settings opened as a preview");
        let mut bad = sealed.into_bytes();
        bad[15] ^= 1;
        assert!(key().open_preview(&SealedPreview::from_sealed_bytes(bad)).is_err());
    }

    #[test]
    fn settings_open_only_as_settings_of_this_account() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let sealed = key().seal_settings(&mut rng, b"{\"chunk_sizes\":[1,2,3]}");
        assert_eq!(key().open_settings(&sealed).unwrap(), b"{\"chunk_sizes\":[1,2,3]}");
        let other = MasterKey::from_bytes([10; 32]).derive().meta;
        assert_eq!(other.open_settings(&sealed), Err(CryptoError::Authentication));
        let as_meta = SealedMeta::from_sealed_bytes(sealed.as_bytes().to_vec());
        assert!(key().open(&entry(0), Revision(0), &as_meta).is_err(), "settings opened as metadata");
        let meta = key().seal(&mut rng, &entry(0), Revision(0), b"meta");
        let as_settings = SealedSettings::from_sealed_bytes(meta.into_bytes());
        assert!(key().open_settings(&as_settings).is_err(), "metadata opened as settings");
        let mut bad = sealed.into_bytes();
        bad[20] ^= 1;
        assert!(key().open_settings(&SealedSettings::from_sealed_bytes(bad)).is_err());
        assert!(key().open_settings(&SealedSettings::from_sealed_bytes(vec![])).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048), e in any::<u8>(), r in any::<u64>(), seed in any::<u64>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let sealed = key().seal(&mut rng, &entry(e), Revision(r), &data);
            prop_assert_eq!(key().open(&entry(e), Revision(r), &sealed).unwrap(), data);
        }
    }
}
