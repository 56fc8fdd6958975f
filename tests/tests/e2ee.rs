//! End-to-end encryption against a real hearth: the SDK's MLS devices talk through it, and the
//! hearth only ever holds ciphertext; removed devices read nothing after; new devices join;
//! racing commits never fork a group; key packages are handed out once.

use std::path::Path;

use hearth_client::e2ee::Received;
use hearth_client::{Client, SecureClient};
use hearth_spec::api::{CommitRequest, UploadKeyPackages};
use hearth_spec::{Content, ErrorCode, RoomId, RoomKind, UserId};
use hearth_tests::{TestHearth, encrypted_dm, secure, sync_until, texts};

const MARKER: &str = "PLAINTEXT-MARKER-e2ee-7f3a91";

/// Attachments of the messages (not one's own) a sync produced.
fn attachments(received: &[Received]) -> Vec<hearth_spec::e2ee::AttachmentRef> {
    received
        .iter()
        .filter_map(|r| match r {
            Received::Message {
                body, own: false, ..
            } => body.attachment.clone(),
            _ => None,
        })
        .collect()
}

fn joined(received: &[Received], room: &RoomId) -> bool {
    received
        .iter()
        .any(|r| matches!(r, Received::Joined { room: r, .. } if r == room))
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test]
async fn a_conversation_leaves_no_plaintext_on_the_hearth_and_survives_a_client_restart() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let dir = |name: &str| states.path().join(name);
    let mut alice = secure(hearth.user("alice").await, &dir("alice")).await;
    let mut bob = secure(hearth.user("bob").await, &dir("bob")).await;
    let bob_phone_client = hearth.device("bob").await;
    let mut bob_phone = secure(bob_phone_client, &dir("bob-phone")).await;
    let mut carol = secure(hearth.user("carol").await, &dir("carol")).await;
    let ids: Vec<UserId> = [&mut bob, &mut carol]
        .iter_mut()
        .map(|c| c.client().user_id().unwrap().clone())
        .collect();

    let room = alice
        .create_room(RoomKind::Group, Some("secret plans"), &ids)
        .await
        .unwrap()
        .room_id;
    // Every device of every member is in the group.
    assert_eq!(alice.mls().members(&room).len(), 4);
    assert!(alice.check_membership(&room).await.unwrap().matches());

    alice
        .send_text(&room, &format!("{MARKER} from alice"))
        .await
        .unwrap();
    let file = format!("attachment bytes with {MARKER} inside").repeat(2000);
    alice
        .send_file(&room, "plans.txt", file.as_bytes(), "the file")
        .await
        .unwrap();
    let mut attachment = None;
    for device in [&mut bob, &mut bob_phone, &mut carol] {
        let got = device.sync().await.unwrap();
        assert!(joined(&got, &room), "{got:?}");
        assert_eq!(
            texts(&got),
            vec![format!("{MARKER} from alice"), "the file".to_owned()]
        );
        attachment = got.into_iter().find_map(|r| match r {
            Received::Message { body, .. } => body.attachment,
            _ => None,
        });
    }
    let attachment = attachment.expect("the file message carries its attachment");
    assert_eq!(attachment.size, file.len() as u64);
    carol
        .send_text(&room, &format!("{MARKER} from carol"))
        .await
        .unwrap();

    // The attachment comes back through the hearth and decrypts.
    let got = bob.sync().await.unwrap();
    assert_eq!(texts(&got), vec![format!("{MARKER} from carol")]);
    let history = bob.client().history(&room, None, 50).await.unwrap();
    assert!(history.events.iter().all(|e| match &e.content {
        Content::Message { payload } => !String::from_utf8_lossy(payload).contains(MARKER),
        _ => true,
    }));

    // A client restart keeps its groups: bob opens his state again and reads new messages.
    let session = bob.client().session().unwrap().clone();
    drop(bob);
    let mut bob = secure(Client::with_session(&hearth.url, session), &dir("bob")).await;
    alice.send_text(&room, "after bob's restart").await.unwrap();
    let got = bob.sync().await.unwrap();
    assert_eq!(texts(&got), vec!["after bob's restart".to_owned()]);
    let fetched = bob_phone.fetch_file(&attachment).await.unwrap();
    assert_eq!(fetched, file.as_bytes());
    // A wrong key does not open the blob.
    let mut wrong_key = attachment.clone();
    wrong_key.key[0] ^= 1;
    assert!(bob_phone.fetch_file(&wrong_key).await.is_err());

    // Nothing the hearth wrote holds the plaintext: not the database, not the blobs.
    let data_dir = hearth.data_dir().to_owned();
    hearth.running.stop().await;
    let leaks = files_containing(&data_dir, MARKER.as_bytes());
    assert!(leaks.is_empty(), "plaintext found in {leaks:?}");
    assert!(data_dir.join("media").is_dir());
    // The marker is in the clients' own state (their sent stores), so the search finds it
    // where it is: the check above is not blind.
    assert!(!files_containing(states.path(), MARKER.as_bytes()).is_empty());
}

