//! The device's state on its storage: a snapshot of every row (`rows.rs`) and a journal of the
//! rows each save changed since. A save appends one frame (the changed rows) and flushes it, so
//! a message costs the rows it touched; when the journal outgrows the snapshot, the state is
//! written whole again and the journal emptied. That rewrite (fsyncs of a new file, a rename and
//! the folder) waits for a moment off a message's path: a save past the journal's limit still
//! appends and marks the rewrite due, and [`StateWriter::compact`] makes it (after a message has
//! left, or at the flush before an acknowledgement); only a journal at twice its limit is
//! rewritten in the save itself. A ratchet step used to encrypt is saved before the message
//! leaves the device, so a restart never reuses a key.
//!
//! Encoding (versions, frames, decoding old formats) is here and does no I/O; where the bytes
//! live is a [`StateStorage`]: files with fsync natively (`hearth_client::StateFile`), IndexedDB
//! in a browser.
//!
//! Saves of what only this device sees (a message received, a message kept, the inbox cursor)
//! may be appended without a flush ([`StateWriter::save_unflushed`]): a crash of the process
//! loses none of them (the OS holds the bytes), a crash of the machine may lose them, and the
//! device then receives those events again from the hearth, whose cursor it acknowledges only
//! after a flush. Anything encrypted leaves only after a flushed save, which flushes every
//! append before it too.
//!
//! A crash leaves the snapshot old or new (it is replaced whole) and the journal with a prefix
//! of what was appended: a frame whose length runs past the end or whose checksum fails ends the
//! journal. Only unflushed appends can be damaged, and every frame after a damaged one was
//! appended after it and flushed no sooner, so the journal up to it is everything the device
//! flushed (a device that opens writes its state whole before it appends again). Frames name
//! the snapshot generation they follow; frames of an older one (a crash between writing a new
//! snapshot and emptying the journal) are already in the snapshot and are skipped.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::E2eeError;
use super::rows::{self, MlsEntries, Rows, Written};
use super::saved::{Entries, STATE_VERSION, Saved};

/// Journal bytes allowed past the snapshot's own size before the state is written whole again.
pub const JOURNAL_SLACK: usize = 64 * 1024;

/// The records of a device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Record {
    /// The snapshot (versions 2–4: the whole state but key packages).
    State,
    /// Versions 2–4 only: the key packages. Emptied once the state is in version 5 or later.
    Keys,
    /// Frames of changed rows, appended since the snapshot.
    Journal,
}

/// Where a device's records live. Writes are durable when they return, or (a browser's
/// asynchronous IndexedDB) before the device's next request leaves it: either way nothing
/// encrypted with a state is sent before that state is saved.
pub trait StateStorage: std::fmt::Debug + MaybeSend {
    /// A record's bytes; `None` for a record never written.
    fn read(&self, record: Record) -> Result<Option<Vec<u8>>, E2eeError>;
    /// Replaces a record whole and durably: after a crash, either the old or the new bytes.
    fn replace(&mut self, record: Record, bytes: &[u8]) -> Result<(), E2eeError>;
    /// Appends to the journal durably (with every append before it): after a crash, the journal
    /// holds what it held and a prefix of `bytes`.
    fn append_journal(&mut self, bytes: &[u8]) -> Result<(), E2eeError>;
    /// Appends to the journal without waiting for the disk: durable once a later
    /// [`Self::append_journal`] or [`Self::flush_journal`] returns. Storage without that
    /// difference appends durably.
    fn append_journal_unflushed(&mut self, bytes: &[u8]) -> Result<(), E2eeError> {
        self.append_journal(bytes)
    }
    /// Makes every append so far durable, those of an earlier process that stopped without
    /// flushing them included (a device opened on them appends after them).
    fn flush_journal(&mut self) -> Result<(), E2eeError> {
        Ok(())
    }
    /// Whether [`Self::append_journal_unflushed`] returns before the disk has the bytes, which
    /// are then in the operating system's hands: a crash of the process loses none of them, a
    /// crash of the machine may lose any not flushed since.
    fn flushes_later(&self) -> bool {
        false
    }
    /// Journal bytes past which the state is written whole, for a snapshot of `snapshot_len`
    /// bytes. Storage without a cheap append answers 0: every save then writes the state whole.
    fn journal_limit(&self, snapshot_len: usize) -> usize {
        snapshot_len + JOURNAL_SLACK
    }
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

/// Format version of the key package file of versions 2–4.
const KEYS_VERSION: u8 = 2;

/// The key package file of versions 2–4.
#[derive(Debug, Deserialize)]
struct KeyFile {
    version: u8,
    entries: Entries,
}

/// The snapshot record: every row.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    version: u8,
    generation: u64,
    rows: Rows,
}

/// One journal frame's contents: the rows one save wrote and deleted.
#[derive(Debug, Serialize, Deserialize)]
struct Change {
    generation: u64,
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    deletes: Vec<Vec<u8>>,
}

