//! Peer-assisted delivery as a relay: sealed envelopes are held durably in the destination's
//! outbound queue and handed over by the ordinary queue driver when the destination is back.
//! The rules (quotas, refusals, expiry, choosing relays) are `hearth_federation::relay`; this is
//! the ledger of those rules kept beside the store.

use std::sync::{Arc, Mutex};

use hearth_federation::relay::{Holding, Ledger, RelayConfig};
use hearth_spec::ServerName;
use hearth_spec::federation::{Outcome, SealedEnvelope};

use crate::clock::now_ms;
use crate::federation::store::FederationStore;
use crate::store::StoreError;
use crate::store::tables::OutItem;

/// What this hearth holds for others: the ledger, and the store it is written to.
#[derive(Debug)]
pub struct Custody {
    store: Arc<dyn FederationStore>,
    ledger: Mutex<Ledger>,
}

impl Custody {
    /// Counts what the store already holds.
    pub fn load(
        own: ServerName,
        config: RelayConfig,
        store: Arc<dyn FederationStore>,
    ) -> Result<Self, StoreError> {
        let held = store
            .outbox_items(&|item| matches!(item, OutItem::Relayed { .. }))?
            .into_iter()
            .filter_map(|(destination, id, item)| match item {
                OutItem::Relayed { origin, sealed, .. } => Some((destination, id, origin, sealed)),
                _ => None,
            })
            .collect();
        Ok(Self::new(own, config, store, held))
    }

    /// Custody of `held`: (destination, queue entry id, origin, seal) of each envelope the
    /// store holds for others.
    pub fn new(
        own: ServerName,
        config: RelayConfig,
        store: Arc<dyn FederationStore>,
        held: Vec<(ServerName, u64, ServerName, SealedEnvelope)>,
    ) -> Self {
        let mut ledger = Ledger::new(own, config);
        for (destination, id, origin, sealed) in held {
            ledger.add(destination, id, origin, &sealed);
        }
        Self {
            store,
            ledger: Mutex::new(ledger),
        }
    }

    /// What is held, per origin.
    pub fn holdings(&self) -> Vec<(ServerName, Holding)> {
        self.ledger.lock().expect("custody lock").holdings()
    }

    /// Takes sealed envelopes from `origin` into custody, in one durable write. `known` says
    /// whether a destination is a peer. Returns an outcome per item and the destinations whose
    /// queues grew.
    pub fn take(
        &self,
        origin: &ServerName,
        items: Vec<(ServerName, SealedEnvelope)>,
        known: impl Fn(&ServerName) -> bool,
    ) -> Result<(Vec<Outcome>, Vec<ServerName>), StoreError> {
        let outcomes = self
            .ledger
            .lock()
            .expect("custody lock")
            .decide(origin, &items, known);
        let held_since_ms = now_ms();
        let queued: Vec<(ServerName, OutItem)> = items
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == Outcome::Stored)
            .map(|((destination, sealed), _)| {
                let item = OutItem::Relayed {
                    origin: origin.clone(),
                    sealed,
                    held_since_ms,
                };
                (destination, item)
            })
            .collect();
        let ids = self.store.queue_outbox(&queued)?;
        let mut ledger = self.ledger.lock().expect("custody lock");
        let mut grew = Vec::new();
        for ((destination, id), (_, item)) in ids.into_iter().zip(&queued) {
            if let OutItem::Relayed { sealed, .. } = item {
                ledger.add(destination.clone(), id, origin.clone(), sealed);
            }
            if !grew.contains(&destination) {
                grew.push(destination);
            }
        }
        Ok((outcomes, grew))
    }

    /// Queue entries for `destination` left the queue (handed over, refused, or expired).
    pub fn released(&self, destination: &ServerName, ids: &[u64]) {
        self.ledger
            .lock()
            .expect("custody lock")
            .released(destination, ids);
    }

    /// Whether an envelope held since `held_since_ms` is past its time.
    pub fn expired(&self, held_since_ms: u64) -> bool {
        self.ledger
            .lock()
            .expect("custody lock")
            .expired(held_since_ms, now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use hearth_spec::federation::{RejectCode, RetryCode};

    fn n(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn custody_respects_the_quota_and_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let config = RelayConfig {
            max_envelopes_per_origin: 2,
            block: vec![n("bad.t")],
            ..RelayConfig::default()
        };
        let custody = Custody::load(n("r.t"), config.clone(), store.clone()).unwrap();
        let seal = |e: u8| SealedEnvelope {
            ephemeral: [e; 32],
            ciphertext: vec![0; 100],
        };
        let counter = std::cell::Cell::new(0u8);
        let item = |d: &str| {
            counter.set(counter.get() + 1);
            (n(d), seal(counter.get()))
        };
        let known = |d: &ServerName| d.as_str() != "unknown.t";
        let (outcomes, grew) = custody
            .take(
                &n("a.t"),
                vec![
                    item("c.t"),
                    item("r.t"),
                    item("unknown.t"),
                    item("a.t"),
                    item("c.t"),
                    item("c.t"),
                ],
                known,
            )
            .unwrap();
        use Outcome::*;
        assert_eq!(
            outcomes,
            vec![
                Stored,
                Rejected(RejectCode::CustodyRefused),
                Rejected(RejectCode::CustodyRefused),
                Rejected(RejectCode::CustodyRefused),
                Stored,
                Retry(RetryCode::CustodyFull),
            ]
        );
        assert_eq!(grew, vec![n("c.t")]);
        // The same seal again (an origin resending a batch) is held once.
        let (outcomes, _) = custody
            .take(&n("a.t"), vec![(n("c.t"), seal(1))], known)
            .unwrap();
        assert_eq!(outcomes, vec![Duplicate]);
        let (outcomes, _) = custody.take(&n("bad.t"), vec![item("c.t")], known).unwrap();
        assert_eq!(outcomes, vec![Rejected(RejectCode::CustodyRefused)]);
        assert_eq!(
            custody.holdings(),
            vec![(
                n("a.t"),
                Holding {
                    envelopes: 2,
                    bytes: 200
                }
            )]
        );
        // Counted again from the store after a restart; released entries free the quota.
        let custody = Custody::load(n("r.t"), config, store.clone()).unwrap();
        assert_eq!(custody.holdings()[0].1.envelopes, 2);
        let ids: Vec<u64> = store
            .outbox_pending(&n("c.t"), None, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        custody.released(&n("c.t"), &ids[..1]);
        assert_eq!(custody.holdings()[0].1.envelopes, 1);
    }
}
