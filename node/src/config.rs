//! The one configuration tree of a hearth: defaults < TOML file < `HEARTH_*` environment
//! (`__` separates nesting levels: `HEARTH_CLIENT_API__LISTEN=0.0.0.0:8008`). Unknown keys are
//! errors. `hearth init` writes [`Config::documented_toml`], which lists every field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use hearth_spec::rate::Rate;
use hearth_spec::{PublicKey, ServerName};
use serde::{Deserialize, Serialize};

/// Environment variables that are read by the command line, not by the config tree.
const NON_CONFIG_VARS: &[&str] = &["HEARTH_CONFIG", "HEARTH_LOG"];

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read {
        path: PathBuf,
        #[source]
        reason: std::io::Error,
    },
    #[error("config file {path} is not valid: {reason}")]
    Parse {
        path: PathBuf,
        #[source]
        reason: Box<toml::de::Error>,
    },
    #[error("environment variable {var} does not fit the config: {reason}")]
    Env {
        var: String,
        #[source]
        reason: Box<toml::de::Error>,
    },
    #[error("{old} is no longer a config key: write {new}")]
    Renamed { old: String, new: &'static str },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Everything a hearth needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This hearth's name; the server part of its user and room ids. Default `localhost`.
    pub server_name: ServerName,
    /// Where the database and keys live. Default `./hearth-data`.
    pub data_dir: PathBuf,
    pub client_api: ClientApiConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub presence: PresenceConfig,
    pub push: PushConfig,
    pub federation: FederationConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

/// Logging (to standard error).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// What is logged: a `tracing` filter (`info`, `warn,hearth_node=debug`, …). The `HEARTH_LOG`
    /// variable, when set, wins. Reloaded on SIGHUP. Default `info,libp2p_kad=error`.
    pub level: String,
    /// `text` (for people) or `json` (one object per line, for log collectors). Default text.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            // libp2p's Kademlia warns when a hearth that is alone cannot bootstrap (at every
            // start of a single-node hearth); that is not a problem worth a warning.
            level: "info,libp2p_kad=error".into(),
            format: LogFormat::Text,
        }
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (plain HTTP; keep it private). Unset: not served.
    pub listen: Option<SocketAddr>,
}

/// Hearth-to-hearth federation over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// UDP address peers reach this hearth on. Default `127.0.0.1:8448`.
    pub listen: SocketAddr,
    /// The hearths this one federates with.
    pub peers: Vec<PeerEntry>,
    /// Keys (base64url) that never verify, whoever presents them.
    pub revoked_keys: Vec<String>,
    /// Oldest signing time accepted, ms before now. Default 600000.
    pub max_age_ms: u64,
    /// Furthest signing time accepted ahead of now (clock skew), ms. Default 60000.
    pub max_skew_ms: u64,
    /// First retry delay towards an unreachable peer, ms; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Envelopes one peer may send. Default 50000 per second, burst 100000.
    pub envelopes: Rate,
    /// Batch streams one peer may have open at once.
    pub max_streams_per_peer: u32,
    /// How often an idle connection to a peer is kept alive (a QUIC PING), ms. Default 5000.
    pub keep_alive_ms: u64,
    /// A peer connection that hears nothing for this long is closed: how long a peer that died
    /// without closing (kill -9, power, network) takes to be noticed, ms. Default 30000.
    pub idle_timeout_ms: u64,
    /// Sealed store-and-forward through relay hearths.
    pub relay: RelayConfig,
    /// Finding other hearths and gossiping key announcements over libp2p.
    pub discovery: DiscoveryConfig,
}

/// The libp2p swarm: a DHT of signed hearth records, and gossip of key announcements.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Whether this hearth runs the swarm. Default true.
    pub enabled: bool,
    /// UDP address of the swarm (QUIC). Default: the federation address with the next port
    /// (port 0 stays 0).
    pub listen: Option<SocketAddr>,
    /// The federation address published in this hearth's record. Default `federation.listen`.
    pub advertise: Option<SocketAddr>,
    /// Multiaddrs to join the network through, e.g. `/ip4/192.0.2.1/udp/8449/quic-v1`
    /// (optionally ending in `/p2p/<PeerId>`). One is enough.
    pub bootstrap: Vec<String>,
    /// If not empty, the only hearths learnt from the DHT.
    pub allow: Vec<ServerName>,
    /// Hearths never learnt from the DHT.
    pub block: Vec<ServerName>,
    /// How long a DHT lookup may take, ms. Default 5000.
    pub lookup_timeout_ms: u64,
    /// How often this hearth's record is put into the DHT again, ms. Default 600000.
    pub republish_ms: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            advertise: None,
            bootstrap: Vec::new(),
            allow: Vec::new(),
            block: Vec::new(),
            lookup_timeout_ms: 5_000,
            republish_ms: 600_000,
        }
    }
}

impl DiscoveryConfig {
    /// The swarm's listening address, given the federation one.
    pub fn listen_addr(&self, federation: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            let port = match federation.port() {
                0 => 0,
                p => p.wrapping_add(1),
            };
            SocketAddr::new(federation.ip(), port)
        })
    }
}

