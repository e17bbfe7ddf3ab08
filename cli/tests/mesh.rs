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

/// `--mesh-secret-file`: servers holding the same secret link; one holding another is
/// refused by both sides with one clear line each; a process that announces itself as a
/// server without proving the secret (written from docs/PROTOCOL.md alone: an `Announce`,
/// then a `Forward` as Alice) is refused and closed, and the users carry on.
#[test]
fn only_servers_that_prove_the_mesh_secret_join() {
    use std::io::{Read, Write};
    let (s1, s2, s3) = ("127.0.0.125:5001", "127.0.0.125:5002", "127.0.0.125:5003");
    let ours = support::TempFile::new("mesh-secret-ours", "correct horse battery staple\n");
    let theirs = support::TempFile::new("mesh-secret-theirs", "something else\n");
    let start = |listen: &str, peer: &str, secret: &support::TempFile| {
        let server =
            Proc::start(&["mesh", "server", "--listen", listen, "--peer", peer, "--mesh-secret-file", secret.arg()]);
        server.wait_for_log(&format!(
            "mesh server listening on {listen}; dialling {peer}; linking with servers that prove the mesh secret"
        ));
        server
    };
    let mut servers = [start(s1, s2, &ours), start(s2, s1, &ours)];
    servers[1].wait_for_log(&format!("linked to server {s1}"));

    let mut stranger = start(s3, s1, &theirs);
    stranger.wait_for_log(&format!(
        "server link with {s1} closed: we refused it: wrong mesh secret: the two servers hold different ones"
    ));
    servers[0].wait_for_log("closed: it refused us: wrong mesh secret: the two servers hold different ones");

    // Bob waits on server 2.
    let mut bob = Proc::start_interactive(&["mesh", "chat", "--server", s2, "--user", "Bob"]);
    bob.wait_for_stdout(&format!("Connected to {s2}"));

    // The forger: Announce { 127.0.0.125:5009, no known servers }, then a Forward from Alice.
    let mut forger = std::net::TcpStream::connect(s1).expect("connect");
    let mut frames = vec![1, 0, 0, 8, 0, 0, 4, 127, 0, 0, 125, 0x13, 0x91, 0];
    let body = b"send me your password";
    let mut forward = vec![7u8; 16]; // id
    forward.extend([0, 3]); // attempt, hops
    forward.extend([4, 127, 0, 0, 125, 0x13, 0x91]); // origin
    forward.extend([5, b'A', b'l', b'i', b'c', b'e', 3, b'B', b'o', b'b']);
    forward.extend(body);
    frames.extend([3, 2, 0, forward.len() as u8, 0, 0]);
    frames.extend(forward);
    forger.write_all(&frames).expect("send");
    // Until the server closes (a reset, should it close with bytes unread, ends it too).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    while let Ok(n @ 1..) = forger.read(&mut chunk) {
        answer.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&answer[..2], &[1, 5], "a PeerRefused frame: {answer:?}");
    let reason = String::from_utf8_lossy(&answer[6..]);
    assert!(reason.starts_with("this mesh has a secret"), "{reason}");
    servers[0].wait_for_log("closed: we refused it: this mesh has a secret");

    // Alice, a real user, still reaches Bob; the forgery never did.
    let out = run(&["mesh", "chat", "--server", s1, "--user", "Alice"], b"Bob hello\n");
    assert!(text(&out.stdout).contains("delivered to Bob\n"), "{out:?}");
    assert_eq!(bob.wait_for_stdout("Alice:"), "Alice: hello");
    assert!(bob.close_and_wait().success());
    for server in servers.iter_mut().chain([&mut stranger]) {
        assert!(server.interrupt().success());
    }
}

