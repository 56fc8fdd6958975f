//! The group commit: one [`Batch`] of the committer's writes, durable in the commit journal
//! and applied to the database in one transaction.

use std::sync::atomic::Ordering;

use hearth_spec::{DeviceId, EventId, RoomId, ServerName, UserId};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use hearth_client_api::stage;

use super::journal::{Journal, Record};
use super::outbox::append_outbox;
use super::tables::*;
use super::{Store, StoreError, decode, encode, raise, rows_under};

/// A group commit whose journal record would be at least this large is committed to the
/// database with its own flush instead (about 100 one-to-one messages).
pub const DIRECT_COMMIT_BYTES: usize = 64 * 1024;

impl Store {
    /// Writes a batch: `show` runs once readers can see it. With `early`, that is before the
    /// journal record is flushed (only for what may be shown before it is durable: see
    /// `spec/storage.md`, "Shown before the flush"); otherwise after.
    fn write_batch(
        &self,
        batch: &Batch,
        early: bool,
        show: &mut dyn FnMut(),
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.failing_commit() {
            return Err(StoreError::Unavailable("a test failed this commit"));
        }
        let writing = std::time::Instant::now();
        let record = batch.to_record();
        let mut journal = self.journal.lock().expect("journal lock");
        let mut txn = self.begin_write()?;
        if record.len() >= DIRECT_COMMIT_BYTES {
            // A large batch shares most of the pages it touches among its own rows: flushing
            // them with it writes about what journaling it would, and the journal would only add
            // a second copy. The flushed commit is a checkpoint too.
            self.write_rows(&txn, batch)?;
            let flushing = std::time::Instant::now();
            stage::record("write", flushing - writing);
            txn.commit()?;
            stage::record("flush", flushing.elapsed());
            show();
            // Its records are all held by the database now.
            journal.restart();
            return Ok(());
        }
        txn.set_durability(redb::Durability::None)?;
        let number = journal.next();
        self.write_rows(&txn, batch)?;
        txn.open_table(META)?.insert(JOURNAL_APPLIED, number)?;
        let flushing = std::time::Instant::now();
        stage::record("write", flushing - writing);
        let len_before = journal.len();
        let appended = if early {
            journal.write(&record)
        } else {
            journal.append(&record)
        };
        let mut syncing = flushing.elapsed();
        if let Err(e) = appended {
            // The transaction is dropped unapplied. Writes stop (`unavailable`, and readiness
            // says why) until the watcher has reopened the store, which applies the journal: a
            // record that could not be cut off again is then stored, never lost half-way.
            self.failed.store(true, Ordering::Relaxed);
            return Err(StoreError::Journal(e));
        }
        let applying = std::time::Instant::now();
        let applied = txn.commit();
        stage::record("apply", applying.elapsed());
        if let Err(e) = applied {
            if journal.take_back(number, len_before).is_err() {
                self.failed.store(true, Ordering::Relaxed);
            }
            return Err(e.into());
        }
        if early {
            show();
            let flushing_early = std::time::Instant::now();
            let flushed = journal.flush();
            syncing += flushing_early.elapsed();
            if let Err(e) = flushed {
                // Readers saw a batch the disk may not hold. Take its record back and reopen from
                // what is durable: the batch is then stored or not, whole, and a request it
                // failed finds it when retried (as after a crash).
                let _ = journal.take_back(number, len_before);
                self.failed.store(true, Ordering::Relaxed);
                return Err(StoreError::Journal(e));
            }
        }
        stage::record("sync", syncing);
        stage::record("flush", flushing.elapsed());
        if !early {
            show();
        }
        if journal.len() >= self.checkpoint_bytes.load(Ordering::Relaxed) {
            let checkpointing = std::time::Instant::now();
            // The batch is durable in the journal whatever happens here; a failed checkpoint
            // leaves the journal as it is, and a failed database is reopened from it.
            if let Err(e) = self.checkpoint(&mut journal) {
                tracing::error!(error = %e, "checkpoint failed; the journal keeps the commits");
                let _ = self.noting(e);
            }
            stage::record("checkpoint", checkpointing.elapsed());
        }
        Ok(())
    }

