//! The TLS layer between two machines driven by hand: handshakes, trust, refusals,
//! determinism, and what the inner machines see.

use super::*;
use crate::service::echo::{EchoConfig, EchoServer};
use crate::service::fixture::Fixture;
use crate::service::line_client::{LineClient, LineClientConfig, LineClientEvent};
use crate::Env;
use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ED25519};

/// 2026-12-01 00:00:00 UTC, the wall clock both ends start from.
const DEC_2026: i128 = 1_796_083_200_000_000;

fn wall() -> WallClock {
    WallClock::utc(DEC_2026, Instant::ZERO)
}

fn server_addr() -> SocketAddr {
    "10.0.0.2:7007".parse().unwrap()
}

/// A self-signed Ed25519 certificate for `name`, as `switchyard cert` makes.
fn self_signed(name: &str) -> TlsIdentity {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
    TlsIdentity { chain: vec![cert.der().clone()], key: PrivateKeyDer::try_from(key.serialize_der()).unwrap() }
}

/// A CA and a leaf for `name` it signed, valid until `not_after`.
fn ca_and_leaf(name: &str, not_after: time::OffsetDateTime) -> (CertificateDer<'static>, TlsIdentity) {
    let ca_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut leaf_params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    leaf_params.not_after = not_after;
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let identity = TlsIdentity {
        chain: vec![leaf.der().clone()],
        key: PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
    };
    (ca.der().clone(), identity)
}

fn echo_server(identity: TlsIdentity, secret: [u8; 32]) -> Tls<EchoServer> {
    let settings = TlsSettings {
        serve: Some(TlsServe { identity, listeners: Secure::All, clients: ClientCerts::None }),
        dial: None,
    };
    Tls::new(EchoServer::new(Env::new(1), EchoConfig::default()), settings, secret, wall()).unwrap()
}

fn line_client(trust: Trust, name: &str, secret: [u8; 32]) -> Tls<LineClient> {
    let settings = TlsSettings {
        serve: None,
        dial: Some(TlsDial { trust, server_name: Some(name.to_owned()), to: Secure::All, identity: None }),
    };
    let client = LineClient::connect(Env::new(2), Instant::ZERO, server_addr(), LineClientConfig::default());
    Tls::new(client, settings, secret, wall()).unwrap()
}

/// A server and a client machine joined by a lossless, instant connection. Every byte on
/// the wire is kept, each way, to look at.
struct Pair<S: Machine, C: Machine> {
    server: S,
    client: C,
    now: Instant,
    server_conn: Option<ConnId>,
    client_conn: Option<ConnId>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    server_events: Vec<S::Event>,
    client_events: Vec<C::Event>,
    server_closed: Option<CloseHow>,
    client_closed: Option<CloseHow>,
}

impl<S: Machine, C: Machine> Pair<S, C> {
    fn new(server: S, client: C) -> Self {
        let mut pair = Pair {
            server,
            client,
            now: Instant::ZERO,
            server_conn: None,
            client_conn: None,
            to_server: Vec::new(),
            to_client: Vec::new(),
            server_events: Vec::new(),
            client_events: Vec::new(),
            server_closed: None,
            client_closed: None,
        };
        pair.run();
        pair
    }

