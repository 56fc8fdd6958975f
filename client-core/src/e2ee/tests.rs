//! The state machine alone: events are built here as the home would sequence them.

use super::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use hearth_spec::TxnId;

struct Room {
    id: RoomId,
    seq: u64,
}

impl Room {
    fn new() -> Self {
        Self {
            id: RoomId::parse("!r:localhost").unwrap(),
            seq: 0,
        }
    }

    fn event(&mut self, who: &Mls, txn: &str, content: Content) -> EventView {
        self.seq += 1;
        EventView {
            room_id: self.id.clone(),
            seq: self.seq,
            event_id: hearth_spec::EventId::of_bytes(txn.as_bytes()),
            sender: who.saved.user.clone(),
            sender_device: who.saved.device.clone(),
            txn_id: TxnId::parse(txn).unwrap(),
            origin_ts: 0,
            time_id: hearth_spec::TimeId::of(0, &hearth_spec::EventId::of_bytes(txn.as_bytes())),
            content,
        }
    }

    /// `who` encrypts `body` and the home orders it.
    fn message(&mut self, who: &mut Mls, txn: &str, body: &str) -> EventView {
        let payload = who.encrypt(&self.id, txn, &text(body)).unwrap();
        self.event(who, txn, Content::Message { payload })
    }

    fn commit(&mut self, who: &Mls, txn: &str, prepared: &PreparedCommit) -> EventView {
        self.event(
            who,
            txn,
            Content::Commit {
                epoch: prepared.epoch,
                commit: prepared.commit.clone(),
                welcome: prepared.welcome.clone(),
            },
        )
    }
}

fn device(dir: &Disk, user: &str, device: &str) -> Mls {
    Mls::open_in(
        Box::new(dir.clone()),
        &UserId::parse(&format!("@{user}:localhost")).unwrap(),
        &DeviceId::parse(device).unwrap(),
    )
    .unwrap()
}

fn package_of(m: &mut Mls, claimer: &Mls) -> KeyPackage {
    let bytes = m.key_packages(1, false).unwrap().remove(0);
    let claimed = [(m.saved.user.clone(), m.saved.device.clone(), bytes)];
    claimer.check_key_packages(&claimed).unwrap().remove(0)
}

/// A device's records in memory, shared by every opener, as a folder on disk would be; counts
/// the writes of each record, and how much of the journal was flushed.
#[derive(Debug, Clone, Default)]
struct Disk(Arc<Mutex<HashMap<Record, Written>>>, Arc<Mutex<usize>>);

/// A record's bytes and how many times it was written.
type Written = (Vec<u8>, usize);

impl Disk {
    fn put(&self, record: Record, bytes: Vec<u8>) {
        if record == Record::Journal {
            *self.1.lock().unwrap() = bytes.len();
        }
        self.0.lock().unwrap().insert(record, (bytes, 0));
    }
    /// Journal bytes flushed.
    fn flushed(&self) -> usize {
        *self.1.lock().unwrap()
    }
    /// The machine went down: of the journal's unflushed bytes, `torn` reached the disk, the last
    /// of them damaged.
    fn machine_crash(&self, torn: usize) {
        let flushed = self.flushed();
        let mut records = self.0.lock().unwrap();
        let journal = &mut records.get_mut(&Record::Journal).unwrap().0;
        journal.truncate(flushed + torn);
        if let Some(last) = journal.last_mut().filter(|_| torn > 0) {
            *last ^= 0xff;
        }
    }
    fn get(&self, record: Record) -> Vec<u8> {
        self.0.lock().unwrap()[&record].0.clone()
    }
    fn writes(&self, record: Record) -> usize {
        self.0.lock().unwrap().get(&record).map_or(0, |(_, n)| *n)
    }
}

impl StateStorage for Disk {
    fn read(&self, record: Record) -> Result<Option<Vec<u8>>, E2eeError> {
        Ok(self.0.lock().unwrap().get(&record).map(|(b, _)| b.clone()))
    }
    fn replace(&mut self, record: Record, bytes: &[u8]) -> Result<(), E2eeError> {
        let mut records = self.0.lock().unwrap();
        let entry = records.entry(record).or_default();
        *entry = (bytes.to_vec(), entry.1 + 1);
        if record == Record::Journal {
            *self.1.lock().unwrap() = bytes.len();
        }
        Ok(())
    }
    fn append_journal(&mut self, bytes: &[u8]) -> Result<(), E2eeError> {
        self.append_journal_unflushed(bytes)?;
        self.flush_journal()
    }
    fn append_journal_unflushed(&mut self, bytes: &[u8]) -> Result<(), E2eeError> {
        let mut records = self.0.lock().unwrap();
        let entry = records.entry(Record::Journal).or_default();
        entry.0.extend_from_slice(bytes);
        entry.1 += 1;
        Ok(())
    }
    fn flush_journal(&mut self) -> Result<(), E2eeError> {
        let records = self.0.lock().unwrap();
        *self.1.lock().unwrap() = records.get(&Record::Journal).map_or(0, |(b, _)| b.len());
        Ok(())
    }
    fn flushes_later(&self) -> bool {
        true
    }
    fn describe(&self, record: Record) -> String {
        format!("shared {record:?}")
    }
}

/// alice (in `dirs[0]`) and bob (in `dirs[1]`) in a room's group, at epoch 1.
fn alice_and_bob(dirs: &[Disk]) -> (Mls, Mls, Room) {
    let mut alice = device(&dirs[0], "alice", "A1");
    let mut bob = device(&dirs[1], "bob", "B1");
    let mut room = Room::new();
    alice.create_group(&room.id).unwrap();
    let add = alice
        .prepare_add(&room.id, &[package_of(&mut bob, &alice)])
        .unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let event = room.commit(&alice, "c1", &add);
    bob.receive(&event).unwrap();
    alice.receive(&event).unwrap();
    (alice, bob, room)
}

/// Key package bundles the device holds.
fn key_package_count(device: &Mls) -> usize {
    device
        .provider
        .entries()
        .iter()
        .filter(|(k, _)| k.starts_with(b"KeyPackage"))
        .count()
}

fn text(body: &str) -> ChatBody {
    ChatBody {
        text: body.into(),
        attachment: None,
    }
}

