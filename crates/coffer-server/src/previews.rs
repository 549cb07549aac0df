//! Previews of large uploads under way, passed from one device of an
//! account to the others while the upload runs, so that they can fetch the
//! chunks already stored before the commit names them (the upload and the
//! other devices' downloads overlap instead of adding up).
//!
//! A preview is sealed by the client (the store cannot read, forge or
//! alter one) and is a hint only: nothing depends on it but speed. So the
//! store keeps previews in memory, few and briefly, and drops them freely:
//! at most [`KEEP`] per account (and [`KEEP_BYTES`]), none older than
//! [`MAX_AGE`], and boards nobody posts to or waits on are removed (swept
//! at most once a minute). Past [`TOTAL_BYTES`] across all accounts a new
//! preview is refused, never queued. Several instances behind a load
//! balancer do not share previews: a device whose long-poll lands on
//! another instance than the uploader's requests simply sees none, and
//! downloads after the commit as before.
//!
//! A device never gets its own previews back.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use coffer_proto::{DeviceId, SealedPreview};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::AccountId;

/// Previews kept per account.
pub const KEEP: usize = 64;
/// Sealed bytes of previews kept per account.
pub const KEEP_BYTES: usize = 1 << 20;
/// Oldest preview kept.
pub const MAX_AGE: Duration = Duration::from_secs(120);
/// Sealed bytes of previews kept across all accounts.
pub const TOTAL_BYTES: usize = 64 << 20;

struct Item {
    seq: u64,
    device: DeviceId,
    at: Instant,
    sealed: SealedPreview,
}

struct Board {
    /// The last position given out (wakes waiters when it moves).
    head: watch::Sender<u64>,
    items: VecDeque<Item>,
    bytes: usize,
    touched: Instant,
}

impl Board {
    fn new(now: Instant) -> Self {
        Self { head: watch::Sender::new(0), items: VecDeque::new(), bytes: 0, touched: now }
    }

    /// Drops previews past the bounds; returns the bytes freed.
    fn trim(&mut self, now: Instant) -> usize {
        let mut freed = 0;
        while let Some(first) = self.items.front() {
            let old = now.saturating_duration_since(first.at) > MAX_AGE;
            if !(old || self.items.len() > KEEP || self.bytes > KEEP_BYTES) {
                break;
            }
            let gone = self.items.pop_front().expect("checked");
            self.bytes -= gone.sealed.len();
            freed += gone.sealed.len();
        }
        freed
    }
}

struct Boards {
    by_account: HashMap<AccountId, Board>,
    bytes: usize,
    swept: Instant,
}

impl Default for Boards {
    fn default() -> Self {
        Self { by_account: HashMap::new(), bytes: 0, swept: Instant::now() }
    }
}

/// How often boards are swept (on a post or a wait).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Why a preview was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Larger than [`coffer_proto::api::MAX_PREVIEW_BYTES`].
    TooLarge,
    /// The store holds [`TOTAL_BYTES`] of previews already.
    Full,
}

/// Every account's previews.
#[derive(Default)]
pub struct PreviewBoards {
    inner: Mutex<Boards>,
}

impl std::fmt::Debug for PreviewBoards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.lock();
        f.debug_struct("PreviewBoards")
            .field("accounts", &b.by_account.len())
            .field("bytes", &b.bytes)
            .finish()
    }
}