    /// Carries outputs across until neither side has anything more to say.
    fn run(&mut self) {
        let peer: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        loop {
            let mut quiet = true;
            while let Some(out) = self.client.poll_output() {
                quiet = false;
                match out {
                    Output::Connect { conn, .. } => {
                        self.client_conn = Some(conn);
                        let accepted = self.server.accept(self.now, ListenerId(0), peer).expect("accepted");
                        self.server_conn = Some(accepted);
                        self.client.handle_input(self.now, Input::Connected { conn, local: peer });
                    }
                    Output::Write { conn, bytes } => {
                        self.to_server.extend_from_slice(&bytes);
                        self.client.handle_input(self.now, Input::Sent { conn, bytes: bytes.len() });
                        if let Some(s) = self.server_conn.filter(|_| self.server_closed.is_none()) {
                            self.server.handle_input(self.now, Input::Received { conn: s, bytes: (&bytes[..]).into() });
                        }
                    }
                    Output::Close { how, .. } => {
                        self.client_closed = Some(how);
                        if let Some(s) = self.server_conn.filter(|_| self.server_closed.is_none()) {
                            self.server.handle_input(self.now, Input::ReadClosed { conn: s });
                        }
                    }
                    Output::Event(e) => self.client_events.push(e),
                    _ => {}
                }
            }
            while let Some(out) = self.server.poll_output() {
                quiet = false;
                match out {
                    Output::Write { conn, bytes } => {
                        self.to_client.extend_from_slice(&bytes);
                        self.server.handle_input(self.now, Input::Sent { conn, bytes: bytes.len() });
                        if let Some(c) = self.client_conn.filter(|_| self.client_closed.is_none()) {
                            self.client.handle_input(self.now, Input::Received { conn: c, bytes: (&bytes[..]).into() });
                        }
                    }
                    Output::Close { how, .. } => {
                        self.server_closed = Some(how);
                        if let Some(c) = self.client_conn.filter(|_| self.client_closed.is_none()) {
                            self.client.handle_input(self.now, Input::ReadClosed { conn: c });
                        }
                    }
                    Output::Event(e) => self.server_events.push(e),
                    _ => {}
                }
            }
            if quiet {
                return;
            }
        }
    }
}

type EchoPair = Pair<Tls<EchoServer>, Tls<LineClient>>;

fn send_line(pair: &mut EchoPair, line: &[u8]) {
    pair.client.command(pair.now, |c, now| c.send_line(now, line)).unwrap();
    pair.run();
}

