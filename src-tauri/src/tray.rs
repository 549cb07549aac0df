//! What the tray shows and what its menu does, as plain data: the icon for
//! a status, the status line, the recent files, and the menu's actions.
//! `shell` draws a [`TrayView`]; a menu click becomes a [`TrayAction`] that
//! [`crate::core::Desktop::perform`] carries out (and tests call the same).

use coffer_engine::control::dto::{ActivityDto, StatusDto};
use coffer_engine::sync::SyncState;

/// Recent files kept for the menu.
pub const RECENT: usize = 5;

/// One tray icon per state (`icons/tray-*.png`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrayIcon {
    UpToDate,
    Syncing,
    Paused,
    Offline,
    Error,
    Conflict,
}

impl TrayIcon {
    /// The icon's PNG.
    pub fn png(self) -> &'static [u8] {
        match self {
            Self::UpToDate => include_bytes!("../../icons/tray-up-to-date.png"),
            Self::Syncing => include_bytes!("../../icons/tray-syncing.png"),
            Self::Paused => include_bytes!("../../icons/tray-paused.png"),
            Self::Offline => include_bytes!("../../icons/tray-offline.png"),
            Self::Error => include_bytes!("../../icons/tray-error.png"),
            Self::Conflict => include_bytes!("../../icons/tray-conflict.png"),
        }
    }
}

/// The icon for a status. What needs the person comes first: an error (or
/// deletions waiting for a yes), then a conflict, then the rest.
pub fn icon_for(status: &StatusDto) -> TrayIcon {
    match status.state {
        SyncState::Error | SyncState::NeedsConfirmation => TrayIcon::Error,
        _ if status.conflicts > 0 => TrayIcon::Conflict,
        SyncState::Offline => TrayIcon::Offline,
        SyncState::Paused => TrayIcon::Paused,
        SyncState::Syncing => TrayIcon::Syncing,
        SyncState::UpToDate => TrayIcon::UpToDate,
    }
}

/// The menu's first line, in words.
pub fn status_line(status: &StatusDto) -> String {
    let base = match status.state {
        SyncState::UpToDate => "Up to date".to_string(),
        SyncState::Syncing if status.files_total > 0 => {
            format!("Syncing {} of {} files", status.files_done.min(status.files_total), status.files_total)
        }
        SyncState::Syncing => "Syncing…".to_string(),
        SyncState::Paused => "Paused".to_string(),
        SyncState::Offline => "Offline: retrying".to_string(),
        SyncState::Error => match &status.last_error {
            Some(e) => format!("Error: {}", shorten(e, 60)),
            None => "Error".to_string(),
        },
        SyncState::NeedsConfirmation => {
            format!("{} deletions wait for your confirmation", status.pending_deletions)
        }
    };
    match status.conflicts {
        0 => base,
        1 => format!("{base} · 1 conflict"),
        n => format!("{base} · {n} conflicts"),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// Everything the tray shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrayView {
    pub icon: TrayIcon,
    pub status_line: String,
    pub paused: bool,
    /// Whether syncing is set up (else only "Open Coffer" and "Quit" work).
    pub ready: bool,
    /// Recent files, newest first (paths in the folder).
    pub recent: Vec<String>,
}

impl TrayView {
    /// Before the first run is finished.
    pub fn setting_up() -> Self {
        Self {
            icon: TrayIcon::Paused,
            status_line: "Not set up yet".into(),
            paused: false,
            ready: false,
            recent: vec![],
        }
    }

    /// Takes a new status.
    pub fn set_status(&mut self, status: &StatusDto, paused: bool) {
        self.icon = icon_for(status);
        self.status_line = status_line(status);
        self.paused = paused;
        self.ready = true;
    }

    /// Takes a completed op: uploads and downloads are recent files.
    pub fn add_recent(&mut self, a: &ActivityDto) {
        if !matches!(a.kind.as_str(), "uploaded" | "downloaded") {
            return;
        }
        self.recent.retain(|p| p != &a.path);
        self.recent.insert(0, a.path.clone());
        self.recent.truncate(RECENT);
    }

    /// The tooltip.
    pub fn tooltip(&self) -> String {
        format!("Coffer: {}", self.status_line)
    }
}

/// What a menu item does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrayAction {
    OpenFolder,
    OpenWindow,
    /// The n-th recent file.
    OpenRecent(usize),
    TogglePause,
    Quit,
}

