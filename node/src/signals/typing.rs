//! Typing indicators: who is typing where, expiring by themselves. A plain state machine; time
//! comes in as an argument. Nothing here is stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hearth_spec::{RoomId, UserId};

/// A change to announce to the room's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingChange {
    pub room: RoomId,
    pub user: UserId,
    pub typing: bool,
}

/// Who is typing, until when.
#[derive(Debug)]
pub struct TypingTracker {
    timeout: Duration,
    until: HashMap<(RoomId, UserId), Instant>,
}

impl TypingTracker {
    /// Typing expires `timeout` after the last start.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            until: HashMap::new(),
        }
    }

    /// A device says its user is (or is no longer) typing. Returns the change to announce, if
    /// the state changed (a renewal only extends the deadline).
    pub fn handle(
        &mut self,
        room: RoomId,
        user: UserId,
        typing: bool,
        now: Instant,
    ) -> Option<TypingChange> {
        let key = (room, user);
        if typing {
            let was = self.until.insert(key.clone(), now + self.timeout).is_some();
            (!was).then_some(TypingChange {
                room: key.0,
                user: key.1,
                typing: true,
            })
        } else {
            self.until.remove(&key).map(|_| TypingChange {
                room: key.0,
                user: key.1,
                typing: false,
            })
        }
    }

    /// Expires everything due at `now`.
    pub fn poll_expired(&mut self, now: Instant) -> Vec<TypingChange> {
        let due: Vec<_> = self
            .until
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .map(|key| {
                self.until.remove(&key);
                TypingChange {
                    room: key.0,
                    user: key.1,
                    typing: false,
                }
            })
            .collect()
    }

    /// When the next expiry is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (RoomId, UserId) {
        (
            RoomId::parse("!r:localhost").unwrap(),
            UserId::parse("@a:localhost").unwrap(),
        )
    }

    #[test]
    fn typing_starts_once_renews_and_expires() {
        let t0 = Instant::now();
        let (room, user) = ids();
        let mut t = TypingTracker::new(Duration::from_secs(5));
        assert!(t.handle(room.clone(), user.clone(), true, t0).is_some());
        assert!(
            t.handle(
                room.clone(),
                user.clone(),
                true,
                t0 + Duration::from_secs(3)
            )
            .is_none()
        );
        assert!(
            t.poll_expired(t0 + Duration::from_secs(5)).is_empty(),
            "renewed at 3 s"
        );
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(8)));
        let expired = t.poll_expired(t0 + Duration::from_secs(8));
        assert_eq!(
            expired,
            vec![TypingChange {
                room,
                user,
                typing: false
            }]
        );
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn explicit_stop_is_announced_once() {
        let t0 = Instant::now();
        let (room, user) = ids();
        let mut t = TypingTracker::new(Duration::from_secs(5));
        t.handle(room.clone(), user.clone(), true, t0);
        assert!(t.handle(room.clone(), user.clone(), false, t0).is_some());
        assert!(t.handle(room, user, false, t0).is_none());
        assert!(t.poll_expired(t0 + Duration::from_secs(60)).is_empty());
    }
}
