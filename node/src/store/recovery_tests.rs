//! Group commits survive a crash through the commit journal: what is on disk at any moment is
//! the database as of its last flush plus the journal, and opening them gives back every commit.

use hearth_spec::{DeviceId, EventId, RoomId, UserId};

use super::*;

fn room() -> RoomId {
    RoomId::parse("!r:localhost").unwrap()
}

/// A batch placing events `seqs` in the room, each with its sender's transaction.
fn batch(seqs: std::ops::RangeInclusive<u64>) -> Batch {
    let user = UserId::parse("@a:localhost").unwrap();
    let mut batch = Batch::default();
    for seq in seqs {
        let id = EventId::of_bytes(&seq.to_be_bytes());
        batch.events.push(NewEvent {
            room: room(),
            seq,
            id,
            bytes: vec![seq as u8; 100],
            sender: user.clone(),
        });
        batch.txns.push(Txn {
            user: user.clone(),
            device: DeviceId::parse("D").unwrap(),
            txn: format!("t{seq}"),
            event: id,
            room: room(),
            seq,
        });
        batch.inbox.push(InboxEntry {
            user: user.clone(),
            position: seq,
            room: room(),
            seq,
        });
    }
    batch
}

/// What a crash leaves: the files as they are on disk now, copied to a new folder.
fn crash_copy(dir: &Path, with_journal: bool) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("db"), copy.path().join("db")).unwrap();
    if with_journal {
        std::fs::copy(
            journal_path(&dir.join("db")),
            journal_path(&copy.path().join("db")),
        )
        .unwrap();
    }
    copy
}

#[test]
fn commits_after_the_last_flush_come_back_from_the_journal_after_a_crash() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    store.commit(&batch(1..=3)).unwrap();
    store.commit(&batch(4..=4)).unwrap();
    store.commit(&batch(5..=9)).unwrap();
    assert_eq!(store.last_seq(&room()).unwrap(), 9);

    // The database file alone holds none of them: they are durable in the journal only.
    let without = crash_copy(dir.path(), false);
    let reopened = Store::open(&without.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 0);
    drop(reopened);

    let crashed = crash_copy(dir.path(), true);
    let path = crashed.path().join("db");
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 9);
    let user = UserId::parse("@a:localhost").unwrap();
    let device = DeviceId::parse("D").unwrap();
    assert_eq!(
        reopened.txn_event(&user, &device, "t7").unwrap(),
        Some((room(), Some(7), EventId::of_bytes(&7u64.to_be_bytes())))
    );
    // The replay was flushed and the journal rewound; numbering goes on after it.
    assert_eq!(reopened.journal.lock().unwrap().len(), 16);
    reopened.commit(&batch(10..=10)).unwrap();
    drop(reopened);
    let again = Store::open(&path).unwrap();
    assert_eq!(again.last_seq(&room()).unwrap(), 10);
}

/// As a hearth runs: the journal written ahead to its checkpoint size first, so its records
/// overwrite zeros; a crash then finds them, and none of the zeros, as after an append.
#[test]
fn commits_in_a_journal_written_ahead_come_back_after_a_crash() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(1024 * 1024);
    let written = store.write_journal_ahead(0).unwrap();
    let journal_file = journal_path(&dir.path().join("db"));
    let size = || std::fs::metadata(&journal_file).unwrap().len();
    assert_eq!(size(), 1024 * 1024 + commit::DIRECT_COMMIT_BYTES as u64);
    assert_eq!(written, size() - 16);
    // Not where it would leave less than the reserve free.
    assert_eq!(store.write_journal_ahead(u64::MAX / 2).unwrap(), 0);
    store.commit(&batch(1..=3)).unwrap();
    store.commit(&batch(4..=9)).unwrap();
    assert_eq!(size(), 1024 * 1024 + commit::DIRECT_COMMIT_BYTES as u64);

    let crashed = crash_copy(dir.path(), true);
    let path = crashed.path().join("db");
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 9);
    reopened.commit(&batch(10..=10)).unwrap();
    drop(reopened);
    assert_eq!(Store::open(&path).unwrap().last_seq(&room()).unwrap(), 10);
}

