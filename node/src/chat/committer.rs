//! The committer: the one writer of the hot path, and its group commit.
//!
//! Requests queue on a bounded channel. A dedicated thread takes everything queued (up to
//! `max_batch`), decides each ([`crate::chat::decide`]: the [`Sequencer`] and the receipt
//! marks), writes the resulting [`Batch`] in one
//! transaction with one fsync, and only then answers each request and wakes the inboxes (events
//! replicated from their rooms' homes wake them while the fsync runs: see [`shown_early`]). While
//! one batch is being fsynced the next one queues, so under load many sends share one flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use hearth_client_api::stage;
use hearth_spec::{EventId, RoomId, ServerName, UserId};
use tokio::sync::{mpsc, oneshot};

pub use crate::chat::commit_error::CommitError;
use crate::chat::decide::{Pending, decide, storage};
use crate::chat::hub::Hub;
use crate::chat::sequencer::{Reply, Request, Sequencer};
use crate::clock::now_ms;
use crate::signals::push::{Push, PushJob};
use crate::store::{Batch, InboxEntry, Store, StoreError};

struct Job {
    request: Request,
    reply: ReplySender,
    /// When it was queued (to time its wait for the committer).
    queued: std::time::Instant,
    /// Set when a request of the same in-order submission failed (see [`Chain`]).
    chain: Option<Chain>,
}

/// The requests of one [`Committer::submit_in_order`] call (a peer's batch). Once one of them
/// fails for this hearth's own reasons (storage), the later ones fail too instead of landing
/// ahead of it: the peer retries from the first failure, and the room keeps the peer's order.
type Chain = Arc<AtomicBool>;

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
    /// Whether the committer thread still takes work (it stops only if it failed).
    pub fn is_alive(&self) -> bool {
        !self.queue.is_closed()
    }

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
        self.enqueue(request).await?.answer().await
    }

    /// Takes a request into the queue, waiting for room if it is full, and returns what
    /// answers it once it is durable (or refused). Requests are decided in the order they were
    /// taken, so a caller that awaits each `enqueue` before the next keeps its order; futures
    /// that each call [`Self::submit`], polled together, do not: they reach the queue in
    /// whatever order they are polled, and a runtime may poll them in any order.
    pub async fn enqueue(&self, request: Request) -> Result<Queued, CommitError> {
        self.enqueue_in(request, None).await
    }

    async fn enqueue_in(
        &self,
        request: Request,
        chain: Option<Chain>,
    ) -> Result<Queued, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                request,
                reply,
                queued: std::time::Instant::now(),
                chain,
            })
            .await
            .map_err(|_| CommitError::Closed)?;
        Ok(Queued(answer))
    }

    /// Submits requests strictly in order (each is queued before the next), then waits for all.
    /// If one fails for want of storage, every later one fails too, even if storage is back by
    /// then (a refusal, such as a stale epoch, does not stop the rest).
    pub async fn submit_in_order(&self, requests: Vec<Request>) -> Vec<Result<Reply, CommitError>> {
        let chain = Chain::default();
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push(self.enqueue_in(request, Some(chain.clone())).await);
        }
        futures_util::future::join_all(answers.into_iter().map(|queued| async move {
            match queued {
                Ok(queued) => queued.answer().await,
                Err(e) => Err(e),
            }
        }))
        .await
    }
}

/// A request in the committer's queue.
#[derive(Debug)]
pub struct Queued(oneshot::Receiver<Result<Reply, CommitError>>);

