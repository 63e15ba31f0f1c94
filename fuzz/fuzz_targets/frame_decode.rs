//! Frame decoding on arbitrary bytes: never panic, never over-allocate (libFuzzer's -rss_limit_mb
//! and -malloc_limit_mb catch that), and every accepted frame is canonical.
#![no_main]

use cnnpc::onnx::frame::{peek_declared_len, Frame, FrameLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer explores limit edges instead of big buffers.
    let limits = FrameLimits {
        max_rank: 8,
        max_elements: 1 << 16,
        max_payload_bytes: 1 << 18,
        max_decompressed_bytes: 1 << 18,
    };
    let peeked = peek_declared_len(data);
    let checked = limits.check_prefix(data);
    if let Ok(frame) = Frame::decode(data, &limits) {
        assert_eq!(
            frame.encode(),
            data,
            "accepted frames re-encode identically"
        );
        // The prefix checks a server runs first must not refuse what decode accepts.
        assert_eq!(peeked, Ok(Some(data.len() as u64)));
        assert_eq!(checked, Ok(Some(data.len() as u64)));
        if let Ok(values) = frame.to_f32() {
            assert_eq!(values.len(), frame.shape().iter().product::<usize>());
        }
    }
});
