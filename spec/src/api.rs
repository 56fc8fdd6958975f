//! HTTP request and response bodies of the client API (`/v1/...`). See `spec/client-protocol.md`.

use serde::{Deserialize, Serialize};

use crate::envelope::{EventView, RoomKind};
use crate::id::{DeviceId, EventId, RoomId, TxnId, UserId};

/// `POST /v1/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The localpart: lower-case `[a-z0-9._=-]`, 1 to 64 bytes.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9._=-]{1,64}$"))]
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub device_name: Option<String>,
    /// Required while the hearth's registration is by token (`auth.registration = "token"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token: Option<String>,
}

/// `POST /v1/login`. `username` may be a localpart or a full user id of this hearth.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub device_name: Option<String>,
}

/// `POST /v1/refresh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// The answer to register, login and refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceInfo {
    pub device_id: DeviceId,
    pub name: String,
    pub created_ts: u64,
    /// Whether this is the device making the request.
    pub current: bool,
}

/// `POST /v1/rooms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The MLS epoch the room's next commit must be made in, as far as this hearth knows.
    #[serde(default)]
    pub epoch: u64,
    /// A group's admins, who remove members and make others admins (`spec/semantics.md`);
    /// none in a direct chat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<UserId>,
}

/// `POST /v1/rooms/{room}/invite`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub user_id: UserId,
}

/// `POST /v1/rooms/{room}/remove`: the group's admin removes a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub user_id: UserId,
}

/// `POST /v1/rooms/{room}/admins`: an admin makes a member an admin, or takes the role back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminRequest {
    pub user_id: UserId,
    pub admin: bool,
}

/// `POST /v1/rooms/{room}/read`: the user has read up to `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    pub seq: u64,
}

/// `POST /v1/rooms/{room}/send`: the HTTP twin of the WebSocket `send` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub txn_id: TxnId,
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64))]
    pub payload: Vec<u8>,
}

/// A durable event: the answer to sends, invites and leaves. `seq` is its place in the room,
/// present when the room's home has sequenced it; absent when the room lives on another hearth
/// and the event is only accepted (durable here, on its way to the home). The event then arrives
/// as an `event` frame with its `seq` like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sequenced {
    pub room_id: RoomId,
    pub event_id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `GET /v1/rooms/{room}/events?before=SEQ&limit=N`: events in ascending order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    pub events: Vec<EventView>,
    /// Pass as `before` for the previous page; absent at the start of the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_before: Option<u64>,
}

/// An inbox entry: an event and its position in the user's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboxItem {
    pub cursor: u64,
    pub event: EventView,
}

/// `GET /v1/sync?since=CURSOR&limit=N`: inbox entries after `since`, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncPage {
    pub items: Vec<InboxItem>,
    /// The cursor to pass next time.
    pub next_cursor: u64,
    /// Whether more entries are waiting.
    pub more: bool,
}

/// `GET /v1/presence/{user}`: a user's presence as the caller may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceView {
    pub user_id: UserId,
    pub state: crate::client::PresenceState,
    /// Absent when the user hides it or has never been seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ts: Option<u64>,
}

/// `PUT /v1/presence/settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PresenceSettings {
    /// Others see this user as offline with no last-seen time.
    pub hidden: bool,
}

/// An entry of `GET /v1/rooms/{room}/receipts`: each member's high-water marks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptMarks {
    pub user_id: UserId,
    /// A device of the user has the room up to here.
    pub delivered: u64,
    /// The user has read up to here.
    pub read: u64,
}

/// The kind of a push endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PusherKind {
    /// UnifiedPush / webhook: an HTTP POST of a small JSON body to `url`.
    Webhook,
    /// Web Push (RFC 8030) with VAPID (RFC 8292) and payload encryption (RFC 8291).
    WebPush,
}

/// `POST /v1/pushers`: register this device's push endpoint (replaces any earlier one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PusherRequest {
    pub kind: PusherKind,
    /// An `http` or `https` URL.
    pub url: String,
    /// Web Push: the subscription's P-256 public key, base64url.
    #[serde(default)]
    pub p256dh: Option<String>,
    /// Web Push: the subscription's auth secret, base64url.
    #[serde(default)]
    pub auth: Option<String>,
}

/// Longest server notice, in bytes of UTF-8.
pub const MAX_NOTICE_BYTES: usize = 4096;
/// Most notices in one page of `GET /v1/notices`, and the default.
pub const MAX_NOTICES_PAGE: usize = 100;

/// A page of the user's notices, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticesPage {
    pub notices: Vec<crate::client::Notice>,
    /// The user has read every notice up to this seq (0: none), on any device.
    pub read: u64,
    /// Where the next page starts (`after`), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// `POST /v1/notices/read`: the user has read every notice up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NoticesRead {
    pub seq: u64,
}