fn body_of(received: Received) -> String {
    match received {
        Received::Message { body, .. } => body.text,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn two_devices_talk_and_a_removed_one_reads_nothing_after() {
    let dirs: Vec<_> = (0..3).map(|_| Disk::default()).collect();
    let mut alice = device(&dirs[0], "alice", "A1");
    let mut bob = device(&dirs[1], "bob", "B1");
    let mut bob2 = device(&dirs[2], "bob", "B2");
    let mut room = Room::new();
    alice.create_group(&room.id).unwrap();
    let packages = [package_of(&mut bob, &alice), package_of(&mut bob2, &alice)];
    let add = alice.prepare_add(&room.id, &packages).unwrap();
    assert_eq!(add.epoch, 0);
    alice.commit_accepted(&room.id).unwrap();
    let event = room.commit(&alice, "c1", &add);
    assert!(matches!(
        bob.receive(&event).unwrap(),
        Received::Joined { epoch: 1, .. }
    ));
    assert!(matches!(
        bob2.receive(&event).unwrap(),
        Received::Joined { epoch: 1, .. }
    ));
    assert!(matches!(
        alice.receive(&event).unwrap(),
        Received::Committed { epoch: 1, .. }
    ));

    let ciphertext = alice.encrypt(&room.id, "m1", &text("hello bob")).unwrap();
    let message = room.event(
        &alice,
        "m1",
        Content::Message {
            payload: ciphertext.clone(),
        },
    );
    assert_eq!(body_of(bob.receive(&message).unwrap()), "hello bob");
    assert_eq!(body_of(bob2.receive(&message).unwrap()), "hello bob");
    // The sender shows its own message from its sent store.
    assert!(matches!(
        alice.receive(&message).unwrap(),
        Received::Message { own: true, .. }
    ));

    // The same ciphertext again, as a new event: dropped, never shown twice.
    let replay = room.event(
        &alice,
        "m1b",
        Content::Message {
            payload: ciphertext,
        },
    );
    assert!(!matches!(
        bob.receive(&replay).unwrap(),
        Received::Message { .. }
    ));

    // Tampered ciphertext is refused.
    let mut tampered = alice.encrypt(&room.id, "m2", &text("secret")).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let bad = room.event(&alice, "m2", Content::Message { payload: tampered });
    assert!(matches!(
        bob.receive(&bad).unwrap(),
        Received::Unreadable { .. }
    ));

    // A message whose MLS sender is alice but which the hearth attributes to bob2 is refused.
    let forged = alice.encrypt(&room.id, "m3", &text("who am I")).unwrap();
    let misattributed = room.event(&bob2, "m3", Content::Message { payload: forged });
    assert!(matches!(
        bob.receive(&misattributed).unwrap(),
        Received::Unreadable { .. }
    ));

    // Remove bob's second device; it reads nothing after.
    let remove = alice
        .prepare_remove(
            &room.id,
            &[],
            &[(bob2.saved.user.clone(), bob2.saved.device.clone())],
        )
        .unwrap()
        .unwrap();
    alice.commit_accepted(&room.id).unwrap();
    assert!(!matches!(
        bob2.receive(&replay).unwrap(),
        Received::Message { .. }
    ));
    for m in [&mut bob, &mut bob2] {
        m.receive(&bad).unwrap();
        m.receive(&misattributed).unwrap();
    }
    alice.receive(&replay).unwrap();
    alice.receive(&bad).unwrap();
    alice.receive(&misattributed).unwrap();
    let removal = room.commit(&alice, "c2", &remove);
    assert!(matches!(
        bob.receive(&removal).unwrap(),
        Received::Committed { epoch: 2, .. }
    ));
    assert!(matches!(
        bob2.receive(&removal).unwrap(),
        Received::Removed { .. }
    ));
    assert_eq!(alice.members(&room.id).len(), 2);
    let after = alice
        .encrypt(&room.id, "m4", &text("after removal"))
        .unwrap();
    let after = room.event(&alice, "m4", Content::Message { payload: after });
    assert_eq!(body_of(bob.receive(&after).unwrap()), "after removal");
    assert!(matches!(
        bob2.receive(&after).unwrap(),
        Received::Unreadable { .. }
    ));
    assert_eq!(
        alice.epoch_authenticator(&room.id),
        bob.epoch_authenticator(&room.id)
    );
}

#[test]
fn state_survives_a_restart_and_forged_commits_are_refused() {
    let dirs: Vec<_> = (0..3).map(|_| Disk::default()).collect();
    let (mut alice, bob, mut room) = alice_and_bob(&dirs);
    let fingerprint = bob.fingerprint();
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.fingerprint(), fingerprint);
    assert_eq!(bob.epoch(&room.id), Some(1));
    let message = room.message(&mut alice, "m1", "after restart");
    assert_eq!(body_of(bob.receive(&message).unwrap()), "after restart");
    alice.receive(&message).unwrap();

    // An outsider's commit (a device not in the group) for the current epoch is refused and
    // changes nothing.
    let mut mallory = device(&dirs[2], "mallory", "M1");
    let fake_room = room.id.clone();
    mallory.create_group(&fake_room).unwrap();
    let forged = mallory.prepare_update(&fake_room).unwrap();
    let mut forged = forged.clone();
    forged.epoch = 1;
    let event = room.commit(&mallory, "c2", &forged);
    assert!(matches!(
        bob.receive(&event).unwrap(),
        Received::Unreadable { .. }
    ));
    assert_eq!(bob.epoch(&room.id), Some(1));
    // Bytes that are no commit at all.
    let junk = room.commit(
        &alice,
        "c3",
        &PreparedCommit {
            epoch: 1,
            commit: vec![0; 40],
            welcome: None,
        },
    );
    assert!(matches!(
        bob.receive(&junk).unwrap(),
        Received::Unreadable { .. }
    ));
    assert_eq!(bob.epoch(&room.id), Some(1));
    drop(bob);
    // A state file of another device is not opened as this one.
    assert!(matches!(
        Mls::open_in(
            Box::new(dirs[1].clone()),
            &UserId::parse("@eve:localhost").unwrap(),
            &DeviceId::parse("B1").unwrap()
        ),
        Err(E2eeError::OtherDevice(_))
    ));
}

#[test]
fn a_key_package_of_another_device_is_refused() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let alice = device(&dirs[0], "alice", "A1");
    let mut bob = device(&dirs[1], "bob", "B1");
    let bytes = bob.key_packages(1, false).unwrap().remove(0);
    let claimed = [(
        UserId::parse("@carol:localhost").unwrap(),
        DeviceId::parse("C1").unwrap(),
        bytes,
    )];
    assert!(matches!(
        alice.check_key_packages(&claimed),
        Err(E2eeError::ForeignKeyPackage(_))
    ));
}

#[test]
fn a_message_the_commit_overtook_is_refused_once_and_reads_in_the_new_epoch() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);

    // bob sends two messages in epoch 1: the first is ordered, the second is still on its way
    // when alice's commit is ordered.
    let first = bob.encrypt(&room.id, "b1", &text("ordered")).unwrap();
    bob.encrypt(&room.id, "b2", &text("overtaken")).unwrap();
    let ordered = room.event(&bob, "b1", Content::Message { payload: first });
    assert_eq!(body_of(alice.receive(&ordered).unwrap()), "ordered");
    assert!(matches!(
        bob.receive(&ordered).unwrap(),
        Received::Message { own: true, .. }
    ));
    assert!(
        bob.refused().is_empty(),
        "nothing is refused before a commit"
    );
    let update = alice.prepare_update(&room.id).unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let commit = room.commit(&alice, "c2", &update);
    alice.receive(&commit).unwrap();
    bob.receive(&commit).unwrap();
    // Only the overtaken one; it survives a restart of bob's device.
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    let refused = bob.refused();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, "b2");
    let again = bob.encrypt_refused("b2", "b3").unwrap();
    assert!(bob.refused().is_empty());
    assert!(bob.encrypt_refused("b2", "b4").is_err(), "sent again once");
    let resent = room.event(&bob, "b3", Content::Message { payload: again });
    assert_eq!(body_of(alice.receive(&resent).unwrap()), "overtaken");
    assert!(matches!(
        bob.receive(&resent).unwrap(),
        Received::Message { own: true, .. }
    ));
    // Another commit: nothing left to refuse.
    let update = alice.prepare_update(&room.id).unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let commit = room.commit(&alice, "c3", &update);
    bob.receive(&commit).unwrap();
    assert!(bob.refused().is_empty());
}

