//! TLS on the line services as users meet it: `switchyard cert`, then `serve … --tls-cert
//! --tls-key`, talked to by clients nobody here wrote (Debian's `openssl s_client` and
//! `socat OPENSSL:`) and by `switchyard send --tls-pin/--tls-ca`; and what each refusal
//! looks like on both ends. Every server listens on 127.0.0.1 port 0.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use support::{cert, run, text, LineConn, Proc, TempDir};

/// `serve greet` over TLS with the files in `dir`; returns it and its address.
fn serve_greet(dir: &TempDir) -> (Proc, String) {
    let (cert, key) = (dir.file("cert.pem"), dir.file("key.pem"));
    let args = ["serve", "greet", "--listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key];
    let server = Proc::start(&args);
    let line = server.wait_for_log("greet server (TLS) listening on ");
    (server, line.rsplit(' ').next().unwrap().to_owned())
}

/// Runs a TLS client that is not ours with `stdin` open, writes `line`, and returns the
/// first stdout line that holds `expect` (killing the client then).
fn round_trip(program: &str, args: &[&str], line: &str, expect: &str) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (.ci/run installs it): {e}"));
    child.stdin.as_mut().unwrap().write_all(format!("{line}\n").as_bytes()).unwrap();
    let stdout = child.stdout.take().unwrap();
    let found = BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains(expect));
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    found.unwrap_or_else(|| panic!("{program} printed no {expect:?}; stderr: {}", text(&output.stderr)))
}

/// Colons out, lower case: a fingerprint as `openssl x509 -fingerprint` prints it, or ours.
fn bare_hex(fingerprint: &str) -> String {
    let last = fingerprint.rsplit(['=', ' ']).next().unwrap_or_default();
    last.trim_start_matches("SHA256:").replace(':', "").to_lowercase()
}

#[test]
fn cert_prints_the_fingerprint_openssl_computes_and_keeps_the_key_private() {
    let (dir, fingerprint) = cert("cert-fp", &["localhost", "127.0.0.1"]);
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-ext", "subjectAltName", "-in", &dir.file("cert.pem")])
        .output()
        .expect("openssl (.ci/run installs it)");
    let shown = text(&out.stdout);
    let openssl_fp = shown.lines().find(|l| l.contains("Fingerprint=")).expect("a fingerprint line");
    assert_eq!(bare_hex(&fingerprint), bare_hex(openssl_fp), "{shown}");
    assert!(shown.contains("DNS:localhost") && shown.contains("IP Address:127.0.0.1"), "{shown}");
    // OpenSSL reads the key (PKCS#8 v1), and it is the certificate's.
    let openssl = |args: &[&str]| text(&Command::new("openssl").args(args).output().expect("openssl").stdout);
    let from_key = openssl(&["pkey", "-pubout", "-in", &dir.file("key.pem")]);
    assert!(from_key.contains("BEGIN PUBLIC KEY"), "openssl cannot read the key: {from_key:?}");
    assert_eq!(from_key, openssl(&["x509", "-pubkey", "-noout", "-in", &dir.file("cert.pem")]));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.file("key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key is its owner's only");

    let again = run(&["cert", "--out", dir.path.to_str().unwrap()], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("exists; pass --force to replace it"), "{again:?}");
}

#[test]
fn openssl_s_client_and_socat_talk_to_a_tls_service() {
    let (dir, _) = cert("interop", &["localhost", "127.0.0.1"]);
    let (_server, addr) = serve_greet(&dir);
    let ca = dir.file("cert.pem");
    // s_client checks the chain (the self-signed certificate as its own CA) and the IP.
    let args =
        ["s_client", "-connect", &addr, "-quiet", "-verify_return_error", "-CAfile", &ca, "-verify_ip", "127.0.0.1"];
    let reply = round_trip("openssl", &args, "John", "Hello Good morning");
    assert_eq!(reply, "Hello Good morning !!!! ::: John");

    let target = format!("OPENSSL:{addr},cafile={ca},commonname=localhost");
    let reply = round_trip("socat", &["-", &target], "Bob", "Hello Good morning");
    assert_eq!(reply, "Hello Good morning !!!! ::: Bob");
}

