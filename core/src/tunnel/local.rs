//! The tunnel's local end: accepts clients, keeps one authenticated carrier to the remote
//! end, and multiplexes every client onto it as a stream.
//!
//! Entrances (listeners) are of two kinds: a *prefix* entrance reads the route from the
//! client's first bytes (`9090:time`), a *forward* entrance (`--forward 7090=9090`, like
//! `ssh -L`) sends every byte to a fixed route.
//!
//! The carrier is opened at start and re-opened after any loss with jittered exponential
//! backoff (100 ms doubling, capped at 5 s; reset once a carrier authenticates). While it is
//! down, a new client gets `error: tunnel is down (...)` and is closed; streams open when the
//! carrier was lost are aborted, since their bytes in flight are gone.
//!
//! **Exposing** (the reverse tunnel, `tunnel expose`). With [`LocalConfig::publish`] set, the
//! local end says protocol version 3 in its `Hello`, asks the remote end to publish each
//! port once the carrier is up, and logs each answer. Visitors of a published port arrive
//! as streams the remote end opens (ids with the top bit set; the route is the port), which
//! this end connects to the port's local service; a service that cannot be reached refuses
//! the stream, and the visitor gets the reason as an `error:` line. After a reconnect the
//! ports are asked for again. The local service's address never crosses the carrier.
//!
//! Every stream's `Open` carries the client's address and the address it connected to
//! ([`StreamAddrs`]), for routes whose targets want a PROXY protocol header. The second is
//! the one the driver passes to [`Machine::accept_at`]; an embedder that calls plain
//! [`Machine::accept`] sends the unspecified address of the client's family, port 0.

use crate::backoff::Backoff;
use crate::id::{ConnId, ListenerId};
use crate::machine::{CloseHow, Input, Machine, NetError, Output, OutputQueue, Refusal};
use crate::service::error_line;
use crate::time::{Clock, Deadlines, Instant};
use crate::tunnel::auth::Secret;
use crate::tunnel::carrier::{Carrier, HeartbeatConfig, Liveness};
use crate::tunnel::mux::MuxConfig;
use crate::tunnel::prefix::{decide, decide_at_end, PrefixDecision, PREFIX_CAP};
use crate::tunnel::TunnelEvent;
use crate::wire::tunnel::{
    is_valid_route, StreamAddrs, StreamId, TunnelMsg, ADDRS_VERSION, PROOF_LEN, PUBLISH_VERSION, REMOTE_STREAMS,
};
use crate::Env;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Default address of the local end's prefix entrance.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7000";

/// How a listener of the local end picks routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entrance {
    /// From the first bytes the client sends (`9090:…`), else the default route.
    Prefix,
    /// Always this route; bytes pass untouched (a static forward).
    Forward {
        /// The route name on the remote end.
        route: String,
    },
}

/// Settings of the local end.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The remote end's carrier address.
    pub remote: SocketAddr,
    /// The shared secret.
    pub secret: Secret,
    /// What each listener is for.
    pub entrances: BTreeMap<ListenerId, Entrance>,
    /// How long a prefix entrance waits for the route prefix.
    pub prefix_timeout: Duration,
    /// Carrier heartbeat.
    pub heartbeat: HeartbeatConfig,
    /// First reconnect delay.
    pub backoff_first: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Give up a carrier connect after this long and try again (with backoff). Short,
    /// because a lost SYN is retried sooner this way than by TCP's own 1 s / 3 s schedule,
    /// which is what lets a restarted remote end be found quickly.
    pub connect_timeout: Duration,
    /// Give up authenticating a connected carrier after this long.
    pub handshake_timeout: Duration,
    /// Stream flow control.
    pub mux: MuxConfig,
    /// Most clients at once (streams plus clients still sending their prefix).
    pub max_clients: usize,
    /// Ports to publish at the remote end → the local service each one's visitors reach.
    pub publish: BTreeMap<u16, SocketAddr>,
    /// A published port's local service must accept within this long.
    pub service_timeout: Duration,
}

