//! Mutual TLS 1.3 bound to hearth keys.
//!
//! Each hearth presents a self-signed certificate whose subject key is its ed25519 server key.
//! There is no certificate authority: a side accepts the other only if the certificate's key is
//! the key its directory holds for that hearth, and TLS itself proves the peer holds the private
//! half (the handshake signature is checked against that key). The dialler knows which hearth it
//! called; the listener learns who called from the key.

use std::sync::{Arc, RwLock};

use hearth_spec::ServerName;
use hearth_spec::federation::RejectCode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::clock::now_ms;
use crate::directory::Directory;
use crate::keyring::KeyRing;

/// ALPN protocol id of Hearth federation.
pub const ALPN: &[u8] = b"hearth-fed/1";

pub use crate::cert::{TLS_NAME, TlsError, certificate, certificate_key, provider};

fn bad_cert(reason: &'static str) -> rustls::Error {
    rustls::Error::General(reason.to_owned())
}

/// Accepts a certificate whose key the directory holds: for `expected` when dialling it, or for
/// any configured peer when a caller connects. One type serves both TLS roles.
#[derive(Debug)]
pub struct KeyVerifier {
    /// The hearth dialled; `None` on the listening side.
    expected: Option<ServerName>,
    /// Listening side only: also take callers whose key the directory does not hold yet (the
    /// transport then looks the key up in the DHT before serving the connection).
    strangers: bool,
    directory: Arc<RwLock<Directory>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl KeyVerifier {
    /// The dialler's check: the listener must hold the key the directory has for `expected`.
    pub fn dialling(expected: ServerName, directory: Arc<RwLock<Directory>>) -> Self {
        Self::new(Some(expected), false, directory)
    }

    /// The listener's check: the caller must present a current key of some known hearth, or,
    /// with `strangers`, any ed25519 key it proves it holds (revoked keys never).
    pub fn listening(strangers: bool, directory: Arc<RwLock<Directory>>) -> Self {
        Self::new(None, strangers, directory)
    }

    fn new(
        expected: Option<ServerName>,
        strangers: bool,
        directory: Arc<RwLock<Directory>>,
    ) -> Self {
        Self {
            expected,
            strangers,
            directory,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    fn check_key(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let key = certificate_key(cert).ok_or_else(|| bad_cert("not an ed25519 key"))?;
        let directory = self.directory.read().expect("directory lock");
        let known = match &self.expected {
            Some(expected) => directory.check_signer(expected, &key, now_ms()).is_ok(),
            None => match directory.owner(&key, now_ms()) {
                Ok(_) => true,
                Err(RejectCode::UnknownKey) => self.strangers,
                Err(_) => false,
            },
        };
        if known {
            Ok(())
        } else {
            Err(bad_cert("the peer's key is not a key we hold for it"))
        }
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(bad_cert(
                "hearth federation signs handshakes with ed25519 only",
            ));
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for KeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_key(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(bad_cert("hearth federation is TLS 1.3 only"))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for KeyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_key(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(bad_cert("hearth federation is TLS 1.3 only"))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The listener's TLS configuration; the certificate comes from `keys` at each handshake.
pub fn server_config(
    keys: Arc<KeyRing>,
    strangers: bool,
    directory: Arc<RwLock<Directory>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(KeyVerifier::listening(strangers, directory)))
        .with_cert_resolver(keys);
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The dialler's TLS configuration for calling `peer`.
pub fn client_config(
    keys: Arc<KeyRing>,
    peer: ServerName,
    directory: Arc<RwLock<Directory>>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(KeyVerifier::dialling(peer, directory)))
        .with_client_cert_resolver(keys);
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
