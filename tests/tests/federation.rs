//! Rooms across hearths, with three real `hearth` processes on loopback federating over QUIC:
//! a cross-hearth DM and a group spread over all three keep one order everywhere; a member
//! hearth killed with SIGKILL in the middle of a 10,000-message burst loses and duplicates
//! nothing; a room whose home is down still accepts sends, which are sequenced when it returns;
//! a peer killed without closing its connections is noticed within the configured idle timeout.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hearth_client::{Client, Receiver, new_txn_id};
use hearth_spec::client::ServerFrame;
use hearth_spec::{Content, EventId, RoomId, RoomKind, TxnId};
use hearth_tests::{
    HearthProcess, connect_synced, frames_until, plan_network, register_at, send_burst,
    start_network, user_id,
};

/// How long a condition may take before the test calls it stuck. Only a bound on a hang: on a
/// cold CI run (debug build, shared 2-core machine) a third hearth once took over 60 s to
/// replicate 10,004 events that take it 18 s here.
const WAIT: Duration = Duration::from_secs(180);

async fn register(hearth: &HearthProcess, name: &str) -> Client {
    register_at(&hearth.url, name).await
}

/// The whole history of a room as one hearth holds it: (seq, event id), in order.
async fn history(client: &mut Client, room: &RoomId) -> Vec<(u64, EventId, Content)> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = client.history(room, before, 500).await.unwrap();
        let mut events: Vec<_> = page
            .events
            .into_iter()
            .map(|e| (e.seq, e.event_id, e.content))
            .collect();
        events.append(&mut out);
        out = events;
        match page.prev_before {
            Some(b) => before = Some(b),
            None => return out,
        }
    }
}

/// Waits until a hearth's copy of `room` reaches `seq` (it arrives by federation).
async fn wait_for_seq(client: &mut Client, room: &RoomId, seq: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let reached = client.room(room).await.map(|summary| summary.last_seq);
        if reached.as_ref().is_ok_and(|last| *last >= seq) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{room} did not reach seq {seq} on {} (it is at {reached:?})",
            client.base_url()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads live events until one with `event_id` arrives; returns every event frame's id.
async fn events_until(rx: &mut Receiver, event_id: EventId) -> Vec<(u64, EventId)> {
    let frames = frames_until(
        rx,
        WAIT,
        |f| matches!(f, ServerFrame::Event { event, .. } if event.event_id == event_id),
    )
    .await
    .unwrap();
    frames
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Event { event, .. } => Some((event.seq, event.event_id)),
            _ => None,
        })
        .collect()
}

/// a.test, b.test and c.test federated, with alice, bob and carol registered on them in turn.
struct Trio {
    _root: tempfile::TempDir,
    network: Vec<hearth_tests::PeerSpec>,
    hearths: Vec<HearthProcess>,
    alice: Client,
    bob: Client,
    carol: Client,
}

async fn three_hearths() -> Trio {
    three_hearths_with(&[]).await
}

/// [`three_hearths`], each with `extra` in its environment.
async fn three_hearths_with(extra: &[(&str, &str)]) -> Trio {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test", "c.test"]).unwrap();
    let hearths = start_network(&network, extra).await.unwrap();
    let alice = register(&hearths[0], "alice").await;
    let bob = register(&hearths[1], "bob").await;
    let carol = register(&hearths[2], "carol").await;
    Trio {
        _root: root,
        network,
        hearths,
        alice,
        bob,
        carol,
    }
}

/// [`three_hearths`] plus a group `name` homed on a.test with all three, arrived everywhere.
async fn three_hearths_with_group(name: &str) -> (Trio, RoomId) {
    with_group(three_hearths().await, name).await
}

