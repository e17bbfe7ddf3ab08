//! A hole-punching peer: registers its id at the rendezvous, gets introduced to another
//! peer, punches a direct UDP path to it (or falls back to the rendezvous as a relay), and
//! carries a reliable chat over whichever path it has.
//!
//! **Registration.** The peer draws a random 16-byte token and registers `id` with it,
//! reporting its private endpoints; it refreshes every `refresh_interval` (which also keeps
//! its NAT mapping towards the rendezvous open for relaying). Unanswered, it retries with
//! backoff from 500 ms to 5 s. A refused registration (id taken, rendezvous full) is final:
//! [`PeerEvent::RegistrationRefused`]. A request refused because the rendezvous does not know
//! the peer (it restarted) makes the peer register again and ask for its introduction again;
//! a relay refused for want of an introduction, the latter.
//!
//! **Punching.** On an introduction ([`PunchMsg::PeerInfo`], sent to both sides at once) the
//! peer probes every candidate endpoint of the other — its public endpoint, its private
//! ones, and any endpoint a probe from it arrived from — each probe with a fresh random
//! nonce, at 0, 100, 300, 700 ms, … (the gap doubling up to 1 s) for `punch_for`. A probe is
//! answered with a `ProbeAck` to its observed source; the first acknowledged probe names the
//! direct path (the ack's observed source), and later ones do not replace it. The round
//! still runs to its end, because the other side may need our probes to open its NAT.
//! Candidates equal to one of our own endpoints are skipped, and peer datagrams from them
//! ignored: two LANs often use the same private addresses.
//!
//! Each round also sends one probe through the relay, which nobody acknowledges: if the
//! other side's introduction was lost, a relayed datagram of a session it does not know
//! makes it ask the rendezvous for the introduction again.
//!
//! **Relay.** If no probe is acknowledged within `punch_for`, the peer sends through the
//! rendezvous ([`PathKind::Relayed`]) and tries to punch again every `upgrade_interval`;
//! a direct path found later replaces the relay.
//!
//! **Keepalive.** On a direct path the peer sends a probe whenever it has sent nothing for
//! `keepalive_interval` (≤ 15 s keeps NAT mappings open); a path it has heard nothing on for
//! `path_timeout` is dead: the peer falls back to the relay and punches again.
//!
//! **Chat.** Messages go through a [`channel`](super::channel): numbered, acknowledged and
//! resent, so none is lost or duplicated across loss or a change of path. One peer is
//! talked to at a time: an introduction to another peer that this peer asked for ends the
//! chat with the first ([`PeerEvent::Abandoned`] counts what was still unacknowledged).
//!
//! **One session at a time.** An introduction to another peer that this peer did *not* ask
//! for, while it is in a session, is declined ([`PunchMsg::Decline`], [`PeerEvent::Declined`]):
//! nobody but the user takes a live session over. The rendezvous normally refuses such a
//! `Connect` itself; the decline covers a rendezvous that forgot the session (it restarted).
//! When the other side leaves — it quits, expires, or is introduced to a peer it asked for —
//! the rendezvous says so ([`PunchMsg::PeerLeft`]) and the session and its chat end
//! ([`PeerEvent::PeerLeft`]); a session this peer asked for and the other declined ends as a
//! failed connect. After [`Peer::leave`] the machine does nothing more.
//!
//! **Caps.** Candidates per introduction: [`MAX_CANDIDATES`] (further peer-reflexive ones are
//! ignored); outstanding probe nonces: [`MAX_PROBES`] (oldest forgotten); unacknowledged
//! messages: `max_unacked` ([`Peer::send`] refuses more).

use super::channel::{QueueFull, Receiver, Sender};
use crate::id::SocketId;
use crate::machine::{Input, Machine, Output, OutputQueue};
use crate::rng::Rng;
use crate::time::{Clock, Instant};
use crate::wire::punch::{
    busy_reason, is_valid_body, is_valid_name, Cookie, LeaveReason, PunchMsg, RefusalCode, Token, COOKIE_LEN, MAX_BODY,
    MAX_PRIVATE, PEER, TOKEN_LEN,
};
use crate::Env;
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Candidate endpoints probed per introduction.
pub const MAX_CANDIDATES: usize = 16;
/// Probe nonces remembered while waiting for their acknowledgement.
pub const MAX_PROBES: usize = 64;
/// `Connect` requests sent (one a second) before giving up on an unanswering rendezvous.
pub const CONNECT_TRIES: u32 = 5;

