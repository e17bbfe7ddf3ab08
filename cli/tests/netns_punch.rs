//! UDP hole punching through real Linux NAT.
//!
//! Each test builds its own small internet out of network namespaces: a bridge (`wan`)
//! joining the rendezvous server and two home routers on 198.51.100.0/24 (a documentation
//! range, present only inside these namespaces), and behind each router one peer on a
//! private LAN (10.0.1.0/24, 10.0.2.0/24). Each router forwards, does `iptables …
//! MASQUERADE` for its LAN, and drops unsolicited inbound UDP on its INPUT and FORWARD
//! chains, as real routers do. The real `switchyard` binary runs in each namespace.
//!
//! - Plain MASQUERADE keeps one external port per socket (endpoint-independent mapping)
//!   and conntrack admits only replies (address-and-port-dependent filtering): the peers
//!   punch through and talk directly.
//! - `MASQUERADE --random` on both routers draws a new external port per destination (a
//!   symmetric NAT): no direct path can form, so the peers fall back to the relay and still
//!   talk.
//!
//! The namespaces and their helpers are in `support/netns.rs` (`netns_expose` uses them
//! too). Needs root, `ip` (iproute2), `iptables`, `conntrack` and `sysctl` (procps). Without
//! them the tests print why and skip, unless `SWITCHYARD_REQUIRE_NETNS=1` (set by
//! `.ci/run`), which makes a missing requirement a failure. The namespaces are removed when a test ends, also when it
//! fails. No packet leaves them: every address used exists only inside.
//!
//! `SWITCHYARD_NETNS_ROUNDS=N` repeats the direct case N times (default 3) and prints
//! time-to-direct percentiles: a measurement for the notes, never an assertion.

mod support;

use std::time::{Duration, Instant};
use support::netns::{can_run, Internet};
use support::Proc;

const RENDEZVOUS: &str = "198.51.100.1:9999";

/// What one run of two peers showed.
struct Outcome {
    a_connected: String,
    b_connected: String,
    a_registered: String,
    time_to_direct: Duration,
}

/// A rendezvous and peers A (behind router A) and B (behind router B): B waits, A
/// connects, each sends a line that the other must print. Processes end with the test.
fn two_peers(internet: &Internet, runtime: &str, path: &str) -> Outcome {
    let rendezvous =
        Proc::start_in(&internet.ns("rdv"), &["--runtime", runtime, "rendezvous", "--listen", RENDEZVOUS], false);
    rendezvous.wait_for_log("listening");
    let peer = |ns: &str, id: &str| {
        let args = ["--runtime", runtime, "punch", "--rendezvous", RENDEZVOUS, "--id", id, "--punch-ms", "3000"];
        Proc::start_in(&internet.ns(ns), &args, true)
    };
    let mut b = peer("pb", "B");
    b.wait_for_stdout("REGISTERED 198.51.100.3:");
    let mut a = peer("pa", "A");
    let a_registered = a.wait_for_stdout("REGISTERED");
    a.type_line("CONNECT A B");
    a.wait_for_stdout("B introduced");
    let introduced = Instant::now();
    let a_connected = a.wait_for_stdout(&format!("({path}"));
    let time_to_direct = introduced.elapsed();
    let b_connected = b.wait_for_stdout(&format!("({path}"));
    a.type_line("hello from A");
    b.type_line("hello from B");
    b.wait_for_stdout("A: hello from A");
    a.wait_for_stdout("B: hello from B");
    for p in [&mut a, &mut b] {
        p.type_line("quit");
        assert!(p.close_and_wait().success());
    }
    Outcome { a_connected, b_connected, a_registered, time_to_direct }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn peers_behind_two_nats_punch_through_directly() {
    if !can_run("peers_behind_two_nats_punch_through_directly", "d") {
        return;
    }
    let internet = Internet::build("d", false);
    let rounds: usize = std::env::var("SWITCHYARD_NETNS_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let mut times = Vec::new();
    for round in 0..rounds {
        let runtime = if round % 2 == 0 { "smol" } else { "async-std" };
        let outcome = two_peers(&internet, runtime, "direct");
        // The rendezvous saw A at its router's public address, not its private one: the
        // NAT translated, and the punch still went straight to B's router.
        assert!(outcome.a_registered.starts_with("REGISTERED 198.51.100.2:"), "{}", outcome.a_registered);
        assert!(outcome.a_connected.starts_with("CONNECTED to 198.51.100.3:"), "{}", outcome.a_connected);
        assert!(
            outcome.b_connected.starts_with("CONNECTED to 198.51.100.2:"),
            "{}\nrouter A: {}",
            outcome.b_connected,
            internet.conntrack("ra")
        );
        times.push(outcome.time_to_direct);
    }
    times.sort();
    eprintln!(
        "netns time to direct over {} rounds: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap()
    );
}

#[test]
fn symmetric_nats_on_both_sides_fall_back_to_the_relay() {
    if !can_run("symmetric_nats_on_both_sides_fall_back_to_the_relay", "r") {
        return;
    }
    let internet = Internet::build("r", true);
    for runtime in ["smol", "async-std"] {
        let outcome = two_peers(&internet, runtime, "relayed");
        let relayed = format!("(relayed via {RENDEZVOUS})");
        assert!(outcome.a_connected.ends_with(&relayed), "{}", outcome.a_connected);
        assert!(outcome.b_connected.ends_with(&relayed), "{}", outcome.b_connected);
    }
}
