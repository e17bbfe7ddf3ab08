//! Fuzz target: a hole-punching peer (`Peer`) with small limits and short timers against
//! scripted rendezvous answers, peer-to-peer messages (acknowledging its own probes and
//! data, directly and through the relay), corrupted and raw bytes, `connect`, `send`,
//! `leave` and time (`switchyard_fuzz::punch_peer`). It must never panic, must keep the
//! machine contract the checked driver asserts, must send only valid punch messages where
//! the protocol allows them, and must keep `unacked() <= max_unacked`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::punch_peer::fuzz_punch_peer(data));
