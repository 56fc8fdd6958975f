use super::*;
use hearth_crypto::{ServerKey, sign_envelope};
use hearth_spec::ServerName;
use hearth_spec::federation::{FedEnvelope, RetryCode};

fn policy() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
    }
}

fn queued(ids: std::ops::RangeInclusive<u64>) -> Vec<Queued> {
    ids.map(|id| Queued {
        id,
        frame: vec![id as u8; 10],
    })
    .collect()
}

fn announcement() -> Vec<u8> {
    let key = ServerKey::generate();
    let envelope = FedEnvelope {
        version: 1,
        origin: ServerName::parse("a.example").unwrap(),
        destination: ServerName::parse("b.example").unwrap(),
        signer: key.public_key(),
        origin_ts: 1,
        nonce: 2,
        body: FedBody::KeyRotation {
            new_key: hearth_spec::PublicKey([7; 32]),
            old_valid_until_ms: 3,
        },
    };
    sign_envelope(&key, &envelope)
}

/// A sender with `entries` on the wire; returns it and the frames sent.
fn sending(entries: Vec<Queued>) -> (Sender, Vec<Vec<u8>>) {
    let (mut sender, first) = Sender::new(policy());
    assert_eq!(first, Step::Read { after: None });
    match sender.read::<()>(Ok(entries), 0.0) {
        Step::Send { frames, .. } => (sender, frames),
        other => panic!("expected a send, got {other:?}"),
    }
}

const OK: Result<Vec<Queued>, ()> = Ok(Vec::new());

#[test]
fn an_empty_queue_waits_for_new_entries_then_reads_from_the_start() {
    let (mut sender, _) = Sender::new(policy());
    assert_eq!(sender.read::<()>(Ok(Vec::new()), 0.5), Step::AwaitWake);
    assert_eq!(sender.waited(), Step::Read { after: None });
}

#[test]
fn a_failed_read_backs_off_without_waiting_for_the_peer() {
    let (mut sender, _) = Sender::new(policy());
    assert_eq!(
        sender.read(Err("disk"), 1.0),
        Step::Wait {
            delay: Duration::from_millis(100),
            or_arrival: false
        }
    );
    assert_eq!(sender.waited(), Step::Read { after: None });
}

#[test]
fn a_batch_prefetches_what_follows_its_last_entry() {
    let (mut sender, _) = Sender::new(policy());
    let step = sender.read::<()>(Ok(queued(4..=6)), 0.0);
    assert_eq!(
        step,
        Step::Send {
            frames: vec![vec![4; 10], vec![5; 10], vec![6; 10]],
            prefetch: 6
        }
    );
}

/// A table row: the outcomes the peer answered for entries 1..=3, the entries removed, the
/// ones dropped, and whether the sender waits (true) or goes on with the prefetched read.
type Row = (Vec<Outcome>, Vec<u64>, Vec<u64>, bool);

#[test]
fn outcomes_decide_what_leaves_the_queue_and_what_happens_next() {
    use Outcome::*;
    let rows: Vec<Row> = vec![
        (
            vec![Stored, Duplicate, Stored],
            vec![1, 2, 3],
            vec![],
            false,
        ),
        (
            vec![Stored, Retry(RetryCode::OutOfOrder), Stored],
            vec![1],
            vec![],
            true,
        ),
        (
            vec![Retry(RetryCode::RateLimited), Stored, Stored],
            vec![],
            vec![],
            true,
        ),
        (
            vec![
                Rejected(RejectCode::BadEvent),
                Stored,
                Rejected(RejectCode::NotMember),
            ],
            vec![1, 2, 3],
            vec![1, 3],
            false,
        ),
        // The peer does not know this hearth's key: nothing after is sent, nothing dropped.
        (
            vec![Stored, Rejected(RejectCode::UnknownKey), Stored],
            vec![1],
            vec![],
            true,
        ),
        (
            vec![Rejected(RejectCode::UnknownOrigin), Stored, Stored],
            vec![],
            vec![],
            true,
        ),
        // A revoked key on an ordinary envelope is about the sender too.
        (
            vec![Stored, Stored, Rejected(RejectCode::RevokedKey)],
            vec![1, 2],
            vec![],
            true,
        ),
        // An answer with fewer outcomes than frames: the rest is kept, not skipped.
        (vec![Stored], vec![1], vec![], true),
    ];
    for (outcomes, removed, dropped, waits) in rows {
        let (mut sender, frames) = sending(queued(1..=3));
        let settled = sender.sent(Delivery::Answered(outcomes.clone()), &frames, OK, 0.0);
        assert_eq!(settled.remove, removed, "{outcomes:?}");
        let dropped_ids: Vec<u64> = settled.dropped.iter().map(|(id, _)| *id).collect();
        assert_eq!(dropped_ids, dropped, "{outcomes:?}");
        assert_eq!(settled.stopped_by.is_some(), waits, "{outcomes:?}");
        match settled.next {
            Step::Wait { or_arrival, .. } => {
                assert!(waits, "{outcomes:?}");
                assert!(!or_arrival, "an answering peer is not waited for");
            }
            Step::AwaitWake => assert!(!waits, "{outcomes:?}"),
            other => panic!("{outcomes:?}: unexpected {other:?}"),
        }
    }
}

