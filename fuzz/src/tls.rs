//! The `tls_server`, `tls_tunnel_remote` and `tls_mesh_server` fuzz targets: a machine
//! behind the TLS layer (`Tls<EchoServer>`, `Tls<TunnelRemote>`, `Tls<MeshServer>`), under
//! the checked [`Driver`], fed by raw bytes and by real TLS clients whose records the script
//! cuts, corrupts and reorders. And `tls_records` (at the end): records past the handshake
//! whose inner content the script chooses, which corruption alone never reaches.
//!
//! Each script step is read off the input: accept a raw connection and send it arbitrary
//! bytes (records, text, garbage); open a connection for a real client (`Tls<LineClient>`
//! pinning the server's certificate) and carry its bytes both ways, flipping a byte or
//! cutting a chunk where the script says; have a client send a line; end a connection
//! either way, or report its end late; answer a connection the machine dialled (the mesh
//! server dials its seeds over TLS, so its client side meets raw bytes too); let time pass.
//! The driver asserts the machine contract after every call; for the echo service the
//! harness also asserts that a client that was never tampered with gets its echo back
//! intact. Behind the tunnel end and the mesh server a client's lines are garbage to the
//! protocol inside, so there the layer must carry the inner machine's refusal and close.

use crate::driver::{Driver, Phase, Script};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use switchyard_core::auth::Secret;
use switchyard_core::machine::{Input, Machine, Output};
use switchyard_core::mesh::server::{MeshServer, ServerConfig};
use switchyard_core::service::echo::{EchoConfig, EchoServer};
use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent};
use switchyard_core::time::WallClock;
use switchyard_core::tls::{
    CertificateDer, ClientCerts, PrivateKeyDer, Secure, Tls, TlsDial, TlsEvent, TlsIdentity, TlsServe, TlsSettings,
    Trust,
};
use switchyard_core::tunnel::remote::{RemoteConfig, Routes, TunnelRemote};
use switchyard_core::{ConnId, Env, Instant, ListenerId, NetError};

/// Where the server under test listens, as the driver reports it at each accept.
const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)), 443);

/// A self-signed Ed25519 certificate for `fuzz.test` (from `switchyard cert`, valid to
/// 2126) and its key, fixed so that every run of an input is the same.
const CERT: &[u8] = include_bytes!("tls_fixture/cert.der");
const KEY: &[u8] = include_bytes!("tls_fixture/key.der");

fn identity() -> TlsIdentity {
    TlsIdentity {
        chain: vec![CertificateDer::from(CERT.to_vec())],
        key: PrivateKeyDer::try_from(KEY.to_vec()).expect("the fixture key is PKCS#8"),
    }
}

/// Dialling `fuzz.test` over TLS, pinning the fixture's certificate.
fn dial() -> TlsDial {
    let pin = identity().fingerprint().expect("a certificate");
    TlsDial { trust: Trust::Pin(pin), server_name: Some("fuzz.test".into()), to: Secure::All, identity: None }
}

/// 2026-12-01 at the script's zero.
fn wall() -> WallClock {
    WallClock::utc(1_796_083_200_000_000, Instant::ZERO)
}

/// A real TLS client on one of the server's connections, and what it has seen.
struct Client {
    machine: Tls<LineClient>,
    /// Its connection at the client and at the server.
    own: ConnId,
    at_server: ConnId,
    /// Bytes each way not yet delivered.
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    /// Lines it sent and lines it got back.
    sent: Vec<Vec<u8>>,
    got: Vec<Vec<u8>>,
    /// A byte was changed or dropped on its way: nothing is promised any more.
    tampered: bool,
    /// The client machine ended the connection (or was told it ended).
    done: bool,
    /// Its handshake finished.
    secured: bool,
}

impl Client {
    fn new(seed: u8, at_server: ConnId, now: Instant) -> Client {
        let settings = TlsSettings { serve: None, dial: Some(dial()) };
        let server: SocketAddr = "10.0.0.1:7007".parse().unwrap();
        let line = LineClient::connect(Env::new(u64::from(seed)), now, server, LineClientConfig::default());
        let machine = Tls::new(line, settings, [seed; 32], wall()).expect("a usable trust");
        let mut client = Client {
            machine,
            own: ConnId::new(0, 0),
            at_server,
            to_server: Vec::new(),
            to_client: Vec::new(),
            sent: Vec::new(),
            got: Vec::new(),
            tampered: false,
            done: false,
            secured: false,
        };
        client.drain(now);
        client
    }

