//! Fuzz target: `Frame::from_datagram`.
//!
//! The first input byte picks the payload cap; the rest is one datagram. Any input must be
//! judged without a panic; an accepted frame must re-encode to the datagram, and the
//! verdict must agree with a `FrameDecoder` fed the same bytes
//! (`switchyard_fuzz::check_datagram`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::fuzz_frame_datagram(data));
