//! The hearth's key file: generated on first start, readable only by its owner.

use std::io::Write;
use std::path::Path;

use hearth_crypto::ServerKey;

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is invalid: {source}")]
    Invalid {
        path: String,
        source: hearth_crypto::KeyError,
    },
}

/// Loads the key at `path`, or generates and writes one (mode 0600) if there is none.
pub fn load_or_generate(path: &Path) -> Result<ServerKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => ServerKey::from_bytes(&bytes).map_err(|source| KeyFileError::Invalid {
            path: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ServerKey::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&key.to_bytes()[..]).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new server key");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}
