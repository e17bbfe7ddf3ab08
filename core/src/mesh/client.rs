//! A mesh user: one session with a server, an outbox that survives moving between servers,
//! and (optionally) selection of the fastest server by round-trip time.
//!
//! **Outbox.** Every message gets a UUID from the client's generator and stays in the
//! outbox until its receipt arrives. After any reconnect (a switch or a failover) the client
//! registers again and resends everything still in the outbox with the same ids; servers
//! drop copies by id and answer a copy of a delivered message with its receipt, so each
//! message is delivered exactly once. The outbox holds at most `max_outbox` messages:
//! [`MeshClient::send`] refuses more.
//!
//! **Receiving.** The client remembers the ids of the last 16,384 messages it received
//! (for ten minutes) and drops a second copy of any of them.
//!
//! **Selection.** With [`Selection::Fastest`] the client asks its first reachable server for
//! the server list, keeps a probe connection to every server, measures each with
//! [`WARM_UP_SAMPLES`] back-to-back round trips (keeping the lowest), chooses, and then
//! pings each every `probe_interval`. Each server's RTT is then smoothed with a peak-EWMA (a sample above the
//! average replaces it at once, lower samples pull it down slowly), so a spike counts at
//! once and jitter does not. The client moves only when another server is clearly better:
//! smoothed RTT lower by at least `switch_ratio` of the current one *and* by at least
//! `switch_min`, and staying so for `switch_after`. A switch says `Leave` on the old session first (so the name is free), then
//! registers on the new one.
//!
//! **Failover.** The session is pinged every `probe_interval`; silent for `dead_after` (or
//! closed), it is dead, and the client registers on the best other server at once.
//!
//! **No server.** Once every known server has failed in a row, the client says so once
//! ([`ClientEvent::NoServer`], with each server's last failure) and tries again after a
//! jittered exponential backoff (`retry_first` doubling up to `retry_max`), a whole round
//! of servers each time, until one answers; the backoff resets on registration. A probe
//! whose connect fails is retried the same way, on its own backoff. So a client with no
//! server to reach waits instead of spinning.

use super::reader::MsgReader;
use super::seen::SeenCache;
use crate::auth::Secret;
use crate::backoff::Backoff;
use crate::id::ConnId;
use crate::machine::{CloseHow, Input, Machine, Output, OutputQueue};
use crate::time::{Clock, Deadlines, Instant};
use crate::wire::mesh::{is_valid_body, is_valid_name, MeshMsg, ReceiptStatus, MAX_SERVERS};
use crate::Env;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use uuid::Uuid;

/// Round trips measured back to back on a new probe connection; until they are in, the
/// smoothed RTT is the lowest of them (the first choice is made on that).
pub const WARM_UP_SAMPLES: u32 = 5;

/// Every this many ticks the client asks its servers for their server list again, so it
/// learns of servers that joined (or linked) after it first asked; every tick while it
/// knows only one.
pub const RELEARN_TICKS: u64 = 4;

/// How the client picks its server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection {
    /// The servers in the order given: the first that works, the next on failure.
    InOrder,
    /// The lowest smoothed RTT, moving only when another is clearly better.
    Fastest {
        /// Another server must be faster by at least this share of the current RTT.
        switch_ratio: f64,
        /// … and by at least this much.
        switch_min: Duration,
    },
}

impl Selection {
    /// Fastest with the default hysteresis: a third lower and at least 10 ms lower.
    pub fn fastest() -> Selection {
        Selection::Fastest { switch_ratio: 1.0 / 3.0, switch_min: Duration::from_millis(10) }
    }
}

/// Settings of a mesh client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The user name to register.
    pub name: String,
    /// Servers to use (with `Fastest`, more are learned from the first that answers).
    pub servers: Vec<SocketAddr>,
    /// How to pick among them.
    pub selection: Selection,
    /// How often the session and each probe are pinged.
    pub probe_interval: Duration,
    /// A session silent this long is dead.
    pub dead_after: Duration,
    /// A connect that has not completed after this long has failed.
    pub connect_timeout: Duration,
    /// Weight of a new RTT sample below the average (peak-EWMA).
    pub ewma_weight: f64,
    /// With `Fastest`: another server must stay clearly better this long before a move.
    pub switch_after: Duration,
    /// Most messages awaiting receipts.
    pub max_outbox: usize,
    /// A message without a receipt this long after it was sent is sent again (same id).
    pub resend_after: Duration,
    /// How long to keep retrying a registration refused because the name is still held
    /// (after a failover, the old server's claim takes a moment to expire).
    pub register_retry_for: Duration,
    /// The name's token, for servers that list the name in their `--user-token-file`: the
    /// client proves it when challenged, and its registration then takes the name over
    /// wherever it is held. `None`: a server that asks for one refuses the registration.
    pub token: Option<Secret>,
    /// Once every server has failed: the first wait before trying them again.
    pub retry_first: Duration,
    /// … and the longest (the backoff doubles up to it).
    pub retry_max: Duration,
}

