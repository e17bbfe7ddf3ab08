//! `--metrics ADDR`: real roles scraped over HTTP, each body parsed by Python's
//! `prometheus_client` text parser (cli/tests/support/parse_metrics.py), and the counters
//! checked to move with the traffic the test sends. Also the endpoint's answers to a wrong
//! path, a malformed and an oversized request, after which it and the role keep serving.
//!
//! Without python3's `prometheus_client` the tests print why and skip; under CI (`CI=true`,
//! where `.ci/run` installs it) they fail instead. Each test has a 127.0.0.16N of its own.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{assert_refused, run, text, LineConn, Proc, TempFile, GUARD};

/// One sample: its name and its labels as `k=v` pairs, sorted, comma-joined.
type Key = (String, String);

/// Every sample of one scrape.
#[derive(Debug)]
struct Samples(BTreeMap<Key, f64>);

impl Samples {
    /// The value of `name` whose labels include every `k=v` of `labels`, summed over the
    /// series that match (0 when none does).
    fn get(&self, name: &str, labels: &[&str]) -> f64 {
        self.matching(name, labels).map(|(_, v)| v).sum()
    }

    /// Whether any series of `name` has every label of `labels`.
    fn has(&self, name: &str, labels: &[&str]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(&'a self, name: &'a str, labels: &'a [&str]) -> impl Iterator<Item = (&'a Key, f64)> + 'a {
        self.0
            .iter()
            .filter(move |((n, l), _)| n == name && labels.iter().all(|want| l.split(',').any(|have| have == *want)))
            .map(|(k, v)| (k, *v))
    }
}

/// An HTTP/1.1 exchange with `addr`: sends `request`, returns the status line and body.
fn http(addr: &str, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = text(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {answer:?}"));
    (head.to_owned(), body.to_owned())
}

/// Whether the parser can run here; panics under CI when it cannot.
fn parser_available() -> bool {
    let probe = Command::new("python3").args(["-c", "import prometheus_client.parser"]).output();
    let ok = probe.as_ref().is_ok_and(|o| o.status.success());
    if !ok {
        let why = match &probe {
            // The traceback's last line says what is missing.
            Ok(o) => text(&o.stderr).trim().lines().last().unwrap_or("").to_owned(),
            Err(e) => format!("python3: {e}"),
        };
        let why =
            format!("python3 cannot import prometheus_client ({why}); `python3 -m pip install prometheus-client`");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}: CI must have it (.ci/run installs it)");
        eprintln!("skipped: {why}");
    }
    ok
}

/// `GET /metrics` from `addr`, parsed by prometheus_client.
fn scrape(addr: &str) -> Samples {
    let (head, body) = http(addr, format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    let mut python = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    python.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused the body: {}\n{body}", text(&out.stderr));
    let mut samples = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        let mut fields = line.split('\t');
        let (Some(name), Some(labels), Some(value)) = (fields.next(), fields.next(), fields.next()) else {
            panic!("parser line {line:?}")
        };
        samples.insert((name.to_owned(), labels.to_owned()), value.parse::<f64>().expect("a number"));
    }
    Samples(samples)
}

