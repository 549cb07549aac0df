//! The recovery key: the master key in a form a person can write down.
//!
//! 32 key bytes and a 3-byte checksum (`BLAKE3(context, key)[..3]`) make 35
//! bytes, written as 56 characters of Crockford base32 in 14 groups of four:
//! `7K2Q-…`. Decoding ignores case, spaces and dashes, and reads `I`/`L` as
//! `1` and `O` as `0`, as Crockford intends. The checksum misses a typo with
//! probability 2^-24.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{CryptoError, MasterKey};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CTX_CHECKSUM: &str = "coffer 2026-11-26 recovery key checksum v1";
const RAW_LEN: usize = 35;
const CHARS: usize = RAW_LEN * 8 / 5;

/// A master key written for people. Its `Display` shows the secret (that is
/// its purpose: it is shown once at signup); its `Debug` does not.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RecoveryKey(String);

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(****)")
    }
}

impl fmt::Display for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn checksum(key: &[u8; 32]) -> [u8; 3] {
    let h = blake3::derive_key(CTX_CHECKSUM, key);
    [h[0], h[1], h[2]]
}

impl RecoveryKey {
    /// Encodes a master key.
    pub fn from_master(master: &MasterKey) -> Self {
        let mut raw = Zeroizing::new([0u8; RAW_LEN]);
        raw[..32].copy_from_slice(master.expose_secret());
        raw[32..].copy_from_slice(&checksum(master.expose_secret()));
        let mut out = String::with_capacity(CHARS + CHARS / 4);
        for i in 0..CHARS {
            let bit = i * 5;
            let (byte, shift) = (bit / 8, bit % 8);
            let two = (u16::from(raw[byte]) << 8) | u16::from(*raw.get(byte + 1).unwrap_or(&0));
            let v = (two >> (11 - shift)) & 0x1f;
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(char::from(ALPHABET[usize::from(v)]));
        }
        Self(out)
    }

    /// Decodes what a person typed, checking the checksum.
    pub fn parse(text: &str) -> Result<MasterKey, CryptoError> {
        let mut raw = Zeroizing::new([0u8; RAW_LEN]);
        let mut n = 0usize;
        for c in text.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let v = match c.to_ascii_uppercase() {
                'O' => 0,
                'I' | 'L' => 1,
                u => ALPHABET.iter().position(|&a| char::from(a) == u).ok_or(CryptoError::RecoveryKey(
                    "it contains a character that is not in a recovery key",
                ))?,
            };
            if n >= CHARS {
                return Err(CryptoError::RecoveryKey("it is too long: a recovery key has 56 characters"));
            }
            // `v` is below 32, so the cast is lossless.
            let v = u16::try_from(v).unwrap_or(0);
            let bit = n * 5;
            let (byte, shift) = (bit / 8, bit % 8);
            let placed = v << (11 - shift);
            raw[byte] |= (placed >> 8) as u8;
            if byte + 1 < RAW_LEN {
                raw[byte + 1] |= (placed & 0xff) as u8;
            }
            n += 1;
        }
        if n != CHARS {
            return Err(CryptoError::RecoveryKey("it is too short: a recovery key has 56 characters"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&raw[..32]);
        if checksum(&key) != raw[32..] {
            return Err(CryptoError::RecoveryKey("its checksum does not match: check each group for a typo"));
        }
        Ok(MasterKey::from_bytes(*key))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn frozen_vector() {
        let rk = RecoveryKey::from_master(&MasterKey::from_bytes([0x5a; 32]));
        assert_eq!(rk.to_string(), FROZEN_RECOVERY);
        assert_eq!(RecoveryKey::parse(FROZEN_RECOVERY).unwrap().expose_secret(), &[0x5a; 32]);
        assert_eq!(format!("{rk:?}"), "RecoveryKey(****)");
    }

    const FROZEN_RECOVERY: &str = "B9D5-MPJT-B9D5-MPJT-B9D5-MPJT-B9D5-MPJT-B9D5-MPJT-B9D5-MPJT-B9D1-6N9R";

    #[test]
    fn lenient_about_case_separators_and_lookalikes() {
        let master = MasterKey::from_bytes([0; 32]);
        let text = RecoveryKey::from_master(&master).to_string();
        let sloppy = text.to_lowercase().replace('-', " ").replace('0', "o").replace('1', "l");
        assert_eq!(RecoveryKey::parse(&sloppy).unwrap().expose_secret(), &[0; 32]);
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let text = RecoveryKey::from_master(&MasterKey::from_bytes([0x33; 32])).to_string();
        let chars: Vec<char> = text.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if c == '-' {
                continue;
            }
            for &alt in ALPHABET {
                let alt = char::from(alt);
                if alt == c {
                    continue;
                }
                let mut typo = chars.clone();
                typo[i] = alt;
                let typo: String = typo.into_iter().collect();
                assert!(RecoveryKey::parse(&typo).is_err(), "typo at {i} not caught");
            }
        }
        assert!(RecoveryKey::parse(&text[..text.len() - 1]).is_err());
        assert!(RecoveryKey::parse(&format!("{text}0")).is_err());
        assert!(RecoveryKey::parse(&text.replace('-', "U")).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(bytes in any::<[u8; 32]>()) {
            let text = RecoveryKey::from_master(&MasterKey::from_bytes(bytes)).to_string();
            prop_assert_eq!(text.len(), 56 + 13);
            let back = RecoveryKey::parse(&text).unwrap();
            prop_assert_eq!(back.expose_secret(), &bytes);
        }
    }
}
