//! Harness for Hearth's integration tests: in-process hearths on ephemeral ports, real `hearth`
//! processes that can be killed, and helpers for reading WebSocket frames with a deadline.

pub mod browser;
pub mod flushcheck;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearth_client::{Client, Receiver};
use hearth_node::config::Config;
use hearth_node::serve::{self, Running};
use hearth_spec::client::ServerFrame;

/// A config for tests: ephemeral port, the given data directory, limits high enough for load.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    config.client_api.listen = "127.0.0.1:0".parse().expect("valid address");
    config.federation.listen = "127.0.0.1:0".parse().expect("valid address");
    config.limits.sends.per_second = 100_000.0;
    config.limits.sends.burst = 100_000.0;
    config.limits.requests.per_second = 100_000.0;
    config.limits.requests.burst = 100_000.0;
    config.limits.auth.per_second = 10_000.0;
    config.limits.auth.burst = 10_000.0;
    config.limits.login_per_account.per_second = 10_000.0;
    config.limits.login_per_account.burst = 10_000.0;
    // Tests are not about the disk this machine happens to have.
    config.storage.min_free_bytes = 1024 * 1024;
    // Password hashing at its production cost is what hardening tests and `hearth-bench
    // login-flood` measure; elsewhere it only slows registering hundreds of users.
    config.auth.argon2_m_cost_kib = 64;
    config.auth.argon2_t_cost = 1;
    config
}

/// A hearth running inside the test process.
pub struct TestHearth {
    pub running: Running,
    pub url: String,
    pub config: Config,
    _dir: Option<tempfile::TempDir>,
}

impl TestHearth {
    /// Starts a hearth on a fresh data directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a hearth on a fresh data directory with a tweaked config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A hearth refuses a data directory others can read; a tweak may write into it first.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .expect("private temp dir");
        }
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let mut hearth = Self::start_config(config).await;
        hearth._dir = Some(dir);
        hearth
    }

    async fn start_config(config: Config) -> Self {
        let running = serve::start(config.clone()).await.expect("hearth starts");
        let url = format!("http://{}", running.client_addr);
        Self {
            running,
            url,
            config,
            _dir: None,
        }
    }

    /// Stops the hearth and starts it again on the same data directory (and a new port).
    pub async fn restart(self) -> Self {
        let TestHearth {
            running,
            config,
            _dir,
            ..
        } = self;
        running.stop().await;
        let mut again = Self::start_config(config).await;
        again._dir = _dir;
        again
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Registers `name` and returns its logged-in client.
    pub async fn user(&self, name: &str) -> Client {
        register_at(&self.url, name).await
    }

    /// Logs `name` in on another device.
    pub async fn device(&self, name: &str) -> Client {
        let mut client = Client::new(&self.url);
        client
            .login(name, "correct horse battery", Some("second"))
            .await
            .expect("login");
        client
    }
}

/// Registers `name` on the hearth at `url` and returns its logged-in client.
pub async fn register_at(url: &str, name: &str) -> Client {
    let mut client = Client::new(url);
    client
        .register(name, "correct horse battery", Some("test"))
        .await
        .expect("register");
    client
}

/// `@name:server`.
pub fn user_id(name: &str, server: &str) -> hearth_spec::UserId {
    hearth_spec::UserId::parse(&format!("@{name}:{server}")).expect("a valid user id")
}

