//! Ephemeral signals: typing and presence. Drives the [`TypingTracker`] and [`PresenceTracker`]
//! state machines with the clock, looks up who may see each change (room members; users who
//! share a room) and hands the frames to the [`Hub`], and the changes of this hearth's users to
//! the peer hearths where those watchers live. Users of other hearths go through the same
//! trackers, fed by their hearths' signals, so they expire here on this hearth's clock if their
//! hearth goes quiet. Only last-seen and the hide setting are stored.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_spec::api::PresenceView;
use hearth_spec::client::{PresenceState, ServerFrame};
use hearth_spec::federation::Signal;
use hearth_spec::{DeviceId, ErrorBody, ErrorCode, RoomId, ServerName, UserId};

use crate::chat::hub::Hub;
use crate::clock::now_ms;
use crate::config::PresenceConfig;
use crate::federation::peer_signals::PeerSignals;
use crate::signals::presence::{PresenceChange, PresenceTracker};
use crate::signals::typing::{TypingChange, TypingTracker};
use crate::store::{Store, StoreError};

/// Typing and presence of the users this hearth's users can see.
pub struct Live {
    own: ServerName,
    store: Arc<Store>,
    hub: Arc<Hub>,
    peers: Arc<PeerSignals>,
    typing: Mutex<TypingTracker>,
    presence: Mutex<PresenceTracker>,
    /// When each local user last made an authenticated request (ms since the epoch): a client
    /// that only runs commands, without a live connection, was still seen then. In memory; after
    /// a restart last-seen falls back to the stored heartbeat time.
    active: Mutex<std::collections::HashMap<UserId, u64>>,
    /// How often peers are reminded who of this hearth's users is online.
    refresh: Duration,
}

/// The device a user of another hearth is online with, as far as this hearth knows.
fn peer_device() -> DeviceId {
    DeviceId::parse("federation").expect("a valid device id")
}

/// The servers of `users` other than `own`.
fn servers_of<'a>(
    own: &ServerName,
    users: impl IntoIterator<Item = &'a UserId>,
) -> BTreeSet<ServerName> {
    users
        .into_iter()
        .map(UserId::server_name)
        .filter(|s| s != own)
        .collect()
}

impl Live {
    /// Trackers with the configured timeouts.
    pub fn new(
        own: ServerName,
        store: Arc<Store>,
        hub: Arc<Hub>,
        peers: Arc<PeerSignals>,
        config: &PresenceConfig,
    ) -> Self {
        Self {
            own,
            store,
            hub,
            peers,
            // Three reminders per offline timeout, so one lost reminder does not flap a user.
            refresh: Duration::from_millis((config.offline_after_ms / 3).max(1)),
            typing: Mutex::new(TypingTracker::new(Duration::from_millis(
                config.typing_timeout_ms,
            ))),
            presence: Mutex::new(PresenceTracker::new(
                Duration::from_millis(config.offline_after_ms),
                Duration::from_millis(config.coalesce_ms),
            )),
            active: Mutex::default(),
        }
    }

    /// `user` made a request just now (last seen, not online: only a live device is online).
    pub fn active(&self, user: &UserId) {
        self.active
            .lock()
            .expect("activity lock")
            .insert(user.clone(), crate::clock::now_ms());
    }

