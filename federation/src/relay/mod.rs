//! Peer-assisted delivery (see `spec/federation.md`, "Sealed relays"), as rules without I/O.
//!
//! As an origin: a destination unreachable for `after_ms` has its pending envelopes sealed to
//! its key and handed to the relays closest to it ([`choose_relays`]). As a relay: sealed
//! envelopes are held under a quota per origin and a time limit ([`Ledger`]). As a destination:
//! what a relay hands over is opened and checked as if its origin had sent it ([`unseal`]).

mod choose;
pub mod hand_off;
mod ledger;
mod unseal;

use hearth_spec::ServerName;
use serde::{Deserialize, Serialize};

pub use choose::choose_relays;
pub use hand_off::HandOff;
pub use ledger::{Holding, Ledger};
pub use unseal::unseal;

/// Peer-assisted delivery: sealing pending envelopes for an unreachable destination and handing
/// them to relays, and holding envelopes for other hearths (the `[federation.relay]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Whether this hearth hands envelopes for unreachable peers to relays. Default true.
    pub enabled: bool,
    /// A destination unreachable this long has its pending envelopes handed to relays, ms.
    /// Default 30000.
    pub after_ms: u64,
    /// Relays each envelope is handed to. Default 3.
    pub relays: usize,
    /// Whether this hearth holds envelopes for other hearths. Default true.
    pub serve: bool,
    /// If not empty, the only origins this hearth holds envelopes for.
    pub allow: Vec<ServerName>,
    /// Origins this hearth never holds envelopes for, and never hands envelopes to.
    pub block: Vec<ServerName>,
    /// Envelopes held for one origin at most. Default 100000.
    pub max_envelopes_per_origin: u64,
    /// Bytes held for one origin at most. Default 256 MiB.
    pub max_bytes_per_origin: u64,
    /// How long a relay holds an envelope, and the oldest signing time a destination accepts
    /// on a relayed envelope, ms. Default 7 days.
    pub hold_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            after_ms: 30_000,
            relays: 3,
            serve: true,
            allow: Vec::new(),
            block: Vec::new(),
            max_envelopes_per_origin: 100_000,
            max_bytes_per_origin: 256 * 1024 * 1024,
            hold_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}
