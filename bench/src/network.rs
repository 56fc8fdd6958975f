//! Figures of the peer-assisted network, with real hearth processes on loopback: how fast a
//! revoked key stops being accepted across hearths that hear of it only through gossip, and how
//! long a returning hearth takes to catch up on envelopes relays held for it (with what the
//! relays stored per envelope).

use std::process::Command;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearth_client::{Client, new_txn_id};
use hearth_crypto::ServerKey;
use hearth_federation::{Directory, Inbound, KeyRing, PeerConfig, Transport, TransportConfig};
use hearth_spec::federation::{FED_VERSION, FedBody, FedEnvelope, Outcome};
use hearth_spec::{RoomKind, ServerName};

use crate::Report;
use crate::federation::now_ms;
use crate::server::{Hearth, free_tcp_port, free_udp_port, fresh_dir, server_key};

/// One hearth of a planned network.
struct Member {
    name: String,
    dir: std::path::PathBuf,
    key: String,
    udp: u16,
    p2p: u16,
    metrics: u16,
}

fn plan(binary: &str, names: &[&str]) -> anyhow::Result<Vec<Member>> {
    names
        .iter()
        .map(|name| {
            let dir = fresh_dir()?;
            Ok(Member {
                name: name.to_string(),
                key: server_key(binary, &dir)?,
                dir,
                udp: free_udp_port()?,
                p2p: free_udp_port()?,
                metrics: free_tcp_port()?,
            })
        })
        .collect()
}

/// The environment of `me`: configured with `peers`, joining the swarm through `bootstrap`.
fn env(me: &Member, peers: &[&Member], bootstrap: Option<&Member>) -> Vec<(String, String)> {
    let peers: Vec<String> = peers
        .iter()
        .filter(|p| p.name != me.name)
        .map(|p| {
            format!(
                r#"{{ name = "{}", address = "127.0.0.1:{}", key = "{}" }}"#,
                p.name, p.udp, p.key
            )
        })
        .collect();
    let mut env = vec![
        ("HEARTH_SERVER_NAME".to_owned(), me.name.clone()),
        (
            "HEARTH_FEDERATION__LISTEN".to_owned(),
            format!("127.0.0.1:{}", me.udp),
        ),
        (
            "HEARTH_FEDERATION__PEERS".to_owned(),
            format!("[{}]", peers.join(", ")),
        ),
        (
            "HEARTH_FEDERATION__DISCOVERY__LISTEN".to_owned(),
            format!("127.0.0.1:{}", me.p2p),
        ),
        (
            "HEARTH_METRICS__LISTEN".to_owned(),
            format!("127.0.0.1:{}", me.metrics),
        ),
        (
            "HEARTH_FEDERATION__RETRY_MAX_MS".to_owned(),
            "500".to_owned(),
        ),
        (
            "HEARTH_FEDERATION__RELAY__AFTER_MS".to_owned(),
            "1000".to_owned(),
        ),
    ];
    if let Some(b) = bootstrap {
        env.push((
            "HEARTH_FEDERATION__DISCOVERY__BOOTSTRAP".to_owned(),
            format!("[\"/ip4/127.0.0.1/udp/{}/quic-v1\"]", b.p2p),
        ));
    }
    env
}

struct Sink;

impl Inbound for Sink {
    async fn receive(&self, _peer: ServerName, envelopes: Vec<FedEnvelope>) -> Vec<Outcome> {
        vec![Outcome::Stored; envelopes.len()]
    }
}

/// Speaks federation as `origin` with a key read from its data directory (what a thief of that
/// key could do), to probe whether other hearths still accept the key.
struct Prober {
    origin: ServerName,
    key: Arc<ServerKey>,
    transport: Transport,
}

