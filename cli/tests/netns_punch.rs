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
//! Needs root, `ip` (iproute2), `iptables`, `conntrack` and `sysctl` (procps). Without
//! them the tests print why and skip, unless `SWITCHYARD_REQUIRE_NETNS=1` (set by
//! `.ci/run`), which makes a missing requirement a failure. The namespaces are removed when a test ends, also when it
//! fails. No packet leaves them: every address used exists only inside.
//!
//! `SWITCHYARD_NETNS_ROUNDS=N` repeats the direct case N times (default 3) and prints
//! time-to-direct percentiles: a measurement for the notes, never an assertion.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::Proc;

const RENDEZVOUS: &str = "198.51.100.1:9999";

/// Runs a command that must succeed (the topology is useless otherwise).
fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Why these tests cannot run here, if they cannot. `tag` keeps the probe namespace apart
/// from other tests' (they run in parallel, in one process).
fn missing_requirement(tag: &str) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (network namespaces and iptables need it)".to_owned());
    }
    let tools = [("ip", "-V"), ("iptables", "--version"), ("conntrack", "--version"), ("sysctl", "--version")];
    for (tool, arg) in tools {
        if Command::new(tool).arg(arg).output().map(|o| !o.status.success()).unwrap_or(true) {
            return Some(format!("`{tool}` is not installed (apt-get install iproute2 iptables conntrack procps)"));
        }
    }
    let probe = format!("sy{}{tag}-probe", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Some(format!("`ip netns add {probe}` is not permitted here: {why}"));
        }
        Err(e) => return Some(format!("`ip netns add {probe}` failed: {e}")),
    }
    None
}

/// True when the test may go on; prints why not, or fails when requirements are required.
/// `tag` is the test's own namespace tag.
fn can_run(test: &str, tag: &str) -> bool {
    let Some(reason) = missing_requirement(tag) else { return true };
    if std::env::var("SWITCHYARD_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("{test}: SWITCHYARD_REQUIRE_NETNS=1 but {reason}");
    }
    eprintln!("{test}: skipped: {reason}");
    false
}

/// The namespaces of one test's internet; removed (with everything in them) on drop.
struct Internet {
    prefix: String,
}

impl Internet {
    /// Builds the topology; `random_ports` adds `--random` to both routers' MASQUERADE.
    fn build(tag: &str, random_ports: bool) -> Internet {
        let internet = Internet { prefix: format!("sy{}{tag}", std::process::id()) };
        for ns in ["wan", "rdv", "ra", "rb", "pa", "pb"] {
            run(&["ip", "netns", "add", &internet.ns(ns)]);
            run(&["ip", "-n", &internet.ns(ns), "link", "set", "lo", "up"]);
        }
        let wan = internet.ns("wan");
        run(&["ip", "-n", &wan, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &wan, "link", "set", "br0", "up"]);
        for (ns, addr) in [("rdv", "198.51.100.1/24"), ("ra", "198.51.100.2/24"), ("rb", "198.51.100.3/24")] {
            let (inside, port) = (internet.ns(ns), format!("{ns}-w"));
            run(&["ip", "-n", &wan, "link", "add", &port, "type", "veth", "peer", "name", "w0", "netns", &inside]);
            run(&["ip", "-n", &wan, "link", "set", &port, "master", "br0", "up"]);
            run(&["ip", "-n", &inside, "addr", "add", addr, "dev", "w0"]);
            run(&["ip", "-n", &inside, "link", "set", "w0", "up"]);
        }
        for (router, peer, lan) in [("ra", "pa", "10.0.1"), ("rb", "pb", "10.0.2")] {
            let (router, peer) = (internet.ns(router), internet.ns(peer));
            run(&["ip", "-n", &router, "link", "add", "l0", "type", "veth", "peer", "name", "e0", "netns", &peer]);
            run(&["ip", "-n", &router, "addr", "add", &format!("{lan}.1/24"), "dev", "l0"]);
            run(&["ip", "-n", &router, "link", "set", "l0", "up"]);
            run(&["ip", "-n", &peer, "addr", "add", &format!("{lan}.2/24"), "dev", "e0"]);
            run(&["ip", "-n", &peer, "link", "set", "e0", "up"]);
            run(&["ip", "-n", &peer, "route", "add", "default", "via", &format!("{lan}.1")]);
            let fw = |rule: &[&str]| {
                let mut args = vec!["ip", "netns", "exec", &router, "iptables"];
                args.extend(rule);
                run(&args);
            };
            run(&["ip", "netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let mut masquerade = vec!["-t", "nat", "-A", "POSTROUTING", "-o", "w0", "-j", "MASQUERADE"];
            if random_ports {
                masquerade.push("--random");
            }
            fw(&masquerade);
            // Replies to what the LAN sent are let in; anything unsolicited is dropped.
            fw(&["-A", "INPUT", "-i", "w0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]);
            fw(&["-A", "INPUT", "-i", "w0", "-p", "udp", "-j", "DROP"]);
            fw(&[
                "-A",
                "FORWARD",
                "-i",
                "w0",
                "-o",
                "l0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
            fw(&["-A", "FORWARD", "-i", "w0", "-o", "l0", "-j", "DROP"]);
        }
        internet
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Router `router`'s conntrack table, for failure reports.
    fn conntrack(&self, router: &str) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.ns(router), "conntrack", "-L", "-p", "udp"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for ns in ["pa", "pb", "ra", "rb", "rdv", "wan"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(ns)]).output();
        }
    }
}

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
