//! The hearth's side of federation: what a checked envelope from a peer becomes (a request to
//! the committer), how the durable outbound queue is read and signed for sending, and starting
//! the transport with one queue driver per peer. The rules themselves (checks, the sender,
//! relay quotas, unsealing, announcements) are `hearth-federation`'s; the pieces here are glue:
//! [`custody`] (envelopes held for others, beside the store), [`discovery`] (the DHT's answers
//! kept in the store), [`rotation`] (rotating this hearth's key), [`media_fetch`] (blobs of
//! other hearths) and [`peer_signals`] (typing and presence queues for peers).

pub mod custody;
pub mod discovery;
pub mod media_fetch;
pub mod peer_signals;
pub mod rotation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use hearth_crypto::{ServerKey, sign_envelope};
use hearth_federation::announcements::Announcements;
use hearth_federation::outbox::Queued;
use hearth_federation::{
    BackoffPolicy, Directory, Freshness, KeyRing, PeerConfig, Transport, TransportConfig,
};
use hearth_spec::api::{ClaimedKeyPackage, KeyDevices};
use hearth_spec::federation::{
    FED_VERSION, FedBody, FedEnvelope, MAX_SIGNALS_PER_ENVELOPE, Outcome, RejectCode, RetryCode,
    SealedEnvelope, Signal,
};
use hearth_spec::{Content, DeviceId, Envelope, ServerName, UserId};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::chat::committer::{CommitError, Committer, OutboxWake};
use crate::chat::live::Live;
use crate::chat::media::MediaStore;
use crate::chat::sequencer::{Reply, Request, SequenceError};
use crate::clock::now_ms;
use crate::config::{Config, ConfigError, RelayConfig, parse_public_key};
use crate::federation::custody::Custody;
use crate::federation::peer_signals::SignalQueues;
use crate::federation::rotation::{AnnouncementHook, Rotated};
use crate::store::tables::{OutItem, PeerRotation};
use crate::store::{Store, StoreError};
use hearth_federation::relay::choose_relays;

/// Builds the peer directory from the configuration, then applies the key rotations peers
/// announced since (recorded in `store`).
pub fn directory(config: &Config, store: &Store) -> Result<Directory, DirectoryError> {
    let mut directory = configured_directory(config)?;
    for (peer, rotation) in store.peer_rotations()? {
        // A rotation the configuration has overtaken (say, the new key is configured as current
        // now) changes nothing that matters; one that no longer applies is skipped.
        let _ = directory.rotate(
            &peer,
            &rotation.signer,
            rotation.new_key,
            rotation.old_valid_until_ms,
        );
    }
    Ok(directory)
}

/// Why the peer directory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read recorded key rotations: {0}")]
    Store(#[from] StoreError),
}

