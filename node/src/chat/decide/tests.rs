//! The receipt and duplicate decisions of a group commit, over a real store.

use super::*;
use crate::chat::sequencer::SequenceError;
use crate::store::Store;
use hearth_spec::ServerName;

use hearth_spec::{RoomKind, TxnId};

fn user(name: &str) -> UserId {
    UserId::parse(&format!("@{name}:localhost")).unwrap()
}

fn room() -> RoomId {
    RoomId::parse("!r:localhost").unwrap()
}

fn send(txn: &str) -> Request {
    Request::Send {
        user: user("a"),
        device: DeviceId::parse("D").unwrap(),
        room: room(),
        txn_id: TxnId::parse(txn).unwrap(),
        payload: txn.as_bytes().to_vec(),
    }
}

/// A store and a sequencer on it, with the room of a and b created.
fn with_room(dir: &std::path::Path) -> (Store, Sequencer) {
    let store = Store::open(&dir.join("hearth.redb")).unwrap();
    let state = store.sequencer_state().unwrap();
    let mut sequencer = Sequencer::new(state, ServerName::parse("localhost").unwrap(), 100);
    let created = one_commit(
        &store,
        &mut sequencer,
        vec![Request::CreateRoom {
            user: user("a"),
            device: DeviceId::parse("D").unwrap(),
            room: room(),
            kind: RoomKind::Direct,
            name: None,
            members: vec![user("b")],
            nonce: 1,
        }],
    );
    assert!(created[0].is_ok());
    (store, sequencer)
}

/// `requests` as the committer thread takes them in one group commit: processed into one
/// batch, written in one transaction.
fn one_commit(
    store: &Store,
    sequencer: &mut Sequencer,
    requests: Vec<Request>,
) -> Vec<Result<Reply, CommitError>> {
    one_commit_with(store, sequencer, requests).0
}

/// [`one_commit`], with the batch written and the signals to send after it.
fn one_commit_with(
    store: &Store,
    sequencer: &mut Sequencer,
    requests: Vec<Request>,
) -> (Vec<Result<Reply, CommitError>>, Batch, Pending) {
    let (mut batch, mut pending) = (Batch::default(), Pending::default());
    sequencer.begin_batch();
    let results = requests
        .into_iter()
        .map(|r| decide(store, sequencer, r, 1_000, &mut batch, &mut pending))
        .collect();
    store.commit(&batch).unwrap();
    (results, batch, pending)
}

/// (receipt kind, reader, seq, who is told), in order.
fn receipts(pending: &Pending) -> Vec<(ReceiptKind, UserId, u64, Vec<UserId>)> {
    pending
        .signals()
        .iter()
        .filter_map(|(to, frame)| match frame {
            ServerFrame::Receipt {
                kind, user_id, seq, ..
            } => Some((*kind, user_id.clone(), *seq, to.clone())),
            _ => None,
        })
        .collect()
}

fn read(who: &str, seq: u64) -> Request {
    Request::MarkRead {
        user: user(who),
        room: room(),
        seq,
    }
}

#[test]
fn a_read_mark_tells_the_senders_once_and_only_rises() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_room(dir.path());
    let first = store.last_seq(&room()).unwrap() + 1;
    one_commit(&store, &mut sequencer, vec![send("t1"), send("t2")]);
    let (results, _, pending) = one_commit_with(
        &store,
        &mut sequencer,
        vec![read("b", first), read("b", first + 1), read("b", first)],
    );
    assert!(results.iter().all(Result::is_ok));
    // a sent both; b's own devices hear of it too. Going back tells nobody.
    assert_eq!(
        receipts(&pending),
        vec![
            (
                ReceiptKind::Read,
                user("b"),
                first,
                vec![user("a"), user("b")]
            ),
            (
                ReceiptKind::Read,
                user("b"),
                first + 1,
                vec![user("a"), user("b")]
            ),
        ]
    );
    assert_eq!(store.read_mark(&user("b"), &room()).unwrap(), first + 1);
    // In a later commit the stored mark is the one to rise above.
    let (_, _, pending) = one_commit_with(&store, &mut sequencer, vec![read("b", first + 1)]);
    assert!(receipts(&pending).is_empty());
    assert!(matches!(
        one_commit(&store, &mut sequencer, vec![read("b", first + 2)])[0],
        Err(CommitError::Refused(SequenceError::SeqOutOfRange { .. }))
    ));
}

