//! [`Book`]: the tunnel's rules, checked on one end from what its driver sees.
//!
//! The harness tells the book every input before the driver reports it
//! ([`Book::before`]), every batch of outputs the machine produced ([`Book::after`]), and
//! asks it to check the end's state after every call ([`Book::settle`]) and after every
//! timeout ([`Book::after_timeout`]). From that alone — it never looks inside the machine,
//! only at `streams()` and `is_up()`/`carriers()` — it asserts:
//!
//! **Authentication** (§3.2). The local end (with nothing to publish) sends one `Hello` of
//! version 2; the remote end answers only a `Hello` of version 1 to 3, and its `Challenge` proof verifies under the
//! shared secret; the local end answers only a `Challenge` whose proof verified, with the
//! right proof, and comes up only after that; the remote end sends `Welcome` only after a
//! valid `Response`. Nothing about streams crosses before that. *Catches:* a machine that
//! skips or inverts a proof check (an end that trusts a peer that never proved the secret),
//! admits a version it does not speak, or opens streams early.
//!
//! **Streams** (§3.3). The local end opens ids that strictly increase over its whole life,
//! each for the route the spec's prefix rule (§3.1) or the static forward gives, and the
//! remote end connects each stream only to its route's allowlisted target. A client the
//! local end holds without a stream is one whose first bytes still decide nothing (only
//! digits, at most 32). *Catches:* an open proxy, a prefix parsed wrongly or waited on too
//! long, a reused id.
//!
//! **Client addresses** (§3.3, §3.5). Every `Open` of the local end names its client's
//! address and the address the client was accepted at; the remote end writes the PROXY
//! header of a route with `proxy` to its target first, exactly once, before any stream
//! byte, for the addresses the peer's `Open` named (`UNKNOWN`/LOCAL for an `Open` without
//! them), and grants no credit for the header's bytes. *Catches:* addresses lost or
//! swapped, a header missing, repeated or after data, credit paid for the header.
//!
//! **Credit** (flow control). A machine never sends more `Data` on a stream than the peer
//! granted (4 MiB or the configured window, plus `Window`s delivered); never writes to a
//! stream's connection more than it granted the peer; grants only credit for bytes the
//! driver reported `Sent` (so it holds at most one window per stream); and adds a data frame
//! only while its carrier backlog is under `carrier_high`.
//! *Catches:* a window counted in the wrong direction or returned on receipt rather than on
//! `Sent` (unbounded memory in the driver), an off-by-one in the credit check.
//!
//! **Bytes** (both ways). What a machine writes to a stream's connection is exactly, in
//! order, the `Data` the peer sent on that stream before its `Fin`; the `Data` it sends is
//! exactly what its connection delivered (after the route prefix); it half-closes a
//! connection only once everything before the peer's `Fin` is written, and sends `Fin`
//! only after its connection ended and every byte was carried.
//! *Catches:* lost, duplicated, reordered or cross-stream bytes, a `Fin` that overtakes
//! data, a prefix stripped twice or not at all.
//!
//! **Back-pressure.** A stream connection whose unsent bytes reach `stream_buffer` is paused,
//! and a paused one is resumed once they fall to half. *Catches:* unbounded per-stream
//! buffering, and a stream left paused forever (a stall).
//!
//! **Closing.** A carrier whose peer broke the protocol (a frame that is not a tunnel
//! message, `Data` beyond the credit granted, a window past 2^31 − 1, a stream id not above
//! the last), or that the machine refused, is closed in the same call: enforcing the credit
//! is what bounds the memory a peer can make the machine hold. When a carrier closes, every
//! connection of its streams is closed; a stream that ended (`Reset`/`Refuse` either way)
//! has its connection closed in the same call; an end with no authenticated carrier has no
//! streams, and a local end that is not up has no clients. *Catches:* leaked connections
//! (a connect given up but never closed) and streams, and a peer's limits not enforced.
//!
//! **Publishing** (§3.6). Only the remote end sends `Published`/`PublishRefused`, and only
//! on an authenticated carrier; the local end (which publishes nothing here) never sends
//! `Publish`. With the checked driver's listener rules and the script's teardown, every
//! port the remote end listened on is closed once its carrier is. (Visitors of published
//! ports are not scripted here; `tests/sim_expose.rs` and the CLI tests cover them.)
//!
//! **Deadlines.** Every obligation with a deadline — a silent carrier (dead after
//! `dead_after`), an unauthenticated carrier, a connect in progress, a client that has not
//! sent its prefix — is met by `handle_timeout` at that deadline, and the machine's
//! `poll_timeout` is never later than the earliest of them (a driver that sleeps until
//! `poll_timeout` would otherwise miss it).

