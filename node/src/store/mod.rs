//! The hearth's storage behind one typed interface, on redb.
//!
//! Why redb and not sled: an event is acknowledged only once it is on disk. sled 0.34 flushes with
//! `sync_file_range`, which does not flush the drive's write cache (sled issue 1452, open), so an
//! acknowledged message could be lost on power failure. redb commits with `Durability::Immediate`
//! by default, which ends in `fsync`. See `spec/storage.md` for the check we ran.
//!
//! Writes of the hot path (events, inboxes, memberships) come only from the committer as one
//! [`Batch`] per group commit; accounts write their own small transactions.

mod accounts;
mod admin;
mod backup;
mod blocks;
mod media;
mod notices;
pub use admin::TokenRegistration;
pub use media::MediaCharge;
mod commit;
mod erasure;
mod health;
mod inbox;
mod journal;
mod key_packages;
mod outbox;
mod peers;
#[cfg(test)]
mod recovery_tests;
mod retention;
pub use retention::{PurgeStep, event_of_row, wire_envelope};
mod rooms;
pub mod tables;

pub use health::{StorageCondition, watch};

pub use accounts::RotateOutcome;
pub use commit::{Batch, Cursor, InboxEntry, Mark, NewEvent, Submitted, Txn};
pub use key_packages::PackageCount;
pub use rooms::{ResumedRoom, RoomOverview, SequencerState, StoredEvent};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hearth_spec::EventId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use tables::*;

