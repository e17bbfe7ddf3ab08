//! Fuzz target: a line service behind the TLS layer, fed raw bytes and real TLS clients'
//! records cut, corrupted and reordered (`switchyard_fuzz::tls`). The layer must never
//! panic, must keep the machine contract, and must give an untampered client its echoes.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::tls::fuzz_tls_server(data);
});
