//! What the federation glue needs from storage, and the redb store's answer.
//!
//! Every file of `federation/` reads and writes through [`FederationStore`]: the outbound
//! queue, what peers told this hearth (key rotations, hearths found in the DHT), and the few
//! reads of local rooms, users and key packages that peers' requests are answered from. A
//! second storage backend implements this trait and runs the same contract tests.

use hearth_spec::api::ClaimedKeyPackage;
use hearth_spec::{DeviceId, RoomId, ServerName, UserId};

use crate::store::tables::{OutItem, PeerRotation, RoomRecord, UserRecord};
use crate::store::{Store, StoreError};

pub trait FederationStore: std::fmt::Debug + Send + Sync + 'static {
    /// Appends entries to destinations' queues durably, outside a group commit; returns each
    /// entry's destination and id, ids rising per destination.
    fn queue_outbox(
        &self,
        items: &[(ServerName, OutItem)],
    ) -> Result<Vec<(ServerName, u64)>, StoreError>;
    /// Up to `limit` of the oldest entries for `destination` with ids above `after`.
    fn outbox_pending(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutItem)>, StoreError>;
    /// Removes delivered entries (need not be durable: a peer de-duplicates what comes again).
    fn outbox_remove(&self, destination: &ServerName, ids: &[u64]) -> Result<(), StoreError>;
    /// How many entries wait for each destination, in name order.
    fn outbox_depths(&self) -> Result<Vec<(ServerName, u64)>, StoreError>;
    /// Every queued entry `keep` selects, for start-up bookkeeping.
    fn outbox_items(
        &self,
        keep: &dyn Fn(&OutItem) -> bool,
    ) -> Result<Vec<(ServerName, u64, OutItem)>, StoreError>;
    /// The stored bytes of a room's event at `seq`.
    fn event_at(&self, room: &RoomId, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    fn room(&self, room: &RoomId) -> Result<Option<RoomRecord>, StoreError>;
    fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool, StoreError>;
    fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError>;
    /// A local user's logged-in devices that have key packages.
    fn e2ee_devices(&self, user: &UserId) -> Result<Vec<DeviceId>, StoreError>;
    /// Takes one key package per device (all devices, or those `wanted`).
    fn claim_key_packages(
        &self,
        user: &UserId,
        wanted: Option<&[DeviceId]>,
    ) -> Result<Vec<ClaimedKeyPackage>, StoreError>;
    /// Records a key rotation a peer announced, after those recorded before.
    fn save_peer_rotation(
        &self,
        peer: &ServerName,
        rotation: &PeerRotation,
    ) -> Result<(), StoreError>;
    /// Every recorded peer rotation, per peer in the order recorded.
    fn peer_rotations(&self) -> Result<Vec<(ServerName, PeerRotation)>, StoreError>;
    /// Keeps the newest signed record of a hearth found in the DHT.
    fn save_discovered(&self, peer: &ServerName, signed: &[u8]) -> Result<(), StoreError>;
    fn discovered(&self) -> Result<Vec<Vec<u8>>, StoreError>;
}

impl FederationStore for Store {
    fn queue_outbox(
        &self,
        items: &[(ServerName, OutItem)],
    ) -> Result<Vec<(ServerName, u64)>, StoreError> {
        Store::queue_outbox(self, items)
    }
    fn outbox_pending(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutItem)>, StoreError> {
        Store::outbox_pending(self, destination, after, limit)
    }
    fn outbox_remove(&self, destination: &ServerName, ids: &[u64]) -> Result<(), StoreError> {
        Store::outbox_remove(self, destination, ids)
    }
    fn outbox_depths(&self) -> Result<Vec<(ServerName, u64)>, StoreError> {
        Store::outbox_depths(self)
    }
    fn outbox_items(
        &self,
        keep: &dyn Fn(&OutItem) -> bool,
    ) -> Result<Vec<(ServerName, u64, OutItem)>, StoreError> {
        Store::outbox_items(self, keep)
    }
    fn event_at(&self, room: &RoomId, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Store::event_at(self, room, seq)
    }
    fn room(&self, room: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        Store::room(self, room)
    }
    fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool, StoreError> {
        Store::is_member(self, room, user)
    }
    fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        Store::user(self, user)
    }
    fn e2ee_devices(&self, user: &UserId) -> Result<Vec<DeviceId>, StoreError> {
        Store::e2ee_devices(self, user)
    }
    fn claim_key_packages(
        &self,
        user: &UserId,
        wanted: Option<&[DeviceId]>,
    ) -> Result<Vec<ClaimedKeyPackage>, StoreError> {
        Store::claim_key_packages(self, user, wanted)
    }
    fn save_peer_rotation(
        &self,
        peer: &ServerName,
        rotation: &PeerRotation,
    ) -> Result<(), StoreError> {
        Store::save_peer_rotation(self, peer, rotation)
    }
    fn peer_rotations(&self) -> Result<Vec<(ServerName, PeerRotation)>, StoreError> {
        Store::peer_rotations(self)
    }
    fn save_discovered(&self, peer: &ServerName, signed: &[u8]) -> Result<(), StoreError> {
        Store::save_discovered(self, peer, signed)
    }
    fn discovered(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Store::discovered(self)
    }
}

#[cfg(test)]
mod tests;
