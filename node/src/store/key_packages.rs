//! MLS key packages the hearth hands out for its users' devices. Each one-time package is
//! removed in the same write transaction that hands it out, so no two claims ever get it; the
//! last-resort package stays and is handed out when a device has nothing else.

use hearth_spec::{DeviceId, UserId};
use redb::{ReadableDatabase, ReadableTable};

use super::tables::{KEY_PACKAGES, LAST_RESORT};
use super::{Store, StoreError, parse_id};

/// What a device has left to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageCount {
    pub available: u64,
    pub last_resort: bool,
}

/// A package handed out: (device, package bytes, whether it is the last-resort one).
pub type Claimed = (DeviceId, Vec<u8>, bool);

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
        let txn = self.db.begin_write()?;
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
        let txn = self.db.begin_read()?;
        count_in(
            &txn.open_table(KEY_PACKAGES)?,
            &txn.open_table(LAST_RESORT)?,
            user,
            device,
        )
    }

    /// Hands out one package for each of `devices`: its oldest one-time package, which is
    /// removed, or else its last-resort package. Devices with neither are left out.
    pub fn claim_key_packages(
        &self,
        user: &UserId,
        devices: &[DeviceId],
    ) -> Result<Vec<Claimed>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut claimed = Vec::new();
        {
            let mut table = txn.open_table(KEY_PACKAGES)?;
            let resort = txn.open_table(LAST_RESORT)?;
            for device in devices {
                let (u, d) = (user.as_str(), device.as_str());
                let first = table
                    .range((u, d, 0)..=(u, d, u64::MAX))?
                    .next()
                    .transpose()?
                    .map(|(k, v)| (k.value().2, v.value().to_vec()));
                if let Some((n, package)) = first {
                    table.remove((u, d, n))?;
                    claimed.push((device.clone(), package, false));
                } else if let Some(package) = resort.get((u, d))? {
                    claimed.push((device.clone(), package.value().to_vec(), true));
                }
            }
        }
        txn.commit()?;
        Ok(claimed)
    }

    /// The user's devices that hold a package of either kind, in id order.
    pub fn devices_with_key_packages(&self, user: &UserId) -> Result<Vec<DeviceId>, StoreError> {
        let txn = self.db.begin_read()?;
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

    #[test]
    fn each_package_is_handed_out_once_then_the_last_resort_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (user, d1, d2) = ids();
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
        let both = [d1.clone(), d2.clone()];
        let first = store.claim_key_packages(&user, &both).unwrap();
        assert_eq!(first, vec![(d1.clone(), b"p1".to_vec(), false)]);
        let second = store.claim_key_packages(&user, &both).unwrap();
        assert_eq!(second, vec![(d1.clone(), b"p2".to_vec(), false)]);
        for _ in 0..3 {
            let again = store.claim_key_packages(&user, &both).unwrap();
            assert_eq!(again, vec![(d1.clone(), b"lr".to_vec(), true)]);
        }
        assert_eq!(
            store.devices_with_key_packages(&user).unwrap(),
            vec![d1.clone()]
        );
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
