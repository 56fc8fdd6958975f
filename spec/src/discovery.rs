//! What hearths publish about themselves in the libp2p DHT, and what they gossip. See
//! `spec/discovery.md`.
//!
//! A [`HearthRecord`] says "the hearth `name` holds `key` and takes federation connections at
//! `address`". It is encoded canonically with postcard and signed by `key` itself over
//! `RECORD_CONTEXT || encoded`; it travels as `signature (64 bytes) || encoded`, like a
//! federation envelope, under two DHT keys: [`name_key`] and [`key_key`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::federation::{FedDecodeError, SIGNATURE_LEN};
use crate::id::{PublicKey, ServerName};

/// The record version this crate writes and accepts.
pub const RECORD_VERSION: u8 = 1;

/// Prefixed to the encoded record before signing: a record signature can never pass for a
/// federation envelope's or a token's.
pub const RECORD_CONTEXT: &[u8] = b"hearth/record/v1\0";

/// Largest signed record accepted from the DHT.
pub const MAX_SIGNED_RECORD: usize = 1024;

/// The gossipsub topic that carries key announcements (signed `KeyRotation` envelopes).
pub const KEYS_TOPIC: &str = "hearth/keys/v1";

/// The libp2p protocol names of the hearth DHT (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: &str = "/hearth/kad/1.0.0";

/// The identify protocol version hearths announce.
pub const IDENTIFY_PROTOCOL: &str = "/hearth/id/1.0.0";

/// Prefixed to a key proof's message before the old key signs it.
pub const KEY_PROOF_CONTEXT: &[u8] = b"hearth/key-proof/v1\0";

/// A hearth's self-description in the DHT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HearthRecord {
    pub version: u8,
    pub name: ServerName,
    /// The hearth's current ed25519 key; it signs this record.
    pub key: PublicKey,
    /// Where the hearth takes federation (QUIC) connections.
    pub address: SocketAddr,
    /// When the hearth signed it (ms since the epoch); a newer record replaces an older one.
    pub issued_ms: u64,
    /// After a key rotation: the previous key's word that `key` succeeds it. Lets a holder of
    /// the old record (a DHT node, or a hearth that missed the announcement) accept the new one.
    pub previous: Option<KeyProof>,
}

/// "`old_key` hands `name` over to `new_key`; `old_key` verifies until `old_valid_until_ms`",
/// signed by `old_key` over [`key_proof_message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProof {
    pub old_key: PublicKey,
    pub old_valid_until_ms: u64,
    pub signature: Vec<u8>,
}

/// What the old key signs in a [`KeyProof`]: the context, then the postcard encoding of
/// `(name, old_key, new_key, old_valid_until_ms)`.
pub fn key_proof_message(
    name: &ServerName,
    old_key: &PublicKey,
    new_key: &PublicKey,
    old_valid_until_ms: u64,
) -> Vec<u8> {
    let encoded = postcard::to_stdvec(&(name, old_key, new_key, old_valid_until_ms))
        .expect("key proof encodes");
    crate::codec::with_context(KEY_PROOF_CONTEXT, &encoded)
}

impl HearthRecord {
    /// The canonical encoding (what is signed, after [`RECORD_CONTEXT`]).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("hearth record encodes")
    }

    /// Decodes and checks canonical form and version.
    pub fn decode(bytes: &[u8]) -> Result<Self, FedDecodeError> {
        Ok(crate::codec::decode_canonical(
            bytes,
            RECORD_VERSION,
            |r: &Self| r.version,
        )?)
    }
}

/// The message a record signature covers.
pub fn record_signing_message(encoded: &[u8]) -> Vec<u8> {
    crate::codec::with_context(RECORD_CONTEXT, encoded)
}

/// Splits a signed record into its signature and encoded bytes; checks only the size.
pub fn split_record(bytes: &[u8]) -> Result<(&[u8; SIGNATURE_LEN], &[u8]), FedDecodeError> {
    if bytes.len() > MAX_SIGNED_RECORD {
        return Err(FedDecodeError::TooLarge(bytes.len()));
    }
    bytes
        .split_first_chunk::<SIGNATURE_LEN>()
        .ok_or(FedDecodeError::Truncated)
}

/// The DHT key under which a hearth's record is found by name.
pub fn name_key(name: &ServerName) -> Vec<u8> {
    let mut key = b"/hearth/name/".to_vec();
    key.extend_from_slice(name.as_str().as_bytes());
    key
}

/// The DHT key under which a hearth's record is found by its key (a connection from an unknown
/// hearth shows only its key).
pub fn key_key(key: &PublicKey) -> Vec<u8> {
    let mut out = b"/hearth/key/".to_vec();
    out.extend_from_slice(key.as_bytes());
    out
}