    /// Takes the client machine's outputs: its connect is answered at once.
    fn drain(&mut self, now: Instant) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Connect { conn, .. } => {
                    self.own = conn;
                    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 40_000);
                    self.machine.handle_input(now, Input::Connected { conn, local });
                }
                Output::Write { conn, bytes } => {
                    self.to_server.extend_from_slice(&bytes);
                    self.machine.handle_input(now, Input::Sent { conn, bytes: bytes.len() });
                }
                Output::Close { .. } => self.done = true,
                Output::Event(TlsEvent::Secured { .. }) => self.secured = true,
                Output::Event(TlsEvent::Inner(LineClientEvent::Line(line))) => self.got.push(line.to_vec()),
                Output::Event(TlsEvent::Inner(LineClientEvent::Closed(_) | LineClientEvent::ConnectFailed(_))) => {
                    self.done = true
                }
                _ => {}
            }
        }
    }
}

/// Connections the server has open that the script may still send bytes on.
fn readable<S: Machine>(d: &Driver<Tls<S>>) -> Vec<ConnId> {
    d.conns().filter(|(_, c)| c.phase == Phase::Open && !c.read_shut && !c.paused).map(|(id, _)| id).collect()
}

fn pick<T: Copy>(items: &[T], b: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(b) % items.len()])
}

/// Hands the server's writes on each client's connection to that client.
fn route_writes<E>(outputs: Vec<Output<E>>, clients: &mut [Client]) {
    for out in outputs {
        if let Output::Write { conn, bytes } = out {
            if let Some(c) = clients.iter_mut().find(|c| c.at_server == conn) {
                c.to_client.extend_from_slice(&bytes);
            }
        }
    }
}

/// A machine the harness serves behind the TLS layer.
pub trait Served: Machine + Sized {
    /// True if a client's lines must come back as they went (an echo service); else only
    /// the machine contract is checked.
    const ECHOES: bool;
    /// The machine for a script's seed byte.
    fn serve(seed: u8) -> Self;
}

impl Served for EchoServer {
    const ECHOES: bool = true;
    fn serve(seed: u8) -> Self {
        EchoServer::new(Env::new(u64::from(seed)), EchoConfig::default())
    }
}

impl Served for TunnelRemote {
    const ECHOES: bool = false;
    fn serve(seed: u8) -> Self {
        let mut routes = Routes::new();
        routes.add("default", SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 3)), 7007));
        let secret = Secret::new(*b"fuzz tunnel").expect("not empty");
        TunnelRemote::new(Env::new(u64::from(seed)), RemoteConfig::new(secret, routes))
    }
}

impl Served for MeshServer {
    const ECHOES: bool = false;
    fn serve(seed: u8) -> Self {
        let at = |last: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 5001);
        let mut config = ServerConfig::new(at(1), vec![at(2)]);
        config.max_connections = 8;
        // Half the scripts run a server with a mesh secret, half an open one.
        config.peer_secret = (seed & 0x80 != 0).then(|| Secret::new(*b"fuzz mesh").expect("not empty"));
        MeshServer::new(Env::new(u64::from(seed)), Instant::ZERO, config)
    }
}

/// What a run got to, so tests can tell a script that reached the machine inside the TLS
/// layer from one that did not.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// Clients whose echoes were checked (untampered, still open, with lines sent).
    pub echoed: usize,
    /// Clients whose handshake finished.
    pub secured: usize,
    /// Of those, untampered ones whose connection the server closed (its machine's close,
    /// or its answer to the script ending the client's side).
    pub ended_by_server: usize,
}

/// Body of the `tls_server` target: a TLS echo server.
pub fn fuzz_tls_server(data: &[u8]) -> Reached {
    run::<EchoServer>(data)
}

/// Body of the `tls_tunnel_remote` target: the tunnel's remote end behind TLS.
pub fn fuzz_tls_tunnel_remote(data: &[u8]) -> Reached {
    run::<TunnelRemote>(data)
}

/// Body of the `tls_mesh_server` target: a mesh server behind TLS, dialling its seed over
/// TLS too.
pub fn fuzz_tls_mesh_server(data: &[u8]) -> Reached {
    run::<MeshServer>(data)
}