use crate::driver::{Driver, Phase};
use crate::tunnel::wire::CarrierReader;
use crate::tunnel::TunnelEnd;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_core::machine::{CloseHow, Input, Output};
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::{Entrance, LocalConfig};
use switchyard_core::tunnel::mux::MuxConfig;
use switchyard_core::tunnel::remote::{RemoteConfig, Routes};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::wire::proxy::{self, ProxyAddrs};
use switchyard_core::wire::tunnel::{StreamAddrs, StreamId, TunnelMsg, ADDRS_VERSION, MAX_ROUTE, PROOF_LEN, VERSION};
use switchyard_core::{ConnId, Instant, ListenerId};

type Nonce = [u8; PROOF_LEN];

/// The most credit a stream may have (§3.3).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// The route a client's first bytes select, read from `docs/PROTOCOL.md` §3.1 independently
/// of `tunnel::prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecRoute {
    /// Only digits so far, and the client has not ended: wait.
    Undecided,
    /// `DIGITS:`: this route; its `DIGITS:` are not passed on.
    Route(String),
    /// Anything else: the default route, every byte passed on.
    Default,
    /// More than 32 digits: refused.
    TooLong,
}

/// See [`SpecRoute`]. `ended`: the client has shut its side.
pub fn spec_route(first: &[u8], ended: bool) -> SpecRoute {
    let digits = first.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > MAX_ROUTE {
        return SpecRoute::TooLong;
    }
    match first.get(digits) {
        Some(b':') if digits > 0 => SpecRoute::Route(String::from_utf8_lossy(&first[..digits]).into_owned()),
        Some(_) => SpecRoute::Default,
        None if ended => SpecRoute::Default,
        None => SpecRoute::Undecided,
    }
}

#[derive(Debug)]
enum End {
    Local { remote: SocketAddr, entrances: BTreeMap<ListenerId, Entrance>, prefix_timeout: Duration },
    Remote { routes: Routes },
}

/// The rules of one tunnel end, checked from outside. See the module documentation.
#[derive(Debug)]
pub struct Book {
    end: End,
    secret: Secret,
    mux: MuxConfig,
    dead_after: Duration,
    auth_timeout: Duration,
    connect_timeout: Duration,
    carriers: BTreeMap<ConnId, CarrierBook>,
    conns: BTreeMap<ConnId, ConnBook>,
    /// Local end: the last stream id it opened.
    last_open: StreamId,
}

#[derive(Debug)]
struct CarrierBook {
    peer: SocketAddr,
    /// When the connection opened (accepted, or `Connected`); `None` while connecting.
    opened_at: Option<Instant>,
    connect_at: Instant,
    last_heard: Instant,
    up: bool,
    /// The machine sent `Refused`.
    refused: bool,
    /// What the machine wrote.
    out: CarrierReader,
    /// What was delivered to the machine.
    inn: CarrierReader,
    /// Local end's nonce and version (from `Hello`) and the remote end's nonce (from
    /// `Challenge`).
    nonce_l: Option<Nonce>,
    hello_version: Option<u8>,
    nonce_r: Option<Nonce>,
    /// Local end: remote nonces of the delivered `Challenge`s whose proof verified.
    valid_challenges: Vec<Nonce>,
    /// Local end: it sent a `Response` (to a `Challenge` whose proof verified).
    responded: bool,
    /// Remote end: a delivered `Response` verified.
    peer_proved: bool,
    /// Remote end: a `Welcome` was delivered.
    peer_welcomed: bool,
    last_peer_open: StreamId,
    streams: BTreeMap<StreamId, StreamBook>,
    /// Rules the peer broke on a stream that the machine must enforce by closing the
    /// carrier, unless the stream was gone by then.
    broken_rules: Vec<(StreamId, &'static str)>,
}

#[derive(Debug)]
struct StreamBook {
    conn: Option<ConnId>,
    route: String,
    // Peer → machine → connection.
    /// `Data` delivered while the stream was open from the peer's side, up to its `Fin`.
    to_conn: Vec<u8>,
    peer_fin: bool,
    /// The peer's `Reset` or `Refuse` was delivered.
    peer_ended: bool,
    /// Every `Data` byte delivered before the peer's `Fin`, whatever became of it.
    received: u64,
    /// Bytes of `to_conn` the machine wrote to the connection.
    written: usize,
    /// Remote end: the client the peer's `Open` named.
    client: Option<SocketAddr>,
    /// Remote end: the PROXY header the route's target must get first (empty: none).
    preamble: Vec<u8>,
    /// The header has been written.
    preamble_written: bool,
    /// Credit the machine granted the peer: the window plus its `Window`s.
    granted: u64,
    // Connection → machine → peer.
    /// Bytes the machine carried as `Data`.
    carried: usize,
    /// Credit the peer granted the machine.
    credit: u64,
    machine_fin: bool,
    /// The machine sent `Reset` or `Refuse`.
    machine_ended: bool,
}

#[derive(Debug)]
struct ConnBook {
    /// Local end: the entrance the client came in by.
    entrance: Option<Entrance>,
    /// Local end: the client's address and where it was accepted.
    addrs: Option<StreamAddrs>,
    /// Accepted, or asked for.
    since: Instant,
    /// Everything the driver delivered.
    input: Vec<u8>,
    eof: bool,
    /// Bytes the driver reported `Sent`.
    sent: u64,
    link: Option<(ConnId, StreamId)>,
    /// Bytes of `input` that were the route prefix.
    skip: usize,
}

impl ConnBook {
    fn new(entrance: Option<Entrance>, since: Instant) -> ConnBook {
        ConnBook { entrance, addrs: None, since, input: Vec::new(), eof: false, sent: 0, link: None, skip: 0 }
    }
}

impl StreamBook {
    fn new(route: String, window: u64) -> StreamBook {
        StreamBook {
            conn: None,
            route,
            to_conn: Vec::new(),
            peer_fin: false,
            peer_ended: false,
            received: 0,
            written: 0,
            client: None,
            preamble: Vec::new(),
            preamble_written: false,
            granted: window,
            carried: 0,
            credit: window,
            machine_fin: false,
            machine_ended: false,
        }
    }
}

impl CarrierBook {
    fn new(peer: SocketAddr, opened_at: Option<Instant>, now: Instant) -> CarrierBook {
        CarrierBook {
            peer,
            opened_at,
            connect_at: now,
            last_heard: now,
            up: false,
            refused: false,
            out: CarrierReader::default(),
            inn: CarrierReader::default(),
            nonce_l: None,
            hello_version: None,
            nonce_r: None,
            valid_challenges: Vec::new(),
            responded: false,
            peer_proved: false,
            peer_welcomed: false,
            last_peer_open: 0,
            streams: BTreeMap::new(),
            broken_rules: Vec::new(),
        }
    }
}

/// Something the machine must have done by a deadline.
struct Obligation {
    at: Instant,
    what: String,
}

impl Book {
    /// A book for a local end built from `config`.
    pub fn local(config: &LocalConfig) -> Book {
        let end = End::Local {
            remote: config.remote,
            entrances: config.entrances.clone(),
            prefix_timeout: config.prefix_timeout,
        };
        Book::new(
            end,
            &config.secret,
            &config.mux,
            config.heartbeat.dead_after,
            config.handshake_timeout,
            config.connect_timeout,
        )
    }