#[test]
fn openssl_refuses_tls_1_2_and_the_server_says_why() {
    let (dir, _) = cert("tls12", &["localhost"]);
    let (server, addr) = serve_greet(&dir);
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-tls1_2"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    assert!(text(&out.stderr).contains("alert protocol version"), "{}", text(&out.stderr));
    server.wait_for_log("closed: TLS: the peer cannot speak what we require: TLS 1.3");
}

#[test]
fn send_pins_the_certificate_and_a_wrong_pin_is_refused_on_both_ends() {
    let (dir, fingerprint) = cert("pin", &["localhost"]);
    let (server, addr) = serve_greet(&dir);
    let out = run(&["send", "--to", &addr, "--tls-pin", &fingerprint, "John"], b"");
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("Hello Good morning !!!! ::: John\n", Some(0)),
        "{out:?}"
    );

    let wrong = format!("SHA256:{}", "ab".repeat(32));
    let out = run(&["send", "--to", &addr, "--tls-pin", &wrong, "John"], b"");
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains(&format!("its fingerprint is {fingerprint}, not the pinned {wrong}")), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    server.wait_for_log("closed: TLS: the peer refused our certificate");

    // --tls-ca checks the name too: this certificate is for localhost, not 127.0.0.1.
    let ca = dir.file("cert.pem");
    let out = run(&["send", "--to", &addr, "--tls-ca", &ca, "John"], b"");
    assert!(text(&out.stderr).contains("not valid for name \"127.0.0.1\""), "{out:?}");
    let out = run(&["send", "--to", &addr, "--tls-ca", &ca, "--tls-name", "localhost", "John"], b"");
    assert_eq!(text(&out.stdout), "Hello Good morning !!!! ::: John\n", "{out:?}");

    // `--tls-ca system` reads the system's bundle, which SSL_CERT_FILE names as for OpenSSL.
    let system = |bundle: &str| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["send", "--to", &addr, "--tls-ca", "system", "--tls-name", "localhost", "John"])
            .env("SSL_CERT_FILE", bundle)
            .output()
            .expect("run switchyard")
    };
    assert_eq!(text(&system(&ca).stdout), "Hello Good morning !!!! ::: John\n");
    let out = system(&dir.file("missing.pem"));
    assert!(text(&out.stderr).contains("--tls-ca system") && text(&out.stderr).contains("cannot read it"), "{out:?}");
}

#[test]
fn a_plaintext_client_on_a_tls_port_is_told_and_tls_clients_carry_on() {
    let (dir, fingerprint) = cert("plain", &["localhost"]);
    let (server, addr) = serve_greet(&dir);
    // A TLS session opened first stays up across the plaintext client's refusal.
    let mut tls = Proc::start_interactive(&["send", "--to", &addr, "--tls-pin", &fingerprint]);
    tls.type_line("Before");
    tls.wait_for_stdout("::: Before");

    let mut plain = LineConn::connect(&addr);
    plain.send(b"John\n");
    assert_eq!(
        plain.line(),
        "error: this port speaks TLS; connect with a TLS client (e.g. openssl s_client -connect HOST:PORT)"
    );
    let mut rest = Vec::new();
    plain.into_reader().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the one line: {rest:?}");
    server.wait_for_log("closed: TLS: the peer sent text, not TLS: \"John\"");

    tls.type_line("After");
    tls.wait_for_stdout("::: After");
    assert!(tls.close_and_wait().success());
}

