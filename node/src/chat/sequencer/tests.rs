//! The sequencer's rules, one request at a time, and its ordering under any interleaving.

use super::*;
use crate::store::ResumedRoom;
use proptest::prelude::*;

fn user(name: &str) -> UserId {
    UserId::parse(&format!("@{name}:localhost")).unwrap()
}
fn local() -> ServerName {
    ServerName::parse("localhost").unwrap()
}
fn dev() -> DeviceId {
    DeviceId::parse("D").unwrap()
}
fn room() -> RoomId {
    RoomId::parse("!r:localhost").unwrap()
}

fn seq_with_group(members: &[&str]) -> (Sequencer, Batch) {
    let mut s = Sequencer::new(SequencerState::default(), local(), 1000);
    let mut batch = Batch::default();
    s.apply(
        Request::CreateRoom {
            user: user(members[0]),
            device: dev(),
            room: room(),
            kind: RoomKind::Group,
            name: Some("g".into()),
            members: members[1..].iter().map(|m| user(m)).collect(),
            nonce: 1,
        },
        1_000,
        &mut batch,
    )
    .unwrap();
    (s, batch)
}

fn send(
    s: &mut Sequencer,
    who: &str,
    txn: &str,
    batch: &mut Batch,
) -> Result<Reply, SequenceError> {
    s.apply(
        Request::Send {
            user: user(who),
            device: dev(),
            room: room(),
            txn_id: TxnId::parse(txn).unwrap(),
            payload: b"hi".to_vec(),
        },
        2_000,
        batch,
    )
}

fn commit(
    s: &mut Sequencer,
    who: &str,
    txn: &str,
    epoch: u64,
    batch: &mut Batch,
) -> Result<Reply, SequenceError> {
    s.apply(
        Request::Commit {
            user: user(who),
            device: dev(),
            room: room(),
            txn_id: TxnId::parse(txn).unwrap(),
            epoch,
            commit: vec![1, 2, 3],
            welcome: Some(txn.as_bytes().to_vec()),
        },
        2_000,
        batch,
    )
}

/// Marks as (user, room, seq), to compare with short literals.
fn marks(marks: &[crate::store::Mark]) -> Vec<(UserId, RoomId, u64)> {
    marks
        .iter()
        .map(|m| (m.user.clone(), m.room.clone(), m.seq))
        .collect()
}
#[test]
fn the_home_takes_one_commit_per_epoch_and_refuses_stale_ones() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    assert!(commit(&mut s, "a", "c1", 0, &mut batch).is_ok());
    assert_eq!(batch.epochs, vec![(room(), 1)]);
    // b made its commit in epoch 0 too: it lost the race and nothing of it is written.
    let before = batch.events.len();
    assert_eq!(
        commit(&mut s, "b", "c2", 0, &mut batch),
        Err(SequenceError::StaleEpoch { got: 0, current: 1 })
    );
    assert_eq!(batch.events.len(), before);
    // A commit from the future is as wrong as a stale one.
    assert!(matches!(
        commit(&mut s, "b", "c3", 5, &mut batch),
        Err(SequenceError::StaleEpoch { got: 5, current: 1 })
    ));
    assert!(commit(&mut s, "b", "c4", 1, &mut batch).is_ok());
    assert_eq!(s.epoch(&room()), Some(2));
    // A repeated txn is the same event, not a second commit.
    assert!(commit(&mut s, "b", "c4", 1, &mut batch).is_ok());
    assert_eq!(s.epoch(&room()), Some(2));
    assert!(matches!(
        commit(&mut s, "x", "c5", 2, &mut batch),
        Err(SequenceError::NotMember(_))
    ));
}

#[test]
fn create_room_sequences_create_then_joins_and_fills_inboxes() {
    let (_, batch) = seq_with_group(&["a", "b", "c"]);
    let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    // a sees all 4 events; b sees its own join and c's; c sees its own join.
    let count = |u: &str| batch.inbox.iter().filter(|i| i.user == user(u)).count();
    assert_eq!((count("a"), count("b"), count("c")), (4, 2, 1));
}

#[test]
fn non_member_cannot_send_and_nothing_is_written() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    assert_eq!(
        send(&mut s, "z", "t1", &mut batch),
        Err(SequenceError::NotMember(room()))
    );
    assert!(batch.is_empty());
}

#[test]
fn duplicate_txn_in_one_batch_gives_one_event() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    s.begin_batch();
    let first = send(&mut s, "a", "t1", &mut batch).unwrap();
    let again = send(&mut s, "a", "t1", &mut batch).unwrap();
    assert_eq!(first, again);
    assert_eq!(batch.events.len(), 1);
}

#[test]
fn leaver_sees_its_leave_but_nothing_after() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    s.apply(
        Request::Leave {
            user: user("b"),
            device: dev(),
            room: room(),
            nonce: 2,
        },
        3_000,
        &mut batch,
    )
    .unwrap();
    assert!(batch.inbox.iter().any(|i| i.user == user("b")));
    let mut later = Batch::default();
    send(&mut s, "a", "t2", &mut later).unwrap();
    assert!(later.inbox.iter().all(|i| i.user != user("b")));
    assert_eq!(
        send(&mut s, "b", "t3", &mut later),
        Err(SequenceError::NotMember(room()))
    );
}

