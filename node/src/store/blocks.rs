//! The hearths an admin blocked, each change its own durable transaction.

use hearth_spec::ServerName;
use redb::ReadableTable;

use super::tables::{BLOCKED_HEARTHS, BlockRecord};
use super::{Store, StoreError, decode, encode, parse_id};

impl Store {
    /// Blocks `server`; false if it was blocked already (the first record is kept).
    pub fn block_hearth(
        &self,
        server: &ServerName,
        record: &BlockRecord,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let added = {
            let mut blocked = txn.open_table(BLOCKED_HEARTHS)?;
            if blocked.get(server.as_str())?.is_some() {
                false
            } else {
                blocked.insert(server.as_str(), encode(record).as_slice())?;
                true
            }
        };
        txn.commit()?;
        Ok(added)
    }

    /// Lifts the block on `server`; false if it was not blocked.
    pub fn unblock_hearth(&self, server: &ServerName) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let removed = txn
            .open_table(BLOCKED_HEARTHS)?
            .remove(server.as_str())?
            .is_some();
        txn.commit()?;
        Ok(removed)
    }

    /// Every blocked hearth, in name order.
    pub fn blocked_hearths(&self) -> Result<Vec<(ServerName, BlockRecord)>, StoreError> {
        let txn = self.begin_read()?;
        let blocked = txn.open_table(BLOCKED_HEARTHS)?;
        blocked
            .iter()?
            .map(|row| {
                let (name, record) = row?;
                Ok((parse_id(name.value())?, decode(record.value())?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_kept_once_and_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let bad = ServerName::parse("bad.test").unwrap();
        let first = BlockRecord {
            ts: 5,
            reason: Some("spam".into()),
        };
        assert!(store.block_hearth(&bad, &first).unwrap());
        let again = BlockRecord {
            ts: 9,
            reason: None,
        };
        assert!(!store.block_hearth(&bad, &again).unwrap());
        assert_eq!(store.blocked_hearths().unwrap(), vec![(bad.clone(), first)]);
        assert!(store.unblock_hearth(&bad).unwrap());
        assert!(!store.unblock_hearth(&bad).unwrap());
        assert!(store.blocked_hearths().unwrap().is_empty());
    }
}
