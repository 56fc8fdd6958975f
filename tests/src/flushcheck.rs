//! Whether data was on disk before it was acknowledged, told from the outside.
//!
//! A SIGKILL keeps the page cache, so a crash test cannot see a missing flush. Instead a process
//! runs with `flushcheck.so` (`tests/flushcheck/flushcheck.c`, built here with the system C
//! compiler) preloaded: it logs, in order, every write, creation, rename and flush under one
//! folder, and delays each flush a little. The test appends its own marks to the same log (an
//! acknowledgement it received, a command that finished); the log's order then says whether the
//! flush that covers some data completed before the mark.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Write(String),
    /// A write that carried the bytes `FLUSHPROBE<n>`.
    Probe(u64, String),
    Created(String),
    Renamed(String, String),
    FlushBegins(u64, String),
    FlushEnded(u64, String),
    /// `sync_file_range`: not a flush of the drive, so it covers nothing.
    RangeSync(String),
    /// A flush failed on purpose (see [`FlushLog::fail_next_flush`]).
    FlushFailed(u64, String),
    /// A flush waits while flushes are held (see [`FlushLog::hold_flushes`]).
    FlushHeld(u64, String),
    /// A line the test wrote.
    Mark(String),
}

/// The preload library, compiled once per test binary into the target directory.
pub fn library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("flushcheck/flushcheck.c");
        let exe = std::env::current_exe().expect("current exe");
        let deps = exe.parent().expect("deps dir");
        // Built under a name of this process's own, then renamed: test binaries run at once.
        let building = deps.join(format!("flushcheck-{}.so", std::process::id()));
        let out = deps.join("flushcheck.so");
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&compiler)
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&building)
            .arg(&source)
            .arg("-ldl")
            .status()
            .unwrap_or_else(|e| panic!("run the C compiler {compiler:?}: {e}"));
        assert!(status.success(), "compiling {} failed", source.display());
        std::fs::rename(&building, &out).expect("rename the built library");
        out
    })
}

/// A log of what processes did to the files under `dir`.
pub struct FlushLog {
    dir: PathBuf,
    log: PathBuf,
    /// Flushes of files whose path contains this can be made to fail.
    fail_match: Option<String>,
}

impl FlushLog {
    /// Watches `dir` (created if missing), logging to `log` (outside `dir`).
    pub fn new(dir: &Path, log: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create the watched folder");
        let dir = dir.canonicalize().expect("canonical watched folder");
        Self {
            dir,
            log: log.to_owned(),
            fail_match: None,
        }
    }

    /// The same, and [`Self::fail_next_flush`] fails, and [`Self::hold_flushes`] holds, flushes
    /// of files whose path contains `matching`.
    pub fn failing(dir: &Path, log: &Path, matching: &str) -> Self {
        Self {
            fail_match: Some(matching.to_owned()),
            ..Self::new(dir, log)
        }
    }

    fn trigger(&self) -> PathBuf {
        self.log.with_extension("fail")
    }

    /// The next flush of a matching file fails with EIO, once.
    pub fn fail_next_flush(&self) {
        std::fs::write(self.trigger(), b"").expect("write the failure trigger");
    }

    /// Flushes of matching files wait from now until [`Self::release_flushes`].
    pub fn hold_flushes(&self) {
        std::fs::write(self.hold(), b"").expect("write the hold trigger");
    }

    /// Lets held flushes go, and returns once every one that was waiting has ended or failed (so
    /// that holding again right after cannot catch them still waiting).
    pub fn release_flushes(&self) {
        std::fs::remove_file(self.hold()).expect("remove the hold trigger");
        let Some(matching) = &self.fail_match else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let events = self.events();
            if !held_at(&events, events.len(), matching) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a held flush never ended after its release"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn hold(&self) -> PathBuf {
        self.log.with_extension("hold")
    }

    /// Whether the failure asked for has happened.
    pub fn failure_happened(&self) -> bool {
        !self.trigger().exists()
    }

