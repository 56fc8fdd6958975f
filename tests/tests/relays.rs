//! Peer-assisted delivery with four real `hearth` processes on loopback: a.test sends 5,000
//! messages into a room homed on c.test while c.test is down; a.test hands them, sealed, to the
//! relays b.test and d.test and is then stopped too; when c.test comes back the relays deliver
//! everything, in order, once. Once more with a relay killed with SIGKILL during custody. Then
//! hearths that know each other only through the DHT: a relay holds for a destination it never
//! heard of, and an origin finds its relays among the DHT's hearths closest to the destination.

use std::time::Duration;

use hearth_client::Client;
use hearth_spec::{Content, RoomId, RoomKind, TxnId};
use hearth_tests::{
    HearthProcess, PeerSpec, plan_network, register_at, send_burst, start_network, user_id,
};

const MESSAGES: usize = 5_000;
const WAIT: Duration = Duration::from_secs(120);

/// `hearth admin federation-status` of a hearth: the lines of `kind` ("queue" or "held") for
/// `name`, summed.
fn status(
    process: &HearthProcess,
    me: &PeerSpec,
    network: &[PeerSpec],
    kind: &str,
    name: &str,
) -> u64 {
    hearth_tests::hearth_admin(&process.data_dir, me, network, &["federation-status"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 3 && f[0] == kind && f[1] == name).then(|| f[2].parse::<u64>().unwrap())
        })
        .sum()
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The messages of `room` on `client`'s hearth, in room order.
async fn messages(client: &mut Client, room: &RoomId) -> Vec<String> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = client.history(room, before, 500).await.unwrap();
        let mut texts: Vec<String> = page
            .events
            .iter()
            .filter_map(|e| match &e.content {
                Content::Message { payload } => Some(String::from_utf8(payload.clone()).unwrap()),
                _ => None,
            })
            .collect();
        texts.append(&mut out);
        out = texts;
        match page.prev_before {
            Some(b) => before = Some(b),
            None => return out,
        }
    }
}

