//! Fuzz inputs read as scripts against one tunnel end: the bodies of the `tunnel_remote`
//! and `tunnel_local` targets.
//!
//! The input first picks the end's limits (a window as small as 16 bytes, stream buffers
//! and carrier thresholds as small as one byte, one to four streams, short heartbeats), so
//! that every limit is within reach of a short input; then each following byte picks a step:
//!
//! - the scripted peer frames a message on a carrier: the next authentication step with a
//!   correct proof (it knows the secret, so it gets past authentication to the stream code)
//!   or a wrong one, `Open` with the next or any id and a known, unknown or default route,
//!   `Data` within the credit, to its last byte or one byte past it, `Window` (up to
//!   `u32::MAX`), `Fin`, `Reset`, `Refuse`, `Ping`, `Pong`, or a message out of turn; or it
//!   appends raw garbage;
//! - the driver delivers the next chunk of the carrier's bytes (any size, so frames are cut
//!   anywhere), reports `Sent`, `ReadClosed` or `Closed` on it, accepts a carrier (remote
//!   end) or a client (local end, on a prefix entrance, a static forward or an unknown
//!   listener), answers a connect, delivers bytes, end of input, a reset or `Sent` on a
//!   client or target connection, or a report that races with a close;
//! - time advances (a little, a lot, or exactly to the machine's deadline) and
//!   `handle_timeout` runs;
//! - remote end: the scripted local end asks to publish a port (in the allowed range or
//!   not), and the driver answers the end's `Listen`s, bound or in use.
//!
//! The [`Driver`] and the [`Book`] check every call (see their documentation). At the end
//! every carrier is closed, after which nothing may be left open and `streams()` must be 0.

use crate::driver::{Driver, Phase};
use crate::tunnel::book::Book;
use crate::tunnel::TunnelEnd;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_core::machine::{Input, NetError, Output, Refusal};
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::carrier::HeartbeatConfig;
use switchyard_core::tunnel::local::{Entrance, LocalConfig, TunnelLocal};
use switchyard_core::tunnel::mux::MuxConfig;
use switchyard_core::tunnel::remote::{PublishConfig, RemoteConfig, Route, Routes, TunnelRemote};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::wire::proxy::ProxyVersion;
use switchyard_core::wire::tunnel::{StreamAddrs, StreamId, TunnelMsg, MAX_DATA, PROOF_LEN, VERSION};
use switchyard_core::{ConnId, Env, Instant, ListenerId};

/// A fuzz input read as a sequence of choices. Past its end every read is 0, so any input
/// is a valid script.
#[derive(Debug)]
pub struct Source<'a> {
    data: &'a [u8],
}

impl<'a> Source<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Source<'a> {
        Source { data }
    }

    /// True once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        let (&b, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        b
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            usize::from(self.byte()) % n
        } else {
            self.u32() as usize % n
        }
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// A 32-byte array.
    pub fn array(&mut self) -> [u8; PROOF_LEN] {
        std::array::from_fn(|_| self.byte())
    }

    /// Up to `n` bytes, as they are.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// The secret every end and every scripted peer shares.
pub fn secret() -> Secret {
    Secret::new(*b"switchyard harness secret").expect("not empty")
}

/// `len` bytes of a pattern that differs at every offset of a 251-byte cycle, so a shifted,
/// repeated or dropped run of bytes does not match.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// An end under test with its driver and its book: every call goes through here, so the
/// book sees every input and output.
#[derive(Debug)]
pub struct Rig<M: TunnelEnd> {
    /// The machine's driver.
    pub driver: Driver<M>,
    /// Its rules.
    pub book: Book,
    /// Print every call and output (set `SWITCHYARD_FUZZ_TRACE` to reproduce a failure).
    trace: bool,
}

impl<M: TunnelEnd> Rig<M> {
    /// Takes over `machine` at `now`.
    pub fn new(machine: M, book: Book, now: Instant) -> Rig<M> {
        let (driver, outputs) = Driver::new(machine, now);
        let trace = std::env::var_os("SWITCHYARD_FUZZ_TRACE").is_some();
        let mut rig = Rig { driver, book, trace };
        rig.check(&outputs, None);
        rig
    }

