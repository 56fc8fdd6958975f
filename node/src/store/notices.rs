//! Notices from the admins to users: numbered per user from 1, each batch one durable
//! transaction, with how far each user has read them.

use hearth_spec::UserId;
use redb::ReadableTable;

use super::tables::{NOTICES, NOTICES_READ, NoticeRecord};
use super::{Store, StoreError, decode, encode};

/// The seq of `user`'s last notice (0: none).
fn last_notice(
    notices: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    user: &str,
) -> Result<u64, StoreError> {
    Ok(notices
        .range((user, 0)..=(user, u64::MAX))?
        .next_back()
        .transpose()?
        .map_or(0, |(key, _)| key.value().1))
}

impl Store {
    /// Gives each of `users` the notice `record`, in one transaction; each user's new seq.
    pub fn add_notices(
        &self,
        users: &[UserId],
        record: &NoticeRecord,
    ) -> Result<Vec<(UserId, u64)>, StoreError> {
        let bytes = encode(record);
        let txn = self.begin_write()?;
        let mut added = Vec::with_capacity(users.len());
        {
            let mut notices = txn.open_table(NOTICES)?;
            for user in users {
                let name = user.as_str();
                let last = last_notice(&notices, name)?;
                notices.insert((name, last + 1), bytes.as_slice())?;
                added.push((user.clone(), last + 1));
            }
        }
        txn.commit()?;
        Ok(added)
    }

    /// Up to `limit` of `user`'s notices after `after`, oldest first, and whether more follow.
    pub fn notices(
        &self,
        user: &UserId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, NoticeRecord)>, bool), StoreError> {
        let txn = self.begin_read()?;
        let notices = txn.open_table(NOTICES)?;
        let name = user.as_str();
        let mut rows = notices.range((name, after.saturating_add(1))..=(name, u64::MAX))?;
        let mut page = Vec::new();
        for row in rows.by_ref().take(limit) {
            let (key, value) = row?;
            page.push((key.value().1, decode(value.value())?));
        }
        Ok((page, rows.next().is_some()))
    }

    /// The seq up to which `user` has read their notices (0: none).
    pub fn notices_read(&self, user: &UserId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let read = txn.open_table(NOTICES_READ)?;
        Ok(read.get(user.as_str())?.map_or(0, |v| v.value()))
    }

    /// Marks `user`'s notices read up to `seq`; the mark only rises, and is returned. A `seq`
    /// past the user's last notice changes nothing: `Err` with the last notice's seq.
    pub fn mark_notices_read(
        &self,
        user: &UserId,
        seq: u64,
    ) -> Result<Result<u64, u64>, StoreError> {
        let txn = self.begin_write()?;
        let name = user.as_str();
        let outcome = {
            let last = last_notice(&txn.open_table(NOTICES)?, name)?;
            if seq > last {
                Err(last)
            } else {
                let mut read = txn.open_table(NOTICES_READ)?;
                let current = read.get(name)?.map_or(0, |v| v.value());
                let mark = current.max(seq);
                read.insert(name, mark)?;
                Ok(mark)
            }
        };
        txn.commit()?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_numbered_per_user_paged_and_read_marks_only_rise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let alice = UserId::parse("@alice:localhost").unwrap();
        let bob = UserId::parse("@bob:localhost").unwrap();
        let notice = |body: &str| NoticeRecord {
            ts: 7,
            body: body.into(),
        };
        assert_eq!(
            store
                .add_notices(std::slice::from_ref(&alice), &notice("one"))
                .unwrap(),
            vec![(alice.clone(), 1)]
        );
        assert_eq!(
            store
                .add_notices(&[alice.clone(), bob.clone()], &notice("two"))
                .unwrap(),
            vec![(alice.clone(), 2), (bob.clone(), 1)]
        );
        let (page, more) = store.notices(&alice, 0, 1).unwrap();
        assert_eq!(page, vec![(1, notice("one"))]);
        assert!(more);
        let (page, more) = store.notices(&alice, 1, 10).unwrap();
        assert_eq!(page, vec![(2, notice("two"))]);
        assert!(!more);
        assert_eq!(
            store.notices(&bob, 0, 10).unwrap().0,
            vec![(1, notice("two"))]
        );

        assert_eq!(store.notices_read(&alice).unwrap(), 0);
        assert_eq!(store.mark_notices_read(&alice, 3).unwrap(), Err(2));
        assert_eq!(store.mark_notices_read(&alice, 2).unwrap(), Ok(2));
        assert_eq!(store.mark_notices_read(&alice, 1).unwrap(), Ok(2));
        assert_eq!(store.notices_read(&alice).unwrap(), 2);
        assert_eq!(store.notices_read(&bob).unwrap(), 0);

        // Erasing alice takes her notices and her mark; bob's stay.
        store.erase_user_rows(&alice).unwrap();
        assert_eq!(store.notices(&alice, 0, 10).unwrap(), (vec![], false));
        assert_eq!(store.notices_read(&alice).unwrap(), 0);
        assert_eq!(store.notices(&bob, 0, 10).unwrap().0.len(), 1);
    }
}
