//! What the CLI tests share: running the `switchyard` binary in the foreground or the
//! background, and talking to servers over raw TCP.
//!
//! Every address is on 127.0.0.0/8, or inside network namespaces a test makes and removes
//! itself (`netns_punch`). Tests that need fixed ports (the tunnel, `up`) each use
//! a 127.0.0.N of their own, so they run in parallel. Timeouts here are guards that turn a
//! hang into a failure, never assertions about speed.

// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod netns;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Generous guard so a broken binary fails the test instead of hanging it.
pub const GUARD: Duration = Duration::from_secs(60);

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `EXE ARGS` (`exe` a `switchyard` executable) with output piped and logs at their
/// default level, run inside the network namespace `netns` when one is given (`ip netns
/// exec` execs the binary, so the child is `switchyard` itself).
fn command_in(netns: Option<&str>, exe: &str, args: &[&str]) -> Command {
    let mut command = match netns {
        Some(netns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns, exe]);
            c
        }
        None => Command::new(exe),
    };
    command.args(args).env_remove("RUST_LOG").stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Runs the binary to completion with `stdin` piped in; panics after the guard time.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_binary(BIN, args, stdin)
}

/// [`run`] for another `switchyard` executable, `exe`.
pub fn run_binary(exe: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command_in(None, exe, args).stdin(Stdio::piped()).spawn().expect("run switchyard");
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

/// Runs `switchyard ARGS --help` for each case and checks that it exits 0 and that its text
/// holds every wanted phrase (argh wraps descriptions, so runs of whitespace are collapsed
/// before comparing).
pub fn assert_helps(cases: &[(&[&str], &[&str])]) {
    for &(args, wanted) in cases {
        let out = run(args, b"");
        assert!(out.status.success(), "{args:?}: {out:?}");
        let help = text(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        for want in wanted {
            assert!(help.contains(want), "{args:?} help lacks {want:?}:\n{help}");
        }
    }
}

/// Runs `switchyard ARGS` for each case and checks that it exits with the given code and
/// says why on stderr, in one line holding the wanted phrase.
pub fn assert_refused(cases: &[(&[&str], i32, &str)]) {
    for &(args, code, wanted) in cases {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// Lines from a child's pipe, read on a thread.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line from `lines` containing `text`; panics after the guard time.
fn wait_for(lines: &mpsc::Receiver<String>, what: &str, text: &str) -> String {
    loop {
        match lines.recv_timeout(GUARD) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no {what} line with {text:?}: {e}"),
        }
    }
}

/// A background `switchyard` process, killed when dropped (also when the test fails).
pub struct Proc {
    /// The process.
    pub child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `switchyard ARGS` with logs at the default level.
    pub fn start(args: &[&str]) -> Proc {
        Proc::spawn(args, Stdio::null())
    }

    /// [`Proc::start`] with stdin open: the test types lines with [`Proc::type_line`].
    pub fn start_interactive(args: &[&str]) -> Proc {
        Proc::spawn(args, Stdio::piped())
    }

    /// [`Proc::start`] inside the network namespace `netns`; stdin open if `interactive`.
    pub fn start_in(netns: &str, args: &[&str], interactive: bool) -> Proc {
        let stdin = if interactive { Stdio::piped() } else { Stdio::null() };
        Proc::spawn_in(Some(netns), BIN, args, stdin)
    }

    /// [`Proc::start`] for another `switchyard` executable, `exe`.
    pub fn start_binary(exe: &str, args: &[&str]) -> Proc {
        Proc::spawn_in(None, exe, args, Stdio::null())
    }

    fn spawn(args: &[&str], stdin: Stdio) -> Proc {
        Proc::spawn_in(None, BIN, args, stdin)
    }

    fn spawn_in(netns: Option<&str>, exe: &str, args: &[&str], stdin: Stdio) -> Proc {
        let mut child = command_in(netns, exe, args).stdin(stdin).spawn().expect("start switchyard");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Proc { child, stdout, stderr }
    }

    /// Types `line` (a newline is added) on the process's stdin.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("started with start_interactive, stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes stdin (the end of input) and waits for the process to end; panics after the
    /// guard time.
    pub fn close_and_wait(&mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for switchyard") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "switchyard did not end after its input did");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next stderr (log) line containing `text`.
    pub fn wait_for_log(&self, text: &str) -> String {
        wait_for(&self.stderr, "log", text)
    }

    /// The next stderr (log) line, whatever it says; panics after the guard time.
    pub fn next_log(&self) -> String {
        self.stderr.recv_timeout(GUARD).unwrap_or_else(|e| panic!("no more log lines: {e}"))
    }

    /// Waits until log lines containing each of `texts` have come, in any order (for
    /// events of machines that run side by side).
    pub fn wait_for_logs(&self, texts: &[&str]) {
        let mut missing: Vec<&str> = texts.to_vec();
        while !missing.is_empty() {
            match self.stderr.recv_timeout(GUARD) {
                Ok(line) => missing.retain(|text| !line.contains(text)),
                Err(e) => panic!("no log lines with {missing:?}: {e}"),
            }
        }
    }

    /// The next stdout line containing `text`.
    pub fn wait_for_stdout(&self, text: &str) -> String {
        wait_for(&self.stdout, "stdout", text)
    }

    /// Sends the process `signal` (`HUP`, `INT`, ... as `kill -SIGNAL` names it).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([format!("-{signal}"), self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Sends Ctrl-C (SIGINT) and waits for the process to end.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal("INT");
        self.wait_for_log("stopped");
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw TCP client speaking lines, for what `send` cannot do (stay connected while
/// another client talks).
pub struct LineConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineConn {
    /// Connects to `addr`.
    pub fn connect(addr: &str) -> LineConn {
        let writer = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        writer.set_read_timeout(Some(GUARD)).unwrap();
        LineConn { reader: BufReader::new(writer.try_clone().unwrap()), writer }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next line, without its newline; panics at end of stream or after the guard.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed while a line was expected");
        line.trim_end_matches('\n').to_owned()
    }

    /// The next line, or `None` once the connection has ended (closed or reset).
    pub fn line_or_end(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
        }
    }

    /// The reading side, e.g. to read to the end of the stream.
    pub fn into_reader(self) -> BufReader<TcpStream> {
        self.reader
    }
}

/// `YYYY-MM-DD HH:MM:SS`.
pub fn is_time(line: &str) -> bool {
    let shape: String = line.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
    shape == "9999-99-99 99:99:99"
}

/// A file in the temp directory, removed when dropped.
pub struct TempFile {
    /// Where it is.
    pub path: std::path::PathBuf,
}

impl TempFile {
    /// A file holding `contents`, named for the test (`name`) and this process.
    pub fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("switchyard-cli-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile { path }
    }

    /// The path as an argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A directory in the temp directory, removed with what it holds when dropped.
pub struct TempDir {
    /// Where it is.
    pub path: std::path::PathBuf,
}

impl TempDir {
    /// An empty directory named for the test (`name`) and this process.
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("switchyard-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// The path of `file` in it, as an argument.
    pub fn file(&self, file: &str) -> String {
        self.path.join(file).to_str().expect("temp paths are UTF-8").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `switchyard cert` into a new directory; returns it and the fingerprint it printed.
pub fn cert(name: &str, names: &[&str]) -> (TempDir, String) {
    let dir = TempDir::new(name);
    let out_dir = dir.path.to_str().unwrap().to_owned();
    let mut args = vec!["cert", "--out", &out_dir];
    for n in names {
        args.extend(["--name", n]);
    }
    let out = run(&args, b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    let fingerprint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap_or_else(|| panic!("no fingerprint line in {stdout:?}"))
        .to_owned();
    (dir, fingerprint)
}
