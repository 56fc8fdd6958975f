//! The web app's device, compiled to WebAssembly: the SDK core (`hearth-client-core`) driven
//! over the browser's `fetch`, with its state in IndexedDB. The page (`web/app/`) is the UI and
//! owns the WebSocket; it hands each frame to [`Device::take`].

// Browser-only: natively the crate is empty (its storage and transport are JavaScript objects).
#[cfg(target_arch = "wasm32")]
mod device;
#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod idb;
#[cfg(target_arch = "wasm32")]
mod lines;
#[cfg(target_arch = "wasm32")]
mod state;

#[cfg(target_arch = "wasm32")]
pub use device::Device;

// The tests run in a headless browser, for its IndexedDB (wasm-bindgen-test-runner; .ci/run).
#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);