impl PreviewBoards {
    fn lock(&self) -> std::sync::MutexGuard<'_, Boards> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `sealed` from `device` for the account's other devices, and
    /// wakes those waiting.
    pub fn post(&self, account: AccountId, device: DeviceId, sealed: SealedPreview) -> Result<(), Refused> {
        if sealed.len() > coffer_proto::api::MAX_PREVIEW_BYTES {
            return Err(Refused::TooLarge);
        }
        let now = Instant::now();
        let mut b = self.lock();
        if now.saturating_duration_since(b.swept) > SWEEP_EVERY || b.bytes + sealed.len() > TOTAL_BYTES {
            Self::sweep(&mut b, now);
        }
        if b.bytes + sealed.len() > TOTAL_BYTES {
            return Err(Refused::Full);
        }
        let len = sealed.len();
        let board = b.by_account.entry(account).or_insert_with(|| Board::new(now));
        let seq = *board.head.borrow() + 1;
        board.items.push_back(Item { seq, device, at: now, sealed });
        board.bytes += len;
        board.touched = now;
        let freed = board.trim(now);
        board.head.send_replace(seq);
        b.bytes = b.bytes + len - freed;
        Ok(())
    }

    /// Trims every board and removes those nobody used for [`MAX_AGE`].
    fn sweep(b: &mut Boards, now: Instant) {
        b.swept = now;
        let mut freed = 0;
        b.by_account.retain(|_, board| {
            freed += board.trim(now);
            let idle = now.saturating_duration_since(board.touched) > MAX_AGE;
            if idle && board.head.receiver_count() == 0 {
                freed += board.bytes;
                false
            } else {
                true
            }
        });
        b.bytes -= freed;
    }

