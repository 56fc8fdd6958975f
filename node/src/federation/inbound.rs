//! Envelopes from peers: relayed ones opened, each turned into committer requests (or custody,
//! or an answer on its stream), and the committer's result turned into the outcome on the wire.

use std::sync::{Arc, RwLock};

use hearth_federation::{Directory, Freshness, KeyRing};
use hearth_spec::api::{ClaimedKeyPackage, KeyDevices};
use hearth_spec::federation::{
    FedBody, FedEnvelope, MAX_SIGNALS_PER_ENVELOPE, Outcome, RejectCode, RetryCode, SealedEnvelope,
    Signal,
};
use hearth_spec::{Content, DeviceId, Envelope, ServerName, UserId};

use super::FedNode;
use crate::chat::committer::{CommitError, Committer};
use crate::chat::sequencer::{Reply, Request, SequenceError};
use crate::clock::now_ms;
use crate::store::StoreError;
use crate::store::tables::PeerRotation;

/// Opens what relays hand over: CPU work (X25519, ChaCha20-Poly1305, ed25519), done on a
/// blocking thread, so it owns what it needs.
#[derive(Clone)]
pub(super) struct Unsealer {
    pub(super) own: ServerName,
    pub(super) keys: Arc<KeyRing>,
    pub(super) directory: Arc<RwLock<Directory>>,
    /// As old as a relay may hold an envelope.
    pub(super) freshness: Freshness,
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
        signer: hearth_spec::PublicKey,
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
            | SequenceError::RoomClosed(_)
            | SequenceError::InvalidDirect
            | SequenceError::AlreadyMember(_)
            | SequenceError::NotInRoom(_)
            | SequenceError::DirectRoomRemove
            | SequenceError::NotAdmin { .. }
            | SequenceError::AlreadyAdmin(_)
            | SequenceError::NotAnAdmin(_)
            | SequenceError::LastAdmin
            | SequenceError::DirectRoomAdmin
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
        let blocked = self.blocked.clone();
        let count = envelopes.len();
        tokio::task::spawn_blocking(move || {
            envelopes
                .into_iter()
                .map(|envelope| match envelope.body {
                    FedBody::Relayed { origin, .. } if blocked.contains(&origin) => {
                        tracing::info!(%origin, "refused a relayed envelope of a blocked hearth");
                        Arrived::Refused(Outcome::Rejected(RejectCode::Forbidden))
                    }
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
        let blocked = self.blocked.clone();
        let origin = origin.clone();
        let taken = tokio::task::spawn_blocking(move || {
            // Nothing is held for a blocked hearth: it could never be handed over.
            custody.take(&origin, items, |d| {
                !blocked.contains(d) && directory.read().expect("directory lock").knows(d)
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
