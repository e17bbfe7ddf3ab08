//! Fuzz target: a mesh server behind the TLS layer (`Tls<MeshServer>`), its user and peer
//! listeners served over TLS and its seed dialled over TLS, fed raw bytes on accepted and
//! dialled connections and real TLS clients' records cut, corrupted and reordered
//! (`switchyard_fuzz::tls`). Nothing may panic and the machine contract must hold.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::tls::fuzz_tls_mesh_server(data);
});
