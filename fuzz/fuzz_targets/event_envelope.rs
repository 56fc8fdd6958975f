//! Event envelopes (what a `Submit` or `Sequenced` body carries): never panic, canonical.
#![no_main]

use hearth_spec::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        assert_eq!(envelope.encode(), data);
    }
});
