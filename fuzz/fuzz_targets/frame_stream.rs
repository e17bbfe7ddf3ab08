//! Fuzz target: `FrameDecoder` over a stream that arrives in chunks.
//!
//! The first input byte picks the payload cap, the next bytes the chunk sizes (see
//! `switchyard_fuzz::Plan`); the rest is the stream. Any input must decode without a panic,
//! every decoded frame must re-encode to exactly the bytes it consumed, and every error and
//! every wait must be the one the spec calls for (`switchyard_fuzz::drive_frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::fuzz_frame_stream(data));
