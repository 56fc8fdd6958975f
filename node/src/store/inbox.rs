//! Each user's inbox (pointers to events in order of arrival), read and delivered marks, and
//! device cursors.

use hearth_spec::{DeviceId, RoomId, UserId};

use super::rooms::StoredEvent;
use super::tables::*;
use super::{Store, StoreError, parse_id};

impl Store {
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

    /// The inbox cursor a device last acknowledged.
    pub fn device_cursor(&self, user: &UserId, device: &DeviceId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let cursors = txn.open_table(CURSORS)?;
        Ok(cursors
            .get((user.as_str(), device.as_str()))?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, Cursor, InboxEntry, Mark, NewEvent};
    use hearth_spec::EventId;

    fn u(name: &str) -> UserId {
        UserId::parse(&format!("@{name}:localhost")).unwrap()
    }

    fn mark(user: &str, room: &RoomId, seq: u64) -> Mark {
        Mark {
            user: u(user),
            room: room.clone(),
            seq,
        }
    }

    #[test]
    fn inbox_pages_after_a_cursor_and_marks_only_rise() {
        let (_dir, store) = super::super::scratch();
        let room = RoomId::parse("!r:localhost").unwrap();
        let device = DeviceId::parse("PHONE").unwrap();
        let mut batch = Batch::default();
        for seq in 1..=3u64 {
            batch.events.push(NewEvent {
                room: room.clone(),
                seq,
                id: EventId::of_bytes(&[seq as u8]),
                bytes: vec![seq as u8],
                sender: u("b"),
            });
            batch.inbox.push(InboxEntry {
                user: u("a"),
                position: 9 + seq,
                room: room.clone(),
                seq,
            });
        }
        batch.read_marks.push(mark("a", &room, 2));
        batch.delivered.push(mark("a", &room, 3));
        batch.cursors.push(Cursor {
            user: u("a"),
            device: device.clone(),
            position: 11,
        });
        store.commit(&batch).unwrap();

        let after: Vec<(u64, u64, Vec<u8>)> = store
            .inbox_after(&u("a"), 10, 10)
            .unwrap()
            .into_iter()
            .map(|(position, e)| (position, e.seq, e.envelope))
            .collect();
        assert_eq!(after, vec![(11, 2, vec![2]), (12, 3, vec![3])]);
        assert_eq!(store.inbox_after(&u("a"), 10, 1).unwrap().len(), 1);
        assert!(store.inbox_after(&u("b"), 0, 10).unwrap().is_empty());
        assert_eq!(store.device_cursor(&u("a"), &device).unwrap(), 11);
        assert_eq!(store.read_mark(&u("a"), &room).unwrap(), 2);
        assert_eq!(store.delivered_mark(&u("a"), &room).unwrap(), 3);
        assert_eq!(
            store.inbox_rooms_between(&u("a"), 10, 12, 100).unwrap(),
            vec![(room.clone(), 3)]
        );

        // A lower mark (a late receipt) changes nothing; a higher one raises it.
        let mut later = Batch::default();
        later.read_marks.push(mark("a", &room, 1));
        store.commit(&later).unwrap();
        assert_eq!(store.read_mark(&u("a"), &room).unwrap(), 2);
        let mut later = Batch::default();
        later.read_marks.push(mark("a", &room, 3));
        store.commit(&later).unwrap();
        assert_eq!(store.read_mark(&u("a"), &room).unwrap(), 3);
    }
}
