//! A member hearth shows its devices the events a room's home sends it while its flush of them
//! runs, and acknowledges them to the home only after (`spec/storage.md`, "Shown before the
//! flush"). The member runs with the `flushcheck` preload (`hearth_tests::flushcheck`), which
//! here holds its journal flushes until the test lets them go, and fails one on request.

use std::time::{Duration, Instant};

use hearth_tests::flushcheck::{FlushLog, held_at, mark_index};
use hearth_tests::{
    encrypted_dm, register_at, secure, start_federated, sync_until, texts, user_id,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_shows_replicated_messages_before_its_flush_and_a_failed_flush_loses_and_repeats_nothing()
 {
    let root = tempfile::tempdir().unwrap();
    let network = hearth_tests::plan_network(root.path(), &["a.test", "b.test"]).unwrap();
    let flush = FlushLog::failing(
        &network[1].data_dir,
        &root.path().join("flush.log"),
        "journal",
    );
    let mut extra = flush.env();
    extra.push(("FLUSHCHECK_DELAY_US".into(), "0".into()));
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let home = start_federated(&network[0], &network, None, &[]).await;
    let member = start_federated(&network[1], &network, None, &extra).await;

    let states = tempfile::tempdir().unwrap();
    let mut alice = secure(
        register_at(&home.url, "alice").await,
        &states.path().join("alice"),
    )
    .await;
    let mut bob = secure(
        register_at(&member.url, "bob").await,
        &states.path().join("bob"),
    )
    .await;
    let room = encrypted_dm(&mut alice, &user_id("bob", "b.test")).await;
    alice.send_text(&room, "hello").await.unwrap();
    sync_until(&mut bob, |r| texts(r) == ["hello"]).await;

    // b.test's journal flushes wait: bob still reads what a.test sequenced.
    flush.hold_flushes();
    alice.send_text(&room, "one").await.unwrap();
    let got = sync_until(&mut bob, |r| !texts(r).is_empty()).await;
    assert_eq!(texts(&got), ["one"]);
    flush.mark("bob read one");
    let events = flush.events();
    let read = mark_index(&events, "bob read one").unwrap();
    assert!(
        held_at(&events, read, "journal"),
        "bob read a message whose flush was not held: it was flushed before it was shown"
    );
    flush.release_flushes();

    // The flush of the next one fails after bob has read it (and moved his cursor past it). Its
    // commit may or may not survive b.test's reopen; either way bob never misses what comes
    // after it, and never reads it twice (a.test sends it again under the same seq).
    flush.hold_flushes();
    flush.fail_next_flush();
    alice.send_text(&room, "two").await.unwrap();
    let got = sync_until(&mut bob, |r| !texts(r).is_empty()).await;
    assert_eq!(texts(&got), ["two"]);
    flush.release_flushes();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flush.failure_happened() {
        assert!(Instant::now() < deadline, "the flush never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.send_text(&room, "three").await.unwrap();
    let got = sync_until(&mut bob, |r| !texts(r).is_empty()).await;
    assert_eq!(texts(&got), ["three"], "{got:?}");
    // And b.test holds the room whole: every event once, at a.test's place for it.
    let here = bob.client().history(&room, None, 100).await.unwrap().events;
    let there = alice
        .client()
        .history(&room, None, 100)
        .await
        .unwrap()
        .events;
    let places = |events: &[hearth_spec::EventView]| {
        events
            .iter()
            .map(|e| (e.seq, e.event_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(places(&here), places(&there));
    assert!(here.iter().map(|e| e.seq).eq(1..=here.len() as u64));
}
