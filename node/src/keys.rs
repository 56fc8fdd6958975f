//! The hearth's key files: generated on first start, readable only by their owner.

use std::io::Write;
use std::path::Path;

use hearth_crypto::ServerKey;
use web_push_native::jwt_simple::algorithms::ES256KeyPair;

/// Why a key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
}

/// Loads the server key at `path`, or generates and writes one if there is none.
pub fn load_or_generate(path: &Path) -> Result<ServerKey, KeyFileError> {
    load_or_create(
        path,
        ServerKey::generate,
        |k| k.to_bytes().to_vec(),
        |bytes| ServerKey::from_bytes(bytes).map_err(|e| e.to_string()),
    )
}

/// The P-256 key that signs Web Push requests (VAPID, RFC 8292), generated on first use.
pub fn load_or_generate_vapid(path: &Path) -> Result<ES256KeyPair, KeyFileError> {
    load_or_create(
        path,
        ES256KeyPair::generate,
        |k| k.to_bytes(),
        |bytes| ES256KeyPair::from_bytes(bytes).map_err(|e| e.to_string()),
    )
}

/// Reads a key, or generates one and writes it with mode 0600, fsynced.
fn load_or_create<K>(
    path: &Path,
    generate: impl FnOnce() -> K,
    to_bytes: impl FnOnce(&K) -> Vec<u8>,
    from_bytes: impl FnOnce(&[u8]) -> Result<K, String>,
) -> Result<K, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => from_bytes(&bytes).map_err(|reason| KeyFileError::Invalid {
            path: path.display().to_string(),
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate();
            let bytes = zeroize::Zeroizing::new(to_bytes(&key));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new key");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}
