//! Purging messages in place: a purged message's row keeps its place (room, seq), its event id,
//! sender, device, transaction and time, and loses its payload (`Content::Purged`). Sequence
//! numbers stay gapless, inbox entries and cursors keep pointing at real rows, a retried
//! transaction still finds its event, and a device that was away sees the slot and moves on.
//! Room retention, an admin's purge and an account's erasure all purge this way (spec/admin.md).

use hearth_spec::{Content, Envelope, EventId, RoomId, UserId};
use redb::ReadableTable;

use super::tables::*;
use super::{Store, StoreError, parse_id};

/// First byte of a purged row. An envelope's first byte is its version (1), so the two never
/// meet. Then the 32 bytes of the original event id (a purged envelope no longer hashes to it),
/// then the purged envelope.
const PURGED: u8 = 0xFF;

/// Rows one purge transaction looks at: the committer waits for it, so it stays short.
const STEP_ROWS: usize = 512;

/// The event id and envelope of a row of `events`.
pub fn event_of_row(row: &[u8]) -> Result<(EventId, Envelope), StoreError> {
    match purged_parts(row) {
        Some((id, envelope)) => Ok((id, Envelope::decode(envelope)?)),
        None => Ok((EventId::of_bytes(row), Envelope::decode(row)?)),
    }
}

/// The envelope bytes a row is sent to peers as: a purged slot goes as its `Purged` envelope
/// (whose hash, on the receiving hearth, is then its id there).
pub fn wire_envelope(row: &[u8]) -> &[u8] {
    purged_parts(row).map_or(row, |(_, envelope)| envelope)
}

fn purged_parts(row: &[u8]) -> Option<(EventId, &[u8])> {
    let (&first, rest) = row.split_first()?;
    if first != PURGED || rest.len() < 32 {
        return None;
    }
    let (id, envelope) = rest.split_at(32);
    Some((EventId(id.try_into().ok()?), envelope))
}

fn purged_row(id: &EventId, mut envelope: Envelope) -> Vec<u8> {
    envelope.content = Content::Purged {};
    let encoded = envelope.encode();
    let mut row = Vec::with_capacity(1 + 32 + encoded.len());
    row.push(PURGED);
    row.extend_from_slice(&id.0);
    row.extend_from_slice(&encoded);
    row
}

/// What one bounded purge transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeStep {
    /// Messages purged by this step.
    pub purged: u64,
    /// Nothing is left to purge (for this cutoff, or this user).
    pub done: bool,
}

