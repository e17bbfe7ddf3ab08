//! Fuzz target: a mesh server (`MeshServer`) with small limits against scripted users,
//! peers and garbage (`switchyard_fuzz::mesh_server`): registrations, claims, messages,
//! receipts, dials answered or failed, closes either way, stale reports, raw bytes and
//! time. The server must never panic, must keep the machine contract the checked driver
//! asserts, and must stay within its caps.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::mesh_server::fuzz_mesh_server(data));