/// The peer directory as the configuration alone describes it.
pub fn configured_directory(config: &Config) -> Result<Directory, ConfigError> {
    let f = &config.federation;
    let peers = f
        .peers
        .iter()
        .map(|p| {
            Ok(PeerConfig {
                name: p.name.clone(),
                address: p.address,
                key: parse_public_key(&p.key)?,
                previous_keys: p
                    .previous_keys
                    .iter()
                    .map(|old| Ok((parse_public_key(&old.key)?, old.valid_until_ms)))
                    .collect::<Result<_, ConfigError>>()?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let revoked = f
        .revoked_keys
        .iter()
        .map(|k| parse_public_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Directory::new(peers, revoked))
}

/// One wake-up signal per peer's outbound queue. Peers learnt after start get theirs (and their
/// queue drivers) through [`Wakers::add`]; a destination with none is handed to `unknown`, which
/// looks it up.
#[derive(Default)]
pub struct Wakers {
    wakers: RwLock<HashMap<ServerName, Arc<Notify>>>,
    /// Starts the drivers of a peer added after start. Cleared at stop (it holds the node,
    /// whose wake callback holds these wakers).
    starter: Mutex<Option<PeerStarter>>,
    /// Called for a destination that has no driver (yet). Cleared at stop.
    unknown: Mutex<Option<UnknownHook>>,
}

/// Looks up a destination that has no driver.
type UnknownHook = Box<dyn Fn(&ServerName) + Send + Sync>;

/// Starts the queue drivers of a peer learnt after start.
type PeerStarter = Box<dyn FnMut(&ServerName, Arc<Notify>) + Send>;

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakers")
            .field("peers", &self.peers().len())
            .finish()
    }
}

impl Wakers {
    pub fn new(peers: &[ServerName]) -> Self {
        Self {
            wakers: RwLock::new(
                peers
                    .iter()
                    .map(|p| (p.clone(), Arc::new(Notify::new())))
                    .collect(),
            ),
            ..Self::default()
        }
    }

    /// Every peer with a queue driver.
    pub fn peers(&self) -> Vec<ServerName> {
        let mut peers: Vec<ServerName> = self
            .wakers
            .read()
            .expect("wakers lock")
            .keys()
            .cloned()
            .collect();
        peers.sort();
        peers
    }

    fn all(&self) -> Vec<(ServerName, Arc<Notify>)> {
        self.wakers
            .read()
            .expect("wakers lock")
            .iter()
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect()
    }

    /// What to do with a destination that has no driver (look it up).
    pub fn on_unknown(&self, unknown: UnknownHook) {
        *self.unknown.lock().expect("unknown hook lock") = Some(unknown);
    }

    /// Drops the hooks (and with them the running federation they hold).
    fn clear_hooks(&self) {
        self.starter.lock().expect("starter lock").take();
        self.unknown.lock().expect("unknown hook lock").take();
    }

    /// Gives a peer learnt since start its queue drivers; false if it has them.
    pub fn add(&self, peer: &ServerName) -> bool {
        let notify = {
            let mut wakers = self.wakers.write().expect("wakers lock");
            if wakers.contains_key(peer) {
                return false;
            }
            let notify = Arc::new(Notify::new());
            wakers.insert(peer.clone(), notify.clone());
            notify
        };
        if let Some(start) = self.starter.lock().expect("starter lock").as_mut() {
            start(peer, notify.clone());
        }
        notify.notify_one();
        true
    }

    /// The committer's callback: wake the drivers of these destinations.
    pub fn callback(self: &Arc<Self>) -> OutboxWake {
        let wakers = self.clone();
        Arc::new(move |destinations: &[ServerName]| {
            for d in destinations {
                let notify = wakers.wakers.read().expect("wakers lock").get(d).cloned();
                match notify {
                    Some(notify) => notify.notify_one(),
                    None => {
                        if let Some(unknown) =
                            wakers.unknown.lock().expect("unknown hook lock").as_ref()
                        {
                            unknown(d);
                        }
                    }
                }
            }
        })
    }
}

/// Opens what relays hand over: CPU work (X25519, ChaCha20-Poly1305, ed25519), done on a
/// blocking thread, so it owns what it needs.
#[derive(Clone)]
struct Unsealer {
    own: ServerName,
    keys: Arc<KeyRing>,
    directory: Arc<RwLock<Directory>>,
    /// As old as a relay may hold an envelope.
    freshness: Freshness,
}

impl Unsealer {
    fn unseal(&self, origin: &ServerName, sealed: &SealedEnvelope) -> Result<FedEnvelope, Outcome> {
        let directory = self.directory.read().expect("directory lock");
        hearth_federation::relay::unseal(
            &self.own,
            &self.keys,
            &directory,
            self.freshness,
            origin,
            sealed,
            now_ms(),
        )
    }
}

/// An incoming envelope, relayed ones opened.
enum Arrived {
    Direct(FedEnvelope),
    Relayed(ServerName, FedEnvelope),
    Refused(Outcome),
}

/// Turns peers' envelopes into committer requests and reads the outbound queue.
pub struct FedNode {
    own: ServerName,
    keys: Arc<KeyRing>,
    /// Peers that have not yet taken an announcement of this hearth's new key: the queue entries
    /// carrying it and the old key it retires, oldest first. Envelopes for them are signed with
    /// the oldest such key.
    announcements: Mutex<Announcements>,
    store: Arc<Store>,
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
}

/// Destinations of one custody hand-over that are looked up in the DHT; the rest, if unknown,
/// are refused (an origin cannot make a relay run many lookups with one batch).
const CUSTODY_LOOKUPS: usize = 4;

impl FedNode {
    fn committer(&self) -> Option<Committer> {
        self.committer.lock().expect("committer slot").clone()
    }

    /// Builds the committer requests for one envelope, or its outcome when it needs none
    /// (refused before that, or applied here: a key rotation, typing, presence).
    fn requests(&self, peer: &ServerName, envelope: FedEnvelope) -> Result<Vec<Request>, Outcome> {
        match envelope.body {
            FedBody::Ephemeral { signals } => self.signals(peer, signals),
            // Opened before (see `receive`); one that reaches here was not.
            FedBody::Relayed { .. } => Err(Outcome::Rejected(RejectCode::BadSeal)),
            body => self
                .request(peer, envelope.signer, body)
                .map(|request| vec![request]),
        }
    }

    /// Seals `destination`'s pending entries with ids above `after` for `relays` and queues
    /// them there, durably. Returns the last id handed over, if any.
    fn hand_to_relays(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        relays: &[ServerName],
    ) -> Result<Option<u64>, StoreError> {
        let Some(key) = self
            .directory
            .read()
            .expect("directory lock")
            .current_key(destination)
        else {
            return Ok(after);
        };
        let mut last = after;
        loop {
            let pending =
                self.store
                    .outbox_pending(destination, last, hearth_federation::outbox::BATCH)?;
            let Some((last_id, _)) = pending.last() else {
                return Ok(last);
            };
            last = Some(*last_id);
            let mut custody = Vec::with_capacity(pending.len() * relays.len());
            for (_, item) in pending {
                // What this hearth holds for others is not handed on again.
                if matches!(item, OutItem::Relayed { .. } | OutItem::Custody { .. }) {
                    continue;
                }
                let signed = self.sign(destination, item)?;
                let Ok(sealed) = hearth_crypto::seal(&key, destination, &signed) else {
                    return Ok(last);
                };
                for relay in relays {
                    custody.push((
                        relay.clone(),
                        OutItem::Custody {
                            destination: destination.clone(),
                            sealed: sealed.clone(),
                        },
                    ));
                }
            }
            self.store.queue_outbox(&custody)?;
            (self.wake)(relays);
        }
    }

    /// Checks every signal, then applies typing and presence and returns the receipts as
    /// committer requests. One bad signal refuses the envelope, and then none is applied.
    fn signals(&self, peer: &ServerName, signals: Vec<Signal>) -> Result<Vec<Request>, Outcome> {
        if signals.len() > MAX_SIGNALS_PER_ENVELOPE {
            return Err(Outcome::Rejected(RejectCode::TooLarge));
        }
        for signal in &signals {
            self.check_signal(peer, signal).map_err(Outcome::Rejected)?;
        }
        let mut receipts = Vec::new();
        for signal in signals {
            match signal {
                Signal::Typing { room, user, typing } => self.live.typing(&user, &room, typing),
                Signal::Presence {
                    user,
                    state,
                    last_seen_ms,
                } => self
                    .live
                    .peer_presence(&user, state, last_seen_ms)
                    .map_err(|_| Outcome::Retry(RetryCode::Unavailable))?,
                Signal::Receipt {
                    room,
                    user,
                    kind,
                    seq,
                } => receipts.push(Request::PeerReceipt {
                    user,
                    room,
                    kind,
                    seq,
                }),
            }
        }
        Ok(receipts)
    }

    /// A signal must be about a user `peer` serves, in a room (or sharing a room with a user)
    /// this hearth knows.
    fn check_signal(&self, peer: &ServerName, signal: &Signal) -> Result<(), RejectCode> {
        let user = signal.user();
        if user.server_name() != *peer {
            return Err(RejectCode::ForeignSender);
        }
        let unavailable = |_| RejectCode::UnknownRoom;
        match signal {
            Signal::Typing { room, .. } | Signal::Receipt { room, .. } => {
                if self.store.is_member(room, user).map_err(unavailable)? {
                    Ok(())
                } else if self.store.room(room).map_err(unavailable)?.is_none() {
                    Err(RejectCode::UnknownRoom)
                } else {
                    Err(RejectCode::NotMember)
                }
            }
            Signal::Presence { .. } => {
                if self.live.has_local_contact(user).map_err(unavailable)? {
                    Ok(())
                } else {
                    Err(RejectCode::NotMember)
                }
            }
        }
    }

    /// The committer request for one envelope that is not `Ephemeral`.
    fn request(
        &self,
        peer: &ServerName,
        signer: [u8; 32],
        body: FedBody,
    ) -> Result<Request, Outcome> {
        let reject = |code| Err(Outcome::Rejected(code));
        match body {
            FedBody::Submit { event } => {
                let Ok(inner) = Envelope::decode(&event) else {
                    return reject(RejectCode::BadEvent);
                };
                if inner.sender.server_name() != *peer {
                    return reject(RejectCode::ForeignSender);
                }
                if inner.room_id.home() != self.own {
                    return reject(RejectCode::NotHome);
                }
                if let Content::Message { payload } = &inner.content
                    && payload.len() > self.max_event_bytes
                {
                    return reject(RejectCode::TooLarge);
                }
                Ok(Request::Submitted {
                    envelope: inner,
                    bytes: event,
                })
            }
            FedBody::Sequenced { seq, event } => {
                let Ok(inner) = Envelope::decode(&event) else {
                    return reject(RejectCode::BadEvent);
                };
                if inner.room_id.home() != *peer {
                    return reject(RejectCode::NotHome);
                }
                if seq == 0 {
                    return reject(RejectCode::BadEvent);
                }
                Ok(Request::Replicate {
                    seq,
                    envelope: inner,
                    bytes: event,
                })
            }
            FedBody::KeyRotation {
                new_key,
                old_valid_until_ms,
            } => {
                let rotated = self.directory.write().expect("directory lock").rotate(
                    peer,
                    &signer,
                    new_key,
                    old_valid_until_ms,
                );
                match rotated {
                    Ok(()) => {
                        tracing::info!(%peer, "peer rotated its key");
                        let record = PeerRotation {
                            signer,
                            new_key,
                            old_valid_until_ms,
                        };
                        match self.store.save_peer_rotation(peer, &record) {
                            Ok(()) => Err(Outcome::Stored),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot record a peer's key rotation");
                                Err(Outcome::Retry(RetryCode::Unavailable))
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "refused a key rotation");
                        reject(RejectCode::Forbidden)
                    }
                }
            }
            FedBody::Ephemeral { .. }
            | FedBody::Custody { .. }
            | FedBody::Relayed { .. }
            | FedBody::ClaimKeyPackages { .. }
            | FedBody::FetchMedia { .. }
            | FedBody::QueryDevices { .. } => reject(RejectCode::BadEvent),
        }
    }

    /// Signs one queued entry for `destination`.
    fn sign(&self, destination: &ServerName, item: OutItem) -> Result<Vec<u8>, StoreError> {
        let body = match item {
            OutItem::Submit { event } => FedBody::Submit { event },
            OutItem::Sequenced { room, seq } => {
                let event = self.store.event_at(&room, seq)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("queued event {room}#{seq} is missing"))
                })?;
                FedBody::Sequenced { seq, event }
            }
            OutItem::Receipt(signal) => FedBody::Ephemeral {
                signals: vec![signal],
            },
            OutItem::KeyRotation {
                old_key,
                new_key,
                old_valid_until_ms,
            } => {
                // Signed by the key it retires, which the peer knows (even a revoked one: the
                // announcement is what tells the peer to stop accepting it).
                let key = self
                    .keys
                    .holding(&old_key)
                    .unwrap_or_else(|| self.keys.current());
                let body = FedBody::KeyRotation {
                    new_key,
                    old_valid_until_ms,
                };
                return Ok(self.sign_with(&key, destination, body));
            }
            OutItem::Custody {
                destination: held_for,
                sealed,
            } => FedBody::Custody {
                destination: held_for,
                sealed,
            },
            OutItem::Relayed { origin, sealed, .. } => FedBody::Relayed { origin, sealed },
        };
        Ok(self.sign_body(destination, body))
    }

    /// The key for envelopes to `destination`: the current one, unless the peer has yet to take
    /// the announcement of it.
    fn signing_key(&self, destination: &ServerName) -> Arc<ServerKey> {
        self.announcements
            .lock()
            .expect("announcements lock")
            .signing_key(destination, &self.keys, now_ms())
    }

    /// A key announcement broadcast on gossip: `KeyRotation` addressed to its own origin,
    /// signed by the key it retires. Applied like a direct one if its origin is a known peer
    /// and it is fresh; anything else is dropped (gossip has no one to answer).
    pub fn gossiped(&self, data: &[u8], freshness: Freshness) -> Option<ServerName> {
        let signed = hearth_spec::federation::SignedEnvelope::split(data).ok()?;
        let origin = FedEnvelope::decode(signed.encoded).ok()?.origin;
        if origin == self.own {
            return None;
        }
        // The usual checks, as if this hearth were the origin it is addressed to. Copies are
        // idempotent, so there is no replay memory across them.
        let envelope = {
            let directory = self.directory.read().expect("directory lock");
            let mut replay = hearth_federation::check::ReplayCache::new(1);
            hearth_federation::check::check_batch(
                &directory,
                &mut replay,
                freshness,
                &origin,
                &origin,
                &[data],
                now_ms(),
            )
            .pop()?
            .ok()?
        };
        if !matches!(envelope.body, FedBody::KeyRotation { .. }) {
            return None;
        }
        let outcome = self.request(&origin, envelope.signer, envelope.body);
        matches!(outcome, Err(Outcome::Stored)).then_some(origin)
    }

    /// This hearth's announcement of `rotated` for gossip (addressed to itself: to everyone).
    pub fn broadcast_announcement(&self, rotated: &Rotated) -> Option<Vec<u8>> {
        let key = self.keys.holding(&rotated.old_key)?;
        Some(self.sign_with(
            &key,
            &self.own,
            FedBody::KeyRotation {
                new_key: rotated.new_key,
                old_valid_until_ms: rotated.old_valid_until_ms,
            },
        ))
    }

    /// Builds and signs an envelope for `destination`, now.
    pub(crate) fn sign_body(&self, destination: &ServerName, body: FedBody) -> Vec<u8> {
        let key = self.signing_key(destination);
        self.sign_with(&key, destination, body)
    }

    fn sign_with(&self, key: &ServerKey, destination: &ServerName, body: FedBody) -> Vec<u8> {
        let envelope = FedEnvelope {
            version: FED_VERSION,
            origin: self.own.clone(),
            destination: destination.clone(),
            signer: key.public_bytes(),
            origin_ts: now_ms(),
            nonce: rand::random(),
            body,
        };
        sign_envelope(key, &envelope)
    }

    /// Remembers queued announcements of a new key. A revocation (no grace) is not waited for:
    /// the revoked key signs nothing but the announcements.
    fn announcements_queued(&self, rotated: &Rotated) {
        if rotated.old_valid_until_ms <= now_ms() {
            return;
        }
        let mut announcements = self.announcements.lock().expect("announcements lock");
        for (peer, id) in &rotated.announcements {
            announcements.queued(peer.clone(), *id, rotated.old_key);
        }
    }
}