/// Sends `txns` to `room` over one WebSocket, pipelined (each txn id is also the payload);
/// returns the `accepted` acks received before the connection ended or went quiet for a minute.
pub async fn send_burst(
    client: &mut Client,
    room: &hearth_spec::RoomId,
    txns: &[hearth_spec::TxnId],
) -> std::collections::HashMap<hearth_spec::TxnId, hearth_spec::EventId> {
    let (mut tx, mut rx) = connect_synced(client).await;
    let room_for_sender = room.clone();
    let to_send = txns.to_vec();
    let sender = tokio::spawn(async move {
        for t in to_send {
            if tx
                .send(&room_for_sender, &t, t.as_str().as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        tx
    });
    let mut acks = std::collections::HashMap::new();
    while acks.len() < txns.len() {
        match tokio::time::timeout(Duration::from_secs(60), rx.next()).await {
            Ok(Some(Ok(ServerFrame::Accepted {
                txn_id, event_id, ..
            }))) => {
                acks.insert(txn_id, event_id);
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    sender.abort();
    acks
}

/// Where `got` first departs from `expected`: the place, what is there and what should be (a
/// readable failure instead of two 5,000-item lists); `None` if they are equal.
pub fn first_out_of_order(got: &[String], expected: &[String]) -> Option<String> {
    if got == expected {
        return None;
    }
    let place = got
        .iter()
        .zip(expected)
        .position(|(g, e)| g != e)
        .unwrap_or(got.len().min(expected.len()));
    let found_at = |what: Option<&String>| {
        what.and_then(|w| got.iter().position(|g| g == w))
            .map_or("nowhere".to_owned(), |i| format!("at {i}"))
    };
    Some(format!(
        "{} items, {} expected; first difference at {place}: {:?} there (expected {:?}, found {})",
        got.len(),
        expected.len(),
        got.get(place),
        expected.get(place),
        found_at(expected.get(place)),
    ))
}

/// Opens a live connection and reads up to its `synced` frame.
pub async fn connect_synced(client: &mut Client) -> (hearth_client::Sender, Receiver) {
    let (tx, mut rx) = client.connect(None).await.expect("connect").split();
    frames_until(&mut rx, Duration::from_secs(20), |f| {
        matches!(f, ServerFrame::Synced { .. })
    })
    .await
    .expect("synced");
    (tx, rx)
}

/// The next frame, failing the test after `timeout`.
pub async fn next_frame(rx: &mut Receiver, timeout: Duration) -> anyhow::Result<ServerFrame> {
    match tokio::time::timeout(timeout, rx.next()).await {
        Err(_) => bail!("no frame within {timeout:?}"),
        Ok(None) => bail!("connection closed"),
        Ok(Some(frame)) => Ok(frame?),
    }
}

/// Reads frames until `pred` returns true for one; returns every frame read, that one last.
pub async fn frames_until(
    rx: &mut Receiver,
    timeout: Duration,
    mut pred: impl FnMut(&ServerFrame) -> bool,
) -> anyhow::Result<Vec<ServerFrame>> {
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = next_frame(rx, left)
            .await
            .with_context(|| format!("after {} frames", frames.len()))?;
        let done = pred(&frame);
        frames.push(frame);
        if done {
            return Ok(frames);
        }
    }
}

/// A free TCP port on loopback for a listener a test starts (see [`free_udp_port`]).
pub fn free_port() -> u16 {
    reserve_port()
}

/// Path of the `hearth` binary of this build, built once if needed.
pub fn hearth_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binaries().join("hearth"))
}

/// Runs `hearth-chat --profile PROFILE ARGS` with `stdin` and `env`, failing the test if it
/// fails; returns what it printed.
pub async fn hearth_chat(
    profile: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(String, String)],
) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(chat_binary())
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env("HEARTH_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hearth-chat");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hearth-chat {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Path of the `hearth-chat` binary of this build, built once if needed.
pub fn chat_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binaries().join("hearth-chat"))
}

/// Variables cargo sets for the package under test (plus the `CARGO_PKG_`, `CARGO_BIN_` and
/// `CARGO_CFG_` families).
const PACKAGE_VARIABLES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Builds the workspace's binaries in this test's profile (a no-op when they are fresh) and
/// returns the directory they are in.
fn workspace_binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test-binary>
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        // `--workspace --examples` makes cargo resolve features exactly as `cargo test
        // --workspace` does (every package, dev-dependencies included), so the binaries link the
        // libraries that run already built. `-p hearth-node` alone resolves them differently and
        // compiles a second copy of every dependency: gigabytes of target/ that CI ran out of.
        build.args(["build", "--quiet", "--workspace", "--bins", "--examples"]);
        // Cargo gives this test process its package's variables (CARGO_MANIFEST_DIR,
        // CARGO_PKG_NAME, …). Build scripts such as ring's rerun when those change, so passing
        // them on would rebuild ring and everything above it here, and again in the next outer
        // `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if PACKAGE_VARIABLES.contains(&key.as_ref())
                || key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || key.starts_with("CARGO_CFG_")
            {
                build.env_remove(key.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the workspace binaries failed");
        profile_dir.to_owned()
    })
}

/// A real `hearth` process.
pub struct HearthProcess {
    child: Child,
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl HearthProcess {
    /// Starts `hearth serve` on `data_dir` with test limits plus `env`, and waits until it answers.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(data_dir.to_owned(), free_port(), env).await
    }