#[test]
fn a_mesh_server_beyond_loopback_needs_a_secret_or_insecure() {
    let secret = support::TempFile::new("mesh-secret-flags", "s3cret\n");
    support::assert_refused(&[
        (
            &["mesh", "server", "--listen", "192.0.2.1:5001"],
            2,
            "without --mesh-secret-file would let anyone who reaches it join the mesh",
        ),
        (
            &["mesh", "server", "--mesh-secret-file", secret.arg(), "--insecure"],
            2,
            "--insecure is for a server without --mesh-secret-file",
        ),
        (
            &["mesh", "server", "--mesh-secret-file", "/nonexistent/mesh.key"],
            1,
            "cannot read secret file /nonexistent/mesh.key: no such file",
        ),
    ]);
}

/// A server refused for a wrong secret is refused again at every redial: the first
/// refusal is a warning, the repeats only debug lines, so a log does not fill with one
/// misconfiguration every few seconds.
#[test]
fn a_refusal_repeated_at_every_redial_is_warned_about_once() {
    let (s1, stranger) = ("127.0.0.129:5001", "127.0.0.129:5002");
    let ours = support::TempFile::new("mesh-secret-once-ours", "correct horse battery staple\n");
    let theirs = support::TempFile::new("mesh-secret-once-theirs", "something else\n");
    let _s1 = Proc::start(&["mesh", "server", "--listen", s1, "--peer", stranger, "--mesh-secret-file", ours.arg()]);
    let stranger =
        Proc::start(&["-v", "mesh", "server", "--listen", stranger, "--peer", s1, "--mesh-secret-file", theirs.arg()]);
    let refusal = "closed: it refused us: wrong mesh secret";
    let first = stranger.wait_for_log(refusal);
    assert!(first.contains(" WARN "), "{first}");
    let mut quiet = 0;
    while quiet < 3 {
        let line = stranger.next_log();
        if line.contains(refusal) {
            assert!(line.contains(" DEBUG "), "a repeat within ten minutes is not a warning: {line}");
            quiet += 1;
        }
    }
}

