//! A login flood against a release hearth with its real password cost: `in_flight` wrong-password
//! logins at a time from `addresses` loopback source addresses for `seconds`, while another
//! user sends a message every 20 ms on its WebSocket. Reports the hearth's peak memory (VmHWM),
//! that user's send latency (send to `accepted`), and how the logins were answered.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hearth_client::new_txn_id;
use hearth_spec::RoomKind;

use crate::server::{Hearth, fresh_dir};
use crate::stats::Samples;
use crate::{Report, Target, synced};

pub async fn login_flood(
    binary: &str,
    addresses: usize,
    in_flight: usize,
    seconds: u64,
    password_workers: usize,
) -> anyhow::Result<Report> {
    // The default password cost and per-address login limits (the bench's are cheap and open).
    // The flood aims at one account, whose own limit would refuse it before any hashing: that
    // limit stays open, so this measures hashing under load (as many accounts would make it).
    let workers = password_workers.to_string();
    let env: Vec<(String, String)> = [
        ("HEARTH_AUTH__ARGON2_M_COST_KIB", "19456"),
        ("HEARTH_AUTH__ARGON2_T_COST", "2"),
        ("HEARTH_LIMITS__AUTH__PER_SECOND", "2"),
        ("HEARTH_LIMITS__AUTH__BURST", "30"),
        ("HEARTH_AUTH__PASSWORD_WORKERS", workers.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let hearth = Hearth::start_env(binary, fresh_dir()?, &env).await?;
    let mut alice = hearth.user("flood-alice").await?;
    let bob = hearth.user("flood-bob").await?;
    let bob_id = bob.user_id()?.clone();
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob_id])
        .await?
        .room_id;
    let (mut tx, mut rx) = synced(&mut alice).await?;

    let clients = Arc::new(
        (0..addresses)
            .map(|i| {
                let source = Ipv4Addr::new(127, 0, 20 + (i / 250) as u8, 1 + (i % 250) as u8);
                reqwest::Client::builder()
                    .local_address(IpAddr::V4(source))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (wrong, retry, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let url = format!("{}/v1/login", hearth.url);
    let flood: Vec<_> = (0..in_flight)
        .map(|task| {
            let (clients, stop, wrong, retry, other, url) = (
                clients.clone(),
                stop.clone(),
                wrong.clone(),
                retry.clone(),
                other.clone(),
                url.clone(),
            );
            tokio::spawn(async move {
                let mut n = task;
                while !stop.load(Ordering::Relaxed) {
                    let body = serde_json::json!({"username": "flood-alice", "password": format!("guess {n}")});
                    let answer = clients[n % clients.len()].post(&url).json(&body).send().await;
                    let counter = match answer.map(|r| r.status().as_u16()) {
                        Ok(401) => &wrong,
                        Ok(429) => &retry,
                        _ => &other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    n += in_flight;
                }
            })
        })
        .collect();

    let samples = Samples::default();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let txn = new_txn_id();
        let sent = Instant::now();
        tx.send(&room, &txn, b"through the flood").await?;
        crate::accepted(&mut rx, &txn).await?;
        samples.push(sent.elapsed().as_nanos() as u64);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await?;
    }
    let peak_kib = hearth.peak_rss_kib()?;
    let (p50, p99) = samples.percentiles_ms();
    let elapsed = started.elapsed().as_secs_f64();
    let report = Report {
        name: "login flood",
        figures: vec![
            ("addresses", addresses as f64, "", None),
            (
                "password workers (0: default)",
                password_workers as f64,
                "",
                None,
            ),
            ("in flight", in_flight as f64, "", None),
            (
                "logins answered wrong password",
                wrong.load(Ordering::Relaxed) as f64 / elapsed,
                "/s",
                None,
            ),
            (
                "logins told to retry",
                retry.load(Ordering::Relaxed) as f64 / elapsed,
                "/s",
                None,
            ),
            (
                "logins failed otherwise",
                other.load(Ordering::Relaxed) as f64,
                "",
                None,
            ),
            (
                "hearth peak RSS",
                peak_kib as f64 / 1024.0,
                "MiB",
                Some(Target::AtMost(512.0)),
            ),
            ("other user's send p50", p50, "ms", None),
            (
                "other user's send p99",
                p99,
                "ms",
                Some(Target::AtMost(50.0)),
            ),
        ],
    };
    hearth.stop().await;
    Ok(report)
}
