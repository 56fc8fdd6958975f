//! The committer: the one writer of the hot path, and its group commit.
//!
//! Requests queue on a bounded channel. A dedicated thread takes everything queued (up to
//! `max_batch`), runs it through the [`Sequencer`], writes the resulting [`Batch`] in one
//! transaction with one fsync, and only then answers each request and wakes the inboxes. While one
//! batch is being fsynced the next one queues, so under load many sends share one flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use hearth_spec::api::Sequenced;
use hearth_spec::client::{ReceiptKind, ServerFrame};
use hearth_spec::federation::Signal;
use hearth_spec::{DeviceId, EventId, RoomId, ServerName, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::signals::push::{Push, PushJob};

use crate::chat::hub::Hub;
use crate::chat::sequencer::{Reply, Request, SequenceError, Sequencer};
use crate::clock::now_ms;
use crate::store::tables::OutItem;
use crate::store::{Batch, InboxEntry, Mark, Store, StoreError};

/// Why a request did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Refused(#[from] SequenceError),
    #[error("storage failed; nothing was written: {0}")]
    Storage(#[source] Arc<StoreError>),
    /// Storage refuses writes for now (disk space below the reserve, the database reopening).
    #[error("{0}; nothing was written, try again later")]
    Unavailable(&'static str),
    #[error("the hearth is shutting down")]
    Closed,
}

struct Job {
    request: Request,
    reply: ReplySender,
}

/// Called after a commit with the destinations whose outbound queues grew.
pub type OutboxWake = Arc<dyn Fn(&[ServerName]) + Send + Sync>;

/// The committer's fixed settings.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    pub local: ServerName,
    pub max_members: usize,
    pub max_batch: usize,
    pub queue_depth: usize,
}

/// Handle to the committer thread.
#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Committer {
    /// Starts the committer thread. It stops when every handle is dropped.
    pub fn start(
        store: Arc<Store>,
        hub: Arc<Hub>,
        push: Push,
        wake: OutboxWake,
        config: CommitterConfig,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let sequencer = Sequencer::new(
            store.sequencer_state()?,
            config.local.clone(),
            config.max_members,
        );
        let (queue, rx) = mpsc::channel(config.queue_depth);
        let thread = std::thread::Builder::new()
            .name("hearth-committer".into())
            .spawn(move || run(rx, store, hub, push, wake, sequencer, config))
            .expect("spawn committer thread");
        Ok((Self { queue }, thread))
    }

    /// Submits a request and waits until it is durable (or refused).
    pub async fn submit(&self, request: Request) -> Result<Reply, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { request, reply })
            .await
            .map_err(|_| CommitError::Closed)?;
        answer.await.map_err(|_| CommitError::Closed)?
    }
}

impl Committer {
    /// Submits requests strictly in order (each is queued before the next), then waits for all.
    /// Submitting many with `join_all` over [`Self::submit`] would not keep their order: the
    /// futures only queue when polled, and a full queue wakes waiting senders in any order.
    pub async fn submit_in_order(&self, requests: Vec<Request>) -> Vec<Result<Reply, CommitError>> {
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let (reply, answer) = oneshot::channel();
            let queued = self.queue.send(Job { request, reply }).await.is_ok();
            answers.push(queued.then_some(answer));
        }
        futures_util::future::join_all(answers.into_iter().map(|answer| async move {
            match answer {
                Some(answer) => answer.await.map_err(|_| CommitError::Closed)?,
                None => Err(CommitError::Closed),
            }
        }))
        .await
    }
}

