//! The web app in a real browser (Debian's chromium, headless): a browser user and a native SDK
//! user (what `hearth-chat` runs on) talk in one end-to-end encrypted room, both ways, live, and
//! send each other pictures; the
//! page shows the other member's receipts, typing and presence, and the same safety fingerprint
//! the other member's device sees; a reload keeps the device and its history without logging in
//! again; one tab at a time holds the device, and a second takes it over when the first closes.

use std::time::Duration;

use hearth_client::e2ee::Received;
use hearth_spec::RoomKind;
use hearth_spec::client::{ReceiptKind, ServerFrame};
use hearth_tests::browser::{Browser, PAGE_WAIT};
use hearth_tests::{
    HearthProcess, TestHearth, connect_synced, frames_until, hearth_chat, secure, texts,
};

/// Syncs `device` until it has read `text`.
async fn read_until(device: &mut hearth_client::SecureClient, text: &str) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    let mut got = Vec::new();
    loop {
        got.extend(device.sync().await.unwrap());
        if texts(&got).iter().any(|t| t == text) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never read {text:?}; read {:?}",
            texts(&got)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// In the page: starts a 1:1 with bob and writes `text` to him; once bob's device has read it,
/// the room and the message's sequence number.
async fn write_to_bob(
    browser: &Browser,
    bob: &mut hearth_client::SecureClient,
    text: &str,
) -> (hearth_spec::RoomId, u64) {
    browser.type_into("#new-chat-members", "bob").await.unwrap();
    browser.click("#new-chat").await.unwrap();
    browser.wait_text("#room-title", "bob").await.unwrap();
    browser.send(text).await.unwrap();
    read_until(bob, text)
        .await
        .iter()
        .find_map(|r| match r {
            Received::Message { room, seq, .. } => Some((room.clone(), *seq)),
            _ => None,
        })
        .unwrap()
}

/// A 1×1 PNG.
fn dot_png() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
        .unwrap()
}

