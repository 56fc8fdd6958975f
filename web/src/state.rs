//! The device's MLS records in IndexedDB. Read once when the device opens; each replace updates
//! the copy in memory and starts a strictly durable write at once. [`Pending::flush`] waits for
//! those writes, and the transport calls it before any request leaves the tab: the state a
//! message was encrypted with is on disk before the message is sent, as the native SDK's fsync
//! guarantees.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use hearth_client_core::e2ee::{E2eeError, Record, StateStorage};
use js_sys::{Promise, Uint8Array};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use crate::idb::{Db, IdbError};

const STORE: &str = "state";

fn key(record: Record) -> JsValue {
    JsValue::from_str(match record {
        Record::State => "mls-state",
        Record::Keys => "mls-keys",
    })
}

/// Writes started and not yet known to be on disk.
#[derive(Debug, Clone, Default)]
pub struct Pending(Rc<RefCell<Vec<Promise>>>);

impl Pending {
    /// Waits until every write started so far is durable.
    pub async fn flush(&self) -> Result<(), IdbError> {
        loop {
            let started = std::mem::take(&mut *self.0.borrow_mut());
            if started.is_empty() {
                return Ok(());
            }
            for write in started {
                JsFuture::from(write).await?;
            }
        }
    }
}

/// A device's records, kept in its IndexedDB database.
#[derive(Debug)]
pub struct IdbState {
    db: Db,
    records: HashMap<Record, Vec<u8>>,
    pending: Pending,
}

impl IdbState {
    pub async fn load(db: Db, pending: Pending) -> Result<Self, IdbError> {
        let mut records = HashMap::new();
        for record in [Record::State, Record::Keys] {
            if let Some(bytes) = db.get_bytes(STORE, &key(record)).await? {
                records.insert(record, bytes);
            }
        }
        Ok(Self {
            db,
            records,
            pending,
        })
    }
}

impl StateStorage for IdbState {
    fn read(&self, record: Record) -> Result<Option<Vec<u8>>, E2eeError> {
        Ok(self.records.get(&record).cloned())
    }

    fn replace(&mut self, record: Record, bytes: &[u8]) -> Result<(), E2eeError> {
        let value = Uint8Array::from(bytes);
        let write = self
            .db
            .start_put(STORE, &key(record), &value)
            .map_err(|e| E2eeError::Io(std::io::Error::other(e.to_string())))?;
        self.pending.0.borrow_mut().push(write);
        self.records.insert(record, bytes.to_vec());
        Ok(())
    }

    fn describe(&self, record: Record) -> String {
        format!(
            "IndexedDB {:?}",
            key(record).as_string().unwrap_or_default()
        )
    }
}
