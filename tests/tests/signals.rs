//! Receipts, typing, presence and push notifications with real clients on one hearth: receipts
//! reach the sender's devices in order; typing expires by itself; presence goes offline after
//! the timeout without a logout, comes back on a heartbeat and never reaches users who share no
//! room; a push receiver gets one coalesced notification for a burst to an offline device, none
//! for an online one, and an endpoint that keeps failing is disabled and reported.

use std::time::Duration;

use hearth_client::{Client, Receiver, new_txn_id};
use hearth_spec::api::{PusherKind, PusherRequest};
use hearth_spec::client::{ClientFrame, PresenceState, ReceiptKind, ServerFrame};
use hearth_spec::{ErrorCode, RoomKind};
use hearth_tests::{Pushed, TestHearth, connect_synced, frames_until, next_frame, push_receiver};

const WAIT: Duration = Duration::from_secs(20);

fn is_synced(f: &ServerFrame) -> bool {
    matches!(f, ServerFrame::Synced { .. })
}

/// The frames `rx` (`to`'s connection) got before a message `from` sends in a new 1:1 chat
/// with `to`. Whatever the hearth queued for that connection earlier arrives before it, so a
/// frame that was wrongly sent is among these.
async fn frames_before_a_new_message(
    from: &mut Client,
    to: &Client,
    rx: &mut Receiver,
) -> Vec<ServerFrame> {
    let room = from
        .create_room(RoomKind::Direct, None, &[to.user_id().unwrap().clone()])
        .await
        .unwrap()
        .room_id;
    frames_before_message_in(from, &room, rx).await
}

/// The frames `rx` got before a message `from` sends now in `room`.
async fn frames_before_message_in(
    from: &mut Client,
    room: &hearth_spec::RoomId,
    rx: &mut Receiver,
) -> Vec<ServerFrame> {
    let txn = new_txn_id();
    from.send(room, &txn, b"barrier").await.unwrap();
    let mut frames = frames_until(
        rx,
        WAIT,
        |f| matches!(f, ServerFrame::Event { event, .. } if event.txn_id == txn),
    )
    .await
    .unwrap();
    frames.pop();
    frames
}

async fn pair(hearth: &TestHearth) -> (Client, Client, hearth_spec::RoomId) {
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob.user_id().unwrap().clone()])
        .await
        .unwrap()
        .room_id;
    (alice, bob, room)
}

