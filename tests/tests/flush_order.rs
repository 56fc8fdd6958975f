//! Acknowledged means flushed. A SIGKILL keeps the page cache, so `crash_durability` cannot see
//! a missing `fsync`; here the processes run with the `flushcheck` preload (see
//! `hearth_tests::flushcheck`), which logs every write and flush under their data folder in
//! order and slows each flush, and the test marks in the same log the moment an
//! acknowledgement reached it. A send acknowledged before the flush that covers it, a file left
//! unflushed, or a new name whose folder was never flushed fails these tests.

use std::path::Path;
use std::time::Duration;

use hearth_spec::RoomKind;
use hearth_spec::client::ServerFrame;
use hearth_tests::flushcheck::{Event, FlushLog, mark_index, not_durable_at, probe_flushed_before};
use hearth_tests::{HearthProcess, connect_synced, hearth_chat, next_frame, register_at};

/// Waits for the `accepted` of `txn`, skipping other frames.
async fn accepted(rx: &mut hearth_client::Receiver, txn: &str) {
    loop {
        match next_frame(rx, Duration::from_secs(30)).await.unwrap() {
            ServerFrame::Accepted { txn_id, .. } if txn_id.as_str() == txn => return,
            ServerFrame::Error { code, message, .. } => panic!("send refused: {code:?} {message}"),
            _ => {}
        }
    }
}

