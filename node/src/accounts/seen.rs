//! When a device's last-seen address is worth writing: when its address changes, or once per
//! period while it stays the same. An entry older than the period decides nothing (the next
//! request writes anyway), so such entries are swept whenever the map has doubled since the last
//! sweep: memory follows the devices seen in the last period, not every device ever seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// Size below which the map is never swept.
const MIN_SWEEP: usize = 1024;

/// Which sightings to write, per device.
#[derive(Debug)]
pub struct SeenThrottle<K> {
    period_ms: u64,
    seen: HashMap<K, (IpAddr, u64)>,
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> SeenThrottle<K> {
    pub fn new(period_ms: u64) -> Self {
        Self {
            period_ms,
            seen: HashMap::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    /// Notes that `key` was seen at `ip` at `now_ms`; whether to write it.
    pub fn note(&mut self, key: &K, ip: IpAddr, now_ms: u64) -> bool {
        let period = self.period_ms;
        // Looked up by reference: the common case (seen recently, same address) copies nothing.
        if self
            .seen
            .get(key)
            .is_some_and(|(was, at)| *was == ip && now_ms.saturating_sub(*at) < period)
        {
            return false;
        }
        self.seen.insert(key.clone(), (ip, now_ms));
        if self.seen.len() >= self.sweep_at {
            self.seen
                .retain(|_, (_, at)| now_ms.saturating_sub(*at) < period);
            self.sweep_at = (self.seen.len() * 2).max(MIN_SWEEP);
        }
        true
    }

    /// Devices remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: u64 = 300_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_sighting_is_written_when_the_address_changes_or_the_period_has_passed() {
        let mut seen = SeenThrottle::new(PERIOD);
        assert!(seen.note(&"d", ip(1), 1_000));
        assert!(!seen.note(&"d", ip(1), 1_000 + PERIOD - 1));
        assert!(seen.note(&"d", ip(2), 1_000 + PERIOD - 1));
        assert!(!seen.note(&"d", ip(2), 1_000 + PERIOD));
        assert!(seen.note(&"d", ip(2), 1_000 + 2 * PERIOD));
        assert!(seen.note(&"e", ip(2), 1_000 + 2 * PERIOD));
    }

    #[test]
    fn devices_not_seen_for_a_period_are_forgotten_as_others_arrive() {
        let mut seen = SeenThrottle::new(PERIOD);
        for n in 0..5_000u32 {
            assert!(seen.note(&n, ip(1), 0));
        }
        // All are recent: nothing is swept.
        assert_eq!(seen.len(), 5_000);
        // A period later 5,000 other devices arrive; the first 5,000 go at the next sweep.
        for n in 5_000..10_000u32 {
            assert!(seen.note(&n, ip(1), PERIOD));
        }
        assert!(seen.len() < 10_000, "{} remembered", seen.len());
        assert!((5_000..10_000).all(|n| !seen.note(&n, ip(1), PERIOD + 1)));
        // A forgotten device is written again, as it would have been anyway.
        assert!(seen.note(&0, ip(1), PERIOD + 1));
    }
}