    /// A book for a remote end built from `config`.
    pub fn remote(config: &RemoteConfig) -> Book {
        let end = End::Remote { routes: config.routes.clone() };
        Book::new(
            end,
            &config.secret,
            &config.mux,
            config.heartbeat.dead_after,
            config.auth_timeout,
            config.connect_timeout,
        )
    }

    fn new(
        end: End,
        secret: &Secret,
        mux: &MuxConfig,
        dead_after: Duration,
        auth: Duration,
        connect: Duration,
    ) -> Book {
        Book {
            end,
            secret: secret.clone(),
            mux: mux.clone(),
            dead_after,
            auth_timeout: auth,
            connect_timeout: connect,
            carriers: BTreeMap::new(),
            conns: BTreeMap::new(),
            last_open: 0,
        }
    }

    fn is_local(&self) -> bool {
        matches!(self.end, End::Local { .. })
    }

    fn window(&self) -> u64 {
        u64::from(self.mux.initial_window)
    }

    /// True if `conn` is a carrier of this end.
    pub fn is_carrier(&self, conn: ConnId) -> bool {
        self.carriers.contains_key(&conn)
    }

    /// The stream `conn` carries, once it has one.
    pub fn stream_of(&self, conn: ConnId) -> Option<StreamId> {
        self.conns.get(&conn)?.link.map(|(_, stream)| stream)
    }

    /// Stream ids on `carrier` the book knows, in order.
    pub fn streams_on(&self, carrier: ConnId) -> Vec<StreamId> {
        self.carriers.get(&carrier).map(|c| c.streams.keys().copied().collect()).unwrap_or_default()
    }

    /// Credit the peer has left on `stream` (what the machine granted less what was sent).
    pub fn peer_credit(&self, carrier: ConnId, stream: StreamId) -> u64 {
        let Some(s) = self.carriers.get(&carrier).and_then(|c| c.streams.get(&stream)) else { return 0 };
        s.granted.saturating_sub(s.to_conn.len() as u64)
    }

    /// The nonces the machine and its peer exchanged on `carrier`: (local's, remote's).
    pub fn nonces(&self, carrier: ConnId) -> (Option<Nonce>, Option<Nonce>) {
        self.carriers.get(&carrier).map_or((None, None), |c| (c.nonce_l, c.nonce_r))
    }

