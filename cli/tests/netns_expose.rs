//! The reverse tunnel through real Linux NAT: `tunnel expose` behind a MASQUERADE router
//! publishes a service at a public `tunnel remote --allow-publish`, and a visitor outside
//! reaches it, with no port forwarding on the router.
//!
//! The internet is the one of `netns_punch` (`support/netns.rs`): the public end in `rdv`
//! (198.51.100.1), the greeting server and the exposing end behind router A (`pa`,
//! 10.0.1.2, MASQUERADE to 198.51.100.2, unsolicited inbound dropped), the visitor on the
//! WAN at router B's address (`rb`, 198.51.100.3). Under each runtime in turn.
//!
//! Needs root, `ip`, `iptables`, `conntrack` and `sysctl`; without them the test prints why
//! and skips, unless `SWITCHYARD_REQUIRE_NETNS=1` (set by `.ci/run`) makes that a failure.

mod support;

use support::netns::{can_run, Internet};
use support::{Proc, TempFile};

const PUBLIC: &str = "198.51.100.1:7001";

#[test]
fn a_service_behind_nat_is_published_and_reached_from_outside() {
    if !can_run("a_service_behind_nat_is_published_and_reached_from_outside", "x") {
        return;
    }
    let internet = Internet::build("x", false);
    let key = TempFile::new("netns-expose.key", "expose through nat");
    for runtime in ["mio", "smol", "async-std"] {
        let rt = ["--runtime", runtime];
        let start = |ns: &str, args: &[&str]| Proc::start_in(&internet.ns(ns), &[&rt[..], args].concat(), false);
        let remote = start(
            "rdv",
            &["tunnel", "remote", "--listen", PUBLIC, "--secret-file", key.arg(), "--allow-publish", "12000-13000"],
        );
        remote.wait_for_log("exposing ends may publish ports 12000-13000 on 198.51.100.1");
        let greet = start("pa", &["serve", "greet", "--listen", "127.0.0.1:12345"]);
        greet.wait_for_log("server listening on");
        let publish = ["--publish", "12345=127.0.0.1:12345"];
        let expose = start(
            "pa",
            &[&["tunnel", "expose", "--remote", PUBLIC, "--secret-file", key.arg()][..], &publish].concat(),
        );
        expose.wait_for_log("published 12345 at 198.51.100.1:12345 → 127.0.0.1:12345");
        // The carrier came from router A's public address: the NAT translated it.
        let up = remote.wait_for_log("carrier up");
        assert!(up.contains("authenticated with 198.51.100.2:"), "{runtime}: {up}");

        let visitor = start("rb", &["send", "--to", "198.51.100.1:12345", "John"]);
        let reply = visitor.wait_for_stdout("Hello Good morning");
        assert_eq!(reply, "Hello Good morning !!!! ::: John", "{runtime}");
        // Without the reverse tunnel the service is out of reach: the router forwards nothing.
        let direct = start("rb", &["send", "--to", "198.51.100.2:12345", "John"]);
        direct.wait_for_log("cannot connect to 198.51.100.2:12345");
    }
}
