//! The device's openmls provider: RustCrypto for the cryptography and an in-memory key-value
//! storage that the device state saves to disk after every change (openmls keeps group state
//! only in memory unless it is given storage that persists).

use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;

/// Crypto and storage for one device.
#[derive(Debug, Default)]
pub struct DeviceProvider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for DeviceProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

impl DeviceProvider {
    /// A provider whose storage holds `entries` (from [`DeviceProvider::entries`]).
    pub fn with_entries(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let provider = Self::default();
        provider
            .storage
            .values
            .write()
            .expect("storage lock")
            .extend(entries);
        provider
    }

    /// Everything openmls stored, as it holds it.
    pub fn stored(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<Vec<u8>, Vec<u8>>> {
        self.storage.values.read().expect("storage lock")
    }

    /// Everything openmls stored, in key order (so equal states save to equal bytes).
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let values = self.storage.values.read().expect("storage lock");
        let mut entries: Vec<_> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries.sort();
        entries
    }
}
