//! What one group commit does with each request, without writing anything: look up what the
//! request depends on (a resent transaction, the marks it would raise), let the [`Sequencer`]
//! place it, and collect the batch to write and the receipts to announce once it is durable.
//! The committer thread is the driver: it takes requests, calls [`decide`], writes the batch with
//! one fsync, then answers and announces.
//!
//! Reads go through [`CommitReads`], the store as the committer sees it, so a second storage
//! backend implements these six lookups and the tests can count them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use hearth_spec::api::Sequenced;
use hearth_spec::client::{ReceiptKind, ServerFrame};
use hearth_spec::federation::Signal;
use hearth_spec::{DeviceId, EventId, RoomId, UserId};

use crate::chat::commit_error::CommitError;
use crate::chat::sequencer::{Reply, Request, Sequencer};
use crate::store::tables::OutItem;
use crate::store::{Batch, Mark, Store, StoreError};

/// What the committer reads from storage while deciding a batch.
pub trait CommitReads {
    /// The event a device's transaction made: (room, seq once sequenced, event id).
    fn txn_event(
        &self,
        user: &UserId,
        device: &DeviceId,
        txn: &str,
    ) -> Result<Option<(RoomId, Option<u64>, EventId)>, StoreError>;
    /// A user's mark of `kind` in a room (0: none).
    fn mark(&self, kind: ReceiptKind, user: &UserId, room: &RoomId) -> Result<u64, StoreError>;
    /// How far a device has acknowledged its user's inbox.
    fn device_cursor(&self, user: &UserId, device: &DeviceId) -> Result<u64, StoreError>;
    /// The highest seq per room among a user's inbox entries in `(after, upto]`, looking at
    /// `limit` entries at most.
    fn inbox_rooms_between(
        &self,
        user: &UserId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(RoomId, u64)>, StoreError>;
}

impl CommitReads for Store {
    fn txn_event(
        &self,
        user: &UserId,
        device: &DeviceId,
        txn: &str,
    ) -> Result<Option<(RoomId, Option<u64>, EventId)>, StoreError> {
        Store::txn_event(self, user, device, txn)
    }
    fn mark(&self, kind: ReceiptKind, user: &UserId, room: &RoomId) -> Result<u64, StoreError> {
        match kind {
            ReceiptKind::Read => self.read_mark(user, room),
            ReceiptKind::Delivered => self.delivered_mark(user, room),
        }
    }
    fn device_cursor(&self, user: &UserId, device: &DeviceId) -> Result<u64, StoreError> {
        Store::device_cursor(self, user, device)
    }
    fn inbox_rooms_between(
        &self,
        user: &UserId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(RoomId, u64)>, StoreError> {
        Store::inbox_rooms_between(self, user, after, upto, limit)
    }
}

/// Inbox entries looked at per acknowledgement to raise delivered marks.
const ACK_SCAN: usize = 10_000;

/// What a batch will announce once it is durable, and the marks and cursors it has raised so
/// far (a later request in the same batch must see them, not the stored values).
#[derive(Default)]
pub struct Pending {
    signals: Vec<(Vec<UserId>, ServerFrame)>,
    read: HashMap<(UserId, RoomId), u64>,
    delivered: HashMap<(UserId, RoomId), u64>,
    cursors: HashMap<(UserId, DeviceId), u64>,
}

impl Pending {
    /// Frames to hand the hub once the batch is durable, with who gets each.
    pub fn signals(&self) -> &[(Vec<UserId>, ServerFrame)] {
        &self.signals
    }

    fn marks(&mut self, kind: ReceiptKind) -> &mut HashMap<(UserId, RoomId), u64> {
        match kind {
            ReceiptKind::Read => &mut self.read,
            ReceiptKind::Delivered => &mut self.delivered,
        }
    }

    /// Raises a mark to `seq`. Returns the mark it rose from, or `None` if it was already there:
    /// marks only rise, and each rise is announced once.
    fn raise(
        &mut self,
        reads: &impl CommitReads,
        kind: ReceiptKind,
        user: &UserId,
        room: &RoomId,
        seq: u64,
    ) -> Result<Option<u64>, CommitError> {
        // The mark as this batch sees it: raised earlier in the batch, or as stored.
        let key = (user.clone(), room.clone());
        let old = match self.marks(kind).get(&key) {
            Some(mark) => *mark,
            None => reads.mark(kind, user, room).map_err(storage)?,
        };
        if seq <= old {
            return Ok(None);
        }
        self.marks(kind).insert(key, seq);
        Ok(Some(old))
    }

