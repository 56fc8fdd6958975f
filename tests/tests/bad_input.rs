//! Hostile and malformed input from clients: every case gets a typed error (HTTP status + JSON
//! body, or a WebSocket error frame), nothing panics or hangs, and nothing stored changes.

use std::time::Duration;

use hearth_client::{Client, WsMessage, new_txn_id};
use hearth_crypto::ServerKey;
use hearth_node::accounts::token::{self, Claims};
use hearth_spec::client::ServerFrame;
use hearth_spec::{ErrorBody, ErrorCode, RoomKind};
use hearth_tests::{TestHearth, frames_until, next_frame};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn raw(
    hearth: &TestHearth,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, ErrorBody) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", hearth.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("hearth answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body: ErrorBody = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is JSON ({e}): {text:?}"));
    (status, body)
}

struct Setup {
    hearth: TestHearth,
    alice: Client,
    token: String,
    room_path: String,
    room: hearth_spec::RoomId,
}

async fn setup() -> Setup {
    let hearth = TestHearth::start().await;
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob.user_id().unwrap().clone()])
        .await
        .unwrap();
    let token = alice.session().unwrap().access_token.clone();
    let room_path = format!(
        "/v1/rooms/{}",
        room.room_id
            .as_str()
            .replace('!', "%21")
            .replace(':', "%3A")
    );
    Setup {
        hearth,
        alice,
        token,
        room_path,
        room: room.room_id,
    }
}

async fn last_seq(s: &mut Setup) -> u64 {
    s.alice.room(&s.room).await.unwrap().last_seq
}

#[tokio::test]
async fn malformed_and_unknown_json_is_rejected_and_nothing_changes() {
    let mut s = setup().await;
    let before = last_seq(&mut s).await;
    let send = format!("{}/send", s.room_path);
    let cases: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"[]".to_vec(),
        json!({"txn_id": "t1"}).to_string().into_bytes(),
        json!({"txn_id": "t1", "payload": "aGk=", "extra": 1})
            .to_string()
            .into_bytes(),
        json!({"txn_id": "bad txn id", "payload": "aGk="})
            .to_string()
            .into_bytes(),
        json!({"txn_id": "t1", "payload": "not base64!"})
            .to_string()
            .into_bytes(),
        vec![0xff, 0xfe, 0x00],
    ];
    for body in cases {
        let (status, err) = raw(
            &s.hearth,
            reqwest::Method::POST,
            &send,
            Some(&s.token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, err.code),
            (400, ErrorCode::BadJson),
            "body {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::POST,
        "/v1/rooms",
        Some(&s.token),
        Some(br#"{"kind":"direct","members":["not a user"]}"#.to_vec()),
    )
    .await;
    assert_eq!((status, err.code), (400, ErrorCode::BadJson));
    let remove = format!("{}/remove", s.room_path);
    let admins = format!("{}/admins", s.room_path);
    for body in [
        json!({}),
        json!({"user_id": "not a user"}),
        json!({"user_id": "@x:localhost", "also": 1}),
    ] {
        for path in [&admins, &remove] {
            let (status, err) = raw(
                &s.hearth,
                reqwest::Method::POST,
                path,
                Some(&s.token),
                Some(body.to_string().into_bytes()),
            )
            .await;
            assert_eq!(
                (status, err.code),
                (400, ErrorCode::BadJson),
                "{path} {body}"
            );
        }
    }
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::POST,
        "/v1/rooms/not-a-room/send",
        Some(&s.token),
        Some(json!({"txn_id":"t","payload":""}).to_string().into_bytes()),
    )
    .await;
    assert_eq!((status, err.code), (400, ErrorCode::InvalidParam));
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::GET,
        &format!("{}/events?limit=100000", s.room_path),
        Some(&s.token),
        None,
    )
    .await;
    assert_eq!((status, err.code), (400, ErrorCode::InvalidParam));
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::GET,
        &format!("{}/events?before=-1", s.room_path),
        Some(&s.token),
        None,
    )
    .await;
    assert_eq!((status, err.code), (400, ErrorCode::InvalidParam));
    let (status, err) = raw(&s.hearth, reqwest::Method::GET, "/v1/nope", None, None).await;
    assert_eq!((status, err.code), (404, ErrorCode::NotFound));
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::DELETE,
        "/v1/rooms",
        Some(&s.token),
        None,
    )
    .await;
    assert_eq!((status, err.code), (405, ErrorCode::NotFound));
    assert_eq!(last_seq(&mut s).await, before);
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_authentication() {
    let mut s = setup().await;
    let before = last_seq(&mut s).await;
    let huge = vec![b'a'; 1100 * 1024];
    // No token at all: the size limit answers first.
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::POST,
        "/v1/register",
        None,
        Some(huge.clone()),
    )
    .await;
    assert_eq!((status, err.code), (413, ErrorCode::TooLarge));
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::POST,
        &format!("{}/send", s.room_path),
        Some("garbage"),
        Some(huge),
    )
    .await;
    assert_eq!((status, err.code), (413, ErrorCode::TooLarge));
    // A payload over the event limit that fits the body limit: too large, nothing stored.
    let payload = vec![7u8; 512 * 1024 + 1];
    let err = s
        .alice
        .send(&s.room, &new_txn_id(), &payload)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
    // Exactly at the limit is fine.
    s.alice
        .send(&s.room, &new_txn_id(), &payload[1..])
        .await
        .unwrap();
    assert_eq!(last_seq(&mut s).await, before + 1);
}