/// A registered push endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PusherInfo {
    pub pusher_id: String,
    pub kind: PusherKind,
    pub url: String,
    /// Why it was disabled, if it kept failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
}

/// What a push notification carries: never message content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushNotification {
    pub room_id: RoomId,
    pub event_id: crate::EventId,
    pub sender: UserId,
    /// Unread events in that room for the user.
    pub unread: u64,
    /// How many events this notification stands for (a burst is coalesced into one).
    pub count: u64,
}

/// `POST /v1/keys/upload`: MLS key packages of the calling device (TLS-encoded `KeyPackage`s,
/// as `MlsMessageOut` bytes). Each is handed out once; the last-resort one is handed out when
/// the others have run out, and replaces any earlier last-resort package.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UploadKeyPackages {
    #[serde(default, with = "crate::b64::list")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64_list))]
    pub key_packages: Vec<Vec<u8>>,
    #[serde(default, with = "crate::b64::option")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64_option))]
    pub last_resort: Option<Vec<u8>>,
}

/// `GET /v1/keys/count` (and the answer to an upload): what the device has left to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyPackageCount {
    /// One-time packages not yet claimed.
    pub available: u64,
    /// Whether a last-resort package is stored.
    pub last_resort: bool,
}

/// `POST /v1/keys/claim`: one key package for each of a user's devices (or of the listed ones).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimKeyPackages {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceId>>,
}

/// One claimed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedKeyPackage {
    pub device_id: DeviceId,
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64))]
    pub key_package: Vec<u8>,
    /// The device's last-resort package (it may be handed out again).
    pub last_resort: bool,
}

/// The answer to a claim. Devices with nothing to hand out are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedKeyPackages {
    pub user_id: UserId,
    pub key_packages: Vec<ClaimedKeyPackage>,
}

/// `GET /v1/keys/devices/{user}`: the user's devices that have key packages (for room-mates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyDevices {
    pub user_id: UserId,
    pub devices: Vec<DeviceId>,
}

/// Most users one batched claim or device query may name (the largest group).
pub const MAX_USERS_PER_KEY_REQUEST: usize = 1000;

/// `POST /v1/keys/claim_many`: key packages of many users in one request (local users and users
/// of other hearths alike). Counts as one claim against the claiming device's rate limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimMany {
    pub claims: Vec<ClaimKeyPackages>,
}

/// The answer to a batched claim: what each user's hearth handed out, and the users whose
/// claim failed (their hearth unreachable, unknown, or refusing), with the error that a
/// single claim would have got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedMany {
    pub claimed: Vec<ClaimedKeyPackages>,
    pub failed: Vec<UserFailure>,
}

/// A user a batched request could not answer for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserFailure {
    pub user_id: UserId,
    pub code: crate::ErrorCode,
    pub message: String,
}

/// `POST /v1/keys/query`: the end-to-end devices (logged in, with key packages) of each user,
/// asked of the user's own hearth. A room's member devices, as the hearths know them, are what
/// its MLS group must converge to (`spec/e2ee.md`, "Membership converges").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueryDevices {
    pub users: Vec<UserId>,
}

/// The answer to a device query. Every user asked for is in `users` (an empty list for a user
/// with no such device, or who does not exist or was deactivated) or in `failed` (the user's
/// hearth could not be asked: `unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueriedDevices {
    pub users: Vec<KeyDevices>,
    pub failed: Vec<UserFailure>,
}

/// `POST /v1/rooms/{room}/commit`: an MLS commit made in `epoch`, and its Welcome if it adds
/// devices. Answered with `Sequenced`, or `stale_epoch` (409) when the room has moved on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub txn_id: TxnId,
    pub epoch: u64,
    #[serde(with = "crate::b64")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64))]
    pub commit: Vec<u8>,
    #[serde(default, with = "crate::b64::option")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::base64_option))]
    pub welcome: Option<Vec<u8>>,
}

/// `GET /v1/limits`: what this hearth accepts, so that a client can say what is too big before
/// it sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Limits {
    /// Largest message payload or MLS commit, bytes (`limits.max_event_bytes`).
    pub max_event_bytes: u64,
    /// Largest attachment blob, bytes (`limits.max_media_bytes`).
    pub max_media_bytes: u64,
    /// Largest HTTP request body and WebSocket message, bytes.
    pub max_body_bytes: u64,
}

/// The answer to `POST /v1/media`: the blob's id, the hex SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaUploaded {
    pub media_id: String,
    pub size: u64,
}
