//! `hearth-bench`: starts a real `hearth` process on loopback, drives it with real clients and
//! reports latency, throughput, fan-out and memory per connection, as medians over several runs.

mod e2ee;
mod federation;
mod hardening;
mod network;
mod server;
mod soak;
mod stats;
mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hearth_client::{Client, Receiver, Sender, new_txn_id};
use hearth_spec::client::ServerFrame;
use hearth_spec::{Content, RoomId, RoomKind, TxnId};

use server::Hearth;
use stats::{Samples, median};

#[derive(Parser)]
#[command(
    name = "hearth-bench",
    about = "Load generator for a Hearth homeserver on loopback."
)]
struct Cli {
    /// The hearth binary to start (build it with --release first).
    #[arg(long, default_value = "target/release/hearth")]
    hearth: String,
    /// Independent runs; each figure reported is the median over them.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// 1:1 delivery latency (send to the recipient's WebSocket) at a fixed rate.
    Latency {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 20)]
        pairs: usize,
    },
    /// Maximum sustained accepted msg/s with durability on.
    Throughput {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Sends each client has in flight (waiting for `accepted`); 0: as many as the socket
        /// takes (pipelining). With 1, each client waits for its send to be durable before the
        /// next, and the target is issue 19's 5,000 msg/s at 32 clients.
        #[arg(long, default_value_t = 0)]
        in_flight: usize,
    },
    /// Time until every member of a group has a message.
    Fanout {
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 20)]
        rate: u64,
    },
    /// Resident memory per idle authenticated WebSocket connection.
    Connections {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// Cost of presence: many connected users in rooms, each heartbeating.
    Presence {
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 20)]
        room_size: usize,
        #[arg(long, default_value_t = 5000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Cross-hearth delivery latency (two federated hearths) next to same-hearth latency.
    FederationLatency {
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        pairs: usize,
    },
    /// Signed envelopes per second over one peer link, verification on.
    Link {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 200)]
        event_bytes: usize,
    },
    /// How fast a revoked key stops being accepted by hearths that hear of it only through
    /// gossip (the first hearth revokes; the others are probed every 2 ms).
    Gossip {
        #[arg(long, default_value_t = 5)]
        hearths: usize,
    },
    /// A returning hearth's catch-up on envelopes relays held for it, and what relays store.
    Catchup {
        #[arg(long, default_value_t = 5000)]
        messages: usize,
    },
    /// Bytes on loopback per presence update: gossip to a whole swarm against direct frames to
    /// the peers that need it. Run inside `unshare -rn sh -c 'ip link set lo up; …'`.
    PresenceTransport {
        #[arg(long, default_value_t = 5)]
        hearths: usize,
        #[arg(long, default_value_t = 500)]
        updates: usize,
    },
    /// MLS messages encrypted and decrypted per second on one core.
    E2eeCrypto {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Other rooms the devices of the third figure have read 1,000 messages in.
        #[arg(long, default_value_t = 20)]
        rooms: usize,
    },
    /// Time and bytes of a commit adding one device to a group of MEMBERS users × DEVICES.
    E2eeCommit {
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 2)]
        devices: usize,
    },
    /// Delivery latency with end-to-end encryption on, next to the same run without it.
    E2eeLatency {
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        pairs: usize,
    },
    /// Time from creating an encrypted group of MEMBERS to its last member reading the first
    /// message, and from a new device's login to its reading a message in each of ROOMS chats.
    E2eeMembership {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
    },
    /// A login flood from many addresses with the real password cost: the hearth's peak memory
    /// and another user's send latency meanwhile.
    LoginFlood {
        #[arg(long, default_value_t = 200)]
        addresses: usize,
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The hearth's `auth.password_workers` (0: its default, one per core but one); 64
        /// shows what unbounded hashing did.
        #[arg(long, default_value_t = 0)]
        password_workers: usize,
    },
    /// The web app in headless chromium (needs Debian's chromium and chromium-driver, and
    /// web/build): room list after a reload, download size, messages a tab decrypts and shows
    /// per second.
    Web {
        #[arg(long, default_value_t = 300)]
        messages: usize,
    },
    /// A mixed load for MINUTES (paced 1:1 chats at RATE msg/s with typing, a group of 50,
    /// pipelined bursts, history paging, reconnecting devices): the hearth's resident size idle,
    /// at its peak, at the end and 30 s after. Not part of `all` (it takes its minutes).
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
    /// All of the above with their defaults (but `soak`).
    All,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    server::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let scenarios = match cli.scenario {
        Scenario::All => vec![
            Scenario::Latency {
                rate: 1000,
                seconds: 10,
                pairs: 20,
            },
            Scenario::Throughput {
                clients: 32,
                seconds: 10,
                in_flight: 0,
            },
            Scenario::Throughput {
                clients: 32,
                seconds: 10,
                in_flight: 1,
            },
            Scenario::Fanout {
                members: 100,
                messages: 200,
                rate: 20,
            },
            Scenario::Connections { count: 10_000 },
            Scenario::Presence {
                users: 10_000,
                room_size: 20,
                interval_ms: 5000,
                seconds: 30,
            },
            Scenario::FederationLatency {
                rate: 500,
                seconds: 10,
                pairs: 10,
            },
            Scenario::Link {
                seconds: 5,
                event_bytes: 200,
            },
            Scenario::Gossip { hearths: 5 },
            Scenario::Catchup { messages: 5000 },
            Scenario::E2eeCrypto {
                messages: 20_000,
                rooms: 20,
            },
            Scenario::E2eeCommit {
                members: 100,
                devices: 2,
            },
            Scenario::Web { messages: 300 },
            Scenario::E2eeLatency {
                rate: 100,
                seconds: 10,
                pairs: 10,
            },
        ],
        one => vec![one],
    };
    for scenario in scenarios {
        let mut reports = Vec::new();
        for run in 1..=cli.runs {
            let report = match &scenario {
                Scenario::FederationLatency {
                    rate,
                    seconds,
                    pairs,
                } => Some(federation::latency(&cli.hearth, *rate, *seconds, *pairs).await?),
                Scenario::Link {
                    seconds,
                    event_bytes,
                } => Some(federation::link(*seconds, *event_bytes).await?),
                Scenario::Gossip { hearths } => Some(network::gossip(&cli.hearth, *hearths).await?),
                Scenario::Catchup { messages } => {
                    Some(network::catchup(&cli.hearth, *messages).await?)
                }
                Scenario::PresenceTransport { hearths, updates } => {
                    Some(network::presence_transport(*hearths, *updates).await?)
                }
                Scenario::LoginFlood {
                    addresses,
                    in_flight,
                    seconds,
                    password_workers,
                } => Some(
                    hardening::login_flood(
                        &cli.hearth,
                        *addresses,
                        *in_flight,
                        *seconds,
                        *password_workers,
                    )
                    .await?,
                ),
                Scenario::E2eeCrypto { messages, rooms } => {
                    let (messages, rooms) = (*messages, *rooms);
                    Some(
                        tokio::task::spawn_blocking(move || e2ee::crypto(messages, rooms))
                            .await??,
                    )
                }
                Scenario::E2eeCommit { members, devices } => {
                    let (members, devices) = (*members, *devices);
                    Some(
                        tokio::task::spawn_blocking(move || e2ee::commit_cost(members, devices))
                            .await??,
                    )
                }
                _ => None,
            };
            if let Some(report) = report {
                println!("  run {run}: {}", report.line());
                reports.push(report);
                continue;
            }
            // The 1:1 latency run also reads the hearth's stage timings from its /metrics.
            let metrics_port = server::free_tcp_port()?;
            let hearth = match &scenario {
                Scenario::Latency { .. } => {
                    Hearth::start_with_metrics(&cli.hearth, metrics_port).await?
                }
                _ => Hearth::start(&cli.hearth).await?,
            };
            let report = match &scenario {
                Scenario::Latency {
                    rate,
                    seconds,
                    pairs,
                } => latency(&hearth, *rate, *seconds, *pairs, metrics_port).await?,
                Scenario::Throughput {
                    clients,
                    seconds,
                    in_flight,
                } => throughput(&hearth, *clients, *seconds, *in_flight).await?,
                Scenario::Fanout {
                    members,
                    messages,
                    rate,
                } => fanout(&hearth, *members, *messages, *rate).await?,
                Scenario::Connections { count } => connections(&hearth, *count).await?,
                Scenario::Presence {
                    users,
                    room_size,
                    interval_ms,
                    seconds,
                } => presence(&hearth, *users, *room_size, *interval_ms, *seconds).await?,
                Scenario::E2eeLatency {
                    rate,
                    seconds,
                    pairs,
                } => e2ee::latency(&hearth, *rate, *seconds, *pairs).await?,
                Scenario::E2eeMembership { members, rooms } => {
                    e2ee::membership(&hearth, *members, *rooms).await?
                }
                Scenario::Web { messages } => web::web(&hearth, *messages).await?,
                Scenario::Soak { minutes, rate } => soak::soak(&hearth, *minutes, *rate).await?,
                Scenario::All
                | Scenario::E2eeCrypto { .. }
                | Scenario::E2eeCommit { .. }
                | Scenario::FederationLatency { .. }
                | Scenario::Link { .. }
                | Scenario::Gossip { .. }
                | Scenario::Catchup { .. }
                | Scenario::PresenceTransport { .. }
                | Scenario::LoginFlood { .. } => {
                    unreachable!()
                }
            };
            println!("  run {run}: {}", report.line());
            reports.push(report);
            hearth.stop().await;
        }
        println!("{}", Report::median(&reports).line_with_targets());
    }
    Ok(())
}

