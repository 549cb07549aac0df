//! Every type that crosses the control API's boundary, and nothing else:
//! requests, responses, events and errors, as the UI sees them in JSON
//! (`ui/src/api/types.ts` mirrors this file; change both together).
//!
//! Enums are internally tagged (`{"type": "get_status"}`), names are
//! `snake_case`, sizes are bytes, times are milliseconds since the Unix
//! epoch, paths are `/`-separated and relative to the sync folder ("" is
//! the folder itself). Errors carry a stable `code` a UI can switch on and
//! a `message` a person can read.

use serde::{Deserialize, Serialize};

use crate::sync::SyncState;

/// A request to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The sync state and progress.
    GetStatus,
    /// Bytes used of the account's quota.
    GetQuota,
    /// Recent uploads, downloads, deletions and conflicts.
    GetActivity,
    /// Unresolved conflicts, both sides described.
    ListConflicts,
    /// Settles a conflict.
    ResolveConflict {
        /// The conflicted path (or its copy).
        path: String,
        /// Which side to keep.
        keep: Keep,
    },
    /// One level of the store's folder tree (for selective sync and the
    /// version history).
    ListFolder {
        /// The folder ("" for the top).
        path: String,
    },
    /// Syncs a folder to this device, or stops (removing the local copy,
    /// which stays on the store).
    SetFolderSync {
        /// The folder.
        path: String,
        /// True to sync it here.
        included: bool,
    },
    /// The settings.
    GetSettings,
    /// Changes the settings that are given.
    UpdateSettings(SettingsPatch),
    /// The kept versions of a file, newest first.
    ListVersions {
        /// The file.
        path: String,
    },
    /// Makes an old version current again.
    RestoreVersion {
        /// The file.
        path: String,
        /// The revision to restore.
        revision: u64,
    },
    /// The account and its device sessions.
    GetAccount,
    /// Ends a device session.
    RevokeSession {
        /// Its id.
        id: String,
    },
    /// Logs this device out (ends its session, forgets its keys).
    Logout,
}

/// Which side of a conflict to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// This device's version.
    Mine,
    /// The other device's version.
    Theirs,
    /// Both (the copy stays beside the file).
    Both,
}

/// Settings to change; absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsPatch {
    /// This device's name.
    #[serde(default)]
    pub device_name: Option<String>,
    /// Upload limit in KiB/s (0: none).
    #[serde(default)]
    pub upload_limit_kib: Option<u64>,
    /// Download limit in KiB/s (0: none).
    #[serde(default)]
    pub download_limit_kib: Option<u64>,
    /// Pause or resume.
    #[serde(default)]
    pub paused: Option<bool>,
    /// Start Coffer when the person logs in (the desktop shell applies it).
    #[serde(default)]
    pub start_at_login: Option<bool>,
    /// Serve the web UI whenever the daemon runs (from its next start).
    #[serde(default)]
    pub serve_ui: Option<bool>,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// To `get_status`.
    Status(StatusDto),
    /// To `get_quota`.
    Quota(QuotaDto),
    /// To `get_activity`.
    Activity {
        /// Newest first.
        items: Vec<ActivityDto>,
    },
    /// To `list_conflicts`.
    Conflicts {
        /// Oldest first.
        items: Vec<ConflictDto>,
    },
    /// To `list_folder`.
    Folder(FolderDto),
    /// To `get_settings` and `update_settings`.
    Settings(SettingsDto),
    /// To `list_versions`.
    Versions {
        /// The file.
        path: String,
        /// Newest first.
        items: Vec<VersionDto>,
    },
    /// To `restore_version`.
    Restored {
        /// The new current revision.
        revision: u64,
    },
    /// To `set_folder_sync`.
    FolderSync {
        /// The folder.
        path: String,
        /// Whether it syncs here now.
        included: bool,
        /// Local files and folders removed.
        removed: u64,
    },
    /// To `get_account`.
    Account(AccountDto),
    /// Done, nothing more to say (`resolve_conflict`, `revoke_session`,
    /// `logout`).
    Done,
}

/// Progress of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProgressDto {
    /// The file.
    pub path: String,
    /// Bytes moved.
    pub bytes_done: u64,
    /// Its size.
    pub bytes_total: u64,
}

/// State and progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDto {
    /// The overall state.
    pub state: SyncState,
    /// The sync folder (absolute).
    pub root: String,
    /// This device's name.
    pub device_name: String,
    /// Files in the current round.
    pub files_total: u64,
    /// Files done in it.
    pub files_done: u64,
    /// Bytes to move in it.
    pub bytes_total: u64,
    /// Bytes moved.
    pub bytes_done: u64,
    /// Files being moved now.
    pub current: Vec<FileProgressDto>,
    /// Unresolved conflicts.
    pub conflicts: u64,
    /// Deletions waiting for confirmation.
    pub pending_deletions: u64,
    /// What went wrong last, if anything.
    pub last_error: Option<String>,
}

/// Storage use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaDto {
    /// Bytes used.
    pub used: u64,
    /// The limit.
    pub limit: u64,
}

/// What happened to a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityDto {
    /// When.
    pub time_ms: i64,
    /// `uploaded`, `downloaded`, `deleted_remote`, `deleted_local`,
    /// `conflict`.
    pub kind: String,
    /// The path.
    pub path: String,
    /// The file's size.
    pub bytes: u64,
}

