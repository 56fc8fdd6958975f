//! Hearth's cryptography that is not end-to-end: the hearth's ed25519 identity key, signatures
//! over exact byte strings (federation envelopes among them), sealing envelopes to a destination
//! for relays, and secret hashing for refresh tokens.
//!
//! This crate does no I/O: callers load and store key bytes. Entry type: [`ServerKey`].

mod fed;
mod key;
mod record;
mod seal;
mod secret;
#[cfg(test)]
mod vectors;

pub use fed::{ed25519_from_spki, sign_envelope, verify_envelope, verify_envelopes};
pub use key::{KeyError, ServerKey, VerifyError, VerifyingKey, verify, verifying_key};
pub use record::{RecordError, open_record, sign_key_proof, sign_record, verify_key_proof};
pub use seal::{SEAL_CONTEXT, SealError, open, seal, seal_with, x25519_public};
pub use secret::{Secret, random_pasteable_token, random_token};