    /// Environment for a process to run under the check.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("LD_PRELOAD".into(), library().display().to_string()),
            ("FLUSHCHECK_DIR".into(), self.dir.display().to_string()),
            ("FLUSHCHECK_LOG".into(), self.log.display().to_string()),
        ];
        if let Some(matching) = &self.fail_match {
            env.push(("FLUSHCHECK_FAIL_MATCH".into(), matching.clone()));
            env.push((
                "FLUSHCHECK_FAIL_TRIGGER".into(),
                self.trigger().display().to_string(),
            ));
            env.push((
                "FLUSHCHECK_HOLD_TRIGGER".into(),
                self.hold().display().to_string(),
            ));
        }
        env
    }

    /// Appends a mark: whatever the log holds before it happened before this call.
    pub fn mark(&self, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the flush log");
        file.write_all(format!("A {text}\n").as_bytes())
            .expect("append a mark");
    }

    pub fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(parse).collect()
    }
}

fn parse(line: &str) -> Option<Event> {
    let (kind, rest) = line.split_once(' ')?;
    let two = || rest.split_once(' ');
    Some(match kind {
        "W" => Event::Write(rest.into()),
        "C" => Event::Created(rest.into()),
        "F" => Event::RangeSync(rest.into()),
        "A" => Event::Mark(rest.into()),
        "P" => {
            let (n, path) = two()?;
            Event::Probe(n.parse().ok()?, path.into())
        }
        "R" => {
            let (from, to) = two()?;
            Event::Renamed(from.into(), to.into())
        }
        "X" => {
            let (tid, path) = two()?;
            Event::FlushFailed(tid.parse().ok()?, path.into())
        }
        "H" => {
            let (tid, path) = two()?;
            Event::FlushHeld(tid.parse().ok()?, path.into())
        }
        "B" | "E" => {
            let (tid, path) = two()?;
            let tid = tid.parse().ok()?;
            if kind == "B" {
                Event::FlushBegins(tid, path.into())
            } else {
                Event::FlushEnded(tid, path.into())
            }
        }
        _ => return None,
    })
}

/// Whether, at the mark at `upto`, a flush of a file whose path contains `matching` was held
/// and had not ended.
pub fn held_at(events: &[Event], upto: usize, matching: &str) -> bool {
    let mut held: Vec<(u64, &str)> = Vec::new();
    for event in &events[..upto] {
        match event {
            Event::FlushHeld(tid, path) if path.contains(matching) => held.push((*tid, path)),
            Event::FlushEnded(tid, path) | Event::FlushFailed(tid, path) => {
                held.retain(|h| *h != (*tid, path.as_str()))
            }
            _ => {}
        }
    }
    !held.is_empty()
}

/// Index of the first mark `text`.
pub fn mark_index(events: &[Event], text: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| matches!(e, Event::Mark(m) if m == text))
}

/// Completed flushes before `upto`: (path, index the flush began, index it ended).
fn flushes(events: &[Event], upto: usize) -> Vec<(&str, usize, usize)> {
    let mut open: HashMap<(u64, &str), usize> = HashMap::new();
    let mut done = Vec::new();
    for (i, event) in events[..upto].iter().enumerate() {
        match event {
            Event::FlushBegins(tid, path) => {
                open.insert((*tid, path), i);
            }
            Event::FlushEnded(tid, path) => {
                if let Some(begun) = open.remove(&(*tid, path.as_str())) {
                    done.push((path.as_str(), begun, i));
                }
            }
            _ => {}
        }
    }
    done
}

/// Whether the bytes of probe `n` were flushed to disk before the mark at `upto`: a flush of the
/// file they were first written to began after that write and ended before the mark.
pub fn probe_flushed_before(events: &[Event], n: u64, upto: usize) -> Result<(), String> {
    let (written, path) = events[..upto]
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e {
            Event::Probe(m, path) if *m == n => Some((i, path.as_str())),
            _ => None,
        })
        .ok_or_else(|| format!("probe {n} was never written to a file before the mark"))?;
    flushes(events, upto)
        .iter()
        .any(|(p, begun, _)| *p == path && *begun > written)
        .then_some(())
        .ok_or_else(|| {
            format!("probe {n} (written to {path}) was not flushed before the mark was made")
        })
}

fn parent(path: &str) -> &str {
    Path::new(path)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or("/")
}