    fn check(&mut self, outputs: &[Output<TunnelEvent>], about: Option<ConnId>) {
        if self.trace {
            for output in outputs {
                eprintln!("{} {}   -> {output:?}", self.driver.now(), std::any::type_name::<M>());
            }
        }
        self.book.after(outputs, &self.driver, about);
        self.book.settle(&self.driver);
    }

    /// A listener accepted a connection from `peer` at `local`.
    pub fn accept(
        &mut self,
        listener: ListenerId,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> (Result<ConnId, Refusal>, Vec<Output<TunnelEvent>>) {
        self.say(format_args!("accept({listener:?}, {peer}, at {local})"));
        let (result, outputs) = self.driver.accept(listener, peer, local);
        if let Ok(conn) = result {
            self.book.accepted(self.driver.now(), conn, listener, peer, local);
        }
        self.check(&outputs, result.as_ref().ok().copied());
        (result, outputs)
    }

    /// Reports `input`.
    pub fn input(&mut self, input: Input<'_>) -> Vec<Output<TunnelEvent>> {
        self.say(format_args!("{input:?}"));
        let about = input.conn();
        self.book.before(self.driver.now(), &input);
        let outputs = self.driver.input(input);
        self.check(&outputs, about);
        outputs
    }

    /// Reports `input` about a finished or unknown connection, which must be ignored.
    pub fn stale(&mut self, input: Input<'_>) -> Vec<Output<TunnelEvent>> {
        self.say(format_args!("stale {input:?}"));
        let outputs = self.driver.stale(input);
        self.check(&outputs, None);
        outputs
    }

    /// Answers the machine's `Listen` of `listener`.
    pub fn listened(&mut self, listener: ListenerId, result: Result<SocketAddr, NetError>) -> Vec<Output<TunnelEvent>> {
        self.say(format_args!("Listened {listener:?} {result:?}"));
        let outputs = self.driver.listened(listener, result);
        self.check(&outputs, None);
        outputs
    }

    /// Runs `handle_timeout` at `now`.
    pub fn timeout(&mut self, now: Instant) -> Vec<Output<TunnelEvent>> {
        self.say(format_args!("handle_timeout({now})"));
        let outputs = self.driver.timeout(now);
        self.check(&outputs, None);
        self.book.after_timeout(&self.driver);
        outputs
    }

    fn say(&self, call: std::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("{} {} <- {call}", self.driver.now(), std::any::type_name::<M>());
        }
    }

    /// Live connections, in id order, that satisfy `keep`.
    pub fn live(&self, mut keep: impl FnMut(ConnId, &crate::driver::Conn) -> bool) -> Vec<ConnId> {
        self.driver.conns().filter(|(id, c)| c.is_live() && keep(*id, c)).map(|(id, _)| id).collect()
    }

    /// Closes every carrier (as a reset, or a failed connect), then checks that nothing is
    /// left open and no stream remains.
    pub fn teardown(&mut self) {
        for carrier in self.live(|id, _| self.book.is_carrier(id)) {
            match self.driver.conn(carrier).map(|c| c.phase) {
                Some(Phase::Connecting) => self.input(Input::ConnectFailed { conn: carrier, error: NetError::Refused }),
                Some(Phase::Open) => self.input(Input::Closed { conn: carrier, reason: NetError::Reset }),
                _ => continue,
            };
        }
        let left = self.live(|_, _| true);
        assert!(left.is_empty(), "open after every carrier closed: {:?}", self.describe(&left));
        let listening: Vec<_> = self.driver.listeners().collect();
        assert!(listening.is_empty(), "published ports outlived their carriers: {listening:?}");
        assert_eq!(self.driver.machine.open_streams(), 0, "streams left after every carrier closed");
    }

    fn describe(&self, conns: &[ConnId]) -> Vec<String> {
        conns
            .iter()
            .map(|&id| format!("{id} {:?} stream {:?}", self.driver.conn(id), self.book.stream_of(id)))
            .collect()
    }
}

/// One scripted peer on one carrier: the local end of a carrier to the remote end under
/// test, or the remote end of the local end's carrier.
#[derive(Debug, Default)]
struct Peer {
    /// Framed and not yet delivered.
    queue: BytesMut,
    /// Its own authentication nonce.
    nonce: Option<[u8; PROOF_LEN]>,
    next_open: StreamId,
}