/// Named figures of one run.
#[derive(Clone)]
pub(crate) struct Report {
    name: &'static str,
    figures: Vec<(&'static str, f64, &'static str, Option<Target>)>,
}

#[derive(Clone, Copy)]
pub(crate) enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Report {
    fn line(&self) -> String {
        let parts: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v, unit, _)| format!("{k} {v:.2} {unit}"))
            .collect();
        format!("{}: {}", self.name, parts.join(", "))
    }

    fn median(reports: &[Report]) -> Report {
        let first = &reports[0];
        let figures = first
            .figures
            .iter()
            .enumerate()
            .map(|(i, (k, _, unit, target))| {
                let values: Vec<f64> = reports.iter().map(|r| r.figures[i].1).collect();
                (*k, median(&values), *unit, *target)
            })
            .collect();
        Report {
            name: first.name,
            figures,
        }
    }

    fn line_with_targets(&self) -> String {
        let parts: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v, unit, target)| match target {
                Some(Target::AtMost(t)) => format!(
                    "{k} {v:.2} {unit} (target ≤ {t}: {})",
                    if *v <= *t { "met" } else { "MISSED" }
                ),
                Some(Target::AtLeast(t)) => format!(
                    "{k} {v:.2} {unit} (target ≥ {t}: {})",
                    if *v >= *t { "met" } else { "MISSED" }
                ),
                None => format!("{k} {v:.2} {unit}"),
            })
            .collect();
        format!("MEDIAN {}: {}", self.name, parts.join(", "))
    }
}

