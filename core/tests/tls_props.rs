//! Property tests for the TLS layer around a line service, the tunnel's remote end and a
//! mesh server, through the harness shared with the `tls_server`, `tls_tunnel_remote` and
//! `tls_mesh_server` fuzz targets (`fuzz/src/tls.rs`, included below): arbitrary bytes and
//! real clients' records, cut and corrupted, never panic the layer or break the machine
//! contract, and a client nobody tampered with gets its echoes intact.
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
