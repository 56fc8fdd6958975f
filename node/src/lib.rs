//! The Hearth homeserver: configuration, storage, accounts, rooms, the sequencer and its group
//! commit, inboxes and live delivery, wired to the client API. It is not the wire format (that is
//! `hearth-spec`) nor the HTTP layer (`hearth-client-api`).
//!
//! Entry point: [`serve::start`] runs a hearth from a [`config::Config`]; the `hearth` binary
//! adds `init`, `serve` and `admin` around it.

pub mod accounts;
pub mod admin;
pub mod clock;
pub mod committer;
pub mod config;
pub mod data_dir;
pub mod discovery;
pub mod errors;
pub mod federation;
pub mod hub;
pub mod key_requests;
pub mod keys;
pub mod live;
pub mod media;
pub mod media_fetch;
pub mod metrics;
pub mod password_pool;
pub mod peer_signals;
pub mod presence;
pub mod public_address;
pub mod push;
pub mod relay;
pub mod rotation;
pub mod sequencer;
pub mod serve;
pub mod service;
pub mod store;
pub mod token;
pub mod typing;
