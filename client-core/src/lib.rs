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
