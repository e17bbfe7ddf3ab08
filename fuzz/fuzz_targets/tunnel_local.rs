//! Fuzz target: the tunnel's local end (`TunnelLocal`) against a scripted remote end and
//! scripted clients.
//!
//! The input picks the end's limits, then a script: carrier connects that succeed or fail,
//! well-formed carrier messages with arbitrary fields (a challenge with a right or wrong
//! proof, welcome, data within or past the credit, windows, fins, resets, refusals,
//! heartbeats, messages out of turn), raw garbage, chunks of carrier bytes of any size,
//! clients on the prefix entrance, the static forward and unknown listeners sending
//! prefixes, digits and data, ends and resets, `Sent` reports, stale reports, and time
//! (`switchyard_fuzz::tunnel::script`). The end must never panic and must keep every rule
//! the checked driver and the tunnel book assert.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::tunnel::script::fuzz_tunnel_local(data));
