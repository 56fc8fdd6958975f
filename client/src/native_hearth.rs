//! [`Client`] as the core's [`Hearth`]: each call is the client's own, its error kept inside
//! the [`HearthError`] with the hearth's code.

use std::time::Duration;

use hearth_client_core::{Hearth, HearthError};
use hearth_spec::api::{
    ClaimMany, ClaimedMany, CommitRequest, HistoryPage, KeyPackageCount, Limits, MediaUploaded,
    QueriedDevices, RoomSummary, Sequenced, SyncPage, UploadKeyPackages,
};
use hearth_spec::{DeviceId, RoomId, RoomKind, ServerName, TxnId, UserId};

use crate::{Client, ClientError};

impl From<ClientError> for HearthError {
    fn from(e: ClientError) -> Self {
        HearthError::new(e.code(), e)
    }
}

/// The process's fixed point for [`Hearth::monotonic`].
fn started() -> tokio::time::Instant {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(tokio::time::Instant::now)
}

impl Hearth for Client {
    fn me(&self) -> Option<(UserId, DeviceId)> {
        self.session()
            .map(|s| (s.user_id.clone(), s.device_id.clone()))
    }

    fn monotonic(&self) -> Duration {
        started().elapsed()
    }

    async fn pause(&mut self, duration: Duration) {
        tokio::time::sleep(duration).await
    }

    async fn key_package_count(&mut self) -> Result<KeyPackageCount, HearthError> {
        Ok(Client::key_package_count(self).await?)
    }

    async fn upload_key_packages(
        &mut self,
        req: &UploadKeyPackages,
    ) -> Result<KeyPackageCount, HearthError> {
        Ok(Client::upload_key_packages(self, req).await?)
    }

    async fn query_devices(&mut self, users: &[UserId]) -> Result<QueriedDevices, HearthError> {
        Ok(Client::query_devices(self, users).await?)
    }

    async fn claim_many(&mut self, req: &ClaimMany) -> Result<ClaimedMany, HearthError> {
        Ok(Client::claim_many(self, req).await?)
    }

    async fn delete_device(&mut self, device: &DeviceId) -> Result<(), HearthError> {
        Ok(Client::delete_device(self, device).await?)
    }

    async fn create_room(
        &mut self,
        kind: RoomKind,
        name: Option<&str>,
        members: &[UserId],
    ) -> Result<RoomSummary, HearthError> {
        Ok(Client::create_room(self, kind, name, members).await?)
    }

    async fn room(&mut self, room: &RoomId) -> Result<RoomSummary, HearthError> {
        Ok(Client::room(self, room).await?)
    }

    async fn invite(&mut self, room: &RoomId, user: &UserId) -> Result<Sequenced, HearthError> {
        Ok(Client::invite(self, room, user).await?)
    }

    async fn remove_member(
        &mut self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Sequenced, HearthError> {
        Ok(Client::remove_member(self, room, user).await?)
    }

    async fn commit(
        &mut self,
        room: &RoomId,
        req: &CommitRequest,
    ) -> Result<Sequenced, HearthError> {
        Ok(Client::commit(self, room, req).await?)
    }

    async fn send(
        &mut self,
        room: &RoomId,
        txn_id: &TxnId,
        payload: &[u8],
    ) -> Result<Sequenced, HearthError> {
        Ok(Client::send(self, room, txn_id, payload).await?)
    }

    async fn history(
        &mut self,
        room: &RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HearthError> {
        Ok(Client::history(self, room, before, limit).await?)
    }

    async fn sync(&mut self, since: Option<u64>, limit: usize) -> Result<SyncPage, HearthError> {
        Ok(Client::sync(self, since, limit).await?)
    }

    async fn limits(&mut self) -> Result<Limits, HearthError> {
        Ok(Client::limits(self).await?)
    }

    async fn upload_media(&mut self, blob: Vec<u8>) -> Result<MediaUploaded, HearthError> {
        Ok(Client::upload_media(self, blob).await?)
    }

    async fn download_media(
        &mut self,
        media_id: &str,
        server: Option<&ServerName>,
    ) -> Result<Vec<u8>, HearthError> {
        Ok(Client::download_media(self, media_id, server).await?)
    }
}
