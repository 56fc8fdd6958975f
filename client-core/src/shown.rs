//! A message as a device read it, for the app's own store of what it decrypted: an MLS device
//! can decrypt a message only once (its keys are deleted after use), so apps keep these, by
//! room and sequence number, and show history from them.

use hearth_spec::e2ee::AttachmentRef;
use hearth_spec::{RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::e2ee::Received;

/// A message as this device read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shown {
    pub room: RoomId,
    pub seq: u64,
    /// Who sent it (absent in what older versions kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<UserId>,
    pub text: String,
    #[serde(default)]
    pub attachment: Option<AttachmentRef>,
    /// A message this device had already read, sent again for members who could not read it
    /// then.
    #[serde(default)]
    pub copy: bool,
    /// When the app kept it (ms since the epoch, the app's clock): search orders by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_at: Option<u64>,
}

/// What an app keeps of `received` (messages and copies sent again), stamped as kept at
/// `now_ms` (the app's clock).
pub fn kept_at(received: &[Received], now_ms: u64) -> Vec<Shown> {
    received
        .iter()
        .filter_map(shown_of)
        .map(|s| Shown {
            kept_at: Some(now_ms),
            ..s
        })
        .collect()
}

/// What an app keeps of a received event, if anything.
fn shown_of(received: &Received) -> Option<Shown> {
    match received {
        Received::Message {
            room,
            seq,
            sender,
            body,
            ..
        } => Some(Shown {
            room: room.clone(),
            seq: *seq,
            sender: Some(sender.clone()),
            text: body.text.clone(),
            attachment: body.attachment.clone(),
            copy: false,
            kept_at: None,
        }),
        Received::Replayed { room, seq } => Some(Shown {
            room: room.clone(),
            seq: *seq,
            sender: None,
            text: String::new(),
            attachment: None,
            copy: true,
            kept_at: None,
        }),
        _ => None,
    }
}
