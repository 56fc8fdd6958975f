//! Federation figures: cross-hearth delivery latency next to same-hearth latency (measured in
//! the same run, on the same messages), and signed envelopes per second over one peer link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hearth_crypto::{ServerKey, sign_envelope};
use hearth_federation::{Directory, Inbound, KeyRing, PeerConfig, Transport, TransportConfig};
use hearth_spec::federation::{FED_VERSION, FedBody, FedEnvelope, Outcome};
use hearth_spec::{RoomKind, ServerName};

use crate::server::{Hearth, federated_pair, free_tcp_port};
use crate::stats::Samples;
use crate::{Report, Target, drain, on_stamped_messages, send_paced, synced, wait_until};

/// `pairs` groups of three: a sender and a reader on a.bench (the room's home), a reader on
/// b.bench. Every message is timed to both readers.
pub async fn latency(
    binary: &str,
    rate: u64,
    seconds: u64,
    pairs: usize,
) -> anyhow::Result<Report> {
    let metrics = [free_tcp_port()?, free_tcp_port()?];
    let (a, b) = federated_pair(binary, metrics).await?;
    let local = Arc::new(Samples::default());
    let remote = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for i in 0..pairs {
        let mut sender = a.user(&format!("s{i}")).await?;
        let mut near = a.user(&format!("n{i}")).await?;
        let mut far = b.user(&format!("f{i}")).await?;
        let room = sender
            .create_room(
                RoomKind::Group,
                None,
                &[near.user_id()?.clone(), far.user_id()?.clone()],
            )
            .await?
            .room_id;
        let deadline = Instant::now() + Duration::from_secs(30);
        while far.room(&room).await.is_err() {
            if Instant::now() > deadline {
                bail!("the room never reached b.bench");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (tx, own) = synced(&mut sender).await?;
        readers.push(tokio::spawn(drain(own, stop.clone())));
        for (client, samples) in [(&mut near, &local), (&mut far, &remote)] {
            let (_, rx) = synced(client).await?;
            let samples = samples.clone();
            readers.push(on_stamped_messages(rx, stop.clone(), move |sent, now| {
                samples.push(now.saturating_sub(sent))
            }));
        }
        senders.push((tx, room));
    }
    let total = rate * seconds;
    send_paced(&mut senders, rate, total).await?;
    wait_until(Duration::from_secs(20), || {
        local.len() as u64 >= total && remote.len() as u64 >= total
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    // Where the cross-hearth time goes: the home's legs, then the member's.
    let home = Hearth::stages(metrics[0], &HOME_STAGES.map(|(stage, _)| stage)).await?;
    let member = Hearth::stages(metrics[1], &MEMBER_STAGES.map(|(stage, _)| stage)).await?;
    a.stop().await;
    b.stop().await;
    if (local.len() as u64) < total || (remote.len() as u64) < total {
        bail!(
            "only {} local and {} remote of {total} delivered",
            local.len(),
            remote.len()
        );
    }
    let (lp50, lp99) = local.percentiles_ms();
    let (rp50, rp99) = remote.percentiles_ms();
    let mut figures = vec![
        ("rate", rate as f64, "msg/s", None),
        ("same-hearth p50", lp50, "ms", None),
        ("same-hearth p99", lp99, "ms", None),
        ("cross-hearth p50", rp50, "ms", None),
        ("cross-hearth p99", rp99, "ms", None),
        ("added at p50", rp50 - lp50, "ms", Some(Target::AtMost(1.0))),
    ];
    for ((_, name), (p50, _)) in HOME_STAGES.iter().zip(&home) {
        figures.push((name, p50 / 1000.0, "ms", None));
    }
    for ((_, name), (p50, _)) in MEMBER_STAGES.iter().zip(&member) {
        figures.push((name, p50 / 1000.0, "ms", None));
    }
    Ok(Report {
        name: "cross-hearth delivery latency",
        figures,
    })
}

/// The home's stages on a cross-hearth event's way after its own commit (`hearth_stage_micros`,
/// p50 reported): reading and signing the outbound batch, and its round trip to the member.
const HOME_STAGES: [(&str, &str); 2] = [
    ("fed_read", "home read+sign p50"),
    ("fed_round", "home round trip p50"),
];

/// The member's: checking the stream, then storing it (its queue, rows and flush, also shown
/// apart), and waking the reader's session.
const MEMBER_STAGES: [(&str, &str); 6] = [
    ("fed_check", "member check p50"),
    ("fed_store", "member store p50"),
    ("queue", "member queue p50"),
    ("write", "member write p50"),
    ("flush", "member flush p50"),
    ("wake", "member wake p50"),
];

struct Counter(AtomicU64);

impl Inbound for Counter {
    async fn receive(&self, _peer: ServerName, envelopes: Vec<FedEnvelope>) -> Vec<Outcome> {
        self.0.fetch_add(envelopes.len() as u64, Ordering::Relaxed);
        vec![Outcome::Stored; envelopes.len()]
    }
}

fn transport(
    name: &str,
    key: &ServerKey,
    peer: &str,
    peer_key: &ServerKey,
    peer_addr: std::net::SocketAddr,
    inbound: Arc<Counter>,
) -> anyhow::Result<(Transport, Arc<std::sync::RwLock<Directory>>)> {
    let directory = Arc::new(std::sync::RwLock::new(Directory::new(
        vec![PeerConfig {
            name: ServerName::parse(peer)?,
            address: peer_addr,
            key: peer_key.public_key(),
            previous_keys: vec![],
        }],
        vec![],
    )));
    let mut config = TransportConfig::new(ServerName::parse(name)?, "127.0.0.1:0".parse()?);
    config.envelopes = hearth_spec::rate::Rate::new(1e9, 1e9);
    let t = Transport::start(
        config,
        Arc::new(KeyRing::single(Arc::new(ServerKey::from_bytes(
            &key.to_bytes()[..],
        )?))),
        directory.clone(),
        inbound,
    )?;
    Ok((t, directory))
}

/// Signed envelopes per second over one link, as the queue driver sends them: batches of 512,
/// one batch in flight, each envelope signed by the sender and verified by the receiver.
pub async fn link(seconds: u64, event_bytes: usize) -> anyhow::Result<Report> {
    let a_key = ServerKey::generate();
    let b_key = ServerKey::generate();
    let received = Arc::new(Counter(AtomicU64::new(0)));
    let placeholder = "127.0.0.1:9".parse()?;
    let (b, _) = transport(
        "b.bench",
        &b_key,
        "a.bench",
        &a_key,
        placeholder,
        received.clone(),
    )?;
    let (a, a_dir) = transport(
        "a.bench",
        &a_key,
        "b.bench",
        &b_key,
        b.local_addr(),
        Arc::new(Counter(AtomicU64::new(0))),
    )?;
    drop(a_dir);
    let b_name = ServerName::parse("b.bench")?;
    let event = vec![0x5a; event_bytes];
    let a_key = Arc::new(a_key);
    let destination = b_name.clone();
    let build = move |n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let envelope = FedEnvelope {
                    version: FED_VERSION,
                    origin: ServerName::parse("a.bench").expect("valid"),
                    destination: destination.clone(),
                    signer: a_key.public_key(),
                    origin_ts: now_ms(),
                    nonce: rand::random(),
                    body: FedBody::Submit {
                        event: event.clone(),
                    },
                };
                sign_envelope(&a_key, &envelope)
            })
            .collect()
    };
    let build = Arc::new(build);
    // As the queue driver does: the next batch is signed while this one is on the wire.
    let prepare = |build: &Arc<dyn Fn(usize) -> Vec<Vec<u8>> + Send + Sync>| {
        let build = build.clone();
        tokio::task::spawn_blocking(move || build(512))
    };
    let build: Arc<dyn Fn(usize) -> Vec<Vec<u8>> + Send + Sync> = build;
    // Warm the connection.
    a.send(&b_name, &build(1)).await?;
    let start = Instant::now();
    let before = received.0.load(Ordering::Relaxed);
    let mut sent = 0u64;
    let mut next = prepare(&build);
    while start.elapsed() < Duration::from_secs(seconds) {
        let frames = next.await?;
        next = prepare(&build);
        let outcomes = a.send(&b_name, &frames).await?;
        if outcomes.iter().any(|o| *o != Outcome::Stored) {
            bail!("receiver refused envelopes: {outcomes:?}");
        }
        sent += frames.len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let verified = received.0.load(Ordering::Relaxed) - before;
    if verified != sent {
        bail!("{sent} sent but {verified} verified");
    }
    a.close();
    b.close();
    Ok(Report {
        name: "signed envelopes over one peer link",
        figures: vec![
            ("event size", event_bytes as f64, "bytes", None),
            (
                "envelopes",
                sent as f64 / elapsed,
                "/s",
                Some(Target::AtLeast(20_000.0)),
            ),
        ],
    })
}

/// Wall-clock milliseconds since the Unix epoch (envelope timestamps).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
