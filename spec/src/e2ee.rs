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

/// The group id and epoch in the clear header of an MLS `PrivateMessage` (RFC 9420 §6:
/// `version = mls10`, `wire_format = mls_private_message`, then `group_id<V>` and `epoch`), or
/// `None` if the bytes do not start like one. The hearth uses this to refuse a message made in
/// an epoch the room has left, which members who joined since could not read.
pub fn private_message_epoch(bytes: &[u8]) -> Option<(&[u8], u64)> {
    let rest = bytes.strip_prefix(&[0x00, 0x01, 0x00, 0x02])?;
    let (len, rest) = read_varint(rest)?;
    let len = usize::try_from(len).ok()?;
    if rest.len() < len + 8 {
        return None;
    }
    let (group_id, rest) = rest.split_at(len);
    let epoch = u64::from_be_bytes(rest[..8].try_into().ok()?);
    Some((group_id, epoch))
}

/// A QUIC-style variable-length integer (RFC 9000 §16), as MLS uses for vector lengths.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    if len > 4 || bytes.len() < len {
        return None;
    }
    let mut value = u64::from(first & 0x3f);
    for b in &bytes[1..len] {
        value = (value << 8) | u64::from(*b);
    }
    Some((value, &bytes[len..]))
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
    fn private_message_header_is_read_and_anything_else_is_not() {
        let mut bytes = vec![0, 1, 0, 2, 0x40, 3, b'a', b'b', b'c'];
        bytes.extend_from_slice(&9u64.to_be_bytes());
        bytes.push(1);
        assert_eq!(private_message_epoch(&bytes), Some((&b"abc"[..], 9)));
        assert_eq!(private_message_epoch(&bytes[..10]), None);
        assert_eq!(private_message_epoch(b"hello"), None);
        // A public message (wire format 1) is not a private one.
        bytes[3] = 1;
        assert_eq!(private_message_epoch(&bytes), None);
    }

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