#[test]
fn direct_rooms_take_exactly_two_and_no_invites() {
    let mut s = Sequencer::new(SequencerState::default(), local(), 1000);
    let mut batch = Batch::default();
    let create = |members: Vec<UserId>| Request::CreateRoom {
        user: user("a"),
        device: dev(),
        room: room(),
        kind: RoomKind::Direct,
        name: None,
        members,
        nonce: 1,
    };
    assert_eq!(
        s.apply(create(vec![]), 1, &mut batch),
        Err(SequenceError::InvalidDirect)
    );
    assert_eq!(
        s.apply(create(vec![user("b"), user("c")]), 1, &mut batch),
        Err(SequenceError::InvalidDirect)
    );
    s.apply(create(vec![user("b")]), 1, &mut batch).unwrap();
    let invite = Request::Invite {
        user: user("a"),
        device: dev(),
        room: room(),
        target: user("c"),
        nonce: 3,
    };
    assert_eq!(
        s.apply(invite, 2, &mut batch),
        Err(SequenceError::DirectRoomInvite)
    );
}

#[test]
fn member_limit_is_enforced() {
    let mut s = Sequencer::new(SequencerState::default(), local(), 3);
    let mut batch = Batch::default();
    let members = vec![user("b"), user("c"), user("d")];
    let req = Request::CreateRoom {
        user: user("a"),
        device: dev(),
        room: room(),
        kind: RoomKind::Group,
        name: None,
        members,
        nonce: 1,
    };
    assert_eq!(s.apply(req, 1, &mut batch), Err(SequenceError::RoomFull(3)));
}

#[test]
fn ack_past_inbox_head_is_refused() {
    let (mut s, batch) = seq_with_group(&["a", "b"]);
    let head = batch
        .inbox
        .iter()
        .filter(|i| i.user == user("a"))
        .map(|i| i.position)
        .max()
        .unwrap();
    let mut b = Batch::default();
    assert!(
        s.apply(
            Request::Ack {
                user: user("a"),
                device: dev(),
                cursor: head
            },
            5,
            &mut b
        )
        .is_ok()
    );
    assert!(
        s.apply(
            Request::Ack {
                user: user("a"),
                device: dev(),
                cursor: head + 1
            },
            5,
            &mut b
        )
        .is_err()
    );
}

fn far() -> ServerName {
    ServerName::parse("far.test").unwrap()
}

fn far_user(name: &str) -> UserId {
    UserId::parse(&format!("@{name}:far.test")).unwrap()
}

/// A group homed on far.test: this hearth holds a replica.
fn far_room() -> RoomId {
    RoomId::parse("!g:far.test").unwrap()
}

/// A sequencer with a replica of [`far_room`] at seq `last`, members a (local) and x (far).
fn with_replica(last: u64) -> Sequencer {
    let record = RoomRecord {
        kind: RoomKind::Group,
        name: None,
        created_ts: 0,
    };
    let state = SequencerState {
        rooms: vec![ResumedRoom {
            room: far_room(),
            record,
            last_seq: last,
            members: vec![user("a"), far_user("x")],
            epoch: 0,
            admins: BTreeSet::from([far_user("x")]),
        }],
        inbox_heads: vec![],
        closed: vec![],
    };
    Sequencer::new(state, local(), 1000)
}

/// An event of `room` as `sender` would have it made, encoded.
fn made(room: &RoomId, sender: &UserId, txn: &str, content: Content) -> (Envelope, Vec<u8>) {
    let e = envelope(room, sender, &dev(), TxnId::parse(txn).unwrap(), 7, content);
    let bytes = e.encode();
    (e, bytes)
}

fn text() -> Content {
    Content::Message {
        payload: b"hi".to_vec(),
    }
}

fn member(target: UserId, membership: Membership) -> Content {
    Content::Member { target, membership }
}

/// An MLS PrivateMessage's clear header for `group` at `epoch`, then some ciphertext.
fn mls_message(group: &[u8], epoch: u64) -> Vec<u8> {
    let mut bytes = vec![0x00, 0x01, 0x00, 0x02, group.len() as u8];
    bytes.extend_from_slice(group);
    bytes.extend_from_slice(&epoch.to_be_bytes());
    bytes.extend_from_slice(b"ciphertext");
    bytes
}

#[test]
fn a_message_made_in_another_epoch_of_the_rooms_group_is_refused() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    commit(&mut s, "a", "c1", 0, &mut batch).unwrap();
    let mut message = |txn: &str, payload: Vec<u8>| {
        s.apply(
            Request::Send {
                user: user("a"),
                device: dev(),
                room: room(),
                txn_id: TxnId::parse(txn).unwrap(),
                payload,
            },
            2_000,
            &mut batch,
        )
    };
    let group = room().as_str().as_bytes().to_vec();
    assert_eq!(
        message("m0", mls_message(&group, 0)),
        Err(SequenceError::StaleEpoch { got: 0, current: 1 })
    );
    assert_eq!(
        message("m2", mls_message(&group, 2)),
        Err(SequenceError::StaleEpoch { got: 2, current: 1 })
    );
    assert!(message("m1", mls_message(&group, 1)).is_ok());
    // Another group's message, or bytes that are not MLS at all, are opaque here and pass.
    assert!(message("x0", mls_message(b"!other:localhost", 0)).is_ok());
    assert!(message("x1", b"plain".to_vec()).is_ok());
}

