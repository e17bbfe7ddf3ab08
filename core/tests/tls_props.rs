//! Property tests for the TLS layer around a line service, the tunnel's remote end and a
//! mesh server, through the harness shared with the `tls_server`, `tls_tunnel_remote`,
//! `tls_mesh_server` and `tls_records` fuzz targets (`fuzz/src/tls.rs`, included below):
//! arbitrary bytes and real clients' records, cut and corrupted, never panic the layer or
//! break the machine contract, and a client nobody tampered with gets its echoes intact;
//! records past the handshake with any inner content never panic it either.
//!
//! `QUICKCHECK_TESTS=N` runs N cases per property (by default 200).

// The TLS harness reads no connection's address; the other harnesses do.
#[allow(dead_code)]
#[path = "../../fuzz/src/driver.rs"]
mod driver;
mod support;
#[path = "../../fuzz/src/tls.rs"]
mod tls;

use quickcheck::{Arbitrary, Gen};
use support::{below, check};

/// Script steps biased towards the ones that carry real clients' records, so most cases
/// get past the handshake: (op, arg) pairs as `fuzz_tls_server` reads them.
#[derive(Clone, Debug)]
struct Steps(Vec<u8>);

impl Arbitrary for Steps {
    fn arbitrary(g: &mut Gen) -> Self {
        let mut bytes = vec![u8::arbitrary(g)];
        for _ in 0..below(g, 60) {
            let op = match below(g, 20) {
                0 => 0,
                1 => 1,
                2..=3 => 2,
                4..=8 => 3,
                9 => 4,
                10..=14 => 5,
                15..=16 => 6,
                17 => 7,
                18 => 8,
                _ => 9,
            };
            bytes.extend([op, u8::arbitrary(g)]);
            // Op 1 reads a length and that many bytes; ops 3 and 4 a length and a flip.
            match op {
                1 => {
                    let n = below(g, 40) as u8;
                    bytes.push(n);
                    bytes.extend((0..=n).map(|_| u8::arbitrary(g)));
                }
                3 | 4 => bytes.extend([u8::arbitrary(g), u8::arbitrary(g)]),
                _ => {}
            }
        }
        Steps(bytes)
    }
}

/// Catches: a panic or a contract breach in the TLS layer on bytes no client would send.
#[test]
fn arbitrary_bytes_never_break_the_tls_layer() {
    fn property(data: Vec<u8>) -> bool {
        tls::fuzz_tls_server(&data);
        true
    }
    check(200, property as fn(Vec<u8>) -> bool);
}

/// Catches: a client whose records arrive cut at any boundary (but unchanged) losing or
/// garbling its echoes, and any record corruption that panics the layer.
#[test]
fn real_clients_cut_and_corrupted_never_break_the_tls_layer() {
    fn property(steps: Steps) -> bool {
        tls::fuzz_tls_server(&steps.0);
        true
    }
    check(200, property as fn(Steps) -> bool);
}

/// Catches: a harness that never gets a client through the handshake (the properties above
/// would then check nothing of the application data).
#[test]
fn a_plain_script_gets_a_client_through_the_handshake_to_its_echo() {
    let reached = tls::fuzz_tls_server(&handshake_then_two_lines());
    assert_eq!(reached.echoed, 1, "the client's two lines came back: {reached:?}");
}

/// A client; its hello to the server (64 bytes at a time); the server's answer to it; its
/// Finished to the server; two lines; and the rest delivered by the harness's ending.
fn handshake_then_two_lines() -> Vec<u8> {
    let mut script = vec![1, 2, 5];
    for _ in 0..8 {
        script.extend([3, 0, 63, 0]);
    }
    script.extend([5, 0]);
    for _ in 0..8 {
        script.extend([3, 0, 63, 0]);
    }
    script.extend([6, 0, 6, 0]);
    script
}