/// A storage failure. Nothing is acknowledged when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("stored record does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("stored envelope does not decode: {0}")]
    Envelope(#[from] hearth_spec::envelope::DecodeError),
    /// Records that decode but do not fit together (an index naming a missing event).
    #[error("stored records disagree: {0}")]
    Corrupt(String),
    /// The commit journal could not be written or cut back.
    #[error("commit journal: {0}")]
    Journal(#[source] std::io::Error),
    /// Nothing can be written now (free space below the reserve, or the database is being
    /// reopened after a failed write); it may work again later.
    #[error("storage is unavailable: {0}")]
    Unavailable(&'static str),
}

impl StoreError {
    /// Whether this is an I/O failure of the database file (a full disk among them), after which
    /// the database must be reopened.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            StoreError::Db(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Events after a read mark that [`Store::unread_messages`] looks at.
pub const UNREAD_SCAN: u64 = 1000;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database is in use by a running hearth")]
    InUse,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A new database file's name could not be flushed to disk.
    #[error("cannot flush the folder of the new database: {0}")]
    Folder(#[source] std::io::Error),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

/// The id the commit journal must carry: made once, with the database.
fn journal_id(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    if let Some(id) = meta.get(JOURNAL_ID)? {
        return Ok(id.value());
    }
    let id = rand::random::<u64>();
    meta.insert(JOURNAL_ID, id)?;
    Ok(id)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(postcard::from_bytes(bytes)?)
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records encode")
}

/// The typed store.
pub struct Store {
    path: PathBuf,
    /// The page cache's size, kept for reopening.
    cache_bytes: usize,
    /// `None` while the database is being reopened after an I/O failure.
    db: RwLock<Option<Arc<Database>>>,
    /// A write failed with an I/O error: the watcher reopens the database.
    failed: AtomicBool,
    /// Free space is below the reserve: writes are refused before they could fail.
    low_space: AtomicBool,
    free_bytes: AtomicU64,
    /// Free bytes to keep (`storage.min_free_bytes`); 0 until the watcher starts.
    reserve: AtomicU64,
    /// The ids the outbound queues have given out (see [`outbox::OutboxIds`]).
    outbox_ids: outbox::OutboxIds,
    /// The commit journal: group commits are durable in it (see [`journal`]).
    journal: Mutex<journal::Journal>,
    /// Journal size past which a group commit is followed by a checkpoint.
    checkpoint_bytes: AtomicU64,
    /// Group commits the tests make fail next.
    #[cfg(test)]
    failing_commits: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn parse_id<T: std::str::FromStr>(text: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("stored id {text:?} does not parse")))
}

/// The page cache a store opened without a size gets (`storage.cache_bytes`'s default).
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Journal size past which the committer checkpoints (`storage.checkpoint_bytes`'s default).
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;

/// Where the commit journal of the database at `db` lives: next to it.
pub fn journal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

impl Store {
    /// Opens or creates the database file and its tables, with the default page cache.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens or creates the database file and its tables. redb keeps up to `cache_bytes` of
    /// pages in memory (its own default is 1 GiB, which a busy hearth fills).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, OpenError> {
        let new = !path.exists();
        let db = match Self::builder(cache_bytes).create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::InUse),
            Err(e) => return Err(StoreError::from(e).into()),
        };
        let txn = db.begin_write().map_err(StoreError::from)?;
        {
            txn.open_table(USERS).map_err(StoreError::from)?;
            txn.open_table(DEVICES).map_err(StoreError::from)?;
            txn.open_table(ROOMS).map_err(StoreError::from)?;
            txn.open_table(MEMBERS).map_err(StoreError::from)?;
            txn.open_table(ROOM_ADMINS).map_err(StoreError::from)?;
            txn.open_table(USER_ROOMS).map_err(StoreError::from)?;
            txn.open_table(EVENTS).map_err(StoreError::from)?;
            txn.open_table(EVENT_IDS).map_err(StoreError::from)?;
            txn.open_table(TXNS).map_err(StoreError::from)?;
            txn.open_table(INBOX).map_err(StoreError::from)?;
            txn.open_table(INBOX_HEADS).map_err(StoreError::from)?;
            txn.open_table(READ_MARKS).map_err(StoreError::from)?;
            txn.open_table(CURSORS).map_err(StoreError::from)?;
            txn.open_table(DELIVERED).map_err(StoreError::from)?;
            txn.open_table(PRESENCE).map_err(StoreError::from)?;
            txn.open_table(PUSHERS).map_err(StoreError::from)?;
            txn.open_table(SUBMITTED).map_err(StoreError::from)?;
            txn.open_table(OUTBOX).map_err(StoreError::from)?;
            txn.open_table(PEER_ROTATIONS).map_err(StoreError::from)?;
            txn.open_table(DISCOVERED).map_err(StoreError::from)?;
            txn.open_table(EPOCHS).map_err(StoreError::from)?;
            txn.open_table(KEY_PACKAGES).map_err(StoreError::from)?;
            txn.open_table(LAST_RESORT).map_err(StoreError::from)?;
            txn.open_table(ADMINS).map_err(StoreError::from)?;
            txn.open_table(AUDIT).map_err(StoreError::from)?;
            txn.open_table(REGISTRATION_TOKENS)
                .map_err(StoreError::from)?;
            txn.open_table(MEDIA).map_err(StoreError::from)?;
            txn.open_table(MEDIA_BY_USER).map_err(StoreError::from)?;
            txn.open_table(MEDIA_USAGE).map_err(StoreError::from)?;
            txn.open_table(DEVICE_SEEN).map_err(StoreError::from)?;
            txn.open_table(RETENTION).map_err(StoreError::from)?;
            txn.open_table(CLOSED_ROOMS).map_err(StoreError::from)?;
            txn.open_table(PURGE_FLOORS).map_err(StoreError::from)?;
            txn.open_table(BLOCKED_HEARTHS).map_err(StoreError::from)?;
            txn.open_table(NOTICES).map_err(StoreError::from)?;
            txn.open_table(NOTICES_READ).map_err(StoreError::from)?;
        }
        let id = journal_id(&txn)?;
        txn.commit().map_err(StoreError::from)?;
        if new {
            crate::ops::data_dir::sync_parent(path).map_err(OpenError::Folder)?;
        }
        let (journal, records) = journal::Journal::open(&journal_path(path), id)?;
        let store = Self {
            path: path.to_owned(),
            cache_bytes,
            db: RwLock::new(Some(Arc::new(db))),
            failed: AtomicBool::new(false),
            low_space: AtomicBool::new(false),
            free_bytes: AtomicU64::new(u64::MAX),
            reserve: AtomicU64::new(0),
            outbox_ids: outbox::OutboxIds::default(),
            journal: Mutex::new(journal),
            checkpoint_bytes: AtomicU64::new(DEFAULT_CHECKPOINT_BYTES),
            #[cfg(test)]
            failing_commits: std::sync::atomic::AtomicU32::new(0),
        };
        {
            let db = store.database()?;
            let mut journal = store.journal.lock().expect("journal lock");
            store.recover(&db, &mut journal, records)?;
        }
        Ok(store)
    }

    /// Checkpoints once the journal has grown past `bytes` (`storage.checkpoint_bytes`).
    pub fn set_checkpoint_bytes(&self, bytes: u64) {
        self.checkpoint_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Writes the journal's file ahead to the length it reaches before a checkpoint
    /// ([`journal::Journal::write_ahead`]), unless that could leave less than `reserve` bytes free
    /// on its disk. Returns the bytes written.
    pub fn write_journal_ahead(&self, reserve: u64) -> Result<u64, StoreError> {
        let bytes = self
            .checkpoint_bytes
            .load(Ordering::Relaxed)
            .saturating_add(commit::DIRECT_COMMIT_BYTES as u64);
        if health::free_bytes(&self.path).is_none_or(|free| free < bytes.saturating_add(reserve)) {
            return Ok(0);
        }
        let mut journal = self.journal.lock().expect("journal lock");
        journal.write_ahead(bytes).map_err(StoreError::Journal)
    }

    fn builder(cache_bytes: usize) -> redb::Builder {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache_bytes);
        builder
    }

    fn database(&self) -> Result<Arc<Database>, StoreError> {
        // After a failed write redb refuses everything until reopened: say so plainly.
        if self.failed.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(
                "a write failed (disk full or an I/O error); the database is being reopened",
            ));
        }
        self.db
            .read()
            .expect("database lock")
            .clone()
            .ok_or(StoreError::Unavailable(
                "the database is being reopened after a failed write",
            ))
    }

    /// Remembers an I/O failure so that the watcher reopens the database.
    fn noting(&self, e: StoreError) -> StoreError {
        if e.is_io() {
            self.failed.store(true, Ordering::Relaxed);
        }
        e
    }

    /// A write transaction, unless writes are refused for now. Free space is measured here too
    /// (one `statvfs`), not only by the watcher: a disk can fill between two of its checks.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        if self.low_space.load(Ordering::Relaxed) || !self.space_left() {
            return Err(StoreError::Unavailable(
                "free disk space is below the configured reserve",
            ));
        }
        self.database()?
            .begin_write()
            .map_err(|e| self.noting(e.into()))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.database()?
            .begin_read()
            .map_err(|e| self.noting(e.into()))
    }

    /// Reads and decodes one postcard record.
    fn read_record<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
        &self,
        definition: TableDefinition<K, &'static [u8]>,
        key: K::SelfType<'_>,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(definition)?;
        table.get(key)?.map(|v| decode(v.value())).transpose()
    }

    // ---- accounts ----
}