fn outcome(result: Result<Reply, CommitError>) -> Outcome {
    match result {
        Ok(Reply::Duplicate) => Outcome::Duplicate,
        Ok(_) => Outcome::Stored,
        Err(CommitError::Refused(refused)) => match refused {
            SequenceError::RoomNotFound(_) => Outcome::Rejected(RejectCode::UnknownRoom),
            SequenceError::NotMember(_) => Outcome::Rejected(RejectCode::NotMember),
            SequenceError::NotHome(_) => Outcome::Rejected(RejectCode::NotHome),
            SequenceError::BadEvent(_) => Outcome::Rejected(RejectCode::BadEvent),
            SequenceError::StaleEpoch { .. } => Outcome::Rejected(RejectCode::StaleEpoch),
            SequenceError::OutOfOrder { .. } => Outcome::Retry(RetryCode::OutOfOrder),
            // Every rule of the room's (listed, so that a new one is placed here on purpose).
            SequenceError::DirectRoomInvite
            | SequenceError::InvalidDirect
            | SequenceError::AlreadyMember(_)
            | SequenceError::RoomFull(_)
            | SequenceError::NameTooLong
            | SequenceError::RoomExists(_)
            | SequenceError::SeqOutOfRange { .. }
            | SequenceError::CursorOutOfRange { .. } => Outcome::Rejected(RejectCode::Forbidden),
        },
        Err(CommitError::Storage(_) | CommitError::Closed | CommitError::Unavailable(_)) => {
            Outcome::Retry(RetryCode::Unavailable)
        }
    }
}