#[test]
fn tls_options_that_cannot_work_are_refused_before_anything_starts() {
    let (dir, _) = cert("bad-options", &["localhost"]);
    let cert_file = dir.file("cert.pem");
    let missing = dir.file("missing.pem");
    support::assert_refused(&[
        (&["serve", "greet", "--tls-cert", &cert_file], 2, "--tls-cert needs --tls-key"),
        (&["serve", "greet", "--tls-cert", &cert_file, "--tls-key", &missing], 1, "cannot read it"),
        (&["serve", "greet", "--tls-cert", &cert_file, "--tls-key", &cert_file], 1, "no PEM private key"),
        (&["send", "--tls-pin", "SHA256:12", "x"], 2, "not a SHA-256 fingerprint"),
        (&["send", "--tls-name", "localhost", "x"], 2, "--tls-name needs --tls-pin or --tls-ca"),
    ]);
}

/// An echo service and a TLS tunnel remote end in front of it on `host` (its own loopback
/// address, default ports: the ends name each other by them), the remote end started with
/// `remote_tls` besides its certificate; local ends are started with [`TlsTunnel::local`].
struct TlsTunnel {
    host: String,
    key: support::TempFile,
    remote: Proc,
    _echo: Proc,
    _certificate: TempDir,
}

impl TlsTunnel {
    fn start(host: &str, remote_tls: &[&str], listening: &str) -> (TlsTunnel, String) {
        let at = |port: u16| format!("{host}:{port}");
        let (dir, fingerprint) = cert(&format!("tunnel-{host}"), &[host]);
        let key = support::TempFile::new(&format!("tls-tunnel-{host}.key"), "a shared secret");
        let echo = Proc::start(&["serve", "echo", "--listen", &at(7007)]);
        echo.wait_for_log("server listening on");
        let (cert_file, key_file) = (dir.file("cert.pem"), dir.file("key.pem"));
        let (listen, default) = (at(7001), format!("default={}", at(7007)));
        let base = ["tunnel", "remote", "--listen", &listen, "--secret-file", key.arg(), "--route", &default];
        let remote =
            Proc::start(&[&base[..], &["--tls-cert", &cert_file, "--tls-key", &key_file], remote_tls].concat());
        remote.wait_for_log(listening);
        (TlsTunnel { host: host.to_owned(), key, remote, _echo: echo, _certificate: dir }, fingerprint)
    }

    fn at(&self, port: u16) -> String {
        format!("{}:{port}", self.host)
    }

    /// A local end listening on `port`, with the TLS options `tls`.
    fn local(&self, port: u16, tls: &[&str]) -> Proc {
        let (listen, remote) = (self.at(port), self.at(7001));
        let base = ["tunnel", "local", "--listen", &listen, "--remote", &remote, "--secret-file", self.key.arg()];
        Proc::start(&[&base[..], tls].concat())
    }
}

#[test]
fn the_tunnel_carrier_runs_over_tls_and_each_misconfigured_end_is_told_why() {
    let (t, fingerprint) = TlsTunnel::start("127.0.0.121", &[], "tunnel remote end (TLS) listening on");
    let pinned = t.local(7000, &["--tls-pin", &fingerprint]);
    pinned.wait_for_log("carrier up");
    let out = run(&["send", "--to", &t.at(7000), "through TLS"], b"");
    assert_eq!(text(&out.stdout), "through TLS\n", "{out:?}");

    // A local end with the wrong pin: refused by it, and the remote end hears why.
    let wrong = t.local(7100, &["--tls-pin", &format!("SHA256:{}", "cd".repeat(32))]);
    let said = wrong.wait_for_log("carrier down");
    assert!(said.contains(&format!("its fingerprint is {fingerprint}")), "{said}");
    t.remote.wait_for_log("TLS: the peer refused our certificate");
    let out = run(&["send", "--to", &t.at(7100), "x"], b"");
    assert!(text(&out.stderr).starts_with("error: tunnel is down (cannot connect: TLS:"), "{out:?}");

    // A local end without TLS options: both ends name the mismatch.
    let plain = t.local(7200, &[]);
    let said = plain.wait_for_log("carrier down");
    assert!(said.contains("the remote end speaks TLS: give this end --tls-pin or --tls-ca"), "{said}");
    t.remote.wait_for_log("did not start a TLS handshake");

    // Through all of that, the good carrier carried on.
    let out = run(&["send", "--to", &t.at(7000), "still here"], b"");
    assert_eq!(text(&out.stdout), "still here\n", "{out:?}");
}

