//! Access tokens: `hat1.<claims>.<signature>`, both unpadded base64url. The claims are postcard
//! (user, device, expiry ms) and the signature is the hearth's ed25519 signature over a domain
//! label and the claim bytes. Verification needs no storage; revocation is checked against the
//! in-memory set of live devices.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hearth_crypto::{ServerKey, VerifyingKey};
use hearth_spec::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "hat1.";
const DOMAIN: &[u8] = b"hearth access token v1\0";
/// Longer tokens are rejected before any decoding.
const MAX_TOKEN_LEN: usize = 1024;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub user: UserId,
    pub device: DeviceId,
    pub expires_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("access token is malformed")]
    Malformed,
    #[error("access token signature does not verify")]
    BadSignature,
    #[error("access token has expired")]
    Expired,
}

fn signed_bytes(claims: &[u8]) -> Vec<u8> {
    [DOMAIN, claims].concat()
}

/// Issues a token for `claims`.
pub fn issue(key: &ServerKey, claims: &Claims) -> String {
    let bytes = postcard::to_stdvec(claims).expect("claims encode");
    let signature = key.sign(&signed_bytes(&bytes));
    format!(
        "{PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(&bytes),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Verifies a token's form, signature and expiry.
pub fn verify(key: &VerifyingKey, token: &str, now_ms: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (claims_b64, sig_b64) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed)?;
    hearth_crypto::verify(key, &signed_bytes(&bytes), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = postcard::from_bytes(&bytes).map_err(|_| TokenError::Malformed)?;
    if claims.expires_ms <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_ms: u64) -> Claims {
        Claims {
            user: UserId::parse("@a:localhost").unwrap(),
            device: DeviceId::parse("D1").unwrap(),
            expires_ms,
        }
    }

    #[test]
    fn issued_token_verifies_until_it_expires() {
        let key = ServerKey::generate();
        let token = issue(&key, &claims(1_000));
        assert_eq!(verify(&key.verifying_key(), &token, 999), Ok(claims(1_000)));
        assert_eq!(
            verify(&key.verifying_key(), &token, 1_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let key = ServerKey::generate();
        let token = issue(&key, &claims(u64::MAX));
        let other = ServerKey::generate();
        assert_eq!(
            verify(&other.verifying_key(), &token, 0),
            Err(TokenError::BadSignature)
        );
        // Swap in claims for another user, keeping the signature.
        let forged_claims = Claims {
            user: UserId::parse("@root:localhost").unwrap(),
            ..claims(u64::MAX)
        };
        let forged_bytes = postcard::to_stdvec(&forged_claims).unwrap();
        let sig = token.rsplit('.').next().unwrap();
        let forged = format!("{PREFIX}{}.{sig}", URL_SAFE_NO_PAD.encode(forged_bytes));
        assert_eq!(
            verify(&key.verifying_key(), &forged, 0),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "hat1.", "hat1.x.y", "Bearer x", &"a".repeat(5000)] {
            assert!(verify(&key.verifying_key(), junk, 0).is_err());
        }
    }
}
