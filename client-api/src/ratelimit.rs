//! Rate limiting at the client edge: a token bucket ([`hearth_spec::rate::Bucket`]) per key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hearth_spec::rate::{Bucket, Rate};
use hearth_spec::{ErrorBody, ErrorCode};

/// Buckets by key (device, IP address), bounded: full buckets are dropped when the map grows.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    /// The rate and the buckets, under one lock: a reload changes the rate between two takes.
    state: Mutex<(Rate, HashMap<K, Bucket>)>,
}

/// Above this many keys, full buckets (which carry no information) are pruned.
const PRUNE_ABOVE: usize = 50_000;

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter allowing `rate` to each key.
    pub fn new(rate: Rate) -> Self {
        Self {
            state: Mutex::new((rate, HashMap::new())),
        }
    }

    /// Changes the rate (a configuration reload); buckets keep their tokens, refilled at the
    /// new rate and capped at the new burst from their next take.
    pub fn set_rate(&self, rate: Rate) {
        self.state.lock().expect("limiter lock").0 = rate;
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
        let mut state = self.state.lock().expect("limiter lock");
        let (rate, buckets) = &mut *state;
        let rate = *rate;
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| !b.is_full(rate, now));
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(rate, now))
            .take_one(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_independent() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::new(Rate::new(1.0, 1.0));
        assert!(limiter.check(&"a", t0).is_ok());
        assert!(limiter.check(&"a", t0).is_err());
        assert!(limiter.check(&"b", t0).is_ok());
    }
}
