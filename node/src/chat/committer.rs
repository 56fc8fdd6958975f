//! The committer: the one writer of the hot path, and its group commit.
//!
//! Requests queue on a bounded channel. A dedicated thread takes everything queued (up to
//! `max_batch`), decides each ([`crate::chat::decide`]: the [`Sequencer`] and the receipt
//! marks), writes the resulting [`Batch`] in one
//! transaction with one fsync, and only then answers each request and wakes the inboxes. While one
//! batch is being fsynced the next one queues, so under load many sends share one flush.

use std::collections::HashMap;
use std::sync::Arc;
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
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                request,
                reply,
                queued: std::time::Instant::now(),
            })
            .await
            .map_err(|_| CommitError::Closed)?;
        Ok(Queued(answer))
    }

    /// Submits requests strictly in order (each is queued before the next), then waits for all.
    pub async fn submit_in_order(&self, requests: Vec<Request>) -> Vec<Result<Reply, CommitError>> {
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push(self.enqueue(request).await);
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
        let deciding = std::time::Instant::now();
        let now = now_ms();
        let mut batch = Batch::default();
        let mut reload = false;
        sequencer.begin_batch();
        let mut results = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut pending = Pending::default();
        for job in jobs.drain(..) {
            stage::record("queue", deciding.duration_since(job.queued));
            results.push(decide(
                &*store,
                sequencer,
                job.request,
                now,
                &mut batch,
                &mut pending,
            ));
            replies.push(job.reply);
        }
        stage::record("decide", deciding.elapsed());
        metrics::histogram!("hearth_commit_batch_requests").record(replies.len() as f64);
        if !batch.is_empty() {
            let writing = std::time::Instant::now();
            let committed = store.commit(&batch);
            metrics::histogram!("hearth_commit_seconds").record(writing.elapsed());
            if let Err(e) = committed {
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
