//! Encrypted rooms never strand a reader: a room's MLS group converges to the devices of its
//! members, whoever notices first. Big groups are made with the hearth's default request and
//! claim limits, a user who logs in again on a new device reads the next message, a device
//! removed while offline is taken out by the next member to send, races between devices fixing
//! the same thing end in one commit, a member whose hearth is down reads everything once it is
//! back, and a 100,000-character message in a 3-byte script goes through.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hearth_client::e2ee::Received;
use hearth_client::{Client, SecureClient};
use hearth_spec::api::Session;
use hearth_spec::{Content, RoomId, RoomKind, UserId};
use hearth_tests::{TestHearth, encrypted_dm, secure, texts};

/// A hearth with the default per-device request and claim limits (registration is opened
/// wide: it is not what these tests measure).
async fn default_limits_hearth() -> TestHearth {
    TestHearth::start_with(|c| {
        let defaults = hearth_node::config::LimitsConfig::default();
        c.limits.requests = defaults.requests;
        c.limits.key_claims = defaults.key_claims;
        c.limits.sends = defaults.sends;
    })
    .await
}

/// Registers `names` (a few at a time) and opens each as an end-to-end device whose state is
/// kept in `root/<name>`, then closes it (its key packages wait on the hearth); their sessions.
async fn register_devices(url: &str, root: &Path, names: &[String]) -> HashMap<String, Session> {
    let mut sessions = HashMap::new();
    for chunk in names.chunks(8) {
        let opened = futures_util::future::join_all(chunk.iter().map(|name| async move {
            let client = hearth_tests::register_at(url, name).await;
            let session = client.session().unwrap().clone();
            drop(secure(client, &root.join(name)).await);
            (name.clone(), session)
        }))
        .await;
        sessions.extend(opened);
    }
    sessions
}

/// The device kept in `root/<name>`, opened again (as after a restart of its process).
async fn secure_again(url: &str, root: &Path, name: &str, session: &Session) -> SecureClient {
    secure(Client::with_session(url, session.clone()), &root.join(name)).await
}

fn uid(name: &str) -> UserId {
    hearth_tests::user_id(name, "localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_100_500_and_1000_members_are_usable_with_default_limits() {
    let hearth = default_limits_hearth().await;
    let root = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("m{i:04}")).collect();
    let sessions = register_devices(&hearth.url, root.path(), &names).await;
    let mut owner = secure(hearth.user("owner").await, &root.path().join("owner")).await;

    for size in [100usize, 500, 1000] {
        let members: Vec<UserId> = names[..size - 1].iter().map(|n| uid(n)).collect();
        let room = owner
            .create_room(RoomKind::Group, Some(&format!("big{size}")), &members)
            .await
            .unwrap()
            .room_id;
        assert!(
            owner.waiting(&room).is_empty(),
            "{:?}",
            owner.waiting(&room)
        );
        assert_eq!(owner.mls().members(&room).len(), size);
        owner
            .send_text(&room, &format!("hello {size}"))
            .await
            .unwrap();
        let last = &names[size - 2];
        let mut reader = secure_again(&hearth.url, root.path(), last, &sessions[last]).await;
        let got = reader.sync().await.unwrap();
        assert_eq!(texts(&got), vec![format!("hello {size}")], "{size}");
        assert_eq!(
            reader.mls().epoch_authenticator(&room),
            owner.mls().epoch_authenticator(&room)
        );
    }
}

/// Environment that gives real `hearth` processes the default request, send and claim limits.
fn default_limits_env() -> Vec<(String, String)> {
    let d = hearth_node::config::LimitsConfig::default();
    [
        ("REQUESTS__PER_SECOND", d.requests.per_second),
        ("REQUESTS__BURST", d.requests.burst),
        ("SENDS__PER_SECOND", d.sends.per_second),
        ("SENDS__BURST", d.sends.burst),
        ("KEY_CLAIMS__PER_SECOND", d.key_claims.per_second),
        ("KEY_CLAIMS__BURST", d.key_claims.burst),
    ]
    .into_iter()
    .map(|(k, v)| (format!("HEARTH_LIMITS__{k}"), v.to_string()))
    .collect()
}