pub use hearth_federation::relay::RelayConfig;

/// One peer hearth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub name: ServerName,
    /// Its federation address (UDP).
    pub address: SocketAddr,
    /// Its ed25519 server key, base64url (what `hearth server-key` prints on that hearth).
    pub key: String,
    /// Keys it rotated away from, still valid until the given time.
    #[serde(default)]
    pub previous_keys: Vec<PreviousKey>,
}

/// A rotated-away key and the end of its grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    pub key: String,
    pub valid_until_ms: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8448)),
            peers: Vec::new(),
            revoked_keys: Vec::new(),
            max_age_ms: 600_000,
            max_skew_ms: 60_000,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            envelopes: Rate::new(50_000.0, 100_000.0),
            max_streams_per_peer: 8,
            keep_alive_ms: 5_000,
            idle_timeout_ms: 30_000,
            relay: RelayConfig::default(),
            discovery: DiscoveryConfig::default(),
        }
    }
}

/// Decodes a base64url ed25519 public key from the config (its `Display` is the same form).
pub fn parse_public_key(text: &str) -> Result<PublicKey, ConfigError> {
    PublicKey::parse(text).map_err(|_| {
        ConfigError::Invalid(format!("{text:?} is not a base64url ed25519 public key"))
    })
}

/// Presence and typing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// How often clients are expected to heartbeat, ms. Default 5000.
    pub heartbeat_interval_ms: u64,
    /// A user goes offline this long after the last heartbeat of their last device, ms. Default 30000.
    pub offline_after_ms: u64,
    /// At most one presence announcement per user per window, ms. Default 2000.
    pub coalesce_ms: u64,
    /// Typing expires this long after the last "typing" from the user, ms. Default 5000.
    pub typing_timeout_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 5000,
            offline_after_ms: 30_000,
            coalesce_ms: 2000,
            typing_timeout_ms: 5000,
        }
    }
}

/// Push notifications to offline devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// A burst of events for one device within this window becomes one notification, ms. Default 1000.
    pub coalesce_ms: u64,
    /// Attempts per notification before it counts as failed. Default 4.
    pub attempts: u32,
    /// First retry delay, doubled each attempt (with jitter), ms. Default 500.
    pub retry_base_ms: u64,
    /// Consecutive failed notifications after which an endpoint is disabled. Default 3.
    pub disable_after_failures: u32,
    /// Allow endpoints on loopback and private networks (for tests and LAN push gateways).
    /// Default false.
    pub allow_private_endpoints: bool,
    /// The VAPID subject (a mailto: or https: URL) for Web Push. Default "mailto:admin@localhost".
    pub vapid_subject: String,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            coalesce_ms: 1000,
            attempts: 4,
            retry_base_ms: 500,
            disable_after_failures: 3,
            allow_private_endpoints: false,
            vapid_subject: "mailto:admin@localhost".into(),
        }
    }
}

/// The client HTTP + WebSocket listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientApiConfig {
    /// Listen address. Default `127.0.0.1:8008`.
    pub listen: SocketAddr,
    /// Largest HTTP request body in bytes. Default 1 MiB (a 512 KiB payload in base64 fits).
    pub max_body_bytes: usize,
    /// Largest WebSocket message in bytes. Default 1 MiB.
    pub max_ws_message_bytes: usize,
    /// Sends one WebSocket connection may have in flight before the hearth stops reading it.
    /// Default 256.
    pub max_in_flight_per_connection: usize,
    /// Open client connections (WebSockets included). 0: the process's open-file limit less a
    /// reserve of 1,024 (at least half the limit) for the store, federation and admin. Default 0.
    pub max_connections: usize,
    /// Open client connections from one IPv4 address or IPv6 /64. Default 512.
    pub max_connections_per_ip: usize,
    /// Time a connection has to send a request's headers, from when it opens or its previous
    /// request ends (so also the keep-alive idle time), ms. Default 10000.
    pub header_timeout_ms: u64,
    /// Longest pause while a request body is arriving, ms. Default 30000.
    pub body_timeout_ms: u64,
    /// Reverse proxies in front of the hearth (addresses or networks): a request they carry is
    /// from the client their `X-Forwarded-For` names (for rate limits and last-seen records),
    /// and the per-address connection cap does not apply to them. Default none.
    pub trusted_proxies: Vec<String>,
}

/// Abuse and size limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message payload (and MLS commit with its Welcome) in bytes. Default 524288
    /// (512 KiB: a 100,000-character message in any script, 3 bytes a character, with room for
    /// MLS; a commit adding 100 devices to a group of 1,000).
    pub max_event_bytes: usize,
    /// Most members a group may have. Default 1000.
    pub max_room_members: usize,
    /// Sends per device. Default 50 per second, burst 500.
    pub sends: Rate,
    /// Other requests per device. Default 20 per second, burst 100.
    pub requests: Rate,
    /// Register/login/refresh attempts per client IP. Default 20 per second (an organisation
    /// behind one NAT address logs in at nine), burst 300.
    pub auth: Rate,
    /// Login attempts per account, from anywhere. Default 0.5 per second, burst 10.
    pub login_per_account: Rate,
    /// Heartbeats per device (more is a flood). Default 1 per second, burst 10.
    pub heartbeats: Rate,
    /// MLS key-package claims per device. Default 5 per second, burst 100.
    pub key_claims: Rate,
    /// Most one-time key packages a device may hold on the hearth. Default 200.
    pub max_key_packages: u64,
    /// Largest attachment blob in bytes. Default 33554432 (32 MiB).
    pub max_media_bytes: u64,
    /// Bytes of attachments each user may have stored here (0: no quota). Default 0.
    pub media_quota_bytes: u64,
}

