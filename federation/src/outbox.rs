//! Draining a destination's durable outbound queue.
//!
//! The queue lives in the hearth's store (so it commits with the events it carries); this task
//! only moves it: take the oldest entries, send them as one batch, remove what the peer stored,
//! duplicated or permanently refused, and back off (with jitter) when the peer is away or asks
//! to retry (or refuses this hearth's key). Entries leave the queue in order, and a retry stops the batch at that entry, so a
//! destination sees its envelopes in queue order.

use std::sync::Arc;

use hearth_spec::ServerName;
use hearth_spec::federation::{
    FedBody, FedEnvelope, MAX_BATCH_BYTES, Outcome, RejectCode, SignedEnvelope,
};
use tokio::sync::Notify;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::transport::Transport;

/// The durable queue as the driver sees it.
pub trait OutboxStore: Send + Sync + 'static {
    /// Up to `limit` of the oldest entries for `destination` with ids above `after`: (entry id,
    /// signed envelope built and signed now).
    fn pending(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, String>;
    /// Removes delivered entries.
    fn remove(&self, destination: &ServerName, ids: &[u64]) -> Result<(), String>;
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

/// An announcement of a new key refused because the key that signed it is revoked or past its
/// grace: it can never be accepted (typically the peer already took the same announcement
/// through gossip), so it leaves the queue instead of blocking it.
fn is_unacceptable_announcement(frame: &[u8], code: RejectCode) -> bool {
    code == RejectCode::RevokedKey
        && SignedEnvelope::split(frame)
            .ok()
            .and_then(|signed| FedEnvelope::decode(signed.encoded).ok())
            .is_some_and(|e| matches!(e.body, FedBody::KeyRotation { .. }))
}

/// Envelopes per batch stream.
pub const BATCH: usize = 512;

type Prepared = tokio::task::JoinHandle<Result<Vec<(u64, Vec<u8>)>, String>>;

/// The oldest entries whose frames fit in one stream's [`MAX_BATCH_BYTES`] (at least one): a
/// burst of large events must not make a batch the peer refuses whole, again and again.
fn within_batch_bytes(mut pending: Vec<(u64, Vec<u8>)>) -> Vec<(u64, Vec<u8>)> {
    let mut total = 0;
    let keep = pending
        .iter()
        .position(|(_, frame)| {
            total += frame.len() + 4;
            total > MAX_BATCH_BYTES
        })
        .unwrap_or(pending.len())
        .max(1);
    pending.truncate(keep);
    pending
}

/// Reads and signs the next batch on a blocking thread.
fn prepare<S: OutboxStore>(
    store: &Arc<S>,
    destination: &ServerName,
    after: Option<u64>,
) -> Prepared {
    let store = store.clone();
    let destination = destination.clone();
    tokio::task::spawn_blocking(move || store.pending(&destination, after, BATCH))
}

/// Drains `destination`'s queue; `wake` says new entries were added. While one batch is on the
/// wire the next one is read and signed, so signing and the peer's verification overlap.
pub async fn drive<S: OutboxStore>(
    transport: Transport,
    destination: ServerName,
    store: Arc<S>,
    wake: Arc<Notify>,
    policy: BackoffPolicy,
) {
    let mut backoff = Backoff::new(policy);
    let mut next = prepare(&store, &destination, None);
    loop {
        let pending = match next.await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(%destination, error = %e, "cannot read the outbound queue");
                tokio::time::sleep(backoff.next_delay(rand::random())).await;
                next = prepare(&store, &destination, None);
                continue;
            }
            Err(_) => return,
        };
        if pending.is_empty() {
            wake.notified().await;
            next = prepare(&store, &destination, None);
            continue;
        }
        let pending = within_batch_bytes(pending);
        let last_id = pending.last().map(|(id, _)| *id);
        let prefetch = prepare(&store, &destination, last_id);
        let (ids, frames): (Vec<u64>, Vec<Vec<u8>>) = pending.into_iter().unzip();
        let mut all_done = false;
        match transport.send(&destination, &frames).await {
            Ok(outcomes) => {
                let mut done = Vec::with_capacity(ids.len());
                let mut retry = false;
                for ((id, outcome), frame) in ids.iter().zip(&outcomes).zip(&frames) {
                    match outcome {
                        Outcome::Stored | Outcome::Duplicate => done.push(*id),
                        Outcome::Rejected(code) if is_unacceptable_announcement(frame, *code) => {
                            tracing::info!(%destination, "peer no longer accepts the key a queued announcement is signed with; dropping the announcement");
                            done.push(*id);
                        }
                        Outcome::Rejected(code) if refuses_the_sender(*code) => {
                            tracing::error!(%destination, ?code, "peer does not accept this hearth's key; keeping the queue until it does");
                            retry = true;
                            break;
                        }
                        Outcome::Rejected(code) => {
                            tracing::warn!(%destination, ?code, entry = id, "peer refused an envelope for good; dropping it");
                            done.push(*id);
                        }
                        Outcome::Retry(code) => {
                            tracing::debug!(%destination, ?code, "peer asked to retry");
                            retry = true;
                            break;
                        }
                    }
                }
                if !done.is_empty() {
                    // Not awaited: the next batch (already prefetched past these ids) need not
                    // wait for the removal; an entry whose removal is lost is resent and
                    // de-duplicated by the peer.
                    let store = store.clone();
                    let destination = destination.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = store.remove(&destination, &done) {
                            tracing::error!(error = %e, "cannot remove delivered entries; they will be resent and de-duplicated");
                        }
                    });
                }
                if retry {
                    tokio::time::sleep(backoff.next_delay(rand::random())).await;
                } else {
                    backoff.reset();
                    all_done = true;
                }
            }
            Err(e) => {
                let delay = backoff.next_delay(rand::random());
                tracing::debug!(%destination, error = %e, ?delay, failures = backoff.failures(), "peer unreachable");
                // New entries do not cut the wait short (the peer is the problem), but the peer
                // connecting to us does: it is back.
                let arrived = transport.arrivals(&destination);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = arrived.notified() => {}
                }
            }
        }
        next = if all_done {
            prefetch
        } else {
            // Start again from the oldest entry still queued.
            let _ = prefetch.await;
            prepare(&store, &destination, None)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(sizes: &[usize]) -> Vec<(u64, Vec<u8>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, size)| (i as u64, vec![0; *size]))
            .collect()
    }

    #[test]
    fn a_batch_of_large_frames_stops_below_the_stream_limit() {
        let big = 600 * 1024;
        let kept = within_batch_bytes(entries(&[big; 20]));
        let bytes: usize = kept.iter().map(|(_, f)| f.len() + 4).sum();
        assert_eq!(kept.len(), MAX_BATCH_BYTES / (big + 4));
        assert!(bytes <= MAX_BATCH_BYTES);
        assert_eq!(kept.last().map(|(id, _)| *id), Some(kept.len() as u64 - 1));
    }

    #[test]
    fn small_frames_are_all_kept_and_one_huge_frame_still_goes() {
        assert_eq!(within_batch_bytes(entries(&[100; 512])).len(), 512);
        assert_eq!(
            within_batch_bytes(entries(&[MAX_BATCH_BYTES + 1, 10])).len(),
            1
        );
    }
}
