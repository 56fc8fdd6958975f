//! MLS key packages the hearth hands out for its users' devices. Each one-time package is
//! removed in the same write transaction that hands it out, so no two claims ever get it; the
//! last-resort package stays and is handed out when a device has nothing else.

use hearth_spec::{DeviceId, UserId};
use redb::ReadableTable;

use hearth_spec::api::ClaimedKeyPackage;

use super::tables::{DEVICES, KEY_PACKAGES, LAST_RESORT};
use super::{Store, StoreError, parse_id, rows_under};

/// What a device has left to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageCount {
    pub available: u64,
    pub last_resort: bool,
}

fn count_in(
    packages: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    last_resort: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    user: &UserId,
    device: &DeviceId,
) -> Result<PackageCount, StoreError> {
    let (u, d) = (user.as_str(), device.as_str());
    let available = packages.range((u, d, 0)..=(u, d, u64::MAX))?.count() as u64;
    Ok(PackageCount {
        available,
        last_resort: last_resort.get((u, d))?.is_some(),
    })
}

impl Store {
    /// Stores a device's new packages (after those it has) and replaces its last-resort package
    /// if one is given. Refuses (returns `None`, writing nothing) when the device would hold
    /// more than `max_held` one-time packages.
    pub fn upload_key_packages(
        &self,
        user: &UserId,
        device: &DeviceId,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_held: u64,
    ) -> Result<Option<PackageCount>, StoreError> {
        let (u, d) = (user.as_str(), device.as_str());
        let txn = self.begin_write()?;
        let count = {
            let mut table = txn.open_table(KEY_PACKAGES)?;
            let mut resort = txn.open_table(LAST_RESORT)?;
            let held = count_in(&table, &resort, user, device)?.available;
            if held + packages.len() as u64 > max_held {
                return Ok(None);
            }
            let next = table
                .range((u, d, 0)..=(u, d, u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(1, |(k, _)| k.value().2 + 1);
            for (n, package) in (next..).zip(packages) {
                table.insert((u, d, n), package.as_slice())?;
            }
            if let Some(package) = last_resort {
                resort.insert((u, d), package)?;
            }
            count_in(&table, &resort, user, device)?
        };
        txn.commit()?;
        Ok(Some(count))
    }

    /// What a device has left to hand out.
    pub fn key_package_count(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<PackageCount, StoreError> {
        let txn = self.begin_read()?;
        count_in(
            &txn.open_table(KEY_PACKAGES)?,
            &txn.open_table(LAST_RESORT)?,
            user,
            device,
        )
    }

    /// Hands out one package for each logged-in device of `user` (of those in `wanted`, if
    /// given): its oldest one-time package, which is removed in the same transaction, or else
    /// its last-resort package. Devices with neither are left out.
    pub fn claim_key_packages(
        &self,
        user: &UserId,
        wanted: Option<&[DeviceId]>,
    ) -> Result<Vec<ClaimedKeyPackage>, StoreError> {
        let txn = self.begin_write()?;
        let mut claimed = Vec::new();
        {
            let logged_in = rows_under(&txn.open_table(DEVICES)?, user.as_str(), |d, _| {
                parse_id::<DeviceId>(d)
            })?;
            let mut table = txn.open_table(KEY_PACKAGES)?;
            let resort = txn.open_table(LAST_RESORT)?;
            for device in logged_in
                .into_iter()
                .filter(|d| wanted.is_none_or(|w| w.contains(d)))
            {
                let (u, d) = (user.as_str(), device.as_str());
                let first = table
                    .range((u, d, 0)..=(u, d, u64::MAX))?
                    .next()
                    .transpose()?
                    .map(|(k, v)| (k.value().2, v.value().to_vec()));
                let (key_package, last_resort) = if let Some((n, package)) = first {
                    table.remove((u, d, n))?;
                    (package, false)
                } else if let Some(package) = resort.get((u, d))? {
                    (package.value().to_vec(), true)
                } else {
                    continue;
                };
                claimed.push(ClaimedKeyPackage {
                    device_id: device,
                    key_package,
                    last_resort,
                });
            }
        }
        txn.commit()?;
        Ok(claimed)
    }

    /// The user's devices that hold a package of either kind, in id order.
    pub fn devices_with_key_packages(&self, user: &UserId) -> Result<Vec<DeviceId>, StoreError> {
        let txn = self.begin_read()?;
        let resort = txn.open_table(LAST_RESORT)?;
        let table = txn.open_table(KEY_PACKAGES)?;
        let mut devices = std::collections::BTreeSet::new();
        for entry in resort.range((user.as_str(), "")..)? {
            let (k, _) = entry?;
            let (u, d) = k.value();
            if u != user.as_str() {
                break;
            }
            devices.insert(d.to_owned());
        }
        for entry in table.range((user.as_str(), "", 0)..)? {
            let (k, _) = entry?;
            let (u, d, _) = k.value();
            if u != user.as_str() {
                break;
            }
            devices.insert(d.to_owned());
        }
        devices.iter().map(|d| parse_id(d)).collect()
    }

    /// The user's end-to-end devices: logged in and holding a package of either kind, in id
    /// order. None for a user this store does not have or that was deactivated. These are the
    /// devices a room's MLS group must hold for the user (`spec/e2ee.md`).
    pub fn e2ee_devices(&self, user: &UserId) -> Result<Vec<DeviceId>, StoreError> {
        if self.user(user)?.is_none_or(|u| u.deactivated) {
            return Ok(Vec::new());
        }
        let logged_in: Vec<DeviceId> = self.devices(user)?.into_iter().map(|(d, _)| d).collect();
        Ok(self
            .devices_with_key_packages(user)?
            .into_iter()
            .filter(|d| logged_in.contains(d))
            .collect())
    }

    /// Removes every package of a device (it was logged out or removed).
    pub(super) fn drop_key_packages(
        txn: &redb::WriteTransaction,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<(), StoreError> {
        let (u, d) = (user.as_str(), device.as_str());
        let mut table = txn.open_table(KEY_PACKAGES)?;
        table.retain_in((u, d, 0)..=(u, d, u64::MAX), |_, _| false)?;
        txn.open_table(LAST_RESORT)?.remove((u, d))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (UserId, DeviceId, DeviceId) {
        (
            UserId::parse("@a:localhost").unwrap(),
            DeviceId::parse("D1").unwrap(),
            DeviceId::parse("D2").unwrap(),
        )
    }

    fn claimed(device: &DeviceId, package: &[u8], last_resort: bool) -> ClaimedKeyPackage {
        ClaimedKeyPackage {
            device_id: device.clone(),
            key_package: package.to_vec(),
            last_resort,
        }
    }

    #[test]
    fn each_package_is_handed_out_once_then_the_last_resort_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (user, d1, d2) = ids();
        let record = crate::store::tables::DeviceRecord {
            name: "d".into(),
            created_ts: 0,
            refresh_hash: [0; 32],
        };
        for device in [&d1, &d2] {
            store.put_device(&user, device, &record).unwrap();
        }
        let count = store
            .upload_key_packages(
                &user,
                &d1,
                &[b"p1".to_vec(), b"p2".to_vec()],
                Some(b"lr"),
                10,
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            count,
            PackageCount {
                available: 2,
                last_resort: true
            }
        );
        let first = store.claim_key_packages(&user, None).unwrap();
        assert_eq!(first, vec![claimed(&d1, b"p1", false)]);
        let second = store
            .claim_key_packages(&user, Some(std::slice::from_ref(&d1)))
            .unwrap();
        assert_eq!(second, vec![claimed(&d1, b"p2", false)]);
        for _ in 0..3 {
            let again = store.claim_key_packages(&user, None).unwrap();
            assert_eq!(again, vec![claimed(&d1, b"lr", true)]);
        }
        assert_eq!(
            store.devices_with_key_packages(&user).unwrap(),
            vec![d1.clone()]
        );
        // Only the wanted devices, and only logged-in ones.
        assert!(
            store
                .claim_key_packages(&user, Some(std::slice::from_ref(&d2)))
                .unwrap()
                .is_empty()
        );
        store
            .delete_devices(&user, std::slice::from_ref(&d1))
            .unwrap();
        assert!(store.claim_key_packages(&user, None).unwrap().is_empty());
    }

    #[test]
    fn an_upload_past_the_limit_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (user, d1, _) = ids();
        let three = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        assert!(
            store
                .upload_key_packages(&user, &d1, &three, None, 2)
                .unwrap()
                .is_none()
        );
        assert_eq!(store.key_package_count(&user, &d1).unwrap().available, 0);
    }
}
