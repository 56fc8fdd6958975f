//! WebSocket frames between a device and its own hearth. Text frames, one JSON object each,
//! tagged by `type`. See `spec/client-protocol.md`.

use serde::{Deserialize, Serialize};

use crate::envelope::EventView;
use crate::error::ErrorCode;
use crate::id::{EventId, RoomId, TxnId, UserId};

/// Frames a device sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Send a message. Answered by `accepted` (or `error` with the same `txn_id`).
    Send {
        room_id: RoomId,
        txn_id: TxnId,
        #[serde(with = "crate::b64")]
        payload: Vec<u8>,
    },
    /// The device has durably stored everything up to `cursor`; the hearth records it.
    Ack { cursor: u64 },
    /// Keep-alive; answered by `pong`.
    Ping {
        #[serde(default)]
        nonce: u64,
    },
    /// The user is (or stops) typing in a room. Expires by itself if not renewed.
    Typing { room_id: RoomId, typing: bool },
    /// The device is in use: keeps its user online (send every `heartbeat_interval_ms`).
    Heartbeat,
    /// The user has read the room up to `seq` (the same as `POST /v1/rooms/{room}/read`).
    Read { room_id: RoomId, seq: u64 },
}

/// How far a user has got with a room's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A device of the user has the events up to `seq`.
    Delivered,
    /// The user has read up to `seq`.
    Read,
}

/// Whether a user is around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Online,
    Offline,
}

/// Frames a hearth sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerFrame {
    /// An event in the device's inbox, in inbox order. `cursor` is the inbox position.
    Event { cursor: u64, event: EventView },
    /// Everything in the inbox up to `cursor` has been sent; live events follow.
    Synced { cursor: u64 },
    /// A send is durable on this hearth (it can no longer be lost). `seq` is its place in the
    /// room when this hearth is the room's home; for a room homed elsewhere it is absent and the
    /// event follows as an `event` frame once the home has sequenced it.
    Accepted {
        txn_id: TxnId,
        room_id: RoomId,
        event_id: EventId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A frame was refused. `txn_id` names the send it answers, if any.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        txn_id: Option<TxnId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Answer to `ping`.
    Pong { nonce: u64 },
    /// `user_id` has received or read `room_id` up to `seq` (a high-water mark).
    Receipt {
        room_id: RoomId,
        user_id: UserId,
        kind: ReceiptKind,
        seq: u64,
    },
    /// `user_id` started or stopped typing in `room_id`.
    Typing {
        room_id: RoomId,
        user_id: UserId,
        typing: bool,
    },
    /// `user_id` came online or went offline. `last_seen_ts` is absent when the user hides it.
    Presence {
        user_id: UserId,
        state: PresenceState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen_ts: Option<u64>,
    },
    /// A push endpoint of this device kept failing and was disabled.
    PushDisabled { pusher_id: String, reason: String },
    /// A notice from the hearth's admins: sent live, and on connect for each one the user has
    /// not marked read.
    Notice { notice: Notice },
}

/// A message from the hearth's admins to a user: plain text the hearth wrote (not end-to-end
/// encrypted, unlike everything users send), numbered from 1 per user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notice {
    pub seq: u64,
    /// When it was sent, ms since the epoch.
    pub ts: u64,
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_frame_wire_form_is_stable() {
        let frame: ClientFrame = serde_json::from_str(
            r#"{"type":"send","room_id":"!r:localhost","txn_id":"t1","payload":"aGk="}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            ClientFrame::Send {
                room_id: RoomId::parse("!r:localhost").unwrap(),
                txn_id: TxnId::parse("t1").unwrap(),
                payload: b"hi".to_vec(),
            }
        );
    }

    #[test]
    fn notice_frame_wire_form_is_stable() {
        let frame = ServerFrame::Notice {
            notice: Notice {
                seq: 3,
                ts: 1_764_633_600_000,
                body: "Maintenance at 22:00 UTC".into(),
            },
        };
        let text = r#"{"type":"notice","notice":{"seq":3,"ts":1764633600000,"body":"Maintenance at 22:00 UTC"}}"#;
        assert_eq!(serde_json::to_string(&frame).unwrap(), text);
        assert_eq!(serde_json::from_str::<ServerFrame>(text).unwrap(), frame);
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"ack","cursor":1,"x":2}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"shout"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientFrame>(
                r#"{"type":"send","room_id":"!r:localhost","txn_id":"t1","payload":"***"}"#
            )
            .is_err()
        );
    }
}