/// Who may register over the client API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    Open,
    Token,
    Closed,
}

impl Registration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Token => "token",
            Self::Closed => "closed",
        }
    }
}

/// Sessions and passwords.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of an access token, ms. Default 900000 (15 minutes).
    pub access_token_ttl_ms: u64,
    /// Shortest password accepted at registration. Default 8.
    pub min_password_len: usize,
    /// Who may register over the client API: `"open"` (anyone), `"token"` (with a registration
    /// token an admin made) or `"closed"` (admins create accounts). Default open.
    pub registration: Registration,
    /// Argon2id memory cost for new password hashes, KiB. Default 19456 (OWASP's minimum).
    pub argon2_m_cost_kib: u32,
    /// Argon2id passes for new password hashes. Default 2.
    pub argon2_t_cost: u32,
    /// Password hashes computed at once (each holds `argon2_m_cost_kib`). 0: one per core but
    /// one, at least one.
    /// Default 0.
    pub password_workers: usize,
    /// Longest a login or registration waits for a free hashing worker before it is answered
    /// `rate_limited`, ms. Default 2000.
    pub password_queue_ms: u64,
}

/// Storage engine tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Most commands written by one group commit (one fsync). Default 4096.
    pub max_batch: usize,
    /// Bound of the queue in front of the committer. Default 16384.
    pub queue_depth: usize,
    /// Start even if the data directory or a file in it can be read by the group or others
    /// (it holds password hashes and the server's keys). Default false.
    pub allow_shared_data_dir: bool,
    /// Free bytes the data directory's file system must keep: below it, writes are refused
    /// (`unavailable`) before the disk fills. Default 134217728 (128 MiB).
    pub min_free_bytes: u64,
    /// Memory for the database's page cache, bytes. Default 33554432 (32 MiB); more keeps more
    /// of a large database in memory (history pages and catch-ups read less from disk).
    pub cache_bytes: usize,
    /// Size of the commit journal past which the database is flushed and the journal rewound
    /// (a checkpoint), bytes. Default 16777216 (16 MiB). Larger: fewer, larger page writes, a
    /// longer pause of the committer per checkpoint and a longer replay after a crash; the pages
    /// waiting for a checkpoint stay in the page cache.
    pub checkpoint_bytes: u64,
    /// Seconds between passes that purge messages past their room's retention period
    /// (`hearth admin set-retention`). Default 3600.
    pub retention_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: ServerName::parse("localhost").expect("valid default"),
            data_dir: PathBuf::from("./hearth-data"),
            client_api: ClientApiConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
            presence: PresenceConfig::default(),
            push: PushConfig::default(),
            federation: FederationConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ClientApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            max_body_bytes: 1024 * 1024,
            max_ws_message_bytes: 1024 * 1024,
            max_in_flight_per_connection: 256,
            max_connections: 0,
            max_connections_per_ip: 512,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        // The client API's own defaults are the one source for what it enforces.
        let api = hearth_client_api::config::ApiConfig::default();
        Self {
            max_event_bytes: api.max_event_bytes,
            max_room_members: 1000,
            sends: api.sends,
            requests: api.requests,
            auth: api.auth,
            login_per_account: api.login_per_account,
            heartbeats: api.heartbeats,
            key_claims: api.key_claims,
            max_key_packages: 200,
            max_media_bytes: api.max_media_bytes,
            media_quota_bytes: 0,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_ms: 900_000,
            min_password_len: 8,
            registration: Registration::Open,
            argon2_m_cost_kib: 19_456,
            argon2_t_cost: 2,
            password_workers: 0,
            password_queue_ms: 2000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            queue_depth: 16384,
            allow_shared_data_dir: false,
            min_free_bytes: 128 * 1024 * 1024,
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            checkpoint_bytes: crate::store::DEFAULT_CHECKPOINT_BYTES,
            retention_interval_secs: 3600,
        }
    }
}