#[test]
fn member_and_name_limits_hold_at_their_bounds() {
    let mut s = Sequencer::new(SequencerState::default(), local(), 3);
    let mut batch = Batch::default();
    let create = |room: &str, members: Vec<UserId>, name: Option<String>| Request::CreateRoom {
        user: user("a"),
        device: dev(),
        room: RoomId::parse(room).unwrap(),
        kind: RoomKind::Group,
        name,
        members,
        nonce: 1,
    };
    // Exactly the limit is fine; one more is not, by creation or by invitation.
    assert!(
        s.apply(
            create("!r:localhost", vec![user("b"), user("c")], None),
            1,
            &mut batch
        )
        .is_ok()
    );
    let invite = |target: &str| Request::Invite {
        user: user("a"),
        device: dev(),
        room: room(),
        target: user(target),
        nonce: 2,
    };
    assert_eq!(
        s.apply(invite("d"), 2, &mut batch),
        Err(SequenceError::RoomFull(3))
    );
    s.apply(
        Request::Leave {
            user: user("c"),
            device: dev(),
            room: room(),
            nonce: 3,
        },
        3,
        &mut batch,
    )
    .unwrap();
    assert!(s.apply(invite("d"), 4, &mut batch).is_ok());
    // A name of exactly MAX_ROOM_NAME bytes is fine; one byte more is not.
    let name = |n| Some("é".repeat(n / 2) + &"x".repeat(n % 2));
    assert!(
        s.apply(
            create("!n1:localhost", vec![], name(MAX_ROOM_NAME)),
            5,
            &mut batch
        )
        .is_ok()
    );
    assert_eq!(
        s.apply(
            create("!n2:localhost", vec![], name(MAX_ROOM_NAME + 1)),
            5,
            &mut batch
        ),
        Err(SequenceError::NameTooLong)
    );
}

#[test]
fn the_events_a_room_starts_with_have_distinct_transaction_ids() {
    let (_, batch) = seq_with_group(&["a", "b", "c"]);
    let txns: BTreeSet<String> = batch
        .events
        .iter()
        .map(|e| Envelope::decode(&e.bytes).unwrap().txn_id.to_string())
        .collect();
    assert_eq!(txns.len(), batch.events.len());
    // The creator's own join is read by the creator: the mark is at the last event made.
    assert_eq!(marks(&batch.read_marks), vec![(user("a"), room(), 4)]);
}

#[test]
fn what_one_sends_is_read_at_its_own_place() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    send(&mut s, "b", "t1", &mut batch).unwrap();
    send(&mut s, "a", "t2", &mut batch).unwrap();
    assert_eq!(
        marks(&batch.read_marks),
        vec![(user("b"), room(), 4), (user("a"), room(), 5)]
    );
}

#[test]
fn per_batch_deduplication_ends_with_the_batch() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    s.begin_batch();
    send(&mut s, "a", "t1", &mut batch).unwrap();
    // After the commit the store answers for t1 (the committer asks it first); the sequencer
    // itself forgets, so a new batch holds nothing stale.
    s.begin_batch();
    let mut next = Batch::default();
    send(&mut s, "a", "t1", &mut next).unwrap();
    assert_eq!(next.events.len(), 1);
}

#[test]
fn membership_questions_are_answered_from_the_state() {
    let (s, _) = seq_with_group(&["a", "b"]);
    assert!(s.is_member(&room(), &user("a")));
    assert!(!s.is_member(&room(), &user("z")));
    assert!(!s.is_member(&far_room(), &user("a")));
    assert!(s.is_home(&room()));
    assert!(!s.is_home(&far_room()));
}

#[test]
fn marks_may_reach_the_last_event_and_no_further() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    assert_eq!(s.check_read(&room(), &user("a"), 3), Ok(()));
    assert_eq!(s.check_read(&room(), &user("a"), 0), Ok(()));
    assert_eq!(
        s.check_read(&room(), &user("a"), 4),
        Err(SequenceError::SeqOutOfRange { seq: 4, last: 3 })
    );
    assert_eq!(
        s.check_read(&room(), &user("z"), 1),
        Err(SequenceError::NotMember(room()))
    );
    let read = |seq| Request::MarkRead {
        user: user("b"),
        room: room(),
        seq,
    };
    assert!(s.apply(read(3), 1, &mut batch).is_ok());
    assert!(s.apply(read(4), 1, &mut batch).is_err());
}

#[test]
fn recent_senders_answer_for_a_half_open_range_and_forget_the_oldest() {
    let (mut s, _) = seq_with_group(&["a", "b", "c"]);
    let mut batch = Batch::default();
    // Events 1..=4 are a's (create and joins); then b at 5, c at 6.
    send(&mut s, "b", "t1", &mut batch).unwrap();
    send(&mut s, "c", "t2", &mut batch).unwrap();
    let between = |after, upto| s.senders_between(&room(), after, upto);
    assert_eq!(between(4, 6), BTreeSet::from([user("b"), user("c")]));
    assert_eq!(between(5, 6), BTreeSet::from([user("c")]));
    assert_eq!(between(4, 5), BTreeSet::from([user("b")]));
    assert_eq!(between(6, 6), BTreeSet::new());
    assert_eq!(s.senders_between(&far_room(), 0, 10), BTreeSet::new());
    for i in 0..RECENT_SENDERS {
        send(&mut s, "a", &format!("f{i}"), &mut batch).unwrap();
    }
    assert_eq!(
        s.senders_between(&room(), 0, 6),
        BTreeSet::new(),
        "only the latest are remembered"
    );
}

