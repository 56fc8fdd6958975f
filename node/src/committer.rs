//! The committer: the one writer of the hot path, and its group commit.
//!
//! Requests queue on a bounded channel. A dedicated thread takes everything queued (up to
//! `max_batch`), runs it through the [`Sequencer`], writes the resulting [`Batch`] in one
//! transaction with one fsync, and only then answers each request and wakes the inboxes. While one
//! batch is being fsynced the next one queues, so under load many sends share one flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use hearth_spec::UserId;
use hearth_spec::api::Sequenced;
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::sequencer::{Reply, Request, SequenceError, Sequencer};
use crate::store::{Batch, Store, StoreError};

/// Why a request did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Refused(#[from] SequenceError),
    #[error("storage failed; nothing was written: {0}")]
    Storage(String),
    #[error("the hearth is shutting down")]
    Closed,
}

struct Job {
    request: Request,
    reply: ReplySender,
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
        max_members: usize,
        max_batch: usize,
        queue_depth: usize,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let sequencer = Sequencer::new(store.sequencer_state()?, max_members);
        let (queue, rx) = mpsc::channel(queue_depth);
        let thread = std::thread::Builder::new()
            .name("hearth-committer".into())
            .spawn(move || run(rx, store, hub, sequencer, max_members, max_batch))
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

fn run(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<Store>,
    hub: Arc<Hub>,
    mut sequencer: Sequencer,
    max_members: usize,
    max_batch: usize,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut batch = Batch::default();
        sequencer.begin_batch();
        let mut results = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            results.push(process(
                &store,
                &mut sequencer,
                job.request,
                now,
                &mut batch,
            ));
            replies.push(job.reply);
        }
        if !batch.is_empty() {
            if let Err(e) = store.commit(&batch) {
                tracing::error!(error = %e, "group commit failed; answering every request in it with an error");
                let failure = CommitError::Storage(e.to_string());
                for r in results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(failure.clone());
                    }
                }
                // Memory ran ahead of the disk: start again from what is stored.
                match store.sequencer_state() {
                    Ok(state) => sequencer = Sequencer::new(state, max_members),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reload the sequencer; stopping the committer");
                        answer(replies, results);
                        return;
                    }
                }
            } else {
                let mut heads: HashMap<&UserId, u64> = HashMap::new();
                for (user, cursor, _, _) in &batch.inbox {
                    heads.insert(user, *cursor);
                }
                hub.notify(heads);
            }
        }
        answer(replies, results);
    }
}

type ReplySender = oneshot::Sender<Result<Reply, CommitError>>;

fn answer(replies: Vec<ReplySender>, results: Vec<Result<Reply, CommitError>>) {
    for (reply, result) in replies.into_iter().zip(results) {
        // The requester may have gone away; the write stands either way.
        let _ = reply.send(result);
    }
}

fn process(
    store: &Store,
    sequencer: &mut Sequencer,
    request: Request,
    now: u64,
    batch: &mut Batch,
) -> Result<Reply, CommitError> {
    // A resent transaction returns the event it made the first time, even if the sender has
    // since left the room.
    if let Request::Send {
        user,
        device,
        txn_id,
        ..
    } = &request
        && let Some((room_id, seq, event_id)) = store
            .txn_event(user, device, txn_id.as_str())
            .map_err(|e| CommitError::Storage(e.to_string()))?
    {
        return Ok(Reply::Sequenced(Sequenced {
            room_id,
            event_id,
            seq,
        }));
    }
    Ok(sequencer.apply(request, now, batch)?)
}
