//! A consistent copy of the database while the hearth serves: one read transaction (a snapshot
//! that concurrent commits do not disturb) copied table by table into a new database file, which
//! is synced before this returns.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, TableHandle};

use super::tables::*;
use super::{Store, StoreError};

/// Copies every row of one table; how many.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(definition)?;
    let mut target = to.open_table(definition)?;
    let mut rows = 0;
    for row in source.iter()? {
        let (key, value) = row?;
        target.insert(key.value(), value.value())?;
        rows += 1;
    }
    Ok(rows)
}

/// Copies each named table and returns `(name, rows)` for each, in the order given.
macro_rules! copy_tables {
    ($from:expr, $to:expr, [$($table:ident),* $(,)?]) => {
        vec![$((TableHandle::name(&$table).to_owned(), copy_table($from, $to, $table)?)),*]
    };
}

impl Store {
    /// Writes a copy of the database as it is now to a new file at `path` (which must not
    /// exist); `(table, rows)` for every table. A table this code does not know is an error, so
    /// a table added without a place here cannot be left out of backups silently.
    pub fn backup_to(&self, path: &Path) -> Result<Vec<(String, u64)>, StoreError> {
        if path.exists() {
            return Err(StoreError::Corrupt(format!(
                "{} exists already; a backup goes to a new file",
                path.display()
            )));
        }
        let snapshot = self.begin_read()?;
        let copy = Database::create(path)?;
        let txn = copy.begin_write()?;
        let copied = copy_tables!(
            &snapshot,
            &txn,
            [
                USERS,
                DEVICES,
                ROOMS,
                MEMBERS,
                ROOM_ADMINS,
                USER_ROOMS,
                EVENTS,
                EVENT_IDS,
                TXNS,
                INBOX,
                INBOX_HEADS,
                READ_MARKS,
                CURSORS,
                DELIVERED,
                PRESENCE,
                PUSHERS,
                SUBMITTED,
                OUTBOX,
                PEER_ROTATIONS,
                DISCOVERED,
                EPOCHS,
                KEY_PACKAGES,
                LAST_RESORT,
                ADMINS,
                AUDIT,
                REGISTRATION_TOKENS,
                MEDIA,
                MEDIA_BY_USER,
                MEDIA_USAGE,
                DEVICE_SEEN,
                RETENTION,
                PURGE_FLOORS,
                CLOSED_ROOMS,
                BLOCKED_HEARTHS,
                NOTICES,
                NOTICES_READ,
                META,
            ]
        );
        for table in snapshot.list_tables()? {
            if !copied.iter().any(|(name, _)| name == table.name()) {
                return Err(StoreError::Corrupt(format!(
                    "table {} has no place in the backup",
                    table.name()
                )));
            }
        }
        txn.commit()?;
        Ok(copied)
    }

    /// Rows per table, as [`Store::backup_to`] reports them (to check a restored copy).
    pub fn table_rows(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let mut rows = Vec::new();
        for table in txn.list_tables()? {
            let untyped = txn.open_untyped_table(table.clone())?;
            rows.push((
                table.name().to_owned(),
                redb::ReadableTableMetadata::len(&untyped)?,
            ));
        }
        Ok(rows)
    }
}
