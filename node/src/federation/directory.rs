//! The peer directory at start: the configured peers, then the key rotations they announced.

use hearth_federation::{Directory, PeerConfig};

use crate::config::{Config, ConfigError, parse_public_key};
use crate::federation::store::FederationStore;
use crate::store::StoreError;

/// Builds the peer directory from the configuration, then applies the key rotations peers
/// announced since (recorded in `store`).
pub fn directory(
    config: &Config,
    store: &dyn FederationStore,
) -> Result<Directory, DirectoryError> {
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
