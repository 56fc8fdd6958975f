//! Files that are on disk when the call returns, for state a device cannot get back: its keys
//! and ratchets, its session, the messages it decrypted (an MLS device decrypts a message once).

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes`: temporary file, fsync, rename, folder fsync. A crash leaves the
/// old file or the new one. The file is readable only by its owner.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = folder_of(path);
    create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = owner_only()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, each new name flushed to disk with its folder.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for made in missing.iter().rev() {
        std::fs::File::open(folder_of(made))?.sync_all()?;
    }
    Ok(())
}

/// Appends `bytes` to `path` (created if missing) and flushes them, and the folder's entry if
/// the file is new.
pub fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    Appender::open(path)?.append(bytes)
}

/// A file that grows by appends, each flushed before it returns; kept open between appends.
#[derive(Debug)]
pub struct Appender {
    file: std::fs::File,
}

impl Appender {
    /// Opens `path` for appending (created if missing, its folder entry then flushed).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let existed = path.exists();
        let file = owner_only().create(true).append(true).open(path)?;
        if !existed {
            std::fs::File::open(folder_of(path))?.sync_all()?;
        }
        Ok(Self { file })
    }

    /// Appends `bytes` and flushes them (data and the file's new length).
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_data()
    }

    /// Appends `bytes` without waiting for the disk: they are in the OS's hands (a crash of the
    /// process loses nothing) and flushed by the next [`Self::append`] or [`Self::flush`].
    pub fn append_unflushed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Flushes every append so far.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Empties the file and flushes that.
    pub fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()
    }
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn owner_only() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_and_append_leave_the_bytes_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        replace(&path, b"one").unwrap();
        replace(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!path.with_extension("tmp").exists());
        let log = dir.path().join("log");
        append(&log, b"a\n").unwrap();
        append(&log, b"b\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"a\nb\n");
        let journal = dir.path().join("journal");
        let mut appender = Appender::open(&journal).unwrap();
        appender.append(b"one").unwrap();
        appender.truncate().unwrap();
        appender.append(b"two").unwrap();
        appender.append(b"three").unwrap();
        assert_eq!(std::fs::read(&journal).unwrap(), b"twothree");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [&path, &log, &journal] {
                let mode = std::fs::metadata(file).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", file.display());
            }
        }
    }
}