#[tokio::test]
async fn removed_devices_and_departed_members_cannot_read_what_is_sent_after() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let dir = |name: &str| states.path().join(name);
    let mut alice = secure(hearth.user("alice").await, &dir("alice")).await;
    let mut alice_old = secure(hearth.device("alice").await, &dir("alice-old")).await;
    let mut bob = secure(hearth.user("bob").await, &dir("bob")).await;
    let mut carol = secure(hearth.user("carol").await, &dir("carol")).await;
    let others: Vec<UserId> = [&mut bob, &mut carol]
        .iter_mut()
        .map(|c| c.client().user_id().unwrap().clone())
        .collect();
    let room = alice
        .create_room(RoomKind::Group, Some("g"), &others)
        .await
        .unwrap()
        .room_id;
    alice.send_text(&room, "everyone").await.unwrap();
    for device in [&mut alice_old, &mut bob, &mut carol] {
        assert_eq!(
            texts(&device.sync().await.unwrap()),
            vec!["everyone".to_owned()]
        );
    }

    // Alice removes her old device: it is logged out and leaves every group.
    let old_device = alice_old.client().session().unwrap().device_id.clone();
    alice.remove_device(&old_device).await.unwrap();
    assert_eq!(alice.mls().members(&room).len(), 3);
    bob.send_text(&room, "after the removal").await.unwrap();
    assert_eq!(
        texts(&carol.sync().await.unwrap()),
        vec!["after the removal".to_owned()]
    );
    // The old device is logged out; even with the room's events handed to it (as a thief of
    // its token or the hearth could), it reads nothing sent after its removal.
    let events = carol
        .client()
        .history(&room, None, 100)
        .await
        .unwrap()
        .events;
    let mut old_saw = Vec::new();
    for event in &events {
        if let Ok(r) = alice_old.mls_mut().receive(event) {
            old_saw.push(r);
        }
    }
    assert!(
        old_saw
            .iter()
            .any(|r| matches!(r, Received::Removed { .. })),
        "{old_saw:?}"
    );
    assert_eq!(texts(&old_saw), Vec::<String>::new());

    // Carol leaves; the next message first removes her devices, and she cannot read it.
    carol.client().leave(&room).await.unwrap();
    bob.sync().await.unwrap();
    bob.send_text(&room, "carol is gone").await.unwrap();
    assert_eq!(bob.mls().members(&room).len(), 2);
    assert_eq!(
        texts(&alice.sync().await.unwrap()),
        vec!["after the removal".to_owned(), "carol is gone".to_owned()]
    );
    let events = bob.client().history(&room, None, 100).await.unwrap().events;
    let mut carol_saw = Vec::new();
    for event in &events {
        if let Ok(r) = carol.mls_mut().receive(event) {
            carol_saw.push(r);
        }
    }
    assert!(
        carol_saw
            .iter()
            .any(|r| matches!(r, Received::Removed { .. }))
    );
    assert_eq!(texts(&carol_saw), Vec::<String>::new());
    assert!(alice.check_membership(&room).await.unwrap().matches());
}