#[test]
fn a_message_appends_only_the_rows_it_changed_and_the_state_survives_a_restart() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let mut alice = device(&dirs[0], "alice", "A1");
    let mut bob = device(&dirs[1], "bob", "B1");
    let packages = bob.key_packages(5, false).unwrap();
    // bob restarts before anyone claims a package; the package still opens its Welcome.
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    let claimed = [(
        bob.saved.user.clone(),
        bob.saved.device.clone(),
        packages[2].clone(),
    )];
    let package = alice.check_key_packages(&claimed).unwrap().remove(0);
    let mut room = Room::new();
    alice.create_group(&room.id).unwrap();
    let add = alice.prepare_add(&room.id, &[package]).unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let event = room.commit(&alice, "c1", &add);
    assert!(matches!(
        bob.receive(&event).unwrap(),
        Received::Joined { .. }
    ));
    assert_eq!(key_package_count(&bob), 4);
    alice.receive(&event).unwrap();

    // Messages append their changed rows to the journal; the snapshot is left alone.
    let snapshot_writes = dirs[1].writes(Record::State);
    let journal_before = dirs[1].get(Record::Journal).len();
    let appends_before = dirs[1].writes(Record::Journal);
    for i in 0..10 {
        let message = room.message(&mut alice, &format!("m{i}"), "hi");
        alice.receive(&message).unwrap();
        let got = bob.receive(&message).unwrap();
        bob.kept(std::slice::from_ref(&got)).unwrap();
        assert_eq!(body_of(got), "hi");
        let payload = bob
            .encrypt(&room.id, &format!("b{i}"), &text("hello"))
            .unwrap();
        let echo = room.event(&bob, &format!("b{i}"), Content::Message { payload });
        assert_eq!(body_of(alice.receive(&echo).unwrap()), "hello");
        let own = bob.receive(&echo).unwrap();
        bob.kept(std::slice::from_ref(&own)).unwrap();
    }
    let appended = dirs[1].get(Record::Journal).len() - journal_before;
    let saves = dirs[1].writes(Record::Journal) - appends_before;
    assert_eq!(dirs[1].writes(Record::State), snapshot_writes);
    // Five saves a round: the message, its confirmation, the reply, its echo and confirmation.
    assert_eq!(saves, 50);
    let snapshot = rows::snapshot_of(5, 0, &bob.saved, &bob.provider.stored()).len();
    assert!(
        appended / saves * 4 < snapshot,
        "{saves} saves appended {appended} bytes, against a {snapshot}-byte snapshot"
    );
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!(key_package_count(&bob), 4);
    assert_eq!(bob.epoch(&room.id), alice.epoch(&room.id));
    assert_eq!(bob.processed_seq(&room.id), room.seq);
    let message = room.message(&mut alice, "after", "still here");
    assert_eq!(body_of(bob.receive(&message).unwrap()), "still here");
}

#[test]
fn a_snapshot_written_row_by_row_holds_the_rows_of_the_state() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    for i in 0..5 {
        let message = room.message(&mut alice, &format!("m{i}"), "x");
        bob.receive(&message).unwrap();
    }
    bob.encrypt(&room.id, "b1", &text("not echoed yet"))
        .unwrap();
    assert!(!bob.saved.unconfirmed.is_empty() && !bob.saved.sent.is_empty());
    let mls = bob.provider.stored().clone();
    let bytes = rows::snapshot_of(5, 7, &bob.saved, &mls);
    let (version, generation, decoded): (u8, u64, rows::Rows) =
        postcard::from_bytes(&bytes).unwrap();
    assert_eq!((version, generation), (5, 7));
    assert_eq!(decoded, rows::rows_of(&bob.saved, &mls));
}

#[test]
fn a_journal_cut_short_by_a_crash_reopens_at_the_last_whole_save() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    let first = room.message(&mut alice, "m1", "one");
    assert_eq!(body_of(bob.receive(&first).unwrap()), "one");
    let whole = dirs[1].get(Record::Journal).len();
    let second = room.message(&mut alice, "m2", "two");
    assert_eq!(body_of(bob.receive(&second).unwrap()), "two");
    let (snapshot, journal) = (dirs[1].get(Record::State), dirs[1].get(Record::Journal));
    assert!(journal.len() > whole + 12);
    drop(bob);
    // The crash came mid-append: a prefix of the second frame reached the disk.
    for cut in [whole + 5, journal.len() - 1] {
        dirs[1].put(Record::State, snapshot.clone());
        dirs[1].put(Record::Journal, journal[..cut].to_vec());
        let mut bob = device(&dirs[1], "bob", "B1");
        assert_eq!(bob.processed_seq(&room.id), first.seq);
        // Its ratchet is where the first message left it: the second still decrypts.
        assert_eq!(body_of(bob.receive(&second).unwrap()), "two");
        // Reopening wrote the state whole, so this save appended to an empty journal.
        drop(bob);
        let bob = device(&dirs[1], "bob", "B1");
        assert_eq!(bob.processed_seq(&room.id), second.seq);
        drop(bob);
    }
}

#[test]
fn frames_of_an_older_snapshot_are_skipped() {
    let dir = Disk::default();
    let mut alice = device(&dir, "alice", "A1");
    alice.set_cursor(10).unwrap();
    alice.set_cursor(20).unwrap();
    let old_frames = dir.get(Record::Journal);
    assert!(!old_frames.is_empty());
    drop(alice);
    let mut alice = write_whole_on_open(&dir, "alice", "A1");
    alice.set_cursor(30).unwrap();
    drop(alice);
    drop(write_whole_on_open(&dir, "alice", "A1"));
    // A crash between writing that snapshot and emptying the journal left the old frames.
    dir.put(Record::Journal, old_frames);
    let alice = device(&dir, "alice", "A1");
    assert_eq!(alice.cursor(), 30);
}

/// Opens a device whose journal ends in a torn frame (a crash during an append), which writes
/// its state whole as a new snapshot and empties the journal.
fn write_whole_on_open(dir: &Disk, user: &str, id: &str) -> Mls {
    let mut journal = dir.get(Record::Journal);
    journal.push(0xff);
    dir.put(Record::Journal, journal);
    let writes = dir.writes(Record::State);
    let opened = device(dir, user, id);
    assert_eq!(dir.writes(Record::State), writes + 1);
    assert!(dir.get(Record::Journal).is_empty());
    opened
}

#[test]
fn a_device_opened_on_a_whole_journal_appends_to_it_without_writing_its_state_whole() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, bob, mut room) = alice_and_bob(&dirs);
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    for i in 0..5 {
        let message = room.message(&mut alice, &format!("m{i}"), "x");
        let got = bob.receive(&message).unwrap();
        bob.kept(&[got]).unwrap();
    }
    bob.set_cursor(5).unwrap();
    bob.flush().unwrap();
    drop(bob);
    let (snapshot_writes, journal) = (dirs[1].writes(Record::State), dirs[1].get(Record::Journal));
    let mut bob = device(&dirs[1], "bob", "B1");
    // Opening wrote nothing: the snapshot and the journal are as they were.
    assert_eq!(dirs[1].writes(Record::State), snapshot_writes);
    assert_eq!(dirs[1].get(Record::Journal), journal);
    assert_eq!((bob.processed_seq(&room.id), bob.cursor()), (room.seq, 5));
    // The next change is a frame after the others, and all of it reopens.
    let message = room.message(&mut alice, "after", "still here");
    assert_eq!(body_of(bob.receive(&message).unwrap()), "still here");
    bob.set_cursor(6).unwrap();
    bob.flush().unwrap();
    assert!(dirs[1].get(Record::Journal).starts_with(&journal));
    assert_eq!(dirs[1].writes(Record::State), snapshot_writes);
    drop(bob);
    let bob = device(&dirs[1], "bob", "B1");
    assert_eq!((bob.processed_seq(&room.id), bob.cursor()), (room.seq, 6));
}