impl FedNode {
    /// Opens the relayed envelopes of a batch on a blocking thread; the others pass as they are.
    async fn unseal_relayed(&self, envelopes: Vec<FedEnvelope>) -> Vec<Arrived> {
        if !envelopes
            .iter()
            .any(|e| matches!(e.body, FedBody::Relayed { .. }))
        {
            return envelopes.into_iter().map(Arrived::Direct).collect();
        }
        let unsealer = self.unsealer.clone();
        let count = envelopes.len();
        tokio::task::spawn_blocking(move || {
            envelopes
                .into_iter()
                .map(|envelope| match envelope.body {
                    FedBody::Relayed { origin, sealed } => {
                        match unsealer.unseal(&origin, &sealed) {
                            Ok(inner) => Arrived::Relayed(origin, inner),
                            Err(outcome) => Arrived::Refused(outcome),
                        }
                    }
                    _ => Arrived::Direct(envelope),
                })
                .collect()
        })
        .await
        .unwrap_or_else(|_| {
            (0..count)
                .map(|_| Arrived::Refused(Outcome::Retry(RetryCode::Unavailable)))
                .collect()
        })
    }

    /// Holds sealed envelopes from `origin` for their destinations, in one durable write.
    async fn take_custody(
        &self,
        origin: &ServerName,
        items: Vec<(ServerName, SealedEnvelope)>,
    ) -> Vec<Outcome> {
        let count = items.len();
        // A destination this relay has never heard of may still be a hearth: look it up (its
        // signed record, checked as for any discovered hearth) before refusing to hold for it.
        if let Some(finder) = &self.finder {
            let mut unknown: Vec<ServerName> = {
                let directory = self.directory.read().expect("directory lock");
                items
                    .iter()
                    .map(|(d, _)| d)
                    .filter(|d| !directory.knows(d))
                    .cloned()
                    .collect()
            };
            unknown.sort();
            unknown.dedup();
            for destination in unknown.into_iter().take(CUSTODY_LOOKUPS) {
                if let Err(e) = finder.resolve_name(&destination).await {
                    tracing::info!(%origin, %destination, error = %e, "cannot hold for a hearth the DHT does not know");
                }
            }
        }
        let custody = self.custody.clone();
        let directory = self.directory.clone();
        let origin = origin.clone();
        let taken = tokio::task::spawn_blocking(move || {
            custody.take(&origin, items, |d| {
                directory.read().expect("directory lock").knows(d)
            })
        })
        .await;
        match taken {
            Ok(Ok((outcomes, grew))) => {
                (self.wake)(&grew);
                outcomes
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot store envelopes held for a peer");
                vec![Outcome::Retry(RetryCode::Unavailable); count]
            }
            Err(_) => vec![Outcome::Retry(RetryCode::Unavailable); count],
        }
    }
}