/// A scripted peer and driver around one end (`local` in [`Run::step`] says which).
struct Run<M: TunnelEnd> {
    rig: Rig<M>,
    peers: BTreeMap<ConnId, Peer>,
    accepted: u16,
    window: u32,
}

/// Body of the `tunnel_remote` target: a script against a [`TunnelRemote`] whose peers are
/// scripted local ends (up to three carriers) and scripted route targets.
pub fn fuzz_tunnel_remote(data: &[u8]) {
    remote_script(data).rig.teardown();
}

/// Streams open after running `data` as a script of the `tunnel_remote` (`local` false) or
/// `tunnel_local` target, before the teardown. For checking what a script reaches.
pub fn streams_after(data: &[u8], local: bool) -> usize {
    if local {
        local_script(data).rig.driver.machine.open_streams()
    } else {
        remote_script(data).rig.driver.machine.open_streams()
    }
}

/// The ports the remote end has published after running `data` as a `tunnel_remote`
/// script, before the teardown. For checking that scripts reach publishing.
pub fn published_after(data: &[u8]) -> Vec<u16> {
    remote_script(data).rig.driver.machine.published()
}

/// The first bytes of a `tunnel_remote` script that get a stream open (its target still
/// connecting), step by step; a random tail after them starts where the interesting bugs
/// are. The property tests use it (and check it still gets there); for libFuzzer it is a
/// good seed.
pub fn remote_prologue() -> Vec<u8> {
    [
        &[1][..],         // routes: the default route exists
        &[0, 1, 1, 3],    // window 16 B, stream buffer 64 B, carrier high 100 B, 4 streams
        &[19, 3],         // a ping every 2 s, dead after 10 s
        &[9, 0, 2, 7],    // auth within 5 s, target connect within 0.5 s, 3 carriers, seed 7
        &[0],             // a local end connects
        &[2, 0, 0, 1],    // it frames the next authentication step, right: Hello ...
        &[0; PROOF_LEN],  // ... with a nonce of zeros
        &[11, 3, 0],      // the carrier delivers everything queued
        &[2, 0, 0, 1],    // the next step: the right Response to the Challenge
        &[11, 3, 0],      // delivered
        &[2, 0, 3, 2, 2], // Open stream 1 (the next id) to route 7777
        &[11, 3, 0],      // delivered: the remote end connects to the target
    ]
    .concat()
}

/// The first bytes of every `tunnel_local` script: its configuration (small limits).
pub fn local_setup() -> Vec<u8> {
    [
        &[0, 1, 1, 3][..], // window 16 B, stream buffer 64 B, carrier high 100 B, 4 streams
        &[19, 3],          // a ping every 2 s, dead after 10 s
        &[11, 7, 9, 7, 7], // prefix within 3 s, connect 2 s, handshake 5 s, 8 clients, seed 7
    ]
    .concat()
}

/// The first bytes of a `tunnel_local` script that get a stream open; see
/// [`remote_prologue`].
pub fn local_prologue() -> Vec<u8> {
    [
        &local_setup()[..],
        &[0, 1, 1],           // the carrier connects
        &[2, 0, 0, 1],        // the remote end frames the next step, right: a Challenge ...
        &[0; PROOF_LEN],      // ... with a nonce of zeros
        &[11, 3, 0],          // delivered (the local end answers)
        &[2, 0, 0, 1],        // the next step: Welcome
        &[11, 3, 0],          // delivered
        &[0, 0, 1],           // a client connects to the static forward: stream 1
        &[20, 0, 4, 5, 1, 7], // it sends 100 bytes
    ]
    .concat()
}

