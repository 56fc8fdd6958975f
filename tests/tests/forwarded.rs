//! A hearth behind a reverse proxy (`client_api.trusted_proxies`): requests the proxy carries
//! count as from the client its `X-Forwarded-For` names (each client its own login rate bucket,
//! its own last-seen address), the per-address connection cap does not throttle the proxy, and
//! a client that is not a trusted proxy gains nothing by sending the header itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hearth_node::ops::admin::{AdminRequest, AdminResponse, request_socket};
use hearth_node::ops::data_dir::admin_socket_path;
use hearth_spec::rate::Rate;
use hearth_tests::TestHearth;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 9, 1);
const DIRECT: Ipv4Addr = Ipv4Addr::new(127, 0, 9, 2);

/// An HTTP client whose connections come from `source`.
fn from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .build()
        .unwrap()
}

/// A login's status, sent from `client` with `forwarded` as `X-Forwarded-For` (if any).
async fn login(hearth: &TestHearth, client: &reqwest::Client, forwarded: Option<&str>) -> u16 {
    let mut request = client
        .post(format!("{}/v1/login", hearth.url))
        .json(&json!({"username": "alice", "password": "correct horse battery"}));
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    request.send().await.unwrap().status().as_u16()
}

/// A keep-alive connection from `source`, and whether a health request on it was served.
async fn open_from(source: Ipv4Addr, server: SocketAddr) -> (TcpStream, bool) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let served = stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: hearth\r\n\r\n")
        .await
        .is_ok()
        && {
            let mut head = [0u8; 12];
            matches!(
                tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut head)).await,
                Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 200")
            )
        };
    (stream, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_is_its_forwarded_address() {
    let hearth = TestHearth::start_with(|c| {
        c.client_api.trusted_proxies = vec![PROXY.to_string()];
        c.client_api.max_connections_per_ip = 2;
        // Three register/login/refresh requests per address, then 429 for a long while.
        c.limits.auth = Rate::new(0.001, 3.0);
    })
    .await;
    let proxy = from(PROXY);
    let direct = from(DIRECT);
    let status = proxy
        .post(format!("{}/v1/register", hearth.url))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&json!({"username": "alice", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);

    // Through the proxy, 203.0.113.7 spends its own bucket; 203.0.113.8 still has all of its.
    assert_eq!(login(&hearth, &proxy, Some("203.0.113.7")).await, 200);
    assert_eq!(login(&hearth, &proxy, Some("203.0.113.7")).await, 200);
    assert_eq!(login(&hearth, &proxy, Some("203.0.113.7")).await, 429);
    // A client that puts its own claim in front of the proxy's entry is still 203.0.113.7.
    assert_eq!(
        login(&hearth, &proxy, Some("198.51.100.99, 203.0.113.7")).await,
        429
    );
    for _ in 0..3 {
        assert_eq!(login(&hearth, &proxy, Some("203.0.113.8")).await, 200);
    }

    // Straight from a client that is not a proxy, the header changes nothing.
    for forwarded in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert_eq!(login(&hearth, &direct, Some(forwarded)).await, 200);
    }
    assert_eq!(login(&hearth, &direct, Some("192.0.2.4")).await, 429);

    // The device's last-seen address is the forwarded one.
    let session: hearth_spec::api::Session = proxy
        .post(format!("{}/v1/login", hearth.url))
        .header("x-forwarded-for", "198.51.100.20")
        .json(&json!({"username": "alice", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rooms = proxy
        .get(format!("{}/v1/rooms", hearth.url))
        .bearer_auth(&session.access_token)
        .header("x-forwarded-for", "198.51.100.20")
        .send()
        .await
        .unwrap();
    assert_eq!(rooms.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = request_socket(
            &admin_socket_path(hearth.data_dir()),
            &AdminRequest::User {
                user_id: "alice".into(),
            },
        )
        .await
        .unwrap();
        let AdminResponse::User { devices, .. } = shown else {
            panic!("{shown:?}")
        };
        let seen = devices
            .iter()
            .find(|d| d.device_id == session.device_id)
            .and_then(|d| d.last_seen_ip.clone());
        if seen.as_deref() == Some("198.51.100.20") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "last seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The proxy holds more connections than one address may; a client at the cap gets no more.
    let server: SocketAddr = hearth.url.trim_start_matches("http://").parse().unwrap();
    let mut kept = Vec::new();
    for _ in 0..4 {
        let (stream, served) = open_from(PROXY, server).await;
        assert!(served, "the proxy's connection was refused");
        kept.push(stream);
    }
    // (A fresh address: the HTTP clients above may still hold connections from theirs.)
    let client = Ipv4Addr::new(127, 0, 9, 3);
    for _ in 0..2 {
        let (stream, served) = open_from(client, server).await;
        assert!(served);
        kept.push(stream);
    }
    let (_third, served) = open_from(client, server).await;
    assert!(!served, "a third connection from one address was served");
}

#[test]
fn a_trusted_proxy_that_is_not_an_address_is_a_config_error() {
    let error = hearth_node::config::Config::load(
        None,
        [(
            "HEARTH_CLIENT_API__TRUSTED_PROXIES".to_owned(),
            r#"["10.0.0.0/8", "proxy.internal"]"#.to_owned(),
        )],
    )
    .unwrap_err();
    assert!(error.to_string().contains("proxy.internal"), "{error}");
}