    /// Expires typing and presence on a short tick until the hearth stops.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_refresh = Instant::now();
        loop {
            tick.tick().await;
            let now = Instant::now();
            self.tick(now);
            if now.duration_since(last_refresh) >= self.refresh {
                last_refresh = now;
                self.remind_peers();
            }
        }
    }

    fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.own
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

    /// A member starts or stops typing in a room (a user of this hearth, or of the peer that
    /// said so). The caller has checked that `user` is a member of `room`.
    pub fn typing(&self, user: &UserId, room: &RoomId, typing: bool) {
        let change = self.typing.lock().expect("typing lock").handle(
            room.clone(),
            user.clone(),
            typing,
            Instant::now(),
        );
        metrics::counter!("hearth_typing_signals_total").increment(1);
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
        if self.is_local(&change.user) {
            self.peers.send(
                &servers_of(&self.own, &members),
                &Signal::Typing {
                    room: change.room.clone(),
                    user: change.user.clone(),
                    typing: change.typing,
                },
            );
        }
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

    /// A peer says its user came online or went offline. The caller has checked that the peer
    /// serves `user`.
    pub fn peer_presence(
        &self,
        user: &UserId,
        state: PresenceState,
        last_seen_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let hidden = last_seen_ms.is_none();
        let was_hidden = self.store.presence(user)?.hidden;
        if hidden != was_hidden {
            self.store.update_presence(user, |r| r.hidden = hidden)?;
        }
        if hidden {
            self.presence
                .lock()
                .expect("presence lock")
                .gone(user, &peer_device(), now, 0);
            if !was_hidden {
                self.hub.signal(
                    &self.contacts(user)?,
                    &ServerFrame::Presence {
                        user_id: user.clone(),
                        state: PresenceState::Offline,
                        last_seen_ts: None,
                    },
                );
            }
            return Ok(());
        }
        let last_seen_ms = last_seen_ms.unwrap_or_default();
        let change = {
            let mut tracker = self.presence.lock().expect("presence lock");
            match state {
                PresenceState::Online => tracker.heartbeat(user, &peer_device(), now, last_seen_ms),
                PresenceState::Offline => tracker.gone(user, &peer_device(), now, last_seen_ms),
            }
        };
        if let Some(change) = change {
            self.announce_presence(&change);
        }
        Ok(())
    }

    fn announce_presence(&self, change: &PresenceChange) {
        let state = match change.state {
            PresenceState::Online => "online",
            PresenceState::Offline => "offline",
        };
        metrics::counter!("hearth_presence_changes_total", "state" => state).increment(1);
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
            if self.is_local(&change.user) {
                self.tell_peers(
                    &change.user,
                    change.state,
                    Some(change.last_seen_ms),
                    &watchers,
                );
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, user = %change.user, "cannot announce presence");
        }
    }

    fn tell_peers(
        &self,
        user: &UserId,
        state: PresenceState,
        last_seen_ms: Option<u64>,
        watchers: &BTreeSet<UserId>,
    ) {
        self.peers.send(
            &servers_of(&self.own, watchers),
            &Signal::Presence {
                user: user.clone(),
                state,
                last_seen_ms,
            },
        );
    }

    /// Reminds peers which of this hearth's users are online, so they keep them online (and
    /// time them out if the reminders stop).
    pub fn remind_peers(&self) {
        if !self.peers.has_peers() {
            return;
        }
        let online: Vec<(UserId, u64)> = {
            let tracker = self.presence.lock().expect("presence lock");
            tracker
                .online()
                .filter(|u| self.is_local(u))
                .map(|u| (u.clone(), tracker.last_seen_ms(u).unwrap_or_else(now_ms)))
                .collect()
        };
        for (user, last_seen_ms) in online {
            let result = (|| -> Result<(), StoreError> {
                if !self.store.presence(&user)?.hidden {
                    let watchers = self.contacts(&user)?;
                    self.tell_peers(&user, PresenceState::Online, Some(last_seen_ms), &watchers);
                }
                Ok(())
            })();
            if let Err(e) = result {
                tracing::error!(error = %e, %user, "cannot remind peers of presence");
            }
        }
    }

    /// Whether `user` shares a room with a user of this hearth.
    pub fn has_local_contact(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.contacts(user)?.iter().any(|c| self.is_local(c)))
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
            PresenceState::Offline => {
                let active = self
                    .active
                    .lock()
                    .expect("activity lock")
                    .get(user)
                    .copied();
                [tracker.last_seen_ms(user), record.last_seen_ms, active]
                    .into_iter()
                    .flatten()
                    .max()
            }
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
        let record = self.store.update_presence(user, |r| r.hidden = hidden)?;
        let state = self.presence.lock().expect("presence lock").state(user);
        let (shown, seen) = match (hidden, state) {
            (true, _) => (PresenceState::Offline, None),
            (false, PresenceState::Online) => (state, Some(now_ms())),
            (false, PresenceState::Offline) => (state, record.last_seen_ms),
        };
        let watchers = self.contacts(user)?;
        if state == PresenceState::Online {
            self.hub.signal(
                &watchers,
                &ServerFrame::Presence {
                    user_id: user.clone(),
                    state: shown,
                    last_seen_ts: seen,
                },
            );
        }
        // Peers mirror the setting, so they too show a hidden user offline with no last seen (a
        // user never seen has nothing to show again).
        if hidden || seen.is_some() {
            self.tell_peers(user, shown, seen, &watchers);
        }
        Ok(())
    }
}
