//! The hearth's side of federation: what a checked envelope from a peer becomes (a request to
//! the committer), how the durable outbound queue is read and signed for sending, and starting
//! the transport with one queue driver per peer. The rules themselves (checks, the sender,
//! relay quotas, unsealing, announcements) are `hearth-federation`'s; the pieces here are glue:
//! [`custody`] (envelopes held for others, beside the store), [`discovery`] (the DHT's answers
//! kept in the store), [`rotation`] (rotating this hearth's key), [`media_fetch`] (blobs of
//! other hearths) and [`peer_signals`] (typing and presence queues for peers).

pub mod custody;
mod directory;
pub mod discovery;
mod hand_off;
mod inbound;
pub mod media_fetch;
mod outbound;
pub mod peer_signals;
pub mod rotation;
pub mod store;
mod wakers;

pub use directory::{DirectoryError, configured_directory, directory};
use hand_off::hand_off;
use inbound::Unsealer;
pub use wakers::Wakers;

use std::sync::{Arc, Mutex, RwLock};

use hearth_federation::announcements::Announcements;
use hearth_federation::{BackoffPolicy, Directory, Freshness, KeyRing, Transport, TransportConfig};
use hearth_spec::api::{ClaimedKeyPackage, KeyDevices};
use hearth_spec::federation::FedBody;
use hearth_spec::{DeviceId, ServerName, UserId};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::chat::committer::{Committer, OutboxWake};
use crate::chat::live::Live;
use crate::chat::media::MediaStore;
use crate::config::{Config, RelayConfig};
use crate::federation::custody::Custody;
use crate::federation::peer_signals::SignalQueues;
use crate::federation::rotation::{AnnouncementHook, Rotated};
use crate::federation::store::FederationStore;
use crate::store::StoreError;
use crate::store::tables::OutItem;

/// Turns peers' envelopes into committer requests and reads the outbound queue.
pub struct FedNode {
    own: ServerName,
    keys: Arc<KeyRing>,
    /// Peers that have not yet taken an announcement of this hearth's new key: the queue entries
    /// carrying it and the old key it retires, oldest first. Envelopes for them are signed with
    /// the oldest such key.
    announcements: Mutex<Announcements>,
    store: Arc<dyn FederationStore>,
    directory: Arc<RwLock<Directory>>,
    live: Arc<Live>,
    max_event_bytes: usize,
    /// Envelopes held for other hearths.
    custody: Arc<Custody>,
    relay: RelayConfig,
    unsealer: Unsealer,
    /// Wakes the queue drivers of destinations whose queues grew outside a group commit.
    wake: OutboxWake,
    /// Taken at shutdown so the committer can stop.
    committer: Mutex<Option<Committer>>,
    /// Attachment blobs, served to peers by id.
    media: MediaStore,
    /// Looks up hearths this one does not know in the DHT (`None` without discovery).
    finder: Option<hearth_federation::Discovery>,
    /// Hearths an admin blocked (the transport keeps them out; relayed envelopes of theirs and
    /// custody for them are refused here).
    blocked: hearth_federation::Blocklist,
}