#[test]
fn mutual_tls_admits_only_the_local_end_with_the_pinned_client_certificate() {
    let (client_dir, client_pin) = cert("mtls-client", &["local-end"]);
    let required = "tunnel remote end (TLS, client certificates required) listening on";
    let (t, server_pin) = TlsTunnel::start("127.0.0.124", &["--tls-client-pin", &client_pin], required);
    let (client_cert, client_key) = (client_dir.file("cert.pem"), client_dir.file("key.pem"));
    let admitted =
        t.local(7000, &["--tls-pin", &server_pin, "--tls-client-cert", &client_cert, "--tls-client-key", &client_key]);
    admitted.wait_for_log("carrier up");
    let out = run(&["send", "--to", &t.at(7000), "mutual"], b"");
    assert_eq!(text(&out.stdout), "mutual\n", "{out:?}");

    let anonymous = t.local(7100, &["--tls-pin", &server_pin]);
    let said = anonymous.wait_for_log("carrier down");
    assert!(said.contains("requires a client certificate (see --tls-client-cert)"), "{said}");
    t.remote.wait_for_log("the client presented no certificate");
}

#[test]
fn mesh_servers_link_and_users_chat_over_tls_and_plaintext_clients_are_told() {
    let (s1, s2) = ("127.0.0.122:5001", "127.0.0.122:5002");
    let (dir, fingerprint) = cert("mesh", &["127.0.0.122"]);
    let (cert_file, key_file) = (dir.file("cert.pem"), dir.file("key.pem"));
    let tls = ["--tls-cert", cert_file.as_str(), "--tls-key", key_file.as_str()];
    let server = |listen: &str, peer: &str| {
        let p = Proc::start(&[&["mesh", "server", "--listen", listen, "--peer", peer][..], &tls].concat());
        p.wait_for_log(&format!("mesh server (TLS) listening on {listen}"));
        p
    };
    let first = server(s1, s2);
    let _second = server(s2, s1);
    // The peers trust each other by the one certificate they share.
    first.wait_for_log(&format!("linked to server {s2}"));

    let mut bob =
        Proc::start_interactive(&["mesh", "chat", "--server", s2, "--user", "Bob", "--tls-pin", &fingerprint]);
    bob.wait_for_stdout(&format!("Connected to {s2}"));
    let out =
        run(&["mesh", "chat", "--server", s1, "--user", "Alice", "--tls-pin", &fingerprint], b"Bob hi over TLS\n");
    assert!(text(&out.stdout).contains("delivered to Bob"), "{out:?}");
    bob.wait_for_stdout("Alice: hi over TLS");

    let out = run(&["mesh", "chat", "--server", s1, "--user", "Carol"], b"");
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains("the server speaks TLS: give this end --tls-pin or --tls-ca"), "{said}");
    assert!(bob.close_and_wait().success());
}

/// Asserts that OpenSSL takes `leaf` for a certificate from the CA `ca` for 127.0.0.1,
/// both as a server's and as a client's (a mesh server presents it as both).
fn openssl_verifies(ca: &str, leaf: &str) {
    for purpose in ["sslserver", "sslclient"] {
        let out = Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-verify_ip", "127.0.0.1", "-CAfile", ca, leaf])
            .output()
            .expect("openssl");
        assert!(out.status.success() && text(&out.stdout).contains(": OK"), "{leaf} {purpose}: {out:?}");
    }
}