impl LocalConfig {
    /// Defaults for everything but the remote address, the secret and the entrances.
    pub fn new(remote: SocketAddr, secret: Secret, entrances: BTreeMap<ListenerId, Entrance>) -> LocalConfig {
        LocalConfig {
            remote,
            secret,
            entrances,
            prefix_timeout: Duration::from_secs(3),
            heartbeat: HeartbeatConfig::default(),
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            mux: MuxConfig::default(),
            max_clients: 16 * 1024,
            publish: BTreeMap::new(),
            service_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
enum Link {
    Down { retry_at: Instant, reason: String },
    Connecting { conn: ConnId, deadline: Instant },
    Handshake { carrier: Box<Carrier>, nonce: [u8; PROOF_LEN], deadline: Instant, proved: bool },
    Up { carrier: Box<Carrier> },
}

#[derive(Debug)]
struct Waiting {
    addrs: StreamAddrs,
    first: BytesMut,
}

/// The local end of the tunnel, as a [`Machine`].
#[derive(Debug)]
pub struct TunnelLocal {
    config: LocalConfig,
    env: Env,
    clock: Clock,
    link: Link,
    /// Consecutive carrier failures since the last authenticated carrier.
    backoff: Backoff,
    waiting: BTreeMap<ConnId, Waiting>,
    /// Prefix timeouts of waiting clients, and connect timeouts of `services`.
    prefix_deadlines: Deadlines<ConnId>,
    next_stream: StreamId,
    /// The last stream id the remote end opened on this carrier.
    last_remote_stream: StreamId,
    /// Connections to local services, for visitors of published ports.
    services: std::collections::BTreeSet<ConnId>,
    /// Forwards added at run time whose listener is not bound yet, and their addresses.
    opening: BTreeMap<ListenerId, SocketAddr>,
    out: OutputQueue<TunnelEvent>,
}

impl TunnelLocal {
    /// A local end that starts connecting to the remote at `now`.
    pub fn new(env: Env, now: Instant, config: LocalConfig) -> TunnelLocal {
        let backoff = Backoff::new(config.backoff_first, config.backoff_max);
        let mut local = TunnelLocal {
            config,
            env,
            clock: Clock::new(now),
            link: Link::Down { retry_at: now, reason: String::from("not connected yet") },
            backoff,
            waiting: BTreeMap::new(),
            prefix_deadlines: Deadlines::new(),
            next_stream: 1,
            last_remote_stream: REMOTE_STREAMS,
            services: std::collections::BTreeSet::new(),
            opening: BTreeMap::new(),
            out: OutputQueue::default(),
        };
        local.connect();
        local
    }

    /// Adds a static forward while the end runs (a config reload): asks the driver to
    /// listen on `addr` as `listener` (an id not open now, and never one used before), whose
    /// clients then go to `route` as a `--forward` does. The outcome is reported as
    /// [`TunnelEvent::ForwardOpened`] or [`TunnelEvent::ForwardFailed`].
    pub fn open_forward(&mut self, listener: ListenerId, addr: SocketAddr, route: String) {
        self.config.entrances.insert(listener, Entrance::Forward { route });
        self.opening.insert(listener, addr);
        self.out.push(Output::Listen { listener, addr });
    }

    /// Removes the static forward on `listener` (a config reload): it takes no more
    /// clients, and the streams its clients opened carry on.
    pub fn close_forward(&mut self, listener: ListenerId) {
        if let Some(Entrance::Forward { .. }) = self.config.entrances.get(&listener) {
            self.config.entrances.remove(&listener);
            self.opening.remove(&listener);
            self.out.push(Output::Unlisten { listener });
        }
    }

    /// The answer to an [`TunnelLocal::open_forward`].
    fn forward_listened(&mut self, listener: ListenerId, result: Result<SocketAddr, NetError>) {
        let Some(addr) = self.opening.remove(&listener) else { return };
        let Some(Entrance::Forward { route }) = self.config.entrances.get(&listener).cloned() else { return };
        match result {
            Ok(addr) => self.out.event(TunnelEvent::ForwardOpened { addr, route }),
            Err(error) => {
                self.config.entrances.remove(&listener);
                self.out.event(TunnelEvent::ForwardFailed { addr, route, reason: error.to_string() });
            }
        }
    }

    /// True while an authenticated carrier is up.
    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Open streams on the carrier.
    pub fn streams(&self) -> usize {
        match &self.link {
            Link::Up { carrier } => carrier.mux.len(),
            _ => 0,
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn connect(&mut self) {
        let conn = self.env.conn_ids.next();
        self.out.push(Output::Connect { conn, to: self.config.remote });
        self.out
            .event(TunnelEvent::CarrierConnecting { remote: self.config.remote, attempt: self.backoff.failures() + 1 });
        self.link = Link::Connecting { conn, deadline: self.now() + self.config.connect_timeout };
    }

    fn carrier_conn(&self) -> Option<ConnId> {
        match &self.link {
            Link::Down { .. } => None,
            Link::Connecting { conn, .. } => Some(*conn),
            Link::Handshake { carrier, .. } | Link::Up { carrier } => Some(carrier.conn()),
        }
    }

    /// Drops the carrier (closing it with `how` if it is still open), aborts its streams,
    /// and schedules the next attempt.
    fn carrier_lost(&mut self, reason: String, how: Option<CloseHow>) {
        let link = std::mem::replace(&mut self.link, Link::Down { retry_at: Instant::MAX, reason: reason.clone() });
        let conn = match link {
            Link::Down { .. } => return,
            Link::Connecting { conn, .. } => conn,
            Link::Handshake { carrier, .. } => carrier.conn(),
            Link::Up { mut carrier } => {
                for conn in carrier.mux.abort_all(&mut self.out) {
                    self.services.remove(&conn);
                    self.prefix_deadlines.cancel(conn);
                }
                carrier.conn()
            }
        };
        if let Some(how) = how {
            self.out.close(conn, how);
        }
        let waiting: Vec<ConnId> = self.waiting.keys().copied().collect();
        for client in waiting {
            self.refuse_client(client, &format!("tunnel carrier lost: {reason}"));
        }
        let delay = self.backoff.next_delay(&mut self.env.rng);
        self.out.event(TunnelEvent::CarrierDown { reason: reason.clone(), retry_in: delay });
        self.link = Link::Down { retry_at: self.now() + delay, reason };
    }

    fn refuse_client(&mut self, conn: ConnId, reason: &str) {
        let peer = self.waiting.remove(&conn).map(|w| w.addrs.client);
        self.prefix_deadlines.cancel(conn);
        self.out.write(conn, error_line(reason));
        self.out.close(conn, CloseHow::Graceful);
        self.out.event(TunnelEvent::ClientRefused { peer, reason: reason.to_owned() });
    }

    fn open_stream(&mut self, conn: ConnId, addrs: StreamAddrs, route: String, first: BytesMut, eof: bool) {
        // Prefix routes are digits and always valid; a static forward's route comes from the
        // embedder's configuration, and a bad one must cost that client, not the process.
        if !is_valid_route(route.as_bytes()) {
            return self.refuse_client(conn, &format!("invalid route name {route:?} in the forward's configuration"));
        }
        let Link::Up { carrier } = &mut self.link else {
            return self.refuse_client(conn, "tunnel is down");
        };
        let stream = self.next_stream;
        // Ids with the top bit set are the remote end's.
        self.next_stream = (self.next_stream + 1) % REMOTE_STREAMS;
        self.next_stream = self.next_stream.max(1);
        carrier.mux.add(stream, conn, true);
        carrier.mux.send(&TunnelMsg::Open { stream, route: route.clone(), addrs: Some(addrs) }, &mut self.out);
        if !first.is_empty() {
            carrier.mux.conn_received(conn, first, &mut self.out);
        }
        if eof {
            carrier.mux.conn_read_closed(conn, &mut self.out);
        }
        self.out.event(TunnelEvent::StreamOpened { stream, route, peer: addrs.client, client: Some(addrs.client) });
    }

    /// Applies a prefix decision for a waiting client.
    fn route_waiting(&mut self, conn: ConnId, decision: PrefixDecision, eof: bool) {
        let (route, skip) = match decision {
            PrefixDecision::Undecided => return,
            PrefixDecision::TooLong => return self.refuse_client(conn, "route prefix too long"),
            PrefixDecision::Route { route, consumed } => (route, consumed),
            PrefixDecision::Default => (String::new(), 0),
        };
        let Some(mut waiting) = self.waiting.remove(&conn) else { return };
        self.prefix_deadlines.cancel(conn);
        let first = waiting.first.split_off(skip);
        self.open_stream(conn, waiting.addrs, route, first, eof);
    }

    fn client_received(&mut self, conn: ConnId, bytes: BytesMut) {
        if let Some(waiting) = self.waiting.get_mut(&conn) {
            waiting.first.extend_from_slice(&bytes);
            let decision = decide(&waiting.first[..waiting.first.len().min(PREFIX_CAP)]);
            return self.route_waiting(conn, decision, false);
        }
        if let Link::Up { carrier } = &mut self.link {
            carrier.mux.conn_received(conn, bytes, &mut self.out);
        }
    }

    fn client_read_closed(&mut self, conn: ConnId) {
        if let Some(waiting) = self.waiting.get(&conn) {
            let decision = decide_at_end(&waiting.first[..waiting.first.len().min(PREFIX_CAP)]);
            return self.route_waiting(conn, decision, true);
        }
        if let Link::Up { carrier } = &mut self.link {
            carrier.mux.conn_read_closed(conn, &mut self.out);
        }
    }

    fn client_closed(&mut self, conn: ConnId, reason: &NetError) {
        if self.waiting.remove(&conn).is_some() {
            self.prefix_deadlines.cancel(conn);
            return;
        }
        if let Link::Up { carrier } = &mut self.link {
            carrier.mux.reset_conn(conn, &reason.to_string(), &mut self.out);
        }
    }

    fn carrier_received(&mut self, bytes: BytesMut) {
        let now = self.now();
        // What to say if this read breaks the handshake: a TLS record means a TLS peer.
        let tls_peer = match self.link {
            Link::Handshake { .. } => crate::tls::tls_instead(&bytes, "remote end"),
            _ => None,
        };
        match &mut self.link {
            Link::Handshake { carrier, .. } | Link::Up { carrier } => carrier.receive(now, bytes),
            _ => return,
        }
        loop {
            let next = match &mut self.link {
                Link::Handshake { carrier, .. } | Link::Up { carrier } => carrier.next_message(),
                _ => return,
            };
            match next {
                None => return,
                Some(Ok(msg)) => self.carrier_message(msg),
                Some(Err(error)) => {
                    let reason = tls_peer.unwrap_or_else(|| format!("protocol error from remote: {error}"));
                    return self.carrier_lost(reason, Some(CloseHow::Abort));
                }
            }
        }
    }

    fn carrier_message(&mut self, msg: TunnelMsg) {
        match (&mut self.link, msg) {
            (Link::Handshake { carrier, nonce, proved, .. }, TunnelMsg::Challenge { nonce: remote_nonce, proof }) => {
                if !self.config.secret.verify_remote(nonce, &remote_nonce, &proof) {
                    let reason =
                        "the remote end could not prove it has our secret: the two ends have different secrets";
                    let refusal = "your proof does not match our secret: the two ends have different secrets";
                    carrier.mux.send(&TunnelMsg::Refused { reason: refusal.into() }, &mut self.out);
                    self.out.event(TunnelEvent::AuthFailed { peer: self.config.remote, reason: reason.into() });
                    return self.carrier_lost(reason.into(), Some(CloseHow::Graceful));
                }
                let proof = self.config.secret.local_proof(&remote_nonce, nonce);
                carrier.mux.send(&TunnelMsg::Response { proof }, &mut self.out);
                *proved = true;
            }
            // Only once the remote end proved it has the secret (`proved`): an impostor that
            // skips the challenge gets "unexpected message" below, not our clients' bytes.
            (Link::Handshake { proved: true, .. }, TunnelMsg::Welcome) => {
                let Link::Handshake { carrier, .. } =
                    std::mem::replace(&mut self.link, Link::Down { retry_at: Instant::MAX, reason: String::new() })
                else {
                    unreachable!("matched above")
                };
                self.link = Link::Up { carrier };
                self.backoff.reset();
                self.last_remote_stream = REMOTE_STREAMS;
                self.out.event(TunnelEvent::CarrierUp { peer: self.config.remote });
                if let Link::Up { carrier } = &mut self.link {
                    for &port in self.config.publish.keys() {
                        carrier.mux.send(&TunnelMsg::Publish { port }, &mut self.out);
                    }
                }
            }
            (Link::Up { .. }, TunnelMsg::Published { port }) if self.config.publish.contains_key(&port) => {
                let service = self.config.publish.get(&port).copied();
                self.out.event(TunnelEvent::Published { port, peer: self.config.remote, service })
            }
            (Link::Up { .. }, TunnelMsg::PublishRefused { port, reason })
                if self.config.publish.contains_key(&port) =>
            {
                self.out.event(TunnelEvent::PublishRefused { port, peer: self.config.remote, reason })
            }
            (Link::Up { .. }, TunnelMsg::Open { stream, route, addrs }) if !self.config.publish.is_empty() => {
                self.visitor(stream, route, addrs)
            }
            (_, TunnelMsg::Refused { reason }) => {
                let reason = format!("the remote end refused us: {reason}");
                self.out.event(TunnelEvent::AuthFailed { peer: self.config.remote, reason: reason.clone() });
                self.carrier_lost(reason, Some(CloseHow::Abort));
            }
            (Link::Up { carrier } | Link::Handshake { carrier, .. }, TunnelMsg::Ping { token }) => {
                carrier.pong(token, &mut self.out)
            }
            (_, TunnelMsg::Pong { .. }) => {}
            (
                Link::Up { carrier },
                msg @ (TunnelMsg::Data { .. }
                | TunnelMsg::Window { .. }
                | TunnelMsg::Fin { .. }
                | TunnelMsg::Refuse { .. }
                | TunnelMsg::Reset { .. }),
            ) => {
                if let Err(violation) = carrier.mux.receive(msg, &mut self.out) {
                    self.carrier_lost(format!("protocol error from remote: {violation}"), Some(CloseHow::Abort));
                }
            }
            (_, msg) => {
                let reason = format!("unexpected message from remote: {msg:?}");
                self.carrier_lost(reason, Some(CloseHow::Abort));
            }
        }
    }

    /// The remote end opened a stream for a visitor of a published port: connect it to the
    /// port's local service.
    fn visitor(&mut self, stream: StreamId, route: String, addrs: Option<StreamAddrs>) {
        if stream & REMOTE_STREAMS == 0 || stream <= self.last_remote_stream {
            let reason = format!("protocol error from remote: stream id {stream:#x} is not a new remote-end id");
            return self.carrier_lost(reason, Some(CloseHow::Abort));
        }
        self.last_remote_stream = stream;
        let service = route.parse::<u16>().ok().and_then(|port| self.config.publish.get(&port)).copied();
        let at_cap = self.waiting.len() + self.streams() >= self.config.max_clients;
        let Link::Up { carrier } = &mut self.link else { return };
        let refusal = match service {
            _ if !carrier.mux.has_room() || at_cap => Err(String::from("too many streams at the exposing end")),
            None => Err(format!("port {route} is not published by this exposing end")),
            Some(service) => Ok(service),
        };
        let service = match refusal {
            Ok(service) => service,
            Err(reason) => {
                carrier.mux.refuse(stream, &reason, &mut self.out);
                return self.out.event(TunnelEvent::StreamRefused { stream, reason });
            }
        };
        let conn = self.env.conn_ids.next();
        carrier.mux.add(stream, conn, false);
        self.services.insert(conn);
        self.prefix_deadlines.set(conn, self.now() + self.config.service_timeout);
        self.out.push(Output::Connect { conn, to: service });
        let peer = addrs.map_or(self.config.remote, |a| a.client);
        self.out.event(TunnelEvent::StreamOpened { stream, route, peer, client: addrs.map(|a| a.client) });
    }

    /// A published port's local service could not be reached: the visitor gets `reason`.
    fn service_failed(&mut self, conn: ConnId, reason: String) {
        self.services.remove(&conn);
        self.prefix_deadlines.cancel(conn);
        if let Link::Up { carrier } = &mut self.link {
            carrier.mux.refuse_conn(conn, &reason, &mut self.out);
        }
    }

    /// Reports streams the multiplexer has forgotten. Called at the end of every mutating
    /// call, so no ended stream goes unreported.
    fn settle(&mut self) {
        if let Link::Up { carrier } = &mut self.link {
            while let Some(ended) = carrier.mux.pop_ended() {
                if self.services.remove(&ended.conn) {
                    self.prefix_deadlines.cancel(ended.conn);
                }
                self.out.event(ended.into());
            }
        }
    }

    fn carrier_input(&mut self, input: Input<'_>) {
        match input {
            Input::Connected { conn, .. } => {
                let Link::Connecting { .. } = self.link else { return };
                let now = self.now();
                let mut carrier = Box::new(Carrier::new(conn, now, self.config.heartbeat, self.config.mux.clone()));
                let mut nonce = [0u8; PROOF_LEN];
                self.env.rng.fill_bytes(&mut nonce);
                // The oldest version with what this end needs, so an older remote end still
                // takes a plain local end, and refuses an exposing one by name.
                let version = if self.config.publish.is_empty() { ADDRS_VERSION } else { PUBLISH_VERSION };
                carrier.mux.send(&TunnelMsg::Hello { version, nonce }, &mut self.out);
                let deadline = now + self.config.handshake_timeout;
                self.link = Link::Handshake { carrier, nonce, deadline, proved: false };
            }
            Input::ConnectFailed { error, .. } => self.carrier_lost(format!("cannot connect: {error}"), None),
            Input::Received { bytes, .. } => self.carrier_received(bytes),
            Input::ReadClosed { .. } => self.carrier_lost("remote closed the carrier".into(), Some(CloseHow::Abort)),
            Input::Closed { reason, .. } => self.carrier_lost(format!("carrier failed: {reason}"), None),
            Input::Sent { bytes, .. } => {
                if let Link::Handshake { carrier, .. } | Link::Up { carrier } = &mut self.link {
                    carrier.mux.carrier_sent(bytes, &mut self.out);
                }
            }
            Input::Datagram { .. } | Input::Listened { .. } => {}
        }
    }
}

impl Machine for TunnelLocal {
    type Event = TunnelEvent;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        let unspecified = match peer.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.accept_at(now, listener, peer, SocketAddr::new(unspecified, 0))
    }

    fn accept_at(&mut self, now: Instant, id: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal> {
        self.clock.advance(now);
        let addrs = StreamAddrs { client: peer, entrance: at };
        let entrance = self.config.entrances.get(&id).cloned().ok_or(Refusal::UnknownListener(id))?;
        if self.waiting.len() + self.streams() >= self.config.max_clients {
            return Err(Refusal::AtCapacity { limit: self.config.max_clients });
        }
        let conn = self.env.conn_ids.next();
        match (&self.link, entrance) {
            (Link::Up { carrier }, _) if !carrier.mux.has_room() => {
                self.refuse_client(conn, "too many streams on the tunnel")
            }
            (Link::Up { .. }, Entrance::Forward { route }) => {
                self.open_stream(conn, addrs, route, BytesMut::new(), false)
            }
            (Link::Up { .. }, Entrance::Prefix) => {
                self.waiting.insert(conn, Waiting { addrs, first: BytesMut::new() });
                self.prefix_deadlines.set(conn, self.now() + self.config.prefix_timeout);
            }
            (Link::Down { reason, .. }, _) => {
                let reason = format!("tunnel is down ({reason}); reconnecting");
                self.refuse_client(conn, &reason)
            }
            _ => self.refuse_client(conn, "tunnel is down (connecting to the remote end)"),
        }
        self.settle();
        Ok(conn)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.clock.advance(now);
        if let Input::Listened { listener, result } = input {
            return self.forward_listened(listener, result);
        }
        let Some(conn) = input.conn() else { return };
        if Some(conn) == self.carrier_conn() {
            self.carrier_input(input);
        } else {
            match input {
                Input::Connected { .. } if self.services.contains(&conn) => {
                    self.prefix_deadlines.cancel(conn);
                    if let Link::Up { carrier } = &mut self.link {
                        carrier.mux.conn_connected(conn, &mut self.out);
                    }
                }
                Input::ConnectFailed { error, .. } if self.services.contains(&conn) => {
                    let reason = format!("cannot reach the published service: {error}");
                    self.service_failed(conn, reason);
                }
                Input::Received { bytes, .. } => self.client_received(conn, bytes),
                Input::ReadClosed { .. } => self.client_read_closed(conn),
                Input::Closed { reason, .. } => self.client_closed(conn, &reason),
                Input::Sent { bytes, .. } => {
                    if let Link::Up { carrier } = &mut self.link {
                        carrier.mux.conn_sent(conn, bytes, &mut self.out);
                    }
                }
                _ => {}
            }
        }
        self.settle();
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        while let Some(conn) = self.prefix_deadlines.pop_expired(now) {
            if self.services.contains(&conn) {
                // The connect is still in progress at the driver: give it up.
                self.out.close(conn, CloseHow::Abort);
                self.service_failed(conn, "the published service did not accept in time".into());
                continue;
            }
            let secs = self.config.prefix_timeout.as_secs_f64();
            self.refuse_client(conn, &format!("no route prefix within {secs} s (send e.g. 9090:time)"));
        }
        // The heartbeat runs first (it may send a ping); what it finds decides the rest.
        let liveness = match &mut self.link {
            Link::Handshake { carrier, .. } | Link::Up { carrier } => carrier.on_timeout(now, &mut self.out),
            _ => Liveness::Alive,
        };
        match &self.link {
            Link::Down { retry_at, .. } if now >= *retry_at => self.connect(),
            Link::Connecting { deadline, .. } if now >= *deadline => {
                self.carrier_lost("connect timed out".into(), Some(CloseHow::Abort))
            }
            Link::Handshake { deadline, .. } if now >= *deadline => {
                self.carrier_lost("authentication timed out".into(), Some(CloseHow::Abort))
            }
            Link::Handshake { .. } | Link::Up { .. } if liveness == Liveness::Dead => {
                let secs = self.config.heartbeat.dead_after.as_secs_f64();
                self.carrier_lost(format!("remote silent for {secs} s"), Some(CloseHow::Abort));
            }
            _ => {}
        }
        self.settle();
    }

    fn poll_output(&mut self) -> Option<Output<TunnelEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Down { retry_at, .. } => *retry_at,
            Link::Connecting { deadline, .. } => *deadline,
            Link::Handshake { carrier, deadline, .. } => carrier.deadline().min(*deadline),
            Link::Up { carrier } => carrier.deadline(),
        };
        Some(self.prefix_deadlines.next().map_or(link, |p| p.min(link)))
    }
}
