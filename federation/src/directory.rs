//! Who the peers are: each known hearth's address and keys, and the keys revoked everywhere.
//!
//! Peers are configured by name, address and key for now (discovery is a later layer). A key
//! rotation announced by a peer adds its new key; the old one keeps verifying until the end of
//! its grace period. A revoked key never verifies again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use hearth_crypto::VerifyingKey;
use hearth_spec::ServerName;
use hearth_spec::federation::RejectCode;

/// A configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: ServerName,
    pub address: SocketAddr,
    /// The peer's current ed25519 public key.
    pub key: [u8; 32],
    /// Earlier keys that still verify until the given time (ms since the epoch).
    pub previous_keys: Vec<([u8; 32], u64)>,
}

#[derive(Debug, Clone)]
struct KeyEntry {
    key: [u8; 32],
    /// `None` for a current key.
    valid_until_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Peer {
    address: SocketAddr,
    keys: Vec<KeyEntry>,
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
    owners: HashMap<[u8; 32], ServerName>,
    revoked: HashSet<[u8; 32]>,
}

impl Directory {
    /// Builds the directory from configuration.
    pub fn new(peers: Vec<PeerConfig>, revoked: Vec<[u8; 32]>) -> Self {
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
                },
            );
        }
        directory
    }

    /// Every configured peer.
    pub fn peers(&self) -> Vec<ServerName> {
        let mut names: Vec<ServerName> = self.peers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether `name` is a configured peer.
    pub fn knows(&self, name: &ServerName) -> bool {
        self.peers.contains_key(name)
    }

    /// Where to reach a peer.
    pub fn address(&self, name: &ServerName) -> Option<SocketAddr> {
        self.peers.get(name).map(|p| p.address)
    }

    /// A peer's current key (the one a rotation made current last).
    pub fn current_key(&self, name: &ServerName) -> Option<[u8; 32]> {
        let peer = self.peers.get(name)?;
        peer.keys
            .iter()
            .rev()
            .find(|e| e.valid_until_ms.is_none() && !self.revoked.contains(&e.key))
            .map(|e| e.key)
    }

    /// The hearth a key belongs to, if the key verifies at `now_ms`.
    pub fn owner(&self, key: &[u8; 32], now_ms: u64) -> Result<&ServerName, RejectCode> {
        let owner = self.owners.get(key).ok_or(RejectCode::UnknownKey)?;
        self.check_signer(owner, key, now_ms)?;
        Ok(owner)
    }

    /// The verifying key for `signer` if it is a valid key of `origin` at `now_ms`.
    pub fn check_signer(
        &self,
        origin: &ServerName,
        signer: &[u8; 32],
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
        VerifyingKey::from_bytes(signer).map_err(|_| RejectCode::UnknownKey)
    }

    /// Applies a rotation announced by `origin` (already verified as signed by `signer`, a
    /// valid key of `origin`): `new_key` becomes current, `signer` verifies until `until_ms`.
    pub fn rotate(
        &mut self,
        origin: &ServerName,
        signer: &[u8; 32],
        new_key: [u8; 32],
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
    pub fn revoke(&mut self, key: [u8; 32]) {
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

    fn key(n: u8) -> [u8; 32] {
        hearth_crypto::ServerKey::from_bytes(&[n; 32])
            .unwrap()
            .public_bytes()
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