/// A `hearth` process on `data` under `flush`, and alice with a 1:1 chat with bob there.
async fn watched_hearth(
    data: &Path,
    flush: &FlushLog,
) -> (HearthProcess, hearth_client::Client, hearth_spec::RoomId) {
    let env = flush.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hearth = HearthProcess::start(data, &env).await.unwrap();
    let mut alice = register_at(&hearth.url, "alice").await;
    let bob = register_at(&hearth.url, "bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob.user_id().unwrap().clone()])
        .await
        .unwrap()
        .room_id;
    (hearth, alice, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hearth_acknowledges_a_send_only_after_the_flush_that_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flush = FlushLog::new(&data, &dir.path().join("flush.log"));
    let (_hearth, mut alice, room) = watched_hearth(&data, &flush).await;
    let (mut tx, mut rx) = connect_synced(&mut alice).await;

    // One at a time: each send is its own commit.
    for n in 1..=10u64 {
        let txn = format!("one-{n}");
        tx.send(
            &room,
            &txn.parse().unwrap(),
            format!("FLUSHPROBE{n};").as_bytes(),
        )
        .await
        .unwrap();
        accepted(&mut rx, &txn).await;
        flush.mark(&format!("ack {n}"));
    }
    // Fifty at once: they share group commits, and each ack still follows its flush.
    for n in 11..=60u64 {
        let txn = format!("many-{n}");
        tx.send(
            &room,
            &txn.parse().unwrap(),
            format!("FLUSHPROBE{n};").as_bytes(),
        )
        .await
        .unwrap();
    }
    let mut seen = 0;
    while seen < 50 {
        match next_frame(&mut rx, Duration::from_secs(30)).await.unwrap() {
            ServerFrame::Accepted { txn_id, .. } => {
                let n = txn_id.as_str().trim_start_matches("many-");
                flush.mark(&format!("ack {n}"));
                seen += 1;
            }
            ServerFrame::Error { code, message, .. } => panic!("send refused: {code:?} {message}"),
            _ => {}
        }
    }

    let events = flush.events();
    for n in 1..=60u64 {
        let ack = mark_index(&events, &format!("ack {n}")).expect("every ack marked");
        probe_flushed_before(&events, n, ack).unwrap_or_else(|e| panic!("{e}"));
    }
    // Nothing the hearth wrote before the last ack (keys, the database file's name) is left
    // where a power cut could take it.
    let last = mark_index(&events, "ack 60").unwrap();
    assert_eq!(not_durable_at(&events, last), Vec::<String>::new());
}

/// `hearth-chat --profile PROFILE ARGS` under the check; asserts it succeeded within 60 s.
async fn chat(profile: &Path, flush: &FlushLog, args: &[&str], stdin: &str) {
    let env = flush.env();
    let run = hearth_chat(profile, args, stdin, &env);
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("hearth-chat finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_has_its_device_state_on_disk_when_a_command_returns() {
    let dir = tempfile::tempdir().unwrap();
    let hearth = HearthProcess::start(&dir.path().join("data"), &[])
        .await
        .unwrap();
    let server = format!("--server={}", hearth.url);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let alice = FlushLog::new(&a, &dir.path().join("alice.log"));
    let bob = FlushLog::new(&b, &dir.path().join("bob.log"));
    let password = "a long password\n";

    chat(&a, &alice, &["register", "alice", &server], password).await;
    alice.mark("registered");
    chat(&b, &bob, &["register", "bob", &server], password).await;
    bob.mark("registered");
    chat(&a, &alice, &["dm", "@bob:localhost"], "").await;
    chat(
        &a,
        &alice,
        &["send", "@bob:localhost", "FLUSHPROBE1 hello"],
        "",
    )
    .await;
    alice.mark("sent");
    chat(&b, &bob, &["history", "@alice:localhost"], "").await;
    bob.mark("read");

    let events = alice.events();
    for mark in ["registered", "sent"] {
        let at = mark_index(&events, mark).unwrap();
        assert_eq!(not_durable_at(&events, at), Vec::<String>::new(), "{mark}");
    }
    // The sent message is kept (to show it when it comes back) and that was flushed.
    probe_flushed_before(&events, 1, mark_index(&events, "sent").unwrap())
        .unwrap_or_else(|e| panic!("alice: {e}"));

    let events = bob.events();
    let read = mark_index(&events, "read").unwrap();
    assert_eq!(not_durable_at(&events, read), Vec::<String>::new());
    // What bob read can never be decrypted again: it reaches the disk in the same state save
    // as the ratchet step that used its key (never after it), and is on disk once shown.
    let first = events
        .iter()
        .find_map(|e| match e {
            Event::Probe(1, path) => Some(path.clone()),
            _ => None,
        })
        .expect("bob wrote the message somewhere");
    // (in the frame of the journal that save appends, or in a snapshot written whole)
    assert!(
        first.ends_with("mls/mls-journal.bin") || first.ends_with("mls/mls-state.tmp"),
        "first written to {first}"
    );
    probe_flushed_before(&events, 1, read).unwrap_or_else(|e| panic!("bob: {e}"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Probe(1, p) if p.ends_with("messages.jsonl"))),
        "and kept in the messages log"
    );
}

/// A flush that fails (EIO, as a dying disk gives) is never acknowledged; the hearth goes on,
/// and the client's retry of the same transaction makes exactly one event, whether or not the
/// failed attempt reached the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_is_never_acknowledged_and_the_retry_makes_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flush = FlushLog::failing(&data, &dir.path().join("flush.log"), "hearth.redb");
    let (_hearth, mut alice, room) = watched_hearth(&data, &flush).await;
    let before = alice
        .send(&room, &"t0".parse().unwrap(), b"first")
        .await
        .unwrap();

    flush.fail_next_flush();
    let txn = "t1".parse().unwrap();
    let refused = alice.send(&room, &txn, b"FLUSHPROBE1;").await.unwrap_err();
    assert!(flush.failure_happened());
    assert_eq!(
        refused.code(),
        Some(hearth_spec::ErrorCode::Internal),
        "{refused}"
    );
    let events = flush.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::FlushFailed(_, p) if p.ends_with("hearth.redb"))),
        "the injected failure is in the log"
    );

    // The client tries again (the hearth may say unavailable while it reopens the database).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let sent = loop {
        match alice.send(&room, &txn, b"FLUSHPROBE1;").await {
            Ok(sent) => break sent,
            Err(e) if e.code() == Some(hearth_spec::ErrorCode::Unavailable) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still unavailable: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the retry failed: {e}"),
        }
    };
    assert_eq!(
        sent.seq,
        before.seq.map(|s| s + 1),
        "no gap, no second copy"
    );
    let after = alice
        .send(&room, &"t2".parse().unwrap(), b"after")
        .await
        .unwrap();
    assert_eq!(after.seq, before.seq.map(|s| s + 2));
    let history = alice.history(&room, None, 100).await.unwrap().events;
    let t1: Vec<_> = history
        .iter()
        .filter(|e| e.txn_id.as_str() == "t1")
        .collect();
    assert_eq!(t1.len(), 1, "exactly one event for the retried transaction");
}