/// Half of a 1,000-member group on another hearth: their devices are found and claimed over
/// federation, and the last member on each hearth reads the first message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_member_group_split_across_two_hearths_is_readable_on_both() {
    let root = tempfile::tempdir().unwrap();
    let network = hearth_tests::plan_network(root.path(), &["a.test", "b.test"]).unwrap();
    let env = default_limits_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hearths = hearth_tests::start_network(&network, &env).await.unwrap();
    let states = tempfile::tempdir().unwrap();
    let near: Vec<String> = (0..499).map(|i| format!("a{i:03}")).collect();
    let far: Vec<String> = (0..500).map(|i| format!("b{i:03}")).collect();
    let near_sessions = register_devices(&hearths[0].url, states.path(), &near).await;
    let far_sessions = register_devices(&hearths[1].url, states.path(), &far).await;
    let owner_client = hearth_tests::register_at(&hearths[0].url, "owner").await;
    let mut owner = secure(owner_client, &states.path().join("owner")).await;

    let members: Vec<UserId> = near
        .iter()
        .map(|n| hearth_tests::user_id(n, "a.test"))
        .chain(far.iter().map(|n| hearth_tests::user_id(n, "b.test")))
        .collect();
    let room = owner
        .create_room(RoomKind::Group, Some("split"), &members)
        .await
        .unwrap()
        .room_id;
    assert!(
        owner.waiting(&room).is_empty(),
        "{:?}",
        owner.waiting(&room)
    );
    assert_eq!(owner.mls().members(&room).len(), 1000);
    owner.send_text(&room, "hello both").await.unwrap();

    let last_near = &near[near.len() - 1];
    let mut reader = secure_again(
        &hearths[0].url,
        states.path(),
        last_near,
        &near_sessions[last_near],
    )
    .await;
    assert_eq!(texts(&reader.sync().await.unwrap()), vec!["hello both"]);
    // b.test learns of the room and its events over federation: wait for them to arrive.
    let last_far = &far[far.len() - 1];
    let mut reader = secure_again(
        &hearths[1].url,
        states.path(),
        last_far,
        &far_sessions[last_far],
    )
    .await;
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while read.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b.test's last member never read the message"
        );
        read.extend(texts(&reader.sync().await.unwrap()));
        if read.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(read, vec!["hello both"]);
    assert_eq!(
        reader.mls().epoch_authenticator(&room),
        owner.mls().epoch_authenticator(&room)
    );
}

/// A client that dies part-way through adding a group's members (here: it made the room and
/// added only some) leaves a room that converges at the next ordinary send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_made_group_is_completed_by_the_next_send() {
    let hearth = default_limits_hearth().await;
    let root = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("h{i:02}")).collect();
    let sessions = register_devices(&hearth.url, root.path(), &names).await;
    let members: Vec<UserId> = names.iter().map(|n| uid(n)).collect();
    let owner_dir = root.path().join("owner");
    let owner_client = hearth.user("owner").await;
    let owner_session = owner_client.session().unwrap().clone();
    let room = {
        let mut owner = secure(owner_client, &owner_dir).await;
        let room = owner
            .client()
            .create_room(RoomKind::Group, Some("half"), &members)
            .await
            .unwrap()
            .room_id;
        owner.mls_mut().create_group(&room).unwrap();
        owner.add_users(&room, &members[..10]).await.unwrap();
        assert_eq!(owner.mls().members(&room).len(), 11);
        room
        // Dropped here, as a killed process would be: only what is on disk remains.
    };
    let mut owner = secure_again(&hearth.url, root.path(), "owner", &owner_session).await;
    owner.send_text(&room, "everyone now").await.unwrap();
    assert_eq!(owner.mls().members(&room).len(), 61);
    let mut last = secure_again(&hearth.url, root.path(), "h59", &sessions["h59"]).await;
    assert_eq!(texts(&last.sync().await.unwrap()), vec!["everyone now"]);
}

