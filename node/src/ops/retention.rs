//! Retention: rooms with a retention period lose their messages older than it, purged in place
//! (`store/retention.rs`), by a pass at start and then every `storage.retention_interval_secs`.
//! An admin's purge and an account's erasure purge the same way, when asked.

use std::sync::Arc;
use std::time::Duration;

use hearth_spec::{RoomId, UserId};

use crate::store::{Store, StoreError};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Purges a room's messages sent before `before_ms`; how many.
pub fn purge_before(store: &Store, room: &RoomId, before_ms: u64) -> Result<u64, StoreError> {
    let mut purged = 0;
    loop {
        let step = store.purge_step(room, before_ms)?;
        purged += step.purged;
        if step.done {
            return Ok(purged);
        }
    }
}

/// The cutoff of a retention period: what was sent before it goes.
pub fn cutoff(now_ms: u64, days: u32) -> u64 {
    now_ms.saturating_sub(u64::from(days) * DAY_MS)
}

/// One pass over every room with a retention period; how many messages it purged.
pub fn apply(store: &Store, now_ms: u64) -> Result<u64, StoreError> {
    let mut purged = 0;
    for (room, days) in store.retention_rooms()? {
        purged += purge_before(store, &room, cutoff(now_ms, days))?;
    }
    Ok(purged)
}

/// Purges every message `user` sent, in every room stored here; how many.
pub fn erase_messages(store: &Store, user: &UserId) -> Result<u64, StoreError> {
    let mut purged = 0;
    let mut from = None;
    loop {
        let (step, next) = store.erase_step(user, from)?;
        purged += step;
        match next {
            Some(next) => from = Some(next),
            None => return Ok(purged),
        }
    }
}

/// Runs a retention pass now and then every `every`, until the task is dropped.
pub async fn run(store: Arc<Store>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let store = store.clone();
        let now = crate::clock::now_ms();
        match tokio::task::spawn_blocking(move || apply(&store, now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(purged)) => tracing::info!(purged, "retention purged old messages"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a retention pass failed; it runs again later")
            }
            Err(e) => tracing::error!(error = %e, "the retention pass panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_period_keeps_exactly_its_days() {
        assert_eq!(cutoff(10 * DAY_MS + 5, 3), 7 * DAY_MS + 5);
        assert_eq!(cutoff(5, 30), 0);
        assert_eq!(
            cutoff(u64::MAX, u32::MAX),
            u64::MAX - u64::from(u32::MAX) * DAY_MS
        );
    }
}
