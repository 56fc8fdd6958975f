//! The data directory holds password hashes, the server's keys and room metadata: only the
//! hearth's own user may read it. It is created 0700 (files 0600, through the process umask), and
//! a hearth refuses to start on one that the group or others can read.

use std::path::{Path, PathBuf};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {path}: {reason}")]
    Create {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("cannot read {path}: {reason}")]
    Inspect {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error(
        "{path} can be read by other users (mode {mode:o}); it holds password hashes and keys. \
         Run `chmod -R go-rwx {dir}`, or set storage.allow_shared_data_dir = true \
         (HEARTH_STORAGE__ALLOW_SHARED_DATA_DIR=true) to start anyway"
    )]
    Shared {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
}

/// The database file.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("hearth.redb")
}
/// The server key file.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server.key")
}
/// The admin socket.
pub fn admin_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// Creates `dir` (mode 0700) if it is missing (an existing empty one is made 0700), makes files this process creates private to its
/// user, and checks that `dir` and everything directly in it (and in `media/`) is private; with
/// `allow_shared` a shared one is only logged.
pub fn prepare(dir: &Path, allow_shared: bool) -> Result<(), DataDirError> {
    private_files();
    create_private(dir)?;
    tighten_if_empty(dir)?;
    for path in entries(dir)? {
        let mode = mode_of(&path)?;
        if mode & 0o077 == 0 {
            continue;
        }
        let error = DataDirError::Shared {
            path: path.clone(),
            dir: dir.to_owned(),
            mode: mode & 0o7777,
        };
        if !allow_shared {
            return Err(error);
        }
        tracing::warn!("{error}");
    }
    Ok(())
}

/// Creates `dir` and any missing parents with mode 0700, each new one's name flushed to disk.
pub fn create_private(dir: &Path) -> Result<(), DataDirError> {
    let create = |source| DataDirError::Create {
        path: dir.to_owned(),
        reason: source,
    };
    let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(create)?;
    for made in missing.iter().rev() {
        sync_parent(made).map_err(create)?;
    }
    Ok(())
}

/// Flushes the folder holding `path`, so that a name just created or renamed there survives a
/// power cut.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// An empty directory (made by `mkdir` or a temp-dir helper for a new hearth) has exposed
/// nothing yet: it is made private rather than refused.
fn tighten_if_empty(dir: &Path) -> Result<(), DataDirError> {
    let inspect = |source| DataDirError::Inspect {
        path: dir.to_owned(),
        reason: source,
    };
    let empty = std::fs::read_dir(dir).map_err(inspect)?.next().is_none();
    #[cfg(unix)]
    if empty && mode_of(dir)? & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(inspect)?;
    }
    #[cfg(not(unix))]
    let _ = empty;
    Ok(())
}

/// The directory itself, what is directly in it, and the media blobs.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataDirError> {
    let mut paths = vec![dir.to_owned()];
    let list = |dir: &Path| -> Result<Vec<PathBuf>, DataDirError> {
        let read = std::fs::read_dir(dir).map_err(|source| DataDirError::Inspect {
            path: dir.to_owned(),
            reason: source,
        })?;
        Ok(read.filter_map(|e| e.ok()).map(|e| e.path()).collect())
    };
    let top = list(dir)?;
    let media = dir.join("media");
    if media.is_dir() {
        paths.extend(list(&media)?);
    }
    paths.extend(top);
    Ok(paths)
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Result<u32, DataDirError> {
    use std::os::unix::fs::MetadataExt;
    // Not following links: a socket or link's own mode is what matters for what we created.
    std::fs::symlink_metadata(path)
        .map(|m| m.mode())
        .map_err(|source| DataDirError::Inspect {
            path: path.to_owned(),
            reason: source,
        })
}

#[cfg(not(unix))]
fn mode_of(_: &Path) -> Result<u32, DataDirError> {
    Ok(0o600)
}

/// Files and directories this process creates from now on are its user's alone (the database
/// engine and the media store create theirs with the default mode, which the umask narrows).
fn private_files() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_data_directory_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare(&dir, false).unwrap();
        assert_eq!(mode_of(&dir).unwrap() & 0o777, 0o700);
        std::fs::write(dir.join("f"), b"x").unwrap();
        assert_eq!(mode_of(&dir.join("f")).unwrap() & 0o777, 0o600);
        // An empty directory someone made with their umask is simply made private.
        let made = root.path().join("made");
        std::fs::create_dir(&made).unwrap();
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&made, false).unwrap();
        assert_eq!(mode_of(&made).unwrap() & 0o777, 0o700);
    }

    #[test]
    fn a_readable_file_or_directory_is_refused_unless_allowed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir, false).unwrap();
        let db = dir.join("hearth.redb");
        std::fs::write(&db, b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = prepare(&dir, false).unwrap_err();
        assert!(
            matches!(&err, DataDirError::Shared { path, mode: 0o644, .. } if *path == db),
            "{err}"
        );
        assert!(err.to_string().contains("chmod -R go-rwx"));
        prepare(&dir, true).unwrap();

        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir_all(dir.join("media")).unwrap();
        let blob = dir.join("media").join("blob");
        std::fs::write(&blob, b"x").unwrap();
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(
            matches!(prepare(&dir, false), Err(DataDirError::Shared { path, .. }) if path == blob)
        );
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            matches!(prepare(&dir, false), Err(DataDirError::Shared { path, .. }) if path == dir)
        );
    }
}
