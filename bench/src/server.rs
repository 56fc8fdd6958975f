//! The hearth under test: a real process on loopback with its own temporary data directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of every user the benchmarks register.
pub const PASSWORD: &str = "benchmark password";

use anyhow::{Context, bail};
use hearth_client::Client;

pub struct Hearth {
    child: Child,
    pub url: String,
    dir: std::path::PathBuf,
    binary: String,
    env: Vec<(String, String)>,
    port: u16,
}

impl Hearth {
    /// Starts `binary serve` with limits opened up for load and waits until it answers.
    pub async fn start(binary: &str) -> anyhow::Result<Self> {
        Self::start_env(binary, fresh_dir()?, &[]).await
    }

    /// Like [`Self::start`], on `dir`, with extra environment (which wins over the defaults).
    pub async fn start_env(
        binary: &str,
        dir: std::path::PathBuf,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let port = free_tcp_port()?;
        let child = spawn(binary, &dir, port, env)?;
        let hearth = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            binary: binary.to_owned(),
            env: env.to_vec(),
            port,
        };
        hearth.wait_healthy().await?;
        Ok(hearth)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if is_healthy(&format!("127.0.0.1:{}", self.port)).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("hearth did not start")
    }

    /// Kills the process (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same data directory, port and environment, and waits
    /// until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn(&self.binary, &self.dir, self.port, &self.env)?;
        self.wait_healthy().await
    }

    /// Starts a hearth that serves `/metrics` on `metrics_port`, for its stage timings.
    pub async fn start_with_metrics(binary: &str, metrics_port: u16) -> anyhow::Result<Self> {
        let env = [(
            "HEARTH_METRICS__LISTEN".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        )];
        Self::start_env(binary, fresh_dir()?, &env).await
    }

    /// The p50 and p99 in µs of each `hearth_stage_micros` stage on `/metrics` at
    /// `metrics_port` (summaries over about the last minute), in the order of `stages`.
    pub async fn stages(metrics_port: u16, stages: &[&str]) -> anyhow::Result<Vec<(f64, f64)>> {
        let page = http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await?;
        let quantile = |stage: &str, q: &str| {
            let prefix = format!("hearth_stage_micros{{stage=\"{stage}\",quantile=\"{q}\"}} ");
            page.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .with_context(|| format!("no {q} quantile of stage {stage} on /metrics"))
        };
        stages
            .iter()
            .map(|stage| Ok((quantile(stage, "0.5")?, quantile(stage, "0.99")?)))
            .collect()
    }

    /// Registers a user (password [`PASSWORD`]).
    pub async fn user(&self, name: &str) -> anyhow::Result<Client> {
        let mut client = Client::new(&self.url);
        client.register(name, PASSWORD, None).await?;
        Ok(client)
    }

    /// The process's resident set size in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS:")
    }

    /// The process's peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM:")
    }

    /// A `kB` field of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field}"))
    }

    /// Bytes the process has written: (`write_bytes`, what reached the block layer, or 0 where
    /// the kernel does not count it; `wchar`, what it passed to write calls) from
    /// `/proc/<pid>/io`.
    pub fn written_bytes(&self) -> anyhow::Result<(u64, u64)> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.id()))?;
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .with_context(|| format!("no {name} in /proc/PID/io"))
        };
        Ok((field("write_bytes:")?, field("wchar:")?))
    }

    /// Bytes the block device holding the data directory has been sent, by every process on
    /// the machine (`/sys/dev/block/MAJ:MIN/stat`, sectors written), or None where there is no
    /// such device. Unlike `write_bytes` this counts what the file system adds (an inode's
    /// block on a flush that grows a file) and leaves out pages dirtied but never written.
    pub fn device_bytes_written(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(&self.dir).ok()?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
        // The seventh field: sectors written, of 512 bytes whatever the device's own size.
        let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
        Some(sectors * 512)
    }

    /// CPU time (user + system) the process has used, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
        let rest = stat.rsplit_once(')').context("stat format")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        #[allow(unsafe_code)]
        // SAFETY: sysconf reads a constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / per_second)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns `binary serve` on `dir`, its client API on `port`, limits opened up for load.
