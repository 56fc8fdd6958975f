//! A real `hearth` process is killed with SIGKILL in the middle of a burst of 10,000 sends from
//! four clients over two rooms. After a restart every message whose `accepted` ack reached a
//! client is stored exactly once at the sequence number it was acknowledged with, room sequences
//! have no gaps, and resending every transaction (acknowledged or not) completes the set without
//! a single duplicate. Once with the default checkpoint, once with checkpoints every few commits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hearth_client::Client;
use hearth_spec::client::ServerFrame;
use hearth_spec::{Content, EventId, RoomId, RoomKind, TxnId};
use hearth_tests::{HearthProcess, frames_until};

const CLIENTS: usize = 4;
const PER_CLIENT: usize = 2_500;
const KILL_AFTER_ACKS: usize = 3_000;

type Acks = HashMap<TxnId, (RoomId, EventId, u64)>;

fn txn(client: usize, n: usize) -> TxnId {
    TxnId::parse(&format!("c{client}-{n}")).unwrap()
}

/// Sends `txns` on one WebSocket as fast as the hearth takes them; returns the acks received
/// before the connection ended (or all of them).
async fn burst(
    client: &mut Client,
    room: RoomId,
    txns: Vec<TxnId>,
    acked: Arc<AtomicUsize>,
) -> Acks {
    let (mut tx, mut rx) = client.connect(None).await.unwrap().split();
    frames_until(&mut rx, Duration::from_secs(30), |f| {
        matches!(f, ServerFrame::Synced { .. })
    })
    .await
    .unwrap();
    let expected = txns.len();
    let send_room = room.clone();
    let sender = tokio::spawn(async move {
        for t in txns {
            if tx
                .send(&send_room, &t, t.as_str().as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        tx
    });
    let mut acks = Acks::new();
    while acks.len() < expected {
        match tokio::time::timeout(Duration::from_secs(60), rx.next()).await {
            Ok(Some(Ok(ServerFrame::Accepted {
                txn_id,
                room_id,
                event_id,
                seq,
            }))) => {
                acks.insert(
                    txn_id,
                    (room_id, event_id, seq.expect("sequenced by its home")),
                );
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Ok(ServerFrame::Error { code, message, .. }))) => {
                panic!("send refused: {code:?} {message}")
            }
            Ok(Some(Ok(_))) => {}
            // The hearth died: whatever was acknowledged so far is what must survive.
            Ok(None) | Ok(Some(Err(_))) => break,
            Err(_) => panic!("no ack for 60 s"),
        }
    }
    let _ = sender.await;
    acks
}

/// Every event of a room, by paging history backwards.
async fn full_history(client: &mut Client, room: &RoomId) -> Vec<hearth_spec::EventView> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = client.history(room, before, 500).await.unwrap();
        let mut events = page.events;
        events.append(&mut all);
        all = events;
        match page.prev_before {
            Some(b) => before = Some(b),
            None => return all,
        }
    }
}

fn check_room(events: &[hearth_spec::EventView]) -> HashMap<TxnId, (EventId, u64)> {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "room sequence has gaps"
    );
    let ids: HashSet<EventId> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len(), "an event is stored twice");
    let mut by_txn = HashMap::new();
    for e in events {
        if let Content::Message { payload } = &e.content {
            assert_eq!(payload, e.txn_id.as_str().as_bytes());
            assert!(
                by_txn
                    .insert(e.txn_id.clone(), (e.event_id, e.seq))
                    .is_none(),
                "txn {} stored twice",
                e.txn_id
            );
        }
    }
    by_txn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_no_acknowledged_message_and_duplicates_none() {
    sigkill_during_a_burst(&[]).await;
}

/// With a 16 KiB checkpoint the journal is rewound every few commits during the burst, so the
/// kill finds new records written over an earlier run's (`spec/storage.md`, "The commit
/// journal").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_the_journal_is_rewound_often_loses_and_duplicates_nothing() {
    sigkill_during_a_burst(&[("HEARTH_STORAGE__CHECKPOINT_BYTES", "16384")]).await;
}

