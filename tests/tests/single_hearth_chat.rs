//! One hearth, real clients over HTTP and WebSocket: direct chats, a group of 100 members who all
//! see one order, a device that was offline catching up, duplicate transactions, membership
//! rules, sessions, and a restart that keeps everything.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hearth_client::{Client, new_txn_id};
use hearth_spec::client::{ClientFrame, ReceiptKind, ServerFrame};
use hearth_spec::{Content, ErrorCode, EventId, RoomId, RoomKind, TxnId, UserId};
use hearth_tests::{
    HearthProcess, TestHearth, connect_synced, frames_until, next_frame, register_at,
};

const WAIT: Duration = Duration::from_secs(20);

fn is_synced(f: &ServerFrame) -> bool {
    matches!(f, ServerFrame::Synced { .. })
}

fn messages(frames: &[ServerFrame]) -> Vec<(u64, Vec<u8>)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Event { event, .. } => match &event.content {
                Content::Message { payload } => Some((event.seq, payload.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn two_users_chat_directly_and_both_devices_of_the_sender_see_it() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;
    let mut alice_phone = hearth.device("alice").await;
    let bob_id = bob.user_id().unwrap().clone();

    let room = alice
        .create_room(RoomKind::Direct, None, std::slice::from_ref(&bob_id))
        .await
        .unwrap();
    assert_eq!(room.members.len(), 2);

    let (_, mut bob_rx) = connect_synced(&mut bob).await;
    let (_, mut phone_rx) = connect_synced(&mut alice_phone).await;

    let (mut alice_tx, mut alice_rx) = alice.connect(None).await.unwrap().split();
    frames_until(&mut alice_rx, WAIT, is_synced).await.unwrap();
    let txn = new_txn_id();
    alice_tx
        .send(&room.room_id, &txn, b"hello bob")
        .await
        .unwrap();

    let acked = frames_until(&mut alice_rx, WAIT, |f| {
        matches!(f, ServerFrame::Accepted { .. })
    })
    .await
    .unwrap();
    let ServerFrame::Accepted {
        txn_id,
        event_id,
        seq,
        ..
    } = acked.last().unwrap().clone()
    else {
        unreachable!()
    };
    let seq = seq.expect("a room homed here is sequenced at once");
    assert_eq!(txn_id, txn);

    for rx in [&mut bob_rx, &mut phone_rx] {
        let frames = frames_until(
            rx,
            WAIT,
            |f| matches!(f, ServerFrame::Event { event, .. } if event.event_id == event_id),
        )
        .await
        .unwrap();
        let ServerFrame::Event { event, .. } = frames.last().unwrap() else {
            unreachable!()
        };
        assert_eq!(event.seq, seq);
        assert_eq!(event.sender, *alice.user_id().unwrap());
        assert_eq!(
            event.content,
            Content::Message {
                payload: b"hello bob".to_vec()
            }
        );
        // The event id is the hash of the envelope the client can rebuild.
        assert_eq!(event.envelope().event_id(), event.event_id);
    }

    // Bob's room list counts it as unread until he reads it: one message (the room's creation
    // and the joins before it are not messages).
    let rooms = bob.rooms().await.unwrap();
    assert!(rooms[0].last_seq > 1);
    assert_eq!(rooms[0].unread, 1);
    bob.mark_read(&room.room_id, seq).await.unwrap();
    assert_eq!(bob.rooms().await.unwrap()[0].unread, 0);
    // Alice's own message does not count as unread for her.
    assert_eq!(alice.rooms().await.unwrap()[0].unread, 0);
}

#[tokio::test]
async fn group_of_100_members_all_receive_every_message_in_one_order() {
    let hearth = TestHearth::start().await;
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(hearth.user(&format!("member{i:03}")).await);
    }
    let members: Vec<_> = clients[1..]
        .iter()
        .map(|c| c.user_id().unwrap().clone())
        .collect();
    let room = clients[0]
        .create_room(RoomKind::Group, Some("hundred"), &members)
        .await
        .unwrap();
    assert_eq!(room.members.len(), 100);

    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for client in clients.iter_mut() {
        let (tx, rx) = connect_synced(client).await;
        senders.push(tx);
        receivers.push(rx);
    }

    // Ten members send five messages each, all at once.
    const SENDERS: usize = 10;
    const EACH: usize = 5;
    let sends = senders.iter_mut().take(SENDERS).enumerate().map(|(i, tx)| {
        let room = room.room_id.clone();
        async move {
            for n in 0..EACH {
                tx.send(&room, &new_txn_id(), format!("{i}:{n}").as_bytes())
                    .await
                    .unwrap();
            }
        }
    });
    futures_util::future::join_all(sends).await;

    let total = SENDERS * EACH;
    let reads = receivers.iter_mut().map(|rx| async move {
        let mut got = Vec::new();
        while got.len() < total {
            match next_frame(rx, WAIT).await.unwrap() {
                ServerFrame::Event { event, .. } => {
                    if let Content::Message { payload } = event.content {
                        got.push((event.seq, event.event_id, payload));
                    }
                }
                _ => continue,
            }
        }
        got
    });
    let seen: Vec<Vec<(u64, EventId, Vec<u8>)>> = futures_util::future::join_all(reads).await;

    let reference = &seen[0];
    let seqs: Vec<u64> = reference.iter().map(|e| e.0).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless, ascending: {seqs:?}"
    );
    let distinct: HashSet<&Vec<u8>> = reference.iter().map(|e| &e.2).collect();
    assert_eq!(distinct.len(), total);
    for (member, got) in seen.iter().enumerate() {
        assert_eq!(got, reference, "member {member} saw a different order");
    }
}

