//! Hearth-to-hearth federation: the QUIC transport with mutual TLS bound to hearth keys, the
//! checks every incoming envelope passes, per-peer budgets (a [`hearth_spec::rate::Bucket`] per
//! peer), and the driver that drains each destination's durable outbound queue with backoff.
//!
//! The wire format is in `hearth-spec` ([`hearth_spec::federation`]); what a hearth does with
//! an envelope that passed the checks is the node's business, through the [`Inbound`] trait, and
//! the queue's storage is the node's store, through [`OutboxStore`].

pub mod announcements;
pub mod backoff;
pub mod blocklist;
pub mod cert;
pub mod check;
mod clock;
pub mod directory;
pub mod discovery;
pub mod keyring;
pub mod outbox;
pub mod p2p;
pub mod relay;
pub mod signals;
mod stage;
pub mod tls;
pub mod transport;

pub use backoff::{Backoff, BackoffPolicy};
pub use blocklist::Blocklist;
pub use check::Freshness;
pub use directory::{Directory, LearnError, Learned, PeerConfig, RotationError};
pub use discovery::{Discovery, DiscoveryPolicy, HearthIdentity, ResolveError};
pub use keyring::KeyRing;
pub use outbox::{OutboxStore, drive};
pub use p2p::{P2pConfig, P2pEvent, P2pStatus, Swarm};
pub use signals::drive_signals;
pub use transport::{Inbound, RequestError, SendError, StartError, Transport, TransportConfig};