/// Nanoseconds since a process-wide origin, carried in payloads to time delivery.
pub(crate) fn stamp() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub(crate) async fn synced(client: &mut Client) -> anyhow::Result<(Sender, Receiver)> {
    let (tx, mut rx) = client.connect(None).await?.split();
    loop {
        match rx.next().await.context("closed before synced")?? {
            ServerFrame::Synced { .. } => return Ok((tx, rx)),
            _ => continue,
        }
    }
}

/// Waits for the hearth to accept the send `txn` (frames before it are dropped).
pub(crate) async fn accepted(rx: &mut Receiver, txn: &TxnId) -> anyhow::Result<()> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), rx.next())
            .await
            .context("no answer to a send for 30 s")?
            .context("closed")??;
        match frame {
            ServerFrame::Accepted { txn_id, .. } if txn_id == *txn => return Ok(()),
            ServerFrame::Error { code, message, .. } => bail!("send refused: {code:?} {message}"),
            _ => continue,
        }
    }
}

/// Calls `on_message(sent, received)` with the stamps of every message event read, until `stop`
/// or the connection ends.
fn on_stamped_messages(
    mut rx: Receiver,
    stop: Arc<AtomicBool>,
    mut on_message: impl FnMut(u64, u64) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let frame = match tokio::time::timeout(Duration::from_millis(200), rx.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => return,
                Ok(Some(Err(e))) => {
                    eprintln!("hearth-bench: a reader's connection ended: {e}");
                    return;
                }
            };
            if let ServerFrame::Event { event, .. } = frame
                && let Content::Message { payload } = event.content
                && payload.len() >= 8
            {
                let sent = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                on_message(sent, stamp());
            }
        }
    })
}

async fn pairs_of_users(
    hearth: &Hearth,
    pairs: usize,
) -> anyhow::Result<Vec<(Client, Client, RoomId)>> {
    named_pairs_of_users(hearth, "", pairs).await
}

