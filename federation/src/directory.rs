//! Who the peers are: each known hearth's address and keys, and the keys revoked everywhere.
//!
//! Peers are configured (name, address, key) or discovered: learnt from a self-signed DHT record
//! (`learn`), first come first pinned. A configured peer is never changed by a record, and a
//! discovered name never changes key except by a rotation signed with a key it already has. A
//! key rotation announced by a peer adds its new key; the old one keeps verifying until the end
//! of its grace period. A revoked key never verifies again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use hearth_crypto::VerifyingKey;
use hearth_spec::federation::RejectCode;
use hearth_spec::{PublicKey, ServerName};

/// A configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: ServerName,
    pub address: SocketAddr,
    /// The peer's current ed25519 public key.
    pub key: PublicKey,
    /// Earlier keys that still verify until the given time (ms since the epoch).
    pub previous_keys: Vec<(PublicKey, u64)>,
}

#[derive(Debug, Clone)]
struct KeyEntry {
    key: PublicKey,
    /// `None` for a current key.
    valid_until_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Peer {
    address: SocketAddr,
    keys: Vec<KeyEntry>,
    /// `None` for a configured peer; else when the record it was learnt from was issued.
    discovered_ms: Option<u64>,
}

/// What learning a record changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A hearth this directory did not know.
    New,
    /// A newer record of a known hearth: its address may have moved.
    Updated,
    /// Nothing new.
    Unchanged,
}

/// Why a hearth record was not learnt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LearnError {
    #[error("the key is revoked")]
    Revoked,
    #[error("the key already belongs to {0}")]
    Taken(ServerName),
    #[error("{0} is known with another key (only a rotation signed by its key changes it)")]
    Pinned(ServerName),
    #[error("the key no longer verifies for {0}")]
    Expired(ServerName),
}

/// Why a key announcement was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("the new key is revoked")]
    Revoked,
    #[error("the new key already belongs to {0}")]
    Taken(ServerName),
}

/// The peer directory.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    peers: HashMap<ServerName, Peer>,
    owners: HashMap<PublicKey, ServerName>,
    revoked: HashSet<PublicKey>,
}

impl Directory {
    /// Builds the directory from configuration.
    pub fn new(peers: Vec<PeerConfig>, revoked: Vec<PublicKey>) -> Self {
        let mut directory = Self {
            revoked: revoked.into_iter().collect(),
            ..Self::default()
        };
        for peer in peers {
            let mut keys = vec![KeyEntry {
                key: peer.key,
                valid_until_ms: None,
            }];
            keys.extend(peer.previous_keys.iter().map(|(key, until)| KeyEntry {
                key: *key,
                valid_until_ms: Some(*until),
            }));
            for entry in &keys {
                directory.owners.insert(entry.key, peer.name.clone());
            }
            directory.peers.insert(
                peer.name,
                Peer {
                    address: peer.address,
                    keys,
                    discovered_ms: None,
                },
            );
        }
        directory
    }

    /// Learns a hearth from its record (whose signature by `key` the caller has checked) at
    /// `now_ms`. A configured peer keeps its configuration; a discovered one moves to a newer
    /// record's address if the record is signed by one of its valid keys.
    pub fn learn(
        &mut self,
        name: &ServerName,
        key: PublicKey,
        address: SocketAddr,
        issued_ms: u64,
        now_ms: u64,
    ) -> Result<Learned, LearnError> {
        if self.revoked.contains(&key) {
            return Err(LearnError::Revoked);
        }
        if let Some(owner) = self.owners.get(&key)
            && owner != name
        {
            return Err(LearnError::Taken(owner.clone()));
        }
        let Some(peer) = self.peers.get(name) else {
            self.owners.insert(key, name.clone());
            self.peers.insert(
                name.clone(),
                Peer {
                    address,
                    keys: vec![KeyEntry {
                        key,
                        valid_until_ms: None,
                    }],
                    discovered_ms: Some(issued_ms),
                },
            );
            return Ok(Learned::New);
        };
        let Some(entry) = peer.keys.iter().find(|e| e.key == key) else {
            return Err(LearnError::Pinned(name.clone()));
        };
        if entry.valid_until_ms.is_some_and(|until| now_ms > until) {
            return Err(LearnError::Expired(name.clone()));
        }
        let peer = self.peers.get_mut(name).expect("looked up above");
        match peer.discovered_ms {
            Some(seen) if issued_ms > seen => {
                let moved = peer.address != address;
                peer.address = address;
                peer.discovered_ms = Some(issued_ms);
                Ok(if moved {
                    Learned::Updated
                } else {
                    Learned::Unchanged
                })
            }
            _ => Ok(Learned::Unchanged),
        }
    }

