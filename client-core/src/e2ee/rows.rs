//! The device state as rows (key → value), the unit the journal records changes in: a message
//! changes a few rows (its ratchet's, its room's progress, the id it adds to the seen list), so
//! what a device writes per message is those rows, not the whole state.
//!
//! Keys start with a tag byte; a room id inside a key is length-prefixed so one room's rows never
//! interleave with another's. Values are postcard.
//!
//! | key | value |
//! |---|---|
//! | `h` | [`Header`]: identity, signing key, counters |
//! | `m` openmls key | an openmls storage entry (groups, secrets, key packages) |
//! | `r` room | [`RoomRow`]: the room's progress |
//! | `s` room n (u64 BE) | the n-th message id ever remembered in the room (the latest 4096 are kept) |
//! | `t` txn id | a [`SentMessage`] awaiting its echo |
//! | `f` | refused messages, oldest first (absent when none) |
//! | `o` | owed messages (absent when none) |
//! | `u` room seq (u64 BE) | a decrypted message the app has not confirmed |
//! | `l` | the rooms leased for sending before a flush, in order, each with its epoch (absent when none) |

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hearth_spec::{DeviceId, RoomId, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::saved::{Decrypted, Entries, OwedMessage, RoomMeta, STATE_VERSION, Saved, SentMessage};

/// The state as rows, in key order.
pub type Rows = BTreeMap<Vec<u8>, Vec<u8>>;
/// openmls storage as the device's provider holds it.
pub type MlsEntries = HashMap<Vec<u8>, Vec<u8>>;
/// Rows written (new or changed) and rows deleted.
pub type Changes = (Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<u8>>);

const HEADER: u8 = b'h';
const MLS: u8 = b'm';
const ROOM: u8 = b'r';
const SEEN: u8 = b's';
const SENT: u8 = b't';
const REFUSED: u8 = b'f';
const OWED: u8 = b'o';
const UNCONFIRMED: u8 = b'u';
const LEASED: u8 = b'l';

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    user: UserId,
    device: DeviceId,
    signer_public: Vec<u8>,
    next_order: u64,
    cursor: u64,
}

/// A room's [`RoomMeta`] without its seen ids (rows of their own).
#[derive(Debug, Deserialize)]
struct RoomRow {
    processed_seq: u64,
    departed: BTreeSet<UserId>,
    removed: bool,
    own_commit_epoch: Option<u64>,
    joined_seq: Option<u64>,
    seen_dropped: u64,
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    postcard::to_stdvec(value).expect("device state rows serialise")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("row {:?}: {e}", String::from_utf8_lossy(key)))
}

fn room_key(tag: u8, room: &RoomId) -> Vec<u8> {
    let id = room.as_str().as_bytes();
    let mut key = Vec::with_capacity(3 + id.len() + 8);
    key.push(tag);
    key.extend_from_slice(&(id.len() as u16).to_be_bytes());
    key.extend_from_slice(id);
    key
}

/// The room named after a row's tag, and what follows it.
fn split_room(key: &[u8]) -> Result<(RoomId, &[u8]), String> {
    let bad = || format!("row key {:?} names no room", String::from_utf8_lossy(key));
    let len = key.get(1..3).ok_or_else(bad)?;
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let id = key.get(3..3 + len).ok_or_else(bad)?;
    let room = std::str::from_utf8(id)
        .ok()
        .and_then(|s| RoomId::parse(s).ok())
        .ok_or_else(bad)?;
    Ok((room, &key[3 + len..]))
}

fn header_of(saved: &Saved) -> Vec<u8> {
    encode(&Header {
        user: saved.user.clone(),
        device: saved.device.clone(),
        signer_public: saved.signer_public.clone(),
        next_order: saved.next_order,
        cursor: saved.cursor,
    })
}

fn room_row_of(meta: &RoomMeta) -> Vec<u8> {
    write_room_row(meta, Vec::new())
}

/// [`room_row_of`] into `buffer` (emptied first), so a save that checks every room's row does
/// not allocate one per room.
fn write_room_row(meta: &RoomMeta, mut buffer: Vec<u8>) -> Vec<u8> {
    buffer.clear();
    // A `RoomRow`, borrowed (postcard writes a struct as the tuple of its fields).
    postcard::to_extend(
        &(
            meta.processed_seq,
            &meta.departed,
            meta.removed,
            meta.own_commit_epoch,
            meta.joined_seq,
            meta.seen_dropped,
        ),
        buffer,
    )
    .expect("device state rows serialise")
}