    /// Tells `to` (when not empty) that `user` has got to `seq` in `room`.
    fn tell(
        &mut self,
        to: BTreeSet<UserId>,
        room: &RoomId,
        user: &UserId,
        kind: ReceiptKind,
        seq: u64,
    ) {
        if to.is_empty() {
            return;
        }
        self.signals.push((
            to.into_iter().collect(),
            ServerFrame::Receipt {
                room_id: room.clone(),
                user_id: user.clone(),
                kind,
                seq,
            },
        ));
    }
}

/// Maps a storage failure to what the requester is told.
pub fn storage(e: StoreError) -> CommitError {
    match e {
        StoreError::Unavailable(why) => CommitError::Unavailable(why),
        e => CommitError::Storage(Arc::new(e)),
    }
}

/// Decides one request of a batch: its answer, what it adds to `batch`, and what it will
/// announce (`pending`).
pub fn decide(
    reads: &impl CommitReads,
    sequencer: &mut Sequencer,
    request: Request,
    now: u64,
    batch: &mut Batch,
    pending: &mut Pending,
) -> Result<Reply, CommitError> {
    match request {
        // A resent transaction returns the event it made the first time, even if the sender
        // has since left the room.
        Request::Send {
            ref user,
            ref device,
            ref txn_id,
            ..
        } => {
            if let Some((room_id, seq, event_id)) = reads
                .txn_event(user, device, txn_id.as_str())
                .map_err(storage)?
            {
                return Ok(Reply::Sequenced(Sequenced {
                    room_id,
                    event_id,
                    seq,
                }));
            }
            let sender = user.clone();
            let reply = sequencer.apply(request, now, batch)?;
            // What one sends oneself is read (the sequencer raises the mark): the senders of
            // what came before it on this hearth hear so, as if the sender had marked it read.
            // Not announced to member hearths: that would be an envelope per message per peer,
            // and they can derive it from the event itself (not done yet).
            if let Reply::Sequenced(Sequenced {
                room_id,
                seq: Some(seq),
                ..
            }) = &reply
                && let Some(old) =
                    pending.raise(reads, ReceiptKind::Read, &sender, room_id, *seq)?
            {
                let mut to = sequencer.senders_between(room_id, old, *seq);
                to.remove(&sender);
                pending.tell(to, room_id, &sender, ReceiptKind::Read, *seq);
            }
            Ok(reply)
        }
        // A member hearth retrying an event the home already sequenced (the home keeps the
        // transaction of every event it sequences, a member hearth's too).
        Request::Submitted { ref envelope, .. } => {
            let known = reads
                .txn_event(
                    &envelope.sender,
                    &envelope.sender_device,
                    envelope.txn_id.as_str(),
                )
                .map_err(storage)?
                .is_some();
            if known {
                return Ok(Reply::Duplicate);
            }
            Ok(sequencer.apply(request, now, batch)?)
        }
        Request::MarkRead { user, room, seq } => {
            sequencer.check_read(&room, &user, seq)?;
            let Some(old) = pending.raise(reads, ReceiptKind::Read, &user, &room, seq)? else {
                return Ok(Reply::Done);
            };
            announce_to_peers(sequencer, batch, &room, &user, ReceiptKind::Read, seq);
            // The senders of what was just read, and the reader's other devices.
            let mut to = sequencer.senders_between(&room, old, seq);
            to.insert(user.clone());
            pending.tell(to, &room, &user, ReceiptKind::Read, seq);
            Ok(sequencer.apply(Request::MarkRead { user, room, seq }, now, batch)?)
        }
        Request::Ack {
            user,
            device,
            cursor,
        } => {
            let key = (user, device);
            let old = match pending.cursors.get(&key) {
                Some(c) => *c,
                None => reads.device_cursor(&key.0, &key.1).map_err(storage)?,
            };
            let (user, device) = key.clone();
            let reply = sequencer.apply(
                Request::Ack {
                    user: user.clone(),
                    device,
                    cursor,
                },
                now,
                batch,
            )?;
            pending.cursors.insert(key, cursor);
            if cursor > old {
                let reached = reads
                    .inbox_rooms_between(&user, old, cursor, ACK_SCAN)
                    .map_err(storage)?;
                for (room, seq) in reached {
                    let kind = ReceiptKind::Delivered;
                    let Some(mark) = pending.raise(reads, kind, &user, &room, seq)? else {
                        continue;
                    };
                    batch.delivered.push(Mark {
                        user: user.clone(),
                        room: room.clone(),
                        seq,
                    });
                    announce_to_peers(sequencer, batch, &room, &user, kind, seq);
                    // The senders of what arrived; the user's own devices know already.
                    let mut to = sequencer.senders_between(&room, mark, seq);
                    to.remove(&user);
                    pending.tell(to, &room, &user, kind, seq);
                }
            }
            Ok(reply)
        }
        // A user of a member hearth has got further: raise the mark here and tell this hearth's
        // users who sent what it covers.
        Request::PeerReceipt {
            ref user,
            ref room,
            kind,
            seq,
        } => {
            let (user, room) = (user.clone(), room.clone());
            let reply = sequencer.apply(request, now, batch)?;
            if let Some(old) = pending.raise(reads, kind, &user, &room, seq)? {
                let to = sequencer.senders_between(&room, old, seq);
                pending.tell(to, &room, &user, kind, seq);
            }
            Ok(reply)
        }
        other => Ok(sequencer.apply(other, now, batch)?),
    }
}

/// Queues a local user's new receipt for every other hearth with members in the room.
fn announce_to_peers(
    sequencer: &Sequencer,
    batch: &mut Batch,
    room: &RoomId,
    user: &UserId,
    kind: ReceiptKind,
    seq: u64,
) {
    for server in sequencer.other_servers(room) {
        batch.outbox.push((
            server,
            OutItem::Receipt(Signal::Receipt {
                room: room.clone(),
                user: user.clone(),
                kind,
                seq,
            }),
        ));
    }
}

#[cfg(test)]
mod tests;
