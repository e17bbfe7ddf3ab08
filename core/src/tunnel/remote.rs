//! The tunnel's remote end: accepts carriers from local ends, authenticates them, and
//! connects each stream to its route's target.
//!
//! Routes are an allowlist: a stream names a route, and the remote connects only to the
//! address configured for that name (or for the default route). It never connects
//! anywhere a client asks: it is not an open proxy.
//!
//! A route may tell its target who the client is: with [`Route::proxy`] set, the first
//! bytes the remote end writes to each of its connections are a PROXY protocol header
//! ([`crate::wire::proxy`]) with the client's address and the address it connected to, as
//! the local end sent them in the stream's `Open`; the stream's bytes follow unchanged.
//!
//! **Publishing** (the reverse tunnel). With [`RemoteConfig::publish`] set, a carrier of
//! protocol version 3 may ask for ports in the allowed range (`Publish`); the remote end
//! listens on each ([`Output::Listen`], at [`PublishConfig::ip`]) and answers `Published`, or
//! `PublishRefused` with the reason (outside the range, taken by another carrier, the bind
//! failed, a limit). Each visitor of a published port becomes a stream the remote end opens
//! toward that carrier (ids with [`REMOTE_STREAMS`] set; the route is the port in decimal),
//! and the exposing end connects it to its own service. When the carrier ends, its ports
//! close and their visitors are reset; a reconnecting exposing end publishes them again.
//! Publish listeners get ids from [`PUBLISH_LISTENERS`] up: carrier listeners use ids below.
//!
//! Limits: at most `max_carriers` carriers (more are refused at accept); a carrier must
//! authenticate within `auth_timeout`; at most `mux.max_streams` streams per carrier (more
//! are refused with a reason); a target that does not connect within `connect_timeout`
//! refuses its stream.

use crate::id::{ConnId, ListenerId};
use crate::machine::{CloseHow, Input, Machine, Output, OutputQueue, Refusal};
use crate::time::{Clock, Deadlines, Instant};
use crate::tunnel::auth::Secret;
use crate::tunnel::carrier::{Carrier, HeartbeatConfig, Liveness};
use crate::tunnel::mux::MuxConfig;
use crate::tunnel::TunnelEvent;
use crate::wire::proxy::{self, ProxyAddrs, ProxyVersion};
use crate::wire::tunnel::{
    StreamAddrs, StreamId, TunnelMsg, MIN_VERSION, PROOF_LEN, PUBLISH_VERSION, REMOTE_STREAMS, VERSION,
};
use crate::Env;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// The first listener id the remote end gives the ports it publishes; ids from here to
/// `u16::MAX` are its own, so an embedder's carrier listeners use ids below.
pub const PUBLISH_LISTENERS: u16 = 0x8000;

/// What exposing ends may publish at this remote end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// The ports that may be published (`--allow-publish 12000-13000`).
    pub ports: RangeInclusive<u16>,
    /// The address published ports listen on (the carrier listener's, by default in the CLI).
    pub ip: IpAddr,
    /// Most ports one carrier may have published (or asked for) at once.
    pub max_per_carrier: usize,
    /// Most ports published over all carriers at once.
    pub max_total: usize,
}

impl PublishConfig {
    /// Ports `ports` on `ip`, with the default limits (64 per carrier, 1024 in all).
    pub fn new(ports: RangeInclusive<u16>, ip: IpAddr) -> PublishConfig {
        PublishConfig { ports, ip, max_per_carrier: 64, max_total: 1024 }
    }
}

/// Default address of the remote end's carrier listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";

/// Where one route's streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The target address.
    pub target: SocketAddr,
    /// Write a PROXY protocol header of this version to the target before the stream's
    /// bytes; `None`: the stream's bytes only.
    pub proxy: Option<ProxyVersion>,
}

impl From<SocketAddr> for Route {
    fn from(target: SocketAddr) -> Route {
        Route { target, proxy: None }
    }
}

/// The remote end's allowlist: route name → target address (and PROXY header, if any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    named: BTreeMap<String, Route>,
    default: Option<Route>,
}

impl Routes {
    /// No routes: every stream is refused.
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Adds (or replaces) route `name` to a target address, or to a [`Route`] with a
    /// PROXY header; the name `default` sets the default route.
    pub fn add(&mut self, name: &str, route: impl Into<Route>) -> &mut Routes {
        let route = route.into();
        if name == "default" {
            self.default = Some(route);
        } else {
            self.named.insert(name.to_owned(), route);
        }
        self
    }

