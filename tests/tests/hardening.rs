//! Resource exhaustion against a real `hearth` process: a login flood from many source addresses
//! is held to a bounded number of password hashes at a time (memory stays bounded, the flood is
//! told to retry later) while another user's messages keep flowing.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hearth_client::new_txn_id;
use hearth_spec::RoomKind;
use hearth_tests::{HearthProcess, register_at, user_id};

const FLOOD_ADDRESSES: usize = 200;
const FLOOD_IN_FLIGHT: usize = 64;
const FLOOD_ATTEMPTS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_from_200_addresses_keeps_memory_bounded_and_messages_flowing() {
    let data = tempfile::tempdir().unwrap();
    // The default per-address login limits: the flood is spread so that they do not stop it.
    let hearth = HearthProcess::start(
        data.path(),
        &[
            ("HEARTH_LIMITS__AUTH_PER_SECOND", "2"),
            ("HEARTH_LIMITS__AUTH_BURST", "30"),
        ],
    )
    .await
    .unwrap();
    let mut alice = register_at(&hearth.url, "alice").await;
    let _bob = register_at(&hearth.url, "bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[user_id("bob", "localhost")])
        .await
        .unwrap()
        .room_id;
    let before_kib = hearth.peak_rss_kib().unwrap();

    let clients: Arc<Vec<reqwest::Client>> = Arc::new(
        (0..FLOOD_ADDRESSES)
            .map(|i| {
                let source = IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    1 + (i / 250) as u8,
                    1 + (i % 250) as u8,
                ));
                reqwest::Client::builder()
                    .local_address(source)
                    .build()
                    .unwrap()
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/v1/login", hearth.url);
    let flood: Vec<_> = (0..FLOOD_IN_FLIGHT)
        .map(|_| {
            let (clients, next, refused, wrong, url) = (
                clients.clone(),
                next.clone(),
                refused.clone(),
                wrong.clone(),
                url.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= FLOOD_ATTEMPTS {
                        return;
                    }
                    let body =
                        serde_json::json!({"username": "alice", "password": format!("guess {n}")});
                    let response = clients[n % clients.len()]
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .expect("the hearth answers every login attempt");
                    match response.status().as_u16() {
                        429 => refused.fetch_add(1, Ordering::Relaxed),
                        401 | 403 => wrong.fetch_add(1, Ordering::Relaxed),
                        other => panic!("login attempt answered {other}"),
                    };
                }
            })
        })
        .collect();

    // Alice keeps chatting through it all; every message is accepted.
    let mut latencies_ms = Vec::new();
    while next.load(Ordering::Relaxed) < FLOOD_ATTEMPTS {
        let started = Instant::now();
        alice
            .send(&room, &new_txn_id(), b"still here")
            .await
            .expect("a send during the flood");
        latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for task in flood {
        task.await.unwrap();
    }
    let peak_kib = hearth.peak_rss_kib().unwrap();
    latencies_ms.sort_by(f64::total_cmp);
    let p = |q: f64| latencies_ms[((latencies_ms.len() - 1) as f64 * q) as usize];
    eprintln!(
        "flood of {FLOOD_ATTEMPTS}: {} wrong password, {} told to retry; peak RSS {} MiB \
         (before {} MiB); {} sends during it, p50 {:.1} ms, p99 {:.1} ms",
        wrong.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        peak_kib / 1024,
        before_kib / 1024,
        latencies_ms.len(),
        p(0.5),
        p(0.99)
    );
    assert_eq!(
        wrong.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed),
        FLOOD_ATTEMPTS
    );
    assert!(
        peak_kib < 512 * 1024,
        "the hearth's memory peaked at {} MiB",
        peak_kib / 1024
    );
    assert!(!latencies_ms.is_empty());
    // The real password still works once the flood is over (from an address it did not use).
    let mut again = hearth_client::Client::new(&hearth.url);
    again
        .login("alice", "correct horse battery", None)
        .await
        .unwrap();
}