/// Runs `data` as a script against `S` behind TLS. Panics on any broken rule.
fn run<S: Served>(data: &[u8]) -> Reached {
    let mut s = Script::new(data);
    let settings = TlsSettings {
        serve: Some(TlsServe { identity: identity(), listeners: Secure::All, clients: ClientCerts::None }),
        dial: Some(dial()),
    };
    let seed = s.u8();
    let server = Tls::new(S::serve(seed), settings, [seed; 32], wall()).expect("the fixture identity is usable");
    let (mut d, _) = Driver::new(server, Instant::ZERO);
    let mut clients: Vec<Client> = Vec::new();
    let peer = |b: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, b)), 40_000);
    while !s.is_empty() {
        let (op, arg) = (s.u8(), s.u8());
        let now = d.now();
        match op % 11 {
            0 => {
                let _ = d.accept(ListenerId(0), peer(arg), SERVER_ADDR);
            }
            1 => {
                // Raw bytes on a connection no real client owns.
                let raw: Vec<ConnId> =
                    readable(&d).into_iter().filter(|id| clients.iter().all(|c| c.at_server != *id)).collect();
                if let Some(conn) = pick(&raw, arg) {
                    let n = usize::from(s.u8()) + 1;
                    let bytes = s.take(n).to_vec();
                    if !bytes.is_empty() {
                        d.input(Input::Received { conn, bytes: (&bytes[..]).into() });
                    }
                }
            }
            2 if clients.len() < 4 => {
                if let (Ok(conn), outputs) = d.accept(ListenerId(0), peer(arg), SERVER_ADDR) {
                    clients.push(Client::new(arg, conn, now));
                    route_writes(outputs, &mut clients);
                }
            }
            3 | 4 => {
                // Carry some of a client's bytes to the server: a chunk of the script's
                // size, maybe with one byte flipped.
                let Some(i) = pick(&(0..clients.len()).collect::<Vec<_>>(), arg) else { continue };
                let n = usize::from(s.u8() % 64) + 1;
                let flip = s.u8();
                let c = &mut clients[i];
                let n = n.min(c.to_server.len());
                let conn = c.at_server;
                if n == 0 || !readable(&d).contains(&conn) {
                    continue;
                }
                let mut chunk: Vec<u8> = c.to_server.drain(..n).collect();
                if op % 11 == 4 {
                    let at = usize::from(flip) % chunk.len();
                    chunk[at] ^= 1 | flip;
                    c.tampered = true;
                }
                let outputs = d.input(Input::Received { conn, bytes: (&chunk[..]).into() });
                route_writes(outputs, &mut clients);
            }
            5 => {
                // Carry everything the server wrote to a client.
                let Some(i) = pick(&(0..clients.len()).collect::<Vec<_>>(), arg) else { continue };
                let c = &mut clients[i];
                if !c.to_client.is_empty() && !c.done {
                    let bytes = std::mem::take(&mut c.to_client);
                    c.machine.handle_input(now, Input::Received { conn: c.own, bytes: (&bytes[..]).into() });
                    c.drain(now);
                }
            }
            6 => {
                let Some(i) = pick(&(0..clients.len()).collect::<Vec<_>>(), arg) else { continue };
                let c = &mut clients[i];
                let line = format!("line {} of {}", c.sent.len(), arg).into_bytes();
                if c.machine.command(now, |m, now| m.send_line(now, &line)).is_ok() {
                    c.sent.push(line);
                }
                c.drain(now);
            }
            7 => {
                if let Some(conn) = pick(&readable(&d), arg) {
                    d.input(Input::ReadClosed { conn });
                }
            }
            8 => {
                // A reset; on a connection already finished, a report racing the close.
                let all: Vec<(ConnId, Phase)> = d.conns().map(|(id, c)| (id, c.phase)).collect();
                match pick(&all, arg) {
                    Some((conn, Phase::Open)) => {
                        d.input(Input::Closed { conn, reason: NetError::Reset });
                        if let Some(c) = clients.iter_mut().find(|c| c.at_server == conn) {
                            c.tampered = true;
                        }
                    }
                    Some((conn, Phase::Finished)) => {
                        d.stale(Input::Closed { conn, reason: NetError::Reset });
                    }
                    _ => {}
                }
            }
            10 => {
                // Answer a connection the machine dialled: it opens, or it fails.
                let dialled: Vec<ConnId> =
                    d.conns().filter(|(_, c)| c.phase == Phase::Connecting).map(|(id, _)| id).collect();
                if let Some(conn) = pick(&dialled, arg) {
                    if arg & 1 == 0 {
                        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000 + u16::from(arg));
                        d.input(Input::Connected { conn, local });
                    } else {
                        d.input(Input::ConnectFailed { conn, error: NetError::Refused });
                    }
                }
            }
            _ => {
                d.timeout(now + Duration::from_millis(u64::from(arg) * 20));
            }
        }
    }
    // Deliver what is left, untampered, both ways until quiet; then every client nobody
    // tampered with has its echoes, in order and intact.
    for _ in 0..16 {
        let now = d.now();
        for i in 0..clients.len() {
            let conn = clients[i].at_server;
            if !clients[i].to_server.is_empty() && readable(&d).contains(&conn) {
                let bytes = std::mem::take(&mut clients[i].to_server);
                let outputs = d.input(Input::Received { conn, bytes: (&bytes[..]).into() });
                route_writes(outputs, &mut clients);
            }
            let c = &mut clients[i];
            if !c.to_client.is_empty() && !c.done {
                let bytes = std::mem::take(&mut c.to_client);
                c.machine.handle_input(now, Input::Received { conn: c.own, bytes: (&bytes[..]).into() });
                c.drain(now);
            }
        }
    }
    let mut reached = Reached::default();
    for c in &clients {
        let server_side_ok = d.conn(c.at_server).is_some_and(|conn| conn.phase == Phase::Open && !conn.read_shut);
        if S::ECHOES && !c.tampered && !c.done && server_side_ok {
            assert_eq!(c.got, c.sent, "an untampered TLS client's echoes");
            reached.echoed += usize::from(!c.sent.is_empty());
        }
        reached.secured += usize::from(c.secured);
        let server_ended = d.conn(c.at_server).map_or(true, |conn| conn.phase == Phase::Finished);
        reached.ended_by_server += usize::from(c.secured && server_ended && !c.tampered);
    }
    reached
}