    /// Route `name` (the empty name is the default route).
    pub fn get(&self, name: &str) -> Option<Route> {
        if name.is_empty() {
            self.default
        } else {
            self.named.get(name).copied()
        }
    }

    /// The target of route `name` (the empty name is the default route).
    pub fn target(&self, name: &str) -> Option<SocketAddr> {
        self.get(name).map(|r| r.target)
    }

    /// Every route as (name, route), `default` last.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Route)> {
        self.named.iter().map(|(n, r)| (n.as_str(), *r)).chain(self.default.map(|r| ("default", r)))
    }
}

/// Settings of the remote end.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The shared secret.
    pub secret: Secret,
    /// Where streams may go.
    pub routes: Routes,
    /// A carrier must authenticate within this long.
    pub auth_timeout: Duration,
    /// A target must accept within this long.
    pub connect_timeout: Duration,
    /// Carrier heartbeat.
    pub heartbeat: HeartbeatConfig,
    /// Stream flow control.
    pub mux: MuxConfig,
    /// Most carriers at once.
    pub max_carriers: usize,
    /// Ports exposing ends may publish; `None` refuses every publish request.
    pub publish: Option<PublishConfig>,
}

impl RemoteConfig {
    /// Defaults for everything but the secret and the routes.
    pub fn new(secret: Secret, routes: Routes) -> RemoteConfig {
        RemoteConfig {
            secret,
            routes,
            auth_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            heartbeat: HeartbeatConfig::default(),
            mux: MuxConfig::default(),
            max_carriers: 64,
            publish: None,
        }
    }
}

#[derive(Debug)]
enum Auth {
    AwaitHello,
    AwaitResponse { nonce_l: [u8; PROOF_LEN], nonce_r: [u8; PROOF_LEN], version: u8 },
    Done { last_stream: StreamId, version: u8 },
}

#[derive(Debug)]
struct Link {
    peer: SocketAddr,
    carrier: Carrier,
    auth: Auth,
    /// The id of the next stream this end opens (a visitor of a published port).
    next_stream: StreamId,
}

/// A port an exposing end asked for.
#[derive(Debug)]
struct Port {
    carrier: ConnId,
    listener: ListenerId,
    /// False until the driver has bound it.
    listening: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Auth(ConnId),
    Heartbeat(ConnId),
    TargetConnect(ConnId),
}

/// The remote end of the tunnel, as a [`Machine`].
#[derive(Debug)]
pub struct TunnelRemote {
    config: RemoteConfig,
    env: Env,
    clock: Clock,
    links: BTreeMap<ConnId, Link>,
    /// A stream's own connection (a route target, or a visitor of a published port) → its
    /// carrier.
    targets: BTreeMap<ConnId, ConnId>,
    /// Published (or being published) ports.
    ports: BTreeMap<u16, Port>,
    /// Publish listener → its port.
    listeners: BTreeMap<ListenerId, u16>,
    next_listener: u16,
    timers: Deadlines<Timer>,
    out: OutputQueue<TunnelEvent>,
}

impl TunnelRemote {
    /// A remote end with no carriers yet.
    pub fn new(env: Env, config: RemoteConfig) -> TunnelRemote {
        TunnelRemote {
            config,
            env,
            clock: Clock::default(),
            links: BTreeMap::new(),
            targets: BTreeMap::new(),
            ports: BTreeMap::new(),
            listeners: BTreeMap::new(),
            next_listener: PUBLISH_LISTENERS,
            timers: Deadlines::new(),
            out: OutputQueue::default(),
        }
    }

    /// Replaces the allowlist (a config reload). Streams already open keep their targets:
    /// routes are looked up only when a stream opens, so a removed route refuses new
    /// streams and drops none.
    pub fn set_routes(&mut self, routes: Routes) {
        self.config.routes = routes;
    }

    /// The allowlist streams open against now.
    pub fn routes(&self) -> &Routes {
        &self.config.routes
    }

    /// Authenticated carriers.
    pub fn carriers(&self) -> usize {
        self.links.values().filter(|l| matches!(l.auth, Auth::Done { .. })).count()
    }

    /// Open streams over all carriers.
    pub fn streams(&self) -> usize {
        self.links.values().map(|l| l.carrier.mux.len()).sum()
    }

    /// The ports published now (bound and serving visitors), in order.
    pub fn published(&self) -> Vec<u16> {
        self.ports.iter().filter(|(_, p)| p.listening).map(|(&port, _)| port).collect()
    }