#[tokio::test]
async fn a_single_device_user_who_logs_in_again_reads_the_next_message() {
    let hearth = TestHearth::start().await;
    let root = tempfile::tempdir().unwrap();
    let mut alice = secure(hearth.user("alice").await, &root.path().join("alice")).await;
    let mut bob = secure(hearth.user("bob").await, &root.path().join("bob")).await;
    let room = encrypted_dm(&mut alice, &uid("bob")).await;
    alice.send_text(&room, "first").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), vec!["first"]);
    // Bob logs out of his only device and starts over on a new one.
    bob.client().logout().await.unwrap();
    drop(bob);
    let mut new_bob = secure(hearth.device("bob").await, &root.path().join("bob2")).await;
    // Alice only sends, as she always does.
    alice.send_text(&room, "after you came back").await.unwrap();
    let got = new_bob.sync().await.unwrap();
    assert_eq!(texts(&got), vec!["after you came back"]);
    // The old device left the group; the new one is in it.
    let bobs: Vec<_> = alice
        .mls()
        .members(&room)
        .into_iter()
        .filter(|(u, _)| *u == uid("bob"))
        .collect();
    assert_eq!(bobs.len(), 1);
    assert_eq!(&bobs[0].1, new_bob.mls().identity().1);
}

#[tokio::test]
async fn a_device_removed_while_offline_is_removed_by_the_next_member_to_send() {
    let hearth = TestHearth::start().await;
    let root = tempfile::tempdir().unwrap();
    let mut alice = secure(hearth.user("alice").await, &root.path().join("alice")).await;
    let mut laptop = secure(hearth.user("bob").await, &root.path().join("laptop")).await;
    let mut phone = secure(hearth.device("bob").await, &root.path().join("phone")).await;
    let room = alice
        .create_room(RoomKind::Group, Some("g"), &[uid("bob")])
        .await
        .unwrap()
        .room_id;
    assert_eq!(alice.mls().members(&room).len(), 3);
    phone.sync().await.unwrap();
    let phone_id = phone.mls().identity().1.clone();
    // The phone is removed (no commit: its owner used a plain client) while it is offline.
    laptop.client().delete_device(&phone_id).await.unwrap();
    alice
        .send_text(&room, "not for the lost phone")
        .await
        .unwrap();
    assert!(
        !alice
            .mls()
            .members(&room)
            .iter()
            .any(|(_, d)| *d == phone_id)
    );
    assert_eq!(
        texts(&laptop.sync().await.unwrap()),
        vec!["not for the lost phone"]
    );
    // What the phone still holds cannot open it.
    let history = alice.client().history(&room, None, 50).await.unwrap();
    let last = history.events.last().unwrap().clone();
    let got = phone.mls_mut().receive(&last);
    assert!(
        !matches!(got, Ok(Received::Message { .. })),
        "the removed phone read a message: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_noticing_the_same_missing_device_make_one_commit() {
    let hearth = TestHearth::start().await;
    let root = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("r{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut devices, room) =
        hearth_tests::synced_group(&hearth, root.path(), &names, "race").await;
    let before = devices[0].client().room(&room).await.unwrap().last_seq;
    // r05 logs in on a second device; all twenty notice at once.
    let _second = secure(hearth.device("r05").await, &root.path().join("r05-b")).await;
    let results =
        futures_util::future::join_all(devices.iter_mut().map(|d| d.converge(&room))).await;
    for result in results {
        result.unwrap();
    }
    let page = devices[0].client().history(&room, None, 100).await.unwrap();
    let commits = page
        .events
        .iter()
        .filter(|e| e.seq > before && matches!(e.content, Content::Commit { .. }))
        .count();
    assert_eq!(commits, 1);
    let authenticator = devices[0].mls().epoch_authenticator(&room);
    for device in devices.iter_mut() {
        device.sync().await.unwrap();
        assert_eq!(device.mls().epoch_authenticator(&room), authenticator);
        assert_eq!(device.mls().members(&room).len(), 21);
    }
}

#[tokio::test]
async fn a_100000_character_cjk_message_round_trips() {
    let hearth = TestHearth::start_with(|c| {
        let defaults = hearth_node::config::Config::default();
        c.limits.max_event_bytes = defaults.limits.max_event_bytes;
        c.client_api.max_body_bytes = defaults.client_api.max_body_bytes;
        c.client_api.max_ws_message_bytes = defaults.client_api.max_ws_message_bytes;
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let mut alice = secure(hearth.user("alice").await, &root.path().join("alice")).await;
    let mut bob = secure(hearth.user("bob").await, &root.path().join("bob")).await;
    let room = encrypted_dm(&mut alice, &uid("bob")).await;
    let text: String = "漢字かな交じり文".chars().cycle().take(100_000).collect();
    assert_eq!(text.len(), 300_000);
    alice.send_text(&room, &text).await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), vec![text]);
}

/// A member's hearth down while a DM and a group are made: both are made, the sender is told
/// who cannot read yet, members on the hearths that are up read at once, and when the hearth is
/// back the next ordinary send adds its members and sends again what they missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_made_while_a_members_hearth_is_down_reach_them_when_it_returns() {
    let root = tempfile::tempdir().unwrap();
    let network = hearth_tests::plan_network(root.path(), &["a.test", "b.test"]).unwrap();
    let mut hearths = hearth_tests::start_network(&network, &[]).await.unwrap();
    let states = tempfile::tempdir().unwrap();
    let alice_client = hearth_tests::register_at(&hearths[0].url, "alice").await;
    let mut alice = secure(alice_client, &states.path().join("alice")).await;
    let carol_client = hearth_tests::register_at(&hearths[0].url, "carol").await;
    let mut carol = secure(carol_client, &states.path().join("carol")).await;
    let bob_client = hearth_tests::register_at(&hearths[1].url, "bob").await;
    let bob_session = bob_client.session().unwrap().clone();
    drop(secure(bob_client, &states.path().join("bob")).await);
    let bob_id = hearth_tests::user_id("bob", "b.test");
    let carol_id = hearth_tests::user_id("carol", "a.test");

    hearths[1].kill9();
    let dm = encrypted_dm(&mut alice, &bob_id).await;
    let group = alice
        .create_room(
            RoomKind::Group,
            Some("while down"),
            &[bob_id.clone(), carol_id],
        )
        .await
        .unwrap()
        .room_id;
    for room in [&dm, &group] {
        let waiting = alice.waiting(room);
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        assert_eq!(waiting[0].0, bob_id);
        alice
            .send_text(room, "sent while b.test was down")
            .await
            .unwrap();
        assert_eq!(alice.mls().owed_count(room), 1);
    }
    // Carol, whose hearth is up, reads the group at once.
    assert_eq!(
        texts(&carol.sync().await.unwrap()),
        vec!["sent while b.test was down"]
    );

    hearths[1].start_again().await.unwrap();
    // Alice's next ordinary sends find b.test back, add bob, and send him what he missed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut sent_after = 0;
    while alice.mls().owed_count(&dm) + alice.mls().owed_count(&group) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob was never added"
        );
        sent_after += 1;
        for room in [&dm, &group] {
            alice
                .send_text(room, &format!("after {sent_after}"))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut expected: Vec<String> = std::iter::once("sent while b.test was down".to_owned())
        .chain((1..=sent_after).map(|n| format!("after {n}")))
        .collect();
    expected.sort();
    // Carol read every group message once.
    let mut carol_read = texts(&carol.sync().await.unwrap());
    carol_read.push("sent while b.test was down".into());
    carol_read.sort();
    assert_eq!(carol_read, expected);

    // Bob reads everything sent in both chats before and after, each message once.
    let mut bob = secure(
        Client::with_session(&hearths[1].url, bob_session),
        &states.path().join("bob"),
    )
    .await;
    let mut read: HashMap<RoomId, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for got in bob.sync().await.unwrap() {
            if let Received::Message {
                room,
                body,
                own: false,
                ..
            } = got
            {
                read.entry(room).or_default().push(body.text);
            }
        }
        let complete = [&dm, &group]
            .iter()
            .all(|room| read.get(*room).map_or(0, Vec::len) >= expected.len());
        if complete {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob read {read:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for room in [&dm, &group] {
        let mut got = read[room].clone();
        got.sort();
        assert_eq!(got, expected, "{room}");
    }
}

/// Runs `hearth-chat --profile PROFILE ARGS` with `stdin`, failing the test if it fails.
async fn hearth_chat(profile: &Path, args: &[&str], stdin: &str) -> String {
    hearth_tests::hearth_chat(profile, args, stdin, &[]).await
}

/// `hearth-chat group` killed with SIGKILL once the first of its commits (100 devices each) is
/// on the hearth, while it still adds a 600-member group's devices: the next `send` from the
/// same profile completes the group, and its last member reads the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_in_the_middle_of_a_large_add_converges_when_run_again() {
    let data = tempfile::tempdir().unwrap();
    let states = tempfile::tempdir().unwrap();
    let env = default_limits_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hearth = hearth_tests::HearthProcess::start(data.path(), &env)
        .await
        .unwrap();
    let names: Vec<String> = (0..599).map(|i| format!("k{i:03}")).collect();
    let sessions = register_devices(&hearth.url, states.path(), &names).await;
    let profile = states.path().join("owner-profile");
    let server = format!("--server={}", hearth.url);
    hearth_chat(
        &profile,
        &["register", "owner", &server],
        "owner password\n",
    )
    .await;

    let members: Vec<String> = names.iter().map(|n| uid(n).to_string()).collect();
    let mut args = vec!["--profile".to_owned(), profile.display().to_string()];
    args.extend(["group".to_owned(), "big".to_owned()]);
    args.extend(members);
    let mut group = tokio::process::Command::new(hearth_tests::chat_binary())
        .args(&args)
        .env("HEARTH_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Watch as the first member: kill the client as soon as its first commit is on the hearth.
    let mut watcher = Client::with_session(&hearth.url, sessions["k000"].clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (room, commits_before_kill) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never got its first commit"
        );
        let rooms = watcher.rooms().await.unwrap();
        if let Some(room) = rooms.iter().find(|r| r.name.as_deref() == Some("big")) {
            let page = watcher.history(&room.room_id, None, 100).await.unwrap();
            let commits = page
                .events
                .iter()
                .filter(|e| matches!(e.content, Content::Commit { .. }))
                .count();
            if commits > 0 {
                group.start_kill().unwrap();
                group.wait().await.unwrap();
                break (room.room_id.clone(), commits);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let page = watcher.history(&room, None, 100).await.unwrap();
    let commits_at_kill = page
        .events
        .iter()
        .filter(|e| matches!(e.content, Content::Commit { .. }))
        .count();
    // For the record: 6 commits would mean the add had finished before the kill landed.
    eprintln!("killed after {commits_before_kill} commit(s); {commits_at_kill} on the hearth");

    hearth_chat(&profile, &["send", "big", "after", "the", "crash"], "").await;
    let last = &names[names.len() - 1];
    let mut reader = secure_again(&hearth.url, states.path(), last, &sessions[last]).await;
    assert_eq!(
        texts(&reader.sync().await.unwrap()),
        vec!["after the crash"]
    );
    assert_eq!(reader.mls().members(&room).len(), 600);
    let mut first = secure_again(&hearth.url, states.path(), "k000", &sessions["k000"]).await;
    assert_eq!(texts(&first.sync().await.unwrap()), vec!["after the crash"]);
    assert_eq!(
        first.mls().epoch_authenticator(&room),
        reader.mls().epoch_authenticator(&room)
    );
}
