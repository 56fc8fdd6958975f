//! The Hearth client SDK's core: protocol logic with no I/O of its own (no sockets, no files,
//! no async runtime), so that the same code runs in `hearth-chat`, the native SDK and a browser
//! (`wasm32-unknown-unknown`). Drivers move bytes and time; this crate decides.

pub mod e2ee;
pub mod hearth;
pub mod search;
pub mod secure;
pub mod shown;

pub use hearth::{Hearth, HearthError, new_txn_id};
pub use secure::{Convergence, MembershipCheck, SecureError, SecureSession};

// Under wasm the crate's tests run in a headless browser (wasm-bindgen-test-runner; .ci/run).
#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);