impl Queued {
    /// Its answer, once the group commit that holds it is durable (or it was refused).
    pub async fn answer(self) -> Result<Reply, CommitError> {
        self.0.await.map_err(|_| CommitError::Closed)?
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
    // A request taken from the queue but left for the next batch (see `shown_early`).
    let mut held: Option<Job> = None;
    // Inbox positions a failed early commit showed: the reloaded sequencer gives none again.
    let mut shown_lost: Vec<(UserId, u64)> = Vec::new();
    while let Some(first) = held.take().or_else(|| rx.blocking_recv()) {
        // A batch that starts with a replicated event holds only those, so that it can be shown
        // before its flush; any other batch takes whatever is queued.
        let early = shown_early(&first.request);
        jobs.push(first);
        while jobs.len() < config.max_batch {
            match rx.try_recv() {
                Ok(job) if early && !shown_early(&job.request) => {
                    held = Some(job);
                    break;
                }
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // After a failed write the sequencer is reloaded from what is stored; while storage is
        // unavailable that fails, and requests are answered `unavailable` until it works.
        let sequencer = match &mut loaded {
            Some(sequencer) => sequencer,
            None => match store.sequencer_state() {
                Ok(state) => {
                    let sequencer = loaded.insert(Sequencer::new(
                        state,
                        config.local.clone(),
                        config.max_members,
                    ));
                    sequencer.skip_inbox_positions(shown_lost.drain(..));
                    sequencer
                }
                Err(e) => {
                    let failure = storage(e);
                    let replies: Vec<_> = jobs
                        .drain(..)
                        .map(|job| {
                            break_chain(&job.chain);
                            job.reply
                        })
                        .collect();
                    let results = vec![Err(failure); replies.len()];
                    answer(replies, results);
                    // Not a busy loop when requests keep coming: storage is checked twice a second.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            },
        };
        let deciding = std::time::Instant::now();
        let now = now_ms();
        let mut batch = Batch::default();
        let mut reload = false;
        sequencer.begin_batch();
        let mut results = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut pending = Pending::default();
        let mut chains = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            stage::record("queue", deciding.duration_since(job.queued));
            let result = if job
                .chain
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                Err(CommitError::Unavailable(
                    "a request before it in the same batch could not be stored",
                ))
            } else {
                decide(
                    &*store,
                    sequencer,
                    job.request,
                    now,
                    &mut batch,
                    &mut pending,
                )
            };
            if matches!(result, Err(ref e) if !matches!(e, CommitError::Refused(_))) {
                break_chain(&job.chain);
            }
            results.push(result);
            replies.push(job.reply);
            chains.push(job.chain);
        }
        stage::record("decide", deciding.elapsed());
        metrics::histogram!("hearth_commit_batch_requests").record(replies.len() as f64);
        if !batch.is_empty() {
            let writing = std::time::Instant::now();
            let mut wake_devices = || {
                let mut heads: HashMap<&UserId, u64> = HashMap::new();
                for entry in &batch.inbox {
                    heads.insert(&entry.user, entry.position);
                }
                hub.notify(heads);
            };
            let committed = if early {
                store.commit_shown_early(&batch, &mut wake_devices)
            } else {
                store.commit(&batch).map(|()| wake_devices())
            };
            metrics::histogram!("hearth_commit_seconds").record(writing.elapsed());
            if let Err(e) = committed {
                tracing::error!(error = %e, "group commit failed; answering every request in it with an error");
                let failure = storage(e);
                for r in results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(failure.clone());
                    }
                }
                for chain in &chains {
                    break_chain(chain);
                }
                // Memory ran ahead of the disk: start again from what is stored (next batch).
                reload = true;
                if early {
                    shown_lost.extend(batch.inbox.iter().map(|e| (e.user.clone(), e.position)));
                }
            } else {
                for (users, frame) in pending.signals() {
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

/// Whether a request's writes may be shown before they are flushed: an event a room's home
/// sequenced and holds, which it sends again under the same seq if this hearth loses it, and
/// which devices drop when they have it (`spec/storage.md`, "Shown before the flush").
fn shown_early(request: &Request) -> bool {
    matches!(request, Request::Replicate { .. })
}

/// A request of `chain` failed: the chain's later requests fail too.
fn break_chain(chain: &Option<Chain>) {
    if let Some(chain) = chain {
        chain.store(true, Ordering::Relaxed);
    }
}

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

#[cfg(test)]
mod tests {
    use hearth_spec::{DeviceId, RoomKind, TxnId};

    use super::*;
    use crate::config::PushConfig;

    fn user(name: &str) -> UserId {
        UserId::parse(&format!("@{name}:localhost")).unwrap()
    }

    fn send(room: &RoomId, txn: &str) -> Request {
        Request::Send {
            user: user("alice"),
            device: DeviceId::parse("D").unwrap(),
            room: room.clone(),
            txn_id: TxnId::parse(txn).unwrap(),
            payload: txn.as_bytes().to_vec(),
        }
    }

    fn seq(result: &Result<Reply, CommitError>) -> u64 {
        match result {
            Ok(Reply::Sequenced(s)) => s.seq.expect("sequenced here"),
            other => panic!("not sequenced: {other:?}"),
        }
    }

    /// A peer's batch split over two group commits, the first of which fails: the second must
    /// not land ahead of it, or the peer's retry would put the first after it.
    #[tokio::test]
    async fn a_failed_commit_fails_the_rest_of_its_in_order_submission() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let hub = Arc::new(Hub::default());
        let vapid = crate::ops::keys::load_or_generate_vapid(&dir.path().join("vapid.key"));
        let push = Push::start(
            store.clone(),
            hub.clone(),
            PushConfig::default(),
            Arc::new(vapid.unwrap()),
        )
        .unwrap();
        let (committer, _thread) = Committer::start(
            store.clone(),
            hub,
            push,
            Arc::new(|_: &[ServerName]| {}),
            CommitterConfig {
                local: ServerName::parse("localhost").unwrap(),
                max_members: 10,
                // One request per group commit.
                max_batch: 1,
                queue_depth: 64,
            },
        )
        .unwrap();
        let room = RoomId::parse("!r:localhost").unwrap();
        committer
            .submit(Request::CreateRoom {
                user: user("alice"),
                device: DeviceId::parse("D").unwrap(),
                room: room.clone(),
                kind: RoomKind::Group,
                name: None,
                members: vec![user("bob")],
                nonce: 1,
            })
            .await
            .unwrap();

        store.fail_commits(1);
        let results = committer
            .submit_in_order(vec![
                send(&room, "m1"),
                send(&room, "m2"),
                send(&room, "m3"),
            ])
            .await;
        assert!(
            results.iter().all(Result::is_err),
            "the first failed, so none may land: {results:?}"
        );
        // A request of its own is not held back by another's failure.
        let alone = committer.submit(send(&room, "other")).await;
        assert_eq!(seq(&alone), 4, "create and two joins, then this");

        // The peer retries from the first failure: everything lands, in its order.
        let results = committer
            .submit_in_order(vec![
                send(&room, "m1"),
                send(&room, "m2"),
                send(&room, "m3"),
            ])
            .await;
        let seqs: Vec<u64> = results.iter().map(seq).collect();
        assert_eq!(seqs, vec![5, 6, 7]);
    }
}
