//! The web app's figures, in Debian's headless chromium against a real hearth: how long a
//! returning user waits for the room list, how big the download is, and how many messages per
//! second a tab decrypts, keeps and shows, live (bounded by the native sender's rate, reported
//! beside it) and catching up a backlog after it was closed (the page times its sync).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearth_client::SecureClient;
use hearth_spec::RoomKind;
use hearth_tests::browser::{Browser, PAGE_WAIT};

use crate::Report;
use crate::server::Hearth;

/// Bytes of a file of the built app, and of the same gzipped (`gzip -9`, as a reverse proxy
/// would serve it).
fn sizes(name: &str) -> anyhow::Result<(f64, f64)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../web/dist")
        .join(name);
    let raw = std::fs::metadata(&path)
        .with_context(|| format!("{}: run web/build first", path.display()))?
        .len();
    let gzipped = std::process::Command::new("gzip")
        .args(["-9", "-c"])
        .arg(&path)
        .output()
        .context("gzip")?
        .stdout
        .len();
    Ok((raw as f64 / 1024.0, gzipped as f64 / 1024.0))
}

/// A number the page computes.
async fn page_number(browser: &Browser, script: &str) -> anyhow::Result<f64> {
    browser
        .client
        .execute(script, vec![])
        .await?
        .as_f64()
        .with_context(|| format!("{script} gave no number"))
}

pub async fn web(hearth: &Hearth, messages: usize) -> anyhow::Result<Report> {
    let states = tempfile::tempdir()?;
    let browser = Browser::start(1100, 800).await?;
    browser.sign_in(&hearth.url, "alice", false).await?;
    let mut bob = SecureClient::open(hearth.user("bob").await?, states.path()).await?;
    let alice = hearth_spec::UserId::parse("@alice:localhost")?;
    let room = bob
        .create_room(RoomKind::Direct, None, std::slice::from_ref(&alice))
        .await?
        .room_id;
    bob.send_text(&room, "hello").await?;
    browser.wait_text(".room", "bob").await?;

    // A returning user: reload, the device resumes (wasm, IndexedDB, sync) and lists rooms.
    browser.client.refresh().await?;
    browser.wait_text(".room", "bob").await?;
    let first_render = page_number(
        &browser,
        "const m = performance.getEntriesByName('rooms-rendered')[0]; return m ? m.startTime : -1;",
    )
    .await?;
    if first_render < 0.0 {
        bail!("the page never marked the room list rendered");
    }

    // bob sends `messages`; the open room shows each, decrypted.
    browser.click_text(".room", "bob").await?;
    browser.wait_text(".line .text", "hello").await?;
    let count = "return document.querySelectorAll('.line.message:not(.own)').length;";
    let before = page_number(&browser, count).await? as usize;
    let start = Instant::now();
    for i in 0..messages {
        bob.send_text(&room, &format!("message {i}")).await?;
    }
    let sent = start.elapsed();
    let deadline = Instant::now() + PAGE_WAIT;
    while (page_number(&browser, count).await? as usize) < before + messages {
        if Instant::now() > deadline {
            bail!("the page did not show all {messages} messages");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shown = start.elapsed();

    // A tab that was closed while `messages` arrived catches up when it opens: the sync that
    // decrypts and keeps them, timed by the page.
    browser.client.goto("about:blank").await?;
    for i in 0..messages {
        bob.send_text(&room, &format!("while away {i}")).await?;
    }
    browser.client.goto(&hearth.url).await?;
    browser.wait_text(".room", "bob").await?;
    let deadline = Instant::now() + PAGE_WAIT;
    let synced = loop {
        let took = page_number(
            &browser,
            "const d = performance.getEntriesByName('sync-done')[0]; \
             const s = performance.getEntriesByName('sync-start')[0]; \
             return d && s ? d.startTime - s.startTime : -1;",
        )
        .await?;
        if took >= 0.0 {
            break took;
        }
        if Instant::now() > deadline {
            bail!("the page never finished its sync");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let (wasm, wasm_gz) = sizes("hearth_web_bg.wasm")?;
    let (js, js_gz) = sizes("app.js")?;
    Ok(Report {
        name: "web app in headless chromium",
        figures: vec![
            ("room list after reload", first_render, "ms", None),
            ("wasm", wasm, "KiB", None),
            ("wasm gzipped", wasm_gz, "KiB", None),
            ("app.js", js, "KiB", None),
            ("app.js gzipped", js_gz, "KiB", None),
            (
                "sender (native SDK) rate",
                messages as f64 / sent.as_secs_f64(),
                "msg/s",
                None,
            ),
            (
                "tab decrypts, keeps and shows (live)",
                messages as f64 / shown.as_secs_f64(),
                "msg/s",
                None,
            ),
            (
                "tab catches up a backlog",
                messages as f64 / (synced / 1000.0),
                "msg/s",
                None,
            ),
        ],
    })
}
