//! Time spent on the federation legs of an event's way, as `hearth_stage_micros{stage}` next to
//! the client stages (`hearth_client_api::stage`): on the sending hearth `fed_read` (a batch of
//! the outbound queue read and signed) and `fed_round` (the batch sent until the peer's answer,
//! which comes after the peer's group commit); on the receiving hearth `fed_check` (a stream's
//! framing and signatures checked) and `fed_store` (its envelopes handed to the hearth until
//! answered: the group commit they joined).

use std::time::Instant;

/// Records the time since `started` as `stage`.
pub(crate) fn since(stage: &'static str, started: Instant) {
    metrics::histogram!("hearth_stage_micros", "stage" => stage)
        .record(started.elapsed().as_secs_f64() * 1e6);
}