/// `cert --ca` makes a CA and `cert --issuer` a certificate it signed, for serving and for
/// presenting as a client: OpenSSL verifies the chain for both purposes, and an existing
/// file is still kept unless --force.
#[test]
fn cert_issues_certificates_from_a_ca_of_its_own() {
    let dir = TempDir::new("cert-ca");
    let (ca_dir, leaf_dir) = (dir.file("ca"), dir.file("leaf"));
    let made = run(&["cert", "--ca", "--name", "Test CA", "--out", &ca_dir], b"");
    assert!(made.status.success(), "{made:?}");
    assert!(text(&made.stdout).contains("--mesh-ca"), "says where the CA goes: {made:?}");
    let issued = run(&["cert", "--name", "127.0.0.1", "--issuer", &ca_dir, "--out", &leaf_dir], b"");
    let said = text(&issued.stdout);
    assert!(issued.status.success(), "{issued:?}");
    assert!(said.contains("issued by \"Test CA\"") && said.contains("--mesh-ca"), "{said}");
    openssl_verifies(&dir.file("ca/cert.pem"), &dir.file("leaf/cert.pem"));
    let again = run(&["cert", "--name", "127.0.0.1", "--issuer", &ca_dir, "--out", &leaf_dir], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("exists; pass --force to replace it"), "{again:?}");
    let forced = run(&["cert", "--name", "127.0.0.1", "--issuer", &ca_dir, "--out", &leaf_dir, "--force"], b"");
    assert!(forced.status.success(), "{forced:?}");
    // A self-signed certificate is no issuer.
    let not_a_ca = run(&["cert", "--name", "x", "--issuer", &leaf_dir, "--out", &dir.file("x")], b"");
    assert_eq!(not_a_ca.status.code(), Some(1), "{not_a_ca:?}");
    assert!(text(&not_a_ca.stderr).contains("not a CA certificate"), "{not_a_ca:?}");
}

/// `openssl req -x509` in `dir`'s subdirectory `sub`: a certificate with basic constraints
/// `constraints` and the PKCS#8 key `newkey` asks for, as cert.pem and key.pem.
fn openssl_certificate(dir: &TempDir, sub: &str, newkey: &[&str], subject: &str, constraints: &str) -> String {
    let out_dir = dir.file(sub);
    std::fs::create_dir_all(&out_dir).unwrap();
    let (cert, key) = (dir.file(&format!("{sub}/cert.pem")), dir.file(&format!("{sub}/key.pem")));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "30", "-subj", subject, "-keyout", &key, "-out", &cert])
        .args(["-addext", &format!("basicConstraints={constraints}"), "-newkey"])
        .args(newkey)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    out_dir
}

/// `--issuer` takes any CA's certificate and PKCS#8 key, not only `cert --ca`'s: one that
/// OpenSSL made, RSA or ECDSA, with more than a common name in its subject, issues
/// certificates `openssl verify` accepts as a server's and a client's from that CA. A
/// certificate from OpenSSL whose basic constraints say it is no CA is refused, saying so.
#[test]
fn cert_issues_certificates_from_a_ca_openssl_made() {
    let dir = TempDir::new("cert-openssl-ca");
    let ecdsa = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    for (sub, newkey) in [("rsa", &["rsa:2048"][..]), ("ecdsa", &ecdsa[..])] {
        let subject = "/C=GB/O=Example Ltd/CN=OpenSSL test CA";
        let ca_dir = openssl_certificate(&dir, sub, newkey, subject, "critical,CA:TRUE");
        let leaf_dir = dir.file(&format!("{sub}-leaf"));
        let issued = run(&["cert", "--name", "127.0.0.1", "--issuer", &ca_dir, "--out", &leaf_dir], b"");
        assert!(issued.status.success(), "{sub}: {issued:?}");
        assert!(text(&issued.stdout).contains("issued by \"OpenSSL test CA\""), "{sub}: {issued:?}");
        openssl_verifies(&format!("{ca_dir}/cert.pem"), &format!("{leaf_dir}/cert.pem"));
    }
    let plain = openssl_certificate(&dir, "plain", &["rsa:2048"], "/CN=not a CA", "critical,CA:FALSE");
    let refused = run(&["cert", "--name", "x", "--issuer", &plain, "--out", &dir.file("x")], b"");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let why = format!("--issuer: {plain}/cert.pem: not a CA certificate (its basic constraints do not say CA:TRUE)");
    assert!(text(&refused.stderr).contains(&why), "{refused:?}");
}