#[tokio::test]
async fn offline_device_receives_everything_in_order_on_reconnect() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;
    let bob_id = bob.user_id().unwrap().clone();
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob_id])
        .await
        .unwrap();

    // Bob connects, reads what is there, acknowledges it and goes offline.
    let (mut bob_tx, mut bob_rx) = bob.connect(None).await.unwrap().split();
    let frames = frames_until(&mut bob_rx, WAIT, is_synced).await.unwrap();
    let ServerFrame::Synced { cursor } = frames.last().unwrap() else {
        unreachable!()
    };
    bob_tx.ack(*cursor).await.unwrap();
    // The ack is recorded asynchronously: wait until the hearth's copy of the cursor has moved.
    let deadline = std::time::Instant::now() + WAIT;
    while !bob.sync(None, 1).await.unwrap().items.is_empty() {
        assert!(std::time::Instant::now() < deadline, "ack never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bob_tx.close().await;
    drop(bob_rx);

    for i in 0..30u8 {
        alice
            .send(&room.room_id, &new_txn_id(), &[i])
            .await
            .unwrap();
    }

    // Reconnect without naming a cursor: the hearth resumes from the acknowledged one.
    let (_, mut bob_rx) = bob.connect(None).await.unwrap().split();
    let frames = frames_until(&mut bob_rx, WAIT, is_synced).await.unwrap();
    let got = messages(&frames);
    assert_eq!(
        got.iter().map(|m| m.1[0]).collect::<Vec<_>>(),
        (0..30).collect::<Vec<u8>>()
    );
    assert!(frames.iter().all(|f| !matches!(f, ServerFrame::Event { event, .. } if !matches!(event.content, Content::Message { .. }))),
        "events acknowledged before going offline are not sent again");

    // HTTP sync gives the same entries.
    let page = bob.sync(Some(*cursor), 100).await.unwrap();
    assert_eq!(page.items.len(), 30);
    assert!(!page.more);
}

#[tokio::test]
async fn duplicate_txn_gives_one_event_over_websocket_and_http() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob.user_id().unwrap().clone()])
        .await
        .unwrap();

    let txn = TxnId::parse("same-txn").unwrap();
    let first = alice.send(&room.room_id, &txn, b"once").await.unwrap();
    let again = alice.send(&room.room_id, &txn, b"once").await.unwrap();
    assert_eq!(first, again);

    let (mut tx, mut rx) = alice.connect(None).await.unwrap().split();
    frames_until(&mut rx, WAIT, is_synced).await.unwrap();
    // Twice in a row on the socket: whether the two share a group commit is up to timing here;
    // `committer::tests` makes both cases happen on purpose.
    let txn2 = TxnId::parse("socket-txn").unwrap();
    tx.send(&room.room_id, &txn2, b"twice").await.unwrap();
    tx.send(&room.room_id, &txn2, b"twice").await.unwrap();
    tx.send(&room.room_id, &txn, b"once").await.unwrap();
    let mut accepted = Vec::new();
    while accepted.len() < 3 {
        if let ServerFrame::Accepted {
            txn_id,
            event_id,
            seq,
            ..
        } = next_frame(&mut rx, WAIT).await.unwrap()
        {
            accepted.push((txn_id, event_id, seq));
        }
    }
    let by_txn: HashMap<&TxnId, HashSet<(EventId, Option<u64>)>> =
        accepted.iter().fold(HashMap::new(), |mut m, (t, e, s)| {
            m.entry(t).or_default().insert((*e, *s));
            m
        });
    assert_eq!(
        by_txn[&txn2].len(),
        1,
        "one event for the repeated socket txn"
    );
    assert_eq!(by_txn[&txn], HashSet::from([(first.event_id, first.seq)]));

    let history = alice.history(&room.room_id, None, 100).await.unwrap();
    let payloads: Vec<Vec<u8>> = messages_of(&history.events);
    assert_eq!(payloads, vec![b"once".to_vec(), b"twice".to_vec()]);
}

