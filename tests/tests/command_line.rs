//! The binaries as a person uses them: `hearth init` writes a config that `hearth serve` runs,
//! `hearth admin` manages users on a stopped and on a running hearth, and two people chat with
//! `hearth-chat` (register/login, dm, send, rooms, history, follow, group, leave, logout), with
//! errors printed as sentences.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hearth_tests::{HearthProcess, chat_binary, hearth_binary};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("HEARTH_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .await
        .unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The first line of `lines` (a child's output or errors) that contains `needle`, within 20 s.
async fn line_containing<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    let wait = async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("follow keeps running");
            if line.contains(needle) {
                return line;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no line containing {needle:?} within 20 s"))
}

/// `hearth-chat --profile PROFILE ARGS`, with `stdin`.
async fn chat(profile: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["--profile", profile.to_str().unwrap()];
    all.extend_from_slice(args);
    run(chat_binary(), &all, &[], stdin).await
}

/// A hearth process started with `env` (its data in `dir`), and the hearth-chat profiles of
/// alice (`a`) and bob (`b`), both registered.
struct Pair {
    dir: tempfile::TempDir,
    hearth: HearthProcess,
    a: PathBuf,
    b: PathBuf,
}

async fn two_profiles(env: &[(&str, &str)]) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let hearth = HearthProcess::start(&dir.path().join("data"), env)
        .await
        .unwrap();
    let server = format!("--server={}", hearth.url);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (profile, name) in [(&a, "alice"), (&b, "bob")] {
        let out = chat(
            profile,
            &["register", name, &server],
            Some("a long password\n"),
        )
        .await;
        assert!(out.ok, "{}", out.stderr);
    }
    Pair { dir, hearth, a, b }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_chat_with_the_terminal_client_on_a_configured_hearth() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("hearth.toml");
    let (config_s, data_s) = (config.to_str().unwrap(), data.to_str().unwrap());

    let out = run(
        hearth_binary(),
        &[
            "init",
            "--server-name",
            "localhost",
            "--data-dir",
            data_s,
            "--out",
            config_s,
        ],
        &[],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("max_event_bytes = 524288") && text.contains("# Largest message payload")
    );
    let again = run(hearth_binary(), &["init", "--out", config_s], &[], None).await;
    assert!(!again.ok && again.stderr.contains("not overwriting"));

    // Admin on a stopped hearth works on the database directly.
    let env = [("HEARTH_CONFIG", config_s)];
    let out = run(
        hearth_binary(),
        &["admin", "create-user", "alice"],
        &env,
        Some("alice password\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("created @alice:localhost"));

    let hearth = HearthProcess::start(&data, &env).await.unwrap();

    // Admin on a running hearth goes through its socket.
    let out = run(
        hearth_binary(),
        &["admin", "create-user", "bob"],
        &env,
        Some("bob password\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let out = run(hearth_binary(), &["admin", "list-users"], &env, None).await;
    assert!(
        out.stdout.contains("@alice:localhost\tactive")
            && out.stdout.contains("@bob:localhost\tactive"),
        "{}",
        out.stdout
    );
    let out = run(
        hearth_binary(),
        &["admin", "create-user", "bob"],
        &env,
        Some("bob password\n"),
    )
    .await;
    assert!(!out.ok && out.stderr.contains("taken"), "{}", out.stderr);

    let a = dir.path().join("alice-profile");
    let b = dir.path().join("bob-profile");
    let server = format!("--server={}", hearth.url);
    let chat = |profile: &Path, args: &[&str]| {
        let mut all = vec!["--profile", profile.to_str().unwrap()];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(String::from).collect();
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run(chat_binary(), &refs, &[], None).await
        }
    };
    let login = |profile: &Path, user: &str, password: &str| {
        let args: Vec<String> = [
            "--profile",
            profile.to_str().unwrap(),
            "login",
            user,
            &server,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let password = format!("{password}\n");
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run(chat_binary(), &refs, &[], Some(&password)).await
        }
    };
    let out = login(&a, "alice", "wrong password").await;
    assert!(
        !out.ok && out.stderr.trim() == "error: wrong username or password",
        "{}",
        out.stderr
    );
    assert!(login(&a, "alice", "alice password").await.ok);
    assert!(login(&b, "bob", "bob password").await.ok);

    let out = chat(&a, &["dm", "@bob:localhost"]).await;
    assert!(
        out.ok && out.stdout.contains("new chat"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = chat(&a, &["send", "@bob:localhost", "hello", "bob"]).await;
    assert!(out.ok, "{}", out.stderr);

    // Bob follows live while Alice writes.
    let mut follow = Command::new(chat_binary())
        .args(["--profile", b.to_str().unwrap(), "follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = line_containing(&mut lines, "hello bob").await;
    assert!(first.contains("@alice:localhost: hello bob"), "{first}");
    assert!(
        chat(&a, &["send", "@bob:localhost", "are", "you", "there?"])
            .await
            .ok
    );
    let live = line_containing(&mut lines, "are you there?").await;
    assert!(live.starts_with("[@alice:localhost]"), "{live}");
    follow.kill().await.unwrap();

    let out = chat(&b, &["rooms"]).await;
    assert!(
        out.stdout.contains("@alice:localhost\t2 unread"),
        "{}",
        out.stdout
    );
    let out = chat(&b, &["history", "@alice:localhost"]).await;
    let shown: Vec<&str> = out.stdout.lines().collect();
    assert!(
        shown
            .iter()
            .any(|l| l.ends_with("@alice:localhost: hello bob")),
        "{}",
        out.stdout
    );
    assert!(
        shown
            .last()
            .unwrap()
            .ends_with("@alice:localhost: are you there?")
    );
    assert!(
        chat(&b, &["rooms"])
            .await
            .stdout
            .contains("@alice:localhost\tread")
    );
    // Bob has read everything: alice's history marks her messages read.
    let out = chat(&a, &["history", "@bob:localhost"]).await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("are you there?") && l.ends_with("✓✓ read")),
        "{}",
        out.stdout
    );
    let out = chat(&a, &["presence", "@bob:localhost"]).await;
    assert!(
        out.ok && out.stdout.starts_with("@bob:localhost is "),
        "{}{}",
        out.stdout,
        out.stderr
    );

    let out = chat(&a, &["group", "book club", "@bob:localhost"]).await;
    assert!(out.ok, "{}", out.stderr);
    // An escape sequence in a message (here: clear the screen) is shown, not obeyed.
    assert!(chat(&b, &["send", "book club", "first!\u{1b}[2J"]).await.ok);
    let history = chat(&a, &["history", "book club"]).await.stdout;
    assert!(
        history.contains("@bob:localhost: first!^[[2J"),
        "{history:?}"
    );
    assert!(!history.contains('\u{1b}'), "{history:?}");
    let out = chat(&b, &["leave", "book club"]).await;
    assert!(out.ok && out.stdout.contains("left book club"));
    let out = chat(&b, &["send", "book club", "x"]).await;
    assert!(
        !out.ok && out.stderr.starts_with("error: no room matches"),
        "{}",
        out.stderr
    );
    let out = chat(&a, &["invite", "@bob:localhost", "@alice:localhost"]).await;
    assert!(
        !out.ok && out.stderr.contains("a direct chat has exactly two members"),
        "{}",
        out.stderr
    );

    // An administrator deactivates bob: his session stops working at once.
    let out = run(
        hearth_binary(),
        &["admin", "deactivate-user", "@bob:localhost"],
        &env,
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let out = chat(&b, &["rooms"]).await;
    assert!(
        !out.ok && out.stderr.trim() == "error: the session has been revoked; log in again",
        "{}",
        out.stderr
    );
    // Logging in again is refused for what it is (forbidden), not as a wrong password.
    let out = login(&b, "bob", "bob password").await;
    assert!(
        !out.ok && out.stderr.trim() == "error: this account has been deactivated",
        "{}",
        out.stderr
    );

    let out = chat(&a, &["logout"]).await;
    assert!(out.ok);
    let out = chat(&a, &["rooms"]).await;
    assert!(!out.ok && out.stderr.contains("not logged in"));

    // SIGTERM stops the hearth cleanly.
    let mut hearth = hearth;
    assert!(hearth.terminate().unwrap().success());
}

/// The data directory holds password hashes and keys: a hearth makes it private to its user
/// whatever the umask, and refuses to start on one that others can read unless told to.
#[tokio::test]
async fn the_data_directory_is_private_and_a_shared_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let hearth = HearthProcess::start(&data, &[]).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("hearth.redb")), 0o600);
    assert_eq!(mode(&data.join("media")), 0o700);
    drop(hearth);

    std::fs::set_permissions(
        data.join("hearth.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let data_s = data.to_str().unwrap();
    let port = format!("127.0.0.1:{}", hearth_tests::free_port());
    let env = [
        ("HEARTH_DATA_DIR", data_s),
        ("HEARTH_CLIENT_API__LISTEN", port.as_str()),
        ("HEARTH_FEDERATION__LISTEN", "127.0.0.1:0"),
    ];
    let out = run(hearth_binary(), &["serve"], &env, None).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("hearth.redb can be read by other users (mode 644)")
            && out.stderr.contains("chmod -R go-rwx"),
        "{}",
        out.stderr
    );
    // The operator who means it says so.
    let hearth = HearthProcess::start(&data, &[("HEARTH_STORAGE__ALLOW_SHARED_DATA_DIR", "true")])
        .await
        .unwrap();
    drop(hearth);
}

/// A port already in use is reported in one sentence with the system's reason, before the hearth
/// writes anything (no keys or database left behind by a start that could not happen).
#[tokio::test]
async fn a_busy_port_is_one_clear_sentence_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let out = run(
        hearth_binary(),
        &["serve"],
        &[
            ("HEARTH_DATA_DIR", data.to_str().unwrap()),
            ("HEARTH_CLIENT_API__LISTEN", "127.0.0.1:0"),
            ("HEARTH_FEDERATION__LISTEN", "127.0.0.1:0"),
            ("HEARTH_FEDERATION__DISCOVERY__LISTEN", busy.as_str()),
        ],
        None,
    )
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "hearth: cannot listen on {busy} (UDP, peer discovery): Address already in use (os error 98)"
        )
    );
    assert!(!data.exists(), "a failed start wrote {}", data.display());
}

/// `hearth-chat` in scripts: `chat` sends what it reads and ends at the end of its input, having
/// shown (and marked read) what had arrived; `history | head -1` ends quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_ends_with_its_input_and_marks_what_it_showed_read() {
    let Pair {
        dir: _dir,
        hearth: _hearth,
        a,
        b,
    } = two_profiles(&[]).await;
    assert!(chat(&a, &["dm", "@bob:localhost"], None).await.ok);
    for i in 0..30 {
        let text = format!("line {i}");
        assert!(chat(&a, &["send", "@bob:localhost", &text], None).await.ok);
    }

    // Bob answers from a script: the command ends by itself.
    let out = chat(&b, &["chat", "@alice:localhost"], Some("hi alice\n")).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("@alice:localhost: line 29"),
        "{}",
        out.stdout
    );
    let history = chat(&a, &["history", "@bob:localhost"], None).await.stdout;
    assert!(history.contains("@bob:localhost: hi alice"), "{history}");
    // Alice sees her messages read: bob's chat showed them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let history = chat(&a, &["history", "@bob:localhost"], None).await.stdout;
        if history
            .lines()
            .any(|l| l.contains("line 29") && l.ends_with("✓✓ read"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob's chat never marked alice's messages read:\n{history}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A reader that stops early (`| head -1`), or reads nothing (`| true`): no panic, success.
    for reader in ["head -1", "true"] {
        let out = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "'{}' --profile '{}' history @bob:localhost --limit 30 | {reader}; \
                 echo \"status ${{PIPESTATUS[0]}}\"",
                chat_binary().display(),
                a.display()
            ))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.ends_with("status 0\n"), "{reader}: {stdout}{stderr}");
        assert!(stderr.is_empty(), "{reader}: {stderr}");
        if reader == "head -1" {
            assert_eq!(stdout.lines().count(), 2, "{stdout}");
        }
    }
}

