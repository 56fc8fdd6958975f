//! Retry timing for a destination: exponential backoff with jitter. No I/O, no clock: the
//! caller sleeps for what [`Backoff::next_delay`] returns.

use std::time::Duration;

/// Backoff limits.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Consecutive failures towards one destination.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// A success: the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait: the ceiling doubles per failure up to
    /// `max`, and the wait is uniform in [ceiling/2, ceiling] so that many senders that failed
    /// together do not retry together. `jitter` is a random number in [0, 1).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let doubling = 2u32.saturating_pow(self.failures.min(31));
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .policy
            .initial
            .saturating_mul(doubling)
            .min(self.policy.max);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let uppers: Vec<Duration> = (0..6).map(|_| b.next_delay(1.0)).collect();
        let ms: Vec<u128> = uppers.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }

    proptest! {
        #[test]
        fn delay_stays_within_half_and_full_ceiling(failures in 0u32..100, jitter in 0.0f64..1.0) {
            let policy = BackoffPolicy::default();
            let mut b = Backoff::new(policy);
            for _ in 0..failures { b.next_delay(0.5); }
            let d = b.next_delay(jitter);
            prop_assert!(d <= policy.max);
            prop_assert!(d >= policy.initial / 2);
        }
    }
}
