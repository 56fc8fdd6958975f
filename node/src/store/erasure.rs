//! Erasing an account's own rows: everything stored about a user but their account record
//! (kept, deactivated and without a password, so the id is never handed to someone else) and
//! the slots of their messages in others' history (purged in place by `retention.rs`).

use hearth_spec::UserId;
use redb::{ReadableTable, TableDefinition};

use super::tables::*;
use super::{Store, StoreError};

/// Removes the rows of a table keyed by (user, text) for one user.
fn remove_pairs<V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    definition: TableDefinition<(&'static str, &'static str), V>,
    user: &str,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(definition)?;
    let keys: Vec<String> = table
        .range((user, "")..)?
        .map_while(|row| match row {
            Ok((key, _)) if key.value().0 == user => Some(Ok(key.value().1.to_owned())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for key in &keys {
        table.remove((user, key.as_str()))?;
    }
    Ok(keys.len())
}

/// Removes the rows of a table keyed by (user, number) for one user.
fn remove_numbered<V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    definition: TableDefinition<(&'static str, u64), V>,
    user: &str,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(definition)?;
    let keys: Vec<u64> = table
        .range((user, 0)..=(user, u64::MAX))?
        .map(|row| row.map(|(key, _)| key.value().1))
        .collect::<Result<_, _>>()?;
    for key in &keys {
        table.remove((user, *key))?;
    }
    Ok(keys.len())
}

/// Removes the rows of a table keyed by (user, device, text) for one user.
fn remove_triples<V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    definition: TableDefinition<(&'static str, &'static str, &'static str), V>,
    user: &str,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(definition)?;
    let keys: Vec<(String, String)> = table
        .range((user, "", "")..)?
        .map_while(|row| match row {
            Ok((key, _)) if key.value().0 == user => {
                let (_, device, txn_id) = key.value();
                Some(Ok((device.to_owned(), txn_id.to_owned())))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for (device, txn_id) in &keys {
        table.remove((user, device.as_str(), txn_id.as_str()))?;
    }
    Ok(keys.len())
}

impl Store {
    /// Removes a user's own rows (inbox, marks, cursors, transactions, key packages, push
    /// endpoints, presence, where devices were seen, the admin flag) and the password, in one
    /// transaction; how many rows went. Devices and rooms are left by the caller first.
    pub fn erase_user_rows(&self, user: &UserId) -> Result<usize, StoreError> {
        let name = user.as_str();
        let txn = self.begin_write()?;
        let mut removed = 0;
        {
            for table in [READ_MARKS, DELIVERED, CURSORS] {
                removed += remove_pairs(&txn, table, name)?;
            }
            for table in [PUSHERS, LAST_RESORT] {
                removed += remove_pairs(&txn, table, name)?;
            }
            removed += remove_pairs(&txn, DEVICE_SEEN, name)?;
            removed += remove_triples(&txn, TXNS, name)?;
            removed += remove_triples(&txn, SUBMITTED, name)?;
            {
                let mut packages = txn.open_table(KEY_PACKAGES)?;
                let keys: Vec<(String, u64)> = packages
                    .range((name, "", 0)..)?
                    .map_while(|row| match row {
                        Ok((key, _)) if key.value().0 == name => {
                            let (_, device, n) = key.value();
                            Some(Ok((device.to_owned(), n)))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<_, _>>()?;
                for (device, n) in &keys {
                    packages.remove((name, device.as_str(), *n))?;
                }
                removed += keys.len();
            }
            removed += remove_numbered(&txn, INBOX, name)?;
            removed += remove_numbered(&txn, NOTICES, name)?;
            removed += usize::from(txn.open_table(NOTICES_READ)?.remove(name)?.is_some());
            removed += usize::from(txn.open_table(PRESENCE)?.remove(name)?.is_some());
            removed += usize::from(txn.open_table(ADMINS)?.remove(name)?.is_some());
            let mut users = txn.open_table(USERS)?;
            let record = users.get(name)?.map(|v| v.value().to_vec());
            if let Some(bytes) = record {
                let mut record: UserRecord = super::decode(&bytes)?;
                record.password_hash.clear();
                record.deactivated = true;
                users.insert(name, super::encode(&record).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}