/// `--user-token-file`: a listed name is registered only with its token; a login with the
/// token takes the name from an older session on another server, which is told and ends,
/// and messages reach the new session.
#[test]
fn a_user_with_its_token_takes_its_name_back_and_no_one_else_gets_it() {
    let (s1, s2) = ("127.0.0.126:5001", "127.0.0.126:5002");
    let tokens = support::TempFile::new("mesh-tokens", "# users\nAlice 0123456789abcdef0123\n");
    let wrong = support::TempFile::new("mesh-token-wrong", "Alice not-alices-token-at-all\n");
    let start = |listen: &str, peer: &str| {
        let server =
            Proc::start(&["mesh", "server", "--listen", listen, "--peer", peer, "--user-token-file", tokens.arg()]);
        server.wait_for_log(&format!(
            "dialling {peer}; linking with any server (no mesh secret); 1 name(s) only with their tokens"
        ));
        server
    };
    let mut servers = [start(s1, s2), start(s2, s1)];
    servers[1].wait_for_log(&format!("linked to server {s1}"));

    let chat = |server: &str, token_file: Option<&str>| {
        let mut args = vec!["mesh", "chat", "--server", server, "--user", "Alice"];
        args.extend(token_file.map(|f| ["--user-token-file", f]).into_iter().flatten());
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let args = chat(s1, Some(tokens.arg()));
    let mut laptop = Proc::start_interactive(&args.iter().map(String::as_str).collect::<Vec<_>>());
    laptop.wait_for_stdout(&format!("Connected to {s1}"));

    for (token_file, says) in [
        (None, format!("registration refused: {s2} asks for the token of Alice, and this client has none")),
        (Some(wrong.arg()), "registration refused: wrong token for Alice".to_owned()),
    ] {
        let args = chat(s2, token_file);
        let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(text(&out.stderr).contains(&says), "{}", text(&out.stderr));
    }

    let args = chat(s2, Some(tokens.arg()));
    let mut phone = Proc::start_interactive(&args.iter().map(String::as_str).collect::<Vec<_>>());
    phone.wait_for_stdout(&format!("Connected to {s2}"));
    laptop.wait_for_log(&format!("name lost: name Alice was taken over by a login with its token at {s2}"));
    assert_eq!(laptop.child.wait().expect("the laptop's client ends").code(), Some(1));

    let out = run(&["mesh", "chat", "--server", s1, "--user", "Bob"], b"Alice are you there?\n");
    assert!(text(&out.stdout).contains("delivered to Alice\n"), "{out:?}");
    assert_eq!(phone.wait_for_stdout("Bob:"), "Bob: are you there?");
    assert!(phone.close_and_wait().success());
    for server in &mut servers {
        assert!(server.interrupt().success());
    }
}

/// `switchyard cert` into `dir/out` with `args`; returns what it printed.
fn cert_in(dir: &support::TempDir, out: &str, args: &[&str]) -> String {
    let out_dir = dir.file(out);
    let made = run(&[&["cert", "--out", &out_dir][..], args].concat(), b"");
    assert!(made.status.success(), "{made:?}");
    text(&made.stdout)
}

/// A mesh CA in `dir/ca`, certificates it issued for `ip` in `dir/s1` and `dir/s2`, and a
/// self-signed one for `ip` in `dir/s3`: returns the fingerprint of s1's.
fn mesh_certificates(dir: &support::TempDir, ip: &str) -> String {
    cert_in(dir, "ca", &["--ca", "--name", "Test mesh CA"]);
    let issuer = dir.file("ca");
    let s1 = cert_in(dir, "s1", &["--name", ip, "--issuer", &issuer]);
    cert_in(dir, "s2", &["--name", ip, "--issuer", &issuer]);
    cert_in(dir, "s3", &["--name", ip]);
    s1.lines().find_map(|l| l.strip_prefix("fingerprint ")).expect("a fingerprint").to_owned()
}

/// `--mesh-ca`: two servers with certificates the mesh CA issued link over TLS (each
/// checking the other's certificate, as a server's and as a client's) and carry a message
/// between users on different servers; a third, with a self-signed certificate that pins
/// the first server's, speaks TLS to it but has no certificate from the CA to present: it
/// is refused on both ends with one clear line; so is a fourth, whose certificate is from
/// another CA of the same name, at the TLS handshake. The others carry on.
#[test]
fn only_servers_with_a_certificate_from_the_mesh_ca_join() {
    let (s1, s2, s3, s4) = ("127.0.0.126:5001", "127.0.0.126:5002", "127.0.0.126:5003", "127.0.0.126:5004");
    let dir = support::TempDir::new("mesh-ca");
    let s1_pin = mesh_certificates(&dir, "127.0.0.126");
    cert_in(&dir, "rogue", &["--ca", "--name", "Test mesh CA"]);
    cert_in(&dir, "s4", &["--name", "127.0.0.126", "--issuer", &dir.file("rogue")]);
    let ca = dir.file("ca/cert.pem");
    let start = |listen: &str, peer: &str, name: &str, trust: &[&str]| {
        let (cert, key) = (dir.file(&format!("{name}/cert.pem")), dir.file(&format!("{name}/key.pem")));
        let base = ["mesh", "server", "--listen", listen, "--peer", peer, "--tls-cert", &cert, "--tls-key", &key];
        Proc::start(&[&base[..], trust].concat())
    };
    let mut servers = [start(s1, s2, "s1", &["--mesh-ca", &ca]), start(s2, s1, "s2", &["--mesh-ca", &ca])];
    servers[0].wait_for_log(&format!(
        "mesh server (TLS) listening on {s1}; dialling {s2}; linking with servers with a certificate from the mesh CA"
    ));
    servers[1].wait_for_log(&format!("linked to server {s1}"));

    let refused = "this mesh admits servers by a certificate from its CA (--mesh-ca): connect with one";
    let mut stranger = start(s3, s1, "s3", &["--tls-pin", &s1_pin]);
    stranger.wait_for_log(&format!("server link with {s1} closed: it refused us: {refused}"));
    servers[0].wait_for_log(&format!("closed: we refused it: {refused}"));
    let mut rogue = start(s4, s1, "s4", &["--mesh-ca", &dir.file("rogue/cert.pem")]);
    rogue.wait_for_log(&format!(
        "server link with {s1} closed: TLS: the server's certificate is not signed by a trusted authority"
    ));
    servers[0].wait_for_log("closed: its TLS handshake failed: the peer refused our certificate");

    let mut bob = Proc::start_interactive(&["mesh", "chat", "--server", s2, "--user", "Bob", "--tls-ca", &ca]);
    bob.wait_for_stdout(&format!("Connected to {s2}"));
    let out = run(&["mesh", "chat", "--server", s1, "--user", "Alice", "--tls-ca", &ca], b"Bob hello\n");
    assert!(text(&out.stdout).contains("delivered to Bob\n"), "{out:?}");
    assert_eq!(bob.wait_for_stdout("Alice:"), "Alice: hello");
    assert!(bob.close_and_wait().success());
    for server in servers.iter_mut().chain([&mut stranger, &mut rogue]) {
        assert!(server.interrupt().success());
    }
}

#[test]
fn a_token_file_that_does_not_read_is_refused_with_its_line() {
    let short = support::TempFile::new("mesh-tokens-short", "# users\nAlice short\n");
    let other = support::TempFile::new("mesh-tokens-other", "Bob 0123456789abcdef0123\n");
    support::assert_refused(&[
        (
            &["mesh", "server", "--user-token-file", short.arg()],
            1,
            "line 2: the token of Alice is 5 bytes; use at least 16",
        ),
        (
            &["mesh", "chat", "--user", "Alice", "--user-token-file", other.arg()],
            2,
            "has no `Alice TOKEN` line for --user Alice",
        ),
        (
            &["mesh", "server", "--user-token-file", "/nonexistent/tokens"],
            1,
            "cannot read token file /nonexistent/tokens",
        ),
    ]);
}

/// `--mesh-ca` is checked at start: it needs the server's own certificate, issued by that
/// CA for the listen IP, and takes the place of --insecure and of --tls-pin/--tls-ca.
#[test]
fn a_mesh_ca_needs_a_certificate_it_issued_for_the_listen_address() {
    let dir = support::TempDir::new("mesh-ca-flags");
    mesh_certificates(&dir, "127.0.0.127");
    let (ca, files) = (dir.file("ca/cert.pem"), |name: &str| {
        [dir.file(&format!("{name}/cert.pem")), dir.file(&format!("{name}/key.pem"))]
    });
    let ([s1_cert, s1_key], [s3_cert, s3_key]) = (files("s1"), files("s3"));
    let server = |listen: &'static str, cert: &str, key: &str| -> Vec<String> {
        ["mesh", "server", "--listen", listen, "--tls-cert", cert, "--tls-key", key, "--mesh-ca", &ca]
            .map(String::from)
            .to_vec()
    };
    let self_signed = server("127.0.0.127:5001", &s3_cert, &s3_key);
    let other_ip = server("127.0.0.128:5001", &s1_cert, &s1_key);
    let mut insecure = server("192.0.2.1:5001", &s1_cert, &s1_key);
    insecure.push("--insecure".into());
    let leaf_as_ca: Vec<String> = ["mesh", "server", "--listen", "127.0.0.127:5001", "--tls-cert", &s1_cert]
        .into_iter()
        .chain(["--tls-key", &s1_key, "--mesh-ca", &s1_cert])
        .map(String::from)
        .collect();
    let mut pinned = server("127.0.0.127:5001", &s1_cert, &s1_key);
    pinned.extend(["--tls-ca".into(), ca.clone()]);
    support::assert_refused(&[
        (&strs(&self_signed), 1, "not a certificate the mesh CA"),
        (&strs(&other_ip), 1, "issued for 127.0.0.128"),
        (&strs(&insecure), 2, "--insecure is for a server without --mesh-ca"),
        (&strs(&pinned), 2, "--mesh-ca says which peers to trust"),
        (&["mesh", "server", "--mesh-ca", &ca], 2, "--mesh-ca needs --tls-cert and --tls-key"),
        (&strs(&leaf_as_ca), 1, "not a CA certificate"),
    ]);
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
