//! Which native notifications to show, decided from the event stream: a
//! new conflict, an error (once per distinct error, not on every retry),
//! the quota nearly full (once per crossing of 90%, again at 100%).

use coffer_engine::control::dto::{ActivityDto, StatusDto};
use coffer_engine::sync::SyncState;

/// The share of the quota that counts as nearly full, in percent.
pub const NEARLY_FULL_PERCENT: u64 = 90;

/// A notification to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub title: String,
    pub body: String,
}

/// Remembers what was already said.
#[derive(Debug, Default)]
pub struct Notifier {
    last_error: Option<String>,
    quota_level: u8,
}

impl Notifier {
    /// A new status: an error that was not already announced.
    pub fn on_status(&mut self, s: &StatusDto) -> Vec<Notice> {
        if s.state != SyncState::Error {
            if s.state == SyncState::UpToDate {
                self.last_error = None;
            }
            return vec![];
        }
        let message = s.last_error.clone().unwrap_or_else(|| "Sync stopped on an error".into());
        if self.last_error.as_deref() == Some(message.as_str()) {
            return vec![];
        }
        self.last_error = Some(message.clone());
        vec![Notice { title: "Coffer: sync stopped".into(), body: message }]
    }

    /// A completed op: a conflict.
    pub fn on_activity(&mut self, a: &ActivityDto) -> Vec<Notice> {
        if a.kind != "conflict" {
            return vec![];
        }
        vec![Notice {
            title: "Coffer: conflicting edits".into(),
            body: format!(
                "{} was changed on two devices. Both versions are kept; choose one in Coffer.",
                a.path
            ),
        }]
    }

    /// The storage use.
    pub fn on_quota(&mut self, used: u64, limit: u64) -> Vec<Notice> {
        if limit == 0 {
            // No quota: nothing to warn about, now or on the way back.
            self.quota_level = 0;
            return vec![];
        }
        let level = if used >= limit {
            2
        } else if u128::from(used) * 100 >= u128::from(limit) * u128::from(NEARLY_FULL_PERCENT) {
            1
        } else {
            0
        };
        let before = std::mem::replace(&mut self.quota_level, level);
        if level <= before {
            return vec![];
        }
        let percent = (u128::from(used) * 100 / u128::from(limit)).min(100);
        vec![if level == 2 {
            Notice {
                title: "Coffer: storage full".into(),
                body: "New files no longer upload. Free up space or get more.".into(),
            }
        } else {
            Notice {
                title: "Coffer: storage nearly full".into(),
                body: format!("{percent}% of your storage is used."),
            }
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: SyncState, err: Option<&str>) -> StatusDto {
        StatusDto { last_error: err.map(String::from), ..crate::tray::idle_status(state) }
    }

    #[test]
    fn an_error_is_announced_once_until_it_changes_or_clears() {
        let mut n = Notifier::default();
        assert_eq!(n.on_status(&status(SyncState::Error, Some("disk full"))).len(), 1);
        assert!(n.on_status(&status(SyncState::Error, Some("disk full"))).is_empty());
        assert!(n.on_status(&status(SyncState::Syncing, None)).is_empty());
        assert!(n.on_status(&status(SyncState::Error, Some("disk full"))).is_empty(), "a retry is not news");
        assert_eq!(n.on_status(&status(SyncState::Error, Some("denied")))[0].body, "denied");
        assert!(n.on_status(&status(SyncState::UpToDate, None)).is_empty());
        assert_eq!(n.on_status(&status(SyncState::Error, Some("denied"))).len(), 1, "again after recovering");
    }

    #[test]
    fn conflicts_are_announced() {
        let mut n = Notifier::default();
        let a = |kind: &str| ActivityDto { time_ms: 0, kind: kind.into(), path: "a/b.txt".into(), bytes: 0 };
        assert!(n.on_activity(&a("downloaded")).is_empty());
        let c = n.on_activity(&a("conflict"));
        assert!(c[0].body.contains("a/b.txt"));
    }

    #[test]
    fn quota_warnings_fire_on_crossing_only() {
        let mut n = Notifier::default();
        assert!(n.on_quota(50, 100).is_empty());
        assert_eq!(n.on_quota(91, 100)[0].title, "Coffer: storage nearly full");
        assert!(n.on_quota(95, 100).is_empty());
        assert_eq!(n.on_quota(100, 100)[0].title, "Coffer: storage full");
        assert!(n.on_quota(100, 100).is_empty());
        assert!(n.on_quota(10, 100).is_empty());
        assert_eq!(n.on_quota(90, 100).len(), 1, "again after space was freed");
        assert!(n.on_quota(5, 0).is_empty(), "no quota, no warning");
        assert_eq!(n.on_quota(u64::MAX - 1, u64::MAX).len(), 1, "no overflow");
    }
}