#[test]
fn the_state_is_written_whole_when_the_journal_outgrows_it() {
    let dir = Disk::default();
    let (mut alice, room) = alone_in_a_group(&dir);
    let snapshots = dir.writes(Record::State);
    let mut longest = 0;
    for i in 0..2000 {
        alice.encrypt(&room, &format!("t{i}"), &text("x")).unwrap();
        longest = longest.max(dir.get(Record::Journal).len());
    }
    let (snapshot, _) = alice.saved_sizes().unwrap();
    assert!(dir.writes(Record::State) > snapshots, "never written whole");
    // Never flushed, so written whole by the save that would take the journal past twice its
    // limit.
    assert!(
        longest <= 2 * (snapshot + JOURNAL_SLACK) + 4096,
        "journal {longest} B"
    );
    drop(alice);
    let alice = device(&dir, "alice", "A1");
    assert_eq!(alice.saved.sent.len(), 2000);
}

/// alice's device (in `dir`) in a group of her own.
fn alone_in_a_group(dir: &Disk) -> (Mls, RoomId) {
    let mut alice = device(dir, "alice", "A1");
    let room = RoomId::parse("!r:localhost").unwrap();
    alice.create_group(&room).unwrap();
    (alice, room)
}

/// Encrypts (a save each, appended) until `alice`'s journal has passed its limit, checking that no
/// encrypt rewrote the state, whose rewrite is not on a message's path; `sent` counts them.
fn encrypt_past_the_journal_limit(alice: &mut Mls, dir: &Disk, room: &RoomId, sent: &mut usize) {
    let (snapshot, _) = alice.saved_sizes().unwrap();
    while dir.get(Record::Journal).len() <= snapshot + JOURNAL_SLACK {
        let snapshots = dir.writes(Record::State);
        alice
            .encrypt(room, &format!("t{sent}"), &text("x"))
            .unwrap();
        *sent += 1;
        assert_eq!(
            dir.writes(Record::State),
            snapshots,
            "encrypt {sent} rewrote the state"
        );
        assert!(*sent < 5000, "the journal never passed its limit");
    }
}

#[test]
fn a_save_past_the_journal_limit_appends_and_the_next_flush_writes_the_state_whole() {
    let dir = Disk::default();
    let (mut alice, room) = alone_in_a_group(&dir);
    let mut sent = 0;
    encrypt_past_the_journal_limit(&mut alice, &dir, &room, &mut sent);
    // Past it, what the journal holds is readable as before, and durable once the device is
    // closed (in the leased room the last step may wait for a flush).
    drop(alice);
    assert_eq!(dir.flushed(), dir.get(Record::Journal).len());
    let mut alice = device(&dir, "alice", "A1");
    assert_eq!(alice.saved.sent.len(), sent);
    // Reopening wrote the state whole; grow the journal past its limit again, then flush (after
    // the message has left, or before an acknowledgement): that rewrites the state.
    encrypt_past_the_journal_limit(&mut alice, &dir, &room, &mut sent);
    let snapshots = dir.writes(Record::State);
    alice.flush().unwrap();
    assert_eq!(dir.writes(Record::State), snapshots + 1);
    assert!(dir.get(Record::Journal).is_empty());
    // A flush with nothing due writes nothing whole.
    alice.flush().unwrap();
    assert_eq!(dir.writes(Record::State), snapshots + 1);
    drop(alice);
    assert_eq!(device(&dir, "alice", "A1").saved.sent.len(), sent);
}

#[test]
fn a_version_2_state_file_is_read_and_carried_forward() {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};
    let dir = Disk::default();
    let user = UserId::parse("@alice:localhost").unwrap();
    let device = DeviceId::parse("LAPTOP").unwrap();
    let room = RoomId::parse("!r:localhost").unwrap();
    // Version 2's layout, field by field (postcard encodes a struct as the tuple of its fields).
    type MetaV2 = (u64, VecDeque<[u8; 16]>, BTreeSet<UserId>, bool, Option<u64>);
    type SentV2 = (RoomId, String, Vec<u8>, u64, u64);
    let rooms: BTreeMap<RoomId, MetaV2> = [(
        room.clone(),
        (7, VecDeque::new(), BTreeSet::new(), false, Some(2)),
    )]
    .into();
    let sent: BTreeMap<String, SentV2> = [(
        "t1".to_owned(),
        (room.clone(), "t1".to_owned(), b"{}".to_vec(), 2, 1),
    )]
    .into();
    let v2 = (
        2u8,
        user.clone(),
        device.clone(),
        vec![1u8; 32],
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
        rooms,
        sent,
        Vec::<SentV2>::new(),
        1u64,
        42u64,
    );
    dir.put(Record::State, postcard::to_stdvec(&v2).unwrap());
    let (_, loaded) = super::store::StateWriter::open(Box::new(dir.clone())).unwrap();
    let super::store::Loaded { saved, keys } = loaded.unwrap();
    assert!(keys.is_empty());
    assert_eq!((saved.user, saved.device, saved.cursor), (user, device, 42));
    let meta = &saved.rooms[&room];
    assert_eq!((meta.processed_seq, meta.joined_seq), (7, Some(7)));
    assert_eq!(meta.own_commit_epoch, Some(2));
    let message = &saved.sent["t1"];
    assert_eq!((message.epoch, message.order, message.copy), (2, 1, false));
    assert!(saved.owed.is_empty());
}

#[test]
fn a_message_sent_again_under_a_new_ciphertext_is_shown_once() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);

    // bob's message is ordered and alice reads it; then bob is told it was refused (a stale
    // epoch answer for a send that was in fact ordered) and sends it again. MLS takes the
    // second ciphertext (a later ratchet step); only the message id in it tells it is the same.
    let first = bob.encrypt(&room.id, "b1", &text("once")).unwrap();
    let ordered = room.event(&bob, "b1", Content::Message { payload: first });
    assert_eq!(body_of(alice.receive(&ordered).unwrap()), "once");
    bob.refuse_sent("b1").unwrap();
    let again = bob.encrypt_refused("b1", "b2").unwrap();
    let resent = room.event(&bob, "b2", Content::Message { payload: again });

    // The ids alice has seen survive a restart of her device.
    drop(alice);
    let mut alice = device(&dirs[0], "alice", "A1");
    assert_eq!(
        alice.receive(&resent).unwrap(),
        Received::Replayed {
            room: room.id.clone(),
            seq: resent.seq
        }
    );
    // The room goes on: the next message reads.
    let next = room.message(&mut bob, "b3", "after");
    assert_eq!(body_of(alice.receive(&next).unwrap()), "after");
}

