//! The admin API (`/v1/admin/*`, spec/admin.md) on a real hearth: only accounts with the admin
//! flag get in (403 for others, 401 without a token), each endpoint does what it says to real
//! accounts, and every action lands in the audit log with who did it; registration tokens admit
//! exactly as many accounts as they allow, even when registrations race for the last use; the
//! `hearth admin` command does the same on a stopped and a running hearth.

use std::process::Command;

use hearth_client::Client;
use hearth_node::config::Registration;
use hearth_node::ops::admin::{AdminRequest, AdminResponse, request_socket};
use hearth_node::ops::data_dir::admin_socket_path;
use hearth_spec::{ErrorCode, RoomKind};
use hearth_tests::{HearthProcess, TestHearth, grant_admin, hearth_binary};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// One HTTP call as `client`'s device (or with no token); status and JSON body.
async fn call(
    hearth: &TestHearth,
    client: Option<&Client>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", hearth.url));
    if let Some(client) = client {
        request = request.bearer_auth(&client.session().unwrap().access_token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Runs a request through the running hearth's admin socket, as `hearth admin` does.
async fn socket(hearth: &TestHearth, request: AdminRequest) -> AdminResponse {
    request_socket(&admin_socket_path(&hearth.config.data_dir), &request)
        .await
        .unwrap()
}

fn audit_rows(body: &Value) -> Vec<(String, String, String)> {
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn only_admins_use_the_admin_api_and_every_action_is_audited() {
    use reqwest::Method;
    let hearth = TestHearth::start().await;
    let root = hearth.user("root").await;
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;

    // No flag: 403 on every kind of request, and nothing happens; no token: 401.
    for (method, path, body) in [
        (Method::GET, "/v1/admin/users", None),
        (Method::GET, "/v1/admin/users/@bob:localhost", None),
        (
            Method::POST,
            "/v1/admin/users",
            Some(json!({"username": "mallory", "password": PASSWORD, "admin": true})),
        ),
        (Method::POST, "/v1/admin/users/bob/deactivate", None),
        (
            Method::PUT,
            "/v1/admin/users/alice/admin",
            Some(json!({"admin": true})),
        ),
        (
            Method::POST,
            "/v1/admin/registration_tokens",
            Some(json!({})),
        ),
        (Method::GET, "/v1/admin/audit", None),
        (Method::GET, "/v1/admin/federation", None),
    ] {
        let (status, error) = call(&hearth, Some(&alice), method.clone(), path, body.clone()).await;
        assert_eq!(status, 403, "{method} {path}: {error}");
        assert_eq!(error["code"], "forbidden");
        let (status, _) = call(&hearth, None, method.clone(), path, body).await;
        assert_eq!(status, 401, "{method} {path} without a token");
    }
    assert!(
        Client::new(&hearth.url)
            .login("mallory", PASSWORD, None)
            .await
            .is_err()
    );

    // The operator grants root the flag with `hearth admin` (its socket).
    let granted = socket(
        &hearth,
        AdminRequest::SetAdmin {
            user_id: "root".into(),
            admin: true,
        },
    )
    .await;
    assert!(
        matches!(granted, AdminResponse::Updated { .. }),
        "{granted:?}"
    );

    // Users: search with paging, in id order.
    let (status, page) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users?limit=2",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["@alice:localhost", "@bob:localhost"]);
    assert_eq!(page["next"], "@bob:localhost");
    let (_, page) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users?limit=2&from=@bob:localhost",
        None,
    )
    .await;
    assert_eq!(page["users"][0]["user_id"], "@root:localhost");
    assert_eq!(page["users"][0]["admin"], true);
    assert_eq!(page["next"], Value::Null);
    let (_, found) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users?q=OB",
        None,
    )
    .await;
    assert_eq!(found["users"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["users"][0]["user_id"], "@bob:localhost");

    // Create a user; they can log in.
    let (status, created) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users",
        Some(json!({"username": "carol", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["user_id"], "@carol:localhost");
    let mut carol = Client::new(&hearth.url);
    carol.login("carol", PASSWORD, None).await.unwrap();

    // One user and their devices.
    let (status, shown) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users/@alice:localhost",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(shown["user"]["admin"], false);
    assert_eq!(shown["devices"].as_array().unwrap().len(), 1);
    // Where her device was last seen: it made requests from this machine (recorded off the
    // request path, so it may take a moment).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let seen = loop {
        let (_, shown) = call(
            &hearth,
            Some(&root),
            Method::GET,
            "/v1/admin/users/alice",
            None,
        )
        .await;
        let device = shown["devices"][0].clone();
        if !device["last_seen_ip"].is_null() {
            break device;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(seen["last_seen_ip"], "127.0.0.1");
    assert!(seen["last_seen_ts"].as_u64().unwrap() > 1_700_000_000_000);

    // A password reset logs her devices out; the new password works, the old one does not.
    let (status, reset) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users/alice/password",
        Some(json!({"password": "a brand new one"})),
    )
    .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["devices_logged_out"], 1);
    assert_eq!(
        alice.devices().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    assert!(
        Client::new(&hearth.url)
            .login("alice", PASSWORD, None)
            .await
            .is_err()
    );
    alice.login("alice", "a brand new one", None).await.unwrap();

    // Deactivate and reactivate bob.
    let (status, _) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users/bob/deactivate",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        bob.devices().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    let refused = Client::new(&hearth.url)
        .login("bob", PASSWORD, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    let (status, _) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users/bob/reactivate",
        None,
    )
    .await;
    assert_eq!(status, 200);
    Client::new(&hearth.url)
        .login("bob", PASSWORD, None)
        .await
        .unwrap();

    // Log carol out everywhere.
    let (_, out) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users/carol/logout",
        None,
    )
    .await;
    assert_eq!(out["devices_logged_out"], 1);
    assert_eq!(
        carol.devices().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );

    // The flag, granted over HTTP, lets alice in; revoked, it keeps her out again.
    let flag = |on: bool| Some(json!({"admin": on}));
    assert_eq!(
        call(
            &hearth,
            Some(&root),
            Method::PUT,
            "/v1/admin/users/alice/admin",
            flag(true)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&hearth, Some(&alice), Method::GET, "/v1/admin/users", None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &hearth,
            Some(&root),
            Method::PUT,
            "/v1/admin/users/alice/admin",
            flag(false)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&hearth, Some(&alice), Method::GET, "/v1/admin/users", None)
            .await
            .0,
        403
    );

    // Bad input gets typed errors and changes nothing.
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users/nobody",
        None,
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (404, Some("not_found")));
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users?from=garbage",
        None,
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_param")));
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users",
        Some(json!({"username": "x"})),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("bad_json")), "{e}");
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users",
        Some(json!({"username": "dave", "password": "short"})),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_param")));
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users/@bob:elsewhere.org/deactivate",
        None,
    )
    .await;
    assert_eq!(status, 400, "{e}");

    // The audit log: every change, in order, with who made it. Reads and refusals are not in it.
    let (status, audit) = call(&hearth, Some(&root), Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(status, 200);
    let root_id = "@root:localhost";
    let expected = [
        ("hearth admin", "grant_admin", "root"),
        (root_id, "create_user", "carol"),
        (root_id, "reset_password", "alice"),
        (root_id, "deactivate_user", "bob"),
        (root_id, "reactivate_user", "bob"),
        (root_id, "logout_user", "carol"),
        (root_id, "grant_admin", "alice"),
        (root_id, "revoke_admin", "alice"),
    ];
    let rows = audit_rows(&audit);
    assert_eq!(
        rows,
        expected.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    let seqs: Vec<u64> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    let (_, later) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/audit?from=6&limit=1",
        None,
    )
    .await;
    assert_eq!(
        audit_rows(&later),
        vec![(
            root_id.to_owned(),
            "grant_admin".to_owned(),
            "alice".to_owned()
        )]
    );

    // A deactivated admin is no admin.
    socket(
        &hearth,
        AdminRequest::DeactivateUser {
            user_id: "root".into(),
        },
    )
    .await;
    let mut root_again = Client::new(&hearth.url);
    assert!(root_again.login("root", PASSWORD, None).await.is_err());
}

/// Blocking a hearth over HTTP: admins only, each change audited, bad input refused, and while
/// the block lasts this hearth's users cannot bring that hearth's users into a room.
#[tokio::test]
async fn admins_block_and_unblock_hearths() {
    use reqwest::Method;
    let hearth = TestHearth::start().await;
    let root = hearth.user("root").await;
    let mut alice = hearth.user("alice").await;
    grant_admin(hearth.data_dir(), "root").await;
    let path = "/v1/admin/federation/blocks/evil.test";
    let reason = Some(json!({"reason": "spam waves"}));

    let (status, e) = call(&hearth, Some(&alice), Method::PUT, path, reason.clone()).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("forbidden")));
    let (status, blocked) = call(&hearth, Some(&root), Method::PUT, path, reason.clone()).await;
    assert_eq!(status, 200, "{blocked}");
    assert_eq!(
        blocked,
        json!({"result": "hearth_block", "server": "evil.test", "blocked": true, "changed": true})
    );
    let (_, again) = call(&hearth, Some(&root), Method::PUT, path, Some(json!({}))).await;
    assert_eq!(again["changed"], false);
    let (status, list) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/federation/blocks",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["blocked"][0]["server"], "evil.test");
    assert_eq!(
        list["blocked"][0]["reason"], "spam waves",
        "the first block's reason stays"
    );
    assert_eq!(list["blocked"].as_array().unwrap().len(), 1);

    let refused = alice
        .create_room(
            RoomKind::Direct,
            None,
            &[hearth_tests::user_id("mallory", "evil.test")],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    assert!(refused.to_string().contains("blocked"), "{refused}");

    for (path, body) in [
        ("/v1/admin/federation/blocks/localhost", Some(json!({}))),
        (
            "/v1/admin/federation/blocks/not%20a%20name",
            Some(json!({})),
        ),
        (
            "/v1/admin/federation/blocks/other.test",
            Some(json!({"reason": "x".repeat(1025)})),
        ),
    ] {
        let (status, e) = call(&hearth, Some(&root), Method::PUT, path, body).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (400, Some("invalid_param")),
            "{path}: {e}"
        );
    }

    let (status, lifted) = call(&hearth, Some(&root), Method::DELETE, path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (lifted["blocked"].clone(), lifted["changed"].clone()),
        (json!(false), json!(true))
    );
    let (_, again) = call(&hearth, Some(&root), Method::DELETE, path, None).await;
    assert_eq!(again["changed"], false);
    let (_, list) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/federation/blocks",
        None,
    )
    .await;
    assert_eq!(list["blocked"], json!([]));

    let (_, audit) = call(&hearth, Some(&root), Method::GET, "/v1/admin/audit", None).await;
    let root_id = "@root:localhost";
    let rows: Vec<(String, String, String)> = audit_rows(&audit)
        .into_iter()
        .filter(|(_, action, _)| action.contains("block"))
        .collect();
    assert_eq!(
        rows,
        [
            (root_id, "block_hearth", "evil.test"),
            (root_id, "block_hearth", "evil.test"),
            (root_id, "unblock_hearth", "evil.test"),
            (root_id, "unblock_hearth", "evil.test"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
}

#[tokio::test]
async fn registration_tokens_admit_as_many_accounts_as_they_allow_even_in_a_race() {
    use reqwest::Method;
    let hearth = TestHearth::start_with(|c| c.auth.registration = Registration::Token).await;
    let created = socket(
        &hearth,
        AdminRequest::CreateUser {
            username: "root".into(),
            password: PASSWORD.into(),
            admin: true,
        },
    )
    .await;
    assert!(
        matches!(created, AdminResponse::Created { .. }),
        "{created:?}"
    );
    let mut root = Client::new(&hearth.url);
    root.login("root", PASSWORD, None).await.unwrap();

    let register = |name: &str, token: Option<&str>| {
        let url = hearth.url.clone();
        let (name, token) = (name.to_owned(), token.map(str::to_owned));
        async move {
            Client::new(&url)
                .register_with_token(&name, PASSWORD, None, token.as_deref())
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }
    };
    // No token, or one that does not exist: refused, and no account is made.
    assert_eq!(register("eve", None).await, Err(Some(ErrorCode::Forbidden)));
    assert_eq!(
        register("eve", Some("made-up")).await,
        Err(Some(ErrorCode::Forbidden))
    );

    let (status, made) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/registration_tokens",
        Some(json!({"uses": 2})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let token = made["token"]["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 40, "{token}");
    register("ann", Some(&token)).await.unwrap();
    // A taken name spends no use.
    assert_eq!(
        register("ann", Some(&token)).await,
        Err(Some(ErrorCode::UserExists))
    );
    register("ben", Some(&token)).await.unwrap();
    assert_eq!(
        register("cat", Some(&token)).await,
        Err(Some(ErrorCode::Forbidden))
    );
    let (_, listed) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/registration_tokens",
        None,
    )
    .await;
    assert_eq!(listed["tokens"][0]["uses"], 2);
    assert_eq!(listed["tokens"][0]["uses_allowed"], 2);

    // Eight registrations race for a token's one use: exactly one account is made.
    let (_, single) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/registration_tokens",
        Some(json!({"uses": 1})),
    )
    .await;
    let single = single["token"]["token"].as_str().unwrap().to_owned();
    let racers: Vec<_> = (0..8)
        .map(|i| tokio::spawn(register(&format!("racer{i}"), Some(&single))))
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(()) => won += 1,
            Err(code) => assert_eq!(code, Some(ErrorCode::Forbidden)),
        }
    }
    assert_eq!(won, 1);
    let (_, users) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users?q=racer",
        None,
    )
    .await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1);

    // A token that expired before it was made, or allows no use, is refused; deleting twice is
    // not found the second time.
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/registration_tokens",
        Some(json!({"expires_ts": 1})),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_param")));
    let (status, _) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/registration_tokens",
        Some(json!({"uses": 0})),
    )
    .await;
    assert_eq!(status, 400);
    let path = format!("/v1/admin/registration_tokens/{token}");
    assert_eq!(
        call(&hearth, Some(&root), Method::DELETE, &path, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&hearth, Some(&root), Method::DELETE, &path, None)
            .await
            .0,
        404
    );

    let (_, audit) = call(&hearth, Some(&root), Method::GET, "/v1/admin/audit", None).await;
    let actions: Vec<String> = audit_rows(&audit)
        .into_iter()
        .map(|(_, action, _)| action)
        .collect();
    assert_eq!(
        actions,
        [
            "create_user",
            "create_registration_token",
            "create_registration_token",
            "delete_registration_token"
        ]
    );
}