impl Config {
    /// Loads defaults, then the file (if any), then `HEARTH_*` variables from `env`, and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    reason: source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    reason: Box::new(source),
                })?
            }
            None => toml::Table::new(),
        };
        check_renamed(&table)?;
        // Laid over the defaults, so half of a rate (`sends = { per_second = 100.0 }`, or one
        // environment variable) keeps the other half's default.
        let mut table = merge(
            toml::Table::try_from(Config::default()).expect("defaults serialize"),
            table,
        );
        let mut env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("HEARTH_") && !NON_CONFIG_VARS.contains(&k.as_str()))
            .collect();
        env.sort();
        for (var, value) in &env {
            apply_env(&mut table, var, value);
        }
        check_renamed(&table)?;
        let config: Config = toml::Value::Table(table).try_into().map_err(|source| {
            match env.first() {
                // Name the environment when it contributed; the message names the field either way.
                Some((var, _)) if file.is_none() => ConfigError::Env {
                    var: var.clone(),
                    reason: Box::new(source),
                },
                _ => ConfigError::Parse {
                    path: file.map(Path::to_owned).unwrap_or_default(),
                    reason: Box::new(source),
                },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        let l = &self.limits;
        if l.max_event_bytes == 0 || l.max_event_bytes > 16 * 1024 * 1024 {
            return fail("limits.max_event_bytes must be between 1 and 16 MiB");
        }
        if self.client_api.max_body_bytes < l.max_event_bytes {
            return fail("client_api.max_body_bytes must be at least limits.max_event_bytes");
        }
        if self.client_api.max_ws_message_bytes < l.max_event_bytes {
            return fail("client_api.max_ws_message_bytes must be at least limits.max_event_bytes");
        }
        if l.max_room_members < 2 {
            return fail("limits.max_room_members must be at least 2");
        }
        for (name, rate) in [
            ("limits.sends", l.sends),
            ("limits.requests", l.requests),
            ("limits.auth", l.auth),
            ("limits.login_per_account", l.login_per_account),
            ("limits.heartbeats", l.heartbeats),
            ("limits.key_claims", l.key_claims),
            ("federation.envelopes", self.federation.envelopes),
        ] {
            if !rate.is_usable() {
                return Err(ConfigError::Invalid(format!(
                    "{name}: per_second must be a positive number and burst at least 1"
                )));
            }
        }
        if self.auth.argon2_m_cost_kib < 8 || self.auth.argon2_t_cost == 0 {
            return fail(
                "auth.argon2_m_cost_kib must be at least 8 and auth.argon2_t_cost at least 1",
            );
        }
        if self.auth.access_token_ttl_ms < 10_000 {
            return fail("auth.access_token_ttl_ms must be at least 10000");
        }
        if self.storage.max_batch == 0 || self.storage.queue_depth == 0 {
            return fail("storage.max_batch and storage.queue_depth must be positive");
        }
        let p = &self.presence;
        if p.heartbeat_interval_ms == 0 || p.offline_after_ms < p.heartbeat_interval_ms {
            return fail(
                "presence.offline_after_ms must be at least presence.heartbeat_interval_ms",
            );
        }
        if p.typing_timeout_ms == 0 {
            return fail("presence.typing_timeout_ms must be positive");
        }
        if self.push.attempts == 0 || self.push.disable_after_failures == 0 {
            return fail("push.attempts and push.disable_after_failures must be positive");
        }
        if self.client_api.max_connections_per_ip == 0
            || self.client_api.header_timeout_ms == 0
            || self.client_api.body_timeout_ms == 0
        {
            return fail(
                "client_api.max_connections_per_ip, header_timeout_ms and body_timeout_ms must be positive",
            );
        }
        if let Err(e) =
            hearth_client_api::forwarded::TrustedProxies::parse(&self.client_api.trusted_proxies)
        {
            return Err(ConfigError::Invalid(format!(
                "client_api.trusted_proxies: {e}"
            )));
        }
        if self.storage.cache_bytes < 1024 * 1024 {
            return fail("storage.cache_bytes must be at least 1048576 (1 MiB)");
        }
        if self.storage.checkpoint_bytes == 0 {
            return fail("storage.checkpoint_bytes must be positive");
        }
        if self.client_api.max_in_flight_per_connection == 0 {
            return fail("client_api.max_in_flight_per_connection must be positive");
        }
        let f = &self.federation;
        for address in &f.discovery.bootstrap {
            if address
                .parse::<hearth_federation::p2p::Multiaddr>()
                .is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "federation.discovery.bootstrap: {address:?} is not a multiaddr"
                )));
            }
        }
        if f.discovery.lookup_timeout_ms == 0 || f.discovery.republish_ms == 0 {
            return fail(
                "federation.discovery.lookup_timeout_ms and republish_ms must be positive",
            );
        }
        for peer in &f.peers {
            parse_public_key(&peer.key)?;
            for old in &peer.previous_keys {
                parse_public_key(&old.key)?;
            }
            if peer.name == self.server_name {
                return fail("federation.peers must not name this hearth");
            }
        }
        for key in &f.revoked_keys {
            parse_public_key(key)?;
        }
        if f.retry_initial_ms == 0 || f.retry_max_ms < f.retry_initial_ms {
            return fail(
                "federation.retry_max_ms must be at least federation.retry_initial_ms > 0",
            );
        }
        if f.max_streams_per_peer == 0 {
            return fail("federation.max_streams_per_peer must be positive");
        }
        if f.keep_alive_ms == 0 || f.idle_timeout_ms <= f.keep_alive_ms {
            return fail("federation.idle_timeout_ms must be longer than keep_alive_ms > 0");
        }
        Ok(())
    }

    /// A complete, commented config file with the defaults, for `hearth init`.
    pub fn documented_toml(server_name: &ServerName, data_dir: &Path) -> String {
        let d = Config::default();
        format!(
            r#"# Hearth configuration. Every key is optional; the values shown are the defaults.
# Any key can be overridden by an environment variable: HEARTH_ + the key path in upper case,
# with __ between levels, e.g. HEARTH_CLIENT_API__LISTEN=0.0.0.0:8008.

# This hearth's name: the server part of user ids (@alice:NAME) and room ids.
server_name = "{server_name}"
# Database and keys.
data_dir = {data_dir}

[client_api]
# Where clients connect (HTTP and WebSocket).
listen = "{listen}"
# Largest HTTP request body, bytes.
max_body_bytes = {max_body}
# Largest WebSocket message, bytes.
max_ws_message_bytes = {max_ws}
# Sends one WebSocket connection may have in flight before the hearth stops reading it.
max_in_flight_per_connection = {in_flight}
# Open client connections; past it new ones are closed at once. 0: the open-file limit less a
# reserve of 1,024 for the store, federation and admin.
max_connections = 0
# Open client connections from one IPv4 address or IPv6 /64.
max_connections_per_ip = 512
# A connection that sends no complete request headers for this long is closed (a new one, one
# idle between requests, half a request, half a WebSocket upgrade), ms.
header_timeout_ms = 10000
# A request body that pauses for this long is abandoned, ms.
body_timeout_ms = 30000
# Reverse proxies in front of the hearth, as addresses or networks (["127.0.0.1", "10.0.0.0/8"]).
# Requests they carry count as from the client their X-Forwarded-For names (rate limits,
# last-seen addresses), and the per-address cap above does not apply to them. Only list proxies
# you run: anyone listed can claim to be any address.
trusted_proxies = []

[limits]
# Largest message payload, bytes.
max_event_bytes = {max_event}
# Most members of a group.
max_room_members = {max_members}
# Each rate is a sustained rate and the burst allowed above it after a quiet spell; past it the
# request is answered rate_limited with retry_after_ms.
# Sends per device.
sends = {sends}
# Other authenticated requests per device.
requests = {requests}
# Register/login/refresh attempts per client IP (sized for an organisation behind one address).
auth = {auth}
# Login attempts per account, from any address.
login_per_account = {login}
# Heartbeats per device (more is refused as a flood).
heartbeats = {heartbeats}
# MLS key-package claims per device.
key_claims = {claims}
# Most one-time key packages a device may keep on the hearth.
max_key_packages = {maxkp}
# Largest attachment (an encrypted blob), bytes.
max_media_bytes = {maxmedia}
# Bytes of attachments each user may have stored here; 0: no quota.
media_quota_bytes = 0

[auth]
# Lifetime of an access token, ms. Clients refresh with their single-use refresh token.
access_token_ttl_ms = {ttl}
# Shortest password accepted at registration.
min_password_len = {minpw}
# Who may register over the client API: "open" (anyone), "token" (with a token from
# `hearth admin create-registration-token`) or "closed". `hearth admin create-user` always works.
registration = "{open}"
# Argon2id cost of new password hashes: memory in KiB and passes.
argon2_m_cost_kib = {m_cost}
argon2_t_cost = {t_cost}
# Password hashes computed at once (0: one per core but one); past them, logins queue for at most
# password_queue_ms and are then answered rate_limited. Memory for hashing stays at
# workers × argon2_m_cost_kib however many log in.
password_workers = 0
password_queue_ms = 2000

[presence]
# How often clients heartbeat, ms.
heartbeat_interval_ms = {hbi}
# A user goes offline this long after their last device's last heartbeat, ms.
offline_after_ms = {off}
# At most one presence announcement per user per window, ms (flapping is coalesced).
coalesce_ms = {pco}
# Typing expires this long after the last "typing", ms.
typing_timeout_ms = {tto}

[push]
# A burst of events for one offline device within this window becomes one notification, ms.
coalesce_ms = {pushco}
# Attempts per notification, the first retry delay (doubled each time, with jitter).
attempts = {att}
retry_base_ms = {rbase}
# Consecutive failed notifications after which an endpoint is disabled (the device is told).
disable_after_failures = {dis}
# Allow push endpoints on loopback and private networks (LAN push gateways, tests).
allow_private_endpoints = {priv}
# VAPID subject for Web Push.
vapid_subject = "{vsub}"

[metrics]
# Serve Prometheus metrics (the hot path's histograms, clients, federation, the process) at
# http://<listen>/metrics.
# listen = "127.0.0.1:9464"

[log]
# What is logged, as a tracing filter; HEARTH_LOG wins when set. SIGHUP reloads it.
level = "info,libp2p_kad=error"
# "text" or "json" (one object per line).
format = "text"

[storage]
# Most commands one group commit (one fsync) writes.
max_batch = {max_batch}
# Bound of the queue in front of the committer.
queue_depth = {queue}
# The data directory holds password hashes and the server's keys: the hearth creates it 0700,
# its files 0600, and refuses to start if they are open to the group or others. true: start anyway.
allow_shared_data_dir = false
# Free bytes the disk must keep: below it writes are refused (`unavailable`, /v1/ready says why)
# until space is freed, so a full disk never reaches the database.
min_free_bytes = 134217728
# Memory for the database's page cache, bytes (32 MiB; at least 1 MiB). More cache means fewer
# disk reads for history and catch-up on a large database, and a larger resident size.
cache_bytes = 33554432
# Group commits are made durable in a journal (one sequential fsync each); once it holds this many
# bytes (16 MiB) the database is flushed and the journal rewound. Larger: fewer page writes, a
# longer pause per flush (about 50 ms at 16 MiB), a longer replay after a crash (about 0.4 s at
# 16 MiB), more pages waiting in the cache above. The journal's file is written this long (plus
# 64 KiB) with zeros at the first start, so each fsync writes a record, not the file's new length.
checkpoint_bytes = 16777216
# Seconds between passes that purge messages older than their room's retention period (rooms
# keep everything unless an admin sets one: `hearth admin set-retention ROOM DAYS`).
retention_interval_secs = 3600

[federation]
# UDP address other hearths reach this one on (QUIC). Use a public address to federate.
listen = "{fed_listen}"
# Oldest and furthest-ahead signing time accepted on an envelope, ms.
max_age_ms = {fed_age}
max_skew_ms = {fed_skew}
# Retry delays towards an unreachable peer: first, and the cap (doubling, with jitter), ms.
retry_initial_ms = {fed_ri}
retry_max_ms = {fed_rm}
# What one peer may send: envelopes (a rate and its burst; past it they are refused
# rate_limited and the peer retries), concurrent batch streams.
envelopes = {fed_envelopes}
max_streams_per_peer = {fed_streams}
# A PING keeps an idle peer connection alive every keep_alive_ms; a connection that hears nothing
# for idle_timeout_ms is closed, which is how long a peer that died without closing takes to be
# noticed (one that restarts is noticed at once: its new process answers with a reset).
keep_alive_ms = 5000
idle_timeout_ms = 30000
# Keys that never verify (base64url).
revoked_keys = []
# Each peer: its name, UDP address and key (`hearth server-key` on that hearth prints it).
# [[federation.peers]]
# name = "b.example.org"
# address = "203.0.113.7:8448"
# key = "base64url-ed25519-public-key"

[federation.relay]
# Hand envelopes for unreachable peers to relays.
enabled = {relay_enabled}
# A peer unreachable this long has its pending envelopes sealed and handed to relays, ms.
after_ms = {relay_after}
# How many relays (peers closest to the destination) each envelope is handed to.
relays = {relay_n}
# Whether this hearth holds sealed envelopes for other hearths, and for whom.
serve = {relay_serve}
allow = []
block = []
# What one origin may have held here at most, and for how long (ms).
max_envelopes_per_origin = {relay_max_n}
max_bytes_per_origin = {relay_max_b}
hold_ms = {relay_hold}

[federation.discovery]
# A libp2p swarm (QUIC): hearths find each other through a DHT of signed records and gossip
# key announcements. Joining the network takes one bootstrap peer.
enabled = {disc_enabled}
# The swarm's UDP address; unset: the federation port + 1.
# listen = "127.0.0.1:8449"
# The federation address published in this hearth's record; unset: federation.listen.
# advertise = "203.0.113.7:8448"
# e.g. ["/ip4/203.0.113.9/udp/8449/quic-v1"] (`hearth admin federation-status` prints a
# hearth's swarm addresses).
bootstrap = []
# Hearths learnt from the DHT: if allow is not empty, only those; never those in block.
allow = []
block = []
lookup_timeout_ms = {disc_timeout}
# How often this hearth's record is put into the DHT again, ms.
republish_ms = {disc_republish}
"#,
            data_dir = toml::Value::String(data_dir.display().to_string()),
            listen = d.client_api.listen,
            max_body = d.client_api.max_body_bytes,
            max_ws = d.client_api.max_ws_message_bytes,
            in_flight = d.client_api.max_in_flight_per_connection,
            max_event = d.limits.max_event_bytes,
            max_members = d.limits.max_room_members,
            sends = rate_toml(d.limits.sends),
            requests = rate_toml(d.limits.requests),
            auth = rate_toml(d.limits.auth),
            login = rate_toml(d.limits.login_per_account),
            heartbeats = rate_toml(d.limits.heartbeats),
            claims = rate_toml(d.limits.key_claims),
            maxkp = d.limits.max_key_packages,
            maxmedia = d.limits.max_media_bytes,
            hbi = d.presence.heartbeat_interval_ms,
            off = d.presence.offline_after_ms,
            pco = d.presence.coalesce_ms,
            tto = d.presence.typing_timeout_ms,
            pushco = d.push.coalesce_ms,
            att = d.push.attempts,
            rbase = d.push.retry_base_ms,
            dis = d.push.disable_after_failures,
            priv = d.push.allow_private_endpoints,
            vsub = d.push.vapid_subject,
            ttl = d.auth.access_token_ttl_ms,
            minpw = d.auth.min_password_len,
            open = d.auth.registration.as_str(),
            m_cost = d.auth.argon2_m_cost_kib,
            t_cost = d.auth.argon2_t_cost,
            max_batch = d.storage.max_batch,
            queue = d.storage.queue_depth,
            fed_listen = d.federation.listen,
            fed_age = d.federation.max_age_ms,
            fed_skew = d.federation.max_skew_ms,
            fed_ri = d.federation.retry_initial_ms,
            fed_rm = d.federation.retry_max_ms,
            fed_envelopes = rate_toml(d.federation.envelopes),
            fed_streams = d.federation.max_streams_per_peer,
            relay_enabled = d.federation.relay.enabled,
            relay_after = d.federation.relay.after_ms,
            relay_n = d.federation.relay.relays,
            relay_serve = d.federation.relay.serve,
            relay_max_n = d.federation.relay.max_envelopes_per_origin,
            relay_max_b = d.federation.relay.max_bytes_per_origin,
            relay_hold = d.federation.relay.hold_ms,
            disc_enabled = d.federation.discovery.enabled,
            disc_timeout = d.federation.discovery.lookup_timeout_ms,
            disc_republish = d.federation.discovery.republish_ms,
        )
    }
}