#[test]
fn an_acknowledged_cursor_raises_delivered_marks_and_tells_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_room(dir.path());
    one_commit(&store, &mut sequencer, vec![send("t1")]);
    let seq = store.last_seq(&room()).unwrap();
    let head = store.inbox_head(&user("b")).unwrap();
    let ack = |cursor| Request::Ack {
        user: user("b"),
        device: DeviceId::parse("D").unwrap(),
        cursor,
    };
    let (results, batch, pending) = one_commit_with(&store, &mut sequencer, vec![ack(head)]);
    assert!(results[0].is_ok());
    assert_eq!(
        batch.delivered,
        vec![Mark {
            user: user("b"),
            room: room(),
            seq
        }]
    );
    assert_eq!(
        receipts(&pending),
        vec![(ReceiptKind::Delivered, user("b"), seq, vec![user("a")])]
    );
    assert_eq!(
        store
            .device_cursor(&user("b"), &DeviceId::parse("D").unwrap())
            .unwrap(),
        head
    );
    // The same cursor again, or an older one: nothing new delivered, nobody told.
    let (_, batch, pending) =
        one_commit_with(&store, &mut sequencer, vec![ack(head), ack(head - 1)]);
    assert!(batch.delivered.is_empty() && receipts(&pending).is_empty());
    assert!(matches!(
        one_commit(&store, &mut sequencer, vec![ack(head + 1)])[0],
        Err(CommitError::Refused(SequenceError::CursorOutOfRange { .. }))
    ));
}

#[test]
fn a_transaction_twice_in_one_commit_and_again_in_a_later_one_is_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_room(dir.path());
    let before = store.last_seq(&room()).unwrap();

    let same = one_commit(&store, &mut sequencer, vec![send("t1"), send("t1")]);
    let first = same[0].as_ref().unwrap();
    assert_eq!(first, same[1].as_ref().unwrap());
    assert_eq!(store.last_seq(&room()).unwrap(), before + 1);

    // Later, from the store rather than the batch; a new transaction still goes through.
    let later = one_commit(&store, &mut sequencer, vec![send("t1"), send("t2")]);
    assert_eq!(later[0].as_ref().unwrap(), first);
    assert_eq!(store.last_seq(&room()).unwrap(), before + 2);
}

#[test]
fn a_refused_request_in_a_commit_writes_nothing_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_room(dir.path());
    let before = store.last_seq(&room()).unwrap();
    let stranger = Request::Send {
        user: user("z"),
        device: DeviceId::parse("D").unwrap(),
        room: room(),
        txn_id: TxnId::parse("z1").unwrap(),
        payload: b"no".to_vec(),
    };
    let results = one_commit(
        &store,
        &mut sequencer,
        vec![send("t1"), stranger, send("t2")],
    );
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(
        results[1],
        Err(CommitError::Refused(SequenceError::NotMember(_)))
    ));
    assert_eq!(store.last_seq(&room()).unwrap(), before + 2);
}

fn far(name: &str) -> UserId {
    UserId::parse(&format!("@{name}:far.test")).unwrap()
}

fn group() -> RoomId {
    RoomId::parse("!g:localhost").unwrap()
}

/// A group homed here: a (local) and x (on far.test).
fn with_group(dir: &std::path::Path) -> (Store, Sequencer) {
    let (store, mut sequencer) = with_room(dir);
    let made = one_commit(
        &store,
        &mut sequencer,
        vec![Request::CreateRoom {
            user: user("a"),
            device: DeviceId::parse("D").unwrap(),
            room: group(),
            kind: RoomKind::Group,
            name: None,
            members: vec![far("x")],
            nonce: 2,
        }],
    );
    assert!(made[0].is_ok());
    (store, sequencer)
}

/// x's message to the group, as far.test submits it (`ts` makes other bytes).
fn submitted(txn: &str, ts: u64) -> Request {
    let envelope = hearth_spec::Envelope {
        version: hearth_spec::envelope::ENVELOPE_VERSION,
        room_id: group(),
        sender: far("x"),
        sender_device: DeviceId::parse("X").unwrap(),
        txn_id: TxnId::parse(txn).unwrap(),
        origin_ts: ts,
        content: hearth_spec::Content::Message {
            payload: b"hi".to_vec(),
        },
    };
    let bytes = envelope.encode();
    Request::Submitted { envelope, bytes }
}

#[test]
fn a_member_hearths_event_sent_again_is_a_duplicate_by_bytes_or_by_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_group(dir.path());
    let before = store.last_seq(&group()).unwrap();
    assert!(matches!(
        one_commit(&store, &mut sequencer, vec![submitted("x1", 5)])[0],
        Ok(Reply::Sequenced(_))
    ));
    // The very same bytes, and the same transaction signed again at another time.
    for again in [submitted("x1", 5), submitted("x1", 6)] {
        assert!(matches!(
            one_commit(&store, &mut sequencer, vec![again])[0],
            Ok(Reply::Duplicate)
        ));
    }
    assert_eq!(store.last_seq(&group()).unwrap(), before + 1);
}