#[test]
fn an_owed_copy_reaches_the_member_who_could_not_read_and_is_a_replay_for_the_others() {
    let dirs: Vec<_> = (0..3).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    let mut carol = device(&dirs[2], "carol", "C1");
    let carol_id = carol.saved.user.clone();

    // carol is a member with no device in the group yet: alice's message is owed to her.
    let hello = room.message(&mut alice, "a1", "hello");
    alice
        .owe("a1", vec![Waiting::User(carol_id.clone())])
        .unwrap();
    assert_eq!(body_of(bob.receive(&hello).unwrap()), "hello");
    alice.receive(&hello).unwrap();

    let add = alice
        .prepare_add(&room.id, &[package_of(&mut carol, &alice)])
        .unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let commit = room.commit(&alice, "c2", &add);
    for member in [&mut alice, &mut bob, &mut carol] {
        member.receive(&commit).unwrap();
    }
    let due = alice.due_copies();
    assert_eq!(due.len(), 1);
    let copy = alice.encrypt_copy(&due[0].0, due[0].1, "a1-copy").unwrap();
    let copy = room.event(&alice, "a1-copy", Content::Message { payload: copy });
    assert_eq!(body_of(carol.receive(&copy).unwrap()), "hello");
    assert_eq!(
        bob.receive(&copy).unwrap(),
        Received::Replayed {
            room: room.id.clone(),
            seq: copy.seq
        },
        "bob read it already"
    );
    assert!(alice.due_copies().is_empty());
}

#[test]
fn what_a_device_decrypted_survives_until_the_app_says_it_keeps_it() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    let hello = room.message(&mut alice, "a1", "hello");
    let got = bob.receive(&hello).unwrap();
    assert_eq!(body_of(got.clone()), "hello");
    assert_eq!(bob.unconfirmed(), vec![got.clone()]);

    // The app crashed before keeping it: it is in the device state, and only there (the key
    // that decrypted it is gone).
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.receive(&hello).unwrap(), Received::Duplicate);
    assert_eq!(bob.unconfirmed(), vec![got.clone()]);

    // Kept: not handed over again, also after a restart. What was not named stays.
    let second = room.message(&mut alice, "a2", "second");
    let got_second = bob.receive(&second).unwrap();
    bob.kept(std::slice::from_ref(&got)).unwrap();
    assert_eq!(bob.unconfirmed(), vec![got_second.clone()]);
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.unconfirmed(), vec![got_second.clone()]);
    bob.kept(&[got_second, Received::Duplicate]).unwrap();
    assert!(bob.unconfirmed().is_empty());
}

// Ten thousand messages: natively only (the browser runs the same code, several times slower).
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn past_the_cap_the_oldest_unconfirmed_go_and_a_reopen_holds_the_newest() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    let sent = MAX_UNCONFIRMED + 3;
    let mut got = Vec::with_capacity(sent);
    for n in 0..sent {
        let message = room.message(&mut alice, &format!("a{n}"), &format!("m{n}"));
        got.push(bob.receive(&message).unwrap());
    }
    bob.flush().unwrap();
    let newest = got[sent - MAX_UNCONFIRMED..].to_vec();
    assert_eq!(bob.unconfirmed(), newest);
    // What is on disk holds the same: the three oldest rows were deleted, none other.
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.unconfirmed(), newest);
    bob.kept(&newest[..2]).unwrap();
    drop(bob);
    let bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.unconfirmed(), newest[2..]);
}

#[test]
fn what_a_device_received_unflushed_comes_again_after_a_machine_crash_and_still_decrypts() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    bob.flush().unwrap();
    let flushed = dirs[1].flushed();
    let first = room.message(&mut alice, "a1", "one");
    let got = bob.receive(&first).unwrap();
    assert_eq!(body_of(got.clone()), "one");
    bob.kept(std::slice::from_ref(&got)).unwrap();
    bob.set_cursor(7).unwrap();
    // Received, kept and the cursor: appended, none of it flushed.
    assert_eq!(dirs[1].flushed(), flushed);
    assert!(dirs[1].get(Record::Journal).len() > flushed);

    // The process alone crashed: the OS had the bytes, nothing comes again. The reopened device
    // appends to the frames it found, which its flush (an app's, before it acknowledges) makes
    // durable with its own.
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!((bob.processed_seq(&room.id), bob.cursor()), (first.seq, 7));
    bob.flush().unwrap();
    assert!(bob.unconfirmed().is_empty());
    let second = room.message(&mut alice, "a2", "two");

    // The machine crashed with a part of the unflushed appends on disk, the last of it
    // damaged: the device is where its last flush left it, and the hearth (whose cursor the
    // device acknowledges only after a flush) hands the message over again; its key is still
    // there. Or the receive's frame was whole, and the message is waiting for the app.
    for cut in 0..4 {
        let flushed = dirs[1].flushed();
        assert_eq!(body_of(bob.receive(&second).unwrap()), "two");
        let frame = dirs[1].get(Record::Journal).len() - flushed;
        bob.set_cursor(8).unwrap();
        drop(bob);
        let (torn, received) = [
            (0, false),
            (5, false),
            (frame - 1, false),
            (frame + 3, true),
        ][cut];
        dirs[1].machine_crash(torn);
        bob = device(&dirs[1], "bob", "B1");
        assert_eq!(bob.cursor(), 7);
        if received {
            assert_eq!(bob.processed_seq(&room.id), second.seq);
            assert_eq!(bob.receive(&second).unwrap(), Received::Duplicate);
            assert_eq!(bob.unconfirmed().len(), 1);
        } else {
            assert_eq!(bob.processed_seq(&room.id), first.seq);
            assert!(bob.unconfirmed().is_empty());
        }
    }
    bob.set_cursor(8).unwrap();
    bob.flush().unwrap();
    drop(bob);
    dirs[1].machine_crash(0);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!((bob.processed_seq(&room.id), bob.cursor()), (second.seq, 8));
    assert_eq!(bob.receive(&second).unwrap(), Received::Duplicate);

    // A flushed save (encrypting) flushes what was received before it.
    let third = room.message(&mut alice, "a3", "three");
    assert_eq!(body_of(bob.receive(&third).unwrap()), "three");
    bob.encrypt(&room.id, "b1", &text("reply")).unwrap();
    drop(bob);
    dirs[1].machine_crash(0);
    let bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.processed_seq(&room.id), third.seq);
}

/// `who` sends `txn` (as its text too): encrypts it (its step flushed or not, as the device decides), the home
/// orders it, `to` reads it, and the sender flushes once the message has left (as the SDK does).
/// Returns whether the step was on disk before the message left.
fn send_and_read(room: &mut Room, who: &mut Mls, dir: &Disk, to: &mut Mls, txn: &str) -> bool {
    let flushed = dir.flushed();
    let message = room.message(who, txn, txn);
    let on_disk = dir.flushed() > flushed;
    assert_eq!(body_of(to.receive(&message).unwrap()), txn);
    who.flush().unwrap();
    on_disk
}

