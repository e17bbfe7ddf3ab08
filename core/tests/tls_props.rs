//! Property tests for the TLS layer around a line service, through the harness shared with
//! the `tls_server` fuzz target (`fuzz/src/tls.rs`, included below): arbitrary bytes and
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
    // A client; its hello to the server (64 bytes at a time); the server's answer to it;
    // its Finished to the server; a line; and the rest delivered by the harness's ending.
    let mut script = vec![1, 2, 5];
    for _ in 0..8 {
        script.extend([3, 0, 63, 0]);
    }
    script.extend([5, 0]);
    for _ in 0..8 {
        script.extend([3, 0, 63, 0]);
    }
    script.extend([6, 0, 6, 0]);
    assert_eq!(tls::fuzz_tls_server(&script), 1, "the client's two lines came back");
}
