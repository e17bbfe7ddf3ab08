//! `switchyard rendezvous` and `switchyard punch` as a user runs them: a rendezvous and
//! peers as processes on loopback, each peer on a loopback IP of its own (127.0.0.21 the
//! rendezvous, .22 to .25 the peers), every socket on port 0 so the tests run in parallel.
//! The peers connect, punch a direct path and chat, under both runtimes; an id already
//! taken is refused; an unknown peer is reported; a third peer cannot take a live session
//! over, and a peer that leaves is reported to the other; a rendezvous that never answers
//! makes the exit code 1.

mod support;

use support::{assert_helps, run, text, Proc};

/// A rendezvous on 127.0.0.21, a free port; returns it and its address, read from its log.
fn rendezvous(runtime: &str) -> (Proc, String) {
    let server = Proc::start(&["--runtime", runtime, "rendezvous", "--listen", "127.0.0.21:0"]);
    let line = server.wait_for_log("rendezvous listening on UDP ");
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    (server, addr)
}

/// The arguments of `punch --id ID` bound on `ip`, registering at `rv`.
fn punch_args<'a>(runtime: &'a str, rv: &'a str, id: &'a str, bind: &'a str) -> Vec<&'a str> {
    vec!["--runtime", runtime, "punch", "--rendezvous", rv, "--id", id, "--bind", bind]
}

/// A peer with its stdin open, once it has registered; returns it and its public endpoint.
fn peer(runtime: &str, rv: &str, id: &str, ip: &str) -> (Proc, String) {
    let bind = format!("{ip}:0");
    let peer = Proc::start_interactive(&punch_args(runtime, rv, id, &bind));
    let line = peer.wait_for_stdout("REGISTERED ");
    let public = line.strip_prefix("REGISTERED ").expect("the line starts so").to_owned();
    assert!(public.starts_with(&format!("{ip}:")), "{line}");
    (peer, public)
}

fn two_peers_connect_directly_and_chat(runtime: &str) {
    let (mut rv, rv_addr) = rendezvous(runtime);
    let (mut b, b_public) = peer(runtime, &rv_addr, "B", "127.0.0.23");
    let (mut a, a_public) = peer(runtime, &rv_addr, "A", "127.0.0.22");
    rv.wait_for_log("A registered at 127.0.0.22:");

    a.type_line("CONNECT A B");
    assert_eq!(a.wait_for_stdout("CONNECTED"), format!("CONNECTED to {b_public} (direct)"));
    assert_eq!(b.wait_for_stdout("CONNECTED"), format!("CONNECTED to {a_public} (direct)"));
    rv.wait_for_log("introduced A ↔ B");

    a.type_line("hello");
    assert_eq!(b.wait_for_stdout("hello"), "A: hello");
    b.type_line("hi A, how are you?");
    assert_eq!(a.wait_for_stdout("how are you"), "B: hi A, how are you?");

    // The end of input leaves once the last message is acknowledged; quit leaves at once.
    a.type_line("bye");
    assert!(a.close_and_wait().success());
    assert_eq!(b.wait_for_stdout("bye"), "A: bye");
    rv.wait_for_log("A left");
    b.type_line("quit");
    assert!(b.close_and_wait().success());
    rv.wait_for_log("B left");
    assert!(rv.interrupt().success());
}

#[test]
fn two_peers_connect_directly_and_chat_on_smol() {
    two_peers_connect_directly_and_chat("smol");
}

#[test]
fn two_peers_connect_directly_and_chat_on_async_std() {
    two_peers_connect_directly_and_chat("async-std");
}

#[test]
fn two_peers_connect_directly_and_chat_on_mio() {
    two_peers_connect_directly_and_chat("mio");
}

