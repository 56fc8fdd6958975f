//! Ephemeral signals: typing and presence. Drives the [`TypingTracker`] and [`PresenceTracker`]
//! state machines with the clock, looks up who may see each change (room members; users who
//! share a room) and hands the frames to the [`Hub`]. Only last-seen and the hide setting are
//! stored.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_spec::api::PresenceView;
use hearth_spec::client::{PresenceState, ServerFrame};
use hearth_spec::{DeviceId, ErrorBody, ErrorCode, RoomId, UserId};

use crate::clock::now_ms;
use crate::config::PresenceConfig;
use crate::hub::Hub;
use crate::presence::{PresenceChange, PresenceTracker};
use crate::store::{Store, StoreError};
use crate::typing::{TypingChange, TypingTracker};

/// Typing and presence of this hearth's users.
pub struct Live {
    store: Arc<Store>,
    hub: Arc<Hub>,
    typing: Mutex<TypingTracker>,
    presence: Mutex<PresenceTracker>,
}

impl Live {
    /// Trackers with the configured timeouts.
    pub fn new(store: Arc<Store>, hub: Arc<Hub>, config: &PresenceConfig) -> Self {
        Self {
            store,
            hub,
            typing: Mutex::new(TypingTracker::new(Duration::from_millis(
                config.typing_timeout_ms,
            ))),
            presence: Mutex::new(PresenceTracker::new(
                Duration::from_millis(config.offline_after_ms),
                Duration::from_millis(config.coalesce_ms),
            )),
        }
    }

    /// Expires typing and presence on a short tick until the hearth stops.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            self.tick(Instant::now());
        }
    }

    /// One step of the clock.
    pub fn tick(&self, now: Instant) {
        let typing = self.typing.lock().expect("typing lock").poll_expired(now);
        for change in typing {
            self.announce_typing(&change);
        }
        let presence = self.presence.lock().expect("presence lock").poll(now);
        for change in presence {
            self.announce_presence(&change);
        }
    }

    /// A member starts or stops typing in a room.
    /// The caller has checked that `user` is a member of `room`.
    pub fn typing(&self, user: &UserId, room: &RoomId, typing: bool) {
        let change = self.typing.lock().expect("typing lock").handle(
            room.clone(),
            user.clone(),
            typing,
            Instant::now(),
        );
        if let Some(change) = change {
            self.announce_typing(&change);
        }
    }

    fn announce_typing(&self, change: &TypingChange) {
        let members = match self.store.members(&change.room) {
            Ok(m) => m,
            Err(e) => return tracing::error!(error = %e, "cannot read room members for typing"),
        };
        let others = members.iter().filter(|m| **m != change.user);
        self.hub.signal(
            others,
            &ServerFrame::Typing {
                room_id: change.room.clone(),
                user_id: change.user.clone(),
                typing: change.typing,
            },
        );
    }

    /// A device of `user` is in use.
    pub fn heartbeat(&self, user: &UserId, device: &DeviceId) {
        let change = self.presence.lock().expect("presence lock").heartbeat(
            user,
            device,
            Instant::now(),
            now_ms(),
        );
        if let Some(change) = change {
            self.announce_presence(&change);
        }
    }

    fn announce_presence(&self, change: &PresenceChange) {
        let result = (|| -> Result<(), StoreError> {
            if change.state == PresenceState::Offline {
                self.store.update_presence(&change.user, |r| {
                    r.last_seen_ms = Some(change.last_seen_ms)
                })?;
            }
            if self.store.presence(&change.user)?.hidden {
                return Ok(());
            }
            let watchers = self.contacts(&change.user)?;
            self.hub.signal(
                &watchers,
                &ServerFrame::Presence {
                    user_id: change.user.clone(),
                    state: change.state,
                    last_seen_ts: Some(change.last_seen_ms),
                },
            );
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, user = %change.user, "cannot announce presence");
        }
    }

    /// Users who share at least one room with `user`, not counting `user`.
    pub fn contacts(&self, user: &UserId) -> Result<BTreeSet<UserId>, StoreError> {
        let mut contacts = BTreeSet::new();
        for room in self.store.user_rooms(user)? {
            contacts.extend(self.store.members(&room)?);
        }
        contacts.remove(user);
        Ok(contacts)
    }

    /// `user`'s presence as `viewer` may see it.
    pub fn view(&self, viewer: &UserId, user: &UserId) -> Result<PresenceView, ErrorBody> {
        if viewer != user && !self.contacts(viewer)?.contains(user) {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("you share no room with {user}, so you cannot see their presence"),
            ));
        }
        let record = self.store.presence(user)?;
        if record.hidden && viewer != user {
            return Ok(PresenceView {
                user_id: user.clone(),
                state: PresenceState::Offline,
                last_seen_ts: None,
            });
        }
        let tracker = self.presence.lock().expect("presence lock");
        let state = tracker.state(user);
        let last_seen_ts = match state {
            PresenceState::Online => tracker.last_seen_ms(user),
            PresenceState::Offline => tracker.last_seen_ms(user).or(record.last_seen_ms),
        };
        Ok(PresenceView {
            user_id: user.clone(),
            state,
            last_seen_ts,
        })
    }

    /// Presence frames for the contacts of `user` who are online, for a new connection.
    pub fn online_contacts(&self, user: &UserId) -> Vec<ServerFrame> {
        let contacts = match self.contacts(user) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read contacts");
                return Vec::new();
            }
        };
        // Take what is needed from the tracker, then read the store without holding its lock
        // (heartbeats wait on it).
        let online: Vec<(UserId, Option<u64>)> = {
            let tracker = self.presence.lock().expect("presence lock");
            contacts
                .into_iter()
                .filter(|c| tracker.state(c) == PresenceState::Online)
                .map(|c| {
                    let seen = tracker.last_seen_ms(&c);
                    (c, seen)
                })
                .collect()
        };
        online
            .into_iter()
            .filter(|(c, _)| self.store.presence(c).map(|r| !r.hidden).unwrap_or(false))
            .map(|(user_id, last_seen_ts)| ServerFrame::Presence {
                user_id,
                state: PresenceState::Online,
                last_seen_ts,
            })
            .collect()
    }

    /// Hides or shows a user's presence. Hiding announces the user offline to contacts.
    pub fn set_hidden(&self, user: &UserId, hidden: bool) -> Result<(), StoreError> {
        self.store.update_presence(user, |r| r.hidden = hidden)?;
        let state = self.presence.lock().expect("presence lock").state(user);
        if state == PresenceState::Online {
            let watchers = self.contacts(user)?;
            let frame = if hidden {
                ServerFrame::Presence {
                    user_id: user.clone(),
                    state: PresenceState::Offline,
                    last_seen_ts: None,
                }
            } else {
                ServerFrame::Presence {
                    user_id: user.clone(),
                    state,
                    last_seen_ts: Some(now_ms()),
                }
            };
            self.hub.signal(&watchers, &frame);
        }
        Ok(())
    }
}
