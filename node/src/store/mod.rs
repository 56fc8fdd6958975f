//! The hearth's storage behind one typed interface, on redb.
//!
//! Why redb and not sled: an event is acknowledged only once it is on disk. sled 0.34 flushes with
//! `sync_file_range`, which does not flush the drive's write cache (sled issue 1452, open), so an
//! acknowledged message could be lost on power failure. redb commits with `Durability::Immediate`
//! by default, which ends in `fsync`. See `spec/storage.md` for the check we ran.
//!
//! Writes of the hot path (events, inboxes, memberships) come only from the committer as one
//! [`Batch`] per group commit; accounts write their own small transactions.

mod health;
mod key_packages;
pub mod tables;

pub use health::{StorageCondition, watch};

pub use key_packages::PackageCount;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hearth_spec::{DeviceId, EventId, RoomId, ServerName, UserId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use tables::*;

/// A storage failure. Nothing is acknowledged when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
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
    redb::CommitError
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
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records encode")
}

/// Writes of one group commit, applied in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub rooms: Vec<(RoomId, RoomRecord)>,
    /// (room, seq, id, encoded envelope, sender).
    pub events: Vec<(RoomId, u64, EventId, Vec<u8>, UserId)>,
    pub joins: Vec<(RoomId, UserId)>,
    pub leaves: Vec<(RoomId, UserId)>,
    pub txns: Vec<(UserId, DeviceId, String, EventId)>,
    pub inbox: Vec<(UserId, u64, RoomId, u64)>,
    pub read_marks: Vec<(UserId, RoomId, u64)>,
    pub delivered: Vec<(UserId, RoomId, u64)>,
    pub cursors: Vec<(UserId, DeviceId, u64)>,
    /// Sends to rooms homed elsewhere, accepted here: (user, device, txn, room, event id).
    pub submitted: Vec<(UserId, DeviceId, String, RoomId, EventId)>,
    /// Entries for the outbound queues, in order per destination.
    pub outbox: Vec<(ServerName, OutItem)>,
    /// Rooms whose MLS epoch moved: (room, the epoch the next commit must be made in).
    pub epochs: Vec<(RoomId, u64)>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
            && self.events.is_empty()
            && self.joins.is_empty()
            && self.leaves.is_empty()
            && self.txns.is_empty()
            && self.inbox.is_empty()
            && self.read_marks.is_empty()
            && self.delivered.is_empty()
            && self.cursors.is_empty()
            && self.submitted.is_empty()
            && self.outbox.is_empty()
            && self.epochs.is_empty()
    }
}

/// A stored event with its place.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub envelope: Vec<u8>,
}

/// What the sequencer needs to resume after a restart.
#[derive(Debug, Default)]
pub struct SequencerState {
    /// (room, record, last seq, members, MLS epoch).
    pub rooms: Vec<(RoomId, RoomRecord, u64, Vec<UserId>, u64)>,
    pub inbox_heads: Vec<(UserId, u64)>,
}

/// The typed store.
pub struct Store {
    path: PathBuf,
    /// `None` while the database is being reopened after an I/O failure.
    db: RwLock<Option<Arc<Database>>>,
    /// A write failed with an I/O error: the watcher reopens the database.
    failed: AtomicBool,
    /// Free space is below the reserve: writes are refused before they could fail.
    low_space: AtomicBool,
    free_bytes: AtomicU64,
    /// Free bytes to keep (`storage.min_free_bytes`); 0 until the watcher starts.
    reserve: AtomicU64,
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

impl Store {
    /// Opens or creates the database file and its tables.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let new = !path.exists();
        let db = match Database::create(path) {
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
        }
        txn.commit().map_err(StoreError::from)?;
        if new {
            crate::ops::data_dir::sync_parent(path).map_err(OpenError::Folder)?;
        }
        Ok(Self {
            path: path.to_owned(),
            db: RwLock::new(Some(Arc::new(db))),
            failed: AtomicBool::new(false),
            low_space: AtomicBool::new(false),
            free_bytes: AtomicU64::new(u64::MAX),
            reserve: AtomicU64::new(0),
        })
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

