//! Rooms, their members and events, and what the sequencer loads at start.

use std::collections::BTreeSet;

use hearth_spec::rooms::first_admins;
use hearth_spec::{DeviceId, EventId, RoomId, RoomKind, UserId};
use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::*;
use super::{Store, StoreError, UNREAD_SCAN, decode, event_id_from, parse_id, rows_under};

/// A room as the admin's list shows it.
#[derive(Debug, Clone)]
pub struct RoomOverview {
    pub room: RoomId,
    pub record: RoomRecord,
    pub members: u64,
    pub last_seq: u64,
}

impl Store {
    /// Up to `limit` rooms this hearth holds after `from`, in id order, with their member
    /// counts and latest sequence numbers (one snapshot).
    pub fn rooms_page(
        &self,
        from: Option<&RoomId>,
        limit: usize,
    ) -> Result<Vec<RoomOverview>, StoreError> {
        let txn = self.begin_read()?;
        let rooms = txn.open_table(ROOMS)?;
        let members = txn.open_table(MEMBERS)?;
        let events = txn.open_table(EVENTS)?;
        let start = from.map_or("", |r| r.as_str());
        let mut out = Vec::new();
        for row in rooms.range(start..)? {
            let (k, v) = row?;
            if from.is_some_and(|f| f.as_str() == k.value()) {
                continue;
            }
            if out.len() == limit {
                break;
            }
            let room: RoomId = parse_id(k.value())?;
            let count = rows_under(&members, room.as_str(), |_, ()| Ok(()))?.len() as u64;
            out.push(RoomOverview {
                last_seq: last_seq_in(&events, &room)?,
                record: decode(v.value())?,
                members: count,
                room,
            });
        }
        Ok(out)
    }

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
            let (_, envelope) = super::event_of_row(value.value())?;
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
        if let Some(row) = txns.get(key)? {
            let (id, place) = super::commit::read_txn_row(row.value())?;
            let (room, seq) = match place {
                Some(place) => place,
                None => {
                    let place = ids
                        .get(id.0.as_slice())?
                        .ok_or_else(|| StoreError::Corrupt("txn names a missing event".into()))?;
                    let (room, seq) = place.value();
                    (parse_id(room)?, seq)
                }
            };
            return Ok(Some((room, Some(seq), id)));
        }
        // Accepted for a room homed elsewhere, and not back from the home yet (its arrival
        // writes the row above); an earlier version's row may be back, with its place in
        // EVENT_IDS.
        let submitted = txn.open_table(SUBMITTED)?;
        let Some(row) = submitted.get(key)? else {
            return Ok(None);
        };
        let (room, id) = row.value();
        let id = event_id_from(id)?;
        let seq = ids.get(id.0.as_slice())?.map(|place| place.value().1);
        Ok(Some((parse_id(room)?, seq, id)))
    }

    /// The stored row of a room's place (an envelope, or a purged slot: [`super::event_of_row`]).
    pub fn event_at(&self, room: &RoomId, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        Ok(events
            .get((room.as_str(), seq))?
            .map(|v| v.value().to_vec()))
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
        let closed = txn.open_table(CLOSED_ROOMS)?;
        let room_admins = txn.open_table(ROOM_ADMINS)?;
        let mut state = SequencerState::default();
        for row in closed.iter()? {
            state.closed.push(parse_id(row?.0.value())?);
        }
        for row in rooms.iter()? {
            let (k, v) = row?;
            let room: RoomId = parse_id(k.value())?;
            let record: RoomRecord = decode(v.value())?;
            let last = last_seq_in(&events, &room)?;
            let list = rows_under(&members, room.as_str(), |user, ()| parse_id(user))?;
            let epoch = epochs.get(room.as_str())?.map_or(0, |v| v.value());
            let admins = admins_in(&room_admins, &events, &room, record.kind, &list)?;
            state.rooms.push(ResumedRoom {
                room,
                record,
                last_seq: last,
                members: list,
                epoch,
                admins,
            });
        }
        for row in heads.iter()? {
            let (k, v) = row?;
            state.inbox_heads.push((parse_id(k.value())?, v.value()));
        }
        Ok(state)
    }

    /// A room's admins, in id order (none for a direct chat).
    pub fn room_admins(
        &self,
        room: &RoomId,
        kind: RoomKind,
        members: &[UserId],
    ) -> Result<Vec<UserId>, StoreError> {
        let txn = self.begin_read()?;
        let admins = admins_in(
            &txn.open_table(ROOM_ADMINS)?,
            &txn.open_table(EVENTS)?,
            room,
            kind,
            members,
        )?;
        Ok(admins.into_iter().collect())
    }

    /// The MLS epoch a room's next commit must be made in.
    pub fn epoch(&self, room: &RoomId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        Ok(txn
            .open_table(EPOCHS)?
            .get(room.as_str())?
            .map_or(0, |v| v.value()))
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
    pub rooms: Vec<ResumedRoom>,
    pub inbox_heads: Vec<(UserId, u64)>,
    /// Rooms an admin shut down.
    pub closed: Vec<RoomId>,
}

/// A room as the sequencer resumes it.
#[derive(Debug, Clone)]
pub struct ResumedRoom {
    pub room: RoomId,
    pub record: RoomRecord,
    pub last_seq: u64,
    pub members: Vec<UserId>,
    /// The MLS epoch the next commit must be made in.
    pub epoch: u64,
    /// A group's admins.
    pub admins: BTreeSet<UserId>,
}

/// A room's stored admins, or for a group that has none stored (made before admins were), the
/// ones its creator and members give.
fn admins_in(
    room_admins: &impl ReadableTable<(&'static str, &'static str), ()>,
    events: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    room: &RoomId,
    kind: RoomKind,
    members: &[UserId],
) -> Result<BTreeSet<UserId>, StoreError> {
    let stored: BTreeSet<UserId> =
        rows_under(room_admins, room.as_str(), |user, ()| parse_id(user))?
            .into_iter()
            .collect();
    if !stored.is_empty() || kind == RoomKind::Direct {
        return Ok(stored);
    }
    let creator = creator_in(events, room)?;
    let members: BTreeSet<UserId> = members.iter().cloned().collect();
    Ok(first_admins(kind, creator.as_ref(), &members))
}

/// The sender of a room's event 1, its create event.
fn creator_in<T: ReadableTable<(&'static str, u64), &'static [u8]>>(
    events: &T,
    room: &RoomId,
) -> Result<Option<UserId>, StoreError> {
    let Some(row) = events.get((room.as_str(), 1))? else {
        return Ok(None);
    };
    let (_, envelope) = super::retention::event_of_row(row.value())?;
    Ok(Some(envelope.sender))
}

pub(super) fn last_seq_in<T: ReadableTable<(&'static str, u64), &'static [u8]>>(
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
