//! Key wrapping: the master key sealed under a key the client derives from the
//! login, so a new device that logs in can unwrap it and the store cannot.
//!
//! `wrapped = 0x01 || nonce(12) || AES-256-GCM(wrap_key, nonce, aad = "coffer wrapped master key v1", master(32)) `
//! (61 bytes). The wrap key comes from the OPAQUE export key (64 bytes, stable
//! per password and registration) through BLAKE3 `derive_key`.

use std::fmt;

use coffer_proto::WrappedKey;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::aead::{open_in_place, seal_in_place};
use crate::{CryptoError, MasterKey};

/// Version byte of the wrapped-key format.
pub const WRAP_VERSION: u8 = 1;
const WRAP_AAD: &[u8] = b"coffer wrapped master key v1";
const CTX_WRAP: &str = "coffer 2026-11-26 master key wrapping key from OPAQUE export key v1";
/// Length of a wrapped master key.
pub const WRAPPED_LEN: usize = 1 + 12 + 32 + 16;

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

    /// Seals the master key.
    pub fn wrap(&self, rng: &mut impl CryptoRngCore, master: &MasterKey) -> WrappedKey {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(master.expose_secret());
        let tag = seal_in_place(&self.0, nonce, WRAP_AAD, &mut out[13..]);
        out.extend_from_slice(&tag);
        WrappedKey::from_sealed_bytes(out)
    }

    /// Opens a wrapped master key. Fails with
    /// [`CryptoError::Authentication`] on a wrong key or any tampering.
    pub fn unwrap_key(&self, wrapped: &WrappedKey) -> Result<MasterKey, CryptoError> {
        let b = wrapped.as_bytes();
        let &version = b.first().ok_or(CryptoError::Malformed { what: "wrapped key", why: "empty" })?;
        if version != WRAP_VERSION {
            return Err(CryptoError::UnsupportedVersion { found: version, expected: WRAP_VERSION });
        }
        if b.len() != WRAPPED_LEN {
            return Err(CryptoError::Malformed { what: "wrapped key", why: "wrong length" });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&b[13..45]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&b[1..13]);
        open_in_place(&self.0, nonce, WRAP_AAD, &mut key[..], &b[45..])
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