#[tokio::test]
async fn bad_forged_and_expired_tokens_are_refused() {
    let mut s = setup().await;
    for token in ["", "garbage", "hat1.AAAA.BBBB", &"x".repeat(4000)] {
        let (status, err) = raw(
            &s.hearth,
            reqwest::Method::GET,
            "/v1/rooms",
            Some(token),
            None,
        )
        .await;
        assert_eq!(
            (status, err.code),
            (401, ErrorCode::Unauthorized),
            "token {token:?}"
        );
    }
    let (status, err) = raw(&s.hearth, reqwest::Method::GET, "/v1/rooms", None, None).await;
    assert_eq!((status, err.code), (401, ErrorCode::Unauthorized));

    let session = s.alice.session().unwrap().clone();
    let claims = |expires_ms| Claims {
        user: session.user_id.clone(),
        device: session.device_id.clone(),
        expires_ms,
    };
    // Signed by someone else's key.
    let forged = token::issue(&ServerKey::generate(), &claims(u64::MAX));
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::GET,
        "/v1/rooms",
        Some(&forged),
        None,
    )
    .await;
    assert_eq!((status, err.code), (401, ErrorCode::Unauthorized));
    // Signed by the hearth's own key but expired.
    let key =
        ServerKey::from_bytes(&std::fs::read(s.hearth.data_dir().join("server.key")).unwrap())
            .unwrap();
    let expired = token::issue(&key, &claims(1));
    let (status, err) = raw(
        &s.hearth,
        reqwest::Method::GET,
        "/v1/rooms",
        Some(&expired),
        None,
    )
    .await;
    assert_eq!((status, err.code), (401, ErrorCode::TokenExpired));
    // The SDK refreshes by itself when it meets an expired token.
    let mut stale = Client::with_session(
        &s.hearth.url,
        hearth_spec::api::Session {
            access_token: expired,
            ..session
        },
    );
    stale.rooms().await.unwrap();
    assert_eq!(last_seq(&mut s).await, 3);
}

#[tokio::test]
async fn wrong_passwords_and_bad_registrations_get_typed_errors() {
    let s = setup().await;
    let mut c = Client::new(&s.hearth.url);
    assert_eq!(
        c.login("alice", "wrong password", None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::BadCredentials)
    );
    assert_eq!(
        c.login("nobody", "wrong password", None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::BadCredentials)
    );
    assert_eq!(
        c.register("alice", "long enough pw", None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::UserExists)
    );
    assert_eq!(
        c.register("Bad Name", "long enough pw", None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidParam)
    );
    assert_eq!(
        c.register("shorty", "short", None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidParam)
    );
    let too_long = "p".repeat(2000);
    assert_eq!(
        c.register("longpw", &too_long, None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidParam)
    );
}

