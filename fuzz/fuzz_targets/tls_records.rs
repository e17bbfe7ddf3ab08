//! Fuzz target: TLS records past the handshake with any inner content, sealed by a real
//! session and cut anywhere on the way to the other (`switchyard_fuzz::tls`). Opening them
//! must never panic, and plain application data must arrive intact.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = switchyard_fuzz::tls::fuzz_tls_records(data);
});