const FIRST_PROBE_GAP: Duration = Duration::from_millis(100);
const MAX_PROBE_GAP: Duration = Duration::from_secs(1);
const FIRST_REGISTER_BACKOFF: Duration = Duration::from_millis(500);
const MAX_REGISTER_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// Settings of a [`Peer`].
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The id to register (1–32 bytes, no whitespace).
    pub id: String,
    /// The rendezvous server's address.
    pub rendezvous: SocketAddr,
    /// The UDP socket the driver binds for it.
    pub socket: SocketId,
    /// This peer's own endpoints (its socket's address on each local network), reported to
    /// the rendezvous so peers on the same network can reach it directly. At most
    /// [`MAX_PRIVATE`].
    pub private: Vec<SocketAddr>,
    /// How often the registration is refreshed.
    pub refresh_interval: Duration,
    /// How long one round of punching lasts before the relay takes over.
    pub punch_for: Duration,
    /// How often a relayed peer tries to punch a direct path again.
    pub upgrade_interval: Duration,
    /// A direct path idle this long gets a keepalive probe.
    pub keepalive_interval: Duration,
    /// A direct path silent this long is dead.
    pub path_timeout: Duration,
    /// Most messages waiting for an acknowledgement.
    pub max_unacked: usize,
    /// Whether to fall back to the relay at all.
    pub relay: bool,
}

impl PeerConfig {
    /// Defaults for `id` at `rendezvous`: refresh 15 s, punch 5 s, upgrade every 30 s,
    /// keepalive 5 s, path timeout 15 s, 256 unacknowledged messages, relay on.
    pub fn new(id: impl Into<String>, rendezvous: SocketAddr) -> PeerConfig {
        PeerConfig {
            id: id.into(),
            rendezvous,
            socket: SocketId(0),
            private: Vec::new(),
            refresh_interval: Duration::from_secs(15),
            punch_for: Duration::from_secs(5),
            upgrade_interval: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(5),
            path_timeout: Duration::from_secs(15),
            max_unacked: 256,
            relay: true,
        }
    }
}

/// How a peer reaches the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// Straight to the other peer's endpoint.
    Direct,
    /// Through the rendezvous server.
    Relayed,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        })
    }
}

/// What a [`Peer`] tells its embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The rendezvous registered the id; `public` is the endpoint it saw. Reported the
    /// first time and whenever it changes.
    Registered {
        /// The public endpoint.
        public: SocketAddr,
    },
    /// The rendezvous refused the registration (e.g. the id is taken). Final: the peer
    /// stops trying.
    RegistrationRefused {
        /// Why.
        reason: String,
    },
    /// The rendezvous stopped answering refreshes; the peer keeps trying.
    RendezvousSilent,
    /// The rendezvous refused a connect (to the peer's own id); other refusals are handled
    /// inside (registering or connecting again) or are final ([`PeerEvent::RegistrationRefused`]).
    Refused {
        /// Why.
        reason: String,
    },
    /// A connect could not be served.
    ConnectFailed {
        /// The peer asked for.
        dest: String,
        /// Why.
        reason: String,
    },
    /// The rendezvous introduced a peer; punching starts.
    Introduced {
        /// The other peer.
        peer: String,
        /// Its public endpoint.
        public: SocketAddr,
    },
    /// A path to the peer formed or changed.
    Connected {
        /// The other peer.
        peer: String,
        /// Its endpoint (for a relayed path, its public endpoint).
        addr: SocketAddr,
        /// Direct or relayed.
        path: PathKind,
    },
    /// A direct path went silent for `path_timeout`.
    PathLost {
        /// The other peer.
        peer: String,
        /// The dead path's endpoint.
        addr: SocketAddr,
    },
    /// A chat message arrived (each exactly once, in order).
    Message {
        /// The sender.
        from: String,
        /// The text.
        body: String,
    },
    /// The chat with `peer` ended for an introduction to another peer, with `unacked`
    /// messages never acknowledged.
    Abandoned {
        /// The previous peer.
        peer: String,
        /// Messages it may not have received.
        unacked: usize,
    },
    /// The other side of the session left it, with `unacked` messages never acknowledged;
    /// the chat with it is over.
    PeerLeft {
        /// The peer that left.
        peer: String,
        /// Why.
        why: LeaveReason,
        /// Messages it may not have received.
        unacked: usize,
    },
    /// An introduction to `peer`, which this peer did not ask for, was declined: this peer
    /// is in a session with `busy_with`.
    Declined {
        /// The peer that asked for this one.
        peer: String,
        /// The peer of the session that goes on.
        busy_with: String,
    },
    /// A datagram that is not a valid punch message was dropped.
    BadDatagram {
        /// Its source.
        from: SocketAddr,
        /// What was wrong.
        error: String,
    },
}

