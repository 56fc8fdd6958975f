//! Live notification of inbox changes: one watch per user with a connected device.

use std::collections::HashMap;
use std::sync::Mutex;

use hearth_spec::UserId;
use tokio::sync::watch;

/// Wakes a user's connected devices when their inbox grows. Carries only the new head; the
/// devices read the entries from the store, so a slow device never makes the hub buffer.
#[derive(Debug, Default)]
pub struct Hub {
    users: Mutex<HashMap<UserId, watch::Sender<u64>>>,
}

impl Hub {
    /// A receiver that changes whenever `user`'s inbox head moves.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock().expect("hub lock");
        users
            .entry(user.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Announces new inbox heads. Users nobody watches any more are forgotten.
    pub fn notify<'a>(&self, heads: impl IntoIterator<Item = (&'a UserId, u64)>) {
        let mut users = self.users.lock().expect("hub lock");
        for (user, head) in heads {
            if let Some(sender) = users.get(user) {
                if sender.receiver_count() == 0 {
                    users.remove(user);
                } else {
                    sender.send_replace(head);
                }
            }
        }
    }

    /// Drops every watch, ending live sessions (at shutdown).
    pub fn close(&self) {
        self.users.lock().expect("hub lock").clear();
    }
}
