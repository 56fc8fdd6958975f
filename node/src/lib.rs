//! The Hearth homeserver: configuration, storage, accounts, rooms, the sequencer and its group
//! commit, inboxes and live delivery, federation glue, wired to the client API. It is not the
//! wire format (that is `hearth-spec`), the HTTP layer (`hearth-client-api`) nor the rules of
//! hearth-to-hearth traffic (`hearth-federation`).
//!
//! The folders follow the concerns (`ARCHITECTURE.md` walks one message through them):
//! [`chat`] orders and delivers room events, [`signals`] carries what is not stored (typing,
//! presence, push), [`federation`] connects this hearth's store to `hearth-federation`,
//! [`accounts`] keeps users, devices and logins, [`store`] is the embedded database, [`ops`]
//! is what an operator touches (keys, data folder, admin, metrics).
//!
//! Entry point: [`serve::start`] runs a hearth from a [`config::Config`]; the `hearth` binary
//! adds `init`, `serve` and `admin` around it.

pub mod accounts;
pub mod chat;
pub mod clock;
pub mod config;
pub mod errors;
pub mod federation;
pub mod ops;
pub mod serve;
pub mod service;
pub mod signals;
pub mod store;