#[test]
fn a_checkpoint_flushes_the_database_and_rewinds_the_journal() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(1);
    store.commit(&batch(1..=3)).unwrap();
    assert_eq!(store.journal.lock().unwrap().len(), 16);
    let without = crash_copy(dir.path(), false);
    let reopened = Store::open(&without.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 3);
}

#[test]
fn records_the_database_holds_already_are_not_applied_twice() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    store.commit(&batch(1..=2)).unwrap();
    // Another flushed commit (an account, say) makes the batch durable in the database too,
    // while its record stays in the journal.
    let txn = store.begin_write().unwrap();
    txn.open_table(USERS)
        .unwrap()
        .insert("@z:localhost", &b"x"[..])
        .unwrap();
    txn.commit().unwrap();
    store.commit(&batch(3..=3)).unwrap();
    let crashed = crash_copy(dir.path(), true);
    let reopened = Store::open(&crashed.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 3);
    let read = reopened.begin_read().unwrap();
    let inbox = read.open_table(INBOX).unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&inbox).unwrap(), 3);
}

#[test]
fn a_journal_with_a_gap_after_the_database_is_refused() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    store.commit(&batch(1..=1)).unwrap();
    let early = crash_copy(dir.path(), false);
    store.set_checkpoint_bytes(1);
    store.commit(&batch(2..=2)).unwrap();
    store.set_checkpoint_bytes(u64::MAX);
    store.commit(&batch(3..=3)).unwrap();
    // The journal now starts at record 3; the early copy of the database holds nothing.
    std::fs::copy(
        journal_path(&dir.path().join("db")),
        journal_path(&early.path().join("db")),
    )
    .unwrap();
    assert!(matches!(
        Store::open(&early.path().join("db")),
        Err(OpenError::Store(StoreError::Corrupt(_)))
    ));
}

/// After a checkpoint the journal is written over from its start, the earlier records left
/// behind it: a crash then replays the new records, and the old ones (held by the database)
/// neither stop the open nor hide the new ones.
#[test]
fn a_journal_rewound_by_a_checkpoint_replays_only_what_came_after() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    for n in 1..=6 {
        store.commit(&batch(n..=n)).unwrap();
    }
    store.set_checkpoint_bytes(1);
    store.commit(&batch(7..=7)).unwrap();
    store.set_checkpoint_bytes(u64::MAX);
    let journal = journal_path(&dir.path().join("db"));
    let size = std::fs::metadata(&journal).unwrap().len();
    // Rewound, nothing new yet: the earlier run is all the file holds.
    let rewound = crash_copy(dir.path(), true);
    let reopened = Store::open(&rewound.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 7);
    drop(reopened);
    store.commit(&batch(8..=8)).unwrap();
    store.commit(&batch(9..=10)).unwrap();
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), size);
    // The database file alone holds up to 7; the journal brings 8 to 10.
    let crashed = crash_copy(dir.path(), true);
    let path = crashed.path().join("db");
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 10);
    let read = reopened.begin_read().unwrap();
    let inbox = read.open_table(INBOX).unwrap();
    assert_eq!(redb::ReadableTableMetadata::len(&inbox).unwrap(), 10);
    drop((read, inbox));
    reopened.commit(&batch(11..=11)).unwrap();
    drop(reopened);
    assert_eq!(Store::open(&path).unwrap().last_seq(&room()).unwrap(), 11);
}

#[test]
fn another_databases_journal_stops_the_open() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    store.commit(&batch(1..=1)).unwrap();
    let (other, _other_store) = scratch();
    drop(_other_store);
    std::fs::copy(
        journal_path(&dir.path().join("db")),
        journal_path(&other.path().join("db")),
    )
    .unwrap();
    assert!(matches!(
        Store::open(&other.path().join("db")),
        Err(OpenError::Journal(journal::JournalError::Foreign(_)))
    ));
}