/// The rows of a table keyed by (first, second) whose first part is `first`, in key order, each
/// turned into a `T` by `row(second, value)`.
fn rows_under<V: redb::Value + 'static, T>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    first: &str,
    mut row: impl FnMut(&str, V::SelfType<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range((first, "")..)? {
        let (k, v) = entry?;
        let (head, second) = k.value();
        if head != first {
            break;
        }
        out.push(row(second, v.value())?);
    }
    Ok(out)
}

fn event_id_from(bytes: &[u8]) -> Result<EventId, StoreError> {
    Ok(EventId(bytes.try_into().map_err(|_| {
        StoreError::Corrupt("stored event id has the wrong length".into())
    })?))
}

fn raise(
    table: &mut redb::Table<(&'static str, &'static str), u64>,
    key: (&str, &str),
    value: u64,
) -> Result<(), StoreError> {
    let current = table.get(key)?.map(|v| v.value()).unwrap_or(0);
    if value > current {
        table.insert(key, value)?;
    }
    Ok(())
}

#[cfg(test)]
impl Store {
    /// Makes the next `n` group commits fail as a full disk would.
    pub(crate) fn fail_commits(&self, n: u32) {
        self.failing_commits.store(n, Ordering::Relaxed);
    }

    fn failing_commit(&self) -> bool {
        self.failing_commits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A store in a fresh temporary folder, for the tests of every area.
#[cfg(test)]
fn scratch() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_spec::{DeviceId, RoomId, UserId};
    use redb::ReadableTableMetadata;

    fn store() -> (tempfile::TempDir, Store) {
        scratch()
    }

    #[test]
    fn second_open_of_the_same_file_reports_in_use() {
        let (dir, _store) = store();
        assert!(matches!(
            Store::open(&dir.path().join("db")),
            Err(OpenError::InUse)
        ));
    }

    #[test]
    fn a_transaction_finds_its_event_in_rows_of_either_version() {
        let (_dir, store) = store();
        let room = RoomId::parse("!r:localhost").unwrap();
        let user = UserId::parse("@a:localhost").unwrap();
        let device = DeviceId::parse("D").unwrap();
        let (old, new) = (EventId([1; 32]), EventId([2; 32]));
        // An earlier version's rows: the id alone, its place in EVENT_IDS.
        let txn = store.begin_write().unwrap();
        txn.open_table(TXNS)
            .unwrap()
            .insert(("@a:localhost", "D", "old"), old.0.as_slice())
            .unwrap();
        txn.open_table(EVENT_IDS)
            .unwrap()
            .insert(old.0.as_slice(), ("!r:localhost", 3))
            .unwrap();
        txn.commit().unwrap();
        let mut batch = Batch::default();
        batch.txns.push(Txn {
            user: user.clone(),
            device: device.clone(),
            txn: "new".into(),
            event: new,
            room: room.clone(),
            seq: 9,
        });
        store.commit(&batch).unwrap();
        assert_eq!(
            store.txn_event(&user, &device, "old").unwrap(),
            Some((room.clone(), Some(3), old))
        );
        assert_eq!(
            store.txn_event(&user, &device, "new").unwrap(),
            Some((room.clone(), Some(9), new))
        );
        assert_eq!(store.txn_event(&user, &device, "none").unwrap(), None);
        // Nothing new goes to EVENT_IDS.
        let read = store.begin_read().unwrap();
        assert_eq!(read.open_table(EVENT_IDS).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn events_page_backwards_in_order() {
        let (_dir, store) = store();
        let room = RoomId::parse("!r:localhost").unwrap();
        let mut batch = Batch::default();
        for seq in 1..=10u64 {
            batch.events.push(NewEvent {
                room: room.clone(),
                seq,
                id: EventId::of_bytes(&seq.to_be_bytes()),
                bytes: vec![seq as u8],
                sender: UserId::parse("@a:localhost").unwrap(),
            });
        }
        store.commit(&batch).unwrap();
        assert_eq!(store.last_seq(&room).unwrap(), 10);
        let page = store.events_before(&room, 11, 4).unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        let page = store.events_before(&room, 3, 4).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        let other = RoomId::parse("!s:localhost").unwrap();
        assert_eq!(store.last_seq(&other).unwrap(), 0);
    }
}