#[tokio::test]
async fn delivered_and_read_receipts_reach_the_senders_devices_in_order() {
    let hearth = TestHearth::start().await;
    let (mut alice, mut bob, room) = pair(&hearth).await;
    let mut alice_phone = hearth.device("alice").await;
    let mut bob_phone = hearth.device("bob").await;
    let bob_id = bob.user_id().unwrap().clone();

    let (mut alice_tx, mut alice_rx) = alice.connect(None).await.unwrap().split();
    frames_until(&mut alice_rx, WAIT, is_synced).await.unwrap();
    let (_, mut phone_rx) = connect_synced(&mut alice_phone).await;
    let (mut bob_tx, mut bob_rx) = bob.connect(None).await.unwrap().split();
    frames_until(&mut bob_rx, WAIT, is_synced).await.unwrap();
    let (_, mut bob_phone_rx) = bob_phone.connect(None).await.unwrap().split();
    frames_until(&mut bob_phone_rx, WAIT, is_synced)
        .await
        .unwrap();

    let mut seqs = Vec::new();
    for text in ["one", "two", "three"] {
        alice_tx
            .send(&room, &new_txn_id(), text.as_bytes())
            .await
            .unwrap();
        let f = frames_until(&mut alice_rx, WAIT, |f| {
            matches!(f, ServerFrame::Accepted { .. })
        })
        .await
        .unwrap();
        let Some(ServerFrame::Accepted { seq, .. }) = f.last() else {
            unreachable!()
        };
        seqs.push(seq.expect("a room homed here is sequenced at once"));
    }

    // Bob's device acknowledges what it received: alice's devices see "delivered".
    let frames = frames_until(
        &mut bob_rx,
        WAIT,
        |f| matches!(f, ServerFrame::Event { event, .. } if event.seq == seqs[2]),
    )
    .await
    .unwrap();
    let Some(ServerFrame::Event { cursor, .. }) = frames.last() else {
        unreachable!()
    };
    let cursor = *cursor;
    bob_tx.ack(cursor).await.unwrap();
    let is_delivered = |f: &ServerFrame| matches!(f, ServerFrame::Receipt { kind: ReceiptKind::Delivered, seq, user_id, .. } if *seq == seqs[2] && *user_id == bob_id);
    frames_until(&mut alice_rx, WAIT, is_delivered)
        .await
        .unwrap();
    frames_until(&mut phone_rx, WAIT, is_delivered)
        .await
        .unwrap();

    // Bob reads up to two, then three (and a stale "one" changes nothing).
    bob_tx
        .frame(&ClientFrame::Read {
            room_id: room.clone(),
            seq: seqs[1],
        })
        .await
        .unwrap();
    bob.mark_read(&room, seqs[2]).await.unwrap();
    bob.mark_read(&room, seqs[0]).await.unwrap();
    for rx in [&mut alice_rx, &mut phone_rx, &mut bob_phone_rx] {
        let frames = frames_until(rx, WAIT, |f| matches!(f, ServerFrame::Receipt { kind: ReceiptKind::Read, seq, .. } if *seq == seqs[2])).await.unwrap();
        let reads: Vec<u64> = frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Receipt {
                    kind: ReceiptKind::Read,
                    seq,
                    ..
                } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(
            reads,
            vec![seqs[1], seqs[2]],
            "read receipts in order, no regression"
        );
    }
    let marks = alice.receipts(&room).await.unwrap();
    let bob_marks = marks.iter().find(|m| m.user_id == bob_id).unwrap();
    assert_eq!((bob_marks.delivered, bob_marks.read), (seqs[2], seqs[2]));
    assert_eq!(bob.rooms().await.unwrap()[0].unread, 0);

    // Bad input: past the end, a room one is not in.
    assert_eq!(
        bob.mark_read(&room, 10_000).await.unwrap_err().code(),
        Some(ErrorCode::InvalidParam)
    );
    let mut carol = hearth.user("carol").await;
    assert_eq!(
        carol.mark_read(&room, 1).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        carol.receipts(&room).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn typing_goes_to_the_other_members_and_expires_by_itself() {
    let hearth = TestHearth::start_with(|c| c.presence.typing_timeout_ms = 600).await;
    let (mut alice, mut bob, room) = pair(&hearth).await;
    let mut carol = hearth.user("carol").await;
    let bob_id = bob.user_id().unwrap().clone();
    let (_, mut alice_rx) = connect_synced(&mut alice).await;
    let (_, mut carol_rx) = connect_synced(&mut carol).await;
    let (mut bob_tx, mut bob_rx) = bob.connect(None).await.unwrap().split();
    frames_until(&mut bob_rx, WAIT, is_synced).await.unwrap();

    let started = std::time::Instant::now();
    bob_tx
        .frame(&ClientFrame::Typing {
            room_id: room.clone(),
            typing: true,
        })
        .await
        .unwrap();
    frames_until(
        &mut alice_rx,
        WAIT,
        |f| matches!(f, ServerFrame::Typing { typing: true, user_id, .. } if *user_id == bob_id),
    )
    .await
    .unwrap();
    // Bob never says he stopped: it expires.
    frames_until(
        &mut alice_rx,
        WAIT,
        |f| matches!(f, ServerFrame::Typing { typing: false, user_id, .. } if *user_id == bob_id),
    )
    .await
    .unwrap();
    // Not before the timeout (a lower bound: a loaded machine only makes it later).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600), "expired after {took:?}");

    // Carol shares no room with bob: she saw none of it.
    let before = frames_before_a_new_message(&mut alice, &carol, &mut carol_rx).await;
    assert!(
        !before
            .iter()
            .any(|f| matches!(f, ServerFrame::Typing { .. })),
        "typing leaked to a non-member: {before:?}"
    );

    // Typing in someone else's room is refused.
    let (mut carol_tx, _) = carol.connect(None).await.unwrap().split();
    carol_tx
        .frame(&ClientFrame::Typing {
            room_id: room.clone(),
            typing: true,
        })
        .await
        .unwrap();
    assert_eq!(
        carol.typing(&room, true).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn presence_times_out_without_logout_returns_on_heartbeat_and_stays_among_contacts() {
    let hearth = TestHearth::start_with(|c| {
        c.presence.heartbeat_interval_ms = 200;
        c.presence.offline_after_ms = 1000;
        c.presence.coalesce_ms = 100;
    })
    .await;
    let (mut alice, mut bob, _room) = pair(&hearth).await;
    let mut carol = hearth.user("carol").await;
    let bob_id = bob.user_id().unwrap().clone();
    let (_, mut alice_rx) = connect_synced(&mut alice).await;
    let (_, mut carol_rx) = connect_synced(&mut carol).await;

    // Bob connects (a heartbeat): online. Then his device goes quiet without logging out.
    let connecting = std::time::Instant::now();
    let (mut bob_tx, mut bob_rx) = bob.connect(None).await.unwrap().split();
    frames_until(&mut bob_rx, WAIT, is_synced).await.unwrap();
    let is_bob = |state: PresenceState| move |f: &ServerFrame| matches!(f, ServerFrame::Presence { user_id, state: s, .. } if user_id.localpart() == "bob" && *s == state);
    frames_until(&mut alice_rx, WAIT, is_bob(PresenceState::Online))
        .await
        .unwrap();
    let frames = frames_until(&mut alice_rx, WAIT, is_bob(PresenceState::Offline))
        .await
        .unwrap();
    assert!(
        connecting.elapsed() >= Duration::from_millis(900),
        "not before the timeout (1 s from his last activity, which came after `connecting`)"
    );
    let Some(ServerFrame::Presence { last_seen_ts, .. }) = frames.last() else {
        unreachable!()
    };
    assert!(last_seen_ts.is_some());
    let view = alice.presence(&bob_id).await.unwrap();
    assert_eq!(view.state, PresenceState::Offline);
    assert!(view.last_seen_ts.is_some());

    bob_tx.frame(&ClientFrame::Heartbeat).await.unwrap();
    frames_until(&mut alice_rx, WAIT, is_bob(PresenceState::Online))
        .await
        .unwrap();
    assert_eq!(
        alice.presence(&bob_id).await.unwrap().state,
        PresenceState::Online
    );

    // Carol shares no room with bob: no frames about him, and she may not ask.
    let before = frames_before_a_new_message(&mut alice, &carol, &mut carol_rx).await;
    assert!(
        !before
            .iter()
            .any(|f| matches!(f, ServerFrame::Presence { user_id, .. } if *user_id == bob_id)),
        "presence leaked to a stranger: {before:?}"
    );
    assert_eq!(
        carol.presence(&bob_id).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );

    // Bob hides: alice sees him offline, with no last-seen.
    bob.set_presence_hidden(true).await.unwrap();
    frames_until(&mut alice_rx, WAIT, is_bob(PresenceState::Offline))
        .await
        .unwrap();
    let view = alice.presence(&bob_id).await.unwrap();
    assert_eq!(
        (view.state, view.last_seen_ts),
        (PresenceState::Offline, None)
    );

    // A heartbeat flood is refused.
    let mut refused = false;
    for _ in 0..40 {
        bob_tx.frame(&ClientFrame::Heartbeat).await.unwrap();
    }
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline && !refused {
        if let ServerFrame::Error {
            code: ErrorCode::RateLimited,
            ..
        } = next_frame(&mut bob_rx, WAIT).await.unwrap()
        {
            refused = true;
        }
    }
    assert!(refused);
}

fn webhook(url: &str) -> PusherRequest {
    PusherRequest {
        kind: PusherKind::Webhook,
        url: url.into(),
        p256dh: None,
        auth: None,
    }
}

#[tokio::test]
async fn offline_device_gets_one_coalesced_notification_and_an_online_one_none() {
    let hearth = TestHearth::start_with(|c| {
        c.push.allow_private_endpoints = true;
        c.push.coalesce_ms = 400;
    })
    .await;
    let (mut alice, mut bob, room) = pair(&hearth).await;
    let (url, got) = push_receiver(200).await;
    bob.set_pusher(&webhook(&url)).await.unwrap();

    // Bob is offline: a burst of ten (pipelined on one connection, well inside the window)
    // becomes one notification, without content.
    let (mut alice_tx, mut alice_rx) = connect_synced(&mut alice).await;
    for i in 0..10 {
        alice_tx
            .send(&room, &new_txn_id(), format!("secret {i}").as_bytes())
            .await
            .unwrap();
    }
    let mut accepted = 0;
    while accepted < 10 {
        if let ServerFrame::Accepted { .. } = next_frame(&mut alice_rx, WAIT).await.unwrap() {
            accepted += 1;
        }
    }
    // Every message counted, in one notification.
    let bodies = pushes_counting(&got, 10).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let n = &bodies[0];
    assert_eq!(n["count"], 10);
    assert_eq!(n["sender"], "@alice:localhost");
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(
        n["unread"], 10,
        "ten messages (the creation and joins are not counted)"
    );
    assert!(
        !n.to_string().contains("secret"),
        "no content in a notification"
    );
    let keys: Vec<&String> = n.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{keys:?}");

    // Bob's laptop is online: nothing is pushed to it. His phone, offline, is told of the same
    // three messages: once it has been, the laptop's notification would have been sent too.
    let (_, _bob_rx) = connect_synced(&mut bob).await;
    let mut phone = hearth.device("bob").await;
    let (phone_url, phone_got) = push_receiver(200).await;
    phone.set_pusher(&webhook(&phone_url)).await.unwrap();
    for _ in 0..3 {
        alice
            .send(&room, &new_txn_id(), b"while online")
            .await
            .unwrap();
    }
    pushes_counting(&phone_got, 3).await;
    assert_eq!(got.lock().unwrap().len(), 1, "an online device got a push");

    // Alice's own messages never notify her other (offline) device; bob's phone is told of the
    // same message.
    let mut alice_tablet = hearth.device("alice").await;
    let (alice_url, alice_got) = push_receiver(200).await;
    alice_tablet.set_pusher(&webhook(&alice_url)).await.unwrap();
    alice.send(&room, &new_txn_id(), b"mine").await.unwrap();
    pushes_counting(&phone_got, 4).await;
    assert!(alice_got.lock().unwrap().is_empty());
}

/// The bodies `got` has once their counts add up to `messages` (waits up to [`WAIT`]).
async fn pushes_counting(got: &Pushed, messages: u64) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let bodies: Vec<serde_json::Value> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).expect("a webhook body is JSON"))
            .collect();
        let counted: u64 = bodies.iter().filter_map(|b| b["count"].as_u64()).sum();
        if counted >= messages {
            return bodies;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "notifications for {counted} of {messages} messages arrived: {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_push_endpoints_are_refused_and_failing_ones_disabled_and_reported() {
    let hearth = TestHearth::start_with(|c| {
        c.push.allow_private_endpoints = true;
        c.push.coalesce_ms = 100;
        c.push.attempts = 2;
        c.push.retry_base_ms = 50;
        c.push.disable_after_failures = 2;
    })
    .await;
    let (mut alice, mut bob, room) = pair(&hearth).await;
    let own = format!("{}/v1/health", hearth.url);
    for bad in [
        "ftp://example.org/push",
        "not a url",
        own.as_str(),
        "javascript:alert(1)",
    ] {
        let err = bob.set_pusher(&webhook(bad)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidParam), "{bad}");
    }
    assert_eq!(
        bob.pusher().await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    let web_push_without_keys = PusherRequest {
        kind: PusherKind::WebPush,
        url: "https://push.example.net/x".into(),
        p256dh: None,
        auth: None,
    };
    assert_eq!(
        bob.set_pusher(&web_push_without_keys)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidParam)
    );

    // An endpoint that answers 500 every time.
    let (url, got) = push_receiver(500).await;
    let info = bob.set_pusher(&webhook(&url)).await.unwrap();
    // Two notifications, one after the other: each is tried twice.
    for round in 1..=2 {
        alice.send(&room, &new_txn_id(), b"ping").await.unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while got.lock().unwrap().len() < 2 * round {
            assert!(std::time::Instant::now() < deadline, "attempt missing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    let disabled = loop {
        let p = bob.pusher().await.unwrap();
        if p.disabled.is_some() || std::time::Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        disabled.disabled.is_some(),
        "the failing endpoint was not disabled"
    );
    assert_eq!(
        got.lock().unwrap().len(),
        4,
        "two notifications, two attempts each"
    );

    // Bob's device is told when it next connects, once.
    let (_, mut rx) = bob.connect(None).await.unwrap().split();
    let frames = frames_until(&mut rx, WAIT, |f| {
        matches!(f, ServerFrame::PushDisabled { .. })
    })
    .await
    .unwrap();
    let Some(ServerFrame::PushDisabled { pusher_id, .. }) = frames.last() else {
        unreachable!()
    };
    assert_eq!(*pusher_id, info.pusher_id);
    let (_, mut again) = bob.connect(None).await.unwrap().split();
    let frames = frames_until(&mut again, WAIT, is_synced).await.unwrap();
    let after = frames_before_message_in(&mut alice, &room, &mut again).await;
    assert!(
        frames
            .iter()
            .chain(&after)
            .all(|f| !matches!(f, ServerFrame::PushDisabled { .. })),
        "told twice"
    );
    bob.delete_pusher().await.unwrap();
}

#[tokio::test]
async fn web_push_notifications_are_encrypted_for_the_subscription_and_vapid_signed() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

    let hearth = TestHearth::start_with(|c| {
        c.push.allow_private_endpoints = true;
        c.push.coalesce_ms = 200;
    })
    .await;
    let (mut alice, mut bob, room) = pair(&hearth).await;
    let subject = hearth.config.push.vapid_subject.clone();

    // Bob's browser: a P-256 key pair and an auth secret, as pushManager.subscribe makes them.
    let ua_secret = web_push_native::p256::SecretKey::random(&mut rand::rngs::OsRng);
    let ua_public =
        URL_SAFE_NO_PAD.encode(ua_secret.public_key().to_encoded_point(false).as_bytes());
    let auth: [u8; 16] = rand::random();
    // The push service: records the request's headers and encrypted body.
    let (endpoint, seen) = push_receiver(201).await;
    let origin = endpoint.trim_end_matches("/push").to_owned();

    let vapid_key = bob.vapid_public_key().await.unwrap();
    bob.set_pusher(&PusherRequest {
        kind: PusherKind::WebPush,
        url: endpoint,
        p256dh: Some(ua_public),
        auth: Some(URL_SAFE_NO_PAD.encode(auth)),
    })
    .await
    .unwrap();
    alice
        .send(&room, &new_txn_id(), b"top secret")
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + WAIT;
    while seen.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (headers, body) = seen
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("a Web Push request arrived");
    assert_eq!(headers["content-encoding"], "aes128gcm");
    let authorization = headers["authorization"].to_str().unwrap();
    assert!(authorization.starts_with("vapid t="), "{authorization}");
    assert!(
        authorization.contains(&format!("k={vapid_key}")),
        "names the advertised VAPID key"
    );
    // RFC 8292: the JWT verifies under that key and is for this push service's origin.
    {
        use web_push_native::jwt_simple::prelude::*;
        let token = authorization["vapid t=".len()..]
            .split(',')
            .next()
            .unwrap()
            .trim();
        let public = ES256PublicKey::from_bytes(&URL_SAFE_NO_PAD.decode(&vapid_key).unwrap())
            .expect("the VAPID key is a P-256 point");
        let options = VerificationOptions {
            allowed_audiences: Some(HashSet::from_strings(&[origin.as_str()])),
            ..Default::default()
        };
        let claims = public
            .verify_token::<NoCustomClaims>(token, Some(options))
            .expect("the VAPID JWT verifies under the advertised key, for this origin");
        assert_eq!(claims.subject.as_deref(), Some(subject.as_str()));
        assert!(claims.expires_at.is_some(), "the JWT expires");
        let other = ES256KeyPair::generate().public_key();
        assert!(
            other.verify_token::<NoCustomClaims>(token, None).is_err(),
            "another key does not verify it"
        );
    }
    assert!(
        !String::from_utf8_lossy(&body).contains("alice"),
        "the body is encrypted"
    );
    let plain = web_push_native::decrypt(
        body,
        &ua_secret,
        &web_push_native::Auth::clone_from_slice(&auth),
    )
    .expect("decrypts for the subscription");
    let n: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(n["sender"], "@alice:localhost");
    assert_eq!(n["room_id"], room.as_str());
    assert!(!String::from_utf8_lossy(&plain).contains("top secret"));

    // A subscription with keys that are not keys is refused.
    let bad = PusherRequest {
        kind: PusherKind::WebPush,
        url: "https://push.example.net/x".into(),
        p256dh: Some("AAAA".into()),
        auth: Some("AAAA".into()),
    };
    assert_eq!(
        bob.set_pusher(&bad).await.unwrap_err().code(),
        Some(ErrorCode::InvalidParam)
    );
}

/// Push URLs that lead to the hearth's own network are refused however they are spelled, and a
/// name that resolves to one is checked when the push is sent: the endpoint is never called.
#[tokio::test]
async fn push_endpoints_on_special_addresses_are_never_called() {
    let hearth = TestHearth::start_with(|c| {
        c.push.coalesce_ms = 50;
        c.push.attempts = 1;
        c.push.disable_after_failures = 1;
    })
    .await;
    let (mut alice, mut bob, room) = pair(&hearth).await;
    let (url, got) = push_receiver(200).await;
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/push");
    for host in [
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "[fe80::1]",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "127.1",
        "2130706433",
        "localhost.",
    ] {
        let bad = format!("http://{host}:{port}/push");
        let err = bob.set_pusher(&webhook(&bad)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidParam), "{bad}");
    }

    // This machine's own name, which resolves to a loopback address on most Linux machines.
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let resolves_to_loopback = !name.is_empty()
        && tokio::net::lookup_host((name.as_str(), 0))
            .await
            .is_ok_and(|mut addrs| addrs.any(|a| a.ip().is_loopback()));
    if !resolves_to_loopback {
        eprintln!("skipping the name check: this machine's name {name:?} is not a loopback name");
        return;
    }
    let by_name = format!("http://{name}:{port}/push");
    bob.set_pusher(&webhook(&by_name)).await.unwrap();
    alice.send(&room, &new_txn_id(), b"ping").await.unwrap();
    // The one attempt fails at name resolution, which disables the pusher.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let p = bob.pusher().await.unwrap();
        if let Some(reason) = p.disabled {
            assert!(reason.contains("loopback"), "{reason}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pusher was neither called nor disabled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        got.lock().unwrap().is_empty(),
        "the hearth called {by_name}"
    );
}