    /// Inserts a user unless one with that id exists; returns whether it was inserted.
    pub fn insert_user(&self, user: &UserId, record: &UserRecord) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let inserted = {
            let mut users = txn.open_table(USERS)?;
            if users.get(user.as_str())?.is_some() {
                false
            } else {
                users.insert(user.as_str(), encode(record).as_slice())?;
                true
            }
        };
        txn.commit()?;
        Ok(inserted)
    }

    /// Replaces a user's record.
    pub fn put_user(&self, user: &UserId, record: &UserRecord) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(USERS)?
            .insert(user.as_str(), encode(record).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// A user's record.
    pub fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read_record(USERS, user.as_str())
    }

    /// Every local user, in id order.
    pub fn users(&self) -> Result<Vec<(UserId, UserRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let users = txn.open_table(USERS)?;
        users
            .iter()?
            .map(|row| {
                let (k, v) = row?;
                Ok((parse_id(k.value())?, decode(v.value())?))
            })
            .collect()
    }

    /// Inserts or replaces a device.
    pub fn put_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        record: &DeviceRecord,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(DEVICES)?
            .insert((user.as_str(), device.as_str()), encode(record).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Replaces a device's refresh hash only if it still equals `expected` (single use).
    pub fn rotate_refresh(
        &self,
        user: &UserId,
        device: &DeviceId,
        expected: [u8; 32],
        next: [u8; 32],
    ) -> Result<RotateOutcome, StoreError> {
        let txn = self.begin_write()?;
        let outcome = {
            let mut devices = txn.open_table(DEVICES)?;
            let key = (user.as_str(), device.as_str());
            let current: Option<DeviceRecord> =
                devices.get(key)?.map(|v| decode(v.value())).transpose()?;
            match current {
                None => RotateOutcome::NoDevice,
                Some(mut record) if record.refresh_hash == expected => {
                    record.refresh_hash = next;
                    devices.insert(key, encode(&record).as_slice())?;
                    RotateOutcome::Rotated
                }
                Some(_) => RotateOutcome::Mismatch,
            }
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// A device's record.
    pub fn device(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.read_record(DEVICES, (user.as_str(), device.as_str()))
    }

    /// Removes devices (and their cursors); returns how many existed.
    pub fn delete_devices(&self, user: &UserId, ids: &[DeviceId]) -> Result<usize, StoreError> {
        let txn = self.begin_write()?;
        let mut removed = 0;
        {
            let mut devices = txn.open_table(DEVICES)?;
            let mut cursors = txn.open_table(CURSORS)?;
            let mut pushers = txn.open_table(PUSHERS)?;
            for device in ids {
                let key = (user.as_str(), device.as_str());
                if devices.remove(key)?.is_some() {
                    removed += 1;
                }
                cursors.remove(key)?;
                pushers.remove(key)?;
            }
        }
        for device in ids {
            Self::drop_key_packages(&txn, user, device)?;
        }
        txn.commit()?;
        Ok(removed)
    }

    /// A user's devices, in id order.
    pub fn devices(&self, user: &UserId) -> Result<Vec<(DeviceId, DeviceRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        rows_under(&devices, user.as_str(), |device, record| {
            Ok((parse_id(device)?, decode(record)?))
        })
    }

    /// Every (user, device) pair, to build the set of live sessions at start.
    pub fn all_devices(&self) -> Result<Vec<(UserId, DeviceId)>, StoreError> {
        let txn = self.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        devices
            .iter()?
            .map(|row| {
                let (k, _) = row?;
                let (user, device) = k.value();
                Ok((parse_id(user)?, parse_id(device)?))
            })
            .collect()
    }

    // ---- rooms and events (reads) ----

    /// A room's record.
    pub fn room(&self, room: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        self.read_record(ROOMS, room.as_str())
    }

    /// Whether `user` is a current member of `room`.
    pub fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool, StoreError> {
        let txn = self.begin_read()?;
        let members = txn.open_table(MEMBERS)?;
        Ok(members.get((room.as_str(), user.as_str()))?.is_some())
    }

    /// A room's current members, in id order.
    pub fn members(&self, room: &RoomId) -> Result<Vec<UserId>, StoreError> {
        let txn = self.begin_read()?;
        let members = txn.open_table(MEMBERS)?;
        rows_under(&members, room.as_str(), |user, ()| parse_id(user))
    }

    /// The rooms a user is in now.
    pub fn user_rooms(&self, user: &UserId) -> Result<Vec<RoomId>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(USER_ROOMS)?;
        rows_under(&table, user.as_str(), |room, ()| parse_id(room))
    }

    /// The latest sequence number of a room (0 if it has no events).
    pub fn last_seq(&self, room: &RoomId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        last_seq_in(&events, room)
    }

    /// How many messages from others `room` holds after `seq`: what a user whose read mark is
    /// `seq` has not read (membership, key changes and their own messages do not count). The
    /// first [`UNREAD_SCAN`] events after the mark are looked at; any beyond count as messages.
    pub fn unread_messages(
        &self,
        room: &RoomId,
        user: &UserId,
        seq: u64,
    ) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let last = last_seq_in(&events, room)?;
        let mut unread = 0;
        let mut looked = 0;
        for row in events
            .range((room.as_str(), seq.saturating_add(1))..=(room.as_str(), u64::MAX))?
            .take(UNREAD_SCAN as usize)
        {
            let (_, value) = row?;
            looked += 1;
            let envelope = hearth_spec::Envelope::decode(value.value())
                .map_err(|e| StoreError::Corrupt(format!("stored envelope: {e}")))?;
            if matches!(envelope.content, hearth_spec::Content::Message { .. })
                && envelope.sender != *user
            {
                unread += 1;
            }
        }
        let beyond = last.saturating_sub(seq).saturating_sub(looked);
        Ok(unread + beyond)
    }

    /// Up to `limit` events with seq < `before`, in ascending order (the newest page first).
    pub fn events_before(
        &self,
        room: &RoomId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let txn = self.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in events
            .range((room.as_str(), 0)..(room.as_str(), before))?
            .rev()
            .take(limit)
        {
            let (k, v) = row?;
            out.push(StoredEvent {
                seq: k.value().1,
                envelope: v.value().to_vec(),
            });
        }
        out.reverse();
        Ok(out)
    }

    /// The place of an event by id.
    pub fn event_place(&self, id: &EventId) -> Result<Option<(RoomId, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let ids = txn.open_table(EVENT_IDS)?;
        match ids.get(id.0.as_slice())? {
            Some(v) => {
                let (room, seq) = v.value();
                Ok(Some((parse_id(room)?, seq)))
            }
            None => Ok(None),
        }
    }

    /// The event a device's transaction produced, if it was already sent.
    pub fn txn_event(
        &self,
        user: &UserId,
        device: &DeviceId,
        txn_id: &str,
    ) -> Result<Option<(RoomId, Option<u64>, EventId)>, StoreError> {
        let txn = self.begin_read()?;
        let txns = txn.open_table(TXNS)?;
        let key = (user.as_str(), device.as_str(), txn_id);
        let ids = txn.open_table(EVENT_IDS)?;
        if let Some(id) = txns.get(key)? {
            let id = event_id_from(id.value())?;
            let place = ids
                .get(id.0.as_slice())?
                .ok_or_else(|| StoreError::Corrupt("txn names a missing event".into()))?;
            let (room, seq) = place.value();
            return Ok(Some((parse_id(room)?, Some(seq), id)));
        }
        // Accepted for a room homed elsewhere: sequenced once the home's copy is back.
        let submitted = txn.open_table(SUBMITTED)?;
        let Some(row) = submitted.get(key)? else {
            return Ok(None);
        };
        let (room, id) = row.value();
        let id = event_id_from(id)?;
        let seq = ids.get(id.0.as_slice())?.map(|place| place.value().1);
        Ok(Some((parse_id(room)?, seq, id)))
    }

    /// Up to `limit` inbox entries after `since`, each with its event.
    pub fn inbox_after(
        &self,
        user: &UserId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let txn = self.begin_read()?;
        let inbox = txn.open_table(INBOX)?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        let start = since.saturating_add(1);
        for row in inbox
            .range((user.as_str(), start)..=(user.as_str(), u64::MAX))?
            .take(limit)
        {
            let (k, v) = row?;
            let cursor = k.value().1;
            let (room, seq) = v.value();
            let envelope = events
                .get((room, seq))?
                .ok_or_else(|| StoreError::Corrupt(format!("inbox names missing {room}#{seq}")))?;
            out.push((
                cursor,
                StoredEvent {
                    seq,
                    envelope: envelope.value().to_vec(),
                },
            ));
        }
        Ok(out)
    }

    /// The last inbox cursor handed out to a user (0 if none).
    pub fn inbox_head(&self, user: &UserId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let heads = txn.open_table(INBOX_HEADS)?;
        Ok(heads.get(user.as_str())?.map(|v| v.value()).unwrap_or(0))
    }

    /// The seq a user has read a room up to.
    pub fn read_mark(&self, user: &UserId, room: &RoomId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let marks = txn.open_table(READ_MARKS)?;
        Ok(marks
            .get((user.as_str(), room.as_str()))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The seq some device of the user has received a room up to.
    pub fn delivered_mark(&self, user: &UserId, room: &RoomId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let marks = txn.open_table(DELIVERED)?;
        Ok(marks
            .get((user.as_str(), room.as_str()))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// For inbox entries in (`after`, `upto`], the highest seq per room (at most `cap` entries
    /// are looked at, newest first).
    pub fn inbox_rooms_between(
        &self,
        user: &UserId,
        after: u64,
        upto: u64,
        cap: usize,
    ) -> Result<Vec<(RoomId, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let inbox = txn.open_table(INBOX)?;
        let mut best: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        if upto <= after {
            return Ok(Vec::new());
        }
        for row in inbox
            .range((user.as_str(), after + 1)..=(user.as_str(), upto))?
            .rev()
            .take(cap)
        {
            let (_, v) = row?;
            let (room, seq) = v.value();
            let entry = best.entry(room.to_owned()).or_insert(0);
            *entry = (*entry).max(seq);
        }
        best.into_iter()
            .map(|(room, seq)| Ok((parse_id(&room)?, seq)))
            .collect()
    }

    /// Presence settings and last-seen time of a user.
    pub fn presence(&self, user: &UserId) -> Result<PresenceRecord, StoreError> {
        Ok(self
            .read_record(PRESENCE, user.as_str())?
            .unwrap_or_default())
    }

    /// Updates a user's presence record and returns it as written.
    pub fn update_presence(
        &self,
        user: &UserId,
        update: impl FnOnce(&mut PresenceRecord),
    ) -> Result<PresenceRecord, StoreError> {
        let txn = self.begin_write()?;
        let record = {
            let mut table = txn.open_table(PRESENCE)?;
            let mut record: PresenceRecord = table
                .get(user.as_str())?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            update(&mut record);
            table.insert(user.as_str(), encode(&record).as_slice())?;
            record
        };
        txn.commit()?;
        Ok(record)
    }

    /// A device's push endpoint.
    pub fn pusher(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<PusherRecord>, StoreError> {
        self.read_record(PUSHERS, (user.as_str(), device.as_str()))
    }

    /// Sets (or with `None`, removes) a device's push endpoint.
    pub fn put_pusher(
        &self,
        user: &UserId,
        device: &DeviceId,
        record: Option<&PusherRecord>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(PUSHERS)?;
            let key = (user.as_str(), device.as_str());
            match record {
                Some(r) => {
                    table.insert(key, encode(r).as_slice())?;
                }
                None => {
                    table.remove(key)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Users with at least one push endpoint.
    pub fn users_with_pushers(&self) -> Result<Vec<UserId>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PUSHERS)?;
        let mut out: Vec<UserId> = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let user: UserId = parse_id(k.value().0)?;
            if out.last() != Some(&user) {
                out.push(user);
            }
        }
        Ok(out)
    }

    /// The devices of a user that have a push endpoint.
    pub fn pushers_of(&self, user: &UserId) -> Result<Vec<(DeviceId, PusherRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PUSHERS)?;
        rows_under(&table, user.as_str(), |device, record| {
            Ok((parse_id(device)?, decode(record)?))
        })
    }

    /// The inbox cursor a device last acknowledged.
    pub fn device_cursor(&self, user: &UserId, device: &DeviceId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let cursors = txn.open_table(CURSORS)?;
        Ok(cursors
            .get((user.as_str(), device.as_str()))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The event at a room's place.
    pub fn event_at(&self, room: &RoomId, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        Ok(events
            .get((room.as_str(), seq))?
            .map(|v| v.value().to_vec()))
    }

    /// Up to `limit` of the oldest outbound entries for `destination` with ids above `after`.
    pub fn outbox_pending(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutItem)>, StoreError> {
        let txn = self.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let dest = destination.as_str();
        let first = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for row in outbox.range((dest, first)..=(dest, u64::MAX))?.take(limit) {
            let (k, v) = row?;
            out.push((k.value().1, decode(v.value())?));
        }
        Ok(out)
    }

    /// Removes delivered outbound entries. Not fsynced: a removal lost in a crash only means
    /// the entries are sent again, and the peer de-duplicates them.
    pub fn outbox_remove(&self, destination: &ServerName, ids: &[u64]) -> Result<(), StoreError> {
        let mut txn = self.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            for id in ids {
                outbox.remove((destination.as_str(), *id))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// How many entries wait for each destination.
    pub fn outbox_depths(&self) -> Result<Vec<(ServerName, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let mut out: Vec<(ServerName, u64)> = Vec::new();
        for row in outbox.iter()? {
            let (k, _) = row?;
            let dest = k.value().0;
            match out.last_mut() {
                Some((name, count)) if name.as_str() == dest => *count += 1,
                _ => out.push((parse_id(dest)?, 1)),
            }
        }
        Ok(out)
    }

    /// Counts stored events of a room (for checks and admin).
    pub fn event_count(&self) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        Ok(txn.open_table(EVENTS)?.len()?)
    }

    // ---- the committer ----

    /// Loads what the sequencer keeps in memory.
    pub fn sequencer_state(&self) -> Result<SequencerState, StoreError> {
        let txn = self.begin_read()?;
        let rooms = txn.open_table(ROOMS)?;
        let members = txn.open_table(MEMBERS)?;
        let events = txn.open_table(EVENTS)?;
        let heads = txn.open_table(INBOX_HEADS)?;
        let epochs = txn.open_table(EPOCHS)?;
        let mut state = SequencerState::default();
        for row in rooms.iter()? {
            let (k, v) = row?;
            let room: RoomId = parse_id(k.value())?;
            let record: RoomRecord = decode(v.value())?;
            let last = last_seq_in(&events, &room)?;
            let list = rows_under(&members, room.as_str(), |user, ()| parse_id(user))?;
            let epoch = epochs.get(room.as_str())?.map_or(0, |v| v.value());
            state.rooms.push((room, record, last, list, epoch));
        }
        for row in heads.iter()? {
            let (k, v) = row?;
            state.inbox_heads.push((parse_id(k.value())?, v.value()));
        }
        Ok(state)
    }

    /// Writes a batch in one transaction and makes it durable (fsync) before returning.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.write_batch(batch).map_err(|e| self.noting(e))
    }

    fn write_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut rooms = txn.open_table(ROOMS)?;
            for (room, record) in &batch.rooms {
                rooms.insert(room.as_str(), encode(record).as_slice())?;
            }
            let mut events = txn.open_table(EVENTS)?;
            let mut ids = txn.open_table(EVENT_IDS)?;
            for (room, seq, id, bytes, _) in &batch.events {
                events.insert((room.as_str(), *seq), bytes.as_slice())?;
                ids.insert(id.0.as_slice(), (room.as_str(), *seq))?;
            }
            let mut members = txn.open_table(MEMBERS)?;
            let mut user_rooms = txn.open_table(USER_ROOMS)?;
            for (room, user) in &batch.joins {
                members.insert((room.as_str(), user.as_str()), ())?;
                user_rooms.insert((user.as_str(), room.as_str()), ())?;
            }
            for (room, user) in &batch.leaves {
                members.remove((room.as_str(), user.as_str()))?;
                user_rooms.remove((user.as_str(), room.as_str()))?;
            }
            let mut txns = txn.open_table(TXNS)?;
            for (user, device, txn_id, id) in &batch.txns {
                txns.insert(
                    (user.as_str(), device.as_str(), txn_id.as_str()),
                    id.0.as_slice(),
                )?;
            }
            let mut inbox = txn.open_table(INBOX)?;
            let mut heads = txn.open_table(INBOX_HEADS)?;
            for (user, cursor, room, seq) in &batch.inbox {
                inbox.insert((user.as_str(), *cursor), (room.as_str(), *seq))?;
                heads.insert(user.as_str(), *cursor)?;
            }
            // Marks only ever rise, whatever order a batch lists them in.
            let mut marks = txn.open_table(READ_MARKS)?;
            for (user, room, seq) in &batch.read_marks {
                raise(&mut marks, (user.as_str(), room.as_str()), *seq)?;
            }
            let mut delivered = txn.open_table(DELIVERED)?;
            for (user, room, seq) in &batch.delivered {
                raise(&mut delivered, (user.as_str(), room.as_str()), *seq)?;
            }
            let mut cursors = txn.open_table(CURSORS)?;
            for (user, device, cursor) in &batch.cursors {
                cursors.insert((user.as_str(), device.as_str()), *cursor)?;
            }
            let mut submitted = txn.open_table(SUBMITTED)?;
            for (user, device, txn_id, room, id) in &batch.submitted {
                submitted.insert(
                    (user.as_str(), device.as_str(), txn_id.as_str()),
                    (room.as_str(), id.0.as_slice()),
                )?;
            }
            append_outbox(&mut txn.open_table(OUTBOX)?, &batch.outbox)?;
            let mut epochs = txn.open_table(EPOCHS)?;
            for (room, epoch) in &batch.epochs {
                epochs.insert(room.as_str(), *epoch)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The MLS epoch a room's next commit must be made in.
    pub fn epoch(&self, room: &RoomId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        Ok(txn
            .open_table(EPOCHS)?
            .get(room.as_str())?
            .map_or(0, |v| v.value()))
    }

    /// Queues entries outside a group commit (a key rotation), durably. Returns each entry's
    /// destination and id.
    pub fn queue_outbox(
        &self,
        items: &[(ServerName, OutItem)],
    ) -> Result<Vec<(ServerName, u64)>, StoreError> {
        let txn = self.begin_write()?;
        let ids = append_outbox(&mut txn.open_table(OUTBOX)?, items)?;
        txn.commit()?;
        Ok(ids)
    }

    /// Every queued entry that `keep` selects: (destination, entry id, entry). Reads the whole
    /// queue; for start-up bookkeeping.
    pub fn outbox_items(
        &self,
        keep: impl Fn(&OutItem) -> bool,
    ) -> Result<Vec<(ServerName, u64, OutItem)>, StoreError> {
        let txn = self.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for row in outbox.iter()? {
            let (k, v) = row?;
            let item: OutItem = decode(v.value())?;
            if keep(&item) {
                let (dest, id) = k.value();
                out.push((parse_id(dest)?, id, item));
            }
        }
        Ok(out)
    }

    /// Records a rotation a peer announced, after the ones recorded before.
    pub fn save_peer_rotation(
        &self,
        peer: &ServerName,
        rotation: &PeerRotation,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(PEER_ROTATIONS)?;
            let next = table
                .range((peer.as_str(), 0)..=(peer.as_str(), u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value().1 + 1);
            table.insert((peer.as_str(), next), encode(rotation).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Keeps the signed record a hearth was learnt from (replacing an older one).
    pub fn save_discovered(&self, peer: &ServerName, signed: &[u8]) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(DISCOVERED)?.insert(peer.as_str(), signed)?;
        txn.commit()?;
        Ok(())
    }

    /// The signed records of every hearth learnt from the DHT.
    pub fn discovered(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(DISCOVERED)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Every recorded peer rotation, per peer in the order applied.
    pub fn peer_rotations(&self) -> Result<Vec<(ServerName, PeerRotation)>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PEER_ROTATIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((parse_id(k.value().0)?, decode(v.value())?));
        }
        Ok(out)
    }
}

/// Appends entries to their destinations' queues, after what each holds; returns their ids.
fn append_outbox(
    outbox: &mut redb::Table<(&str, u64), &[u8]>,
    items: &[(ServerName, OutItem)],
) -> Result<Vec<(ServerName, u64)>, StoreError> {
    let mut next_ids: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut ids = Vec::with_capacity(items.len());
    for (destination, item) in items {
        let dest = destination.as_str();
        let next = match next_ids.get(dest) {
            Some(n) => *n,
            None => outbox
                .range((dest, 0)..=(dest, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1 + 1)
                .unwrap_or(1),
        };
        outbox.insert((dest, next), encode(item).as_slice())?;
        next_ids.insert(dest, next + 1);
        ids.push((destination.clone(), next));
    }
    Ok(ids)
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

/// Outcome of a refresh-token rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated,
    /// The presented token is not the current one: reuse of a spent token.
    Mismatch,
    NoDevice,
}

fn last_seq_in<T: ReadableTable<(&'static str, u64), &'static [u8]>>(
    events: &T,
    room: &RoomId,
) -> Result<u64, StoreError> {
    Ok(events
        .range((room.as_str(), 0)..=(room.as_str(), u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, _)| k.value().1)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
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
    fn events_page_backwards_in_order() {
        let (_dir, store) = store();
        let room = RoomId::parse("!r:localhost").unwrap();
        let mut batch = Batch::default();
        for seq in 1..=10u64 {
            batch.events.push((
                room.clone(),
                seq,
                EventId::of_bytes(&seq.to_be_bytes()),
                vec![seq as u8],
                UserId::parse("@a:localhost").unwrap(),
            ));
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

    #[test]
    fn refresh_rotation_is_single_use() {
        let (_dir, store) = store();
        let user = UserId::parse("@a:localhost").unwrap();
        let device = DeviceId::parse("D1").unwrap();
        store
            .put_device(
                &user,
                &device,
                &DeviceRecord {
                    name: "x".into(),
                    created_ts: 0,
                    refresh_hash: [1; 32],
                },
            )
            .unwrap();
        assert_eq!(
            store
                .rotate_refresh(&user, &device, [1; 32], [2; 32])
                .unwrap(),
            RotateOutcome::Rotated
        );
        assert_eq!(
            store
                .rotate_refresh(&user, &device, [1; 32], [3; 32])
                .unwrap(),
            RotateOutcome::Mismatch
        );
    }
}
