//! The device's MLS records in IndexedDB. Read once when the device opens; a replace updates
//! the copy in memory and marks the record to write. [`Pending::flush`] writes the marked
//! records in one strictly durable transaction and waits for it; the transport calls it before
//! any request leaves the tab, and the app before it acknowledges what it received: the state a
//! message was encrypted with is on disk before the message is sent, as the native SDK's fsync
//! guarantees. Coalescing matters: a burst of messages would otherwise wait for the disk once per
//! step. IndexedDB has no append (a journal record would be rewritten whole on every flush), so
//! the tab writes its state whole (`journal_limit` 0), once per flush.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use hearth_client_core::e2ee::{E2eeError, Record, StateStorage};
use js_sys::Uint8Array;
use wasm_bindgen::JsValue;

use crate::idb::{Db, IdbError};

const STORE: &str = "state";

fn key(record: Record) -> JsValue {
    JsValue::from_str(match record {
        Record::State => "mls-state",
        Record::Keys => "mls-keys",
        Record::Journal => "mls-journal",
    })
}

/// Records replaced in memory and not yet written.
#[derive(Debug, Clone)]
pub struct Pending {
    db: Db,
    dirty: Rc<RefCell<HashMap<Record, Vec<u8>>>>,
}

impl Pending {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            dirty: Rc::default(),
        }
    }

    /// Writes every record replaced so far, durably, and waits until it is on disk.
    pub async fn flush(&self) -> Result<(), IdbError> {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        let entries: Vec<(JsValue, JsValue)> = dirty
            .iter()
            .map(|(record, bytes)| (key(*record), Uint8Array::from(bytes.as_slice()).into()))
            .collect();
        if let Err(e) = self.db.put_many(STORE, &entries).await {
            // Not written: written with the next flush (unless a newer copy replaced it).
            let mut now = self.dirty.borrow_mut();
            for (record, bytes) in dirty {
                now.entry(record).or_insert(bytes);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// A device's records, kept in its IndexedDB database.
#[derive(Debug)]
pub struct IdbState {
    records: HashMap<Record, Vec<u8>>,
    pending: Pending,
}

impl IdbState {
    pub async fn load(db: &Db, pending: Pending) -> Result<Self, IdbError> {
        let mut records = HashMap::new();
        for record in [Record::State, Record::Keys, Record::Journal] {
            if let Some(bytes) = db.get_bytes(STORE, &key(record)).await? {
                records.insert(record, bytes);
            }
        }
        Ok(Self { records, pending })
    }
}

impl StateStorage for IdbState {
    fn read(&self, record: Record) -> Result<Option<Vec<u8>>, E2eeError> {
        Ok(self.records.get(&record).cloned())
    }

    fn replace(&mut self, record: Record, bytes: &[u8]) -> Result<(), E2eeError> {
        self.records.insert(record, bytes.to_vec());
        self.pending
            .dirty
            .borrow_mut()
            .insert(record, bytes.to_vec());
        Ok(())
    }

    fn append_journal(&mut self, bytes: &[u8]) -> Result<(), E2eeError> {
        let journal = self.records.entry(Record::Journal).or_default();
        journal.extend_from_slice(bytes);
        let whole = journal.clone();
        self.pending
            .dirty
            .borrow_mut()
            .insert(Record::Journal, whole);
        Ok(())
    }

    fn journal_limit(&self, _snapshot_len: usize) -> usize {
        0
    }

    fn describe(&self, record: Record) -> String {
        format!(
            "IndexedDB {:?}",
            key(record).as_string().unwrap_or_default()
        )
    }
}
