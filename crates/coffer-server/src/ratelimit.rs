//! Token-bucket rate limiting of login attempts, per account name and per
//! client address. In memory: one instance's view. Several instances behind a
//! load balancer would need a shared limiter (e.g. Redis `INCR` with expiry)
//! or sticky routing; each would otherwise allow its own budget.

use std::collections::HashMap;
use std::sync::Mutex;

use coffer_proto::api::UnixMillis;

/// Bucket shape: `burst` attempts at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Bucket size.
    pub burst: u32,
    /// Tokens added per minute.
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: UnixMillis,
}

/// Buckets by key.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

const MAX_TRACKED: usize = 100_000;

impl RateLimiter {
    /// A limiter with one shape for every key.
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key`, or says how many milliseconds until one is
    /// available.
    pub fn check(&self, key: &str, now: UnixMillis) -> Result<(), u64> {
        let burst = f64::from(self.limit.burst.max(1));
        let per_ms = f64::from(self.limit.per_minute) / 60_000.0;
        let mut map = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_TRACKED {
            // Forget buckets that have refilled completely: they hold no state.
            map.retain(|_, b| b.tokens + per_ms * (now.0.saturating_sub(b.at.0) as f64) < burst);
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.0.saturating_sub(b.at.0) as f64;
        b.tokens = (b.tokens + elapsed * per_ms).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if per_ms > 0.0 {
            Err(((1.0 - b.tokens) / per_ms).ceil() as u64)
        } else {
            Err(u64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(RateLimit { burst: 2, per_minute: 60 });
        let t = UnixMillis(1_000_000);
        assert!(l.check("a", t).is_ok());
        assert!(l.check("a", t).is_ok());
        let wait = l.check("a", t).unwrap_err();
        assert!((1..=1000).contains(&wait), "{wait}");
        assert!(l.check("b", t).is_ok(), "keys are independent");
        assert!(l.check("a", t.plus_millis(1000)).is_ok());
    }
}
