//! The libp2p swarm every hearth runs beside its envelope transport: identify, a Kademlia DHT of
//! signed hearth records, and gossipsub for key announcements. Its identity is the hearth's
//! ed25519 key (the one its TLS certificate carries), so one key is one PeerId.
//!
//! The swarm runs in one task that owns it; [`Swarm`] sends it commands. It knows nothing of
//! directories: it stores only records that open (signed by the key they name, under a DHT key
//! that matches), hands found records and gossip up, and the caller decides what to trust.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hearth_spec::PublicKey;
use hearth_spec::discovery::{
    IDENTIFY_PROTOCOL, KAD_PROTOCOL, KEYS_TOPIC, MAX_SIGNED_RECORD, key_key, name_key,
};
pub use libp2p::Multiaddr;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, StreamProtocol, gossipsub, identify, kad};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// How the swarm runs.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// The UDP address the swarm listens on (QUIC).
    pub listen: SocketAddr,
    /// Peers to join the network through: multiaddrs, with or without `/p2p/<PeerId>`.
    pub bootstrap: Vec<Multiaddr>,
    /// How often this hearth's records are put into the DHT again.
    pub republish: Duration,
    /// Most peers the swarm dials on its own (from the DHT routing table) to gossip with.
    pub max_dialled: usize,
}

/// What the swarm hands up.
#[derive(Debug)]
pub enum P2pEvent {
    /// A message on the key announcement topic.
    Gossip { data: Vec<u8> },
}

/// The swarm's state, for status output.
#[derive(Debug, Clone, Default)]
pub struct P2pStatus {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub connected: usize,
    pub routing_table: usize,
    pub stored_records: usize,
}

/// Why the swarm did not start.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("the hearth key is not a valid ed25519 key for libp2p")]
    Identity,
    #[error("cannot build the swarm: {0}")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, #[source] libp2p::TransportError<std::io::Error>),
}

/// This hearth's signed records and libp2p identity, read fresh whenever the swarm needs them
/// (they change when the key rotates).
pub trait Identity: Send + Sync + 'static {
    /// The 32 secret bytes of the key the swarm runs as.
    fn secret(&self) -> zeroize::Zeroizing<[u8; 32]>;
    /// This hearth's signed record (see `hearth_spec::discovery`), and the key it names.
    fn record(&self) -> (Vec<u8>, PublicKey, hearth_spec::ServerName);
}

/// How often the routing table is refreshed (a Kademlia bootstrap) while the swarm has peers.
const REFRESH: Duration = Duration::from_secs(300);

/// Commands waiting for the swarm task, at most; beyond, a command is dropped (a lookup then
/// finds nothing, a gossip copy is not sent).
const COMMAND_QUEUE: usize = 1024;

/// Values one lookup may have waiting.
const FOUND_QUEUE: usize = 64;

/// Events waiting for the hearth, at most (gossip beyond is dropped, as gossip may be).
pub const EVENT_QUEUE: usize = 1024;

enum Command {
    Get {
        key: Vec<u8>,
        found: mpsc::Sender<Vec<u8>>,
    },
    Publish {
        data: Vec<u8>,
    },
    Closest {
        key: PublicKey,
        found: mpsc::Sender<Vec<PublicKey>>,
    },
}

/// A handle on the running swarm.
#[derive(Clone)]
pub struct Swarm {
    commands: mpsc::Sender<Command>,
    snapshot: Arc<std::sync::Mutex<P2pStatus>>,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Swarm")
    }
}

impl Swarm {
    /// Builds the swarm, listens, dials the bootstrap peers and runs until the handle and all
    /// its clones are dropped. Events go to `events`.
    pub fn start(
        config: P2pConfig,
        identity: Arc<dyn Identity>,
        events: mpsc::Sender<P2pEvent>,
    ) -> Result<Self, P2pError> {
        let secret = identity.secret();
        let mut swarm = build(&secret)?;
        listen_and_join(&mut swarm, &config)?;
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let snapshot = Arc::default();
        tokio::spawn(run(
            swarm,
            config,
            identity,
            secret,
            receiver,
            events,
            Arc::clone(&snapshot),
        ));
        Ok(Self { commands, snapshot })
    }

    /// The swarm's state as of its last tick (a quarter of a second ago at most).
    pub fn snapshot(&self) -> P2pStatus {
        self.snapshot.lock().expect("snapshot lock").clone()
    }

