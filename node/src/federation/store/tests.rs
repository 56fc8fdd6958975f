//! The contract every [`FederationStore`] keeps, run against the redb store through the trait
//! only. A second backend runs these same functions.

use std::path::Path;
use std::sync::Arc;

use hearth_spec::PublicKey;

use super::*;

fn n(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

fn submit(byte: u8) -> OutItem {
    OutItem::Submit { event: vec![byte] }
}

fn rotation(from: u8, to: u8, until: u64) -> PeerRotation {
    PeerRotation {
        signer: PublicKey([from; 32]),
        new_key: PublicKey([to; 32]),
        old_valid_until_ms: until,
    }
}

fn open(path: &Path) -> Arc<dyn FederationStore> {
    Arc::new(Store::open(path).unwrap())
}

/// A store on an empty database, and where it lives for a reopen.
fn fresh() -> (tempfile::TempDir, Arc<dyn FederationStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db"));
    (dir, store)
}

#[test]
fn each_destination_has_its_own_queue_in_order() {
    let (_dir, store) = fresh();
    let ids = store
        .queue_outbox(&[
            (n("b.t"), submit(1)),
            (n("c.t"), submit(2)),
            (n("b.t"), submit(3)),
        ])
        .unwrap();
    assert_eq!(ids, vec![(n("b.t"), 1), (n("c.t"), 1), (n("b.t"), 2)]);
    // Later entries follow what the queue holds.
    assert_eq!(
        store.queue_outbox(&[(n("b.t"), submit(4))]).unwrap(),
        vec![(n("b.t"), 3)]
    );
    let pending = store.outbox_pending(&n("b.t"), None, 10).unwrap();
    assert_eq!(
        pending,
        vec![(1, submit(1)), (2, submit(3)), (3, submit(4))]
    );
    // After an id, and at most a limit.
    assert_eq!(
        store.outbox_pending(&n("b.t"), Some(1), 1).unwrap(),
        vec![(2, submit(3))]
    );
    assert_eq!(
        store.outbox_depths().unwrap(),
        vec![(n("b.t"), 3), (n("c.t"), 1)]
    );
}

/// The driver removes delivered entries without waiting, and removals may land in any order:
/// a queue that empties must not give its ids out again, or a late removal of the old entries
/// would delete the new ones (and the peer would wait for them forever).
#[test]
fn an_emptied_queue_never_gives_an_id_out_twice() {
    let (_dir, store) = fresh();
    let first = store
        .queue_outbox(&[(n("b.t"), submit(1)), (n("b.t"), submit(2))])
        .unwrap();
    assert_eq!(first, vec![(n("b.t"), 1), (n("b.t"), 2)]);
    // Delivered, the second removal landing first: the queue is empty…
    store.outbox_remove(&n("b.t"), &[2]).unwrap();
    store.outbox_remove(&n("b.t"), &[1]).unwrap();
    assert!(
        store
            .outbox_pending(&n("b.t"), None, 10)
            .unwrap()
            .is_empty()
    );
    // … and new entries come after every id it gave out.
    let next = store.queue_outbox(&[(n("b.t"), submit(3))]).unwrap();
    assert_eq!(next, vec![(n("b.t"), 3)]);
    // A late, repeated removal of the delivered ids leaves the new entry alone.
    store.outbox_remove(&n("b.t"), &[1, 2]).unwrap();
    assert_eq!(
        store.outbox_pending(&n("b.t"), None, 10).unwrap(),
        vec![(3, submit(3))]
    );
}

#[test]
fn a_name_that_extends_another_is_another_queue() {
    let (_dir, store) = fresh();
    store
        .queue_outbox(&[(n("b.t"), submit(1)), (n("b.tt"), submit(2))])
        .unwrap();
    assert_eq!(
        store.outbox_pending(&n("b.t"), None, 10).unwrap(),
        vec![(1, submit(1))]
    );
    store.outbox_remove(&n("b.t"), &[1]).unwrap();
    assert_eq!(
        store.outbox_pending(&n("b.tt"), None, 10).unwrap(),
        vec![(1, submit(2))]
    );
}

#[test]
fn removed_entries_leave_only_their_queue() {
    let (_dir, store) = fresh();
    store
        .queue_outbox(&[
            (n("b.t"), submit(1)),
            (n("b.t"), submit(2)),
            (n("c.t"), submit(3)),
        ])
        .unwrap();
    store.outbox_remove(&n("b.t"), &[1, 99]).unwrap();
    assert_eq!(
        store.outbox_pending(&n("b.t"), None, 10).unwrap(),
        vec![(2, submit(2))]
    );
    assert_eq!(store.outbox_pending(&n("c.t"), None, 10).unwrap().len(), 1);
}

#[test]
fn items_are_found_by_kind_across_queues() {
    let (_dir, store) = fresh();
    let rotation = OutItem::KeyRotation {
        old_key: PublicKey([1; 32]),
        new_key: PublicKey([2; 32]),
        old_valid_until_ms: 3,
    };
    store
        .queue_outbox(&[(n("b.t"), submit(1)), (n("c.t"), rotation.clone())])
        .unwrap();
    let found = store
        .outbox_items(&|item| matches!(item, OutItem::KeyRotation { .. }))
        .unwrap();
    assert_eq!(found, vec![(n("c.t"), 1, rotation)]);
}

#[test]
fn queued_entries_rotations_and_found_hearths_survive_a_reopen() {
    let (dir, store) = fresh();
    let (first, second) = (rotation(1, 2, 10), rotation(2, 3, 20));
    store.save_peer_rotation(&n("b.t"), &first).unwrap();
    store.save_peer_rotation(&n("b.t"), &second).unwrap();
    store.save_peer_rotation(&n("c.t"), &first).unwrap();
    store.save_discovered(&n("b.t"), b"old").unwrap();
    store.save_discovered(&n("b.t"), b"new").unwrap();
    store.save_discovered(&n("c.t"), b"c").unwrap();
    store
        .queue_outbox(&[(n("b.t"), submit(1)), (n("b.t"), submit(2))])
        .unwrap();
    drop(store);

    let store = open(&dir.path().join("db"));
    // Rotations per peer in the order recorded; the newest record of a found hearth.
    assert_eq!(
        store.peer_rotations().unwrap(),
        vec![
            (n("b.t"), first.clone()),
            (n("b.t"), second),
            (n("c.t"), first)
        ]
    );
    assert_eq!(
        store.discovered().unwrap(),
        vec![b"new".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        store.outbox_pending(&n("b.t"), None, 10).unwrap(),
        vec![(1, submit(1)), (2, submit(2))]
    );
}

#[test]
fn what_peers_ask_about_unknown_rooms_users_and_events_is_empty_not_an_error() {
    let (_dir, store) = fresh();
    let room = RoomId::parse("!r1:b.t").unwrap();
    let user = UserId::parse("@nobody:a.t").unwrap();
    assert!(store.room(&room).unwrap().is_none());
    assert!(!store.is_member(&room, &user).unwrap());
    assert!(store.event_at(&room, 1).unwrap().is_none());
    assert!(store.user(&user).unwrap().is_none());
    assert!(store.e2ee_devices(&user).unwrap().is_empty());
    assert!(store.claim_key_packages(&user, None).unwrap().is_empty());
    assert!(
        store
            .outbox_pending(&n("b.t"), None, 10)
            .unwrap()
            .is_empty()
    );
    assert!(store.outbox_depths().unwrap().is_empty());
}