#[test]
fn a_hearth_new_to_a_room_gets_its_history_first_and_leaves_with_its_last_member() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    assert_eq!(s.other_servers(&room()), Vec::<ServerName>::new());
    let mut batch = Batch::default();
    let invite = |target: UserId, nonce| Request::Invite {
        user: user("a"),
        device: dev(),
        room: room(),
        target,
        nonce,
    };
    s.apply(invite(far_user("x"), 1), 1, &mut batch).unwrap();
    // History 1..=3 for the newcomer's hearth, then its join (4) like every later event.
    let to_far: Vec<u64> = batch
        .outbox
        .iter()
        .filter(|(d, _)| *d == far())
        .map(|(_, item)| match item {
            OutItem::Sequenced { seq, .. } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(to_far, vec![1, 2, 3, 4]);
    // A second member there adds no second copy of the history.
    let mut batch = Batch::default();
    s.apply(invite(far_user("y"), 2), 2, &mut batch).unwrap();
    assert_eq!(
        batch.outbox.len(),
        1,
        "only the join itself: {:?}",
        batch.outbox
    );
    assert_eq!(s.other_servers(&room()), vec![far()]);
    // far.test stays while one of its users is in the room.
    let leave = |who: &UserId, s: &mut Sequencer| {
        let (e, bytes) = made(&room(), who, "l", member(who.clone(), Membership::Leave));
        s.apply(
            Request::Submitted { envelope: e, bytes },
            3,
            &mut Batch::default(),
        )
    };
    leave(&far_user("x"), &mut s).unwrap();
    assert_eq!(s.other_servers(&room()), vec![far()]);
    leave(&far_user("y"), &mut s).unwrap();
    assert_eq!(s.other_servers(&room()), Vec::<ServerName>::new());
    let mut batch = Batch::default();
    send(&mut s, "a", "after", &mut batch).unwrap();
    assert!(
        batch.outbox.is_empty(),
        "nothing for a hearth with nobody left"
    );
}

#[test]
fn the_home_takes_a_member_hearths_events_by_the_same_rules() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut invite = Batch::default();
    s.apply(
        Request::Invite {
            user: user("a"),
            device: dev(),
            room: room(),
            target: far_user("x"),
            nonce: 1,
        },
        1,
        &mut invite,
    )
    .unwrap();
    let x = far_user("x");
    let mut submit = |txn: &str, content: Content| {
        let (envelope, bytes) = made(&room(), &x, txn, content);
        s.apply(
            Request::Submitted { envelope, bytes },
            2,
            &mut Batch::default(),
        )
    };
    assert!(submit("m1", text()).is_ok());
    assert_eq!(
        submit("m1", text()),
        Ok(Reply::Duplicate),
        "same txn, same batch"
    );
    // A member invites another; inviting oneself is not a thing, and only the admin removes.
    assert!(submit("i1", member(far_user("y"), Membership::Join)).is_ok());
    assert_eq!(
        submit("i2", member(x.clone(), Membership::Join)),
        Err(SequenceError::BadEvent(
            "members invite others, not themselves"
        ))
    );
    assert_eq!(
        submit("l1", member(user("b"), Membership::Leave)),
        Err(SequenceError::NotAdmin {
            admins: "@a:localhost".into()
        })
    );
    assert_eq!(
        submit(
            "c1",
            Content::Create {
                kind: RoomKind::Group,
                name: None
            }
        ),
        Err(SequenceError::BadEvent("rooms are created by their home"))
    );
    assert!(submit("l2", member(x.clone(), Membership::Leave)).is_ok());
    assert_eq!(submit("m2", text()), Err(SequenceError::NotMember(room())));
    // Only the home sequences.
    let mut replica = with_replica(3);
    let (envelope, bytes) = made(&far_room(), &far_user("x"), "m", text());
    assert_eq!(
        replica.apply(
            Request::Submitted { envelope, bytes },
            2,
            &mut Batch::default()
        ),
        Err(SequenceError::NotHome(far_room()))
    );
}

#[test]
fn a_replica_takes_its_homes_events_in_order_only() {
    let x = far_user("x");
    let mut s = with_replica(3);
    let apply = |seq, content: Content, txn: &str, s: &mut Sequencer, batch: &mut Batch| {
        let (envelope, bytes) = made(&far_room(), &x, txn, content);
        s.apply(
            Request::Replicate {
                seq,
                envelope,
                bytes,
            },
            9,
            batch,
        )
    };
    let mut batch = Batch::default();
    assert_eq!(
        apply(5, text(), "m5", &mut s, &mut batch),
        Err(SequenceError::OutOfOrder {
            seq: 5,
            expected: 4
        })
    );
    assert_eq!(
        apply(3, text(), "m3", &mut s, &mut batch),
        Ok(Reply::Duplicate)
    );
    assert_eq!(
        apply(2, text(), "m2", &mut s, &mut batch),
        Ok(Reply::Duplicate)
    );
    assert!(batch.events.is_empty());
    let placed = apply(4, text(), "m4", &mut s, &mut batch).unwrap();
    assert!(matches!(
        placed,
        Reply::Sequenced(Sequenced { seq: Some(4), .. })
    ));
    assert_eq!(
        apply(
            5,
            Content::Create {
                kind: RoomKind::Group,
                name: None
            },
            "c",
            &mut s,
            &mut batch
        ),
        Err(SequenceError::BadEvent("a room has one create event"))
    );
    // A commit moves the epoch to the one after it; a join and a leave change who gets events.
    let commit = Content::Commit {
        epoch: 6,
        commit: vec![1],
        welcome: None,
    };
    apply(5, commit, "k", &mut s, &mut batch).unwrap();
    assert_eq!(s.epoch(&far_room()), Some(7));
    apply(
        6,
        member(user("b"), Membership::Join),
        "j",
        &mut s,
        &mut batch,
    )
    .unwrap();
    assert!(s.is_member(&far_room(), &user("b")));
    apply(
        7,
        member(user("b"), Membership::Leave),
        "l",
        &mut s,
        &mut batch,
    )
    .unwrap();
    assert!(!s.is_member(&far_room(), &user("b")));
    // The home's events are never queued back to it.
    assert!(batch.outbox.is_empty());
}