    /// Looks `key` up in the DHT; every value found (the local copy first) is sent on the
    /// returned channel, which closes when the lookup ends.
    pub fn get(&self, key: Vec<u8>) -> mpsc::Receiver<Vec<u8>> {
        let (found, receiver) = mpsc::channel(FOUND_QUEUE);
        self.command(Command::Get { key, found });
        receiver
    }

    /// The hearth keys of the peers the DHT finds closest to the hearth key `key` (not counting
    /// `key` itself), sent once on the returned channel when the query ends.
    pub fn closest(&self, key: PublicKey) -> mpsc::Receiver<Vec<PublicKey>> {
        let (found, receiver) = mpsc::channel(1);
        self.command(Command::Closest { key, found });
        receiver
    }

    /// Publishes `data` on the key announcement topic.
    pub fn publish(&self, data: Vec<u8>) {
        self.command(Command::Publish { data });
    }

    fn command(&self, command: Command) {
        if self.commands.try_send(command).is_err() {
            tracing::warn!("the libp2p swarm is not keeping up; dropped a command");
        }
    }
}

/// The PeerId of a hearth key.
pub fn peer_id(key: &PublicKey) -> Option<PeerId> {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(libp2p::identity::PublicKey::from(public).to_peer_id())
}

/// The hearth key a PeerId is made of (an ed25519 key inlined in the PeerId).
pub fn hearth_key(peer: &PeerId) -> Option<PublicKey> {
    let multihash = peer.as_ref();
    // Identity multihash (code 0): the digest is the protobuf-encoded public key.
    if multihash.code() != 0 {
        return None;
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(PublicKey(public.try_into_ed25519().ok()?.to_bytes()))
}

/// Where a hearth key sits in the DHT's key space: Kademlia places a peer at SHA-256 of its
/// PeerId, and XOR of two positions is their distance.
pub fn dht_position(key: &PublicKey) -> Option<[u8; 32]> {
    Some(Sha256::digest(peer_id(key)?.to_bytes()).into())
}

/// The multiaddr of a QUIC socket address.
pub fn quic_multiaddr(address: SocketAddr) -> Multiaddr {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
        std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(address.port()))
        .with(Protocol::QuicV1)
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
}

type Inner = libp2p::Swarm<Behaviour>;

fn build(secret: &[u8; 32]) -> Result<Inner, P2pError> {
    let mut bytes = *secret;
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut bytes)
        .map_err(|_| P2pError::Identity)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let identify = identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.into(),
                key.public(),
            ));
            let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            // Records are checked before they are stored (see `store_checked`).
            kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
            kad_config.set_query_timeout(Duration::from_secs(10));
            // libp2p's own periodic bootstrap warns every time on a hearth that is alone; the
            // swarm task refreshes the routing table itself when it has peers (`REFRESH`).
            kad_config.set_periodic_bootstrap_interval(None);
            let store = MemoryStore::with_config(
                id,
                MemoryStoreConfig {
                    max_value_bytes: MAX_SIGNED_RECORD,
                    ..MemoryStoreConfig::default()
                },
            );
            let mut kad = kad::Behaviour::with_config(id, store, kad_config);
            // Hearths are servers: answer DHT queries from the start, even on loopback where
            // no external address is ever confirmed.
            kad.set_mode(Some(kad::Mode::Server));
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .max_transmit_size(64 * 1024)
                // The same announcement published by several hearths is one message.
                .message_id_fn(|message: &gossipsub::Message| {
                    gossipsub::MessageId::from(Sha256::digest(&message.data).to_vec())
                })
                .build()?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            Ok(Behaviour {
                identify,
                kad,
                gossipsub,
            })
        })
        .map_err(|e| P2pError::Build(Box::new(e)))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&gossipsub::IdentTopic::new(KEYS_TOPIC))
        .map_err(|e| P2pError::Build(Box::new(e)))?;
    Ok(swarm)
}