/// Why a [`Peer`] command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Not a valid peer id.
    #[error("invalid peer id {0:?}: 1-32 bytes, no spaces")]
    InvalidId(String),
    /// A peer cannot connect to itself.
    #[error("{0} is this peer's own id")]
    OwnId(String),
    /// No peer has been introduced yet.
    #[error("not connected to a peer yet (CONNECT <my_id> <dest_id> first)")]
    NoPeer,
    /// The message is longer than [`MAX_BODY`].
    #[error("message of {0} bytes is too long (at most {MAX_BODY})")]
    TooLong(usize),
    /// Too many messages wait for acknowledgement.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
}

/// Where a peer-to-peer message came from, and so where its answer goes; also the path to
/// the peer (a session's `path: Option<Via>`, `None` until one forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct(SocketAddr),
    Relay,
}

#[derive(Debug)]
struct Punch {
    until: Instant,
    next_probe: Instant,
    gap: Duration,
}

#[derive(Debug)]
struct Session {
    peer: String,
    id: u64,
    public: SocketAddr,
    candidates: Vec<SocketAddr>,
    path: Option<Via>,
    punch: Option<Punch>,
    /// Nonces of probes awaiting acknowledgement, with when they were sent.
    probes: VecDeque<(u64, Instant)>,
    last_heard: Instant,
    last_sent: Instant,
    next_upgrade: Option<Instant>,
}

#[derive(Debug)]
struct PendingConnect {
    dest: String,
    tries: u32,
    next: Instant,
}

#[derive(Debug)]
struct Chat {
    peer: String,
    sender: Sender,
    receiver: Receiver,
}

/// The hole-punching peer machine. Bind one UDP socket as [`PeerConfig::socket`] and feed
/// it every datagram; drive it with [`Peer::connect`] and [`Peer::send`].
#[derive(Debug)]
pub struct Peer {
    config: PeerConfig,
    rng: Rng,
    token: Token,
    /// The cookie of the rendezvous's last `Verify`, sent in every `Register`.
    cookie: Cookie,
    clock: Clock,
    out: OutputQueue<PeerEvent>,
    public: Option<SocketAddr>,
    refused: bool,
    /// [`Peer::leave`] was called: the machine is inert.
    left: bool,
    /// `Register`s sent; `None` once the rendezvous answered one.
    unanswered_registers: Option<u32>,
    next_register: Instant,
    register_backoff: Duration,
    last_answer: Option<Instant>,
    pending: Option<PendingConnect>,
    session: Option<Session>,
    chat: Option<Chat>,
    /// The introduction declined last, so that declining it again is not reported again.
    last_declined: Option<(String, u64)>,
}

impl Peer {
    /// A peer that registers at once. Panics on a caller bug: an invalid id or more than
    /// [`MAX_PRIVATE`] private endpoints (check ids with
    /// [`is_valid_name`] first).
    pub fn new(mut env: Env, now: Instant, config: PeerConfig) -> Peer {
        assert!(is_valid_name(&config.id), "invalid peer id {:?}", config.id);
        assert!(config.private.len() <= MAX_PRIVATE, "more than {MAX_PRIVATE} private endpoints");
        let mut token = [0; TOKEN_LEN];
        env.rng.fill_bytes(&mut token);
        Peer {
            config,
            rng: env.rng,
            token,
            cookie: [0; COOKIE_LEN],
            clock: Clock::new(now),
            out: OutputQueue::default(),
            public: None,
            refused: false,
            left: false,
            unanswered_registers: Some(0),
            next_register: now,
            register_backoff: FIRST_REGISTER_BACKOFF,
            last_answer: None,
            pending: None,
            session: None,
            chat: None,
            last_declined: None,
        }
    }

    /// The peer's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The public endpoint the rendezvous last confirmed, if registered.
    pub fn public(&self) -> Option<SocketAddr> {
        self.public
    }

    /// The current peer, its endpoint and the kind of path, if a path exists.
    pub fn path(&self) -> Option<(&str, SocketAddr, PathKind)> {
        let s = self.session.as_ref()?;
        match s.path {
            None => None,
            Some(Via::Direct(addr)) => Some((&s.peer, addr, PathKind::Direct)),
            Some(Via::Relay) => Some((&s.peer, s.public, PathKind::Relayed)),
        }
    }

