//! Fuzz target: PROXY protocol headers (`wire::proxy::decode`) on arbitrary bytes.
//!
//! Every input must be judged without a panic; the decoder may ask for more bytes only
//! while a header could still fit, every proper prefix of an accepted header must ask for
//! more, and what it reads must re-encode to a header that reads the same
//! (`switchyard_fuzz::tunnel::proxy::check_decode`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::tunnel::proxy::fuzz_proxy_header(data));
