//! Rotating this hearth's server key (see `spec/federation.md`, "Key rotation").
//!
//! The steps survive a crash at any point: (1) the next key is written aside
//! (`server.key.next`), (2) an announcement for every peer is queued durably, (3) the old key is
//! added to `retired-keys` with the end of its grace period, (4) the next key is renamed over
//! `server.key`. A hearth that finds `server.key.next` at start finishes the rotation from step
//! 2 (a second announcement of the same key is harmless to peers).

use std::path::PathBuf;
use std::sync::Arc;

use hearth_crypto::ServerKey;
use hearth_federation::KeyRing;
use hearth_spec::ServerName;

use crate::clock::now_ms;
use crate::federation::store::FederationStore;
use crate::ops::keys::{self, KeyFileError};
use crate::store::StoreError;
use crate::store::tables::OutItem;

/// Grace period of a retired key unless the operator says otherwise: a week, so a peer that is
/// down over a long weekend still learns the new key before the old one stops verifying.
pub const DEFAULT_GRACE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Why a rotation failed. Whatever step failed, running it again completes it.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("cannot queue the announcements: {0}")]
    Store(#[from] StoreError),
    #[error("a grace period of {0} ms is too short (at least 10 minutes)")]
    GraceTooShort(u64),
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub new_key: hearth_spec::PublicKey,
    pub old_key: hearth_spec::PublicKey,
    pub old_valid_until_ms: u64,
    /// Queue entries carrying the announcement: (peer, entry id).
    pub announcements: Vec<(ServerName, u64)>,
}

/// Called once the announcements are queued, so a running hearth can sign with the old key for
/// those peers until they have taken the announcement, and wake their queues.
pub type AnnouncementHook = Arc<dyn Fn(&Rotated) + Send + Sync>;

/// The peers to announce a new key to (read when the rotation happens: discovered peers count).
pub type PeerList = Arc<dyn Fn() -> Vec<ServerName> + Send + Sync>;

/// How long a retired or revoked key is kept after its grace ends: it signs nothing but the
/// announcements that retire it, which may wait that long in a queue for a peer that is down.
pub const ANNOUNCE_WINDOW_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Rotates the key of the hearth whose data directory is `data_dir`.
pub struct KeyRotator {
    pub data_dir: PathBuf,
    pub store: Arc<dyn FederationStore>,
    pub keys: Arc<KeyRing>,
    pub peers: PeerList,
    pub hook: Option<AnnouncementHook>,
}

impl KeyRotator {
    /// Makes a new key current and announces it; the current key keeps verifying for
    /// `grace_ms`.
    pub fn rotate(&self, grace_ms: u64) -> Result<Rotated, RotateError> {
        // The old key must outlive the moment it stops being used (see `KeyRing`).
        if grace_ms < 2 * hearth_federation::keyring::SWITCH_MARGIN_MS {
            return Err(RotateError::GraceTooShort(grace_ms));
        }
        self.replace_key(now_ms().saturating_add(grace_ms))
    }

    /// Replaces a compromised key: a new key is current at once and the old one stops verifying
    /// as soon as a peer hears of it (directly or through gossip).
    pub fn revoke(&self) -> Result<Rotated, RotateError> {
        self.replace_key(now_ms())
    }

    fn replace_key(&self, until: u64) -> Result<Rotated, RotateError> {
        let next = keys::load_or_generate(&keys::next_key_path(&self.data_dir))?;
        let old = self.keys.current();
        let announcement = OutItem::KeyRotation {
            old_key: old.public_key(),
            new_key: next.public_key(),
            old_valid_until_ms: until,
        };
        let peers = (self.peers)();
        let items: Vec<(ServerName, OutItem)> = peers
            .iter()
            .map(|peer| (peer.clone(), announcement.clone()))
            .collect();
        let announcements = self.store.queue_outbox(&items)?;
        let mut retired = self.keys.retired();
        retired.push((old.clone(), until));
        let now = now_ms();
        let keep: Vec<(&ServerKey, u64)> = retired
            .iter()
            .filter(|(_, until)| until.saturating_add(ANNOUNCE_WINDOW_MS) > now)
            .map(|(key, until)| (key.as_ref(), *until))
            .collect();
        keys::write_retired(&keys::retired_keys_path(&self.data_dir), &keep)?;
        keys::promote(
            &keys::next_key_path(&self.data_dir),
            &crate::ops::data_dir::key_path(&self.data_dir),
        )?;
        let new_key = next.public_key();
        self.keys.rotate(Arc::new(next), until);
        let rotated = Rotated {
            new_key,
            old_key: old.public_key(),
            old_valid_until_ms: until,
            announcements,
        };
        tracing::info!(
            new_key = %new_key,
            peers = peers.len(),
            "rotated the server key"
        );
        if let Some(hook) = &self.hook {
            hook(&rotated);
        }
        Ok(rotated)
    }

    /// Whether a rotation was interrupted before its last step.
    pub fn interrupted(&self) -> bool {
        keys::next_key_path(&self.data_dir).exists()
    }
}

/// Loads the current key (generating it on first start) and the retired ones still in grace.
pub fn load_key_ring(data_dir: &std::path::Path) -> Result<KeyRing, KeyFileError> {
    let current = keys::load_or_generate(&crate::ops::data_dir::key_path(data_dir))?;
    let now = now_ms();
    let retired = keys::load_retired(&keys::retired_keys_path(data_dir))?
        .into_iter()
        .filter(|(_, until)| until.saturating_add(ANNOUNCE_WINDOW_MS) > now)
        .map(|(key, until)| (Arc::new(key), until))
        .collect();
    Ok(KeyRing::new(Arc::new(current), retired))
}