/// `over` laid on `base`: tables merge key by key, anything else replaces.
fn merge(mut base: toml::Table, over: toml::Table) -> toml::Table {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => {
                *inner = merge(std::mem::take(inner), value);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    base
}

/// A rate as an inline TOML table, as `hearth init` writes it.
fn rate_toml(rate: Rate) -> String {
    format!(
        "{{ per_second = {:?}, burst = {:?} }}",
        rate.per_second, rate.burst
    )
}

/// Keys an older hearth read, and what replaced them (one `Rate` per limit; every duration in
/// ms). Naming the new key beats "unknown field" for an operator upgrading.
const RENAMED_KEYS: &[(&str, &str)] = &[
    (
        "limits.sends_per_second",
        "limits.sends = { per_second, burst }",
    ),
    ("limits.send_burst", "limits.sends = { per_second, burst }"),
    (
        "limits.requests_per_second",
        "limits.requests = { per_second, burst }",
    ),
    (
        "limits.request_burst",
        "limits.requests = { per_second, burst }",
    ),
    (
        "limits.auth_per_second",
        "limits.auth = { per_second, burst }",
    ),
    ("limits.auth_burst", "limits.auth = { per_second, burst }"),
    (
        "limits.login_per_account_per_second",
        "limits.login_per_account = { per_second, burst }",
    ),
    (
        "limits.login_per_account_burst",
        "limits.login_per_account = { per_second, burst }",
    ),
    (
        "limits.heartbeats_per_second",
        "limits.heartbeats = { per_second, burst }",
    ),
    (
        "limits.heartbeat_burst",
        "limits.heartbeats = { per_second, burst }",
    ),
    (
        "limits.key_claims_per_second",
        "limits.key_claims = { per_second, burst }",
    ),
    (
        "limits.key_claim_burst",
        "limits.key_claims = { per_second, burst }",
    ),
    (
        "federation.envelopes_per_second",
        "federation.envelopes = { per_second, burst }",
    ),
    (
        "federation.envelope_burst",
        "federation.envelopes = { per_second, burst }",
    ),
    (
        "auth.access_token_ttl_secs",
        "auth.access_token_ttl_ms (in ms)",
    ),
    (
        "auth.open_registration",
        "auth.registration = \"open\" | \"token\" | \"closed\"",
    ),
    (
        "federation.discovery.republish_secs",
        "federation.discovery.republish_ms (in ms)",
    ),
];

fn check_renamed(table: &toml::Table) -> Result<(), ConfigError> {
    for (old, new) in RENAMED_KEYS {
        let mut parts = old.split('.').peekable();
        let mut cursor = table;
        while let Some(part) = parts.next() {
            match (cursor.get(part), parts.peek()) {
                (Some(_), None) => {
                    return Err(ConfigError::Renamed {
                        old: (*old).to_owned(),
                        new,
                    });
                }
                (Some(toml::Value::Table(inner)), Some(_)) => cursor = inner,
                _ => break,
            }
        }
    }
    Ok(())
}

/// Sets `HEARTH_A__B=v` as `a.b = v` in `table`. The value is read as TOML when it parses as a
/// TOML value (numbers, booleans), otherwise as a string.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) {
    let path: Vec<String> = var["HEARTH_".len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("split yields at least one part");
    let mut cursor = table;
    for part in parents {
        let entry = cursor
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        cursor = entry.as_table_mut().expect("just made a table");
    }
    cursor.insert(last.clone(), parsed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.server_name.as_str(), "localhost");
        assert_eq!(config.limits.max_event_bytes, 524_288);
    }

    #[test]
    fn documented_file_parses_to_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        let server = ServerName::parse("eu.example.org").unwrap();
        std::fs::write(
            &path,
            Config::documented_toml(&server, Path::new("/var/lib/hearth")),
        )
        .unwrap();
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.server_name, server);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/hearth"));
        // Every value the file shows is the default: the whole trees serialize alike.
        let defaults = Config {
            server_name: server,
            data_dir: PathBuf::from("/var/lib/hearth"),
            ..Config::default()
        };
        assert_eq!(
            toml::to_string(&config).unwrap(),
            toml::to_string(&defaults).unwrap()
        );
    }

    #[test]
    fn discovery_settings_are_checked_and_defaulted() {
        let config = Config::load(
            None,
            env(&[(
                "HEARTH_FEDERATION__DISCOVERY__BOOTSTRAP",
                r#"["/ip4/127.0.0.1/udp/8449/quic-v1"]"#,
            )]),
        )
        .unwrap();
        let d = &config.federation.discovery;
        assert!(d.enabled && d.bootstrap.len() == 1);
        // The swarm sits next to the federation port unless told otherwise.
        assert_eq!(
            d.listen_addr("127.0.0.1:8448".parse().unwrap()),
            "127.0.0.1:8449".parse().unwrap()
        );
        assert_eq!(d.listen_addr("127.0.0.1:0".parse().unwrap()).port(), 0);
        for (var, value) in [
            (
                "HEARTH_FEDERATION__DISCOVERY__BOOTSTRAP",
                r#"["not a multiaddr"]"#,
            ),
            ("HEARTH_FEDERATION__DISCOVERY__LOOKUP_TIMEOUT_MS", "0"),
            ("HEARTH_FEDERATION__DISCOVERY__NO_SUCH_KEY", "1"),
        ] {
            assert!(
                Config::load(None, env(&[(var, value)])).is_err(),
                "{var}={value}"
            );
        }
    }

    #[test]
    fn env_overrides_file_and_nests() {
        let config = Config::load(
            None,
            env(&[
                ("HEARTH_CLIENT_API__LISTEN", "0.0.0.0:9000"),
                ("HEARTH_LIMITS__SENDS__PER_SECOND", "1000.5"),
                ("HEARTH_SERVER_NAME", "b.example"),
                ("HEARTH_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.client_api.listen.port(), 9000);
        assert_eq!(config.limits.sends.per_second, 1000.5);
        // The other half of the rate keeps its default.
        assert_eq!(
            config.limits.sends.burst,
            Config::default().limits.sends.burst
        );
        assert_eq!(config.server_name.as_str(), "b.example");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::load(None, env(&[("HEARTH_NO_SUCH_KEY", "1")])).is_err());
        assert!(Config::load(None, env(&[("HEARTH_SERVER_NAME", "Bad Name")])).is_err());
        assert!(Config::load(None, env(&[("HEARTH_LIMITS__MAX_ROOM_MEMBERS", "1")])).is_err());
        for (var, value) in [
            ("HEARTH_LIMITS__SENDS__BURST", "-1"),
            ("HEARTH_LIMITS__SENDS__BURST", "0.5"),
            ("HEARTH_LIMITS__KEY_CLAIMS__PER_SECOND", "0"),
            ("HEARTH_FEDERATION__ENVELOPES__PER_SECOND", "nan"),
            ("HEARTH_LIMITS__SENDS__PER_MINUTE", "1"),
        ] {
            assert!(
                Config::load(None, env(&[(var, value)])).is_err(),
                "{var}={value}"
            );
        }
    }

    #[test]
    fn half_a_rate_keeps_the_other_half_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        std::fs::write(&path, "[limits]\nauth = { burst = 40.0 }\n").unwrap();
        let config = Config::load(
            Some(&path),
            env(&[("HEARTH_LIMITS__HEARTBEATS__PER_SECOND", "3")]),
        )
        .unwrap();
        let d = Config::default().limits;
        assert_eq!(config.limits.auth, Rate::new(d.auth.per_second, 40.0));
        assert_eq!(config.limits.heartbeats, Rate::new(3.0, d.heartbeats.burst));
    }

    #[test]
    fn rates_are_inline_tables_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        std::fs::write(
            &path,
            "[limits]\nsends = { per_second = 2.5, burst = 7.0 }\n\n[federation]\nenvelopes = { per_second = 10.0, burst = 20.0 }\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.limits.sends, Rate::new(2.5, 7.0));
        assert_eq!(config.federation.envelopes, Rate::new(10.0, 20.0));
    }

    #[test]
    fn an_old_key_names_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        std::fs::write(&path, "[limits]\nsend_burst = 3.0\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains("limits.send_burst is no longer a config key: write limits.sends"),
            "{err}"
        );
        let err =
            Config::load(None, env(&[("HEARTH_AUTH__ACCESS_TOKEN_TTL_SECS", "60")])).unwrap_err();
        assert!(
            err.to_string().contains("auth.access_token_ttl_ms"),
            "{err}"
        );
        let err = Config::load(
            None,
            env(&[("HEARTH_FEDERATION__DISCOVERY__REPUBLISH_SECS", "60")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("republish_ms"), "{err}");
    }
}
