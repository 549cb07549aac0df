//! Key wrapping: the master key sealed under a key the client derives from the
//! login, so a new device that logs in can unwrap it and the store cannot.
//!
//! `wrapped = 0x01 || nonce(12) || AES-256-GCM(wrap_key, nonce, aad = "coffer wrapped master key v1", master(32)) `
//! (61 bytes). The wrap key comes from the OPAQUE export key (64 bytes, stable
//! per password and registration) through BLAKE3 `derive_key`.
//!
//! Version 2 (accounts with settings): the same with the version byte 2 and
//! `aad = "coffer wrapped master key v2" || BLAKE3(sealed settings)`. The
//! key then opens only together with the very settings it was made with: a
//! store that withholds an account's settings (so that a new device would
//! cut chunks the way accounts before settings did, and disagree with the
//! others about identical bytes) or swaps them is caught at login.

use std::fmt;

use coffer_proto::{SealedSettings, WrappedKey};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::aead::{open_in_place, seal_in_place};
use crate::{CryptoError, MasterKey};

/// Version byte of the wrapped-key format.
pub const WRAP_VERSION: u8 = 1;
const WRAP_AAD: &[u8] = b"coffer wrapped master key v1";
/// Version byte of a wrapped key bound to the account's settings.
pub const WRAP_VERSION_SETTINGS: u8 = 2;
const WRAP_AAD_SETTINGS: &[u8] = b"coffer wrapped master key v2";
const CTX_WRAP: &str = "coffer 2026-11-26 master key wrapping key from OPAQUE export key v1";
/// Length of a wrapped master key.
pub const WRAPPED_LEN: usize = 1 + 12 + 32 + 16;

fn settings_aad(settings: &SealedSettings) -> Vec<u8> {
    let mut aad = WRAP_AAD_SETTINGS.to_vec();
    aad.extend_from_slice(blake3::hash(settings.as_bytes()).as_bytes());
    aad
}

/// A key that wraps the master key. Derived from a login secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct WrapKey([u8; 32]);

impl fmt::Debug for WrapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WrapKey(****)")
    }
}

impl WrapKey {
    /// Derives the wrap key from an OPAQUE export key.
    pub fn from_export_key(export_key: &[u8]) -> Self {
        Self(blake3::derive_key(CTX_WRAP, export_key))
    }

    /// Wraps raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Seals the master key (version 1: an account without settings).
    pub fn wrap(&self, rng: &mut impl CryptoRngCore, master: &MasterKey) -> WrappedKey {
        self.seal(rng, master, WRAP_VERSION, WRAP_AAD.to_vec())
    }

    /// Seals the master key bound to the account's sealed settings
    /// (version 2).
    pub fn wrap_with_settings(
        &self,
        rng: &mut impl CryptoRngCore,
        master: &MasterKey,
        settings: &SealedSettings,
    ) -> WrappedKey {
        self.seal(rng, master, WRAP_VERSION_SETTINGS, settings_aad(settings))
    }

    fn seal(
        &self,
        rng: &mut impl CryptoRngCore,
        master: &MasterKey,
        version: u8,
        aad: Vec<u8>,
    ) -> WrappedKey {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(version);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(master.expose_secret());
        let tag = seal_in_place(&self.0, nonce, &aad, &mut out[13..]);
        out.extend_from_slice(&tag);
        WrappedKey::from_sealed_bytes(out)
    }

    /// Opens a version 1 wrapped master key. Fails with
    /// [`CryptoError::Authentication`] on a wrong key or any tampering.
    pub fn unwrap_key(&self, wrapped: &WrappedKey) -> Result<MasterKey, CryptoError> {
        self.unwrap_key_with(wrapped, None)
    }

