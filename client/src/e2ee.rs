//! End-to-end encryption: the state machine of `hearth-client-core`, kept in files.

use std::path::Path;

use hearth_spec::{DeviceId, UserId};

pub use crate::state_file::StateFile;
pub use hearth_client_core::e2ee::*;

/// Opens the device state in `dir`, or creates a new device identity there.
pub fn open(dir: &Path, user: &UserId, device: &DeviceId) -> Result<Mls, E2eeError> {
    Mls::open_in(Box::new(StateFile::in_dir(dir)?), user, device)
}
