//! Handing the queues of unreachable destinations to relays: the driver of
//! `hearth_federation::relay::HandOff`, which decides when and to whom.

use std::sync::{Arc, Mutex};

use hearth_federation::Transport;
use hearth_federation::relay::HandOff;
use hearth_federation::relay::hand_off::Action;

use super::{FedNode, Wakers};
use crate::clock::now_ms;

/// Every half second: hands the pending envelopes of destinations unreachable for
/// `federation.relay.after_ms` to relays, and keeps handing what is queued for them afterwards,
/// until they are reachable again.
pub(super) async fn hand_off(node: Arc<FedNode>, transport: Transport, wakers: Arc<Wakers>) {
    let machine = Arc::new(Mutex::new(HandOff::new(
        node.own.clone(),
        node.relay.clone(),
    )));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        // A blocked hearth is neither a destination whose queue is handed over (it is held
        // until the block is lifted) nor a relay.
        let blocked = transport.blocked();
        let mut peers = wakers.peers();
        peers.retain(|p| !blocked.contains(p));
        let actions = {
            let directory = node.directory.read().expect("directory lock");
            machine.lock().expect("hand-off lock").tick(
                now_ms(),
                &peers,
                |d| transport.failing_for(d),
                node.finder.is_some(),
                |p| {
                    if blocked.contains(p) {
                        return None;
                    }
                    directory
                        .current_key(p)
                        .and_then(|k| hearth_federation::p2p::dht_position(&k))
                },
            )
        };
        for action in actions {
            match action {
                Action::Ask { destination } => {
                    let key = node
                        .directory
                        .read()
                        .expect("directory lock")
                        .current_key(&destination);
                    let (Some(finder), Some(key)) = (node.finder.clone(), key) else {
                        machine.lock().expect("hand-off lock").found(
                            destination,
                            Vec::new(),
                            now_ms(),
                        );
                        continue;
                    };
                    // Off this loop: a query near a dead hearth takes seconds.
                    let (machine, n) = (machine.clone(), 2 * node.relay.relays);
                    tokio::spawn(async move {
                        let found = finder.closest_hearths(&key, n).await;
                        tracing::debug!(%destination, ?found, "hearths the DHT places closest");
                        machine
                            .lock()
                            .expect("hand-off lock")
                            .found(destination, found, now_ms());
                    });
                }
                Action::Hand {
                    destination,
                    after,
                    relays,
                } => {
                    let (worker, dest) = (node.clone(), destination.clone());
                    let result = tokio::task::spawn_blocking(move || {
                        worker.hand_to_relays(&dest, after, &relays)
                    })
                    .await;
                    match result {
                        Ok(Ok(last)) => {
                            if last != after {
                                tracing::info!(%destination, "handed pending envelopes to relays");
                            }
                            machine
                                .lock()
                                .expect("hand-off lock")
                                .handed(destination, last);
                        }
                        Ok(Err(e)) => {
                            tracing::error!(%destination, error = %e, "cannot hand envelopes to relays")
                        }
                        Err(_) => return,
                    }
                }
            }
        }
    }
}
