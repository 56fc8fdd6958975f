//! A long mixed load on one hearth, for what short runs cannot show: whether its memory settles
//! or keeps growing. For `minutes`: paced 1:1 chats with typing notices, a group whose every
//! message fans out to its connected members, bursts of pipelined sends, history paging, and
//! devices connecting, syncing and leaving. The hearth's resident size is sampled throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_client::{Client, Receiver, Sender, new_txn_id};
use hearth_spec::client::{ClientFrame, ServerFrame};
use hearth_spec::{RoomId, RoomKind};

use crate::server::Hearth;
use crate::stats::Samples;
use crate::{
    Report, Target, drain, named_pairs_of_users, on_stamped_messages, pairs_of_users, stamp, synced,
};

/// Members of the group (all connected).
const GROUP: usize = 50;
/// Pipelining senders in a burst, and what each sends.
const BURST_SENDERS: usize = 8;
const BURST_EACH: usize = 1000;

pub async fn soak(hearth: &Hearth, minutes: u64, rate: u64) -> anyhow::Result<Report> {
    let rss_idle = hearth.rss_kib()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Samples::default());
    let mut tasks = Vec::new();
    let mut readers = Vec::new();

    // Paced 1:1 chats, each sender typing before it sends.
    let mut pairs = pairs_of_users(hearth, 20).await?;
    let interval = Duration::from_nanos(1_000_000_000 * pairs.len() as u64 / rate.max(1));
    for (a, b, room) in pairs.iter_mut() {
        let (mut tx, a_rx) = synced(a).await?;
        tasks.push(tokio::spawn(drain(a_rx, stop.clone())));
        let (b_tx, b_rx) = synced(b).await?;
        tasks.push(keep_alive(b_tx, stop.clone()));
        let samples = samples.clone();
        readers.push(on_stamped_messages(b_rx, stop.clone(), move |at, now| {
            samples.push(now.saturating_sub(at))
        }));
        let (stop, sent, room) = (stop.clone(), sent.clone(), room.clone());
        let mut typist = Client::with_session(&hearth.url, a.session().context("session")?.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if n.is_multiple_of(20) {
                    let _ = typist.typing(&room, true).await;
                }
                n += 1;
                if tx
                    .send(&room, &new_txn_id(), &stamp().to_be_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // A group of 50, everyone connected; its owner sends 5 messages a second.
    let mut owner = hearth.user("soak-owner").await?;
    let mut members = Vec::new();
    for i in 1..GROUP {
        members.push(hearth.user(&format!("soak-m{i}")).await?);
    }
    let ids: Vec<_> = members
        .iter()
        .map(|m| m.user_id().cloned())
        .collect::<Result<_, _>>()?;
    let group = owner
        .create_room(RoomKind::Group, Some("soak"), &ids)
        .await?
        .room_id;
    for member in members.iter_mut() {
        let (tx, rx) = synced(member).await?;
        tasks.push(keep_alive(tx, stop.clone()));
        tasks.push(tokio::spawn(drain(rx, stop.clone())));
    }
    let (mut owner_tx, owner_rx) = synced(&mut owner).await?;
    tasks.push(tokio::spawn(drain(owner_rx, stop.clone())));
    {
        let (stop, sent, group) = (stop.clone(), sent.clone(), group.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if owner_tx
                    .send(&group, &new_txn_id(), b"to the group")
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // History paging through the group, and a device connecting, syncing and leaving.
    {
        let stop = stop.clone();
        let mut reader = Client::with_session(&hearth.url, owner.session().context("s")?.clone());
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut before = None;
                for _ in 0..5 {
                    match reader.history(&group, before, 100).await {
                        Ok(page) if !page.events.is_empty() => {
                            before = page.events.first().map(|e| e.seq);
                        }
                        _ => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    {
        let stop = stop.clone();
        let mut visitor = members.pop().context("members")?;
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(connection) = visitor.connect(None).await {
                    let (_tx, mut rx) = connection.split();
                    while let Ok(Some(Ok(frame))) =
                        tokio::time::timeout(Duration::from_secs(5), rx.next()).await
                    {
                        if matches!(frame, ServerFrame::Synced { .. }) {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }

    // Pipelined bursts every 20 s from their own users.
    let mut bursters = bursters(hearth, BURST_SENDERS).await?;
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut rss_max = 0u64;
    let mut next_burst = started;
    let (disk_before, _) = hearth.written_bytes()?;
    while Instant::now() < end {
        if Instant::now() >= next_burst {
            next_burst += Duration::from_secs(20);
            let count = burst(&mut bursters).await?;
            sent.fetch_add(count, Ordering::Relaxed);
        }
        rss_max = rss_max.max(hearth.rss_kib()?);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (disk_after, _) = hearth.written_bytes()?;
    let rss_end = hearth.rss_kib()?;
    // A reader that ended before the stop lost its connection.
    let lost = readers.iter().filter(|r| r.is_finished()).count();
    tasks.extend(readers);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    drop(bursters);
    // Quiet for 30 s: what the hearth keeps once the load is gone.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rss_after = hearth.rss_kib()?;
    let total = sent.load(Ordering::Relaxed);
    let (p50, p99) = samples.percentiles_ms();
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Report {
        name: "mixed load",
        figures: vec![
            ("minutes", minutes as f64, "", None),
            ("messages accepted", total as f64, "", None),
            (
                "recipients' connections lost",
                lost as f64,
                "",
                Some(Target::AtMost(0.0)),
            ),
            ("1:1 p50 under the load", p50, "ms", None),
            ("1:1 p99 under the load", p99, "ms", None),
            (
                "written to disk per message",
                (disk_after - disk_before) as f64 / total.max(1) as f64,
                "B",
                None,
            ),
            ("rss idle", mib(rss_idle), "MiB", None),
            ("rss peak", mib(rss_max), "MiB", Some(Target::AtMost(128.0))),
            ("rss at the end", mib(rss_end), "MiB", None),
            (
                "rss 30 s after",
                mib(rss_after),
                "MiB",
                Some(Target::AtMost(128.0)),
            ),
        ],
    })
}

/// Heartbeats every 30 s, as an app does: a device that only listens is otherwise closed as idle
/// after `client_api.idle_timeout` (5 minutes).
fn keep_alive(mut tx: Sender, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            if tx.frame(&ClientFrame::Heartbeat).await.is_err() {
                return;
            }
        }
    })
}

/// `count` 1:1 chats of their own, each with its sender's connection.
async fn bursters(
    hearth: &Hearth,
    count: usize,
) -> anyhow::Result<Vec<(Sender, Receiver, RoomId)>> {
    let mut out = Vec::new();
    for (mut a, _, room) in named_pairs_of_users(hearth, "soak-burst-", count).await? {
        let (tx, rx) = synced(&mut a).await?;
        out.push((tx, rx, room));
    }
    Ok(out)
}

/// Every burster pipelines [`BURST_EACH`] sends and waits for all to be accepted.
async fn burst(bursters: &mut [(Sender, Receiver, RoomId)]) -> anyhow::Result<u64> {
    let payload = [7u8; 64];
    let mut accepted = 0;
    futures_util::future::try_join_all(bursters.iter_mut().map(|(tx, rx, room)| async move {
        for _ in 0..BURST_EACH {
            tx.send(room, &new_txn_id(), &payload).await?;
        }
        let mut got = 0;
        while got < BURST_EACH {
            let frame = tokio::time::timeout(Duration::from_secs(60), rx.next())
                .await
                .context("no answer for 60 s")?
                .context("closed")??;
            if matches!(frame, ServerFrame::Accepted { .. }) {
                got += 1;
            }
        }
        anyhow::Ok(got as u64)
    }))
    .await?
    .into_iter()
    .for_each(|n| accepted += n);
    Ok(accepted)
}