/// Like [`pairs_of_users`], the users named `{prefix}a{i}` and `{prefix}b{i}`.
async fn named_pairs_of_users(
    hearth: &Hearth,
    prefix: &str,
    pairs: usize,
) -> anyhow::Result<Vec<(Client, Client, RoomId)>> {
    let mut out = Vec::new();
    for i in 0..pairs {
        let mut a = hearth.user(&format!("{prefix}a{i}")).await?;
        let b = hearth.user(&format!("{prefix}b{i}")).await?;
        let room = a
            .create_room(RoomKind::Direct, None, &[b.user_id()?.clone()])
            .await?
            .room_id;
        out.push((a, b, room));
    }
    Ok(out)
}

/// The hearth's stages of a message's way (`hearth_client_api::stage`), in order, with the
/// report names of their p50 and p99.
const STAGES: [(&str, &str, &str); 10] = [
    ("receive", "receive p50", "receive p99"),
    ("checks", "checks p50", "checks p99"),
    ("queue", "queue p50", "queue p99"),
    ("decide", "decide p50", "decide p99"),
    ("write", "write p50", "write p99"),
    ("flush", "flush p50", "flush p99"),
    ("sync", "sync p50", "sync p99"),
    ("apply", "apply p50", "apply p99"),
    ("wake", "wake p50", "wake p99"),
    ("deliver", "deliver p50", "deliver p99"),
];

/// Stages inside `flush`, left out of the sum.
const PARTS_OF_FLUSH: [&str; 2] = ["sync", "apply"];

async fn latency(
    hearth: &Hearth,
    rate: u64,
    seconds: u64,
    pairs: usize,
    metrics_port: u16,
) -> anyhow::Result<Report> {
    let mut users = pairs_of_users(hearth, pairs).await?;
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for (a, b, room) in users.iter_mut() {
        let (tx, _a_rx) = synced(a).await?;
        // The sender's own echo and acks are drained so its socket never backs up.
        readers.push(tokio::spawn(drain(_a_rx, stop.clone())));
        let (_, b_rx) = synced(b).await?;
        let samples = samples.clone();
        readers.push(on_stamped_messages(b_rx, stop.clone(), move |sent, now| {
            samples.push(now.saturating_sub(sent))
        }));
        senders.push((tx, room.clone()));
    }
    let total = rate * seconds;
    send_paced(&mut senders, rate, total).await?;
    wait_until(Duration::from_secs(10), || samples.len() as u64 >= total).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    if (samples.len() as u64) < total {
        bail!("only {} of {total} messages delivered", samples.len());
    }
    let (p50, p99) = samples.percentiles_ms();
    // Stages the hearth does not record (an older build's) are left out.
    let mut stages = Vec::new();
    for (stage, p50_name, p99_name) in STAGES {
        if let Ok(found) = Hearth::stages(metrics_port, &[stage]).await {
            stages.push(((stage, p50_name, p99_name), found[0]));
        }
    }
    let mut figures = vec![
        ("rate", rate as f64, "msg/s", None),
        ("p50", p50, "ms", Some(Target::AtMost(0.6))),
        ("p99", p99, "ms", Some(Target::AtMost(2.0))),
    ];
    // Where the time goes inside the hearth; the rest of p50 is the clients, the loopback
    // sockets and scheduling.
    for ((_, p50_name, p99_name), (stage_p50, stage_p99)) in &stages {
        figures.push((p50_name, stage_p50 / 1000.0, "ms", None));
        figures.push((p99_name, stage_p99 / 1000.0, "ms", None));
    }
    let inside: f64 = stages
        .iter()
        .filter(|((stage, _, _), _)| !PARTS_OF_FLUSH.contains(stage))
        .map(|(_, (p50, _))| p50 / 1000.0)
        .sum();
    figures.push(("stage p50s summed", inside, "ms", None));
    // Not on every message's way: the flushes of the database after each
    // `storage.checkpoint_bytes` of journal, which hold the committer (absent when the run made
    // none).
    if let Ok(checkpoint) = Hearth::stages(metrics_port, &["checkpoint"]).await {
        figures.push(("checkpoint p50", checkpoint[0].0 / 1000.0, "ms", None));
        figures.push(("checkpoint p99", checkpoint[0].1 / 1000.0, "ms", None));
    }
    Ok(Report {
        name: "1:1 delivery latency",
        figures,
    })
}

/// Sends `total` stamped messages at `rate` per second, round-robin over `senders`.
async fn send_paced(senders: &mut [(Sender, RoomId)], rate: u64, total: u64) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        tick.tick().await;
        let (tx, room) = &mut senders[(n % senders.len() as u64) as usize];
        tx.send(room, &new_txn_id(), &stamp().to_be_bytes()).await?;
    }
    Ok(())
}