/// Frame header: payload length (u32 LE) and the first 8 bytes of the payload's SHA-256.
const FRAME_HEADER: usize = 12;

fn frame(change: &Change) -> Result<Vec<u8>, E2eeError> {
    let payload = postcard::to_stdvec(change).map_err(E2eeError::Encode)?;
    let mut bytes = Vec::with_capacity(FRAME_HEADER + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&payload)[..8]);
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Applies the journal's whole frames of `generation` to `rows`; returns the bytes it held in
/// whole frames.
pub(super) fn replay(
    rows: &mut Rows,
    generation: u64,
    journal: &[u8],
    path: impl Fn() -> String,
) -> Result<usize, E2eeError> {
    let mut at = 0;
    while let Some(header) = journal.get(at..at + FRAME_HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = journal.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else {
            break;
        };
        if Sha256::digest(payload)[..8] != header[4..] {
            break;
        }
        let change: Change = postcard::from_bytes(payload).map_err(|source| E2eeError::Decode {
            path: path(),
            source,
        })?;
        if change.generation == generation {
            for key in change.deletes {
                rows.remove(&key);
            }
            rows.extend(change.puts);
        }
        at += FRAME_HEADER + len;
    }
    Ok(at)
}

/// A device's storage and what is on it.
#[derive(Debug)]
pub struct StateWriter {
    storage: Box<dyn StateStorage>,
    /// The state as the snapshot and journal hold it.
    written: Written,
    generation: u64,
    snapshot_len: usize,
    journal_len: usize,
    /// The next save writes the state whole: the journal's end is not known to be a whole frame
    /// (the device just opened, or an append failed), or a version 2–4 key file is left.
    whole_next: bool,
    stale_keys: bool,
    /// Frames appended since the last flush.
    unflushed: bool,
    /// The journal has passed its limit: [`Self::compact`] writes the state whole.
    compact_due: bool,
}

/// What a device's storage held.
pub struct Loaded {
    pub saved: Saved,
    /// The openmls entries not in `saved.storage` (the key packages of a version 2–4 state).
    pub keys: Entries,
}

impl StateWriter {
    /// Reads the state kept in `storage` (any version); `None` for a device that never saved.
    pub fn open(storage: Box<dyn StateStorage>) -> Result<(Self, Option<Loaded>), E2eeError> {
        let mut writer = Self {
            storage,
            written: Written::default(),
            generation: 0,
            snapshot_len: 0,
            journal_len: 0,
            whole_next: true,
            stale_keys: false,
            unflushed: false,
            compact_due: false,
        };
        let loaded = writer.load()?;
        Ok((writer, loaded))
    }

    fn load(&mut self) -> Result<Option<Loaded>, E2eeError> {
        let storage = self.storage.as_ref();
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
        let old: Saved = match bytes.first() {
            Some(2) => postcard::from_bytes::<super::store_v2::SavedV2>(&bytes)
                .map_err(|e| corrupt(Record::State, e))?
                .into(),
            Some(3) => postcard::from_bytes::<super::store_v3::SavedV3>(&bytes)
                .map_err(|e| corrupt(Record::State, e))?
                .into(),
            Some(4) => postcard::from_bytes::<super::store_v4::SavedV4>(&bytes)
                .map_err(|e| corrupt(Record::State, e))?
                .into(),
            _ => {
                let snapshot: Snapshot =
                    postcard::from_bytes(&bytes).map_err(|e| corrupt(Record::State, e))?;
                // Version 5 is version 6 without leases: read alike, then written whole.
                let current = snapshot.version == STATE_VERSION;
                if !current && snapshot.version != 5 {
                    return Err(unknown(Record::State, snapshot.version));
                }
                let mut rows = snapshot.rows;
                let journal = storage.read(Record::Journal)?.unwrap_or_default();
                let whole = replay(&mut rows, snapshot.generation, &journal, || {
                    storage.describe(Record::Journal)
                })?;
                let (mut saved, entries) = rows::saved_of(&rows).map_err(|e| {
                    E2eeError::Unfit(format!(
                        "the device state in {}: {e}",
                        storage.describe(Record::State)
                    ))
                })?;
                self.stale_keys = storage.read(Record::Keys)?.is_some_and(|k| !k.is_empty());
                self.generation = snapshot.generation;
                // A journal that ends in whole frames is appended to as it is: opening a device
                // does not write its state whole (megabytes for one with history, on every
                // start of a command-line client). One cut short by a crash is never appended
                // to: the first save writes the state whole.
                if current && whole == journal.len() && !self.stale_keys {
                    let mls: MlsEntries = entries.iter().cloned().collect();
                    self.written = Written::of(&saved, &mls);
                    self.snapshot_len = bytes.len();
                    self.journal_len = journal.len();
                    self.compact_due =
                        self.journal_len > self.storage.journal_limit(self.snapshot_len);
                    self.whole_next = !self.appends();
                    // Frames a crashed process left unflushed may be in the OS's cache only:
                    // the first flush makes them durable with this process's own.
                    self.unflushed = !journal.is_empty();
                }
                saved.storage = entries;
                return Ok(Some(Loaded {
                    saved,
                    keys: Vec::new(),
                }));
            }
        };
        let keys = match storage.read(Record::Keys)? {
            None => Vec::new(),
            Some(bytes) => {
                let file: KeyFile =
                    postcard::from_bytes(&bytes).map_err(|e| corrupt(Record::Keys, e))?;
                if file.version != KEYS_VERSION {
                    return Err(unknown(Record::Keys, file.version));
                }
                self.stale_keys = true;
                file.entries
            }
        };
        Ok(Some(Loaded { saved: old, keys }))
    }