    fn drop_link(&mut self, carrier: ConnId, reason: String, how: Option<CloseHow>) {
        let Some(mut link) = self.links.remove(&carrier) else { return };
        let mine: Vec<u16> = self.ports.iter().filter(|(_, p)| p.carrier == carrier).map(|(&n, _)| n).collect();
        for port in mine {
            let Some(Port { listener, listening, .. }) = self.ports.remove(&port) else { continue };
            self.listeners.remove(&listener);
            self.out.push(Output::Unlisten { listener });
            if listening {
                self.out.event(TunnelEvent::Unpublished { port, peer: link.peer });
            }
        }
        for target in link.carrier.mux.abort_all(&mut self.out) {
            self.targets.remove(&target);
            self.timers.cancel(Timer::TargetConnect(target));
        }
        self.timers.cancel(Timer::Auth(carrier));
        self.timers.cancel(Timer::Heartbeat(carrier));
        if let Some(how) = how {
            self.out.close(carrier, how);
        }
        self.out.event(TunnelEvent::CarrierClosed { peer: link.peer, reason });
    }

    fn arm_heartbeat(&mut self, carrier: ConnId) {
        if let Some(link) = self.links.get(&carrier) {
            self.timers.set(Timer::Heartbeat(carrier), link.carrier.deadline());
        }
    }

    fn carrier_received(&mut self, carrier: ConnId, bytes: BytesMut) {
        let now = self.clock.now();
        let Some(link) = self.links.get_mut(&carrier) else { return };
        link.carrier.receive(now, bytes);
        self.arm_heartbeat(carrier);
        loop {
            let Some(link) = self.links.get_mut(&carrier) else { return };
            match link.carrier.next_message() {
                None => return,
                Some(Ok(msg)) => self.carrier_message(carrier, msg),
                Some(Err(error)) => {
                    return self.drop_link(carrier, format!("protocol error: {error}"), Some(CloseHow::Abort))
                }
            }
        }
    }

    fn refuse_auth(&mut self, carrier: ConnId, reason: &str) {
        let Some(link) = self.links.get_mut(&carrier) else { return };
        link.carrier.mux.send(&TunnelMsg::Refused { reason: reason.to_owned() }, &mut self.out);
        self.out.event(TunnelEvent::AuthFailed { peer: link.peer, reason: reason.to_owned() });
        self.drop_link(carrier, format!("authentication failed: {reason}"), Some(CloseHow::Graceful));
    }

    fn carrier_message(&mut self, carrier: ConnId, msg: TunnelMsg) {
        let Some(link) = self.links.get_mut(&carrier) else { return };
        match (&mut link.auth, msg) {
            (Auth::AwaitHello, TunnelMsg::Hello { version, nonce: nonce_l }) => {
                if !(MIN_VERSION..=VERSION).contains(&version) {
                    let reason = format!("protocol version {version} not supported (want {MIN_VERSION} to {VERSION})");
                    return self.refuse_auth(carrier, &reason);
                }
                let mut nonce_r = [0u8; PROOF_LEN];
                self.env.rng.fill_bytes(&mut nonce_r);
                let proof = self.config.secret.remote_proof(&nonce_l, &nonce_r);
                link.carrier.mux.send(&TunnelMsg::Challenge { nonce: nonce_r, proof }, &mut self.out);
                link.auth = Auth::AwaitResponse { nonce_l, nonce_r, version };
            }
            (Auth::AwaitResponse { nonce_l, nonce_r, version }, TunnelMsg::Response { proof }) => {
                if !self.config.secret.verify_local(nonce_r, nonce_l, &proof) {
                    return self.refuse_auth(carrier, "wrong secret: the two ends have different secrets");
                }
                link.auth = Auth::Done { last_stream: 0, version: *version };
                link.carrier.mux.send(&TunnelMsg::Welcome, &mut self.out);
                self.timers.cancel(Timer::Auth(carrier));
                self.out.event(TunnelEvent::CarrierUp { peer: link.peer });
            }
            (_, TunnelMsg::Refused { reason }) => {
                let peer = link.peer;
                self.out.event(TunnelEvent::AuthFailed { peer, reason: format!("the local end refused us: {reason}") });
                self.drop_link(carrier, "refused by the local end".into(), Some(CloseHow::Abort));
            }
            (_, TunnelMsg::Ping { token }) => link.carrier.pong(token, &mut self.out),
            (_, TunnelMsg::Pong { .. }) => {}
            (Auth::Done { last_stream, .. }, TunnelMsg::Open { stream, route, addrs }) => {
                if stream & REMOTE_STREAMS != 0 {
                    let reason = format!("stream id {stream:#x} is in the remote end's range (top bit set)");
                    return self.drop_link(carrier, format!("protocol error: {reason}"), Some(CloseHow::Abort));
                }
                if stream <= *last_stream {
                    let reason = format!("stream id {stream} reused");
                    return self.drop_link(carrier, format!("protocol error: {reason}"), Some(CloseHow::Abort));
                }
                *last_stream = stream;
                self.open(carrier, stream, route, addrs);
            }
            (Auth::Done { version, .. }, TunnelMsg::Publish { port }) if *version >= PUBLISH_VERSION => {
                self.publish(carrier, port)
            }
            // `Refuse` answers an `Open`: from the local end, only for one of our streams.
            (
                Auth::Done { .. },
                msg @ (TunnelMsg::Data { .. }
                | TunnelMsg::Window { .. }
                | TunnelMsg::Fin { .. }
                | TunnelMsg::Refuse { .. }
                | TunnelMsg::Reset { .. }),
            ) if !matches!(msg, TunnelMsg::Refuse { stream, .. } if stream & REMOTE_STREAMS == 0) => {
                if let Err(violation) = link.carrier.mux.receive(msg, &mut self.out) {
                    self.drop_link(carrier, format!("protocol error: {violation}"), Some(CloseHow::Abort));
                }
            }
            (_, msg) => {
                let reason = format!("protocol error: unexpected {msg:?}");
                self.drop_link(carrier, reason, Some(CloseHow::Abort));
            }
        }
    }