/// Polls `done` until it holds or `timeout` passes.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn drain(mut rx: Receiver, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(None) = tokio::time::timeout(Duration::from_millis(200), rx.next()).await {
            return;
        }
    }
}

async fn throughput(
    hearth: &Hearth,
    clients: usize,
    seconds: u64,
    in_flight: usize,
) -> anyhow::Result<Report> {
    let rss_idle = hearth.rss_kib()?;
    let mut users = pairs_of_users(hearth, clients).await?;
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (a, b, room) in users.iter_mut() {
        let (mut tx, mut rx) = synced(a).await?;
        let (_, b_rx) = synced(b).await?;
        tasks.push(tokio::spawn(drain(b_rx, stop.clone())));
        let stop_send = stop.clone();
        let room = room.clone();
        // Permits for sends in flight: taken to send, given back by `accepted`.
        let window = Arc::new(tokio::sync::Semaphore::new(in_flight));
        let permits = window.clone();
        tasks.push(tokio::spawn(async move {
            let payload = [0u8; 64];
            while !stop_send.load(Ordering::Relaxed) {
                if in_flight > 0 {
                    match permits.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                if tx.send(&room, &new_txn_id(), &payload).await.is_err() {
                    break;
                }
            }
        }));
        let counter = accepted.clone();
        let stop_read = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop_read.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), rx.next()).await {
                    Ok(Some(Ok(ServerFrame::Accepted { .. }))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        if in_flight > 0 {
                            window.add_permits(1);
                        }
                    }
                    Ok(None) => break,
                    _ => {}
                }
            }
        }));
    }
    // Warm up, then count over the measured window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_count = accepted.load(Ordering::Relaxed);
    let (disk_before, written_before) = hearth.written_bytes()?;
    let device_before = hearth.device_bytes_written();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let count = accepted.load(Ordering::Relaxed) - start_count;
    let (disk_after, written_after) = hearth.written_bytes()?;
    let device_after = hearth.device_bytes_written();
    let elapsed = started.elapsed().as_secs_f64();
    let rss_loaded = hearth.rss_kib()?;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let per_message = |before: u64, after: u64| (after - before) as f64 / count.max(1) as f64;
    Ok(Report {
        name: "durable accepted throughput",
        figures: vec![
            ("clients", clients as f64, "", None),
            ("in flight each (0: pipelined)", in_flight as f64, "", None),
            (
                "accepted",
                count as f64 / elapsed,
                "msg/s",
                // Issue 19: 20,000 pipelined, 5,000 with one in flight per sender.
                Some(Target::AtLeast(if in_flight == 1 {
                    5_000.0
                } else {
                    20_000.0
                })),
            ),
            (
                "written to disk per message (write_bytes)",
                per_message(disk_before, disk_after),
                "B",
                Some(Target::AtMost(2048.0)),
            ),
            (
                "written per message (wchar)",
                per_message(written_before, written_after),
                "B",
                None,
            ),
            (
                "sent to the disk per message (the device's count, whole machine; -1: none)",
                match (device_before, device_after) {
                    (Some(before), Some(after)) => per_message(before, after),
                    _ => -1.0,
                },
                "B",
                None,
            ),
            ("rss idle", rss_idle as f64 / 1024.0, "MiB", None),
            (
                "rss under load",
                rss_loaded as f64 / 1024.0,
                "MiB",
                Some(Target::AtMost(128.0)),
            ),
        ],
    })
}

