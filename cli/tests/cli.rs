//! The `switchyard` binary as a user runs it: `serve echo` in the background, `send` against
//! it, under both runtimes. Servers listen on 127.0.0.1 port 0 and the test reads the real
//! address from the server's log line.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Generous guard so a broken binary fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(60);

/// A background server, killed when dropped (also when the test fails).
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr lines after the "listening" one.
    log: mpsc::Receiver<String>,
}

impl Server {
    fn start(runtime: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["--runtime", runtime, "serve", "echo", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut server = Server { child, addr: "0.0.0.0:0".parse().unwrap(), log };
        let line = server.wait_for_log("listening on ");
        let addr = line.rsplit(' ').next().unwrap();
        server.addr = addr.parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        server
    }

    /// The next log line containing `text`; panics after the guard time.
    fn wait_for_log(&self, text: &str) -> String {
        loop {
            match self.log.recv_timeout(GUARD) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no server log line with {text:?}: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `stdin` piped in; panics after the guard time.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchyard");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(GUARD) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("switchyard {args:?} did not finish");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn send_hello_prints_hello(runtime: &str) {
    let server = Server::start(runtime, &[]);
    let to = server.addr.to_string();
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
fn interactive_mode_sends_each_line_until_quit() {
    for runtime in ["smol", "async-std"] {
        let server = Server::start(runtime, &[]);
        let to = server.addr.to_string();
        let out = run(&["--runtime", runtime, "send", "--to", &to], b"a\nb\nquit\nnot sent\n");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout), "a\nb\n");
    }
}

#[test]
fn refused_connection_is_one_line_and_exit_1() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    for runtime in ["smol", "async-std"] {
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
    let server = Server::start("smol", &["--max-line", "1024"]);
    let to = server.addr.to_string();
    let long = "x".repeat(5000);
    let out = run(&["send", "--to", &to, &long], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), "error: line too long (limit 1024 bytes)\n");
    server.wait_for_log("line too long");
}

#[test]
fn ctrl_c_stops_the_server_cleanly() {
    for runtime in ["smol", "async-std"] {
        let mut server = Server::start(runtime, &[]);
        let status = Command::new("kill").args(["-INT", &server.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        server.wait_for_log("stopped");
        let exit = server.child.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
    }
}

#[test]
fn every_help_exits_0_and_states_its_defaults() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--help"], &["--runtime", "smol (default)", "serve", "send"]),
        (&["serve", "--help"], &["echo"]),
        (&["serve", "echo", "--help"], &["default 127.0.0.1:7007", "default 65536", "default 300", "Ctrl-C"]),
        (&["send", "--help"], &["default 127.0.0.1:7007", "default 10", "quit", "switchyard send hello"]),
    ];
    for (args, wanted) in cases {
        let out = run(args, b"");
        assert!(out.status.success(), "{args:?}: {out:?}");
        // argh wraps descriptions: compare with runs of whitespace collapsed.
        let help = text(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        for want in wanted {
            assert!(help.contains(want), "{args:?} help lacks {want:?}:\n{help}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["bogus"][..], &["--runtime", "tokio", "send", "x"], &["send", "--to", "not an address", "x"]] {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