fn messages_of(events: &[hearth_spec::EventView]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match &e.content {
            Content::Message { payload } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn history_pages_backwards_without_gaps() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob.user_id().unwrap().clone()])
        .await
        .unwrap();
    for i in 0..57u32 {
        alice
            .send(&room.room_id, &new_txn_id(), &i.to_be_bytes())
            .await
            .unwrap();
    }
    let mut seqs = Vec::new();
    let mut before = None;
    loop {
        let page = alice.history(&room.room_id, before, 10).await.unwrap();
        assert!(page.events.len() <= 10);
        let mut page_seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        page_seqs.append(&mut seqs);
        seqs = page_seqs;
        match page.prev_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<u64>>(),
        "create + 2 joins + 57 messages"
    );
}

#[tokio::test]
async fn membership_decides_who_reads_and_sends() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;
    let mut carol = hearth.user("carol").await;
    let bob_id = bob.user_id().unwrap().clone();
    let carol_id = carol.user_id().unwrap().clone();
    let room = alice
        .create_room(RoomKind::Group, Some("team"), std::slice::from_ref(&bob_id))
        .await
        .unwrap();

    let err = carol
        .send(&room.room_id, &new_txn_id(), b"let me in")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    assert_eq!(
        carol
            .history(&room.room_id, None, 10)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );

    alice.invite(&room.room_id, &carol_id).await.unwrap();
    carol
        .send(&room.room_id, &new_txn_id(), b"thanks")
        .await
        .unwrap();
    assert_eq!(
        alice
            .invite(&room.room_id, &carol_id)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidParam)
    );

    bob.leave(&room.room_id).await.unwrap();
    assert_eq!(
        bob.send(&room.room_id, &new_txn_id(), b"x")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    assert!(bob.rooms().await.unwrap().is_empty());
    let after_leave = alice
        .send(&room.room_id, &new_txn_id(), b"bob is gone")
        .await
        .unwrap();
    let page = bob.sync(Some(0), 500).await.unwrap();
    assert!(
        page.items
            .iter()
            .all(|i| Some(i.event.seq) < after_leave.seq),
        "nothing after the leave reaches bob"
    );

    // A direct chat cannot grow.
    let dm = alice
        .create_room(RoomKind::Direct, None, std::slice::from_ref(&bob_id))
        .await
        .unwrap();
    assert_eq!(
        alice
            .invite(&dm.room_id, &carol_id)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    // Unknown users and rooms.
    let ghost = "@ghost:localhost".parse().unwrap();
    assert_eq!(
        alice
            .create_room(RoomKind::Direct, None, &[ghost])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotFound)
    );
    let nowhere = RoomId::parse("!nowhere:localhost").unwrap();
    assert_eq!(
        alice
            .send(&nowhere, &new_txn_id(), b"x")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotFound)
    );
}