impl Prober {
    fn new(origin: &Member, targets: &[&Member]) -> anyhow::Result<Self> {
        let secret = std::fs::read(origin.dir.join("server.key"))?;
        let key = Arc::new(ServerKey::from_bytes(&secret)?);
        let peers = targets
            .iter()
            .map(|t| {
                Ok(PeerConfig {
                    name: ServerName::parse(&t.name)?,
                    address: format!("127.0.0.1:{}", t.udp).parse()?,
                    key: decode_key(&t.key)?,
                    previous_keys: vec![],
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let origin = ServerName::parse(&origin.name)?;
        let transport = Transport::start(
            TransportConfig::new(origin.clone(), "127.0.0.1:0".parse()?),
            Arc::new(KeyRing::single(key.clone())),
            Arc::new(RwLock::new(Directory::new(peers, vec![]))),
            Arc::new(Sink),
        )?;
        Ok(Self {
            origin,
            key,
            transport,
        })
    }

    /// Whether `target` accepts an (empty) envelope signed with the key.
    async fn accepted(&self, target: &str) -> bool {
        let Ok(destination) = ServerName::parse(target) else {
            return false;
        };
        let envelope = FedEnvelope {
            version: FED_VERSION,
            origin: self.origin.clone(),
            destination: destination.clone(),
            signer: self.key.public_key(),
            origin_ts: now_ms(),
            nonce: rand::random(),
            body: FedBody::Ephemeral { signals: vec![] },
        };
        let frame = hearth_crypto::sign_envelope(&self.key, &envelope);
        matches!(
            self.transport.send(&destination, &[frame]).await,
            Ok(outcomes) if outcomes == [Outcome::Stored]
        )
    }
}

/// A base64url public key, as `hearth server-key` prints it.
fn decode_key(text: &str) -> anyhow::Result<hearth_spec::PublicKey> {
    hearth_spec::PublicKey::parse(text).context("bad key")
}

fn admin(binary: &str, me: &Member, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("admin")
        .args(args)
        .env("HEARTH_DATA_DIR", &me.dir)
        .env("HEARTH_SERVER_NAME", &me.name)
        .env("HEARTH_LOG", "warn,libp2p_kad=error")
        .output()?;
    if !out.status.success() {
        bail!(
            "hearth admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `hearths` hearths; the first is everyone's bootstrap peer and nobody's configured peer. The
/// others learn it from the DHT (when it calls them). It revokes its key; every other hearth
/// is probed every 2 ms with an envelope signed by the revoked key until it refuses it.
pub async fn gossip(binary: &str, hearths: usize) -> anyhow::Result<Report> {
    let names: Vec<String> = (1..=hearths).map(|i| format!("g{i}.bench")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let members = plan(binary, &names)?;
    let (origin, others) = members.split_first().context("at least two hearths")?;
    let mut running =
        vec![Hearth::start_env(binary, origin.dir.clone(), &env(origin, &[], None)).await?];
    for m in others {
        running.push(Hearth::start_env(binary, m.dir.clone(), &env(m, &[], Some(origin))).await?);
    }
    let targets: Vec<&Member> = others.iter().collect();
    let prober = Arc::new(Prober::new(origin, &targets)?);
    // Every other hearth learns the origin from the DHT (by the key it calls with).
    let deadline = Instant::now() + Duration::from_secs(60);
    for t in &targets {
        while !prober.accepted(&t.name).await {
            if Instant::now() > deadline {
                bail!("{} never accepted {}'s key", t.name, origin.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Let the gossip mesh settle as it would on a network that has been up a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    let mut probes = Vec::new();
    for t in &targets {
        let (prober, name) = (prober.clone(), t.name.clone());
        probes.push(tokio::spawn(async move {
            while prober.accepted(&name).await {
                if start.elapsed() > Duration::from_secs(60) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Some(start.elapsed())
        }));
    }
    admin(binary, origin, &["rotate-key", "--revoke"])?;
    let command = start.elapsed();
    let mut refused = Vec::new();
    for p in probes {
        refused.push(
            p.await?
                .context("a hearth still accepts the revoked key after 60 s")?
                .as_secs_f64()
                * 1000.0,
        );
    }
    refused.sort_by(f64::total_cmp);
    for h in running {
        h.stop().await;
    }
    Ok(Report {
        name: "revocation gossip",
        figures: vec![
            ("hearths", hearths as f64, "", None),
            ("admin command", command.as_secs_f64() * 1000.0, "ms", None),
            ("first refusal", refused[0], "ms", None),
            ("median refusal", crate::stats::median(&refused), "ms", None),
            ("last refusal", refused[refused.len() - 1], "ms", None),
        ],
    })
}

/// A gauge from a hearth's `/metrics` (0 if absent or unreachable).
async fn metric(member: &Member, series: &str) -> u64 {
    let Ok(body) =
        crate::server::http_get(&format!("127.0.0.1:{}", member.metrics), "/metrics").await
    else {
        return 0;
    };
    body.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// a, b, c, d federated. c is down while alice on a sends `messages` into a room homed on c; a
/// hands them sealed to b and d and is stopped; c comes back and is timed until it has them all.
pub async fn catchup(binary: &str, messages: usize) -> anyhow::Result<Report> {
    let members = plan(binary, &["a.bench", "b.bench", "c.bench", "d.bench"])?;
    let all: Vec<&Member> = members.iter().collect();
    let mut running = Vec::new();
    for m in &members {
        running.push(Hearth::start_env(binary, m.dir.clone(), &env(m, &all, None)).await?);
    }
    let mut alice = running[0].user("alice").await?;
    let mut carol = running[2].user("carol").await?;
    let room = carol
        .create_room(RoomKind::Group, None, &[alice.user_id()?.clone()])
        .await?
        .room_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !alice.room(&room).await.is_ok_and(|r| r.last_seq >= 3) {
        if Instant::now() > deadline {
            bail!("the room never reached a.bench");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running[2].kill();
    let relay_db = members[3].dir.join("hearth.redb");
    let db_before = std::fs::metadata(&relay_db)?.len();
    // alice sends, 64 requests in flight.
    let session = alice.session().context("alice")?.clone();
    let mut sent = 0;
    while sent < messages {
        let batch = (messages - sent).min(64);
        let sends = (0..batch).map(|i| {
            let mut client = Client::with_session(alice.base_url(), session.clone());
            let room = room.clone();
            async move {
                client
                    .send(&room, &new_txn_id(), format!("m{:05}", sent + i).as_bytes())
                    .await
            }
        });
        for result in futures_util::future::join_all(sends).await {
            result?;
        }
        sent += batch;
    }
    let held_series = "hearth_relay_held_envelopes{origin=\"a.bench\"}";
    let deadline = Instant::now() + Duration::from_secs(180);
    for relay in [&members[1], &members[3]] {
        while metric(relay, held_series).await < messages as u64 {
            if Instant::now() > deadline {
                bail!("{} never held everything", relay.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let held = metric(&members[3], held_series).await;
    let held_bytes = metric(&members[3], "hearth_relay_held_bytes{origin=\"a.bench\"}").await;
    let db_after = std::fs::metadata(&relay_db)?.len();
    running[0].kill();

    let start = Instant::now();
    running[2].restart().await?;
    let up = start.elapsed();
    let mut carol =
        Client::with_session(&running[2].url, carol.session().context("carol")?.clone());
    let target = 3 + messages as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if carol.room(&room).await.is_ok_and(|r| r.last_seq >= target) {
            break;
        }
        if Instant::now() > deadline {
            bail!("c.bench never caught up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = start.elapsed();
    for h in running {
        h.stop().await;
    }
    Ok(Report {
        name: "relay catch-up",
        figures: vec![
            ("messages", messages as f64, "", None),
            ("catch-up from restart", caught_up.as_secs_f64(), "s", None),
            ("of which start-up", up.as_secs_f64(), "s", None),
            (
                "delivered",
                messages as f64 / (caught_up - up).as_secs_f64(),
                "msg/s",
                None,
            ),
            (
                "sealed bytes per envelope",
                held_bytes as f64 / held.max(1) as f64,
                "B",
                None,
            ),
            (
                "relay database growth per envelope",
                db_after.saturating_sub(db_before) as f64 / held.max(1) as f64,
                "B",
                None,
            ),
        ],
    })
}

/// Bytes sent on the loopback interface so far, in this process's network namespace (run the
/// bench in one of its own, `unshare -rn`, for a clean count).
fn loopback_tx_bytes() -> anyhow::Result<u64> {
    let dev = std::fs::read_to_string("/proc/self/net/dev")?;
    let line = dev
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .context("no loopback interface")?;
    // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit bytes.
    line.split_whitespace()
        .nth(8)
        .context("short /proc/net/dev line")?
        .parse()
        .context("tx bytes")
}

/// A swarm identity for the presence comparison.
struct Plain {
    key: ServerKey,
    name: ServerName,
}

impl hearth_federation::p2p::Identity for Plain {
    fn secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.key.to_bytes()
    }
    fn record(&self) -> (Vec<u8>, hearth_spec::PublicKey, ServerName) {
        let record = hearth_spec::discovery::HearthRecord {
            version: hearth_spec::discovery::RECORD_VERSION,
            name: self.name.clone(),
            key: self.key.public_key(),
            address: "127.0.0.1:1".parse().expect("address"),
            issued_ms: now_ms(),
            previous: None,
        };
        (
            hearth_crypto::sign_record(&self.key, &record),
            record.key,
            self.name.clone(),
        )
    }
}

/// One presence update as a hearth signs it for `destination`.
fn presence_update(key: &ServerKey, origin: &ServerName, destination: &ServerName) -> Vec<u8> {
    let envelope = FedEnvelope {
        version: FED_VERSION,
        origin: origin.clone(),
        destination: destination.clone(),
        signer: key.public_key(),
        origin_ts: now_ms(),
        nonce: rand::random(),
        body: FedBody::Ephemeral {
            signals: vec![hearth_spec::federation::Signal::Presence {
                user: hearth_spec::UserId::parse(&format!("@alice:{origin}")).expect("user"),
                state: hearth_spec::client::PresenceState::Online,
                last_seen_ms: Some(now_ms()),
            }],
        },
    };
    hearth_crypto::sign_envelope(key, &envelope)
}

/// Loopback bytes per presence update: over gossip to a swarm of `hearths`, and as direct
/// frames to 1 and to `hearths - 1` peers. `updates` updates at 50/s each way.
pub async fn presence_transport(hearths: usize, updates: usize) -> anyhow::Result<Report> {
    let idle = {
        let before = loopback_tx_bytes()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        loopback_tx_bytes()? - before
    };
    if idle > 0 {
        eprintln!(
            "warning: {idle} bytes crossed loopback in 2 s of idling: run in a network namespace of its own (unshare -rn) for clean figures"
        );
    }
    let pace = Duration::from_millis(20);
    let names: Vec<ServerName> = (0..hearths)
        .map(|i| ServerName::parse(&format!("p{i}.bench")))
        .collect::<Result<_, _>>()?;
    let keys: Vec<ServerKey> = (0..hearths).map(|_| ServerKey::generate()).collect();

    // Gossip: every hearth in one swarm, through the first.
    let mut swarms = Vec::new();
    let mut first = None;
    let mut sinks = Vec::new();
    for (name, key) in names.iter().zip(&keys) {
        let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_udp_port()?).parse()?;
        let (events, sink) = tokio::sync::mpsc::channel(hearth_federation::p2p::EVENT_QUEUE);
        sinks.push(tokio::spawn(async move {
            let mut sink = sink;
            let mut n = 0u64;
            while sink.recv().await.is_some() {
                n += 1;
            }
            n
        }));
        let swarm = hearth_federation::Swarm::start(
            hearth_federation::P2pConfig {
                listen,
                bootstrap: first
                    .iter()
                    .map(|a| hearth_federation::p2p::quic_multiaddr(*a))
                    .collect(),
                republish: Duration::from_secs(600),
                max_dialled: 32,
            },
            Arc::new(Plain {
                key: ServerKey::from_bytes(&key.to_bytes()[..])?,
                name: name.clone(),
            }),
            events,
        )?;
        first.get_or_insert(listen);
        swarms.push(swarm);
    }
    // Let the mesh form, then measure the swarm idling (heartbeats) and carrying updates.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = pace * updates as u32 + Duration::from_secs(2);
    let before = loopback_tx_bytes()?;
    tokio::time::sleep(window).await;
    let gossip_idle = loopback_tx_bytes()? - before;
    let before = loopback_tx_bytes()?;
    for _ in 0..updates {
        swarms[0].publish(presence_update(&keys[0], &names[0], &names[0]));
        tokio::time::sleep(pace).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gossip_busy = loopback_tx_bytes()? - before;
    drop(swarms);
    let mut delivered = 0;
    for sink in sinks {
        delivered += sink.await.unwrap_or(0);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Direct frames: hearth 0 sends each update to `fanout` peers over the envelope transport,
    // one envelope per update (the worst case: nothing else queued to batch it with).
    let ports: Vec<u16> = (0..hearths)
        .map(|_| free_udp_port())
        .collect::<anyhow::Result<_>>()?;
    let peers: Vec<PeerConfig> = names
        .iter()
        .zip(&keys)
        .zip(&ports)
        .map(|((name, key), port)| PeerConfig {
            name: name.clone(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
            key: key.public_key(),
            previous_keys: vec![],
        })
        .collect();
    let mut transports = Vec::new();
    for ((name, key), port) in names.iter().zip(&keys).zip(&ports) {
        transports.push(Transport::start(
            TransportConfig::new(
                name.clone(),
                std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
            ),
            Arc::new(KeyRing::single(Arc::new(ServerKey::from_bytes(
                &key.to_bytes()[..],
            )?))),
            Arc::new(RwLock::new(Directory::new(peers.clone(), vec![]))),
            Arc::new(Sink),
        )?);
    }
    let mut direct = Vec::new();
    for fanout in [1, hearths - 1] {
        // Connections up first (a handshake is not per update).
        for peer in &names[1..=fanout] {
            transports[0].connection(peer).await?;
        }
        let before = loopback_tx_bytes()?;
        for _ in 0..updates {
            let sends = names[1..=fanout].iter().map(|peer| {
                let frame = presence_update(&keys[0], &names[0], peer);
                let transport = transports[0].clone();
                async move { transport.send(peer, &[frame]).await }
            });
            for result in futures_util::future::join_all(sends).await {
                result?;
            }
            tokio::time::sleep(pace).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        direct.push((loopback_tx_bytes()? - before) as f64 / updates as f64);
    }
    for t in &transports {
        t.close();
    }
    let per_update = |bytes: u64| bytes as f64 / updates as f64;
    Ok(Report {
        name: "presence transport",
        figures: vec![
            ("hearths", hearths as f64, "", None),
            (
                "update envelope",
                presence_update(&keys[0], &names[0], &names[1]).len() as f64,
                "B",
                None,
            ),
            (
                "gossip deliveries per update",
                delivered as f64 / updates as f64,
                "",
                None,
            ),
            (
                "gossip bytes per update (busy - idle)",
                per_update(gossip_busy.saturating_sub(gossip_idle)),
                "B",
                None,
            ),
            (
                "gossip bytes per update (all)",
                per_update(gossip_busy),
                "B",
                None,
            ),
            ("direct bytes per update, 1 peer", direct[0], "B", None),
            ("direct bytes per update, all peers", direct[1], "B", None),
        ],
    })
}