#[tokio::test]
async fn registration_closed_refuses_everyone_even_with_a_token() {
    let hearth = TestHearth::start_with(|c| c.auth.registration = Registration::Closed).await;
    let refused = Client::new(&hearth.url)
        .register_with_token("zed", PASSWORD, None, Some("anything"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
}

/// `hearth admin` on a stopped hearth, then on the running one: grant the flag, make a
/// registration token that `hearth-chat register --token` uses, and read the audit log.
#[tokio::test]
async fn the_admin_command_grants_admins_makes_tokens_and_prints_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let env = [
        ("HEARTH_DATA_DIR", data_s.as_str()),
        ("HEARTH_AUTH__REGISTRATION", "token"),
    ];
    let run_admin = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(hearth_binary())
            .arg("admin")
            .args(args)
            .envs(env)
            .env("HEARTH_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let admin = |args: &[&str], stdin: &str| {
        let out = run_admin(args, stdin);
        assert!(
            out.status.success(),
            "hearth admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Stopped: on the database directly.
    admin(&["create-user", "root"], "root password\n");
    admin(&["grant-admin", "root"], "");
    let token = admin(
        &[
            "create-registration-token",
            "--uses",
            "1",
            "--expires-days",
            "7",
        ],
        "",
    );
    let token = token.trim().to_owned();
    // What needs events sequenced says so, and does nothing; the rest works on the database.
    for args in [
        &["erase-user", "root", "--yes"][..],
        &["shutdown-room", "!nowhere:localhost", "--yes"][..],
    ] {
        let out = run_admin(args, "");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(said.contains("start the hearth"), "{args:?}: {said}");
    }
    assert_eq!(
        admin(&["notify", "root", "--text", "Welcome, root"], ""),
        "notice sent to 1 user(s)\n"
    );
    assert_eq!(
        admin(&["block-hearth", "evil.test"], ""),
        "blocked evil.test\n"
    );

    let hearth = HearthProcess::start(&data, &env).await.unwrap();
    let profile = dir.path().join("newcomer");
    let mut chat = Command::new(hearth_tests::chat_binary());
    use std::io::Write;
    let mut child = chat
        .args([
            "--profile",
            profile.to_str().unwrap(),
            "register",
            "newcomer",
        ])
        .arg(format!("--server={}", hearth.url))
        .args(["--token", &token])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"newcomer password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Running: through the socket.
    let tokens = admin(&["list-registration-tokens"], "");
    assert!(
        tokens.contains(&format!("{token}\tused 1 of 1")),
        "{tokens}"
    );
    let users = admin(&["list-users"], "");
    assert!(users.contains("@root:localhost\tactive\tadmin"), "{users}");
    assert!(users.contains("@newcomer:localhost\tactive\n"), "{users}");
    // The device's last-seen address is written off the request path: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let shown = admin(&["show-user", "newcomer"], "");
        let device = shown.lines().find(|l| l.starts_with("device\t"));
        assert!(device.is_some(), "{shown}");
        if device.is_some_and(|l| l.contains("\tseen from 127.0.0.1 at ")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = admin(&["audit-log"], "");
    let actions: Vec<&str> = log.lines().map(|l| l.split('\t').nth(3).unwrap()).collect();
    assert_eq!(
        actions,
        [
            "create_user",
            "grant_admin",
            "create_registration_token",
            "server_notice",
            "block_hearth"
        ],
        "{log}"
    );
    assert!(
        log.lines()
            .all(|l| l.split('\t').nth(2) == Some("hearth admin")),
        "{log}"
    );
    drop(hearth);
}

/// Attachments: each user's uploads count against `limits.media_quota_bytes` (an upload that
/// does not fit is refused and not kept; the same bytes again cost nothing); an admin lists a
/// user's uploads, quarantines one (served to nobody, local or not, but kept) and deletes one
/// (its bytes go back to the quota). Non-admins get 403; both actions are audited.
#[tokio::test]
async fn media_quotas_hold_and_admins_list_quarantine_and_delete_uploads() {
    use reqwest::Method;
    use sha2::{Digest, Sha256};
    let hearth = TestHearth::start_with(|c| c.limits.media_quota_bytes = 1000).await;
    let created = socket(
        &hearth,
        AdminRequest::CreateUser {
            username: "root".into(),
            password: PASSWORD.into(),
            admin: true,
        },
    )
    .await;
    assert!(matches!(created, AdminResponse::Created { .. }));
    let mut root = Client::new(&hearth.url);
    root.login("root", PASSWORD, None).await.unwrap();
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;

    let blob = |n: usize, fill: u8| vec![fill; n];
    let big = alice.upload_media(blob(600, 1)).await.unwrap().media_id;
    let small = alice.upload_media(blob(300, 2)).await.unwrap().media_id;
    let refused = alice.upload_media(blob(200, 3)).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::LimitExceeded));
    let refused_id: String = Sha256::digest(blob(200, 3))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        bob.download_media(&refused_id, None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotFound),
        "a refused upload is not kept"
    );
    // The same bytes again are stored once and counted once.
    assert_eq!(
        alice.upload_media(blob(600, 1)).await.unwrap().media_id,
        big
    );

    let (status, listed) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users/alice/media",
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["used_bytes"], 900);
    assert_eq!(listed["quota_bytes"], 1000);
    assert_eq!(listed["media"].as_array().unwrap().len(), 2);
    let (status, _) = call(
        &hearth,
        Some(&alice),
        Method::GET,
        "/v1/admin/users/alice/media",
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &hearth,
        Some(&alice),
        Method::POST,
        &format!("/v1/admin/media/{big}/quarantine"),
        None,
    )
    .await;
    assert_eq!(status, 403);

    // Quarantined: nobody is served it, its uploader included; the list says so.
    let (status, _) = call(
        &hearth,
        Some(&root),
        Method::POST,
        &format!("/v1/admin/media/{big}/quarantine"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.download_media(&big, None).await.unwrap_err().code(),
            Some(ErrorCode::NotFound)
        );
    }
    let (_, listed) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/users/alice/media",
        None,
    )
    .await;
    let quarantined: Vec<bool> = listed["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["quarantined"].as_bool().unwrap())
        .collect();
    assert_eq!(quarantined.iter().filter(|q| **q).count(), 1, "{listed}");

    // Deleted: gone, and its bytes are free again.
    let path = format!("/v1/admin/media/{small}");
    assert_eq!(
        call(&hearth, Some(&root), Method::DELETE, &path, None)
            .await
            .0,
        200
    );
    assert_eq!(
        bob.download_media(&small, None).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        call(&hearth, Some(&root), Method::DELETE, &path, None)
            .await
            .0,
        404
    );
    alice.upload_media(blob(350, 4)).await.unwrap();
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/media/..%2F..%2Fhearth.redb/quarantine",
        None,
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_param")),
        "{e}"
    );

    let (_, audit) = call(&hearth, Some(&root), Method::GET, "/v1/admin/audit", None).await;
    let actions: Vec<(String, String)> = audit_rows(&audit)
        .into_iter()
        .map(|(_, action, target)| (action, target))
        .collect();
    assert_eq!(
        actions[1..],
        [
            ("quarantine_media".to_owned(), big.clone()),
            ("delete_media".to_owned(), small.clone())
        ]
    );
}

