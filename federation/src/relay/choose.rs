//! Which peers hold envelopes for an unreachable destination.

use hearth_spec::ServerName;

use super::RelayConfig;

/// The `n` peers closest to `destination` in the DHT (Kademlia's XOR distance between the
/// positions `position` gives: see [`crate::p2p::dht_position`]), leaving out the
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
                .public_key()
        };
        let real = |p: &ServerName| {
            let i = peers.iter().position(|q| q == p)? as u8;
            crate::p2p::dht_position(&key(i + 1))
        };
        let first = choose_relays(&n("a.t"), &n("c.t"), &peers, &config, real);
        assert_eq!(first.len(), 2);
        assert_eq!(
            first,
            choose_relays(&n("a.t"), &n("c.t"), &peers, &config, real)
        );
    }
}