/// One side of a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictSideDto {
    /// Where this version is now.
    pub path: String,
    /// Its size (absent if the file is gone).
    pub size: Option<u64>,
    /// Its modification time.
    pub modified_ms: Option<i64>,
    /// The device that made it.
    pub device: String,
}

/// An unresolved conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictDto {
    /// The path both devices changed.
    pub path: String,
    /// When the conflict was found.
    pub created_ms: i64,
    /// This device's version (moved aside as the conflicted copy).
    pub mine: ConflictSideDto,
    /// The other device's version (kept the name).
    pub theirs: ConflictSideDto,
}

/// Whether a folder syncs to this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderSync {
    /// It and everything in it.
    Included,
    /// Not here (it or a parent is excluded).
    Excluded,
    /// Some folders inside it are excluded.
    Partial,
}

/// A child in a folder listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntryDto {
    /// Its name.
    pub name: String,
    /// Its path.
    pub path: String,
    /// `folder` or `file`.
    pub kind: String,
    /// Bytes (a folder: every file inside it).
    pub size: u64,
    /// Files inside (a file: 1).
    pub files: u64,
    /// A folder with folders inside (the tree can open it).
    pub has_folders: bool,
    /// Whether it syncs here.
    pub sync: FolderSync,
    /// A file's modification time.
    pub modified_ms: Option<i64>,
}

/// One level of the store's tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderDto {
    /// The folder ("" for the top).
    pub path: String,
    /// Whether it syncs here.
    pub sync: FolderSync,
    /// Folders first, then files, by name.
    pub entries: Vec<TreeEntryDto>,
}

/// The settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsDto {
    /// This device's name (used from the next start of the daemon).
    pub device_name: String,
    /// Upload limit in KiB/s (0: none).
    pub upload_limit_kib: u64,
    /// Download limit in KiB/s (0: none).
    pub download_limit_kib: u64,
    /// Paused.
    pub paused: bool,
    /// Start at login (applied by the desktop shell).
    pub start_at_login: bool,
    /// The daemon serves the web UI even without `--ui`.
    pub serve_ui: bool,
    /// Folders not synced to this device.
    pub excluded: Vec<String>,
}

/// A kept version of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDto {
    /// Its revision.
    pub revision: u64,
    /// When the store accepted it.
    pub time_ms: u64,
    /// The device that made it.
    pub device: String,
    /// Its size.
    pub size: u64,
    /// A deletion.
    pub deleted: bool,
    /// The current version.
    pub current: bool,
}

/// A device session of the account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDto {
    /// The session's id.
    pub id: String,
    /// Its device.
    pub device_id: String,
    /// Since when.
    pub created_ms: u64,
    /// Until when.
    pub expires_ms: u64,
    /// This device's session.
    pub current: bool,
}

/// The account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDto {
    /// The account's email.
    pub email: String,
    /// The store.
    pub server: String,
    /// This device.
    pub device_id: String,
    /// Its name.
    pub device_name: String,
    /// Every device session.
    pub sessions: Vec<SessionDto>,
}

/// Something the engine tells the UI without being asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The status changed (at most ten a second; always the latest).
    Status(StatusDto),
    /// An op completed.
    Activity(ActivityDto),
}

/// Stable error codes: a UI switches on these, never on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, bad path).
    BadRequest,
    /// No such file, version, session or conflict.
    NotFound,
    /// The request does not fit the state of things; the message says why.
    Refused,
    /// No valid token (HTTP transport).
    Unauthorized,
    /// Refused for the request's origin or host (HTTP transport).
    Forbidden,
    /// This device is not logged in.
    NotLoggedIn,
    /// The store cannot be reached; try again.
    StoreUnreachable,
    /// The store refused.
    StoreRefused,
    /// A bug or a broken local index.
    Internal,
}

/// An error, as the UI receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// What kind.
    pub code: ErrorCode,
    /// What happened and what to do, for a person.
    pub message: String,
}

impl ControlError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_internally_tagged_snake_case() {
        let r: Request =
            serde_json::from_str(r#"{"type":"resolve_conflict","path":"a","keep":"mine"}"#).unwrap();
        assert_eq!(r, Request::ResolveConflict { path: "a".into(), keep: Keep::Mine });
        let r: Request = serde_json::from_str(r#"{"type":"update_settings","upload_limit_kib":64}"#).unwrap();
        assert_eq!(
            r,
            Request::UpdateSettings(SettingsPatch { upload_limit_kib: Some(64), ..Default::default() })
        );
        assert!(serde_json::from_str::<Request>(r#"{"type":"format_disk"}"#).is_err());
    }

    #[test]
    fn responses_and_errors_have_stable_shapes() {
        let q = serde_json::to_value(Response::Quota(QuotaDto { used: 1, limit: 2 })).unwrap();
        assert_eq!(q, serde_json::json!({"type": "quota", "used": 1, "limit": 2}));
        let e = serde_json::to_value(ControlError::new(ErrorCode::NotLoggedIn, "log in")).unwrap();
        assert_eq!(e, serde_json::json!({"code": "not_logged_in", "message": "log in"}));
        let d = serde_json::to_value(Response::Done).unwrap();
        assert_eq!(d, serde_json::json!({"type": "done"}));
    }
}