#[test]
fn in_a_busy_room_a_message_leaves_before_its_step_is_flushed_one_at_a_time() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    // The first message of a process is on disk before it leaves; the second leases the room
    // (on disk with its step); from the third on, the flush comes after the message left.
    let flushed_first: Vec<bool> = ["a1", "a2", "a3", "a4"]
        .into_iter()
        .map(|txn| send_and_read(&mut room, &mut alice, &dirs[0], &mut bob, txn))
        .collect();
    assert_eq!(flushed_first, [true, true, false, false]);
    assert!(alice.saved.leased.contains_key(&room.id));

    // Without a flush between them, the second step waits for the disk: at most one step per
    // room is ever not on disk, which is what the next opening skips after a crash.
    let flushed = dirs[0].flushed();
    let a5 = room.message(&mut alice, "a5", "five");
    assert_eq!(dirs[0].flushed(), flushed);
    let a6 = room.message(&mut alice, "a6", "six");
    assert!(dirs[0].flushed() > flushed);
    for (message, body) in [(a5, "five"), (a6, "six")] {
        assert_eq!(body_of(bob.receive(&message).unwrap()), body);
    }

    // Closing the device ends the lease, on disk: the next process skips no key and starts
    // again with a message on disk before it leaves.
    drop(alice);
    dirs[0].machine_crash(0);
    let mut alice = device(&dirs[0], "alice", "A1");
    assert!(alice.saved.leased.is_empty());
    assert!(send_and_read(
        &mut room, &mut alice, &dirs[0], &mut bob, "a7"
    ));
}

#[test]
fn a_key_used_by_a_message_whose_step_a_machine_crash_lost_is_never_used_again() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    for txn in ["a1", "a2"] {
        send_and_read(&mut room, &mut alice, &dirs[0], &mut bob, txn);
    }
    // The third message leaves and bob reads it; the machine goes down before alice's flush
    // (and the process never closes the device).
    let flushed = dirs[0].flushed();
    let third = room.message(&mut alice, "a3", "three");
    assert_eq!(dirs[0].flushed(), flushed, "the step was not on disk yet");
    assert_eq!(body_of(bob.receive(&third).unwrap()), "three");
    std::mem::forget(alice);
    dirs[0].machine_crash(0);

    // Reopened where the step before it left off, alice skips the key the third message used:
    // bob, who used it up reading that message, reads the next one.
    let mut alice = device(&dirs[0], "alice", "A1");
    assert!(
        alice.saved.leased.is_empty(),
        "the skipped key ends the lease"
    );
    assert!(send_and_read(
        &mut room, &mut alice, &dirs[0], &mut bob, "a4"
    ));

    // A process that stops without closing the device (killed) loses nothing the OS had, and
    // the next opening skips a key all the same: the gap costs its readers nothing.
    for txn in ["a5", "a6", "a7"] {
        send_and_read(&mut room, &mut alice, &dirs[0], &mut bob, txn);
    }
    std::mem::forget(alice);
    let mut alice = device(&dirs[0], "alice", "A1");
    assert!(send_and_read(
        &mut room, &mut alice, &dirs[0], &mut bob, "a8"
    ));
}

#[test]
fn the_first_message_of_a_new_epoch_waits_for_the_disk_with_the_commit() {
    let dirs: Vec<_> = (0..3).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    for txn in ["a1", "a2", "a3"] {
        let message = room.message(&mut alice, txn, txn);
        assert_eq!(body_of(bob.receive(&message).unwrap()), txn);
        // alice takes her echo, as a device in sync does, and flushes.
        assert_eq!(body_of(alice.receive(&message).unwrap()), txn);
        alice.flush().unwrap();
    }
    assert_eq!(alice.saved.leased.get(&room.id), Some(&1));
    // bob adds his second device: epoch 2, whose keys start again. alice takes the commit with a
    // save that waits for her next flush.
    let mut bob2 = device(&dirs[2], "bob", "B2");
    let add = bob
        .prepare_add(&room.id, &[package_of(&mut bob2, &bob)])
        .unwrap();
    bob.commit_accepted(&room.id).unwrap();
    let commit = room.commit(&bob, "c2", &add);
    bob.receive(&commit).unwrap();
    let flushed = dirs[0].flushed();
    alice.receive(&commit).unwrap();
    assert_eq!(dirs[0].flushed(), flushed);

    // Her next message is of epoch 2, which the lease is not for: on disk, with the commit,
    // before it leaves; the lease moves to epoch 2.
    let fourth = room.message(&mut alice, "a4", "four");
    assert!(dirs[0].flushed() > flushed, "the step waited for no flush");
    assert_eq!(alice.saved.leased.get(&room.id), Some(&2));
    assert_eq!(body_of(bob.receive(&fourth).unwrap()), "four");

    // Had it left first, a crash of the machine now would reopen alice in epoch 1, the hearth
    // would hand her the commit again, and her next message would use the key of the fourth.
    std::mem::forget(alice);
    dirs[0].machine_crash(0);
    let mut alice = device(&dirs[0], "alice", "A1");
    alice.receive(&commit).unwrap();
    assert!(send_and_read(
        &mut room, &mut alice, &dirs[0], &mut bob, "a5"
    ));
}

#[test]
fn a_version_5_state_is_read_and_written_back_as_version_6() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    send_and_read(&mut room, &mut alice, &dirs[0], &mut bob, "a1");
    drop(alice);
    // Version 5 wrote the same rows (none leased) under its own number.
    let mut snapshot = dirs[0].get(Record::State);
    assert_eq!(snapshot[0], 6);
    snapshot[0] = 5;
    dirs[0].put(Record::State, snapshot);
    let writes = dirs[0].writes(Record::State);
    let mut alice = device(&dirs[0], "alice", "A1");
    assert_eq!(dirs[0].writes(Record::State), writes + 1, "written whole");
    assert_eq!(dirs[0].get(Record::State)[0], 6);
    send_and_read(&mut room, &mut alice, &dirs[0], &mut bob, "a2");
}

/// Rewrites a device's state (its snapshot and journal) in the layout version 3 or 4 wrote: one
/// record of everything but key packages, and the key file.
fn rewrite_as_version(dir: &Disk, version: u8) {
    use std::collections::{BTreeSet, VecDeque};
    type RoomV4 = (
        u64,
        VecDeque<[u8; 16]>,
        BTreeSet<UserId>,
        bool,
        Option<u64>,
        Option<u64>,
    );
    let (current, generation, mut rows): (u8, u64, rows::Rows) =
        postcard::from_bytes(&dir.get(Record::State)).unwrap();
    assert_eq!(current, saved::STATE_VERSION);
    // Those versions had no journal: its frames go into the one record.
    let journal = dir.get(Record::Journal);
    let whole = super::store::replay(&mut rows, generation, &journal, String::new).unwrap();
    assert_eq!(whole, journal.len());
    dir.put(Record::Journal, Vec::new());
    let (saved, entries) = rows::saved_of(&rows).unwrap();
    let (keys, state): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(k, _)| k.starts_with(b"KeyPackage"));
    let rooms: BTreeMap<RoomId, RoomV4> = saved
        .rooms
        .iter()
        .map(|(r, m)| {
            let meta = (
                m.processed_seq,
                m.seen.clone(),
                m.departed.clone(),
                m.removed,
                m.own_commit_epoch,
                m.joined_seq,
            );
            (r.clone(), meta)
        })
        .collect();
    let mut bytes = postcard::to_stdvec(&(
        version,
        saved.user,
        saved.device,
        saved.signer_public,
        state,
        rooms,
        saved.sent,
        saved.refused,
        saved.next_order,
        saved.cursor,
        saved.owed,
    ))
    .unwrap();
    if version == 4 {
        bytes.extend(postcard::to_stdvec(&saved.unconfirmed).unwrap());
    }
    dir.put(Record::State, bytes);
    dir.put(Record::Keys, postcard::to_stdvec(&(2u8, keys)).unwrap());
}

