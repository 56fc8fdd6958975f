//! Retention, purges and erasure on a real hearth (spec/admin.md "Retention and erasure"):
//! purged messages keep their places, so sequence numbers stay gapless, inbox cursors and
//! history pages stay what they were, a retried transaction still finds its event, and an
//! end-to-end device that was away through the purge catches up past it (commits are kept) and
//! reads what comes next. Erasing an account takes it out of its rooms, purges its messages and
//! deletes what is stored about it, and leaves everyone else's history as it was.

use hearth_client::Client;
use hearth_client::e2ee::Received;
use hearth_spec::api::HistoryPage;
use hearth_spec::{Content, EventView, RoomId, RoomKind, TxnId};
use hearth_tests::{TestHearth, grant_admin, now_ms, secure, synced_group, texts};
use serde_json::{Value, json};

/// One admin HTTP call; status and JSON body.
async fn admin_call(
    hearth: &TestHearth,
    admin: &Client,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", hearth.url))
        .bearer_auth(&admin.session().unwrap().access_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The audit log, as the admin API lists it.
async fn audit_log(hearth: &TestHearth, admin: &Client) -> Value {
    let (status, audit) = admin_call(
        hearth,
        admin,
        reqwest::Method::GET,
        "/v1/admin/audit",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    audit
}

fn encode(room: &RoomId) -> String {
    room.as_str().replace('!', "%21").replace(':', "%3A")
}

/// Every event of a room as `client` pages it, oldest first.
async fn whole_history(client: &mut Client, room: &RoomId) -> Vec<EventView> {
    let mut events = Vec::new();
    let mut before = None;
    loop {
        let HistoryPage {
            events: page,
            prev_before,
        } = client.history(room, before, 7).await.unwrap();
        events.splice(0..0, page);
        match prev_before {
            Some(b) => before = Some(b),
            None => return events,
        }
    }
}

fn kind(event: &EventView) -> &'static str {
    match event.content {
        Content::Message { .. } => "message",
        Content::Purged {} => "purged",
        Content::Member { .. } => "member",
        Content::Commit { .. } => "commit",
        Content::Create { .. } => "create",
        Content::Admin { .. } => "admin",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_keeps_every_place_and_a_device_that_was_away_reads_on_past_it() {
    let hearth = TestHearth::start().await;
    let root = tempfile::tempdir().unwrap();
    let (mut devices, room) = synced_group(&hearth, root.path(), &["alice", "bob"], "team").await;
    let mut carol = secure(hearth.user("carol").await, &root.path().join("carol")).await;
    let carol_id = carol.client().user_id().unwrap().clone();
    let [alice, bob] = &mut devices[..] else {
        unreachable!()
    };
    alice.invite(&room, &carol_id).await.unwrap();
    carol.sync().await.unwrap();
    // Carol goes away. Alice writes, adds dave (a commit: a new epoch), and writes again.
    for n in 0..5 {
        alice.send_text(&room, &format!("old {n}")).await.unwrap();
    }
    drop(secure(hearth.user("dave").await, &root.path().join("dave")).await);
    alice
        .invite(&room, &hearth_tests::user_id("dave", "localhost"))
        .await
        .unwrap();
    alice.send_text(&room, "old 5").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()).len(), 6);

    let mut reader = Client::with_session(&hearth.url, bob.client().session().unwrap().clone());
    let before = whole_history(&mut reader, &room).await;
    let inbox_before = reader.sync(Some(0), 500).await.unwrap();
    let last_seq = before.last().unwrap().seq;
    let messages_before = before.iter().filter(|e| kind(e) == "message").count();
    assert_eq!(messages_before, 6);

    // The admin purges everything sent so far.
    let mut admin = hearth.user("admin").await;
    grant_admin(hearth.data_dir(), "admin").await;
    let cutoff = now_ms() + 1;
    while now_ms() <= cutoff {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let purge = format!("/v1/admin/rooms/{}/purge", encode(&room));
    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        &purge,
        json!({ "before_ts": cutoff }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "history_purged");
    assert_eq!(answer["purged"], messages_before);
    assert_eq!(answer["floor"], last_seq + 1);

    // Every place is still there, with its id, sender and time; only messages lost their payload.
    let after = whole_history(&mut reader, &room).await;
    assert_eq!(after.len(), before.len());
    for (was, is) in before.iter().zip(&after) {
        assert_eq!(
            (was.seq, &was.event_id, &was.sender, was.origin_ts),
            (is.seq, &is.event_id, &is.sender, is.origin_ts)
        );
        let expected = if kind(was) == "message" {
            "purged"
        } else {
            kind(was)
        };
        assert_eq!(kind(is), expected, "#{}", is.seq);
        if expected != "purged" {
            assert_eq!(was.content, is.content);
        }
    }
    assert_eq!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=last_seq).collect::<Vec<_>>()
    );
    // The inbox keeps its cursors and places.
    let inbox_after = reader.sync(Some(0), 500).await.unwrap();
    let places = |page: &hearth_spec::api::SyncPage| -> Vec<(u64, u64)> {
        page.items.iter().map(|i| (i.cursor, i.event.seq)).collect()
    };
    assert_eq!(places(&inbox_before), places(&inbox_after));
    assert_eq!(inbox_before.next_cursor, inbox_after.next_cursor);

    // A retried transaction still gets its event's place.
    let txn = TxnId::parse("again-1").unwrap();
    let first = reader.send(&room, &txn, b"not mls").await.unwrap();
    assert_eq!(first.seq, Some(last_seq + 1));
    let (status, _) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        &purge,
        json!({ "before_ts": now_ms() + 1 }),
    )
    .await;
    assert_eq!(status, 200);
    let retried = reader.send(&room, &txn, b"not mls").await.unwrap();
    assert_eq!((retried.event_id, retried.seq), (first.event_id, first.seq));

    // Carol comes back: the purged messages are places with nothing to read, the commit moves
    // her group on, and she reads what alice writes next.
    alice.send_text(&room, "after the purge").await.unwrap();
    let received = carol.sync().await.unwrap();
    let purged = received
        .iter()
        .filter(|r| matches!(r, Received::Purged { .. }))
        .count();
    assert_eq!(purged, 7, "{received:?}");
    assert!(
        !received
            .iter()
            .any(|r| matches!(r, Received::Unreadable { .. })),
        "{received:?}"
    );
    assert!(
        received
            .iter()
            .any(|r| matches!(r, Received::Committed { .. })),
        "{received:?}"
    );
    assert_eq!(texts(&received), vec!["after the purge".to_owned()]);

    // Purging again changes nothing; it all survives a restart.
    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        &purge,
        json!({ "before_ts": cutoff }),
    )
    .await;
    assert_eq!((status, answer["purged"].as_u64()), (200, Some(0)));
    let session = reader.session().unwrap().clone();
    let hearth = hearth.restart().await;
    let mut reader = Client::with_session(&hearth.url, session);
    let restarted = whole_history(&mut reader, &room).await;
    assert_eq!(restarted.len() as u64, last_seq + 2);
    assert_eq!(&restarted[..after.len()], &after[..]);
    admin = Client::with_session(&hearth.url, admin.session().unwrap().clone());

    // A retention period purges what is older than it: nothing here is a day old.
    let retention = format!("/v1/admin/rooms/{}/retention", encode(&room));
    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::PUT,
        &retention,
        json!({ "days": 1 }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["days"].as_u64(), answer["purged"].as_u64()),
        (Some(1), Some(0))
    );
    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::PUT,
        &retention,
        json!({ "days": 0 }),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_param"))
    );
    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::PUT,
        &retention,
        json!({ "days": null }),
    )
    .await;
    assert_eq!((status, answer["days"].clone()), (200, Value::Null));
    let missing = RoomId::parse("!nothere:localhost").unwrap();
    let (status, _) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        &format!("/v1/admin/rooms/{}/purge", encode(&missing)),
        json!({ "before_ts": 1 }),
    )
    .await;
    assert_eq!(status, 404);

    // Each change is in the audit log.
    let audit = audit_log(&hearth, &admin).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| *a != "grant_admin")
        .collect();
    assert_eq!(
        actions,
        [
            "purge_history",
            "purge_history",
            "purge_history",
            "set_retention",
            "set_retention"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_an_account_takes_it_out_and_keeps_everyone_elses_history() {
    let hearth = TestHearth::start().await;
    let mut admin = hearth.user("admin").await;
    grant_admin(hearth.data_dir(), "admin").await;
    let mut bob = hearth.user("bob").await;
    let mut carol = hearth.user("carol").await;
    let bob_id = bob.user_id().unwrap().clone();
    let carol_id = carol.user_id().unwrap().clone();
    let room = carol
        .create_room(RoomKind::Group, Some("team"), std::slice::from_ref(&bob_id))
        .await
        .unwrap()
        .room_id;
    let direct = bob
        .create_room(RoomKind::Direct, None, std::slice::from_ref(&carol_id))
        .await
        .unwrap()
        .room_id;
    for n in 0..4 {
        let txn = TxnId::parse(&format!("b{n}")).unwrap();
        bob.send(&room, &txn, format!("bob {n}").as_bytes())
            .await
            .unwrap();
        let txn = TxnId::parse(&format!("c{n}")).unwrap();
        carol
            .send(&room, &txn, format!("carol {n}").as_bytes())
            .await
            .unwrap();
    }
    bob.send(&direct, &TxnId::parse("d").unwrap(), b"just us")
        .await
        .unwrap();
    let blob = bob.upload_media(vec![9; 5000]).await.unwrap();
    let before = whole_history(&mut carol, &room).await;

    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        "/v1/admin/users/bob/erase",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "erased");
    assert_eq!(answer["rooms_left"], 2);
    assert_eq!(answer["messages_purged"], 5);
    assert_eq!(answer["media_deleted"], 1);

    // Bob is gone: his session ends, he cannot log in, and his name is not given out again.
    assert!(bob.rooms().await.is_err());
    assert!(
        Client::new(&hearth.url)
            .login("bob", "correct horse battery", None)
            .await
            .is_err()
    );
    let again = Client::new(&hearth.url)
        .register("bob", "another password!", None)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(hearth_spec::ErrorCode::UserExists));
    assert!(carol.download_media(&blob.media_id, None).await.is_err());

    // Carol's history: every place as it was, bob's messages purged, hers intact, then bob's
    // leave; bob is no longer a member of either room.
    let after = whole_history(&mut carol, &room).await;
    assert_eq!(after.len(), before.len() + 1);
    for (was, is) in before.iter().zip(&after) {
        assert_eq!((was.seq, &was.event_id), (is.seq, &is.event_id));
        if was.sender == bob_id && kind(was) == "message" {
            assert_eq!(kind(is), "purged");
        } else {
            assert_eq!(was.content, is.content);
        }
    }
    let leave = after.last().unwrap();
    assert_eq!(leave.sender, bob_id);
    assert!(matches!(
        &leave.content,
        Content::Member { target, membership: hearth_spec::Membership::Leave } if *target == bob_id
    ));
    assert_eq!(
        carol.room(&room).await.unwrap().members,
        vec![carol_id.clone()]
    );
    let direct_history = whole_history(&mut carol, &direct).await;
    assert!(
        direct_history
            .iter()
            .all(|e| !(e.sender == bob_id && kind(e) == "message"))
    );

    // The admin sees a deactivated account with no devices and no uploads.
    let (_, shown) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::GET,
        "/v1/admin/users/bob",
        Value::Null,
    )
    .await;
    assert_eq!(shown["user"]["deactivated"], true);
    assert_eq!(shown["devices"], json!([]));
    let (_, media) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::GET,
        "/v1/admin/users/bob/media",
        Value::Null,
    )
    .await;
    assert_eq!(
        (media["media"].clone(), media["used_bytes"].clone()),
        (json!([]), json!(0))
    );

    // Carol's own sends and the room go on.
    let next = carol
        .send(&room, &TxnId::parse("c-after").unwrap(), b"still here")
        .await
        .unwrap();
    assert_eq!(next.seq, Some(after.last().unwrap().seq + 1));

    // Erasing someone who is not there is a 404; a non-admin gets 403.
    let (status, _) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        "/v1/admin/users/nobody/erase",
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin_call(
        &hearth,
        &carol,
        reqwest::Method::POST,
        "/v1/admin/users/admin/erase",
        Value::Null,
    )
    .await;
    assert_eq!(status, 403);
    admin = Client::with_session(&hearth.url, admin.session().unwrap().clone());
    let audit = audit_log(&hearth, &admin).await;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["target"].as_str()),
        (Some("erase_user"), Some("bob"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_room_loses_its_members_and_takes_no_more() {
    let hearth = TestHearth::start().await;
    let admin = hearth.user("admin").await;
    grant_admin(hearth.data_dir(), "admin").await;
    let mut bob = hearth.user("bob").await;
    let carol = hearth.user("carol").await;
    let carol_id = carol.user_id().unwrap().clone();
    let room = bob
        .create_room(
            RoomKind::Group,
            Some("noisy"),
            std::slice::from_ref(&carol_id),
        )
        .await
        .unwrap()
        .room_id;
    bob.send(&room, &TxnId::parse("b1").unwrap(), b"spam")
        .await
        .unwrap();
    let last_before = bob.room(&room).await.unwrap().last_seq;

    let shutdown = format!("/v1/admin/rooms/{}/shutdown", encode(&room));
    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        &shutdown,
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "room_shut_down");
    assert_eq!(answer["members_removed"], 2);

    // Both left (two leave events), the room is gone from their lists, and nobody is in it.
    assert!(bob.rooms().await.unwrap().is_empty());
    let send = bob.send(&room, &TxnId::parse("b2").unwrap(), b"more").await;
    assert_eq!(
        send.unwrap_err().code(),
        Some(hearth_spec::ErrorCode::Forbidden)
    );
    let members = format!("/v1/admin/rooms/{}/members", encode(&room));
    let (_, listed) =
        admin_call(&hearth, &admin, reqwest::Method::GET, &members, Value::Null).await;
    assert_eq!(listed["members"], json!([]));
    let (_, rooms) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::GET,
        "/v1/admin/rooms",
        Value::Null,
    )
    .await;
    let entry = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["last_seq"], last_before + 2);

    // Shutting it again removes nobody; an unknown room is 404; it is audited.
    let (status, answer) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        &shutdown,
        Value::Null,
    )
    .await;
    assert_eq!((status, answer["members_removed"].as_u64()), (200, Some(0)));
    let missing = RoomId::parse("!nothere:localhost").unwrap();
    let (status, _) = admin_call(
        &hearth,
        &admin,
        reqwest::Method::POST,
        &format!("/v1/admin/rooms/{}/shutdown", encode(&missing)),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    let audit = audit_log(&hearth, &admin).await;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "shutdown_room");
}
