//! Outgoing ephemeral signals (typing, presence) for peer hearths: one bounded queue per peer,
//! drained by [`hearth_federation::drive_signals`]. Full queues drop: typing and presence are
//! worthless late, and a peer that cannot keep up must not make this hearth buffer without end.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hearth_spec::ServerName;
use hearth_spec::federation::Signal;
use tokio::sync::mpsc;

/// Signals queued per peer before new ones are dropped.
pub const QUEUE_DEPTH: usize = 4096;

/// The sending ends, one per known peer (configured, or discovered since).
#[derive(Debug, Default)]
pub struct PeerSignals {
    queues: RwLock<HashMap<ServerName, mpsc::Sender<Signal>>>,
}

/// The receiving ends, handed to federation when it starts.
pub type SignalQueues = HashMap<ServerName, mpsc::Receiver<Signal>>;

impl PeerSignals {
    /// A queue for each peer.
    pub fn new(peers: &[ServerName]) -> (Arc<Self>, SignalQueues) {
        let mut queues = HashMap::new();
        let mut receivers = HashMap::new();
        for peer in peers {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            queues.insert(peer.clone(), tx);
            receivers.insert(peer.clone(), rx);
        }
        (
            Arc::new(Self {
                queues: RwLock::new(queues),
            }),
            receivers,
        )
    }

    /// A queue for a peer learnt since start; `None` if it has one.
    pub fn add(&self, peer: &ServerName) -> Option<mpsc::Receiver<Signal>> {
        let mut queues = self.queues.write().expect("signal queues lock");
        if queues.contains_key(peer) {
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        queues.insert(peer.clone(), tx);
        Some(rx)
    }

    /// Whether there is any peer to tell anything.
    pub fn has_peers(&self) -> bool {
        !self.queues.read().expect("signal queues lock").is_empty()
    }

    /// Queues `signal` for each of `peers` that is known.
    pub fn send<'a>(&self, peers: impl IntoIterator<Item = &'a ServerName>, signal: &Signal) {
        let queues = self.queues.read().expect("signal queues lock");
        for peer in peers {
            let Some(queue) = queues.get(peer) else {
                continue;
            };
            if queue.try_send(signal.clone()).is_err() {
                tracing::debug!(%peer, "signal queue full or closed; dropping a signal");
            }
        }
    }
}
