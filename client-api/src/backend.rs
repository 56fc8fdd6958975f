//! What the API needs from the hearth behind it.

use std::future::Future;

use hearth_spec::api::AdminRequest;
use hearth_spec::api::{
    ClaimKeyPackages, ClaimMany, ClaimedKeyPackages, ClaimedMany, CommitRequest, KeyDevices,
    KeyPackageCount, MediaUploaded, QueriedDevices, QueryDevices, UploadKeyPackages,
};
use hearth_spec::api::{
    CreateRoomRequest, DeviceInfo, HistoryPage, LoginRequest, PresenceSettings, PresenceView,
    PusherInfo, PusherRequest, ReceiptMarks, RefreshRequest, RegisterRequest, RoomSummary,
    Sequenced, Session, SyncPage,
};
use hearth_spec::client::ServerFrame;
use hearth_spec::{DeviceId, ErrorBody, RoomId, ServerName, TxnId, UserId};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

/// An authenticated device: who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthedDevice {
    pub user_id: UserId,
    pub device_id: DeviceId,
}

/// A write the hearth has taken into its queue; resolves once it is durable (or refused).
/// Writes are applied in the order they were taken, so a connection that awaits each `take_*`
/// before reading its next frame has its sends sequenced in the order it sent them. (Futures
/// that each take and then wait, polled together, would reach the queue in whatever order the
/// runtime polls them.)
pub type Taken<T> = std::pin::Pin<Box<dyn Future<Output = Result<T, ErrorBody>> + Send>>;

/// Why the hearth cannot take writes now, as `GET /v1/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub &'static str);

