//! Rates and the one token bucket that enforces them, at the client edge (`rate_limited` with
//! `retry_after_ms`) and on federation links (envelopes refused `rate_limited`). Time comes in as
//! an argument, so both are plain state machines.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A sustained rate and the burst allowed above it; in the config as
/// `sends = { per_second = 50.0, burst = 500.0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Tokens a full bucket holds: what may be spent at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    pub const fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst }
    }

    /// Whether this rate can admit anything: a positive, finite rate and a burst of at least one.
    pub fn is_usable(&self) -> bool {
        self.per_second.is_finite()
            && self.per_second > 0.0
            && self.burst.is_finite()
            && self.burst >= 1.0
    }
}

/// One token bucket. It does not hold its [`Rate`] (a limiter keyed by device keeps one rate
/// for millions of buckets); every call passes it.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket: a newcomer may spend the whole burst.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        // A clock read that goes backwards adds nothing and does not move the mark back.
        if now > self.updated {
            let elapsed = (now - self.updated).as_secs_f64();
            self.updated = now;
            self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take_one(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }

    /// Takes up to `wanted` whole tokens; returns how many were granted.
    pub fn take_up_to(&mut self, rate: Rate, wanted: usize, now: Instant) -> usize {
        self.refill(rate, now);
        let granted = (self.tokens.floor() as usize).min(wanted);
        self.tokens -= granted as f64;
        granted
    }

    /// Whether the bucket would be full at `now` (it then carries no information and can go).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.updated).as_secs_f64() * rate.per_second
            >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_at_a_time_at_the_rate() {
        let rate = Rate::new(10.0, 3.0);
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        for _ in 0..3 {
            assert!(b.take_one(rate, t0).is_ok());
        }
        let wait = b.take_one(rate, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert!(b.take_one(rate, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take_one(rate, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn grants_the_burst_then_the_rate_in_batches() {
        let rate = Rate::new(100.0, 10.0);
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        assert_eq!(b.take_up_to(rate, 15, t0), 10);
        assert_eq!(b.take_up_to(rate, 5, t0), 0);
        assert_eq!(b.take_up_to(rate, 100, t0 + Duration::from_millis(50)), 5);
        // A long quiet spell refills to the burst, never past it.
        assert_eq!(b.take_up_to(rate, 100, t0 + Duration::from_secs(60)), 10);
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let rate = Rate::new(1.0, 1.0);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::full(rate, t0);
        assert!(b.take_one(rate, t0).is_ok());
        assert!(b.take_one(rate, t0 - Duration::from_secs(5)).is_err());
        // …and the mark stays at t0: one second after it, one token, not six.
        assert_eq!(b.take_up_to(rate, 10, t0 + Duration::from_secs(1)), 1);
    }

    #[test]
    fn fullness_is_reached_by_waiting() {
        let rate = Rate::new(2.0, 4.0);
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        assert!(b.is_full(rate, t0));
        assert_eq!(b.take_up_to(rate, 4, t0), 4);
        assert!(!b.is_full(rate, t0 + Duration::from_millis(1999)));
        assert!(b.is_full(rate, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn unusable_rates_are_named() {
        assert!(Rate::new(0.5, 10.0).is_usable());
        for bad in [
            Rate::new(0.0, 10.0),
            Rate::new(-1.0, 10.0),
            Rate::new(f64::NAN, 10.0),
            Rate::new(f64::INFINITY, 10.0),
            Rate::new(1.0, 0.5),
        ] {
            assert!(!bad.is_usable(), "{bad:?}");
        }
    }
}
