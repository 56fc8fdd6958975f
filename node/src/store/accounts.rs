//! Users, devices and their tokens, presence and pushers: written by `accounts/` in small
//! transactions of their own.

use hearth_spec::{DeviceId, UserId};
use redb::ReadableTable;

use super::tables::*;
use super::{Store, StoreError, decode, encode, parse_id, rows_under};

impl Store {
    /// Inserts a user unless one with that id exists; returns whether it was inserted.
    pub fn insert_user(&self, user: &UserId, record: &UserRecord) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let inserted = {
            let mut users = txn.open_table(USERS)?;
            if users.get(user.as_str())?.is_some() {
                false
            } else {
                users.insert(user.as_str(), encode(record).as_slice())?;
                true
            }
        };
        txn.commit()?;
        Ok(inserted)
    }

    /// Replaces a user's record.
    pub fn put_user(&self, user: &UserId, record: &UserRecord) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(USERS)?
            .insert(user.as_str(), encode(record).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// A user's record.
    pub fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read_record(USERS, user.as_str())
    }

    /// Every local user, in id order.
    pub fn users(&self) -> Result<Vec<(UserId, UserRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let users = txn.open_table(USERS)?;
        users
            .iter()?
            .map(|row| {
                let (k, v) = row?;
                Ok((parse_id(k.value())?, decode(v.value())?))
            })
            .collect()
    }

    /// Inserts or replaces a device.
    pub fn put_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        record: &DeviceRecord,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(DEVICES)?
            .insert((user.as_str(), device.as_str()), encode(record).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Replaces a device's refresh hash only if it still equals `expected` (single use).
    pub fn rotate_refresh(
        &self,
        user: &UserId,
        device: &DeviceId,
        expected: [u8; 32],
        next: [u8; 32],
    ) -> Result<RotateOutcome, StoreError> {
        let txn = self.begin_write()?;
        let outcome = {
            let mut devices = txn.open_table(DEVICES)?;
            let key = (user.as_str(), device.as_str());
            let current: Option<DeviceRecord> =
                devices.get(key)?.map(|v| decode(v.value())).transpose()?;
            match current {
                None => RotateOutcome::NoDevice,
                Some(mut record) if record.refresh_hash == expected => {
                    record.refresh_hash = next;
                    devices.insert(key, encode(&record).as_slice())?;
                    RotateOutcome::Rotated
                }
                Some(_) => RotateOutcome::Mismatch,
            }
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// A device's record.
    pub fn device(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.read_record(DEVICES, (user.as_str(), device.as_str()))
    }

    /// Removes devices (and their cursors); returns how many existed.
    pub fn delete_devices(&self, user: &UserId, ids: &[DeviceId]) -> Result<usize, StoreError> {
        let txn = self.begin_write()?;
        let mut removed = 0;
        {
            let mut devices = txn.open_table(DEVICES)?;
            let mut cursors = txn.open_table(CURSORS)?;
            let mut pushers = txn.open_table(PUSHERS)?;
            let mut seen = txn.open_table(DEVICE_SEEN)?;
            for device in ids {
                let key = (user.as_str(), device.as_str());
                if devices.remove(key)?.is_some() {
                    removed += 1;
                }
                cursors.remove(key)?;
                pushers.remove(key)?;
                seen.remove(key)?;
            }
        }
        for device in ids {
            Self::drop_key_packages(&txn, user, device)?;
        }
        txn.commit()?;
        Ok(removed)
    }

    /// Records where and when a device was last seen.
    pub fn put_device_seen(
        &self,
        user: &UserId,
        device: &DeviceId,
        ip: &str,
        ts: u64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(DEVICE_SEEN)?
            .insert((user.as_str(), device.as_str()), (ip, ts))?;
        txn.commit()?;
        Ok(())
    }

    /// Where and when a device was last seen, if it was.
    pub fn device_seen(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let seen = txn.open_table(DEVICE_SEEN)?;
        Ok(seen.get((user.as_str(), device.as_str()))?.map(|v| {
            let (ip, ts) = v.value();
            (ip.to_owned(), ts)
        }))
    }

    /// A user's devices, in id order.
    pub fn devices(&self, user: &UserId) -> Result<Vec<(DeviceId, DeviceRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        rows_under(&devices, user.as_str(), |device, record| {
            Ok((parse_id(device)?, decode(record)?))
        })
    }

    /// Every (user, device) pair, to build the set of live sessions at start.
    pub fn all_devices(&self) -> Result<Vec<(UserId, DeviceId)>, StoreError> {
        let txn = self.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        devices
            .iter()?
            .map(|row| {
                let (k, _) = row?;
                let (user, device) = k.value();
                Ok((parse_id(user)?, parse_id(device)?))
            })
            .collect()
    }

    // ---- rooms and events (reads) ----

    /// Presence settings and last-seen time of a user.
    pub fn presence(&self, user: &UserId) -> Result<PresenceRecord, StoreError> {
        Ok(self
            .read_record(PRESENCE, user.as_str())?
            .unwrap_or_default())
    }

    /// Updates a user's presence record and returns it as written.
    pub fn update_presence(
        &self,
        user: &UserId,
        update: impl FnOnce(&mut PresenceRecord),
    ) -> Result<PresenceRecord, StoreError> {
        let txn = self.begin_write()?;
        let record = {
            let mut table = txn.open_table(PRESENCE)?;
            let mut record: PresenceRecord = table
                .get(user.as_str())?
                .map(|v| decode(v.value()))
                .transpose()?
                .unwrap_or_default();
            update(&mut record);
            table.insert(user.as_str(), encode(&record).as_slice())?;
            record
        };
        txn.commit()?;
        Ok(record)
    }

    /// A device's push endpoint.
    pub fn pusher(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<PusherRecord>, StoreError> {
        self.read_record(PUSHERS, (user.as_str(), device.as_str()))
    }

    /// Sets (or with `None`, removes) a device's push endpoint.
    pub fn put_pusher(
        &self,
        user: &UserId,
        device: &DeviceId,
        record: Option<&PusherRecord>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(PUSHERS)?;
            let key = (user.as_str(), device.as_str());
            match record {
                Some(r) => {
                    table.insert(key, encode(r).as_slice())?;
                }
                None => {
                    table.remove(key)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Users with at least one push endpoint.
    pub fn users_with_pushers(&self) -> Result<Vec<UserId>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PUSHERS)?;
        let mut out: Vec<UserId> = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let user: UserId = parse_id(k.value().0)?;
            if out.last() != Some(&user) {
                out.push(user);
            }
        }
        Ok(out)
    }

    /// The devices of a user that have a push endpoint.
    pub fn pushers_of(&self, user: &UserId) -> Result<Vec<(DeviceId, PusherRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PUSHERS)?;
        rows_under(&table, user.as_str(), |device, record| {
            Ok((parse_id(device)?, decode(record)?))
        })
    }
}

/// Outcome of a refresh-token rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated,
    /// The presented token is not the current one: reuse of a spent token.
    Mismatch,
    NoDevice,
}