#[test]
fn receipts_travel_between_hearths_and_only_rise() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_group(dir.path());
    let sent = |r: &Result<Reply, CommitError>| match r {
        Ok(Reply::Sequenced(s)) => s.seq.unwrap(),
        other => panic!("{other:?}"),
    };
    let mine = Request::Send {
        user: user("a"),
        device: DeviceId::parse("D").unwrap(),
        room: group(),
        txn_id: TxnId::parse("a1").unwrap(),
        payload: b"hi".to_vec(),
    };
    let seq = sent(&one_commit(&store, &mut sequencer, vec![mine])[0]);

    // x's hearth says x read it: a is told, once.
    let peer_read = |seq| Request::PeerReceipt {
        user: far("x"),
        room: group(),
        kind: ReceiptKind::Read,
        seq,
    };
    let (_, _, pending) = one_commit_with(&store, &mut sequencer, vec![peer_read(seq)]);
    assert_eq!(
        receipts(&pending),
        vec![(ReceiptKind::Read, far("x"), seq, vec![user("a")])]
    );
    let (_, _, pending) = one_commit_with(
        &store,
        &mut sequencer,
        vec![peer_read(seq), peer_read(seq - 1)],
    );
    assert!(receipts(&pending).is_empty(), "marks only rise");

    // x sends; a reads it here: far.test is told, so x sees it read.
    let theirs = sent(&one_commit(&store, &mut sequencer, vec![submitted("x2", 7)])[0]);
    let read = Request::MarkRead {
        user: user("a"),
        room: group(),
        seq: theirs,
    };
    let (_, batch, _) = one_commit_with(&store, &mut sequencer, vec![read]);
    let to_far: Vec<_> = batch
        .outbox
        .iter()
        .filter(|(d, item)| d.as_str() == "far.test" && matches!(item, OutItem::Receipt(_)))
        .collect();
    assert_eq!(to_far.len(), 1, "{:?}", batch.outbox);
}

/// The store, counting the marks and cursors read from it.
struct Counting<'a> {
    store: &'a Store,
    marks: std::cell::Cell<usize>,
    cursors: std::cell::Cell<usize>,
}

impl CommitReads for Counting<'_> {
    fn txn_event(
        &self,
        user: &UserId,
        device: &DeviceId,
        txn: &str,
    ) -> Result<Option<(RoomId, Option<u64>, EventId)>, StoreError> {
        self.store.txn_event(user, device, txn)
    }
    fn mark(&self, kind: ReceiptKind, user: &UserId, room: &RoomId) -> Result<u64, StoreError> {
        self.marks.set(self.marks.get() + 1);
        CommitReads::mark(self.store, kind, user, room)
    }
    fn device_cursor(&self, user: &UserId, device: &DeviceId) -> Result<u64, StoreError> {
        self.cursors.set(self.cursors.get() + 1);
        self.store.device_cursor(user, device)
    }
    fn inbox_rooms_between(
        &self,
        user: &UserId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(RoomId, u64)>, StoreError> {
        self.store.inbox_rooms_between(user, after, upto, limit)
    }
}

/// A batch reads each mark and cursor from storage once, however many requests touch it: the
/// later ones see what the batch itself raised (and are not told twice).
#[test]
fn a_batch_reads_each_mark_and_cursor_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_room(dir.path());
    let first = store.last_seq(&room()).unwrap() + 1;
    one_commit(
        &store,
        &mut sequencer,
        vec![send("t1"), send("t2"), send("t3")],
    );
    let head = store.inbox_head(&user("b")).unwrap();
    let counting = Counting {
        store: &store,
        marks: Default::default(),
        cursors: Default::default(),
    };
    let (mut batch, mut pending) = (Batch::default(), Pending::default());
    sequencer.begin_batch();
    let device = DeviceId::parse("B").unwrap();
    let mut requests: Vec<Request> = (0..3).map(|i| read("b", first + i)).collect();
    requests.extend((0..3).map(|_| Request::Ack {
        user: user("b"),
        device: device.clone(),
        cursor: head,
    }));
    for request in requests {
        decide(
            &counting,
            &mut sequencer,
            request,
            1_000,
            &mut batch,
            &mut pending,
        )
        .unwrap();
    }
    // One read mark and one delivered mark; one cursor.
    assert_eq!(counting.marks.get(), 2);
    assert_eq!(counting.cursors.get(), 1);
    // Three reads rising, one delivery: four receipts, each once.
    let kinds: Vec<_> = receipts(&pending).into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        kinds,
        vec![
            (ReceiptKind::Read, first),
            (ReceiptKind::Read, first + 1),
            (ReceiptKind::Read, first + 2),
            (ReceiptKind::Delivered, first + 2),
        ]
    );
    assert_eq!(batch.delivered.len(), 1);
}

#[test]
fn a_reply_marks_what_came_before_it_read_and_tells_its_senders() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut sequencer) = with_room(dir.path());
    let first = store.last_seq(&room()).unwrap() + 1;
    one_commit(&store, &mut sequencer, vec![send("t1")]);
    let reply = Request::Send {
        user: user("b"),
        device: DeviceId::parse("E").unwrap(),
        room: room(),
        txn_id: TxnId::parse("r1").unwrap(),
        payload: b"r1".to_vec(),
    };
    let (results, _, pending) = one_commit_with(&store, &mut sequencer, vec![reply]);
    assert!(results[0].is_ok());
    // a hears that b read up to b's reply; b's own devices have the reply itself.
    assert_eq!(
        receipts(&pending),
        vec![(ReceiptKind::Read, user("b"), first + 1, vec![user("a")])]
    );
    assert_eq!(store.read_mark(&user("b"), &room()).unwrap(), first + 1);
    // Marking an earlier event read afterwards tells nobody again.
    let (_, _, pending) = one_commit_with(&store, &mut sequencer, vec![read("b", first)]);
    assert!(receipts(&pending).is_empty());
}
