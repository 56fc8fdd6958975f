//! Sending ephemeral signals (receipts, typing, presence) to one peer: whatever queued while the
//! previous envelope was on the wire goes out together in the next one, so a burst becomes a few
//! envelopes and a lone signal leaves at once. Nothing is stored or retried: a signal that cannot
//! be delivered now is stale by the time the peer returns (a later receipt carries a higher
//! mark, and receipts go through the durable queue anyway; presence is repeated while a user stays
//! online).

use hearth_spec::ServerName;
use hearth_spec::federation::{MAX_SIGNALS_PER_ENVELOPE, Outcome, Signal};
use tokio::sync::mpsc;

use crate::transport::Transport;

/// Drains `queue` to `peer` until the queue closes. `sign` builds and signs one
/// `Ephemeral` envelope for `peer` from a batch of signals.
pub async fn drive_signals(
    transport: Transport,
    peer: ServerName,
    mut queue: mpsc::Receiver<Signal>,
    sign: impl Fn(Vec<Signal>) -> Vec<u8>,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_SIGNALS_PER_ENVELOPE).await > 0 {
        let count = batch.len();
        let frame = sign(std::mem::take(&mut batch));
        match transport.send(&peer, &[frame]).await {
            Ok(outcomes) => {
                if let Some(outcome) = outcomes.first()
                    && !matches!(outcome, Outcome::Stored | Outcome::Duplicate)
                {
                    tracing::warn!(%peer, ?outcome, count, "peer refused ephemeral signals");
                }
            }
            Err(e) => {
                // What queued during a failed attempt is as stale as what failed.
                let mut dropped = count;
                while queue.try_recv().is_ok() {
                    dropped += 1;
                }
                tracing::debug!(%peer, error = %e, dropped, "peer unreachable; ephemeral signals dropped");
            }
        }
    }
}
