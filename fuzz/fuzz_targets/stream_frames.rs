//! Batch streams and stream replies: arbitrary bytes never panic, and frames that split
//! re-join to the same stream.
#![no_main]

use hearth_spec::federation::{StreamReply, push_frame, split_frames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = split_frames(data) {
        let mut again = Vec::new();
        for frame in &frames {
            push_frame(&mut again, frame);
        }
        assert_eq!(again, data);
    }
    let _ = StreamReply::decode(data);
});