    /// Forgets the targets of streams the multiplexers have ended, and reports them. Called
    /// at the end of every mutating call, so the target table never keeps a dead stream.
    fn settle(&mut self) {
        for link in self.links.values_mut() {
            while let Some(ended) = link.carrier.mux.pop_ended() {
                self.targets.remove(&ended.conn);
                self.timers.cancel(Timer::TargetConnect(ended.conn));
                self.out.event(ended.into());
            }
        }
    }

    /// A carrier asks for `port`: check it, then ask the driver to listen.
    fn publish(&mut self, carrier: ConnId, port: u16) {
        let Some(link) = self.links.get_mut(&carrier) else { return };
        let mine = self.ports.values().filter(|p| p.carrier == carrier).count();
        let refusal = match (&self.config.publish, self.ports.get(&port)) {
            (None, _) => {
                Some(String::from("this remote end does not allow publishing (start it with --allow-publish)"))
            }
            (Some(allow), _) if !allow.ports.contains(&port) => Some(format!(
                "port {port} is outside the range this remote end allows ({}-{})",
                allow.ports.start(),
                allow.ports.end()
            )),
            (Some(_), Some(taken)) if taken.carrier == carrier => Some(format!("port {port} is already published")),
            (Some(_), Some(_)) => Some(format!("port {port} is already published by another exposing end")),
            (Some(allow), None) if mine >= allow.max_per_carrier => {
                Some(format!("too many published ports on this carrier (limit {})", allow.max_per_carrier))
            }
            (Some(allow), None) if self.ports.len() >= allow.max_total => {
                Some(format!("too many published ports on this remote end (limit {})", allow.max_total))
            }
            (Some(_), None) => None,
        };
        if let Some(reason) = refusal {
            link.carrier.mux.send(&TunnelMsg::PublishRefused { port, reason: reason.clone() }, &mut self.out);
            return self.out.event(TunnelEvent::PublishRefused { port, peer: link.peer, reason });
        }
        let Some(ip) = self.config.publish.as_ref().map(|p| p.ip) else { return };
        // Ids wrap within our range, skipping any still open: one is reused only after
        // 32,768 later publishes, long after its last connection was handed over.
        let mut listener = ListenerId(self.next_listener);
        while self.listeners.contains_key(&listener) {
            listener = ListenerId(listener.0.checked_add(1).unwrap_or(PUBLISH_LISTENERS));
        }
        self.next_listener = listener.0.checked_add(1).unwrap_or(PUBLISH_LISTENERS);
        self.ports.insert(port, Port { carrier, listener, listening: false });
        self.listeners.insert(listener, port);
        self.out.push(Output::Listen { listener, addr: SocketAddr::new(ip, port) });
    }

