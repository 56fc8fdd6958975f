//! The outbound queue as the sender reads it: each entry signed now, with the key the peer
//! knows; announcements of this hearth's keys; pending envelopes sealed for relays.

use std::sync::Arc;

use hearth_crypto::{ServerKey, sign_envelope};
use hearth_federation::outbox::Queued;
use hearth_spec::ServerName;
use hearth_spec::federation::{FED_VERSION, FedBody, FedEnvelope};

use super::FedNode;
use crate::clock::now_ms;
use crate::federation::rotation::Rotated;
use crate::store::StoreError;
use crate::store::tables::OutItem;

impl FedNode {
    /// Seals `destination`'s pending entries with ids above `after` for `relays` and queues
    /// them there, durably. Returns the last id handed over, if any.
    pub(super) fn hand_to_relays(
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

    /// Signs one queued entry for `destination`.
    fn sign(&self, destination: &ServerName, item: OutItem) -> Result<Vec<u8>, StoreError> {
        let body = match item {
            OutItem::Submit { event } => FedBody::Submit { event },
            OutItem::Sequenced { room, seq } => {
                let event = self.store.event_at(&room, seq)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("queued event {room}#{seq} is missing"))
                })?;
                let event = crate::store::wire_envelope(&event).to_vec();
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
            signer: key.public_key(),
            origin_ts: now_ms(),
            nonce: rand::random(),
            body,
        };
        sign_envelope(key, &envelope)
    }

    /// Remembers queued announcements of a new key. A revocation (no grace) is not waited for:
    /// the revoked key signs nothing but the announcements.
    pub(super) fn announcements_queued(&self, rotated: &Rotated) {
        if rotated.old_valid_until_ms <= now_ms() {
            return;
        }
        let mut announcements = self.announcements.lock().expect("announcements lock");
        for (peer, id) in &rotated.announcements {
            announcements.queued(peer.clone(), *id, rotated.old_key);
        }
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
