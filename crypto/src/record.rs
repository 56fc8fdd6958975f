//! Signing and opening the self-signed hearth records published in the DHT.

use hearth_spec::discovery::{
    HearthRecord, KeyProof, key_proof_message, record_signing_message, split_record,
};
use hearth_spec::federation::{FedDecodeError, SignedEnvelope};
use hearth_spec::{PublicKey, ServerName};

use crate::key::{ServerKey, verify, verifying_key};

/// Why a signed record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("malformed record: {0}")]
    Malformed(#[from] FedDecodeError),
    #[error("the record's key is not a valid ed25519 key")]
    BadKey,
    #[error("the record's signature does not verify with its key")]
    BadSignature,
}

/// Signs `record` with `key` (which must be the record's key): `signature || encoded`.
pub fn sign_record(key: &ServerKey, record: &HearthRecord) -> Vec<u8> {
    debug_assert_eq!(
        record.key,
        key.public_key(),
        "a record is signed by its own key"
    );
    let encoded = record.encode();
    let signature = key.sign(&record_signing_message(&encoded));
    SignedEnvelope::join(&signature, &encoded)
}

/// Decodes a signed record and checks it is signed by the key it names. Says nothing about
/// whether that key really belongs to the name: that is the directory's call.
pub fn open_record(bytes: &[u8]) -> Result<HearthRecord, RecordError> {
    let (signature, encoded) = split_record(bytes)?;
    let record = HearthRecord::decode(encoded)?;
    let key = verifying_key(&record.key).ok_or(RecordError::BadKey)?;
    verify(&key, &record_signing_message(encoded), signature)
        .map_err(|_| RecordError::BadSignature)?;
    Ok(record)
}

/// `old` signs over `name` to `new_key`.
pub fn sign_key_proof(
    old: &ServerKey,
    name: &ServerName,
    new_key: &PublicKey,
    old_valid_until_ms: u64,
) -> KeyProof {
    let old_key = old.public_key();
    KeyProof {
        old_key,
        old_valid_until_ms,
        signature: old
            .sign(&key_proof_message(
                name,
                &old_key,
                new_key,
                old_valid_until_ms,
            ))
            .to_vec(),
    }
}