/// One envelope's outcome from those of its requests: the first refusal, else `Duplicate` if
/// every one was, else `Stored` (also when it made none).
fn combined(outcomes: impl Iterator<Item = Outcome>) -> Outcome {
    let mut all_duplicate = None;
    for outcome in outcomes {
        match outcome {
            Outcome::Duplicate => {
                all_duplicate.get_or_insert(true);
            }
            Outcome::Stored => all_duplicate = Some(false),
            refusal => return refusal,
        }
    }
    if all_duplicate == Some(true) {
        Outcome::Duplicate
    } else {
        Outcome::Stored
    }
}

impl hearth_federation::Inbound for FedNode {
    async fn fetch_media(
        &self,
        peer: ServerName,
        media_id: [u8; 32],
        offset: u64,
        len: u32,
    ) -> Result<(u64, Vec<u8>), Outcome> {
        let id = crate::chat::media::hex(&media_id);
        match self.media.read_part(&id, offset, len as usize).await {
            Ok(Some(part)) => Ok(part),
            Ok(None) => {
                tracing::debug!(%peer, media = %id, "a peer asked for a blob not held here");
                Err(Outcome::Rejected(RejectCode::UnknownMedia))
            }
            Err(e) => {
                tracing::error!(error = %e, media = %id, "cannot read a blob for a peer");
                Err(Outcome::Retry(RetryCode::Unavailable))
            }
        }
    }

