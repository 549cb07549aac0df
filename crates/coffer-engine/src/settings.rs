//! The account's settings: what every device of an account must do alike,
//! fixed when the account is made.
//!
//! Today that is the chunk sizes. A file's hash is that of its chunk list,
//! so two devices that cut the same bytes with different sizes disagree
//! about them (changes that are not, uploads of the same bytes, conflicts
//! between identical files), and the chunker's hints (a file's previous
//! list) are FastCDC's cuts only at the sizes that made them. So the sizes
//! cannot change with a build: the signup seals the account's settings
//! with its metadata key (`"coffer settings v1"`), the store keeps them
//! with the account, and each login opens them. An account made before
//! settings existed has none and keeps the sizes of then,
//! [`ChunkerParams::LEGACY`].

use coffer_crypto::MetaKey;
use coffer_proto::SealedSettings;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;

/// The account's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountSettings {
    /// The chunk sizes every device of the account cuts with.
    pub chunker: ChunkerParams,
}

/// The sealed plaintext: JSON, versioned.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsV1 {
    v: u32,
    /// Min, average and max chunk size in bytes.
    chunk_sizes: [usize; 3],
}

const VERSION: u32 = 1;

impl AccountSettings {
    /// The settings of an account made before settings existed.
    pub const LEGACY: Self = Self { chunker: ChunkerParams::LEGACY };

    /// The settings a new account gets.
    pub fn for_new_account() -> Self {
        Self { chunker: ChunkerParams::default() }
    }

    /// Seals them for the store.
    pub fn seal(&self, rng: &mut impl CryptoRngCore, key: &MetaKey) -> SealedSettings {
        let c = self.chunker;
        let plain = SettingsV1 { v: VERSION, chunk_sizes: [c.min, c.avg, c.max] };
        key.seal_settings(rng, &serde_json::to_vec(&plain).expect("serialises"))
    }

    /// Opens what the store kept; `None` (an account older than settings)
    /// gives [`AccountSettings::LEGACY`]. Settings that do not open with
    /// this account's key, or that this version cannot honour, are an
    /// error: a device must never cut with other sizes than the rest.
    pub fn open(key: &MetaKey, sealed: Option<&SealedSettings>) -> Result<Self, String> {
        let Some(sealed) = sealed else { return Ok(Self::LEGACY) };
        let plain = key
            .open_settings(sealed)
            .map_err(|e| format!("the account's settings do not open with its key ({e})"))?;
        Self::from_plain(&plain)
    }

    fn from_plain(plain: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version = serde_json::from_slice(plain)
            .map_err(|e| format!("the account's settings are malformed: {e}"))?;
        if version.v != VERSION {
            return Err(format!(
                "the account's settings are version {}, which this Coffer does not know; update Coffer",
                version.v
            ));
        }
        let s: SettingsV1 = serde_json::from_slice(plain)
            .map_err(|e| format!("the account's settings are malformed: {e}"))?;
        let [min, avg, max] = s.chunk_sizes;
        let chunker = ChunkerParams { min, avg, max };
        chunker.validate().map_err(|e| format!("the account's chunk sizes are unusable: {e}"))?;
        Ok(Self { chunker })
    }
}

#[cfg(test)]
mod tests {
    use coffer_crypto::MasterKey;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn key() -> MetaKey {
        MasterKey::from_bytes([4; 32]).derive().meta
    }

    #[test]
    fn settings_round_trip_and_old_accounts_keep_the_old_sizes() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let new = AccountSettings::for_new_account();
        let sealed = new.seal(&mut rng, &key());
        assert_eq!(AccountSettings::open(&key(), Some(&sealed)).unwrap(), new);
        assert_eq!(AccountSettings::open(&key(), None).unwrap(), AccountSettings::LEGACY);
        assert_eq!(
            AccountSettings::LEGACY.chunker,
            ChunkerParams { min: 32 << 10, avg: 128 << 10, max: 512 << 10 }
        );
    }

    #[test]
    fn settings_that_cannot_be_honoured_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let other = MasterKey::from_bytes([5; 32]).derive().meta;
        let sealed = AccountSettings::for_new_account().seal(&mut rng, &other);
        let err = AccountSettings::open(&key(), Some(&sealed)).unwrap_err();
        assert!(err.contains("do not open"), "{err}");
        for (plain, expect) in [
            (r#"{"v":2,"chunk_sizes":[65536,131072,524288],"new":1}"#, "update Coffer"),
            (r#"{"v":1,"chunk_sizes":[65536,131072,524288],"new":1}"#, "malformed"),
            (r#"{"v":1,"chunk_sizes":[65536,131072]}"#, "malformed"),
            (r#"{"v":1,"chunk_sizes":[524288,131072,65536]}"#, "unusable"),
            (r#"{"v":1,"chunk_sizes":[1,2,3]}"#, "unusable"),
            ("not json", "malformed"),
        ] {
            let sealed = key().seal_settings(&mut rng, plain.as_bytes());
            let err = AccountSettings::open(&key(), Some(&sealed)).unwrap_err();
            assert!(err.contains(expect), "{plain}: {err}");
        }
    }
}