    /// Saves the state `saved` with the openmls storage `mls` durably: the changed rows as one
    /// journal frame, or the whole state when the journal is long enough. Saves before it that
    /// were not flushed are durable too when it returns.
    pub fn save(&mut self, saved: &Saved, mls: &MlsEntries) -> Result<(), E2eeError> {
        self.save_as(saved, mls, true)
    }

    /// Like [`Self::save`], but the frame is not flushed: see the module's notes for which
    /// changes may wait, and [`Self::flush`].
    pub fn save_unflushed(&mut self, saved: &Saved, mls: &MlsEntries) -> Result<(), E2eeError> {
        self.save_as(saved, mls, false)
    }

    /// Makes every save so far durable.
    pub fn flush(&mut self) -> Result<(), E2eeError> {
        if !self.unflushed {
            return Ok(());
        }
        // A failed flush may have dropped the pages it could not write: the next save writes
        // the state whole rather than append after frames that may not be there.
        self.whole_next = true;
        self.storage.flush_journal()?;
        self.whole_next = false;
        self.unflushed = false;
        Ok(())
    }

    fn save_as(&mut self, saved: &Saved, mls: &MlsEntries, flush: bool) -> Result<(), E2eeError> {
        if self.whole_next || !self.appends() {
            return self.save_whole(saved, mls);
        }
        // From here `written` counts the change as written: if it is not, `whole_next` stays
        // set and the next save writes everything.
        self.whole_next = true;
        let (puts, deletes) = self.written.changes(saved, mls);
        if puts.is_empty() && deletes.is_empty() {
            self.whole_next = false;
            return if flush { self.flush() } else { Ok(()) };
        }
        let bytes = frame(&Change {
            generation: self.generation,
            puts,
            deletes,
        })?;
        let limit = self.storage.journal_limit(self.snapshot_len);
        let journal_len = self.journal_len + bytes.len();
        if journal_len > 2 * limit {
            return self.save_whole(saved, mls);
        }
        // Until this append is known whole, nothing more is appended after it.
        if flush {
            self.storage.append_journal(&bytes)?;
        } else {
            self.storage.append_journal_unflushed(&bytes)?;
        }
        self.unflushed = !flush;
        self.whole_next = false;
        self.journal_len = journal_len;
        self.compact_due = journal_len > limit;
        Ok(())
    }

    /// Writes the state whole and empties the journal if the journal has outgrown its limit,
    /// else flushes: every save so far is durable when it returns.
    pub fn compact(&mut self, saved: &Saved, mls: &MlsEntries) -> Result<(), E2eeError> {
        if self.compact_due {
            self.save_whole(saved, mls)
        } else {
            self.flush()
        }
    }

    /// Whether a save made with [`Self::save_unflushed`] may be lost to a crash of the machine
    /// (never to a crash of the process).
    pub fn flushes_later(&self) -> bool {
        self.appends() && self.storage.flushes_later()
    }

    /// Whether this storage takes journal frames (else every save writes the state whole).
    fn appends(&self) -> bool {
        self.storage.journal_limit(self.snapshot_len) > 0
    }

    /// Writes every row as a new snapshot, then empties the journal (and a left-over key file).
    fn save_whole(&mut self, saved: &Saved, mls: &MlsEntries) -> Result<(), E2eeError> {
        self.whole_next = true;
        let generation = self.generation + 1;
        let bytes = rows::snapshot_of(STATE_VERSION, generation, saved, mls);
        self.storage.replace(Record::State, &bytes)?;
        // The snapshot holds what unflushed frames held.
        self.unflushed = false;
        self.compact_due = false;
        self.generation = generation;
        self.snapshot_len = bytes.len();
        // The frames left in the journal belong to an older generation: skipped if it is not
        // emptied, and the next save tries again.
        self.storage.replace(Record::Journal, &[])?;
        self.journal_len = 0;
        if self.stale_keys {
            self.storage.replace(Record::Keys, &[])?;
            self.stale_keys = false;
        }
        // What the next save compares against, where it can append.
        self.written = if self.appends() {
            Written::of(saved, mls)
        } else {
            Written::default()
        };
        self.whole_next = false;
        Ok(())
    }

    /// Bytes of the snapshot and of the journal, as written by this writer.
    pub fn sizes(&self) -> (usize, usize) {
        (self.snapshot_len, self.journal_len)
    }
}
