//! The device's MLS records in IndexedDB. Read once when the device opens; a change updates
//! the copy in memory and is kept to write. [`Pending::flush`] writes what was kept in one
//! strictly durable transaction and waits for it; the transport calls it before any request
//! leaves the tab, and the app before it acknowledges what it received: the state a message was
//! encrypted with is on disk before the message is sent, as the native SDK's fsync guarantees.
//! Coalescing matters: a burst of messages would otherwise wait for the disk once per step.
//!
//! IndexedDB has no append, so the journal is a run of entries keyed `["mls-journal", n]`, one
//! per appended frame: a save writes the rows it changed (a few KB), not the whole state, and the
//! state is written whole only when the journal outgrows it (the SDK's limit, as on disk). The
//! snapshot and the emptying of the journal land in one transaction. Before 2026-12-03 the tab
//! wrote its state whole on every save and kept the journal, always empty, under the key
//! `mls-journal`; it is read and removed with the rest.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use hearth_client_core::e2ee::{E2eeError, Record, StateStorage};
use js_sys::Uint8Array;
use wasm_bindgen::JsValue;

use crate::idb::{Db, IdbError};

const STORE: &str = "state";
const RECORDS: [Record; 3] = [Record::State, Record::Keys, Record::Journal];

/// A record's key; the journal's frames are keyed by its name and their number.
fn name(record: Record) -> &'static str {
    match record {
        Record::State => "mls-state",
        Record::Keys => "mls-keys",
        Record::Journal => "mls-journal",
    }
}

fn key(record: Record) -> JsValue {
    JsValue::from_str(name(record))
}

/// The key of the journal's `n`-th frame.
fn frame_key(n: f64) -> JsValue {
    js_sys::Array::of2(&key(Record::Journal), &JsValue::from_f64(n)).into()
}

/// What was changed in memory and not yet written.
#[derive(Debug, Default)]
struct Unwritten {
    /// Records replaced whole (the snapshot, the key file).
    records: HashMap<Record, Vec<u8>>,
    /// The journal was emptied: its frames numbered below this go, with the old single record.
    emptied_below: Option<u64>,
    /// Frames appended since, by number.
    frames: Vec<(u64, Vec<u8>)>,
}

impl Unwritten {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.emptied_below.is_none() && self.frames.is_empty()
    }

    /// `self` (not written) followed by `later`.
    fn then(mut self, later: Unwritten) -> Unwritten {
        self.records.extend(later.records);
        if let Some(below) = later.emptied_below {
            self.emptied_below = Some(self.emptied_below.map_or(below, |b| b.max(below)));
            self.frames.retain(|(n, _)| *n >= below);
        }
        self.frames.extend(later.frames);
        self
    }
}

/// Changes made in memory and not yet written.
#[derive(Debug, Clone)]
pub struct Pending {
    db: Db,
    unwritten: Rc<RefCell<Unwritten>>,
}

impl Pending {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            unwritten: Rc::default(),
        }
    }

    /// Writes every change made so far, durably, and waits until it is on disk.
    pub async fn flush(&self) -> Result<(), IdbError> {
        let unwritten = std::mem::take(&mut *self.unwritten.borrow_mut());
        if unwritten.is_empty() {
            return Ok(());
        }
        let mut entries: Vec<(JsValue, JsValue)> = unwritten
            .records
            .iter()
            .map(|(record, bytes)| (key(*record), Uint8Array::from(bytes.as_slice()).into()))
            .collect();
        entries.extend(unwritten.frames.iter().map(|(n, bytes)| {
            (
                frame_key(*n as f64),
                Uint8Array::from(bytes.as_slice()).into(),
            )
        }));
        let (removed, clear) = match unwritten.emptied_below {
            Some(below) => (
                vec![key(Record::Journal)],
                Some((frame_key(0.0), frame_key(below as f64))),
            ),
            None => (Vec::new(), None),
        };
        if let Err(e) = self.db.write(STORE, &entries, &removed, clear).await {
            // Not written: written with the next flush, before what changed since.
            let mut now = self.unwritten.borrow_mut();
            let later = std::mem::take(&mut *now);
            *now = unwritten.then(later);
            return Err(e);
        }
        Ok(())
    }
}

/// A device's records, kept in its IndexedDB database.
#[derive(Debug)]
pub struct IdbState {
    /// The snapshot and the key file as last replaced, and the journal's frames joined.
    records: HashMap<Record, Vec<u8>>,
    /// The number the next appended frame gets.
    next_frame: u64,
    pending: Pending,
}

