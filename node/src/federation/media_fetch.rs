//! Fetching a blob another hearth stores, for this hearth's devices: in parts over federation,
//! hashed as it arrives, kept only if it is the blob asked for. Once kept it is served like an
//! uploaded one, so each blob crosses hearths once however many devices fetch it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use hearth_federation::RequestError;
use hearth_spec::ServerName;
use hearth_spec::federation::{MAX_MEDIA_CHUNK, RejectCode};

use crate::chat::media::{MediaError, MediaStore};
use crate::federation::PeerRequests;

/// Parts asked for at once: enough to keep a long link busy, few enough for the peer's
/// stream limit.
const PARTS_IN_FLIGHT: usize = 4;

/// Why a remote blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} holds no such attachment")]
    Unknown(ServerName),
    #[error("the attachment is larger than {0} bytes")]
    TooLarge(u64),
    #[error("{server} sent a blob that is not the one asked for: {reason}")]
    Corrupt { server: ServerName, reason: String },
    #[error("cannot fetch from {server}: {reason}")]
    Unreachable {
        server: ServerName,
        #[source]
        reason: RequestError,
    },
    #[error("storing the attachment failed: {0}")]
    Store(MediaError),
}

/// Fetches remote blobs into the local store, one fetch per blob at a time.
pub struct RemoteMedia {
    media: MediaStore,
    peers: PeerRequests,
    limit: u64,
    /// Blobs being fetched; a second request for one waits for the first.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RemoteMedia {
    pub fn new(media: MediaStore, peers: PeerRequests, limit: u64) -> Self {
        Self {
            media,
            peers,
            limit,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure the blob `id` (64 lowercase hex digits) is in the local store, fetching it
    /// from `server` if it is not.
    pub async fn ensure(&self, server: &ServerName, id: &str) -> Result<(), FetchError> {
        let slot = self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .entry(id.to_owned())
            .or_default()
            .clone();
        let result = {
            let _fetching = slot.lock().await;
            if self.media.contains(id).await {
                Ok(())
            } else {
                self.fetch(server, id).await
            }
        };
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        // The map holds one reference, this call another: nobody else waits on the slot.
        if Arc::strong_count(&slot) == 2 {
            in_flight.remove(id);
        }
        result
    }

    async fn fetch(&self, server: &ServerName, id: &str) -> Result<(), FetchError> {
        let media_id = parse_id(id).ok_or_else(|| FetchError::Corrupt {
            server: server.clone(),
            reason: "not a media id".into(),
        })?;
        let corrupt = |reason: String| FetchError::Corrupt {
            server: server.clone(),
            reason,
        };
        let (total, first) = self.part(server, media_id, 0).await?;
        if total > self.limit {
            return Err(FetchError::TooLarge(self.limit));
        }
        let expected_len = |offset: u64| total.saturating_sub(offset).min(MAX_MEDIA_CHUNK.into());
        if first.len() as u64 != expected_len(0) {
            return Err(corrupt(format!("a part of {} bytes", first.len())));
        }
        let mut writer = self
            .media
            .writer(self.limit)
            .await
            .map_err(FetchError::Store)?;
        writer.write(&first).await.map_err(FetchError::Store)?;
        let offsets = (1..)
            .map(|i| i * u64::from(MAX_MEDIA_CHUNK))
            .take_while(|offset| *offset < total);
        let mut parts = futures_util::stream::iter(offsets)
            .map(|offset| async move {
                self.part(server, media_id, offset)
                    .await
                    .map(|part| (offset, part))
            })
            .buffered(PARTS_IN_FLIGHT);
        while let Some((offset, (part_total, bytes))) = parts.try_next().await? {
            if part_total != total || bytes.len() as u64 != expected_len(offset) {
                return Err(corrupt(format!(
                    "the part at {offset} does not fit a blob of {total} bytes"
                )));
            }
            writer.write(&bytes).await.map_err(FetchError::Store)?;
        }
        match writer.finish(Some(id)).await {
            Ok(_) => Ok(()),
            Err(MediaError::HashMismatch) => Err(corrupt("its bytes hash to another id".into())),
            Err(e) => Err(FetchError::Store(e)),
        }
    }

    async fn part(
        &self,
        server: &ServerName,
        media_id: [u8; 32],
        offset: u64,
    ) -> Result<(u64, Vec<u8>), FetchError> {
        self.peers
            .fetch_media(server, media_id, offset, MAX_MEDIA_CHUNK)
            .await
            .map_err(|e| match e {
                RequestError::Rejected(RejectCode::UnknownMedia) => {
                    FetchError::Unknown(server.clone())
                }
                e => FetchError::Unreachable {
                    server: server.clone(),
                    reason: e,
                },
            })
    }
}

/// The 32 bytes of a 64-hex-digit id.
fn parse_id(id: &str) -> Option<[u8; 32]> {
    if id.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back_to_their_bytes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(parse_id(&crate::chat::media::hex(&bytes)), Some(bytes));
        assert_eq!(parse_id("ab"), None);
        assert_eq!(parse_id(&"zz".repeat(32)), None);
        assert_eq!(parse_id(&"é".repeat(32)), None);
    }
}