    /// The current session's peer and session number, from its introduction until it ends
    /// (whether or not a path formed).
    pub fn session(&self) -> Option<(&str, u64)> {
        self.session.as_ref().map(|s| (s.peer.as_str(), s.id))
    }

    /// How many `Register`s went out, if the rendezvous has never answered one (neither
    /// registered nor refused it): `None` once it has.
    pub fn unanswered_registers(&self) -> Option<u32> {
        self.unanswered_registers
    }

    /// Messages sent but not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.chat.as_ref().map_or(0, |c| c.sender.unacked())
    }

    /// Asks the rendezvous to introduce `dest` (sent once registered; retried each second,
    /// [`CONNECT_TRIES`] times).
    pub fn connect(&mut self, now: Instant, dest: &str) -> Result<(), PeerError> {
        let now = self.clock.advance(now);
        if !is_valid_name(dest) {
            return Err(PeerError::InvalidId(dest.to_owned()));
        }
        if dest == self.config.id {
            return Err(PeerError::OwnId(dest.to_owned()));
        }
        self.pending = Some(PendingConnect { dest: dest.to_owned(), tries: 0, next: now });
        self.tick(now);
        Ok(())
    }

    /// Sends one chat message to the current peer; it is resent until acknowledged. Queued
    /// while no path exists yet. Returns its sequence number.
    pub fn send(&mut self, now: Instant, body: &str) -> Result<u64, PeerError> {
        let now = self.clock.advance(now);
        if !is_valid_body(body) {
            return Err(PeerError::TooLong(body.len()));
        }
        let chat = self.chat.as_mut().ok_or(PeerError::NoPeer)?;
        let seq = chat.sender.push(now, body.to_owned())?;
        self.tick(now);
        Ok(seq)
    }

    /// Tells the rendezvous the id is free (best effort: one datagram), which also tells
    /// the peer of the session that this one left. From then on the machine ignores every
    /// input and sends nothing: answering a datagram still in flight (say, a relayed one
    /// the rendezvous now refuses) would register the id again for a peer that is gone.
    /// Call before dropping the machine.
    pub fn leave(&mut self, now: Instant) {
        self.clock.advance(now);
        if self.public.is_some() && !self.left {
            let msg = PunchMsg::Unregister { token: self.token, id: self.config.id.clone() };
            self.transmit(self.config.rendezvous, msg);
        }
        self.left = true;
    }

    fn transmit(&mut self, to: SocketAddr, msg: PunchMsg) {
        self.out.push(Output::Transmit { socket: self.config.socket, to, bytes: msg.to_bytes() });
    }

    /// Sends a peer-to-peer message on `via`.
    fn send_via(&mut self, via: Via, msg: PunchMsg) {
        match via {
            Via::Direct(addr) => {
                if let Some(s) = self.session.as_mut().filter(|s| s.path == Some(Via::Direct(addr))) {
                    s.last_sent = self.clock.now();
                }
                self.transmit(addr, msg);
            }
            Via::Relay => {
                let Some(peer) = self.session.as_ref().map(|s| s.peer.clone()) else { return };
                let relay = PunchMsg::RelayTo {
                    token: self.token,
                    from: self.config.id.clone(),
                    to: peer,
                    inner: msg.to_bytes(),
                };
                self.transmit(self.config.rendezvous, relay);
            }
        }
    }

    /// Where messages to the peer go now, if anywhere (not through a rendezvous that
    /// does not know us at the moment).
    fn current_via(&self) -> Option<Via> {
        match self.session.as_ref()?.path {
            Some(Via::Relay) if !self.can_relay() => None,
            path => path,
        }
    }

    fn set_path(&mut self, now: Instant, path: Option<Via>) {
        let Some(s) = self.session.as_mut() else { return };
        if s.path == path {
            return;
        }
        s.path = path;
        let (peer, addr, kind) = match path {
            None => return,
            Some(Via::Direct(addr)) => {
                // The punch round, if any, runs to its end: the other side may still need
                // our probes to open its NAT towards us.
                s.last_heard = now;
                s.last_sent = now;
                s.next_upgrade = None;
                (s.peer.clone(), addr, PathKind::Direct)
            }
            Some(Via::Relay) => {
                s.next_upgrade = Some(now + self.config.upgrade_interval);
                (s.peer.clone(), s.public, PathKind::Relayed)
            }
        };
        self.out.event(PeerEvent::Connected { peer, addr, path: kind });
        if let Some(chat) = self.chat.as_mut() {
            chat.sender.resend_all(now);
        }
    }

    fn start_punch(&mut self, now: Instant) {
        let Some(s) = self.session.as_mut() else { return };
        s.punch = Some(Punch { until: now + self.config.punch_for, next_probe: now, gap: FIRST_PROBE_GAP });
        // One probe through the relay as well: if the other side's introduction was lost,
        // a relayed datagram for a session it does not know makes it ask for it again.
        let session = s.id;
        if self.can_relay() {
            let msg = PunchMsg::Probe { session, nonce: self.rng.next_u64() };
            self.send_via(Via::Relay, msg);
        }
    }

    fn probe(&mut self, now: Instant, to: SocketAddr) {
        let nonce = self.rng.next_u64();
        let Some(s) = self.session.as_mut() else { return };
        if s.probes.len() == MAX_PROBES {
            s.probes.pop_front();
        }
        s.probes.push_back((nonce, now));
        let msg = PunchMsg::Probe { session: s.id, nonce };
        self.send_via(Via::Direct(to), msg);
    }

    fn can_relay(&self) -> bool {
        self.config.relay && self.public.is_some()
    }

    // --- timers ---------------------------------------------------------------------------

    fn tick(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.tick_registration(now);
        self.tick_connect(now);
        self.tick_session(now);
        self.flush_chat(now);
    }

    fn tick_registration(&mut self, now: Instant) {
        if self.refused {
            return;
        }
        if let (Some(_), Some(last)) = (self.public, self.last_answer) {
            if now.saturating_duration_since(last) >= self.config.refresh_interval * 3 {
                self.public = None;
                self.register_backoff = FIRST_REGISTER_BACKOFF;
                self.next_register = now;
                self.out.event(PeerEvent::RendezvousSilent);
            }
        }
        if now < self.next_register {
            return;
        }
        let msg = PunchMsg::Register {
            token: self.token,
            cookie: self.cookie,
            id: self.config.id.clone(),
            private: self.config.private.clone(),
        };
        self.transmit(self.config.rendezvous, msg);
        if let Some(sent) = self.unanswered_registers.as_mut() {
            *sent = sent.saturating_add(1);
        }
        if self.public.is_some() {
            self.next_register = now + self.config.refresh_interval;
        } else {
            self.next_register = now + self.register_backoff;
            self.register_backoff = (self.register_backoff * 2).min(MAX_REGISTER_BACKOFF);
        }
    }

    fn tick_connect(&mut self, now: Instant) {
        if self.public.is_none() {
            return;
        }
        let Some(p) = self.pending.as_mut().filter(|p| p.next <= now) else { return };
        if p.tries == CONNECT_TRIES {
            let dest = p.dest.clone();
            self.pending = None;
            let reason = "the rendezvous did not answer".to_owned();
            return self.out.event(PeerEvent::ConnectFailed { dest, reason });
        }
        p.tries += 1;
        p.next = now + CONNECT_RETRY;
        let msg = PunchMsg::Connect { token: self.token, id: self.config.id.clone(), dest: p.dest.clone() };
        self.transmit(self.config.rendezvous, msg);
    }

    fn tick_session(&mut self, now: Instant) {
        let can_relay = self.can_relay();
        let Some(s) = self.session.as_mut() else { return };
        // A dead direct path: fall back and punch again.
        if let Some(Via::Direct(addr)) = s.path {
            if now >= s.last_heard + self.config.path_timeout {
                self.out.event(PeerEvent::PathLost { peer: s.peer.clone(), addr });
                self.set_path(now, can_relay.then_some(Via::Relay));
                self.start_punch(now);
            } else if now >= s.last_sent + self.config.keepalive_interval {
                self.probe(now, addr);
            }
        }
        let Some(s) = self.session.as_mut() else { return };
        // Time to try upgrading a relayed path.
        if s.path == Some(Via::Relay) && s.punch.is_none() && s.next_upgrade.is_some_and(|at| at <= now) {
            s.next_upgrade = None;
            self.start_punch(now);
        }
        let Some(s) = self.session.as_mut() else { return };
        let Some(punch) = s.punch.as_mut() else { return };
        if now >= punch.until {
            s.punch = None;
            match s.path {
                None if can_relay => self.set_path(now, Some(Via::Relay)),
                None | Some(Via::Relay) => s.next_upgrade = Some(now + self.config.upgrade_interval),
                Some(Via::Direct(_)) => {}
            }
            return;
        }
        if now < punch.next_probe {
            return;
        }
        punch.next_probe = now + punch.gap;
        punch.gap = (punch.gap * 2).min(MAX_PROBE_GAP);
        for to in s.candidates.clone() {
            self.probe(now, to);
        }
    }

    fn flush_chat(&mut self, now: Instant) {
        let Some(via) = self.current_via() else { return };
        let Some(session) = self.session.as_ref().map(|s| s.id) else { return };
        let Some(chat) = self.chat.as_mut() else { return };
        let epoch = chat.sender.epoch();
        for (seq, body) in chat.sender.due(now) {
            self.send_via(via, PunchMsg::Data { session, epoch, seq, body });
        }
    }

    // --- datagrams ------------------------------------------------------------------------

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let msg = match PunchMsg::from_datagram(Bytes::copy_from_slice(bytes)) {
            Ok(msg) => msg,
            Err(e) => return self.out.event(PeerEvent::BadDatagram { from, error: e.to_string() }),
        };
        if msg.kind().0 == PEER {
            if self.config.private.contains(&from) {
                return; // our own probe, sent to a private address that turned out to be ours
            }
            return self.on_peer_msg(now, Via::Direct(from), msg);
        }
        if from != self.config.rendezvous {
            let error = "rendezvous message from an address that is not the rendezvous".to_owned();
            return self.out.event(PeerEvent::BadDatagram { from, error });
        }
        match msg {
            PunchMsg::Registered { id, public } if id == self.config.id && !self.refused => {
                self.unanswered_registers = None;
                self.last_answer = Some(now);
                self.register_backoff = FIRST_REGISTER_BACKOFF;
                if self.public != Some(public) {
                    if self.public.is_none() {
                        self.next_register = now + self.config.refresh_interval;
                    }
                    self.public = Some(public);
                    self.out.event(PeerEvent::Registered { public });
                }
            }
            PunchMsg::Refused { code, reason, .. } => self.on_refused(now, code, reason),
            PunchMsg::Verify { cookie } => {
                // The rendezvous wants proof that we receive here (we are new, our NAT
                // mapping moved, or it forgot us): register again at once with the cookie.
                // A pending connect waits for the registration; a relay it forgot says
                // "not introduced", which asks for the introduction again.
                self.cookie = cookie;
                self.public = None;
                self.next_register = now;
                self.register_backoff = FIRST_REGISTER_BACKOFF;
            }
            PunchMsg::ConnectFailed { dest, reason } => {
                if self.pending.as_ref().is_some_and(|p| p.dest == dest) {
                    self.pending = None;
                }
                self.out.event(PeerEvent::ConnectFailed { dest, reason });
            }
            PunchMsg::PeerInfo { peer, session, public, private } => {
                self.on_introduction(now, peer, session, public, private)
            }
            PunchMsg::PeerLeft { peer, session, why } => self.on_peer_left(peer, session, why),
            PunchMsg::RelayedFrom { from: peer, inner } => self.on_relayed(now, peer, inner),
            other => {
                let error = format!("unexpected {:?} from the rendezvous", other.kind());
                self.out.event(PeerEvent::BadDatagram { from, error });
            }
        }
    }

    fn on_refused(&mut self, now: Instant, code: RefusalCode, reason: String) {
        match code {
            RefusalCode::Taken | RefusalCode::Full => {
                self.unanswered_registers = None;
                if !self.refused {
                    self.refused = true;
                    self.public = None;
                    self.out.event(PeerEvent::RegistrationRefused { reason });
                }
            }
            RefusalCode::NotRegistered => {
                // The rendezvous forgot us (it restarted, or we expired): register again at
                // once, and ask for the introduction again, which it forgot too.
                if self.public.take().is_some() {
                    self.next_register = now;
                    self.register_backoff = FIRST_REGISTER_BACKOFF;
                }
                self.reintroduce(now);
            }
            RefusalCode::NotIntroduced => self.reintroduce(now),
            RefusalCode::OwnId => self.out.event(PeerEvent::Refused { reason }),
        }
    }

    /// Asks the rendezvous to introduce the current peer again (sent once registered).
    fn reintroduce(&mut self, now: Instant) {
        if self.pending.is_none() {
            if let Some(peer) = self.session.as_ref().map(|s| s.peer.clone()) {
                self.pending = Some(PendingConnect { dest: peer, tries: 0, next: now });
            }
        }
    }

    fn on_introduction(&mut self, now: Instant, peer: String, id: u64, public: SocketAddr, private: Vec<SocketAddr>) {
        if peer == self.config.id {
            let (from, error) = (self.config.rendezvous, "introduced to itself".to_owned());
            return self.out.event(PeerEvent::BadDatagram { from, error });
        }
        let asked = self.pending.as_ref().is_some_and(|p| p.dest == peer);
        if asked {
            self.pending = None;
        }
        if self.session.as_ref().is_some_and(|s| s.peer != peer) && !asked {
            // Only the user changes sessions: whoever asked for this one is told we are busy.
            return self.decline(peer, id);
        }
        if let Some(s) = self.session.as_mut().filter(|s| s.peer == peer && s.id == id) {
            // The same introduction again (both sides connected, or a retry): punch again
            // only if nothing works yet.
            if s.path.is_none() && s.punch.is_none() {
                self.start_punch(now);
            }
            return;
        }
        if self.chat.as_ref().is_some_and(|c| c.peer != peer) {
            let old = self.chat.take().expect("checked");
            let unacked = old.sender.unacked();
            self.out.event(PeerEvent::Abandoned { peer: old.peer, unacked });
        }
        if self.chat.is_none() {
            let sender = Sender::new(self.rng.next_u64(), self.config.max_unacked);
            self.chat = Some(Chat { peer: peer.clone(), sender, receiver: Receiver::new() });
        }
        let mut candidates = Vec::new();
        for addr in std::iter::once(public).chain(private) {
            // An endpoint of our own (the other LAN reuses our private addresses) would
            // only ever answer our own probes.
            if !candidates.contains(&addr) && !self.config.private.contains(&addr) && candidates.len() < MAX_CANDIDATES
            {
                candidates.push(addr);
            }
        }
        self.out.event(PeerEvent::Introduced { peer: peer.clone(), public });
        self.session = Some(Session {
            peer,
            id,
            public,
            candidates,
            path: None,
            punch: None,
            probes: VecDeque::new(),
            last_heard: now,
            last_sent: now,
            next_upgrade: None,
        });
        self.start_punch(now);
    }

    /// Asks the rendezvous to end `session` with `peer`, which this peer will not be in
    /// while in its own; reported once per declined session (a decline is sent again for
    /// each relayed datagram of it, in case the first was lost).
    fn decline(&mut self, peer: String, session: u64) {
        let Some(busy_with) = self.session.as_ref().map(|s| s.peer.clone()) else { return };
        let msg = PunchMsg::Decline { token: self.token, id: self.config.id.clone(), peer: peer.clone(), session };
        self.transmit(self.config.rendezvous, msg);
        if self.last_declined.as_ref() != Some(&(peer.clone(), session)) {
            self.last_declined = Some((peer.clone(), session));
            self.out.event(PeerEvent::Declined { peer, busy_with });
        }
    }

    /// The rendezvous says `peer` left `session`: if that is the current session, it ends
    /// (a `PeerLeft` of an older session, late or duplicated, changes nothing).
    fn on_peer_left(&mut self, peer: String, session: u64, why: LeaveReason) {
        if !self.session.as_ref().is_some_and(|s| s.peer == peer && s.id == session) {
            return;
        }
        self.session = None;
        if self.pending.as_ref().is_some_and(|p| p.dest == peer) {
            self.pending = None;
        }
        let unacked = self.chat.take_if(|c| c.peer == peer).map_or(0, |c| c.sender.unacked());
        let event = match why {
            // The introduction we asked for was declined: the connect failed.
            LeaveReason::Busy => PeerEvent::ConnectFailed { reason: busy_reason(&peer), dest: peer },
            why => PeerEvent::PeerLeft { peer, why, unacked },
        };
        self.out.event(event);
    }

    fn on_relayed(&mut self, now: Instant, peer: String, inner: Bytes) {
        if peer == self.config.id {
            return;
        }
        if self.session.is_none() {
            // The other side was introduced and we missed our introduction (it was lost):
            // ask for it. The rendezvous relays only within a session it introduced.
            if self.pending.is_none() {
                self.pending = Some(PendingConnect { dest: peer, tries: 0, next: now });
            }
            return;
        }
        let msg = match PunchMsg::from_datagram(inner) {
            Ok(msg) if msg.kind().0 == PEER => msg,
            Ok(_) | Err(_) => {
                let from = self.config.rendezvous;
                let error = format!("relayed datagram from {peer} is not a peer-to-peer message");
                return self.out.event(PeerEvent::BadDatagram { from, error });
            }
        };
        if self.session.as_ref().is_some_and(|s| s.peer != peer) {
            // The rendezvous relays only within a session it thinks live. If we asked for
            // `peer`, our introduction was lost and the retried `Connect` brings it again;
            // if not, the rendezvous missed our `Decline` (or the introduction we would
            // have declined was lost): decline again.
            if !self.pending.as_ref().is_some_and(|p| p.dest == peer) {
                self.decline(peer, msg.peer_session().expect("a peer-to-peer message"));
            }
            return;
        }
        self.on_peer_msg(now, Via::Relay, msg)
    }

    fn on_peer_msg(&mut self, now: Instant, via: Via, msg: PunchMsg) {
        let Some(s) = self.session.as_mut() else { return };
        let session = msg.peer_session().expect("only peer messages come here");
        if session != s.id {
            return;
        }
        if let Via::Direct(addr) = via {
            if s.path == Some(Via::Direct(addr)) {
                s.last_heard = now;
            }
        }
        match msg {
            PunchMsg::Probe { nonce, .. } => {
                let Via::Direct(addr) = via else { return };
                if !s.candidates.contains(&addr) && s.candidates.len() < MAX_CANDIDATES {
                    // Peer-reflexive: the peer's NAT showed us a new endpoint of it.
                    s.candidates.push(addr);
                }
                if !matches!(s.path, Some(Via::Direct(_))) && s.punch.is_none() {
                    // The peer is punching (e.g. trying to upgrade): punch with it, so both
                    // NATs open their side.
                    self.start_punch(now);
                }
                self.send_via(via, PunchMsg::ProbeAck { session, nonce });
            }
            PunchMsg::ProbeAck { nonce, .. } => {
                let Via::Direct(addr) = via else { return };
                let Some(i) = s.probes.iter().position(|&(n, _)| n == nonce) else { return };
                let (_, sent) = s.probes.remove(i).expect("found");
                let direct_already = matches!(s.path, Some(Via::Direct(_)));
                if let Some(chat) = self.chat.as_mut() {
                    chat.sender.observe_rtt(now.saturating_duration_since(sent));
                }
                if !direct_already {
                    self.set_path(now, Some(Via::Direct(addr)));
                }
            }
            PunchMsg::Data { epoch, seq, body, .. } => {
                if via == Via::Relay && s.path.is_none() && self.can_relay() {
                    // The other side gave up punching first: the relay works, so use it
                    // too (our own punch round goes on and may still upgrade the path).
                    self.set_path(now, Some(Via::Relay));
                }
                let Some(s) = self.session.as_mut() else { return };
                let peer = s.peer.clone();
                let Some(chat) = self.chat.as_mut() else { return };
                let (deliver, (epoch, next)) = chat.receiver.on_data(epoch, seq, body);
                for body in deliver {
                    self.out.event(PeerEvent::Message { from: peer.clone(), body });
                }
                self.send_via(via, PunchMsg::Ack { session, epoch, next });
            }
            PunchMsg::Ack { epoch, next, .. } => {
                if let Some(chat) = self.chat.as_mut() {
                    chat.sender.on_ack(epoch, next);
                }
            }
            _ => unreachable!("only peer messages come here"),
        }
    }
}

impl Machine for Peer {
    type Event = PeerEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        let now = self.clock.advance(now);
        if let Input::Datagram { socket, from, bytes } = input {
            if socket == self.config.socket && !self.left {
                self.on_datagram(now, from, bytes);
            }
        }
        self.tick(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        self.tick(now);
    }

    fn poll_output(&mut self) -> Option<Output<PeerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        if !self.refused {
            consider(Some(self.next_register));
            if let (Some(_), Some(last)) = (self.public, self.last_answer) {
                consider(Some(last + self.config.refresh_interval * 3));
            }
        }
        if self.public.is_some() {
            consider(self.pending.as_ref().map(|p| p.next));
        }
        if let Some(s) = &self.session {
            if let Some(p) = &s.punch {
                consider(Some(p.next_probe.min(p.until)));
            }
            if s.path == Some(Via::Relay) && s.punch.is_none() {
                consider(s.next_upgrade);
            }
            if let Some(Via::Direct(_)) = s.path {
                consider(Some(s.last_heard + self.config.path_timeout));
                consider(Some(s.last_sent + self.config.keepalive_interval));
            }
            if self.current_via().is_some() {
                consider(self.chat.as_ref().and_then(|c| c.sender.next_due()));
            }
        }
        next
    }
}
