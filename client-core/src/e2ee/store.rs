//! The device's state as two records (the state, and the key packages), each replaced whole
//! after every change, so a crash leaves either the old record or the new one, never a mix. A
//! ratchet step that was used to encrypt is saved before the message leaves the device, so a
//! restart never reuses a key.
//!
//! Encoding (versions, decoding old formats) is here and does no I/O; where the bytes live is
//! a [`StateStorage`]: files with fsync natively (`hearth_client::StateFile`), IndexedDB in a
//! browser.

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

/// The two records of a device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Record {
    /// Everything but key packages; written after every change.
    State,
    /// The key packages not yet used; written when they change.
    Keys,
}

/// Where a device's records live. `replace` makes the new bytes durable before it returns, or
/// (a browser's asynchronous IndexedDB) before the device's next request leaves it: either way
/// nothing encrypted with a state is sent before that state is saved.
pub trait StateStorage: std::fmt::Debug + MaybeSend {
    /// A record's bytes; `None` for a record never written.
    fn read(&self, record: Record) -> Result<Option<Vec<u8>>, E2eeError>;
    /// Replaces a record whole and durably: after a crash, either the old or the new bytes.
    fn replace(&mut self, record: Record, bytes: &[u8]) -> Result<(), E2eeError>;
    /// Where a record lives, for error messages.
    fn describe(&self, record: Record) -> String;
}

/// `Send` natively, where a device moves between threads; nothing in a browser, whose storage
/// handles are JavaScript objects bound to one thread.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSend for T {}

/// The saved state and key packages; `None` for a device that never saved.
pub fn load(storage: &dyn StateStorage) -> Result<Option<(Saved, Entries)>, E2eeError> {
    let Some(bytes) = storage.read(Record::State)? else {
        return Ok(None);
    };
    let corrupt = |record, source| E2eeError::Decode {
        path: storage.describe(record),
        source,
    };
    let unknown = |record, version| E2eeError::UnknownVersion {
        path: storage.describe(record),
        version,
    };
    let saved: Saved = match bytes.first() {
        Some(2) => postcard::from_bytes::<super::store_v2::SavedV2>(&bytes)
            .map_err(|e| corrupt(Record::State, e))?
            .into(),
        Some(3) => postcard::from_bytes::<super::store_v3::SavedV3>(&bytes)
            .map_err(|e| corrupt(Record::State, e))?
            .into(),
        _ => postcard::from_bytes(&bytes).map_err(|e| corrupt(Record::State, e))?,
    };
    if saved.version != STATE_VERSION {
        return Err(unknown(Record::State, saved.version));
    }
    let keys = match storage.read(Record::Keys)? {
        None => Vec::new(),
        Some(bytes) => {
            let file: KeyFile =
                postcard::from_bytes(&bytes).map_err(|e| corrupt(Record::Keys, e))?;
            if file.version != KEYS_VERSION {
                return Err(unknown(Record::Keys, file.version));
            }
            file.entries
        }
    };
    Ok(Some((saved, keys)))
}

/// Saves the state (everything but key packages).
pub fn save(storage: &mut dyn StateStorage, saved: &Saved) -> Result<(), E2eeError> {
    let bytes = postcard::to_stdvec(saved).map_err(E2eeError::Encode)?;
    storage.replace(Record::State, &bytes)
}

/// Saves the key packages. Called after [`save`] of the same change: a crash between the two
/// then leaves a used package saved (harmless: the hearth handed it out once), never a joined
/// group without its state.
pub fn save_keys(storage: &mut dyn StateStorage, entries: &Entries) -> Result<(), E2eeError> {
    let file = KeyFile {
        version: KEYS_VERSION,
        entries: entries.clone(),
    };
    let bytes = postcard::to_stdvec(&file).map_err(E2eeError::Encode)?;
    storage.replace(Record::Keys, &bytes)
}
