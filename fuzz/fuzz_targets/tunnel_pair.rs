//! Fuzz target: a local and a remote tunnel end wired together in memory.
//!
//! The input picks the multiplexer's limits, a schedule seed and up to eight streams
//! (entry, bytes each way, who shuts first) (`switchyard_fuzz::tunnel::pair`). Every byte
//! must reach the right target and come back intact, once and in order, half-closes must
//! pass end to end, no stream may stall, and both ends must finish with nothing open; the
//! checked driver and the tunnel book watch both ends at every step.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::tunnel::pair::fuzz_tunnel_pair(data));