/// Rooms as admins see them: paged in id order with kind, name, home, member count and latest
/// sequence number; a room's members; typed errors for a room that is not here or not an id.
#[tokio::test]
async fn admins_list_rooms_with_their_members() {
    use reqwest::Method;
    let hearth = TestHearth::start().await;
    let created = socket(
        &hearth,
        AdminRequest::CreateUser {
            username: "root".into(),
            password: PASSWORD.into(),
            admin: true,
        },
    )
    .await;
    assert!(matches!(created, AdminResponse::Created { .. }));
    let mut root = Client::new(&hearth.url);
    root.login("root", PASSWORD, None).await.unwrap();
    let mut alice = hearth.user("alice").await;
    let bob = hearth.user("bob").await;
    let carol = hearth.user("carol").await;
    let group = alice
        .create_room(
            hearth_spec::RoomKind::Group,
            Some("planning"),
            &[
                bob.user_id().unwrap().clone(),
                carol.user_id().unwrap().clone(),
            ],
        )
        .await
        .unwrap()
        .room_id;
    let direct = alice
        .create_room(
            hearth_spec::RoomKind::Direct,
            None,
            &[bob.user_id().unwrap().clone()],
        )
        .await
        .unwrap()
        .room_id;

    let (status, first) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/rooms?limit=1",
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = call(
        &hearth,
        Some(&root),
        Method::GET,
        &format!(
            "/v1/admin/rooms?limit=1&from={}",
            hearth_client::hearth::encode_path(&next)
        ),
        None,
    )
    .await;
    assert_eq!(second["next"], Value::Null, "{second}");
    let rooms: Vec<&Value> = [&first, &second]
        .iter()
        .map(|page| &page["rooms"][0])
        .collect();
    let find = |id: &str| *rooms.iter().find(|r| r["room_id"] == id).unwrap();
    let planning = find(group.as_str());
    assert_eq!(planning["kind"], "group");
    assert_eq!(planning["name"], "planning");
    assert_eq!(planning["home"], "localhost");
    assert_eq!(planning["members"], 3);
    assert!(planning["last_seq"].as_u64().unwrap() >= 1);
    assert_eq!(find(direct.as_str())["members"], 2);
    assert_eq!(find(direct.as_str())["kind"], "direct");

    let path = format!(
        "/v1/admin/rooms/{}/members",
        hearth_client::hearth::encode_path(group.as_str())
    );
    let (status, members) = call(&hearth, Some(&root), Method::GET, &path, None).await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["@alice:localhost", "@bob:localhost", "@carol:localhost"]
    );
    assert_eq!(
        call(&hearth, Some(&alice), Method::GET, &path, None)
            .await
            .0,
        403
    );
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/rooms/%21nothere%3Alocalhost/members",
        None,
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    let (status, e) = call(
        &hearth,
        Some(&root),
        Method::GET,
        "/v1/admin/rooms/garbage/members",
        None,
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_param")),
        "{e}"
    );
}

