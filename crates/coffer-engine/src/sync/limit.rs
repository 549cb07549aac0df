//! Bandwidth limits: one pacer per direction, a token bucket with a
//! one-second burst. Transfers call [`Pacer::take`] with each chunk's size
//! before moving it; with no limit set it returns at once. Limits change
//! at run time (the control API's settings).
//!
//! Pacing is per chunk as it is read or written, which is what moves the
//! progress bars; a chunk the store already has is paced too (a small
//! overestimate of the bytes on the wire, never an underestimate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paces one direction.
#[derive(Debug, Default)]
pub struct Pacer {
    /// Bytes per second; 0 is unlimited.
    rate: AtomicU64,
    /// When the bytes granted so far are paid for.
    next_free: Mutex<Option<Instant>>,
}

impl Pacer {
    /// Sets the limit in bytes per second (0: unlimited).
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::SeqCst);
        if let Ok(mut n) = self.next_free.lock() {
            *n = None;
        }
    }

    /// The limit in bytes per second (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::SeqCst)
    }

    /// How long to wait before moving `bytes` more, at `now`.
    fn reserve(&self, bytes: u64, now: Instant) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let Ok(mut next) = self.next_free.lock() else { return Duration::ZERO };
        // At most one second of unused allowance carries over (the burst).
        let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let start = next.map_or(floor, |n| n.max(floor));
        let end = start + cost;
        *next = Some(end);
        end.saturating_duration_since(now)
    }

    /// Waits until `bytes` more may move.
    pub async fn take(&self, bytes: u64) {
        let wait = self.reserve(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The two directions.
#[derive(Debug, Default)]
pub struct Limits {
    /// Uploads.
    pub up: Pacer,
    /// Downloads.
    pub down: Pacer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let p = Pacer::default();
        assert_eq!(p.reserve(u64::MAX / 2, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn a_limit_paces_after_a_one_second_burst() {
        let p = Pacer::default();
        p.set_rate(1000);
        let now = Instant::now();
        // The first second's worth goes at once.
        assert_eq!(p.reserve(1000, now), Duration::ZERO);
        // Then each 500 bytes costs half a second more.
        assert_eq!(p.reserve(500, now), Duration::from_millis(500));
        assert_eq!(p.reserve(500, now), Duration::from_millis(1000));
        // Waiting pays it off.
        assert_eq!(p.reserve(1500, now + Duration::from_secs(2)), Duration::from_millis(500));
    }
}
