//! `hearth admin backup` while the hearth serves, and `hearth admin restore` onto another data
//! directory: the restored hearth has every message acknowledged before the backup began (each
//! room an unbroken run of sequence numbers from 1), every blob stored before it, the same
//! accounts and the same server key. Backups refuse to overwrite, restores refuse a data
//! directory with a database, another hearth's backup and an unfinished backup.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hearth_client::{Client, new_txn_id};
use hearth_node::ops::admin::{AdminRequest, AdminResponse, request_socket};
use hearth_node::ops::data_dir::admin_socket_path;
use hearth_spec::RoomKind;
use hearth_tests::{HearthProcess, TestHearth, hearth_binary};

fn hearth_cli(args: &[&str], data_dir: &std::path::Path) -> Output {
    Command::new(hearth_binary())
        .args(args)
        .env("HEARTH_DATA_DIR", data_dir)
        .env("HEARTH_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_message_and_blob() {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let bob_id = bob.user_id().unwrap().clone();
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let room = alice
            .create_room(RoomKind::Group, Some("load"), std::slice::from_ref(&bob_id))
            .await
            .unwrap()
            .room_id;
        rooms.push(room);
    }
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let stored = alice.upload_media(blob.clone()).await.unwrap().media_id;

    // Two senders write without pause; every acknowledged (room, seq) is recorded.
    let acked: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (index, room) in rooms.iter().enumerate() {
        let mut client = hearth.device("alice").await;
        let (room, acked, stop) = (room.clone(), acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = client
                    .send(&room, &new_txn_id(), b"a message in flight")
                    .await
                    .unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((index, sent.seq.expect("a local room sequences at once")));
            }
        }));
    }
    while acked.lock().unwrap().len() < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = acked.lock().unwrap().clone();
    let backup_dir = tempfile::tempdir().unwrap();
    let to = backup_dir.path().join("backup");
    let request = AdminRequest::Backup {
        to: to.to_str().unwrap().into(),
    };
    let socket = admin_socket_path(&hearth.config.data_dir);
    let answer = request_socket(&socket, &request).await.unwrap();
    let AdminResponse::BackedUp { media_files, .. } = answer else {
        panic!("{answer:?}")
    };
    assert!(media_files >= 1);
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let after = acked.lock().unwrap().len();
    assert!(
        after > before.len(),
        "the senders kept going during the backup"
    );

    // A second backup into the same directory is refused.
    let again = request_socket(&socket, &request).await.unwrap();
    assert!(
        matches!(&again, AdminResponse::Error { message, .. } if message.contains("not empty")),
        "{again:?}"
    );

    // Restore onto a new data directory with the command, and serve it.
    let restored_dir = tempfile::tempdir().unwrap();
    let data = restored_dir.path().join("data");
    let out = hearth_cli(&["admin", "restore", "--from", to.to_str().unwrap()], &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The database's commit journal is not in the backup (the snapshot holds what it held),
    // and the restored data directory's journal (the restore's audit entry opened the store) holds
    // no record of the original's.
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        !names(&to).iter().any(|n| n.contains("journal")),
        "{:?}",
        names(&to)
    );
    for name in names(&data).iter().filter(|n| n.contains("journal")) {
        assert_eq!(name, "hearth.redb.journal");
        let len = std::fs::metadata(data.join(name)).unwrap().len();
        assert_eq!(len, 16, "only the header");
    }
    let same_key =
        |dir: &std::path::Path| String::from_utf8(hearth_cli(&["server-key"], dir).stdout).unwrap();
    assert_eq!(same_key(&data), same_key(&hearth.config.data_dir));
    let restored = HearthProcess::start(&data, &[]).await.unwrap();
    let mut alice_again = Client::new(&restored.url);
    alice_again
        .login("alice", "correct horse battery", None)
        .await
        .unwrap();
    for (index, room) in rooms.iter().enumerate() {
        let mut seqs = Vec::new();
        let mut page_before = None;
        loop {
            let page = alice_again.history(room, page_before, 100).await.unwrap();
            seqs.extend(page.events.iter().map(|e| e.seq));
            match page.prev_before {
                Some(before) => page_before = Some(before),
                None => break,
            }
        }
        seqs.sort_unstable();
        let top = *seqs.last().unwrap();
        assert_eq!(
            seqs,
            (1..=top).collect::<Vec<_>>(),
            "an unbroken run from 1"
        );
        for (_, seq) in before.iter().filter(|(i, _)| *i == index) {
            assert!(
                seqs.contains(seq),
                "acknowledged {seq} before the backup, and missing"
            );
        }
    }
    assert_eq!(
        alice_again.download_media(&stored, None).await.unwrap(),
        blob,
        "the blob, byte for byte"
    );

    // Restore refuses: a data directory with a database, another hearth's backup, and a
    // directory that holds no finished backup.
    drop(restored);
    let out = hearth_cli(&["admin", "restore", "--from", to.to_str().unwrap()], &data);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a database"));
    let other = restored_dir.path().join("other");
    let out = Command::new(hearth_binary())
        .args(["admin", "restore", "--from", to.to_str().unwrap()])
        .env("HEARTH_DATA_DIR", &other)
        .env("HEARTH_SERVER_NAME", "elsewhere.example")
        .env("HEARTH_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("this backup is of localhost"));
    std::fs::remove_file(to.join("backup.json")).unwrap();
    let out = hearth_cli(
        &["admin", "restore", "--from", to.to_str().unwrap()],
        &restored_dir.path().join("third"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no finished backup"));
}