#[test]
fn a_version_3_state_file_is_read_and_carried_forward() {
    let dir = Disk::default();
    let user = UserId::parse("@alice:localhost").unwrap();
    let device_id = DeviceId::parse("LAPTOP").unwrap();
    let room = RoomId::parse("!r:localhost").unwrap();
    {
        let mut alice = Mls::open_in(Box::new(dir.clone()), &user, &device_id).unwrap();
        alice.create_group(&room).unwrap();
        alice.set_cursor(42).unwrap();
    }
    drop(Mls::open_in(Box::new(dir.clone()), &user, &device_id).unwrap());
    rewrite_as_version(&dir, 3);

    let alice = Mls::open_in(Box::new(dir.clone()), &user, &device_id).unwrap();
    assert_eq!(alice.cursor(), 42);
    assert!(alice.in_group(&room));
    assert!(alice.unconfirmed().is_empty());
    drop(alice);
    assert_eq!(dir.get(Record::State)[0], 6, "written back as version 6");
}

#[test]
fn a_version_4_state_file_is_read_and_carried_forward_and_its_key_file_emptied() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    bob.key_packages(3, false).unwrap();
    let message = room.message(&mut alice, "m1", "unconfirmed");
    let got = bob.receive(&message).unwrap();
    drop(bob);
    drop(device(&dirs[1], "bob", "B1"));
    rewrite_as_version(&dirs[1], 4);

    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.unconfirmed(), vec![got]);
    assert_eq!(key_package_count(&bob), 3);
    let next = room.message(&mut alice, "m2", "next");
    assert_eq!(body_of(bob.receive(&next).unwrap()), "next");
    drop(bob);
    assert_eq!(
        dirs[1].get(Record::State)[0],
        6,
        "written back as version 6"
    );
    assert!(
        dirs[1].get(Record::Keys).is_empty(),
        "the key file is emptied"
    );
    let bob = device(&dirs[1], "bob", "B1");
    assert_eq!(key_package_count(&bob), 3);
}

#[test]
fn the_cursor_only_moves_forward_and_is_saved() {
    let dir = Disk::default();
    let mut alice = device(&dir, "alice", "A1");
    alice.set_cursor(10).unwrap();
    alice.set_cursor(5).unwrap();
    assert_eq!(alice.cursor(), 10);
    drop(alice);
    let alice = device(&dir, "alice", "A1");
    assert_eq!(alice.cursor(), 10);
}

#[test]
fn another_device_of_the_same_user_reads_the_message_and_members_agree_on_the_group() {
    let dirs: Vec<_> = (0..3).map(|_| Disk::default()).collect();
    let mut alice = device(&dirs[0], "alice", "A1");
    let mut phone = device(&dirs[1], "alice", "A2");
    let mut bob = device(&dirs[2], "bob", "B1");
    let mut room = Room::new();
    alice.create_group(&room.id).unwrap();
    let packages = [package_of(&mut phone, &alice), package_of(&mut bob, &alice)];
    let add = alice.prepare_add(&room.id, &packages).unwrap();
    alice.commit_accepted(&room.id).unwrap();
    assert!(alice.own_commit_landed(&room.id, 0));
    assert!(!alice.own_commit_landed(&room.id, 1));
    let event = room.commit(&alice, "c1", &add);
    for d in [&mut alice, &mut phone, &mut bob] {
        d.receive(&event).unwrap();
    }
    assert_eq!(phone.joined_seq(&room.id), Some(event.seq));
    assert_eq!(alice.epoch(&room.id), Some(1));
    assert!(phone.in_group(&room.id) && !phone.in_group(&RoomId::parse("!x:localhost").unwrap()));
    // Same user, another device: not this device's own message, so it decrypts.
    let hello = room.message(&mut alice, "a1", "to my phone");
    assert_eq!(body_of(phone.receive(&hello).unwrap()), "to my phone");
    // Every member holds the same epoch secret and sees the same fingerprints.
    let auth = alice.epoch_authenticator(&room.id).unwrap();
    assert!(auth.len() >= 16);
    assert_eq!(bob.epoch_authenticator(&room.id), Some(auth));
    let fingerprint = alice.fingerprint();
    assert_eq!(fingerprint.split(' ').count(), 16);
    assert!(fingerprint.split(' ').all(|g| g.len() == 4));
    assert_ne!(fingerprint, bob.fingerprint());
    let seen_by_bob = bob.member_fingerprints(&room.id);
    assert_eq!(seen_by_bob.len(), 3);
    assert!(seen_by_bob.contains(&(
        UserId::parse("@alice:localhost").unwrap(),
        DeviceId::parse("A1").unwrap(),
        fingerprint
    )));
    assert_eq!(
        bob.membership_mismatch(&room.id, &[alice.saved.user.clone()]),
        (vec![], vec![bob.saved.user.clone()])
    );
    assert_eq!(bob.rooms(), vec![room.id.clone()]);
}

#[test]
fn owed_messages_wait_for_their_readers_and_are_forgotten_when_those_leave() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    let carol = UserId::parse("@carol:localhost").unwrap();
    let bob_id = bob.saved.user.clone();
    // Owed to carol (no device in the group) and to bob's second device (not in it either).
    let hello = room.message(&mut alice, "a1", "hello");
    alice
        .owe(
            "a1",
            vec![
                Waiting::User(carol.clone()),
                Waiting::Device(bob_id.clone(), DeviceId::parse("B2").unwrap()),
            ],
        )
        .unwrap();
    alice
        .owe("unknown-txn", vec![Waiting::User(carol.clone())])
        .unwrap();
    assert_eq!(alice.owed_count(&room.id), 1);
    assert_eq!(alice.owed_count(&RoomId::parse("!x:localhost").unwrap()), 0);
    // bob's first device being in the group does not make the copy for his second one due.
    assert!(alice.due_copies().is_empty());
    bob.receive(&hello).unwrap();
    alice.receive(&hello).unwrap();
    // carol leaves: nothing is owed to her any more; bob's second device still waits.
    let leave = room.event(
        &bob,
        "l1",
        Content::Member {
            target: carol.clone(),
            membership: Membership::Leave,
        },
    );
    alice.receive(&leave).unwrap();
    assert_eq!(alice.owed_count(&room.id), 1);
    assert!(
        alice.saved.owed[0].waiting
            == vec![Waiting::Device(
                bob_id.clone(),
                DeviceId::parse("B2").unwrap()
            )]
    );
    // And when bob leaves, nothing is owed at all; he is departed until removed from the group.
    let leave = room.event(
        &bob,
        "l2",
        Content::Member {
            target: bob_id.clone(),
            membership: Membership::Leave,
        },
    );
    alice.receive(&leave).unwrap();
    assert_eq!(alice.owed_count(&room.id), 0);
    assert_eq!(alice.departed(&room.id), vec![bob_id]);
}