    /// Makes everything applied durable in the database itself, then rewinds the journal.
    fn checkpoint(&self, journal: &mut Journal) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.commit()?;
        journal.restart();
        Ok(())
    }

    /// Applies the journal's records that the database does not hold yet (after a crash, or a
    /// reopen), in one flushed transaction, and rewinds the journal.
    pub(super) fn recover(
        &self,
        db: &redb::Database,
        journal: &mut Journal,
        records: Vec<Record>,
    ) -> Result<(), StoreError> {
        let txn = db.begin_write()?;
        let applied = txn
            .open_table(META)?
            .get(JOURNAL_APPLIED)?
            .map_or(0, |v| v.value());
        let mut last = applied;
        for record in records {
            if record.number <= applied {
                continue;
            }
            if record.number != last + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the commit journal's record {} follows {last}: records are missing",
                    record.number
                )));
            }
            let batch = Batch::from_record(&record.body)?;
            self.write_rows(&txn, &batch)?;
            last = record.number;
        }
        if last > applied {
            txn.open_table(META)?.insert(JOURNAL_APPLIED, last)?;
            tracing::warn!(
                records = last - applied,
                "applied the commits the database did not hold yet from the journal"
            );
        }
        txn.commit()?;
        journal.restart();
        journal.continue_at(last + 1);
        Ok(())
    }

    /// Reads the journal again and applies it to `db` (a reopened database).
    pub(super) fn recover_from_journal(&self, db: &redb::Database) -> Result<(), StoreError> {
        let id = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            meta.get(JOURNAL_ID)?
                .map(|v| v.value())
                .ok_or_else(|| StoreError::Corrupt("the database has no journal id".into()))?
        };
        let mut journal = self.journal.lock().expect("journal lock");
        let (reread, records) = Journal::open(&super::journal_path(&self.path), id)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        *journal = reread;
        self.recover(db, &mut journal, records)
    }

    /// Writes a batch's rows in `txn`. A table is opened only when the batch has rows for it:
    /// opening one is a lookup in redb's table tree, and a one-to-one send touches six of the
    /// fourteen.
    fn write_rows(&self, txn: &redb::WriteTransaction, batch: &Batch) -> Result<(), StoreError> {
        if !batch.rooms.is_empty() {
            let mut rooms = txn.open_table(ROOMS)?;
            for (room, record) in &batch.rooms {
                rooms.insert(room.as_str(), encode(record).as_slice())?;
            }
        }
        if !batch.events.is_empty() {
            let mut events = txn.open_table(EVENTS)?;
            for NewEvent {
                room, seq, bytes, ..
            } in &batch.events
            {
                events.insert((room.as_str(), *seq), bytes.as_slice())?;
            }
        }
        if !batch.joins.is_empty() || !batch.leaves.is_empty() {
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
        }
        if !batch.admins.is_empty() {
            let mut table = txn.open_table(ROOM_ADMINS)?;
            for (room, admins) in &batch.admins {
                let stored = rows_under(&table, room.as_str(), |user, ()| Ok(user.to_owned()))?;
                for user in stored {
                    table.remove((room.as_str(), user.as_str()))?;
                }
                for user in admins {
                    table.insert((room.as_str(), user.as_str()), ())?;
                }
            }
        }
        if !batch.txns.is_empty() {
            let mut txns = txn.open_table(TXNS)?;
            for Txn {
                user,
                device,
                txn: txn_id,
                event: id,
                room,
                seq,
            } in &batch.txns
            {
                txns.insert(
                    (user.as_str(), device.as_str(), txn_id.as_str()),
                    txn_row(id, *seq, room).as_slice(),
                )?;
            }
        }
        if !batch.inbox.is_empty() {
            let mut inbox = txn.open_table(INBOX)?;
            let mut heads = txn.open_table(INBOX_HEADS)?;
            for InboxEntry {
                user,
                position: cursor,
                room,
                seq,
            } in &batch.inbox
            {
                inbox.insert((user.as_str(), *cursor), (room.as_str(), *seq))?;
                heads.insert(user.as_str(), *cursor)?;
            }
        }
        // Marks only ever rise, whatever order a batch lists them in.
        if !batch.read_marks.is_empty() {
            let mut marks = txn.open_table(READ_MARKS)?;
            for Mark { user, room, seq } in &batch.read_marks {
                raise(&mut marks, (user.as_str(), room.as_str()), *seq)?;
            }
        }
        if !batch.delivered.is_empty() {
            let mut delivered = txn.open_table(DELIVERED)?;
            for Mark { user, room, seq } in &batch.delivered {
                raise(&mut delivered, (user.as_str(), room.as_str()), *seq)?;
            }
        }
        if !batch.closed_rooms.is_empty() {
            let mut closed = txn.open_table(CLOSED_ROOMS)?;
            for (room, ts) in &batch.closed_rooms {
                closed.insert(room.as_str(), *ts)?;
            }
        }
        if !batch.cursors.is_empty() {
            let mut cursors = txn.open_table(CURSORS)?;
            for Cursor {
                user,
                device,
                position: cursor,
            } in &batch.cursors
            {
                cursors.insert((user.as_str(), device.as_str()), *cursor)?;
            }
        }
        if !batch.submitted.is_empty() {
            let mut submitted = txn.open_table(SUBMITTED)?;
            for Submitted {
                user,
                device,
                txn: txn_id,
                room,
                event: id,
            } in &batch.submitted
            {
                submitted.insert(
                    (user.as_str(), device.as_str(), txn_id.as_str()),
                    (room.as_str(), id.0.as_slice()),
                )?;
            }
        }
        if !batch.outbox.is_empty() {
            append_outbox(
                &mut txn.open_table(OUTBOX)?,
                &self.outbox_ids,
                &batch.outbox,
            )?;
        }
        if !batch.epochs.is_empty() {
            let mut epochs = txn.open_table(EPOCHS)?;
            for (room, epoch) in &batch.epochs {
                epochs.insert(room.as_str(), *epoch)?;
            }
        }
        Ok(())
    }

    /// Writes a batch in one transaction and makes it durable (the journal's fsync) before
    /// returning.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.write_batch(batch, false, &mut || {})
            .map_err(|e| self.noting(e))
    }

    /// Commits a batch of events replicated from their rooms' homes, and runs `show` as soon as
    /// readers see it, while its journal record is being flushed (`spec/storage.md`, "Shown
    /// before the flush"). Returns once the batch is durable, as [`Self::commit`] does.
    pub fn commit_shown_early(
        &self,
        batch: &Batch,
        show: &mut dyn FnMut(),
    ) -> Result<(), StoreError> {
        self.write_batch(batch, true, show)
            .map_err(|e| self.noting(e))
    }
}

