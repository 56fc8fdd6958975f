//! What the web app shows for an event: the hearth's plaintext facts (sender, time, membership)
//! with the message text this device decrypted and kept.

use hearth_client_core::shown::Shown;
use hearth_spec::e2ee::AttachmentRef;
use hearth_spec::{Content, DeviceId, EventView, Membership, RoomId, RoomKind, UserId};
use serde::Serialize;

/// One line of a room's timeline, as JSON for the page.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub room: RoomId,
    pub seq: u64,
    pub sender: UserId,
    pub device: DeviceId,
    /// Milliseconds since the epoch, as the sender's hearth stamped it.
    pub ts: u64,
    /// `message`, `unreadable`, `purged`, `member`, `created` or `keys`.
    pub kind: &'static str,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentRef>,
    /// Sent again for members who could not read it then.
    pub copy: bool,
}

pub fn line_of(event: &EventView, shown: Option<&Shown>) -> Line {
    let (kind, text, attachment, copy) = match &event.content {
        // A purged message this device read before it was purged stays readable here.
        Content::Message { .. } | Content::Purged {} if shown.is_some() => {
            let s = shown.expect("matched");
            ("message", s.text.clone(), s.attachment.clone(), s.copy)
        }
        Content::Purged {} => (
            "purged",
            "This message was removed from the hearth before this device read it.".to_owned(),
            None,
            false,
        ),
        Content::Message { .. } => match shown {
            Some(s) => ("message", s.text.clone(), s.attachment.clone(), s.copy),
            None => (
                "unreadable",
                "This device cannot read this message (it was sent before the device joined)."
                    .to_owned(),
                None,
                false,
            ),
        },
        Content::Member {
            target,
            membership: Membership::Join,
        } if *target == event.sender => ("member", format!("{target} joined"), None, false),
        Content::Member {
            target,
            membership: Membership::Join,
        } => (
            "member",
            format!("{} added {target}", event.sender),
            None,
            false,
        ),
        Content::Member {
            target,
            membership: Membership::Leave,
        } if *target == event.sender => ("member", format!("{target} left"), None, false),
        Content::Member {
            target,
            membership: Membership::Leave,
        } => (
            "member",
            format!("{} removed {target}", event.sender),
            None,
            false,
        ),
        Content::Admin {
            target,
            admin: true,
        } => (
            "member",
            format!("{} made {target} an admin", event.sender),
            None,
            false,
        ),
        Content::Admin { target, .. } => (
            "member",
            format!("{target} is no longer an admin"),
            None,
            false,
        ),
        Content::Create {
            kind: RoomKind::Direct,
            ..
        } => (
            "created",
            format!("{} started this chat", event.sender),
            None,
            false,
        ),
        Content::Create { name, .. } => (
            "created",
            format!(
                "{} created the group {}",
                event.sender,
                name.as_deref().unwrap_or("")
            ),
            None,
            false,
        ),
        Content::Commit { .. } => (
            "keys",
            format!("{} changed the room's keys", event.sender),
            None,
            false,
        ),
    };
    Line {
        room: event.room_id.clone(),
        seq: event.seq,
        sender: event.sender.clone(),
        device: event.sender_device.clone(),
        ts: event.origin_ts,
        kind,
        text,
        attachment,
        copy,
    }
}
