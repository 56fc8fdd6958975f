//! Wiring of the libp2p swarm into a hearth: hearths learnt from the DHT are kept in the store
//! and given queue drivers, destinations nobody configured are looked up, and key announcements
//! are gossiped both ways.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hearth_federation::discovery::{HearthIdentity, LearnHook};
use hearth_federation::p2p::{Multiaddr, P2pConfig, P2pEvent};
use hearth_federation::{
    Directory, Discovery, DiscoveryPolicy, Freshness, KeyRing, Learned, Swarm, Transport,
};
use hearth_spec::ServerName;
use hearth_spec::federation::FedBody;

use crate::config::Config;
use crate::federation::store::FederationStore;
use crate::federation::{FedNode, Wakers};

/// How soon the same unknown destination is looked up again.
const LOOKUP_AGAIN: Duration = Duration::from_secs(5);

fn policy(config: &Config) -> DiscoveryPolicy {
    let d = &config.federation.discovery;
    DiscoveryPolicy {
        allow: d.allow.clone(),
        block: d.block.clone(),
        timeout: Duration::from_millis(d.lookup_timeout_ms),
    }
}

/// Learns the hearths kept from earlier runs into `directory` (their records are checked again
/// and the policy applied again: a hearth blocked since is not learnt). Nothing, with
/// discovery off.
pub fn learn_kept(directory: &mut Directory, store: &dyn FederationStore, config: &Config) {
    if !config.federation.discovery.enabled {
        return;
    }
    let policy = policy(config);
    let kept = match store.discovered() {
        Ok(kept) => kept,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the hearths learnt earlier");
            return;
        }
    };
    let now = crate::clock::now_ms();
    for signed in kept {
        let Ok(record) = hearth_crypto::open_record(&signed) else {
            continue;
        };
        if record.name == config.server_name || !policy.admits(&record.name) {
            continue;
        }
        if let Err(e) = hearth_federation::discovery::learn_record(directory, &record, now) {
            tracing::warn!(hearth = %record.name, error = %e, "a kept record no longer applies");
        }
    }
}

/// The running swarm and what it is wired to.
pub struct DiscoveryParts {
    pub discovery: Discovery,
    /// Where the record's address goes once the transport is bound; `None` when an address to
    /// advertise is configured (that one is what peers must dial).
    bound: Option<Arc<OnceLock<SocketAddr>>>,
    events: tokio::sync::mpsc::Receiver<P2pEvent>,
}

/// Starts the swarm. Learnt hearths are kept in `store` and handed to `wakers`.
pub fn start(
    config: &Config,
    keys: Arc<KeyRing>,
    directory: Arc<std::sync::RwLock<Directory>>,
    store: Arc<dyn FederationStore>,
    wakers: Arc<Wakers>,
) -> Result<DiscoveryParts, hearth_federation::p2p::P2pError> {
    let d = &config.federation.discovery;
    let f = &config.federation;
    let bootstrap: Vec<Multiaddr> = d.bootstrap.iter().filter_map(|a| a.parse().ok()).collect();
    let bound = Arc::new(OnceLock::new());
    let identity = HearthIdentity {
        name: config.server_name.clone(),
        keys,
        address: d.advertise.unwrap_or(f.listen),
        bound: bound.clone(),
    };
    let (events_tx, events) = tokio::sync::mpsc::channel(hearth_federation::p2p::EVENT_QUEUE);
    let swarm = Swarm::start(
        P2pConfig {
            listen: d.listen_addr(f.listen),
            bootstrap,
            republish: Duration::from_millis(d.republish_ms),
            max_dialled: 32,
        },
        Arc::new(identity),
        events_tx,
    )?;
    // Weak: the wakers hold the lookup hook, which holds this; and a stopped hearth must let
    // go of its store.
    let (store, wakers) = (Arc::downgrade(&store), Arc::downgrade(&wakers));
    let learned: LearnHook = Arc::new(move |name: &ServerName, signed: &[u8], how: Learned| {
        if how != Learned::Unchanged
            && let Some(store) = store.upgrade()
            && let Err(e) = store.save_discovered(name, signed)
        {
            tracing::error!(error = %e, "cannot keep a learnt hearth");
        }
        if let Some(wakers) = wakers.upgrade() {
            wakers.add(name);
        }
    });
    let discovery = Discovery::new(
        swarm,
        directory,
        config.server_name.clone(),
        policy(config),
        learned,
    );
    Ok(DiscoveryParts {
        discovery,
        bound: d.advertise.is_none().then_some(bound),
        events,
    })
}

impl DiscoveryParts {
    /// Runs the wiring that needs the transport and node: lookups of unknown destinations,
    /// gossip in, and a hello to every known peer (so relays holding envelopes for this hearth
    /// hand them over now). Returns the tasks.
    pub fn run(
        mut self,
        wakers: Arc<Wakers>,
        node: Arc<FedNode>,
        transport: Transport,
        freshness: Freshness,
    ) -> (Discovery, Vec<tokio::task::JoinHandle<()>>) {
        if let Some(bound) = &self.bound {
            let _ = bound.set(transport.local_addr());
        }
        let discovery = self.discovery.clone();
        let lookups: Arc<Mutex<HashMap<ServerName, Instant>>> = Arc::default();
        let finder = discovery.clone();
        // The committer calls this from its own thread, outside the runtime.
        let runtime = tokio::runtime::Handle::current();
        // Weak: this hook lives in the wakers.
        let finder_wakers = Arc::downgrade(&wakers);
        wakers.on_unknown(Box::new(move |name: &ServerName| {
            {
                let mut lookups = lookups.lock().expect("lookups lock");
                if lookups
                    .get(name)
                    .is_some_and(|at| at.elapsed() < LOOKUP_AGAIN)
                {
                    return;
                }
                lookups.insert(name.clone(), Instant::now());
            }
            let (finder, wakers, name) = (finder.clone(), finder_wakers.clone(), name.clone());
            runtime.spawn(async move {
                match finder.resolve_name(&name).await {
                    Ok(()) => {
                        if let Some(wakers) = wakers.upgrade() {
                            wakers.add(&name);
                        }
                    }
                    Err(e) => {
                        tracing::info!(hearth = %name, error = %e, "cannot find a destination")
                    }
                }
            });
        }));
        let gossip_node = node.clone();
        let tally = self.discovery.gossip_tally();
        let gossip = tokio::spawn(async move {
            while let Some(P2pEvent::Gossip { data }) = self.events.recv().await {
                let applied = gossip_node.gossiped(&data, freshness);
                tally.record(applied.is_some());
                if let Some(origin) = applied {
                    tracing::info!(%origin, "applied a key announcement from gossip");
                }
            }
        });
        let hello = tokio::spawn(async move {
            for peer in wakers.peers() {
                let frame = node.sign_body(&peer, FedBody::Ephemeral { signals: vec![] });
                let transport = transport.clone();
                tokio::spawn(async move {
                    if let Err(e) = transport.send(&peer, &[frame]).await {
                        tracing::debug!(%peer, error = %e, "hello not answered");
                    }
                });
            }
        });
        (discovery, vec![gossip, hello])
    }
}

/// Publishes a key announcement on gossip now and twice more (peers may join the mesh late;
/// each copy is signed afresh, so gossip does not take it for a duplicate).
pub fn gossip_announcement(swarm: Swarm, sign: impl Fn() -> Option<Vec<u8>> + Send + 'static) {
    tokio::spawn(async move {
        for delay in [0, 2, 10] {
            tokio::time::sleep(Duration::from_secs(delay)).await;
            if let Some(data) = sign() {
                swarm.publish(data);
            }
        }
    });
}
