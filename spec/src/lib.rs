//! The Hearth protocol as types: validated IDs, the event envelope and its one binary encoding,
//! the client WebSocket frames and HTTP bodies, and the error codes every surface reports.
//!
//! This crate does no I/O. Every other crate speaks through these types; the Markdown documents
//! beside this source (`spec/*.md`) describe the same wire format for people, and
//! `spec/vectors/` holds test vectors that the tests here check byte for byte.
//!
//! Entry points: [`id`] for identifiers, [`envelope::Envelope`] for events,
//! [`client::ClientFrame`] / [`client::ServerFrame`] for the WebSocket, [`api`] for HTTP bodies.

pub mod admin;
pub mod api;
pub mod b64;
pub mod client;
mod codec;
pub mod discovery;
pub mod e2ee;
pub mod envelope;
pub mod error;
pub mod federation;
pub mod id;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod rate;
pub mod rooms;
mod vectors;

pub use envelope::{Content, Envelope, EventView, Membership, RoomKind};
pub use error::{ErrorBody, ErrorCode};
pub use id::{DeviceId, EventId, IdError, PublicKey, RoomId, ServerName, TimeId, TxnId, UserId};