#[test]
fn a_piped_peer_connects_at_start_and_delivers_before_it_leaves() {
    for runtime in ["smol", "async-std"] {
        let (_rv, rv_addr) = rendezvous(runtime);
        let (b, _) = peer(runtime, &rv_addr, "B", "127.0.0.23");
        // The seed's syntax, piped: the line after CONNECT waits for the introduction.
        let out = run(&punch_args(runtime, &rv_addr, "A", "127.0.0.22:0"), b"CONNECT A B\nhello\n");
        assert!(out.status.success(), "{out:?}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("CONNECTED to 127.0.0.23:"), "{stdout}");
        assert_eq!(b.wait_for_stdout("hello"), "A: hello");

        // --connect does the same at start.
        let mut args = punch_args(runtime, &rv_addr, "C", "127.0.0.22:0");
        args.extend(["--connect", "B"]);
        let out = run(&args, b"from C\n");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(b.wait_for_stdout("from C"), "C: from C");
    }
}

#[test]
fn an_id_already_taken_is_refused_with_exit_1() {
    let (_rv, rv_addr) = rendezvous("smol");
    let (_a, _) = peer("smol", &rv_addr, "A", "127.0.0.22");
    let out = run(&punch_args("smol", &rv_addr, "A", "127.0.0.23:0"), b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "switchyard: registration refused: id A is taken\n");
}

#[test]
fn an_unknown_peer_a_wrong_own_id_and_a_message_without_a_peer_are_reported() {
    let (_rv, rv_addr) = rendezvous("smol");
    let input = b"CONNECT A Nobody\nCONNECT X Nobody\nhello?\n";
    let out = run(&punch_args("smol", &rv_addr, "A", "127.0.0.22:0"), input);
    // The input ended with its connect failed and no peer: what it asked for never happened.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("switchyard: cannot connect to Nobody: peer Nobody is not registered\n"), "{stderr}");
    assert!(stderr.contains("switchyard: this peer is A, not X: type CONNECT A Nobody"), "{stderr}");
    assert!(stderr.contains("switchyard: not sent: not connected to a peer yet"), "{stderr}");
}

#[test]
fn a_third_peer_cannot_take_over_a_chat_and_a_peer_that_leaves_is_reported() {
    let (rv, rv_addr) = rendezvous("smol");
    let (mut b, _) = peer("smol", &rv_addr, "B", "127.0.0.23");
    let (mut a, _) = peer("smol", &rv_addr, "A", "127.0.0.22");
    a.type_line("CONNECT A B");
    a.wait_for_stdout("CONNECTED to");
    b.wait_for_stdout("CONNECTED to");

    // C asks for A in the middle of the chat: refused, one line, exit 1 (that was all it
    // was asked to do). A and B never hear of it, and chat on.
    let mut args = punch_args("smol", &rv_addr, "C", "127.0.0.24:0");
    args.extend(["--connect", "A"]);
    let out = run(&args, b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "switchyard: cannot connect to A: peer A is busy in another session\n");
    assert!(!text(&out.stdout).contains("introduced"), "{out:?}");
    rv.wait_for_log("refused to introduce C to A: A is in a session with B");
    a.type_line("still there?");
    assert_eq!(b.wait_for_stdout("still there"), "A: still there?");
    b.type_line("yes");
    assert_eq!(a.wait_for_stdout("yes"), "B: yes");

    // A's own CONNECT to D moves it on: B is told at once, and has no peer any more.
    let (mut d, _) = peer("smol", &rv_addr, "D", "127.0.0.25");
    a.type_line("CONNECT A D");
    assert_eq!(b.wait_for_stdout("PEER LEFT"), "PEER LEFT A (it connected to another peer)");
    assert_eq!(a.wait_for_stdout("chat with"), "chat with B ended");
    b.type_line("hello?");
    b.wait_for_log("switchyard: not sent: not connected to a peer yet");
    // D quits: A is told at once.
    a.wait_for_stdout("CONNECTED to");
    d.type_line("quit");
    assert!(d.close_and_wait().success());
    assert_eq!(a.wait_for_stdout("PEER LEFT"), "PEER LEFT D (it quit)");
}

#[test]
fn a_rendezvous_that_never_answers_makes_the_exit_code_1() {
    // A socket that takes the rendezvous's datagrams and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.21:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let out = run(&punch_args("smol", &silent_addr, "X", "127.0.0.22:0"), b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    let why = format!("switchyard: the rendezvous {silent_addr} never answered (");
    assert!(stderr.starts_with(&why) && stderr.contains(" registration attempts in "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let mut buf = [0; 2048];
    silent.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
    assert!(silent.recv(&mut buf).is_ok(), "the peer never tried to register");
}

#[test]
fn both_helps_exit_0_and_name_their_flags() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["rendezvous", "--help"],
            &["--listen", "default 127.0.0.1:9999", "0.0.0.0:9999", "60 s", "per source IP", "PROTOCOL.md section 5"],
        ),
        (
            &["punch", "--help"],
            &[
                "--rendezvous",
                "--id",
                "--connect",
                "--bind",
                "--no-relay",
                "--punch-ms",
                "CONNECT <my_id> <dest_id>",
                "REGISTERED",
                "CONNECTED to",
                "is busy in another session",
                "PEER LEFT <id>",
                "exits 1 if the rendezvous never answered",
            ],
        ),
    ];
    assert_helps(cases);
}

#[test]
fn bad_ids_are_usage_errors() {
    for args in [&["punch", "--id", "has space"][..], &["punch", "--id", "A", "--connect", "A"]] {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