/// What a `tls_records` script came to, for the property tests to check.
#[derive(Debug, Default)]
pub struct RecordsReached {
    /// The plaintext the server read, in order.
    pub plain: Vec<u8>,
    /// The peer's close_notify came.
    pub peer_closed: bool,
    /// Why the server's session was refused, if it was.
    pub refused: Option<String>,
}

/// The `tls_records` target: records past the handshake, sealed by a real session of ours
/// with whatever inner content type and bytes the input says (alerts, handshake messages
/// such as `KeyUpdate`, padding only), and opened by the server's session in reads cut
/// where the input says. It must never panic, and while only application data was sealed
/// the server reads exactly the bytes sealed, in order.
///
/// Script steps, each `(op, arg)` then its own bytes: op 0 writes `arg * 64 + next` bytes
/// as the inner machine would; op 1 seals one record of content type `[0x17, 0x15, 0x16,
/// 0x00 (padding), arg][arg % 5]` with the next byte's count of inner bytes; ops 2 and 3
/// have the server read `arg * (next | 1)` bytes. What is left is read at the end.
pub fn fuzz_tls_records(data: &[u8]) -> RecordsReached {
    use switchyard_core::tls::fuzzing::{Opened, SealedPair};
    let mut s = Script::new(data);
    let seed = s.u8();
    let mut pair = SealedPair::new(identity(), [seed; 32], 1_796_083_200_000_000);
    // What the server must read, while only application data was sealed.
    let mut expected: Option<Vec<u8>> = Some(Vec::new());
    let mut reached = RecordsReached::default();
    let read = |pair: &mut SealedPair, n: usize, reached: &mut RecordsReached| match pair.read(n) {
        Opened::Plain { plain, peer_closed } => {
            plain.iter().for_each(|p| reached.plain.extend_from_slice(p));
            reached.peer_closed |= peer_closed;
            true
        }
        Opened::Refused(reason) => {
            reached.refused = Some(reason);
            false
        }
    };
    while !s.is_empty() {
        let (op, arg) = (s.u8(), s.u8());
        match op % 4 {
            0 => {
                let n = usize::from(arg) * 64 + usize::from(s.u8());
                let bytes = s.take(n).to_vec();
                pair.write(&bytes);
                if let Some(expected) = &mut expected {
                    expected.extend_from_slice(&bytes);
                }
            }
            1 => {
                let content_type = [0x17, 0x15, 0x16, 0x00, arg][usize::from(arg % 5)];
                let n = usize::from(s.u8());
                let inner = s.take(n).to_vec();
                pair.seal(content_type, &inner);
                match (&mut expected, content_type) {
                    (Some(expected), 0x17) => expected.extend_from_slice(&inner),
                    _ => expected = None,
                }
            }
            _ => {
                let n = usize::from(arg) * usize::from(s.u8() | 1);
                if !read(&mut pair, n, &mut reached) {
                    break;
                }
            }
        }
    }
    if reached.refused.is_none() {
        let rest = pair.wire.len();
        read(&mut pair, rest, &mut reached);
    }
    if let Some(expected) = expected {
        assert_eq!(reached.refused, None, "only application data was sealed, yet the session was refused");
        assert_eq!(reached.plain, expected, "the server read exactly what was sealed");
    }
    reached
}
