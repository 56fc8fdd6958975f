//! The HTTP + WebSocket API that clients speak to their own hearth, on axum.
//!
//! This crate owns routing, request parsing, size and rate limits, the mapping of errors to HTTP
//! statuses ([`rejection`]) and the WebSocket session loop ([`ws`]). It holds no state of its own
//! beyond rate-limit buckets: everything else goes through the [`Backend`] trait, which the node
//! implements. Entry point: [`router`].

mod admin;
mod api;
pub mod backend;
pub mod config;
mod e2ee;
pub mod openapi;
pub mod ratelimit;
pub mod rejection;
mod routes;
pub mod server;
mod web_app;
mod ws;

pub use backend::{AuthedDevice, Backend, NotReady, Subscription};
pub use config::ApiConfig;
pub use routes::{LimitReload, router};
