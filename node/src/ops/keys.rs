//! The hearth's key files: generated on first start, readable only by their owner.

use std::io::Write;
use std::path::Path;

use hearth_crypto::ServerKey;
use web_push_native::jwt_simple::algorithms::ES256KeyPair;

use crate::ops::data_dir::sync_parent;

/// What was wrong with a key file's contents.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write key file {path}: {reason}")]
    Io {
        path: String,
        reason: std::io::Error,
    },
    #[error("key file {path} is invalid: {reason}")]
    Invalid {
        path: String,
        #[source]
        reason: Cause,
    },
    #[error("key file {path} is malformed: {what}")]
    Malformed { path: String, what: &'static str },
}

/// Loads the server key at `path`, or generates and writes one if there is none.
pub fn load_or_generate(path: &Path) -> Result<ServerKey, KeyFileError> {
    load_or_create(
        path,
        ServerKey::generate,
        |k| k.to_bytes().to_vec(),
        |bytes| ServerKey::from_bytes(bytes).map_err(Cause::from),
    )
}

/// The P-256 key that signs Web Push requests (VAPID, RFC 8292), generated on first use.
pub fn load_or_generate_vapid(path: &Path) -> Result<ES256KeyPair, KeyFileError> {
    load_or_create(
        path,
        ES256KeyPair::generate,
        |k| k.to_bytes(),
        |bytes| ES256KeyPair::from_bytes(bytes).map_err(Cause::from),
    )
}

/// A 32-byte secret kept in `path` (generated on first use), such as the QUIC reset key.
pub fn load_or_generate_secret(path: &Path) -> Result<[u8; 32], KeyFileError> {
    load_or_create(
        path,
        rand::random::<[u8; 32]>,
        |k| k.to_vec(),
        |bytes| <[u8; 32]>::try_from(bytes).map_err(Cause::from),
    )
}

/// Reads a key, or generates one and writes it with mode 0600, fsynced.
fn load_or_create<K>(
    path: &Path,
    generate: impl FnOnce() -> K,
    to_bytes: impl FnOnce(&K) -> Vec<u8>,
    from_bytes: impl FnOnce(&[u8]) -> Result<K, Cause>,
) -> Result<K, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        reason: source,
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
            sync_parent(path).map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new key");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// Retired server keys: one line per key, `<end of grace, ms since the epoch> <base64url secret>`.
pub fn retired_keys_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("retired-keys")
}

/// The key a rotation is about to make current (present only while one is under way).
pub fn next_key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("server.key.next")
}

/// Reads the retired keys (none if the file does not exist).
pub fn load_retired(path: &Path) -> Result<Vec<(ServerKey, u64)>, KeyFileError> {
    use base64::Engine;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(KeyFileError::Io {
                path: path.display().to_string(),
                reason: source,
            });
        }
    };
    let invalid = |reason: Cause| KeyFileError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (until, secret) = line
                .split_once(' ')
                .ok_or_else(|| KeyFileError::Malformed {
                    path: path.display().to_string(),
                    what: "a line is not `<until> <key>`",
                })?;
            let until = until.parse::<u64>().map_err(|e| invalid(Box::new(e)))?;
            let bytes = zeroize::Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(secret.trim())
                    .map_err(|e| invalid(Box::new(e)))?,
            );
            let key = ServerKey::from_bytes(&bytes).map_err(|e| invalid(Box::new(e)))?;
            Ok((key, until))
        })
        .collect()
}

/// Replaces the retired keys file (mode 0600) atomically: written aside, fsynced, renamed.
pub fn write_retired(path: &Path, keys: &[(&ServerKey, u64)]) -> Result<(), KeyFileError> {
    use base64::Engine;
    let mut text = zeroize::Zeroizing::new(String::new());
    for (key, until) in keys {
        text.push_str(&format!(
            "{until} {}\n",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_bytes().as_slice())
        ));
    }
    replace_file(path, text.as_bytes())
}

/// Moves `from` over `to` and makes the rename durable.
pub fn promote(from: &Path, to: &Path) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: to.display().to_string(),
        reason: source,
    };
    std::fs::rename(from, to).map_err(io)?;
    sync_parent(to).map_err(io)
}

fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        reason: source,
    };
    let aside = path.with_extension("writing");
    let _ = std::fs::remove_file(&aside);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&aside).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    promote(&aside, path)
}