    /// Whether `name` was learnt from the DHT rather than configured.
    pub fn is_discovered(&self, name: &ServerName) -> bool {
        self.peers
            .get(name)
            .is_some_and(|p| p.discovered_ms.is_some())
    }

    /// Every known peer, configured or discovered.
    pub fn peers(&self) -> Vec<ServerName> {
        let mut names: Vec<ServerName> = self.peers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether `name` is a known peer.
    pub fn knows(&self, name: &ServerName) -> bool {
        self.peers.contains_key(name)
    }

    /// Where to reach a peer.
    pub fn address(&self, name: &ServerName) -> Option<SocketAddr> {
        self.peers.get(name).map(|p| p.address)
    }

    /// A peer's current key (the one a rotation made current last).
    pub fn current_key(&self, name: &ServerName) -> Option<PublicKey> {
        let peer = self.peers.get(name)?;
        peer.keys
            .iter()
            .rev()
            .find(|e| e.valid_until_ms.is_none() && !self.revoked.contains(&e.key))
            .map(|e| e.key)
    }

    /// The hearth a key belongs to, if the key verifies at `now_ms`.
    pub fn owner(&self, key: &PublicKey, now_ms: u64) -> Result<&ServerName, RejectCode> {
        if self.revoked.contains(key) {
            return Err(RejectCode::RevokedKey);
        }
        let owner = self.owners.get(key).ok_or(RejectCode::UnknownKey)?;
        self.check_signer(owner, key, now_ms)?;
        Ok(owner)
    }

    /// The verifying key for `signer` if it is a valid key of `origin` at `now_ms`.
    pub fn check_signer(
        &self,
        origin: &ServerName,
        signer: &PublicKey,
        now_ms: u64,
    ) -> Result<VerifyingKey, RejectCode> {
        let peer = self.peers.get(origin).ok_or(RejectCode::UnknownOrigin)?;
        if self.revoked.contains(signer) {
            return Err(RejectCode::RevokedKey);
        }
        let entry = peer
            .keys
            .iter()
            .find(|e| e.key == *signer)
            .ok_or(RejectCode::UnknownKey)?;
        if entry.valid_until_ms.is_some_and(|until| now_ms > until) {
            return Err(RejectCode::RevokedKey);
        }
        hearth_crypto::verifying_key(signer).ok_or(RejectCode::UnknownKey)
    }

    /// Applies a rotation announced by `origin` (already verified as signed by `signer`, a
    /// valid key of `origin`): `new_key` becomes current, `signer` verifies until `until_ms`.
    pub fn rotate(
        &mut self,
        origin: &ServerName,
        signer: &PublicKey,
        new_key: PublicKey,
        until_ms: u64,
    ) -> Result<(), RotationError> {
        if self.revoked.contains(&new_key) {
            return Err(RotationError::Revoked);
        }
        if let Some(owner) = self.owners.get(&new_key)
            && owner != origin
        {
            return Err(RotationError::Taken(owner.clone()));
        }
        let Some(peer) = self.peers.get_mut(origin) else {
            return Ok(());
        };
        for entry in &mut peer.keys {
            if entry.key == *signer {
                let until = entry.valid_until_ms.unwrap_or(u64::MAX).min(until_ms);
                entry.valid_until_ms = Some(until);
            }
        }
        if !peer.keys.iter().any(|e| e.key == new_key) {
            peer.keys.push(KeyEntry {
                key: new_key,
                valid_until_ms: None,
            });
        }
        self.owners.insert(new_key, origin.clone());
        Ok(())
    }

    /// Revokes a key: it never verifies again.
    pub fn revoke(&mut self, key: PublicKey) {
        self.revoked.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory::new(
            vec![PeerConfig {
                name: ServerName::parse("b.example").unwrap(),
                address: "127.0.0.1:1".parse().unwrap(),
                key: key(1),
                previous_keys: vec![(key(2), 1_000)],
            }],
            vec![key(3)],
        )
    }

    fn key(n: u8) -> PublicKey {
        hearth_crypto::ServerKey::from_bytes(&[n; 32])
            .unwrap()
            .public_key()
    }

    #[test]
    fn keys_verify_only_for_their_owner_and_in_time() {
        let d = dir();
        let b = ServerName::parse("b.example").unwrap();
        let c = ServerName::parse("c.example").unwrap();
        assert!(d.check_signer(&b, &key(1), 5_000).is_ok());
        assert!(d.check_signer(&b, &key(2), 999).is_ok());
        assert_eq!(
            d.check_signer(&b, &key(2), 1_001).err(),
            Some(RejectCode::RevokedKey)
        );
        assert_eq!(
            d.check_signer(&c, &key(1), 0).err(),
            Some(RejectCode::UnknownOrigin)
        );
        assert_eq!(
            d.check_signer(&b, &key(4), 0).err(),
            Some(RejectCode::UnknownKey)
        );
        assert_eq!(d.owner(&key(1), 0), Ok(&b));
    }

    #[test]
    fn records_are_pinned_first_come_and_never_override_configuration() {
        let mut d = dir();
        let b = ServerName::parse("b.example").unwrap();
        let e = ServerName::parse("e.example").unwrap();
        let here: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let moved: SocketAddr = "127.0.0.1:10".parse().unwrap();
        // A configured peer keeps its address; another key for its name is refused.
        assert_eq!(d.learn(&b, key(1), moved, 5, 0), Ok(Learned::Unchanged));
        assert_eq!(d.address(&b), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(
            d.learn(&b, key(6), moved, 5, 0),
            Err(LearnError::Pinned(b.clone()))
        );
        // A key belongs to one name; revoked keys are never learnt.
        assert_eq!(
            d.learn(&e, key(1), here, 5, 0),
            Err(LearnError::Taken(b.clone()))
        );
        assert_eq!(d.learn(&e, key(3), here, 5, 0), Err(LearnError::Revoked));
        // A new hearth is learnt, then pinned to its key.
        assert_eq!(d.learn(&e, key(7), here, 5, 0), Ok(Learned::New));
        assert!(d.is_discovered(&e) && !d.is_discovered(&b));
        assert!(d.check_signer(&e, &key(7), 0).is_ok());
        assert_eq!(
            d.learn(&e, key(8), moved, 6, 0),
            Err(LearnError::Pinned(e.clone()))
        );
        // Only a newer record moves it.
        assert_eq!(d.learn(&e, key(7), moved, 4, 0), Ok(Learned::Unchanged));
        assert_eq!(d.address(&e), Some(here));
        assert_eq!(d.learn(&e, key(7), moved, 6, 0), Ok(Learned::Updated));
        assert_eq!(d.address(&e), Some(moved));
        // After a rotation, a record signed by the new key is learnt; the old key expires.
        d.rotate(&e, &key(7), key(8), 100).unwrap();
        assert_eq!(d.learn(&e, key(8), here, 7, 50), Ok(Learned::Updated));
        assert_eq!(
            d.learn(&e, key(7), moved, 8, 101),
            Err(LearnError::Expired(e.clone()))
        );
    }

    #[test]
    fn rotation_adds_the_new_key_and_limits_the_old() {
        let mut d = dir();
        let b = ServerName::parse("b.example").unwrap();
        d.rotate(&b, &key(1), key(5), 10_000).unwrap();
        assert!(d.check_signer(&b, &key(5), 20_000).is_ok());
        assert!(d.check_signer(&b, &key(1), 9_000).is_ok());
        assert_eq!(
            d.check_signer(&b, &key(1), 10_001).err(),
            Some(RejectCode::RevokedKey)
        );
        assert_eq!(
            d.rotate(&b, &key(5), key(3), 0),
            Err(RotationError::Revoked)
        );
        d.revoke(key(5));
        assert_eq!(
            d.check_signer(&b, &key(5), 0).err(),
            Some(RejectCode::RevokedKey)
        );
    }
}