/// Whether `proof` is `proof.old_key`'s signature handing `name` over to `new_key`.
pub fn verify_key_proof(name: &ServerName, new_key: &PublicKey, proof: &KeyProof) -> bool {
    let Some(old) = verifying_key(&proof.old_key) else {
        return false;
    };
    verify(
        &old,
        &key_proof_message(name, &proof.old_key, new_key, proof.old_valid_until_ms),
        &proof.signature,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::hex;
    use hearth_spec::ServerName;
    use hearth_spec::discovery::{RECORD_VERSION, key_key, name_key};

    fn sample(key: &ServerKey) -> HearthRecord {
        HearthRecord {
            version: RECORD_VERSION,
            name: ServerName::parse("eu.example.org").unwrap(),
            key: key.public_key(),
            address: "192.0.2.7:7443".parse().unwrap(),
            issued_ms: 1_795_000_000_000,
            previous: None,
        }
    }

    /// The record after a rotation from the key of seed 0x10.. to the key of seed 0x11...
    fn rotated_sample(key: &ServerKey) -> HearthRecord {
        let old = ServerKey::from_bytes(&[0x10; 32]).unwrap();
        let mut record = sample(key);
        record.previous = Some(sign_key_proof(
            &old,
            &record.name,
            &key.public_key(),
            1_795_600_000_000,
        ));
        record
    }

    #[test]
    fn a_key_proof_binds_name_old_key_and_new_key() {
        let key = ServerKey::from_bytes(&[0x11; 32]).unwrap();
        let record = rotated_sample(&key);
        let proof = record.previous.clone().unwrap();
        assert!(verify_key_proof(&record.name, &key.public_key(), &proof));
        let other = ServerName::parse("us.example.org").unwrap();
        assert!(!verify_key_proof(&other, &key.public_key(), &proof));
        assert!(!verify_key_proof(
            &record.name,
            &hearth_spec::PublicKey([7; 32]),
            &proof
        ));
        let mut later = proof.clone();
        later.old_valid_until_ms += 1;
        assert!(!verify_key_proof(&record.name, &key.public_key(), &later));
        let signed = sign_record(&key, &record);
        assert_eq!(open_record(&signed), Ok(record));
    }

    #[test]
    fn a_record_opens_and_every_tampering_is_refused() {
        let key = ServerKey::from_bytes(&[0x11; 32]).unwrap();
        let record = sample(&key);
        let signed = sign_record(&key, &record);
        assert_eq!(open_record(&signed), Ok(record.clone()));
        for i in 0..signed.len() {
            let mut bad = signed.clone();
            bad[i] ^= 0x01;
            assert!(open_record(&bad).is_err(), "flipped byte {i} accepted");
        }
        // Signed by another key than the one it names.
        let other = ServerKey::from_bytes(&[0x12; 32]).unwrap();
        let encoded = record.encode();
        let forged = SignedEnvelope::join(&other.sign(&record_signing_message(&encoded)), &encoded);
        assert_eq!(open_record(&forged), Err(RecordError::BadSignature));
        // A federation-envelope signature over the same bytes is not a record signature.
        let cross = SignedEnvelope::join(
            &key.sign(&hearth_spec::federation::signing_message(&encoded)),
            &encoded,
        );
        assert_eq!(open_record(&cross), Err(RecordError::BadSignature));
        assert!(matches!(
            open_record(&vec![0; 2000]),
            Err(RecordError::Malformed(FedDecodeError::TooLarge(2000)))
        ));
        assert!(matches!(
            open_record(&[0; 10]),
            Err(RecordError::Malformed(FedDecodeError::Truncated))
        ));
    }

    /// Checks `spec/vectors/discovery.json` byte for byte. Regenerate (only when the format
    /// changes on purpose) with `HEARTH_REGEN_VECTORS=1 cargo test -p hearth-crypto`.
    #[test]
    fn discovery_vectors_match_byte_for_byte() {
        let key = ServerKey::from_bytes(&[0x11; 32]).unwrap();
        let record = sample(&key);
        let rotated = rotated_sample(&key);
        let computed = format!(
            "{{\n  \"signing_key_seed_hex\": \"{}\",\n  \"public_key_hex\": \"{}\",\n  \"record\": {{\n    \"description\": \"eu.example.org at 192.0.2.7:7443, issued 1795000000000\",\n    \"encoded_hex\": \"{}\",\n    \"signed_hex\": \"{}\",\n    \"name_key_hex\": \"{}\",\n    \"key_key_hex\": \"{}\"\n  }},\n  \"rotated_record\": {{\n    \"description\": \"the same after a rotation from the key of seed 0x10.. (valid until 1795600000000)\",\n    \"old_public_key_hex\": \"{}\",\n    \"key_proof_message_hex\": \"{}\",\n    \"signed_hex\": \"{}\"\n  }}\n}}\n",
            hex(&[0x11; 32]),
            hex(key.public_key().as_bytes()),
            hex(&record.encode()),
            hex(&sign_record(&key, &record)),
            hex(&name_key(&record.name)),
            hex(&key_key(&record.key)),
            hex(ServerKey::from_bytes(&[0x10; 32])
                .unwrap()
                .public_key()
                .as_bytes()),
            hex(&key_proof_message(
                &rotated.name,
                &ServerKey::from_bytes(&[0x10; 32]).unwrap().public_key(),
                &rotated.key,
                1_795_600_000_000
            )),
            hex(&sign_record(&key, &rotated)),
        );
        crate::vectors::check_file("discovery.json", &computed);
    }
}
