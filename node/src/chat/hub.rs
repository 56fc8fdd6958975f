//! Live fan-out to connected devices: a watch of each user's inbox head, a broadcast of ephemeral
//! signals (receipts, typing, presence) and a count of each device's live connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hearth_client_api::{InboxHead, Subscription};
use hearth_spec::client::ServerFrame;
use hearth_spec::{DeviceId, UserId};
use tokio::sync::{broadcast, watch};

/// Signals buffered per user; a device that falls further behind skips the oldest (they are
/// ephemeral or high-water marks that can be queried again).
const SIGNAL_BUFFER: usize = 256;

struct UserEntry {
    inbox: watch::Sender<InboxHead>,
    signals: broadcast::Sender<Arc<str>>,
    devices: HashMap<DeviceId, usize>,
}

/// Wakes a user's connected devices. Carries only the inbox head for messages (the devices read
/// the entries from the store, so a slow device never makes the hub buffer) and pre-serialised
/// frames for signals (serialised once, shared by every recipient).
#[derive(Default)]
pub struct Hub {
    users: Mutex<HashMap<UserId, UserEntry>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

/// Marks a device offline when its connection's subscription is dropped.
struct OnlineGuard {
    hub: Arc<Hub>,
    user: UserId,
    device: DeviceId,
}

impl Drop for OnlineGuard {
    fn drop(&mut self) {
        let mut users = self.hub.users.lock().expect("hub lock");
        if let Some(entry) = users.get_mut(&self.user)
            && let Some(count) = entry.devices.get_mut(&self.device)
        {
            *count -= 1;
            if *count == 0 {
                entry.devices.remove(&self.device);
            }
        }
    }
}

impl Hub {
    /// Subscribes a connection of `device` to its user's inbox and signals.
    pub fn subscribe(self: &Arc<Self>, user: &UserId, device: &DeviceId) -> Subscription {
        let mut users = self.users.lock().expect("hub lock");
        let entry = users.entry(user.clone()).or_insert_with(|| UserEntry {
            inbox: watch::channel(InboxHead {
                position: 0,
                landed: Instant::now(),
            })
            .0,
            signals: broadcast::channel(SIGNAL_BUFFER).0,
            devices: HashMap::new(),
        });
        *entry.devices.entry(device.clone()).or_insert(0) += 1;
        Subscription {
            inbox: entry.inbox.subscribe(),
            signals: entry.signals.subscribe(),
            guard: Box::new(OnlineGuard {
                hub: self.clone(),
                user: user.clone(),
                device: device.clone(),
            }),
        }
    }

    /// Announces new inbox heads. Users nobody watches any more are forgotten.
    pub fn notify<'a>(&self, heads: impl IntoIterator<Item = (&'a UserId, u64)>) {
        let landed = Instant::now();
        let mut users = self.users.lock().expect("hub lock");
        for (user, head) in heads {
            if let Some(entry) = users.get(user) {
                if entry.inbox.receiver_count() == 0 {
                    users.remove(user);
                } else {
                    entry.inbox.send_replace(InboxHead {
                        position: head,
                        landed,
                    });
                }
            }
        }
    }

    /// Sends a frame to every connected device of `users`. Returns how many users had one.
    pub fn signal<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        frame: &ServerFrame,
    ) -> usize {
        let text: Arc<str> = serde_json::to_string(frame)
            .expect("frames serialise")
            .into();
        let users_map = self.users.lock().expect("hub lock");
        let mut reached = 0;
        for user in users {
            if let Some(entry) = users_map.get(user)
                && entry.signals.send(text.clone()).is_ok()
            {
                reached += 1;
            }
        }
        reached
    }

    /// Whether a device has a live connection.
    pub fn is_online(&self, user: &UserId, device: &DeviceId) -> bool {
        let users = self.users.lock().expect("hub lock");
        users
            .get(user)
            .is_some_and(|e| e.devices.contains_key(device))
    }

    /// Drops every sender, ending live sessions (at shutdown).
    pub fn close(&self) {
        self.users.lock().expect("hub lock").clear();
    }
}