/// Listens on the configured address and dials the bootstrap peers.
fn listen_and_join(swarm: &mut Inner, config: &P2pConfig) -> Result<(), P2pError> {
    swarm
        .listen_on(quic_multiaddr(config.listen))
        .map_err(|e| P2pError::Listen(config.listen, e))?;
    for address in &config.bootstrap {
        let peer = address.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        if let Some(peer) = peer {
            let mut bare = address.clone();
            bare.pop();
            swarm.behaviour_mut().kad.add_address(&peer, bare);
        }
        if let Err(e) = swarm.dial(address.clone()) {
            tracing::warn!(%address, error = %e, "cannot dial a bootstrap peer");
        }
    }
    Ok(())
}

/// A record that opens and belongs under `key` (its name entry or its key entry).
fn checked(key: &[u8], value: &[u8]) -> Option<hearth_spec::discovery::HearthRecord> {
    let record = hearth_crypto::open_record(value).ok()?;
    (key == name_key(&record.name).as_slice() || key == key_key(&record.key).as_slice())
        .then_some(record)
}

/// Whether `new` may replace `held` under the same DHT key: it is newer, and signed by the same
/// key or by a key the held record's key handed the name over to. So the first hearth to claim
/// a name keeps it in the DHT, and only its own key (or its successor) can update it.
pub fn replaces(
    held: &hearth_spec::discovery::HearthRecord,
    new: &hearth_spec::discovery::HearthRecord,
) -> bool {
    if new.issued_ms <= held.issued_ms || new.name != held.name {
        return false;
    }
    new.key == held.key
        || new.previous.as_ref().is_some_and(|proof| {
            proof.old_key == held.key && hearth_crypto::verify_key_proof(&new.name, &new.key, proof)
        })
}

/// Stores a record a peer put, if it opens, belongs under its key, and may replace what is
/// held there.
fn store_checked(swarm: &mut Inner, record: kad::Record) {
    let Some(new) = checked(record.key.as_ref(), &record.value) else {
        tracing::debug!("refused a DHT record that does not open");
        return;
    };
    let store = swarm.behaviour_mut().kad.store_mut();
    if let Some(held) = store.get(&record.key)
        && let Some(held) = checked(held.key.as_ref(), &held.value)
        && !replaces(&held, &new)
    {
        tracing::debug!(hearth = %new.name, "kept the DHT record held over a newcomer");
        return;
    }
    if let Err(e) = store.put(record) {
        tracing::debug!(error = %e, "DHT record store full");
    }
}

/// Ticks (a quarter of a second each) a rebuilt swarm keeps trying to listen.
const RELISTEN_TRIES: u32 = 40;