async fn sigkill_during_a_burst(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut hearth = HearthProcess::start(dir.path(), env).await.unwrap();
    // The journal is written ahead to its checkpoint size and a record more, so the kill finds
    // records written over zeros (rewound often: over an earlier run's records too).
    let checkpoint: u64 = env
        .iter()
        .find(|(name, _)| *name == "HEARTH_STORAGE__CHECKPOINT_BYTES")
        .map_or(16 * 1024 * 1024, |(_, value)| value.parse().unwrap());
    let journal = std::fs::metadata(dir.path().join("hearth.redb.journal")).unwrap();
    assert_eq!(journal.len(), checkpoint + 64 * 1024);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = Client::new(&hearth.url);
        c.register(&format!("user{i}"), "correct horse battery", None)
            .await
            .unwrap();
        clients.push(c);
    }
    let ids: Vec<_> = clients
        .iter()
        .map(|c| c.user_id().unwrap().clone())
        .collect();
    let group = clients[0]
        .create_room(RoomKind::Group, Some("burst"), &ids[1..])
        .await
        .unwrap()
        .room_id;
    let dm = clients[3]
        .create_room(RoomKind::Direct, None, &ids[2..3])
        .await
        .unwrap()
        .room_id;
    let room_of = |client: usize| {
        if client == 3 {
            dm.clone()
        } else {
            group.clone()
        }
    };

    // The burst, with a SIGKILL once enough acks have come back.
    let acked = Arc::new(AtomicUsize::new(0));
    let bursts = clients.iter_mut().enumerate().map(|(i, c)| {
        let txns = (0..PER_CLIENT).map(|n| txn(i, n)).collect();
        burst(c, room_of(i), txns, acked.clone())
    });
    let pid_acked = acked.clone();
    let killer = async {
        while pid_acked.load(Ordering::Relaxed) < KILL_AFTER_ACKS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        hearth.kill9();
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(bursts), killer);
    let acks: Acks = results.into_iter().flatten().collect();
    assert!(
        acks.len() >= KILL_AFTER_ACKS,
        "{} acks before the kill",
        acks.len()
    );
    assert!(
        acks.len() < CLIENTS * PER_CLIENT,
        "the kill landed after the burst had finished"
    );
    eprintln!(
        "{} of {} sends acknowledged before SIGKILL",
        acks.len(),
        CLIENTS * PER_CLIENT
    );

    // Restart on the same data directory and check what survived.
    let hearth = hearth.restart().await.unwrap();
    let mut reader = Client::new(&hearth.url);
    reader
        .login("user2", "correct horse battery", None)
        .await
        .unwrap();
    let mut stored = HashMap::new();
    for room in [&group, &dm] {
        stored.extend(check_room(&full_history(&mut reader, room).await));
    }
    for (txn_id, (room, event_id, seq)) in &acks {
        let (stored_id, stored_seq) = stored
            .get(txn_id)
            .unwrap_or_else(|| panic!("acknowledged {txn_id} lost"));
        assert_eq!(
            (stored_id, stored_seq),
            (event_id, seq),
            "{txn_id} in {room} moved"
        );
    }

    // Every client retries everything; the hearth de-duplicates.
    // De-duplication is per device: the same devices retry, with their saved sessions.
    let mut retry_clients: Vec<Client> = clients
        .iter()
        .map(|c| Client::with_session(&hearth.url, c.session().unwrap().clone()))
        .collect();
    let counter = Arc::new(AtomicUsize::new(0));
    let retries = retry_clients.iter_mut().enumerate().map(|(i, c)| {
        let txns = (0..PER_CLIENT).map(|n| txn(i, n)).collect();
        burst(c, room_of(i), txns, counter.clone())
    });
    let retried: Acks = futures_util::future::join_all(retries)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(retried.len(), CLIENTS * PER_CLIENT);
    for (txn_id, (_, event_id, seq)) in &acks {
        assert_eq!(
            retried[txn_id].1, *event_id,
            "a retry of acknowledged {txn_id} made a new event"
        );
        assert_eq!(retried[txn_id].2, *seq);
    }
    let mut total = 0;
    for room in [&group, &dm] {
        total += check_room(&full_history(&mut reader, room).await).len();
    }
    assert_eq!(
        total,
        CLIENTS * PER_CLIENT,
        "every transaction stored exactly once"
    );
}
