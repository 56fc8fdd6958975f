//! Attachments: a file is encrypted with a fresh key, uploaded as an opaque blob, and the key
//! travels inside the MLS message.
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hearth_spec::RoomId;
use hearth_spec::api::Sequenced;
use hearth_spec::e2ee::{AttachmentRef, ChatBody};
use sha2::{Digest, Sha256};

use super::{SecureError, SecureSession};
use crate::hearth::Hearth;

impl<H: Hearth> SecureSession<H> {
    /// Encrypts a file with a fresh key, uploads the blob, and sends the key inside an MLS
    /// message.
    pub async fn send_file(
        &mut self,
        room: &RoomId,
        name: &str,
        contents: &[u8],
        caption: &str,
    ) -> Result<Sequenced, SecureError> {
        let key: [u8; 32] = rand::random();
        let nonce: [u8; 12] = rand::random();
        let limit = self.hearth.limits().await?.max_media_bytes;
        // The blob is the file and a 16-byte tag.
        let size = contents.len() as u64 + 16;
        if size > limit {
            return Err(SecureError::TooLarge {
                what: name.to_owned(),
                size,
                limit,
                setting: "limits.max_media_bytes",
            });
        }
        let blob = ChaCha20Poly1305::new(Key::from_slice(&key))
            .encrypt(Nonce::from_slice(&nonce), contents)
            .map_err(|_| SecureError::Attachment("encrypting the file failed"))?;
        let uploaded = self.hearth.upload_media(blob).await?;
        let server = self.me()?.0.server_name();
        let body = ChatBody {
            text: caption.to_owned(),
            attachment: Some(AttachmentRef {
                media_id: uploaded.media_id,
                server,
                key: key.to_vec(),
                nonce: nonce.to_vec(),
                size: contents.len() as u64,
                name: name.to_owned(),
            }),
        };
        self.send_body(room, body).await
    }

    /// Fetches an attachment through this device's hearth, checks its hash and decrypts it.
    pub async fn fetch_file(&mut self, attachment: &AttachmentRef) -> Result<Vec<u8>, SecureError> {
        let blob = self
            .hearth
            .download_media(&attachment.media_id, Some(&attachment.server))
            .await?;
        let digest: String = Sha256::digest(&blob)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest != attachment.media_id {
            return Err(SecureError::Attachment("the blob does not match its id"));
        }
        if attachment.key.len() != 32 || attachment.nonce.len() != 12 {
            return Err(SecureError::Attachment("malformed attachment key"));
        }
        ChaCha20Poly1305::new(Key::from_slice(&attachment.key))
            .decrypt(Nonce::from_slice(&attachment.nonce), blob.as_slice())
            .map_err(|_| SecureError::Attachment("the attachment does not decrypt"))
    }
}
