//! The DHT under attack, with real libp2p swarms on loopback in one process: a hearth's claim to
//! its name survives a squatter (a valid record of the same name under another key), a forger
//! (a record naming the honest key but signed by another) and junk; a resolver that has never
//! heard of the hearth still learns the honest key and address, and a squatter calling with its
//! own key is not taken for the hearth.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hearth_crypto::ServerKey;
use hearth_federation::discovery::{Discovery, DiscoveryPolicy, LearnHook};
use hearth_federation::p2p::{Identity, P2pConfig, Swarm, quic_multiaddr};
use hearth_federation::{Directory, ResolveError};
use hearth_spec::discovery::{HearthRecord, RECORD_VERSION};
use hearth_spec::federation::SignedEnvelope;
use hearth_spec::{PublicKey, ServerName};

/// A swarm identity that publishes whatever bytes it is given as its record.
struct Fixed {
    secret: [u8; 32],
    record: Vec<u8>,
    key: PublicKey,
    name: ServerName,
}

impl Identity for Fixed {
    fn secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret)
    }
    fn record(&self) -> (Vec<u8>, PublicKey, ServerName) {
        (self.record.clone(), self.key, self.name.clone())
    }
}

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

/// Where `swarm` listens, once it does (it was started on port 0: a port picked here and bound
/// later could be taken in between).
async fn listening_at(swarm: &Swarm) -> SocketAddr {
    let started = Instant::now();
    loop {
        // "/ip4/127.0.0.1/udp/<port>/quic-v1"
        let bound = swarm.snapshot().listen.iter().find_map(|a| {
            let mut parts = a.split('/').skip_while(|p| *p != "udp");
            let port: u16 = parts.nth(1)?.parse().ok()?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        });
        if let Some(at) = bound {
            return at;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the swarm never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every value a DHT lookup of `key` from `swarm` finds.
async fn lookup(swarm: &Swarm, key: Vec<u8>) -> Vec<Vec<u8>> {
    let mut found = swarm.get(key);
    let mut values = Vec::new();
    while let Some(value) = found.recv().await {
        values.push(value);
    }
    values
}

/// Waits until a lookup of h.test from `swarm` finds `value`.
async fn until_found(swarm: &Swarm, value: &[u8], what: &str) {
    let started = Instant::now();
    let key = hearth_spec::discovery::name_key(&name("h.test"));
    while !lookup(swarm, key.clone()).await.iter().any(|v| v == value) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} never found in the DHT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn record(signer: &ServerKey, claimed: &str, key: PublicKey, address: &str) -> HearthRecord {
    let _ = signer;
    HearthRecord {
        version: RECORD_VERSION,
        name: name(claimed),
        key,
        address: address.parse().unwrap(),
        issued_ms: now_ms(),
        previous: None,
    }
}

/// Starts a swarm listening on a fresh port that publishes `published` as `claimed` / `key`.
fn swarm(
    secret: [u8; 32],
    published: Vec<u8>,
    key: PublicKey,
    claimed: &str,
    bootstrap: Option<SocketAddr>,
) -> Swarm {
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let (events, _rx) = tokio::sync::mpsc::channel(16);
    let swarm = Swarm::start(
        P2pConfig {
            listen,
            bootstrap: bootstrap.into_iter().map(quic_multiaddr).collect(),
            republish: Duration::from_secs(600),
            max_dialled: 32,
        },
        Arc::new(Fixed {
            secret,
            record: published,
            key,
            name: name(claimed),
        }),
        events,
    )
    .unwrap();
    std::mem::forget(_rx);
    swarm
}

/// An honest swarm for `claimed`, publishing its own signed record.
fn honest(
    seed: u8,
    claimed: &str,
    address: &str,
    bootstrap: Option<SocketAddr>,
) -> (Swarm, PublicKey) {
    let key = ServerKey::from_bytes(&[seed; 32]).unwrap();
    let signed =
        hearth_crypto::sign_record(&key, &record(&key, claimed, key.public_key(), address));
    let swarm = swarm([seed; 32], signed, key.public_key(), claimed, bootstrap);
    (swarm, key.public_key())
}

/// A fresh resolver (its own swarm, an empty directory) joined through `bootstrap`.
fn resolver(seed: u8, bootstrap: SocketAddr) -> (Discovery, Arc<RwLock<Directory>>, Swarm) {
    let (swarm, _) = honest(
        seed,
        &format!("v{seed}.test"),
        "127.0.0.1:1",
        Some(bootstrap),
    );
    let directory = Arc::new(RwLock::new(Directory::default()));
    let learned: LearnHook = Arc::new(|_, _, _| {});
    let discovery = Discovery::new(
        swarm.clone(),
        directory.clone(),
        name(&format!("v{seed}.test")),
        DiscoveryPolicy {
            timeout: Duration::from_secs(5),
            ..DiscoveryPolicy::default()
        },
        learned,
    );
    (discovery, directory, swarm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatters_forgers_and_junk_do_not_take_a_hearths_name() {
    let (a, _) = honest(1, "a.test", "127.0.0.1:7001", None);
    let a_at = listening_at(&a).await;
    let (_h, honest_key) = honest(2, "h.test", "127.0.0.1:7002", Some(a_at));

    // The honest record gets into the DHT.
    let (first, first_directory, first_swarm) = resolver(10, a_at);
    let started = Instant::now();
    while first.resolve_name(&name("h.test")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "h.test never found"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        first_directory.read().unwrap().current_key(&name("h.test")),
        Some(honest_key)
    );

    // A forger: a record naming the honest key, signed by another.
    let forger = ServerKey::from_bytes(&[4; 32]).unwrap();
    let encoded = record(&forger, "h.test", honest_key, "127.0.0.1:6667").encode();
    let forged = SignedEnvelope::join(
        &forger.sign(&hearth_spec::discovery::record_signing_message(&encoded)),
        &encoded,
    );
    let forger_swarm = swarm([4; 32], forged, honest_key, "h.test", Some(a_at));
    // Junk, over the size limit, under the same name.
    let junk_swarm = swarm(
        [5; 32],
        vec![0xAB; 2000],
        PublicKey([5; 32]),
        "h.test",
        Some(a_at),
    );
    // The DHT settles: every node holds the honest claim (h.test puts again whenever it meets a
    // new neighbour). What is guaranteed is that a claim already held survives a later squatter;
    // a node that hears a squatter and the owner at the same moment keeps whichever came first
    // (see spec/discovery.md, "Trust"). So: the forger and the junk node are in the network and
    // reach the honest claim before the squatter comes.
    let honest_record = lookup(
        &first_swarm,
        hearth_spec::discovery::name_key(&name("h.test")),
    )
    .await
    .into_iter()
    .next()
    .expect("the honest record, found above");
    until_found(
        &forger_swarm,
        &honest_record,
        "from the forger, the honest record",
    )
    .await;
    until_found(
        &junk_swarm,
        &honest_record,
        "from the junk node, the honest record",
    )
    .await;

    // A squatter: a valid record for h.test under its own key, pointing elsewhere.
    let squatter = ServerKey::from_bytes(&[3; 32]).unwrap();
    let squat = hearth_crypto::sign_record(
        &squatter,
        &record(&squatter, "h.test", squatter.public_key(), "127.0.0.1:6666"),
    );
    let _squatter_swarm = swarm(
        [3; 32],
        squat.clone(),
        squatter.public_key(),
        "h.test",
        Some(a_at),
    );
    // The squatter's claim is out there: a lookup from elsewhere meets it.
    until_found(&first_swarm, &squat, "the squatter's record").await;

    // Resolvers that never heard of h.test learn the honest key and address.
    for seed in [11, 12, 13] {
        let (fresh, directory, _swarm) = resolver(seed, a_at);
        let started = Instant::now();
        loop {
            match fresh.resolve_name(&name("h.test")).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(started.elapsed() < Duration::from_secs(30), "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        {
            let directory = directory.read().unwrap();
            assert_eq!(directory.current_key(&name("h.test")), Some(honest_key));
            assert_eq!(
                directory.address(&name("h.test")),
                Some("127.0.0.1:7002".parse().unwrap())
            );
        }
        // The squatter calling with its own key is not taken for h.test.
        assert!(matches!(
            fresh.resolve_key(&squatter.public_key()).await,
            Err(ResolveError::NotFound(_))
        ));
        // The honest key resolves to h.test.
        assert_eq!(fresh.resolve_key(&honest_key).await, Ok(name("h.test")));
    }

    // A resolver that already knows h.test never moves to the squatter.
    first_directory
        .write()
        .unwrap()
        .learn(
            &name("h.test"),
            squatter.public_key(),
            "127.0.0.1:6666".parse().unwrap(),
            u64::MAX,
            now_ms(),
        )
        .unwrap_err();
}
