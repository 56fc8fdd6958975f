//! Peer-assisted delivery (see `spec/federation.md`, "Sealed relays").
//!
//! As an origin: a destination that has been unreachable for `federation.relay.after_ms` has its
//! pending envelopes signed, sealed to its key and handed to the relays closest to it. As a
//! relay: sealed envelopes are held durably in the destination's outbound queue, under a quota
//! per origin and a time limit, and handed over by the ordinary queue driver when the
//! destination is back. The relay sees only the destination and the size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hearth_spec::ServerName;
use hearth_spec::federation::{Outcome, RejectCode, RetryCode, SealedEnvelope};

use crate::clock::now_ms;
use crate::config::RelayConfig;
use crate::store::tables::OutItem;
use crate::store::{Store, StoreError};

/// The `n` peers closest to `destination` in the DHT (Kademlia's XOR distance between the
/// positions `position` gives: see `hearth_federation::p2p::dht_position`), leaving out the
/// destination, this hearth, blocked peers and peers with no position.
pub fn choose_relays(
    own: &ServerName,
    destination: &ServerName,
    peers: &[ServerName],
    config: &RelayConfig,
    position: impl Fn(&ServerName) -> Option<[u8; 32]>,
) -> Vec<ServerName> {
    let Some(target) = position(destination) else {
        return Vec::new();
    };
    let mut candidates: Vec<([u8; 32], ServerName)> = peers
        .iter()
        .filter(|p| *p != destination && *p != own && !config.block.contains(p))
        .filter_map(|p| {
            let at = position(p)?;
            let mut distance = [0u8; 32];
            for (d, (a, b)) in distance.iter_mut().zip(at.iter().zip(target.iter())) {
                *d = a ^ b;
            }
            Some((distance, p.clone()))
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .take(config.relays)
        .map(|(_, p)| p)
        .collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub envelopes: u64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Held {
    /// (destination, queue entry id) → (origin, bytes, the seal's ephemeral key).
    entries: HashMap<(ServerName, u64), (ServerName, u64, [u8; 32])>,
    per_origin: HashMap<ServerName, Holding>,
    /// The ephemeral keys of the seals held: every seal has its own, so a seal handed over
    /// twice (an origin resending a batch) is held once.
    seals: std::collections::HashSet<[u8; 32]>,
}

/// What this hearth holds for others, and the rules for taking more.
#[derive(Debug)]
pub struct Custody {
    own: ServerName,
    config: RelayConfig,
    store: Arc<Store>,
    held: Mutex<Held>,
}

impl Custody {
    /// Counts what the store already holds.
    pub fn load(
        own: ServerName,
        config: RelayConfig,
        store: Arc<Store>,
    ) -> Result<Self, StoreError> {
        let held = store
            .outbox_items(|item| matches!(item, OutItem::Relayed { .. }))?
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
        store: Arc<Store>,
        held: Vec<(ServerName, u64, ServerName, SealedEnvelope)>,
    ) -> Self {
        let mut counted = Held::default();
        for (destination, id, origin, sealed) in held {
            counted.add(destination, id, origin, &sealed);
        }
        Self {
            own,
            config,
            store,
            held: Mutex::new(counted),
        }
    }

    /// What is held, per origin.
    pub fn holdings(&self) -> Vec<(ServerName, Holding)> {
        let held = self.held.lock().expect("custody lock");
        let mut out: Vec<_> = held
            .per_origin
            .iter()
            .map(|(o, h)| (o.clone(), *h))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn refuses(&self, origin: &ServerName, destination: &ServerName, known: bool) -> bool {
        !self.config.serve
            || !known
            || *destination == self.own
            || destination == origin
            || self.config.block.contains(origin)
            || (!self.config.allow.is_empty() && !self.config.allow.contains(origin))
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
        let mut outcomes = Vec::with_capacity(items.len());
        let mut queued = Vec::new();
        {
            let held = self.held.lock().expect("custody lock");
            let mut holding = held.per_origin.get(origin).copied().unwrap_or_default();
            let mut batch_seals = std::collections::HashSet::new();
            for (destination, sealed) in items {
                let bytes = sealed.ciphertext.len() as u64;
                if self.refuses(origin, &destination, known(&destination)) {
                    outcomes.push(Outcome::Rejected(RejectCode::CustodyRefused));
                    continue;
                }
                if held.seals.contains(&sealed.ephemeral) || !batch_seals.insert(sealed.ephemeral) {
                    outcomes.push(Outcome::Duplicate);
                    continue;
                }
                if holding.envelopes + 1 > self.config.max_envelopes_per_origin
                    || holding.bytes + bytes > self.config.max_bytes_per_origin
                {
                    outcomes.push(Outcome::Retry(RetryCode::CustodyFull));
                    continue;
                }
                holding.envelopes += 1;
                holding.bytes += bytes;
                outcomes.push(Outcome::Stored);
                queued.push((
                    destination,
                    OutItem::Relayed {
                        origin: origin.clone(),
                        sealed,
                        held_since_ms: now_ms(),
                    },
                ));
            }
        }
        let ids = self.store.queue_outbox(&queued)?;
        let mut held = self.held.lock().expect("custody lock");
        let mut grew = Vec::new();
        for ((destination, id), (_, item)) in ids.into_iter().zip(&queued) {
            if let OutItem::Relayed { sealed, .. } = item {
                held.add(destination.clone(), id, origin.clone(), sealed);
            }
            if !grew.contains(&destination) {
                grew.push(destination);
            }
        }
        Ok((outcomes, grew))
    }

    /// Queue entries for `destination` left the queue (handed over, refused, or expired).
    pub fn released(&self, destination: &ServerName, ids: &[u64]) {
        let mut held = self.held.lock().expect("custody lock");
        if held.entries.is_empty() {
            return;
        }
        for id in ids {
            let Some((origin, bytes, seal)) = held.entries.remove(&(destination.clone(), *id))
            else {
                continue;
            };
            held.seals.remove(&seal);
            if let Some(h) = held.per_origin.get_mut(&origin) {
                h.envelopes -= 1;
                h.bytes -= bytes;
                if h.envelopes == 0 {
                    held.per_origin.remove(&origin);
                }
            }
        }
    }

    /// Whether an envelope held since `held_since_ms` is past its time.
    pub fn expired(&self, held_since_ms: u64) -> bool {
        held_since_ms.saturating_add(self.config.hold_ms) < now_ms()
    }
}

impl Held {
    fn add(
        &mut self,
        destination: ServerName,
        id: u64,
        origin: ServerName,
        sealed: &SealedEnvelope,
    ) {
        let bytes = sealed.ciphertext.len() as u64;
        let h = self.per_origin.entry(origin.clone()).or_default();
        h.envelopes += 1;
        h.bytes += bytes;
        self.seals.insert(sealed.ephemeral);
        self.entries
            .insert((destination, id), (origin, bytes, sealed.ephemeral));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn relays_are_the_closest_other_peers() {
        let peers: Vec<ServerName> = ["a.t", "b.t", "c.t", "d.t", "e.t"].map(n).to_vec();
        let config = RelayConfig {
            relays: 2,
            block: vec![n("e.t")],
            ..RelayConfig::default()
        };
        // Positions chosen by hand: c.t at 0, then b.t (1), e.t (2, blocked), d.t (4), a.t (8).
        let position = |p: &ServerName| {
            let at = match p.as_str() {
                "c.t" => 0,
                "b.t" => 1,
                "e.t" => 2,
                "d.t" => 4,
                "a.t" => 8,
                _ => return None,
            };
            let mut out = [0u8; 32];
            out[31] = at;
            Some(out)
        };
        let chosen = choose_relays(&n("a.t"), &n("c.t"), &peers, &config, position);
        assert_eq!(
            chosen,
            [n("b.t"), n("d.t")],
            "closest first; e.t is blocked"
        );
        let more = RelayConfig {
            relays: 5,
            ..config.clone()
        };
        let all = choose_relays(&n("a.t"), &n("c.t"), &peers, &more, position);
        assert_eq!(all, [n("b.t"), n("d.t")], "never itself or the destination");
        // With real keys: deterministic, and by PeerId position.
        let key = |i: u8| {
            hearth_crypto::ServerKey::from_bytes(&[i; 32])
                .unwrap()
                .public_bytes()
        };
        let real = |p: &ServerName| {
            let i = peers.iter().position(|q| q == p)? as u8;
            hearth_federation::p2p::dht_position(&key(i + 1))
        };
        let first = choose_relays(&n("a.t"), &n("c.t"), &peers, &config, real);
        assert_eq!(first.len(), 2);
        assert_eq!(
            first,
            choose_relays(&n("a.t"), &n("c.t"), &peers, &config, real)
        );
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