/// The hearth's member list is what a room's group converges to: a user a member invited without
/// a commit of their own (a plain client, or a client that crashed before committing) is added
/// by the next member device that sends, and reads from then on.
#[tokio::test]
async fn a_user_invited_without_a_commit_is_added_by_the_next_member_to_send() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let dir = |name: &str| states.path().join(name);
    let mut alice = secure(hearth.user("alice").await, &dir("alice")).await;
    let mut bob = secure(hearth.user("bob").await, &dir("bob")).await;
    let mut mallory = secure(hearth.user("mallory").await, &dir("mallory")).await;
    let bob_id = bob.client().user_id().unwrap().clone();
    let mallory_id = mallory.client().user_id().unwrap().clone();
    let room = alice
        .create_room(RoomKind::Group, Some("g"), std::slice::from_ref(&bob_id))
        .await
        .unwrap()
        .room_id;
    // Routing without a commit: until a member device acts, the group lacks mallory.
    bob.client().invite(&room, &mallory_id).await.unwrap();
    let check = alice.check_membership(&room).await.unwrap();
    assert_eq!(check.not_in_group, vec![mallory_id.clone()]);
    alice
        .send_text(&room, "for everyone in the room")
        .await
        .unwrap();
    assert_eq!(
        texts(&bob.sync().await.unwrap()),
        vec!["for everyone in the room".to_owned()]
    );
    let got = mallory.sync().await.unwrap();
    assert!(joined(&got, &room), "{got:?}");
    assert_eq!(texts(&got), vec!["for everyone in the room".to_owned()]);
    assert!(alice.check_membership(&room).await.unwrap().matches());
}

#[tokio::test]
async fn a_new_device_joins_its_users_rooms_and_reads_new_messages() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let dir = |name: &str| states.path().join(name);
    let mut alice = secure(hearth.user("alice").await, &dir("alice")).await;
    let mut bob = secure(hearth.user("bob").await, &dir("bob")).await;
    let bob_id = bob.client().user_id().unwrap().clone();
    let dm = encrypted_dm(&mut alice, &bob_id).await;
    alice.send_text(&dm, "before the new phone").await.unwrap();
    bob.sync().await.unwrap();

    // Alice logs in on a phone; her laptop adds it to her rooms.
    let mut phone = secure(hearth.device("alice").await, &dir("alice-phone")).await;
    alice.sync_own_devices().await.unwrap();
    assert_eq!(alice.mls().members(&dm).len(), 3);
    bob.send_text(&dm, "hello alice's phone").await.unwrap();
    let got = phone.sync().await.unwrap();
    assert!(joined(&got, &dm), "{got:?}");
    // What was sent before it joined stays unreadable to it; what comes after is read.
    assert_eq!(texts(&got), vec!["hello alice's phone".to_owned()]);
    assert_eq!(
        phone.mls().epoch_authenticator(&dm),
        bob.mls().epoch_authenticator(&dm)
    );
    // The phone's own messages reach both other devices.
    phone.send_text(&dm, "sent from the phone").await.unwrap();
    assert_eq!(
        texts(&bob.sync().await.unwrap()),
        vec!["sent from the phone".to_owned()]
    );
    let laptop = alice.sync().await.unwrap();
    assert!(texts(&laptop).contains(&"sent from the phone".to_owned()));
    // Each device shows a safety fingerprint; bob sees the phone's in the group.
    let fingerprint = phone.mls().fingerprint();
    assert_eq!(fingerprint.len(), 16 * 4 + 15);
    assert!(
        bob.mls()
            .member_fingerprints(&dm)
            .iter()
            .any(|(_, _, f)| *f == fingerprint)
    );
}

