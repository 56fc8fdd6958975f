//! The self-signed certificate that carries a hearth's key in TLS, and the crypto provider.
//! Both the key ring (which presents certificates) and the TLS verifiers (which read them) use
//! these.

use std::sync::Arc;

use hearth_crypto::{ServerKey, ed25519_from_spki};
use hearth_spec::PublicKey;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name every certificate carries and every dialler asks for; identity is the key.
pub const TLS_NAME: &str = "hearth.invalid";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The provider for federation TLS: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A self-signed certificate for `key`.
pub fn certificate(
    key: &ServerKey,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let pkcs8 = key.pkcs8_der();
    let der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)?;
    let params = rcgen::CertificateParams::new(vec![TLS_NAME.to_owned()])?;
    let cert = params.self_signed(&pair)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
}

/// The ed25519 key a certificate carries.
pub fn certificate_key(cert: &CertificateDer<'_>) -> Option<PublicKey> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    ed25519_from_spki(parsed.subject_public_key_info().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_server_key() {
        let key = ServerKey::generate();
        let (cert, _) = certificate(&key).unwrap();
        assert_eq!(certificate_key(&cert), Some(key.public_key()));
    }
}
