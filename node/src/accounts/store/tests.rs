//! The contract every [`AccountStore`] keeps, run against the redb store. A second backend runs
//! `contract` too.

use std::sync::Arc;

use super::*;

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn device(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn user_record(hash: &str) -> UserRecord {
    UserRecord {
        password_hash: hash.into(),
        created_ts: 7,
        deactivated: false,
    }
}

fn device_record(name: &str, refresh: u8) -> DeviceRecord {
    DeviceRecord {
        name: name.into(),
        created_ts: 9,
        refresh_hash: [refresh; 32],
    }
}

/// Runs every rule of the trait against an empty store.
fn contract(store: &dyn AccountStore) {
    let ann = user("@ann:example.org");
    // A user id that extends another: a scan of ann's devices must not reach hers.
    let anna = user("@anna:example.org");
    let bob = user("@bob:example.org");

    // Insert is insert-if-absent: the second attempt changes nothing.
    assert!(store.insert_user(&bob, &user_record("bob-1")).unwrap());
    assert!(store.insert_user(&ann, &user_record("ann-1")).unwrap());
    assert!(!store.insert_user(&ann, &user_record("stolen")).unwrap());
    assert_eq!(store.user(&ann).unwrap().unwrap().password_hash, "ann-1");
    assert!(store.user(&anna).unwrap().is_none());
    assert!(store.insert_user(&anna, &user_record("anna-1")).unwrap());

    // Put replaces.
    let mut deactivated = user_record("ann-1");
    deactivated.deactivated = true;
    store.put_user(&ann, &deactivated).unwrap();
    assert!(store.user(&ann).unwrap().unwrap().deactivated);

    let ids: Vec<_> = store.users().unwrap().into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        ids,
        vec![ann.clone(), anna.clone(), bob.clone()],
        "id order"
    );

    // Devices are per user, in id order.
    store
        .put_device(&ann, &device("PHONE"), &device_record("phone", 1))
        .unwrap();
    store
        .put_device(&ann, &device("LAPTOP"), &device_record("laptop", 2))
        .unwrap();
    store
        .put_device(&anna, &device("TABLET"), &device_record("tablet", 3))
        .unwrap();
    let anns: Vec<_> = store
        .devices(&ann)
        .unwrap()
        .into_iter()
        .map(|(d, r)| (d, r.name))
        .collect();
    assert_eq!(
        anns,
        vec![
            (device("LAPTOP"), "laptop".into()),
            (device("PHONE"), "phone".into())
        ]
    );
    assert!(store.devices(&bob).unwrap().is_empty());

    // A refresh hash rotates once: the same expected hash a second time is a mismatch.
    let phone = device("PHONE");
    assert_eq!(
        store
            .rotate_refresh(&ann, &phone, [1; 32], [4; 32])
            .unwrap(),
        RotateOutcome::Rotated
    );
    assert_eq!(
        store
            .rotate_refresh(&ann, &phone, [1; 32], [5; 32])
            .unwrap(),
        RotateOutcome::Mismatch
    );
    assert_eq!(store.devices(&ann).unwrap()[1].1.refresh_hash, [4; 32]);
    assert_eq!(
        store
            .rotate_refresh(&bob, &phone, [1; 32], [5; 32])
            .unwrap(),
        RotateOutcome::NoDevice
    );

    // Deleting counts only devices that existed, and leaves other users' alone.
    assert_eq!(
        store
            .delete_devices(&ann, &[phone.clone(), device("NEVER")])
            .unwrap(),
        1
    );
    let mut all = store.all_devices().unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            (ann.clone(), device("LAPTOP")),
            (anna.clone(), device("TABLET"))
        ]
    );
    assert_eq!(
        store
            .rotate_refresh(&ann, &phone, [4; 32], [6; 32])
            .unwrap(),
        RotateOutcome::NoDevice,
        "a deleted device's refresh token is dead"
    );
}

#[test]
fn the_redb_store_keeps_the_account_contract_and_it_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store: Arc<dyn AccountStore> = Arc::new(Store::open(&path).unwrap());
        contract(store.as_ref());
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(AccountStore::users(&store).unwrap().len(), 3);
    let mut all = AccountStore::all_devices(&store).unwrap();
    all.sort();
    assert_eq!(all.len(), 2);
    assert_eq!(
        store
            .device(&user("@ann:example.org"), &device("LAPTOP"))
            .unwrap()
            .unwrap()
            .refresh_hash,
        [2; 32]
    );
}
