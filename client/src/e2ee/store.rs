//! The device's state on disk: one file written whole and atomically (temporary file, fsync,
//! rename, directory fsync) after every change, so a crash leaves either the old state or the
//! new one, never a mix. A ratchet step that was used to encrypt is saved before the message
//! leaves the device, so a restart never reuses a key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::E2eeError;
use super::saved::{Entries, STATE_VERSION, Saved};

/// Format version of the key package file (unchanged since 2).
const KEYS_VERSION: u8 = 2;

/// The key package file's contents.
#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    version: u8,
    entries: Entries,
}

/// The state files of one device, locked for as long as they are open: two processes working on
/// one device's state would overwrite each other's ratchets and could reuse a key.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    keys_path: PathBuf,
    _lock: std::fs::File,
}

impl StateFile {
    /// `<dir>/mls-state.bin` and `<dir>/mls-keys.bin`, locked through `<dir>/mls-state.lock`.
    pub fn in_dir(dir: &Path) -> Result<Self, E2eeError> {
        crate::durable_file::create_dir_all(dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("mls-state.lock"))?;
        if lock.try_lock().is_err() {
            return Err(E2eeError::InUse(dir.display().to_string()));
        }
        Ok(Self {
            path: dir.join("mls-state.bin"),
            keys_path: dir.join("mls-keys.bin"),
            _lock: lock,
        })
    }

    /// The saved state and key packages; `None` for a device that never saved.
    pub fn load(&self) -> Result<Option<(Saved, Entries)>, E2eeError> {
        let Some(bytes) = read_if_exists(&self.path)? else {
            return Ok(None);
        };
        let corrupt = |path: &Path, source| E2eeError::Decode {
            path: path.display().to_string(),
            source,
        };
        let unknown = |path: &Path, version| E2eeError::UnknownVersion {
            path: path.display().to_string(),
            version,
        };
        let saved: Saved = match bytes.first() {
            Some(2) => postcard::from_bytes::<super::store_v2::SavedV2>(&bytes)
                .map_err(|e| corrupt(&self.path, e))?
                .into(),
            Some(3) => postcard::from_bytes::<super::store_v3::SavedV3>(&bytes)
                .map_err(|e| corrupt(&self.path, e))?
                .into(),
            _ => postcard::from_bytes(&bytes).map_err(|e| corrupt(&self.path, e))?,
        };
        if saved.version != STATE_VERSION {
            return Err(unknown(&self.path, saved.version));
        }
        let keys = match read_if_exists(&self.keys_path)? {
            None => Vec::new(),
            Some(bytes) => {
                let file: KeyFile =
                    postcard::from_bytes(&bytes).map_err(|e| corrupt(&self.keys_path, e))?;
                if file.version != KEYS_VERSION {
                    return Err(unknown(&self.keys_path, file.version));
                }
                file.entries
            }
        };
        Ok(Some((saved, keys)))
    }

    /// Saves the state (everything but key packages).
    pub fn save(&self, saved: &Saved) -> Result<(), E2eeError> {
        let bytes = postcard::to_stdvec(saved).map_err(E2eeError::Encode)?;
        Ok(crate::durable_file::replace(&self.path, &bytes)?)
    }

    /// Saves the key packages. Called after [`Self::save`] of the same change: a crash between
    /// the two then leaves a used package on disk (harmless: the hearth handed it out once),
    /// never a joined group without its state.
    pub fn save_keys(&self, entries: &Entries) -> Result<(), E2eeError> {
        let file = KeyFile {
            version: KEYS_VERSION,
            entries: entries.clone(),
        };
        let bytes = postcard::to_stdvec(&file).map_err(E2eeError::Encode)?;
        Ok(crate::durable_file::replace(&self.keys_path, &bytes)?)
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, E2eeError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(E2eeError::Io(e)),
    }
}
