//! Coffer's deterministic simulation (issue 5, "Deterministic simulation").
//!
//! One **seed** drives everything: several simulated devices of one account,
//! each a real [`coffer_engine::sync::Engine`] over its own root on one
//! shared in-memory disk ([`coffer_engine::fs::MemFs`], which is also the
//! clock), against the real store logic ([`coffer_server::Service`] with
//! in-memory stores, called in-process by [`remote::SimRemote`]). The seed
//! picks a history of **steps**: user edits (create, edit, append, truncate,
//! delete, rename and move of files and folders, case-only and NFC/NFD
//! renames), `.cofferignore` changes, selective-sync exclude/include,
//! offline periods, sync rounds, rounds during which a user saves a file,
//! rounds cut by a crash at a random effect
//! (the engine is dropped and a new one starts over the same disk and the
//! same index, re-opened), and clean restarts.
//!
//! Words: an **effect** is one thing a device does to the world (a disk
//! mutation, a write, a store call that changes the store); a **crash**
//! stops all effects after a chosen one. The **ledger** holds every version
//! (file content) a user wrote; a version the user later **destroyed**
//! (overwrote, truncated, deleted, renamed a file over) is excused, every
//! other one must stay recoverable.
//!
//! Invariants, checked by [`check`]:
//! - after each round: no device wrote outside its root, and no file at a
//!   final path holds bytes no user wrote (a partial or corrupted file);
//! - at the end, once every device is online and syncs until quiet within a
//!   bound ("planning terminates"): all device trees equal each other and
//!   the store's live tree; every ledger version not destroyed by a user is
//!   still recoverable (in a device tree, a conflicted copy, a trash, or a
//!   store version); nothing exists on the disk outside the roots; no panic
//!   happened.
//! - the same seed gives the same history: [`run`] returns a digest of the
//!   log of steps and of the final trees, and the tests compare two runs.

pub mod check;
pub mod fs;
pub mod remote;
pub mod world;

use std::fmt;

pub use remote::Hostile;
pub use world::{run, RunSummary, World};

/// What to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The seed of everything.
    pub seed: u64,
    /// Random steps before the final convergence phase.
    pub steps: usize,
    /// Devices of the account (at least 1).
    pub devices: usize,
    /// Lines of the log a failure shows.
    pub log_lines: usize,
}

impl SimConfig {
    /// The defaults the CI run uses for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, steps: DEFAULT_STEPS, devices: DEFAULT_DEVICES, log_lines: 25 }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p coffer-sim -- --seed {} --steps {} --devices {}",
            self.seed, self.steps, self.devices
        )
    }
}

/// Steps per seed in CI.
pub const DEFAULT_STEPS: usize = 60;
/// Devices per seed in CI.
pub const DEFAULT_DEVICES: usize = 3;

/// A run that broke an invariant (or panicked).
#[derive(Clone, Debug)]
pub struct Failure {
    /// The run.
    pub config: SimConfig,
    /// What broke.
    pub message: String,
    /// The last steps before it broke.
    pub log_tail: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.config.seed, self.message)?;
        if !self.log_tail.is_empty() {
            writeln!(f, "last steps:")?;
            for l in &self.log_tail {
                writeln!(f, "  {l}")?;
            }
        }
        write!(f, "replay: {}", self.config.replay_command())
    }
}

impl std::error::Error for Failure {}

/// Runs one seed, turning a panic anywhere into a [`Failure`] too.
pub fn run_catching(config: SimConfig) -> Result<RunSummary, Failure> {
    match std::panic::catch_unwind(|| run(config)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            Err(Failure { config, message: format!("panicked: {what}"), log_tail: Vec::new() })
        }
    }
}