    /// The previews of other devices than `device` after `after`, as soon
    /// as there are any, or none after `timeout`; with the position to ask
    /// from next. Without `after`, at once: the current position, nothing.
    pub async fn wait(
        &self,
        account: AccountId,
        device: DeviceId,
        after: Option<u64>,
        timeout: Duration,
    ) -> (u64, Vec<SealedPreview>) {
        let mut rx = {
            let now = Instant::now();
            let mut b = self.lock();
            // Boards of devices that waited and went are removed here too.
            if now.saturating_duration_since(b.swept) > SWEEP_EVERY {
                Self::sweep(&mut b, now);
            }
            let board = b.by_account.entry(account).or_insert_with(|| Board::new(now));
            board.touched = now;
            board.head.subscribe()
        };
        let Some(mut after) = after else { return (*rx.borrow(), Vec::new()) };
        let deadline = Instant::now() + timeout;
        loop {
            // Seen before the board is read: a post after the read wakes
            // the wait below (one between the two only wakes it for
            // nothing).
            rx.borrow_and_update();
            let (head, found) = self.after(account, device, after);
            // A position ahead of the board's (the store restarted, or the
            // device came from another instance) starts over from zero.
            if head < after {
                after = 0;
                continue;
            }
            if !found.is_empty() {
                return (head, found);
            }
            // Only this device's own previews, or none: wait for more.
            after = head;
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return (after, Vec::new()),
            }
        }
    }

    /// The board's position and the previews after `after` not posted by
    /// `device`.
    fn after(&self, account: AccountId, device: DeviceId, after: u64) -> (u64, Vec<SealedPreview>) {
        let b = self.lock();
        let Some(board) = b.by_account.get(&account) else { return (0, Vec::new()) };
        let found = board
            .items
            .iter()
            .filter(|i| i.seq > after && i.device != device)
            .map(|i| i.sealed.clone())
            .collect();
        let head = *board.head.borrow();
        (head, found)
    }

    /// Sealed bytes held across all accounts.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u64) -> AccountId {
        AccountId(n)
    }

    fn device(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 16])
    }

    fn preview(n: u8, len: usize) -> SealedPreview {
        SealedPreview::from_sealed_bytes(vec![n; len])
    }

    const WAIT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn other_devices_get_a_preview_and_its_poster_does_not() {
        let boards = PreviewBoards::default();
        let (start, none) = boards.wait(account(1), device(2), None, WAIT).await;
        assert_eq!((start, none.len()), (0, 0));
        boards.post(account(1), device(1), preview(7, 10)).unwrap();
        let (at, got) = boards.wait(account(1), device(2), Some(start), WAIT).await;
        assert_eq!((at, got), (1, vec![preview(7, 10)]));
        // Its own preview does not wake the poster: it waits out the time.
        let before = Instant::now();
        let (at, got) = boards.wait(account(1), device(1), Some(start), WAIT).await;
        assert_eq!((at, got.len()), (1, 0));
        assert!(before.elapsed() >= WAIT);
        // Nor does another account's.
        boards.post(account(2), device(3), preview(8, 10)).unwrap();
        let (at, got) = boards.wait(account(1), device(2), Some(1), Duration::from_secs(1)).await;
        assert_eq!((at, got.len()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_device_wakes_when_a_preview_comes() {
        let boards = std::sync::Arc::new(PreviewBoards::default());
        let waiter = {
            let boards = boards.clone();
            tokio::spawn(async move { boards.wait(account(1), device(2), Some(0), WAIT).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        // This device's own preview moves the position without waking it.
        boards.post(account(1), device(2), preview(1, 5)).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        boards.post(account(1), device(1), preview(2, 5)).unwrap();
        let (at, got) = waiter.await.unwrap();
        assert_eq!((at, got), (2, vec![preview(2, 5)]));
    }

    #[tokio::test(start_paused = true)]
    async fn previews_are_few_small_and_brief() {
        let boards = PreviewBoards::default();
        assert_eq!(
            boards.post(account(1), device(1), preview(0, coffer_proto::api::MAX_PREVIEW_BYTES + 1)),
            Err(Refused::TooLarge)
        );
        for n in 0..(KEEP + 10) {
            boards.post(account(1), device(1), preview(n as u8, 100)).unwrap();
        }
        let (_, got) = boards.wait(account(1), device(2), Some(0), WAIT).await;
        assert_eq!(got.len(), KEEP, "the oldest are dropped");
        assert_eq!(got[0], preview(10, 100));
        assert_eq!(boards.bytes(), KEEP * 100);
        tokio::time::advance(MAX_AGE + Duration::from_secs(1)).await;
        boards.post(account(1), device(1), preview(99, 100)).unwrap();
        let (_, got) = boards.wait(account(1), device(2), Some(0), WAIT).await;
        assert_eq!(got, vec![preview(99, 100)], "the old ones went");
        assert_eq!(boards.bytes(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_refuses_previews_past_its_total_and_frees_idle_boards() {
        let boards = PreviewBoards::default();
        let big = coffer_proto::api::MAX_PREVIEW_BYTES;
        let mut n = 0;
        while boards.post(account(n), device(1), preview(0, big)).is_ok() {
            n += 1;
        }
        assert_eq!(boards.post(account(0), device(1), preview(0, big)), Err(Refused::Full));
        assert!(boards.bytes() <= TOTAL_BYTES);
        // Once they are old and nobody waits on them, the boards go.
        tokio::time::advance(MAX_AGE + Duration::from_secs(1)).await;
        boards.post(account(0), device(1), preview(0, big)).unwrap();
        assert_eq!(boards.bytes(), big);
        assert_eq!(boards.lock().by_account.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn boards_of_devices_that_only_waited_go_once_they_left() {
        let boards = PreviewBoards::default();
        for n in 0..100 {
            boards.wait(account(n), device(1), Some(0), Duration::from_millis(10)).await;
        }
        assert_eq!(boards.lock().by_account.len(), 100);
        tokio::time::advance(MAX_AGE + SWEEP_EVERY).await;
        boards.wait(account(0), device(1), None, WAIT).await;
        assert_eq!(boards.lock().by_account.len(), 1, "only the board just waited on is left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_position_past_the_board_starts_over() {
        let boards = PreviewBoards::default();
        boards.post(account(1), device(1), preview(1, 5)).unwrap();
        // As after a restart of the store: the device asks from 40.
        let (at, got) = boards.wait(account(1), device(2), Some(40), WAIT).await;
        assert_eq!((at, got), (1, vec![preview(1, 5)]));
    }
}
