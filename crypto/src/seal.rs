//! Sealing a signed federation envelope to its destination, so relay hearths can carry it
//! without reading, altering or forging it (see `spec/federation.md`, "Sealed relays").
//!
//! The destination's X25519 key is its ed25519 server key in Montgomery form (the same
//! birational map libsodium uses), so every hearth that knows a peer's server key can seal to
//! it. Each seal uses a fresh ephemeral key:
//!
//! ```text
//! shared = X25519(ephemeral secret, destination X25519 public)
//! key    = HKDF-SHA256(salt = ephemeral public || destination X25519 public, ikm = shared,
//!                      info = "hearth/seal/v1\0" || destination name)
//! ciphertext = ChaCha20-Poly1305(key, nonce = 0, aad = "hearth/seal/v1\0" || destination name,
//!                                plaintext = signed envelope)
//! ```
//!
//! The key is used once, so the fixed nonce is safe. The destination name is bound in, so a
//! seal cannot be redirected to another hearth that happens to share nothing but a bug.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hearth_spec::federation::SealedEnvelope;
use hearth_spec::{PublicKey as ServerPublicKey, ServerName};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::key::{ServerKey, verifying_key};

/// Domain separation for seal keys and their associated data.
pub const SEAL_CONTEXT: &[u8] = b"hearth/seal/v1\0";

/// Why a seal could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the destination's server key is not a valid ed25519 public key")]
    BadDestinationKey,
    #[error("the ephemeral key is not acceptable")]
    BadEphemeral,
    #[error("the seal does not open: altered, or not for this hearth")]
    DoesNotOpen,
}

/// The X25519 public key of a hearth with this ed25519 server key.
pub fn x25519_public(server_key: &ServerPublicKey) -> Result<[u8; 32], SealError> {
    let key = verifying_key(server_key).ok_or(SealError::BadDestinationKey)?;
    Ok(key.to_montgomery().to_bytes())
}

fn context(destination: &ServerName) -> Vec<u8> {
    [SEAL_CONTEXT, destination.as_str().as_bytes()].concat()
}

fn cipher(
    shared: &x25519_dalek::SharedSecret,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    destination: &ServerName,
) -> Result<ChaCha20Poly1305, SealError> {
    // An all-zero shared secret means a low-order point was supplied: refuse it.
    if !shared.was_contributory() {
        return Err(SealError::BadEphemeral);
    }
    let salt = [&ephemeral[..], &recipient[..]].concat();
    let hkdf = Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes());
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    hkdf.expand(&context(destination), key.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Ok(ChaCha20Poly1305::new(Key::from_slice(key.as_slice())))
}

/// Seals `signed` (a signed envelope) for `destination`, whose server key is `destination_key`.
pub fn seal(
    destination_key: &ServerPublicKey,
    destination: &ServerName,
    signed: &[u8],
) -> Result<SealedEnvelope, SealError> {
    seal_with(
        StaticSecret::random_from_rng(OsRng),
        destination_key,
        destination,
        signed,
    )
}

/// [`seal`] with a given ephemeral secret (for test vectors; never reuse one).
pub fn seal_with(
    ephemeral_secret: StaticSecret,
    destination_key: &ServerPublicKey,
    destination: &ServerName,
    signed: &[u8],
) -> Result<SealedEnvelope, SealError> {
    let recipient = x25519_public(destination_key)?;
    let ephemeral = PublicKey::from(&ephemeral_secret).to_bytes();
    let shared = ephemeral_secret.diffie_hellman(&PublicKey::from(recipient));
    let cipher = cipher(&shared, &ephemeral, &recipient, destination)?;
    let aad = context(destination);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: signed,
                aad: &aad,
            },
        )
        .expect("encryption of an in-memory buffer does not fail");
    Ok(SealedEnvelope {
        ephemeral,
        ciphertext,
    })
}

/// Opens a seal made for this hearth (`key`, named `destination`): the signed envelope inside.
pub fn open(
    key: &ServerKey,
    destination: &ServerName,
    sealed: &SealedEnvelope,
) -> Result<Vec<u8>, SealError> {
    let secret = StaticSecret::from(*key.x25519_scalar());
    let recipient = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(sealed.ephemeral));
    let cipher = cipher(&shared, &sealed.ephemeral, &recipient, destination)?;
    let aad = context(destination);
    cipher
        .decrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::DoesNotOpen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dest() -> ServerName {
        ServerName::parse("c.example").unwrap()
    }

    #[test]
    fn a_seal_opens_only_for_its_destination_and_unaltered() {
        let c = ServerKey::generate();
        let other = ServerKey::generate();
        let sealed = seal(&c.public_key(), &dest(), b"signed envelope").unwrap();
        assert_eq!(open(&c, &dest(), &sealed).unwrap(), b"signed envelope");
        assert!(
            !sealed.ciphertext.windows(6).any(|w| w == b"signed"),
            "the plaintext is not visible in the seal"
        );
        assert_eq!(open(&other, &dest(), &sealed), Err(SealError::DoesNotOpen));
        let elsewhere = ServerName::parse("d.example").unwrap();
        assert_eq!(open(&c, &elsewhere, &sealed), Err(SealError::DoesNotOpen));
        let mut eph = sealed.clone();
        eph.ephemeral[0] ^= 1;
        assert!(open(&c, &dest(), &eph).is_err());
        let low_order = SealedEnvelope {
            ephemeral: [0; 32],
            ciphertext: sealed.ciphertext.clone(),
        };
        assert_eq!(open(&c, &dest(), &low_order), Err(SealError::BadEphemeral));
    }

    #[test]
    fn every_seal_is_fresh() {
        let c = ServerKey::generate();
        let a = seal(&c.public_key(), &dest(), b"same").unwrap();
        let b = seal(&c.public_key(), &dest(), b"same").unwrap();
        assert_ne!(a.ephemeral, b.ephemeral);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    proptest! {
        /// Any single flipped bit of the ciphertext makes the seal refuse to open.
        #[test]
        fn any_flipped_bit_is_refused(at in 0usize..(64 + 16), bit in 0u8..8) {
            let c = ServerKey::from_bytes(&[7; 32]).unwrap();
            let mut sealed = seal(&c.public_key(), &dest(), &[0x5a; 64]).unwrap();
            sealed.ciphertext[at] ^= 1 << bit;
            prop_assert_eq!(open(&c, &dest(), &sealed), Err(SealError::DoesNotOpen));
        }
    }
}
