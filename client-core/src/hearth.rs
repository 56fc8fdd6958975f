//! The calls the SDK makes to its hearth, as a trait: the native SDK answers them with reqwest,
//! a browser with `fetch`. The protocol logic (`SecureSession`) is written once against it.
//!
//! Methods are `async fn` without a `Send` bound on purpose: a browser's futures are not
//! `Send`, and a native implementation's futures stay `Send` where its concrete type is known.

use std::time::Duration;

use hearth_spec::api::{
    ClaimMany, ClaimedMany, CommitRequest, HistoryPage, KeyPackageCount, Limits, MediaUploaded,
    QueriedDevices, RoomSummary, Sequenced, SyncPage, UploadKeyPackages,
};
use hearth_spec::{DeviceId, ErrorBody, ErrorCode, RoomId, RoomKind, ServerName, TxnId, UserId};

/// A failed call: the hearth's error code when it answered with one, and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{inner}")]
pub struct HearthError {
    code: Option<ErrorCode>,
    inner: Box<dyn std::error::Error + Send + Sync>,
}

impl HearthError {
    pub fn new(
        code: Option<ErrorCode>,
        inner: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            code,
            inner: inner.into(),
        }
    }

    /// The hearth's error code, if the hearth answered.
    pub fn code(&self) -> Option<ErrorCode> {
        self.code
    }

    /// The underlying error (the native SDK's `ClientError`, say).
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.inner.as_ref()
    }
}

/// A logged-in session with a hearth, and the clock of the platform it runs on.
#[allow(async_fn_in_trait)]
pub trait Hearth {
    /// The logged-in user and device.
    fn me(&self) -> Option<(UserId, DeviceId)>;
    /// Time since an arbitrary fixed point, never going backwards.
    fn monotonic(&self) -> Duration;
    /// Waits `duration`.
    async fn pause(&mut self, duration: Duration);

    async fn key_package_count(&mut self) -> Result<KeyPackageCount, HearthError>;
    async fn upload_key_packages(
        &mut self,
        req: &UploadKeyPackages,
    ) -> Result<KeyPackageCount, HearthError>;
    async fn query_devices(&mut self, users: &[UserId]) -> Result<QueriedDevices, HearthError>;
    async fn claim_many(&mut self, req: &ClaimMany) -> Result<ClaimedMany, HearthError>;
    async fn delete_device(&mut self, device: &DeviceId) -> Result<(), HearthError>;

    async fn create_room(
        &mut self,
        kind: RoomKind,
        name: Option<&str>,
        members: &[UserId],
    ) -> Result<RoomSummary, HearthError>;
    async fn room(&mut self, room: &RoomId) -> Result<RoomSummary, HearthError>;
    async fn invite(&mut self, room: &RoomId, user: &UserId) -> Result<Sequenced, HearthError>;
    /// The group's admin removes a member.
    async fn remove_member(
        &mut self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Sequenced, HearthError>;
    async fn commit(
        &mut self,
        room: &RoomId,
        req: &CommitRequest,
    ) -> Result<Sequenced, HearthError>;
    async fn send(
        &mut self,
        room: &RoomId,
        txn_id: &TxnId,
        payload: &[u8],
    ) -> Result<Sequenced, HearthError>;
    async fn history(
        &mut self,
        room: &RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HearthError>;
    async fn sync(&mut self, since: Option<u64>, limit: usize) -> Result<SyncPage, HearthError>;

    async fn limits(&mut self) -> Result<Limits, HearthError>;
    async fn upload_media(&mut self, blob: Vec<u8>) -> Result<MediaUploaded, HearthError>;
    async fn download_media(
        &mut self,
        media_id: &str,
        server: Option<&ServerName>,
    ) -> Result<Vec<u8>, HearthError>;
}

/// A fresh transaction id, unique per device in practice, on any platform: 64 random bits drawn
/// once per process, then a counter. The hearth keeps a device's ids in key order, so ids that
/// rise land on the same few pages; random ones would each cost a page of their own.
pub fn new_txn_id() -> TxnId {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TxnId::parse(&format!("{prefix:016x}{count:016x}")).expect("hex is a valid txn id")
}

/// The error a hearth answered with status `status` and body `text`: its JSON error body, or,
/// for a body that is not one (a proxy's page, say), `internal` with the status and the start of
/// the text.
pub fn error_body(status: u16, text: &str) -> ErrorBody {
    serde_json::from_str::<ErrorBody>(text).unwrap_or_else(|_| {
        ErrorBody::new(
            ErrorCode::Internal,
            format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ),
        )
    })
}

/// `/v1/rooms/{room}{suffix}` with the room id percent-encoded.
pub fn room_path(room: &RoomId, suffix: &str) -> String {
    format!("/v1/rooms/{}{suffix}", encode_path(room.as_str()))
}

/// Percent-encodes a path or query segment.
pub fn encode_path(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::new_txn_id;

    #[test]
    fn transaction_ids_rise_in_key_order_and_never_repeat() {
        let ids: Vec<String> = (0..1000)
            .map(|_| new_txn_id().as_str().to_owned())
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        assert!(ids.iter().all(|id| id.len() == 32));
    }
}
