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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
    // A `RoomRow`, borrowed (postcard writes a struct as the tuple of its fields).
    encode(&(
        meta.processed_seq,
        &meta.departed,
        meta.removed,
        meta.own_commit_epoch,
        meta.joined_seq,
        meta.seen_dropped,
    ))
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
fn list_row<T: Serialize>(list: &[T]) -> Vec<u8> {
    if list.is_empty() {
        Vec::new()
    } else {
        encode(&list)
    }
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
    let lists = [
        (REFUSED, list_row(&saved.refused)),
        (OWED, list_row(&saved.owed)),
    ];
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
    for (tag, row) in [
        (REFUSED, list_row(&saved.refused)),
        (OWED, list_row(&saved.owed)),
    ] {
        if !row.is_empty() {
            rows.insert(vec![tag], row);
        }
    }
    rows
}

/// The state as last written, part by part, so a save finds the rows it changed by comparing
/// (no encoding or copying of what did not change: a device with thousands of rows saves after
/// every message).
#[derive(Debug, Default)]
pub struct Written {
    header: Vec<u8>,
    mls: MlsEntries,
    /// Per room: its row, and the numbers of its first seen id and of the one after its last.
    rooms: BTreeMap<RoomId, (Vec<u8>, u64, u64)>,
    sent: BTreeMap<String, SentMessage>,
    unconfirmed: HashMap<(RoomId, u64), Decrypted>,
    /// Encoded lists of `f` and `o` (empty: no row).
    lists: [Vec<u8>; 2],
}

impl Written {
    /// What `saved` and `mls` hold, as a snapshot of them writes it.
    pub fn of(saved: &Saved, mls: &MlsEntries) -> Self {
        let mut written = Self::default();
        written.changes(saved, mls);
        written
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
        self.mls.retain(|key, _| {
            let kept = mls.contains_key(key);
            if !kept {
                deletes.push(mls_key(key));
            }
            kept
        });
        for (room, meta) in &saved.rooms {
            let row = room_row_of(meta);
            let end = meta.seen_dropped + meta.seen.len() as u64;
            let (old_row, old_start, old_end) = self.rooms.remove(room).unwrap_or((
                Vec::new(),
                meta.seen_dropped,
                meta.seen_dropped,
            ));
            if row != old_row {
                puts.push((room_key(ROOM, room), row.clone()));
            }
            // Seen ids are only added at the back and dropped at the front.
            for n in old_start..meta.seen_dropped.min(old_end) {
                deletes.push(seen_key(room, n));
            }
            for (n, id) in (meta.seen_dropped..end).zip(&meta.seen) {
                if n >= old_end {
                    puts.push((seen_key(room, n), id.to_vec()));
                }
            }
            self.rooms
                .insert(room.clone(), (row, meta.seen_dropped, end));
        }
        self.rooms.retain(|room, (_, start, end)| {
            let kept = saved.rooms.contains_key(room);
            if !kept {
                deletes.push(room_key(ROOM, room));
                deletes.extend((*start..*end).map(|n| seen_key(room, n)));
            }
            kept
        });
        for (txn, sent) in &saved.sent {
            if self.sent.get(txn) != Some(sent) {
                puts.push((sent_key(txn), encode(sent)));
                self.sent.insert(txn.clone(), sent.clone());
            }
        }
        self.sent.retain(|txn, _| {
            let kept = saved.sent.contains_key(txn);
            if !kept {
                deletes.push(sent_key(txn));
            }
            kept
        });
        let mut unconfirmed = HashSet::with_capacity(saved.unconfirmed.len());
        for decrypted in &saved.unconfirmed {
            let place = (decrypted.room.clone(), decrypted.seq);
            if self.unconfirmed.get(&place) != Some(decrypted) {
                puts.push((unconfirmed_key(&place.0, place.1), encode(decrypted)));
                self.unconfirmed.insert(place.clone(), decrypted.clone());
            }
            unconfirmed.insert(place);
        }
        self.unconfirmed.retain(|place, _| {
            let kept = unconfirmed.contains(place);
            if !kept {
                deletes.push(unconfirmed_key(&place.0, place.1));
            }
            kept
        });
        let lists = [
            (REFUSED, list_row(&saved.refused)),
            (OWED, list_row(&saved.owed)),
        ];
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
            // By room, then seq: the order they come back in after a restart.
            Some(&UNCONFIRMED) => saved.unconfirmed.push(decode::<Decrypted>(key, value)?),
            _ => {
                return Err(format!("unknown row {:?}", String::from_utf8_lossy(key)));
            }
        }
    }
    Ok((saved, entries))
}
