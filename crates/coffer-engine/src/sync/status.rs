//! What the engine tells its faces (CLI, UI, tray): one [`Status`] value,
//! replaced as work progresses and watched through a `tokio::sync::watch`
//! channel, so a slow reader only ever sees the latest state.

use serde::{Deserialize, Serialize};

/// The overall state, one per tray icon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Nothing left to do.
    #[default]
    UpToDate,
    /// Working.
    Syncing,
    /// Paused by the person.
    Paused,
    /// The store cannot be reached; retrying with backoff.
    Offline,
    /// Something needs attention (see `last_error`).
    Error,
    /// A plan would delete many files: waiting for confirmation.
    NeedsConfirmation,
}

/// Progress and state of one sync root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    /// The overall state.
    pub state: SyncState,
    /// Files in the current round.
    pub files_total: u64,
    /// Files done in the current round.
    pub files_done: u64,
    /// Bytes to transfer in the current round.
    pub bytes_total: u64,
    /// Bytes transferred in the current round.
    pub bytes_done: u64,
    /// Files being worked on now.
    pub current: Vec<String>,
    /// Bytes of the current file moved so far.
    #[serde(default)]
    pub current_bytes_done: u64,
    /// Size of the current file.
    #[serde(default)]
    pub current_bytes_total: u64,
    /// The last error, in words a person can act on.
    pub last_error: Option<String>,
    /// Unresolved conflicts.
    pub conflicts: u64,
    /// Deletions waiting for confirmation (with `NeedsConfirmation`).
    pub pending_deletions: u64,
}
