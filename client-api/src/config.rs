//! The client API's own settings; the node fills them from its config tree.

use std::time::Duration;

use hearth_spec::rate::Rate;

/// Limits and rates the API enforces at the edge.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest HTTP body, checked before anything else.
    pub max_body_bytes: usize,
    /// Largest WebSocket message and frame.
    pub max_ws_message_bytes: usize,
    /// Largest message payload.
    pub max_event_bytes: usize,
    /// Sends in flight per WebSocket before the hearth stops reading from it.
    pub max_in_flight: usize,
    /// Per-device sends.
    pub sends: Rate,
    /// Per-device other requests.
    pub requests: Rate,
    /// Per-IP register/login/refresh.
    pub auth: Rate,
    /// Per account: login attempts (counted whatever address they come from, so guessing one
    /// account's password is slow from anywhere).
    pub login_per_account: Rate,
    /// Per-device heartbeats (more is a flood).
    pub heartbeats: Rate,
    /// Per-device key-package claims.
    pub key_claims: Rate,
    /// Largest attachment blob.
    pub max_media_bytes: u64,
    /// How often a WebSocket re-checks that its device is still logged in.
    pub session_check_interval: Duration,
    /// A WebSocket that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A request body that pauses this long is abandoned.
    pub body_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_ws_message_bytes: 1024 * 1024,
            max_event_bytes: 512 * 1024,
            max_in_flight: 256,
            sends: Rate::new(50.0, 500.0),
            requests: Rate::new(20.0, 100.0),
            auth: Rate::new(20.0, 300.0),
            login_per_account: Rate::new(0.5, 10.0),
            heartbeats: Rate::new(1.0, 10.0),
            key_claims: Rate::new(5.0, 100.0),
            max_media_bytes: 32 * 1024 * 1024,
            session_check_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(30),
        }
    }
}