#[tokio::test]
async fn a_thousand_commit_races_never_fork_the_group() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let dir = |name: &str| states.path().join(name);
    let (mut devices, room) =
        hearth_tests::synced_group(&hearth, states.path(), &["alice", "bob", "carol"], "race")
            .await;
    let start_epoch = devices[0].mls().epoch(&room).unwrap();
    const RACES: u64 = 1000;
    for race in 0..RACES {
        // Every device makes a commit for the epoch it is in, and all send at once.
        let mut prepared = Vec::new();
        for device in devices.iter_mut() {
            prepared.push(device.mls_mut().prepare_update(&room).unwrap());
        }
        let won = race_commits(&mut devices, &room, prepared).await;
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "race {race}: {won:?}"
        );
        for device in devices.iter_mut() {
            device.catch_up(&room).await.unwrap();
        }
        let auths: Vec<_> = devices
            .iter()
            .map(|d| (d.mls().epoch(&room), d.mls().epoch_authenticator(&room)))
            .collect();
        assert!(auths.iter().all(|a| *a == auths[0]), "race {race}: fork");
    }
    let end_epoch = devices[0].mls().epoch(&room).unwrap();
    assert_eq!(end_epoch - start_epoch, RACES);

    // The room holds exactly one commit per epoch, in order: no loser's commit got in.
    let summary = devices[0].client().room(&room).await.unwrap();
    assert_eq!(summary.epoch, end_epoch);
    let mut commits = Vec::new();
    let mut before = None;
    loop {
        let page = devices[0]
            .client()
            .history(&room, before, 500)
            .await
            .unwrap();
        for event in page.events.iter().rev() {
            if let Content::Commit { epoch, .. } = event.content {
                commits.push(epoch);
            }
        }
        match page.prev_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    commits.reverse();
    assert_eq!(commits, (0..end_epoch).collect::<Vec<_>>());

    // Racing adds: each device adds a different new device of its own user. Only the winner's
    // Welcome reaches anyone; the losers' new devices join no group.
    let mut newcomers = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let client = hearth.device(name).await;
        newcomers.push(secure(client, &dir(&format!("{name}-new"))).await);
    }
    let mut prepared = Vec::new();
    for (device, newcomer) in devices.iter_mut().zip(newcomers.iter_mut()) {
        let session = newcomer.client().session().unwrap().clone();
        let claimed = device
            .client()
            .claim_key_packages(&session.user_id, Some(vec![session.device_id.clone()]))
            .await
            .unwrap();
        let bytes = claimed.key_packages[0].key_package.clone();
        let packages = device
            .mls()
            .check_key_packages(&[(session.user_id, session.device_id, bytes)])
            .unwrap();
        prepared.push(device.mls_mut().prepare_add(&room, &packages).unwrap());
    }
    let won = race_commits(&mut devices, &room, prepared).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1);
    for (newcomer, won) in newcomers.iter_mut().zip(won) {
        let got = newcomer.sync().await.unwrap();
        assert_eq!(joined(&got, &room), won, "{got:?}");
    }
}

/// Sends three devices' commits at once; which of them the home took.
async fn race_commits(
    devices: &mut [SecureClient],
    room: &RoomId,
    prepared: Vec<hearth_client::e2ee::PreparedCommit>,
) -> [bool; 3] {
    let [a, b, c] = devices else {
        panic!("three devices")
    };
    let [pa, pb, pc]: [_; 3] = prepared.try_into().unwrap();
    let (ra, rb, rc) = tokio::join!(
        a.try_commit(room, pa),
        b.try_commit(room, pb),
        c.try_commit(room, pc)
    );
    [ra.unwrap(), rb.unwrap(), rc.unwrap()]
}

