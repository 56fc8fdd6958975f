//! Signing and verifying federation envelopes, and the key encodings TLS needs.

use hearth_spec::PublicKey;
use hearth_spec::federation::{FedEnvelope, SIGNATURE_LEN, SignedEnvelope, signing_message};

use crate::key::{ServerKey, VerifyError, VerifyingKey, verify};

/// Encodes `envelope`, signs the exact bytes (after the signing context) and returns the wire
/// form `signature || encoded`. The envelope must name this key as its signer.
pub fn sign_envelope(key: &ServerKey, envelope: &FedEnvelope) -> Vec<u8> {
    debug_assert_eq!(envelope.signer, key.public_key(), "signer must be this key");
    let encoded = envelope.encode();
    let signature = key.sign(&signing_message(&encoded));
    SignedEnvelope::join(&signature, &encoded)
}

/// Verifies a signed envelope's signature over the bytes as received.
pub fn verify_envelope(key: &VerifyingKey, signed: &SignedEnvelope<'_>) -> Result<(), VerifyError> {
    verify(
        key,
        &signing_message(signed.encoded),
        &signed.signature[..SIGNATURE_LEN],
    )
}

/// Verifies many signed envelopes at once (ed25519 batch verification, about twice as fast per
/// signature); if the batch fails, each is verified alone to find the bad ones. Returns one
/// verdict per item, in order.
pub fn verify_envelopes(items: &[(VerifyingKey, SignedEnvelope<'_>)]) -> Vec<bool> {
    let messages: Vec<Vec<u8>> = items
        .iter()
        .map(|(_, signed)| signing_message(signed.encoded))
        .collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, signed)| ed25519_dalek::Signature::from_bytes(signed.signature))
        .collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(key, _)| *key).collect();
    if !items.is_empty() && ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_ok() {
        return vec![true; items.len()];
    }
    items
        .iter()
        .map(|(key, signed)| verify_envelope(key, signed).is_ok())
        .collect()
}

/// The DER prefix of an ed25519 private key in PKCS#8 v1 (RFC 8410, section 7); the 32-byte
/// seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410, section 4); the 32-byte key
/// follows.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl ServerKey {
    /// The private key as PKCS#8 DER, for TLS certificates.
    pub fn pkcs8_der(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut der = zeroize::Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(&self.to_bytes()[..]);
        der
    }
}

/// The raw ed25519 key inside a SubjectPublicKeyInfo, if it is exactly an ed25519 key.
pub fn ed25519_from_spki(spki: &[u8]) -> Option<PublicKey> {
    let key = spki.strip_prefix(&SPKI_ED25519_PREFIX[..])?;
    key.try_into().ok().map(PublicKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_spec::ServerName;
    use hearth_spec::federation::{FED_VERSION, FedBody};

    fn envelope(key: &ServerKey) -> FedEnvelope {
        FedEnvelope {
            version: FED_VERSION,
            origin: ServerName::parse("a.example").unwrap(),
            destination: ServerName::parse("b.example").unwrap(),
            signer: key.public_key(),
            origin_ts: 1,
            nonce: 2,
            body: FedBody::Submit { event: vec![1] },
        }
    }

    #[test]
    fn signed_envelope_verifies_and_any_flipped_bit_fails() {
        let key = ServerKey::generate();
        let wire = sign_envelope(&key, &envelope(&key));
        let signed = SignedEnvelope::split(&wire).unwrap();
        assert_eq!(verify_envelope(&key.verifying_key(), &signed), Ok(()));
        for at in [0, 63, 64, wire.len() - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 1;
            let signed = SignedEnvelope::split(&bad).unwrap();
            assert!(verify_envelope(&key.verifying_key(), &signed).is_err());
        }
    }

    #[test]
    fn batch_verification_finds_the_one_bad_signature() {
        let key = ServerKey::generate();
        let wires: Vec<Vec<u8>> = (0..5)
            .map(|_| sign_envelope(&key, &envelope(&key)))
            .collect();
        let mut wires = wires;
        wires[3][10] ^= 1;
        let items: Vec<_> = wires
            .iter()
            .map(|w| (key.verifying_key(), SignedEnvelope::split(w).unwrap()))
            .collect();
        assert_eq!(verify_envelopes(&items), [true, true, true, false, true]);
        assert!(verify_envelopes(&[]).is_empty());
    }

    #[test]
    fn spki_prefix_round_trip() {
        let key = ServerKey::generate();
        let mut spki = SPKI_ED25519_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_bytes());
        assert_eq!(ed25519_from_spki(&spki), Some(key.public_key()));
        assert_eq!(ed25519_from_spki(&spki[1..]), None);
        spki.push(0);
        assert_eq!(ed25519_from_spki(&spki), None);
    }
}

/// Checks `spec/vectors/federation.json` byte for byte: encoding, signature, wire form.
/// Regenerate (only when the format changes on purpose) with
/// `HEARTH_REGEN_VECTORS=1 cargo test -p hearth-crypto`.
#[cfg(test)]
mod vectors {
    use super::*;
    use crate::vectors::hex;
    use hearth_spec::client::{PresenceState, ReceiptKind};
    use hearth_spec::federation::{FED_VERSION, FedBody, Signal};
    use hearth_spec::{RoomId, ServerName, UserId};

