//! `switchyard up`, `chat` and `demo` as a user runs them: the whole network in one
//! process, the seed's one-liners against it, an interactive broadcast session, the demo's
//! transcript, and a port already taken. Each test runs `up` on a loopback address of its
//! own (127.0.0.11N), so they run in parallel beside a real `switchyard up` on 127.0.0.1.

mod support;

use std::net::TcpListener;
use support::{is_time, run, text, LineConn, Proc};

/// `up --host HOST`, once its table is printed (it is printed when everything listens and
/// the tunnel carrier is up).
fn up(runtime: &str, host: &str) -> Proc {
    let up = Proc::start(&["--runtime", runtime, "up", "--host", host]);
    up.wait_for_stdout(&format!("switchyard up: all services on {host}"));
    up
}

fn serves_the_seed_one_liners(runtime: &str, host: &str) {
    let mut up = up(runtime, host);
    let entrance = format!("{host}:7000");
    // The whole table, in order.
    for (what, port) in [
        ("tunnel entrance", 7000),
        ("forward", 7090),
        ("tunnel carrier", 7001),
        ("echo", 7007),
        ("time", 9090),
        ("broadcast", 10000),
        ("greet", 12345),
        ("stamp", 8080),
        ("mesh", 5001),
        ("mesh", 5002),
        ("mesh", 5003),
        ("rendezvous", 9999),
    ] {
        let row = up.wait_for_stdout(what);
        assert!(row.contains(&format!("{host}:{port} ")), "{row}");
    }
    let send = |line: &str| run(&["--runtime", runtime, "send", "--to", &entrance, line], b"");

    let out = send("hello");
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("hello\n", Some(0)), "{out:?}");
    let out = send("9090:time");
    assert!(is_time(text(&out.stdout).trim_end()), "{out:?}");
    let out = send("12345:John");
    assert_eq!(text(&out.stdout), "Hello Good morning !!!! ::: John\n", "{out:?}");
    let out = send("8080:Hello, World!");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Server received at ") && stdout.ends_with(": Hello, World!\n"), "{out:?}");
    let out = run(&["send", "--to", &format!("{host}:7090"), "anything"], b"");
    assert!(is_time(text(&out.stdout).trim_end()), "the forward reaches time: {out:?}");

    let exit = up.interrupt();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn serves_the_seed_one_liners_on_smol() {
    serves_the_seed_one_liners("smol", "127.0.0.111");
}

#[test]
fn serves_the_seed_one_liners_on_async_std() {
    serves_the_seed_one_liners("async-std", "127.0.0.112");
}

