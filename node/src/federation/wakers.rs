//! One wake-up signal per peer's outbound queue, and starting the drivers of peers learnt later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use hearth_spec::ServerName;
use tokio::sync::Notify;

use crate::chat::committer::OutboxWake;

/// One wake-up signal per peer's outbound queue. Peers learnt after start get theirs (and their
/// queue drivers) through [`Wakers::add`]; a destination with none is handed to `unknown`, which
/// looks it up.
#[derive(Default)]
pub struct Wakers {
    wakers: RwLock<HashMap<ServerName, Arc<Notify>>>,
    /// Starts the drivers of a peer added after start. Cleared at stop (it holds the node,
    /// whose wake callback holds these wakers).
    pub(super) starter: Mutex<Option<PeerStarter>>,
    /// Called for a destination that has no driver (yet). Cleared at stop.
    unknown: Mutex<Option<UnknownHook>>,
}

/// Looks up a destination that has no driver.
type UnknownHook = Box<dyn Fn(&ServerName) + Send + Sync>;

/// Starts the queue drivers of a peer learnt after start.
type PeerStarter = Box<dyn FnMut(&ServerName, Arc<Notify>) + Send>;

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakers")
            .field("peers", &self.peers().len())
            .finish()
    }
}

impl Wakers {
    pub fn new(peers: &[ServerName]) -> Self {
        Self {
            wakers: RwLock::new(
                peers
                    .iter()
                    .map(|p| (p.clone(), Arc::new(Notify::new())))
                    .collect(),
            ),
            ..Self::default()
        }
    }

    /// Every peer with a queue driver.
    pub fn peers(&self) -> Vec<ServerName> {
        let mut peers: Vec<ServerName> = self
            .wakers
            .read()
            .expect("wakers lock")
            .keys()
            .cloned()
            .collect();
        peers.sort();
        peers
    }

    pub(super) fn all(&self) -> Vec<(ServerName, Arc<Notify>)> {
        self.wakers
            .read()
            .expect("wakers lock")
            .iter()
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect()
    }

    /// What to do with a destination that has no driver (look it up).
    pub fn on_unknown(&self, unknown: UnknownHook) {
        *self.unknown.lock().expect("unknown hook lock") = Some(unknown);
    }

    /// Drops the hooks (and with them the running federation they hold).
    pub(super) fn clear_hooks(&self) {
        self.starter.lock().expect("starter lock").take();
        self.unknown.lock().expect("unknown hook lock").take();
    }

    /// Gives a peer learnt since start its queue drivers; false if it has them.
    pub fn add(&self, peer: &ServerName) -> bool {
        let notify = {
            let mut wakers = self.wakers.write().expect("wakers lock");
            if wakers.contains_key(peer) {
                return false;
            }
            let notify = Arc::new(Notify::new());
            wakers.insert(peer.clone(), notify.clone());
            notify
        };
        if let Some(start) = self.starter.lock().expect("starter lock").as_mut() {
            start(peer, notify.clone());
        }
        notify.notify_one();
        true
    }

    /// The committer's callback: wake the drivers of these destinations.
    pub fn callback(self: &Arc<Self>) -> OutboxWake {
        let wakers = self.clone();
        Arc::new(move |destinations: &[ServerName]| {
            for d in destinations {
                let notify = wakers.wakers.read().expect("wakers lock").get(d).cloned();
                match notify {
                    Some(notify) => notify.notify_one(),
                    None => {
                        if let Some(unknown) =
                            wakers.unknown.lock().expect("unknown hook lock").as_ref()
                        {
                            unknown(d);
                        }
                    }
                }
            }
        })
    }
}
