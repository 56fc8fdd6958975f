//! The outbox sender as a state machine: no I/O, no clock, no randomness of its own. The driver
//! ([`super::drive`]) performs each [`Step`] and reports what happened; the simulation tests
//! (`sim.rs`) drive the same machine over a lossy, partitioned network in virtual time.
//!
//! The rules: entries leave the queue in order; a batch is cut at the first entry the peer asks
//! to retry (so the peer sees the queue's order); what the peer stored, duplicated or refused for
//! good is removed; a peer that refuses this hearth's key keeps the queue; an unreachable peer is
//! waited for with backoff, cut short when it connects to us.

use std::time::Duration;

use hearth_spec::federation::{
    FedBody, FedEnvelope, MAX_BATCH_BYTES, Outcome, RejectCode, SignedEnvelope,
};

use crate::backoff::{Backoff, BackoffPolicy};

/// Envelopes per batch stream.
pub const BATCH: usize = 512;

/// One queue entry as the store hands it out: its id and the envelope, signed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: u64,
    pub frame: Vec<u8>,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read up to [`BATCH`] of the oldest entries with ids above `after`, then call
    /// [`Sender::read`].
    Read { after: Option<u64> },
    /// Send these frames as one batch and, meanwhile, read the entries after `prefetch`; then
    /// call [`Sender::sent`] with both results and the frames.
    Send { frames: Vec<Vec<u8>>, prefetch: u64 },
    /// Wait `delay` (or, with `or_arrival`, until the peer connects to us), then call
    /// [`Sender::waited`].
    Wait { delay: Duration, or_arrival: bool },
    /// Wait until new entries are queued, then call [`Sender::waited`].
    AwaitWake,
}

/// The result of a batch on the wire, as the sender needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The peer answered, one outcome per frame.
    Answered(Vec<Outcome>),
    /// No answer: the peer is unreachable (or the connection broke).
    Unreachable,
}

/// What happened to a batch: entries to remove from the queue and the next step.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled {
    /// Delivered, duplicated or refused for good (removal need not be awaited: an entry whose
    /// removal is lost is sent again and de-duplicated by the peer).
    pub remove: Vec<u64>,
    /// Why entries were dropped rather than delivered, for the log.
    pub dropped: Vec<(u64, RejectCode)>,
    /// The outcome that cut the batch short, if one did (`None` in it: an answer was missing).
    pub stopped_by: Option<Option<Outcome>>,
    pub next: Step,
}

/// The ids of the batch on the wire.
#[derive(Debug)]
struct InFlight {
    ids: Vec<u64>,
}

/// One destination's sender.
#[derive(Debug)]
pub struct Sender {
    backoff: Backoff,
    in_flight: Option<InFlight>,
}

impl Sender {
    /// A sender; the first step is to read the queue.
    pub fn new(policy: BackoffPolicy) -> (Self, Step) {
        let sender = Self {
            backoff: Backoff::new(policy),
            in_flight: None,
        };
        (sender, Step::Read { after: None })
    }

    /// Failures in a row so far (for the log).
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// The queue was read. `jitter` in [0, 1) spreads the retry when reading failed.
    pub fn read<E>(&mut self, read: Result<Vec<Queued>, E>, jitter: f64) -> Step {
        match read {
            Err(_) => Step::Wait {
                delay: self.backoff.next_delay(jitter),
                or_arrival: false,
            },
            Ok(pending) if pending.is_empty() => Step::AwaitWake,
            Ok(pending) => self.send(pending),
        }
    }

    /// A wait ended (time passed, the peer arrived, or entries were queued).
    pub fn waited(&mut self) -> Step {
        Step::Read { after: None }
    }

