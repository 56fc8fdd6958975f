//! One process at a time holds a device's end-to-end state (two would reuse keys). While
//! `follow` or `chat` runs, it serves the other commands of the same profile over a Unix socket
//! in the profile: another `hearth-chat` finds the state in use, sends its arguments there, and
//! prints what the running process answers, as if it had run the command itself.
//!
//! Protocol: one JSON line with the arguments; the answer is lines `1 <text>` (standard output)
//! and `2 <text>` (standard error), then `exit <code>`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest argument line accepted.
const MAX_REQUEST: usize = 256 * 1024;

pub fn socket_path(profile: &Path) -> PathBuf {
    profile.join("hearth-chat.sock")
}

thread_local! {
    /// The output of a command served for another process, while it runs.
    static CAPTURE: RefCell<Option<Vec<(u8, String)>>> = const { RefCell::new(None) };
}

/// Keeps `line` for the process being served, if one is (`stream` 1: output, 2: errors).
pub fn captured(stream: u8, line: &str) -> bool {
    CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push((stream, line.to_owned()));
            true
        }
        None => false,
    })
}

fn start_capture() {
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

fn take_capture() -> Vec<(u8, String)> {
    CAPTURE.with(|c| c.borrow_mut().take().unwrap_or_default())
}

/// Listens for the profile's other commands (a socket left by a process that died is replaced).
pub fn listen(profile: &Path) -> Option<UnixListener> {
    let path = socket_path(profile);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Some(listener)
}

/// Has the running process run this one's command; returns the exit code it answered.
pub async fn forward(profile: &Path) -> anyhow::Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stream = UnixStream::connect(socket_path(profile))
        .await
        .context("another hearth-chat is using this profile and does not take commands (only `follow` and `chat` do); wait for it to finish")?;
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_vec(&args)?;
    request.push(b'\n');
    write.write_all(&request).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(text) = line.strip_prefix("1 ") {
            say!("{text}");
        } else if let Some(text) = line.strip_prefix("2 ") {
            eprintln!("{text}");
        } else if let Some(code) = line.strip_prefix("exit ") {
            return Ok(code.parse().unwrap_or(1));
        }
    }
    anyhow::bail!("the hearth-chat running on this profile stopped before answering")
}

/// A command another process asked for: its arguments, and where to answer.
pub struct Request {
    pub args: Vec<String>,
    stream: UnixStream,
}

impl Request {
    /// Reads the arguments of one request.
    pub async fn read(stream: UnixStream) -> anyhow::Result<Self> {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let mut limited = (&mut reader).take(MAX_REQUEST as u64);
        limited.read_until(b'\n', &mut line).await?;
        let args: Vec<String> = serde_json::from_slice(&line).context("a malformed request")?;
        Ok(Self {
            args,
            stream: reader.into_inner(),
        })
    }

    /// Starts keeping what the command prints, for [`Self::answer`].
    pub fn capture(&self) {
        start_capture();
    }

    /// Sends what the command printed, then `error` (if any) and the exit code.
    pub async fn answer(mut self, error: Option<String>) {
        let mut out = String::new();
        let mut lines = take_capture();
        let code = match error {
            Some(e) => {
                lines.push((2, e));
                1
            }
            None => 0,
        };
        for (stream, text) in lines {
            for line in text.lines() {
                out.push_str(&format!("{stream} {line}\n"));
            }
        }
        out.push_str(&format!("exit {code}\n"));
        let _ = self.stream.write_all(out.as_bytes()).await;
    }
}
