//! This hearth's own keys: the current one, and the ones a rotation retired, each usable until
//! its grace period ends.
//!
//! A rotation is make-before-break. The new key becomes current at once, and an announcement
//! signed by the old key goes to every peer through its durable queue. Until a peer has taken
//! the announcement, what is sent to it is signed with the old key (the node decides, per
//! peer). TLS presents the oldest key that is still usable, because a handshake does not say
//! which peer is calling and every peer accepts that key until its grace period ends. A retired
//! key stops being used [`SWITCH_MARGIN_MS`] before its end, so nothing signed with it is still
//! in flight when peers stop accepting it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use hearth_crypto::ServerKey;
use hearth_spec::PublicKey;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::cert::{certificate, provider};
use crate::clock::now_ms;

/// A retired key is no longer used this long before its grace period ends.
pub const SWITCH_MARGIN_MS: u64 = 5 * 60 * 1000;

struct Ring {
    current: Arc<ServerKey>,
    /// Retired keys and the end of their grace periods (ms since the epoch), oldest first.
    retired: Vec<(Arc<ServerKey>, u64)>,
}

/// The hearth's keys, shared by the transport (TLS) and whatever signs envelopes.
pub struct KeyRing {
    ring: RwLock<Ring>,
    /// TLS certificates, made once per key.
    certificates: Mutex<HashMap<PublicKey, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.ring.read().expect("key ring lock");
        f.debug_struct("KeyRing")
            .field("current", &ring.current.public_key())
            .field("retired", &ring.retired.len())
            .finish()
    }
}

impl KeyRing {
    /// A ring with `current` and the keys retired earlier (with the ends of their grace).
    pub fn new(current: Arc<ServerKey>, mut retired: Vec<(Arc<ServerKey>, u64)>) -> Self {
        retired.sort_by_key(|(_, until)| *until);
        Self {
            ring: RwLock::new(Ring { current, retired }),
            certificates: Mutex::new(HashMap::new()),
        }
    }

    /// A ring of one key.
    pub fn single(current: Arc<ServerKey>) -> Self {
        Self::new(current, Vec::new())
    }

    /// The current key.
    pub fn current(&self) -> Arc<ServerKey> {
        self.ring.read().expect("key ring lock").current.clone()
    }

    /// The key with this public half if it is the current key or a retired one still in use at
    /// `now_ms`.
    pub fn usable(&self, public: &PublicKey, now_ms: u64) -> Option<Arc<ServerKey>> {
        let ring = self.ring.read().expect("key ring lock");
        if ring.current.public_key() == *public {
            return Some(ring.current.clone());
        }
        ring.retired
            .iter()
            .find(|(key, until)| key.public_key() == *public && in_use(*until, now_ms))
            .map(|(key, _)| key.clone())
    }

    /// The key with this public half if this ring holds it at all, in use or not (only to sign
    /// the announcement that retires or revokes it).
    pub fn holding(&self, public: &PublicKey) -> Option<Arc<ServerKey>> {
        let ring = self.ring.read().expect("key ring lock");
        std::iter::once(&ring.current)
            .chain(ring.retired.iter().map(|(key, _)| key))
            .find(|key| key.public_key() == *public)
            .cloned()
    }

    /// The key every peer accepts at `now_ms`: the oldest retired key still in use, else the
    /// current one.
    pub fn oldest_usable(&self, now_ms: u64) -> Arc<ServerKey> {
        let ring = self.ring.read().expect("key ring lock");
        ring.retired
            .iter()
            .find(|(_, until)| in_use(*until, now_ms))
            .map(|(key, _)| key.clone())
            .unwrap_or_else(|| ring.current.clone())
    }

    /// The keys that still verify and open at `now_ms`: the current one first, then the retired
    /// ones whose grace period has not ended (for checking, not for signing: see [`Self::usable`]).
    pub fn valid(&self, now_ms: u64) -> Vec<Arc<ServerKey>> {
        let ring = self.ring.read().expect("key ring lock");
        std::iter::once(ring.current.clone())
            .chain(
                ring.retired
                    .iter()
                    .filter(|(_, until)| *until > now_ms)
                    .map(|(key, _)| key.clone()),
            )
            .collect()
    }

    /// Retired keys with the ends of their grace periods.
    pub fn retired(&self) -> Vec<(Arc<ServerKey>, u64)> {
        self.ring.read().expect("key ring lock").retired.clone()
    }

    /// Makes `new` current; the old current key is retired until `old_until_ms`.
    pub fn rotate(&self, new: Arc<ServerKey>, old_until_ms: u64) {
        let mut ring = self.ring.write().expect("key ring lock");
        let old = std::mem::replace(&mut ring.current, new);
        ring.retired.push((old, old_until_ms));
        ring.retired.sort_by_key(|(_, until)| *until);
    }

    fn certified(&self) -> Option<Arc<CertifiedKey>> {
        let key = self.oldest_usable(now_ms());
        let mut certificates = self.certificates.lock().expect("certificates lock");
        if let Some(certified) = certificates.get(&key.public_key()) {
            return Some(certified.clone());
        }
        let made = certificate(&key).and_then(|(cert, private)| {
            Ok(CertifiedKey::from_der(vec![cert], private, &provider())?)
        });
        match made {
            Ok(certified) => {
                let certified = Arc::new(certified);
                certificates.insert(key.public_key(), certified.clone());
                Some(certified)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make a TLS certificate for the server key");
                None
            }
        }
    }
}

fn in_use(until_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_add(SWITCH_MARGIN_MS) < until_ms
}

impl ResolvesServerCert for KeyRing {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }
}

impl ResolvesClientCert for KeyRing {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_key_in_use_is_presented_until_its_margin() {
        let old = Arc::new(ServerKey::generate());
        let new = Arc::new(ServerKey::generate());
        let ring = KeyRing::single(old.clone());
        assert_eq!(ring.oldest_usable(0).public_key(), old.public_key());
        let until = 10 * SWITCH_MARGIN_MS;
        ring.rotate(new.clone(), until);
        assert_eq!(ring.current().public_key(), new.public_key());
        assert_eq!(ring.oldest_usable(0).public_key(), old.public_key());
        let late = until - SWITCH_MARGIN_MS;
        assert_eq!(ring.oldest_usable(late).public_key(), new.public_key());
        assert!(ring.usable(&old.public_key(), late - 1).is_some());
        assert!(ring.usable(&old.public_key(), late).is_none());
        assert!(ring.usable(&new.public_key(), u64::MAX).is_some());
        let valid =
            |now| -> Vec<PublicKey> { ring.valid(now).iter().map(|k| k.public_key()).collect() };
        assert_eq!(valid(late), vec![new.public_key(), old.public_key()]);
        assert_eq!(valid(until), vec![new.public_key()]);
    }
}