#[tokio::test]
async fn key_packages_are_handed_out_once_even_under_concurrent_claims() {
    let hearth = TestHearth::start_with(|c| {
        c.limits.key_claims.per_second = 1000.0;
        c.limits.key_claims.burst = 1000.0;
    })
    .await;
    let states = tempfile::tempdir().unwrap();
    let mut bob = secure(hearth.user("bob").await, &states.path().join("bob")).await;
    let bob_id = bob.client().user_id().unwrap().clone();
    let available = bob.client().key_package_count().await.unwrap();
    assert_eq!(available.available, 50);
    assert!(available.last_resort);

    let mut claimers = Vec::new();
    for i in 0..10 {
        claimers.push(hearth.user(&format!("claimer{i}")).await);
    }
    let claims: Vec<_> = claimers
        .into_iter()
        .map(|mut c| {
            let bob_id = bob_id.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..7 {
                    let answer = c.claim_key_packages(&bob_id, None).await.unwrap();
                    got.extend(answer.key_packages);
                }
                got
            })
        })
        .collect();
    let mut one_time = Vec::new();
    let mut last_resort = 0;
    for claim in claims {
        for package in claim.await.unwrap() {
            if package.last_resort {
                last_resort += 1;
            } else {
                one_time.push(package.key_package);
            }
        }
    }
    // 70 claims: the 50 one-time packages, each once, then the last-resort one.
    assert_eq!(one_time.len(), 50);
    let distinct: std::collections::HashSet<_> = one_time.iter().collect();
    assert_eq!(distinct.len(), 50, "a key package was handed out twice");
    assert_eq!(last_resort, 20);
    // The device tops up when it runs low.
    bob.top_up().await.unwrap();
    assert_eq!(
        bob.client().key_package_count().await.unwrap().available,
        50
    );
}