    /// The driver's answer to a publish listener.
    fn listened(&mut self, listener: ListenerId, result: Result<SocketAddr, crate::machine::NetError>) {
        let Some(&port) = self.listeners.get(&listener) else { return };
        let Some(entry) = self.ports.get_mut(&port) else { return };
        let Some(link) = self.links.get_mut(&entry.carrier) else { return };
        match result {
            Ok(_) => {
                entry.listening = true;
                link.carrier.mux.send(&TunnelMsg::Published { port }, &mut self.out);
                self.out.event(TunnelEvent::Published { port, peer: link.peer, service: None });
            }
            Err(error) => {
                self.ports.remove(&port);
                self.listeners.remove(&listener);
                let reason = error.to_string();
                link.carrier.mux.send(&TunnelMsg::PublishRefused { port, reason: reason.clone() }, &mut self.out);
                self.out.event(TunnelEvent::PublishRefused { port, peer: link.peer, reason });
            }
        }
    }

    /// A visitor connected to a published port: open a stream toward its exposing end.
    fn visit(&mut self, listener: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal> {
        let port = self.listeners.get(&listener).copied().ok_or(Refusal::UnknownListener(listener))?;
        let carrier = self.ports.get(&port).filter(|p| p.listening).ok_or(Refusal::UnknownListener(listener))?.carrier;
        let link = self.links.get_mut(&carrier).ok_or(Refusal::UnknownListener(listener))?;
        if !link.carrier.mux.has_room() {
            return Err(Refusal::AtCapacity { limit: self.config.mux.max_streams });
        }
        let conn = self.env.conn_ids.next();
        let stream = link.next_stream;
        // Past the last id the carrier would have to reuse one: the exposing end would
        // refuse it, so the visitor is refused here instead.
        link.next_stream = stream.checked_add(1).ok_or(Refusal::AtCapacity { limit: self.config.mux.max_streams })?;
        link.carrier.mux.add(stream, conn, true);
        let addrs = StreamAddrs { client: peer, entrance: at };
        let route = port.to_string();
        link.carrier.mux.send(&TunnelMsg::Open { stream, route: route.clone(), addrs: Some(addrs) }, &mut self.out);
        self.targets.insert(conn, carrier);
        self.out.event(TunnelEvent::StreamOpened { stream, route, peer, client: Some(peer) });
        Ok(conn)
    }

    fn open(&mut self, carrier: ConnId, stream: StreamId, route: String, addrs: Option<StreamAddrs>) {
        let Some(link) = self.links.get_mut(&carrier) else { return };
        let refusal = match self.config.routes.get(&route) {
            _ if !link.carrier.mux.has_room() => Err(String::from("too many streams on this carrier")),
            None if route.is_empty() => Err(String::from("no default route on the remote end")),
            None => Err(format!("unknown route {route}")),
            Some(target) => Ok(target),
        };
        let Route { target, proxy } = match refusal {
            Ok(route) => route,
            Err(reason) => {
                link.carrier.mux.refuse(stream, &reason, &mut self.out);
                return self.out.event(TunnelEvent::StreamRefused { stream, reason });
            }
        };
        let conn = self.env.conn_ids.next();
        // An open without addresses (an older local end) gets the header that says "not
        // known": v1 `UNKNOWN`, v2 LOCAL, and the target uses the connection's own.
        let client = addrs.map(|a| a.client);
        let addrs = addrs.map(|a| ProxyAddrs { source: a.client, destination: a.entrance });
        let preamble = proxy.map(|version| proxy::to_bytes(version, addrs));
        link.carrier.mux.add_with_preamble(stream, conn, false, preamble);
        self.targets.insert(conn, carrier);
        self.timers.set(Timer::TargetConnect(conn), self.clock.now() + self.config.connect_timeout);
        self.out.push(Output::Connect { conn, to: target });
        let peer = link.peer;
        self.out.event(TunnelEvent::StreamOpened { stream, route, peer, client });
    }

    fn target_failed(&mut self, conn: ConnId, reason: String, refuse: bool) {
        self.timers.cancel(Timer::TargetConnect(conn));
        let Some(carrier) = self.targets.remove(&conn) else { return };
        let Some(link) = self.links.get_mut(&carrier) else { return };
        if refuse {
            link.carrier.mux.refuse_conn(conn, &reason, &mut self.out);
        } else {
            link.carrier.mux.reset_conn(conn, &reason, &mut self.out);
        }
    }

    fn target_input(&mut self, conn: ConnId, carrier: ConnId, input: Input<'_>) {
        if let Input::ConnectFailed { error, .. } = &input {
            return self.target_failed(conn, format!("cannot reach the route's target: {error}"), true);
        }
        if let Input::Closed { reason, .. } = &input {
            return self.target_failed(conn, format!("target connection failed: {reason}"), false);
        }
        let Some(link) = self.links.get_mut(&carrier) else { return };
        let mux = &mut link.carrier.mux;
        match input {
            Input::Connected { .. } => {
                self.timers.cancel(Timer::TargetConnect(conn));
                mux.conn_connected(conn, &mut self.out);
            }
            Input::Received { bytes, .. } => mux.conn_received(conn, bytes, &mut self.out),
            Input::ReadClosed { .. } => mux.conn_read_closed(conn, &mut self.out),
            Input::Sent { bytes, .. } => mux.conn_sent(conn, bytes, &mut self.out),
            _ => {}
        }
    }
}

impl Machine for TunnelRemote {
    type Event = TunnelEvent;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        let unspecified = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        self.accept_at(now, listener, peer, unspecified)
    }