#[tokio::test]
async fn websocket_garbage_gets_error_frames_and_the_session_survives() {
    let mut s = setup().await;
    let before = last_seq(&mut s).await;
    let (mut tx, mut rx) = s.alice.connect(None).await.unwrap().split();
    frames_until(&mut rx, WAIT, |f| matches!(f, ServerFrame::Synced { .. }))
        .await
        .unwrap();

    for text in [
        "{",
        "[]",
        r#"{"type":"launch"}"#,
        r#"{"type":"send","room_id":"!x:localhost"}"#,
        r#"{"type":"ack","cursor":-4}"#,
    ] {
        tx.raw(WsMessage::Text(text.into())).await.unwrap();
        match next_frame(&mut rx, WAIT).await.unwrap() {
            ServerFrame::Error { code, .. } => {
                assert_eq!(code, ErrorCode::BadJson, "frame {text:?}")
            }
            other => panic!("expected an error frame for {text:?}, got {other:?}"),
        }
    }
    tx.raw(WsMessage::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert!(matches!(
        next_frame(&mut rx, WAIT).await.unwrap(),
        ServerFrame::Error {
            code: ErrorCode::BadJson,
            ..
        }
    ));

    // A send that is refused names its txn id.
    let nowhere = hearth_spec::RoomId::parse("!nowhere:localhost").unwrap();
    let txn = new_txn_id();
    tx.send(&nowhere, &txn, b"x").await.unwrap();
    match next_frame(&mut rx, WAIT).await.unwrap() {
        ServerFrame::Error { code, txn_id, .. } => {
            assert_eq!((code, txn_id), (ErrorCode::NotFound, Some(txn)))
        }
        other => panic!("unexpected {other:?}"),
    }
    // An oversized payload inside a frame that fits: too_large, with the txn id.
    let txn = new_txn_id();
    tx.send(&s.room, &txn, &vec![0u8; 512 * 1024 + 10])
        .await
        .unwrap();
    match next_frame(&mut rx, WAIT).await.unwrap() {
        ServerFrame::Error { code, txn_id, .. } => {
            assert_eq!((code, txn_id), (ErrorCode::TooLarge, Some(txn)))
        }
        other => panic!("unexpected {other:?}"),
    }
    // An ack past the end of the inbox.
    tx.ack(u64::MAX).await.unwrap();
    assert!(matches!(
        next_frame(&mut rx, WAIT).await.unwrap(),
        ServerFrame::Error {
            code: ErrorCode::InvalidParam,
            ..
        }
    ));

    // Still alive.
    tx.frame(&hearth_spec::client::ClientFrame::Ping { nonce: 42 })
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut rx, WAIT).await.unwrap(),
        ServerFrame::Pong { nonce: 42 }
    );
    assert_eq!(last_seq(&mut s).await, before);
}

#[tokio::test]
async fn websocket_frame_over_the_limit_closes_the_connection_and_stores_nothing() {
    let mut s = setup().await;
    let before = last_seq(&mut s).await;
    let (mut tx, mut rx) = s.alice.connect(None).await.unwrap().split();
    frames_until(&mut rx, WAIT, |f| matches!(f, ServerFrame::Synced { .. }))
        .await
        .unwrap();
    let huge = "x".repeat(2 * 1024 * 1024);
    let _ = tx.raw(WsMessage::Text(huge.into())).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match rx.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the hearth closes a connection that sends an oversized frame"
    );
    assert_eq!(last_seq(&mut s).await, before);
    // The hearth serves others as before.
    s.alice.send(&s.room, &new_txn_id(), b"fine").await.unwrap();
}

#[tokio::test]
async fn cursor_past_the_inbox_end_is_refused() {
    let mut s = setup().await;
    assert_eq!(
        s.alice.connect(Some(u64::MAX)).await.unwrap_err().code(),
        Some(ErrorCode::InvalidParam)
    );
    assert_eq!(
        s.alice.sync(Some(u64::MAX), 10).await.unwrap_err().code(),
        Some(ErrorCode::InvalidParam)
    );
}

/// A position past the inbox's end that the hearth can no longer give (below the clock's) is a
/// cursor a device may hold: one a member hearth showed before a flush that failed
/// (`spec/storage.md`, "Shown before the flush"). It is taken, and what comes next is after it.
#[tokio::test]
async fn a_cursor_past_the_inbox_end_but_below_the_clock_is_taken() {
    let mut s = setup().await;
    let head = s.alice.sync(Some(0), 500).await.unwrap().next_cursor;
    let past = head + 1;
    // Positions are at least the time in ms × 1024: wait until `past` is below that.
    while hearth_tests::now_ms() << 10 <= past {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let page = s.alice.sync(Some(past), 10).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.next_cursor, past);
    let (_tx, mut rx) = s.alice.connect(Some(past)).await.unwrap().split();
    assert!(matches!(
        next_frame(&mut rx, WAIT).await.unwrap(),
        ServerFrame::Synced { cursor } if cursor == past
    ));
    s.alice.send(&s.room, &new_txn_id(), b"next").await.unwrap();
    let page = s.alice.sync(Some(past), 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.items[0].cursor > past);
}

