//! Attachment blobs: opaque bytes (the client encrypted them), streamed to disk and named by
//! the SHA-256 of their content, so the same blob is stored once and a name can be checked.

use std::path::PathBuf;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Why a blob was not stored.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the blob is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the upload broke off: {0}")]
    Body(#[source] axum::Error),
    #[error("the blob's bytes do not hash to its id")]
    HashMismatch,
    #[error("storage failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Blobs under `<data_dir>/media/`.
#[derive(Debug, Clone)]
pub struct MediaStore {
    dir: PathBuf,
}

impl MediaStore {
    /// Opens (creating) the blob directory and clears uploads a crash left half-written.
    pub fn open(data_dir: &std::path::Path) -> std::io::Result<Self> {
        let dir = data_dir.join("media");
        let partial = dir.join("partial");
        let _ = std::fs::remove_dir_all(&partial);
        crate::ops::data_dir::create_private(&partial).map_err(std::io::Error::other)?;
        Ok(Self { dir })
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Streams `body` to disk, at most `limit` bytes, and names it by its hash. The blob is
    /// durable (file and directory synced) before this returns.
    pub async fn put(
        &self,
        body: axum::body::Body,
        limit: u64,
    ) -> Result<(String, u64), MediaError> {
        let mut writer = self.writer(limit).await?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(MediaError::Body)?;
            writer.write(&chunk).await?;
        }
        writer.finish(None).await
    }

    /// A new blob written piece by piece into `partial/`; it gets its name only when finished.
    pub async fn writer(&self, limit: u64) -> Result<BlobWriter, MediaError> {
        let partial = self
            .dir
            .join("partial")
            .join(format!("{:016x}", rand::random::<u64>()));
        let file = tokio::fs::File::create(&partial).await?;
        Ok(BlobWriter {
            store: self.clone(),
            partial,
            file,
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Whether `id` is a blob name (64 hex digits): anything else could name a path elsewhere.
    fn checked(id: &str) -> std::io::Result<&str> {
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(id)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a media id is 64 hex digits",
            ))
        }
    }

    /// Takes a blob out of service: moved to `quarantine/`, kept for whoever investigates, never
    /// served to devices or peers again. False if it is not (or no longer) served here.
    pub fn quarantine(&self, id: &str) -> std::io::Result<bool> {
        let id = Self::checked(id)?;
        let dir = self.dir.join("quarantine");
        crate::ops::data_dir::create_private(&dir).map_err(std::io::Error::other)?;
        match std::fs::rename(self.path_of(id), dir.join(id)) {
            Ok(()) => {
                crate::ops::data_dir::sync_parent(&dir.join(id))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a blob is in quarantine.
    pub fn is_quarantined(&self, id: &str) -> bool {
        Self::checked(id).is_ok_and(|id| self.dir.join("quarantine").join(id).exists())
    }

    /// Deletes a blob, served or quarantined; whether there was one.
    pub fn delete(&self, id: &str) -> std::io::Result<bool> {
        let id = Self::checked(id)?;
        let mut found = false;
        for path in [self.path_of(id), self.dir.join("quarantine").join(id)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    found = true;
                    crate::ops::data_dir::sync_parent(&path)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// Whether the blob is stored here.
    pub async fn contains(&self, id: &str) -> bool {
        tokio::fs::try_exists(self.path_of(id))
            .await
            .unwrap_or(false)
    }

    /// Opens a blob for reading: its length and the file.
    pub async fn get(&self, id: &str) -> std::io::Result<Option<(u64, tokio::fs::File)>> {
        match tokio::fs::File::open(self.path_of(id)).await {
            Ok(file) => Ok(Some((file.metadata().await?.len(), file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Up to `len` bytes of a blob from `offset` (none at or past its end), and its length.
    pub async fn read_part(
        &self,
        id: &str,
        offset: u64,
        len: usize,
    ) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        let Some((total, mut file)) = self.get(id).await? else {
            return Ok(None);
        };
        let want = total.saturating_sub(offset).min(len as u64) as usize;
        let mut bytes = vec![0; want];
        if want > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            file.read_exact(&mut bytes).await?;
        }
        Ok(Some((total, bytes)))
    }
}

/// A blob being written: hashed as it goes, at most `limit` bytes. Dropped unfinished (an
/// error, a cancelled task), it leaves nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    store: MediaStore,
    partial: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl BlobWriter {
    /// Appends bytes, refusing to pass the limit.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), MediaError> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(MediaError::TooLarge(self.limit));
        }
        self.hasher.update(bytes);
        self.file.write_all(bytes).await?;
        Ok(())
    }

    /// Makes the blob durable under its hash and returns (id, size). With `expected`, a blob
    /// whose hash differs is refused (and dropped with the writer).
    pub async fn finish(mut self, expected: Option<&str>) -> Result<(String, u64), MediaError> {
        self.file.sync_all().await?;
        let id = hex(&std::mem::take(&mut self.hasher).finalize());
        if expected.is_some_and(|e| e != id) {
            return Err(MediaError::HashMismatch);
        }
        tokio::fs::rename(&self.partial, self.store.path_of(&id)).await?;
        tokio::fs::File::open(&self.store.dir)
            .await?
            .sync_all()
            .await?;
        Ok((id, self.size))
    }
}

impl Drop for BlobWriter {
    /// A writer dropped unfinished (an error, its task cancelled) leaves nothing behind; after `finish`
    /// the partial name no longer exists and this does nothing.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// The hex form of a blob's id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
