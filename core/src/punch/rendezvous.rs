//! The rendezvous server: peers register their ids here, ask to be introduced, and fall
//! back to it as a relay when no direct path forms.
//!
//! **What it trusts.** A peer's public endpoint is always the observed source of its
//! `Register`, never anything the datagram claims. A registration is bound to the 16-byte
//! token the peer chose: a `Register` for a live id with another token is refused ("id is
//! taken"), and `Connect`, `RelayTo`, `Unregister` and `Decline` must carry the id's
//! token, so nobody who does not know it can take over, re-point, speak for the id or end
//! its session. (An on-path observer who sees the token can; the protocol has no
//! encryption.)
//!
//! **No reflection, no amplification.** UDP sources can be forged, so the rendezvous never
//! sends a source that has not proved its address more bytes than that source sent it. A
//! source proves its address by echoing a cookie ([`super::cookie`]): a `Register` from an
//! address that is not already the id's registered endpoint (a new registration, or a NAT
//! mapping that moved) is answered only with `Verify { cookie }`, smaller than any request,
//! and takes effect when it comes again carrying that cookie. So every registered endpoint
//! has proved it receives there, and the introductions, relayed datagrams and `PeerLeft`s
//! sent to registered endpoints go only to addresses that asked for them. A `Connect` or
//! `RelayTo` with the right token from another address than the id's endpoint gets a
//! `Verify` too (re-register from there first); a refusal longer than the request it
//! answers, to an address that is not the id's endpoint, becomes a `Verify`; a `Decline`
//! with a wrong token goes unanswered.
//!
//! **Limits**, each with its policy when reached:
//! - registrations: at most [`RendezvousConfig::max_registrations`]; a new id past the cap
//!   is refused ("rendezvous is full"); each expires [`RendezvousConfig::registration_ttl`]
//!   after its last `Register` (peers refresh well before).
//! - per source IP: a token bucket of [`RendezvousConfig::source_burst`] datagrams refilling
//!   at [`RendezvousConfig::source_rate`] per second; datagrams over it are dropped unread.
//!   At most [`RendezvousConfig::max_sources`] buckets: a full bucket is forgotten when room
//!   is needed (it holds nothing a new one would not); if every bucket is in use, datagrams
//!   from new sources are dropped until one refills.
//! - relay: only between the two peers of a live session (below); each datagram at most
//!   [`MAX_INNER`] bytes (the codec refuses more) and each sender's relayed bytes through a
//!   bucket of [`RendezvousConfig::relay_burst`] bytes refilling at
//!   [`RendezvousConfig::relay_rate`] bytes per second; over it, dropped (the peers' reliable
//!   channel resends).
//! - sessions: each registration is in at most one (it names its partner), so the table of
//!   sessions is bounded by the registrations.
//!
//! **Sessions.** An introduction names a session (a random u64) that both peers put in every
//! peer-to-peer datagram, and puts both registrations in it: the session is *live* while
//! each names the other as its partner. Introducing the two peers of a live session again
//! gives the same session, so two peers that `CONNECT` each other at once agree on one. A
//! peer in a live session belongs to it: a `Connect` for it from a third peer is refused
//! ("busy in another session") without a word to it or its partner, and without telling
//! the asker its endpoints. The session ends when either peer unregisters, expires, is
//! introduced to another peer it asked for, or declines the introduction (a peer declines
//! one it did not ask for while it is in a session this rendezvous forgot, e.g. across a
//! restart); the other peer is told at once with a `PeerLeft` (one datagram, best effort:
//! if it is lost, that peer's relayed datagrams are refused from then on and its next
//! `Connect` learns that its partner is busy or gone).

use super::cookie::Cookies;
use super::limit::TokenBucket;
use crate::id::SocketId;
use crate::machine::{Input, Machine, Output, OutputQueue};
use crate::rng::Rng;
use crate::time::{Clock, Instant};
use crate::wire::punch::{busy_reason, Cookie, LeaveReason, PunchMsg, RefusalCode, Token, MAX_DATAGRAM, MAX_INNER};
use crate::Env;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Settings of a [`Rendezvous`].
#[derive(Debug, Clone)]
pub struct RendezvousConfig {
    /// The UDP socket the driver binds for it.
    pub socket: SocketId,
    /// A registration not refreshed for this long is forgotten.
    pub registration_ttl: Duration,
    /// Most ids registered at once.
    pub max_registrations: usize,
    /// Datagrams per second each source IP may send, sustained.
    pub source_rate: u32,
    /// Datagrams a source IP may send in a burst.
    pub source_burst: u32,
    /// Most source IPs tracked for rate limiting.
    pub max_sources: usize,
    /// Relayed bytes per second each peer may send, sustained.
    pub relay_rate: u32,
    /// Relayed bytes a peer may send in a burst.
    pub relay_burst: u32,
}