#[tokio::test]
async fn websocket_without_valid_token_is_refused_with_json() {
    let s = setup().await;
    let mut stale = Client::with_session(
        &s.hearth.url,
        hearth_spec::api::Session {
            access_token: "garbage".into(),
            ..s.alice.session().unwrap().clone()
        },
    );
    let err = stale.connect(None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_error_frames() {
    let hearth = TestHearth::start_with(|c| {
        c.limits.sends.per_second = 1.0;
        c.limits.sends.burst = 3.0;
        c.limits.requests.per_second = 1.0;
        c.limits.requests.burst = 5.0;
    })
    .await;
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let room = alice
        .create_room(RoomKind::Direct, None, &[bob.user_id().unwrap().clone()])
        .await
        .unwrap();
    let token = alice.session().unwrap().access_token.clone();

    let http = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..10 {
        let resp = http
            .get(format!("{}/v1/rooms", hearth.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("the request limit answers 429");
    assert!(resp.headers().get("retry-after").is_some());
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::RateLimited);
    assert!(body.retry_after_ms.unwrap() > 0);

    let (mut tx, mut rx) = alice
        .connect(None)
        .await
        .map(|c| c.split())
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..6 {
        tx.send(&room.room_id, &new_txn_id(), b"spam")
            .await
            .unwrap();
    }
    let frames = frames_until(&mut rx, WAIT, |f| {
        matches!(
            f,
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        )
    })
    .await
    .unwrap();
    assert!(
        frames
            .iter()
            .filter(|f| matches!(f, ServerFrame::Accepted { .. }))
            .count()
            <= 3
    );
}

/// `POST path` with `body` from the loopback address `from`: the status and the error body.
async fn post_from(
    hearth: &TestHearth,
    from: [u8; 4],
    path: &str,
    body: serde_json::Value,
) -> (u16, ErrorBody) {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}{path}", hearth.url))
        .json(&body)
        .send()
        .await
        .expect("hearth answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("error body is JSON"))
}

#[tokio::test]
async fn logins_from_one_address_past_its_budget_are_refused_and_other_addresses_go_on() {
    let hearth = TestHearth::start_with(|c| {
        c.limits.auth.per_second = 0.001;
        c.limits.auth.burst = 5.0;
    })
    .await;
    let login = json!({"username": "nobody", "password": "not the password"});
    for _ in 0..5 {
        let (status, err) = post_from(&hearth, [127, 0, 0, 1], "/v1/login", login.clone()).await;
        assert_eq!((status, err.code), (401, ErrorCode::BadCredentials));
    }
    let (status, err) = post_from(&hearth, [127, 0, 0, 1], "/v1/login", login.clone()).await;
    assert_eq!((status, err.code), (429, ErrorCode::RateLimited));
    assert!(err.retry_after_ms.is_some_and(|ms| ms > 0), "{err:?}");
    // Registration counts against the same budget.
    let register = json!({"username": "newcomer", "password": "long enough"});
    let (status, err) = post_from(&hearth, [127, 0, 0, 1], "/v1/register", register.clone()).await;
    assert_eq!((status, err.code), (429, ErrorCode::RateLimited));
    // Another address has its own budget.
    let (status, err) = post_from(&hearth, [127, 0, 0, 2], "/v1/login", login).await;
    assert_eq!((status, err.code), (401, ErrorCode::BadCredentials));
}

#[tokio::test]
async fn closed_registration_and_a_deactivated_account_are_forbidden() {
    let hearth =
        TestHearth::start_with(|c| c.auth.registration = hearth_node::config::Registration::Closed)
            .await;
    let register = json!({"username": "newcomer", "password": "long enough"});
    let (status, err) = post_from(&hearth, [127, 0, 0, 1], "/v1/register", register).await;
    assert_eq!((status, err.code), (403, ErrorCode::Forbidden));

    // An administrator made the account, then deactivated it.
    let socket = hearth_node::ops::data_dir::admin_socket_path(hearth.data_dir());
    let admin = |request| {
        let socket = socket.clone();
        async move {
            hearth_node::ops::admin::request_socket(&socket, &request)
                .await
                .unwrap()
        }
    };
    use hearth_node::ops::admin::{AdminRequest, AdminResponse};
    let made = admin(AdminRequest::CreateUser {
        username: "dora".into(),
        password: "long enough".into(),
        admin: false,
    })
    .await;
    assert!(matches!(made, AdminResponse::Created { .. }), "{made:?}");
    let login = json!({"username": "dora", "password": "long enough"});
    let mut dora = Client::new(&hearth.url);
    dora.login("dora", "long enough", None).await.unwrap();
    let gone = admin(AdminRequest::DeactivateUser {
        user_id: "@dora:localhost".into(),
    })
    .await;
    assert!(
        matches!(gone, AdminResponse::Deactivated { .. }),
        "{gone:?}"
    );
    let (status, err) = post_from(&hearth, [127, 0, 0, 1], "/v1/login", login).await;
    assert_eq!((status, err.code), (403, ErrorCode::Forbidden));
}