    async fn spawn(
        data_dir: PathBuf,
        port: u16,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(hearth_binary());
        command
            .arg("serve")
            .env("HEARTH_DATA_DIR", &data_dir)
            .env("HEARTH_CLIENT_API__LISTEN", format!("127.0.0.1:{port}"))
            .env("HEARTH_FEDERATION__LISTEN", "127.0.0.1:0")
            .env("HEARTH_LIMITS__SENDS__PER_SECOND", "100000")
            .env("HEARTH_LIMITS__SENDS__BURST", "100000")
            .env("HEARTH_LIMITS__REQUESTS__PER_SECOND", "100000")
            .env("HEARTH_LIMITS__REQUESTS__BURST", "100000")
            .env("HEARTH_LIMITS__AUTH__BURST", "10000")
            .env("HEARTH_LIMITS__LOGIN_PER_ACCOUNT__PER_SECOND", "10000")
            .env("HEARTH_LIMITS__LOGIN_PER_ACCOUNT__BURST", "10000")
            .env("HEARTH_STORAGE__MIN_FREE_BYTES", "1048576")
            .env("HEARTH_AUTH__ARGON2_M_COST_KIB", "64")
            .env("HEARTH_AUTH__ARGON2_T_COST", "1")
            // TEST_HEARTH_LOG, when set, is the log filter of the hearths a test starts (to
            // see what led to a failure); warnings only otherwise.
            .env(
                "HEARTH_LOG",
                std::env::var("TEST_HEARTH_LOG").unwrap_or("warn,libp2p_kad=error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &env {
            command.env(k, v);
        }
        let child = command.spawn().context("spawn hearth")?;
        let process = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir,
            env,
        };
        process.wait_ready().await?;
        Ok(process)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/v1/health", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("hearth did not become ready on {}", self.url)
    }

    /// The process's peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM")
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same hearth again (same data directory and port).
    pub async fn restart(mut self) -> anyhow::Result<Self> {
        self.kill9();
        let data_dir = self.data_dir.clone();
        let env = std::mem::take(&mut self.env);
        Self::spawn(data_dir, self.port, env).await
    }

    /// Starts the same hearth again after [`Self::kill9`] (same data directory, port, env).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let env = std::mem::take(&mut self.env);
        let fresh = Self::spawn(self.data_dir.clone(), self.port, env).await?;
        let old = std::mem::replace(self, fresh);
        drop(old);
        Ok(())
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for HearthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Milliseconds since the Unix epoch (for envelopes built by hand).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A free UDP port on loopback for a listener a test starts.
///
/// Ports come from outside the kernel's ephemeral range, handed out once per test process. A
/// port found free by binding to port 0 lies inside that range, and any outgoing connection or
/// `:0` socket of a parallel test could take it before the hearth binds it, or while a killed
/// hearth is down before it starts again on the same port ("Address already in use").
pub fn free_udp_port() -> u16 {
    reserve_port()
}

/// The next port outside the ephemeral range that is free for both TCP and UDP on loopback.
fn reserve_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut parts = s.split_whitespace().map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32768, 60999));
    // Below the range if there is room, else above it.
    let (start, end) = if low > 11_000 {
        (10_000, low)
    } else {
        (high + 1, 65_536)
    };
    let span = end - start;
    // A random start, so test processes run one after another rarely meet a port a previous
    // one left in TIME_WAIT.
    let next = NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        AtomicU32::new(std::process::id().wrapping_mul(7919).wrapping_add(nanos) % span)
    });
    for _ in 0..span {
        let port = (start + next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port in {start}..{end}");
}

/// One member of a federated test network: its name, key and federation address.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub name: String,
    pub key: String,
    pub udp_port: u16,
    /// The libp2p swarm's UDP port.
    pub p2p_port: u16,
    /// Where `/metrics` is served (TCP).
    pub metrics_port: u16,
    pub data_dir: PathBuf,
}

impl PeerSpec {
    /// The swarm's multiaddr, for other hearths' `federation.discovery.bootstrap`.
    pub fn p2p_addr(&self) -> String {
        format!("/ip4/127.0.0.1/udp/{}/quic-v1", self.p2p_port)
    }
}