fn remote_script(data: &[u8]) -> Run<TunnelRemote> {
    let mut src = Source::new(data);
    // A route with each kind of PROXY header, and one without.
    let mut routes = Routes::new();
    routes.add("9090", addr([10, 0, 2, 1], 9090));
    routes.add("7777", Route { target: addr([10, 0, 2, 2], 7777), proxy: Some(ProxyVersion::V1) });
    if src.byte() % 4 != 0 {
        routes.add("default", Route { target: addr([10, 0, 2, 3], 7007), proxy: Some(ProxyVersion::V2) });
    }
    let mut config = RemoteConfig::new(secret(), routes);
    config.mux = mux_config(&mut src);
    config.heartbeat = heartbeat_config(&mut src);
    config.auth_timeout = Duration::from_millis(500 * (1 + src.below(10) as u64));
    config.connect_timeout = Duration::from_millis(500 * (1 + src.below(20) as u64));
    config.max_carriers = 1 + src.below(3);
    // Two ports, one per carrier: a second ask on a carrier, and a port another carrier
    // holds, are refused. (The driver never answers the listens: the ports stay pending.)
    let publish =
        PublishConfig { max_per_carrier: 1, max_total: 2, ..PublishConfig::new(12000..=12001, [0, 0, 0, 0].into()) };
    config.publish = Some(publish);
    let window = config.mux.initial_window;
    let book = Book::remote(&config);
    let rig = Rig::new(TunnelRemote::new(Env::new(u64::from(src.byte())), config), book, Instant::ZERO);
    let mut run = Run { rig, peers: BTreeMap::new(), accepted: 0, window };
    while !src.is_empty() {
        run.step(&mut src, false);
    }
    run
}

/// Body of the `tunnel_local` target: a script against a [`TunnelLocal`] whose peers are a
/// scripted remote end (on each carrier it connects) and scripted clients on a prefix
/// entrance and a static forward.
pub fn fuzz_tunnel_local(data: &[u8]) {
    local_script(data).rig.teardown();
}

fn local_script(data: &[u8]) -> Run<TunnelLocal> {
    let mut src = Source::new(data);
    let entrances = BTreeMap::from([
        (ListenerId(0), Entrance::Prefix),
        (ListenerId(1), Entrance::Forward { route: "7777".into() }),
    ]);
    let mut config = LocalConfig::new(addr([10, 0, 1, 2], 7001), secret(), entrances);
    config.mux = mux_config(&mut src);
    config.heartbeat = heartbeat_config(&mut src);
    config.prefix_timeout = Duration::from_millis(250 * (1 + src.below(16) as u64));
    config.connect_timeout = Duration::from_millis(250 * (1 + src.below(8) as u64));
    config.handshake_timeout = Duration::from_millis(500 * (1 + src.below(10) as u64));
    config.max_clients = 1 + src.below(8);
    let window = config.mux.initial_window;
    let book = Book::local(&config);
    let seed = u64::from(src.byte());
    let rig = Rig::new(TunnelLocal::new(Env::new(seed), Instant::ZERO, config), book, Instant::ZERO);
    let mut run = Run { rig, peers: BTreeMap::new(), accepted: 0, window };
    while !src.is_empty() {
        run.step(&mut src, true);
    }
    run
}

/// Where the local end's listener `listener` is, as the scripted driver reports it.
fn entrance_addr(listener: ListenerId) -> SocketAddr {
    addr([10, 0, 0, 9], 7000 + listener.0)
}

/// The addresses a scripted local end names in its `Open` of `stream`: none (an older local
/// end), one family, or an IPv4 client at an IPv6 entrance, by turns. From the id, not the
/// input, so that existing scripts keep their meaning.
fn open_addrs(stream: StreamId) -> Option<StreamAddrs> {
    let client = addr([10, 1, 0, stream as u8], 50000);
    match stream % 3 {
        0 => None,
        1 => Some(StreamAddrs { client, entrance: entrance_addr(ListenerId(1)) }),
        _ => Some(StreamAddrs { client, entrance: SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), 7000) }),
    }
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Limits small enough for a short input to reach, or the defaults.
fn mux_config(src: &mut Source<'_>) -> MuxConfig {
    MuxConfig {
        initial_window: [16, 100, 4096, 65536, 4 << 20][src.below(5)],
        stream_buffer: [1, 64, 4096, 256 << 10][src.below(4)],
        carrier_high: [1, 100, 16 << 10, 1 << 20][src.below(4)],
        max_streams: 1 + src.below(4),
    }
}

fn heartbeat_config(src: &mut Source<'_>) -> HeartbeatConfig {
    let interval = Duration::from_millis(100 * (1 + src.below(20) as u64));
    HeartbeatConfig { interval, dead_after: interval * (2 + src.below(4) as u32) }
}