fn run(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<Store>,
    hub: Arc<Hub>,
    push: Push,
    wake: OutboxWake,
    sequencer: Sequencer,
    config: CommitterConfig,
) {
    let mut loaded = Some(sequencer);
    let mut jobs = Vec::with_capacity(config.max_batch);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < config.max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // After a failed write the sequencer is reloaded from what is stored; while storage is
        // unavailable that fails, and requests are answered `unavailable` until it works.
        let sequencer = match &mut loaded {
            Some(sequencer) => sequencer,
            None => match store.sequencer_state() {
                Ok(state) => loaded.insert(Sequencer::new(
                    state,
                    config.local.clone(),
                    config.max_members,
                )),
                Err(e) => {
                    let failure = storage(e);
                    let replies: Vec<_> = jobs.drain(..).map(|job| job.reply).collect();
                    let results = vec![Err(failure); replies.len()];
                    answer(replies, results);
                    // Not a busy loop when requests keep coming: storage is checked twice a second.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            },
        };
        let now = now_ms();
        let mut batch = Batch::default();
        let mut reload = false;
        sequencer.begin_batch();
        let mut results = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut pending = Pending::default();
        for job in jobs.drain(..) {
            results.push(process(
                &store,
                sequencer,
                job.request,
                now,
                &mut batch,
                &mut pending,
            ));
            replies.push(job.reply);
        }
        if !batch.is_empty() {
            if let Err(e) = store.commit(&batch) {
                tracing::error!(error = %e, "group commit failed; answering every request in it with an error");
                let failure = storage(e);
                for r in results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(failure.clone());
                    }
                }
                // Memory ran ahead of the disk: start again from what is stored (next batch).
                reload = true;
            } else {
                let mut heads: HashMap<&UserId, u64> = HashMap::new();
                for entry in &batch.inbox {
                    heads.insert(&entry.user, entry.position);
                }
                hub.notify(heads);
                for (users, frame) in &pending.signals {
                    hub.signal(users, frame);
                }
                queue_pushes(&push, &batch);
                if !batch.outbox.is_empty() {
                    let mut destinations: Vec<ServerName> =
                        batch.outbox.iter().map(|(d, _)| d.clone()).collect();
                    destinations.sort();
                    destinations.dedup();
                    wake(&destinations);
                }
            }
        }
        answer(replies, results);
        if reload {
            loaded = None;
        }
    }
}

type ReplySender = oneshot::Sender<Result<Reply, CommitError>>;

fn answer(replies: Vec<ReplySender>, results: Vec<Result<Reply, CommitError>>) {
    for (reply, result) in replies.into_iter().zip(results) {
        // The requester may have gone away; the write stands either way.
        let _ = reply.send(result);
    }
}

/// The id and sender of each event of a batch, by place.
type EventIndex<'a> = HashMap<(&'a RoomId, u64), (&'a EventId, &'a UserId)>;

/// Hands the inbox appends of users with push endpoints (other than their own events) to push.
fn queue_pushes(push: &Push, batch: &Batch) {
    let mut events: Option<EventIndex> = None;
    for InboxEntry {
        user, room, seq, ..
    } in &batch.inbox
    {
        if !push.wants(user) {
            continue;
        }
        let events = events.get_or_insert_with(|| {
            batch
                .events
                .iter()
                .map(|e| ((&e.room, e.seq), (&e.id, &e.sender)))
                .collect()
        });
        if let Some((event_id, sender)) = events.get(&(room, *seq))
            && *sender != user
        {
            push.enqueue(PushJob {
                user: user.clone(),
                room: room.clone(),
                seq: *seq,
                event_id: **event_id,
                sender: (*sender).clone(),
            });
        }
    }
}

/// What a batch will announce once it is durable, and the marks it has raised so far.
#[derive(Default)]
struct Pending {
    signals: Vec<(Vec<UserId>, ServerFrame)>,
    read: HashMap<(UserId, RoomId), u64>,
    delivered: HashMap<(UserId, RoomId), u64>,
    cursors: HashMap<(UserId, DeviceId), u64>,
}

/// Inbox entries looked at per acknowledgement to raise delivered marks.
const ACK_SCAN: usize = 10_000;

fn storage(e: StoreError) -> CommitError {
    match e {
        StoreError::Unavailable(why) => CommitError::Unavailable(why),
        e => CommitError::Storage(Arc::new(e)),
    }
}