    async fn query_devices(
        &self,
        peer: ServerName,
        users: Vec<UserId>,
    ) -> Result<Vec<KeyDevices>, Outcome> {
        if users.iter().any(|u| u.server_name() != self.own) {
            return Err(Outcome::Rejected(RejectCode::WrongDestination));
        }
        let store = self.store.clone();
        let listed = tokio::task::spawn_blocking(move || {
            users
                .into_iter()
                .map(|user| {
                    let devices = store.e2ee_devices(&user)?;
                    Ok(KeyDevices {
                        user_id: user,
                        devices,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await;
        match listed {
            Ok(Ok(listed)) => {
                tracing::debug!(%peer, users = listed.len(), "listed devices for a peer");
                Ok(listed)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot list devices for a peer");
                Err(Outcome::Retry(RetryCode::Unavailable))
            }
            Err(_) => Err(Outcome::Retry(RetryCode::Unavailable)),
        }
    }

    async fn claim(
        &self,
        peer: ServerName,
        user: UserId,
        devices: Option<Vec<DeviceId>>,
    ) -> Result<Vec<ClaimedKeyPackage>, Outcome> {
        if user.server_name() != self.own {
            return Err(Outcome::Rejected(RejectCode::WrongDestination));
        }
        let store = self.store.clone();
        let claimed = tokio::task::spawn_blocking(move || {
            if store.user(&user)?.is_none_or(|u| u.deactivated) {
                return Ok(None);
            }
            store
                .claim_key_packages(&user, devices.as_deref())
                .map(Some)
        })
        .await;
        match claimed {
            // No such user here (or deactivated).
            Ok(Ok(None)) => Err(Outcome::Rejected(RejectCode::WrongDestination)),
            Ok(Ok(Some(claimed))) => {
                tracing::debug!(%peer, count = claimed.len(), "handed out key packages");
                Ok(claimed)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot hand out key packages");
                Err(Outcome::Retry(RetryCode::Unavailable))
            }
            Err(_) => Err(Outcome::Retry(RetryCode::Unavailable)),
        }
    }

    async fn receive(&self, peer: ServerName, envelopes: Vec<FedEnvelope>) -> Vec<Outcome> {
        let Some(committer) = self.committer() else {
            return vec![Outcome::Retry(RetryCode::Unavailable); envelopes.len()];
        };
        // All requests are queued before any is awaited, in order, so they share group commits
        // and a room's events reach the sequencer in the order they came.
        let mut outcomes = Vec::with_capacity(envelopes.len());
        // (outcome index, how many requests the envelope made)
        let mut places = Vec::new();
        let mut submits = Vec::new();
        let mut custody = Vec::new();
        let mut custody_places = Vec::new();
        for arrived in self.unseal_relayed(envelopes).await {
            let (from, envelope) = match arrived {
                Arrived::Direct(envelope) => (peer.clone(), envelope),
                Arrived::Relayed(origin, envelope) => {
                    tracing::debug!(relay = %peer, %origin, "took an envelope a relay held");
                    (origin, envelope)
                }
                Arrived::Refused(outcome) => {
                    outcomes.push(outcome);
                    continue;
                }
            };
            if let FedBody::Custody {
                destination,
                sealed,
            } = envelope.body
            {
                custody_places.push(outcomes.len());
                outcomes.push(Outcome::Retry(RetryCode::Unavailable));
                custody.push((destination, sealed));
                continue;
            }
            match self.requests(&from, envelope) {
                Ok(requests) => {
                    places.push((outcomes.len(), requests.len()));
                    outcomes.push(Outcome::Stored);
                    submits.extend(requests);
                }
                Err(answer) => outcomes.push(answer),
            }
        }
        let mut results = committer
            .submit_in_order(submits)
            .await
            .into_iter()
            .map(outcome);
        for (place, count) in places {
            outcomes[place] = combined(results.by_ref().take(count));
        }
        if !custody.is_empty() {
            for (place, outcome) in custody_places
                .into_iter()
                .zip(self.take_custody(&peer, custody).await)
            {
                outcomes[place] = outcome;
            }
        }
        outcomes
    }
}

impl hearth_federation::OutboxStore for FedNode {
    type Error = StoreError;

    fn pending(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let items = self.store.outbox_pending(destination, after, limit)?;
        let mut expired = Vec::new();
        let signed = items
            .into_iter()
            .filter(|(id, item)| match item {
                OutItem::Relayed { held_since_ms, .. } if self.custody.expired(*held_since_ms) => {
                    expired.push(*id);
                    false
                }
                _ => true,
            })
            .map(|(id, item)| {
                Ok(Queued {
                    id,
                    frame: self.sign(destination, item)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        if !expired.is_empty() {
            tracing::warn!(%destination, count = expired.len(), "held envelopes expired undelivered; dropping them");
            self.remove(destination, &expired)?;
        }
        Ok(signed)
    }

    fn remove(&self, destination: &ServerName, ids: &[u64]) -> Result<(), StoreError> {
        self.store.outbox_remove(destination, ids)?;
        self.custody.released(destination, ids);
        // The peer has taken these announcements: sign for it with the newer key from now on.
        self.announcements
            .lock()
            .expect("announcements lock")
            .delivered(destination, ids);
        Ok(())
    }
}

/// What the DHT said is near a destination (see `hand_off`).
#[derive(Default)]
struct Nearby {
    asked: Option<tokio::time::Instant>,
    found: Vec<ServerName>,
    asking: bool,
}

/// How long the DHT's answer to "who is closest to this destination" is used before it is asked
/// again.
const NEARBY_AGAIN: std::time::Duration = std::time::Duration::from_secs(300);
/// … and how soon when it found nobody.
const NEARBY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands the pending envelopes of destinations unreachable for `federation.relay.after_ms` to
/// relays, and keeps handing what is queued for them afterwards, until they are reachable again.
async fn hand_off(node: Arc<FedNode>, transport: Transport, wakers: Arc<Wakers>) {
    let after = std::time::Duration::from_millis(node.relay.after_ms);
    // Per destination: the last queue entry handed over (in memory: after a restart entries are
    // handed again, and the destination de-duplicates).
    let mut handed: HashMap<ServerName, Option<u64>> = HashMap::new();
    // Per destination: hearths the DHT placed closest to it, when that was asked, and whether
    // a question is out (asked off this loop: a query near a dead hearth takes seconds).
    let nearby: Arc<Mutex<HashMap<ServerName, Nearby>>> = Arc::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        let peers = wakers.peers();
        for destination in &peers {
            if transport.failing_for(destination).is_none_or(|d| d < after) {
                // Reachable again: its queue drains directly (and its ids may start over).
                handed.remove(destination);
                continue;
            }
            // Relays come from the known peers and from the hearths the DHT places closest to
            // the destination, which this one may never have talked to.
            let mut candidates = peers.clone();
            if let Some(finder) = &node.finder {
                let key = node
                    .directory
                    .read()
                    .expect("directory lock")
                    .current_key(destination);
                let mut known = nearby.lock().expect("nearby lock");
                let entry = known.entry(destination.clone()).or_default();
                // An empty answer (a thin or busy DHT) is asked again soon.
                let stale = entry.asked.is_none_or(|at| {
                    at.elapsed()
                        >= if entry.found.is_empty() {
                            NEARBY_RETRY
                        } else {
                            NEARBY_AGAIN
                        }
                });
                if stale
                    && !entry.asking
                    && let Some(key) = key
                {
                    entry.asking = true;
                    let (finder, nearby, destination) =
                        (finder.clone(), nearby.clone(), destination.clone());
                    let n = 2 * node.relay.relays;
                    tokio::spawn(async move {
                        let found = finder.closest_hearths(&key, n).await;
                        tracing::debug!(%destination, ?found, "hearths the DHT places closest");
                        nearby.lock().expect("nearby lock").insert(
                            destination,
                            Nearby {
                                asked: Some(tokio::time::Instant::now()),
                                found,
                                asking: false,
                            },
                        );
                    });
                }
                candidates.extend(entry.found.iter().filter(|f| !peers.contains(f)).cloned());
            }
            let relays = {
                let directory = node.directory.read().expect("directory lock");
                choose_relays(&node.own, destination, &candidates, &node.relay, |p| {
                    directory
                        .current_key(p)
                        .and_then(|k| hearth_federation::p2p::dht_position(&k))
                })
            };
            if relays.is_empty() {
                continue;
            }
            let from = handed.get(destination).copied().flatten();
            let (worker, dest) = (node.clone(), destination.clone());
            let result =
                tokio::task::spawn_blocking(move || worker.hand_to_relays(&dest, from, &relays))
                    .await;
            match result {
                Ok(Ok(last)) => {
                    if last != from {
                        tracing::info!(%destination, "handed pending envelopes to relays");
                    }
                    handed.insert(destination.clone(), last);
                }
                Ok(Err(e)) => {
                    tracing::error!(%destination, error = %e, "cannot hand envelopes to relays")
                }
                Err(_) => return,
            }
        }
    }
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
    pub store: Arc<Store>,
    pub committer: Committer,
    pub directory: Arc<RwLock<Directory>>,
    pub wakers: Arc<Wakers>,
    pub live: Arc<Live>,
    pub signals: SignalQueues,
    /// Where signal queues of peers learnt after start are made.
    pub peer_signals: Arc<crate::federation::peer_signals::PeerSignals>,
    pub media: MediaStore,
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
            .outbox_items(|item| {
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
        });
        let mut transport_config = TransportConfig::new(config.server_name.clone(), f.listen);
        let freshness = Freshness {
            max_age_ms: f.max_age_ms,
            max_skew_ms: f.max_skew_ms,
        };
        transport_config.freshness = freshness;
        transport_config.envelopes_per_second = f.envelopes_per_second;
        transport_config.envelope_burst = f.envelope_burst;
        transport_config.max_streams_per_peer = f.max_streams_per_peer;
        transport_config.keep_alive = std::time::Duration::from_millis(f.keep_alive_ms);
        transport_config.idle_timeout = std::time::Duration::from_millis(f.idle_timeout_ms);
        transport_config.reset_secret =
            crate::ops::keys::load_or_generate_secret(&config.data_dir.join("quic-reset.key"))?;
        transport_config.discovery = discovery.as_ref().map(|d| d.discovery.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_results_map_to_federation_outcomes() {
        let room = hearth_spec::RoomId::parse("!r:home.test").unwrap();
        let refused = |e| outcome(Err(CommitError::Refused(e)));
        assert_eq!(outcome(Ok(Reply::Duplicate)), Outcome::Duplicate);
        assert_eq!(outcome(Ok(Reply::Done)), Outcome::Stored);
        assert_eq!(
            refused(SequenceError::RoomNotFound(room.clone())),
            Outcome::Rejected(RejectCode::UnknownRoom)
        );
        assert_eq!(
            refused(SequenceError::StaleEpoch { got: 0, current: 1 }),
            Outcome::Rejected(RejectCode::StaleEpoch)
        );
        assert_eq!(
            refused(SequenceError::OutOfOrder {
                seq: 3,
                expected: 2
            }),
            Outcome::Retry(RetryCode::OutOfOrder)
        );
        assert_eq!(
            refused(SequenceError::RoomFull(3)),
            Outcome::Rejected(RejectCode::Forbidden)
        );
        // Failures of this hearth's own are for the peer to try again, never a refusal.
        for failure in [
            CommitError::Storage(Arc::new(StoreError::Corrupt("eio".into()))),
            CommitError::Closed,
            CommitError::Unavailable("disk"),
        ] {
            assert_eq!(
                outcome(Err(failure)),
                Outcome::Retry(RetryCode::Unavailable)
            );
        }
    }
}
