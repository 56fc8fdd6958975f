//! What accounts need from storage, and the redb store's answer.
//!
//! [`Accounts`](super::Accounts) reads and writes only through [`AccountStore`]; a second
//! storage backend implements this trait and runs the same contract tests (`tests` below).

use hearth_spec::{DeviceId, UserId};

use crate::store::tables::{DeviceRecord, UserRecord};
use crate::store::{RotateOutcome, Store, StoreError, TokenRegistration};

/// Users and their devices, each call its own durable transaction.
pub trait AccountStore: Send + Sync + 'static {
    /// Inserts a user unless one with that id exists; returns whether it was inserted.
    fn insert_user(&self, user: &UserId, record: &UserRecord) -> Result<bool, StoreError>;
    /// Replaces a user's record.
    fn put_user(&self, user: &UserId, record: &UserRecord) -> Result<(), StoreError>;
    fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError>;
    /// Every local user, in id order.
    fn users(&self) -> Result<Vec<(UserId, UserRecord)>, StoreError>;
    /// Inserts or replaces a device.
    fn put_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        record: &DeviceRecord,
    ) -> Result<(), StoreError>;
    /// Replaces a device's refresh hash only if it still equals `expected`: two uses of one
    /// refresh token never both rotate.
    fn rotate_refresh(
        &self,
        user: &UserId,
        device: &DeviceId,
        expected: [u8; 32],
        next: [u8; 32],
    ) -> Result<RotateOutcome, StoreError>;
    /// A user's devices, in id order.
    fn devices(&self, user: &UserId) -> Result<Vec<(DeviceId, DeviceRecord)>, StoreError>;
    /// Removes devices with everything kept per device (cursor, pusher, key packages); returns
    /// how many existed.
    fn delete_devices(&self, user: &UserId, ids: &[DeviceId]) -> Result<usize, StoreError>;
    /// Every (user, device) pair, to know at start which devices are logged in.
    fn all_devices(&self) -> Result<Vec<(UserId, DeviceId)>, StoreError>;
    /// Inserts a user and spends one use of a registration token, both or neither.
    fn insert_user_with_token(
        &self,
        user: &UserId,
        record: &UserRecord,
        token: &str,
        now_ms: u64,
    ) -> Result<TokenRegistration, StoreError>;
    /// Sets or clears the admin flag.
    fn set_admin(&self, user: &UserId, admin: bool) -> Result<(), StoreError>;
    fn is_admin(&self, user: &UserId) -> Result<bool, StoreError>;
    /// Every user with the admin flag.
    fn admins(&self) -> Result<std::collections::HashSet<UserId>, StoreError>;
}

impl AccountStore for Store {
    fn insert_user(&self, user: &UserId, record: &UserRecord) -> Result<bool, StoreError> {
        Store::insert_user(self, user, record)
    }
    fn put_user(&self, user: &UserId, record: &UserRecord) -> Result<(), StoreError> {
        Store::put_user(self, user, record)
    }
    fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        Store::user(self, user)
    }
    fn users(&self) -> Result<Vec<(UserId, UserRecord)>, StoreError> {
        Store::users(self)
    }
    fn put_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        record: &DeviceRecord,
    ) -> Result<(), StoreError> {
        Store::put_device(self, user, device, record)
    }
    fn rotate_refresh(
        &self,
        user: &UserId,
        device: &DeviceId,
        expected: [u8; 32],
        next: [u8; 32],
    ) -> Result<RotateOutcome, StoreError> {
        Store::rotate_refresh(self, user, device, expected, next)
    }
    fn devices(&self, user: &UserId) -> Result<Vec<(DeviceId, DeviceRecord)>, StoreError> {
        Store::devices(self, user)
    }
    fn delete_devices(&self, user: &UserId, ids: &[DeviceId]) -> Result<usize, StoreError> {
        Store::delete_devices(self, user, ids)
    }
    fn all_devices(&self) -> Result<Vec<(UserId, DeviceId)>, StoreError> {
        Store::all_devices(self)
    }
    fn insert_user_with_token(
        &self,
        user: &UserId,
        record: &UserRecord,
        token: &str,
        now_ms: u64,
    ) -> Result<TokenRegistration, StoreError> {
        Store::insert_user_with_token(self, user, record, token, now_ms)
    }
    fn set_admin(&self, user: &UserId, admin: bool) -> Result<(), StoreError> {
        Store::set_admin(self, user, admin)
    }
    fn is_admin(&self, user: &UserId) -> Result<bool, StoreError> {
        Store::is_admin(self, user)
    }
    fn admins(&self) -> Result<std::collections::HashSet<UserId>, StoreError> {
        Store::admins(self)
    }
}

#[cfg(test)]
mod tests;