    /// A batch was sent; `frames` are the ones of the [`Step::Send`] and `prefetched` is the
    /// read of the entries after them.
    pub fn sent<E>(
        &mut self,
        delivery: Delivery,
        frames: &[Vec<u8>],
        prefetched: Result<Vec<Queued>, E>,
        jitter: f64,
    ) -> Settled {
        let batch = self
            .in_flight
            .take()
            .expect("sent is only called after a Send step");
        let outcomes = match delivery {
            Delivery::Answered(outcomes) => outcomes,
            Delivery::Unreachable => {
                return Settled {
                    remove: Vec::new(),
                    dropped: Vec::new(),
                    stopped_by: None,
                    next: Step::Wait {
                        delay: self.backoff.next_delay(jitter),
                        // New entries do not cut the wait short (the peer is the problem), but
                        // the peer connecting to us does: it is back.
                        or_arrival: true,
                    },
                };
            }
        };
        let mut remove = Vec::with_capacity(batch.ids.len());
        let mut dropped = Vec::new();
        let mut stopped_by = None;
        for (i, id) in batch.ids.iter().enumerate() {
            // A missing outcome (the transport checks the count, but this machine does not
            // rely on it) is kept for a retry, never skipped.
            match outcomes.get(i) {
                Some(Outcome::Stored | Outcome::Duplicate) => remove.push(*id),
                Some(Outcome::Rejected(code))
                    if *code == RejectCode::RevokedKey
                        && frames.get(i).is_some_and(|f| is_announcement(f)) =>
                {
                    // An announcement signed by a key the peer no longer accepts can never be
                    // taken (typically it already took it through gossip): it must not block
                    // the queue.
                    dropped.push((*id, *code));
                    remove.push(*id);
                }
                Some(outcome @ Outcome::Rejected(code)) if refuses_the_sender(*code) => {
                    stopped_by = Some(Some(*outcome));
                    break;
                }
                Some(Outcome::Rejected(code)) => {
                    dropped.push((*id, *code));
                    remove.push(*id);
                }
                Some(outcome @ Outcome::Retry(_)) => {
                    stopped_by = Some(Some(*outcome));
                    break;
                }
                None => {
                    stopped_by = Some(None);
                    break;
                }
            }
        }
        let next = if stopped_by.is_some() {
            Step::Wait {
                delay: self.backoff.next_delay(jitter),
                or_arrival: false,
            }
        } else {
            self.backoff.reset();
            // The prefetch read past this batch: use it (a failed read is retried).
            self.read(prefetched, jitter)
        };
        Settled {
            remove,
            dropped,
            stopped_by,
            next,
        }
    }

    fn send(&mut self, pending: Vec<Queued>) -> Step {
        let pending = within_batch_bytes(pending);
        let prefetch = pending.last().map(|q| q.id).unwrap_or_default();
        let (ids, frames) = pending.into_iter().map(|q| (q.id, q.frame)).unzip();
        self.in_flight = Some(InFlight { ids });
        Step::Send { frames, prefetch }
    }
}

/// Refusals about who sent an envelope, not what it carries: the peer does not (yet, or any
/// more) know this hearth's key. Dropping the queue would lose every message for that peer over
/// a configuration mistake, so these are kept and retried like `Retry`.
fn refuses_the_sender(code: RejectCode) -> bool {
    matches!(
        code,
        RejectCode::UnknownOrigin | RejectCode::UnknownKey | RejectCode::RevokedKey
    )
}

fn is_announcement(frame: &[u8]) -> bool {
    SignedEnvelope::split(frame)
        .ok()
        .and_then(|signed| FedEnvelope::decode(signed.encoded).ok())
        .is_some_and(|e| matches!(e.body, FedBody::KeyRotation { .. }))
}

/// The oldest entries whose frames fit in one stream's [`MAX_BATCH_BYTES`] (at least one): a
/// burst of large events must not make a batch the peer refuses whole, again and again.
fn within_batch_bytes(mut pending: Vec<Queued>) -> Vec<Queued> {
    let mut total = 0;
    let keep = pending
        .iter()
        .position(|q| {
            total += q.frame.len() + 4;
            total > MAX_BATCH_BYTES
        })
        .unwrap_or(pending.len())
        .max(1);
    pending.truncate(keep);
    pending
}

#[cfg(test)]
mod tests;