/// `trio` plus a group `name` homed on a.test with all three, arrived everywhere.
async fn with_group(mut trio: Trio, name: &str) -> (Trio, RoomId) {
    let room = trio
        .alice
        .create_room(
            RoomKind::Group,
            Some(name),
            &[user_id("bob", "b.test"), user_id("carol", "c.test")],
        )
        .await
        .unwrap()
        .room_id;
    wait_for_seq(&mut trio.bob, &room, 4).await;
    wait_for_seq(&mut trio.carol, &room, 4).await;
    (trio, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_hearth_dm_and_three_hearth_group_share_one_order() {
    let Trio {
        _root,
        hearths: _hearths,
        mut alice,
        mut bob,
        mut carol,
        ..
    } = three_hearths().await;

    // A DM from a.test to b.test: bob sees the room arrive and answers from his own hearth.
    let (_bob_tx, mut bob_rx) = connect_synced(&mut bob).await;
    let dm = alice
        .create_room(RoomKind::Direct, None, &[user_id("bob", "b.test")])
        .await
        .unwrap();
    let hello = alice
        .send(&dm.room_id, &new_txn_id(), b"hello bob")
        .await
        .unwrap();
    assert_eq!(hello.seq, Some(4), "create, two joins, then the message");
    let seen = events_until(&mut bob_rx, hello.event_id).await;
    // As on one hearth, a new member's inbox starts at their own join.
    assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 4]);

    let (_alice_tx, mut alice_rx) = connect_synced(&mut alice).await;
    let reply = bob
        .send(&dm.room_id, &new_txn_id(), b"hi alice")
        .await
        .unwrap();
    assert_eq!(reply.seq, None, "bob's hearth accepts; a.test sequences");
    let seen = events_until(&mut alice_rx, reply.event_id).await;
    assert_eq!(seen.last().unwrap().0, 5);
    wait_for_seq(&mut bob, &dm.room_id, 5).await;
    assert_eq!(
        history(&mut alice, &dm.room_id).await,
        history(&mut bob, &dm.room_id).await
    );
    // Bob's own device receives his message with its place, like every other event.
    let seen = events_until(&mut bob_rx, reply.event_id).await;
    assert_eq!(seen.last().unwrap().0, 5);

    // A group homed on c.test with members on all three hearths; everyone sends at once.
    let group = carol
        .create_room(
            RoomKind::Group,
            Some("three hearths"),
            &[user_id("alice", "a.test"), user_id("bob", "b.test")],
        )
        .await
        .unwrap();
    let mut senders = Vec::new();
    for client in [&alice, &bob, &carol] {
        let mut client = Client::with_session(client.base_url(), client.session().unwrap().clone());
        let room = group.room_id.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                // The group may not have reached this hearth yet: retry until it has.
                let txn = new_txn_id();
                let deadline = Instant::now() + WAIT;
                loop {
                    match client.send(&room, &txn, format!("m{i}").as_bytes()).await {
                        Ok(s) => {
                            ids.push(s.event_id);
                            break;
                        }
                        Err(_) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("send failed: {e}"),
                    }
                }
            }
            ids
        }));
    }
    let mut sent: Vec<EventId> = Vec::new();
    for s in senders {
        sent.extend(s.await.unwrap());
    }
    // 1 create + 3 joins + 60 messages.
    for client in [&mut alice, &mut bob, &mut carol] {
        wait_for_seq(client, &group.room_id, 64).await;
    }
    let a = history(&mut alice, &group.room_id).await;
    let b = history(&mut bob, &group.room_id).await;
    let c = history(&mut carol, &group.room_id).await;
    assert_eq!(a.len(), 64);
    assert_eq!(
        a, b,
        "a.test and b.test hold the same room in the same order"
    );
    assert_eq!(
        a, c,
        "a.test and c.test hold the same room in the same order"
    );
    let ids: HashSet<EventId> = a.iter().map(|(_, id, _)| *id).collect();
    assert!(
        sent.iter().all(|id| ids.contains(id)),
        "every accepted send is in the room"
    );
    assert_eq!(
        a.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        (1..=64).collect::<Vec<u64>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_hearth_killed_mid_burst_loses_and_duplicates_nothing() {
    const MESSAGES: usize = 10_000;
    let (
        Trio {
            _root,
            mut hearths,
            mut alice,
            mut bob,
            mut carol,
            ..
        },
        room,
    ) = three_hearths_with_group("burst").await;

    // Carol's device on c.test watches every event live for the whole test.
    let (_carol_tx, mut carol_rx) = connect_synced(&mut carol).await;
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<(u64, EventId)> = Vec::new();
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_secs(10), carol_rx.next()).await
        {
            if let ServerFrame::Event { event, .. } = frame {
                seen.push((event.seq, event.event_id));
            }
        }
        seen
    });

    // Bob (on b.test) bursts into the room homed on a.test; b.test is killed part-way.
    let txns: Vec<TxnId> = (0..MESSAGES)
        .map(|i| TxnId::parse(&format!("b-{i}")).unwrap())
        .collect();
    let killer = {
        let url = hearths[0].url.clone();
        let mut alice = Client::with_session(&url, alice.session().unwrap().clone());
        let room = room.clone();
        // Kill once a.test has sequenced a good part of the burst.
        async move {
            loop {
                if alice.room(&room).await.map(|r| r.last_seq).unwrap_or(0) >= 2_000 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let burst_room = room.clone();
    let burst_txns = txns.clone();
    let mut bob_burst = Client::with_session(&hearths[1].url, bob.session().unwrap().clone());
    let bursting =
        tokio::spawn(async move { send_burst(&mut bob_burst, &burst_room, &burst_txns).await });
    killer.await;
    hearths[1].kill9();
    let first_acks = bursting.await.unwrap();
    assert!(
        !first_acks.is_empty() && first_acks.len() < MESSAGES,
        "the kill lands mid-burst ({} acked)",
        first_acks.len()
    );

    // b.test comes back; bob resends every transaction, acknowledged or not.
    hearths[1].start_again().await.unwrap();
    let second_acks = send_burst(&mut bob, &room, &txns).await;
    assert_eq!(
        second_acks.len(),
        MESSAGES,
        "every send is accepted after the restart"
    );
    for (txn, id) in &first_acks {
        assert_eq!(
            second_acks.get(txn),
            Some(id),
            "a resent acknowledged transaction names the same event"
        );
    }

    let setup = 4;
    let total = setup + MESSAGES as u64;
    wait_for_seq(&mut alice, &room, total).await;
    wait_for_seq(&mut bob, &room, total).await;
    wait_for_seq(&mut carol, &room, total).await;
    let a = history(&mut alice, &room).await;
    let b = history(&mut bob, &room).await;
    let c = history(&mut carol, &room).await;
    assert_eq!(a.len() as u64, total, "exactly one event per transaction");
    assert_eq!(a, b, "b.test's copy matches the home's");
    assert_eq!(a, c, "c.test's copy matches the home's");
    let ids: HashSet<EventId> = a.iter().map(|(_, id, _)| *id).collect();
    for id in first_acks.values() {
        assert!(ids.contains(id), "an acknowledged message was lost");
    }
    let messages = a
        .iter()
        .filter(|(_, _, c)| matches!(c, Content::Message { .. }))
        .count();
    assert_eq!(messages, MESSAGES);

    // Carol's device saw every event once, in room order.
    let seen = watcher.await.unwrap();
    let seen_ids: HashSet<EventId> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event reached carol twice");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "carol saw room order"
    );
    assert_eq!(seen.len(), MESSAGES, "carol saw every message live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_while_the_home_is_down_are_accepted_and_sequenced_when_it_returns() {
    let (
        Trio {
            _root,
            mut hearths,
            mut alice,
            mut bob,
            mut carol,
            ..
        },
        room,
    ) = three_hearths_with_group("home away").await;
    let (_carol_tx, mut carol_rx) = connect_synced(&mut carol).await;

    hearths[0].kill9();
    let mut accepted = Vec::new();
    let first_txn = new_txn_id();
    for i in 0..50 {
        let txn = if i == 0 {
            first_txn.clone()
        } else {
            new_txn_id()
        };
        let done = bob
            .send(&room, &txn, format!("while away {i}").as_bytes())
            .await
            .expect("accepted while the home is down");
        assert_eq!(done.seq, None);
        accepted.push(done.event_id);
    }
    // Nothing is sequenced without the home; had b.test ordered any itself, the seqs the
    // home gives below (checked against every copy) would clash with them.
    assert_eq!(
        bob.room(&room).await.unwrap().last_seq,
        4,
        "nothing is sequenced without the home"
    );

    hearths[0].start_again().await.unwrap();
    let seen = events_until(&mut carol_rx, *accepted.last().unwrap()).await;
    let seen_ids: Vec<EventId> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        seen_ids, accepted,
        "carol gets bob's messages in the order he sent them"
    );
    wait_for_seq(&mut bob, &room, 54).await;
    wait_for_seq(&mut alice, &room, 54).await;
    // A retry of a send accepted while the home was away now answers with its place.
    let retried = bob.send(&room, &first_txn, b"while away 0").await.unwrap();
    assert_eq!((retried.event_id, retried.seq), (accepted[0], Some(5)));
    let a = history(&mut alice, &room).await;
    assert_eq!(a, history(&mut bob, &room).await);
    assert_eq!(a, history(&mut carol, &room).await);
}

/// A peer that dies without closing (SIGKILL) is noticed when its connection has heard nothing
/// for `federation.idle_timeout_ms` (here 2 s; the default is 30 s); `/metrics` shows the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_without_closing_is_noticed_within_the_idle_timeout() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test"]).unwrap();
    let mut hearths = start_network(
        &network,
        &[
            ("HEARTH_FEDERATION__KEEP_ALIVE_MS", "500"),
            ("HEARTH_FEDERATION__IDLE_TIMEOUT_MS", "2000"),
        ],
    )
    .await
    .unwrap();
    let link = r#"hearth_federation_link_up{peer="b.test"}"#;
    // Shown from the start, up or not: a.test says hello to its peers when it starts, so the
    // link may already be up here (asserting 0 raced that hello).
    assert!(hearth_tests::metric(&network[0], link).await.is_some());
    let mut alice = register(&hearths[0], "alice").await;
    let mut bob = register(&hearths[1], "bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[user_id("bob", "b.test")])
        .await
        .unwrap()
        .room_id;
    wait_for_seq(&mut bob, &room, 1).await;
    let deadline = Instant::now() + WAIT;
    while hearth_tests::metric(&network[0], link).await != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the link to b.test never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hearths[1].kill9();
    let killed = Instant::now();
    while hearth_tests::metric(&network[0], link).await != Some(0) {
        // Far short of the 30 s default: only the configured timeout explains noticing in time.
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "a.test still thinks b.test is up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "b.test killed; a.test noticed after {:.2} s (idle timeout 2 s)",
        killed.elapsed().as_secs_f64()
    );
}

/// The depth of `peer`'s outbound queue on the hearth `me` (0 when it has none).
fn queue_depth(me: &hearth_tests::PeerSpec, network: &[hearth_tests::PeerSpec], peer: &str) -> u64 {
    hearth_tests::hearth_admin(&me.data_dir, me, network, &["federation-status"])
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(&format!("queue\t{peer}\t"))?;
            rest.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// An admin of a.test blocks b.test: a.test's group goes on for a.test and c.test while what
/// it owes b.test waits in its queue, b.test's users' events do not get in (neither directly
/// nor through c.test as a relay), a.test's users can neither write in b.test's rooms nor add
/// b.test's users. The block holds across a restart and, lifted, everything that waited
/// arrives and every copy of the room agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_hearth_gets_nothing_and_gives_nothing_until_unblocked() {
    // b.test hands what a.test does not take to relays after 1 s (the default is 30 s).
    let trio = three_hearths_with(&[("HEARTH_FEDERATION__RELAY__AFTER_MS", "1000")]).await;
    let (
        Trio {
            _root,
            network,
            mut hearths,
            mut alice,
            mut bob,
            mut carol,
        },
        room,
    ) = with_group(trio, "blocked").await;
    let admin = |args: &[&str]| {
        hearth_tests::hearth_admin(&network[0].data_dir, &network[0], &network, args)
    };
    let bobs_dm = bob
        .create_room(RoomKind::Direct, None, &[user_id("alice", "a.test")])
        .await
        .unwrap()
        .room_id;
    wait_for_seq(&mut alice, &bobs_dm, 3).await;

    assert_eq!(
        admin(&["block-hearth", "b.test", "--reason", "spam waves"]),
        "blocked b.test\n"
    );
    assert_eq!(
        admin(&["block-hearth", "b.test"]),
        "b.test was blocked already\n"
    );
    let listed = admin(&["blocked-hearths"]);
    assert!(
        listed.starts_with("b.test\t") && listed.ends_with("\tspam waves\n"),
        "{listed}"
    );

    // a.test's users: nothing they do may need b.test.
    let refused = alice
        .send(&bobs_dm, &new_txn_id(), b"to a room b.test orders")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(hearth_spec::ErrorCode::Forbidden),
        "{refused}"
    );
    assert!(refused.to_string().contains("blocked"), "{refused}");
    let refused = alice
        .create_room(RoomKind::Direct, None, &[user_id("bob", "b.test")])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(hearth_spec::ErrorCode::Forbidden),
        "{refused}"
    );

    // The group goes on for a.test and c.test; b.test's copy waits in a.test's queue.
    let during = alice
        .send(&room, &new_txn_id(), b"while b.test is blocked")
        .await
        .unwrap();
    assert_eq!(during.seq, Some(5));
    wait_for_seq(&mut carol, &room, 5).await;
    // b.test's users' events are accepted by b.test and wait there: a.test refuses it.
    let from_bob = bob
        .send(&room, &new_txn_id(), b"bob while blocked")
        .await
        .unwrap();
    assert_eq!(from_bob.seq, None);
    // b.test gives up on reaching a.test directly and hands the event to c.test, which a.test
    // refuses too: it is b.test's.
    let relayed_refusal = |line: &str| {
        line.starts_with("hearth_federation_envelopes_total{")
            && ["direction=\"in\"", "peer=\"c.test\"", "code=\"Forbidden\""]
                .iter()
                .all(|label| line.contains(label))
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = reqwest::get(format!(
            "http://127.0.0.1:{}/metrics",
            network[0].metrics_port
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        if metrics.lines().any(relayed_refusal) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c.test never relayed bob's event to a.test"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alice.room(&room).await.unwrap().last_seq, 5);

    // Across a restart (and on the stopped hearth, which reads the table itself).
    hearths[0].terminate().unwrap();
    assert!(admin(&["blocked-hearths"]).starts_with("b.test\t"));
    hearths[0].start_again().await.unwrap();
    let after_restart = alice
        .send(&room, &new_txn_id(), b"after a restart")
        .await
        .unwrap();
    assert_eq!(after_restart.seq, Some(6));
    wait_for_seq(&mut carol, &room, 6).await;
    let deadline = Instant::now() + WAIT;
    while queue_depth(&network[0], &network, "c.test") > 0 {
        assert!(
            Instant::now() < deadline,
            "a.test never drained c.test's queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        queue_depth(&network[0], &network, "b.test") >= 2,
        "what a.test owes b.test waits in its queue"
    );
    assert_eq!(
        bob.room(&room).await.unwrap().last_seq,
        4,
        "b.test got nothing"
    );
    assert_eq!(
        alice.room(&room).await.unwrap().last_seq,
        6,
        "bob's event did not get in"
    );

    assert_eq!(admin(&["unblock-hearth", "b.test"]), "unblocked b.test\n");
    assert_eq!(admin(&["blocked-hearths"]), "");
    // Everything that waited arrives: a.test's two events for b.test, and bob's for a.test.
    wait_for_seq(&mut bob, &room, 7).await;
    wait_for_seq(&mut alice, &room, 7).await;
    wait_for_seq(&mut carol, &room, 7).await;
    let a = history(&mut alice, &room).await;
    assert_eq!(a, history(&mut bob, &room).await);
    assert_eq!(a, history(&mut carol, &room).await);
    assert_eq!(
        a[6].1, from_bob.event_id,
        "bob's event came in after the block"
    );
    alice
        .send(&bobs_dm, &new_txn_id(), b"b.test's rooms work again")
        .await
        .unwrap();

    let actions: Vec<String> = admin(&["audit-log"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{} {}", f[3], f[4])
        })
        .collect();
    assert_eq!(
        actions,
        [
            "block_hearth b.test",
            "block_hearth b.test",
            "unblock_hearth b.test"
        ]
    );
}

/// Every hearth of a group names the same admin from the same events: the creator, and once
/// the creator has left, the member first by id. A member hearth refuses a removal by someone
/// else at once; the admin's removal made on a member hearth goes to the home, is sequenced
/// there and takes the member out on every hearth.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_of_a_group_across_hearths_is_the_same_everywhere_and_removes_members() {
    let (mut trio, room) = three_hearths_with_group("spread").await;
    let (alice, bob, carol) = (
        user_id("alice", "a.test"),
        user_id("bob", "b.test"),
        user_id("carol", "c.test"),
    );
    for client in [&mut trio.alice, &mut trio.bob, &mut trio.carol] {
        assert_eq!(
            client.room(&room).await.unwrap().admins,
            vec![alice.clone()]
        );
    }
    let refused = trio.bob.remove_member(&room, &carol).await.unwrap_err();
    assert_eq!(refused.code(), Some(hearth_spec::ErrorCode::Forbidden));
    assert!(
        refused
            .to_string()
            .contains("only the group's admins (@alice:a.test) do that"),
        "{refused}"
    );

    // The creator leaves: bob sorts before carol, so bob is the admin on every hearth.
    trio.alice.leave(&room).await.unwrap();
    wait_for_seq(&mut trio.bob, &room, 5).await;
    wait_for_seq(&mut trio.carol, &room, 5).await;
    for client in [&mut trio.bob, &mut trio.carol] {
        assert_eq!(client.room(&room).await.unwrap().admins, vec![bob.clone()]);
    }
    let refused = trio.carol.remove_member(&room, &bob).await.unwrap_err();
    assert_eq!(refused.code(), Some(hearth_spec::ErrorCode::Forbidden));

    // Bob makes carol an admin from b.test; a.test sequences it, c.test applies it.
    trio.bob.set_admin(&room, &carol, true).await.unwrap();
    wait_for_seq(&mut trio.carol, &room, 6).await;
    assert_eq!(
        trio.carol.room(&room).await.unwrap().admins,
        vec![bob.clone(), carol.clone()]
    );
    trio.carol.set_admin(&room, &carol, false).await.unwrap();
    wait_for_seq(&mut trio.bob, &room, 7).await;
    assert_eq!(
        trio.bob.room(&room).await.unwrap().admins,
        vec![bob.clone()]
    );

    // Bob's removal is made on b.test, sequenced by a.test, applied on c.test.
    let removal = trio.bob.remove_member(&room, &carol).await.unwrap();
    assert_eq!(removal.seq, None, "accepted; the home sequences it");
    let deadline = Instant::now() + WAIT;
    loop {
        match trio.carol.room(&room).await {
            Err(e) if e.code() == Some(hearth_spec::ErrorCode::Forbidden) => break,
            other => assert!(Instant::now() < deadline, "carol still in: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_seq(&mut trio.bob, &room, 8).await;
    let summary = trio.bob.room(&room).await.unwrap();
    assert_eq!(summary.members, vec![bob.clone()]);
    let (seq, _, content) = history(&mut trio.bob, &room).await.pop().unwrap();
    assert_eq!(seq, 8);
    assert_eq!(
        content,
        Content::Member {
            target: carol,
            membership: hearth_spec::Membership::Leave,
        }
    );
}