/// Scrapes `addr` until `done` holds (the machines' state is sampled once a second, and
/// counters move just after the traffic that moves them); panics with the last scrape
/// after the guard time.
fn scrape_until(addr: &str, what: &str, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = Instant::now() + GUARD;
    loop {
        let samples = scrape(addr);
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{what} never showed at {addr}:\n{samples:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The echo service: accepts, a refusal at its connection cap, bytes both ways, closes by
/// reason; the endpoint answers 404, 400 and 431, and both it and the echo keep serving.
#[test]
fn a_service_counts_connections_bytes_and_refusals() {
    if !parser_available() {
        return;
    }
    let (echo_at, metrics_at) = ("127.0.0.161:7007", "127.0.0.161:9100");
    let echo = Proc::start(&["serve", "echo", "--listen", echo_at, "--max-connections", "1", "--metrics", metrics_at]);
    echo.wait_for_log(&format!("metrics: serving http://{metrics_at}/metrics"));
    echo.wait_for_log("server listening on");
    let echo_labels = ["machine=echo", "listen=127.0.0.161:7007"];
    let before = scrape(metrics_at);
    assert_eq!(before.get("switchyard_connections_accepted_total", &echo_labels), 0.0, "{before:#?}");

    let mut held = LineConn::connect(echo_at);
    held.send(b"hello\n");
    assert_eq!(held.line(), "hello");
    // At its cap of one: the next connection is refused (reset).
    let mut refused = LineConn::connect(echo_at);
    assert_eq!(refused.line_or_end(), None);
    let s = scrape_until(metrics_at, "the refusal", |s| {
        s.get("switchyard_connections_refused_total", &["machine=echo", "reason=at_capacity"]) == 1.0
    });
    assert_eq!(s.get("switchyard_connections_accepted_total", &echo_labels), 1.0, "{s:#?}");
    assert_eq!(s.get("switchyard_connections_open", &echo_labels), 1.0, "{s:#?}");
    assert_eq!(s.get("switchyard_received_bytes_total", &echo_labels), 6.0, "{s:#?}");
    assert_eq!(s.get("switchyard_sent_bytes_total", &echo_labels), 6.0, "{s:#?}");

    // The scrape endpoint's refusals.
    let (head, _) = http(metrics_at, b"GET /nothing HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http(metrics_at, b"hello there\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = http(metrics_at, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let long = format!("GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "x".repeat(10_000));
    let (head, _) = http(metrics_at, long.as_bytes());
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");

    // The echo serves on, and the counters go on moving with its traffic (both clients
    // end by closing: `finished`).
    drop(held);
    let out = run(&["send", "--to", echo_at, "another line"], b"");
    assert_eq!(text(&out.stdout), "another line\n", "{out:?}");
    let s = scrape_until(metrics_at, "the second client", |s| {
        s.get("switchyard_connections_closed_total", &["machine=echo", "reason=finished"]) == 2.0
    });
    assert_eq!(s.get("switchyard_connections_accepted_total", &echo_labels), 2.0, "{s:#?}");
    assert_eq!(s.get("switchyard_received_bytes_total", &echo_labels), 6.0 + 13.0, "{s:#?}");
    assert_eq!(s.get("switchyard_sent_bytes_total", &echo_labels), 6.0 + 13.0, "{s:#?}");
}

/// Every long-running role offers the option and says what it serves.
#[test]
fn every_long_running_role_offers_metrics_in_its_help() {
    let roles: &[&[&str]] = &[
        &["serve", "echo", "--help"],
        &["serve", "broadcast", "--help"],
        &["serve", "stamp", "--help"],
        &["tunnel", "local", "--help"],
        &["tunnel", "remote", "--help"],
        &["mesh", "server", "--help"],
        &["rendezvous", "--help"],
        &["up", "--help"],
    ];
    let cases: Vec<(&[&str], &[&str])> = roles
        .iter()
        .map(|&args| (args, &["--metrics", "serve Prometheus metrics at http://ADDR/metrics"][..]))
        .collect();
    support::assert_helps(&cases);
}

/// A metrics address that cannot be bound is a one-line error, exit 1, before anything
/// starts.
#[test]
fn a_metrics_address_in_use_is_refused_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.161:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["serve", "echo", "--listen", "127.0.0.161:0", "--metrics", &addr], 1, "cannot serve metrics on"),
        (&["rendezvous", "--listen", "127.0.0.161:0", "--metrics", &addr], 1, "cannot serve metrics on"),
    ];
    assert_refused(cases);
}

/// Echo on `host`, and both tunnel ends (each with `--threads threads`) routing to it by
/// default, serving metrics on `host`:9100 (local end) and 9101 (remote end); returned
/// once both carriers' workers are up, as each end's metrics report it.
struct Tunnel {
    host: String,
    local_metrics: String,
    remote_metrics: String,
    _procs: Vec<Proc>,
    _key: TempFile,
}

impl Tunnel {
    fn start(host: &str, threads: &str) -> Tunnel {
        let at = |port: u16| format!("{host}:{port}");
        let echo = Proc::start(&["serve", "echo", "--listen", &at(7007)]);
        echo.wait_for_log("server listening on");
        let key = TempFile::new(&format!("{host}-metrics.key"), "a metrics secret");
        let default_route = format!("default={}", at(7007));
        let (local_metrics, remote_metrics) = (at(9100), at(9101));
        let remote = Proc::start(
            &[
                &["tunnel", "remote", "--threads", threads][..],
                &["--listen", &at(7001), "--secret-file", key.arg(), "--route", &default_route],
                &["--metrics", &remote_metrics],
            ]
            .concat(),
        );
        remote.wait_for_log("tunnel remote end listening on");
        let local = Proc::start(
            &[
                &["tunnel", "local", "--threads", threads][..],
                &["--listen", &at(7000), "--remote", &at(7001), "--secret-file", key.arg()],
                &["--metrics", &local_metrics],
            ]
            .concat(),
        );
        local.wait_for_log("metrics: serving");
        let carriers: f64 = threads.parse().expect("a number of threads");
        for addr in [&local_metrics, &remote_metrics] {
            scrape_until(addr, "the carriers", |s| s.get("switchyard_tunnel_carriers_up", &[]) == carriers);
        }
        let _procs = vec![echo, remote, local];
        Tunnel { host: host.to_owned(), local_metrics, remote_metrics, _procs, _key: key }
    }

    /// Where clients enter.
    fn entrance(&self) -> String {
        format!("{}:7000", self.host)
    }
}

/// Both tunnel ends: streams opened, a refused route counted by its kind at each end, the
/// carrier up at each end, bytes moving with the traffic through the tunnel.
#[test]
fn both_tunnel_ends_count_streams_refusals_carriers_and_bytes() {
    if !parser_available() {
        return;
    }
    let tunnel = Tunnel::start("127.0.0.162", "1");
    let (local_metrics, remote_metrics) = (&tunnel.local_metrics, &tunnel.remote_metrics);
    let local_labels = ["machine=tunnel local"];
    let remote_labels = ["machine=tunnel remote"];
    let before = scrape(local_metrics);

    let out = run(&["send", "--to", &tunnel.entrance(), "hello"], b"");
    assert_eq!(text(&out.stdout), "hello\n", "{out:?}");
    let out = run(&["send", "--to", &tunnel.entrance(), "1234:x"], b"");
    assert!(text(&out.stderr).contains("unknown route 1234"), "{out:?}");

    let refused = ["reason=unknown_route"];
    let l = scrape_until(local_metrics, "the refused stream", |s| {
        s.get("switchyard_tunnel_streams_refused_total", &refused) == 1.0
            && s.get("switchyard_tunnel_streams_closed_total", &["reason=finished"]) >= 1.0
    });
    let r = scrape_until(remote_metrics, "the refused stream", |s| {
        s.get("switchyard_tunnel_streams_refused_total", &refused) == 1.0
    });
    assert_eq!(l.get("switchyard_connections_accepted_total", &local_labels), 2.0, "{l:#?}");
    assert!(l.get("switchyard_tunnel_streams_opened_total", &local_labels) >= 1.0, "{l:#?}");
    assert!(r.get("switchyard_tunnel_streams_opened_total", &remote_labels) >= 1.0, "{r:#?}");
    assert_eq!(l.get("switchyard_tunnel_carrier_attempts_total", &local_labels), 1.0, "{l:#?}");
    assert_eq!(l.get("switchyard_tunnel_reconnects_total", &local_labels), 0.0, "{l:#?}");
    // The client's bytes and the carrier's: each end read and wrote more than the lines.
    for name in ["switchyard_received_bytes_total", "switchyard_sent_bytes_total"] {
        let grew = l.get(name, &local_labels) - before.get(name, &local_labels);
        assert!(grew > ("hello\n".len() + "1234:x\n".len()) as f64, "{name} grew by {grew}: {l:#?}");
        assert!(r.get(name, &remote_labels) > 0.0, "{name}: {r:#?}");
    }
}

/// A mesh server's users and peers as gauges, its deliveries as counters; a rendezvous's
/// registrations, and its UDP bytes.
#[test]
fn a_mesh_server_and_a_rendezvous_count_users_peers_and_registrations() {
    if !parser_available() {
        return;
    }
    let (s1, s2, metrics_at) = ("127.0.0.163:5001", "127.0.0.163:5002", "127.0.0.163:9100");
    let one = Proc::start(&["mesh", "server", "--listen", s1, "--peer", s2, "--metrics", metrics_at]);
    let two_metrics = "127.0.0.163:9102";
    let _two = Proc::start(&["mesh", "server", "--listen", s2, "--peer", s1, "--metrics", two_metrics]);
    one.wait_for_log(&format!("linked to server {s2}"));
    let mesh = ["machine=mesh", "listen=127.0.0.163:5001"];
    scrape_until(metrics_at, "the peer link", |s| s.get("switchyard_mesh_peers", &mesh) == 1.0);

    let mut bob = Proc::start_interactive(&["mesh", "chat", "--server", s1, "--user", "Bob"]);
    bob.wait_for_stdout("Connected to");
    one.wait_for_log("Bob registered");
    let s = scrape_until(metrics_at, "Bob", |s| s.get("switchyard_mesh_users", &mesh) == 1.0);
    assert_eq!(s.get("switchyard_mesh_registrations_total", &mesh), 1.0, "{s:#?}");
    let out = run(&["mesh", "chat", "--server", s2, "--user", "Alice"], b"Bob hi Bob\n");
    assert!(out.status.success(), "{out:?}");
    bob.wait_for_stdout("Alice: hi Bob");
    // The message's id stays in the dedup cache (sampled once a second).
    scrape_until(metrics_at, "the delivery", |s| {
        s.get("switchyard_mesh_messages_delivered_total", &mesh) == 1.0
            && s.get("switchyard_mesh_dedup_cache_entries", &mesh) >= 1.0
    });
    // Alice's server sent it on to Bob's.
    let two = ["machine=mesh", "listen=127.0.0.163:5002"];
    scrape_until(two_metrics, "the forward", |s| s.get("switchyard_mesh_messages_forwarded_total", &two) >= 1.0);
    bob.type_line("quit");
    bob.close_and_wait();
    scrape_until(metrics_at, "Bob gone", |s| s.get("switchyard_mesh_users", &mesh) == 0.0);

    let (rv_at, rv_metrics) = ("127.0.0.163:9999", "127.0.0.163:9101");
    let rv = Proc::start(&["rendezvous", "--listen", rv_at, "--metrics", rv_metrics]);
    rv.wait_for_log("rendezvous listening on UDP");
    let rendezvous = ["machine=rendezvous", "listen=127.0.0.163:9999"];
    // The machine's first sample: no registration yet.
    let before =
        scrape_until(rv_metrics, "the first sample", |s| s.has("switchyard_rendezvous_registrations", &rendezvous));
    assert_eq!(before.get("switchyard_rendezvous_registrations", &rendezvous), 0.0, "{before:#?}");
    let peer = Proc::start_interactive(&["punch", "--rendezvous", rv_at, "--id", "A", "--bind", "127.0.0.163:0"]);
    peer.wait_for_stdout("REGISTERED");
    let s = scrape_until(rv_metrics, "A's registration", |s| {
        s.get("switchyard_rendezvous_registrations", &rendezvous) == 1.0
    });
    assert_eq!(s.get("switchyard_rendezvous_registered_total", &rendezvous), 1.0, "{s:#?}");
    // Nothing relayed: no session yet.
    assert!(s.has("switchyard_rendezvous_relayed_bytes_total", &rendezvous), "{s:#?}");
    assert_eq!(s.get("switchyard_rendezvous_relayed_bytes_total", &rendezvous), 0.0, "{s:#?}");
    assert!(s.get("switchyard_received_bytes_total", &rendezvous) > 0.0, "{s:#?}");
    assert!(s.get("switchyard_sent_bytes_total", &rendezvous) > 0.0, "{s:#?}");
}

/// `up --metrics`: one endpoint for the whole topology, each machine under its own labels
/// (the three mesh servers apart by `listen`), the tunnel's counters moving with a line
/// sent through it to echo.
#[test]
fn up_serves_every_machine_under_its_own_labels() {
    if !parser_available() {
        return;
    }
    let (host, metrics_at) = ("127.0.0.164", "127.0.0.164:9100");
    let up = Proc::start(&["up", "--host", host, "--metrics", metrics_at]);
    up.wait_for_stdout("switchyard up:");
    let out = run(&["send", "--to", &format!("{host}:7000"), "hello"], b"");
    assert_eq!(text(&out.stdout), "hello\n", "{out:?}");
    let echo = ["machine=echo", "listen=127.0.0.164:7007"];
    let s = scrape_until(metrics_at, "the line through the tunnel", |s| {
        s.get("switchyard_connections_accepted_total", &echo) == 1.0
    });
    for machine in ["tunnel local", "tunnel remote", "time", "broadcast", "greet", "stamp", "rendezvous"] {
        let label = format!("machine={machine}");
        assert!(s.has("switchyard_connections_accepted_total", &[&label]), "{machine}: {s:#?}");
    }
    for port in [5001, 5002, 5003] {
        let listen = format!("listen={host}:{port}");
        assert!(s.has("switchyard_connections_accepted_total", &["machine=mesh", &listen]), "mesh {port}: {s:#?}");
    }
    assert_eq!(s.get("switchyard_tunnel_streams_opened_total", &["machine=tunnel local"]), 1.0, "{s:#?}");
    assert_eq!(s.get("switchyard_tunnel_streams_opened_total", &["machine=tunnel remote"]), 1.0, "{s:#?}");
    assert_eq!(s.get("switchyard_received_bytes_total", &echo), 6.0, "{s:#?}");
}

/// `--threads 2` on both ends: the workers' counts add up under one label set (two
/// carriers up at each end, every client accepted counted once).
#[test]
fn the_workers_of_threads_add_up() {
    if !parser_available() {
        return;
    }
    let tunnel = Tunnel::start("127.0.0.165", "2");
    let (local_metrics, remote_metrics) = (&tunnel.local_metrics, &tunnel.remote_metrics);
    for i in 0..3 {
        let line = format!("hello {i}");
        let out = run(&["send", "--to", &tunnel.entrance(), &line], b"");
        assert_eq!(text(&out.stdout), format!("{line}\n"), "{out:?}");
    }
    let l = scrape_until(local_metrics, "three clients", |s| {
        s.get("switchyard_tunnel_streams_opened_total", &["machine=tunnel local"]) == 3.0
    });
    assert_eq!(l.get("switchyard_connections_accepted_total", &["machine=tunnel local"]), 3.0, "{l:#?}");
    let series = l.matching("switchyard_connections_accepted_total", &[]).count();
    assert_eq!(series, 1, "one series for both workers: {l:#?}");
    let r = scrape(remote_metrics);
    assert_eq!(r.get("switchyard_connections_accepted_total", &["machine=tunnel remote"]), 2.0, "two carriers: {r:#?}");
}
