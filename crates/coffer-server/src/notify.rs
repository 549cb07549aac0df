//! In-process wake-up for journal long-polls.
//!
//! One `tokio::sync::watch` channel per account carries the highest journal
//! head this process knows. A commit publishes its new head; a long-poll
//! subscribes and waits until the head passes its cursor. A held poll is a
//! parked future and a socket: no thread, no timer wheel entry beyond its
//! timeout, so ten thousand of them are cheap.
//!
//! Race freedom: a waiter subscribes first and only then reads the head
//! from the store (when the channel is new), so a commit either lands before
//! that read or publishes into a channel the waiter already holds.
//!
//! Several instances behind a load balancer would need a shared signal
//! (PostgreSQL `LISTEN/NOTIFY`, Redis pub/sub) feeding [`Notifier::publish`];
//! this process only sees its own commits.

use std::collections::HashMap;
use std::sync::Mutex;

use coffer_proto::Cursor;
use tokio::sync::watch;

use crate::store::AccountId;

/// Per-account journal heads, for waking long-polls.
#[derive(Debug, Default)]
pub struct Notifier {
    heads: Mutex<HashMap<AccountId, watch::Sender<u64>>>,
}

impl Notifier {
    /// Raises the known head of `account` to `head` and wakes its waiters.
    pub fn publish(&self, account: AccountId, head: Cursor) {
        let map = self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = map.get(&account) {
            raise(tx, head);
        }
    }

    /// Subscribes to `account`; the flag says whether the channel is new (its
    /// value then needs seeding from the store with [`Notifier::seed`]).
    pub fn subscribe(&self, account: AccountId) -> (watch::Receiver<u64>, bool) {
        let mut map = self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = map.get(&account) {
            return (tx.subscribe(), false);
        }
        let (tx, rx) = watch::channel(0);
        map.insert(account, tx);
        (rx, true)
    }

    /// How many long-polls are waiting right now, over all accounts.
    pub fn waiting(&self) -> usize {
        let map = self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().map(watch::Sender::receiver_count).sum()
    }

    /// Seeds a channel with the head read from the store.
    pub fn seed(&self, account: AccountId, head: Cursor) {
        self.publish(account, head);
    }
}

fn raise(tx: &watch::Sender<u64>, head: Cursor) {
    tx.send_if_modified(|v| {
        if head.0 > *v {
            *v = head.0;
            true
        } else {
            false
        }
    });
}