impl<M: TunnelEnd> Run<M> {
    /// One step. Steps that usually end a carrier (garbage, a close) are rare, so that even
    /// random bytes get somewhere; the fuzzer picks them when they pay.
    fn step(&mut self, src: &mut Source<'_>, local: bool) {
        match src.below(32) {
            0 | 1 if local => self.local_connects(src),
            0 | 1 => self.accept_carrier(src),
            2..=9 => self.peer_sends(src, local),
            10 => {
                let len = src.below(24);
                let garbage = src.take(len).to_vec();
                self.with_peer(src, |peer, _| peer.queue.extend_from_slice(&garbage));
            }
            11..=16 => self.deliver(src),
            17..=19 => self.carrier_report(src),
            20..=26 => self.conn_report(src),
            27..=29 => self.time(src),
            _ => self.stale(src),
        }
    }

    /// Local end: answer its carrier connect, or accept a client.
    fn local_connects(&mut self, src: &mut Source<'_>) {
        let connecting = self.rig.live(|id, c| c.phase == Phase::Connecting && self.rig.book.is_carrier(id));
        if let (Some(&conn), true) = (connecting.first(), src.byte() % 4 != 0) {
            let input = match src.below(4) {
                0 => Input::ConnectFailed { conn, error: NetError::Refused },
                _ => Input::Connected { conn, local: addr([10, 0, 1, 1], 40000) },
            };
            self.rig.input(input);
            return;
        }
        let listener = ListenerId(src.below(3) as u16);
        self.accepted += 1;
        let peer = addr([10, 1, (self.accepted >> 8) as u8, self.accepted as u8], 50000);
        let _ = self.rig.accept(listener, peer, entrance_addr(listener));
    }

    /// Remote end: a local end connects, or (once the end asked for listeners) the driver
    /// answers a `Listen`: bound, or in use.
    fn accept_carrier(&mut self, src: &mut Source<'_>) {
        let asked: Vec<_> = self.rig.driver.listeners().filter(|&(_, _, bound)| !bound).collect();
        // Read a choice only then, so scripts without publishing keep their meaning.
        if let Some(&(listener, addr, _)) = asked.first() {
            match src.byte() % 4 {
                0 => {}
                1 | 2 => return drop(self.rig.listened(listener, Ok(addr))),
                _ => {
                    let refused = NetError::Other(format!("cannot listen on {addr}: address already in use"));
                    return drop(self.rig.listened(listener, Err(refused)));
                }
            }
        }
        self.accepted += 1;
        let peer = addr([10, 0, 1, self.accepted as u8], 40000 + self.accepted);
        let _ = self.rig.accept(ListenerId(0), peer, addr([10, 0, 1, 2], 7001));
    }

    /// Runs `f` on the scripted peer of a live, open carrier the input picks, if any.
    fn with_peer(&mut self, src: &mut Source<'_>, f: impl FnOnce(&mut Peer, ConnId)) {
        let carriers = self.rig.live(|id, c| c.phase == Phase::Open && self.rig.book.is_carrier(id));
        if carriers.is_empty() {
            return;
        }
        let carrier = carriers[src.below(carriers.len())];
        f(self.peers.entry(carrier).or_default(), carrier);
    }

    /// The scripted peer frames one message.
    fn peer_sends(&mut self, src: &mut Source<'_>, local: bool) {
        let carriers = self.rig.live(|id, c| c.phase == Phase::Open && self.rig.book.is_carrier(id));
        if carriers.is_empty() {
            return;
        }
        let carrier = carriers[src.below(carriers.len())];
        let msg = self.message(src, carrier, local);
        msg.encode(&mut self.peers.entry(carrier).or_default().queue);
    }