fn process(
    store: &Store,
    sequencer: &mut Sequencer,
    request: Request,
    now: u64,
    batch: &mut Batch,
    pending: &mut Pending,
) -> Result<Reply, CommitError> {
    match request {
        // A resent transaction returns the event it made the first time, even if the sender
        // has since left the room.
        Request::Send {
            ref user,
            ref device,
            ref txn_id,
            ..
        } => {
            if let Some((room_id, seq, event_id)) = store
                .txn_event(user, device, txn_id.as_str())
                .map_err(storage)?
            {
                return Ok(Reply::Sequenced(Sequenced {
                    room_id,
                    event_id,
                    seq,
                }));
            }
            Ok(sequencer.apply(request, now, batch)?)
        }
        // A member hearth retrying an event the home already sequenced.
        Request::Submitted {
            ref envelope,
            ref bytes,
        } => {
            if store
                .event_place(&EventId::of_bytes(bytes))
                .map_err(storage)?
                .is_some()
                || store
                    .txn_event(
                        &envelope.sender,
                        &envelope.sender_device,
                        envelope.txn_id.as_str(),
                    )
                    .map_err(storage)?
                    .is_some()
            {
                return Ok(Reply::Duplicate);
            }
            Ok(sequencer.apply(request, now, batch)?)
        }
        Request::MarkRead { user, room, seq } => {
            sequencer.check_read(&room, &user, seq)?;
            let key = (user, room);
            let old = match pending.read.get(&key) {
                Some(mark) => *mark,
                None => store.read_mark(&key.0, &key.1).map_err(storage)?,
            };
            if seq <= old {
                return Ok(Reply::Done);
            }
            let (user, room) = key.clone();
            pending.read.insert(key, seq);
            announce_to_peers(sequencer, batch, &room, &user, ReceiptKind::Read, seq);
            // The senders of what was just read, and the reader's other devices.
            let mut to = sequencer.senders_between(&room, old, seq);
            to.insert(user.clone());
            pending.signals.push((
                to.into_iter().collect(),
                ServerFrame::Receipt {
                    room_id: room.clone(),
                    user_id: user.clone(),
                    kind: ReceiptKind::Read,
                    seq,
                },
            ));
            Ok(sequencer.apply(Request::MarkRead { user, room, seq }, now, batch)?)
        }
        Request::Ack {
            user,
            device,
            cursor,
        } => {
            let key = (user, device);
            let old = match pending.cursors.get(&key) {
                Some(c) => *c,
                None => store.device_cursor(&key.0, &key.1).map_err(storage)?,
            };
            let (user, device) = key.clone();
            let reply = sequencer.apply(
                Request::Ack {
                    user: user.clone(),
                    device,
                    cursor,
                },
                now,
                batch,
            )?;
            pending.cursors.insert(key, cursor);
            if cursor > old {
                for (room, seq) in store
                    .inbox_rooms_between(&user, old, cursor, ACK_SCAN)
                    .map_err(storage)?
                {
                    let mark_key = (user.clone(), room);
                    let mark = match pending.delivered.get(&mark_key) {
                        Some(m) => *m,
                        None => store
                            .delivered_mark(&mark_key.0, &mark_key.1)
                            .map_err(storage)?,
                    };
                    if seq <= mark {
                        continue;
                    }
                    let room = mark_key.1.clone();
                    pending.delivered.insert(mark_key, seq);
                    batch.delivered.push(Mark {
                        user: user.clone(),
                        room: room.clone(),
                        seq,
                    });
                    announce_to_peers(sequencer, batch, &room, &user, ReceiptKind::Delivered, seq);
                    let mut to = sequencer.senders_between(&room, mark, seq);
                    to.remove(&user);
                    if !to.is_empty() {
                        pending.signals.push((
                            to.into_iter().collect(),
                            ServerFrame::Receipt {
                                room_id: room,
                                user_id: user.clone(),
                                kind: ReceiptKind::Delivered,
                                seq,
                            },
                        ));
                    }
                }
            }
            Ok(reply)
        }
        // A user of a member hearth has got further: raise the mark here and tell this hearth's
        // users who sent what it covers.
        Request::PeerReceipt {
            ref user,
            ref room,
            kind,
            seq,
        } => {
            let key = (user.clone(), room.clone());
            let marks = match kind {
                ReceiptKind::Read => &mut pending.read,
                ReceiptKind::Delivered => &mut pending.delivered,
            };
            let old = match marks.get(&key) {
                Some(mark) => *mark,
                None => match kind {
                    ReceiptKind::Read => store.read_mark(&key.0, &key.1),
                    ReceiptKind::Delivered => store.delivered_mark(&key.0, &key.1),
                }
                .map_err(storage)?,
            };
            let reply = sequencer.apply(request, now, batch)?;
            if seq > old {
                marks.insert(key.clone(), seq);
                let (user, room) = key;
                let to = sequencer.senders_between(&room, old, seq);
                if !to.is_empty() {
                    pending.signals.push((
                        to.into_iter().collect(),
                        ServerFrame::Receipt {
                            room_id: room,
                            user_id: user,
                            kind,
                            seq,
                        },
                    ));
                }
            }
            Ok(reply)
        }
        other => Ok(sequencer.apply(other, now, batch)?),
    }
}

/// Queues a local user's new receipt for every other hearth with members in the room.
fn announce_to_peers(
    sequencer: &Sequencer,
    batch: &mut Batch,
    room: &RoomId,
    user: &UserId,
    kind: ReceiptKind,
    seq: u64,
) {
    for server in sequencer.other_servers(room) {
        batch.outbox.push((
            server,
            OutItem::Receipt(Signal::Receipt {
                room: room.clone(),
                user: user.clone(),
                kind,
                seq,
            }),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            .map(|r| process(store, sequencer, r, 1_000, &mut batch, &mut pending))
            .collect();
        store.commit(&batch).unwrap();
        (results, batch, pending)
    }

    /// (receipt kind, reader, seq, who is told), in order.
    fn receipts(pending: &Pending) -> Vec<(ReceiptKind, UserId, u64, Vec<UserId>)> {
        pending
            .signals
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
}
