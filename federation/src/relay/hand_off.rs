//! When and to whom the queue of an unreachable destination is handed, as a state machine: the
//! driver calls [`HandOff::tick`] now and then with the time and what the transport knows, and
//! performs the [`Action`]s (asking the DHT, sealing and queueing for relays), reporting back
//! with [`HandOff::found`] and [`HandOff::handed`].

use std::collections::HashMap;
use std::time::Duration;

use hearth_spec::ServerName;

use super::{RelayConfig, choose_relays};

/// How long the DHT's answer to "who is closest to this destination" is used before it is asked
/// again.
pub const NEARBY_AGAIN: Duration = Duration::from_secs(300);
/// … and how soon when it found nobody.
pub const NEARBY_RETRY: Duration = Duration::from_secs(5);

/// What the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the DHT which hearths are closest to `destination` (off the tick: a query near a dead
    /// hearth takes seconds), then call [`HandOff::found`].
    Ask { destination: ServerName },
    /// Seal what `destination`'s queue holds after entry `after` and queue it for `relays`, then
    /// call [`HandOff::handed`] with the last entry handed.
    Hand {
        destination: ServerName,
        after: Option<u64>,
        relays: Vec<ServerName>,
    },
}

/// What the DHT said is near a destination.
#[derive(Debug, Default)]
struct Nearby {
    asked_at_ms: Option<u64>,
    found: Vec<ServerName>,
    asking: bool,
}

/// The hand-off of every destination.
#[derive(Debug)]
pub struct HandOff {
    own: ServerName,
    config: RelayConfig,
    /// Per destination: the last queue entry handed over (in memory: after a restart entries
    /// are handed again, and the destination de-duplicates).
    handed: HashMap<ServerName, Option<u64>>,
    nearby: HashMap<ServerName, Nearby>,
}

impl HandOff {
    pub fn new(own: ServerName, config: RelayConfig) -> Self {
        Self {
            own,
            config,
            handed: HashMap::new(),
            nearby: HashMap::new(),
        }
    }

    /// At `now_ms`: for each of `peers` unreachable for at least `after_ms` (`failing_for`), what
    /// to do. `dht` says whether the DHT can be asked; `position` places a hearth in it.
    pub fn tick(
        &mut self,
        now_ms: u64,
        peers: &[ServerName],
        failing_for: impl Fn(&ServerName) -> Option<Duration>,
        dht: bool,
        position: impl Fn(&ServerName) -> Option<[u8; 32]>,
    ) -> Vec<Action> {
        let after = Duration::from_millis(self.config.after_ms);
        let mut actions = Vec::new();
        for destination in peers {
            if failing_for(destination).is_none_or(|d| d < after) {
                // Reachable again: its queue drains directly (and its ids may start over).
                self.handed.remove(destination);
                continue;
            }
            // Relays come from the known peers and from the hearths the DHT places closest to
            // the destination, which this one may never have talked to.
            let mut candidates = peers.to_vec();
            if dht {
                let entry = self.nearby.entry(destination.clone()).or_default();
                // An empty answer (a thin or busy DHT) is asked again soon.
                let again = if entry.found.is_empty() {
                    NEARBY_RETRY
                } else {
                    NEARBY_AGAIN
                };
                let stale = entry
                    .asked_at_ms
                    .is_none_or(|at| now_ms.saturating_sub(at) >= again.as_millis() as u64);
                if stale && !entry.asking {
                    entry.asking = true;
                    actions.push(Action::Ask {
                        destination: destination.clone(),
                    });
                }
                candidates.extend(entry.found.iter().filter(|f| !peers.contains(f)).cloned());
            }
            let relays =
                choose_relays(&self.own, destination, &candidates, &self.config, &position);
            if !relays.is_empty() {
                actions.push(Action::Hand {
                    destination: destination.clone(),
                    after: self.handed.get(destination).copied().flatten(),
                    relays,
                });
            }
        }
        actions
    }

    /// The DHT answered an [`Action::Ask`] at `now_ms` (empty if it could not be asked).
    pub fn found(&mut self, destination: ServerName, found: Vec<ServerName>, now_ms: u64) {
        self.nearby.insert(
            destination,
            Nearby {
                asked_at_ms: Some(now_ms),
                found,
                asking: false,
            },
        );
    }