    fn samples(key: &ServerKey) -> Vec<(&'static str, FedEnvelope)> {
        let base = |body| FedEnvelope {
            version: FED_VERSION,
            origin: ServerName::parse("eu.example.org").unwrap(),
            destination: ServerName::parse("us.example.org").unwrap(),
            signer: key.public_key(),
            origin_ts: 1_795_000_000_000,
            nonce: 0x0102_0304_0506_0708,
            body,
        };
        let room = RoomId::parse("!r1:us.example.org").unwrap();
        let user = UserId::parse("@alice:eu.example.org").unwrap();
        // The destination's key, and an ephemeral secret fixed for the vector (never in use).
        let destination_key = ServerKey::from_bytes(&[0x22; 32]).unwrap().public_key();
        let sealed = crate::seal_with(
            x25519_dalek::StaticSecret::from([0x33; 32]),
            &destination_key,
            &ServerName::parse("us.example.org").unwrap(),
            b"a signed envelope for us.example.org",
        )
        .unwrap();
        vec![
            (
                "submit an event to its room's home",
                base(FedBody::Submit {
                    event: vec![1, 2, 3],
                }),
            ),
            (
                "a sequenced event for a member hearth",
                base(FedBody::Sequenced {
                    seq: 300,
                    event: vec![4, 5],
                }),
            ),
            (
                "a key rotation",
                base(FedBody::KeyRotation {
                    new_key: hearth_spec::PublicKey([9; 32]),
                    old_valid_until_ms: 1_796_000_000_000,
                }),
            ),
            (
                "ephemeral signals: typing, a read receipt, presence (shown, then hidden)",
                base(FedBody::Ephemeral {
                    signals: vec![
                        Signal::Typing {
                            room: room.clone(),
                            user: user.clone(),
                            typing: true,
                        },
                        Signal::Receipt {
                            room,
                            user: user.clone(),
                            kind: ReceiptKind::Read,
                            seq: 42,
                        },
                        Signal::Presence {
                            user: user.clone(),
                            state: PresenceState::Online,
                            last_seen_ms: Some(1_795_000_000_000),
                        },
                        Signal::Presence {
                            user,
                            state: PresenceState::Offline,
                            last_seen_ms: None,
                        },
                    ],
                }),
            ),
            (
                "custody: hold a sealed envelope for us.example.org (sealed to the key of seed 0x22.., ephemeral secret 0x33..)",
                base(FedBody::Custody {
                    destination: ServerName::parse("us.example.org").unwrap(),
                    sealed: sealed.clone(),
                }),
            ),
            (
                "relayed: the same sealed envelope handed over for its origin",
                base(FedBody::Relayed {
                    origin: ServerName::parse("eu.example.org").unwrap(),
                    sealed,
                }),
            ),
            (
                "claim key packages of two devices of a user of the destination",
                base(FedBody::ClaimKeyPackages {
                    user: UserId::parse("@bob:us.example.org").unwrap(),
                    devices: Some(vec![
                        hearth_spec::DeviceId::parse("DEVICEONE").unwrap(),
                        hearth_spec::DeviceId::parse("DEVICETWO").unwrap(),
                    ]),
                }),
            ),
            (
                "fetch the second 512 KiB of an attachment blob",
                base(FedBody::FetchMedia {
                    media_id: [0xab; 32],
                    offset: 524_288,
                    len: 524_288,
                }),
            ),
            (
                "query the end-to-end devices of two users of the destination",
                base(FedBody::QueryDevices {
                    users: vec![
                        UserId::parse("@bob:us.example.org").unwrap(),
                        UserId::parse("@carol:us.example.org").unwrap(),
                    ],
                }),
            ),
        ]
    }

    #[test]
    fn federation_vectors_match_byte_for_byte() {
        let key = ServerKey::from_bytes(&[0x11; 32]).unwrap();
        let mut lines = vec![format!(
            "{{\n  \"signing_key_seed_hex\": \"{}\",\n  \"public_key_hex\": \"{}\",\n  \"vectors\": [",
            hex(&[0x11; 32]),
            hex(key.public_key().as_bytes())
        )];
        let samples = samples(&key);
        for (i, (description, envelope)) in samples.iter().enumerate() {
            let wire = sign_envelope(&key, envelope);
            let comma = if i + 1 < samples.len() { "," } else { "" };
            lines.push(format!(
                "    {{\n      \"description\": \"{description}\",\n      \"encoded_hex\": \"{}\",\n      \"wire_hex\": \"{}\"\n    }}{comma}",
                hex(&envelope.encode()),
                hex(&wire)
            ));
            let split = SignedEnvelope::split(&wire).unwrap();
            assert_eq!(FedEnvelope::decode(split.encoded).unwrap(), *envelope);
            assert!(verify_envelope(&key.verifying_key(), &split).is_ok());
        }
        lines.push("  ]\n}\n".into());
        let computed = lines.join("\n");
        crate::vectors::check_file("federation.json", &computed);
    }
}
