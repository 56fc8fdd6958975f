//! HTTP request and response bodies of the client API (`/v1/...`). See `spec/client-protocol.md`.

use serde::{Deserialize, Serialize};

use crate::envelope::{EventView, RoomKind};
use crate::id::{DeviceId, EventId, RoomId, TxnId, UserId};

/// `POST /v1/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The localpart: lower-case `[a-z0-9._=-]`, 1 to 64 bytes.
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub device_name: Option<String>,
}

/// `POST /v1/login`. `username` may be a localpart or a full user id of this hearth.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub device_name: Option<String>,
}

/// `POST /v1/refresh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// The answer to register, login and refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: UserId,
    pub device_id: DeviceId,
    /// Short-lived; sent as `Authorization: Bearer …`.
    pub access_token: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
    /// Single use: each refresh returns a new one and invalidates the old.
    pub refresh_token: String,
}

/// An entry of `GET /v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_id: DeviceId,
    pub name: String,
    pub created_ts: u64,
    /// Whether this is the device making the request.
    pub current: bool,
}

/// `POST /v1/rooms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoomRequest {
    pub kind: RoomKind,
    #[serde(default)]
    pub name: Option<String>,
    /// The other members. A direct room takes exactly one.
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// A room as listed for a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub room_id: RoomId,
    pub kind: RoomKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub members: Vec<UserId>,
    /// The sequence number of the room's latest event.
    pub last_seq: u64,
    /// Events after the user's read marker.
    pub unread: u64,
}

/// `POST /v1/rooms/{room}/invite`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub user_id: UserId,
}

/// `POST /v1/rooms/{room}/read`: the user has read up to `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    pub seq: u64,
}

/// `POST /v1/rooms/{room}/send`: the HTTP twin of the WebSocket `send` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub txn_id: TxnId,
    #[serde(with = "crate::b64")]
    pub payload: Vec<u8>,
}

/// A durable, sequenced event: the answer to sends, invites and leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequenced {
    pub room_id: RoomId,
    pub event_id: EventId,
    pub seq: u64,
}

/// `GET /v1/rooms/{room}/events?before=SEQ&limit=N`: events in ascending order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryPage {
    pub events: Vec<EventView>,
    /// Pass as `before` for the previous page; absent at the start of the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_before: Option<u64>,
}

/// An inbox entry: an event and its position in the user's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    pub cursor: u64,
    pub event: EventView,
}

/// `GET /v1/sync?since=CURSOR&limit=N`: inbox entries after `since`, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncPage {
    pub items: Vec<InboxItem>,
    /// The cursor to pass next time.
    pub next_cursor: u64,
    /// Whether more entries are waiting.
    pub more: bool,
}
