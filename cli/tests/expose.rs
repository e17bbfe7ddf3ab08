//! `switchyard tunnel expose` and `tunnel remote --allow-publish` as separate processes,
//! under every runtime: a visitor of the published port reaches the service behind the
//! exposing end and gets echoed; a port outside the range is refused with the reason; when
//! the exposing end goes, its port closes and its visitor's stream ends; started again, it
//! publishes the port again. Once more with the carrier over TLS (the service stays plain).
//! Each flow uses a loopback address of its own (127.0.0.15N).

mod support;

use support::{assert_refused, cert, LineConn, Proc, TempDir, TempFile};

/// Echo on `host`:7007, and a remote end on `host`:7001 that allows 12000-12999.
struct Public {
    host: String,
    _echo: Proc,
    remote: Proc,
    key: TempFile,
    /// With TLS: the certificate's directory and fingerprint.
    tls: Option<(TempDir, String)>,
}

impl Public {
    fn start(rt: &[&str], host: &str, tls: bool) -> Public {
        let at = |port: u16| format!("{host}:{port}");
        let echo = Proc::start(&[rt, &["serve", "echo", "--listen", &at(7007)]].concat());
        echo.wait_for_log("server listening on");
        let key = TempFile::new(&format!("{host}-expose.key"), "expose secret");
        let tls = tls.then(|| cert(&format!("{host}-expose-cert"), &[host]));
        let listen = at(7001);
        let mut args = vec!["tunnel", "remote", "--listen", &listen, "--secret-file", key.arg()];
        let (cert_file, key_file) = tls.as_ref().map(|(dir, _)| (dir.file("cert.pem"), dir.file("key.pem"))).unzip();
        if let (Some(cert_file), Some(key_file)) = (&cert_file, &key_file) {
            args.extend(["--tls-cert", cert_file, "--tls-key", key_file]);
        }
        args.extend(["--allow-publish", "12000-12999"]);
        let remote = Proc::start(&[rt, &args].concat());
        remote.wait_for_log("exposing ends may publish ports 12000-12999");
        Public { host: host.to_owned(), _echo: echo, remote, key, tls }
    }

    fn at(&self, port: u16) -> String {
        format!("{}:{port}", self.host)
    }

    /// An exposing end publishing 12345 (echo) and 14000 (outside the range).
    fn expose(&self, rt: &[&str]) -> Proc {
        let (remote, echo) = (self.at(7001), format!("12345={}", self.at(7007)));
        let outside = format!("14000={}", self.at(7007));
        let mut args = vec!["tunnel", "expose", "--remote", &remote, "--secret-file", self.key.arg()];
        args.extend(["--publish", &echo, "--publish", &outside]);
        if let Some((_, pin)) = &self.tls {
            args.extend(["--tls-pin", pin]);
        }
        Proc::start(&[rt, &args].concat())
    }
}

fn a_published_port_reaches_the_service_behind_the_exposing_end(rt: &[&str], host: &str, tls: bool) {
    let public = Public::start(rt, host, tls);
    let mut expose = public.expose(rt);
    let published = format!("published 12345 at {host}:12345 → {host}:7007");
    expose.wait_for_logs(&[
        &published,
        "port 14000 not published",
        "port 14000 is outside the range this remote end allows (12000-12999)",
    ]);
    let mut visitor = LineConn::connect(&public.at(12345));
    visitor.send(b"hello from a visitor\n");
    assert_eq!(visitor.line(), "hello from a visitor");
    public.remote.wait_for_log("opened to route 12345");

    // The exposing end goes: its port closes and the visitor's stream ends.
    expose.interrupt();
    public.remote.wait_for_log("port 12345 closed: the carrier from");
    assert_eq!(visitor.line_or_end(), None, "the visitor's stream outlived its carrier");
    // The listener's accept loop ends on its own task, very soon after.
    let deadline = std::time::Instant::now() + support::GUARD;
    while std::net::TcpStream::connect(public.at(12345)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the port still accepts");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // Started again, it publishes the port again.
    let expose = public.expose(rt);
    expose.wait_for_log(&published);
    let mut again = LineConn::connect(&public.at(12345));
    again.send(b"back\n");
    assert_eq!(again.line(), "back");
}

#[test]
fn a_published_port_reaches_the_service_on_smol() {
    a_published_port_reaches_the_service_behind_the_exposing_end(&["--runtime", "smol"], "127.0.0.151", false);
}

#[test]
fn a_published_port_reaches_the_service_on_async_std() {
    a_published_port_reaches_the_service_behind_the_exposing_end(&["--runtime", "async-std"], "127.0.0.152", false);
}

#[test]
fn a_published_port_reaches_the_service_on_mio() {
    a_published_port_reaches_the_service_behind_the_exposing_end(&["--runtime", "mio"], "127.0.0.153", false);
}

#[test]
fn a_published_port_reaches_the_service_over_a_tls_carrier() {
    a_published_port_reaches_the_service_behind_the_exposing_end(&[], "127.0.0.154", true);
}

#[test]
fn bad_expose_and_allow_publish_arguments_are_usage_errors() {
    assert_refused(&[
        (&["tunnel", "expose", "--remote", "127.0.0.1:7001", "--secret-file", "k"], 2, "at least one --publish"),
        (
            &["tunnel", "expose", "--remote", "127.0.0.1:7001", "--secret-file", "k", "--publish", "0=127.0.0.1:1"],
            2,
            "use 1-65535",
        ),
        (
            &[
                "tunnel",
                "expose",
                "--remote",
                "127.0.0.1:1",
                "--secret-file",
                "k",
                "--publish",
                "5=127.0.0.1:1",
                "--publish",
                "5=127.0.0.1:2",
            ],
            2,
            "names port 5 twice",
        ),
        (&["tunnel", "remote", "--secret-file", "k", "--allow-publish", "13000-12000"], 2, "empty port range"),
        (&["tunnel", "remote", "--secret-file", "k"], 2, "or --allow-publish"),
    ]);
}

#[test]
fn expose_help_shows_how() {
    support::assert_helps(&[
        (&["tunnel", "expose", "--help"], &["--publish", "--remote", "--tls-pin", "tunnel remote --allow-publish"]),
        (&["tunnel", "remote", "--help"], &["--allow-publish"]),
    ]);
}
