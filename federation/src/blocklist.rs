//! The hearths an admin has blocked: no federation traffic goes to or comes from them, directly
//! or through relays. The node keeps the list in its store; this is the live copy every part of
//! federation consults.

use std::collections::BTreeSet;
use std::sync::Arc;

use hearth_spec::ServerName;
use tokio::sync::watch;

/// The blocked hearths. Cheap to clone; every clone sees changes at once.
#[derive(Clone)]
pub struct Blocklist {
    blocked: Arc<watch::Sender<BTreeSet<ServerName>>>,
}

impl Default for Blocklist {
    fn default() -> Self {
        Self::new(BTreeSet::new())
    }
}

impl std::fmt::Debug for Blocklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.blocked.borrow().iter()).finish()
    }
}

impl Blocklist {
    /// A list holding `blocked`.
    pub fn new(blocked: impl IntoIterator<Item = ServerName>) -> Self {
        Self {
            blocked: Arc::new(watch::Sender::new(blocked.into_iter().collect())),
        }
    }

    /// Whether `server` is blocked.
    pub fn contains(&self, server: &ServerName) -> bool {
        self.blocked.borrow().contains(server)
    }

    /// Blocks (`true`) or unblocks `server`; whether that changed anything.
    pub fn set(&self, server: &ServerName, blocked: bool) -> bool {
        self.blocked.send_if_modified(|set| {
            if blocked {
                set.insert(server.clone())
            } else {
                set.remove(server)
            }
        })
    }

    /// Returns once `server` is not blocked (at once if it is not).
    pub async fn until_unblocked(&self, server: &ServerName) {
        let mut changes = self.blocked.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = changes.wait_for(|set| !set.contains(server)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_waiter_for_a_blocked_hearth_wakes_when_it_is_unblocked() {
        let list = Blocklist::new([name("bad.test")]);
        assert!(list.contains(&name("bad.test")));
        assert!(!list.contains(&name("good.test")));
        list.until_unblocked(&name("good.test")).await;
        let waiter = {
            let list = list.clone();
            tokio::spawn(async move { list.until_unblocked(&name("bad.test")).await })
        };
        assert!(!list.set(&name("bad.test"), true), "already blocked");
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(list.set(&name("bad.test"), false));
        waiter.await.unwrap();
        assert!(!list.contains(&name("bad.test")));
    }
}