impl IdbState {
    pub async fn load(db: &Db, pending: Pending) -> Result<Self, IdbError> {
        // The whole store in one read: the records (string keys) sort before the frames.
        let entries = db
            .bytes_between(STORE, &JsValue::from_str(""), &frame_key(f64::INFINITY))
            .await?;
        let mut records = HashMap::new();
        let mut frames = Vec::new();
        for (key, bytes) in entries {
            match key.as_string() {
                Some(text) => {
                    if let Some(record) = RECORDS.into_iter().find(|r| name(*r) == text) {
                        records.insert(record, bytes);
                    }
                }
                None => {
                    let n = js_sys::Array::from(&key).get(1).as_f64().unwrap_or(0.0);
                    frames.push((n as u64, bytes));
                }
            }
        }
        let next_frame = frames.last().map_or(0, |(n, _)| n + 1);
        if !frames.is_empty() {
            let journal = records.entry(Record::Journal).or_default();
            for (_, bytes) in frames {
                journal.extend_from_slice(&bytes);
            }
        }
        Ok(Self {
            records,
            next_frame,
            pending,
        })
    }
}

impl StateStorage for IdbState {
    fn read(&self, record: Record) -> Result<Option<Vec<u8>>, E2eeError> {
        Ok(self.records.get(&record).cloned())
    }

    fn replace(&mut self, record: Record, bytes: &[u8]) -> Result<(), E2eeError> {
        let mut unwritten = self.pending.unwritten.borrow_mut();
        if record == Record::Journal {
            // Every frame so far goes; what replaces them is a frame of its own.
            unwritten.frames.clear();
            unwritten.emptied_below = Some(self.next_frame);
            self.records.insert(record, bytes.to_vec());
            if !bytes.is_empty() {
                unwritten.frames.push((self.next_frame, bytes.to_vec()));
                self.next_frame += 1;
            }
            return Ok(());
        }
        self.records.insert(record, bytes.to_vec());
        unwritten.records.insert(record, bytes.to_vec());
        Ok(())
    }

    fn append_journal(&mut self, bytes: &[u8]) -> Result<(), E2eeError> {
        self.records
            .entry(Record::Journal)
            .or_default()
            .extend_from_slice(bytes);
        self.pending
            .unwritten
            .borrow_mut()
            .frames
            .push((self.next_frame, bytes.to_vec()));
        self.next_frame += 1;
        Ok(())
    }