/// Catches: a TLS layer that does not pass the tunnel end's plaintext in, or its refusal
/// and close out: a client that completed the handshake and sent text where the tunnel's
/// authentication belongs is ended by the end, through TLS.
#[test]
fn the_tunnel_end_behind_tls_refuses_and_ends_a_client_that_speaks_no_tunnel() {
    let reached = tls::fuzz_tls_tunnel_remote(&handshake_then_two_lines());
    assert_eq!((reached.secured, reached.ended_by_server), (1, 1), "{reached:?}");
}

/// Catches: a panic or a contract breach in the TLS-wrapped tunnel end or mesh server on
/// real clients' records cut and corrupted, raw bytes, and (mesh) answers to its dials.
#[test]
fn real_clients_cut_and_corrupted_never_break_the_wrapped_tunnel_end_or_mesh_server() {
    fn property(steps: Steps) -> bool {
        tls::fuzz_tls_tunnel_remote(&steps.0);
        tls::fuzz_tls_mesh_server(&steps.0);
        true
    }
    check(200, property as fn(Steps) -> bool);
}

/// Catches the same for the mesh server: a client through the handshake whose text is no
/// mesh message is ended by the server, through TLS.
#[test]
fn the_mesh_server_behind_tls_refuses_and_ends_a_client_that_speaks_no_mesh() {
    let reached = tls::fuzz_tls_mesh_server(&handshake_then_two_lines());
    assert_eq!((reached.secured, reached.ended_by_server), (1, 1), "{reached:?}");
}

/// One `tls_records` step that seals a record: content type index (see
/// `fuzz_tls_records`), then the inner bytes.
fn seal(type_index: u8, inner: &[u8]) -> Vec<u8> {
    let mut step = vec![1, type_index, inner.len() as u8];
    step.extend_from_slice(inner);
    step
}

/// Catches: records of application data lost, reordered or refused when reads cut them
/// anywhere; a close_notify not ending the peer's side.
#[test]
fn sealed_records_cut_anywhere_arrive_intact_and_close_notify_ends_the_side() {
    let mut script = vec![0];
    script.extend(seal(0, b"sealed as one record"));
    script.extend([0, 2, 40]); // a write of 2 * 64 + 40 bytes
    script.extend((0..168).map(|i| i as u8));
    script.extend([2, 3, 1, 3, 7, 1, 2, 1, 5]); // reads of 3, 7 and 1 bytes
    script.extend(seal(1, &[1, 0])); // close_notify
    let reached = tls::fuzz_tls_records(&script);
    let mut expected = b"sealed as one record".to_vec();
    expected.extend((0..168).map(|i| i as u8));
    assert_eq!(reached.plain, expected);
    assert!(reached.peer_closed, "{reached:?}");
    assert_eq!(reached.refused, None);
}

/// Catches: a receiver that ignores a `KeyUpdate`, or takes padding for content. The
/// client here seals a `KeyUpdate` without moving to its next key, so the server, which
/// moved, can no longer open its records; a record of padding only has no content type.
#[test]
fn a_key_update_moves_the_receiving_key_and_a_record_of_padding_is_refused() {
    let mut script = vec![0];
    script.extend(seal(2, &[24, 0, 0, 1, 0]));
    script.extend(seal(0, b"under the old key"));
    let reached = tls::fuzz_tls_records(&script);
    assert!(reached.refused.as_deref().is_some_and(|r| r.contains("decrypt")), "{reached:?}");
    assert!(reached.plain.is_empty());

    let mut script = vec![0];
    script.extend(seal(3, &[0, 0, 0]));
    let reached = tls::fuzz_tls_records(&script);
    assert!(reached.refused.is_some(), "{reached:?}");
}

/// Catches: a panic in the record layer on records of any content type and inner bytes,
/// cut anywhere.
#[test]
fn records_of_any_content_never_panic_the_layer() {
    fn property(steps: Vec<u8>) -> bool {
        let _ = tls::fuzz_tls_records(&steps);
        true
    }
    check(200, property as fn(Vec<u8>) -> bool);
}