    /// Opens a wrapped master key of either version, with the settings the
    /// store returned beside it. A version 2 key opens only with the
    /// settings it was bound to: with none, [`CryptoError::Malformed`]
    /// ("bound to settings the store did not return"); with others,
    /// [`CryptoError::Authentication`].
    pub fn unwrap_key_with(
        &self,
        wrapped: &WrappedKey,
        settings: Option<&SealedSettings>,
    ) -> Result<MasterKey, CryptoError> {
        let b = wrapped.as_bytes();
        let &version = b.first().ok_or(CryptoError::Malformed { what: "wrapped key", why: "empty" })?;
        let aad = match version {
            WRAP_VERSION => WRAP_AAD.to_vec(),
            WRAP_VERSION_SETTINGS => settings_aad(settings.ok_or(CryptoError::Malformed {
                what: "wrapped key",
                why: "bound to account settings the store did not return",
            })?),
            found => return Err(CryptoError::UnsupportedVersion { found, expected: WRAP_VERSION_SETTINGS }),
        };
        if b.len() != WRAPPED_LEN {
            return Err(CryptoError::Malformed { what: "wrapped key", why: "wrong length" });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&b[13..45]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&b[1..13]);
        open_in_place(&self.0, nonce, &aad, &mut key[..], &b[45..])
            .map_err(|()| CryptoError::Authentication)?;
        Ok(MasterKey::from_bytes(*key))
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn frozen_vector_and_round_trip() {
        let wk = WrapKey::from_export_key(&[5; 64]);
        let master = MasterKey::from_bytes([6; 32]);
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let wrapped = wk.wrap(&mut rng, &master);
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(hex::encode(wrapped.as_bytes()), FROZEN_WRAPPED);
        let frozen = WrappedKey::from_sealed_bytes(hex::decode(FROZEN_WRAPPED).unwrap());
        assert_eq!(wk.unwrap_key(&frozen).unwrap().expose_secret(), &[6; 32]);
    }

    const FROZEN_WRAPPED: &str = "0119454a27b752f905909507d625faeeacb65ffa54198b0e1ec13648d56fcf769219566992933d452353b66fb720854cfa3fff3c2df5ee3ab820d4672e";

    #[test]
    fn a_key_bound_to_settings_opens_only_with_those_settings() {
        let wk = WrapKey::from_export_key(&[5; 64]);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let settings = SealedSettings::from_sealed_bytes(vec![1, 2, 3]);
        let wrapped = wk.wrap_with_settings(&mut rng, &MasterKey::from_bytes([6; 32]), &settings);
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(wrapped.as_bytes()[0], WRAP_VERSION_SETTINGS);
        let opened = wk.unwrap_key_with(&wrapped, Some(&settings)).unwrap();
        assert_eq!(opened.expose_secret(), &[6; 32]);
        let withheld = wk.unwrap_key_with(&wrapped, None).unwrap_err();
        assert!(withheld.to_string().contains("did not return"), "{withheld}");
        let swapped = SealedSettings::from_sealed_bytes(vec![1, 2, 4]);
        assert_eq!(wk.unwrap_key_with(&wrapped, Some(&swapped)).unwrap_err(), CryptoError::Authentication);
        // A version 1 key still opens, with or without settings beside it.
        let v1 = wk.wrap(&mut rng, &MasterKey::from_bytes([6; 32]));
        assert!(wk.unwrap_key_with(&v1, Some(&settings)).is_ok());
        // Relabelling a version 2 key as version 1 does not open it.
        let mut relabelled = wrapped.as_bytes().to_vec();
        relabelled[0] = WRAP_VERSION;
        assert_eq!(
            wk.unwrap_key_with(&WrappedKey::from_sealed_bytes(relabelled), None).unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn wrong_key_and_every_bit_flip_are_rejected() {
        let wk = WrapKey::from_export_key(&[5; 64]);
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let wrapped = wk.wrap(&mut rng, &MasterKey::from_bytes([6; 32]));
        let other = WrapKey::from_export_key(&[4; 64]);
        assert_eq!(other.unwrap_key(&wrapped).unwrap_err(), CryptoError::Authentication);
        for i in 0..wrapped.len() * 8 {
            let mut bad = wrapped.as_bytes().to_vec();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(wk.unwrap_key(&WrappedKey::from_sealed_bytes(bad)).is_err(), "bit {i}");
        }
        assert!(wk.unwrap_key(&WrappedKey::from_sealed_bytes(vec![])).is_err());
    }
}