    fn message(&mut self, src: &mut Source<'_>, carrier: ConnId, local: bool) -> TunnelMsg {
        let book = &self.rig.book;
        let peer = self.peers.entry(carrier).or_default();
        let streams = book.streams_on(carrier);
        let stream = |src: &mut Source<'_>| -> StreamId {
            match (streams.is_empty(), src.below(8)) {
                (false, 0..=6) => streams[src.below(streams.len())],
                _ => src.below(6) as StreamId,
            }
        };
        let reason = |src: &mut Source<'_>| {
            let len = src.below(300);
            String::from_utf8_lossy(src.take(len)).into_owned()
        };
        // A message the other end never sends (`Open` to a local end, `Refuse` to a remote
        // end) ends the carrier; keep it rarer than the rest so scripts get deep.
        let kind = match (src.below(14), local) {
            (3 | 4, true) | (11, false) if src.byte() % 8 != 0 => 5,
            (kind, _) => kind,
        };
        match kind {
            // The next authentication step, right (mostly) or wrong.
            0..=2 => {
                let right = src.byte() % 8 != 0;
                let (nonce_l, nonce_r) = book.nonces(carrier);
                let secret = secret();
                if local {
                    // Scripted remote end: answer the local end's Hello, then welcome it.
                    match (nonce_l, peer.nonce) {
                        (Some(nonce_l), None) => {
                            let nonce = src.array();
                            peer.nonce = Some(nonce);
                            let proof = if right { secret.remote_proof(&nonce_l, &nonce) } else { src.array() };
                            TunnelMsg::Challenge { nonce, proof }
                        }
                        _ => TunnelMsg::Welcome,
                    }
                } else {
                    // Scripted local end: say Hello, then prove it knows the secret.
                    match (peer.nonce, nonce_r) {
                        (None, _) => {
                            let nonce = src.array();
                            peer.nonce = Some(nonce);
                            let version = if right { VERSION } else { src.byte() };
                            TunnelMsg::Hello { version, nonce }
                        }
                        (Some(nonce_l), Some(nonce_r)) if right => {
                            TunnelMsg::Response { proof: secret.local_proof(&nonce_r, &nonce_l) }
                        }
                        _ => TunnelMsg::Response { proof: src.array() },
                    }
                }
            }
            3 | 4 => {
                let id = match src.below(8) {
                    0 => peer.next_open, // the last id again
                    1 => src.below(8) as StreamId,
                    _ => {
                        peer.next_open += 1;
                        peer.next_open
                    }
                };
                let route = ["", "9090", "7777", "12345", "nope"][src.below(5)].to_owned();
                TunnelMsg::Open { stream: id, route, addrs: open_addrs(id) }
            }
            5..=7 => {
                let id = stream(src);
                let credit = book.peer_credit(carrier, id) as usize;
                let len = match src.below(4) {
                    0 => credit,
                    1 => credit + 1,
                    2 => 1 + src.below(64),
                    _ => 1 + src.below(MAX_DATA),
                };
                TunnelMsg::Data { stream: id, bytes: pattern(src.byte(), len.clamp(1, MAX_DATA)).into() }
            }
            8 => {
                let increment = match src.below(4) {
                    0 => self.window / 4,
                    1 => u32::MAX,
                    _ => src.u32() % (2 * self.window),
                };
                TunnelMsg::Window { stream: stream(src), increment }
            }
            9 => TunnelMsg::Fin { stream: stream(src) },
            10 => TunnelMsg::Reset { stream: stream(src), reason: reason(src) },
            11 => TunnelMsg::Refuse { stream: stream(src), reason: reason(src) },
            12 => TunnelMsg::Ping { token: u64::from(src.u32()) },
            // Out of turn or unusual: anything the other end could send.
            _ => match src.below(8) {
                0 => TunnelMsg::Pong { token: 1 },
                1 => TunnelMsg::Refused { reason: reason(src) },
                2 => TunnelMsg::Hello { version: VERSION, nonce: src.array() },
                3 => TunnelMsg::Challenge { nonce: src.array(), proof: src.array() },
                // Publishing: inside the remote end's range, outside it, or an answer only
                // a remote end sends.
                5 => TunnelMsg::Publish { port: [12000, 12001, 80][src.below(3)] },
                6 => TunnelMsg::Published { port: 12000 },
                7 => TunnelMsg::PublishRefused { port: 12000, reason: reason(src) },
                _ => TunnelMsg::Welcome,
            },
        }
    }

    /// Delivers the next chunk of a carrier's queue.
    fn deliver(&mut self, src: &mut Source<'_>) {
        let size = match src.below(4) {
            0 => 1 + src.below(16),
            1 => 1 + src.below(1024),
            _ => usize::MAX,
        };
        let mut chunk = None;
        self.with_peer(src, |peer, carrier| {
            let n = size.min(peer.queue.len());
            if n > 0 {
                chunk = Some((carrier, peer.queue.split_to(n)));
            }
        });
        if let Some((conn, bytes)) = chunk {
            self.rig.input(Input::Received { conn, bytes: (&bytes[..]).into() });
        }
    }

    /// `Sent`, `ReadClosed` or `Closed` on a carrier.
    fn carrier_report(&mut self, src: &mut Source<'_>) {
        let carriers = self.rig.live(|id, c| c.phase == Phase::Open && self.rig.book.is_carrier(id));
        if carriers.is_empty() {
            return;
        }
        let conn = carriers[src.below(carriers.len())];
        let c = self.rig.driver.conn(conn).expect("carrier");
        let input = match src.below(16) {
            0 if !c.read_shut => Input::ReadClosed { conn },
            1 => Input::Closed { conn, reason: NetError::Reset },
            _ if c.unsent() == 0 => return,
            2..=5 => Input::Sent { conn, bytes: 1 + src.below(c.unsent().min(4096) as usize) },
            _ => Input::Sent { conn, bytes: c.unsent() as usize },
        };
        self.rig.input(input);
    }

    /// Something on a client (local end) or target (remote end) connection.
    fn conn_report(&mut self, src: &mut Source<'_>) {
        let conns = self.rig.live(|id, _| !self.rig.book.is_carrier(id));
        if conns.is_empty() {
            return;
        }
        let conn = conns[src.below(conns.len())];
        let c = self.rig.driver.conn(conn).expect("conn").clone();
        if c.phase == Phase::Connecting {
            let input = match src.below(4) {
                0 => Input::ConnectFailed { conn, error: NetError::Refused },
                _ => Input::Connected { conn, local: addr([10, 0, 1, 2], 30000) },
            };
            self.rig.input(input);
            return;
        }
        let bytes = match src.below(7) {
            0 => b"9090:".to_vec(),
            1 => b"7777:hello\n".to_vec(),
            2 => vec![b'1'; 1 + src.below(40)],
            3 => {
                let len = 1 + src.below(16);
                src.take(len).to_vec()
            }
            _ => pattern(src.byte(), [1, 100, 1000, 5000, 70_000][src.below(5)]),
        };
        let input = match src.below(8) {
            0 if !c.read_shut => Input::ReadClosed { conn },
            1 if src.byte() % 4 == 0 => Input::Closed { conn, reason: NetError::Reset },
            2..=4 if c.unsent() > 0 => Input::Sent { conn, bytes: 1 + src.below(c.unsent() as usize) },
            _ if c.read_shut || c.paused || bytes.is_empty() => return,
            _ => Input::Received { conn, bytes: (&bytes[..]).into() },
        };
        self.rig.input(input);
    }

    fn time(&mut self, src: &mut Source<'_>) {
        let now = self.rig.driver.now();
        let to = match src.below(4) {
            0 => now + Duration::from_millis(src.below(100) as u64),
            1 => now + Duration::from_millis(100 * src.below(50) as u64),
            2 => self.rig.driver.machine.poll_timeout().unwrap_or(now).max(now),
            _ => now + Duration::from_secs(src.below(30) as u64),
        };
        self.rig.timeout(to);
    }

    /// A report that raced with a close: about a finished connection, or one never named.
    fn stale(&mut self, src: &mut Source<'_>) {
        let mut finished = self.rig.driver.conns().filter(|(_, c)| !c.is_live()).map(|(id, _)| id).collect::<Vec<_>>();
        finished.push(ConnId::new(0, 1 << 40));
        let conn = finished[src.below(finished.len())];
        let input = match src.below(6) {
            0 => Input::Received { conn, bytes: "late".into() },
            1 => Input::ReadClosed { conn },
            2 => Input::Closed { conn, reason: NetError::Reset },
            3 => Input::Sent { conn, bytes: 1 },
            4 => Input::Connected { conn, local: addr([10, 9, 9, 9], 1) },
            _ => Input::ConnectFailed { conn, error: NetError::TimedOut },
        };
        self.rig.stale(input);
    }
}
