//! Who uploaded each attachment blob, and how many bytes each user's uploads take (for the
//! per-user quota and the admin's media list). The blobs themselves are files (`chat::media`).

use hearth_spec::UserId;
use redb::ReadableTable;

use super::tables::*;
use super::{Store, StoreError, decode, encode};

/// How recording an upload went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaCharge {
    /// New: recorded and counted against the uploader.
    Recorded,
    /// The same bytes were uploaded before: nothing more is counted.
    Known,
    /// New, and it would take the uploader past the quota: nothing was recorded.
    OverQuota { used: u64 },
}

impl Store {
    /// Records `user`'s upload of `media_id` (`size` bytes) unless it would take them past
    /// `quota` bytes (0: no quota), in one transaction.
    pub fn record_media(
        &self,
        media_id: &str,
        user: &UserId,
        size: u64,
        now_ms: u64,
        quota: u64,
    ) -> Result<MediaCharge, StoreError> {
        let txn = self.begin_write()?;
        let charge = {
            let mut media = txn.open_table(MEDIA)?;
            let mut by_user = txn.open_table(MEDIA_BY_USER)?;
            let mut usage = txn.open_table(MEDIA_USAGE)?;
            if media.get(media_id)?.is_some() {
                MediaCharge::Known
            } else {
                let used = usage.get(user.as_str())?.map_or(0, |v| v.value());
                if quota > 0 && used.saturating_add(size) > quota {
                    MediaCharge::OverQuota { used }
                } else {
                    let record = MediaRecord {
                        uploader: user.as_str().to_owned(),
                        size,
                        ts: now_ms,
                    };
                    media.insert(media_id, encode(&record).as_slice())?;
                    by_user.insert((user.as_str(), media_id), ())?;
                    usage.insert(user.as_str(), used + size)?;
                    MediaCharge::Recorded
                }
            }
        };
        if charge == MediaCharge::Recorded {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(charge)
    }

    /// A user's uploads, in id order, and the bytes they count.
    pub fn media_of(&self, user: &UserId) -> Result<(Vec<(String, MediaRecord)>, u64), StoreError> {
        let txn = self.begin_read()?;
        let media = txn.open_table(MEDIA)?;
        let by_user = txn.open_table(MEDIA_BY_USER)?;
        let usage = txn.open_table(MEDIA_USAGE)?;
        let mut out = Vec::new();
        for row in by_user.range((user.as_str(), "")..)? {
            let (k, _) = row?;
            let (owner, id) = k.value();
            if owner != user.as_str() {
                break;
            }
            if let Some(v) = media.get(id)? {
                out.push((id.to_owned(), decode(v.value())?));
            }
        }
        let used = usage.get(user.as_str())?.map_or(0, |v| v.value());
        Ok((out, used))
    }

    /// Forgets a blob's record and gives its bytes back to its uploader; the record, if any.
    pub fn forget_media(&self, media_id: &str) -> Result<Option<MediaRecord>, StoreError> {
        let txn = self.begin_write()?;
        let record = {
            let mut media = txn.open_table(MEDIA)?;
            let record: Option<MediaRecord> = media
                .remove(media_id)?
                .map(|v| decode(v.value()))
                .transpose()?;
            if let Some(record) = &record {
                txn.open_table(MEDIA_BY_USER)?
                    .remove((record.uploader.as_str(), media_id))?;
                let mut usage = txn.open_table(MEDIA_USAGE)?;
                let used = usage
                    .get(record.uploader.as_str())?
                    .map_or(0, |v| v.value());
                usage.insert(record.uploader.as_str(), used.saturating_sub(record.size))?;
            }
            record
        };
        txn.commit()?;
        Ok(record)
    }
}