fn spawn(
    binary: &str,
    dir: &std::path::Path,
    port: u16,
    env: &[(String, String)],
) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .env("HEARTH_DATA_DIR", dir)
        .env("HEARTH_CLIENT_API__LISTEN", format!("127.0.0.1:{port}"))
        .env("HEARTH_FEDERATION__LISTEN", "127.0.0.1:0")
        .env("HEARTH_FEDERATION__DISCOVERY__LISTEN", "127.0.0.1:0")
        .env("HEARTH_LIMITS__SENDS__PER_SECOND", "1000000")
        .env("HEARTH_LIMITS__SENDS__BURST", "1000000")
        .env("HEARTH_LIMITS__REQUESTS__PER_SECOND", "1000000")
        .env("HEARTH_LIMITS__REQUESTS__BURST", "1000000")
        .env("HEARTH_LIMITS__AUTH__PER_SECOND", "1000000")
        .env("HEARTH_LIMITS__AUTH__BURST", "1000000")
        .env("HEARTH_LIMITS__LOGIN_PER_ACCOUNT__PER_SECOND", "1000000")
        .env("HEARTH_LIMITS__LOGIN_PER_ACCOUNT__BURST", "1000000")
        // Every bench client connects from 127.0.0.1.
        .env("HEARTH_CLIENT_API__MAX_CONNECTIONS_PER_IP", "1000000")
        .env("HEARTH_LOG", "warn")
        // Sessions outlive the longest run (`soak`): an expired one closes its connections.
        .env("HEARTH_AUTH__ACCESS_TOKEN_TTL_MS", "86400000")
        // Registration speed is not what is measured: a cheap password hash.
        .env("HEARTH_AUTH__ARGON2_M_COST_KIB", "64")
        .env("HEARTH_AUTH__ARGON2_T_COST", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .spawn()
        .with_context(|| format!("cannot start {binary}; build it with `cargo build --release`"))
}

/// `GET path` at `addr` (plain HTTP/1.1); the body, if the answer is 200.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8(answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// A TCP port free on loopback now.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A free UDP port on loopback (bound and released).
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A new empty data directory under the system's temporary directory.
pub fn fresh_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "hearth-bench-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // A hearth refuses a data directory other users can read.
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    Ok(dir)
}

/// The public server key of a hearth that will run on `dir` (generated now).
pub fn server_key(binary: &str, dir: &std::path::Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("server-key")
        .env("HEARTH_DATA_DIR", dir)
        .env("HEARTH_LOG", "warn")
        .output()
        .context("run hearth server-key")?;
    if !out.status.success() {
        bail!(
            "hearth server-key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Two hearths, `a.bench` and `b.bench`, federated with each other, serving `/metrics` on
/// `metrics_ports` (for their stage timings).
pub async fn federated_pair(
    binary: &str,
    metrics_ports: [u16; 2],
) -> anyhow::Result<(Hearth, Hearth)> {
    let names = ["a.bench", "b.bench"];
    let mut plans = Vec::new();
    for name in names {
        let dir = fresh_dir()?;
        let key = server_key(binary, &dir)?;
        let udp = free_udp_port()?;
        plans.push((name, dir, key, udp));
    }
    let mut hearths = Vec::new();
    for (i, (name, dir, _, udp)) in plans.iter().enumerate() {
        let (peer, _, key, peer_udp) = &plans[1 - i];
        let env = vec![
            ("HEARTH_SERVER_NAME".to_owned(), name.to_string()),
            (
                "HEARTH_METRICS__LISTEN".to_owned(),
                format!("127.0.0.1:{}", metrics_ports[i]),
            ),
            (
                "HEARTH_FEDERATION__LISTEN".to_owned(),
                format!("127.0.0.1:{udp}"),
            ),
            (
                "HEARTH_FEDERATION__PEERS".to_owned(),
                format!(
                    r#"[{{ name = "{peer}", address = "127.0.0.1:{peer_udp}", key = "{key}" }}]"#
                ),
            ),
        ];
        hearths.push(Hearth::start_env(binary, dir.clone(), &env).await?);
    }
    let b = hearths.pop().expect("two");
    let a = hearths.pop().expect("two");
    Ok((a, b))
}

/// Whether `GET /v1/health` at `addr` answers 200 (a plain TCP request; the bench has no other
/// HTTP client).
async fn is_healthy(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// Many connections need many file descriptors: raise the soft limit to the hard limit.
pub fn raise_open_file_limit() {
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