impl TrayAction {
    /// The menu item's id.
    pub fn id(self) -> String {
        match self {
            Self::OpenFolder => "open-folder".into(),
            Self::OpenWindow => "open-window".into(),
            Self::OpenRecent(i) => format!("recent-{i}"),
            Self::TogglePause => "toggle-pause".into(),
            Self::Quit => "quit".into(),
        }
    }

    /// The action of a menu item's id.
    pub fn from_id(id: &str) -> Option<Self> {
        Some(match id {
            "open-folder" => Self::OpenFolder,
            "open-window" => Self::OpenWindow,
            "toggle-pause" => Self::TogglePause,
            "quit" => Self::Quit,
            other => Self::OpenRecent(other.strip_prefix("recent-")?.parse().ok()?),
        })
    }
}

/// A status in `state` with nothing else going on (for tests).
#[cfg(test)]
pub(crate) fn idle_status(state: SyncState) -> StatusDto {
    StatusDto {
        state,
        root: "/r".into(),
        device_name: "d".into(),
        files_total: 0,
        files_done: 0,
        bytes_total: 0,
        bytes_done: 0,
        current: vec![],
        conflicts: 0,
        pending_deletions: 0,
        last_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: SyncState) -> StatusDto {
        idle_status(state)
    }

    #[test]
    fn every_state_has_its_icon() {
        assert_eq!(icon_for(&status(SyncState::UpToDate)), TrayIcon::UpToDate);
        assert_eq!(icon_for(&status(SyncState::Syncing)), TrayIcon::Syncing);
        assert_eq!(icon_for(&status(SyncState::Paused)), TrayIcon::Paused);
        assert_eq!(icon_for(&status(SyncState::Offline)), TrayIcon::Offline);
        assert_eq!(icon_for(&status(SyncState::Error)), TrayIcon::Error);
        assert_eq!(icon_for(&status(SyncState::NeedsConfirmation)), TrayIcon::Error);
        let mut s = status(SyncState::UpToDate);
        s.conflicts = 2;
        assert_eq!(icon_for(&s), TrayIcon::Conflict);
        assert_eq!(status_line(&s), "Up to date · 2 conflicts");
        s.state = SyncState::Error;
        assert_eq!(icon_for(&s), TrayIcon::Error, "an error outranks a conflict");
        // Six different images.
        let pngs: std::collections::BTreeSet<&[u8]> = [
            TrayIcon::UpToDate,
            TrayIcon::Syncing,
            TrayIcon::Paused,
            TrayIcon::Offline,
            TrayIcon::Error,
            TrayIcon::Conflict,
        ]
        .iter()
        .map(|i| i.png())
        .collect();
        assert_eq!(pngs.len(), 6);
        assert!(pngs.iter().all(|p| p.starts_with(b"\x89PNG")));
    }

    #[test]
    fn status_lines_say_what_is_happening() {
        let mut s = status(SyncState::Syncing);
        s.files_total = 10;
        s.files_done = 3;
        assert_eq!(status_line(&s), "Syncing 3 of 10 files");
        let mut e = status(SyncState::Error);
        e.last_error = Some("x".repeat(100));
        let line = status_line(&e);
        assert!(line.starts_with("Error: xxx") && line.ends_with('…') && line.chars().count() == 67);
        let mut d = status(SyncState::NeedsConfirmation);
        d.pending_deletions = 1200;
        assert_eq!(status_line(&d), "1200 deletions wait for your confirmation");
    }

    #[test]
    fn recent_files_are_newest_first_unique_and_bounded() {
        let mut v = TrayView::setting_up();
        let op = |kind: &str, path: &str| ActivityDto {
            time_ms: 0,
            kind: kind.into(),
            path: path.into(),
            bytes: 1,
        };
        for i in 0..7 {
            v.add_recent(&op("downloaded", &format!("f{i}")));
        }
        v.add_recent(&op("uploaded", "f3"));
        v.add_recent(&op("deleted_local", "gone"));
        assert_eq!(v.recent, ["f3", "f6", "f5", "f4", "f2"]);
    }

    #[test]
    fn menu_ids_round_trip() {
        for a in [
            TrayAction::OpenFolder,
            TrayAction::OpenWindow,
            TrayAction::OpenRecent(3),
            TrayAction::TogglePause,
            TrayAction::Quit,
        ] {
            assert_eq!(TrayAction::from_id(&a.id()), Some(a));
        }
        assert_eq!(TrayAction::from_id("recent-x"), None);
        assert_eq!(TrayAction::from_id("status"), None);
    }
}
