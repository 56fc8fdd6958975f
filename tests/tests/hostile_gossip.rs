//! A hostile member of the gossip network against a real hearth (in this process): a libp2p swarm
//! joins the hearth's swarm and publishes on the key announcement topic. Junk, forged, stale and
//! misaddressed announcements about a configured peer change nothing (the hearth's counter of
//! announcements it did not apply shows each one arrived and was looked at); a genuine one
//! (signed by the peer's key) is applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_crypto::{ServerKey, sign_envelope};
use hearth_federation::p2p::{Identity, Multiaddr, P2pConfig, Swarm};
use hearth_node::config::PeerEntry;
use hearth_node::ops::admin::{AdminRequest, AdminResponse};
use hearth_spec::federation::{FED_VERSION, FedBody, FedEnvelope};
use hearth_spec::{PublicKey, ServerName};
use hearth_tests::{TestHearth, metric_at, now_ms};

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

fn b64(key: &PublicKey) -> String {
    key.to_string()
}

/// The rogue's swarm identity (its record is never looked at here).
struct Rogue(ServerKey);

impl Identity for Rogue {
    fn secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.0.to_bytes()
    }
    fn record(&self) -> (Vec<u8>, PublicKey, ServerName) {
        (vec![0; 8], self.0.public_key(), name("rogue.test"))
    }
}

/// A broadcast key announcement as `origin` would publish it, signed by `signer`.
fn announcement(
    signer: &ServerKey,
    origin: &str,
    destination: &str,
    origin_ts: u64,
    new_key: PublicKey,
) -> Vec<u8> {
    sign_envelope(
        signer,
        &FedEnvelope {
            version: FED_VERSION,
            origin: name(origin),
            destination: name(destination),
            signer: signer.public_key(),
            origin_ts,
            nonce: rand::random(),
            body: FedBody::KeyRotation {
                new_key,
                old_valid_until_ms: now_ms() + 3_600_000,
            },
        },
    )
}

async fn status(hearth: &TestHearth) -> (Vec<String>, Vec<(ServerName, String, String)>) {
    let socket = hearth_node::ops::data_dir::admin_socket_path(hearth.data_dir());
    match hearth_node::ops::admin::request_socket(&socket, &AdminRequest::FederationStatus)
        .await
        .unwrap()
    {
        AdminResponse::FederationStatus { swarm, peers, .. } => (swarm, peers),
        other => panic!("{other:?}"),
    }
}

/// (applied, not applied) key announcements the hearth received by gossip.
async fn gossip_counts(hearth: &TestHearth) -> (u64, u64) {
    let addr = hearth.running.metrics_addr.expect("metrics listen");
    let count =
        |outcome: &str| format!("hearth_gossip_announcements_total{{outcome=\"{outcome}\"}}");
    let applied = metric_at(addr, &count("applied")).await.unwrap_or(0);
    let not_applied = metric_at(addr, &count("not_applied")).await.unwrap_or(0);
    (applied, not_applied)
}

/// The key `home` holds as current for `peer`.
async fn current_key(hearth: &TestHearth, peer: &str) -> String {
    let (_, peers) = status(hearth).await;
    peers
        .into_iter()
        .find(|(p, _, _)| p.as_str() == peer)
        .map(|(_, _, key)| key)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_forged_stale_and_misaddressed_announcements_change_nothing() {
    let peer_key = ServerKey::generate();
    let hearth = TestHearth::start_with(|c| {
        c.server_name = name("home.test");
        c.federation.discovery.listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.federation.peers = vec![PeerEntry {
            name: name("peer.test"),
            address: "127.0.0.1:9".parse().unwrap(),
            key: b64(&peer_key.public_key()),
            previous_keys: vec![],
        }];
    })
    .await;
    let original = b64(&peer_key.public_key());
    assert_eq!(current_key(&hearth, "peer.test").await, original);

    // The rogue joins the hearth's swarm.
    let started = Instant::now();
    let home_swarm: Multiaddr = loop {
        let (swarm, _) = status(&hearth).await;
        if let Some(address) = swarm.first() {
            break address.parse().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no swarm address"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listen = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (events, _events) = tokio::sync::mpsc::channel(64);
    let rogue = Swarm::start(
        P2pConfig {
            listen,
            bootstrap: vec![home_swarm],
            republish: Duration::from_secs(600),
            max_dialled: 8,
        },
        Arc::new(Rogue(ServerKey::generate())),
        events,
    )
    .unwrap();
    // Gossip flows once subscriptions are exchanged: junk until the hearth has looked at one.
    let started = Instant::now();
    let mut junk = 0;
    while gossip_counts(&hearth).await.1 == 0 {
        junk += 1;
        rogue.publish(vec![0xEE; junk]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gossip never reached the hearth"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = gossip_counts(&hearth).await;

    let stranger = ServerKey::generate();
    let now = now_ms();
    let bad = [
        // Junk.
        vec![0xFF; 300],
        Vec::new(),
        // Signed by a key peer.test does not have.
        announcement(
            &stranger,
            "peer.test",
            "peer.test",
            now,
            stranger.public_key(),
        ),
        // Naming peer.test's key as signer, signed by another (a bad signature).
        {
            let mut forged =
                announcement(&peer_key, "peer.test", "peer.test", now, PublicKey([7; 32]));
            forged[..64].copy_from_slice(&stranger.sign(b"something else"));
            forged
        },
        // Genuine signature, but an hour old.
        announcement(
            &peer_key,
            "peer.test",
            "peer.test",
            now - 3_600_000,
            PublicKey([8; 32]),
        ),
        // Genuine, but addressed to one hearth (a direct announcement is not for gossip).
        announcement(&peer_key, "peer.test", "home.test", now, PublicKey([9; 32])),
        // About an origin the hearth does not know.
        announcement(
            &stranger,
            "nobody.test",
            "nobody.test",
            now,
            PublicKey([10; 32]),
        ),
    ];
    let sent = bad.len() as u64;
    for data in bad {
        rogue.publish(data);
    }
    // Then a genuine announcement. Gossip from one peer arrives in order and the hearth takes it
    // in order, so once this is applied the bad ones before it were all looked at.
    let genuine = ServerKey::generate();
    let started = Instant::now();
    loop {
        rogue.publish(announcement(
            &peer_key,
            "peer.test",
            "peer.test",
            now_ms(),
            genuine.public_key(),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let current = current_key(&hearth, "peer.test").await;
        if current == b64(&genuine.public_key()) {
            break;
        }
        assert_eq!(current, original, "a bad announcement was applied");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the genuine announcement never arrived"
        );
    }
    let (applied, not_applied) = gossip_counts(&hearth).await;
    assert_eq!(
        applied,
        before.0 + 1,
        "only the genuine announcement was applied"
    );
    assert!(
        not_applied >= before.1 + sent,
        "only {} of {sent} bad announcements were looked at",
        not_applied - before.1
    );
    // The hearth still answers normally and knows nobody new.
    let (_, peers) = status(&hearth).await;
    assert_eq!(peers.len(), 1, "{peers:?}");
}
