//! `hearth admin backup --to DIR` and `hearth admin restore --from DIR`.
//!
//! A backup is taken while the hearth serves: the database from one snapshot (every message
//! acknowledged before the backup began is in it, and each room's events form an unbroken
//! prefix), then the media blobs (written before any message that names them, and never
//! changed), then the key files, each synced; `backup.json` is written last, so a directory
//! without it is an unfinished backup. Restore runs on a stopped hearth into a data directory
//! with no database, and checks the copy against the manifest before it is used.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ops::data_dir::{create_private, db_path, sync_parent};
use crate::store::{Store, StoreError, journal_path};

/// The file that marks a finished backup and says what is in it.
pub const MANIFEST: &str = "backup.json";
const FORMAT: u32 = 1;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub server_name: String,
    pub created_ts: u64,
    /// (table, rows) of the database copy.
    pub tables: Vec<(String, u64)>,
    /// Files of the data directory copied beside it (keys).
    pub files: Vec<String>,
    pub media_files: u64,
    pub media_bytes: u64,
}

/// Why a backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists and is not empty; back up into a new directory")]
    NotEmpty(PathBuf),
    #[error("{0} holds no finished backup (no {MANIFEST})")]
    NoManifest(PathBuf),
    #[error("this backup is of {backup}, and this hearth is {config}")]
    OtherServer { backup: String, config: String },
    #[error(
        "{0} already holds a database; restore into a data directory without one (move it away first)"
    )]
    HasDatabase(PathBuf),
    #[error("the restored copy does not match the backup's manifest: {0}")]
    Mismatch(String),
    #[error("backup format {0} is not one this hearth reads")]
    Format(u32),
    #[error("{path}: {reason}")]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Open(#[from] crate::store::OpenError),
    #[error("{0}")]
    DataDir(#[from] crate::ops::data_dir::DataDirError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |reason| BackupError::Io {
        path: path.to_owned(),
        reason,
    }
}

/// Files of the data directory that are not the database: the keys. The admin socket, the
/// database, its commit journal (the snapshot holds what it held) and the media folder are not
/// among them.
fn key_files(data_dir: &Path) -> Result<Vec<String>, BackupError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(io(data_dir))? {
        let entry = entry.map_err(io(data_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().map_err(io(data_dir))?;
        if kind.is_file() && !name.starts_with("hearth.redb") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Copies `from` to `to` and syncs it; its size.
fn copy_synced(from: &Path, to: &Path) -> Result<u64, BackupError> {
    let bytes = std::fs::copy(from, to).map_err(io(from))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io(to))?;
    Ok(bytes)
}

/// Copies the finished blobs of `from` (not `partial/`) into `to`; (files, bytes).
fn copy_media(from: &Path, to: &Path) -> Result<(u64, u64), BackupError> {
    create_private(to)?;
    let (mut files, mut bytes) = (0, 0);
    if !from.exists() {
        return Ok((0, 0));
    }
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        if entry.file_type().map_err(io(from))?.is_file() {
            bytes += copy_synced(&entry.path(), &to.join(entry.file_name()))?;
            files += 1;
        }
    }
    std::fs::File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(io(to))?;
    Ok((files, bytes))
}

/// Takes a backup of a hearth (running or not: `store` is its open database) into `to`.
pub fn backup(
    store: &Store,
    data_dir: &Path,
    server_name: &str,
    to: &Path,
) -> Result<Manifest, BackupError> {
    if to.exists() && std::fs::read_dir(to).map_err(io(to))?.next().is_some() {
        return Err(BackupError::NotEmpty(to.to_owned()));
    }
    create_private(to)?;
    let created_ts = crate::clock::now_ms();
    // The database first: every blob a message in it names was stored before the message.
    let tables = store.backup_to(&db_path(to))?;
    let (media_files, media_bytes) = copy_media(&data_dir.join("media"), &to.join("media"))?;
    let files = key_files(data_dir)?;
    for name in &files {
        copy_synced(&data_dir.join(name), &to.join(name))?;
    }
    let manifest = Manifest {
        format: FORMAT,
        server_name: server_name.to_owned(),
        created_ts,
        tables,
        files,
        media_files,
        media_bytes,
    };
    write_manifest(to, &manifest)?;
    Ok(manifest)
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let path = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(manifest).expect("manifests serialise");
    std::fs::write(&path, text).map_err(io(&path))?;
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(io(&path))?;
    sync_parent(&path).map_err(io(&path))?;
    Ok(())
}

/// Reads a backup's manifest.
pub fn manifest(from: &Path) -> Result<Manifest, BackupError> {
    let path = from.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|_| BackupError::NoManifest(from.to_owned()))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|_| BackupError::NoManifest(from.to_owned()))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Format(manifest.format));
    }
    Ok(manifest)
}

/// Restores the backup in `from` into `data_dir` (of a stopped hearth, holding no database),
/// then opens the copy and checks every table's rows against the manifest.
pub fn restore(from: &Path, data_dir: &Path, server_name: &str) -> Result<Manifest, BackupError> {
    let manifest = manifest(from)?;
    if manifest.server_name != server_name {
        return Err(BackupError::OtherServer {
            backup: manifest.server_name,
            config: server_name.to_owned(),
        });
    }
    let target = db_path(data_dir);
    if target.exists() || journal_path(&target).exists() {
        return Err(BackupError::HasDatabase(data_dir.to_owned()));
    }
    create_private(data_dir)?;
    for name in &manifest.files {
        copy_synced(&from.join(name), &data_dir.join(name))?;
    }
    let (media_files, _) = copy_media(&from.join("media"), &data_dir.join("media"))?;
    if media_files != manifest.media_files {
        return Err(BackupError::Mismatch(format!(
            "{media_files} media files, the manifest says {}",
            manifest.media_files
        )));
    }
    // The database last, under a temporary name: a data directory with `hearth.redb` in it is
    // a complete restore.
    let partial = data_dir.join("hearth.redb.restoring");
    copy_synced(&db_path(from), &partial)?;
    {
        let copy = Store::open(&partial)?;
        let mut found = copy.table_rows()?;
        let mut expected = manifest.tables.clone();
        found.sort();
        expected.sort();
        // Opening may create tables a newer hearth has and the backup lacks (empty).
        found.retain(|(name, rows)| *rows > 0 || expected.iter().any(|(n, _)| n == name));
        if found != expected {
            return Err(BackupError::Mismatch(format!(
                "tables {found:?}, the manifest says {expected:?}"
            )));
        }
    }
    // The copy's journal is empty once it has opened; the hearth starts its own.
    let journal = journal_path(&partial);
    std::fs::remove_file(&journal).map_err(io(&journal))?;
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    sync_parent(&target).map_err(io(&target))?;
    Ok(manifest)
}
