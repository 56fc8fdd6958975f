//! Random bearer secrets (refresh tokens) and their stored hashes.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// A bearer secret. Zeroized on drop; `Debug` never shows it.
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a secret string received from a client.
    pub fn new(text: String) -> Self {
        Self(zeroize::Zeroizing::new(text))
    }

    /// The secret text, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret: what a hearth stores. The secret has 256 random bits, so a
    /// fast hash is enough (unlike passwords).
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// 32 random bytes as unpadded base64url.
pub fn random_token() -> Secret {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    Secret::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// A random token a person pastes after a flag (`--token TOKEN`): like [`random_token`] but
/// never starting with `-`, which a command-line parser would take for another flag. One draw
/// in 64 is redrawn, which costs under 0.03 bits of the 256.
pub fn random_pasteable_token() -> Secret {
    loop {
        let token = random_token();
        if !token.expose().starts_with('-') {
            return token;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hidden_in_debug() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(format!("{a:?}"), "Secret(..)");
    }

    #[test]
    fn pasteable_tokens_never_look_like_a_flag() {
        // A plain token starts with '-' once in 64 draws: 4,096 draws all but surely meet one.
        for _ in 0..4096 {
            let token = random_pasteable_token();
            assert!(!token.expose().starts_with('-'));
            assert_eq!(token.expose().len(), 43);
        }
    }
}