/// Writes of one group commit, applied in one transaction.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    pub rooms: Vec<(RoomId, RoomRecord)>,
    pub events: Vec<NewEvent>,
    pub joins: Vec<(RoomId, UserId)>,
    pub leaves: Vec<(RoomId, UserId)>,
    pub txns: Vec<Txn>,
    pub inbox: Vec<InboxEntry>,
    pub read_marks: Vec<Mark>,
    pub delivered: Vec<Mark>,
    pub cursors: Vec<Cursor>,
    /// Sends to rooms homed elsewhere, accepted here.
    pub submitted: Vec<Submitted>,
    /// Entries for the outbound queues, in order per destination.
    pub outbox: Vec<(ServerName, OutItem)>,
    /// Rooms whose MLS epoch moved: (room, the epoch the next commit must be made in).
    pub epochs: Vec<(RoomId, u64)>,
    /// Rooms an admin shut down, and when.
    pub closed_rooms: Vec<(RoomId, u64)>,
    /// Groups whose admins changed, with all their admins now. In a journal record it follows
    /// the rest ([`BatchTail`]).
    #[serde(skip)]
    pub admins: Vec<(RoomId, Vec<UserId>)>,
}

/// What a journal record holds after its batch when the batch changed admins. Records written
/// before groups had admins end with the batch, and read as changing none.
#[derive(Debug, Serialize, Deserialize)]
struct BatchTail {
    admins: Vec<(RoomId, Vec<UserId>)>,
}

impl Batch {
    /// The batch as a journal record's body.
    pub fn to_record(&self) -> Vec<u8> {
        let mut record = encode(self);
        if !self.admins.is_empty() {
            record.extend(encode(&BatchTail {
                admins: self.admins.clone(),
            }));
        }
        record
    }

    /// Reads a journal record's body back.
    pub fn from_record(body: &[u8]) -> Result<Batch, StoreError> {
        let (mut batch, tail): (Batch, &[u8]) = postcard::take_from_bytes(body)?;
        if !tail.is_empty() {
            let tail: BatchTail = decode(tail)?;
            batch.admins = tail.admins;
        }
        Ok(batch)
    }

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
            && self.closed_rooms.is_empty()
            && self.admins.is_empty()
    }
}

/// A new event at its place in its room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub room: RoomId,
    pub seq: u64,
    pub id: EventId,
    /// The canonical envelope encoding.
    pub bytes: Vec<u8>,
    pub sender: UserId,
}

/// The event a device's transaction id made (a resend of the id gets the same event), and its
/// place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub user: UserId,
    pub device: DeviceId,
    pub txn: String,
    pub event: EventId,
    pub room: RoomId,
    pub seq: u64,
}

/// A [`TXNS`] row: the event id, its seq (big-endian) and its room.
fn txn_row(id: &EventId, seq: u64, room: &RoomId) -> Vec<u8> {
    let mut row = Vec::with_capacity(40 + room.as_str().len());
    row.extend_from_slice(&id.0);
    row.extend_from_slice(&seq.to_be_bytes());
    row.extend_from_slice(room.as_str().as_bytes());
    row
}

/// Reads a [`TXNS`] row: the event id, and its place unless the row is an earlier version's
/// (the id alone).
pub(super) fn read_txn_row(row: &[u8]) -> Result<(EventId, Option<(RoomId, u64)>), StoreError> {
    let corrupt = || StoreError::Corrupt("a stored transaction row is malformed".into());
    let id = EventId(
        row.get(..32)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    );
    if row.len() == 32 {
        return Ok((id, None));
    }
    let seq = u64::from_be_bytes(
        row.get(32..40)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    );
    let room = std::str::from_utf8(&row[40..]).map_err(|_| corrupt())?;
    Ok((id, Some((super::parse_id(room)?, seq))))
}

/// A pointer in a local user's inbox: at `position`, the event at `seq` of `room`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    pub user: UserId,
    pub position: u64,
    pub room: RoomId,
    pub seq: u64,
}

/// A user's read or delivered mark in a room: everything up to `seq`. Stored marks only rise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub user: UserId,
    pub room: RoomId,
    pub seq: u64,
}

/// How far a device has acknowledged its user's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub user: UserId,
    pub device: DeviceId,
    pub position: u64,
}

/// A send to a room homed elsewhere, accepted here and queued for the room's home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub user: UserId,
    pub device: DeviceId,
    pub txn: String,
    pub room: RoomId,
    pub event: EventId,
}
