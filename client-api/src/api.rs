//! What every handler shares: the API's state, the authenticated caller, and the errors for
//! bad parameters and oversized bodies. The router (`routes.rs`) and the handler modules
//! (`e2ee.rs`, `ws.rs`) all use these; none of these use them.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hearth_spec::{ErrorBody, ErrorCode, RoomId};

use crate::backend::{AuthedDevice, Backend};
use crate::config::ApiConfig;
use crate::ratelimit::KeyedLimiter;
use crate::rejection::ApiError;

/// Shared state of the API: the backend, settings and rate-limit buckets.
pub(crate) struct Api<B> {
    pub backend: Arc<B>,
    pub config: ApiConfig,
    pub send_limits: KeyedLimiter<AuthedDevice>,
    pub request_limits: KeyedLimiter<AuthedDevice>,
    pub auth_limits: KeyedLimiter<IpAddr>,
    /// Login attempts per account (the username as given, lower-cased).
    pub login_limits: KeyedLimiter<String>,
    pub heartbeat_limits: KeyedLimiter<AuthedDevice>,
    pub claim_limits: KeyedLimiter<AuthedDevice>,
}

/// The caller, authenticated from `Authorization: Bearer`, with its request rate checked.
pub(crate) struct Authed(pub AuthedDevice);

/// Reads the bearer token of a request, if any.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

impl<B: Backend> FromRequestParts<Arc<Api<B>>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api<B>>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing Authorization: Bearer token",
            )
        })?;
        let device = api.backend.authenticate(token)?;
        api.request_limits.admit(&device)?;
        if let Some(axum::extract::ConnectInfo(peer)) = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        {
            api.backend.seen(&device, peer.ip());
        }
        Ok(Self(device))
    }
}

pub(crate) fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidParam, e.to_string())
}

pub(crate) fn room_id(text: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(text).map_err(invalid)
}

pub(crate) fn too_large(limit: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::TooLarge,
        format!("the message is larger than the limit of {limit} bytes"),
    )
}
