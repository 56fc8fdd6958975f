//! The browser's IndexedDB, through `js/idb.js`: open, get, put (strictly durable) and delete. Values are bytes (`Uint8Array`) or JSON text; keys are strings or arrays.

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/idb.js")]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn idb_open(name: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_get(db: &JsValue, store: &str, key: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    fn idb_put(
        db: &JsValue,
        store: &str,
        key: &JsValue,
        value: &JsValue,
    ) -> Result<Promise, JsValue>;
    #[wasm_bindgen(catch)]
    fn idb_delete(db: &JsValue, store: &str, key: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_all(db: &JsValue, store: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_entries(
        db: &JsValue,
        store: &str,
        lower: &JsValue,
        upper: &JsValue,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_write(
        db: &JsValue,
        store: &str,
        keys: js_sys::Array,
        values: js_sys::Array,
        removed: js_sys::Array,
        clear_from: JsValue,
        clear_to: JsValue,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_delete_database(name: &str) -> Result<JsValue, JsValue>;
    fn idb_close(db: &JsValue);
    pub async fn sleep_ms(ms: f64);
    pub fn now_ms() -> f64;
}

/// Why the local database failed.
#[derive(Debug, thiserror::Error)]
#[error("the browser's local database failed: {0}")]
pub struct IdbError(String);

impl From<JsValue> for IdbError {
    fn from(value: JsValue) -> Self {
        Self(describe(&value))
    }
}

/// A JavaScript error or value as text.
pub fn describe(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

/// One origin's database for one device (`hearth:<user>|<device>`) or for the app itself.
#[derive(Debug, Clone)]
pub struct Db(JsValue);

impl Db {
    pub async fn open(name: &str) -> Result<Self, IdbError> {
        Ok(Self(idb_open(name).await?))
    }

    /// Closes this connection (every clone of it): the database can then be deleted.
    pub fn close(&self) {
        idb_close(&self.0);
    }

    pub async fn delete(name: &str) -> Result<(), IdbError> {
        idb_delete_database(name).await?;
        Ok(())
    }

    pub async fn get_text(&self, store: &str, key: &JsValue) -> Result<Option<String>, IdbError> {
        Ok(idb_get(&self.0, store, key).await?.as_string())
    }

    pub async fn put(&self, store: &str, key: &JsValue, value: &JsValue) -> Result<(), IdbError> {
        // A durable write: the promise settles when it is on disk.
        JsFuture::from(idb_put(&self.0, store, key, value)?).await?;
        Ok(())
    }

    /// Every text value of a store, in key order.
    pub async fn all_text(&self, store: &str) -> Result<Vec<String>, IdbError> {
        let values = idb_all(&self.0, store).await?;
        Ok(js_sys::Array::from(&values)
            .iter()
            .filter_map(|v| v.as_string())
            .collect())
    }

    /// Writes every `(key, value)` in one durable transaction.
    pub async fn put_many(
        &self,
        store: &str,
        entries: &[(JsValue, JsValue)],
    ) -> Result<(), IdbError> {
        self.write(store, entries, &[], None).await
    }

    /// The byte values of a store from `lower` up to `upper` (both included), with their keys,
    /// in key order.
    pub async fn bytes_between(
        &self,
        store: &str,
        lower: &JsValue,
        upper: &JsValue,
    ) -> Result<Vec<(JsValue, Vec<u8>)>, IdbError> {
        let both = js_sys::Array::from(&idb_entries(&self.0, store, lower, upper).await?);
        let keys = js_sys::Array::from(&both.get(0));
        let values = js_sys::Array::from(&both.get(1));
        Ok(keys
            .iter()
            .zip(values.iter())
            .filter_map(|(key, value)| {
                let bytes = value.dyn_ref::<Uint8Array>()?.to_vec();
                Some((key, bytes))
            })
            .collect())
    }

    /// In one durable transaction: deletes `removed`, then the keys in `clear` (from the first
    /// up to, not including, the second), then writes `entries`. All or none.
    pub async fn write(
        &self,
        store: &str,
        entries: &[(JsValue, JsValue)],
        removed: &[JsValue],
        clear: Option<(JsValue, JsValue)>,
    ) -> Result<(), IdbError> {
        if entries.is_empty() && removed.is_empty() && clear.is_none() {
            return Ok(());
        }
        let keys: js_sys::Array = entries.iter().map(|(k, _)| k.clone()).collect();
        let values: js_sys::Array = entries.iter().map(|(_, v)| v.clone()).collect();
        let removed: js_sys::Array = removed.iter().cloned().collect();
        let (from, to) = clear.unwrap_or((JsValue::UNDEFINED, JsValue::UNDEFINED));
        idb_write(&self.0, store, keys, values, removed, from, to).await?;
        Ok(())
    }

    pub async fn remove(&self, store: &str, key: &JsValue) -> Result<(), IdbError> {
        JsFuture::from(idb_delete(&self.0, store, key)?).await?;
        Ok(())
    }
}