    /// An [`Action::Hand`] handed entries up to `last` (the same `after` when there was nothing
    /// new).
    pub fn handed(&mut self, destination: ServerName, last: Option<u64>) {
        self.handed.insert(destination, last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    /// Positions by hand: the destination d.t at 0, relays by their distance from it.
    fn position(p: &ServerName) -> Option<[u8; 32]> {
        let at = match p.as_str() {
            "d.t" => 0,
            "r1.t" => 1,
            "r2.t" => 2,
            "far.t" => 9,
            "found.t" => 3,
            _ => return None,
        };
        let mut out = [0u8; 32];
        out[31] = at;
        Some(out)
    }

    fn hand_off() -> HandOff {
        HandOff::new(
            n("own.t"),
            RelayConfig {
                after_ms: 30_000,
                relays: 2,
                ..RelayConfig::default()
            },
        )
    }

    fn peers() -> Vec<ServerName> {
        ["d.t", "r1.t", "r2.t", "far.t"].map(n).to_vec()
    }

    fn failing(secs: u64) -> impl Fn(&ServerName) -> Option<Duration> {
        move |p| (p.as_str() == "d.t").then(|| Duration::from_secs(secs))
    }

    fn hands(actions: &[Action]) -> Vec<(Option<u64>, Vec<ServerName>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Hand { after, relays, .. } => Some((*after, relays.clone())),
                Action::Ask { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_destination_is_handed_over_once_away_long_enough_and_from_where_it_stopped() {
        let mut h = hand_off();
        assert!(h.tick(0, &peers(), failing(29), false, position).is_empty());
        let actions = h.tick(0, &peers(), failing(30), false, position);
        assert_eq!(hands(&actions), vec![(None, vec![n("r1.t"), n("r2.t")])]);
        h.handed(n("d.t"), Some(7));
        let actions = h.tick(500, &peers(), failing(31), false, position);
        assert_eq!(hands(&actions)[0].0, Some(7));
        // Back: forgotten, so a later outage starts from the queue's start (its ids may have
        // started over).
        assert!(
            h.tick(1_000, &peers(), |_| None, false, position)
                .is_empty()
        );
        let actions = h.tick(1_500, &peers(), failing(60), false, position);
        assert_eq!(hands(&actions)[0].0, None);
    }

    #[test]
    fn the_dht_is_asked_once_at_a_time_and_again_when_stale() {
        let mut h = hand_off();
        let asks = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| matches!(a, Action::Ask { .. }))
                .count()
        };
        assert_eq!(asks(&h.tick(0, &peers(), failing(60), true, position)), 1);
        // The question is out: not asked again.
        assert_eq!(asks(&h.tick(500, &peers(), failing(60), true, position)), 0);
        // Nobody found: asked again after NEARBY_RETRY, not before.
        h.found(n("d.t"), vec![], 1_000);
        assert_eq!(
            asks(&h.tick(5_999, &peers(), failing(60), true, position)),
            0
        );
        assert_eq!(
            asks(&h.tick(6_000, &peers(), failing(60), true, position)),
            1
        );
        // A hearth found: it becomes a candidate (closer than r2.t), and the answer holds for
        // NEARBY_AGAIN.
        h.found(n("d.t"), vec![n("found.t")], 7_000);
        let actions = h.tick(7_500, &peers(), failing(60), true, position);
        assert_eq!(asks(&actions), 0);
        assert_eq!(hands(&actions)[0].1, vec![n("r1.t"), n("r2.t")]);
        let wider = |mut h: HandOff| {
            h.config.relays = 3;
            h
        };
        let mut h3 = wider(h);
        let actions = h3.tick(8_000, &peers(), failing(60), true, position);
        assert_eq!(
            hands(&actions)[0].1,
            vec![n("r1.t"), n("r2.t"), n("found.t")]
        );
        assert_eq!(
            asks(&h3.tick(306_999, &peers(), failing(60), true, position)),
            0
        );
        assert_eq!(
            asks(&h3.tick(307_000, &peers(), failing(60), true, position)),
            1
        );
    }

    #[test]
    fn no_relay_no_hand_over() {
        let mut h = hand_off();
        let alone = [n("d.t")];
        assert!(h.tick(0, &alone, failing(60), false, position).is_empty());
        // Blocked relays are never chosen.
        let mut h = HandOff::new(
            n("own.t"),
            RelayConfig {
                after_ms: 0,
                block: vec![n("r1.t"), n("r2.t"), n("far.t")],
                ..RelayConfig::default()
            },
        );
        assert!(h.tick(0, &peers(), failing(1), false, position).is_empty());
    }
}
