//! A device's MLS state in files with fsync: the native [`StateStorage`].

use std::path::{Path, PathBuf};

use hearth_client_core::e2ee::{E2eeError, Record, StateStorage};

use crate::durable_file::Appender;

/// The state files of one device, locked for as long as they are open: two processes working on
/// one device's state would overwrite each other's ratchets and could reuse a key.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    keys_path: PathBuf,
    journal_path: PathBuf,
    /// The journal, open once it is first written.
    journal: Option<Appender>,
    _lock: std::fs::File,
}

impl StateFile {
    /// `<dir>/mls-state.bin`, `<dir>/mls-journal.bin` (and `<dir>/mls-keys.bin` of versions
    /// before 5), locked through `<dir>/mls-state.lock`.
    pub fn in_dir(dir: &Path) -> Result<Self, E2eeError> {
        crate::durable_file::create_dir_all(dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("mls-state.lock"))?;
        if lock.try_lock().is_err() {
            return Err(E2eeError::InUse(dir.display().to_string()));
        }
        Ok(Self {
            path: dir.join("mls-state.bin"),
            keys_path: dir.join("mls-keys.bin"),
            journal_path: dir.join("mls-journal.bin"),
            journal: None,
            _lock: lock,
        })
    }

    fn path(&self, record: Record) -> &Path {
        match record {
            Record::State => &self.path,
            Record::Keys => &self.keys_path,
            Record::Journal => &self.journal_path,
        }
    }

    fn journal(&mut self) -> Result<&mut Appender, E2eeError> {
        if self.journal.is_none() {
            self.journal = Some(Appender::open(&self.journal_path)?);
        }
        Ok(self.journal.as_mut().expect("opened above"))
    }
}

/// Records are replaced as a temporary file, fsynced, renamed over the old one, and the folder
/// fsynced; the journal is appended to with `fdatasync` (or, for what may wait, `write` alone and
/// `fdatasync` at the next flush), and emptied in place.
impl StateStorage for StateFile {
    fn read(&self, record: Record) -> Result<Option<Vec<u8>>, E2eeError> {
        match std::fs::read(self.path(record)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(E2eeError::Io(e)),
        }
    }

    fn replace(&mut self, record: Record, bytes: &[u8]) -> Result<(), E2eeError> {
        if record == Record::Journal && bytes.is_empty() {
            return Ok(self.journal()?.truncate()?);
        }
        if record == Record::Journal {
            // Renamed over: another file, reopened before the next append.
            self.journal = None;
        }
        Ok(crate::durable_file::replace(self.path(record), bytes)?)
    }

    fn append_journal(&mut self, bytes: &[u8]) -> Result<(), E2eeError> {
        Ok(self.journal()?.append(bytes)?)
    }

    fn append_journal_unflushed(&mut self, bytes: &[u8]) -> Result<(), E2eeError> {
        Ok(self.journal()?.append_unflushed(bytes)?)
    }

    fn flush_journal(&mut self) -> Result<(), E2eeError> {
        // Also when this process has appended nothing yet: the journal it opened on may end in
        // frames a crashed process left in the OS's cache only.
        if self.journal.is_none() && !self.journal_path.exists() {
            return Ok(());
        }
        Ok(self.journal()?.flush()?)
    }

    fn flushes_later(&self) -> bool {
        true
    }

    fn describe(&self, record: Record) -> String {
        self.path(record).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use hearth_client_core::e2ee::Mls;
    use hearth_spec::{DeviceId, RoomId, UserId};

    use super::*;

    fn ids(user: &str) -> (UserId, DeviceId) {
        (
            UserId::parse(&format!("@{user}:localhost")).unwrap(),
            DeviceId::parse("D1").unwrap(),
        )
    }

    #[test]
    fn a_flush_before_any_append_flushes_the_journal_found_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateFile::in_dir(dir.path()).unwrap();
        // Nothing to flush: no journal is made for it.
        state.flush_journal().unwrap();
        assert!(state.journal.is_none() && !state.journal_path.exists());
        // Frames written by a process that crashed before flushing them.
        std::fs::write(&state.journal_path, b"frames").unwrap();
        state.flush_journal().unwrap();
        assert!(state.journal.is_some(), "the journal was not flushed");
        state.append_journal(b" and more").unwrap();
        assert_eq!(
            state.read(Record::Journal).unwrap().unwrap(),
            b"frames and more"
        );
    }

    #[test]
    fn a_device_reopens_from_its_folder_and_one_process_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (user, device) = ids("bob");
        let room = RoomId::parse("!r:localhost").unwrap();
        let mut bob = crate::e2ee::open(dir.path(), &user, &device).unwrap();
        let fingerprint = bob.fingerprint();
        bob.create_group(&room).unwrap();
        bob.set_cursor(9).unwrap();
        // A second opener of the same state is refused while the first holds it.
        assert!(matches!(
            crate::e2ee::open(dir.path(), &user, &device),
            Err(E2eeError::InUse(_))
        ));
        drop(bob);

        let bob = crate::e2ee::open(dir.path(), &user, &device).unwrap();
        assert_eq!(
            (bob.fingerprint(), bob.cursor(), bob.in_group(&room)),
            (fingerprint, 9, true)
        );
        drop(bob);
        // Another device's folder is not opened as this one.
        let (eve, _) = ids("eve");
        assert!(matches!(
            crate::e2ee::open(dir.path(), &eve, &device),
            Err(E2eeError::OtherDevice(_))
        ));
    }

    #[test]
    fn saves_append_to_the_journal_and_a_torn_tail_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (user, device) = ids("dave");
        let journal = dir.path().join("mls-journal.bin");
        let mut dave = crate::e2ee::open(dir.path(), &user, &device).unwrap();
        let snapshot = std::fs::read(dir.path().join("mls-state.bin")).unwrap();
        for cursor in 1..=5 {
            dave.set_cursor(cursor).unwrap();
        }
        let appended = std::fs::read(&journal).unwrap();
        assert!(!appended.is_empty());
        // Saves appended; the snapshot was not rewritten.
        assert_eq!(
            std::fs::read(dir.path().join("mls-state.bin")).unwrap(),
            snapshot
        );
        drop(dave);
        // A crash during a sixth save left half its frame.
        let mut torn = appended.clone();
        torn.extend_from_slice(&appended[..appended.len() / 5 / 2]);
        std::fs::write(&journal, &torn).unwrap();
        let mut dave = crate::e2ee::open(dir.path(), &user, &device).unwrap();
        assert_eq!(dave.cursor(), 5);
        // Opening wrote the state whole and emptied the journal: new frames follow no torn one.
        assert!(std::fs::read(&journal).unwrap().is_empty());
        dave.set_cursor(6).unwrap();
        drop(dave);
        let dave = crate::e2ee::open(dir.path(), &user, &device).unwrap();
        assert_eq!(dave.cursor(), 6);
    }

    #[test]
    fn a_garbled_state_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (user, device) = ids("carol");
        drop(crate::e2ee::open(dir.path(), &user, &device).unwrap());
        let path = dir.path().join("mls-state.bin");
        std::fs::write(&path, [0xff; 7]).unwrap();
        match Mls::open_in(
            Box::new(StateFile::in_dir(dir.path()).unwrap()),
            &user,
            &device,
        ) {
            Err(E2eeError::Decode { path: named, .. }) => {
                assert_eq!(named, path.display().to_string())
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
}
