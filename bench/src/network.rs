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

use crate::server::{Hearth, fresh_dir, server_key};
use crate::{Report, Target};

fn free_udp() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_tcp() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

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
                udp: free_udp()?,
                p2p: free_udp()?,
                metrics: free_tcp()?,
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
            signer: self.key.public_bytes(),
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

fn decode_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = base64_url(text).context("bad key")?;
    <[u8; 32]>::try_from(bytes).map_err(|_| anyhow::anyhow!("key is not 32 bytes"))
}

/// base64url without padding, decoded (the bench has no base64 dependency).
fn base64_url(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn admin(binary: &str, me: &Member, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("admin")
        .args(args)
        .env("HEARTH_DATA_DIR", &me.dir)
        .env("HEARTH_SERVER_NAME", &me.name)
        .env("HEARTH_LOG", "warn")
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
            (
                "last refusal",
                refused[refused.len() - 1],
                "ms",
                Some(Target::AtMost(1000.0)),
            ),
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
