//! Fuzz target: the tunnel's remote end (`TunnelRemote`) against scripted local ends and
//! route targets.
//!
//! The input picks the end's limits, then a script: well-formed carrier messages with
//! arbitrary fields (authentication with right or wrong proofs, opens, data within or past
//! the credit, windows, fins, resets, heartbeats, publish requests and the answers to the
//! listens they cause, messages out of turn), raw garbage, chunks
//! of carrier bytes of any size, target connects, reads, ends and resets, `Sent` reports,
//! stale reports, and time (`switchyard_fuzz::tunnel::script`). The end must never panic
//! and must keep every rule the checked driver and the tunnel book assert: ids, credit both
//! ways, bytes intact, closes, streams 0 after the carrier closes, deadlines that move on.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::tunnel::script::fuzz_tunnel_remote(data));
