//! `switchyard serve` for every line service, as clients see it: the time at once, lines
//! relayed between broadcast members, and the reply presets. Each server listens on
//! 127.0.0.1 port 0; the test reads the real address from its log line.

mod support;

use support::{is_time, run, text, LineConn, Proc};

/// `serve SERVICE ARGS` on a free port; returns it and its address.
fn serve(service: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", service, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Proc::start(&args);
    let line = server.wait_for_log(&format!("{service} server listening on "));
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    (server, addr)
}

#[test]
fn time_answers_at_once_then_pushes_every_interval() {
    let (_server, addr) = serve("time", &["--interval", "1"]);
    let mut client = LineConn::connect(&addr);
    let first = client.line();
    assert!(is_time(&first), "{first:?}");
    // The next push comes an interval later; only its arrival is checked, not when.
    let second = client.line();
    assert!(is_time(&second), "{second:?}");
}

#[test]
fn broadcast_relays_a_line_to_the_other_member_only() {
    let (server, addr) = serve("broadcast", &[]);
    let mut first = LineConn::connect(&addr);
    assert_eq!(first.line(), "* welcome guest1, 1 member(s) online");
    let mut second = LineConn::connect(&addr);
    assert_eq!(second.line(), "* welcome guest2, 2 member(s) online");
    assert_eq!(first.line(), "* guest2 joined");
    first.send(b"hi\n");
    assert_eq!(second.line(), "guest1: hi");
    second.send(b"/who\n");
    assert_eq!(second.line(), "* members: guest1, guest2 (you)");
    second.send(b"hello back\n");
    // The sender never gets its own line: the next thing `first` sees is the reply.
    assert_eq!(first.line(), "guest2: hello back");
    drop(second);
    assert_eq!(first.line(), "* guest2 left");
    server.wait_for_log("joined as guest2");
}

#[test]
fn reply_presets_answer_as_the_original_servers() {
    let (_hello, to) = serve("hello", &[]);
    let out = run(&["send", "--to", &to, "hello"], b"");
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("world\n", Some(0)), "{out:?}");
    let out = run(&["send", "--to", &to, "bonjour"], b"");
    assert_eq!(text(&out.stderr), "error: expected \"hello\"\n");
    assert_eq!(out.status.code(), Some(1));

    let (_greet, to) = serve("greet", &[]);
    let out = run(&["send", "--to", &to, "John"], b"");
    assert_eq!(text(&out.stdout), "Hello Good morning !!!! ::: John\n", "{out:?}");
    // A client written like the seed's sends no newline and keeps its write side open: it
    // is answered once it pauses, not after the idle timeout.
    let mut seed_client = LineConn::connect(&to);
    seed_client.send(b"John");
    assert_eq!(seed_client.line(), "Hello Good morning !!!! ::: John");

    let (stamp_server, to) = serve("stamp", &[]);
    let mut client = LineConn::connect(&to);
    client.send(b"Hello, World!\n");
    let reply = client.line();
    let stamp = reply.strip_prefix("Server received at ").and_then(|r| r.strip_suffix(": Hello, World!"));
    assert!(stamp.is_some_and(is_time), "{reply:?}");
    // One exchange per connection: the server closes after its reply.
    let mut rest = String::new();
    assert_eq!(std::io::Read::read_to_string(&mut client.into_reader(), &mut rest).unwrap(), 0);
    // As the lab server does, the log shows what came in and what went out.
    let received = stamp_server.wait_for_log("stamp: received from 127.0.0.1:");
    assert!(received.ends_with(": \"Hello, World!\""), "{received:?}");
    let sent = stamp_server.wait_for_log("stamp: sent response to 127.0.0.1:");
    assert!(sent.ends_with(&format!(": \"{reply}\"")), "{sent:?}");
}

#[test]
fn a_port_in_use_is_a_one_line_error_naming_it() {
    let (_echo, addr) = serve("echo", &[]);
    let out = run(&["serve", "time", "--listen", &addr], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim_end().lines().last().unwrap(),
        format!("switchyard: time: cannot listen on {addr}: address already in use")
    );
}

#[test]
fn hello_on_several_ports_checks_which_answer() {
    // Another server already holds 5002: it is skipped, and still found up by the check.
    let other = Proc::start(&["serve", "hello", "--listen", "127.0.0.123:5002"]);
    other.wait_for_log("hello server listening on 127.0.0.123:5002");
    let server = Proc::start(&["serve", "hello", "--listen", "127.0.0.123:5001", "--ports", "5001,5002,5003"]);
    server.wait_for_log("port 5002 is in use: not serving it");
    server.wait_for_log("hello server listening on 127.0.0.123:5001, 127.0.0.123:5003");
    for port in [5001, 5002, 5003] {
        server.wait_for_log(&format!("interconnectivity: 127.0.0.123:{port} is up (hello → world)"));
    }
    let out = run(&["send", "--to", "127.0.0.123:5003", "hello"], b"");
    assert_eq!(text(&out.stdout), "world\n", "{out:?}");
}