/// Syncs `device` until a message with an attachment named `name` arrives; the attachment.
async fn read_until_attachment(
    device: &mut hearth_client::SecureClient,
    name: &str,
) -> hearth_spec::e2ee::AttachmentRef {
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        for received in device.sync().await.unwrap() {
            if let Received::Message { body, .. } = received
                && let Some(attachment) = body.attachment
                && attachment.name == name
            {
                return attachment;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the page shows the image `name`, decrypted (a picture the browser could decode).
async fn wait_for_preview(browser: &Browser, name: &str) {
    let script = format!(
        "const img = document.querySelector('img.preview[alt=\"{name}\"]'); \
         return img && img.complete ? img.naturalWidth : 0;"
    );
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        let width = browser.client.execute(&script, vec![]).await.unwrap();
        if width.as_u64() == Some(1) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no preview of {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_browser_user_and_a_native_user_chat_encrypted_and_a_reload_keeps_the_device() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let mut bob = secure(hearth.user("bob").await, &states.path().join("bob")).await;
    let browser = Browser::start(1100, 800).await.unwrap();
    let page = &browser.client;

    // Register in the page.
    browser.sign_in(&hearth.url, "alice", false).await.unwrap();

    // Start a 1:1 with bob and write to him; bob's device reads it, and answers; the page shows
    // the answer live.
    let (room, seq) = write_to_bob(&browser, &mut bob, "hello from the browser").await;
    bob.send_text(&room, "hi alice, from the SDK")
        .await
        .unwrap();
    browser
        .wait_text(".line .text", "hi alice, from the SDK")
        .await
        .unwrap();

    // bob's receipts, typing and presence reach the page. His reply read what came before it:
    // ✓✓ read on alice's first message. Connected, he is online; what his device then takes is
    // ✓✓ delivered, and ✓✓ read once he marks it.
    browser
        .wait_text(".line.own .tick.read", "✓✓")
        .await
        .unwrap();
    bob.client().typing(&room, true).await.unwrap();
    browser.wait_text("#typing", "bob is typing").await.unwrap();
    let (mut bob_live, mut bob_frames) = connect_synced(bob.client()).await;
    browser.wait_text("#room-status", "online").await.unwrap();
    browser
        .type_into("#composer", "are you there?")
        .await
        .unwrap();
    browser.click("#send").await.unwrap();
    let frames = frames_until(&mut bob_frames, PAGE_WAIT, |f| {
        matches!(f, ServerFrame::Event { event, .. } if event.sender.as_str() == "@alice:localhost" && event.seq > seq + 1)
    })
    .await
    .unwrap();
    let Some(ServerFrame::Event { cursor, event }) = frames.last() else {
        unreachable!("frames_until ends with the frame it waited for")
    };
    bob_live.ack(*cursor).await.unwrap();
    browser
        .wait_text(
            &format!(".line[data-seq='{}'] .tick.delivered", event.seq),
            "✓✓",
        )
        .await
        .unwrap();
    bob.client().mark_read(&room, event.seq).await.unwrap();
    browser
        .wait_text(&format!(".line[data-seq='{}'] .tick.read", event.seq), "✓✓")
        .await
        .unwrap();

    // Attachments both ways: the page encrypts and uploads a picture (with progress) that bob's
    // device downloads and decrypts byte for byte; bob's picture is previewed in the page.
    let picture = states.path().join("dot.png");
    std::fs::write(&picture, dot_png()).unwrap();
    browser
        .element("#file")
        .await
        .unwrap()
        .send_keys(picture.to_str().unwrap())
        .await
        .unwrap();
    browser
        .wait_text(".line.own .attachment .download", "dot.png")
        .await
        .unwrap();
    let got = read_until_attachment(&mut bob, "dot.png").await;
    assert_eq!(bob.fetch_file(&got).await.unwrap(), dot_png());
    bob.send_file(&room, "from-bob.png", &dot_png(), "a dot for you")
        .await
        .unwrap();
    browser
        .wait_text(".line .attachment .download", "from-bob.png")
        .await
        .unwrap();
    wait_for_preview(&browser, "from-bob.png").await;
    browser.screenshot("web-chat").await.unwrap();

    // The page shows the fingerprint bob's device has for alice's.
    browser.click("footer summary").await.unwrap();
    let shown = browser.wait_text("#fingerprint", "").await.unwrap();
    let alice_id = hearth_spec::UserId::parse("@alice:localhost").unwrap();
    let known: Vec<String> = bob
        .mls()
        .member_fingerprints(&room)
        .into_iter()
        .filter(|(user, _, _)| *user == alice_id)
        .map(|(_, _, f)| f)
        .collect();
    assert_eq!(known, vec![shown.clone()]);
    // And the room's keys list both devices' fingerprints, as bob's device knows them.
    browser.click("#members").await.unwrap();
    browser.wait_text("#fingerprints", &shown).await.unwrap();
    browser
        .wait_text("#fingerprints", &bob.mls().fingerprint())
        .await
        .unwrap();

    // A reload resumes the same device: no login form, the room and both messages are there.
    page.refresh().await.unwrap();
    browser
        .wait_text("aside header strong", "@alice:localhost")
        .await
        .unwrap();
    browser.click(".room").await.unwrap();
    browser
        .wait_text(".line .text", "hello from the browser")
        .await
        .unwrap();
    browser
        .wait_text(".line .text", "hi alice, from the SDK")
        .await
        .unwrap();
    // Its search index is rebuilt from what it kept.
    browser.type_into("#search", "hello brow").await.unwrap();
    browser
        .wait_text(".result", "hello from the browser")
        .await
        .unwrap();
    // And it still reads what comes after.
    bob.send_text(&room, "still there after the reload?")
        .await
        .unwrap();
    browser
        .wait_text(".line .text", "still there after the reload?")
        .await
        .unwrap();

    // Logging out forgets the device here: the login form, and again after a reload.
    browser.click("footer summary").await.unwrap();
    browser.click("#logout").await.unwrap();
    browser.element("#username").await.unwrap();
    page.refresh().await.unwrap();
    browser.element("#username").await.unwrap();
    assert!(page.find(fantoccini::Locator::Css("aside")).await.is_err());
}

/// Runs `hearth-chat` as `profile` and returns what it printed.
async fn chat(profile: &std::path::Path, args: &[&str]) -> String {
    hearth_chat(profile, args, "correct horse battery\n", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_users_and_a_terminal_user_share_a_group_and_a_second_browser_device_joins() {
    let data = tempfile::tempdir().unwrap();
    let hearth = HearthProcess::start(&data.path().join("data"), &[])
        .await
        .unwrap();
    let url = hearth.url.clone();
    let profiles = tempfile::tempdir().unwrap();
    let dave = profiles.path().join("dave");
    chat(&dave, &["register", "dave", &format!("--server={url}")]).await;
    let (alice, carol) = (
        Browser::start(1100, 800).await.unwrap(),
        Browser::start(390, 844).await.unwrap(),
    );
    alice.sign_in(&url, "alice", false).await.unwrap();
    carol.sign_in(&url, "carol", false).await.unwrap();

    // alice makes the group; carol finds it in her list (on a phone-sized screen) and reads.
    alice
        .type_into("#new-chat-members", "carol dave")
        .await
        .unwrap();
    alice.type_into("#new-chat-name", "friends").await.unwrap();
    alice.click("#new-chat").await.unwrap();
    alice.wait_text("#room-title", "friends").await.unwrap();
    alice.send("hi all").await.unwrap();
    carol.click_text(".room", "friends").await.unwrap();
    carol.wait_text(".line .text", "hi all").await.unwrap();

    // dave, in the terminal, reads it and answers; both browsers show his answer live.
    let history = chat(&dave, &["history", "friends"]).await;
    assert!(history.contains("hi all"), "{history}");
    chat(&dave, &["send", "friends", "from the terminal"]).await;
    alice
        .wait_text(".line .text", "from the terminal")
        .await
        .unwrap();
    carol
        .wait_text(".line .text", "from the terminal")
        .await
        .unwrap();
    carol.send("carol here").await.unwrap();
    alice.wait_text(".line .text", "carol here").await.unwrap();
    let history = chat(&dave, &["history", "friends"]).await;
    assert!(history.contains("carol here"), "{history}");
    carol.screenshot("web-phone-group").await.unwrap();

    // carol searches what her device read (the hearth has only ciphertext) and jumps to it.
    carol.click(".back").await.unwrap();
    carol.type_into("#search", "TERMIN").await.unwrap();
    carol
        .click_text(".result", "from the terminal")
        .await
        .unwrap();
    carol
        .wait_text(".line.focus .text", "from the terminal")
        .await
        .unwrap();

    // alice logs in on a second browser: it joins her group and reads what is sent after.
    let laptop = Browser::start(1100, 800).await.unwrap();
    laptop.sign_in(&url, "alice", true).await.unwrap();
    laptop.click_text(".room", "friends").await.unwrap();
    chat(&dave, &["send", "friends", "welcome, second device"]).await;
    laptop
        .wait_text(".line .text", "welcome, second device")
        .await
        .unwrap();
    carol.send("hello both of you").await.unwrap();
    laptop
        .wait_text(".line .text", "hello both of you")
        .await
        .unwrap();
    alice
        .wait_text(".line .text", "hello both of you")
        .await
        .unwrap();
    // What was sent before the device existed is shown as such, never as garbage.
    laptop
        .wait_text(".line.unreadable .text", "cannot read")
        .await
        .unwrap();

    // From the laptop, alice removes her first browser device: it is logged out at once and
    // says so; the group goes on without it.
    laptop.click("footer summary").await.unwrap();
    // Each browser is named after itself, so the two can be told apart from their ids.
    let listed = laptop
        .wait_text("#devices", "Chrome on Linux")
        .await
        .unwrap();
    assert_eq!(listed.matches("Chrome on Linux").count(), 2, "{listed}");
    laptop.click(".remove-device").await.unwrap();
    laptop.client.accept_alert().await.unwrap();
    alice
        .wait_text(".login .error", "This device was logged out")
        .await
        .unwrap();
    carol.send("after the removal").await.unwrap();
    laptop
        .wait_text(".line .text", "after the removal")
        .await
        .unwrap();
    let history = chat(&dave, &["history", "friends"]).await;
    assert!(history.contains("after the removal"), "{history}");

    // alice invites erin (a terminal user) from the page; erin reads what is sent after.
    let erin = profiles.path().join("erin");
    chat(&erin, &["register", "erin", &format!("--server={url}")]).await;
    laptop.click("#invite").await.unwrap();
    laptop.client.send_alert_text("erin").await.unwrap();
    laptop.client.accept_alert().await.unwrap();
    laptop
        .wait_text(".line.member .event", "added @erin:localhost")
        .await
        .unwrap();
    laptop.send("welcome erin").await.unwrap();
    let history = chat(&erin, &["history", "friends"]).await;
    assert!(history.contains("welcome erin"), "{history}");

    // carol leaves from her phone: the others see it, and what they send next is not for her.
    carol.click("#leave").await.unwrap();
    carol.client.accept_alert().await.unwrap();
    laptop
        .wait_text(".line.member .event", "@carol:localhost left")
        .await
        .unwrap();
    chat(&dave, &["send", "friends", "just the three of us"]).await;
    laptop
        .wait_text(".line .text", "just the three of us")
        .await
        .unwrap();
    let groups = carol
        .client
        .execute(
            "return [...document.querySelectorAll('.room')].map(r => r.innerText).join('|')",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        !groups.as_str().unwrap_or("").contains("friends"),
        "{groups}"
    );

    // alice made the group, so she is its admin: from the laptop she removes dave, whose
    // terminal reads nothing sent after.
    laptop.click("#people").await.unwrap();
    laptop
        .wait_text(
            "#people-list li[data-user='@alice:localhost'] .admin",
            "admin",
        )
        .await
        .unwrap();
    laptop
        .click("#people-list li[data-user='@erin:localhost'] .make-admin")
        .await
        .unwrap();
    laptop
        .wait_text(
            ".line.member .event",
            "@alice:localhost made @erin:localhost an admin",
        )
        .await
        .unwrap();
    laptop
        .wait_text(
            "#people-list li[data-user='@erin:localhost'] .admin",
            "admin",
        )
        .await
        .unwrap();
    let members = chat(&erin, &["members", "friends"]).await;
    assert!(
        members.contains("@erin:localhost (you)\tadmin"),
        "{members}"
    );
    laptop
        .click("#people-list li[data-user='@dave:localhost'] .remove-member")
        .await
        .unwrap();
    laptop.client.accept_alert().await.unwrap();
    laptop
        .wait_text(
            ".line.member .event",
            "@alice:localhost removed @dave:localhost",
        )
        .await
        .unwrap();
    laptop.send("dave is out").await.unwrap();
    let history = chat(&erin, &["history", "friends"]).await;
    assert!(history.contains("dave is out"), "{history}");
    let rooms = chat(&dave, &["rooms"]).await;
    assert!(!rooms.contains("friends"), "{rooms}");

    // carol, who left, is invited back: her browser joins the group again in place of the state
    // it kept, and reads what is sent after.
    laptop.click("#invite").await.unwrap();
    laptop.client.send_alert_text("carol").await.unwrap();
    laptop.client.accept_alert().await.unwrap();
    laptop
        .wait_text(".line.member .event", "added @carol:localhost")
        .await
        .unwrap();
    laptop.send("welcome back carol").await.unwrap();
    carol.click_text(".room", "friends").await.unwrap();
    carol
        .wait_text(".line .text", "welcome back carol")
        .await
        .unwrap();
    carol.send("good to be back").await.unwrap();
    let history = chat(&erin, &["history", "friends"]).await;
    assert!(history.contains("good to be back"), "{history}");
}

#[tokio::test]
async fn the_app_is_served_gzipped_to_who_accepts_it_revalidated_and_locked_down() {
    let hearth = TestHearth::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = http.get(format!("{}{path}", hearth.url));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send()
    };
    let plain = get("/hearth_web_bg.wasm", &[]).await.unwrap();
    assert_eq!(plain.headers()["content-type"], "application/wasm");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_tag = plain.headers()["etag"].clone();
    assert!(plain.bytes().await.unwrap().starts_with(b"\0asm"));

    let zipped = get("/hearth_web_bg.wasm", &[("accept-encoding", "br, gzip")])
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["vary"], "accept-encoding");
    let zipped_tag = zipped.headers()["etag"].clone();
    assert_ne!(zipped_tag, plain_tag);
    let body = zipped.bytes().await.unwrap();
    assert!(body.starts_with(&[0x1f, 0x8b]));
    // Refused gzip (q=0) gets the plain bytes.
    let refused = get("/hearth_web_bg.wasm", &[("accept-encoding", "gzip;q=0")])
        .await
        .unwrap();
    assert!(refused.headers().get("content-encoding").is_none());

    // Revalidation: the same tag is 304 with no body.
    let again = get(
        "/hearth_web_bg.wasm",
        &[
            ("accept-encoding", "gzip"),
            ("if-none-match", zipped_tag.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    // The page: no-cache, and a policy that allows only this hearth's scripts and connections.
    let page = get("/", &[]).await.unwrap();
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("script-src 'self' 'wasm-unsafe-eval'"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(page.text().await.unwrap().contains("/app.js"));
    // The service worker, from the root (its scope is the app), as a script, revalidated too.
    let worker = get("/sw.js", &[]).await.unwrap();
    assert_eq!(worker.status(), 200);
    assert_eq!(
        worker.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(worker.headers()["cache-control"], "no-cache");
    assert!(worker.text().await.unwrap().contains("showNotification"));
    // The API's own errors are untouched: an unknown path is still a JSON 404.
    let missing = get("/v2/nothing", &[]).await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// A browser device never marks read what it cannot decrypt (as hearth-chat): opening a room
/// whose earlier messages were sent before the device existed does not mark them read; the first
/// read mark bob hears of from alice covers a message her browser could decrypt.
#[tokio::test]
async fn a_browser_device_never_marks_read_what_it_cannot_decrypt() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let mut bob = secure(hearth.user("bob").await, &states.path().join("bob")).await;
    // alice's first device exists (so bob can write to her) but never reads anything.
    let alice_first = secure(hearth.user("alice").await, &states.path().join("alice")).await;
    let alice = alice_first.mls().identity().0.clone();
    let room = bob
        .create_room(RoomKind::Direct, None, std::slice::from_ref(&alice))
        .await
        .unwrap()
        .room_id;
    bob.send_text(&room, "before your browser").await.unwrap();
    // bob's live connection hears every read receipt of alice's, in order.
    let (_bob_live, mut bob_frames) = connect_synced(bob.client()).await;

    let browser = Browser::start(1100, 800).await.unwrap();
    browser.sign_in(&hearth.url, "alice", true).await.unwrap();
    browser.click_text(".room", "bob").await.unwrap();
    browser
        .wait_text(".line.unreadable .text", "cannot read")
        .await
        .unwrap();
    let after = bob.send_text(&room, "after it").await.unwrap().seq.unwrap();
    browser.wait_text(".line .text", "after it").await.unwrap();
    let is_alice_read = |f: &ServerFrame| matches!(f, ServerFrame::Receipt { kind: ReceiptKind::Read, user_id, .. } if *user_id == alice);
    let frames = frames_until(&mut bob_frames, PAGE_WAIT, is_alice_read)
        .await
        .unwrap();
    let Some(ServerFrame::Receipt { seq, .. }) = frames.last() else {
        unreachable!("frames_until ends with the frame it waited for")
    };
    assert!(
        *seq >= after,
        "alice's first read mark is {seq}, before {after}: it covers what her browser could not read"
    );
}

/// One tab at a time holds the browser's device (two would each advance the same MLS state and
/// could use a key twice): a second tab says the app is open elsewhere and opens nothing; when
/// the first tab closes, it takes the device over and reads and writes where the first left off.
#[tokio::test]
async fn a_second_tab_waits_for_the_first_to_close_and_then_takes_the_device_over() {
    let hearth = TestHearth::start().await;
    let states = tempfile::tempdir().unwrap();
    let mut bob = secure(hearth.user("bob").await, &states.path().join("bob")).await;
    let browser = Browser::start(1100, 800).await.unwrap();
    let page = &browser.client;
    browser.sign_in(&hearth.url, "alice", false).await.unwrap();
    let (room, _) = write_to_bob(&browser, &mut bob, "from the first tab").await;

    let first = page.window().await.unwrap();
    let second = page.new_window(true).await.unwrap().handle;
    page.switch_to_window(second).await.unwrap();
    page.goto(&hearth.url).await.unwrap();
    browser
        .wait_text("#elsewhere", "open in another tab")
        .await
        .unwrap();
    assert!(page.find(fantoccini::Locator::Css("aside")).await.is_err());
    assert!(
        page.find(fantoccini::Locator::Css("#username"))
            .await
            .is_err()
    );
    // While it waits, bob writes; only the first tab reads it.
    bob.send_text(&room, "while two tabs are open")
        .await
        .unwrap();

    page.switch_to_window(first).await.unwrap();
    browser
        .wait_text(".line .text", "while two tabs are open")
        .await
        .unwrap();
    page.close_window().await.unwrap();
    let left = page.windows().await.unwrap();
    assert_eq!(left.len(), 1);
    page.switch_to_window(left.into_iter().next().unwrap())
        .await
        .unwrap();
    browser
        .wait_text("aside header strong", "@alice:localhost")
        .await
        .unwrap();
    browser.click_text(".room", "bob").await.unwrap();
    browser
        .wait_text(".line .text", "while two tabs are open")
        .await
        .unwrap();
    bob.send_text(&room, "after the first tab closed")
        .await
        .unwrap();
    browser
        .wait_text(".line .text", "after the first tab closed")
        .await
        .unwrap();
    browser.send("from the second tab").await.unwrap();
    read_until(&mut bob, "from the second tab").await;
}

/// Web Push for a closed tab: the page subscribes with the hearth's VAPID key and registers the
/// subscription; with the tab closed, a message makes the hearth push an encrypted, signed
/// notification that names the sender and never the content; the app's service worker, woken
/// from cold, shows it; the address it opens (`/#room=…`) shows the chat and closes it.
///
/// The browser vendor's push service (Google's, for chromium) is out of reach here, so the test
/// stands in at both of its ends: `pushManager.subscribe` answers with an endpoint the test
/// serves and keys it holds, and what arrives there is decrypted with them and handed to the
/// service worker through DevTools, as the browser would after its push service delivered it.
#[tokio::test]
async fn a_closed_tab_is_notified_by_web_push_and_the_notification_opens_the_chat() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

    let hearth = TestHearth::start_with(|c| {
        c.push.allow_private_endpoints = true;
        c.push.coalesce_ms = 200;
    })
    .await;
    // The push service's endpoint: records every encrypted body.
    let (endpoint, seen) = hearth_tests::push_receiver(201).await;
    // The keys the browser would make for the subscription.
    let ua_secret = web_push_native::p256::SecretKey::random(&mut rand::rngs::OsRng);
    let p256dh = URL_SAFE_NO_PAD.encode(ua_secret.public_key().to_encoded_point(false).as_bytes());
    let auth: [u8; 16] = rand::random();

    let states = tempfile::tempdir().unwrap();
    let mut bob = secure(hearth.user("bob").await, &states.path().join("bob")).await;
    let browser = Browser::start(1100, 800).await.unwrap();
    let page = &browser.client;
    browser.sign_in(&hearth.url, "dana", false).await.unwrap();
    let (room, _) = write_to_bob(&browser, &mut bob, "ping me when I am away").await;

    page.execute(
        "const [endpoint, p256dh, auth] = arguments;
         let subscription = null;
         PushManager.prototype.getSubscription = () => Promise.resolve(subscription);
         PushManager.prototype.subscribe = (options) => {
           window.subscribedWith = Array.from(new Uint8Array(options.applicationServerKey));
           subscription = {
             endpoint,
             options: { applicationServerKey: new Uint8Array(options.applicationServerKey).buffer },
             toJSON: () => ({ endpoint, keys: { p256dh, auth } }),
             unsubscribe: () => { subscription = null; return Promise.resolve(true); },
           };
           return Promise.resolve(subscription);
         };",
        vec![
            endpoint.clone().into(),
            p256dh.into(),
            URL_SAFE_NO_PAD.encode(auth).into(),
        ],
    )
    .await
    .unwrap();
    browser.click("footer summary").await.unwrap();
    browser.click("#notifications-on").await.unwrap();
    browser
        .wait_text("#notifications", "Notifications are on")
        .await
        .unwrap();
    browser.screenshot("web-notifications").await.unwrap();
    let subscribed_with: Vec<u8> = serde_json::from_value(
        page.execute("return window.subscribedWith", vec![])
            .await
            .unwrap(),
    )
    .unwrap();
    let vapid = bob.client().vapid_public_key().await.unwrap();
    assert_eq!(
        subscribed_with,
        URL_SAFE_NO_PAD.decode(&vapid).unwrap(),
        "the page subscribes with the hearth's VAPID key"
    );

    // The tab closes; bob writes until the hearth, seeing no connection of dana's, pushes.
    page.goto("about:blank").await.unwrap();
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    let mut sent = 0;
    let body = loop {
        if let Some((_, body)) = seen.lock().unwrap().first().cloned() {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push in {PAGE_WAIT:?}"
        );
        bob.send_text(&room, &format!("are you there? {sent}"))
            .await
            .unwrap();
        sent += 1;
        let wait = tokio::time::Instant::now() + Duration::from_secs(3);
        while seen.lock().unwrap().is_empty() && tokio::time::Instant::now() < wait {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(!String::from_utf8_lossy(&body).contains("are you there"));
    let plain = web_push_native::decrypt(
        body,
        &ua_secret,
        &web_push_native::Auth::clone_from_slice(&auth),
    )
    .expect("encrypted for the page's subscription");
    let pushed: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(pushed["room_id"], room.as_str());
    assert_eq!(pushed["sender"], bob.mls().identity().0.as_str());
    assert!(!String::from_utf8_lossy(&plain).contains("are you there"));

    // The service worker, stopped, wakes for the push and shows who wrote, in which chat.
    let origin = hearth.url.trim_end_matches('/');
    browser
        .deliver_push(origin, std::str::from_utf8(&plain).unwrap())
        .await
        .unwrap();
    // Any page of the origin can list them; this one runs none of the app.
    page.goto(&format!("{origin}/style.css")).await.unwrap();
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    let shown = loop {
        let shown = browser.notifications().await.unwrap();
        if !shown.is_empty() || tokio::time::Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let [title, text, tag] = shown.first().cloned().expect("a notification is shown");
    assert_eq!(shown.len(), 1);
    assert_eq!(title, "bob");
    assert!(
        text.ends_with("new message") || text.ends_with("new messages"),
        "{text}"
    );
    assert_eq!(tag, room.as_str(), "one notification per chat");

    // Clicking it opens /#room=ROOM (no tab being open): the chat shows, its notification goes.
    page.goto(&format!(
        "{origin}/#room={}",
        hearth_client::hearth::encode_path(room.as_str())
    ))
    .await
    .unwrap();
    browser.wait_text("#room-title", "bob").await.unwrap();
    browser
        .wait_text(".line .text", "are you there? 0")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    while !browser.notifications().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the open chat's notification stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a hearth that registers only with a token, the page says so in a sentence when there is
/// none, and registers with the token an admin made.
#[tokio::test]
async fn the_page_registers_with_a_registration_token() {
    use hearth_node::ops::admin::{AdminRequest, AdminResponse, request_socket};
    let hearth = TestHearth::start_with(|c| {
        c.auth.registration = hearth_node::config::Registration::Token;
    })
    .await;
    let socket = hearth_node::ops::data_dir::admin_socket_path(&hearth.config.data_dir);
    let made = request_socket(
        &socket,
        &AdminRequest::CreateRegistrationToken {
            uses: Some(1),
            expires_ts: None,
        },
    )
    .await
    .unwrap();
    let AdminResponse::RegistrationToken { token } = made else {
        panic!("{made:?}")
    };
    let browser = Browser::start(1100, 800).await.unwrap();
    browser.client.goto(&hearth.url).await.unwrap();
    browser.type_into("#username", "erin").await.unwrap();
    browser
        .type_into("#password", "correct horse battery")
        .await
        .unwrap();
    browser.click("#register").await.unwrap();
    browser
        .wait_text(".login .error", "only with a registration token")
        .await
        .unwrap();
    browser.click(".login summary").await.unwrap();
    browser
        .type_into("#registration-token", &token.token)
        .await
        .unwrap();
    browser.click("#register").await.unwrap();
    browser
        .wait_text("aside header strong", "@erin:localhost")
        .await
        .unwrap();
}

/// A notice from the admins shows above the chat, as the hearth's, until dismissed; dismissed,
/// it does not come back after a reload, while the next one does show.
#[tokio::test]
async fn the_page_shows_notices_from_the_admins_until_dismissed() {
    use hearth_node::ops::admin::{AdminRequest, AdminResponse, request_socket};
    let hearth = TestHearth::start().await;
    let socket = hearth_node::ops::data_dir::admin_socket_path(&hearth.config.data_dir);
    let notify = |body: &str| {
        let request = AdminRequest::SendNotice {
            user_id: Some("alice".into()),
            body: body.into(),
        };
        let socket = socket.clone();
        async move {
            let answer = request_socket(&socket, &request).await.unwrap();
            assert!(
                matches!(answer, AdminResponse::NoticeSent { recipients: 1 }),
                "{answer:?}"
            );
        }
    };
    let browser = Browser::start(1100, 800).await.unwrap();
    browser.sign_in(&hearth.url, "alice", false).await.unwrap();
    browser.wait_text("aside .status", "online").await.unwrap();

    notify("<b>Maintenance</b> at 22:00 UTC").await;
    // Shown as text (never as markup), labelled as the hearth's.
    browser
        .wait_text(".notice[data-seq='1'] p", "<b>Maintenance</b> at 22:00 UTC")
        .await
        .unwrap();
    browser
        .wait_text(".notice[data-seq='1'] small", "From your hearth's admins")
        .await
        .unwrap();
    browser
        .click(".notice[data-seq='1'] .dismiss")
        .await
        .unwrap();
    let gone = "return document.querySelectorAll('.notice').length;";
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    while browser.client.execute(gone, vec![]).await.unwrap().as_u64() != Some(0) {
        assert!(tokio::time::Instant::now() < deadline, "never dismissed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    browser.client.refresh().await.unwrap();
    browser.wait_text("aside .status", "online").await.unwrap();
    notify("Back to normal").await;
    browser
        .wait_text(".notice[data-seq='2'] p", "Back to normal")
        .await
        .unwrap();
    // Frames come in order: had the dismissed one been sent again, it would be here by now.
    assert_eq!(
        browser.client.execute(gone, vec![]).await.unwrap().as_u64(),
        Some(1)
    );
}
