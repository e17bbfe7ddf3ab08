//! The `switchyard` binary as a user runs it: `serve echo` in the background, `send` against
//! it, under both runtimes; help and usage errors of every subcommand. Servers listen on
//! 127.0.0.1 port 0 and the test reads the real address from the server's log line.

mod support;

use std::net::TcpListener;
use support::{assert_helps, run, text, Proc};

/// `serve echo` on a free port; returns it and its address, read from its log line.
fn echo_server(runtime: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--runtime", runtime, "serve", "echo", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Proc::start(&args);
    let line = server.wait_for_log("listening on ");
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    (server, addr)
}

fn send_hello_prints_hello(runtime: &str) {
    let (_server, to) = echo_server(runtime, &[]);
    let out = run(&["--runtime", runtime, "send", "--to", &to, "hello"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn send_hello_prints_hello_on_smol() {
    send_hello_prints_hello("smol");
}

#[test]
fn send_hello_prints_hello_on_async_std() {
    send_hello_prints_hello("async-std");
}

#[test]
fn send_hello_prints_hello_on_mio() {
    send_hello_prints_hello("mio");
}

#[test]
fn interactive_mode_sends_each_line_until_quit() {
    for runtime in ["smol", "async-std", "mio"] {
        let (_server, to) = echo_server(runtime, &[]);
        let out = run(&["--runtime", runtime, "send", "--to", &to], b"a\nb\nquit\nnot sent\n");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout), "a\nb\n");
    }
}

/// Against a server with one exchange per connection (stamp), interactive `send` and
/// `chat` say the server closed, keep reading, and send the next line typed on a new
/// connection, with `chat`'s prefix again.
#[test]
fn interactive_clients_reconnect_for_each_line_to_a_one_exchange_server() {
    let stamp = Proc::start(&["serve", "stamp", "--listen", "127.0.0.1:0"]);
    let to = stamp.wait_for_log("listening on ").rsplit(' ').next().unwrap().to_owned();
    for client in [&["send", "--to", &to][..], &["chat", "--to", &to]] {
        let mut session = Proc::start_interactive(client);
        session.type_line("first");
        session.wait_for_stdout(": first");
        session.wait_for_log(&format!("switchyard: {to} closed the connection; the next line reconnects"));
        session.type_line("second");
        let reply = session.wait_for_stdout(": second");
        assert!(reply.starts_with("Server received at "), "{reply}");
        assert!(session.close_and_wait().success(), "{client:?}");
    }
}

#[test]
fn refused_connection_is_one_line_and_exit_1() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    for runtime in ["smol", "async-std", "mio"] {
        let out = run(&["--runtime", runtime, "send", "--to", &closed, "hello"], b"");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("refused"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(text(&out.stdout), "");
    }
}

#[test]
fn server_error_line_goes_to_stderr_and_exit_1() {
    let (server, to) = echo_server("smol", &["--max-line", "1024"]);
    let long = "x".repeat(5000);
    let out = run(&["send", "--to", &to, &long], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "error: line too long (limit 1024 bytes)\n");
    server.wait_for_log("line too long");
}

#[test]
fn ctrl_c_stops_the_server_cleanly() {
    for runtime in ["smol", "async-std", "mio"] {
        let (mut server, _) = echo_server(runtime, &[]);
        let exit = server.interrupt();
        assert!(exit.success(), "{exit:?}");
    }
}

#[test]
fn every_help_exits_0_and_states_its_defaults() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &["--runtime", "mio (default)", "up", "demo", "serve", "tunnel", "send", "chat", "rendezvous", "punch"],
        ),
        (&["serve", "--help"], &["echo", "time", "broadcast", "hello", "greet", "stamp"]),
        (&["serve", "echo", "--help"], &["default 127.0.0.1:7007", "default 65536", "default 300", "Ctrl-C"]),
        (&["serve", "time", "--help"], &["default 127.0.0.1:9090", "--interval", "default 60", "default 10000"]),
        (&["serve", "broadcast", "--help"], &["default 127.0.0.1:10000", "/who", "/nick NAME"]),
        (&["serve", "hello", "--help"], &["default 127.0.0.1:5001", "default 300"]),
        (&["serve", "greet", "--help"], &["default 127.0.0.1:12345"]),
        (&["serve", "stamp", "--help"], &["default 127.0.0.1:8080"]),
        (&["tunnel", "--help"], &["local", "remote", "same secret file"]),
        (
            &["tunnel", "local", "--help"],
            &["default 127.0.0.1:7000", "default 127.0.0.1:7001", "--forward", "must use the same file", "9090:time"],
        ),
        (
            &["tunnel", "remote", "--help"],
            &["default 127.0.0.1:7001", "--route", "must use the same file", "unknown route"],
        ),
        (
            &["send", "--help"],
            &["default 127.0.0.1:7000", "default 10", "quit", "switchyard send hello", "switchyard send 9090:time"],
        ),
        (&["chat", "--help"], &["default 127.0.0.1:7000", "switchyard chat 10000:", "quit"]),
        (&["up", "--help"], &["default 127.0.0.1", "default 60", "switchyard up", "Ctrl-C"]),
        (&["demo", "--help"], &["default 127.0.0.2", "default 10"]),
    ];
    assert_helps(cases);
}

/// `--version` names the version and, built from a checkout (as here), the revision.
#[test]
fn version_names_the_release_and_the_git_revision() {
    let head = std::process::Command::new("git")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| text(&out.stdout).trim().to_owned());
    for flag in ["--version", "-V"] {
        let out = run(&[flag], b"");
        assert!(out.status.success(), "{flag}: {out:?}");
        let line = text(&out.stdout);
        let words: Vec<&str> = line.split_whitespace().take(2).collect();
        assert_eq!(words, ["switchyard", env!("CARGO_PKG_VERSION")], "{flag}: {line}");
        if let Some(head) = &head {
            assert!(line.contains(&format!("(git {head}")), "{flag}: {line} (HEAD is {head})");
        }
        assert_eq!(line.lines().count(), 1, "{flag}: {line}");
    }
    // No command at all is still a usage error that points at the list of commands.
    let out = run(&[], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("switchyard --help"), "{out:?}");
}

/// `switchyard … | head -1`: a stdout whose reader has gone is no reason to panic. The
/// pipe's read end is closed before the command starts, so every write it makes fails.
#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = support::TempDir::new("closed-stdout");
    let out_dir = dir.file("c");
    let commands: [&[&str]; 4] = [
        &["--version"],
        &["cert", "--help"],
        &["up", "--print-config"],
        &["cert", "--name", "127.0.0.1", "--out", &out_dir],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(support::BIN)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
    // The command did its work all the same.
    assert!(std::path::Path::new(&out_dir).join("cert.pem").exists());
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["bogus"],
        &["--runtime", "tokio", "send", "x"],
        &["send", "--to", "not an address", "x"],
        &["serve", "time", "--interval", "0"],
        &["up", "--host", "not-an-ip"],
        &["chat", "ten:"],
        &["tunnel", "local"],
    ];
    for args in cases {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
