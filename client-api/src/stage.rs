//! Time spent in each stage of a message's way from a sender's socket to its recipient's, as
//! `hearth_stage_micros{stage}` summaries (p50, p99… over the last minute) on `/metrics`; the
//! latency benchmark reports them next to what clients measure.
//!
//! Stages: `receive` (a send frame read until its handler runs: parsing it), `checks` (membership and limits,
//! until queued for the committer), `queue` (waiting for the committer), `decide` (sequencing a
//! group commit), `write` (its rows written), `flush` (the batch appended to the commit journal
//! and `fdatasync`, then redb's commit without a flush of its own; of it, `sync` is the journal's
//! write and `fdatasync` and `apply` redb's commit), `checkpoint` (not on every
//! message's way: after `storage.checkpoint_bytes` of journal (16 MiB by default), redb's flushed commit of the pages so far), `wake` (announced until a recipient's session wakes), `deliver` (woken until
//! the frames are written to the socket). The federation legs of a cross-hearth event are
//! `hearth_federation`'s stages under the same name (`fed_read`, `fed_round`, `fed_check`,
//! `fed_store`).

use std::time::Duration;

/// Records that `stage` took `took`.
pub fn record(stage: &'static str, took: Duration) {
    metrics::histogram!("hearth_stage_micros", "stage" => stage).record(took.as_secs_f64() * 1e6);
}