/// Generates (or reads) the server key of a hearth that will run on `data_dir`.
pub fn server_key(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let out = Command::new(hearth_binary())
        .arg("server-key")
        .env("HEARTH_DATA_DIR", data_dir)
        .env("HEARTH_SERVER_NAME", name)
        .env("HEARTH_LOG", "warn")
        .output()
        .context("run hearth server-key")?;
    if !out.status.success() {
        bail!(
            "hearth server-key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Plans a network of hearths named `names` under `root`: keys generated, ports chosen.
pub fn plan_network(root: &Path, names: &[&str]) -> anyhow::Result<Vec<PeerSpec>> {
    names
        .iter()
        .map(|name| {
            let data_dir = root.join(name);
            hearth_node::ops::data_dir::create_private(&data_dir)?;
            Ok(PeerSpec {
                name: name.to_string(),
                key: server_key(&data_dir, name)?,
                udp_port: free_udp_port(),
                p2p_port: free_udp_port(),
                metrics_port: free_port(),
                data_dir,
            })
        })
        .collect()
}

/// The environment that runs `me` federated with every other member of `network`.
pub fn federation_env(me: &PeerSpec, network: &[PeerSpec]) -> Vec<(String, String)> {
    let peers: Vec<String> = network
        .iter()
        .filter(|p| p.name != me.name)
        .map(|p| {
            format!(
                r#"{{ name = "{}", address = "127.0.0.1:{}", key = "{}" }}"#,
                p.name, p.udp_port, p.key
            )
        })
        .collect();
    vec![
        ("HEARTH_SERVER_NAME".into(), me.name.clone()),
        (
            "HEARTH_FEDERATION__LISTEN".into(),
            format!("127.0.0.1:{}", me.udp_port),
        ),
        (
            "HEARTH_FEDERATION__PEERS".into(),
            format!("[{}]", peers.join(", ")),
        ),
        (
            "HEARTH_FEDERATION__DISCOVERY__LISTEN".into(),
            format!("127.0.0.1:{}", me.p2p_port),
        ),
        (
            "HEARTH_METRICS__LISTEN".into(),
            format!("127.0.0.1:{}", me.metrics_port),
        ),
        // Catch up quickly after a peer returns.
        ("HEARTH_FEDERATION__RETRY_MAX_MS".into(), "500".into()),
    ]
}

/// The value of the gauge `name` (with its labels, as exposed, e.g.
/// `hearth_relay_held_envelopes{origin="a.test"}`) on `me`'s `/metrics`; `None` if absent.
pub async fn metric(me: &PeerSpec, name: &str) -> Option<u64> {
    metric_at(
        std::net::SocketAddr::from(([127, 0, 0, 1], me.metrics_port)),
        name,
    )
    .await
}

/// [`metric`] from the `/metrics` listener at `addr`.
pub async fn metric_at(addr: std::net::SocketAddr, name: &str) -> Option<u64> {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    body.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok()).flatten()
    })
}