impl Default for RendezvousConfig {
    fn default() -> Self {
        RendezvousConfig {
            socket: SocketId(0),
            registration_ttl: Duration::from_secs(60),
            max_registrations: 10_000,
            source_rate: 50,
            source_burst: 200,
            max_sources: 4096,
            relay_rate: 64 * 1024,
            relay_burst: 128 * 1024,
        }
    }
}

/// What a [`Rendezvous`] tells its embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RendezvousEvent {
    /// A new id registered (refreshes are silent).
    Registered {
        /// The id.
        id: String,
        /// Its public endpoint as observed.
        public: SocketAddr,
    },
    /// A registered id's public endpoint changed (its NAT mapping moved), proven by its token.
    Moved {
        /// The id.
        id: String,
        /// The new public endpoint.
        public: SocketAddr,
    },
    /// A source was asked to prove its address (`Verify`) before its request is served:
    /// its first `Register`, or a request from an address that is not its id's endpoint.
    Verifying {
        /// The source.
        from: SocketAddr,
    },
    /// A request was refused and the sender told why (or, to an address not proven, asked
    /// to prove it instead when the refusal would be longer than the request).
    Refused {
        /// Who sent it.
        from: SocketAddr,
        /// The id it was about.
        id: String,
        /// Why.
        reason: String,
    },
    /// A `Connect` was refused: the peer asked for is in a live session with another.
    Busy {
        /// The peer that asked.
        from: String,
        /// The peer it asked for.
        to: String,
        /// The peer `to` is in a session with.
        partner: String,
    },
    /// A session ended and the peer that stays (`told`) was sent a `PeerLeft`.
    SessionEnded {
        /// The peer that left.
        left: String,
        /// The peer that stays.
        told: String,
        /// Why `left` left.
        why: LeaveReason,
    },
    /// Two peers were introduced.
    Introduced {
        /// The peer that asked.
        from: String,
        /// The peer it asked for.
        to: String,
        /// The session they share.
        session: u64,
    },
    /// An id left (unregistered) or expired.
    Forgotten {
        /// The id.
        id: String,
        /// True when it expired rather than left.
        expired: bool,
    },
    /// A source went over its datagram rate; reported once per burst of drops.
    RateLimited {
        /// The source IP.
        source: IpAddr,
    },
    /// A peer went over its relay rate; reported once per burst of drops.
    RelayLimited {
        /// The peer.
        id: String,
    },
    /// A datagram that is not a valid request was dropped.
    BadDatagram {
        /// Who sent it.
        from: SocketAddr,
        /// What was wrong.
        error: String,
    },
}

#[derive(Debug)]
struct Registration {
    token: Token,
    public: SocketAddr,
    private: Vec<SocketAddr>,
    expires: Instant,
    /// The peer of the session this one was last put in, and the session: the session is
    /// live only while that peer names this one back.
    partner: Option<(String, u64)>,
    relay: TokenBucket,
    relay_limited: bool,
}

#[derive(Debug)]
struct SourceLimit {
    bucket: TokenBucket,
    limited: bool,
}

/// The rendezvous server machine. Bind one UDP socket as [`RendezvousConfig::socket`] and
/// feed it every datagram; it has no TCP side.
#[derive(Debug)]
pub struct Rendezvous {
    config: RendezvousConfig,
    rng: Rng,
    clock: Clock,
    out: OutputQueue<RendezvousEvent>,
    registrations: BTreeMap<String, Registration>,
    /// (expiry, id) of every registration, earliest first.
    expiries: BTreeSet<(Instant, String)>,
    sources: BTreeMap<IpAddr, SourceLimit>,
    cookies: Cookies,
    /// Payload bytes relayed between session peers, for operators: it only grows.
    relayed_bytes: u64,
}

