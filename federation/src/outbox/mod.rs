//! Draining a destination's durable outbound queue.
//!
//! The queue lives in the hearth's store (so it commits with the events it carries); the rules
//! of sending it are the state machine in [`sender`]; [`drive`] only moves bytes and time for it.

pub mod sender;
#[cfg(test)]
mod sim;

use std::sync::Arc;

use hearth_spec::ServerName;
use tokio::sync::Notify;

use crate::backoff::BackoffPolicy;
use crate::transport::Transport;
pub use sender::{BATCH, Delivery, Queued, Sender, Settled, Step};

/// The durable queue as the driver sees it.
pub trait OutboxStore: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Up to `limit` of the oldest entries for `destination` with ids above `after`, each signed
    /// now.
    fn pending(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Queued>, Self::Error>;
    /// Removes delivered entries.
    fn remove(&self, destination: &ServerName, ids: &[u64]) -> Result<(), Self::Error>;
}

type Read<E> = tokio::task::JoinHandle<Result<Vec<Queued>, E>>;

/// Entries read and signed on the async worker when the queue had run empty (a few new ones:
/// tens of microseconds of reading and signing, less than the hops to a blocking thread and
/// back would add to their way). A longer queue is read on a blocking thread, [`BATCH`] at a
/// time, while the first of it is on the wire.
const INLINE_READ: usize = 4;

/// Reads and signs the next batch on a blocking thread.
fn read<S: OutboxStore>(
    store: &Arc<S>,
    destination: &ServerName,
    after: Option<u64>,
) -> Read<S::Error> {
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
    let (mut sender, mut step) = Sender::new(policy);
    // The queue was found empty and a wake came since: what follows is likely a few entries.
    let mut woken = false;
    loop {
        step = match step {
            Step::Read { after } => {
                // A blocked destination's queue is kept, unsent, for as long as the block lasts
                // (signed only once it is lifted, so nothing goes stale waiting).
                if transport.blocked().contains(&destination) {
                    tracing::info!(%destination, "destination blocked; holding its queue");
                    transport.blocked().until_unblocked(&destination).await;
                }
                let reading = std::time::Instant::now();
                let pending = if std::mem::take(&mut woken) {
                    store.pending(&destination, after, INLINE_READ)
                } else {
                    match read(&store, &destination, after).await {
                        Ok(pending) => pending,
                        Err(_) => return,
                    }
                };
                crate::stage::since("fed_read", reading);
                if let Err(e) = &pending {
                    tracing::error!(%destination, error = %e, "cannot read the outbound queue");
                }
                sender.read(pending, rand::random())
            }
            Step::AwaitWake => {
                wake.notified().await;
                woken = true;
                sender.waited()
            }
            Step::Wait { delay, or_arrival } => {
                if or_arrival {
                    let arrived = transport.arrivals(&destination);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = arrived.notified() => {}
                    }
                } else {
                    tokio::time::sleep(delay).await;
                }
                sender.waited()
            }
            Step::Send { frames, prefetch } => {
                let prefetched = read(&store, &destination, Some(prefetch));
                let sending = std::time::Instant::now();
                let sent = transport.send(&destination, &frames).await;
                crate::stage::since("fed_round", sending);
                let delivery = match sent {
                    Ok(outcomes) => Delivery::Answered(outcomes),
                    Err(e) => {
                        tracing::debug!(%destination, error = %e, failures = sender.failures(), "peer unreachable");
                        Delivery::Unreachable
                    }
                };
                let Ok(prefetched) = prefetched.await else {
                    return;
                };
                let settled = sender.sent(delivery, &frames, prefetched, rand::random());
                log(&destination, &settled);
                if !settled.remove.is_empty() {
                    // Not awaited: the next batch (already read past these ids) need not wait.
                    let (store, destination, ids, wake) = (
                        store.clone(),
                        destination.clone(),
                        settled.remove,
                        wake.clone(),
                    );
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = store.remove(&destination, &ids) {
                            tracing::error!(error = %e, "cannot remove delivered entries; they will be resent and de-duplicated");
                            // Read the queue from its start again once this batch is through,
                            // or they would wait for the next new entry.
                            wake.notify_one();
                        }
                    });
                }
                settled.next
            }
        };
    }
}

fn log(destination: &ServerName, settled: &Settled) {
    use hearth_spec::federation::{Outcome, RejectCode};
    for (entry, code) in &settled.dropped {
        if *code == RejectCode::RevokedKey {
            tracing::info!(%destination, "peer no longer accepts the key a queued announcement is signed with; dropping the announcement");
        } else {
            tracing::warn!(%destination, ?code, entry, "peer refused an envelope for good; dropping it");
        }
    }
    match settled.stopped_by {
        Some(Some(Outcome::Rejected(code))) => {
            tracing::error!(%destination, ?code, "peer does not accept this hearth's key; keeping the queue until it does")
        }
        Some(Some(Outcome::Retry(code))) => {
            tracing::debug!(%destination, ?code, "peer asked to retry")
        }
        Some(None) => {
            tracing::warn!(%destination, "peer's answer lacks outcomes; retrying the rest")
        }
        _ => {}
    }
}
