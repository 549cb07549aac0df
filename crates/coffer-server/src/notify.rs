//! In-process wake-up for journal long-polls, with the tail of each watched
//! account's journal kept in memory.
//!
//! One `tokio::sync::watch` channel per watched account carries a [`Feed`]:
//! the highest journal head this process knows and the most recent accepted
//! changes (at most [`TAIL`]). A commit publishes its new head and changes; a
//! long-poll subscribes and waits until the head passes its cursor, then
//! usually finds its page in the tail and needs no store read. A held poll is
//! a parked future and a socket: no thread, so ten thousand are cheap.
//!
//! Correctness:
//! - A waiter subscribes first and only then reads the head from the store
//!   (when the channel is new), so a commit either lands before that read or
//!   publishes into a channel the waiter already holds.
//! - Commits may publish out of order; the tail is keyed by sequence number
//!   and a page is served from it only if every sequence number the page
//!   needs is there. Otherwise the caller reads the store.
//! - The tail is a copy of what the store returned for the commit, built by
//!   the same rules ([`crate::store::commit`]); retention clears every tail
//!   ([`Notifier::clear_tails`]) so a pruned journal is never served.
//!
//! Several instances behind a load balancer share a signal: with PostgreSQL,
//! each commit sends `NOTIFY` and every instance's listener feeds the new
//! head to [`Notifier::publish`] (with no changes, so the page is then read
//! from the store); see `server::open_stores`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use coffer_proto::api::{EntryVersion, JournalPage};
use coffer_proto::Cursor;
use tokio::sync::watch;

use crate::store::AccountId;

/// Recent changes kept per watched account.
pub const TAIL: usize = 64;

/// What a watched account's channel carries.
#[derive(Debug, Default)]
pub struct Feed {
    head: u64,
    recent: BTreeMap<u64, EntryVersion>,
}

impl Feed {
    /// The highest journal head known.
    pub fn head(&self) -> Cursor {
        Cursor(self.head)
    }

    /// The journal page after `after`, if the tail holds all of it.
    pub fn page(&self, after: Cursor, limit: u32) -> Option<JournalPage> {
        let end = self.head.min(after.0.saturating_add(u64::from(limit)));
        let mut changes = Vec::with_capacity(end.saturating_sub(after.0) as usize);
        for seq in after.0 + 1..=end {
            changes.push(self.recent.get(&seq)?.clone());
        }
        Some(JournalPage { cursor: Cursor(end.max(after.0)), more: end < self.head, changes })
    }
}

/// Per-account feeds, for waking long-polls.
#[derive(Debug, Default)]
pub struct Notifier {
    feeds: Mutex<HashMap<AccountId, watch::Sender<Feed>>>,
}

impl Notifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, watch::Sender<Feed>>> {
        self.feeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Raises the known head of `account` to `head`, remembers `changes`,
    /// and wakes its waiters. Does nothing for an account nobody watches.
    pub fn publish(&self, account: AccountId, head: Cursor, changes: Vec<EntryVersion>) {
        let map = self.lock();
        if let Some(tx) = map.get(&account) {
            tx.send_if_modified(|feed| {
                for v in changes {
                    feed.recent.insert(v.seq.0, v);
                }
                while feed.recent.len() > TAIL {
                    feed.recent.pop_first();
                }
                if head.0 > feed.head {
                    feed.head = head.0;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Subscribes to `account`; the flag says whether the channel is new (its
    /// head then needs seeding from the store with [`Notifier::seed`]).
    pub fn subscribe(&self, account: AccountId) -> (watch::Receiver<Feed>, bool) {
        let mut map = self.lock();
        if let Some(tx) = map.get(&account) {
            return (tx.subscribe(), false);
        }
        let (tx, rx) = watch::channel(Feed::default());
        map.insert(account, tx);
        (rx, true)
    }

    /// Seeds a channel with the head read from the store.
    pub fn seed(&self, account: AccountId, head: Cursor) {
        self.publish(account, head, Vec::new());
    }

    /// The page after `after` from memory, if this process has all of it.
    pub fn page(&self, account: AccountId, after: Cursor, limit: u32) -> Option<JournalPage> {
        let map = self.lock();
        let feed = map.get(&account)?.borrow();
        if feed.head <= after.0 {
            return None;
        }
        feed.page(after, limit)
    }

    /// Forgets every remembered change (after retention pruned the journal).
    pub fn clear_tails(&self) {
        for tx in self.lock().values() {
            tx.send_if_modified(|feed| {
                feed.recent.clear();
                false
            });
        }
    }

    /// Accounts with a channel (watched now or before).
    pub fn watched(&self) -> Vec<AccountId> {
        self.lock().keys().copied().collect()
    }

    /// How many long-polls are waiting right now, over all accounts.
    pub fn waiting(&self) -> usize {
        self.lock().values().map(watch::Sender::receiver_count).sum()
    }
}
