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
pub mod forwarded;
mod notices;
pub mod openapi;
pub mod ratelimit;
pub mod rejection;
mod routes;
pub mod server;
mod web_app;
mod ws;

pub mod stage;

pub use backend::{AuthedDevice, Backend, InboxHead, NotReady, Subscription, Taken};
pub use config::ApiConfig;
pub use routes::LimitReload;

use std::sync::Arc;

/// Builds the client API's router, and the handle that changes its rate limits later. Serve it
/// with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router<B: Backend>(backend: Arc<B>, config: ApiConfig) -> (axum::Router, LimitReload) {
    let (api, reload) = routes::api_router(backend, config);
    let document = axum::routing::get(openapi::document);
    (api.route("/v1/openapi.json", document), reload)
}