async fn fanout(
    hearth: &Hearth,
    members: usize,
    messages: usize,
    rate: u64,
) -> anyhow::Result<Report> {
    let mut clients = Vec::new();
    for i in 0..members {
        clients.push(hearth.user(&format!("m{i}")).await?);
    }
    let ids: Vec<_> = clients[1..]
        .iter()
        .map(|c| c.user_id().cloned())
        .collect::<Result<_, _>>()?;
    let room = clients[0]
        .create_room(RoomKind::Group, Some("fanout"), &ids)
        .await?
        .room_id;
    // Per message: the latest arrival time across all members.
    let arrivals: Arc<std::sync::Mutex<std::collections::HashMap<u64, (usize, u64)>>> =
        Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut sender = None;
    for (i, client) in clients.iter_mut().enumerate() {
        let (tx, rx) = synced(client).await?;
        if i == 0 {
            sender = Some(tx);
        }
        let arrivals = arrivals.clone();
        tasks.push(on_stamped_messages(rx, stop.clone(), move |sent, now| {
            let mut map = arrivals.lock().expect("lock");
            let entry = map.entry(sent).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(now);
        }));
    }
    let tx = sender.context("no sender")?;
    send_paced(&mut [(tx, room.clone())], rate, messages as u64).await?;
    wait_until(Duration::from_secs(10), || {
        let map = arrivals.lock().expect("lock");
        map.values().filter(|(n, _)| *n == members).count() == messages
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let samples = Samples::default();
    for (sent, (n, last)) in arrivals.lock().expect("lock").iter() {
        if *n != members {
            bail!("a message reached only {n} of {members} members");
        }
        samples.push(last - sent);
    }
    let (p50, p99) = samples.percentiles_ms();
    Ok(Report {
        name: "group fan-out (all members have it)",
        figures: vec![
            ("members", members as f64, "", None),
            ("p50", p50, "ms", None),
            ("p99", p99, "ms", Some(Target::AtMost(20.0))),
        ],
    })
}

async fn connections(hearth: &Hearth, count: usize) -> anyhow::Result<Report> {
    const USERS: usize = 100;
    let mut clients = Vec::new();
    for i in 0..USERS {
        clients.push(hearth.user(&format!("idle{i}")).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = hearth.rss_kib()?;
    let mut open = Vec::with_capacity(count);
    for n in 0..count {
        let (tx, rx) = synced(&mut clients[n % USERS])
            .await
            .with_context(|| format!("connection {n}"))?;
        open.push((tx, rx));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = hearth.rss_kib()?;
    let per = (after.saturating_sub(before)) as f64 / count as f64;
    drop(open);
    Ok(Report {
        name: "idle WebSocket memory",
        figures: vec![
            ("connections", count as f64, "", None),
            (
                "rss growth",
                (after.saturating_sub(before)) as f64 / 1024.0,
                "MiB",
                None,
            ),
            ("per connection", per, "KiB", Some(Target::AtMost(10.0))),
        ],
    })
}

async fn presence(
    hearth: &Hearth,
    users: usize,
    room_size: usize,
    interval_ms: u64,
    seconds: u64,
) -> anyhow::Result<Report> {
    // Register in parallel batches (the bench hearth uses a cheap password hash).
    let mut clients = Vec::with_capacity(users);
    for chunk in (0..users).collect::<Vec<_>>().chunks(32) {
        let made = futures_util::future::join_all(
            chunk
                .iter()
                .map(|i| async move { hearth.user(&format!("p{i}")).await }),
        )
        .await;
        for c in made {
            clients.push(c?);
        }
    }
    for group in clients.chunks_mut(room_size) {
        let others: Vec<_> = group[1..]
            .iter()
            .map(|c| c.user_id().cloned())
            .collect::<Result<_, _>>()?;
        group[0]
            .create_room(RoomKind::Group, Some("presence"), &others)
            .await?;
    }
    let frames = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(users);
    for (i, client) in clients.iter_mut().enumerate() {
        let (mut tx, mut rx) = synced(client)
            .await
            .with_context(|| format!("connection {i}"))?;
        let frames = frames.clone();
        let stop = stop.clone();
        // Spread the heartbeats over the interval, as real devices are.
        let offset = Duration::from_millis(interval_ms * i as u64 / users as u64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, Duration::from_millis(interval_ms));
            while !stop.load(Ordering::Relaxed) {
                tokio::select! {
                    frame = rx.next() => match frame {
                        Some(Ok(ServerFrame::Presence { .. })) => { frames.fetch_add(1, Ordering::Relaxed); }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    _ = tick.tick() => {
                        if tx.frame(&hearth_spec::client::ClientFrame::Heartbeat).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    // Let the announcements of everyone coming online settle.
    tokio::time::sleep(Duration::from_millis(interval_ms + 3000)).await;
    let at_connect = frames.load(Ordering::Relaxed);
    let (cpu0, frames0, t0) = (
        hearth.cpu_seconds()?,
        frames.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, frames1, elapsed) = (
        hearth.cpu_seconds()?,
        frames.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    Ok(Report {
        name: "presence at scale",
        figures: vec![
            ("users", users as f64, "", None),
            (
                "heartbeats",
                users as f64 * 1000.0 / interval_ms as f64,
                "/s",
                None,
            ),
            (
                "hearth CPU",
                (cpu1 - cpu0) / elapsed * 100.0,
                "% of one core",
                None,
            ),
            (
                "presence frames sent",
                (frames1 - frames0) as f64 / elapsed,
                "/s steady",
                None,
            ),
            ("frames when all came online", at_connect as f64, "", None),
        ],
    })
}