    /// The driver accepted `conn` from `peer` at `local` on `listener` (local end: a client;
    /// remote end: a carrier).
    pub fn accepted(&mut self, now: Instant, conn: ConnId, listener: ListenerId, peer: SocketAddr, local: SocketAddr) {
        match &self.end {
            End::Local { entrances, .. } => {
                let entrance = entrances.get(&listener).cloned();
                assert!(entrance.is_some(), "accepted {conn} on {listener:?}, which is no entrance");
                let mut cb = ConnBook::new(entrance, now);
                cb.addrs = Some(StreamAddrs { client: peer, entrance: local });
                self.conns.insert(conn, cb);
            }
            End::Remote { .. } => {
                self.carriers.insert(conn, CarrierBook::new(peer, Some(now), now));
            }
        }
    }

    /// Records an input the driver is about to report. Bytes on a carrier are read as the
    /// peer's messages here, since the machine processes them in this call.
    pub fn before(&mut self, now: Instant, input: &Input<'_>) {
        match *input {
            Input::Connected { conn, .. } => {
                if let Some(c) = self.carriers.get_mut(&conn) {
                    c.opened_at = Some(now);
                    c.last_heard = now;
                }
            }
            Input::Received { conn, ref bytes } => {
                if let Some(c) = self.carriers.get_mut(&conn) {
                    c.last_heard = now;
                    let (msgs, _) = c.inn.read(bytes);
                    for (_, msg) in msgs {
                        self.peer_message(conn, msg);
                    }
                } else if let Some(cb) = self.conns.get_mut(&conn) {
                    cb.input.extend_from_slice(bytes);
                }
            }
            Input::ReadClosed { conn } => {
                if let Some(cb) = self.conns.get_mut(&conn) {
                    cb.eof = true;
                }
            }
            Input::Sent { conn, bytes } => {
                if let Some(cb) = self.conns.get_mut(&conn) {
                    cb.sent += bytes as u64;
                }
            }
            _ => {}
        }
    }