/// The group's creator removes members; nobody else does, nobody is removed from a direct chat,
/// and the removed member's inbox ends with the removal. The creator gone, the member first by
/// id is the admin.
#[tokio::test]
async fn only_the_groups_admin_removes_members() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;
    let mut carol = hearth.user("carol").await;
    let mut dave = hearth.user("dave").await;
    let ids: Vec<UserId> = [&bob, &carol, &dave]
        .iter()
        .map(|c| c.user_id().unwrap().clone())
        .collect();
    let alice_id = alice.user_id().unwrap().clone();
    let room = alice
        .create_room(RoomKind::Group, Some("team"), &ids)
        .await
        .unwrap();
    assert_eq!(room.admins, vec![alice_id.clone()]);
    assert_eq!(
        bob.room(&room.room_id).await.unwrap().admins,
        vec![alice_id.clone()]
    );
    let code = |r: Result<_, hearth_client::ClientError>| r.unwrap_err().code();
    assert_eq!(
        code(bob.remove_member(&room.room_id, &ids[1]).await),
        Some(ErrorCode::Forbidden)
    );
    let stranger: UserId = "@nobody:localhost".parse().unwrap();
    assert_eq!(
        code(alice.remove_member(&room.room_id, &stranger).await),
        Some(ErrorCode::InvalidParam)
    );
    let removal = alice.remove_member(&room.room_id, &ids[1]).await.unwrap();
    let after = alice
        .send(&room.room_id, &new_txn_id(), b"carol is gone")
        .await
        .unwrap();
    assert_eq!(
        code(carol.send(&room.room_id, &new_txn_id(), b"x").await),
        Some(ErrorCode::Forbidden)
    );
    assert!(carol.rooms().await.unwrap().is_empty());
    let seen: Vec<u64> = carol
        .sync(Some(0), 500)
        .await
        .unwrap()
        .items
        .iter()
        .map(|i| i.event.seq)
        .collect();
    assert_eq!(
        seen.last().copied(),
        removal.seq,
        "the removal, then nothing"
    );
    assert!(seen.iter().all(|s| Some(*s) < after.seq));
    let summary = alice.room(&room.room_id).await.unwrap();
    assert!(!summary.members.contains(&ids[1]));

    // Alice leaves: of bob and dave, bob sorts first.
    alice.leave(&room.room_id).await.unwrap();
    assert_eq!(
        dave.room(&room.room_id).await.unwrap().admins,
        vec![ids[0].clone()]
    );
    assert_eq!(
        code(dave.remove_member(&room.room_id, &ids[0]).await),
        Some(ErrorCode::Forbidden)
    );
    bob.remove_member(&room.room_id, &ids[2]).await.unwrap();
    assert_eq!(
        bob.room(&room.room_id).await.unwrap().members,
        vec![ids[0].clone()]
    );

    // Admins make admins: bob makes dave one, dave takes bob's role away; the last admin
    // cannot step down.
    bob.invite(&room.room_id, &ids[2]).await.unwrap();
    bob.set_admin(&room.room_id, &ids[2], true).await.unwrap();
    assert_eq!(
        code(bob.set_admin(&room.room_id, &ids[2], true).await),
        Some(ErrorCode::InvalidParam)
    );
    assert_eq!(
        dave.room(&room.room_id).await.unwrap().admins,
        vec![ids[0].clone(), ids[2].clone()]
    );
    dave.set_admin(&room.room_id, &ids[0], false).await.unwrap();
    assert_eq!(
        code(bob.remove_member(&room.room_id, &ids[2]).await),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        code(dave.set_admin(&room.room_id, &ids[2], false).await),
        Some(ErrorCode::Forbidden),
        "the last admin stays one"
    );
    assert_eq!(
        code(dave.set_admin(&room.room_id, &ids[0], false).await),
        Some(ErrorCode::InvalidParam)
    );
    let page = bob.history(&room.room_id, None, 3).await.unwrap();
    let last = &page.events.last().unwrap();
    assert_eq!(last.sender, ids[2]);
    assert_eq!(
        last.content,
        Content::Admin {
            target: ids[0].clone(),
            admin: false
        }
    );

    // Nobody is removed from a direct chat, and it has no admins to make.
    let dm = alice
        .create_room(RoomKind::Direct, None, &ids[..1])
        .await
        .unwrap();
    assert!(dm.admins.is_empty());
    assert_eq!(
        code(alice.remove_member(&dm.room_id, &ids[0]).await),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        code(alice.set_admin(&dm.room_id, &ids[0], true).await),
        Some(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn group_member_limit_is_enforced() {
    let hearth = TestHearth::start_with(|c| c.limits.max_room_members = 3).await;
    let mut a = hearth.user("a").await;
    let mut ids = Vec::new();
    for name in ["b", "c", "d"] {
        ids.push(hearth.user(name).await.user_id().unwrap().clone());
    }
    let err = a
        .create_room(RoomKind::Group, Some("big"), &ids)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LimitExceeded));
    let room = a
        .create_room(RoomKind::Group, Some("small"), &ids[..2])
        .await
        .unwrap();
    assert_eq!(
        a.invite(&room.room_id, &ids[2]).await.unwrap_err().code(),
        Some(ErrorCode::LimitExceeded)
    );
}

