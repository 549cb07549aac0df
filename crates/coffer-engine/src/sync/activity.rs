//! The engine's recent activity: what was uploaded, downloaded, deleted or
//! made a conflict, as each op completes. A small ring buffer keeps the
//! last [`ActivityLog::CAPACITY`] items for a face that opens late, and a
//! broadcast channel tells the faces that are watching (the control API's
//! event stream). Recording never blocks and never fails the op.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A local change was committed to the store.
    Uploaded,
    /// A remote change was written to disk.
    Downloaded,
    /// A local deletion was committed to the store.
    DeletedRemote,
    /// A remote deletion moved the local copy to the trash.
    DeletedLocal,
    /// Both sides changed: a conflicted copy was made.
    Conflict,
}

/// One completed op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// When it completed (ms since the epoch).
    pub time_ms: i64,
    /// What happened.
    pub kind: ActivityKind,
    /// The path.
    pub path: String,
    /// The file's size (0 for folders and deletions).
    pub bytes: u64,
}

/// Recent activity and its subscribers.
#[derive(Debug)]
pub struct ActivityLog {
    recent: Mutex<VecDeque<Activity>>,
    tx: broadcast::Sender<Activity>,
}

impl Default for ActivityLog {
    fn default() -> Self {
        Self { recent: Mutex::new(VecDeque::new()), tx: broadcast::channel(256).0 }
    }
}

impl ActivityLog {
    /// Items kept for late readers.
    pub const CAPACITY: usize = 200;

    /// Records one item (oldest dropped past the capacity).
    pub fn record(&self, item: Activity) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= Self::CAPACITY {
                r.pop_front();
            }
            r.push_back(item.clone());
        }
        // No subscriber is not an error.
        let _ = self.tx.send(item);
    }

    /// The kept items, newest first.
    pub fn recent(&self) -> Vec<Activity> {
        self.recent.lock().map(|r| r.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// Items recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Activity> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Activity {
        Activity { time_ms: n as i64, kind: ActivityKind::Uploaded, path: format!("f{n}"), bytes: 1 }
    }

    #[test]
    fn keeps_the_newest_items_and_tells_subscribers() {
        let log = ActivityLog::default();
        let mut rx = log.subscribe();
        for n in 0..ActivityLog::CAPACITY + 5 {
            log.record(item(n));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), ActivityLog::CAPACITY);
        assert_eq!(recent[0], item(ActivityLog::CAPACITY + 4));
        assert_eq!(recent.last(), Some(&item(5)));
        assert_eq!(rx.try_recv().unwrap(), item(0));
    }
}