impl Rendezvous {
    /// A rendezvous server with no registrations.
    pub fn new(env: Env, now: Instant, config: RendezvousConfig) -> Rendezvous {
        let cookies = Cookies::new(env.secret(b"rendezvous cookie"));
        Rendezvous {
            config,
            cookies,
            rng: env.rng,
            clock: Clock::new(now),
            out: OutputQueue::default(),
            registrations: BTreeMap::new(),
            expiries: BTreeSet::new(),
            sources: BTreeMap::new(),
            relayed_bytes: 0,
        }
    }

    /// Number of registered ids.
    pub fn registrations(&self) -> usize {
        self.registrations.len()
    }

    /// Bytes of the peers' own datagrams relayed so far (within sessions, under the relay
    /// rate): the load the relay fallback puts on this server.
    pub fn relayed_bytes(&self) -> u64 {
        self.relayed_bytes
    }

    /// The public endpoint registered for `id`, if it is registered.
    pub fn endpoint_of(&self, id: &str) -> Option<SocketAddr> {
        self.registrations.get(id).map(|r| r.public)
    }

    /// Number of source IPs tracked for rate limiting.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    fn send(&mut self, to: SocketAddr, msg: PunchMsg) {
        self.out.push(Output::Transmit { socket: self.config.socket, to, bytes: msg.to_bytes() });
    }

    fn refuse(&mut self, to: SocketAddr, id: &str, code: RefusalCode, reason: String) {
        self.out.event(RendezvousEvent::Refused { from: to, id: id.to_owned(), reason: reason.clone() });
        self.send(to, PunchMsg::Refused { id: id.to_owned(), code, reason });
    }

    /// Asks `to` to prove its address: a `Verify` with its cookie.
    fn verify(&mut self, now: Instant, to: SocketAddr) {
        self.out.event(RendezvousEvent::Verifying { from: to });
        let cookie = self.cookies.issue(now, to);
        self.send(to, PunchMsg::Verify { cookie });
    }

    /// Refuses a request of `request_len` bytes that needs `id`'s registration and token,
    /// which it lacks; `consequence` says what the sender cannot do without them. Unless
    /// the sender is `id`'s proven endpoint, a refusal longer than the request would
    /// amplify towards a forged source: it is asked to prove its address instead.
    fn refuse_unregistered(&mut self, now: Instant, to: SocketAddr, id: &str, consequence: &str, request_len: usize) {
        let reason = format!("not registered as {id} ({consequence})");
        let refusal = PunchMsg::Refused { id: id.to_owned(), code: RefusalCode::NotRegistered, reason: reason.clone() };
        let proven = self.registrations.get(id).is_some_and(|r| r.public == to);
        if !proven && refusal.to_bytes().len() > request_len {
            self.out.event(RendezvousEvent::Refused { from: to, id: id.to_owned(), reason });
            return self.verify(now, to);
        }
        self.refuse(to, id, RefusalCode::NotRegistered, reason);
    }

    /// Charges one datagram to `source`; false when it is over its rate (or no bucket is
    /// free for a new source).
    fn admit(&mut self, now: Instant, source: IpAddr) -> bool {
        if !self.sources.contains_key(&source) {
            if self.sources.len() >= self.config.max_sources {
                self.sources.retain(|_, s| !s.bucket.is_full_at(now));
            }
            if self.sources.len() >= self.config.max_sources {
                return false;
            }
            let bucket = TokenBucket::full(now, self.config.source_burst, self.config.source_rate);
            self.sources.insert(source, SourceLimit { bucket, limited: false });
        }
        let limit = self.sources.get_mut(&source).expect("inserted above");
        if limit.bucket.take(now, 1) {
            limit.limited = false;
            return true;
        }
        if !std::mem::replace(&mut limit.limited, true) {
            self.out.event(RendezvousEvent::RateLimited { source });
        }
        false
    }

    /// The registration of `id` if `token` is its token.
    fn authorised(&mut self, id: &str, token: &Token) -> Option<&mut Registration> {
        self.registrations.get_mut(id).filter(|r| &r.token == token)
    }

    fn on_register(
        &mut self,
        now: Instant,
        from: SocketAddr,
        (token, cookie): (Token, Cookie),
        id: String,
        private: Vec<SocketAddr>,
    ) {
        // A refresh from the endpoint the id proved already needs no cookie; anything else
        // (a new id, a moved mapping, another token) is served only to a proven address.
        let refresh = self.registrations.get(&id).is_some_and(|r| r.token == token && r.public == from);
        if !refresh && !self.cookies.check(now, from, &cookie) {
            return self.verify(now, from);
        }
        let expires = now + self.config.registration_ttl;
        let full = self.registrations.len() >= self.config.max_registrations;
        match self.registrations.get_mut(&id) {
            Some(r) if r.token != token => {
                return self.refuse(from, &id, RefusalCode::Taken, format!("id {id} is taken"));
            }
            Some(r) => {
                self.expiries.remove(&(r.expires, id.clone()));
                r.expires = expires;
                r.private = private;
                if r.public != from {
                    r.public = from;
                    self.out.event(RendezvousEvent::Moved { id: id.clone(), public: from });
                }
            }
            None if full => {
                let reason = format!("rendezvous is full ({} ids)", self.config.max_registrations);
                return self.refuse(from, &id, RefusalCode::Full, reason);
            }
            None => {
                let relay = TokenBucket::full(now, self.config.relay_burst, self.config.relay_rate);
                let r =
                    Registration { token, public: from, private, expires, partner: None, relay, relay_limited: false };
                self.registrations.insert(id.clone(), r);
                self.out.event(RendezvousEvent::Registered { id: id.clone(), public: from });
            }
        }
        self.expiries.insert((expires, id.clone()));
        self.send(from, PunchMsg::Registered { id, public: from });
    }

    fn on_connect(&mut self, now: Instant, from: SocketAddr, token: Token, id: String, dest: String, len: usize) {
        let Some(asker) = self.authorised(&id, &token) else {
            return self.refuse_unregistered(now, from, &id, "register first", len);
        };
        if asker.public != from {
            // The token is right, the address is not the one proven: re-register from here.
            return self.verify(now, from);
        }
        if dest == id {
            return self.refuse(from, &id, RefusalCode::OwnId, "cannot connect to yourself".to_owned());
        }
        let Some(target) = self.registrations.get(&dest) else {
            let reason = format!("peer {dest} is not registered");
            self.send(from, PunchMsg::ConnectFailed { dest, reason });
            return;
        };
        let (target_public, target_private) = (target.public, target.private.clone());
        let session = match self.live_session(&dest) {
            Some((partner, session)) if partner == id => session,
            Some((partner, _)) => {
                // Its endpoints stay unknown to the asker, and its session undisturbed.
                self.send(from, PunchMsg::ConnectFailed { dest: dest.clone(), reason: busy_reason(&dest) });
                return self.out.event(RendezvousEvent::Busy { from: id, to: dest, partner });
            }
            None => {
                // Asking for another peer is how the asker leaves its session.
                self.end_session(&id, LeaveReason::MovedOn);
                self.rng.next_u64()
            }
        };
        let asker = self.registrations.get_mut(&id).expect("authorised above");
        asker.partner = Some((dest.clone(), session));
        let asker_info =
            PunchMsg::PeerInfo { peer: id.clone(), session, public: asker.public, private: asker.private.clone() };
        self.registrations.get_mut(&dest).expect("looked up above").partner = Some((id.clone(), session));
        // Answered where the request came from: the asker proved its id with the token.
        let target_info =
            PunchMsg::PeerInfo { peer: dest.clone(), session, public: target_public, private: target_private };
        self.send(from, target_info);
        self.send(target_public, asker_info);
        self.out.event(RendezvousEvent::Introduced { from: id, to: dest, session });
    }

    /// `id`'s live session, as (partner, session): both name each other.
    fn live_session(&self, id: &str) -> Option<(String, u64)> {
        let (partner, session) = self.registrations.get(id)?.partner.clone()?;
        let back = self.registrations.get(&partner)?.partner.as_ref()?;
        (back.0 == id && back.1 == session).then_some((partner, session))
    }

    /// Takes `id` out of its live session, if it is in one, and tells the partner why.
    fn end_session(&mut self, id: &str, why: LeaveReason) {
        let Some((partner, session)) = self.live_session(id) else { return };
        self.registrations.get_mut(id).expect("in a live session").partner = None;
        let told = self.registrations.get_mut(&partner).expect("in a live session");
        told.partner = None;
        // To the partner's registered endpoint, and smaller than any request that ends a
        // session: no reflection.
        let to = told.public;
        self.send(to, PunchMsg::PeerLeft { peer: id.to_owned(), session, why });
        self.out.event(RendezvousEvent::SessionEnded { left: id.to_owned(), told: partner, why });
    }

    fn on_decline(&mut self, token: Token, id: String, peer: String, session: u64) {
        // Unanswered when the token is wrong: a refusal would be longer than the request
        // (a reflector), and a peer that lost its registration lost the introduction with it.
        if self.authorised(&id, &token).is_some() && self.live_session(&id) == Some((peer, session)) {
            self.end_session(&id, LeaveReason::Busy);
        }
    }

    /// `(from, len)`: the request's source and length.
    fn on_relay(
        &mut self,
        now: Instant,
        (from, len): (SocketAddr, usize),
        token: Token,
        id: String,
        to: String,
        inner: Bytes,
    ) {
        let Some(sender) = self.authorised(&id, &token) else {
            return self.refuse_unregistered(now, from, &id, "cannot relay", len);
        };
        if sender.public != from {
            return self.verify(now, from);
        }
        // Only within a live session: a later holder of `to`'s id (after it left or
        // expired), or a `to` that moved on to another peer, would drop it anyway.
        let in_session = self.live_session(&id).is_some_and(|(partner, _)| partner == to);
        let target_public = self.registrations.get(&to).filter(|_| in_session).map(|t| t.public);
        let Some(target_public) = target_public else {
            let reason = format!("not introduced to {to} (connect first)");
            return self.refuse(from, &id, RefusalCode::NotIntroduced, reason);
        };
        let sender = self.registrations.get_mut(&id).expect("authorised above");
        let size = u32::try_from(inner.len()).expect("inner datagrams are small");
        if !sender.relay.take(now, size) {
            if !std::mem::replace(&mut sender.relay_limited, true) {
                self.out.event(RendezvousEvent::RelayLimited { id });
            }
            return;
        }
        sender.relay_limited = false;
        self.relayed_bytes += u64::from(size);
        self.send(target_public, PunchMsg::RelayedFrom { from: id, inner });
    }

    fn on_unregister(&mut self, now: Instant, from: SocketAddr, token: Token, id: String, len: usize) {
        // With the token it takes effect from anywhere: nothing is sent to the sender.
        let Some(r) = self.authorised(&id, &token) else {
            return self.refuse_unregistered(now, from, &id, "cannot unregister", len);
        };
        let expires = r.expires;
        self.expiries.remove(&(expires, id.clone()));
        self.forget(id, LeaveReason::Quit);
    }

    /// Removes `id`'s registration (its expiry entry is gone already), ending its session.
    fn forget(&mut self, id: String, why: LeaveReason) {
        self.end_session(&id, why);
        self.registrations.remove(&id);
        self.out.event(RendezvousEvent::Forgotten { id, expired: why == LeaveReason::Expired });
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if !self.admit(now, from.ip()) {
            return;
        }
        if bytes.len() > MAX_DATAGRAM {
            let error = format!("datagram of {} bytes (at most {MAX_DATAGRAM})", bytes.len());
            return self.out.event(RendezvousEvent::BadDatagram { from, error });
        }
        let msg = match PunchMsg::from_datagram(Bytes::copy_from_slice(bytes)) {
            Ok(msg) => msg,
            Err(e) => return self.out.event(RendezvousEvent::BadDatagram { from, error: e.to_string() }),
        };
        match msg {
            PunchMsg::Register { token, cookie, id, private } => {
                self.on_register(now, from, (token, cookie), id, private)
            }
            PunchMsg::Connect { token, id, dest } => self.on_connect(now, from, token, id, dest, bytes.len()),
            PunchMsg::RelayTo { token, from: id, to, inner } => {
                debug_assert!(inner.len() <= MAX_INNER);
                self.on_relay(now, (from, bytes.len()), token, id, to, inner)
            }
            PunchMsg::Unregister { token, id } => self.on_unregister(now, from, token, id, bytes.len()),
            PunchMsg::Decline { token, id, peer, session } => self.on_decline(token, id, peer, session),
            other => {
                let error = format!("{:?} is not a request to the rendezvous", other.kind());
                self.out.event(RendezvousEvent::BadDatagram { from, error });
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.expiries.first() {
            if *at > now {
                break;
            }
            let (_, id) = self.expiries.pop_first().expect("first exists");
            self.forget(id, LeaveReason::Expired);
        }
    }
}

impl Machine for Rendezvous {
    type Event = RendezvousEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        let now = self.clock.advance(now);
        self.expire(now);
        if let Input::Datagram { socket, from, bytes } = input {
            if socket == self.config.socket {
                self.on_datagram(now, from, bytes);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        self.expire(now);
    }

    fn poll_output(&mut self) -> Option<Output<RendezvousEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }
}
