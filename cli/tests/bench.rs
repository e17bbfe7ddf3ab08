//! `switchyard bench tunnel` and `bench broadcast` end to end, at toy sizes: every section
//! prints its figures, the reference tools (socat; rathole over tcp, tls and noise; the
//! tunnel over TLS; nats-server) are measured beside ours in each, and bad `--against`
//! values are refused by name. The figures themselves are not checked: speed is what the
//! benchmark reports, not what a test asserts.

mod support;

use std::process::Command;
use support::{assert_refused, run, text};

/// True when `tool` can be run (`tool ARG` succeeds). On CI (`CI` set) it must be:
/// `.ci/run` installs it.
fn available(tool: &str, arg: &str) -> bool {
    let found = Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success());
    assert!(found || std::env::var_os("CI").is_none(), "{tool} is missing on CI: .ci/run should install it");
    found
}

fn socat_available() -> bool {
    available("socat", "-V")
}

#[test]
fn measures_the_tunnel_and_socat_side_by_side_in_every_section() {
    if !socat_available() {
        eprintln!("skipped: socat is not installed");
        return;
    }
    let args = [
        "bench",
        "tunnel",
        "--bytes",
        "2M",
        "--streams",
        "1,3",
        "--messages",
        "100",
        "--runs",
        "1",
        "--idle-streams",
        "20",
        "--against",
        "socat",
    ];
    let out = run(&args, b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    // Each figure of the tunnel is followed by socat's.
    let after = |prefix: &str| -> &str {
        let i = lines
            .iter()
            .position(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"));
        lines.get(i + 1).copied().unwrap_or_default()
    };
    for figure in ["1 stream    tunnel", "3 streams   tunnel"] {
        let next = after(figure);
        assert!(next.trim_start().starts_with("socat") && next.contains("ratio"), "{figure}: {next:?}\n{stdout}");
    }
    for figure in ["p50   tunnel", "p99   tunnel"] {
        let next = after(figure);
        assert!(next.trim_start().starts_with("socat") && next.contains("added"), "{figure}: {next:?}\n{stdout}");
    }
    assert!(stdout.contains("(entry and exit of one path, idle)"), "{stdout}");
    assert!(stdout.contains("20 idle streams"), "{stdout}");
    assert!(stdout.contains("targets met"), "{stdout}");
}

#[test]
fn bad_references_are_refused_by_name() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&["bench", "tunnel", "--against", "frp"], 2, "\"frp\" is not a tool to measure against"),
        (&["bench", "tunnel", "--against", "socat,socat"], 2, "socat is named twice"),
        (
            &["bench", "tunnel", "--bytes", "1M", "--idle-streams", "0", "--against", "bore=/nonexistent/bore"],
            1,
            "cannot start bore (/nonexistent/bore)",
        ),
    ];
    assert_refused(cases);
}

#[test]
fn tls_puts_the_tunnel_over_tls_beside_the_plaintext_one() {
    let args = ["bench", "tunnel", "--bytes", "2M", "--streams", "1", "--messages", "100", "--runs", "1"];
    let out = run(&[&args[..], &["--idle-streams", "0", "--tls"]].concat(), b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().map(str::trim_start).collect();
    for figure in ["1 stream    tunnel", "p50   tunnel", "p99   tunnel"] {
        let i = lines.iter().position(|l| l.starts_with(figure)).unwrap_or_else(|| panic!("no {figure:?}:\n{stdout}"));
        assert!(lines[i + 1].starts_with("tunnel-tls"), "{figure}: {:?}\n{stdout}", lines[i + 1]);
    }
    assert!(stdout.contains("tunnel-tls") && stdout.contains("(entry and exit of one path, idle)"), "{stdout}");
    // Each end's user and system CPU beside each throughput figure, and its system calls
    // where perf can count them.
    let perf = Command::new("perf").args(["stat", "-e", "raw_syscalls:sys_enter", "--", "true"]).output();
    let counts = perf.is_ok_and(|o| o.status.success());
    for relay in ["1 stream    tunnel", "tunnel-tls"] {
        let row = lines.iter().find(|l| l.starts_with(relay) && l.contains("ratio")).expect("a throughput row");
        assert!(row.contains(" entry ") && row.contains(" exit ") && row.contains("u+"), "{row}");
        assert_eq!(row.contains("syscalls/MiB "), counts, "{row}");
    }
    let handshake = lines.iter().position(|l| l.starts_with("TLS 1.3 handshake")).expect("the handshake figure");
    assert!(lines[handshake + 1].starts_with("p50 ") && lines[handshake + 1].contains("p99"), "{stdout}");
}

/// rathole with each of its transports (tcp, tls, noise) beside the tunnel and the tunnel
/// over TLS, in every section, and the TLS handshake figure.
#[test]
fn measures_rathole_over_each_transport_beside_the_tunnel_over_tls() {
    if !available("rathole", "--version") {
        eprintln!("skipped: rathole is not installed");
        return;
    }
    let args = ["bench", "tunnel", "--bytes", "2M", "--streams", "1", "--messages", "100", "--runs", "1"];
    let against = ["--idle-streams", "0", "--tls", "--against", "rathole,rathole-tls,rathole-noise"];
    let out = run(&[&args[..], &against[..]].concat(), b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().map(str::trim_start).collect();
    for figure in ["1 stream    tunnel", "p50   tunnel", "p99   tunnel"] {
        let i = lines.iter().position(|l| l.starts_with(figure)).unwrap_or_else(|| panic!("no {figure:?}:\n{stdout}"));
        for (row, tool) in lines[i + 1..i + 5].iter().zip(["rathole ", "rathole-tls", "rathole-noise", "tunnel-tls"]) {
            assert!(row.starts_with(tool), "{figure}: {row:?} should be {tool}\n{stdout}");
        }
    }
    assert!(stdout.contains("TLS 1.3 handshake") && stdout.contains("200 handshakes"), "{stdout}");
}

/// The broadcast fan-out beside nats-server: a row for each with every figure, every
/// member kept (none lost), and the comparison line.
#[test]
fn measures_broadcast_fan_out_beside_nats_server() {
    let against: &[&str] = if available("nats-server", "--version") { &["--against", "nats"] } else { &[] };
    let args = ["bench", "broadcast", "--members", "30", "--publishers", "2", "--messages", "40", "--window", "4"];
    let out = run(&[&args[..], against].concat(), b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    let systems: &[&str] = if against.is_empty() { &["broadcast"] } else { &["broadcast", "nats-server"] };
    for system in systems {
        let row =
            rows.iter().find(|r| r.first() == Some(system)).unwrap_or_else(|| panic!("no {system} row:\n{stdout}"));
        // system, deliveries/s, p50 (value unit), p99 (value unit), RSS (value unit), lost
        assert_eq!(row.len(), 9, "{row:?}\n{stdout}");
        assert!(row[1].parse::<f64>().is_ok_and(|rate| rate > 0.0), "{row:?}");
        assert_eq!(row[8], "0", "no member lost: {row:?}");
    }
    assert_eq!(stdout.contains("against nats-server: deliveries/s"), !against.is_empty(), "{stdout}");
}

#[test]
fn bad_broadcast_options_are_refused() {
    assert_refused(&[
        (&["bench", "broadcast", "--members", "0"], 2, "must be at least 1"),
        (&["bench", "broadcast", "--against", "redis"], 2, "the one system to measure against is nats"),
        (
            &["bench", "broadcast", "--against", "nats=/nonexistent/nats-server", "--members", "2"],
            1,
            "cannot start nats-server",
        ),
    ]);
}