    /// A message the peer sent on `carrier`, as the machine is about to process it.
    fn peer_message(&mut self, carrier: ConnId, msg: TunnelMsg) {
        let local = self.is_local();
        let window = self.window();
        let secret = &self.secret;
        let client = match &msg {
            TunnelMsg::Open { addrs, .. } => addrs.map(|a| a.client),
            _ => None,
        };
        let preamble = match (&self.end, &msg) {
            (End::Remote { routes }, TunnelMsg::Open { route, addrs, .. }) => {
                let proxied = routes.get(route).and_then(|r| r.proxy);
                let addrs = addrs.map(|a| ProxyAddrs { source: a.client, destination: a.entrance });
                proxied.map(|version| proxy::to_bytes(version, addrs).to_vec()).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let c = self.carriers.get_mut(&carrier).expect("a carrier");
        match msg {
            TunnelMsg::Hello { nonce, version } if !local && c.nonce_l.is_none() => {
                c.nonce_l = Some(nonce);
                c.hello_version = Some(version);
            }
            TunnelMsg::Challenge { nonce, proof }
                if local && c.nonce_l.is_some_and(|nonce_l| secret.verify_remote(&nonce_l, &nonce, &proof)) =>
            {
                c.valid_challenges.push(nonce)
            }
            TunnelMsg::Response { proof } if !local => {
                if let (Some(nonce_l), Some(nonce_r)) = (c.nonce_l, c.nonce_r) {
                    c.peer_proved |= secret.verify_local(&nonce_r, &nonce_l, &proof);
                }
            }
            TunnelMsg::Welcome => c.peer_welcomed = true,
            // Once the peer proved itself the machine has welcomed it by the time it reads
            // this `Open` (even in the same read as the `Response`).
            TunnelMsg::Open { stream, route, .. } if !local && c.peer_proved => {
                if stream > c.last_peer_open {
                    c.last_peer_open = stream;
                    let mut s = StreamBook::new(route, window);
                    s.preamble = preamble;
                    s.client = client;
                    c.streams.insert(stream, s);
                } else {
                    c.broken_rules.push((stream, "an Open whose id is not above the last"));
                }
            }
            TunnelMsg::Data { stream, bytes } => {
                if let Some(s) = c.streams.get_mut(&stream).filter(|s| !s.peer_fin && !s.peer_ended) {
                    s.to_conn.extend_from_slice(&bytes);
                    s.received += bytes.len() as u64;
                    if s.received > s.granted {
                        c.broken_rules.push((stream, "Data beyond the credit it was granted"));
                    }
                }
            }
            TunnelMsg::Window { stream, increment } => {
                if let Some(s) = c.streams.get_mut(&stream) {
                    s.credit += u64::from(increment);
                    // The machine's credit when it reads this: at least what the book counts
                    // less every byte it could have carried by then.
                    let total = s.conn.and_then(|conn| self.conns.get(&conn)).map_or(0, |cb| cb.input.len() - cb.skip);
                    let least = s.credit.saturating_sub(total as u64);
                    // (After the peer's own `Fin`, `Reset` or `Refuse` the machine may have
                    // forgotten the stream, and then it ignores the window.)
                    if !s.peer_fin && !s.peer_ended && least > MAX_WINDOW {
                        c.broken_rules.push((stream, "a window grown past 2^31 - 1"));
                    }
                }
            }
            TunnelMsg::Fin { stream } => {
                if let Some(s) = c.streams.get_mut(&stream) {
                    s.peer_fin = true;
                }
            }
            TunnelMsg::Refuse { stream, .. } | TunnelMsg::Reset { stream, .. } => {
                if let Some(s) = c.streams.get_mut(&stream) {
                    s.peer_ended = true;
                }
            }
            _ => {}
        }
    }

    /// Checks a batch of outputs the machine produced in one call, in order. `about`: the
    /// connection the call was about (accepted, or named by the input), if any.
    pub fn after<M: TunnelEnd>(&mut self, outputs: &[Output<TunnelEvent>], driver: &Driver<M>, about: Option<ConnId>) {
        let now = driver.now();
        let mut connects = VecDeque::new();
        let mut opened = None;
        let mut error_line = None;
        for (i, output) in outputs.iter().enumerate() {
            match output {
                Output::Connect { conn, to } => match &self.end {
                    End::Local { remote, .. } => {
                        assert_eq!(to, remote, "the local end connected {conn} somewhere other than the remote end");
                        self.carriers.insert(*conn, CarrierBook::new(*to, None, now));
                    }
                    End::Remote { .. } => {
                        self.conns.insert(*conn, ConnBook::new(None, now));
                        connects.push_back(*conn);
                    }
                },
                Output::Write { conn, bytes } if self.carriers.contains_key(conn) => {
                    let (msgs, error) = self.carriers.get_mut(conn).expect("carrier").out.read(bytes);
                    assert!(error.is_none(), "the machine wrote a bad frame on carrier {conn}: {error:?}");
                    for (start, msg) in msgs {
                        self.machine_message(driver, *conn, start, msg, about, &mut opened);
                    }
                }
                Output::Write { conn, bytes } => {
                    let is_error_line = self.is_local()
                        && bytes.starts_with(b"error: ")
                        && bytes.ends_with(b"\n")
                        && matches!(outputs.get(i + 1), Some(Output::Close { conn: c, how: CloseHow::Graceful }) if c == conn);
                    if is_error_line {
                        error_line = Some(*conn);
                    } else {
                        self.conn_write(*conn, bytes);
                    }
                }
                Output::Close { conn, how } if !self.carriers.contains_key(conn) => {
                    let orderly = *how == CloseHow::HalfClose || *how == CloseHow::Graceful;
                    if orderly && error_line.take() != Some(*conn) {
                        self.conn_shut(*conn);
                    }
                }
                Output::Event(event) => self.event(driver, event, &mut connects, &mut opened),
                _ => {}
            }
        }
        assert!(connects.is_empty(), "Connect {connects:?} opened no stream (no StreamOpened event)");
        assert!(opened.is_none(), "Open of stream {opened:?} without a StreamOpened event");
    }

    /// A message the machine wrote on `carrier`, its first byte at offset `start`.
    fn machine_message<M: TunnelEnd>(
        &mut self,
        driver: &Driver<M>,
        carrier: ConnId,
        start: u64,
        msg: TunnelMsg,
        about: Option<ConnId>,
        opened: &mut Option<StreamId>,
    ) {
        let local = self.is_local();
        let window = self.window();
        let carrier_high = self.mux.carrier_high as u64;
        let c = self.carriers.get_mut(&carrier).expect("a carrier");
        let stream_msg = matches!(
            msg,
            TunnelMsg::Open { .. }
                | TunnelMsg::Data { .. }
                | TunnelMsg::Window { .. }
                | TunnelMsg::Fin { .. }
                | TunnelMsg::Refuse { .. }
                | TunnelMsg::Reset { .. }
        );
        assert!(!stream_msg || c.up, "{msg:?} on carrier {carrier} before it authenticated");
        match msg {
            TunnelMsg::Hello { version, nonce } => {
                assert!(local, "the remote end sent Hello");
                // The scripted local ends publish nothing: the oldest version with addresses.
                assert_eq!(version, ADDRS_VERSION, "Hello with the wrong version");
                assert!(c.nonce_l.replace(nonce).is_none(), "a second Hello on {carrier}");
            }
            TunnelMsg::Challenge { nonce, proof } => {
                assert!(!local, "the local end sent Challenge");
                let nonce_l = c.nonce_l.expect("Challenge before the peer's Hello");
                let version = c.hello_version.expect("a Hello");
                assert!((1..=VERSION).contains(&version), "Challenge answers a Hello of version {version}");
                assert!(self.secret.verify_remote(&nonce_l, &nonce, &proof), "the remote end's proof does not verify");
                assert!(c.nonce_r.replace(nonce).is_none(), "a second Challenge on {carrier}");
            }
            TunnelMsg::Response { proof } => {
                assert!(local, "the remote end sent Response");
                let nonce_l = c.nonce_l.expect("Response before Hello");
                let answers =
                    c.valid_challenges.iter().any(|nonce_r| self.secret.local_proof(nonce_r, &nonce_l) == proof);
                assert!(answers, "Response that answers no Challenge whose proof verified");
                c.responded = true;
            }
            TunnelMsg::Welcome => {
                assert!(!local, "the local end sent Welcome");
                assert!(c.peer_proved, "Welcome without a valid Response");
                c.up = true;
            }
            TunnelMsg::Refused { .. } => c.refused = true,
            TunnelMsg::Open { stream, route, addrs } => {
                assert!(local, "the remote end sent Open");
                assert!(stream > self.last_open, "stream id {stream} after {}: ids must increase", self.last_open);
                self.last_open = stream;
                let conn = about.expect("Open outside a call about a client");
                let cb = self.conns.get_mut(&conn).expect("Open for a connection that is no client");
                assert!(cb.link.is_none(), "a second Open for client {conn}");
                assert_eq!(addrs, cb.addrs, "stream {stream}'s Open names other addresses than its client's");
                let (expected, skip) = match cb.entrance.as_ref().expect("a client") {
                    Entrance::Forward { route } => (route.clone(), 0),
                    Entrance::Prefix => match spec_route(&cb.input, cb.eof) {
                        SpecRoute::Route(route) => {
                            let skip = route.len() + 1;
                            (route, skip)
                        }
                        SpecRoute::Default => (String::new(), 0),
                        decision => panic!("Open for client {conn} whose first bytes say {decision:?}"),
                    },
                };
                assert_eq!(route, expected, "stream {stream} opened to the wrong route");
                cb.link = Some((carrier, stream));
                cb.skip = skip;
                let mut s = StreamBook::new(route, window);
                s.conn = Some(conn);
                c.streams.insert(stream, s);
                assert!(opened.replace(stream).is_none(), "two Opens in one call");
            }
            TunnelMsg::Data { stream, bytes } => {
                let s = c.streams.get_mut(&stream).unwrap_or_else(|| panic!("Data for stream {stream}, never opened"));
                assert!(!s.machine_fin && !s.machine_ended, "Data on stream {stream} after its Fin or Reset");
                // A data frame's header and payload are written in one call, before any
                // `Sent` can cover them, so the frame's start is never below what was sent.
                let backlog = start.saturating_sub(driver.conn(carrier).expect("carrier").sent);
                assert!(
                    backlog < carrier_high,
                    "data frame added with {backlog} carrier bytes unsent (high {carrier_high})"
                );
                let len = bytes.len();
                assert!(
                    (s.carried + len) as u64 <= s.credit,
                    "stream {stream}: {} bytes sent with {} bytes of credit",
                    s.carried + len,
                    s.credit
                );
                let conn = s.conn.expect("Data on a stream with no connection");
                let cb = &self.conns[&conn];
                let from = cb.skip + s.carried;
                assert!(
                    cb.input.get(from..from + len) == Some(&bytes[..]),
                    "stream {stream}: Data at offset {} is not what {conn} delivered",
                    s.carried
                );
                s.carried += len;
            }
            TunnelMsg::Window { stream, increment } => {
                let s =
                    c.streams.get_mut(&stream).unwrap_or_else(|| panic!("Window for stream {stream}, never opened"));
                s.granted += u64::from(increment);
                let conn = s.conn.expect("Window on a stream with no connection");
                // The PROXY header is the machine's own: its bytes earn the peer nothing.
                let sent = self.conns[&conn].sent.saturating_sub(s.preamble.len() as u64);
                assert!(
                    s.granted - window <= sent,
                    "stream {stream}: granted {} bytes of credit back, but only {sent} were sent on {conn}",
                    s.granted - window
                );
            }
            TunnelMsg::Fin { stream } => {
                let s = c.streams.get_mut(&stream).unwrap_or_else(|| panic!("Fin for stream {stream}, never opened"));
                assert!(!s.machine_fin, "a second Fin on stream {stream}");
                let cb = &self.conns[&s.conn.expect("Fin on a stream with no connection")];
                assert!(cb.eof, "Fin on stream {stream} before its connection ended");
                let total = cb.input.len() - cb.skip;
                assert_eq!(s.carried, total, "Fin on stream {stream} with bytes not yet carried");
                s.machine_fin = true;
            }
            TunnelMsg::Refuse { stream, .. } | TunnelMsg::Reset { stream, .. } => {
                let refuse = matches!(msg, TunnelMsg::Refuse { .. });
                assert!(!(refuse && local), "the local end sent Refuse");
                let s = c.streams.get_mut(&stream).unwrap_or_else(|| panic!("{msg:?} for a stream never opened"));
                s.machine_ended = true;
            }
            TunnelMsg::Ping { .. } | TunnelMsg::Pong { .. } => {}
            TunnelMsg::Publish { port } => panic!("the local end, with no ports to publish, asked for {port}"),
            TunnelMsg::Published { .. } | TunnelMsg::PublishRefused { .. } => {
                assert!(!local, "the local end sent {msg:?}");
                assert!(c.up, "{msg:?} on carrier {carrier} before it authenticated");
            }
        }
    }

    /// The machine wrote `bytes` of stream data to `conn`.
    fn conn_write(&mut self, conn: ConnId, bytes: &[u8]) {
        let cb =
            self.conns.get(&conn).unwrap_or_else(|| panic!("write to {conn}, which is neither carrier nor stream"));
        let (carrier, stream) = cb.link.unwrap_or_else(|| panic!("{conn} has no stream, but got {:?}", show(bytes)));
        let s = self.carriers.get_mut(&carrier).and_then(|c| c.streams.get_mut(&stream)).expect("a linked stream");
        if !s.preamble.is_empty() && !s.preamble_written {
            assert_eq!(
                show(bytes),
                show(&s.preamble),
                "stream {stream}: the first write to {conn} is not its PROXY header"
            );
            s.preamble_written = true;
            return;
        }
        let end = s.written + bytes.len();
        assert!(
            s.to_conn.get(s.written..end) == Some(bytes),
            "stream {stream}: wrote {:?} to {conn} at offset {}, but the peer sent {:?} there",
            show(bytes),
            s.written,
            show(s.to_conn.get(s.written..).unwrap_or_default())
        );
        s.written = end;
        assert!(end as u64 <= s.granted, "stream {stream}: wrote {end} bytes, more than the {} granted", s.granted);
    }

    /// The machine shut `conn`'s write side in an orderly way: the peer's `Fin`, delivered.
    fn conn_shut(&mut self, conn: ConnId) {
        let Some((carrier, stream)) = self.conns.get(&conn).and_then(|cb| cb.link) else { return };
        let s = &self.carriers[&carrier].streams[&stream];
        assert!(s.peer_fin, "stream {stream}: {conn} shut without the peer's Fin");
        assert!(s.preamble.is_empty() || s.preamble_written, "stream {stream}: {conn} shut before its PROXY header");
        assert_eq!(s.written, s.to_conn.len(), "stream {stream}: {conn} shut with bytes before the Fin unwritten");
    }

    fn event<M: TunnelEnd>(
        &mut self,
        driver: &Driver<M>,
        event: &TunnelEvent,
        connects: &mut VecDeque<ConnId>,
        opened: &mut Option<StreamId>,
    ) {
        match event {
            TunnelEvent::CarrierUp { peer } => {
                let c = self.carrier_to(*peer).expect("CarrierUp for no carrier");
                if self.is_local() {
                    let c = self.carriers.get_mut(&c).expect("carrier");
                    assert!(c.peer_welcomed, "CarrierUp before Welcome");
                    // Mutual authentication: the remote end proved it has the secret
                    // (its Challenge verified, and was answered) before the local end
                    // trusts it with any client's bytes.
                    assert!(c.responded, "the local end came up without the remote end proving it has the secret");
                    c.up = true;
                }
            }
            TunnelEvent::StreamOpened { stream, route, peer, client } => match &self.end {
                End::Local { .. } => {
                    assert_eq!(opened.take(), Some(*stream), "StreamOpened {stream} without its Open");
                    let conn = self.conns.iter().find(|(_, cb)| cb.link.is_some_and(|(_, s)| s == *stream));
                    let conn = *conn.expect("opened stream has a client").0;
                    assert_eq!(driver.conn(conn).expect("client").addr, *peer, "StreamOpened names another client");
                    assert_eq!(*client, Some(*peer), "StreamOpened's client is not its peer");
                }
                End::Remote { routes } => {
                    let carrier = self.carrier_to(*peer).expect("StreamOpened for no carrier");
                    let conn = connects.pop_front().expect("StreamOpened without a Connect");
                    let target = routes.target(route).expect("a stream opened to a route not in the allowlist");
                    assert_eq!(driver.conn(conn).expect("target").addr, target, "{conn} is not {route}'s target");
                    let s = self.carriers.get_mut(&carrier).and_then(|c| c.streams.get_mut(stream));
                    let s = s.expect("StreamOpened for a stream the peer did not open");
                    assert_eq!(&s.route, route, "stream {stream} opened to another route than asked");
                    assert_eq!(s.client, *client, "StreamOpened names another client than the Open");
                    assert!(s.conn.replace(conn).is_none(), "stream {stream} opened twice");
                    self.conns.get_mut(&conn).expect("target").link = Some((carrier, *stream));
                }
            },
            _ => {}
        }
    }

    /// The newest carrier with `peer` at the other end. (Not "the open one": the driver has
    /// seen the whole batch of outputs, and the carrier may close later in it.)
    fn carrier_to(&self, peer: SocketAddr) -> Option<ConnId> {
        self.carriers.iter().rev().find(|(_, c)| c.peer == peer).map(|(id, _)| *id)
    }

    /// Checks the end's state between calls. See the module documentation.
    pub fn settle<M: TunnelEnd>(&self, driver: &Driver<M>) {
        let live = |id: ConnId| driver.conn(id).is_some_and(|c| c.is_live());
        for (&id, c) in &self.carriers {
            if live(id) {
                assert!(!c.inn.is_broken(), "carrier {id} still open after the peer broke the protocol");
                assert!(!c.refused, "carrier {id} still open after the machine refused it");
                for (stream, rule) in &c.broken_rules {
                    let reused = rule.starts_with("an Open");
                    let gone = !reused && c.streams.get(stream).is_some_and(|s| s.machine_ended);
                    assert!(gone, "carrier {id} still open after the peer sent {rule} on stream {stream}");
                }
            }
        }
        for (&conn, cb) in &self.conns {
            let Some(dc) = driver.conn(conn).filter(|c| c.is_live()) else { continue };
            let Some((carrier, stream)) = cb.link else {
                match (&self.end, &cb.entrance) {
                    (End::Local { .. }, Some(Entrance::Prefix)) => {
                        let decision = spec_route(&cb.input, cb.eof);
                        assert_eq!(decision, SpecRoute::Undecided, "client {conn} is still waiting for its route");
                    }
                    _ => panic!("{conn} is open with no stream"),
                }
                continue;
            };
            assert!(live(carrier), "stream {stream}'s connection {conn} is open after its carrier closed");
            let s = &self.carriers[&carrier].streams[&stream];
            assert!(!s.machine_ended, "stream {stream} was reset or refused, but {conn} is still open");
            assert!(!s.peer_ended, "the peer reset stream {stream}, but {conn} is still open");
            if dc.phase == Phase::Open && !dc.read_shut {
                let pending = cb.input.len() - cb.skip - s.carried; // Data checks keep carried ≤ input
                let buffer = self.mux.stream_buffer;
                assert!(
                    dc.paused || pending < buffer,
                    "stream {stream}: {pending} bytes waiting and {conn} not paused"
                );
                assert!(
                    !dc.paused || pending > buffer / 2,
                    "stream {stream}: {conn} paused with only {pending} waiting"
                );
            }
        }
        let machine = &driver.machine;
        let any_carrier = self.carriers.keys().any(|&id| live(id));
        if !machine.authenticated() || !any_carrier {
            assert_eq!(machine.open_streams(), 0, "streams open with no authenticated carrier");
        }
        if self.is_local() && !machine.authenticated() {
            let clients: Vec<_> = self.conns.keys().filter(|&&id| live(id)).collect();
            assert!(clients.is_empty(), "clients {clients:?} still open while the local end is not up");
        }
        if let Some(first) = self.obligations(driver).into_iter().min_by_key(|o| o.at) {
            let next = machine.poll_timeout();
            assert!(
                next.is_some_and(|t| t <= first.at),
                "the next deadline is {next:?}, after {} when {} is due",
                first.at,
                first.what
            );
        }
    }

    /// Checks, after `handle_timeout`, that nothing due by now is still pending.
    pub fn after_timeout<M: TunnelEnd>(&self, driver: &Driver<M>) {
        for o in self.obligations(driver) {
            assert!(o.at > driver.now(), "at {}: {} was due at {}", driver.now(), o.what, o.at);
        }
    }

    /// What the end must do, and by when.
    fn obligations<M: TunnelEnd>(&self, driver: &Driver<M>) -> Vec<Obligation> {
        let mut due = Vec::new();
        let phase = |id: ConnId| driver.conn(id).map(|c| c.phase);
        for (&id, c) in &self.carriers {
            match phase(id) {
                Some(Phase::Connecting) => due.push(Obligation {
                    at: c.connect_at + self.connect_timeout,
                    what: format!("giving up the carrier connect {id}"),
                }),
                Some(Phase::Open) => {
                    let opened = c.opened_at.expect("an open carrier");
                    due.push(Obligation {
                        at: c.last_heard + self.dead_after,
                        what: format!("closing carrier {id}, silent since {}", c.last_heard),
                    });
                    if !c.up {
                        due.push(Obligation {
                            at: opened + self.auth_timeout,
                            what: format!("closing carrier {id}, not authenticated since {opened}"),
                        });
                    }
                }
                _ => {}
            }
        }
        for (&id, cb) in &self.conns {
            match (phase(id), &self.end) {
                (Some(Phase::Connecting), End::Remote { .. }) => due.push(Obligation {
                    at: cb.since + self.connect_timeout,
                    what: format!("giving up the connect to target {id}"),
                }),
                (Some(Phase::Open), End::Local { prefix_timeout, .. }) if cb.link.is_none() => due.push(Obligation {
                    at: cb.since + *prefix_timeout,
                    what: format!("refusing client {id}, which sent no route prefix"),
                }),
                _ => {}
            }
        }
        due
    }
}

fn show(bytes: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(bytes)
}
