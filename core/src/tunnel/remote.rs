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
use crate::wire::tunnel::{StreamAddrs, StreamId, TunnelMsg, MIN_VERSION, PROOF_LEN, VERSION};
use crate::Env;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

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
        }
    }
}

#[derive(Debug)]
enum Auth {
    AwaitHello,
    AwaitResponse { nonce_l: [u8; PROOF_LEN], nonce_r: [u8; PROOF_LEN] },
    Done { last_stream: StreamId },
}

#[derive(Debug)]
struct Link {
    peer: SocketAddr,
    carrier: Carrier,
    auth: Auth,
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
    /// Target connection → its carrier.
    targets: BTreeMap<ConnId, ConnId>,
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

    fn drop_link(&mut self, carrier: ConnId, reason: String, how: Option<CloseHow>) {
        let Some(mut link) = self.links.remove(&carrier) else { return };
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
                link.auth = Auth::AwaitResponse { nonce_l, nonce_r };
            }
            (Auth::AwaitResponse { nonce_l, nonce_r }, TunnelMsg::Response { proof }) => {
                if !self.config.secret.verify_local(nonce_r, nonce_l, &proof) {
                    return self.refuse_auth(carrier, "wrong secret: the two ends have different secrets");
                }
                link.auth = Auth::Done { last_stream: 0 };
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
            (Auth::Done { last_stream }, TunnelMsg::Open { stream, route, addrs }) => {
                if stream <= *last_stream {
                    let reason = format!("stream id {stream} reused");
                    return self.drop_link(carrier, format!("protocol error: {reason}"), Some(CloseHow::Abort));
                }
                *last_stream = stream;
                self.open(carrier, stream, route, addrs);
            }
            (
                Auth::Done { .. },
                msg @ (TunnelMsg::Data { .. }
                | TunnelMsg::Window { .. }
                | TunnelMsg::Fin { .. }
                | TunnelMsg::Reset { .. }),
            ) => {
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

    fn accept(&mut self, now: Instant, _listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        let now = self.clock.advance(now);
        if self.links.len() >= self.config.max_carriers {
            return Err(Refusal::AtCapacity { limit: self.config.max_carriers });
        }
        let conn = self.env.conn_ids.next();
        let carrier = Carrier::new(conn, now, self.config.heartbeat, self.config.mux.clone());
        self.links.insert(conn, Link { peer, carrier, auth: Auth::AwaitHello });
        self.timers.set(Timer::Auth(conn), now + self.config.auth_timeout);
        self.arm_heartbeat(conn);
        self.out.event(TunnelEvent::CarrierAccepted { peer });
        Ok(conn)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.clock.advance(now);
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