async fn run(
    mut swarm: Inner,
    config: P2pConfig,
    identity: Arc<dyn Identity>,
    mut secret: zeroize::Zeroizing<[u8; 32]>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<P2pEvent>,
    snapshot: Arc<std::sync::Mutex<P2pStatus>>,
) {
    let topic = gossipsub::IdentTopic::new(KEYS_TOPIC);
    let mut state = State {
        lookups: HashMap::new(),
        closest: HashMap::new(),
        dialled: HashSet::new(),
        // Put the records as soon as a peer is there to hold them, then every `republish`.
        publish_due: true,
        last_bootstrap: None,
    };
    let mut listen: Vec<Multiaddr> = Vec::new();
    // Ticks spent trying to listen again after the swarm was rebuilt for a rotated key.
    let mut relisten: Option<u32> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_publish = tokio::time::Instant::now();
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Get { key, found } => {
                        let id = swarm.behaviour_mut().kad.get_record(kad::RecordKey::new(&key));
                        state.lookups.insert(id, found);
                    }
                    Command::Closest { key, found } => match peer_id(&key) {
                        Some(target) => {
                            let id = swarm.behaviour_mut().kad.get_closest_peers(target);
                            state.closest.insert(id, (key, found));
                        }
                        None => drop(found),
                    },
                    Command::Publish { data } => {
                        if let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic.clone(), data) {
                            tracing::debug!(error = %e, "gossip publish");
                        }
                    }
                }
            }
            _ = tick.tick() => {
                *snapshot.lock().expect("snapshot lock") = status(&mut swarm, &listen);
                let now_secret = identity.secret();
                if *now_secret != *secret {
                    // The key rotated: the swarm takes the new identity (a new PeerId). The old
                    // swarm goes first, so that its socket frees the port the new one listens on.
                    match build(&now_secret) {
                        Ok(rebuilt) => {
                            tracing::info!(peer_id = %rebuilt.local_peer_id(), "libp2p identity follows the rotated key");
                            drop(std::mem::replace(&mut swarm, rebuilt));
                            secret = now_secret;
                            state.lookups.clear();
                            state.dialled.clear();
                            state.publish_due = true;
                            listen.clear();
                            relisten = Some(0);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot build a swarm for the rotated key"),
                    }
                }
                // The old socket closes as its driver task ends: try again on the next ticks.
                if let Some(tries) = relisten {
                    match listen_and_join(&mut swarm, &config) {
                        Ok(()) => relisten = None,
                        Err(e) if tries >= RELISTEN_TRIES => {
                            tracing::error!(error = %e, "the swarm cannot listen after the key rotation; restart the hearth");
                            relisten = None;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "listening again after the key rotation");
                            relisten = Some(tries + 1);
                        }
                    }
                }
                if last_refresh.elapsed() >= REFRESH && swarm.connected_peers().next().is_some() {
                    last_refresh = tokio::time::Instant::now();
                    let _ = swarm.behaviour_mut().kad.bootstrap();
                }
                if last_publish.elapsed() >= config.republish {
                    state.publish_due = true;
                }
                if state.publish_due && swarm.connected_peers().next().is_some() {
                    state.publish_due = false;
                    last_publish = tokio::time::Instant::now();
                    let (signed, key, name) = identity.record();
                    for dht_key in [name_key(&name), key_key(&key)] {
                        let record = kad::Record::new(dht_key, signed.clone());
                        if let Err(e) = swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
                            tracing::debug!(error = %e, "cannot store own record");
                        }
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, peer_id = %swarm.local_peer_id(), "libp2p listening");
                    listen.push(address);
                }
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } if endpoint.is_dialer() => {
                    // A bootstrap peer dialled without its PeerId: now it is known.
                    let mut address = endpoint.get_remote_address().clone();
                    if matches!(address.iter().last(), Some(Protocol::P2p(_))) {
                        address.pop();
                    }
                    swarm.behaviour_mut().kad.add_address(&peer_id, address);
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    state.dialled.remove(&peer_id);
                }
                SwarmEvent::Behaviour(event) => state.handle(&mut swarm, event, &config, &events),
                _ => {}
            },
        }
    }
}

fn status(swarm: &mut Inner, listen: &[Multiaddr]) -> P2pStatus {
    let peer_id = *swarm.local_peer_id();
    let connected = swarm.connected_peers().count();
    let kad = &mut swarm.behaviour_mut().kad;
    P2pStatus {
        peer_id: peer_id.to_string(),
        listen: listen
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(peer_id)).to_string())
            .collect(),
        connected,
        routing_table: kad.kbuckets().map(|b| b.num_entries()).sum(),
        stored_records: kad.store_mut().records().count(),
    }
}

/// A closest-peers query: the hearth key it is about, and where the keys found go.
type ClosestQuery = (PublicKey, mpsc::Sender<Vec<PublicKey>>);

/// What the swarm task remembers between events.
struct State {
    /// Running lookups and where their values go.
    lookups: HashMap<kad::QueryId, mpsc::Sender<Vec<u8>>>,
    /// Running closest-peer queries: the key they are about and where the answer goes.
    closest: HashMap<kad::QueryId, ClosestQuery>,
    /// Peers dialled from the routing table (to gossip with).
    dialled: HashSet<PeerId>,
    /// This hearth's records should be put (again) at the next tick.
    publish_due: bool,
    last_bootstrap: Option<tokio::time::Instant>,
}

