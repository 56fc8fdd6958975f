//! Discovery through the libp2p DHT, with four real `hearth` processes on loopback: a.test,
//! b.test and c.test are configured with each other; d.test is configured with nobody and names
//! only a.test's swarm as its bootstrap peer. b.test and c.test then find d.test (address and
//! key, from its signed record) and deliver to it, and d.test finds them back, with no change to
//! anyone's configuration. Then d.test revokes its key: gossip carries the announcement, and
//! the revoked key stops being accepted by every hearth, including one that d.test never
//! exchanged an envelope with.

use std::time::{Duration, Instant};

use std::sync::{Arc, RwLock};

use hearth_client::new_txn_id;
use hearth_crypto::ServerKey;
use hearth_federation::{Directory, Inbound, KeyRing, PeerConfig, Transport, TransportConfig};
use hearth_spec::client::ServerFrame;
use hearth_spec::federation::{FED_VERSION, FedBody, FedEnvelope, Outcome, RejectCode};
use hearth_spec::{RoomKind, ServerName};
use hearth_tests::{
    HearthProcess, PeerSpec, connect_synced, frames_until, hearth_admin, now_ms, plan_network,
    register_at, user_id,
};

const WAIT: Duration = Duration::from_secs(60);

async fn start(
    me: &PeerSpec,
    configured: &[PeerSpec],
    bootstrap: Option<&PeerSpec>,
) -> HearthProcess {
    hearth_tests::start_federated(me, configured, bootstrap, &[]).await
}

