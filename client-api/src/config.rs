//! The client API's own settings; the node fills them from its config tree.

use std::time::Duration;

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
    /// Per-device sends: sustained per second and burst.
    pub sends_per_second: f64,
    pub send_burst: f64,
    /// Per-device other requests: sustained per second and burst.
    pub requests_per_second: f64,
    pub request_burst: f64,
    /// Per-IP register/login/refresh: sustained per second and burst.
    pub auth_per_second: f64,
    /// Per account: login attempts sustained per second and burst (counted whatever address
    /// they come from, so guessing one account's password is slow from anywhere).
    pub login_per_account_per_second: f64,
    pub login_per_account_burst: f64,
    pub auth_burst: f64,
    /// Per-device heartbeats: sustained per second and burst (more is a flood).
    pub heartbeats_per_second: f64,
    pub heartbeat_burst: f64,
    /// Per-device key-package claims: sustained per second and burst.
    pub claims_per_second: f64,
    pub claim_burst: f64,
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
            sends_per_second: 50.0,
            send_burst: 500.0,
            requests_per_second: 20.0,
            request_burst: 100.0,
            auth_per_second: 20.0,
            auth_burst: 300.0,
            login_per_account_per_second: 0.5,
            login_per_account_burst: 10.0,
            heartbeats_per_second: 1.0,
            heartbeat_burst: 10.0,
            claims_per_second: 5.0,
            claim_burst: 100.0,
            max_media_bytes: 32 * 1024 * 1024,
            session_check_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(30),
        }
    }
}
