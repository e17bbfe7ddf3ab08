//! `switchyard mesh` as a user runs it: three servers as processes, a user who waits for
//! messages, and a one-shot sender piping `<recipient> <message>` lines.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::{run, text, Proc};

fn mesh_server(listen: &str, peer: &str) -> Proc {
    let server = Proc::start(&["mesh", "server", "--listen", listen, "--peer", peer]);
    server.wait_for_log(&format!("mesh server listening on {listen}"));
    server
}

#[test]
fn users_on_two_servers_exchange_a_message() {
    let (s1, s2, s3) = ("127.0.0.121:5001", "127.0.0.121:5002", "127.0.0.121:5003");
    let mut servers = [mesh_server(s1, s2), mesh_server(s2, s1), mesh_server(s3, s1)];
    servers[2].wait_for_log("linked to server 127.0.0.121:5002");

    // Bob waits on server 3, his stdin open.
    let mut bob = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["mesh", "chat", "--server", s3, "--user", "Bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start Bob");
    let mut bob_out = BufReader::new(bob.stdout.take().expect("stdout"));
    let mut line = String::new();
    bob_out.read_line(&mut line).expect("Bob's first line");
    assert_eq!(line, format!("Connected to {s3}\n"));

    // Alice sends from server 1 and leaves once her receipts are in.
    let out = run(&["mesh", "chat", "--server", s1, "--user", "Alice"], b"Bob Hello, how are you?\nNobody hi\n");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("delivered to Bob\n"), "{stdout}");
    assert!(stdout.contains("no such user Nobody\n"), "{stdout}");

    line.clear();
    bob_out.read_line(&mut line).expect("Bob's message");
    assert_eq!(line, "Alice: Hello, how are you?\n");

    // A second Bob is refused: names are unique across the mesh.
    let out = run(&["mesh", "chat", "--server", s2, "--user", "Bob"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), format!("switchyard: registration refused: name Bob is taken (at {s3})\n"));

    drop(bob.stdin.take());
    assert!(bob.wait().expect("Bob exits").success());
    for server in &mut servers {
        assert!(server.interrupt().success());
    }
}

/// A client whose servers cannot be reached backs off instead of spinning, prints one line
/// per change of state, and once its input ends exits 1 saying which servers failed and why.
#[test]
fn a_client_with_no_server_to_reach_waits_quietly_and_fails_clearly() {
    // Nothing listens on these ports of 127.0.0.122 (no test uses that address).
    let (dead1, dead2) = ("127.0.0.122:6098", "127.0.0.122:6099");
    for select in ["in-order", "fastest"] {
        let out =
            run(&["mesh", "chat", "--server", &format!("{dead1},{dead2}"), "--user", "Z", "--select", select], b"");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "--select {select}: {stdout}{stderr}");
        let reason = "connect failed: connection refused";
        assert_eq!(
            stderr,
            format!("switchyard: no mesh server reachable: {dead1} ({reason}), {dead2} ({reason})\n"),
            "--select {select}"
        );
        // Before the backoff, one such run printed hundreds of thousands of lines.
        assert_eq!(stdout.matches("No server reachable; retrying in").count(), 1, "--select {select}: {stdout}");
        // The first round, at most: a failure and a move per server, then the wait.
        assert!(stdout.lines().count() <= 4, "--select {select}: {stdout}");
    }
}

/// `telnet HOST 5001` under `up` reaches a mesh server, not the hello service: the user is
/// told so in one line, and the server goes on serving mesh clients.
#[test]
fn a_text_client_at_a_mesh_port_is_told_what_it_reached() {
    // 127.0.0.124 is this test's own; the peer it dials does not run.
    let (listen, peer) = ("127.0.0.124:5001", "127.0.0.124:5002");
    let mut server = mesh_server(listen, peer);
    let mut telnet = support::LineConn::connect(listen);
    telnet.send(b"hello\r\n");
    let reply = telnet.line();
    assert!(reply.starts_with(&format!("error: {listen} is a Switchyard mesh server")), "{reply}");
    assert!(reply.contains(&format!("switchyard mesh chat --server {listen}")), "{reply}");
    assert!(reply.contains("switchyard serve hello"), "{reply}");
    let mut rest = String::new();
    assert_eq!(std::io::Read::read_to_string(&mut telnet.into_reader(), &mut rest).unwrap(), 0, "then it closes");
    server.wait_for_log("sent text, not mesh frames (first bytes \"hello\\r\\n\")");

    let out = run(&["mesh", "chat", "--server", listen, "--user", "Ann"], b"");
    assert!(out.status.success(), "the server still registers users: {out:?}");
    assert!(server.interrupt().success());
}