impl Store {
    /// Sets how many days a room's messages are kept; `None` keeps them forever.
    pub fn set_retention(&self, room: &RoomId, days: Option<u32>) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(RETENTION)?;
            match days {
                Some(days) => table.insert(room.as_str(), days)?,
                None => table.remove(room.as_str())?,
            };
        }
        txn.commit()?;
        Ok(())
    }

    /// Every room with a retention period, and its days.
    pub fn retention_rooms(&self) -> Result<Vec<(RoomId, u32)>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(RETENTION)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (room, days) = row?;
            out.push((parse_id(room.value())?, days.value()));
        }
        Ok(out)
    }

    /// A room's retention period in days, if it has one.
    pub fn retention(&self, room: &RoomId) -> Result<Option<u32>, StoreError> {
        let txn = self.begin_read()?;
        Ok(txn
            .open_table(RETENTION)?
            .get(room.as_str())?
            .map(|v| v.value()))
    }

    /// The seq before which every message of a room is purged (1: none is).
    pub fn purge_floor(&self, room: &RoomId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        Ok(txn
            .open_table(PURGE_FLOORS)?
            .get(room.as_str())?
            .map_or(1, |v| v.value()))
    }

    /// One bounded step of purging a room's messages sent before `before_ms`, from the room's
    /// floor on. It stops at the first event sent at or after `before_ms`: a room's history is
    /// purged from its start, never with holes left older than what is kept.
    pub fn purge_step(&self, room: &RoomId, before_ms: u64) -> Result<PurgeStep, StoreError> {
        let txn = self.begin_write()?;
        let step = {
            let mut floors = txn.open_table(PURGE_FLOORS)?;
            let floor = floors.get(room.as_str())?.map_or(1, |v| v.value());
            let mut events = txn.open_table(EVENTS)?;
            let mut rewrites = Vec::new();
            let mut next = floor;
            let mut looked = 0;
            let mut reached_kept = false;
            for row in events
                .range((room.as_str(), floor)..=(room.as_str(), u64::MAX))?
                .take(STEP_ROWS)
            {
                let (key, value) = row?;
                looked += 1;
                let seq = key.value().1;
                let (id, envelope) = event_of_row(value.value())?;
                if envelope.origin_ts >= before_ms {
                    reached_kept = true;
                    break;
                }
                if matches!(envelope.content, Content::Message { .. }) {
                    rewrites.push((seq, purged_row(&id, envelope)));
                }
                next = seq + 1;
            }
            for (seq, row) in &rewrites {
                events.insert((room.as_str(), *seq), row.as_slice())?;
            }
            if next > floor {
                floors.insert(room.as_str(), next)?;
            }
            PurgeStep {
                purged: rewrites.len() as u64,
                done: reached_kept || looked < STEP_ROWS,
            }
        };
        txn.commit()?;
        Ok(step)
    }

    /// One bounded step of purging every message `user` sent, in every room stored here, from
    /// `from` (a room and seq; `None` to start). The place to go on from, `None` when done.
    pub fn erase_step(
        &self,
        user: &UserId,
        from: Option<(RoomId, u64)>,
    ) -> Result<(u64, Option<(RoomId, u64)>), StoreError> {
        let txn = self.begin_write()?;
        let result = {
            let mut events = txn.open_table(EVENTS)?;
            let start = from
                .as_ref()
                .map_or(("", 0), |(room, seq)| (room.as_str(), *seq));
            let mut rewrites = Vec::new();
            let mut last = None;
            let mut looked = 0;
            for row in events.range(start..)?.take(STEP_ROWS) {
                let (key, value) = row?;
                looked += 1;
                let (room, seq) = key.value();
                last = Some((room.to_owned(), seq));
                let (id, envelope) = event_of_row(value.value())?;
                if envelope.sender == *user && matches!(envelope.content, Content::Message { .. }) {
                    rewrites.push((room.to_owned(), seq, purged_row(&id, envelope)));
                }
            }
            for (room, seq, row) in &rewrites {
                events.insert((room.as_str(), *seq), row.as_slice())?;
            }
            let next = match last {
                Some((room, seq)) if looked == STEP_ROWS => Some((parse_id(&room)?, seq + 1)),
                _ => None,
            };
            (rewrites.len() as u64, next)
        };
        txn.commit()?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use hearth_spec::{DeviceId, ServerName, TxnId};

    use super::*;
    use crate::store::{Batch, NewEvent};

    fn envelope(room: &RoomId, sender: &str, n: u64, ts: u64, content: Content) -> Envelope {
        Envelope {
            version: 1,
            room_id: room.clone(),
            sender: UserId::parse(sender).unwrap(),
            sender_device: DeviceId::parse("D").unwrap(),
            txn_id: TxnId::parse(&format!("t{n}")).unwrap(),
            origin_ts: ts,
            content,
        }
    }

    fn message(room: &RoomId, sender: &str, n: u64, ts: u64) -> Envelope {
        envelope(
            room,
            sender,
            n,
            ts,
            Content::Message {
                payload: vec![7; 40],
            },
        )
    }

    fn store_with(events: &[(&RoomId, Envelope)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mut batch = Batch::default();
        let mut seqs = std::collections::HashMap::new();
        for (room, e) in events {
            let seq = seqs.entry(room.to_string()).or_insert(0);
            *seq += 1;
            let bytes = e.encode();
            batch.txns.push(super::super::Txn {
                user: e.sender.clone(),
                device: e.sender_device.clone(),
                txn: e.txn_id.to_string(),
                event: EventId::of_bytes(&bytes),
                room: (*room).clone(),
                seq: *seq,
            });
            batch.events.push(NewEvent {
                room: (*room).clone(),
                seq: *seq,
                id: EventId::of_bytes(&bytes),
                bytes,
                sender: e.sender.clone(),
            });
        }
        store.commit(&batch).unwrap();
        (dir, store)
    }

    fn contents(store: &Store, room: &RoomId) -> Vec<(u64, &'static str, u64)> {
        store
            .events_before(room, u64::MAX, 10_000)
            .unwrap()
            .into_iter()
            .map(|e| {
                let (_, envelope) = event_of_row(&e.envelope).unwrap();
                let kind = match envelope.content {
                    Content::Message { .. } => "message",
                    Content::Purged {} => "purged",
                    Content::Member { .. } => "member",
                    _ => "other",
                };
                (e.seq, kind, envelope.origin_ts)
            })
            .collect()
    }

    #[test]
    fn a_purge_empties_old_messages_in_place_and_keeps_ids_order_and_structure() {
        let home = ServerName::parse("h").unwrap();
        let room = RoomId::new("r", &home).unwrap();
        let member = Content::Member {
            target: UserId::parse("@b:h").unwrap(),
            membership: hearth_spec::Membership::Join,
        };
        let events = vec![
            (&room, message(&room, "@a:h", 1, 100)),
            (&room, envelope(&room, "@a:h", 2, 150, member)),
            (&room, message(&room, "@b:h", 3, 200)),
            (&room, message(&room, "@a:h", 4, 300)),
        ];
        let ids: Vec<EventId> = events.iter().map(|(_, e)| e.event_id()).collect();
        let (_dir, store) = store_with(&events);

        let step = store.purge_step(&room, 250).unwrap();
        assert_eq!(
            step,
            PurgeStep {
                purged: 2,
                done: true
            }
        );
        assert_eq!(
            contents(&store, &room),
            vec![
                (1, "purged", 100),
                (2, "member", 150),
                (3, "purged", 200),
                (4, "message", 300)
            ]
        );
        // Every slot keeps its event id, and a retried transaction still finds it.
        for (seq, id) in ids.iter().enumerate() {
            let row = store.event_at(&room, seq as u64 + 1).unwrap().unwrap();
            assert_eq!(event_of_row(&row).unwrap().0, *id);
            let (_, e) = &events[seq];
            assert_eq!(
                store
                    .txn_event(&e.sender, &e.sender_device, e.txn_id.as_str())
                    .unwrap(),
                Some((room.clone(), Some(seq as u64 + 1), *id))
            );
        }
        assert_eq!(store.last_seq(&room).unwrap(), 4);
        assert_eq!(store.purge_floor(&room).unwrap(), 4);
        // A peer is sent the purged envelope, which decodes as one.
        let row = store.event_at(&room, 1).unwrap().unwrap();
        let wire = Envelope::decode(wire_envelope(&row)).unwrap();
        assert_eq!(wire.content, Content::Purged {});
        assert_eq!(wire.sender.as_str(), "@a:h");

        // Purging again with the same cutoff changes nothing; a later one goes on from the floor.
        assert_eq!(store.purge_step(&room, 250).unwrap().purged, 0);
        assert_eq!(store.purge_step(&room, 301).unwrap().purged, 1);
        assert_eq!(store.purge_floor(&room).unwrap(), 5);
    }

    #[test]
    fn a_purge_stops_at_the_first_kept_event_and_goes_in_bounded_steps() {
        let home = ServerName::parse("h").unwrap();
        let room = RoomId::new("r", &home).unwrap();
        let other = RoomId::new("o", &home).unwrap();
        let mut events: Vec<(&RoomId, Envelope)> = (1..=1200)
            .map(|n| (&room, message(&room, "@a:h", n, n)))
            .collect();
        events.push((&other, message(&other, "@a:h", 1, 1)));
        let (_dir, store) = store_with(&events);

        let mut steps = Vec::new();
        loop {
            let step = store.purge_step(&room, 1100).unwrap();
            steps.push(step.purged);
            if step.done {
                break;
            }
        }
        assert_eq!(steps, vec![512, 512, 75]);
        let kinds = contents(&store, &room);
        assert!(kinds[..1099].iter().all(|(_, k, _)| *k == "purged"));
        assert!(kinds[1099..].iter().all(|(_, k, _)| *k == "message"));
        // Another room is untouched.
        assert_eq!(contents(&store, &other), vec![(1, "message", 1)]);
    }

    #[test]
    fn erasing_a_user_purges_their_messages_in_every_room_and_nobody_elses() {
        let home = ServerName::parse("h").unwrap();
        let r1 = RoomId::new("r1", &home).unwrap();
        let r2 = RoomId::new("r2", &home).unwrap();
        let mut events = Vec::new();
        for n in 0..700 {
            let sender = if n % 2 == 0 { "@gone:h" } else { "@stays:h" };
            events.push((&r1, message(&r1, sender, n, n)));
        }
        events.push((&r2, message(&r2, "@gone:h", 1000, 5)));
        events.push((&r2, message(&r2, "@stays:h", 1001, 6)));
        let (_dir, store) = store_with(&events);

        let gone = UserId::parse("@gone:h").unwrap();
        let mut from = None;
        let mut total = 0;
        loop {
            let (purged, next) = store.erase_step(&gone, from).unwrap();
            total += purged;
            match next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        assert_eq!(total, 351);
        for room in [&r1, &r2] {
            for e in store.events_before(room, u64::MAX, 10_000).unwrap() {
                let (_, envelope) = event_of_row(&e.envelope).unwrap();
                let purged = envelope.content == Content::Purged {};
                assert_eq!(purged, envelope.sender == gone, "{room}#{}", e.seq);
            }
        }
    }
}
