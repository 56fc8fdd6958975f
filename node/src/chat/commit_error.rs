//! Why a request to the committer did not complete; shared by the committer's driver and its
//! decisions, and mapped to wire codes in `errors.rs`.

use std::sync::Arc;

use crate::chat::sequencer::SequenceError;
use crate::store::StoreError;

/// Why a request did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Refused(#[from] SequenceError),
    #[error("storage failed; nothing was written: {0}")]
    Storage(#[source] Arc<StoreError>),
    /// Storage refuses writes for now (disk space below the reserve, the database reopening).
    #[error("{0}; nothing was written, try again later")]
    Unavailable(&'static str),
    #[error("the hearth is shutting down")]
    Closed,
}
