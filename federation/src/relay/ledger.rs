//! What a relay holds for others, and the rules for taking more: no I/O, no clock. The node
//! writes what [`Ledger::decide`] accepts to its queue, then records it with [`Ledger::add`].

use std::collections::{HashMap, HashSet};

use hearth_spec::ServerName;
use hearth_spec::federation::{Outcome, RejectCode, RetryCode, SealedEnvelope};

use super::RelayConfig;

/// What is held for one origin.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub envelopes: u64,
    pub bytes: u64,
}

/// One held seal, by the queue entry that holds it.
#[derive(Debug)]
struct Held {
    origin: ServerName,
    bytes: u64,
    /// The seal's ephemeral key: every seal has its own.
    ephemeral: [u8; 32],
}

/// The envelopes this hearth holds for others.
#[derive(Debug)]
pub struct Ledger {
    own: ServerName,
    config: RelayConfig,
    /// (destination, queue entry id) → what it holds.
    entries: HashMap<(ServerName, u64), Held>,
    per_origin: HashMap<ServerName, Holding>,
    /// The ephemeral keys of the seals held, so a seal handed over twice (an origin resending a
    /// batch) is held once.
    seals: HashSet<[u8; 32]>,
}

impl Ledger {
    pub fn new(own: ServerName, config: RelayConfig) -> Self {
        Self {
            own,
            config,
            entries: HashMap::new(),
            per_origin: HashMap::new(),
            seals: HashSet::new(),
        }
    }

    /// Records a seal held in `destination`'s queue entry `id` (taken now, or found at start).
    pub fn add(
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
        self.entries.insert(
            (destination, id),
            Held {
                origin,
                bytes,
                ephemeral: sealed.ephemeral,
            },
        );
    }

    /// What to do with each of `origin`'s sealed envelopes: `Stored` means take it (write it to
    /// the destination's queue, then [`Ledger::add`] it). `known` says whether a destination is
    /// a peer.
    pub fn decide(
        &self,
        origin: &ServerName,
        items: &[(ServerName, SealedEnvelope)],
        known: impl Fn(&ServerName) -> bool,
    ) -> Vec<Outcome> {
        let mut holding = self.per_origin.get(origin).copied().unwrap_or_default();
        let mut batch_seals = HashSet::new();
        items
            .iter()
            .map(|(destination, sealed)| {
                let bytes = sealed.ciphertext.len() as u64;
                if self.refuses(origin, destination, known(destination)) {
                    return Outcome::Rejected(RejectCode::CustodyRefused);
                }
                if self.seals.contains(&sealed.ephemeral) || !batch_seals.insert(sealed.ephemeral) {
                    return Outcome::Duplicate;
                }
                if holding.envelopes + 1 > self.config.max_envelopes_per_origin
                    || holding.bytes + bytes > self.config.max_bytes_per_origin
                {
                    return Outcome::Retry(RetryCode::CustodyFull);
                }
                holding.envelopes += 1;
                holding.bytes += bytes;
                Outcome::Stored
            })
            .collect()
    }

    fn refuses(&self, origin: &ServerName, destination: &ServerName, known: bool) -> bool {
        !self.config.serve
            || !known
            || *destination == self.own
            || destination == origin
            || self.config.block.contains(origin)
            || (!self.config.allow.is_empty() && !self.config.allow.contains(origin))
    }

    /// Queue entries for `destination` left the queue (handed over, refused, or expired).
    pub fn released(&mut self, destination: &ServerName, ids: &[u64]) {
        if self.entries.is_empty() {
            return;
        }
        for id in ids {
            let Some(held) = self.entries.remove(&(destination.clone(), *id)) else {
                continue;
            };
            self.seals.remove(&held.ephemeral);
            if let Some(h) = self.per_origin.get_mut(&held.origin) {
                h.envelopes -= 1;
                h.bytes -= held.bytes;
                if h.envelopes == 0 {
                    self.per_origin.remove(&held.origin);
                }
            }
        }
    }

    /// Whether an envelope held since `held_since_ms` is past its time at `now_ms`.
    pub fn expired(&self, held_since_ms: u64, now_ms: u64) -> bool {
        held_since_ms.saturating_add(self.config.hold_ms) < now_ms
    }