#[test]
fn a_new_replica_starts_at_the_create_event_and_marks_its_own_users_messages_read() {
    let mut s = Sequencer::new(SequencerState::default(), local(), 1000);
    let x = far_user("x");
    let replicate = |seq, sender: &UserId, content, txn: &str| {
        let (envelope, bytes) = made(&far_room(), sender, txn, content);
        Request::Replicate {
            seq,
            envelope,
            bytes,
        }
    };
    let mut batch = Batch::default();
    assert_eq!(
        s.apply(replicate(2, &x, text(), "m"), 1, &mut batch),
        Err(SequenceError::OutOfOrder {
            seq: 2,
            expected: 1
        })
    );
    assert_eq!(
        s.apply(replicate(1, &x, text(), "m"), 1, &mut batch),
        Err(SequenceError::BadEvent(
            "a room starts with its create event"
        ))
    );
    let create = Content::Create {
        kind: RoomKind::Group,
        name: None,
    };
    s.apply(replicate(1, &x, create, "c"), 1, &mut batch)
        .unwrap();
    s.apply(
        replicate(2, &x, member(user("a"), Membership::Join), "j"),
        1,
        &mut batch,
    )
    .unwrap();
    let mut batch = Batch::default();
    s.apply(replicate(3, &x, text(), "from-x"), 1, &mut batch)
        .unwrap();
    s.apply(replicate(4, &user("a"), text(), "from-a"), 1, &mut batch)
        .unwrap();
    assert_eq!(marks(&batch.read_marks), vec![(user("a"), far_room(), 4)]);
    assert_eq!(batch.inbox.len(), 2, "a gets both");
}

#[test]
fn sends_invites_and_leaves_in_a_room_homed_elsewhere_go_to_the_home_unsequenced() {
    let mut s = with_replica(3);
    let mut batch = Batch::default();
    let invite = Request::Invite {
        user: user("a"),
        device: dev(),
        room: far_room(),
        target: user("b"),
        nonce: 1,
    };
    let reply = s.apply(invite, 1, &mut batch).unwrap();
    assert!(matches!(
        reply,
        Reply::Sequenced(Sequenced { seq: None, .. })
    ));
    assert!(batch.events.is_empty() && batch.joins.is_empty());
    assert!(matches!(&batch.outbox[..], [(d, OutItem::Submit { .. })] if *d == far()));
    assert!(!s.is_member(&far_room(), &user("b")), "the home decides");
    let mut batch = Batch::default();
    let leave = Request::Leave {
        user: user("a"),
        device: dev(),
        room: far_room(),
        nonce: 2,
    };
    let reply = s.apply(leave, 1, &mut batch).unwrap();
    assert!(matches!(
        reply,
        Reply::Sequenced(Sequenced { seq: None, .. })
    ));
    assert!(batch.leaves.is_empty());
    assert!(
        s.is_member(&far_room(), &user("a")),
        "until the home says so"
    );
}

#[test]
fn inbox_cursors_rise_and_follow_the_clock() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    let at = |s: &mut Sequencer, txn: &str, now, batch: &mut Batch| {
        s.apply(
            Request::Send {
                user: user("a"),
                device: dev(),
                room: room(),
                txn_id: TxnId::parse(txn).unwrap(),
                payload: vec![1],
            },
            now,
            batch,
        )
        .unwrap();
    };
    at(&mut s, "t1", 5_000, &mut batch);
    let head = |batch: &Batch| {
        batch
            .inbox
            .iter()
            .filter(|i| i.user == user("b"))
            .map(|i| i.position)
            .max()
    };
    assert_eq!(head(&batch), Some(5_000 << 10));
    // A clock that went back does not move the cursor back.
    at(&mut s, "t2", 4_000, &mut batch);
    assert_eq!(head(&batch), Some((5_000 << 10) + 1));
}