/// Notices from the admins: to one user or to everyone, shown live to connected devices and on
/// connect to the others until the user marks them read (on any device), and listed by the
/// terminal client, which shows what a control character in one would have done instead of
/// letting the terminal do it.
#[tokio::test]
async fn notices_reach_users_live_on_connect_and_in_the_terminal() {
    use hearth_spec::client::Notice;
    use hearth_spec::client::{ClientFrame, ServerFrame};
    use reqwest::Method;
    use std::time::Duration;
    let hearth = TestHearth::start().await;
    let root = hearth.user("root").await;
    let mut alice = hearth.user("alice").await;
    let mut bob = hearth.user("bob").await;
    grant_admin(hearth.data_dir(), "root").await;
    let profile = tempfile::tempdir().unwrap();
    let profile = profile.path().join("carol");
    let server = format!("--server={}", hearth.url);
    hearth_tests::hearth_chat(
        &profile,
        &["register", "carol", &server],
        "carol's password\n",
        &[],
    )
    .await;

    let hello = Some(json!({"body": "Maintenance at 22:00 UTC"}));
    let (status, _) = call(
        &hearth,
        Some(&alice),
        Method::POST,
        "/v1/admin/notices",
        hello.clone(),
    )
    .await;
    assert_eq!(status, 403);
    for (path, body, code) in [
        ("/v1/admin/notices", json!({"body": "  "}), 400),
        ("/v1/admin/notices", json!({"body": "x".repeat(4097)}), 400),
        ("/v1/admin/users/nobody/notices", json!({"body": "hi"}), 404),
    ] {
        let (status, e) = call(&hearth, Some(&root), Method::POST, path, Some(body)).await;
        assert_eq!(status, code, "{path}: {e}");
    }

    let (_bob_tx, mut bob_rx) = hearth_tests::connect_synced(&mut bob).await;
    let notice_frame = |f: &ServerFrame| matches!(f, ServerFrame::Notice { .. });
    let (status, sent) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/users/bob/notices",
        hello,
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent, json!({"result": "notice_sent", "recipients": 1}));
    let frames = hearth_tests::frames_until(&mut bob_rx, Duration::from_secs(20), notice_frame)
        .await
        .unwrap();
    let Some(ServerFrame::Notice { notice }) = frames.last() else {
        unreachable!()
    };
    assert_eq!(
        (notice.seq, notice.body.as_str()),
        (1, "Maintenance at 22:00 UTC")
    );

    // To everyone: each active user's next notice.
    let everyone = Some(json!({"body": "Welcome\u{1b}[2J all"}));
    let (_, sent) = call(
        &hearth,
        Some(&root),
        Method::POST,
        "/v1/admin/notices",
        everyone,
    )
    .await;
    assert_eq!(sent["recipients"], 4, "root, alice, bob and carol");
    let frames = hearth_tests::frames_until(&mut bob_rx, Duration::from_secs(20), notice_frame)
        .await
        .unwrap();
    assert!(
        matches!(frames.last(), Some(ServerFrame::Notice { notice }) if notice.seq == 2),
        "{frames:?}"
    );

    // Alice was away: her unread notice comes when she connects, right after `synced`.
    let (mut alice_tx, mut alice_rx) = hearth_tests::connect_synced(&mut alice).await;
    alice_tx
        .frame(&ClientFrame::Ping { nonce: 7 })
        .await
        .unwrap();
    let welcome = hearth_tests::frames_until(&mut alice_rx, Duration::from_secs(20), |f| {
        matches!(f, ServerFrame::Pong { .. })
    })
    .await
    .unwrap();
    let shown: Vec<&Notice> = welcome
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Notice { notice } => Some(notice),
            _ => None,
        })
        .collect();
    assert_eq!(shown.len(), 1, "{welcome:?}");
    assert_eq!(shown[0].body, "Welcome\u{1b}[2J all");

    // Read marks: shared by the user's devices; never past the last notice.
    let (_, page) = call(&hearth, Some(&alice), Method::GET, "/v1/notices", None).await;
    assert_eq!(page["read"], 0);
    assert_eq!(page["notices"].as_array().unwrap().len(), 1);
    let read = |seq: u64| Some(json!({ "seq": seq }));
    let (status, e) = call(
        &hearth,
        Some(&alice),
        Method::POST,
        "/v1/notices/read",
        read(2),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_param")));
    let (status, _) = call(
        &hearth,
        Some(&alice),
        Method::POST,
        "/v1/notices/read",
        read(1),
    )
    .await;
    assert_eq!(status, 204);
    let (_, page) = call(&hearth, Some(&alice), Method::GET, "/v1/notices", None).await;
    assert_eq!(page["read"], 1);
    let (mut alice_tx, mut alice_rx) = hearth_tests::connect_synced(&mut alice).await;
    alice_tx
        .frame(&ClientFrame::Ping { nonce: 8 })
        .await
        .unwrap();
    let welcome = hearth_tests::frames_until(&mut alice_rx, Duration::from_secs(20), |f| {
        matches!(f, ServerFrame::Pong { .. })
    })
    .await
    .unwrap();
    assert!(
        !welcome.iter().any(notice_frame),
        "read: not shown again: {welcome:?}"
    );
    let (_, page) = call(
        &hearth,
        Some(&bob),
        Method::GET,
        "/v1/notices?after=1&limit=1",
        None,
    )
    .await;
    assert_eq!(page["notices"][0]["seq"], 2);
    assert_eq!(page["next"], Value::Null);

    // The terminal: new notices marked, the escape shown as text, then read.
    let listed = hearth_tests::hearth_chat(&profile, &["notices"], "", &[]).await;
    assert!(listed.starts_with("notice #1 "), "{listed}");
    assert!(
        listed.trim_end().ends_with(" UTC new: Welcome^[[2J all"),
        "{listed:?}"
    );
    assert!(!listed.contains('\u{1b}'), "{listed:?}");
    let again = hearth_tests::hearth_chat(&profile, &["notices"], "", &[]).await;
    assert!(
        again.trim_end().ends_with(" UTC: Welcome^[[2J all"),
        "{again:?}"
    );

    let (_, audit) = call(&hearth, Some(&root), Method::GET, "/v1/admin/audit", None).await;
    let rows: Vec<(String, String, String)> = audit_rows(&audit)
        .into_iter()
        .filter(|(_, action, _)| action == "server_notice")
        .collect();
    assert_eq!(
        rows,
        [("bob", "server_notice"), ("everyone", "server_notice")].map(|(target, action)| (
            "@root:localhost".to_owned(),
            action.to_owned(),
            target.to_owned()
        ))
    );
}
