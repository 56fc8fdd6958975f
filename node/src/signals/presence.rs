//! Presence: a user is online while any device heartbeats and offline `timeout` after the last
//! heartbeat of the last device, so a flaky network does not flap the status. Announcements are
//! coalesced: at most one per user per `coalesce` window, carrying the state at the window's end,
//! and none at all if the state came back to what was last announced. A plain state machine;
//! time comes in as an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hearth_spec::client::PresenceState;
use hearth_spec::{DeviceId, UserId};

/// A state change to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub user: UserId,
    pub state: PresenceState,
    /// The time of the last heartbeat, for last-seen (ms since the epoch, from the caller).
    pub last_seen_ms: u64,
}

#[derive(Debug)]
struct UserPresence {
    devices: HashMap<DeviceId, Instant>,
    state: PresenceState,
    announced: PresenceState,
    last_announce: Option<Instant>,
    last_seen_ms: u64,
}

/// Presence of the users with recent heartbeats.
#[derive(Debug)]
pub struct PresenceTracker {
    timeout: Duration,
    coalesce: Duration,
    users: HashMap<UserId, UserPresence>,
}

impl PresenceTracker {
    /// Offline `timeout` after the last heartbeat; at most one announcement per `coalesce`.
    pub fn new(timeout: Duration, coalesce: Duration) -> Self {
        Self {
            timeout,
            coalesce,
            users: HashMap::new(),
        }
    }

    /// A device heartbeats. Returns an announcement if the user just came online and the
    /// coalescing window allows it now.
    pub fn heartbeat(
        &mut self,
        user: &UserId,
        device: &DeviceId,
        now: Instant,
        now_ms: u64,
    ) -> Option<PresenceChange> {
        let entry = self
            .users
            .entry(user.clone())
            .or_insert_with(|| UserPresence {
                devices: HashMap::new(),
                state: PresenceState::Offline,
                announced: PresenceState::Offline,
                last_announce: None,
                last_seen_ms: now_ms,
            });
        entry.devices.insert(device.clone(), now);
        entry.last_seen_ms = now_ms;
        entry.state = PresenceState::Online;
        Self::announce_if_due(self.coalesce, user, entry, now)
    }

    /// A device is known to be gone (not merely quiet): the user goes offline now if it was the
    /// last one. Used for users of other hearths, whose hearth says when they leave.
    pub fn gone(
        &mut self,
        user: &UserId,
        device: &DeviceId,
        now: Instant,
        last_seen_ms: u64,
    ) -> Option<PresenceChange> {
        let entry = self.users.get_mut(user)?;
        entry.devices.remove(device);
        if !entry.devices.is_empty() {
            return None;
        }
        entry.state = PresenceState::Offline;
        entry.last_seen_ms = last_seen_ms;
        Self::announce_if_due(self.coalesce, user, entry, now)
    }