/// A script that pipes many lines into `chat` sends them all, once each, prints no error and
/// sends no typing frame (nobody types into a pipe; before, every line's "stopped typing" frame
/// spent the device's request budget, which made the script's sends wait it out, or was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_piping_many_lines_into_chat_gets_no_errors_and_sends_no_typing() {
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], hearth_tests::free_port()));
    let metrics_listen = metrics.to_string();
    let Pair {
        dir: _dir,
        hearth,
        a,
        b,
    } = two_profiles(&[("HEARTH_METRICS__LISTEN", &metrics_listen)]).await;
    assert!(chat(&a, &["dm", "@bob:localhost"], None).await.ok);
    let lines: Vec<String> = (0..80).map(|i| format!("scripted {i}")).collect();
    let out = chat(
        &a,
        &["chat", "@bob:localhost"],
        Some(&(lines.join("\n") + "\n")),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let printed = format!("{}{}", out.stdout, out.stderr);
    assert!(!printed.contains("error"), "{printed}");
    let history = chat(&b, &["history", "@alice:localhost", "--limit", "100"], None).await;
    let got: Vec<&str> = history
        .stdout
        .lines()
        .filter_map(|l| l.split_once("@alice:localhost: ").map(|(_, text)| text))
        .filter(|text| text.starts_with("scripted "))
        .collect();
    assert_eq!(got, lines, "{}", history.stdout);
    let typing_signals = || hearth_tests::metric_at(metrics, "hearth_typing_signals_total");
    assert_eq!(typing_signals().await.unwrap_or(0), 0);

    // The count is read where it is kept: one typing frame from bob's own device shows in it.
    let mut bob = hearth_client::Client::new(&hearth.url);
    bob.login("bob", "a long password", None).await.unwrap();
    let room = bob.rooms().await.unwrap()[0].room_id.clone();
    let (mut tx, _rx) = bob.connect(None).await.unwrap().split();
    tx.frame(&hearth_spec::client::ClientFrame::Typing {
        room_id: room,
        typing: true,
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while typing_signals().await != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the typing frame was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `hearth-chat push add|list|remove` registers this device's push endpoint with the hearth,
/// which then notifies it while the device is offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_endpoints_are_managed_from_the_terminal_client() {
    let Pair {
        dir: _dir,
        hearth: _hearth,
        a,
        b,
    } = two_profiles(&[
        ("HEARTH_PUSH__ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("HEARTH_PUSH__COALESCE_MS", "50"),
    ])
    .await;
    // A push receiver that counts what it is sent.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/push", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let out = chat(&b, &["push", "list"], None).await;
    assert!(
        out.ok && out.stdout.starts_with("no push endpoint"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = chat(&b, &["push", "add", "ftp://example.org/x"], None).await;
    assert!(
        !out.ok && out.stderr.contains("http or https"),
        "{}",
        out.stderr
    );
    let out = chat(&b, &["push", "add", &endpoint], None).await;
    assert!(out.ok, "{}", out.stderr);
    let out = chat(&b, &["push", "list"], None).await;
    assert_eq!(out.stdout.trim(), format!("webhook\t{endpoint}"));

    // Bob is offline: alice's message is pushed to his endpoint.
    assert!(chat(&a, &["dm", "@bob:localhost"], None).await.ok);
    assert!(chat(&a, &["send", "@bob:localhost", "ping"], None).await.ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while received.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no notification arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = chat(&b, &["push", "remove"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let out = chat(&b, &["push", "list"], None).await;
    assert!(out.stdout.starts_with("no push endpoint"), "{}", out.stdout);

    // Bob never kept a live connection, but his commands were seen: alice sees when.
    let out = chat(&a, &["presence", "@bob:localhost"], None).await;
    assert!(
        out.stdout
            .starts_with("@bob:localhost is offline, last seen"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

/// A file over the hearth's attachment limit is refused before it is sent, naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_file_over_the_limit_says_which_limit() {
    let Pair {
        dir,
        hearth: _hearth,
        a,
        b: _,
    } = two_profiles(&[("HEARTH_LIMITS__MAX_MEDIA_BYTES", "1048576")]).await;
    assert!(chat(&a, &["dm", "@bob:localhost"], None).await.ok);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 2 * 1024 * 1024]).unwrap();
    let out = chat(
        &a,
        &["send-file", "@bob:localhost", big.to_str().unwrap()],
        None,
    )
    .await;
    assert!(!out.ok);
    assert_eq!(
        out.stderr.trim(),
        "error: big.bin is 2.00 MiB encrypted; this hearth takes attachments of at most 1.00 MiB (its limits.max_media_bytes)"
    );
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![2u8; 100 * 1024]).unwrap();
    let out = chat(
        &a,
        &["send-file", "@bob:localhost", small.to_str().unwrap()],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
}

/// `chat` on a terminal (a pseudo-terminal from `script`): what alice types shows as "typing…"
/// to bob before she sends, stops when she sends, and Ctrl-D ends her chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_chat_shows_as_typing_to_the_other_side() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: no `script` (util-linux) to give hearth-chat a terminal");
        return;
    }
    let Pair {
        dir: _dir,
        hearth: _hearth,
        a,
        b,
    } = two_profiles(&[]).await;
    assert!(chat(&a, &["dm", "@bob:localhost"], None).await.ok);

    let mut follow = Command::new(chat_binary())
        .args(["--profile", b.to_str().unwrap(), "follow"])
        .env("HEARTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut bob_out = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut bob_notes = BufReader::new(follow.stderr.take().unwrap()).lines();
    line_containing(&mut bob_notes, "up to date").await;

    let mut alice = Command::new("script")
        .args(["-qfec"])
        .arg(format!(
            "'{}' --profile '{}' chat @bob:localhost",
            chat_binary().display(),
            a.display()
        ))
        .arg("/dev/null")
        .env("HEARTH_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut keys = alice.stdin.take().unwrap();
    // Keystrokes only: nothing is sent yet, but bob sees her typing.
    keys.write_all(b"hel").await.unwrap();
    keys.flush().await.unwrap();
    let typing = line_containing(&mut bob_notes, "is typing").await;
    assert!(typing.contains("@alice:localhost is typing…"), "{typing}");
    keys.write_all(b"lo bob\r").await.unwrap();
    keys.flush().await.unwrap();
    let message = line_containing(&mut bob_out, "hello bob").await;
    assert!(message.contains("@alice:localhost: hello bob"), "{message}");
    line_containing(&mut bob_notes, "stopped typing").await;
    // Ctrl-D ends the chat.
    keys.write_all(b"\x04").await.unwrap();
    keys.flush().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), alice.wait())
        .await
        .expect("chat ended on Ctrl-D")
        .unwrap();
    assert!(status.success());
}

/// While `follow` runs on a profile, the profile's other commands work from another terminal:
/// the running process does them with the device's state and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_commands_work_while_follow_runs_on_the_profile() {
    let Pair {
        dir: _dir,
        hearth: _hearth,
        a,
        b,
    } = two_profiles(&[]).await;
    assert!(chat(&a, &["dm", "@bob:localhost"], None).await.ok);
    assert!(
        chat(&a, &["send", "@bob:localhost", "hello"], None)
            .await
            .ok
    );

    let mut follow = Command::new(chat_binary())
        .args(["--profile", b.to_str().unwrap(), "follow"])
        .env("HEARTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut notes = BufReader::new(follow.stderr.take().unwrap()).lines();
    line_containing(&mut notes, "up to date").await;

    let out = chat(
        &b,
        &[
            "send",
            "@alice:localhost",
            "sent",
            "from",
            "another",
            "terminal",
        ],
        None,
    )
    .await;
    assert!(
        out.ok && out.stdout.contains("sent"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = chat(&b, &["history", "@alice:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("@alice:localhost: hello"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("@bob:localhost: sent from another terminal"),
        "{}",
        out.stdout
    );
    let out = chat(&a, &["history", "@bob:localhost"], None).await;
    assert!(
        out.stdout
            .contains("@bob:localhost: sent from another terminal"),
        "{}",
        out.stdout
    );
    // A second live view of the same device is refused, saying why.
    let out = chat(&b, &["follow"], None).await;
    assert!(
        !out.ok && out.stderr.contains("busy with `follow` or `chat`"),
        "{}",
        out.stderr
    );
    follow.kill().await.unwrap();
    // With follow gone, commands run by themselves again.
    let out = chat(&b, &["rooms"], None).await;
    assert!(out.ok, "{}", out.stderr);
}

/// Login limits by account and by address: guessing one account's password is slowed wherever
/// it comes from, a whole office behind one address still logs in, and `hearth-chat login`
/// waits as long as the hearth says and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_limited_per_account_and_an_office_behind_one_address_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = hearth_node::config::LimitsConfig::default();
    let (aps, ab, lpa, lpb) = (
        defaults.auth.per_second.to_string(),
        defaults.auth.burst.to_string(),
        defaults.login_per_account.per_second.to_string(),
        defaults.login_per_account.burst.to_string(),
    );
    let hearth = HearthProcess::start(
        &dir.path().join("data"),
        &[
            ("HEARTH_LIMITS__AUTH__PER_SECOND", aps.as_str()),
            ("HEARTH_LIMITS__AUTH__BURST", ab.as_str()),
            ("HEARTH_LIMITS__LOGIN_PER_ACCOUNT__PER_SECOND", lpa.as_str()),
            ("HEARTH_LIMITS__LOGIN_PER_ACCOUNT__BURST", lpb.as_str()),
        ],
    )
    .await
    .unwrap();
    // Forty colleagues register and log in from one address.
    for i in 0..40 {
        let name = format!("colleague{i}");
        let mut client = hearth_client::Client::new(&hearth.url);
        client
            .register(&name, "a long password", None)
            .await
            .unwrap();
        let mut again = hearth_client::Client::new(&hearth.url);
        again.login(&name, "a long password", None).await.unwrap();
    }
    // Someone guesses colleague0's password: after the account's burst, it is refused unhashed.
    let mut guesser = hearth_client::Client::new(&hearth.url);
    let mut refused = None;
    for i in 0..(defaults.login_per_account.burst as usize + 1) {
        match guesser
            .login("colleague0", &format!("guess {i}"), None)
            .await
        {
            Err(e) if e.code() == Some(hearth_spec::ErrorCode::BadCredentials) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(_) => panic!("a guess worked"),
        }
    }
    let refused = refused.expect("the account limit never applied");
    assert_eq!(
        refused.code(),
        Some(hearth_spec::ErrorCode::RateLimited),
        "{refused}"
    );
    assert!(refused.to_string().contains("this account"), "{refused}");
    // Another account from the same address is not affected.
    let mut other = hearth_client::Client::new(&hearth.url);
    other
        .login("colleague1", "a long password", None)
        .await
        .unwrap();
    // The owner logs in with hearth-chat: told to wait, it waits and gets in.
    let profile = dir.path().join("c0");
    let out = run(
        chat_binary(),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "login",
            "colleague0",
            &format!("--server={}", hearth.url),
        ],
        &[],
        Some("a long password\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("too many login attempts for this account")
            && out.stderr.contains("trying again in"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("logged in as @colleague0:localhost"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_what_this_device_read_and_says_where() {
    let Pair {
        dir: _dir,
        hearth: _hearth,
        a,
        b,
    } = two_profiles(&[]).await;
    assert!(chat(&a, &["dm", "@bob:localhost"], None).await.ok);
    for text in [
        "the budget meeting moved to Thursday",
        "lunch first?",
        "Meeting notes are in the shared folder",
    ] {
        assert!(chat(&a, &["send", "@bob:localhost", text], None).await.ok);
    }

    // bob's device decrypts on this command, then searches what it has read: every word must
    // match, as a word or its start, in any case; newest first.
    let out = chat(&b, &["search", "meet"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].contains("@alice:localhost: Meeting notes are in the shared folder"));
    assert!(lines[1].contains("the budget meeting moved to Thursday"));
    assert!(
        out.stdout.contains("in context: hearth-chat history"),
        "{}",
        out.stdout
    );
    let out = chat(&b, &["search", "BUDGET", "thurs"], None).await;
    assert_eq!(out.stdout.lines().filter(|l| l.starts_with('[')).count(), 1);
    let out = chat(&b, &["search", "dinner"], None).await;
    assert!(
        out.ok && out.stdout.contains("nothing you have read matches"),
        "{}",
        out.stdout
    );
}

/// A room you left is no longer the hearth's to show you, but what your device read there is
/// yours: `history ROOM_ID` (the command `search` offers) shows it, paged, and nothing sent after
/// you left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_a_room_you_left_shows_what_this_device_read_there() {
    let Pair {
        dir: _dir,
        hearth: _hearth,
        a,
        b,
    } = two_profiles(&[]).await;
    let out = chat(&a, &["group", "club", "@bob:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let room = out.stdout.split('\t').next().unwrap().trim().to_owned();
    for text in ["first of three", "second of three", "third of three"] {
        assert!(chat(&a, &["send", "club", text], None).await.ok);
    }
    let out = chat(&b, &["history", "club"], None).await;
    assert!(out.stdout.contains("third of three"), "{}", out.stdout);
    assert!(chat(&b, &["leave", "club"], None).await.ok);
    assert!(chat(&a, &["send", "club", "after bob left"], None).await.ok);

    // The hint search gives names the room by id, and it works.
    let out = chat(&b, &["search", "second"], None).await;
    let hint = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("in context: hearth-chat "))
        .unwrap_or_else(|| panic!("no hint in {}", out.stdout))
        .replace('"', "");
    let args: Vec<&str> = hint.split(' ').collect();
    assert_eq!(args[1], room);
    let out = chat(&b, &args, None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("you are not in"), "{}", out.stdout);
    for text in ["first of three", "second of three", "third of three"] {
        assert!(
            out.stdout.contains(&format!("@alice:localhost: {text}")),
            "{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("after bob left"), "{}", out.stdout);

    // Paged: the newest two, then the one before them.
    let out = chat(&b, &["history", &room, "--limit", "2"], None).await;
    let shown: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(shown.len(), 2, "{}", out.stdout);
    assert!(shown[0].ends_with("second of three") && shown[1].ends_with("third of three"));
    let older = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("(older: hearth-chat "))
        .unwrap_or_else(|| panic!("no older page in {}", out.stdout))
        .trim_end_matches(')')
        .to_owned();
    let older: Vec<&str> = older.split(' ').collect();
    let out = chat(&b, &older, None).await;
    let shown: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(shown.len(), 1, "{}", out.stdout);
    assert!(shown[0].ends_with("first of three"), "{}", out.stdout);
    assert!(!out.stdout.contains("(older:"), "{}", out.stdout);

    // A room this device never read anything in is still refused, with the hearth's reason.
    let out = chat(&a, &["group", "later"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let later = out.stdout.split('\t').next().unwrap().trim().to_owned();
    let out = chat(&b, &["history", &later], None).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("not a member"), "{}", out.stderr);
}

/// Each terminal is named after its machine unless told otherwise, so that `devices` (and the
/// id `remove-device` takes) tells them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_named_after_their_machine_unless_named() {
    let Pair {
        dir,
        hearth,
        a,
        b: _b,
    } = two_profiles(&[]).await;
    let laptop = dir.path().join("a-laptop");
    let out = chat(
        &laptop,
        &[
            "login",
            "alice",
            &format!("--server={}", hearth.url),
            "--device-name",
            "alice's laptop",
        ],
        Some("a long password\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = chat(&a, &["devices"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(&format!("\thearth-chat on {} (this device)", host.trim()))),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.ends_with("\talice's laptop")),
        "{}",
        out.stdout
    );
}

/// [`two_profiles`] and carol's (the second value), all three in alice's group `club`.
async fn club_of_three() -> (Pair, PathBuf) {
    let pair = two_profiles(&[]).await;
    let c = pair.dir.path().join("c");
    let server = format!("--server={}", pair.hearth.url);
    let out = chat(
        &c,
        &["register", "carol", &server],
        Some("a long password\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let out = chat(
        &pair.a,
        &["group", "club", "@bob:localhost", "@carol:localhost"],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    (pair, c)
}

/// The group's creator is its admin and removes members; nobody else can. The removed member's
/// devices leave the encrypted group in the same command, so the others go on talking and the
/// removed member sees the removal, and nothing after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_admin_removes_a_member_who_then_reads_nothing_more() {
    let (
        Pair {
            dir: _dir,
            hearth: _hearth,
            a,
            b,
        },
        c,
    ) = club_of_three().await;
    assert!(chat(&a, &["send", "club", "welcome both"], None).await.ok);
    let out = chat(&b, &["history", "club"], None).await;
    assert!(out.stdout.contains("welcome both"), "{}", out.stdout);

    let out = chat(&b, &["members", "club"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("@alice:localhost\tadmin"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("@bob:localhost (you)\n"),
        "{}",
        out.stdout
    );
    let out = chat(&b, &["remove", "club", "@carol:localhost"], None).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("only the group's admins (@alice:localhost) do that"),
        "{}",
        out.stderr
    );

    let out = chat(&a, &["remove", "club", "@bob:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("removed @bob:localhost from club"),
        "{}",
        out.stdout
    );
    // Out of the keys already: the group alice's device holds has no device of bob's.
    let out = chat(&a, &["fingerprint", "club"], None).await;
    assert!(out.stdout.contains("@carol:localhost"), "{}", out.stdout);
    assert!(!out.stdout.contains("@bob:localhost"), "{}", out.stdout);
    assert!(chat(&a, &["send", "club", "just us now"], None).await.ok);

    let out = chat(&c, &["history", "club"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("* @alice:localhost removed @bob:localhost"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("@alice:localhost: just us now"),
        "{}",
        out.stdout
    );
    let out = chat(&c, &["members", "club"], None).await;
    assert!(!out.stdout.contains("@bob"), "{}", out.stdout);

    // Bob's device saw its removal in the stream, and the room is gone from his list.
    let out = chat(&b, &["rooms"], None).await;
    assert!(!out.stdout.contains("club"), "{}", out.stdout);
    let room = chat(&a, &["rooms"], None)
        .await
        .stdout
        .lines()
        .find(|l| l.starts_with("club"))
        .and_then(|l| l.split('\t').nth(2))
        .unwrap()
        .to_owned();
    let out = chat(&b, &["history", &room], None).await;
    assert!(out.stdout.contains("welcome both"), "{}", out.stdout);
    assert!(!out.stdout.contains("just us now"), "{}", out.stdout);

    // Removed by mistake: invited back, bob's device joins the group again and reads on.
    let out = chat(&a, &["invite", "club", "@bob:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        chat(&a, &["send", "club", "welcome back bob"], None)
            .await
            .ok
    );
    let out = chat(&b, &["history", "club"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("@alice:localhost: welcome back bob"),
        "{}",
        out.stdout
    );
    let out = chat(&b, &["send", "club", "glad to be back"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let out = chat(&c, &["history", "club"], None).await;
    assert!(
        out.stdout.contains("@bob:localhost: glad to be back"),
        "{}",
        out.stdout
    );
}

/// Leaving by mistake: invited back, the member's device joins the group again (in place of the
/// state it kept from before) and reads, and is read, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_left_and_is_invited_back_reads_again() {
    let Pair {
        dir: _dir,
        hearth: _hearth,
        a,
        b,
    } = two_profiles(&[]).await;
    assert!(
        chat(&a, &["group", "club", "@bob:localhost"], None)
            .await
            .ok
    );
    assert!(chat(&a, &["send", "club", "before"], None).await.ok);
    let out = chat(&b, &["history", "club"], None).await;
    assert!(out.stdout.contains("before"), "{}", out.stdout);
    assert!(chat(&b, &["leave", "club"], None).await.ok);
    assert!(
        chat(&a, &["send", "club", "while bob was away"], None)
            .await
            .ok
    );
    let out = chat(&a, &["invite", "club", "@bob:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(chat(&a, &["send", "club", "welcome back"], None).await.ok);
    let out = chat(&b, &["history", "club"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("@alice:localhost: welcome back"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("while bob was away"), "{}", out.stdout);
    assert!(chat(&b, &["send", "club", "thanks"], None).await.ok);
    let out = chat(&a, &["history", "club"], None).await;
    assert!(
        out.stdout.contains("@bob:localhost: thanks"),
        "{}",
        out.stdout
    );
}

/// `admin` makes a member an admin and `--off` takes it back; `members` lists every admin; an
/// admin made this way removes members, and whoever is not one cannot make admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_make_admins_who_remove_members() {
    let (
        Pair {
            dir: _dir,
            hearth: _hearth,
            a,
            b,
        },
        c,
    ) = club_of_three().await;
    let out = chat(&b, &["admin", "club", "@bob:localhost"], None).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("only the group's admins (@alice:localhost) do that"),
        "{}",
        out.stderr
    );
    let out = chat(&a, &["admin", "club", "@bob:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("@bob:localhost is now an admin of club"),
        "{}",
        out.stdout
    );
    let out = chat(&c, &["members", "club"], None).await;
    assert!(
        out.stdout.contains("@alice:localhost\tadmin"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("@bob:localhost\tadmin"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("@carol:localhost (you)\n"),
        "{}",
        out.stdout
    );
    let out = chat(&b, &["admin", "club", "@alice:localhost", "--off"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let out = chat(&a, &["remove", "club", "@carol:localhost"], None).await;
    assert!(!out.ok, "alice is no longer an admin: {}", out.stdout);
    let out = chat(&b, &["remove", "club", "@carol:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let out = chat(&a, &["history", "club"], None).await;
    for line in [
        "* @alice:localhost made @bob:localhost an admin",
        "* @bob:localhost took @alice:localhost's admin role away",
        "* @bob:localhost removed @carol:localhost",
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }

    // Bob invites carol back; alice, who took no part in it, writes first: carol reads it (the
    // removal had left carol "departed" on alice's device, whose next send took her out again).
    let out = chat(&b, &["invite", "club", "@carol:localhost"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        chat(&a, &["send", "club", "welcome back carol"], None)
            .await
            .ok
    );
    let out = chat(&a, &["fingerprint", "club"], None).await;
    assert!(out.stdout.contains("@carol:localhost\t"), "{}", out.stdout);
    let out = chat(&c, &["history", "club"], None).await;
    assert!(
        out.stdout.contains("@alice:localhost: welcome back carol"),
        "{}",
        out.stdout
    );
}