/// A member who left (or was removed) and is invited back before anyone took their devices
/// out is no longer departed: the next sender keeps their devices in the group rather than
/// removing them again.
#[test]
fn a_member_back_in_the_room_is_no_longer_departed() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, bob, mut room) = alice_and_bob(&dirs);
    let bob_id = bob.saved.user.clone();
    let member = |membership| Content::Member {
        target: bob_id.clone(),
        membership,
    };
    let leave = room.event(&bob, "l1", member(Membership::Leave));
    alice.receive(&leave).unwrap();
    assert_eq!(alice.departed(&room.id), vec![bob_id.clone()]);
    let back = room.event(&alice, "j1", member(Membership::Join));
    alice.receive(&back).unwrap();
    assert!(alice.departed(&room.id).is_empty());
}

#[test]
fn a_removed_device_drops_what_it_had_waiting_to_send() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    bob.encrypt(&room.id, "b1", &text("never ordered")).unwrap();
    let bob_id = bob.saved.user.clone();
    let remove = alice
        .prepare_remove(&room.id, &[bob_id], &[])
        .unwrap()
        .unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let commit = room.commit(&alice, "c2", &remove);
    assert!(matches!(
        bob.receive(&commit).unwrap(),
        Received::Removed { .. }
    ));
    assert!(bob.saved.sent.is_empty() && bob.refused().is_empty());
}

/// Removed from a group (or gone and then removed), a device keeps its old state under the
/// group's id; added again, it joins from the Welcome in place of that state, reads what is sent
/// after, and still does after a restart.
#[test]
fn a_device_taken_out_of_a_group_gets_back_in_when_added_again() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    let bob_id = bob.saved.user.clone();
    let remove = alice
        .prepare_remove(&room.id, &[bob_id], &[])
        .unwrap()
        .unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let removal = room.commit(&alice, "c2", &remove);
    assert!(matches!(
        bob.receive(&removal).unwrap(),
        Received::Removed { .. }
    ));
    alice.receive(&removal).unwrap();
    let unseen = room.message(&mut alice, "m1", "while bob was out");
    assert!(matches!(
        bob.receive(&unseen).unwrap(),
        Received::Unreadable { .. }
    ));
    alice.receive(&unseen).unwrap();

    let add = alice
        .prepare_add(&room.id, &[package_of(&mut bob, &alice)])
        .unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let back = room.commit(&alice, "c3", &add);
    assert!(matches!(
        bob.receive(&back).unwrap(),
        Received::Joined { epoch: 3, .. }
    ));
    alice.receive(&back).unwrap();
    assert!(bob.in_group(&room.id));
    let hello = room.message(&mut alice, "m2", "welcome back");
    assert_eq!(body_of(bob.receive(&hello).unwrap()), "welcome back");
    alice.receive(&hello).unwrap();
    let reply = room.message(&mut bob, "b1", "glad to be back");
    assert_eq!(body_of(alice.receive(&reply).unwrap()), "glad to be back");
    bob.receive(&reply).unwrap();

    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    let again = room.message(&mut alice, "m3", "after your restart");
    assert_eq!(body_of(bob.receive(&again).unwrap()), "after your restart");
}

#[test]
fn refused_sends_are_named_dropped_or_forgotten_one_by_one() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (_alice, mut bob, room) = alice_and_bob(&dirs);
    bob.encrypt(&room.id, "b1", &text("one")).unwrap();
    bob.encrypt(&room.id, "b2", &text("two")).unwrap();
    bob.encrypt(&room.id, "b3", &text("three")).unwrap();
    bob.refuse_sent("nope").unwrap();
    assert!(bob.refused().is_empty());
    bob.refuse_sent("b1").unwrap();
    bob.refuse_sent("b2").unwrap();
    // The refused list is on disk as soon as a send is refused.
    drop(bob);
    let mut bob = device(&dirs[1], "bob", "B1");
    assert_eq!(
        bob.refused(),
        vec![
            ("b1".to_owned(), room.id.clone()),
            ("b2".to_owned(), room.id.clone())
        ]
    );
    bob.drop_refused("b1").unwrap();
    assert_eq!(bob.refused(), vec![("b2".to_owned(), room.id.clone())]);
    bob.forget_sent("b3").unwrap();
    assert!(!bob.saved.sent.contains_key("b3"));
    drop(bob);
    let bob = device(&dirs[1], "bob", "B1");
    assert_eq!(bob.refused(), vec![("b2".to_owned(), room.id.clone())]);
    assert!(bob.saved.sent.is_empty());
}

#[test]
fn a_refused_commit_leaves_the_epoch_where_it_was() {
    let dirs: Vec<_> = (0..2).map(|_| Disk::default()).collect();
    let (mut alice, mut bob, mut room) = alice_and_bob(&dirs);
    alice.prepare_update(&room.id).unwrap();
    alice.commit_refused(&room.id).unwrap();
    alice.commit_accepted(&room.id).unwrap();
    assert_eq!(alice.epoch(&room.id), Some(1), "nothing pending was merged");
    // The one that won: bob's, which alice takes as anyone's.
    let update = bob.prepare_update(&room.id).unwrap();
    bob.commit_accepted(&room.id).unwrap();
    let commit = room.commit(&bob, "c2", &update);
    assert!(matches!(
        alice.receive(&commit).unwrap(),
        Received::Committed { epoch: 2, .. }
    ));
    bob.receive(&commit).unwrap();
    assert_eq!(
        (alice.epoch(&room.id), bob.epoch(&room.id)),
        (Some(2), Some(2))
    );
    let hello = room.message(&mut alice, "a1", "after");
    assert_eq!(body_of(bob.receive(&hello).unwrap()), "after");
}

/// Records kept where the test can reach them, as a browser keeps them in IndexedDB.
#[test]
fn a_device_kept_in_other_storage_reopens_in_its_groups_and_garbage_is_named() {
    let dirs: Vec<_> = (0..1).map(|_| Disk::default()).collect();
    let user = UserId::parse("@carol:localhost").unwrap();
    let id = DeviceId::parse("C1").unwrap();
    let records = Disk::default();
    let mut alice = device(&dirs[0], "alice", "A1");
    let mut carol = Mls::open_in(Box::new(records.clone()), &user, &id).unwrap();
    let fingerprint = carol.fingerprint();
    let mut room = Room::new();
    alice.create_group(&room.id).unwrap();
    let add = alice
        .prepare_add(&room.id, &[package_of(&mut carol, &alice)])
        .unwrap();
    alice.commit_accepted(&room.id).unwrap();
    let event = room.commit(&alice, "c1", &add);
    alice.receive(&event).unwrap();
    assert!(matches!(
        carol.receive(&event).unwrap(),
        Received::Joined { epoch: 1, .. }
    ));
    assert!(records.read(Record::Journal).unwrap().is_some());
    drop(carol);

    // Reopened from the records alone: the same identity, in the group, reading new messages.
    let mut carol = Mls::open_in(Box::new(records.clone()), &user, &id).unwrap();
    assert_eq!(carol.fingerprint(), fingerprint);
    let message = room.message(&mut alice, "m1", "still here?");
    assert_eq!(body_of(carol.receive(&message).unwrap()), "still here?");
    drop(carol);

    // A record that does not decode is an error that names it, never a fresh identity.
    records.put(Record::State, vec![0xff; 7]);
    match Mls::open_in(Box::new(records), &user, &id) {
        Err(E2eeError::Decode { path, .. }) => assert_eq!(path, "shared State"),
        other => panic!("expected a decode error, got {other:?}"),
    }
}