#[test]
fn an_announcement_signed_by_a_revoked_key_leaves_the_queue() {
    let entries = vec![
        Queued {
            id: 1,
            frame: announcement(),
        },
        Queued {
            id: 2,
            frame: vec![2; 10],
        },
    ];
    let (mut sender, frames) = sending(entries);
    let revoked = Outcome::Rejected(RejectCode::RevokedKey);
    let settled = sender.sent(
        Delivery::Answered(vec![revoked, Outcome::Stored]),
        &frames,
        OK,
        0.0,
    );
    assert_eq!(settled.remove, vec![1, 2]);
    assert_eq!(settled.dropped, vec![(1, RejectCode::RevokedKey)]);
    assert_eq!(settled.next, Step::AwaitWake);
}

#[test]
fn a_delivered_batch_goes_on_with_the_prefetched_entries() {
    let (mut sender, frames) = sending(queued(1..=2));
    let settled = sender.sent::<()>(
        Delivery::Answered(vec![Outcome::Stored; 2]),
        &frames,
        Ok(queued(3..=3)),
        0.0,
    );
    assert_eq!(
        settled.next,
        Step::Send {
            frames: vec![vec![3; 10]],
            prefetch: 3
        }
    );
    // A failed prefetch after a delivered batch is a failed read.
    let (mut sender, frames) = sending(queued(1..=1));
    let settled = sender.sent(
        Delivery::Answered(vec![Outcome::Stored]),
        &frames,
        Err(()),
        1.0,
    );
    assert_eq!(settled.remove, vec![1]);
    assert!(matches!(
        settled.next,
        Step::Wait {
            or_arrival: false,
            ..
        }
    ));
}

#[test]
fn an_unreachable_peer_is_waited_for_with_growing_delays_until_it_answers() {
    let (mut sender, mut frames) = sending(queued(1..=1));
    let mut delays = Vec::new();
    for _ in 0..4 {
        let settled = sender.sent(Delivery::Unreachable, &frames, OK, 1.0);
        assert!(settled.remove.is_empty());
        match settled.next {
            Step::Wait { delay, or_arrival } => {
                assert!(or_arrival, "the peer connecting to us cuts the wait short");
                delays.push(delay.as_millis());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sender.waited(), Step::Read { after: None });
        frames = match sender.read::<()>(Ok(queued(1..=1)), 0.0) {
            Step::Send { frames, .. } => frames,
            other => panic!("unexpected {other:?}"),
        };
    }
    assert_eq!(delays, [100, 200, 400, 800]);
    // An answer resets the backoff.
    let settled = sender.sent(Delivery::Answered(vec![Outcome::Stored]), &frames, OK, 1.0);
    assert_eq!(settled.next, Step::AwaitWake);
    assert_eq!(sender.failures(), 0);
}

#[test]
fn a_batch_of_large_frames_stops_below_the_stream_limit() {
    let big = 600 * 1024;
    let entries = (0..20)
        .map(|id| Queued {
            id,
            frame: vec![0; big],
        })
        .collect();
    let kept = within_batch_bytes(entries);
    let bytes: usize = kept.iter().map(|q| q.frame.len() + 4).sum();
    assert_eq!(kept.len(), MAX_BATCH_BYTES / (big + 4));
    assert!(bytes <= MAX_BATCH_BYTES);
    assert_eq!(kept.last().map(|q| q.id), Some(kept.len() as u64 - 1));
}

#[test]
fn small_frames_are_all_kept_and_one_huge_frame_still_goes() {
    let small = (0..512)
        .map(|id| Queued {
            id,
            frame: vec![0; 100],
        })
        .collect();
    assert_eq!(within_batch_bytes(small).len(), 512);
    let huge = vec![
        Queued {
            id: 0,
            frame: vec![0; MAX_BATCH_BYTES + 1],
        },
        Queued {
            id: 1,
            frame: vec![0; 10],
        },
    ];
    assert_eq!(within_batch_bytes(huge).len(), 1);
}