impl ClientConfig {
    /// Defaults for user `name` on `servers`.
    pub fn new(name: &str, servers: Vec<SocketAddr>, selection: Selection) -> ClientConfig {
        ClientConfig {
            name: name.to_owned(),
            servers,
            selection,
            probe_interval: Duration::from_millis(500),
            dead_after: Duration::from_millis(2500),
            connect_timeout: Duration::from_secs(1),
            ewma_weight: 0.2,
            switch_after: Duration::from_secs(2),
            max_outbox: 1024,
            resend_after: Duration::from_secs(5),
            register_retry_for: Duration::from_secs(6),
            token: None,
            retry_first: Duration::from_millis(250),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// What the client reports: what a user sees.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A round-trip sample of a server, and its smoothed value.
    Rtt {
        /// The server.
        server: SocketAddr,
        /// This sample.
        sample: Duration,
        /// The smoothed RTT.
        smoothed: Duration,
    },
    /// A server's first measurement: the lowest of [`WARM_UP_SAMPLES`] round trips.
    Measured {
        /// The server.
        server: SocketAddr,
        /// Its RTT.
        rtt: Duration,
    },
    /// The server chosen (first choice, switch or failover), and its smoothed RTT if known.
    Selected {
        /// The server.
        server: SocketAddr,
        /// Its RTT when chosen.
        rtt: Option<Duration>,
        /// Why: "first", "faster" or a failure.
        why: String,
    },
    /// Registered on `server`; sending works.
    Registered {
        /// The server.
        server: SocketAddr,
    },
    /// The registration was refused for good.
    Refused {
        /// Why.
        reason: String,
    },
    /// A message arrived.
    Message {
        /// Its id.
        id: Uuid,
        /// The sender.
        from: String,
        /// The text.
        body: String,
    },
    /// A message of ours got its receipt.
    Receipt {
        /// Its id.
        id: Uuid,
        /// The recipient.
        to: String,
        /// The outcome.
        status: ReceiptStatus,
    },
    /// The session with `server` ended.
    Lost {
        /// The server.
        server: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Every known server has failed in a row; the client tries them all again after
    /// `retry_in` (and again, backing off, until one answers).
    NoServer {
        /// The wait before the next round.
        retry_in: Duration,
        /// Each server tried and why it failed last, in address order.
        failures: Vec<(SocketAddr, String)>,
    },
}

/// Why [`MeshClient::send`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The recipient is not a valid name.
    #[error("invalid recipient name {0:?}")]
    BadName(String),
    /// The body is too long.
    #[error("message too long ({0} bytes, at most 4096)")]
    TooLong(usize),
    /// The outbox is full of messages awaiting receipts.
    #[error("{0} messages are still waiting for receipts")]
    OutboxFull(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionState {
    Connecting,
    Registering,
    Ready,
}

#[derive(Debug)]
struct Session {
    conn: ConnId,
    server: SocketAddr,
    state: SessionState,
    reader: MsgReader,
    last_heard: Instant,
}

#[derive(Debug)]
struct Probe {
    conn: Option<ConnId>,
    up: bool,
    /// Failed connects in a row, and when the next may go out.
    backoff: Backoff,
    reopen_at: Instant,
    /// Samples taken on this connection.
    samples: u32,
    smoothed: Option<Duration>,
    /// Token and send time of the ping in flight.
    in_flight: Option<(u64, Instant)>,
    reader: MsgReader,
}

#[derive(Debug)]
struct Outgoing {
    to: String,
    body: String,
    /// When it was last handed to a server (`None`: not yet).
    sent_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Tick,
    ConnectTimeout(ConnId),
    /// Ask again for a registration refused because the name is still held.
    Retry,
    /// Every server failed: try them again.
    NextRound,
}

/// A mesh user, as a [`Machine`]. It opens connections only; it listens on nothing.
#[derive(Debug)]
pub struct MeshClient {
    config: ClientConfig,
    env: Env,
    clock: Clock,
    session: Option<Session>,
    probes: BTreeMap<SocketAddr, Probe>,
    /// Connection → the server a probe talks to.
    probe_conns: BTreeMap<ConnId, SocketAddr>,
    outbox: BTreeMap<Uuid, Outgoing>,
    outbox_order: VecDeque<Uuid>,
    /// Ids of messages received, to drop a second copy (offered by a recipient's old and
    /// new server after a move).
    received: SeenCache,
    /// Servers that failed, tried again only after the others.
    failed: BTreeMap<SocketAddr, Instant>,
    /// Each server's last failure, for [`ClientEvent::NoServer`] (at most one entry per
    /// known server).
    last_failure: BTreeMap<SocketAddr, String>,
    /// Rounds in which every server failed, since the last registration.
    retry: Backoff,
    /// Until when a "name taken" refusal is retried.
    retry_taken_until: Option<Instant>,
    registered_once: bool,
    /// A server clearly better than the current one, and since when (see `switch_after`).
    better: Option<(SocketAddr, Instant)>,
    /// When the client started: with `Fastest`, the first choice waits for every probe's
    /// first answer, or one probe interval.
    started: Instant,
    next_token: u64,
    /// Ticks so far: every [`RELEARN_TICKS`]th asks for the server list again.
    ticks: u64,
    left: bool,
    timers: Deadlines<Timer>,
    out: OutputQueue<ClientEvent>,
}

impl MeshClient {
    /// A client that starts connecting as soon as it runs. Panics on a caller bug: an
    /// invalid name or no servers.
    pub fn new(env: Env, now: Instant, config: ClientConfig) -> MeshClient {
        assert!(is_valid_name(&config.name), "invalid user name {:?}", config.name);
        assert!(!config.servers.is_empty(), "a mesh client needs at least one server");
        let mut client = MeshClient {
            env,
            clock: Clock::new(now),
            session: None,
            probes: BTreeMap::new(),
            probe_conns: BTreeMap::new(),
            outbox: BTreeMap::new(),
            outbox_order: VecDeque::new(),
            received: SeenCache::new(Duration::from_secs(600), 16_384),
            failed: BTreeMap::new(),
            last_failure: BTreeMap::new(),
            retry: Backoff::new(config.retry_first, config.retry_max),
            retry_taken_until: None,
            registered_once: false,
            better: None,
            started: now,
            next_token: 1,
            ticks: 0,
            left: false,
            timers: Deadlines::new(),
            out: OutputQueue::default(),
            config,
        };
        if matches!(client.config.selection, Selection::Fastest { .. }) {
            for server in client.config.servers.clone() {
                client.add_probe(server);
            }
        } else {
            client.choose("first");
        }
        client.timers.set(Timer::Tick, now + client.config.probe_interval);
        client
    }

    /// Queues `body` for `to` and sends it if registered; returns its id. It stays in the
    /// outbox, and is resent after any reconnect, until its receipt arrives.
    pub fn send(&mut self, now: Instant, to: &str, body: &str) -> Result<Uuid, SendError> {
        self.clock.advance(now);
        if !is_valid_name(to) {
            return Err(SendError::BadName(to.to_owned()));
        }
        if !is_valid_body(body) {
            return Err(SendError::TooLong(body.len()));
        }
        if self.outbox.len() >= self.config.max_outbox {
            return Err(SendError::OutboxFull(self.outbox.len()));
        }
        let id = self.env.rng.uuid();
        self.outbox.insert(id, Outgoing { to: to.to_owned(), body: body.to_owned(), sent_at: None });
        self.outbox_order.push_back(id);
        self.flush_outbox(false);
        Ok(id)
    }

    /// Leaves the mesh: a disconnect notification, then every connection closes.
    pub fn leave(&mut self, now: Instant) {
        self.clock.advance(now);
        self.left = true;
        if let Some(s) = self.session.take() {
            self.out.write(s.conn, MeshMsg::Leave.to_bytes());
            self.out.close(s.conn, CloseHow::Graceful);
        }
        for (conn, _) in std::mem::take(&mut self.probe_conns) {
            self.out.close(conn, CloseHow::Graceful);
        }
        self.probes.clear();
        self.timers = Deadlines::new();
    }

    /// The server of the current session, once registered there.
    pub fn server(&self) -> Option<SocketAddr> {
        self.session.as_ref().filter(|s| s.state == SessionState::Ready).map(|s| s.server)
    }

    /// Servers that failed since the last registration, each with its last failure, in
    /// address order: what to tell a user who gives up before any server answered.
    pub fn failures(&self) -> Vec<(SocketAddr, String)> {
        self.last_failure.iter().map(|(s, why)| (*s, why.clone())).collect()
    }

    /// Messages awaiting receipts.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Messages awaiting receipts, oldest first: id and recipient.
    pub fn outbox(&self) -> Vec<(Uuid, String)> {
        self.outbox_order.iter().filter_map(|id| self.outbox.get(id).map(|m| (*id, m.to.clone()))).collect()
    }

    /// Each probed server's smoothed RTT (`None` until its first answer or while down).
    pub fn rtts(&self) -> Vec<(SocketAddr, Option<Duration>)> {
        self.probes.iter().map(|(s, p)| (*s, p.smoothed.filter(|_| p.up))).collect()
    }

    // --- probes ------------------------------------------------------------------------

    fn add_probe(&mut self, server: SocketAddr) {
        if self.probes.contains_key(&server) || self.probes.len() >= MAX_SERVERS {
            return;
        }
        self.probes.insert(
            server,
            Probe {
                conn: None,
                up: false,
                backoff: Backoff::new(self.config.retry_first, self.config.retry_max),
                reopen_at: Instant::ZERO,
                samples: 0,
                smoothed: None,
                in_flight: None,
                reader: MsgReader::default(),
            },
        );
        self.open_probe(server);
    }

    /// Servers a server told us about: probed with `Fastest`, failover candidates after
    /// the configured ones with `InOrder`.
    fn learn_servers(&mut self, servers: Vec<SocketAddr>) {
        for server in servers {
            match self.config.selection {
                Selection::Fastest { .. } => self.add_probe(server),
                Selection::InOrder => {
                    if !self.config.servers.contains(&server) && self.config.servers.len() < MAX_SERVERS {
                        self.config.servers.push(server);
                    }
                }
            }
        }
    }

    /// Asks for the server list again: on every live probe (`Fastest`), or on the session.
    fn relearn(&mut self) {
        let list = MeshMsg::ListServers.to_bytes();
        let mut conns: Vec<ConnId> = self.probes.values().filter(|p| p.up).filter_map(|p| p.conn).collect();
        if let Some(s) = self.session.as_ref().filter(|s| s.state != SessionState::Connecting) {
            if matches!(self.config.selection, Selection::InOrder) {
                conns.push(s.conn);
            }
        }
        for conn in conns {
            self.out.write(conn, list.clone());
        }
    }

    fn open_probe(&mut self, server: SocketAddr) {
        let Some(probe) = self.probes.get_mut(&server) else { return };
        if probe.conn.is_some() {
            return;
        }
        let conn = self.env.conn_ids.next();
        probe.conn = Some(conn);
        probe.reader = MsgReader::default();
        probe.in_flight = None;
        probe.samples = 0;
        self.probe_conns.insert(conn, server);
        self.timers.set(Timer::ConnectTimeout(conn), self.clock.now() + self.config.connect_timeout);
        self.out.push(Output::Connect { conn, to: server });
    }

    /// The probe on `conn` is gone (`reason` says why). One that never connected waits out
    /// its backoff before the next try; one that was up is reopened on the next tick.
    fn probe_down(&mut self, conn: ConnId, reason: &str) {
        let Some(server) = self.probe_conns.remove(&conn) else { return };
        self.timers.cancel(Timer::ConnectTimeout(conn));
        let now = self.clock.now();
        if let Some(probe) = self.probes.get_mut(&server) {
            if probe.up {
                probe.backoff.reset();
                probe.reopen_at = now;
            } else {
                probe.reopen_at = now + probe.backoff.next_delay(&mut self.env.rng);
                self.last_failure.insert(server, reason.to_owned());
            }
            probe.conn = None;
            probe.up = false;
            probe.in_flight = None;
        }
    }

    fn ping_probe(&mut self, server: SocketAddr) {
        let now = self.clock.now();
        let token = self.next_token;
        let Some(probe) = self.probes.get_mut(&server) else { return };
        let Some(conn) = probe.conn.filter(|_| probe.up) else { return };
        if let Some((_, sent)) = probe.in_flight {
            if now.saturating_duration_since(sent) < self.config.dead_after {
                return;
            }
            // No answer for too long: the server is as good as gone.
            self.out.close(conn, CloseHow::Abort);
            return self.probe_down(conn, "no answer to a ping");
        }
        self.next_token += 1;
        probe.in_flight = Some((token, now));
        self.out.write(conn, MeshMsg::Ping { token }.to_bytes());
    }

    fn probe_message(&mut self, server: SocketAddr, msg: MeshMsg) {
        let now = self.clock.now();
        match msg {
            MeshMsg::Pong { token } => {
                let weight = self.config.ewma_weight;
                let Some(probe) = self.probes.get_mut(&server) else { return };
                let Some((expected, sent)) = probe.in_flight else { return };
                if token != expected {
                    return;
                }
                probe.in_flight = None;
                let sample = now.saturating_duration_since(sent);
                probe.samples += 1;
                let warming = probe.samples <= WARM_UP_SAMPLES;
                let smoothed = match probe.smoothed {
                    // Warming up: the lowest sample, the path's latency without queueing.
                    Some(low) if warming => low.min(sample),
                    Some(avg) if sample < avg => avg.mul_f64(1.0 - weight) + sample.mul_f64(weight),
                    _ => sample,
                };
                probe.smoothed = Some(smoothed);
                let measured = probe.samples == WARM_UP_SAMPLES;
                self.out.event(ClientEvent::Rtt { server, sample, smoothed });
                if measured {
                    self.out.event(ClientEvent::Measured { server, rtt: smoothed });
                }
                if warming && !measured {
                    // The next warm-up ping goes at once.
                    self.ping_probe(server);
                }
                self.reconsider();
            }
            MeshMsg::ServerList { servers } => self.learn_servers(servers),
            _ => {}
        }
    }

    /// With `Fastest`: picks a server if there is none, or moves to a clearly better one.
    fn reconsider(&mut self) {
        let Selection::Fastest { switch_ratio, switch_min } = self.config.selection else { return };
        if self.left {
            return;
        }
        let Some((best, best_rtt)) = self.fastest(None) else { return };
        let Some(session) = &self.session else {
            // The first choice waits until every known server has answered a probe or
            // failed to connect (servers learned meanwhile included), for at most two
            // probe intervals.
            let waiting = self.probes.values().any(|p| p.conn.is_some() && p.samples < WARM_UP_SAMPLES);
            let patience = self.started + self.config.probe_interval * 2;
            if !waiting || self.clock.now() >= patience || self.registered_once {
                let why = if self.registered_once { "reconnecting" } else { "first" };
                self.choose(why);
            }
            return;
        };
        if session.server == best || session.state != SessionState::Ready {
            self.better = None;
            return;
        }
        let current = self.probes.get(&session.server).and_then(|p| p.smoothed.filter(|_| p.up));
        let Some(current) = current else { return };
        let gain = current.saturating_sub(best_rtt);
        if gain < switch_min || gain.as_secs_f64() < current.as_secs_f64() * switch_ratio {
            self.better = None;
            return;
        }
        // Clearly better now; move once it has stayed so for `switch_after`, so that one
        // spike of the current server's RTT (the peak-EWMA takes it at once) is not enough.
        let now = self.clock.now();
        match self.better {
            Some((server, since)) if server == best => {
                if now.saturating_duration_since(since) < self.config.switch_after {
                    return;
                }
            }
            _ => {
                self.better = Some((best, now));
                return;
            }
        }
        self.better = None;
        let old = session.server;
        // Free the name on the old server before claiming it on the new one; until the old
        // server's `Gone` has reached the new one, a refusal there is retried.
        self.end_session("moving to a faster server", true);
        self.failed.remove(&old);
        self.retry_taken_until = Some(now + self.config.register_retry_for);
        self.connect(best, Some(best_rtt), format!("{best} is faster than {old}"));
    }

    /// With `Fastest` and no session: true once the first choice's patience is over and
    /// no probe is up or connecting, i.e. no server can be chosen.
    fn no_probe_answers(&self) -> bool {
        matches!(self.config.selection, Selection::Fastest { .. })
            && self.session.is_none()
            && !self.left
            && self.clock.now() >= self.started + self.config.probe_interval * 2
            && self.probes.values().all(|p| p.conn.is_none())
    }

    /// The probed server with the lowest smoothed RTT, other than `except`, preferring
    /// servers that have not failed recently.
    fn fastest(&self, except: Option<SocketAddr>) -> Option<(SocketAddr, Duration)> {
        self.probes
            .iter()
            .filter(|(s, p)| p.up && Some(**s) != except)
            .filter_map(|(s, p)| p.smoothed.map(|rtt| (*s, rtt)))
            .min_by_key(|(s, rtt)| (self.failed.contains_key(s), *rtt, *s))
    }

    // --- the session -------------------------------------------------------------------

    /// Starts a session on the best candidate (`why` says what prompted it).
    fn choose(&mut self, why: &str) {
        if self.left || self.session.is_some() {
            return;
        }
        let pick = match self.config.selection {
            Selection::Fastest { .. } => self.fastest(None),
            // Each server once per round: one that failed waits for the next round.
            Selection::InOrder => {
                self.config.servers.iter().find(|s| !self.failed.contains_key(s)).map(|s| (*s, Duration::ZERO))
            }
        };
        match pick {
            Some((server, rtt)) => {
                let rtt = matches!(self.config.selection, Selection::Fastest { .. }).then_some(rtt);
                self.connect(server, rtt, why.to_owned())
            }
            None => self.wait_for_next_round(),
        }
    }

    /// Every server failed: says so, with why each failed last, and tries them all again
    /// after the backoff. A round already scheduled stands.
    fn wait_for_next_round(&mut self) {
        if self.timers.get(Timer::NextRound).is_some() {
            return;
        }
        let retry_in = self.retry.next_delay(&mut self.env.rng);
        self.timers.set(Timer::NextRound, self.clock.now() + retry_in);
        self.out.event(ClientEvent::NoServer { retry_in, failures: self.failures() });
    }

    /// A new round: every server may be tried again.
    fn next_round(&mut self) {
        if matches!(self.config.selection, Selection::InOrder) {
            self.failed.clear();
        }
        self.choose("retrying");
    }

    fn connect(&mut self, server: SocketAddr, rtt: Option<Duration>, why: String) {
        let conn = self.env.conn_ids.next();
        let now = self.clock.now();
        self.session = Some(Session {
            conn,
            server,
            state: SessionState::Connecting,
            reader: MsgReader::default(),
            last_heard: now,
        });
        self.timers.set(Timer::ConnectTimeout(conn), now + self.config.connect_timeout);
        self.out.push(Output::Connect { conn, to: server });
        self.out.event(ClientEvent::Selected { server, rtt, why });
    }

    /// Ends the session; `leave` says goodbye first (a planned move).
    fn end_session(&mut self, reason: &str, leave: bool) {
        let Some(s) = self.session.take() else { return };
        self.timers.cancel(Timer::ConnectTimeout(s.conn));
        if leave {
            self.out.write(s.conn, MeshMsg::Leave.to_bytes());
            self.out.close(s.conn, CloseHow::Graceful);
        } else {
            self.out.close(s.conn, CloseHow::Abort);
            self.failed.insert(s.server, self.clock.now());
            self.last_failure.insert(s.server, reason.to_owned());
        }
        self.out.event(ClientEvent::Lost { server: s.server, reason: reason.to_owned() });
    }

    fn session_lost(&mut self, reason: &str) {
        let Some(s) = &self.session else { return };
        let server = s.server;
        self.end_session(reason, false);
        if let Some(probe) = self.probes.get(&server) {
            if let Some(conn) = probe.conn {
                // The server is gone: its probe too, so it is not chosen again at once.
                self.out.close(conn, CloseHow::Abort);
                self.probe_down(conn, reason);
            }
        }
        if self.registered_once {
            self.retry_taken_until = Some(self.clock.now() + self.config.register_retry_for);
        }
        self.choose(&format!("{server} failed: {reason}"));
    }

    fn session_message(&mut self, msg: MeshMsg) {
        let Some(s) = self.session.as_mut() else { return };
        let (conn, server) = (s.conn, s.server);
        match msg {
            MeshMsg::Registered { .. } if s.state == SessionState::Registering => {
                s.state = SessionState::Ready;
                self.registered_once = true;
                self.retry_taken_until = None;
                self.failed.remove(&server);
                self.last_failure.clear();
                self.retry.reset();
                self.timers.cancel(Timer::NextRound);
                self.out.event(ClientEvent::Registered { server });
                // The server has heard from its peers by now (the registration waited for
                // them): its list is the one to fail over along.
                self.out.write(conn, MeshMsg::ListServers.to_bytes());
                // Everything not yet acknowledged goes again, oldest first, same ids.
                self.flush_outbox(true);
            }
            MeshMsg::RegisterChallenge { nonce } if s.state == SessionState::Registering => {
                match &self.config.token {
                    Some(token) => {
                        let proof = super::tokens::answer(token, &self.config.name, &nonce, &mut self.env.rng);
                        self.out.write(conn, proof.to_bytes());
                    }
                    None => {
                        let name = &self.config.name;
                        let reason = format!("{server} asks for the token of {name}, and this client has none (give it --user-token-file)");
                        self.refused_for_good(reason);
                    }
                }
            }
            MeshMsg::RegisterRefused { reason, .. } => {
                let now = self.clock.now();
                // "is taken", not "was taken over": a login with our token took the name, and
                // taking it back would only start a tug of war between the two.
                let retry = self.retry_taken_until.is_some_and(|until| now < until) && reason.contains("is taken");
                if retry {
                    // The old server's claim on our name has not expired yet: ask again soon.
                    self.end_session("name still held elsewhere; retrying", true);
                    self.timers.set(Timer::Retry, now + self.config.probe_interval);
                } else {
                    self.refused_for_good(reason);
                }
            }
            MeshMsg::Deliver { id, from, body } => {
                if self.received.insert(self.clock.now(), id) {
                    self.out.event(ClientEvent::Message { id, from, body });
                }
            }
            MeshMsg::Receipt { id, status } => {
                if let Some(m) = self.outbox.remove(&id) {
                    self.outbox_order.retain(|&i| i != id);
                    self.out.event(ClientEvent::Receipt { id, to: m.to, status });
                }
            }
            MeshMsg::ServerList { servers } => self.learn_servers(servers),
            MeshMsg::Pong { .. } => {}
            MeshMsg::Ping { token } => self.out.write(conn, MeshMsg::Pong { token }.to_bytes()),
            other => {
                let (kind, subtype) = other.kind();
                self.session_lost(&format!("server sent unexpected type {} subtype {subtype}", kind.0));
            }
        }
    }

    /// The registration is refused and will not be asked again: says why, leaves the
    /// session and the mesh.
    fn refused_for_good(&mut self, reason: String) {
        self.out.event(ClientEvent::Refused { reason });
        self.left = true;
        self.end_session("registration refused", true);
    }

    /// Sends outbox messages on a ready session: those never sent, those sent longer than
    /// `resend_after` ago, and with `all` every one (a new session).
    fn flush_outbox(&mut self, all: bool) {
        let now = self.clock.now();
        let Some(conn) = self.session.as_ref().filter(|s| s.state == SessionState::Ready).map(|s| s.conn) else {
            return;
        };
        for id in &self.outbox_order {
            let Some(m) = self.outbox.get_mut(id) else { continue };
            let due = match m.sent_at {
                None => true,
                Some(at) => all || now.saturating_duration_since(at) >= self.config.resend_after,
            };
            if due {
                m.sent_at = Some(now);
                self.out.write(conn, MeshMsg::Send { id: *id, to: m.to.clone(), body: m.body.clone() }.to_bytes());
            }
        }
    }

    fn tick(&mut self) {
        let now = self.clock.now();
        self.flush_outbox(false);
        self.timers.set(Timer::Tick, now + self.config.probe_interval);
        self.ticks += 1;
        // Knowing one server leaves nowhere to fail over to: ask every tick until others
        // are known (the first server may not have linked to them yet when first asked).
        let known = match self.config.selection {
            Selection::Fastest { .. } => self.probes.len(),
            Selection::InOrder => self.config.servers.len(),
        };
        if known <= 1 || self.ticks % RELEARN_TICKS == 0 {
            self.relearn();
        }
        for server in self.probes.keys().copied().collect::<Vec<_>>() {
            let has_conn = self.probes.get(&server).is_some_and(|p| p.conn.is_some());
            let reopen_due = self.probes.get(&server).is_some_and(|p| now >= p.reopen_at);
            if has_conn {
                self.ping_probe(server);
            } else if reopen_due {
                self.open_probe(server);
            }
        }
        if self.no_probe_answers() {
            self.wait_for_next_round();
        }
        if let Some(s) = &self.session {
            if s.state != SessionState::Connecting {
                if now.saturating_duration_since(s.last_heard) >= self.config.dead_after {
                    return self.session_lost("no answer for too long");
                }
                let conn = s.conn;
                let token = self.next_token;
                self.next_token += 1;
                self.out.write(conn, MeshMsg::Ping { token }.to_bytes());
            }
        }
        self.reconsider();
    }
}

impl Machine for MeshClient {
    type Event = ClientEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        let now = self.clock.advance(now);
        let Some(conn) = input.conn() else { return };
        if let Some(&server) = self.probe_conns.get(&conn) {
            match input {
                Input::Connected { .. } => {
                    self.timers.cancel(Timer::ConnectTimeout(conn));
                    if let Some(p) = self.probes.get_mut(&server) {
                        p.up = true;
                    }
                    // Learn the mesh from every server, then measure at once.
                    self.out.write(conn, MeshMsg::ListServers.to_bytes());
                    self.ping_probe(server);
                }
                Input::Received { bytes, .. } => {
                    let Some(p) = self.probes.get_mut(&server) else { return };
                    p.reader.push(&bytes);
                    loop {
                        let Some(p) = self.probes.get_mut(&server) else { return };
                        match p.reader.next_msg() {
                            None => break,
                            Some(Ok(msg)) => self.probe_message(server, msg),
                            Some(Err(e)) => {
                                self.out.close(conn, CloseHow::Abort);
                                let reason = crate::tls::tls_instead(&bytes, "server")
                                    .unwrap_or_else(|| format!("protocol error: {e}"));
                                self.probe_down(conn, &reason);
                                break;
                            }
                        }
                    }
                }
                Input::ConnectFailed { error, .. } => self.probe_down(conn, &format!("connect failed: {error}")),
                Input::Closed { reason, .. } => self.probe_down(conn, &reason.to_string()),
                Input::ReadClosed { .. } => {
                    self.out.close(conn, CloseHow::Abort);
                    self.probe_down(conn, "server closed the connection");
                }
                Input::Sent { .. } | Input::Datagram { .. } | Input::Listened { .. } => {}
            }
            return;
        }
        let Some(s) = self.session.as_mut().filter(|s| s.conn == conn) else { return };
        match input {
            Input::Connected { .. } => {
                self.timers.cancel(Timer::ConnectTimeout(conn));
                s.state = SessionState::Registering;
                s.last_heard = now;
                let register = MeshMsg::Register { name: self.config.name.clone() };
                self.out.write(conn, register.to_bytes());
            }
            Input::ConnectFailed { error, .. } => self.session_lost(&format!("connect failed: {error}")),
            Input::Received { bytes, .. } => {
                s.last_heard = now;
                s.reader.push(&bytes);
                loop {
                    let Some(s) = self.session.as_mut().filter(|s| s.conn == conn) else { return };
                    match s.reader.next_msg() {
                        None => return,
                        Some(Ok(msg)) => self.session_message(msg),
                        Some(Err(e)) => {
                            let reason = crate::tls::tls_instead(&bytes, "server")
                                .unwrap_or_else(|| format!("protocol error: {e}"));
                            return self.session_lost(&reason);
                        }
                    }
                }
            }
            Input::ReadClosed { .. } => self.session_lost("server closed the connection"),
            Input::Closed { reason, .. } => self.session_lost(&reason.to_string()),
            Input::Sent { .. } | Input::Datagram { .. } | Input::Listened { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Tick => self.tick(),
                Timer::Retry => self.choose("retrying"),
                Timer::NextRound => self.next_round(),
                Timer::ConnectTimeout(conn) => {
                    if self.probe_conns.contains_key(&conn) {
                        self.out.close(conn, CloseHow::Abort);
                        self.probe_down(conn, "connect timed out");
                    } else if self.session.as_ref().is_some_and(|s| s.conn == conn) {
                        self.session_lost("connect timed out");
                    }
                }
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<ClientEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::NetError;

    /// Connects made (when, where) and `NoServer` events seen (when, the wait announced).
    type Attempts = (Vec<(Instant, SocketAddr)>, Vec<(Instant, Duration)>);

    /// Drives `client` for `span` with every connect refused at once.
    fn refuse_everything(client: &mut MeshClient, span: Duration) -> Attempts {
        let (mut connects, mut waits) = (Vec::new(), Vec::new());
        let mut now = Instant::ZERO;
        while now <= Instant::ZERO + span {
            while let Some(output) = client.poll_output() {
                match output {
                    Output::Connect { conn, to } => {
                        connects.push((now, to));
                        if connects.len() > 1000 {
                            // Spinning: the caller's count check says so.
                            return (connects, waits);
                        }
                        client.handle_input(now, Input::ConnectFailed { conn, error: NetError::Refused });
                    }
                    Output::Event(ClientEvent::NoServer { retry_in, failures }) => {
                        assert!(failures.iter().all(|(_, why)| why == "connect failed: connection refused"));
                        waits.push((now, retry_in));
                    }
                    _ => {}
                }
            }
            let Some(next) = client.poll_timeout() else { break };
            assert!(next > now, "a deadline at or before now ({next:?} ≤ {now:?}) spins the driver");
            now = next;
            client.handle_timeout(now);
        }
        (connects, waits)
    }

    #[test]
    fn with_every_server_refusing_the_client_backs_off_a_round_at_a_time() {
        let servers: Vec<SocketAddr> = vec!["127.0.0.1:5001".parse().unwrap(), "127.0.0.1:5002".parse().unwrap()];
        for selection in [Selection::InOrder, Selection::fastest()] {
            let config = ClientConfig::new("Z", servers.clone(), selection);
            let (first, max) = (config.retry_first, config.retry_max);
            let mut client = MeshClient::new(Env::new(3), Instant::ZERO, config);
            let span = Duration::from_secs(120);
            let (connects, waits) = refuse_everything(&mut client, span);
            // A few dozen connects in two minutes, not one per poll.
            assert!(connects.len() < 100, "{selection:?}: {} connects in {span:?}", connects.len());
            assert!(waits.len() >= 5, "{selection:?}: {waits:?}");
            // Each wait doubles (within the ±20 % jitter) up to the cap.
            let mut expected = first;
            for (_, wait) in &waits {
                assert!(*wait >= expected.mul_f64(0.8) && *wait <= expected.mul_f64(1.2).min(max), "{waits:?}");
                expected = (expected * 2).min(max);
            }
            for pair in waits.windows(2) {
                let ((at, wait), (next_at, _)) = (pair[0], pair[1]);
                assert!(next_at >= at + wait, "{selection:?}: {waits:?}");
            }
            // Each server is retried on a backoff too (with `Fastest`, its probe's own).
            for server in &servers {
                let times: Vec<Instant> = connects.iter().filter(|(_, s)| s == server).map(|(t, _)| *t).collect();
                for pair in times.windows(2) {
                    let gap = pair[1].saturating_duration_since(pair[0]);
                    assert!(gap >= first.mul_f64(0.8), "{selection:?}: {server} tried again after {gap:?}");
                }
            }
            if selection == Selection::InOrder {
                // Nothing is tried during a wait.
                for (at, wait) in &waits {
                    let quiet = connects.iter().filter(|(t, _)| *t > *at && *t < *at + *wait).count();
                    assert_eq!(quiet, 0, "a connect during the wait after {at:?}");
                }
                // Every round tries every server, in order.
                let after_first_wait: Vec<SocketAddr> =
                    connects.iter().filter(|(t, _)| *t > waits[0].0).map(|(_, s)| *s).take(2).collect();
                assert_eq!(after_first_wait, servers);
            }
        }
    }
}