async fn custody(kill_a_relay: bool) {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test", "c.test", "d.test"]).unwrap();
    let mut hearths = start_network(
        &network,
        &[
            ("HEARTH_FEDERATION__RELAY__ENABLED", "true"),
            ("HEARTH_FEDERATION__RELAY__AFTER_MS", "1000"),
        ],
    )
    .await
    .unwrap();
    let mut alice = register_at(&hearths[0].url, "alice").await;
    let mut carol = register_at(&hearths[2].url, "carol").await;
    let room = carol
        .create_room(RoomKind::Group, Some("held"), &[user_id("alice", "a.test")])
        .await
        .unwrap()
        .room_id;
    wait_until("the room reaches a.test", async || {
        alice.room(&room).await.is_ok_and(|r| r.last_seq >= 3)
    })
    .await;

    // c.test goes down; alice's messages are accepted on a.test and wait for it.
    hearths[2].kill9();
    let txns: Vec<TxnId> = (0..MESSAGES)
        .map(|i| TxnId::parse(&format!("m{i:05}")).unwrap())
        .collect();
    let acks = send_burst(&mut alice, &room, &txns).await;
    assert_eq!(acks.len(), MESSAGES, "every send is accepted on a.test");

    // a.test hands everything it has queued for c.test (the messages, and alice's receipts),
    // sealed, to both relays.
    let queued = status(&hearths[0], &network[0], &network, "queue", "c.test");
    assert!(
        queued >= MESSAGES as u64,
        "a.test queued {queued} for c.test"
    );
    for (i, relay) in [(1, "b.test"), (3, "d.test")] {
        wait_until(&format!("{relay} holds everything"), async || {
            status(&hearths[i], &network[i], &network, "held", "a.test") >= queued
        })
        .await;
    }
    // Custody shows in the relays' metrics: envelopes and bytes held for a.test.
    for relay in [&network[1], &network[3]] {
        let held =
            hearth_tests::metric(relay, "hearth_relay_held_envelopes{origin=\"a.test\"}").await;
        assert!(
            held.is_some_and(|h| h >= queued),
            "{} metrics say {held:?} held, {queued} handed over",
            relay.name
        );
        let bytes = hearth_tests::metric(relay, "hearth_relay_held_bytes{origin=\"a.test\"}")
            .await
            .unwrap();
        assert!(bytes > queued * 16, "{} holds {bytes} bytes", relay.name);
    }
    if kill_a_relay {
        hearths[1].kill9();
    }
    hearths[0].kill9();

    // c.test returns to find a.test gone: the relays hand over what they hold.
    hearths[2].start_again().await.unwrap();
    let mut carol = Client::with_session(&hearths[2].url, carol.session().unwrap().clone());
    wait_until("c.test sequences every message", async || {
        carol
            .room(&room)
            .await
            .is_ok_and(|r| r.last_seq >= 3 + MESSAGES as u64)
    })
    .await;
    let texts = messages(&mut carol, &room).await;
    let expected: Vec<String> = txns.iter().map(|t| t.as_str().to_owned()).collect();
    assert_eq!(texts.len(), MESSAGES, "each message once");
    assert_eq!(
        hearth_tests::first_out_of_order(&texts, &expected),
        None,
        "in alice's order"
    );
    let last = carol.room(&room).await.unwrap().last_seq;
    assert_eq!(last, 3 + MESSAGES as u64, "nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_deliver_everything_once_in_order_when_the_origin_is_gone() {
    custody(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_relay_killed_during_custody_the_other_delivers() {
    custody(true).await;
}

/// Starts `me` configured with no peers at all, relaying, and with `bootstrap`'s swarm as its
/// only way into the network.
async fn start_alone(me: &PeerSpec, bootstrap: Option<&PeerSpec>) -> HearthProcess {
    let relaying = [
        ("HEARTH_FEDERATION__RELAY__ENABLED", "true"),
        ("HEARTH_FEDERATION__RELAY__AFTER_MS", "1000"),
    ];
    hearth_tests::start_federated(me, std::slice::from_ref(me), bootstrap, &relaying).await
}

/// carol (on `c`) makes a group with bob (on b.test), finding b.test in the DHT; its id, once
/// b.test has the room.
async fn group_found_in_the_dht(bob: &mut Client, carol: &mut Client) -> RoomId {
    let room = found("c.test never found b.test", async || {
        carol
            .create_room(RoomKind::Group, Some("far"), &[user_id("bob", "b.test")])
            .await
    })
    .await
    .room_id;
    wait_until("the room reaches b.test", async || {
        bob.room(&room).await.is_ok_and(|r| r.last_seq >= 3)
    })
    .await;
    room
}

/// c.test goes down and bob sends `text`; once `held` says a relay holds it, b.test goes down
/// too and c.test comes back: carol finds `text` there.
async fn delivered_by_relays(
    (b, c): (&mut HearthProcess, &mut HearthProcess),
    (bob, carol): (&mut Client, &Client),
    room: &RoomId,
    text: &str,
    held: impl AsyncFnMut() -> bool,
) {
    c.kill9();
    let txn = TxnId::parse("for-carol").unwrap();
    bob.send(room, &txn, text.as_bytes()).await.unwrap();
    wait_until("no relay took custody for c.test", held).await;
    b.kill9();
    c.start_again().await.unwrap();
    let mut carol = Client::with_session(&c.url, carol.session().unwrap().clone());
    wait_until("c.test never got the message", async || {
        messages(&mut carol, room).await.iter().any(|m| m == text)
    })
    .await;
}

/// Retries `make` (a room creation that needs a hearth found in the DHT) until it works.
async fn found<T>(
    what: &str,
    mut make: impl AsyncFnMut() -> Result<T, hearth_client::ClientError>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match make().await {
            Ok(made) => return made,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Three hearths that know each other only through the DHT (each bootstrapped from a.test).
/// b.test talks to a.test and to c.test; c.test goes down; b.test hands its message for c.test
/// to a.test, which has never exchanged an envelope with c.test and looks it up in the DHT
/// instead of refusing; b.test goes down too; c.test comes back and gets it from a.test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_looks_an_unknown_destination_up_in_the_dht() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test", "c.test"]).unwrap();
    let _a = start_alone(&network[0], None).await;
    let mut b = start_alone(&network[1], Some(&network[0])).await;
    let mut c = start_alone(&network[2], Some(&network[0])).await;
    let _alice = register_at(&_a.url, "alice").await;
    let mut bob = register_at(&b.url, "bob").await;
    let mut carol = register_at(&c.url, "carol").await;

    found("b.test never found a.test", async || {
        bob.create_room(RoomKind::Direct, None, &[user_id("alice", "a.test")])
            .await
    })
    .await;
    let room = group_found_in_the_dht(&mut bob, &mut carol).await;
    delivered_by_relays(
        (&mut b, &mut c),
        (&mut bob, &carol),
        &room,
        "through a.test",
        async || status(&_a, &network[0], &network, "held", "b.test") >= 1,
    )
    .await;
}

/// Relays are found in the DHT: b.test has only ever talked to c.test, and when c.test goes
/// down it asks the DHT which hearths are closest to c.test and hands its message to them
/// (a.test and d.test, strangers to it); with b.test gone too, c.test comes back and gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_are_found_in_the_dht_among_hearths_never_talked_to() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test", "c.test", "d.test"]).unwrap();
    let a = start_alone(&network[0], None).await;
    let mut b = start_alone(&network[1], Some(&network[0])).await;
    let mut c = start_alone(&network[2], Some(&network[0])).await;
    let d = start_alone(&network[3], Some(&network[0])).await;
    let mut bob = register_at(&b.url, "bob").await;
    let mut carol = register_at(&c.url, "carol").await;

    let room = group_found_in_the_dht(&mut bob, &mut carol).await;
    delivered_by_relays(
        (&mut b, &mut c),
        (&mut bob, &carol),
        &room,
        "through the dht",
        async || {
            status(&a, &network[0], &network, "held", "b.test")
                + status(&d, &network[3], &network, "held", "b.test")
                >= 1
        },
    )
    .await;
}
