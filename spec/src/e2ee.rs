//! What devices put inside MLS, end to end (see `spec/e2ee.md`). Hearths never see these
//! bytes in the clear; they are here so every client reads and writes the same thing.

use serde::{Deserialize, Serialize};

use crate::id::{DeviceId, UserId};

/// The one ciphersuite: `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519` (0x0003).
pub const CIPHERSUITE: u16 = 0x0003;

/// Prefix of the authenticated data of every application message.
pub const AAD_PREFIX: &[u8] = b"hearth-msg/1:";

/// Length of a message id.
pub const MESSAGE_ID_LEN: usize = 16;

/// The authenticated data carrying a message's unique id.
pub fn message_aad(id: &[u8; MESSAGE_ID_LEN]) -> Vec<u8> {
    [AAD_PREFIX, id.as_slice()].concat()
}

/// The message id in authenticated data, if it has our form.
pub fn parse_message_aad(aad: &[u8]) -> Option<[u8; MESSAGE_ID_LEN]> {
    aad.strip_prefix(AAD_PREFIX)?.try_into().ok()
}

/// The identity of an MLS basic credential: `@user:server|DEVICE`. Neither id may contain `|`.
pub fn credential_identity(user: &UserId, device: &DeviceId) -> Vec<u8> {
    format!("{user}|{device}").into_bytes()
}

/// The user and device an MLS credential names.
pub fn parse_credential_identity(bytes: &[u8]) -> Option<(UserId, DeviceId)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (user, device) = text.split_once('|')?;
    Some((UserId::parse(user).ok()?, DeviceId::parse(device).ok()?))
}

/// The plaintext of an application message (JSON inside MLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentRef>,
}

/// An encrypted attachment: where its blob is and the key that opens it.
/// The blob is ChaCha20-Poly1305 of the file under `key` and `nonce`; `media_id` is the hex
/// SHA-256 of the blob, checked by the recipient before decrypting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRef {
    pub media_id: String,
    /// The hearth that stores the blob.
    pub server: crate::ServerName,
    #[serde(with = "crate::b64")]
    pub key: Vec<u8>,
    #[serde(with = "crate::b64")]
    pub nonce: Vec<u8>,
    /// Plaintext size in bytes.
    pub size: u64,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_and_identity_round_trip_and_refuse_other_forms() {
        let id = [7u8; MESSAGE_ID_LEN];
        assert_eq!(parse_message_aad(&message_aad(&id)), Some(id));
        assert_eq!(parse_message_aad(b"hearth-msg/1:short"), None);
        assert_eq!(parse_message_aad(b""), None);
        let user = UserId::parse("@alice:example.org").unwrap();
        let device = DeviceId::parse("DEV1").unwrap();
        let identity = credential_identity(&user, &device);
        assert_eq!(identity, b"@alice:example.org|DEV1");
        assert_eq!(parse_credential_identity(&identity), Some((user, device)));
        assert_eq!(parse_credential_identity(b"@alice:example.org"), None);
        assert_eq!(parse_credential_identity(b"\xff|x"), None);
    }
}
