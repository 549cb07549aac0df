//! Fuzz targets for every parser of untrusted bytes in Coffer, as plain
//! functions over `&[u8]` so that two drivers run the very same code:
//!
//! - `cargo fuzz` (libFuzzer, coverage-guided), through the thin wrappers in
//!   the repository's `fuzz/` folder: `scripts/fuzz` runs them;
//! - `cargo test -p coffer-fuzz` on stable, which replays each target's
//!   seeds and a few thousand deterministic mutations of them (the short run
//!   CI always makes).
//!
//! A target panics only when Coffer has a bug: a parser that panics on bad
//! input, or a property that fails (a sealed value that opens after being
//! tampered with, a decoded value that does not encode back, a path accepted
//! from the store that could escape the sync root). Every `expect` and
//! `assert` in this crate states such a property.
//!
//! Keys are fixed test keys: the targets model a store (or another device of
//! the same account, for [`engine::entry_version`]) sending anything at all.

pub mod crypto;
pub mod engine;
pub mod wire;

use std::sync::OnceLock;

use coffer_crypto::{AccountKeys, MasterKey};

/// One fuzz target: its name (as in `fuzz/fuzz_targets/<name>.rs`), the
/// function under test and its seed inputs.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name of the target.
    pub name: &'static str,
    /// Runs one input; panics on a bug.
    pub run: fn(&[u8]),
    /// Valid (or nearly valid) inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target { name: "chunk_open", run: crypto::chunk_open, seeds: crypto::chunk_open_seeds },
    Target { name: "meta_open", run: crypto::meta_open, seeds: crypto::meta_open_seeds },
    Target { name: "wrapped_key", run: crypto::wrapped_key, seeds: crypto::wrapped_key_seeds },
    Target { name: "recovery_key", run: crypto::recovery_key, seeds: crypto::recovery_key_seeds },
    Target { name: "opaque_client", run: crypto::opaque_client, seeds: crypto::opaque_client_seeds },
    Target { name: "opaque_server", run: crypto::opaque_server, seeds: crypto::opaque_server_seeds },
    Target { name: "wire_json", run: wire::wire_json, seeds: wire::wire_json_seeds },
    Target { name: "chunk_batch", run: wire::chunk_batch, seeds: wire::chunk_batch_seeds },
    Target { name: "control_request", run: wire::control_request, seeds: wire::control_request_seeds },
    Target { name: "entry_version", run: engine::entry_version, seeds: engine::entry_version_seeds },
    Target { name: "chunk_list", run: engine::chunk_list, seeds: engine::chunk_list_seeds },
    Target { name: "rel_path", run: engine::rel_path, seeds: engine::rel_path_seeds },
    Target { name: "ignore_rules", run: engine::ignore_rules, seeds: engine::ignore_rules_seeds },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The fixed test account's keys.
pub fn keys() -> &'static AccountKeys {
    static KEYS: OnceLock<AccountKeys> = OnceLock::new();
    KEYS.get_or_init(|| MasterKey::from_bytes([0x42; 32]).derive())
}

/// A deterministic RNG for sealing (nonces need not be secret here).
pub(crate) fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    use rand_core::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// Flips one bit of `bytes`, chosen by `at`; no-op on empty input.
pub(crate) fn flip(bytes: &mut [u8], at: usize) {
    if !bytes.is_empty() {
        let i = at % bytes.len();
        bytes[i] ^= 1 << (at % 8);
    }
}
