//! Attachment blobs: opaque bytes (the client encrypted them), streamed to disk and named by
//! the SHA-256 of their content, so the same blob is stored once and a name can be checked.

use std::path::PathBuf;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Why a blob was not stored.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the blob is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the upload broke off: {0}")]
    Body(String),
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
        std::fs::create_dir_all(&partial)?;
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
        let partial = self
            .dir
            .join("partial")
            .join(format!("{:016x}", rand::random::<u64>()));
        let result = self.write(body, limit, &partial).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    async fn write(
        &self,
        body: axum::body::Body,
        limit: u64,
        partial: &std::path::Path,
    ) -> Result<(String, u64), MediaError> {
        let mut file = tokio::fs::File::create(partial).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| MediaError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(MediaError::TooLarge(limit));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        drop(file);
        let id = hex(&hasher.finalize());
        tokio::fs::rename(partial, self.path_of(&id)).await?;
        tokio::fs::File::open(&self.dir).await?.sync_all().await?;
        Ok((id, size))
    }

    /// Opens a blob for reading: its length and the file.
    pub async fn get(&self, id: &str) -> std::io::Result<Option<(u64, tokio::fs::File)>> {
        match tokio::fs::File::open(self.path_of(id)).await {
            Ok(file) => Ok(Some((file.metadata().await?.len(), file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