impl State {
    fn handle(
        &mut self,
        swarm: &mut Inner,
        event: BehaviourEvent,
        config: &P2pConfig,
        events: &mpsc::Sender<P2pEvent>,
    ) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != IDENTIFY_PROTOCOL {
                    return;
                }
                for address in info.listen_addrs {
                    swarm.behaviour_mut().kad.add_address(&peer_id, address);
                }
                // Learn the neighbourhood through the new peer (at most every few seconds).
                if self
                    .last_bootstrap
                    .is_none_or(|at| at.elapsed() > Duration::from_secs(5))
                {
                    self.last_bootstrap = Some(tokio::time::Instant::now());
                    let _ = swarm.behaviour_mut().kad.bootstrap();
                }
                // A new neighbour may be one of the closest to this hearth's records.
                self.publish_due = true;
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            }) if self.dialled.len() < config.max_dialled
                && !swarm.is_connected(&peer)
                && !self.dialled.contains(&peer) =>
            {
                self.dialled.insert(peer);
                let _ = swarm.dial(peer);
            }
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        record: Some(record),
                        ..
                    },
            }) => store_checked(swarm, record),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => {
                if let kad::QueryResult::GetClosestPeers(result) = &result
                    && let Some((key, sender)) = self.closest.remove(&id)
                {
                    let peers = match result {
                        Ok(ok) => &ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    let keys = peers
                        .iter()
                        .filter_map(|p| hearth_key(&p.peer_id))
                        .filter(|k| *k != key)
                        .collect();
                    let _ = sender.try_send(keys);
                }
                if let kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) =
                    result
                    && let Some(sender) = self.lookups.get(&id)
                {
                    let _ = sender.try_send(found.record.value);
                }
                if step.last {
                    self.lookups.remove(&id);
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                let full = events
                    .try_send(P2pEvent::Gossip { data: message.data })
                    .is_err();
                if full {
                    tracing::debug!("gossip arrives faster than it is handled; dropped one");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crypto::ServerKey;
    use hearth_spec::ServerName;
    use hearth_spec::discovery::{HearthRecord, RECORD_VERSION};

    fn record(key: &ServerKey, issued_ms: u64) -> HearthRecord {
        HearthRecord {
            version: RECORD_VERSION,
            name: ServerName::parse("h.test").unwrap(),
            key: key.public_key(),
            address: "127.0.0.1:1".parse().unwrap(),
            issued_ms,
            previous: None,
        }
    }

    #[test]
    fn a_peer_id_gives_back_its_hearth_key() {
        let key = ServerKey::from_bytes(&[7; 32]).unwrap().public_key();
        assert_eq!(hearth_key(&peer_id(&key).unwrap()), Some(key));
    }

    #[test]
    fn a_held_claim_is_replaced_only_by_its_key_or_a_successor() {
        let (old, new, other) = (
            ServerKey::from_bytes(&[1; 32]).unwrap(),
            ServerKey::from_bytes(&[2; 32]).unwrap(),
            ServerKey::from_bytes(&[3; 32]).unwrap(),
        );
        let held = record(&old, 10);
        assert!(replaces(&held, &record(&old, 11)), "newer, same key");
        assert!(!replaces(&held, &record(&old, 10)), "not newer");
        assert!(!replaces(&held, &record(&other, 11)), "another key");
        let name = held.name.clone();
        let mut rotated = record(&new, 11);
        rotated.previous = Some(hearth_crypto::sign_key_proof(
            &old,
            &name,
            &new.public_key(),
            50,
        ));
        assert!(replaces(&held, &rotated), "the held key handed over");
        let mut stolen = record(&other, 11);
        stolen.previous = Some(hearth_crypto::sign_key_proof(
            &old,
            &name,
            &new.public_key(),
            50,
        ));
        assert!(!replaces(&held, &stolen), "a proof for another key");
        let mut self_made = record(&new, 11);
        self_made.previous = Some(hearth_crypto::sign_key_proof(
            &new,
            &name,
            &new.public_key(),
            50,
        ));
        assert!(
            !replaces(&held, &self_made),
            "a proof not from the held key"
        );
        let mut renamed = record(&old, 11);
        renamed.name = ServerName::parse("x.test").unwrap();
        assert!(!replaces(&held, &renamed), "another name");
    }

    #[test]
    fn only_records_that_open_under_their_own_entries_are_stored() {
        let key = ServerKey::from_bytes(&[1; 32]).unwrap();
        let r = record(&key, 10);
        let signed = hearth_crypto::sign_record(&key, &r);
        assert!(checked(&name_key(&r.name), &signed).is_some());
        assert!(checked(&key_key(&r.key), &signed).is_some());
        let elsewhere = ServerName::parse("x.test").unwrap();
        assert!(checked(&name_key(&elsewhere), &signed).is_none());
        assert!(checked(&key_key(&PublicKey([9; 32])), &signed).is_none());
        let mut bad = signed.clone();
        bad[0] ^= 1;
        assert!(checked(&name_key(&r.name), &bad).is_none());
        assert!(checked(&name_key(&r.name), &[0; 3000]).is_none());
    }
}
