//! Signed federation envelopes: splitting, decoding and verifying arbitrary bytes never panics,
//! and whatever decodes re-encodes to exactly the bytes it came from (canonical form).
#![no_main]

use hearth_spec::federation::{FedEnvelope, SignedEnvelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedEnvelope::split(data) {
        if let Ok(envelope) = FedEnvelope::decode(signed.encoded) {
            assert_eq!(envelope.encode(), signed.encoded);
            if let Some(key) = hearth_crypto::verifying_key(&envelope.signer) {
                let _ = hearth_crypto::verify_envelope(&key, &signed);
            }
        }
    }
    if let Ok(envelope) = FedEnvelope::decode(data) {
        assert_eq!(envelope.encode(), data);
    }
});