#[tokio::test]
async fn bad_mls_input_gets_typed_errors_and_changes_nothing() {
    let hearth = TestHearth::start_with(|c| {
        c.limits.key_claims.per_second = 0.001;
        c.limits.key_claims.burst = 3.0;
        c.limits.max_media_bytes = 1024;
        c.limits.max_key_packages = 10;
    })
    .await;
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;
    let mut mallory = hearth.user("mallory").await;
    let bob_id = bob.user_id().unwrap().clone();
    let room = alice
        .create_room(RoomKind::Direct, None, std::slice::from_ref(&bob_id))
        .await
        .unwrap()
        .room_id;
    let commit = |epoch: u64| CommitRequest {
        txn_id: hearth_client::new_txn_id(),
        epoch,
        commit: vec![1; 32],
        welcome: Some(vec![2; 32]),
    };
    alice.commit(&room, &commit(0)).await.unwrap();
    // Stale and future epochs: 409 stale_epoch, nothing stored.
    for epoch in [0, 7] {
        let err = bob.commit(&room, &commit(epoch)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::StaleEpoch));
        assert!(matches!(
            err,
            hearth_client::ClientError::Api { status: 409, .. }
        ));
    }
    // A non-member's commit is forbidden; an oversized one is too large; an empty one invalid.
    let err = mallory.commit(&room, &commit(1)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let mut huge = commit(1);
    huge.commit = vec![0; 600 * 1024];
    let err = bob.commit(&room, &huge).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
    let mut empty = commit(1);
    empty.commit.clear();
    assert_eq!(
        bob.commit(&room, &empty).await.unwrap_err().code(),
        Some(ErrorCode::InvalidParam)
    );
    assert_eq!(alice.room(&room).await.unwrap().epoch, 1);

    // Key packages: too big, too many held, malformed base64.
    let too_big = UploadKeyPackages {
        key_packages: vec![vec![0; 17 * 1024]],
        last_resort: None,
    };
    assert_eq!(
        bob.upload_key_packages(&too_big).await.unwrap_err().code(),
        Some(ErrorCode::InvalidParam)
    );
    let many = UploadKeyPackages {
        key_packages: vec![vec![1; 100]; 11],
        last_resort: None,
    };
    assert_eq!(
        bob.upload_key_packages(&many).await.unwrap_err().code(),
        Some(ErrorCode::LimitExceeded)
    );
    assert_eq!(bob.key_package_count().await.unwrap().available, 0);
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/keys/upload", hearth.url))
        .bearer_auth(&bob.session().unwrap().access_token)
        .header("content-type", "application/json")
        .body(r#"{"key_packages":["***"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    // Claims for users of a hearth nobody knows, or who do not exist, are refused; another
    // hearth's device list is not served here; claims are limited.
    let err = alice
        .claim_key_packages(&UserId::parse("@bob:elsewhere.example").unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let err = alice
        .key_devices(&UserId::parse("@bob:elsewhere.example").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidParam));
    let err = alice
        .claim_key_packages(&UserId::parse("@nobody:localhost").unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let mut limited = None;
    for _ in 0..5 {
        if let Err(e) = alice.claim_key_packages(&bob_id, None).await {
            limited = e.code();
            break;
        }
    }
    assert_eq!(limited, Some(ErrorCode::RateLimited));

    // Blobs: over the limit (declared or streamed), bad ids, unknown ids, no token.
    let err = alice.upload_media(vec![0; 2048]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![7u8; 512])).collect();
    let streamed = reqwest::Client::new()
        .post(format!("{}/v1/media", hearth.url))
        .bearer_auth(&alice.session().unwrap().access_token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);
    let media = hearth.data_dir().join("media");
    let stored: Vec<_> = std::fs::read_dir(&media)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .collect();
    assert!(stored.is_empty(), "a refused blob was kept: {stored:?}");
    assert!(
        std::fs::read_dir(media.join("partial"))
            .unwrap()
            .next()
            .is_none()
    );
    let ok = alice.upload_media(b"opaque".to_vec()).await.unwrap();
    assert_eq!(ok.size, 6);
    assert_eq!(
        bob.download_media(&ok.media_id, None).await.unwrap(),
        b"opaque"
    );
    for (id, code) in [
        ("nothex", ErrorCode::InvalidParam),
        (&"0".repeat(64)[..], ErrorCode::NotFound),
    ] {
        assert_eq!(
            bob.download_media(id, None).await.unwrap_err().code(),
            Some(code)
        );
    }
    let anonymous = reqwest::get(format!("{}/v1/media/{}", hearth.url, ok.media_id))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// a.test and b.test as real processes, alice on a.test and bob on b.test, and the encrypted
/// direct chat alice opened with bob (homed on a.test; bob has not synced it yet).
struct TwoHearths {
    _dirs: [tempfile::TempDir; 2],
    network: Vec<hearth_tests::PeerSpec>,
    hearths: Vec<hearth_tests::HearthProcess>,
    alice: SecureClient,
    bob: SecureClient,
    room: RoomId,
}

impl TwoHearths {
    async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let network = hearth_tests::plan_network(root.path(), &["a.test", "b.test"]).unwrap();
        let hearths = hearth_tests::start_network(&network, &[]).await.unwrap();
        let states = tempfile::tempdir().unwrap();
        let alice_client = hearth_tests::register_at(&hearths[0].url, "alice").await;
        let mut alice = secure(alice_client, &states.path().join("alice")).await;
        let bob_client = hearth_tests::register_at(&hearths[1].url, "bob").await;
        let bob = secure(bob_client, &states.path().join("bob")).await;
        let bob_id = hearth_tests::user_id("bob", "b.test");
        let room = encrypted_dm(&mut alice, &bob_id).await;
        Self {
            _dirs: [root, states],
            network,
            hearths,
            alice,
            bob,
            room,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_chat_across_two_hearths() {
    // alice's hearth claimed bob's key package from b.test over federation: one of his 50.
    let TwoHearths {
        _dirs,
        network,
        mut hearths,
        mut alice,
        mut bob,
        room,
    } = TwoHearths::start().await;
    assert_eq!(alice.mls().members(&room).len(), 2);
    assert_eq!(
        bob.client().key_package_count().await.unwrap().available,
        49
    );
    alice.send_text(&room, "hello from a.test").await.unwrap();
    let got = sync_until(&mut bob, |r| texts(r).len() == 1).await;
    assert!(joined(&got, &room));
    assert_eq!(texts(&got), vec!["hello from a.test".to_owned()]);

    // bob's commit goes to the room's home on a.test; he learns it won when it comes back.
    bob.update_keys(&room).await.unwrap();
    bob.send_text(&room, "hello from b.test").await.unwrap();
    let got = sync_until(&mut alice, |r| !texts(r).is_empty()).await;
    assert_eq!(texts(&got), vec!["hello from b.test".to_owned()]);
    assert_eq!(alice.mls().epoch(&room), bob.mls().epoch(&room));
    assert_eq!(
        alice.mls().epoch_authenticator(&room),
        bob.mls().epoch_authenticator(&room)
    );

    // An attachment uploaded to a.test is fetched by bob through b.test, which takes it from
    // a.test in parts (the file spans three), checks its hash and keeps it.
    let file: Vec<u8> = (0..1_200_000u32).map(|i| (i % 253) as u8).collect();
    alice
        .send_file(&room, "scan.bin", &file, "the scan")
        .await
        .unwrap();
    let got = sync_until(&mut bob, |r| attachments(r).len() == 1).await;
    let attachment = attachments(&got).remove(0);
    assert_eq!(attachment.server.as_str(), "a.test");
    assert_eq!(bob.fetch_file(&attachment).await.unwrap(), file);
    let kept = network[1].data_dir.join("media").join(&attachment.media_id);
    assert!(kept.exists(), "b.test did not keep the blob it fetched");
    // Kept: with a.test gone, b.test still serves it.
    hearths[0].kill9();
    assert_eq!(bob.fetch_file(&attachment).await.unwrap(), file);
    hearths[0].start_again().await.unwrap();

    // A claim for a user b.test does not have is refused by b.test.
    let err = alice
        .client()
        .claim_key_packages(&hearth_tests::user_id("nobody", "b.test"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
}

#[tokio::test]
async fn messages_read_while_catching_up_for_a_commit_are_still_reported() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let mut alice = secure(hearth.user("alice").await, &states.path().join("a")).await;
    let mut bob = secure(hearth.user("bob").await, &states.path().join("b")).await;
    let bob_id = bob.client().user_id().unwrap().clone();
    let dm = encrypted_dm(&mut alice, &bob_id).await;
    bob.sync().await.unwrap();
    alice.sync().await.unwrap();
    bob.send_text(&dm, "read during the catch-up")
        .await
        .unwrap();
    // alice's commit first catches up on the room, which decrypts bob's message (once: its key
    // is gone after); the next sync still hands it over.
    alice.update_keys(&dm).await.unwrap();
    assert_eq!(
        texts(&alice.sync().await.unwrap()),
        vec!["read during the catch-up".to_owned()]
    );
}

/// bob (b.test) sends to a room homed on a.test while a.test is down; before his message gets
/// there, alice's commit moves the room to a new epoch, so a.test refuses the message and b.test
/// drops it. Nobody tells bob: his SDK sees the commit arrive without his message before it,
/// knows the message was never ordered, and sends it again in the new epoch. alice reads it
/// once, after the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_by_a_remote_home_for_its_epoch_is_sent_again() {
    let TwoHearths {
        _dirs,
        network: _,
        mut hearths,
        mut alice,
        mut bob,
        room,
    } = TwoHearths::start().await;
    alice.send_text(&room, "hi bob").await.unwrap();
    sync_until(&mut bob, |r| texts(r).len() == 1).await;

    // a.test goes down; bob's message is accepted by b.test and waits in its queue, and b.test
    // stops too, so the message cannot reach a.test before alice's commit does.
    hearths[0].kill9();
    let accepted = bob
        .send_text(&room, "sent while a.test was away")
        .await
        .unwrap();
    assert_eq!(accepted.seq, None, "accepted by b.test, not ordered");
    hearths[1].terminate().unwrap();
    hearths[0].start_again().await.unwrap();
    alice.update_keys(&room).await.unwrap();
    let commit_seq = alice.client().room(&room).await.unwrap().last_seq;
    hearths[1].start_again().await.unwrap();

    // bob's SDK resends on its next syncs; alice reads the message once, ordered after her
    // commit, in the new epoch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut alice_got = Vec::new();
    let mut bob_got = Vec::new();
    loop {
        bob_got.extend(bob.sync().await.unwrap());
        alice_got.extend(alice.sync().await.unwrap());
        if !texts(&alice_got).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob's message never arrived: alice {alice_got:?}, bob {bob_got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Then a later message from bob: a duplicate of the first, sent before it, would be read
    // before it.
    bob.send_text(&room, "later").await.unwrap();
    while !texts(&alice_got).contains(&"later".to_owned()) {
        bob_got.extend(bob.sync().await.unwrap());
        alice_got.extend(alice.sync().await.unwrap());
        assert!(
            std::time::Instant::now() < deadline,
            "bob's later message never arrived: alice {alice_got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        texts(&alice_got),
        vec!["sent while a.test was away".to_owned(), "later".to_owned()]
    );
    assert!(
        !alice_got
            .iter()
            .any(|r| matches!(r, Received::Replayed { .. })),
        "a copy of a message came twice: {alice_got:?}"
    );
    let seq = alice_got
        .iter()
        .find_map(|r| match r {
            Received::Message {
                seq, own: false, ..
            } => Some(*seq),
            _ => None,
        })
        .unwrap();
    assert!(
        seq > commit_seq,
        "ordered at {seq}, before the commit at {commit_seq}"
    );
    assert!(
        bob_got
            .iter()
            .any(|r| matches!(r, Received::Message { own: true, body, .. } if body.text == "sent while a.test was away")),
        "bob's own message never came back to him: {bob_got:?}"
    );
    assert_eq!(bob.waiting_to_resend(), 0);
    assert!(
        !alice_got
            .iter()
            .any(|r| matches!(r, Received::Unreadable { .. })),
        "{alice_got:?}"
    );
    assert_eq!(alice.mls().epoch(&room), bob.mls().epoch(&room));
}

/// The device state's rewrite (when its journal outgrows the snapshot) is made once a sent
/// message has left, not in the save before it: after every `send_text` the journal is back
/// within its limit, the rewrite happened along the way, and bob reads every message.
#[tokio::test]
async fn a_send_rewrites_a_grown_device_state_after_the_message_has_left() {
    use hearth_client::e2ee::JOURNAL_SLACK;
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let alice_dir = states.path().join("a");
    let mut alice = secure(hearth.user("alice").await, &alice_dir).await;
    let mut bob = secure(hearth.user("bob").await, &states.path().join("b")).await;
    let bob_id = bob.client().user_id().unwrap().clone();
    let dm = encrypted_dm(&mut alice, &bob_id).await;
    let size = |file: &str| std::fs::metadata(alice_dir.join(file)).unwrap().len() as usize;
    let first_snapshot = std::fs::read(alice_dir.join("mls-state.bin")).unwrap();
    let mut sent = Vec::new();
    let mut rewritten = false;
    for i in 0..200 {
        let text = format!("message {i}");
        alice.send_text(&dm, &text).await.unwrap();
        sent.push(text);
        let (snapshot, journal) = (size("mls-state.bin"), size("mls-journal.bin"));
        assert!(
            journal <= snapshot + JOURNAL_SLACK,
            "after send {i}: a journal of {journal} B over a snapshot of {snapshot} B"
        );
        rewritten |= std::fs::read(alice_dir.join("mls-state.bin")).unwrap() != first_snapshot;
        if rewritten && i >= 50 {
            break;
        }
    }
    assert!(rewritten, "the state was never written whole");
    assert_eq!(texts(&bob.sync().await.unwrap()), sent);
}