    /// What is held, per origin, by name.
    pub fn holdings(&self) -> Vec<(ServerName, Holding)> {
        let mut out: Vec<_> = self
            .per_origin
            .iter()
            .map(|(o, h)| (o.clone(), *h))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    fn n(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn seal(e: u8, bytes: usize) -> SealedEnvelope {
        SealedEnvelope {
            ephemeral: [e; 32],
            ciphertext: vec![0; bytes],
        }
    }

    fn ledger(config: RelayConfig) -> Ledger {
        Ledger::new(n("r.t"), config)
    }

    /// Takes what `decide` accepts, as the node does, with ids from 1.
    fn take(
        ledger: &mut Ledger,
        origin: &str,
        items: Vec<(ServerName, SealedEnvelope)>,
    ) -> Vec<Outcome> {
        let outcomes = ledger.decide(&n(origin), &items, |d| d.as_str() != "unknown.t");
        let mut id = ledger.entries.keys().map(|(_, id)| *id).max().unwrap_or(0);
        for ((destination, sealed), outcome) in items.iter().zip(&outcomes) {
            if *outcome == Stored {
                id += 1;
                ledger.add(destination.clone(), id, n(origin), sealed);
            }
        }
        outcomes
    }

    #[test]
    fn refusals_by_rule() {
        let allow_only_a = RelayConfig {
            allow: vec![n("a.t")],
            block: vec![n("bad.t")],
            ..RelayConfig::default()
        };
        let rows = [
            ("a.t", "c.t", Stored),
            ("a.t", "r.t", Rejected(RejectCode::CustodyRefused)), // for this hearth itself
            ("a.t", "a.t", Rejected(RejectCode::CustodyRefused)), // for the origin itself
            ("a.t", "unknown.t", Rejected(RejectCode::CustodyRefused)), // not a peer
            ("bad.t", "c.t", Rejected(RejectCode::CustodyRefused)), // blocked
            ("b.t", "c.t", Rejected(RejectCode::CustodyRefused)), // not allowed
        ];
        for (i, (origin, destination, expected)) in rows.into_iter().enumerate() {
            let mut l = ledger(allow_only_a.clone());
            let got = take(&mut l, origin, vec![(n(destination), seal(i as u8, 10))]);
            assert_eq!(got, vec![expected], "{origin} → {destination}");
        }
        let mut closed = ledger(RelayConfig {
            serve: false,
            ..RelayConfig::default()
        });
        assert_eq!(
            take(&mut closed, "a.t", vec![(n("c.t"), seal(1, 10))]),
            vec![Rejected(RejectCode::CustodyRefused)]
        );
    }

    #[test]
    fn quotas_count_envelopes_and_bytes_per_origin_and_free_on_release() {
        let mut l = ledger(RelayConfig {
            max_envelopes_per_origin: 2,
            max_bytes_per_origin: 250,
            ..RelayConfig::default()
        });
        let outcomes = take(
            &mut l,
            "a.t",
            vec![
                (n("c.t"), seal(1, 100)),
                (n("c.t"), seal(2, 100)),
                (n("c.t"), seal(3, 10)),
            ],
        );
        assert_eq!(
            outcomes,
            vec![Stored, Stored, Retry(RetryCode::CustodyFull)]
        );
        // Another origin has its own quota; bytes count too.
        assert_eq!(
            take(
                &mut l,
                "b.t",
                vec![(n("c.t"), seal(4, 200)), (n("c.t"), seal(5, 100))]
            ),
            vec![Stored, Retry(RetryCode::CustodyFull)]
        );
        assert_eq!(
            l.holdings(),
            vec![
                (
                    n("a.t"),
                    Holding {
                        envelopes: 2,
                        bytes: 200
                    }
                ),
                (
                    n("b.t"),
                    Holding {
                        envelopes: 1,
                        bytes: 200
                    }
                ),
            ]
        );
        l.released(&n("c.t"), &[1, 99]);
        assert_eq!(
            l.holdings()[0].1,
            Holding {
                envelopes: 1,
                bytes: 100
            }
        );
        assert_eq!(
            take(&mut l, "a.t", vec![(n("c.t"), seal(3, 10))]),
            vec![Stored]
        );
        // Releasing everything of an origin forgets it.
        l.released(&n("c.t"), &[3]);
        assert_eq!(
            l.holdings(),
            vec![(
                n("a.t"),
                Holding {
                    envelopes: 2,
                    bytes: 110
                }
            )]
        );
        l.released(&n("c.t"), &[2, 4]);
        assert!(l.holdings().is_empty());
    }

    #[test]
    fn a_seal_is_held_once_whether_resent_or_repeated_in_a_batch() {
        let mut l = ledger(RelayConfig::default());
        assert_eq!(
            take(
                &mut l,
                "a.t",
                vec![(n("c.t"), seal(1, 10)), (n("c.t"), seal(1, 10))]
            ),
            vec![Stored, Duplicate]
        );
        assert_eq!(
            take(&mut l, "a.t", vec![(n("c.t"), seal(1, 10))]),
            vec![Duplicate]
        );
        // Once handed over, the same seal may be held again.
        l.released(&n("c.t"), &[1]);
        assert_eq!(
            take(&mut l, "a.t", vec![(n("c.t"), seal(1, 10))]),
            vec![Stored]
        );
    }

    #[test]
    fn an_envelope_expires_after_the_hold_time() {
        let l = ledger(RelayConfig {
            hold_ms: 1_000,
            ..RelayConfig::default()
        });
        assert!(!l.expired(5_000, 6_000));
        assert!(l.expired(5_000, 6_001));
        assert!(!l.expired(u64::MAX, 0), "no overflow");
    }
}