fn lines(pair: &EchoPair) -> Vec<Bytes> {
    pair.client_events
        .iter()
        .filter_map(|e| match e {
            TlsEvent::Inner(LineClientEvent::Line(l)) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

fn failure<E>(events: &[TlsEvent<E>]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        TlsEvent::Failed { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

fn connect_failure(pair: &EchoPair) -> Option<String> {
    pair.client_events.iter().find_map(|e| match e {
        TlsEvent::Inner(LineClientEvent::ConnectFailed(error)) => Some(error.to_string()),
        _ => None,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_pinned_server_echoes_through_tls_and_nothing_crosses_in_clear() {
    let identity = self_signed("echo.test");
    let pin = identity.fingerprint().unwrap();
    let mut pair = Pair::new(echo_server(identity, [1; 32]), line_client(Trust::Pin(pin), "echo.test", [2; 32]));
    assert!(
        pair.client_events.iter().any(|e| matches!(e, TlsEvent::Inner(LineClientEvent::Connected { .. }))),
        "the client is connected once the handshake is done: {:?}",
        pair.client_events
    );
    assert!(pair
        .client_events
        .iter()
        .any(|e| matches!(e, TlsEvent::Secured { suite, .. } if suite.starts_with("TLS13_"))));
    assert!(pair.server_events.iter().any(|e| matches!(e, TlsEvent::Secured { .. })));
    send_line(&mut pair, b"a secret line");
    assert_eq!(lines(&pair), vec![Bytes::from_static(b"a secret line")]);
    assert!(!contains(&pair.to_server, b"a secret line") && !contains(&pair.to_client, b"a secret line"));
    assert_eq!(pair.client.sessions(), (0, 1), "one session, past its handshake");
}

#[test]
fn the_same_secrets_replay_the_same_bytes_and_other_secrets_do_not() {
    let identity = self_signed("echo.test");
    let pin = identity.fingerprint().unwrap();
    let run = |server_secret: [u8; 32]| {
        let mut pair =
            Pair::new(echo_server(identity.clone(), server_secret), line_client(Trust::Pin(pin), "echo.test", [2; 32]));
        send_line(&mut pair, b"hello");
        (pair.to_server, pair.to_client)
    };
    let first = run([1; 32]);
    assert!(!first.0.is_empty() && !first.1.is_empty());
    assert_eq!(run([1; 32]), first, "byte for byte, both ways");
    let other = run([3; 32]);
    assert_ne!(other.1, first.1, "another secret, another server random and key share");
}

#[test]
fn a_wrong_pin_is_refused_with_both_fingerprints_and_the_server_hears_why() {
    let identity = self_signed("echo.test");
    let wrong = Fingerprint::of(b"some other certificate");
    let pair = Pair::new(echo_server(identity.clone(), [1; 32]), line_client(Trust::Pin(wrong), "echo.test", [2; 32]));
    let reason = connect_failure(&pair).expect("the connect fails");
    assert!(reason.contains(&identity.fingerprint().unwrap().to_string()), "{reason}");
    assert!(reason.contains(&format!("not the pinned {wrong}")), "{reason}");
    let server_side = failure(&pair.server_events).expect("the server reports it");
    assert!(server_side.contains("refused our certificate"), "{server_side}");
    assert!(lines(&pair).is_empty());
}

#[test]
fn a_ca_signed_certificate_is_checked_for_its_name_and_dates() {
    let year_3000 = time::macros::datetime!(3000-01-01 0:00 UTC);
    let (ca, identity) = ca_and_leaf("echo.test", year_3000);
    let trust = Trust::Authorities(vec![ca.clone()]);
    let mut ok = Pair::new(echo_server(identity.clone(), [1; 32]), line_client(trust.clone(), "echo.test", [2; 32]));
    send_line(&mut ok, b"via the CA");
    assert_eq!(lines(&ok), vec![Bytes::from_static(b"via the CA")]);

    let wrong_name = Pair::new(echo_server(identity, [1; 32]), line_client(trust.clone(), "other.test", [2; 32]));
    let reason = connect_failure(&wrong_name).expect("refused");
    assert!(reason.contains("not valid for name \"other.test\""), "{reason}");

    let (ca, expired) = ca_and_leaf("echo.test", time::macros::datetime!(2026-11-30 0:00 UTC));
    let pair =
        Pair::new(echo_server(expired, [1; 32]), line_client(Trust::Authorities(vec![ca]), "echo.test", [2; 32]));
    let reason = connect_failure(&pair).expect("refused");
    assert!(reason.contains("expired"), "the wall clock says 2026-12-01: {reason}");

    let (_, stranger) = ca_and_leaf("echo.test", year_3000);
    let pair = Pair::new(echo_server(stranger, [1; 32]), line_client(trust, "echo.test", [2; 32]));
    let reason = connect_failure(&pair).expect("refused");
    assert!(reason.contains("not signed by a trusted authority"), "a CA of the same name but another key: {reason}");
}

#[test]
fn the_wall_clock_decides_expiry_and_follows_handle_wall_clock() {
    let (ca, identity) = ca_and_leaf("echo.test", time::macros::datetime!(2027-01-01 0:00 UTC));
    let mut client = line_client(Trust::Authorities(vec![ca]), "echo.test", [2; 32]);
    // Two years on, by the driver's report: the certificate has expired since.
    client.handle_wall_clock(Instant::ZERO, DEC_2026 + 2 * 365 * 86_400 * 1_000_000);
    let pair = Pair::new(echo_server(identity, [1; 32]), client);
    assert!(connect_failure(&pair).expect("refused").contains("expired"));
}

#[test]
fn a_text_client_on_a_tls_port_is_told_in_words_and_others_carry_on() {
    let identity = self_signed("echo.test");
    let mut f = Fixture::new(echo_server(identity, [1; 32]));
    let telnet = f.connect();
    f.send(telnet, b"hello\r\n");
    assert_eq!(f.take(telnet), TEXT_ON_TLS_REPLY);
    assert_eq!(f.closed.get(&telnet), Some(&CloseHow::Graceful));
    assert!(failure(&f.events).is_some_and(|r| r.contains("text, not TLS") && r.contains("hello")));
    // A connection opened meanwhile is untouched: no write, no close.
    let other = f.connect();
    assert!(!f.closed.contains_key(&other) && f.take(other).is_empty());
    assert_eq!(f.machine.sessions(), (1, 1));
}

#[test]
fn a_binary_client_without_tls_is_told_what_it_sent_and_a_tls_reply_is_recognised() {
    let mut f = Fixture::new(echo_server(self_signed("echo.test"), [1; 32]));
    let conn = f.connect();
    f.send(conn, &[0x10, 0, 0, 0, 0, 32]);
    assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful));
    let answer = f.written.remove(&conn).unwrap_or_default();
    assert!(looks_like_record(&answer) && answer[0] == 0x15, "a TLS alert, not words: {answer:?}");
    assert!(failure(&f.events).is_some_and(|r| r.contains("did not start a TLS handshake (its first byte is 0x10)")));
    assert!(looks_like_record(&[0x15, 0x03, 0x03, 0x00, 0x02]), "an alert");
    assert!(looks_like_record(&[0x16, 0x03, 0x01]), "a ClientHello");
    assert!(!looks_like_record(&[0x10, 0x03, 0x03]) && !looks_like_record(&[0x16]) && !looks_like_record(b"GET"));
}

#[test]
fn garbage_where_a_handshake_belongs_fails_that_connection_with_the_reason() {
    let mut f = Fixture::new(echo_server(self_signed("echo.test"), [1; 32]));
    let conn = f.connect();
    f.send(conn, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    assert!(f.closed.contains_key(&conn), "closed");
    assert!(failure(&f.events).is_some(), "with a reason: {:?}", f.events);
}

#[test]
fn a_stream_cut_without_close_notify_ends_abnormally_and_close_notify_ends_cleanly() {
    let identity = self_signed("echo.test");
    let pin = identity.fingerprint().unwrap();
    let mut pair =
        Pair::new(echo_server(identity.clone(), [1; 32]), line_client(Trust::Pin(pin), "echo.test", [2; 32]));
    // The client finishes: its TLS layer sends close_notify, then the FIN.
    pair.client.command(pair.now, |c, now| c.finish(now));
    pair.run();
    assert!(failure(&pair.server_events).is_none(), "a clean end: {:?}", pair.server_events);

    // A FIN with no close_notify before it, straight from the driver.
    let mut f = Fixture::new(echo_server(identity, [1; 32]));
    let conn = f.connect();
    f.input(Input::ReadClosed { conn });
    assert!(failure(&f.events).is_some_and(|r| r.contains("during the TLS handshake")), "{:?}", f.events);
}

#[test]
fn a_service_greeting_waits_for_the_handshake() {
    use crate::service::line_server::LineServerConfig;
    use crate::service::time::{TimeService, DEFAULT_INTERVAL};
    let identity = self_signed("time.test");
    let pin = identity.fingerprint().unwrap();
    let settings = TlsSettings {
        serve: Some(TlsServe { identity, listeners: Secure::All, clients: ClientCerts::None }),
        dial: None,
    };
    let service = TimeService::new(wall(), DEFAULT_INTERVAL).server(Env::new(1), LineServerConfig::default());
    let server = Tls::new(service, settings, [1; 32], wall()).unwrap();
    let client = line_client(Trust::Pin(pin), "time.test", [2; 32]);
    let pair = Pair::new(server, client);
    let got: Vec<_> = pair
        .client_events
        .iter()
        .filter_map(|e| match e {
            TlsEvent::Inner(LineClientEvent::Line(l)) => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![Bytes::from("2026-12-01 00:00:00")], "the time, written at accept, arrives encrypted");
}

#[test]
fn keys_other_than_ed25519_are_refused_with_the_way_out() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec!["x".to_owned()]).unwrap().self_signed(&key).unwrap();
    let identity =
        TlsIdentity { chain: vec![cert.der().clone()], key: PrivateKeyDer::try_from(key.serialize_der()).unwrap() };
    let settings = TlsSettings {
        serve: Some(TlsServe { identity, listeners: Secure::All, clients: ClientCerts::None }),
        dial: None,
    };
    let error = Tls::new(EchoServer::new(Env::new(1), EchoConfig::default()), settings, [1; 32], wall())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("Ed25519") && error.to_string().contains("switchyard cert"), "{error}");
}

#[test]
fn plain_connections_pass_through_untouched() {
    let settings = TlsSettings {
        serve: Some(TlsServe {
            identity: self_signed("x"),
            listeners: Secure::Only(vec![ListenerId(1)]),
            clients: ClientCerts::None,
        }),
        dial: None,
    };
    let mut f =
        Fixture::new(Tls::new(EchoServer::new(Env::new(1), EchoConfig::default()), settings, [1; 32], wall()).unwrap());
    let conn = f.connect();
    f.send(conn, b"plain\n");
    assert_eq!(f.take(conn), "plain\n", "listener 0 is not a TLS listener");
    assert_eq!(f.machine.sessions(), (0, 0));
}

/// A server that requires a client certificate pinned by `clients`, and a client that
/// presents `identity` (or none).
fn mutual(clients: Fingerprint, identity: Option<TlsIdentity>) -> EchoPair {
    let server_identity = self_signed("echo.test");
    let pin = server_identity.fingerprint().unwrap();
    let serve = TlsServe {
        identity: server_identity,
        listeners: Secure::All,
        clients: ClientCerts::Required(Trust::Pin(clients)),
    };
    let server = Tls::new(
        EchoServer::new(Env::new(1), EchoConfig::default()),
        TlsSettings { serve: Some(serve), dial: None },
        [1; 32],
        wall(),
    )
    .unwrap();
    let dial = TlsDial { trust: Trust::Pin(pin), server_name: None, to: Secure::All, identity };
    let line = LineClient::connect(Env::new(2), Instant::ZERO, server_addr(), LineClientConfig::default());
    let client = Tls::new(line, TlsSettings { serve: None, dial: Some(dial) }, [2; 32], wall()).unwrap();
    Pair::new(server, client)
}

#[test]
fn mutual_tls_admits_the_pinned_client_and_refuses_others_on_both_ends() {
    let client_identity = self_signed("client");
    let allowed = client_identity.fingerprint().unwrap();
    let mut pair = mutual(allowed, Some(client_identity));
    send_line(&mut pair, b"mutual");
    assert_eq!(lines(&pair), vec![Bytes::from_static(b"mutual")]);

    // No certificate: TLS 1.3 finishes the client's side first, so the client learns of
    // the refusal from the server's alert; both ends say why.
    let pair = mutual(allowed, None);
    let server_side = failure(&pair.server_events).expect("the server refuses");
    assert!(server_side.contains("presented no certificate"), "{server_side}");
    let client_side = failure(&pair.client_events).expect("the client hears it");
    assert!(client_side.contains("requires a client certificate"), "{client_side}");

    let pair = mutual(allowed, Some(self_signed("stranger")));
    let server_side = failure(&pair.server_events).expect("the server refuses");
    assert!(server_side.contains(&format!("not the pinned {allowed}")), "{server_side}");
}

/// An echo server that notes, in order, each client certificate the TLS layer tells it of
/// and each read: to see [`Machine::peer_certified`] come before the first bytes.
struct Noting {
    echo: EchoServer,
    log: Vec<String>,
}

impl Machine for Noting {
    type Event = <EchoServer as Machine>::Event;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        self.echo.accept(now, listener, peer)
    }
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if let Input::Received { bytes, .. } = &input {
            self.log.push(format!("received {:?}", String::from_utf8_lossy(bytes)));
        }
        self.echo.handle_input(now, input)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.echo.handle_timeout(now)
    }
    fn peer_certified(&mut self, _now: Instant, _conn: ConnId, fingerprint: Fingerprint) {
        self.log.push(format!("certified {fingerprint}"));
    }
    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        self.echo.poll_output()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.echo.poll_timeout()
    }
}

type NotingPair = Pair<Tls<Noting>, Tls<LineClient>>;

/// A server that takes an optional client certificate from `ca`, and a client that
/// presents `identity` (or none) and sends one line.
fn optional_client_certificate(ca: CertificateDer<'static>, identity: Option<TlsIdentity>) -> NotingPair {
    let server_identity = self_signed("mesh.test");
    let pin = server_identity.fingerprint().unwrap();
    let clients = ClientCerts::Optional(Trust::Authorities(vec![ca]));
    let serve = TlsServe { identity: server_identity, listeners: Secure::All, clients };
    let noting = Noting { echo: EchoServer::new(Env::new(1), EchoConfig::default()), log: Vec::new() };
    let server = Tls::new(noting, TlsSettings { serve: Some(serve), dial: None }, [1; 32], wall()).unwrap();
    let dial = TlsDial { trust: Trust::Pin(pin), server_name: None, to: Secure::All, identity };
    let line = LineClient::connect(Env::new(2), Instant::ZERO, server_addr(), LineClientConfig::default());
    let client = Tls::new(line, TlsSettings { serve: None, dial: Some(dial) }, [2; 32], wall()).unwrap();
    let mut pair = Pair::new(server, client);
    if failure(&pair.server_events).is_none() {
        pair.client.command(pair.now, |c, now| c.send_line(now, b"hi")).unwrap();
        pair.run();
    }
    pair
}

fn a_year_on() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp((DEC_2026 / 1_000_000) as i64 + 365 * 86_400).unwrap()
}

#[test]
fn an_optional_client_certificate_lets_a_client_without_one_through_unmarked() {
    let (ca, _) = ca_and_leaf("unused", a_year_on());
    let pair = optional_client_certificate(ca, None);
    assert_eq!(failure(&pair.server_events), None);
    assert_eq!(pair.server.inner().log, vec!["received \"hi\\n\"".to_owned()], "no peer_certified");
}

#[test]
fn a_client_certificate_from_the_ca_is_told_to_the_inner_machine_before_its_first_bytes() {
    let (ca, leaf) = ca_and_leaf("10.0.0.1", a_year_on());
    let fingerprint = leaf.fingerprint().unwrap();
    let pair = optional_client_certificate(ca, Some(leaf));
    assert_eq!(failure(&pair.server_events), None);
    assert_eq!(
        pair.server.inner().log,
        vec![format!("certified {fingerprint}"), "received \"hi\\n\"".to_owned()],
        "certified first, once"
    );
}

#[test]
fn a_client_certificate_from_another_ca_fails_the_handshake_with_the_reason() {
    let (ca, _) = ca_and_leaf("unused", a_year_on());
    let (_, stranger) = ca_and_leaf("10.0.0.1", a_year_on());
    let pair = optional_client_certificate(ca, Some(stranger));
    let server_side = failure(&pair.server_events).expect("the server refuses");
    assert!(
        server_side.contains("client's certificate is not signed by an authority this port trusts"),
        "{server_side}"
    );
    let client_side = failure(&pair.client_events).expect("the client hears it");
    assert!(client_side.contains("the peer refused our certificate"), "{client_side}");
    assert!(server_side.contains("client's certificate"), "{server_side}");
    assert!(pair.server.inner().log.is_empty(), "nothing reached the inner machine: {:?}", pair.server.inner().log);
}

#[test]
fn an_identity_is_checked_against_a_ca_for_its_name_both_ways() {
    let (ca, leaf) = ca_and_leaf("10.0.0.2", a_year_on());
    let (_, stranger) = ca_and_leaf("10.0.0.2", a_year_on());
    let trust = Trust::Authorities(vec![ca]);
    let now = (DEC_2026 / 1_000_000) as u64;
    assert_eq!(check_identity(&trust, &leaf, "10.0.0.2", now), Ok(()));
    let wrong_name = check_identity(&trust, &leaf, "10.0.0.3", now).unwrap_err();
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
    assert_eq!(check_identity(&trust, &stranger, "10.0.0.2", now), Err("it is signed by another authority".into()));
    let expired = check_identity(&trust, &leaf, "10.0.0.2", now + 2 * 365 * 86_400).unwrap_err();
    assert!(expired.contains("expired"), "{expired}");
}
