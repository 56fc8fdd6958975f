//! `/metrics` explains the hot path: after real traffic between two hearths (sends over HTTP, a
//! live WebSocket, typing, a push to an offline device, federation both ways), each series the
//! traffic should move has moved, labelled by route, status, peer and outcome; the process's
//! memory, CPU and descriptors are there; and every metric the Grafana dashboard in
//! `contrib/grafana/hearth.json` queries is one the hearths expose.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hearth_client::new_txn_id;
use hearth_spec::RoomKind;
use hearth_spec::api::{PusherKind, PusherRequest};
use hearth_tests::{PeerSpec, connect_synced, plan_network, register_at, start_network, user_id};

const WAIT: Duration = Duration::from_secs(60);

async fn scrape(me: &PeerSpec) -> String {
    reqwest::get(format!("http://127.0.0.1:{}/metrics", me.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the series `name` whose labels include every one of `labels` (in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// Metric names a text exposition holds, with samples or declared by a `# TYPE` line (a gauge
/// per peer has no sample while there is no peer with something queued), histogram suffixes
/// folded into the name.
fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(declared) => declared.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(|n| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_owned()
        })
        .collect()
}

/// Waits until `check` holds for a's and b's scrapes.
async fn until(network: &[PeerSpec], what: &str, check: impl Fn(&str, &str) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (a, b) = (scrape(&network[0]).await, scrape(&network[1]).await);
        if check(&a, &b) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}\n--- a.test ---\n{a}\n--- b.test ---\n{b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_explain_the_hot_path_and_cover_the_dashboard() {
    let root = tempfile::tempdir().unwrap();
    let network = plan_network(root.path(), &["a.test", "b.test"]).unwrap();
    let hearths = start_network(
        &network,
        &[
            ("HEARTH_PUSH__ALLOW_PRIVATE_ENDPOINTS", "true"),
            ("HEARTH_PUSH__COALESCE_MS", "100"),
        ],
    )
    .await
    .unwrap();
    let mut alice = register_at(&hearths[0].url, "alice").await;
    let mut bob = register_at(&hearths[1].url, "bob").await;
    let mut carol = register_at(&hearths[1].url, "carol").await;
    // dave is never online: a webhook stands for his phone.
    let mut dave = register_at(&hearths[1].url, "dave").await;
    let (push_url, pushed) = hearth_tests::push_receiver(200).await;
    dave.set_pusher(&PusherRequest {
        kind: PusherKind::Webhook,
        url: push_url,
        p256dh: None,
        auth: None,
    })
    .await
    .unwrap();

    // carol is live on b.test; alice's room on a.test has bob, carol and dave from b.test.
    let (_carol_live, _carol_frames) = connect_synced(&mut carol).await;
    let room = alice
        .create_room(
            RoomKind::Group,
            Some("metrics"),
            &[
                user_id("bob", "b.test"),
                user_id("carol", "b.test"),
                user_id("dave", "b.test"),
            ],
        )
        .await
        .unwrap()
        .room_id;
    const SENT: usize = 20;
    for i in 0..SENT {
        alice
            .send(&room, &new_txn_id(), format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    alice.typing(&room, true).await.unwrap();
    // bob writes back from b.test: an envelope out of b and into a.
    let mut waited = Instant::now();
    while bob.room(&room).await.is_err() {
        assert!(waited.elapsed() < WAIT, "the room never reached b.test");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.send(&room, &new_txn_id(), b"from b").await.unwrap();
    waited = Instant::now();
    while pushed.lock().unwrap().is_empty() {
        assert!(waited.elapsed() < WAIT, "dave's webhook was never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let send_route = [
        ("route", "/v1/rooms/{room_id}/send"),
        ("method", "POST"),
        ("status", "200"),
    ];
    until(&network, "every hot-path series moved", |a, b| {
        let at_least = |text: &str, name: &str, labels: &[(&str, &str)], n: f64| {
            sample(text, name, labels).is_some_and(|v| v >= n)
        };
        at_least(
            a,
            "hearth_send_seconds_count",
            &[("outcome", "accepted")],
            SENT as f64,
        ) && at_least(
            a,
            "hearth_http_request_seconds_count",
            &send_route,
            SENT as f64,
        ) && at_least(a, "hearth_commit_batch_requests_count", &[], 1.0)
            && at_least(a, "hearth_commit_seconds_count", &[], 1.0)
            && at_least(a, "hearth_typing_signals_total", &[], 1.0)
            && at_least(
                a,
                "hearth_federation_envelopes_total",
                &[
                    ("direction", "out"),
                    ("peer", "b.test"),
                    ("outcome", "stored"),
                ],
                1.0,
            )
            && at_least(
                a,
                "hearth_federation_envelopes_total",
                &[
                    ("direction", "in"),
                    ("peer", "b.test"),
                    ("outcome", "stored"),
                ],
                1.0,
            )
            && at_least(
                b,
                "hearth_federation_envelopes_total",
                &[
                    ("direction", "in"),
                    ("peer", "a.test"),
                    ("outcome", "stored"),
                ],
                1.0,
            )
            && at_least(b, "hearth_ws_connections", &[], 1.0)
            && at_least(
                b,
                "hearth_ws_frames_total",
                &[("direction", "out")],
                SENT as f64,
            )
            && at_least(b, "hearth_delivery_seconds_count", &[], 1.0)
            && at_least(
                b,
                "hearth_push_attempts_total",
                &[("kind", "webhook"), ("outcome", "delivered")],
                1.0,
            )
            && at_least(a, "process_resident_memory_bytes", &[], 1_000_000.0)
            && at_least(a, "process_open_fds", &[], 3.0)
            && at_least(a, "process_cpu_seconds_total", &[], 0.000_001)
    })
    .await;

    // Each histogram has its buckets, and the send histogram's +Inf bucket counts every send.
    let a = scrape(&network[0]).await;
    let all = sample(
        &a,
        "hearth_send_seconds_bucket",
        &[("outcome", "accepted"), ("le", "+Inf")],
    );
    assert_eq!(
        all,
        sample(&a, "hearth_send_seconds_count", &[("outcome", "accepted")])
    );
    assert!(
        sample(&a, "hearth_send_seconds_bucket", &[("le", "0.0001")]).is_some(),
        "{a}"
    );

    // The dashboard asks only for what the hearths expose.
    let exposed: BTreeSet<String> = names(&a)
        .into_iter()
        .chain(names(&scrape(&network[1]).await))
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana/hearth.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut asked = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("hearth_") || word.starts_with("process_") {
                    let name = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    asked.insert(name.to_owned());
                }
            }
        }
    }
    assert!(asked.len() >= 20, "{asked:?}");
    let missing: Vec<&String> = asked.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for {missing:?}, which no hearth exposes"
    );
}