/// Why federation could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Transport(#[from] hearth_federation::StartError),
    #[error("peer discovery: {0}")]
    Discovery(#[from] hearth_federation::p2p::P2pError),
    #[error("cannot read the outbound queue: {0}")]
    Queue(#[source] StoreError),
    #[error("the QUIC reset key: {0}")]
    ResetKey(#[from] crate::ops::keys::KeyFileError),
}

/// Federation of a running hearth.
pub struct Federation {
    pub transport: Transport,
    node: Arc<FedNode>,
    drivers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    wakers: Arc<Wakers>,
    discovery: Option<hearth_federation::Discovery>,
}

/// What starting federation needs.
pub struct FederationParts {
    pub keys: Arc<KeyRing>,
    pub store: Arc<dyn FederationStore>,
    pub committer: Committer,
    pub directory: Arc<RwLock<Directory>>,
    pub wakers: Arc<Wakers>,
    pub live: Arc<Live>,
    pub signals: SignalQueues,
    /// Where signal queues of peers learnt after start are made.
    pub peer_signals: Arc<crate::federation::peer_signals::PeerSignals>,
    pub media: MediaStore,
    /// Hearths an admin blocked.
    pub blocked: hearth_federation::Blocklist,
}

impl Federation {
    /// Listens for peers and starts draining every peer's outbound queue.
    pub fn start(config: &Config, parts: FederationParts) -> Result<Self, StartError> {
        let f = &config.federation;
        let discovery = if f.discovery.enabled {
            Some(crate::federation::discovery::start(
                config,
                parts.keys.clone(),
                parts.directory.clone(),
                parts.store.clone(),
                parts.wakers.clone(),
            )?)
        } else {
            None
        };
        // One pass over the queues finds both the key announcements still to be taken and the
        // envelopes held for others.
        let queued = parts
            .store
            .outbox_items(&|item| {
                matches!(item, OutItem::KeyRotation { .. } | OutItem::Relayed { .. })
            })
            .map_err(StartError::Queue)?;
        let mut announcements = Announcements::default();
        let mut held = Vec::new();
        for (destination, id, item) in queued {
            match item {
                OutItem::KeyRotation { old_key, .. } => {
                    announcements.queued(destination, id, old_key)
                }
                OutItem::Relayed { origin, sealed, .. } => {
                    held.push((destination, id, origin, sealed));
                }
                _ => {}
            }
        }
        let custody = Custody::new(
            config.server_name.clone(),
            f.relay.clone(),
            parts.store.clone(),
            held,
        );
        let node = Arc::new(FedNode {
            own: config.server_name.clone(),
            keys: parts.keys.clone(),
            announcements: Mutex::new(announcements),
            store: parts.store,
            directory: parts.directory.clone(),
            live: parts.live,
            max_event_bytes: config.limits.max_event_bytes,
            custody: Arc::new(custody),
            relay: f.relay.clone(),
            unsealer: Unsealer {
                own: config.server_name.clone(),
                keys: parts.keys.clone(),
                directory: parts.directory.clone(),
                freshness: Freshness {
                    max_age_ms: f.max_age_ms.saturating_add(f.relay.hold_ms),
                    max_skew_ms: f.max_skew_ms,
                },
            },
            wake: parts.wakers.callback(),
            committer: Mutex::new(Some(parts.committer)),
            media: parts.media,
            finder: discovery.as_ref().map(|d| d.discovery.clone()),
            blocked: parts.blocked.clone(),
        });
        let mut transport_config = TransportConfig::new(config.server_name.clone(), f.listen);
        let freshness = Freshness {
            max_age_ms: f.max_age_ms,
            max_skew_ms: f.max_skew_ms,
        };
        transport_config.freshness = freshness;
        transport_config.envelopes = f.envelopes;
        transport_config.max_streams_per_peer = f.max_streams_per_peer;
        transport_config.keep_alive = std::time::Duration::from_millis(f.keep_alive_ms);
        transport_config.idle_timeout = std::time::Duration::from_millis(f.idle_timeout_ms);
        transport_config.reset_secret =
            crate::ops::keys::load_or_generate_secret(&config.data_dir.join("quic-reset.key"))?;
        transport_config.discovery = discovery.as_ref().map(|d| d.discovery.clone());
        transport_config.blocked = parts.blocked;
        let transport = Transport::start(
            transport_config,
            parts.keys,
            parts.directory.clone(),
            node.clone(),
        )?;
        let policy = BackoffPolicy {
            initial: std::time::Duration::from_millis(f.retry_initial_ms),
            max: std::time::Duration::from_millis(f.retry_max_ms),
        };
        let drivers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let mut signal_queues = parts.signals;
        let mut start_peer = {
            let (transport, node, drivers) = (transport.clone(), node.clone(), drivers.clone());
            let peer_signals = parts.peer_signals.clone();
            move |peer: &ServerName, wake: Arc<Notify>| {
                let queue = signal_queues
                    .remove(peer)
                    .or_else(|| peer_signals.add(peer));
                let mut drivers = drivers.lock().expect("drivers lock");
                drivers.push(tokio::spawn(hearth_federation::drive(
                    transport.clone(),
                    peer.clone(),
                    node.clone(),
                    wake,
                    policy,
                )));
                if let Some(queue) = queue {
                    let signer = node.clone();
                    let destination = peer.clone();
                    drivers.push(tokio::spawn(hearth_federation::drive_signals(
                        transport.clone(),
                        peer.clone(),
                        queue,
                        move |signals| {
                            signer.sign_body(&destination, FedBody::Ephemeral { signals })
                        },
                    )));
                }
            }
        };
        for (peer, wake) in parts.wakers.all() {
            start_peer(&peer, wake);
        }
        *parts.wakers.starter.lock().expect("starter lock") = Some(Box::new(start_peer));
        if f.relay.enabled {
            drivers
                .lock()
                .expect("drivers lock")
                .push(tokio::spawn(hand_off(
                    node.clone(),
                    transport.clone(),
                    parts.wakers.clone(),
                )));
        }
        let discovery = discovery.map(|wiring| {
            let (discovery, tasks) = wiring.run(
                parts.wakers.clone(),
                node.clone(),
                transport.clone(),
                freshness,
            );
            drivers.lock().expect("drivers lock").extend(tasks);
            discovery
        });
        tracing::info!(listen = %transport.local_addr(), peers = parts.wakers.peers().len(), "federation started");
        Ok(Self {
            transport,
            node,
            drivers,
            wakers: parts.wakers,
            discovery,
        })
    }

    /// The libp2p side, if it runs.
    pub fn discovery(&self) -> Option<hearth_federation::Discovery> {
        self.discovery.clone()
    }

    /// Asks other hearths for what this hearth's devices need from them: key packages, blobs.
    pub fn peer_requests(&self) -> PeerRequests {
        PeerRequests {
            node: self.node.clone(),
            transport: self.transport.clone(),
        }
    }

    /// The QUIC transport (for its connection state in metrics).
    pub fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// What this hearth holds for others.
    pub fn custody(&self) -> Arc<Custody> {
        self.node.custody.clone()
    }

    /// What a key rotation on this running hearth calls once its announcements are queued.
    pub fn announcement_hook(&self) -> AnnouncementHook {
        let node = self.node.clone();
        let wake = self.wakers.callback();
        let swarm = self.discovery.as_ref().map(|d| d.swarm().clone());
        Arc::new(move |rotated: &Rotated| {
            node.announcements_queued(rotated);
            if let Some(swarm) = &swarm {
                // Weak: a stopped hearth must let go of its store even while copies are due.
                let (node, rotated) = (Arc::downgrade(&node), rotated.clone());
                crate::federation::discovery::gossip_announcement(swarm.clone(), move || {
                    node.upgrade()?.broadcast_announcement(&rotated)
                });
            }
            let peers: Vec<ServerName> = rotated
                .announcements
                .iter()
                .map(|(p, _)| p.clone())
                .collect();
            wake(&peers);
        })
    }

    /// Stops sending and receiving and lets go of the committer.
    pub async fn stop(self) {
        self.wakers.clear_hooks();
        let drivers = std::mem::take(&mut *self.drivers.lock().expect("drivers lock"));
        for driver in &drivers {
            driver.abort();
        }
        for driver in drivers {
            let _ = driver.await;
        }
        self.transport.close();
        self.node.committer.lock().expect("committer slot").take();
    }
}

/// Requests to other hearths answered on a stream of their own: MLS key packages of their
/// users, parts of the blobs they store.
#[derive(Clone)]
pub struct PeerRequests {
    node: Arc<FedNode>,
    transport: Transport,
}

impl PeerRequests {
    /// One package per (listed) device of `user`, from `user`'s hearth.
    pub async fn claim(
        &self,
        user: &UserId,
        devices: Option<Vec<DeviceId>>,
    ) -> Result<Vec<ClaimedKeyPackage>, hearth_federation::RequestError> {
        let destination = user.server_name();
        let frame = self.node.sign_body(
            &destination,
            FedBody::ClaimKeyPackages {
                user: user.clone(),
                devices,
            },
        );
        self.transport.claim(&destination, frame).await
    }

    /// The end-to-end devices of `users`, all of `server`, from `server`.
    pub async fn query_devices(
        &self,
        server: &ServerName,
        users: Vec<UserId>,
    ) -> Result<Vec<KeyDevices>, hearth_federation::RequestError> {
        let frame = self.node.sign_body(server, FedBody::QueryDevices { users });
        self.transport.query_devices(server, frame).await
    }

    /// How long `server` has gone without answering this hearth (none while it answers).
    pub fn failing_for(&self, server: &ServerName) -> Option<std::time::Duration> {
        self.transport.failing_for(server)
    }

    /// Up to `len` bytes from `offset` of the blob `media_id` stored on `server`, and the
    /// blob's length.
    pub async fn fetch_media(
        &self,
        server: &ServerName,
        media_id: [u8; 32],
        offset: u64,
        len: u32,
    ) -> Result<(u64, Vec<u8>), hearth_federation::RequestError> {
        let frame = self.node.sign_body(
            server,
            FedBody::FetchMedia {
                media_id,
                offset,
                len,
            },
        );
        self.transport.fetch_media(server, frame).await
    }
}
