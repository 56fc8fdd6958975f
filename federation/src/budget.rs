//! Per-peer envelope budget: a token bucket, so one peer cannot take all of a hearth's time.

use std::time::Instant;

/// A token bucket refilled continuously at `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes up to `wanted` tokens; returns how many were granted.
    pub fn take(&mut self, wanted: usize, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let granted = (self.tokens.floor() as usize).min(wanted);
        self.tokens -= granted as f64;
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grants_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100.0, 10.0, t0);
        assert_eq!(b.take(15, t0), 10);
        assert_eq!(b.take(5, t0), 0);
        assert_eq!(b.take(100, t0 + Duration::from_millis(50)), 5);
        assert_eq!(b.take(100, t0 + Duration::from_secs(60)), 10);
    }
}
