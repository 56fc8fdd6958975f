//! The outbound queue per destination hearth: entries are added by group commits (and by
//! custody), read and removed by the federation sender.

use hearth_spec::ServerName;
use redb::ReadableTable;

use super::tables::*;
use super::{Store, StoreError, decode, encode, parse_id};

impl Store {
    /// Up to `limit` of the oldest outbound entries for `destination` with ids above `after`.
    pub fn outbox_pending(
        &self,
        destination: &ServerName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutItem)>, StoreError> {
        let txn = self.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let dest = destination.as_str();
        let first = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for row in outbox.range((dest, first)..=(dest, u64::MAX))?.take(limit) {
            let (k, v) = row?;
            out.push((k.value().1, decode(v.value())?));
        }
        Ok(out)
    }

    /// Removes delivered outbound entries. Not fsynced: a removal lost in a crash only means
    /// the entries are sent again, and the peer de-duplicates them.
    pub fn outbox_remove(&self, destination: &ServerName, ids: &[u64]) -> Result<(), StoreError> {
        let mut txn = self.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            for id in ids {
                outbox.remove((destination.as_str(), *id))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// How many entries wait for each destination.
    pub fn outbox_depths(&self) -> Result<Vec<(ServerName, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let mut out: Vec<(ServerName, u64)> = Vec::new();
        for row in outbox.iter()? {
            let (k, _) = row?;
            let dest = k.value().0;
            match out.last_mut() {
                Some((name, count)) if name.as_str() == dest => *count += 1,
                _ => out.push((parse_id(dest)?, 1)),
            }
        }
        Ok(out)
    }

    /// Queues entries outside a group commit (a key rotation), durably. Returns each entry's
    /// destination and id.
    pub fn queue_outbox(
        &self,
        items: &[(ServerName, OutItem)],
    ) -> Result<Vec<(ServerName, u64)>, StoreError> {
        let txn = self.begin_write()?;
        let ids = append_outbox(&mut txn.open_table(OUTBOX)?, &self.outbox_ids, items)?;
        txn.commit()?;
        Ok(ids)
    }

    /// Every queued entry that `keep` selects: (destination, entry id, entry). Reads the whole
    /// queue; for start-up bookkeeping.
    pub fn outbox_items(
        &self,
        keep: impl Fn(&OutItem) -> bool,
    ) -> Result<Vec<(ServerName, u64, OutItem)>, StoreError> {
        let txn = self.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for row in outbox.iter()? {
            let (k, v) = row?;
            let item: OutItem = decode(v.value())?;
            if keep(&item) {
                let (dest, id) = k.value();
                out.push((parse_id(dest)?, id, item));
            }
        }
        Ok(out)
    }
}

/// The highest id given to an entry of each destination's queue by this process. Removals of
/// delivered entries are not awaited and may run in any order, so a queue that empties must not
/// give its ids out again: a late removal of the old entries would delete the new ones, and the
/// peer would wait for them forever. (After a restart no removal is on its way, and the ids may
/// start over.)
#[derive(Debug, Default)]
pub(super) struct OutboxIds(std::sync::Mutex<std::collections::HashMap<String, u64>>);

/// Appends entries to their destinations' queues, after what each holds and every id given
/// before; returns their ids.
pub(super) fn append_outbox(
    outbox: &mut redb::Table<(&str, u64), &[u8]>,
    given: &OutboxIds,
    items: &[(ServerName, OutItem)],
) -> Result<Vec<(ServerName, u64)>, StoreError> {
    let mut given = given.0.lock().expect("outbox ids lock");
    let mut next_ids: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut ids = Vec::with_capacity(items.len());
    for (destination, item) in items {
        let dest = destination.as_str();
        let next = match next_ids.get(dest) {
            Some(n) => *n,
            None => {
                let after_held = outbox
                    .range((dest, 0)..=(dest, u64::MAX))?
                    .next_back()
                    .transpose()?
                    .map_or(1, |(k, _)| k.value().1 + 1);
                let after_given = given.get(dest).map_or(1, |id| id + 1);
                after_held.max(after_given)
            }
        };
        outbox.insert((dest, next), encode(item).as_slice())?;
        next_ids.insert(dest, next + 1);
        ids.push((destination.clone(), next));
    }
    for (dest, next) in next_ids {
        given.insert(dest.to_owned(), next - 1);
    }
    Ok(ids)
}