/// Waits until `text` (a message body) arrives on `rx`.
async fn receive(rx: &mut hearth_client::Receiver, text: &[u8]) {
    frames_until(rx, WAIT, |f| {
        matches!(f, ServerFrame::Event { event, .. }
            if matches!(&event.content, hearth_spec::Content::Message { payload } if payload == text))
    })
    .await
    .unwrap_or_else(|e| panic!("{} never arrived: {e}", String::from_utf8_lossy(text)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hearth_bootstrapped_from_one_peer_is_found_and_reached_by_the_others() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test", "c.test", "d.test"]).unwrap();
    let (abc, d) = (&network[..3], &network[3]);
    let a = &abc[0];
    let _a = start(a, abc, None).await;
    let b = start(&abc[1], abc, Some(a)).await;
    let c = start(&abc[2], abc, Some(a)).await;
    // d.test: no peers at all, one bootstrap address.
    let d_hearth = start(d, std::slice::from_ref(d), Some(a)).await;

    let mut bob = register_at(&b.url, "bob").await;
    let mut carol = register_at(&c.url, "carol").await;
    let mut dave = register_at(&d_hearth.url, "dave").await;
    let (_dave_tx, mut dave_rx) = connect_synced(&mut dave).await;

    // carol (c.test) makes a group with bob and dave: c.test finds d.test in the DHT (by name),
    // and d.test learns c.test when c.test calls (by key).
    let started = Instant::now();
    let group = loop {
        match carol
            .create_room(
                RoomKind::Group,
                Some("found"),
                &[user_id("bob", "b.test"), user_id("dave", "d.test")],
            )
            .await
        {
            Ok(room) => break room,
            // d.test's record may still be on its way into the DHT.
            Err(e) => {
                assert!(started.elapsed() < WAIT, "c.test never found d.test: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let hello = carol
        .send(&group.room_id, &new_txn_id(), b"hello dave, from c")
        .await
        .unwrap();
    receive(&mut dave_rx, b"hello dave, from c").await;
    eprintln!("c.test found and reached d.test in {:?}", started.elapsed());

    // dave reads it. d.test owes the read receipt to every member hearth, b.test among them,
    // which it has never heard of: it finds b.test in the DHT and delivers.
    let seq = hello.seq.unwrap();
    dave.mark_read(&group.room_id, seq).await.unwrap();
    let dave_id = user_id("dave", "d.test");
    let deadline = Instant::now() + WAIT;
    loop {
        let marks = bob.receipts(&group.room_id).await.unwrap_or_default();
        if marks.iter().any(|m| m.user_id == dave_id && m.read >= seq) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dave's read receipt never reached b.test: {marks:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // bob (b.test) opens a DM with dave, and they talk both ways.
    let dm = bob
        .create_room(RoomKind::Direct, None, &[user_id("dave", "d.test")])
        .await
        .unwrap();
    bob.send(&dm.room_id, &new_txn_id(), b"hello dave, from b")
        .await
        .unwrap();
    receive(&mut dave_rx, b"hello dave, from b").await;
    let (_bob_tx, mut bob_rx) = connect_synced(&mut bob).await;
    dave.send(&dm.room_id, &new_txn_id(), b"hi bob, from d")
        .await
        .unwrap();
    receive(&mut bob_rx, b"hi bob, from d").await;

    // Every hearth saw the others as discovered, not configured: their configs name none.
    let status = hearth_admin(
        &d.data_dir,
        d,
        std::slice::from_ref(d),
        &["federation-status"],
    );
    for peer in ["b.test", "c.test"] {
        assert!(
            status.contains(&format!("peer\t{peer}\tdiscovered")),
            "d.test status lacks {peer}:\n{status}"
        );
    }
    let status = hearth_admin(&abc[1].data_dir, &abc[1], abc, &["federation-status"]);
    assert!(status.contains("peer\td.test\tdiscovered"), "{status}");
    assert!(status.contains("peer\ta.test\tconfigured"), "{status}");

    // What was learnt is kept: with the bootstrap hearth gone (no DHT to ask), b.test and
    // d.test restart and still reach each other.
    drop(_a);
    let mut b = b;
    let mut d_hearth = d_hearth;
    b.kill9();
    d_hearth.kill9();
    b.start_again().await.unwrap();
    d_hearth.start_again().await.unwrap();
    let mut bob = hearth_client::Client::with_session(&b.url, bob.session().unwrap().clone());
    let mut dave =
        hearth_client::Client::with_session(&d_hearth.url, dave.session().unwrap().clone());
    let (_bob_tx, mut bob_rx) = connect_synced(&mut bob).await;
    let (_dave_tx, mut dave_rx) = connect_synced(&mut dave).await;
    dave.send(&dm.room_id, &new_txn_id(), b"after restarts, from d")
        .await
        .unwrap();
    receive(&mut bob_rx, b"after restarts, from d").await;
    bob.send(&dm.room_id, &new_txn_id(), b"after restarts, from b")
        .await
        .unwrap();
    receive(&mut dave_rx, b"after restarts, from b").await;
    drop(c);
}

struct Sink;

impl Inbound for Sink {
    async fn receive(&self, _peer: ServerName, envelopes: Vec<FedEnvelope>) -> Vec<Outcome> {
        vec![Outcome::Stored; envelopes.len()]
    }
}

/// Someone holding d.test's key (after it leaked): speaks federation as d.test, from its own
/// endpoint. It knows where a.test and b.test are.
struct Holder {
    key: Arc<ServerKey>,
    transport: Transport,
}

impl Holder {
    fn new(secret: &[u8], targets: &[PeerSpec]) -> Self {
        let key = Arc::new(ServerKey::from_bytes(secret).unwrap());
        let peers = targets
            .iter()
            .map(|t| PeerConfig {
                name: ServerName::parse(&t.name).unwrap(),
                address: format!("127.0.0.1:{}", t.udp_port).parse().unwrap(),
                key: hearth_node::config::parse_public_key(&t.key).unwrap(),
                previous_keys: vec![],
            })
            .collect();
        let transport = Transport::start(
            TransportConfig::new(
                ServerName::parse("d.test").unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            ),
            Arc::new(KeyRing::single(key.clone())),
            Arc::new(RwLock::new(Directory::new(peers, vec![]))),
            Arc::new(Sink),
        )
        .unwrap();
        Self { key, transport }
    }

    /// Sends `target` an (empty) envelope signed with the held key: Ok if it was accepted, else
    /// the outcome or the transport's error.
    async fn try_send(&self, target: &str) -> Result<(), String> {
        let destination = ServerName::parse(target).unwrap();
        let envelope = FedEnvelope {
            version: FED_VERSION,
            origin: ServerName::parse("d.test").unwrap(),
            destination: destination.clone(),
            signer: self.key.public_key(),
            origin_ts: now_ms(),
            nonce: rand::random(),
            body: FedBody::Ephemeral { signals: vec![] },
        };
        let frame = hearth_crypto::sign_envelope(&self.key, &envelope);
        match self.transport.send(&destination, &[frame]).await {
            Ok(outcomes) if outcomes == [Outcome::Stored] => Ok(()),
            Ok(outcomes) => Err(format!("{outcomes:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Revocation through gossip. a.test learns d.test only from the DHT (when an envelope signed by
/// d.test's key arrives) and never sends d.test anything, so d.test never learns of a.test and
/// gossip is the only way a.test hears of the revocation. b.test talks to d.test directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_everywhere_after_gossip() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test", "d.test"]).unwrap();
    let (ab, d) = (&network[..2], &network[2]);
    let a = &ab[0];
    let _a = start(a, ab, None).await;
    let b = start(&ab[1], ab, Some(a)).await;
    let d_hearth = start(d, std::slice::from_ref(d), Some(a)).await;
    let old_secret = std::fs::read(hearth_node::ops::data_dir::key_path(&d.data_dir)).unwrap();
    let holder = Holder::new(&old_secret, ab);

    // a.test takes the key once it has found it in the DHT (a call from an unknown key is looked
    // up by that key).
    let started = Instant::now();
    while let Err(e) = holder.try_send("a.test").await {
        assert!(
            started.elapsed() < WAIT,
            "a.test never accepted d.test's key: {e}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // b.test and d.test talk directly: a DM between bea and dave.
    let mut bea = register_at(&b.url, "bea").await;
    let mut dave = register_at(&d_hearth.url, "dave").await;
    let (_dave_tx, mut dave_rx) = connect_synced(&mut dave).await;
    let dm = loop {
        match bea
            .create_room(RoomKind::Direct, None, &[user_id("dave", "d.test")])
            .await
        {
            Ok(room) => break room,
            Err(e) => {
                assert!(started.elapsed() < WAIT, "b.test never found d.test: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    bea.send(&dm.room_id, &new_txn_id(), b"before")
        .await
        .unwrap();
    receive(&mut dave_rx, b"before").await;
    holder.try_send("b.test").await.unwrap();

    // d.test revokes its key; from then on the held key must be refused everywhere.
    let out = hearth_admin(
        &d.data_dir,
        d,
        std::slice::from_ref(d),
        &["rotate-key", "--revoke"],
    );
    assert!(!out.trim().is_empty(), "rotate-key printed no key");
    let revoked_at = Instant::now();
    for target in ["a.test", "b.test"] {
        while holder.try_send(target).await.is_ok() {
            assert!(
                revoked_at.elapsed() < Duration::from_secs(30),
                "{target} still accepts the revoked key"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "{target} refuses the revoked key {:?} after the revocation",
            revoked_at.elapsed()
        );
    }
    // Refused as revoked, and it stays refused (a.test heard of it only through gossip).
    for target in ["a.test", "b.test"] {
        assert_eq!(
            holder.try_send(target).await,
            Err(format!("{:?}", [Outcome::Rejected(RejectCode::RevokedKey)])),
            "{target}"
        );
    }

    // d.test itself carries on with its new key. Access tokens it signed with the revoked key
    // are void (whoever holds that key could forge them): dave signs in again.
    let (_bea_tx, mut bea_rx) = connect_synced(&mut bea).await;
    assert!(
        dave.rooms().await.is_err(),
        "a token signed with the revoked key still works"
    );
    let mut dave = hearth_client::Client::new(&d_hearth.url);
    dave.login("dave", "correct horse battery", Some("test"))
        .await
        .unwrap();
    dave.send(&dm.room_id, &new_txn_id(), b"after")
        .await
        .unwrap();
    receive(&mut bea_rx, b"after").await;
}
