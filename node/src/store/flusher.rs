//! A thread that runs the commit journal's `fdatasync` while the committer writes the batch's
//! rows into its database transaction: the disk's wait and the rows' CPU overlap instead of
//! adding up on every message's path.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;

type Request = (Arc<File>, mpsc::SyncSender<io::Result<()>>);

/// The flushing thread of one journal; it ends when the journal is dropped.
#[derive(Debug)]
pub struct Flusher {
    requests: Option<mpsc::Sender<Request>>,
}

impl Flusher {
    pub fn start() -> Self {
        let (requests, incoming) = mpsc::channel::<Request>();
        let started = std::thread::Builder::new()
            .name("hearth-journal-flush".into())
            .spawn(move || {
                for (file, done) in incoming {
                    let _ = done.send(file.sync_data());
                }
            });
        // Without the thread every flush runs on the caller's, as before this existed.
        Self {
            requests: started.ok().map(|_| requests),
        }
    }

    /// Starts `fdatasync` of `file`; [`PendingFlush::wait`] has its outcome.
    pub fn start_flush(&self, file: &Arc<File>) -> PendingFlush {
        let (done, outcome) = mpsc::sync_channel(1);
        let request = (file.clone(), done);
        match self.requests.as_ref().map(|r| r.send(request)) {
            Some(Ok(())) => PendingFlush::Running(outcome),
            _ => PendingFlush::Done(file.sync_data()),
        }
    }
}

/// A flush under way on the flushing thread.
#[must_use = "a started flush must be waited for before its record counts as durable"]
pub enum PendingFlush {
    Running(mpsc::Receiver<io::Result<()>>),
    Done(io::Result<()>),
}

impl PendingFlush {
    /// Waits for the flush: Ok once everything written before it started is durable.
    pub fn wait(self) -> io::Result<()> {
        match self {
            PendingFlush::Done(outcome) => outcome,
            PendingFlush::Running(outcome) => outcome
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the journal's flushing thread ended"))),
        }
    }
}