    fn accept_at(
        &mut self,
        now: Instant,
        listener: ListenerId,
        peer: SocketAddr,
        at: SocketAddr,
    ) -> Result<ConnId, Refusal> {
        let now = self.clock.advance(now);
        if listener.0 >= PUBLISH_LISTENERS {
            let visitor = self.visit(listener, peer, at);
            self.settle();
            return visitor;
        }
        if self.links.len() >= self.config.max_carriers {
            return Err(Refusal::AtCapacity { limit: self.config.max_carriers });
        }
        let conn = self.env.conn_ids.next();
        let carrier = Carrier::new(conn, now, self.config.heartbeat, self.config.mux.clone());
        self.links.insert(conn, Link { peer, carrier, auth: Auth::AwaitHello, next_stream: REMOTE_STREAMS | 1 });
        self.timers.set(Timer::Auth(conn), now + self.config.auth_timeout);
        self.arm_heartbeat(conn);
        self.out.event(TunnelEvent::CarrierAccepted { peer });
        Ok(conn)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.clock.advance(now);
        if let Input::Listened { listener, result } = input {
            self.listened(listener, result);
            return self.settle();
        }
        let Some(conn) = input.conn() else { return };
        if let Some(&carrier) = self.targets.get(&conn) {
            self.target_input(conn, carrier, input);
        } else if self.links.contains_key(&conn) {
            self.carrier_input(conn, input);
        }
        self.settle();
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Auth(carrier) => {
                    let secs = self.config.auth_timeout.as_secs_f64();
                    self.drop_link(carrier, format!("did not authenticate within {secs} s"), Some(CloseHow::Abort));
                }
                Timer::TargetConnect(conn) => {
                    // The connect is still in progress at the driver: give it up, or a target
                    // that accepts later is left connected to nobody.
                    if self.targets.contains_key(&conn) {
                        self.out.close(conn, CloseHow::Abort);
                    }
                    self.target_failed(conn, "target did not accept in time".into(), true)
                }
                Timer::Heartbeat(carrier) => {
                    let Some(link) = self.links.get_mut(&carrier) else { continue };
                    if link.carrier.on_timeout(now, &mut self.out) == Liveness::Dead {
                        let secs = self.config.heartbeat.dead_after.as_secs_f64();
                        self.drop_link(carrier, format!("local end silent for {secs} s"), Some(CloseHow::Abort));
                    } else {
                        self.arm_heartbeat(carrier);
                    }
                }
            }
        }
        self.settle();
    }

    fn poll_output(&mut self) -> Option<Output<TunnelEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }
}

impl TunnelRemote {
    fn carrier_input(&mut self, conn: ConnId, input: Input<'_>) {
        match input {
            Input::Received { bytes, .. } => self.carrier_received(conn, bytes),
            Input::ReadClosed { .. } => {
                self.drop_link(conn, "local end closed the carrier".into(), Some(CloseHow::Abort))
            }
            Input::Closed { reason, .. } => self.drop_link(conn, format!("carrier failed: {reason}"), None),
            Input::Sent { bytes, .. } => {
                if let Some(link) = self.links.get_mut(&conn) {
                    link.carrier.mux.carrier_sent(bytes, &mut self.out);
                }
            }
            _ => {}
        }
    }
}
