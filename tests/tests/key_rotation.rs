//! Rotating a hearth's server key: the new key is announced to peers signed by the old one,
//! envelopes switch to the new key once a peer has the announcement, nothing in flight is lost,
//! and the rotation survives restarts on both sides.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hearth_crypto::ServerKey;
use hearth_federation::{Directory, Inbound, KeyRing, PeerConfig, Transport, TransportConfig};
use hearth_node::config::PeerEntry;
use hearth_node::ops::admin::{AdminRequest, AdminResponse};
use hearth_spec::client::ServerFrame;
use hearth_spec::federation::{FedBody, FedEnvelope, Outcome};
use hearth_spec::{PublicKey, RoomKind, ServerName};
use hearth_tests::{
    HearthProcess, PeerSpec, TestHearth, connect_synced, frames_until, plan_network, register_at,
    start_network, user_id,
};

const WAIT: Duration = Duration::from_secs(30);

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

fn b64(key: &PublicKey) -> String {
    key.to_string()
}

/// A peer that records what it is sent, as (signer, body kind), and applies key rotations to
/// its directory the way a hearth does.
struct RecordingPeer {
    directory: Arc<RwLock<Directory>>,
    seen: Mutex<Vec<(PublicKey, &'static str)>>,
}

impl Inbound for RecordingPeer {
    async fn receive(&self, peer: ServerName, envelopes: Vec<FedEnvelope>) -> Vec<Outcome> {
        let mut seen = self.seen.lock().unwrap();
        for envelope in &envelopes {
            let kind = match &envelope.body {
                FedBody::KeyRotation {
                    new_key,
                    old_valid_until_ms,
                } => {
                    self.directory
                        .write()
                        .unwrap()
                        .rotate(&peer, &envelope.signer, *new_key, *old_valid_until_ms)
                        .unwrap();
                    "rotation"
                }
                FedBody::Sequenced { .. } => "sequenced",
                FedBody::Submit { .. } => "submit",
                FedBody::Ephemeral { .. } => "ephemeral",
                FedBody::Custody { .. } | FedBody::Relayed { .. } => "relay",
                FedBody::ClaimKeyPackages { .. } => "claim",
                FedBody::FetchMedia { .. } => "fetch",
                FedBody::QueryDevices { .. } => "query",
            };
            seen.push((envelope.signer, kind));
        }
        vec![Outcome::Stored; envelopes.len()]
    }
}

impl RecordingPeer {
    /// Waits until `count` sequenced events have arrived; returns everything seen.
    async fn until_sequenced(&self, count: usize) -> Vec<(PublicKey, &'static str)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.iter().filter(|(_, k)| *k == "sequenced").count() >= count {
                return seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "only saw {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn server_key(hearth: &TestHearth) -> PublicKey {
    hearth_node::ops::keys::load_or_generate(&hearth_node::ops::data_dir::key_path(
        hearth.data_dir(),
    ))
    .unwrap()
    .public_key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_is_announced_with_the_old_key_then_the_new_key_signs() {
    let peer_key = ServerKey::generate();
    let peer_directory = Arc::new(RwLock::new(Directory::default()));
    let recorder = Arc::new(RecordingPeer {
        directory: peer_directory.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let peer = Transport::start(
        TransportConfig::new(name("peer.test"), "127.0.0.1:0".parse().unwrap()),
        Arc::new(KeyRing::single(Arc::new(
            ServerKey::from_bytes(&peer_key.to_bytes()[..]).unwrap(),
        ))),
        peer_directory.clone(),
        recorder.clone(),
    )
    .unwrap();
    let peer_entry = PeerEntry {
        name: name("peer.test"),
        address: peer.local_addr(),
        key: b64(&peer_key.public_key()),
        previous_keys: vec![],
    };
    let hearth = TestHearth::start_with(|c| {
        c.server_name = name("home.test");
        c.federation.peers = vec![peer_entry];
    })
    .await;
    let old_key = server_key(&hearth);
    *peer_directory.write().unwrap() = Directory::new(
        vec![PeerConfig {
            name: name("home.test"),
            address: hearth.running.federation_addr,
            key: old_key,
            previous_keys: vec![],
        }],
        vec![],
    );
    let mut alice = hearth.user("alice").await;
    let room = alice
        .create_room(
            RoomKind::Group,
            Some("r"),
            &[user_id("mallory", "peer.test")],
        )
        .await
        .unwrap()
        .room_id;
    // create, alice joins, mallory joins: three events, all signed with the old key.
    let seen = recorder.until_sequenced(3).await;
    assert!(
        seen.iter().all(|(signer, _)| *signer == old_key),
        "{seen:?}"
    );

    let socket = hearth_node::ops::data_dir::admin_socket_path(hearth.data_dir());
    let response = hearth_node::ops::admin::request_socket(
        &socket,
        &AdminRequest::RotateKey {
            grace_ms: 3_600_000,
            revoke: false,
        },
    )
    .await
    .unwrap();
    let AdminResponse::KeyRotated {
        new_key: printed,
        peers_told,
        ..
    } = response
    else {
        panic!("rotation failed: {response:?}");
    };
    assert_eq!(peers_told, 1);
    let new_key = server_key(&hearth);
    assert_ne!(new_key, old_key);
    assert_eq!(
        printed,
        b64(&new_key),
        "the new key is what server.key holds"
    );

    // The announcement goes first, signed by the old key; what follows is signed by the new.
    for i in 0..5 {
        alice
            .send(
                &room,
                &hearth_client::new_txn_id(),
                format!("m{i}").as_bytes(),
            )
            .await
            .unwrap();
    }
    let seen = recorder.until_sequenced(8).await;
    let rotation = seen
        .iter()
        .position(|(_, k)| *k == "rotation")
        .expect("announced");
    assert_eq!(
        seen[rotation].0, old_key,
        "the announcement is signed by the old key"
    );
    assert!(
        seen[..rotation]
            .iter()
            .all(|(signer, _)| *signer == old_key),
        "{seen:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!(last, &(new_key, "sequenced"), "{seen:?}");
    assert!(
        seen[rotation + 1..]
            .iter()
            .all(|(signer, _)| *signer == old_key || *signer == new_key),
        "{seen:?}"
    );

    // After a restart the hearth still signs with the new key and does not announce again.
    let count = seen.len();
    let hearth = hearth.restart().await;
    let mut alice =
        hearth_client::Client::with_session(&hearth.url, alice.session().unwrap().clone());
    alice
        .send(&room, &hearth_client::new_txn_id(), b"after restart")
        .await
        .unwrap();
    let seen = recorder.until_sequenced(9).await;
    // Entries whose removal the stop cut short may be sent again (the peer de-duplicates);
    // whatever is sent now is signed with the new key, and nothing is announced again (the
    // hello a starting hearth sends its peers is an empty `ephemeral`).
    assert!(
        seen[count..]
            .iter()
            .all(|e| *e == (new_key, "sequenced") || *e == (new_key, "ephemeral")),
        "{:?}",
        &seen[count..]
    );
    assert_eq!(server_key(&hearth), new_key);
    peer.close();
}

/// `hearth admin rotate-key` against a real hearth (running or stopped), with the hearth's own
/// configuration (its peers are who it announces to); returns the printed key.
fn rotate_key_cli(process: &HearthProcess, me: &PeerSpec, network: &[PeerSpec]) -> String {
    hearth_tests::hearth_admin(
        &process.data_dir,
        me,
        network,
        &["rotate-key", "--grace-secs", "3600"],
    )
    .trim()
    .to_owned()
}

async fn exchange(
    from: &mut hearth_client::Client,
    to_rx: &mut hearth_client::Receiver,
    room: &hearth_spec::RoomId,
    text: &str,
) {
    let sent = from
        .send(room, &hearth_client::new_txn_id(), text.as_bytes())
        .await
        .unwrap();
    frames_until(
        to_rx,
        WAIT,
        |f| matches!(f, ServerFrame::Event { event, .. } if event.event_id == sent.event_id),
    )
    .await
    .unwrap_or_else(|e| panic!("{text:?} did not arrive: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_on_running_and_stopped_hearths_keep_messages_flowing_across_restarts() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test"]).unwrap();
    let mut hearths = start_network(&network, &[]).await.unwrap();
    let mut alice = register_at(&hearths[0].url, "alice").await;
    let mut bob = register_at(&hearths[1].url, "bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[user_id("bob", "b.test")])
        .await
        .unwrap()
        .room_id;
    let (_atx, mut alice_rx) = connect_synced(&mut alice).await;
    let (_btx, mut bob_rx) = connect_synced(&mut bob).await;
    exchange(&mut alice, &mut bob_rx, &room, "before").await;

    // a.test rotates while running; b.test's configuration still names only the old key.
    let new_a = rotate_key_cli(&hearths[0], &network[0], &network);
    assert_ne!(new_a, network[0].key);
    exchange(&mut alice, &mut bob_rx, &room, "a rotated").await;
    exchange(&mut bob, &mut alice_rx, &room, "b answers").await;

    // b.test restarts: it remembers a.test's new key without any change to its configuration.
    hearths[1].kill9();
    hearths[1].start_again().await.unwrap();
    let (_btx, mut bob_rx) = connect_synced(&mut bob).await;
    exchange(&mut alice, &mut bob_rx, &room, "after b restarted").await;

    // b.test rotates while stopped; a.test learns when b.test is back.
    hearths[1].kill9();
    let new_b = rotate_key_cli(&hearths[1], &network[1], &network);
    assert_ne!(new_b, network[1].key);
    hearths[1].start_again().await.unwrap();
    let (_btx, mut bob_rx) = connect_synced(&mut bob).await;
    exchange(&mut bob, &mut alice_rx, &room, "b rotated while stopped").await;
    exchange(&mut alice, &mut bob_rx, &room, "a answers").await;

    // a.test restarts too: both sides now sign with their new keys, and still talk.
    hearths[0].kill9();
    hearths[0].start_again().await.unwrap();
    let (_atx, mut alice_rx) = connect_synced(&mut alice).await;
    exchange(&mut alice, &mut bob_rx, &room, "both rotated").await;
    exchange(&mut bob, &mut alice_rx, &room, "and back").await;
}

/// The libp2p swarm runs as the key peers accept now: when the old key stops being usable (here
/// revoked; otherwise when the grace period ends) it takes the new identity (a new PeerId) and
/// listens on its port again, as `hearth admin federation-status` shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_takes_the_rotated_key_and_listens_again() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test"]).unwrap();
    let hearths = start_network(&network, &[]).await.unwrap();
    let me = &network[0];
    let status = || hearth_tests::hearth_admin(&me.data_dir, me, &network, &["federation-status"]);
    // (PeerId, whether a listen address with that PeerId on the swarm's port is reported)
    let identity = |status: &str| {
        let peer_id = status
            .lines()
            .find_map(|l| l.strip_prefix("peer-id\t"))
            .map(str::to_owned);
        let listening = peer_id.as_ref().is_some_and(|id| {
            status.lines().any(|l| {
                l.starts_with("swarm\t")
                    && l.contains(&format!("/udp/{}/", me.p2p_port))
                    && l.ends_with(&format!("/p2p/{id}"))
            })
        });
        (peer_id, listening)
    };
    type Identity = (Option<String>, bool);
    let wait = |want: &dyn Fn(&Identity) -> bool| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let got = identity(&status());
            if want(&got) {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "swarm stuck at {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (before, _) = wait(&|(id, listening)| id.is_some() && *listening);
    hearth_tests::hearth_admin(
        &hearths[0].data_dir,
        me,
        &network,
        &["rotate-key", "--revoke"],
    );
    let (after, _) = wait(&|(id, listening)| id.is_some() && *id != before && *listening);
    eprintln!("PeerId {} → {}", before.unwrap(), after.unwrap());
}
