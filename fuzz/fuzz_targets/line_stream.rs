//! Fuzz target: `LineDecoder` with a small cap over a stream that arrives in chunks,
//! then `finish()` at its end.
//!
//! The first input byte picks the cap (0..=63), the next bytes the chunk sizes (see
//! `switchyard_fuzz::Plan`); the rest is the stream. Any input must decode without a panic;
//! every line must be at most the cap, hold no `\n`, and be exactly the consumed bytes less
//! their terminator; and errors and waits must be the ones the spec calls for
//! (`switchyard_fuzz::drive_lines`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::fuzz_line_stream(data));
