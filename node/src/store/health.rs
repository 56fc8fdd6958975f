//! Keeping the store writable: free disk space is watched against a reserve (writes are refused
//! with `unavailable` before the disk is full, so a full disk never reaches the database), and a
//! database whose write failed with an I/O error (redb then refuses everything until it is
//! reopened) is reopened as soon as it can be, without restarting the hearth.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Store, StoreError};

/// How the store stands, for readiness and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageCondition {
    /// `None` when writes work; otherwise why not.
    pub unwritable: Option<&'static str>,
    /// Free bytes on the data directory's file system for this process, as of the last check.
    pub free_bytes: u64,
}

impl Store {
    pub fn condition(&self) -> StorageCondition {
        let unwritable = if self.db.read().expect("database lock").is_none() {
            Some("the database is being reopened after a failed write")
        } else if self.failed.load(Ordering::Relaxed) {
            Some("a write failed (disk full or an I/O error); the database will be reopened")
        } else if self.low_space.load(Ordering::Relaxed) {
            Some("free disk space is below the configured reserve")
        } else {
            None
        };
        StorageCondition {
            unwritable,
            free_bytes: self.free_bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether free space is above the reserve now (measured).
    pub(super) fn space_left(&self) -> bool {
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve == 0 {
            return true;
        }
        match free_bytes(&self.path) {
            Some(free) => {
                self.free_bytes.store(free, Ordering::Relaxed);
                free >= reserve
            }
            None => true,
        }
    }

    /// Measures free space against `reserve` and reopens the database if a write failed.
    fn check(&self, reserve: u64) {
        self.reserve.store(reserve, Ordering::Relaxed);
        if let Some(free) = free_bytes(&self.path) {
            self.free_bytes.store(free, Ordering::Relaxed);
            let low = free < reserve;
            if low != self.low_space.swap(low, Ordering::Relaxed) {
                if low {
                    tracing::error!(
                        free,
                        reserve,
                        "free disk space is below the reserve: refusing writes (answered `unavailable`) until there is more"
                    );
                } else {
                    tracing::warn!(
                        free,
                        reserve,
                        "free disk space is above the reserve again: writes resume"
                    );
                }
            }
        }
        // redb reports a failed write only to the writer; a probe finds it even if nobody writes.
        if !self.failed.load(Ordering::Relaxed) {
            let current = self.db.read().expect("database lock").clone();
            if let Some(db) = current
                && let Err(e) = db.begin_write()
            {
                let _ = self.noting(e.into());
            }
        }
        if self.failed.load(Ordering::Relaxed) {
            self.reopen();
        }
    }

    /// Closes the failed database and opens it again (redb repairs it on open if it must).
    fn reopen(&self) {
        let old = self.db.write().expect("database lock").take();
        if let Some(old) = old {
            tracing::error!(
                "a database write failed (disk full or an I/O error): reopening the database; writes answer `unavailable` meanwhile"
            );
            // In-flight transactions hold the file until they end: they are short.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut old = Some(old);
            while let Some(db) = old.take() {
                match Arc::try_unwrap(db) {
                    Ok(db) => drop(db),
                    Err(db) if Instant::now() < deadline => {
                        old = Some(db);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(db) => {
                        tracing::error!("the failed database is still in use; trying again");
                        *self.db.write().expect("database lock") = Some(db);
                        return;
                    }
                }
            }
        }
        let db = match Self::builder(self.cache_bytes).create(&self.path) {
            Ok(db) => db,
            Err(e) => {
                tracing::debug!(error = %StoreError::from(e), "cannot reopen the database yet");
                return;
            }
        };
        // What the failed database lost since its last flushed commit is in the journal.
        if let Err(e) = self.recover_from_journal(&db) {
            tracing::error!(error = %e, "cannot apply the commit journal to the reopened database yet");
            return;
        }
        *self.db.write().expect("database lock") = Some(Arc::new(db));
        self.failed.store(false, Ordering::Relaxed);
        tracing::warn!("the database is open again; writes resume");
    }
}

/// Watches `store` every half second on a thread of its own until the store is dropped.
pub fn watch(store: &Arc<Store>, reserve: u64) -> std::thread::JoinHandle<()> {
    let weak: Weak<Store> = Arc::downgrade(store);
    store.check(reserve);
    std::thread::Builder::new()
        .name("hearth-storage-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let Some(store) = weak.upgrade() else { return };
                store.check(reserve);
            }
        })
        .expect("spawn the storage watcher")
}

/// Bytes this process may still write on the file system holding `path`.
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().unwrap_or(path);
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    #[allow(unsafe_code)]
    // SAFETY: a valid NUL-terminated path and a buffer statvfs fills on success.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_reserve_and_resume_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.check(0);
        assert_eq!(store.condition().unwritable, None);
        assert!(store.condition().free_bytes > 0);
        store.check(u64::MAX);
        assert!(store.condition().unwritable.is_some());
        assert!(matches!(
            store.begin_write(),
            Err(StoreError::Unavailable(_))
        ));
        // Reads go on.
        store.begin_read().unwrap();
        store.check(0);
        store.begin_write().unwrap();
    }

    #[test]
    fn a_failed_database_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.failed.store(true, Ordering::Relaxed);
        assert!(store.condition().unwritable.is_some());
        store.check(0);
        assert_eq!(store.condition().unwritable, None);
        store.begin_write().unwrap().commit().unwrap();
    }
}
