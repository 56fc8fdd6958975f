//! Token-bucket rate limiting. The bucket is a plain state machine; time comes in as an argument.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hearth_spec::{ErrorBody, ErrorCode};

/// One token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate >= burst
    }
}

/// Buckets by key (device, IP address), bounded: full buckets are dropped when the map grows.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Above this many keys, full buckets (which carry no information) are pruned.
const PRUNE_ABOVE: usize = 50_000;

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter allowing `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` now, or answers `rate_limited` with how long to wait.
    pub fn admit(&self, key: &K) -> Result<(), ErrorBody> {
        self.check(key, Instant::now()).map_err(|wait| ErrorBody {
            code: ErrorCode::RateLimited,
            message: "too many requests; slow down".into(),
            retry_after_ms: Some((wait.as_millis() as u64).max(1)),
        })
    }

    /// Takes a token for `key`, or says how long to wait.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| !b.is_full(rate, burst, now));
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(self.burst, now))
            .take(self.rate, self.burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3.0, t0);
        for _ in 0..3 {
            assert!(b.take(10.0, 3.0, t0).is_ok());
        }
        let wait = b.take(10.0, 3.0, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert!(b.take(10.0, 3.0, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(10.0, 3.0, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::new(1.0, 1.0);
        assert!(limiter.check(&"a", t0).is_ok());
        assert!(limiter.check(&"a", t0).is_err());
        assert!(limiter.check(&"b", t0).is_ok());
    }
}
