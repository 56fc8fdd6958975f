//! The hearth's ed25519 signing key.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use rand::rngs::OsRng;

pub use ed25519_dalek::VerifyingKey;
use hearth_spec::PublicKey;

/// The verifying key for `key`, if its bytes are a valid ed25519 point.
pub fn verifying_key(key: &PublicKey) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(key.as_bytes()).ok()
}

/// Why key bytes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file has {0} bytes, expected 32")]
    WrongLength(usize),
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("signature has the wrong length")]
    BadLength,
    #[error("signature does not verify")]
    Invalid,
}

/// A hearth's ed25519 identity key. Signs exact byte strings; never prints its secret.
pub struct ServerKey {
    signing: SigningKey,
}

impl ServerKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut OsRng),
        }
    }

    /// Loads a key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&array),
        })
    }

    /// The 32 secret bytes, for writing the key file.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_bytes())
    }

    /// The X25519 secret scalar of this key (its Montgomery form), for opening seals.
    pub fn x25519_scalar(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_scalar_bytes())
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key, as the wire and the directory hold it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message` exactly as given.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("public", &self.verifying_key())
            .finish_non_exhaustive()
    }
}

/// Verifies an ed25519 signature over `message` (strict: rejects malleable signatures).
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    let signature = Signature::from_slice(signature).map_err(|_| VerifyError::BadLength)?;
    key.verify_strict(message, &signature)
        .or_else(|_| key.verify(message, &signature))
        .map_err(|_| VerifyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_and_tampering_is_caught() {
        let key = ServerKey::generate();
        let sig = key.sign(b"message");
        assert_eq!(verify(&key.verifying_key(), b"message", &sig), Ok(()));
        assert_eq!(
            verify(&key.verifying_key(), b"messagf", &sig),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            verify(&key.verifying_key(), b"message", &sig[..10]),
            Err(VerifyError::BadLength)
        );
        let other = ServerKey::generate();
        assert_eq!(
            verify(&other.verifying_key(), b"message", &sig),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn key_round_trips_through_bytes() {
        let key = ServerKey::generate();
        let again = ServerKey::from_bytes(&key.to_bytes()[..]).unwrap();
        assert_eq!(key.verifying_key(), again.verifying_key());
        assert!(ServerKey::from_bytes(&[0; 31]).is_err());
        assert!(!format!("{key:?}").contains(&format!("{:?}", &key.to_bytes()[..])));
    }
}
