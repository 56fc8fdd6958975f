//! What the API needs from the hearth behind it.

use std::future::Future;

use hearth_spec::api::{
    CreateRoomRequest, DeviceInfo, HistoryPage, LoginRequest, RefreshRequest, RegisterRequest,
    RoomSummary, Sequenced, Session, SyncPage,
};
use hearth_spec::{DeviceId, ErrorBody, RoomId, TxnId, UserId};
use tokio::sync::watch;

/// An authenticated device: who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthedDevice {
    pub user_id: UserId,
    pub device_id: DeviceId,
}

/// The hearth as the client API sees it. Every error is already a client-facing [`ErrorBody`].
pub trait Backend: Send + Sync + 'static {
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
    /// Moves the user's read marker.
    fn mark_read(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        seq: u64,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// Sends a message; resolves once it is durable and sequenced.
    fn send(
        &self,
        device: &AuthedDevice,
        room: RoomId,
        txn_id: TxnId,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Sequenced, ErrorBody>> + Send;
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
    /// Records that the device has everything up to `cursor`.
    fn ack(
        &self,
        device: &AuthedDevice,
        cursor: u64,
    ) -> impl Future<Output = Result<(), ErrorBody>> + Send;
    /// A watch of the user's inbox head, changed whenever something lands in the inbox.
    fn subscribe(&self, device: &AuthedDevice) -> watch::Receiver<u64>;
}