#[tokio::test]
async fn logout_and_device_removal_revoke_access_and_live_sessions() {
    let hearth = TestHearth::start().await;
    let mut laptop = hearth.user("alice").await;
    let mut phone = hearth.device("alice").await;
    assert_eq!(laptop.devices().await.unwrap().len(), 2);

    let (_, mut phone_rx) = connect_synced(&mut phone).await;
    let phone_device = phone.session().unwrap().device_id.clone();
    laptop.delete_device(&phone_device).await.unwrap();
    // The live socket is told and closed within the session check interval.
    let frames = frames_until(&mut phone_rx, WAIT, |f| {
        matches!(f, ServerFrame::Error { .. })
    })
    .await
    .unwrap();
    let ServerFrame::Error { code, .. } = frames.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(*code, ErrorCode::Unauthorized);
    assert_eq!(
        phone.rooms().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    assert_eq!(
        phone.refresh().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );

    laptop.logout().await.unwrap();
    let mut stale = Client::with_session(&hearth.url, phone.session().unwrap().clone());
    assert_eq!(
        stale.rooms().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
}

#[tokio::test]
async fn refresh_rotates_tokens_and_a_replayed_refresh_token_revokes_the_device() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let old = alice.session().unwrap().clone();
    alice.refresh().await.unwrap();
    let new = alice.session().unwrap().clone();
    assert_ne!(old.refresh_token, new.refresh_token);
    alice.rooms().await.unwrap();

    // Someone replays the spent refresh token.
    let mut thief = Client::with_session(&hearth.url, old);
    assert_eq!(
        thief.refresh().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    // The device is revoked for everyone holding its tokens.
    assert_eq!(
        alice.rooms().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
}

/// A crash (SIGKILL of a real process), not a polite stop: afterwards the same tokens work, the
/// history and transaction dedup are there, and a device resumes after the cursor it
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_keeps_accounts_rooms_history_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let mut hearth = HearthProcess::start(dir.path(), &[]).await.unwrap();
    let mut alice = register_at(&hearth.url, "alice").await;
    let mut bob = register_at(&hearth.url, "bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob.user_id().unwrap().clone()])
        .await
        .unwrap();
    let sent = alice
        .send(
            &room.room_id,
            &TxnId::parse("t1").unwrap(),
            b"before restart",
        )
        .await
        .unwrap();
    let seq = sent.seq.unwrap();

    // Bob's device takes the message and acknowledges it; alice's delivered receipt says the
    // acknowledgement is stored.
    let (_alice_tx, mut alice_rx) = connect_synced(&mut alice).await;
    let (mut bob_tx, mut bob_rx) = bob.connect(None).await.unwrap().split();
    let frames = frames_until(
        &mut bob_rx,
        WAIT,
        |f| matches!(f, ServerFrame::Event { event, .. } if event.event_id == sent.event_id),
    )
    .await
    .unwrap();
    let Some(ServerFrame::Event { cursor, .. }) = frames.last() else {
        unreachable!()
    };
    bob_tx.ack(*cursor).await.unwrap();
    frames_until(&mut alice_rx, WAIT, |f| {
        matches!(f, ServerFrame::Receipt { kind: ReceiptKind::Delivered, seq: s, .. } if *s == seq)
    })
    .await
    .unwrap();
    drop((bob_tx, bob_rx, _alice_tx, alice_rx));

    hearth.kill9();
    hearth.start_again().await.unwrap();
    let (alice_session, bob_session) = (alice.session().unwrap(), bob.session().unwrap());
    let mut alice = Client::with_session(&hearth.url, alice_session.clone());
    let mut bob = Client::with_session(&hearth.url, bob_session.clone());
    // Same token still works (same key), same history, same dedup.
    let history = alice.history(&room.room_id, None, 10).await.unwrap();
    assert_eq!(history.events.last().unwrap().event_id, sent.event_id);
    let again = alice
        .send(
            &room.room_id,
            &TxnId::parse("t1").unwrap(),
            b"before restart",
        )
        .await
        .unwrap();
    assert_eq!(again, sent);
    let next = alice
        .send(&room.room_id, &TxnId::parse("t2").unwrap(), b"after")
        .await
        .unwrap();
    assert_eq!(next.seq, Some(seq + 1));
    // Bob's device starts after what it acknowledged: the next event it gets is the new one.
    let (_bob_tx, mut bob_rx) = bob.connect(None).await.unwrap().split();
    let first = loop {
        match next_frame(&mut bob_rx, WAIT).await.unwrap() {
            ServerFrame::Event { event, .. } => break event,
            ServerFrame::Synced { .. } => panic!("synced without the message sent after"),
            _ => {}
        }
    };
    assert_eq!(first.event_id, next.event_id);
    let mut phone = Client::new(&hearth.url);
    phone
        .login("bob", "correct horse battery", Some("phone"))
        .await
        .unwrap();
    assert_eq!(phone.rooms().await.unwrap().len(), 1);
}

/// Every event carries a time id: sorted as text, the events of all rooms come out in time
/// order, each id is unique, and any client can derive it from the event.
#[tokio::test]
async fn time_ids_order_the_events_of_all_rooms_by_time() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let carol = hearth.user("carol").await;
    let mut rooms = Vec::new();
    for other in [&bob, &carol] {
        let room = alice
            .create_room(RoomKind::Direct, None, &[other.user_id().unwrap().clone()])
            .await
            .unwrap()
            .room_id;
        rooms.push(room);
    }
    for i in 0..20 {
        let room = &rooms[i % 2];
        alice
            .send(room, &new_txn_id(), format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    let mut events = Vec::new();
    for room in &rooms {
        events.extend(alice.history(room, None, 100).await.unwrap().events);
    }
    for event in &events {
        assert_eq!(
            event.time_id,
            hearth_spec::TimeId::of(event.origin_ts, &event.event_id)
        );
    }
    events.sort_by(|a, b| a.time_id.cmp(&b.time_id));
    assert!(
        events.windows(2).all(|w| w[0].origin_ts <= w[1].origin_ts),
        "time ids out of time order"
    );
    let unique: HashSet<_> = events.iter().map(|e| e.time_id.clone()).collect();
    assert_eq!(unique.len(), events.len());
    // Messages sent one after another, in two rooms, come out in the order they were sent
    // wherever their times differ.
    let sent: Vec<(u64, String)> = events
        .iter()
        .filter_map(|e| match &e.content {
            Content::Message { payload } => {
                Some((e.origin_ts, String::from_utf8(payload.clone()).unwrap()))
            }
            _ => None,
        })
        .collect();
    for pair in sent.windows(2) {
        let (a, b): (usize, usize) = (
            pair[0].1[1..].parse().unwrap(),
            pair[1].1[1..].parse().unwrap(),
        );
        if pair[0].0 < pair[1].0 {
            assert!(a < b, "{pair:?}");
        }
    }
}

/// A device that pipelines its sends over one connection (hundreds in flight, as the SDK does
/// when catching up) has them sequenced in the order it sent them: its hearth takes each send
/// into the commit queue as its frame is read, never in the order the in-flight work is polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_sequenced_in_the_order_they_were_sent() {
    const SENDS: usize = 5_000;
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let room = alice
        .create_room(
            RoomKind::Group,
            Some("burst"),
            &[bob.user_id().unwrap().clone()],
        )
        .await
        .unwrap()
        .room_id;
    let txns: Vec<TxnId> = (0..SENDS)
        .map(|i| TxnId::parse(&format!("m{i:05}")).unwrap())
        .collect();
    // Written 500 frames at a time, so that the hearth reads many sends in one go.
    let (mut tx, mut rx) = connect_synced(&mut alice).await;
    for chunk in txns.chunks(500) {
        let frames: Vec<ClientFrame> = chunk
            .iter()
            .map(|t| ClientFrame::Send {
                room_id: room.clone(),
                txn_id: t.clone(),
                payload: t.as_str().as_bytes().to_vec(),
            })
            .collect();
        tx.frames(&frames).await.unwrap();
    }
    let mut accepted = 0;
    while accepted < SENDS {
        match next_frame(&mut rx, WAIT).await.unwrap() {
            ServerFrame::Accepted { .. } => accepted += 1,
            frame @ ServerFrame::Error { .. } => panic!("a send was refused: {frame:?}"),
            _ => {}
        }
    }

    let mut texts = Vec::new();
    let mut before = None;
    loop {
        let page = alice.history(&room, before, 500).await.unwrap();
        let mut page_texts: Vec<String> = messages_of(&page.events)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect();
        page_texts.append(&mut texts);
        texts = page_texts;
        match page.prev_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let sent: Vec<String> = txns.iter().map(|t| t.as_str().to_owned()).collect();
    assert_eq!(
        hearth_tests::first_out_of_order(&texts, &sent),
        None,
        "the room's order is the order alice sent in"
    );
}