/// The hearth as the client API sees it. Every error is already a client-facing [`ErrorBody`].
pub trait Backend: Send + Sync + 'static {
    /// Runs an admin request for `device`'s account if it has the admin flag (forbidden
    /// otherwise); an `Error` answer comes back as `Err`.
    fn admin(
        &self,
        device: &AuthedDevice,
        request: hearth_spec::admin::AdminRequest,
    ) -> impl Future<Output = Result<hearth_spec::admin::AdminResponse, ErrorBody>> + Send;
    /// Each part `GET /v1/ready` checks, by name, and whether it is ready now (if not, why).
    fn readiness(&self) -> Vec<(&'static str, Result<(), NotReady>)> {
        Vec::new()
    }
    /// Creates an account and logs its first device in.
    fn register(
        &self,
        req: RegisterRequest,
    ) -> impl Future<Output = Result<Session, ErrorBody>> + Send;
    /// Checks a password and logs a new device in.
    fn login(&self, req: LoginRequest) -> impl Future<Output = Result<Session, ErrorBody>> + Send;
    /// Trades a refresh token for a new session (the old refresh token is spent).
    fn refresh(
        &self,
        req: RefreshRequest,
    ) -> impl Future<Output = Result<Session, ErrorBody>> + Send;
    /// Verifies an access token. Cheap: no storage access.
    fn authenticate(&self, access_token: &str) -> Result<AuthedDevice, ErrorBody>;
    /// Notes that an authenticated request of `device` came from `ip` (its last-seen address
    /// for admins). Must not block.
    fn seen(&self, _device: &AuthedDevice, _ip: std::net::IpAddr) {}
    /// Whether the device is still logged in (not logged out, removed or deactivated).
    fn device_active(&self, device: &AuthedDevice) -> bool;
    /// Logs the device out.
    fn logout(&self, device: &AuthedDevice) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// The user's devices.
    fn devices(
        &self,
        device: &AuthedDevice,
    ) -> impl Future<Output = Result<Vec<DeviceInfo>, ErrorBody>> + Send;
    /// Removes one of the user's devices.
    fn delete_device(
        &self,
        device: &AuthedDevice,
        target: DeviceId,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// Creates a room with the caller and `members` in it.
    fn create_room(
        &self,
        device: &AuthedDevice,
        req: CreateRoomRequest,
    ) -> impl Future<Output = Result<RoomSummary, ErrorBody>> + Send;
    /// Adds a user to a group.
    fn invite(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        user: UserId,
    ) -> impl Future<Output = Result<Sequenced, ErrorBody>> + Send;
    /// The group's admin removes a member.
    fn remove(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        user: UserId,
    ) -> impl Future<Output = Result<Sequenced, ErrorBody>> + Send;
    /// An admin of a group makes a member an admin, or takes the role back.
    fn set_admin(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        req: AdminRequest,
    ) -> impl Future<Output = Result<Sequenced, ErrorBody>> + Send;
    /// Leaves a room.
    fn leave(
        &self,
        device: &AuthedDevice,
        room: RoomId,
    ) -> impl Future<Output = Result<Sequenced, ErrorBody>> + Send;
    /// The rooms the user is in, with unread counts.
    fn rooms(
        &self,
        device: &AuthedDevice,
    ) -> impl Future<Output = Result<Vec<RoomSummary>, ErrorBody>> + Send;
    /// One room the user is in.
    fn room(
        &self,
        device: &AuthedDevice,
        room: RoomId,
    ) -> impl Future<Output = Result<RoomSummary, ErrorBody>> + Send;
    /// A page of history before `before` (exclusive), ascending.
    fn history(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryPage, ErrorBody>> + Send;
    /// Checks a read marker move and takes it into the hearth's write queue (see [`Taken`]).
    fn take_read(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        seq: u64,
    ) -> impl Future<Output = Result<Taken<()>, ErrorBody>> + Send;
    /// Moves the user's read marker.
    fn mark_read(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        seq: u64,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send {
        async move { self.take_read(device, room, seq).await?.await }
    }
    /// Checks a message and takes it into the hearth's write queue (see [`Taken`]).
    fn take_send(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        txn_id: TxnId,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Taken<Sequenced>, ErrorBody>> + Send;
    /// Sends a message; resolves once it is durable and sequenced.
    fn send(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        txn_id: TxnId,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Sequenced, ErrorBody>> + Send {
        async move { self.take_send(device, room, txn_id, payload).await?.await }
    }
    /// Inbox entries after `since`.
    fn sync(
        &self,
        device: &AuthedDevice,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<SyncPage, ErrorBody>> + Send;
    /// The cursor the device last acknowledged.
    fn device_cursor(
        &self,
        device: &AuthedDevice,
    ) -> impl Future<Output = Result<u64, ErrorBody>> + Send;
    /// Takes an acknowledgement into the hearth's write queue (see [`Taken`]).
    fn take_ack(
        &self,
        device: &AuthedDevice,
        cursor: u64,
    ) -> impl Future<Output = Result<Taken<()>, ErrorBody>> + Send;
    /// Records that the device has everything up to `cursor`.
    fn ack(
        &self,
        device: &AuthedDevice,
        cursor: u64,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send {
        async move { self.take_ack(device, cursor).await?.await }
    }
    /// The user is (or stops) typing in a room; announced to the room's online members.
    fn typing(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        typing: bool,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// The device is in use: keeps its user online.
    fn heartbeat(&self, device: &AuthedDevice);
    /// A user's presence, if the caller shares a room with them (or is them).
    fn presence(
        &self,
        device: &AuthedDevice,
        user: UserId,
    ) -> impl Future<Output = Result<PresenceView, ErrorBody>> + Send;
    /// Up to `limit` of the user's notices after `after`, oldest first, with their read mark.
    fn notices(
        &self,
        device: &AuthedDevice,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<hearth_spec::api::NoticesPage, ErrorBody>> + Send;
    /// Marks the user's notices read up to `seq` (never lowers the mark); a `seq` past the last
    /// notice is `invalid_param`.
    fn mark_notices_read(
        &self,
        device: &AuthedDevice,
        seq: u64,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// Hides or shows the caller's presence and last-seen time.
    fn set_presence_settings(
        &self,
        device: &AuthedDevice,
        settings: PresenceSettings,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// The delivered and read marks of a room's members.
    fn receipts(
        &self,
        device: &AuthedDevice,
        room: RoomId,
    ) -> impl Future<Output = Result<Vec<ReceiptMarks>, ErrorBody>> + Send;
    /// Frames a connection gets once it has synced: presence of the user's contacts who are
    /// online, and notice of a push endpoint that was disabled.
    fn welcome(&self, device: &AuthedDevice) -> impl Future<Output = Vec<ServerFrame>> + Send;
    /// Registers the device's push endpoint.
    fn set_pusher(
        &self,
        device: &AuthedDevice,
        req: PusherRequest,
    ) -> impl Future<Output = Result<PusherInfo, ErrorBody>> + Send;
    /// The device's push endpoint.
    fn pusher(
        &self,
        device: &AuthedDevice,
    ) -> impl Future<Output = Result<Option<PusherInfo>, ErrorBody>> + Send;
    /// The VAPID public key Web Push subscriptions are made with (base64url, uncompressed P-256).
    fn vapid_public_key(&self) -> String;
    /// Removes the device's push endpoint.
    fn delete_pusher(
        &self,
        device: &AuthedDevice,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// Stores MLS key packages of the calling device.
    fn upload_key_packages(
        &self,
        device: &AuthedDevice,
        req: UploadKeyPackages,
    ) -> impl Future<Output = Result<KeyPackageCount, ErrorBody>> + Send;
    /// What the calling device has left to hand out.
    fn key_package_count(
        &self,
        device: &AuthedDevice,
    ) -> impl Future<Output = Result<KeyPackageCount, ErrorBody>> + Send;
    /// Hands out one key package per device of a user (each one-time package once).
    fn claim_key_packages(
        &self,
        device: &AuthedDevice,
        req: ClaimKeyPackages,
    ) -> impl Future<Output = Result<ClaimedKeyPackages, ErrorBody>> + Send;
    /// Key packages of many users, of this hearth and others, in one request.
    fn claim_many(
        &self,
        device: &AuthedDevice,
        req: ClaimMany,
    ) -> impl Future<Output = Result<ClaimedMany, ErrorBody>> + Send;
    /// The end-to-end devices of many users, each asked of the user's own hearth.
    fn query_devices(
        &self,
        device: &AuthedDevice,
        req: QueryDevices,
    ) -> impl Future<Output = Result<QueriedDevices, ErrorBody>> + Send;
    /// A user's devices that have key packages.
    fn key_devices(
        &self,
        device: &AuthedDevice,
        user: UserId,
    ) -> impl Future<Output = Result<KeyDevices, ErrorBody>> + Send;
    /// An MLS commit for the room's home to order (one per epoch).
    fn commit(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        req: CommitRequest,
    ) -> impl Future<Output = Result<Sequenced, ErrorBody>> + Send;
    /// Stores an opaque blob streamed from the client, at most `limit` bytes.
    fn put_media(
        &self,
        device: &AuthedDevice,
        body: axum::body::Body,
        limit: u64,
    ) -> impl Future<Output = Result<MediaUploaded, ErrorBody>> + Send;
    /// A stored blob: its length and a body streaming it. With `server` (another hearth), a
    /// blob not held here is fetched from there first.
    fn media(
        &self,
        device: &AuthedDevice,
        media_id: String,
        server: Option<ServerName>,
    ) -> impl Future<Output = Result<(u64, axum::body::Body), ErrorBody>> + Send;
    /// Live updates for one connection of the device; the device counts as connected until the
    /// subscription is dropped.
    fn subscribe(&self, device: &AuthedDevice) -> Subscription;
}

/// Where a user's inbox ends, and when that was announced.
#[derive(Debug, Clone, Copy)]
pub struct InboxHead {
    pub position: u64,
    /// When the entries up to `position` were durable and announced (to time the wake-up).
    pub landed: std::time::Instant,
}

/// What a live connection listens to.
pub struct Subscription {
    /// The user's inbox head, changed whenever something lands in the inbox.
    pub inbox: watch::Receiver<InboxHead>,
    /// Ephemeral frames (receipts, typing, presence), already serialised.
    pub signals: broadcast::Receiver<Arc<str>>,
    /// Kept for the life of the connection; dropping it marks the connection gone.
    pub guard: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}