/// What a crash at the mark at `upto` could lose: files still holding unflushed writes, and
/// folders whose new or renamed entries were not flushed. Files gone by now are left out.
pub fn not_durable_at(events: &[Event], upto: usize) -> Vec<String> {
    let flushes = flushes(events, upto);
    // Whether a flush of `path` began after `since` and ended before `upto`.
    let flushed_after =
        |path: &str, since: usize| flushes.iter().any(|(p, b, _)| *p == path && *b > since);
    let mut file_changed: HashMap<String, usize> = HashMap::new();
    let mut folder_changed: HashMap<String, usize> = HashMap::new();
    for (i, event) in events[..upto].iter().enumerate() {
        match event {
            Event::Write(path) | Event::Probe(_, path) => {
                file_changed.insert(path.clone(), i);
            }
            Event::Created(path) => {
                folder_changed.insert(parent(path).into(), i);
            }
            Event::Renamed(from, to) => {
                // The data travels with the file: unflushed before, unflushed after.
                if let Some(changed) = file_changed.remove(from)
                    && !flushed_after(from, changed)
                {
                    file_changed.insert(to.clone(), changed);
                }
                folder_changed.insert(parent(from).into(), i);
                folder_changed.insert(parent(to).into(), i);
            }
            _ => {}
        }
    }
    let mut lost: Vec<String> = file_changed
        .into_iter()
        .filter(|(path, changed)| !flushed_after(path, *changed) && Path::new(path).exists())
        .map(|(path, _)| format!("{path}: written, not flushed"))
        .chain(
            folder_changed
                .into_iter()
                .filter(|(path, changed)| !flushed_after(path, *changed))
                .map(|(path, _)| {
                    format!("{path}: an entry created or renamed, folder not flushed")
                }),
        )
        .collect();
    lost.sort();
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &str) -> Vec<Event> {
        lines.lines().filter_map(parse).collect()
    }

    #[test]
    fn a_probe_counts_only_when_its_flush_began_after_it_and_ended_before_the_mark() {
        let good = log("P 1 /d/db\nW /d/db\nB 7 /d/db\nE 7 /d/db\nA ack 1");
        assert_eq!(probe_flushed_before(&good, 1, 4), Ok(()));
        let acked_first = log("P 1 /d/db\nW /d/db\nB 7 /d/db\nA ack 1\nE 7 /d/db");
        assert!(probe_flushed_before(&acked_first, 1, 3).is_err());
        let flushed_before_written = log("B 7 /d/db\nP 1 /d/db\nE 7 /d/db\nA ack 1");
        assert!(probe_flushed_before(&flushed_before_written, 1, 3).is_err());
        let other_file = log("P 1 /d/db\nB 7 /d/x\nE 7 /d/x\nA ack 1");
        assert!(probe_flushed_before(&other_file, 1, 3).is_err());
        let range_sync = log("P 1 /d/db\nF /d/db\nA ack 1");
        assert!(probe_flushed_before(&range_sync, 1, 2).is_err());
    }

    #[test]
    fn a_rename_needs_its_file_and_its_folder_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("state"), b"x").unwrap();
        let whole = log(&format!(
            "C {d}/state.tmp\nW {d}/state.tmp\nB 1 {d}/state.tmp\nE 1 {d}/state.tmp\n\
             R {d}/state.tmp {d}/state\nB 1 {d}\nE 1 {d}\nA done"
        ));
        assert_eq!(not_durable_at(&whole, 7), Vec::<String>::new());
        let no_file_flush = log(&format!(
            "W {d}/state.tmp\nR {d}/state.tmp {d}/state\nB 1 {d}\nE 1 {d}\nA done"
        ));
        assert_eq!(
            not_durable_at(&no_file_flush, 4),
            vec![format!("{d}/state: written, not flushed")]
        );
        let no_folder_flush = log(&format!(
            "W {d}/state.tmp\nB 1 {d}/state.tmp\nE 1 {d}/state.tmp\nR {d}/state.tmp {d}/state\nA done"
        ));
        assert_eq!(
            not_durable_at(&no_folder_flush, 4),
            vec![format!(
                "{d}: an entry created or renamed, folder not flushed"
            )]
        );
    }
}
