//! Fuzz target: punch datagrams (`PunchMsg::from_datagram`) on arbitrary bytes.
//!
//! The input is a mode byte and one datagram (an even mode fixes up the frame's length
//! field first). The datagram must be judged without a panic, the same way as an
//! independent reading of the frame (`docs/PROTOCOL.md` §2) and of the punch message table
//! (`core/src/wire/punch.rs`) judges it (valid, or which rule it breaks), and every
//! accepted message must re-encode (`PunchMsg::to_bytes`) to exactly the datagram
//! (`switchyard_fuzz::punch::check_punch_datagram`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::punch::fuzz_punch_msg(data));
