//! Fuzz target: the tunnel's remote end behind the TLS layer (`Tls<TunnelRemote>`), fed raw
//! bytes and real TLS clients' records cut, corrupted and reordered
//! (`switchyard_fuzz::tls`). The layer and the end must never panic and must keep the
//! machine contract while the end refuses what the clients send inside TLS.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::tls::fuzz_tls_tunnel_remote(data);
});
