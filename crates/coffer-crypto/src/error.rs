//! The one error type of this crate. Nothing here is retryable: a seal that
//! does not open will not open on a second try (but the *transfer* that brought
//! it may be retried, which is the caller's business).

/// What went wrong opening a sealed object or parsing a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The first byte names a format version this build does not know.
    #[error(
        "unsupported sealed-format version {found} (this build reads version {expected}); update Coffer"
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        expected: u8,
    },
    /// Too short or otherwise not shaped like the format.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it was refused.
        why: &'static str,
    },
    /// The bytes do not hash to the id they were fetched under.
    #[error("chunk does not match its id (corrupted or tampered in storage or transit)")]
    IdMismatch,
    /// AEAD authentication failed: wrong key, wrong binding, or tampering.
    #[error("authentication failed: the data was tampered with, or belongs elsewhere")]
    Authentication,
    /// A recovery key that does not decode or whose checksum fails.
    #[error("invalid recovery key: {0}")]
    RecoveryKey(&'static str),
}

impl CryptoError {
    /// Never: cryptographic failures are deterministic.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