    fn describe(&self, record: Record) -> String {
        format!(
            "IndexedDB {:?}",
            key(record).as_string().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use hearth_client_core::e2ee::{Mls, PreparedCommit, Received};
    use hearth_spec::e2ee::ChatBody;
    use hearth_spec::{Content, DeviceId, EventId, EventView, RoomId, TimeId, TxnId, UserId};
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    /// An empty database of this name.
    async fn fresh(name: &str) -> Db {
        Db::delete(name).await.unwrap();
        Db::open(name).await.unwrap()
    }

    async fn reopened(db: &Db) -> IdbState {
        IdbState::load(db, Pending::new(db.clone())).await.unwrap()
    }

    async fn frames_stored(db: &Db) -> usize {
        db.bytes_between(STORE, &frame_key(0.0), &frame_key(f64::INFINITY))
            .await
            .unwrap()
            .len()
    }

    #[wasm_bindgen_test]
    async fn frames_are_written_one_by_one_and_go_with_the_snapshot_that_replaces_them() {
        let db = fresh("test-frames").await;
        let pending = Pending::new(db.clone());
        let mut state = IdbState::load(&db, pending.clone()).await.unwrap();
        state.replace(Record::State, b"snapshot 1").unwrap();
        state.replace(Record::Journal, &[]).unwrap();
        state.append_journal(b"a").unwrap();
        state.append_journal(b"bc").unwrap();
        pending.flush().await.unwrap();
        state.append_journal(b"d").unwrap();
        pending.flush().await.unwrap();
        // Not flushed: not on disk.
        state.append_journal(b"e").unwrap();
        let again = reopened(&db).await;
        assert_eq!(again.read(Record::State).unwrap().unwrap(), b"snapshot 1");
        assert_eq!(again.read(Record::Journal).unwrap().unwrap(), b"abcd");
        assert_eq!(frames_stored(&db).await, 3);
        // A new snapshot, the journal emptied and a frame after it: one transaction.
        state.replace(Record::State, b"snapshot 2").unwrap();
        state.replace(Record::Journal, &[]).unwrap();
        state.append_journal(b"f").unwrap();
        pending.flush().await.unwrap();
        let mut again = reopened(&db).await;
        assert_eq!(again.read(Record::State).unwrap().unwrap(), b"snapshot 2");
        assert_eq!(again.read(Record::Journal).unwrap().unwrap(), b"f");
        assert_eq!(frames_stored(&db).await, 1);
        // A reopened state appends after the frames it found.
        again.append_journal(b"g").unwrap();
        again.pending.flush().await.unwrap();
        assert_eq!(
            reopened(&db).await.read(Record::Journal).unwrap().unwrap(),
            b"fg"
        );
    }

    #[wasm_bindgen_test]
    async fn the_journal_record_of_earlier_versions_is_read_and_then_removed() {
        let db = fresh("test-old-journal").await;
        db.put(
            STORE,
            &key(Record::Journal),
            &Uint8Array::from(&b"old"[..]).into(),
        )
        .await
        .unwrap();
        let mut state = reopened(&db).await;
        assert_eq!(state.read(Record::Journal).unwrap().unwrap(), b"old");
        state.append_journal(b"new").unwrap();
        state.pending.flush().await.unwrap();
        let mut state = reopened(&db).await;
        assert_eq!(state.read(Record::Journal).unwrap().unwrap(), b"oldnew");
        state.replace(Record::Journal, &[]).unwrap();
        state.pending.flush().await.unwrap();
        let old = key(Record::Journal);
        assert!(
            db.bytes_between(STORE, &old, &old)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(frames_stored(&db).await, 0);
    }

    fn event(room: &RoomId, seq: u64, from: &Mls, content: Content) -> EventView {
        let (sender, sender_device) = from.identity();
        let id = EventId::of_bytes(&seq.to_be_bytes());
        EventView {
            room_id: room.clone(),
            seq,
            event_id: id,
            sender: sender.clone(),
            sender_device: sender_device.clone(),
            txn_id: TxnId::parse(&format!("t{seq}")).unwrap(),
            origin_ts: 0,
            time_id: TimeId::of(0, &id),
            content,
        }
    }

    fn message(room: &RoomId, seq: u64, alice: &mut Mls) -> EventView {
        let body = ChatBody {
            text: format!("m{seq}"),
            attachment: None,
        };
        let payload = alice.encrypt(room, &format!("t{seq}"), &body).unwrap();
        event(room, seq, alice, Content::Message { payload })
    }

    /// A device in the browser reads messages, each saved as a journal frame; reopened from
    /// IndexedDB it has every one of them and reads the next.
    #[wasm_bindgen_test]
    async fn a_device_reopened_from_indexeddb_holds_what_its_journal_frames_saved() {
        let db = fresh("test-device").await;
        let (user, device) = (
            UserId::parse("@bob:x.test").unwrap(),
            DeviceId::parse("B").unwrap(),
        );
        let room = RoomId::parse("!r:x.test").unwrap();
        let mut alice = Mls::in_memory(
            &UserId::parse("@alice:x.test").unwrap(),
            &DeviceId::parse("A").unwrap(),
        )
        .unwrap();
        // The device as the page opens it, and the writes flushed as its transport does.
        let pending = Pending::new(db.clone());
        let state = IdbState::load(&db, pending.clone()).await.unwrap();
        let mut bob = Mls::open_in(Box::new(state), &user, &device).unwrap();
        let package = bob.key_packages(1, false).unwrap().remove(0);
        pending.flush().await.unwrap();
        let package = alice
            .check_key_packages(&[(user.clone(), device.clone(), package)])
            .unwrap()
            .remove(0);
        alice.create_group(&room).unwrap();
        let PreparedCommit {
            epoch,
            commit,
            welcome,
            ..
        } = alice.prepare_add(&room, &[package]).unwrap();
        alice.commit_accepted(&room).unwrap();
        let commit = event(
            &room,
            1,
            &alice,
            Content::Commit {
                epoch,
                commit,
                welcome,
            },
        );
        assert!(matches!(
            bob.receive(&commit).unwrap(),
            Received::Joined { .. }
        ));
        let frames_before = frames_stored(&db).await;
        for seq in 2..12 {
            let got = bob.receive(&message(&room, seq, &mut alice)).unwrap();
            bob.kept(&[got]).unwrap();
        }
        bob.flush().unwrap();
        pending.flush().await.unwrap();
        // Each read and each confirmation went to the journal as a frame of its own, a few
        // rows each, not the state whole.
        let frames = frames_stored(&db).await - frames_before;
        assert!(frames >= 20, "{frames} frames");
        let journal = bob.saved_sizes().unwrap().1;
        drop(bob);

        // Reopened as it is, the device appends to its frames: nothing written on opening.
        let pending = Pending::new(db.clone());
        let state = IdbState::load(&db, pending.clone()).await.unwrap();
        let bob = Mls::open_in(Box::new(state), &user, &device).unwrap();
        assert_eq!(bob.processed_seq(&room), 11);
        assert_eq!(bob.saved_sizes().unwrap().1, journal);
        pending.flush().await.unwrap();
        assert_eq!(frames_stored(&db).await, frames_before + frames);
        drop(bob);

        // A tab closed in the middle of a frame (a torn last one): opening writes the state
        // whole, what every save used to write, and empties the journal.
        db.put(
            STORE,
            &frame_key(1e9),
            &Uint8Array::from(&[0xff][..]).into(),
        )
        .await
        .unwrap();
        let pending = Pending::new(db.clone());
        let state = IdbState::load(&db, pending.clone()).await.unwrap();
        let mut bob = Mls::open_in(Box::new(state), &user, &device).unwrap();
        pending.flush().await.unwrap();
        assert_eq!(frames_stored(&db).await, 0);
        let whole = bob.saved_sizes().unwrap().0;
        assert!(
            journal / frames * 4 < whole,
            "{frames} frames of {journal} bytes, against a {whole}-byte state"
        );
        assert_eq!(bob.processed_seq(&room), 11);
        assert!(bob.unconfirmed().is_empty());
        assert!(matches!(
            bob.receive(&message(&room, 12, &mut alice)).unwrap(),
            Received::Message { .. }
        ));
    }
}