fn mls_key(key: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(1 + key.len());
    row.push(MLS);
    row.extend_from_slice(key);
    row
}

fn seen_key(room: &RoomId, n: u64) -> Vec<u8> {
    let mut key = room_key(SEEN, room);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

fn sent_key(txn: &str) -> Vec<u8> {
    let mut key = vec![SENT];
    key.extend_from_slice(txn.as_bytes());
    key
}

fn unconfirmed_key(room: &RoomId, seq: u64) -> Vec<u8> {
    let mut key = room_key(UNCONFIRMED, room);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A list's row: its encoding, or nothing for an empty list (the row is then absent).
fn list_row(list: &impl Serialize, empty: bool) -> Vec<u8> {
    if empty { Vec::new() } else { encode(list) }
}

/// The rows that hold a whole list each (empty: no row), by tag.
fn list_rows(saved: &Saved) -> [(u8, Vec<u8>); 3] {
    [
        (REFUSED, list_row(&saved.refused, saved.refused.is_empty())),
        (OWED, list_row(&saved.owed, saved.owed.is_empty())),
        (LEASED, list_row(&saved.leased, saved.leased.is_empty())),
    ]
}

/// A postcard unsigned varint.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Rows written straight into a snapshot's postcard encoding, in any order (a reader collects
/// them into a map), without building each row on its own.
struct RowWriter {
    out: Vec<u8>,
    scratch: Vec<u8>,
}

impl RowWriter {
    fn row(&mut self, key: &[&[u8]], value: &[u8]) {
        put_varint(
            &mut self.out,
            key.iter().map(|p| p.len()).sum::<usize>() as u64,
        );
        for part in key {
            self.out.extend_from_slice(part);
        }
        put_varint(&mut self.out, value.len() as u64);
        self.out.extend_from_slice(value);
    }

    fn encoded_row(&mut self, key: &[&[u8]], value: &impl Serialize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let scratch = postcard::to_extend(value, scratch).expect("device state rows serialise");
        self.row(key, &scratch);
        self.scratch = scratch;
    }
}

/// The snapshot record `(version, generation, rows)` of `saved` with the openmls storage `mls`,
/// as postcard would encode it with the rows of [`rows_of`] (the order of rows aside).
pub fn snapshot_of(version: u8, generation: u64, saved: &Saved, mls: &MlsEntries) -> Vec<u8> {
    let lists = list_rows(saved);
    let count = 1
        + mls.len()
        + saved
            .rooms
            .values()
            .map(|meta| 1 + meta.seen.len())
            .sum::<usize>()
        + saved.sent.len()
        + saved.unconfirmed.len()
        + lists.iter().filter(|(_, row)| !row.is_empty()).count();
    let mut w = RowWriter {
        out: Vec::with_capacity(4096),
        scratch: Vec::new(),
    };
    w.out.push(version);
    put_varint(&mut w.out, generation);
    put_varint(&mut w.out, count as u64);
    w.row(&[&[HEADER]], &header_of(saved));
    for (key, value) in mls {
        w.row(&[&[MLS], key], value);
    }
    for (room, meta) in &saved.rooms {
        let room_row = room_key(ROOM, room);
        w.row(&[&room_row], &room_row_of(meta));
        let seen = room_key(SEEN, room);
        for (n, id) in (meta.seen_dropped..).zip(&meta.seen) {
            w.row(&[&seen, &n.to_be_bytes()], id);
        }
    }
    for (txn, sent) in &saved.sent {
        w.encoded_row(&[&[SENT], txn.as_bytes()], sent);
    }
    for decrypted in &saved.unconfirmed {
        let room = room_key(UNCONFIRMED, &decrypted.room);
        w.encoded_row(&[&room, &decrypted.seq.to_be_bytes()], decrypted);
    }
    for (tag, row) in &lists {
        if !row.is_empty() {
            w.row(&[&[*tag]], row);
        }
    }
    w.out
}

/// The rows of `saved` with the openmls storage `mls` (key packages included).
#[cfg(test)]
pub fn rows_of(saved: &Saved, mls: &MlsEntries) -> Rows {
    let mut rows = Rows::new();
    rows.insert(vec![HEADER], header_of(saved));
    for (key, value) in mls {
        rows.insert(mls_key(key), value.clone());
    }
    for (room, meta) in &saved.rooms {
        rows.insert(room_key(ROOM, room), room_row_of(meta));
        for (n, id) in (meta.seen_dropped..).zip(&meta.seen) {
            rows.insert(seen_key(room, n), id.to_vec());
        }
    }
    for (txn, sent) in &saved.sent {
        rows.insert(sent_key(txn), encode(sent));
    }
    for decrypted in &saved.unconfirmed {
        rows.insert(
            unconfirmed_key(&decrypted.room, decrypted.seq),
            encode(decrypted),
        );
    }
    for (tag, row) in list_rows(saved) {
        if !row.is_empty() {
            rows.insert(vec![tag], row);
        }
    }
    rows
}

/// Whether `d` is the unconfirmed message at `place` (room, seq).
fn is_at(d: &Decrypted, (room, seq): &(RoomId, u64)) -> bool {
    d.seq == *seq && d.room == *room
}

/// The state as last written, part by part, so a save finds the rows it changed by comparing
/// (no encoding or copying of what did not change: a device with thousands of rows saves after
/// every message).
#[derive(Debug, Default)]
pub struct Written {
    header: Vec<u8>,
    /// A fast hasher: every save looks up each openmls entry's key here (hundreds of keys of
    /// 50–100 bytes for a device in many rooms), and these keys are openmls's, not a peer's.
    mls: HashMap<Vec<u8>, Vec<u8>, foldhash::fast::FixedState>,
    /// Per room: its row, and the numbers of its first seen id and of the one after its last.
    rooms: BTreeMap<RoomId, (Vec<u8>, u64, u64)>,
    sent: BTreeMap<String, SentMessage>,
    /// The places (room, seq) of the unconfirmed messages written, in the state's order.
    unconfirmed: VecDeque<(RoomId, u64)>,
    /// Encoded lists of `f`, `o` and `l` (empty: no row).
    lists: [Vec<u8>; 3],
}

impl Written {
    /// What `saved` and `mls` hold, as a snapshot of them writes it.
    pub fn of(saved: &Saved, mls: &MlsEntries) -> Self {
        let mut written = Self::default();
        written.changes(saved, mls);
        written
    }

    /// How many of the unconfirmed places written left from the front, if that is all that
    /// left (`None`: some left elsewhere, so the caller walks them all). The last place written
    /// is looked for from the back of `now` (past it are only the new ones). If it is at `p`,
    /// `now[..=p]` is what stayed of the `w` written, in order; when `d = w - 1 - p` of them
    /// left and `now[0]` is the written `d`-th, the `w - d` that stayed can only be the written
    /// `d..`, as places are unique.
    fn unconfirmed_dropped_from_front(&self, now: &VecDeque<Decrypted>) -> Option<usize> {
        let Some(last) = self.unconfirmed.back() else {
            return Some(0);
        };
        let p = now.iter().rposition(|d| is_at(d, last))?;
        let dropped = (self.unconfirmed.len() - 1).checked_sub(p)?;
        is_at(now.front()?, &self.unconfirmed[dropped]).then_some(dropped)
    }

    /// The rows changed since the last call, which this then counts as written.
    pub fn changes(&mut self, saved: &Saved, mls: &MlsEntries) -> Changes {
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        let header = header_of(saved);
        if header != self.header {
            puts.push((vec![HEADER], header.clone()));
            self.header = header;
        }
        for (key, value) in mls {
            if self.mls.get(key) != Some(value) {
                puts.push((mls_key(key), value.clone()));
                self.mls.insert(key.clone(), value.clone());
            }
        }
        // As with rooms below: every entry of `mls` is in `self.mls` now.
        if self.mls.len() != mls.len() {
            self.mls.retain(|key, _| {
                let kept = mls.contains_key(key);
                if !kept {
                    deletes.push(mls_key(key));
                }
                kept
            });
        }
        let mut row = Vec::new();
        for (room, meta) in &saved.rooms {
            row = write_room_row(meta, row);
            let end = meta.seen_dropped + meta.seen.len() as u64;
            let (old_row, old_start, old_end) = match self.rooms.get_mut(room) {
                Some(written) => written,
                None => self.rooms.entry(room.clone()).or_insert((
                    Vec::new(),
                    meta.seen_dropped,
                    meta.seen_dropped,
                )),
            };
            if row != *old_row {
                puts.push((room_key(ROOM, room), row.clone()));
                old_row.clone_from(&row);
            }
            // Seen ids are only added at the back and dropped at the front.
            for n in *old_start..meta.seen_dropped.min(*old_end) {
                deletes.push(seen_key(room, n));
            }
            // Only the ids past the last save's end: a room keeps thousands, a save adds one.
            let first_new = (*old_end).max(meta.seen_dropped);
            let skip = (first_new - meta.seen_dropped) as usize;
            for (n, id) in (first_new..end).zip(meta.seen.range(skip.min(meta.seen.len())..)) {
                puts.push((seen_key(room, n), id.to_vec()));
            }
            (*old_start, *old_end) = (meta.seen_dropped, end);
        }
        // Every room of `saved` is in `self.rooms` now, so equal counts mean none has gone.
        if self.rooms.len() != saved.rooms.len() {
            self.rooms.retain(|room, (_, start, end)| {
                let kept = saved.rooms.contains_key(room);
                if !kept {
                    deletes.push(room_key(ROOM, room));
                    deletes.extend((*start..*end).map(|n| seen_key(room, n)));
                }
                kept
            });
        }
        for (txn, sent) in &saved.sent {
            if self.sent.get(txn) != Some(sent) {
                puts.push((sent_key(txn), encode(sent)));
                self.sent.insert(txn.clone(), sent.clone());
            }
        }
        if self.sent.len() != saved.sent.len() {
            self.sent.retain(|txn, _| {
                let kept = saved.sent.contains_key(txn);
                if !kept {
                    deletes.push(sent_key(txn));
                }
                kept
            });
        }
        // Unconfirmed messages never change once added: they join at the back and leave from
        // anywhere, in order, and no place (room, seq) comes twice. So the rows written are a
        // sequence that the state's list continues, less what left; usually nothing left, or
        // only the oldest (an app that does not confirm, past MAX_UNCONFIRMED), and a save
        // writes the new ones without looking at the thousands a catch-up may hold.
        let now = &saved.unconfirmed;
        let next = match self.unconfirmed_dropped_from_front(now) {
            Some(dropped) => {
                for place in self.unconfirmed.drain(..dropped) {
                    deletes.push(unconfirmed_key(&place.0, place.1));
                }
                self.unconfirmed.len()
            }
            None => {
                let mut next = 0;
                let written = std::mem::take(&mut self.unconfirmed);
                for place in written {
                    if now.get(next).is_some_and(|d| is_at(d, &place)) {
                        next += 1;
                        self.unconfirmed.push_back(place);
                    } else {
                        deletes.push(unconfirmed_key(&place.0, place.1));
                    }
                }
                next
            }
        };
        for decrypted in now.range(next..) {
            puts.push((
                unconfirmed_key(&decrypted.room, decrypted.seq),
                encode(decrypted),
            ));
            self.unconfirmed
                .push_back((decrypted.room.clone(), decrypted.seq));
        }
        let lists = list_rows(saved);
        for ((tag, row), old) in lists.into_iter().zip(self.lists.iter_mut()) {
            if row != *old {
                if row.is_empty() {
                    deletes.push(vec![tag]);
                } else {
                    puts.push((vec![tag], row.clone()));
                }
                *old = row;
            }
        }
        (puts, deletes)
    }
}

/// The state and the openmls storage entries the rows hold.
pub fn saved_of(rows: &Rows) -> Result<(Saved, Entries), String> {
    let header: Header = match rows.get([HEADER].as_slice()) {
        Some(bytes) => decode(&[HEADER], bytes)?,
        None => return Err("the state has no header row".into()),
    };
    let mut saved = Saved::new(header.user, header.device, header.signer_public);
    saved.version = STATE_VERSION;
    saved.next_order = header.next_order;
    saved.cursor = header.cursor;
    let mut entries = Entries::new();
    for (key, value) in rows {
        match key.first() {
            Some(&HEADER) => {}
            Some(&MLS) => entries.push((key[1..].to_vec(), value.clone())),
            Some(&ROOM) => {
                let (room, _) = split_room(key)?;
                let row: RoomRow = decode(key, value)?;
                let meta = saved.rooms.entry(room).or_default();
                meta.processed_seq = row.processed_seq;
                meta.departed = row.departed;
                meta.removed = row.removed;
                meta.own_commit_epoch = row.own_commit_epoch;
                meta.joined_seq = row.joined_seq;
                meta.seen_dropped = row.seen_dropped;
            }
            // Keys sort by room, then by number: each room's ids arrive oldest first (and after
            // its room row, as `r` sorts before `s`).
            Some(&SEEN) => {
                let (room, _) = split_room(key)?;
                let id: [u8; 16] = value
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("a seen id of {room} is not 16 bytes"))?;
                saved.rooms.entry(room).or_default().seen.push_back(id);
            }
            Some(&SENT) => {
                let sent: SentMessage = decode(key, value)?;
                saved.sent.insert(sent.txn_id.clone(), sent);
            }
            Some(&REFUSED) => saved.refused = decode(key, value)?,
            Some(&OWED) => saved.owed = decode::<Vec<OwedMessage>>(key, value)?,
            Some(&LEASED) => saved.leased = decode(key, value)?,
            // By room, then seq: the order they come back in after a restart.
            Some(&UNCONFIRMED) => saved
                .unconfirmed
                .push_back(decode::<Decrypted>(key, value)?),
            _ => {
                return Err(format!("unknown row {:?}", String::from_utf8_lossy(key)));
            }
        }
    }
    Ok((saved, entries))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn room(n: u64) -> RoomId {
        RoomId::parse(&format!("!r{n}:x.test")).unwrap()
    }

    /// Saves after every random change, the way a device does, and checks that the rows the
    /// saves wrote and deleted add up to the rows of the whole state: seen ids added and
    /// dropped past the window, rooms, sent and unconfirmed messages and openmls entries coming
    /// and going.
    #[test]
    fn the_rows_each_save_writes_add_up_to_the_state() {
        let mut saved = Saved::new(
            UserId::parse("@a:x.test").unwrap(),
            DeviceId::parse("DEV").unwrap(),
            vec![1; 32],
        );
        let mut mls = MlsEntries::new();
        let mut written = Written::default();
        let mut rows = Rows::new();
        // Seeded, so a failure repeats.
        let mut dice = StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        // A small window, so that ids leave the front often.
        const WINDOW: usize = 20;
        // So the test shows that it went where it meant to.
        let (mut dropped, mut confirmed) = (0, 0);
        for step in 0..4000u64 {
            match dice.gen_range(0..13) {
                0..=3 => {
                    let meta = saved.rooms.entry(room(dice.gen_range(0..6))).or_default();
                    // Sometimes several ids between two saves.
                    for _ in 0..=dice.gen_range(0..3) {
                        let mut id = [0u8; 16];
                        id[..8].copy_from_slice(&step.to_le_bytes());
                        meta.seen.push_back(id);
                        while meta.seen.len() > WINDOW {
                            meta.seen.pop_front();
                            meta.seen_dropped += 1;
                            dropped += 1;
                        }
                    }
                    meta.processed_seq = step;
                }
                4 => {
                    saved.rooms.remove(&room(dice.gen_range(0..6)));
                }
                5 => {
                    let key = vec![dice.gen_range(0..8) as u8];
                    mls.insert(key, step.to_le_bytes().to_vec());
                }
                6 => {
                    mls.remove([dice.gen_range(0..8) as u8].as_slice());
                }
                7 => {
                    let txn = format!("t{}", dice.gen_range(0..5));
                    saved.sent.insert(
                        txn.clone(),
                        SentMessage {
                            room: room(0),
                            txn_id: txn,
                            body: step.to_le_bytes().to_vec(),
                            epoch: step,
                            order: step,
                            id: [7; 16],
                            copy: false,
                        },
                    );
                }
                8 => {
                    saved.sent.remove(&format!("t{}", dice.gen_range(0..5)));
                }
                9 => {
                    // A catch-up decrypts several before the app confirms any.
                    for n in 0..=dice.gen_range(0..4) {
                        saved.unconfirmed.push_back(Decrypted {
                            room: room(dice.gen_range(0..3)),
                            seq: step * 8 + n,
                            message: None,
                        });
                    }
                }
                10 => {
                    // The app confirms some, from anywhere in the list.
                    let before = saved.unconfirmed.len();
                    saved.unconfirmed.retain(|_| dice.gen_range(0..3) > 0);
                    confirmed += before - saved.unconfirmed.len();
                }
                11 => {
                    // The oldest go, as past MAX_UNCONFIRMED, with or without new ones behind.
                    for _ in 0..dice.gen_range(1..3) {
                        saved.unconfirmed.pop_front();
                    }
                    if dice.gen_bool(0.5) {
                        saved.unconfirmed.push_back(Decrypted {
                            room: room(dice.gen_range(0..3)),
                            seq: step * 8,
                            message: None,
                        });
                    }
                }
                _ => saved.cursor = step,
            }
            let (puts, deletes) = written.changes(&saved, &mls);
            for key in deletes {
                assert!(
                    rows.remove(&key).is_some(),
                    "step {step}: deleted a row never written"
                );
            }
            rows.extend(puts);
            assert_eq!(rows, rows_of(&saved, &mls), "step {step}");
        }
        assert!(dropped > 100 && confirmed > 100, "{dropped} {confirmed}");
    }
}