/// Runs `hearth admin <args>` for `me` of `network` (its data directory and federation
/// configuration), whether it is running or stopped; returns standard output, failing the test
/// if the command fails.
pub fn hearth_admin(data_dir: &Path, me: &PeerSpec, network: &[PeerSpec], args: &[&str]) -> String {
    let out = Command::new(hearth_binary())
        .arg("admin")
        .args(args)
        .env("HEARTH_DATA_DIR", data_dir)
        .envs(federation_env(me, network))
        .env("HEARTH_LOG", "warn")
        .output()
        .expect("run hearth admin");
    assert!(
        out.status.success(),
        "hearth admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Starts every member of `network` as a real process, each with `extra` in its environment.
pub async fn start_network(
    network: &[PeerSpec],
    extra: &[(&str, &str)],
) -> anyhow::Result<Vec<HearthProcess>> {
    let mut processes = Vec::new();
    for me in network {
        let mut env = federation_env(me, network);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        processes.push(HearthProcess::start(&me.data_dir, &env).await?);
    }
    Ok(processes)
}

/// Starts `me` federated with `configured` (itself alone: no configured peers), with `bootstrap`'s
/// swarm, if any, as its way into the DHT, and `extra` in its environment.
pub async fn start_federated(
    me: &PeerSpec,
    configured: &[PeerSpec],
    bootstrap: Option<&PeerSpec>,
    extra: &[(&str, &str)],
) -> HearthProcess {
    let mut env = federation_env(me, configured);
    if let Some(b) = bootstrap {
        env.push((
            "HEARTH_FEDERATION__DISCOVERY__BOOTSTRAP".into(),
            format!("[\"{}\"]", b.p2p_addr()),
        ));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    HearthProcess::start(&me.data_dir, &env).await.unwrap()
}

/// Opens `client` as an end-to-end device whose state lives in `dir`.
pub async fn secure(client: Client, dir: &Path) -> hearth_client::SecureClient {
    hearth_client::SecureClient::open(client, dir)
        .await
        .expect("secure client")
}

/// The encrypted direct chat `from` opens with `to`.
pub async fn encrypted_dm(
    from: &mut hearth_client::SecureClient,
    to: &hearth_spec::UserId,
) -> hearth_spec::RoomId {
    from.create_room(
        hearth_spec::RoomKind::Direct,
        None,
        std::slice::from_ref(to),
    )
    .await
    .unwrap()
    .room_id
}

/// `names` on `hearth`, each with one end-to-end device whose state lives in `root/<name>`; the
/// first makes an encrypted group `group` of all of them, and every device syncs into it.
pub async fn synced_group(
    hearth: &TestHearth,
    root: &Path,
    names: &[&str],
    group: &str,
) -> (Vec<hearth_client::SecureClient>, hearth_spec::RoomId) {
    let mut devices = Vec::new();
    for name in names {
        devices.push(secure(hearth.user(name).await, &root.join(name)).await);
    }
    let others: Vec<hearth_spec::UserId> = devices[1..]
        .iter_mut()
        .map(|d| d.client().user_id().unwrap().clone())
        .collect();
    let room = devices[0]
        .create_room(hearth_spec::RoomKind::Group, Some(group), &others)
        .await
        .unwrap()
        .room_id;
    for device in devices.iter_mut() {
        device.sync().await.unwrap();
    }
    (devices, room)
}

/// Syncs `device` until `done` holds for what arrived, for up to a minute (events cross
/// hearths). A hearth that answers `unavailable` (reopening its database) is asked again.
pub async fn sync_until(
    device: &mut hearth_client::SecureClient,
    mut done: impl FnMut(&[hearth_client::e2ee::Received]) -> bool,
) -> Vec<hearth_client::e2ee::Received> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut all = Vec::new();
    loop {
        match device.sync().await {
            Ok(got) => all.extend(got),
            Err(hearth_client::SecureError::Hearth(e))
                if e.code() == Some(hearth_spec::ErrorCode::Unavailable) => {}
            Err(e) => panic!("sync failed: {e}"),
        }
        if done(&all) {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Texts of the messages (not one's own) a sync produced.
pub fn texts(received: &[hearth_client::e2ee::Received]) -> Vec<String> {
    received
        .iter()
        .filter_map(|r| match r {
            hearth_client::e2ee::Received::Message {
                body, own: false, ..
            } => Some(body.text.clone()),
            _ => None,
        })
        .collect()
}

/// What a [`push_receiver`] was sent: each request's headers and body, in order.
pub type Pushed = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A push endpoint on loopback (a webhook receiver, or a browser vendor's Web Push service):
/// records every POST to its URL (ending in `/push`) and answers `status`. The URL, and what it
/// got.
pub async fn push_receiver(status: u16) -> (String, Pushed) {
    let got: Pushed = Arc::default();
    let app = axum::Router::new()
        .route(
            "/push",
            axum::routing::post(
                move |axum::extract::State(got): axum::extract::State<Pushed>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| async move {
                    got.lock().unwrap().push((headers, body.to_vec()));
                    axum::http::StatusCode::from_u16(status).expect("a status code")
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!("http://{}/push", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("push receiver") });
    (url, got)
}

/// Gives `name` the admin flag through the running hearth's admin socket in `data_dir`.
pub async fn grant_admin(data_dir: &Path, name: &str) {
    use hearth_node::ops::admin::{AdminRequest, AdminResponse, request_socket};
    let granted = request_socket(
        &hearth_node::ops::data_dir::admin_socket_path(data_dir),
        &AdminRequest::SetAdmin {
            user_id: name.into(),
            admin: true,
        },
    )
    .await
    .expect("the admin socket answers");
    assert!(
        matches!(granted, AdminResponse::Updated { .. }),
        "{granted:?}"
    );
}