proptest! {
    /// Whatever sends interleave, every member's inbox lists the room's events in seq order
    /// with strictly increasing cursors, and seqs are gapless.
    #[test]
    fn room_order_is_gapless_and_inboxes_follow_it(
        senders in proptest::collection::vec(0usize..3, 1..60),
        clock in proptest::collection::vec(0u64..5, 1..60),
    ) {
        let names = ["a", "b", "c"];
        let (mut s, mut batch) = seq_with_group(&names);
        let mut now = 10_000u64;
        for (i, who) in senders.iter().enumerate() {
            now += clock.get(i).copied().unwrap_or(1);
            s.apply(Request::Send {
                user: user(names[*who]), device: dev(), room: room(),
                txn_id: TxnId::parse(&format!("t{i}")).unwrap(), payload: vec![i as u8],
            }, now, &mut batch).unwrap();
        }
        let seqs: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
        prop_assert_eq!(seqs, (1..=batch.events.len() as u64).collect::<Vec<_>>());
        for name in names {
            let mine: Vec<(u64, u64)> = batch.inbox.iter().filter(|i| i.user == user(name)).map(|i| (i.position, i.seq)).collect();
            prop_assert!(mine.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        }
    }
}

#[test]
fn a_shut_room_loses_its_members_here_and_takes_nothing_but_leaves() {
    let (mut s, _) = seq_with_group(&["a", "b"]);
    let mut batch = Batch::default();
    s.apply(
        Request::Invite {
            user: user("a"),
            device: dev(),
            room: room(),
            target: far_user("x"),
            nonce: 1,
        },
        1,
        &mut batch,
    )
    .unwrap();
    let before = s.rooms[&room()].last_seq;

    let mut shut = Batch::default();
    let hearth = DeviceId::parse("hearth").unwrap();
    let shutdown = Request::Shutdown {
        room: room(),
        device: hearth.clone(),
        nonce: 9,
    };
    assert_eq!(
        s.apply(shutdown, 5, &mut shut),
        Ok(Reply::ShutDown { members_left: 2 })
    );
    // a and b leave, in events of their own made by the hearth's device; x (elsewhere) stays.
    let left: Vec<(UserId, u64)> = shut
        .events
        .iter()
        .map(|e| {
            let envelope = Envelope::decode(&e.bytes).unwrap();
            assert_eq!(envelope.sender_device, hearth);
            (envelope.sender, e.seq)
        })
        .collect();
    assert_eq!(left, vec![(user("a"), before + 1), (user("b"), before + 2)]);
    assert_eq!(shut.closed_rooms, vec![(room(), 5)]);
    assert!(!s.is_member(&room(), &user("a")) && s.is_member(&room(), &far_user("x")));

    // The member elsewhere can no longer write, invite or commit; it may still leave.
    let x = far_user("x");
    let mut submit = |txn: &str, content: Content| {
        let (envelope, bytes) = made(&room(), &x, txn, content);
        s.apply(
            Request::Submitted { envelope, bytes },
            6,
            &mut Batch::default(),
        )
    };
    let closed = Err(SequenceError::RoomClosed(room()));
    assert_eq!(submit("m1", text()), closed);
    assert_eq!(
        submit("i1", member(far_user("y"), Membership::Join)),
        closed
    );
    assert!(submit("l1", member(x.clone(), Membership::Leave)).is_ok());

    // After a restart the room is still shut.
    let state = SequencerState {
        rooms: vec![ResumedRoom {
            room: room(),
            record: RoomRecord {
                kind: RoomKind::Group,
                name: None,
                created_ts: 1,
            },
            last_seq: before + 2,
            members: vec![far_user("x")],
            epoch: 0,
            admins: BTreeSet::from([far_user("x")]),
        }],
        inbox_heads: Vec::new(),
        closed: vec![room()],
    };
    let mut again = Sequencer::new(state, local(), 1000);
    let (envelope, bytes) = made(&room(), &far_user("x"), "m2", text());
    assert_eq!(
        again.apply(
            Request::Submitted { envelope, bytes },
            7,
            &mut Batch::default()
        ),
        Err(SequenceError::RoomClosed(room()))
    );
    // An unknown room cannot be shut.
    let unknown = Request::Shutdown {
        room: far_room(),
        device: hearth,
        nonce: 1,
    };
    assert!(matches!(
        again.apply(unknown, 8, &mut Batch::default()),
        Err(SequenceError::RoomNotFound(_))
    ));
}

/// A commit of replicated events was shown to devices before its flush, which then failed, and
/// the sequencer was reloaded from a store without it: the positions it showed are not given
/// again, even within the same millisecond.
#[test]
fn positions_a_failed_commit_showed_are_never_given_again() {
    let replicate = |s: &mut Sequencer, batch: &mut Batch| {
        let (envelope, bytes) = made(&far_room(), &far_user("x"), "m", text());
        s.apply(
            Request::Replicate {
                seq: 4,
                envelope,
                bytes,
            },
            7,
            batch,
        )
        .unwrap();
    };
    let position_of_a = |batch: &Batch| {
        batch
            .inbox
            .iter()
            .find(|e| e.user == user("a"))
            .unwrap()
            .position
    };
    let mut shown = Batch::default();
    replicate(&mut with_replica(3), &mut shown);
    let lost = position_of_a(&shown);

    let mut reloaded = with_replica(3);
    reloaded.skip_inbox_positions([(user("a"), lost)]);
    let mut again = Batch::default();
    replicate(&mut reloaded, &mut again);
    assert!(position_of_a(&again) > lost);
}

#[test]
fn a_cursor_is_in_range_up_to_the_head_or_below_any_position_still_to_be_given() {
    let now = 10;
    let clock = clock_position(now);
    assert!(cursor_in_range(5, 5, now));
    // One a member showed before a flush that failed: the next position will be above it.
    assert!(cursor_in_range(clock - 1, 5, now));
    assert!(!cursor_in_range(clock, 5, now));
    assert!(cursor_in_range(clock + 3, clock + 3, now));
    assert!(!cursor_in_range(clock + 4, clock + 3, now));
}

fn remove(who: &str, target: UserId) -> Request {
    Request::Remove {
        user: user(who),
        device: dev(),
        room: room(),
        target,
        nonce: 9,
    }
}

#[test]
fn the_admin_removes_members_and_nobody_else_does() {
    let (mut s, _) = seq_with_group(&["b", "a", "c", "d"]);
    assert_eq!(s.admins(&room()), vec![user("b")], "the creator");
    let mut batch = Batch::default();
    assert_eq!(
        s.apply(remove("c", user("d")), 3, &mut batch),
        Err(SequenceError::NotAdmin {
            admins: "@b:localhost".into()
        })
    );
    assert!(batch.is_empty(), "a refusal writes nothing: {batch:?}");
    let removed = s.apply(remove("b", user("d")), 3, &mut batch).unwrap();
    let Reply::Sequenced(Sequenced { seq: Some(seq), .. }) = removed else {
        panic!("{removed:?}");
    };
    assert!(!s.is_member(&room(), &user("d")));
    assert_eq!(batch.leaves, vec![(room(), user("d"))]);
    let event = Envelope::decode(&batch.events[0].bytes).unwrap();
    assert_eq!(event.sender, user("b"));
    assert_eq!(event.content, member(user("d"), Membership::Leave));
    assert!(
        batch
            .inbox
            .iter()
            .any(|e| e.user == user("d") && e.seq == seq),
        "the removed member sees the removal"
    );
    let mut batch = Batch::default();
    send(&mut s, "b", "after", &mut batch).unwrap();
    assert!(
        batch.inbox.iter().all(|e| e.user != user("d")),
        "nothing after it"
    );
    assert_eq!(
        s.apply(remove("b", user("d")), 3, &mut Batch::default()),
        Err(SequenceError::NotInRoom(user("d")))
    );
    assert_eq!(
        s.apply(remove("d", user("c")), 3, &mut Batch::default()),
        Err(SequenceError::NotMember(room()))
    );

    // The last admin gone, the first member by id is one; the creator back is a member.
    let leave = Request::Leave {
        user: user("b"),
        device: dev(),
        room: room(),
        nonce: 2,
    };
    let mut batch = Batch::default();
    s.apply(leave, 4, &mut batch).unwrap();
    assert_eq!(s.admins(&room()), vec![user("a")]);
    assert_eq!(batch.admins, vec![(room(), vec![user("a")])], "stored");
    assert_eq!(
        s.apply(remove("c", user("a")), 5, &mut Batch::default()),
        Err(SequenceError::NotAdmin {
            admins: "@a:localhost".into()
        })
    );
    let invite = Request::Invite {
        user: user("c"),
        device: dev(),
        room: room(),
        target: user("b"),
        nonce: 3,
    };
    s.apply(invite, 6, &mut Batch::default()).unwrap();
    assert_eq!(s.admins(&room()), vec![user("a")]);
}

#[test]
fn nobody_is_removed_from_a_direct_chat() {
    let mut s = Sequencer::new(SequencerState::default(), local(), 1000);
    let create = Request::CreateRoom {
        user: user("a"),
        device: dev(),
        room: room(),
        kind: RoomKind::Direct,
        name: None,
        members: vec![user("b")],
        nonce: 1,
    };
    s.apply(create, 1, &mut Batch::default()).unwrap();
    assert!(s.admins(&room()).is_empty());
    assert_eq!(
        s.apply(remove("a", user("b")), 2, &mut Batch::default()),
        Err(SequenceError::DirectRoomRemove)
    );
    let (envelope, bytes) = made(
        &room(),
        &user("a"),
        "l",
        member(user("b"), Membership::Leave),
    );
    assert_eq!(
        s.apply(
            Request::Submitted { envelope, bytes },
            2,
            &mut Batch::default()
        ),
        Err(SequenceError::DirectRoomRemove)
    );
}

/// A replica knows the admin from the create event it applied, refuses a non-admin's removal at
/// once, sends the admin's to the home, and applies it when the home sequences it.
#[test]
fn a_replica_checks_removals_and_applies_the_homes() {
    let mut s = with_replica(3);
    assert_eq!(s.admins(&far_room()), vec![far_user("x")]);
    let by_a = Request::Remove {
        user: user("a"),
        device: dev(),
        room: far_room(),
        target: far_user("x"),
        nonce: 1,
    };
    assert_eq!(
        s.apply(by_a, 1, &mut Batch::default()),
        Err(SequenceError::NotAdmin {
            admins: "@x:far.test".into()
        })
    );
    let batch = replicate_from_x(&mut s, 4, member(user("a"), Membership::Leave));
    assert!(!s.is_member(&far_room(), &user("a")));
    assert_eq!(
        batch.inbox.len(),
        1,
        "a sees its removal: {:?}",
        batch.inbox
    );

    // After a restart the admins are the stored ones.
    let state = SequencerState {
        rooms: vec![ResumedRoom {
            room: far_room(),
            record: RoomRecord {
                kind: RoomKind::Group,
                name: None,
                created_ts: 0,
            },
            last_seq: 4,
            members: vec![far_user("x"), far_user("w")],
            epoch: 0,
            admins: BTreeSet::from([far_user("w")]),
        }],
        inbox_heads: vec![],
        closed: vec![],
    };
    let s = Sequencer::new(state, local(), 1000);
    assert_eq!(s.admins(&far_room()), vec![far_user("w")]);
}

fn set_admin(who: &str, target: &str, admin: bool) -> Request {
    Request::SetAdmin {
        user: user(who),
        device: dev(),
        room: room(),
        target: user(target),
        admin,
        nonce: 5,
    }
}

/// Admins make members admins and take the role back; a group keeps at least one; admins remove
/// each other; what changes is stored whole, and an admin event travels like any other.
#[test]
fn admins_make_admins_and_a_group_keeps_one() {
    let (mut s, batch) = seq_with_group(&["a", "b", "c"]);
    assert_eq!(batch.admins, vec![(room(), vec![user("a")])]);
    let not_admin = Err(SequenceError::NotAdmin {
        admins: "@a:localhost".into(),
    });
    assert_eq!(
        s.apply(set_admin("b", "c", true), 2, &mut Batch::default()),
        not_admin
    );
    assert_eq!(
        s.apply(set_admin("a", "a", true), 2, &mut Batch::default()),
        Err(SequenceError::AlreadyAdmin(user("a")))
    );
    assert_eq!(
        s.apply(set_admin("a", "a", false), 2, &mut Batch::default()),
        Err(SequenceError::LastAdmin)
    );
    assert_eq!(
        s.apply(set_admin("a", "z", true), 2, &mut Batch::default()),
        Err(SequenceError::NotInRoom(user("z")))
    );
    let mut batch = Batch::default();
    s.apply(set_admin("a", "b", true), 2, &mut batch).unwrap();
    assert_eq!(s.admins(&room()), vec![user("a"), user("b")]);
    assert_eq!(batch.admins, vec![(room(), vec![user("a"), user("b")])]);
    let event = Envelope::decode(&batch.events[0].bytes).unwrap();
    assert_eq!(
        event.content,
        Content::Admin {
            target: user("b"),
            admin: true
        }
    );
    assert_eq!(batch.inbox.len(), 3, "every member sees it");

    // b, now an admin, removes a, who made it one; then steps down is refused: last admin.
    s.apply(remove("b", user("a")), 3, &mut Batch::default())
        .unwrap();
    assert_eq!(s.admins(&room()), vec![user("b")]);
    assert_eq!(
        s.apply(set_admin("b", "b", false), 4, &mut Batch::default()),
        Err(SequenceError::LastAdmin)
    );
    s.apply(set_admin("b", "c", true), 4, &mut Batch::default())
        .unwrap();
    s.apply(set_admin("b", "b", false), 5, &mut Batch::default())
        .unwrap();
    assert_eq!(s.admins(&room()), vec![user("c")]);
    assert_eq!(
        s.apply(set_admin("c", "b", false), 6, &mut Batch::default()),
        Err(SequenceError::NotAnAdmin(user("b")))
    );

    // A member hearth's admin event is checked like a local one.
    let (envelope, bytes) = made(
        &room(),
        &user("b"),
        "x",
        Content::Admin {
            target: user("b"),
            admin: true,
        },
    );
    assert_eq!(
        s.apply(
            Request::Submitted { envelope, bytes },
            7,
            &mut Batch::default()
        ),
        Err(SequenceError::NotAdmin {
            admins: "@c:localhost".into()
        })
    );
}

/// A replica applies the home's admin events without judging them, and refuses its own users'
/// admin changes as the home would.
#[test]
fn a_replica_follows_its_homes_admin_events() {
    let mut s = with_replica(3);
    let by_a = Request::SetAdmin {
        user: user("a"),
        device: dev(),
        room: far_room(),
        target: user("a"),
        admin: true,
        nonce: 1,
    };
    assert!(matches!(
        s.apply(by_a, 1, &mut Batch::default()),
        Err(SequenceError::NotAdmin { .. })
    ));
    let batch = replicate_from_x(
        &mut s,
        4,
        Content::Admin {
            target: user("a"),
            admin: true,
        },
    );
    assert_eq!(s.admins(&far_room()), vec![user("a"), far_user("x")]);
    assert_eq!(
        batch.admins,
        vec![(far_room(), vec![user("a"), far_user("x")])]
    );
    let by_a = Request::SetAdmin {
        user: user("a"),
        device: dev(),
        room: far_room(),
        target: far_user("x"),
        admin: false,
        nonce: 2,
    };
    let mut batch = Batch::default();
    let sent = s.apply(by_a, 3, &mut batch).unwrap();
    assert!(matches!(
        sent,
        Reply::Sequenced(Sequenced { seq: None, .. })
    ));
    assert_eq!(s.admins(&far_room()).len(), 2, "the home decides first");
    assert!(batch.admins.is_empty());
}

/// The home's event of `@x:far.test` at `seq` of [`far_room`], applied by the replica; its writes.
fn replicate_from_x(s: &mut Sequencer, seq: u64, content: Content) -> Batch {
    let (envelope, bytes) = made(&far_room(), &far_user("x"), "r", content);
    let mut batch = Batch::default();
    s.apply(
        Request::Replicate {
            seq,
            envelope,
            bytes,
        },
        2,
        &mut batch,
    )
    .unwrap();
    batch
}
