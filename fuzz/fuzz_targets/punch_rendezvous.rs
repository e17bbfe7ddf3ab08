//! Fuzz target: a rendezvous server (`Rendezvous`) with small limits against scripted
//! datagrams from a few sources — requests with colliding ids and tokens, other punch
//! messages, corrupted and raw bytes — and time (`switchyard_fuzz::punch_rendezvous`). It
//! must never panic, must keep the machine contract the checked driver asserts, must stay
//! within its caps, must answer only with valid punch messages of its own kinds, and must
//! let an id's endpoint change, or the id go, only on a request carrying the token that
//! registered it (or on expiry).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::punch_rendezvous::fuzz_punch_rendezvous(data));
