// IndexedDB for the wasm device: a few promise-returning calls, so the Rust side stays small.
// Every write is its own readwrite transaction with strict durability: its promise resolves only
// once the browser says the bytes are on disk.

const STORES = ["state", "session", "messages"];

export function idb_open(name) {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(name, 1);
    req.onupgradeneeded = () => {
      for (const store of STORES) {
        if (!req.result.objectStoreNames.contains(store)) req.result.createObjectStore(store);
      }
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("the local database is open in an older tab"));
  });
}

function done(tx, value) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve(value === undefined ? undefined : value());
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("the local database write was aborted"));
  });
}

export function idb_get(db, store, key) {
  const tx = db.transaction(store, "readonly");
  const req = tx.objectStore(store).get(key);
  return done(tx, () => req.result);
}

// Starts the write now (transactions on one store run in the order they were created) and
// returns its promise.
export function idb_put(db, store, key, value) {
  const tx = db.transaction(store, "readwrite", { durability: "strict" });
  tx.objectStore(store).put(value, key);
  return done(tx);
}

export function idb_delete(db, store, key) {
  const tx = db.transaction(store, "readwrite", { durability: "strict" });
  tx.objectStore(store).delete(key);
  return done(tx);
}

// The keys and values of a store from `lower` up to `upper` (both included), in key order.
export function idb_entries(db, store, lower, upper) {
  const tx = db.transaction(store, "readonly");
  const os = tx.objectStore(store);
  const range = IDBKeyRange.bound(lower, upper);
  const keys = os.getAllKeys(range);
  const values = os.getAll(range);
  return done(tx, () => [keys.result, values.result]);
}

// In one strictly durable transaction: deletes the keys `removed`, then every key from
// `clear_from` up to (not including) `clear_to` when `clear_from` is given, then writes the
// entries. All or none, one wait for the disk.
export function idb_write(db, store, keys, values, removed, clear_from, clear_to) {
  const tx = db.transaction(store, "readwrite", { durability: "strict" });
  const os = tx.objectStore(store);
  for (const key of removed) os.delete(key);
  if (clear_from !== undefined && indexedDB.cmp(clear_from, clear_to) < 0) {
    os.delete(IDBKeyRange.bound(clear_from, clear_to, false, true));
  }
  for (let i = 0; i < keys.length; i++) os.put(values[i], keys[i]);
  return done(tx);
}

// Every value of a store, in key order.
export function idb_all(db, store) {
  const tx = db.transaction(store, "readonly");
  const req = tx.objectStore(store).getAll();
  return done(tx, () => req.result);
}

// Deletes a database. Blocked by a connection still open elsewhere, the deletion waits for it
// to close by itself; this does not wait with it.
export function idb_delete_database(name) {
  return new Promise((resolve, reject) => {
    const req = indexedDB.deleteDatabase(name);
    req.onsuccess = () => resolve();
    req.onblocked = () => resolve();
    req.onerror = () => reject(req.error);
  });
}

export function idb_close(db) {
  db.close();
}

export function sleep_ms(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function now_ms() {
  return performance.now();
}
