//! Error codes every client-facing surface reports: the `code` of an HTTP error body and of a
//! WebSocket `error` frame. The HTTP status for each code is chosen in exactly one place
//! (`hearth-client-api`'s `rejection.rs`).

use serde::{Deserialize, Serialize};

/// A machine-readable error code. Stable wire strings in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body or frame is not valid JSON, or not of the expected shape.
    BadJson,
    /// A field has an invalid value (an id that does not parse, a limit out of range).
    InvalidParam,
    /// The body, frame or payload exceeds a size limit.
    TooLarge,
    /// No credentials, or credentials that do not verify.
    Unauthorized,
    /// The access token has expired; refresh it.
    TokenExpired,
    /// Wrong username or password.
    BadCredentials,
    /// Authenticated, but not allowed (not a member, deactivated account, DM invite…).
    Forbidden,
    /// The room, device or user does not exist.
    NotFound,
    /// The username is taken.
    UserExists,
    /// A room or request would exceed a configured limit (members per room).
    LimitExceeded,
    /// Too many requests; retry after `retry_after_ms`.
    RateLimited,
    /// An MLS commit was made for an epoch the room has already left: catch up and retry.
    StaleEpoch,
    /// The server failed; nothing was changed.
    Internal,
    /// The server is shutting down or overloaded; retry later.
    Unavailable,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::InvalidParam => "invalid_param",
            Self::TooLarge => "too_large",
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::BadCredentials => "bad_credentials",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::UserExists => "user_exists",
            Self::LimitExceeded => "limit_exceeded",
            Self::RateLimited => "rate_limited",
            Self::StaleEpoch => "stale_epoch",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }
}

/// An error as clients see it: the JSON body of every non-2xx HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{message} ({code:?})")]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// With `rate_limited`: how long to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    /// An error with a code and a sentence.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}