    /// Times devices out and releases coalesced announcements due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<PresenceChange> {
        let mut changes = Vec::new();
        let timeout = self.timeout;
        let coalesce = self.coalesce;
        self.users.retain(|user, entry| {
            entry
                .devices
                .retain(|_, last| now.saturating_duration_since(*last) < timeout);
            if entry.devices.is_empty() {
                entry.state = PresenceState::Offline;
            }
            if let Some(change) = Self::announce_if_due(coalesce, user, entry, now) {
                changes.push(change);
            }
            // Forget users who are offline, announced so, and past the coalescing window (a
            // forgotten user's next announcement is immediate).
            let settled = entry.state == PresenceState::Offline
                && entry.announced == PresenceState::Offline
                && entry
                    .last_announce
                    .is_none_or(|t| now.saturating_duration_since(t) >= coalesce);
            !settled
        });
        changes
    }

    /// The current state of a user.
    pub fn state(&self, user: &UserId) -> PresenceState {
        self.users
            .get(user)
            .map(|e| e.state)
            .unwrap_or(PresenceState::Offline)
    }

    /// The last heartbeat time (ms) of a user this tracker still knows.
    pub fn last_seen_ms(&self, user: &UserId) -> Option<u64> {
        self.users.get(user).map(|e| e.last_seen_ms)
    }

    /// Users online now.
    pub fn online(&self) -> impl Iterator<Item = &UserId> {
        self.users
            .iter()
            .filter(|(_, e)| e.state == PresenceState::Online)
            .map(|(u, _)| u)
    }

    fn announce_if_due(
        coalesce: Duration,
        user: &UserId,
        entry: &mut UserPresence,
        now: Instant,
    ) -> Option<PresenceChange> {
        if entry.state == entry.announced {
            return None;
        }
        if entry
            .last_announce
            .is_some_and(|t| now.saturating_duration_since(t) < coalesce)
        {
            return None;
        }
        entry.announced = entry.state;
        entry.last_announce = Some(now);
        Some(PresenceChange {
            user: user.clone(),
            state: entry.state,
            last_seen_ms: entry.last_seen_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user() -> UserId {
        UserId::parse("@a:localhost").unwrap()
    }
    fn dev(n: u8) -> DeviceId {
        DeviceId::parse(&format!("D{n}")).unwrap()
    }
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn online_on_heartbeat_offline_after_timeout_of_the_last_device() {
        let t0 = Instant::now();
        let mut p = PresenceTracker::new(30 * S, 2 * S);
        let on = p.heartbeat(&user(), &dev(1), t0, 1000).unwrap();
        assert_eq!(on.state, PresenceState::Online);
        p.heartbeat(&user(), &dev(2), t0 + 20 * S, 21_000);
        assert!(
            p.poll(t0 + 31 * S).is_empty(),
            "device 2 is still heartbeating"
        );
        let off = p.poll(t0 + 50 * S);
        assert_eq!(off.len(), 1);
        assert_eq!(
            (off[0].state, off[0].last_seen_ms),
            (PresenceState::Offline, 21_000)
        );
        assert_eq!(p.state(&user()), PresenceState::Offline);
    }

    #[test]
    fn flapping_is_coalesced_into_at_most_one_announcement_per_window() {
        let t0 = Instant::now();
        let mut p = PresenceTracker::new(S, 10 * S);
        let mut announced = 0;
        announced += p.heartbeat(&user(), &dev(1), t0, 0).iter().count();
        // Offline and online again, twice, within the window: nothing new is announced.
        for i in 1..=4u32 {
            let t = t0 + 2 * S * i;
            announced += p.poll(t).len();
            announced += p.heartbeat(&user(), &dev(1), t + S / 2, 0).iter().count();
        }
        assert_eq!(announced, 1);
    }

    #[test]
    fn a_gone_device_takes_its_user_offline_at_once() {
        let t0 = Instant::now();
        let mut p = PresenceTracker::new(30 * S, 2 * S);
        p.heartbeat(&user(), &dev(1), t0, 1000).unwrap();
        p.heartbeat(&user(), &dev(2), t0, 1000);
        assert_eq!(p.gone(&user(), &dev(1), t0 + 3 * S, 2000), None);
        assert_eq!(p.state(&user()), PresenceState::Online);
        let off = p.gone(&user(), &dev(2), t0 + 3 * S, 3000).unwrap();
        assert_eq!(
            (off.state, off.last_seen_ms),
            (PresenceState::Offline, 3000)
        );
        assert_eq!(p.gone(&user(), &dev(2), t0 + 4 * S, 4000), None);
    }

    proptest! {
        /// Whatever the heartbeat pattern, announcements alternate online/offline, are at least
        /// `coalesce` apart, and once heartbeats stop the user ends offline.
        #[test]
        fn announcements_alternate_and_respect_the_window(gaps in proptest::collection::vec(0u64..40_000, 1..50)) {
            let t0 = Instant::now();
            let coalesce = Duration::from_secs(5);
            let mut p = PresenceTracker::new(Duration::from_secs(30), coalesce);
            let mut now = t0;
            let mut log: Vec<(Instant, PresenceState)> = Vec::new();
            for gap in gaps {
                now += Duration::from_millis(gap);
                log.extend(p.poll(now).into_iter().map(|c| (now, c.state)));
                log.extend(p.heartbeat(&user(), &dev(1), now, 0).into_iter().map(|c| (now, c.state)));
            }
            for step in 0..20 {
                let t = now + Duration::from_secs(5 * step);
                log.extend(p.poll(t).into_iter().map(|c| (t, c.state)));
            }
            prop_assert_eq!(log.first().map(|l| l.1), Some(PresenceState::Online));
            prop_assert_eq!(log.last().map(|l| l.1), Some(PresenceState::Offline));
            for w in log.windows(2) {
                prop_assert_ne!(w[0].1, w[1].1);
                prop_assert!(w[1].0.duration_since(w[0].0) >= coalesce);
            }
        }
    }
}