#[test]
fn a_large_batch_is_flushed_to_the_database_and_small_ones_go_to_the_journal() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    store.commit(&batch(1..=2)).unwrap();
    let mut large = batch(3..=400);
    for event in &mut large.events {
        event.bytes = vec![1; 200];
    }
    assert!(encode(&large).len() >= commit::DIRECT_COMMIT_BYTES);
    store.commit(&large).unwrap();
    // Flushed with everything before it, and the journal rewound.
    assert_eq!(store.journal.lock().unwrap().len(), 16);
    let without = crash_copy(dir.path(), false);
    let reopened = Store::open(&without.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 400);
    drop(reopened);
    // A small batch after it goes to the journal again.
    store.commit(&batch(401..=401)).unwrap();
    assert!(store.journal.lock().unwrap().len() > 16);
    let crashed = crash_copy(dir.path(), true);
    let reopened = Store::open(&crashed.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 401);
}

/// A replica's batch is readable while its journal record is flushed (`spec/storage.md`, "Shown
/// before the flush"). A power cut then (the record not on the disk yet) loses it whole; a crash
/// of the process alone (the record in the page cache) keeps it whole.
#[test]
fn a_batch_shown_before_its_flush_is_lost_or_kept_whole_by_a_crash_then() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    store.commit(&batch(1..=2)).unwrap();
    let journal = journal_path(&dir.path().join("db"));
    let flushed_len = std::fs::metadata(&journal).unwrap().len();
    let user = UserId::parse("@a:localhost").unwrap();
    let mut crashes = None;
    store
        .commit_shown_early(&batch(3..=4), &mut || {
            let shown: Vec<u64> = store
                .inbox_after(&user, 2, 10)
                .unwrap()
                .iter()
                .map(|(position, _)| *position)
                .collect();
            assert_eq!(shown, [3, 4], "readable before the flush");
            let power_cut = crash_copy(dir.path(), true);
            std::fs::OpenOptions::new()
                .write(true)
                .open(journal_path(&power_cut.path().join("db")))
                .unwrap()
                .set_len(flushed_len)
                .unwrap();
            crashes = Some((power_cut, crash_copy(dir.path(), true)));
        })
        .unwrap();
    let (power_cut, process_crash) = crashes.expect("shown");
    let reopened = Store::open(&power_cut.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 2);
    assert!(reopened.inbox_after(&user, 2, 10).unwrap().is_empty());
    let reopened = Store::open(&process_crash.path().join("db")).unwrap();
    assert_eq!(reopened.last_seq(&room()).unwrap(), 4);
    // And the store that showed it holds it durably once the commit returned.
    let after = crash_copy(dir.path(), true);
    assert_eq!(
        Store::open(&after.path().join("db"))
            .unwrap()
            .last_seq(&room())
            .unwrap(),
        4
    );
}

/// A commit that fails is never shown.
#[test]
fn a_failed_commit_is_not_shown() {
    let (_dir, store) = scratch();
    store.fail_commits(1);
    let mut shown = false;
    assert!(
        store
            .commit_shown_early(&batch(1..=1), &mut || shown = true)
            .is_err()
    );
    assert!(!shown);
}

/// A group's admins, changed in a commit durable in the journal only, come back after a crash;
/// a record written before batches carried admins (no tail) reads as changing none.
#[test]
fn admins_changed_after_the_last_flush_come_back_and_old_records_still_read() {
    let (dir, store) = scratch();
    store.set_checkpoint_bytes(u64::MAX);
    let (a, b) = (
        UserId::parse("@a:localhost").unwrap(),
        UserId::parse("@b:localhost").unwrap(),
    );
    let mut first = batch(1..=1);
    first.admins.push((room(), vec![a.clone()]));
    store.commit(&first).unwrap();
    let mut second = batch(2..=2);
    second.admins.push((room(), vec![a.clone(), b.clone()]));
    store.commit(&second).unwrap();
    let mut third = batch(3..=3);
    third.admins.push((room(), vec![b.clone()]));
    store.commit(&third).unwrap();

    let crashed = crash_copy(dir.path(), true);
    let reopened = Store::open(&crashed.path().join("db")).unwrap();
    let members = [a.clone(), b.clone()];
    assert_eq!(
        reopened
            .room_admins(&room(), hearth_spec::RoomKind::Group, &members)
            .unwrap(),
        vec![b.clone()]
    );

    let old = encode(&batch(4..=4));
    let read = Batch::from_record(&old).unwrap();
    assert!(read.admins.is_empty());
    assert_eq!(read.events.len(), 1);
    assert_eq!(
        Batch::from_record(&third.to_record()).unwrap().admins,
        third.admins
    );
}
