//! Fuzz target: mesh messages (`MeshMsg::decode`) on every frame of a stream.
//!
//! The input is a stream of frames of the shared format. Each whole frame must be judged
//! without a panic, the same way as an independent reading of `docs/PROTOCOL.md` §4 judges
//! it (valid, or which rule it breaks), and every accepted message must re-encode
//! (`MeshMsg::to_bytes`) to exactly the frame's bytes
//! (`switchyard_fuzz::mesh::check_mesh_frame`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::mesh::fuzz_mesh_msg(data));
