//! What an operator touches: the [`data_dir`] and the server [`keys`] in it, the [`admin`]
//! commands, [`backup`] and restore, [`metrics`], and the [`public_address`] checks for push endpoints.

pub mod admin;
pub mod backup;
pub mod data_dir;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod public_address;
pub mod retention;
