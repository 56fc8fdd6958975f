//! SIGHUP: a running `hearth serve --config FILE` reads its configuration again and applies the
//! rate limits and the log filter, while its connections stay open; a configuration that does
//! not load is refused and the hearth carries on. Logs are JSON lines with `log.format = "json"`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_client::new_txn_id;
use hearth_spec::client::ServerFrame;
use hearth_spec::{ErrorCode, RoomKind};
use hearth_tests::{connect_synced, frames_until, free_port, hearth_binary, register_at};

const WAIT: Duration = Duration::from_secs(60);

fn config(data: &std::path::Path, port: u16, sends: (f64, f64), level: &str) -> String {
    format!(
        "data_dir = {data:?}\n\
         [client_api]\nlisten = \"127.0.0.1:{port}\"\n\
         [federation]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\nargon2_m_cost_kib = 64\nargon2_t_cost = 1\n\
         [limits]\nsends = {{ per_second = {}, burst = {} }}\n\
         [log]\nlevel = \"{level}\"\nformat = \"json\"\n",
        sends.0, sends.1
    )
}

fn hangup(child: &std::process::Child) {
    // SAFETY: kill(2) on the hearth this test started; no memory is touched.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rate_limits_and_the_log_filter_and_keeps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hearth.toml");
    let data = dir.path().join("data");
    let port = free_port();
    // Two sends, then one every 1000 s: the third is refused.
    std::fs::write(&file, config(&data, port, (0.001, 2.0), "warn")).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(hearth_binary())
        .args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("HEARTH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/v1/health")).await.is_err() {
        assert!(started.elapsed() < WAIT, "the hearth never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut alice = register_at(&url, "alice").await;
    let room = alice
        .create_room(RoomKind::Group, Some("notes"), &[])
        .await
        .unwrap()
        .room_id;
    let (_live, mut frames) = connect_synced(&mut alice).await;
    for _ in 0..2 {
        alice.send(&room, &new_txn_id(), b"within").await.unwrap();
    }
    let refused = alice.send(&room, &new_txn_id(), b"over").await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited));

    // A configuration that does not load changes nothing, and the hearth serves on.
    std::fs::write(&file, "limits = 3\n").unwrap();
    hangup(&child);
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("the configuration does not load")
    {
        assert!(
            started.elapsed() < WAIT,
            "the bad configuration was not reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still = alice.send(&room, &new_txn_id(), b"over").await.unwrap_err();
    assert_eq!(still.code(), Some(ErrorCode::RateLimited));

    // Raised limits and a wider log filter, applied on SIGHUP.
    std::fs::write(&file, config(&data, port, (1000.0, 1000.0), "info")).unwrap();
    hangup(&child);
    let started = Instant::now();
    let last = loop {
        match alice.send(&room, &new_txn_id(), b"after").await {
            Ok(sent) => break sent.seq.unwrap(),
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::RateLimited));
                assert!(started.elapsed() < WAIT, "the new limits never applied");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut top = last;
    for _ in 0..20 {
        top = alice
            .send(&room, &new_txn_id(), b"many")
            .await
            .unwrap()
            .seq
            .unwrap();
    }
    // The WebSocket opened before the reload delivers what came after it.
    frames_until(
        &mut frames,
        WAIT,
        |f| matches!(f, ServerFrame::Event { event, .. } if event.seq == top),
    )
    .await
    .unwrap();

    // The reload was logged at info, which the old filter (warn) would have hidden; every log
    // line is a JSON object.
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("reloaded the rate limits and the log filter") {
            break text;
        }
        assert!(started.elapsed() < WAIT, "no reload line in {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("hearth: serving"))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for line in &lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["level"].is_string() && entry["fields"]["message"].is_string());
    }
    let _ = child.kill();
    let _ = child.wait();
}