#[test]
fn chat_joins_broadcast_and_prints_what_arrives() {
    let host = "127.0.0.113";
    let _up = up("smol", host);
    let entrance = format!("{host}:7000");
    let mut member = LineConn::connect(&entrance);
    member.send(b"10000:");
    assert_eq!(member.line(), "* welcome guest1, 1 member(s) online");

    let out = run(&["chat", "--to", &entrance, "10000:"], b"hi\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "* welcome guest2, 2 member(s) online\n");
    assert!(text(&out.stderr).contains("chatting with route 10000"), "{out:?}");

    assert_eq!(member.line(), "* guest2 joined");
    assert_eq!(member.line(), "guest2: hi");
    assert_eq!(member.line(), "* guest2 left");
}

#[test]
fn demo_runs_every_flow_and_exits_0() {
    let out = run(&["demo", "--host", "127.0.0.114"], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(stdout.matches('✓').count(), 8, "{stdout}");
    assert!(!stdout.contains('✗'), "{stdout}");
    assert!(stdout.contains("member 2 ← guest1: hi"), "{stdout}");
    assert!(stdout.contains("← error: unknown route 1234"), "{stdout}");
    assert!(stdout.contains("A ← CONNECTED to 127.0.0.114:"), "{stdout}");
    assert!(stdout.contains("B ← A: hello from A"), "{stdout}");
    assert!(stdout.ends_with("all 8 flows passed\n"), "{stdout}");
}

#[test]
fn a_port_in_use_stops_everything_with_one_line() {
    let host = "127.0.0.115";
    let _taken = TcpListener::bind(format!("{host}:9090")).unwrap();
    let out = run(&["up", "--host", host], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("switchyard: the time service cannot start"), "{stderr}");
    assert!(last.contains(&format!("{host}:9090: address already in use")), "{stderr}");
    // The process ended (echo, started before time, did not keep it serving) and printed
    // no table.
    assert_eq!(text(&out.stdout), "", "no table when something did not start");
}

/// Every one-liner `up --host` prints names that host, so each works as pasted: the
/// tunnel's, the mesh's (`--server`) and the rendezvous's (`--rendezvous`). The mesh and
/// punch ones are run as printed.
#[test]
fn every_hint_of_up_on_another_host_works_as_pasted() {
    let host = "127.0.0.116";
    let up = up("mio", host);
    let mut hints = Vec::new();
    for what in ["tunnel entrance", "mesh", "mesh", "mesh", "rendezvous"] {
        let row = up.wait_for_stdout(what);
        if let Some((_, tries)) = row.split_once("try: ") {
            hints.extend(tries.split(" | ").flat_map(|t| t.split(", then ")).map(str::to_owned));
        }
    }
    assert_eq!(hints.len(), 7, "{hints:?}");
    for hint in &hints {
        assert!(hint.starts_with("switchyard ") && hint.contains(&format!(" {host}:")), "{hint}");
    }
    // The words after `switchyard`, as a shell would pass them (no hint needs quoting).
    let args = |hint: &str| hint.split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>();

    let alice = args(hints.iter().find(|h| h.contains("--user Alice")).expect("a mesh hint"));
    let out = run(&alice.iter().map(String::as_str).collect::<Vec<_>>(), b"Nobody hi\n");
    assert!(out.status.success(), "{alice:?}: {out:?}");
    assert_eq!(text(&out.stdout), format!("Connected to {host}:5001\nno such user Nobody\n"));

    let peer = args(hints.iter().find(|h| h.contains("punch") && h.contains("--id A")).expect("a punch hint"));
    let out = run(&peer.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert!(text(&out.stdout).starts_with("REGISTERED "), "{peer:?}: {out:?}");
}

/// `up --tls`: one fresh certificate for every TCP port but the forwards, its fingerprint
/// in the header, and one-liners that pin it and work as pasted (the tunnel's through a TLS
/// entrance, a TLS carrier and TLS services; the mesh's through TLS-linked servers). A
/// client without the pin is told the port speaks TLS; the forward stays plain, for `nc`.
#[test]
fn up_with_tls_pins_one_fresh_certificate_in_every_one_liner() {
    let host = "127.0.0.117";
    let up = Proc::start(&["up", "--host", host, "--tls"]);
    let header = up.wait_for_stdout(&format!("switchyard up: all services on {host} over TLS, certificate SHA256:"));
    let pin = header.split_whitespace().find(|w| w.starts_with("SHA256:")).expect("a fingerprint").to_owned();
    let entrance = up.wait_for_stdout("tunnel entrance");
    let hints: Vec<String> = entrance.split_once("try: ").expect("hints").1.split(" | ").map(str::to_owned).collect();
    assert_eq!(hints.len(), 3, "{hints:?}");
    let args = |hint: &str| hint.split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>();
    for hint in &hints {
        assert!(hint.contains(&format!("--tls-pin {pin}")), "{hint}");
    }
    let send_hello = args(&hints[0]);
    let out = run(&send_hello.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert_eq!(text(&out.stdout), "hello\n", "{send_hello:?}: {out:?}");
    let send_time = args(&hints[1]);
    let out = run(&send_time.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert!(is_time(text(&out.stdout).trim_end()), "through a TLS carrier to a TLS time service: {out:?}");

    let mesh = up.wait_for_stdout("--user Alice");
    let alice = args(mesh.split_once("try: ").expect("a mesh hint").1);
    let out = run(&alice.iter().map(String::as_str).collect::<Vec<_>>(), b"Nobody hi\n");
    assert_eq!(text(&out.stdout), format!("Connected to {host}:5001\nno such user Nobody\n"), "{alice:?}: {out:?}");

    let out = run(&["send", "--to", &format!("{host}:7000"), "hello"], b"");
    assert!(text(&out.stderr).starts_with("error: this port speaks TLS"), "{out:?}");
    let mut forward = LineConn::connect(&format!("{host}:7090"));
    assert!(is_time(&forward.line()), "the forward to time stays plain");
}
