//! The `punch_rendezvous` fuzz target: a `Rendezvous` with small limits, fed datagrams from
//! a few source addresses (requests built from the input with fields from small pools, so
//! ids, tokens and sources collide; any other punch message; raw bytes; a request with one
//! byte changed) and time that passes, under the checked [`Driver`].
//!
//! The harness keeps its own book of who holds each id: the token that first registered
//! it, the endpoint and the expiry, updated only from what the rendezvous answered and
//! checked against the rules before it is believed. After every step it asserts the
//! machine agrees with the book (`endpoint_of` of every id, `registrations`) and its caps
//! hold. Hence the security property: an id's endpoint changes, and an id is freed, only
//! by a request that carried the token that registered it (or by expiry, after which
//! anyone may register the id again). Every datagram the rendezvous sends must be a valid
//! punch message (checked by [`check_punch_datagram`]) of the rendezvous's own kinds, sent
//! where the rules say: a `Registered` to the registering source, a `PeerInfo` only for a
//! `Connect` with the asker's token and never taking a third id out of a live session (a
//! `ConnectFailed` says it is busy instead), a `RelayedFrom` only for a `RelayTo` with the
//! sender's token, to the recipient's endpoint, between the two ids of a live session, a
//! `PeerLeft` only to the partner of an id that left its live session (by an `Unregister`,
//! a `Connect` for another id or a `Decline`, each with its token, or by expiry), and to
//! every such partner. No reflection: a registration takes hold, or moves, only on a
//! `Register` carrying a cookie the rendezvous sent that very address in a `Verify` (or a
//! refresh from the endpoint the id holds), and nothing sent back to a source that has not
//! proved its address is longer than the datagram it answers.
//!
//! The pools are shared with the `punch_peer` harness.

use crate::driver::{Driver, Script};
use crate::punch::check_punch_datagram;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use switchyard_core::punch::{Rendezvous, RendezvousConfig, RendezvousEvent};
use switchyard_core::wire::punch::{
    busy_reason, Cookie, LeaveReason, PunchMsg, RefusalCode, Token, COOKIE_LEN, MAX_INNER, MAX_PRIVATE, TOKEN_LEN,
};
use switchyard_core::{Env, Instant, Output, SocketId};

// ---------------------------------------------------------------------------------------
// The pools both punch harnesses draw from
// ---------------------------------------------------------------------------------------

/// One of six ids, so registrations collide and the cap of four is reached.
pub fn id(s: &mut Script<'_>) -> String {
    ["A", "B", "C", "D", "E", "F"][s.below(6)].to_owned()
}

/// One of four tokens, so the right one is often guessed and often not.
pub fn token(s: &mut Script<'_>) -> Token {
    [s.u8() % 4; TOKEN_LEN]
}

/// No cookie, or a guessed one (the rendezvous harness also sends the cookies it was given).
pub fn cookie(s: &mut Script<'_>) -> Cookie {
    match s.below(3) {
        0 => [0; COOKIE_LEN],
        _ => [s.u8(); COOKIE_LEN],
    }
}

/// One of thirteen endpoints: six IPv4 hosts with two ports each (a NAT that moved a
/// mapping keeps its IP), and one IPv6 endpoint.
pub fn endpoint(b: u8) -> SocketAddr {
    let b = b % 13;
    if b == 12 {
        return SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)), 4000);
    }
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + b % 6)), 4000 + u16::from(b / 6))
}

/// Up to [`MAX_PRIVATE`] endpoints.
pub fn endpoints(s: &mut Script<'_>) -> Vec<SocketAddr> {
    (0..s.below(MAX_PRIVATE + 1)).map(|_| endpoint(s.u8())).collect()
}

/// A session or nonce: one of a few small values, or eight bytes of the script.
pub fn u64_field(s: &mut Script<'_>) -> u64 {
    match s.u8() {
        b @ 0..=199 => u64::from(b % 4),
        _ => u64::from_be_bytes(std::array::from_fn(|_| s.u8())),
    }
}

/// A chat body: empty, short, multi-byte, or the longest allowed.
pub fn body(s: &mut Script<'_>) -> String {
    match s.below(5) {
        0 => String::new(),
        1 => "hi".to_owned(),
        2 => "héllo ✓ 𝄞".to_owned(),
        3 => "x".repeat(1024),
        _ => format!("m{}", s.u8()),
    }
}

/// An inner datagram: a valid peer-to-peer message, or up to [`MAX_INNER`] bytes of filler.
pub fn inner(s: &mut Script<'_>) -> Bytes {
    match s.below(3) {
        0 => Bytes::from(vec![0x5a; (usize::from(s.u8()) * 5).min(MAX_INNER)]),
        _ => peer_message(s).to_bytes(),
    }
}

/// A peer-to-peer message (type 26) with fields from the script.
pub fn peer_message(s: &mut Script<'_>) -> PunchMsg {
    let session = u64_field(s);
    match s.below(4) {
        0 => PunchMsg::Probe { session, nonce: u64_field(s) },
        1 => PunchMsg::ProbeAck { session, nonce: u64_field(s) },
        2 => PunchMsg::Data { session, epoch: u64_field(s), seq: u64::from(s.u8() % 8), body: body(s) },
        _ => PunchMsg::Ack { session, epoch: u64_field(s), next: u64::from(s.u8() % 8) },
    }
}

/// A request to the rendezvous (`Register`, `Connect`, `RelayTo`, `Decline`, `Unregister`).
pub fn request(s: &mut Script<'_>) -> PunchMsg {
    let token = token(s);
    match s.below(8) {
        0..=2 => PunchMsg::Register { token, cookie: cookie(s), id: id(s), private: endpoints(s) },
        3 | 4 => PunchMsg::Connect { token, id: id(s), dest: id(s) },
        5 => PunchMsg::RelayTo { token, from: id(s), to: id(s), inner: inner(s) },
        6 => PunchMsg::Decline { token, id: id(s), peer: id(s), session: u64_field(s) },
        _ => PunchMsg::Unregister { token, id: id(s) },
    }
}

/// A leave reason, any of them.
fn leave_reason(s: &mut Script<'_>) -> LeaveReason {
    [LeaveReason::Quit, LeaveReason::Expired, LeaveReason::MovedOn, LeaveReason::Busy][s.below(4)]
}

/// A refusal code, any of them.
fn refusal_code(s: &mut Script<'_>) -> RefusalCode {
    [RefusalCode::Taken, RefusalCode::Full, RefusalCode::NotRegistered, RefusalCode::NotIntroduced, RefusalCode::OwnId]
        [s.below(5)]
}

/// A message the rendezvous sends (`Registered`, `Refused`, `PeerInfo`, `ConnectFailed`,
/// `PeerLeft`, `RelayedFrom`).
pub fn answer(s: &mut Script<'_>) -> PunchMsg {
    match s.below(7) {
        6 => PunchMsg::Verify { cookie: cookie(s) },
        0 => PunchMsg::Registered { id: id(s), public: endpoint(s.u8()) },
        1 => PunchMsg::Refused { id: id(s), code: refusal_code(s), reason: "no".to_owned() },
        2 => PunchMsg::PeerInfo { peer: id(s), session: u64_field(s), public: endpoint(s.u8()), private: endpoints(s) },
        3 => PunchMsg::ConnectFailed { dest: id(s), reason: "not registered".to_owned() },
        4 => PunchMsg::PeerLeft { peer: id(s), session: u64_field(s), why: leave_reason(s) },
        _ => PunchMsg::RelayedFrom { from: id(s), inner: inner(s) },
    }
}

/// Any punch message.
pub fn any_message(s: &mut Script<'_>) -> PunchMsg {
    match s.below(3) {
        0 => request(s),
        1 => answer(s),
        _ => peer_message(s),
    }
}

/// Datagram bytes that are not a message built above: up to 48 raw bytes, or `valid` with
/// one byte replaced.
pub fn garbage(s: &mut Script<'_>, valid: &[u8]) -> Vec<u8> {
    if s.below(2) == 0 || valid.is_empty() {
        let n = s.below(49);
        return s.take(n).to_vec();
    }
    let mut bytes = valid.to_vec();
    let at = s.below(bytes.len());
    bytes[at] = s.u8();
    bytes
}

// ---------------------------------------------------------------------------------------
// The rendezvous under the driver
// ---------------------------------------------------------------------------------------

/// True for the messages peers send the rendezvous.
fn is_request(msg: &PunchMsg) -> bool {
    matches!(
        msg,
        PunchMsg::Register { .. }
            | PunchMsg::Connect { .. }
            | PunchMsg::RelayTo { .. }
            | PunchMsg::Unregister { .. }
            | PunchMsg::Decline { .. }
    )
}

/// The socket the driver binds for the rendezvous.
const SOCKET: SocketId = SocketId(7);

/// Who holds an id, as the harness has seen it happen.
#[derive(Debug, Clone)]
struct Holder {
    /// The token of the `Register` that created the registration.
    token: Token,
    /// The source of its last accepted `Register`.
    public: SocketAddr,
    /// Its last accepted `Register`, plus the TTL.
    expires: Instant,
}

/// The harness's book: every registration that should exist, and the peer and session
/// each id was last introduced to (a session is live while both name each other).
#[derive(Debug, Default)]
struct Book {
    holders: BTreeMap<String, Holder>,
    partners: BTreeMap<String, (String, u64)>,
    /// The holders that expired in the current step: a `PeerLeft` may still go to one (two
    /// partners that expire together).
    expired: BTreeMap<String, Holder>,
    /// Every cookie the rendezvous sent each address in a `Verify`.
    cookies: BTreeMap<SocketAddr, BTreeSet<Cookie>>,
}

impl Book {
    /// `id`'s live session: (partner, session), both naming each other.
    fn live(&self, id: &str) -> Option<(String, u64)> {
        let (partner, session) = self.partners.get(id)?.clone();
        let back = self.partners.get(&partner)?;
        (back.0 == id && back.1 == session).then_some((partner, session))
    }

    /// True when `addr` proved it receives there: it holds an id, or `msg` (from it) carries
    /// a cookie the rendezvous sent it.
    fn proven(&self, addr: SocketAddr, msg: &PunchMsg) -> bool {
        let cookie_sent = match msg {
            PunchMsg::Register { cookie, .. } => self.cookies.get(&addr).is_some_and(|c| c.contains(cookie)),
            _ => false,
        };
        cookie_sent || self.holders.values().any(|h| h.public == addr)
    }

    /// True when `token` is the token `id` is registered with.
    fn authorised(&self, id: &str, token: &Token) -> bool {
        self.holders.get(id).is_some_and(|h| &h.token == token)
    }

    /// Checks one step's outputs against the rules and updates the book from them. `fed`
    /// is the datagram and its source, if the step fed one; `msg` its decoding.
    fn step(
        &mut self,
        config: &RendezvousConfig,
        now: Instant,
        fed: Option<(SocketAddr, &PunchMsg)>,
        outputs: &[Output<RendezvousEvent>],
    ) {
        let events: Vec<&RendezvousEvent> =
            outputs.iter().filter_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).collect();
        // Expiry comes first, before the datagram is looked at.
        self.expired.clear();
        for event in &events {
            if let RendezvousEvent::Forgotten { id, expired: true } = event {
                let holder = self.holders.remove(id).unwrap_or_else(|| panic!("{id} expired, but was not registered"));
                assert!(holder.expires <= now, "{id} expired at {now}, before its expiry {}", holder.expires);
                self.expired.insert(id.clone(), holder);
            }
        }
        let (mut registered, mut moved) = (BTreeSet::new(), BTreeSet::new());
        // Whether the source proved its address, as of before this step's answers.
        let proven = fed.is_some_and(|(from, msg)| self.proven(from, msg));
        for output in outputs {
            let Output::Transmit { socket, to, bytes } = output else { continue };
            assert_eq!(*socket, SOCKET, "sent from the wrong socket");
            let reply = check_punch_datagram(bytes).unwrap_or_else(|e| panic!("sent an invalid datagram: {e}"));
            // A partner that expired in this very step earned its `PeerLeft` by registering
            // at that address, not by the datagram that happens to come from it.
            let earned = matches!(reply, PunchMsg::PeerLeft { .. }) && self.expired.values().any(|h| h.public == *to);
            if let Some((from, msg)) = fed.filter(|&(from, _)| from == *to && !proven && !earned) {
                let asked = msg.to_bytes().len();
                assert!(
                    bytes.len() <= asked,
                    "sent {from}, which has not proved its address, {} bytes for {asked}: {reply:?}",
                    bytes.len()
                );
            }
            if let PunchMsg::PeerLeft { peer, session, why } = reply {
                self.peer_left(fed.map(|(_, msg)| msg), *to, peer, session, why);
                continue;
            }
            let Some((from, msg)) = fed else { panic!("sent {reply:?} to {to} without a datagram to answer") };
            self.reply(config, now, from, msg, *to, reply, &mut registered, &mut moved);
        }
        for event in &events {
            match event {
                RendezvousEvent::Forgotten { id, expired: false } => {
                    let Some((_, PunchMsg::Unregister { token, id: asked })) = fed else {
                        panic!("{id} was unregistered without an Unregister")
                    };
                    assert_eq!(asked, id, "an Unregister freed another id");
                    assert!(self.authorised(id, token), "{id} was unregistered with a token that did not register it");
                    self.holders.remove(id);
                }
                RendezvousEvent::Registered { id, public } => {
                    assert!(registered.contains(id), "Registered event for {id} without its Registered reply");
                    assert_eq!(Some(*public), fed.map(|(from, _)| from), "{id} registered at another source");
                }
                RendezvousEvent::Moved { id, public } => {
                    assert!(moved.contains(id), "Moved event for {id} that did not move");
                    assert_eq!(Some(*public), fed.map(|(from, _)| from), "{id} moved somewhere it was not seen");
                }
                RendezvousEvent::BadDatagram { .. } => {
                    if let Some((_, msg)) = fed {
                        assert!(!is_request(msg), "the request {msg:?} was dropped as bad");
                    }
                }
                _ => {}
            }
        }
        // Whoever left the rendezvous left its session, and its partner was told.
        for id in self.partners.keys() {
            if let Some((partner, _)) = self.live(id) {
                assert!(self.holders.contains_key(id), "{id} is gone, but {partner} was not told it left");
            }
        }
        for id in &registered {
            assert!(
                events.iter().any(|e| matches!(e, RendezvousEvent::Registered { id: i, .. } if i == id)),
                "{id} registered without a Registered event"
            );
        }
        for id in &moved {
            assert!(
                events.iter().any(|e| matches!(e, RendezvousEvent::Moved { id: i, .. } if i == id)),
                "{id} moved without a Moved event"
            );
        }
    }

    /// Checks a `PeerLeft` the rendezvous sent to `to`: `left` was in a live `session`, it
    /// goes to the partner's endpoint, and `fed` (the step's datagram, if any) is what
    /// ended the session as `why` says; ends the session in the book.
    fn peer_left(&mut self, fed: Option<&PunchMsg>, to: SocketAddr, left: String, session: u64, why: LeaveReason) {
        let live = self.live(&left);
        let Some((partner, in_session)) = live else { panic!("told {to} that {left} left, who was in no session") };
        assert_eq!(in_session, session, "PeerLeft names another session than {left}'s");
        let told = self.holders.get(&partner).or_else(|| self.expired.get(&partner));
        let told = told.unwrap_or_else(|| panic!("told {partner}, who is not registered"));
        assert_eq!(to, told.public, "PeerLeft went somewhere other than {partner}'s endpoint");
        let cause_ok = match (why, fed) {
            (LeaveReason::Expired, _) => self.expired.contains_key(&left),
            (LeaveReason::Quit, Some(PunchMsg::Unregister { token, id })) => *id == left && self.authorised(id, token),
            (LeaveReason::MovedOn, Some(PunchMsg::Connect { token, id, dest })) => {
                *id == left && *dest != partner && self.authorised(id, token)
            }
            (LeaveReason::Busy, Some(PunchMsg::Decline { token, id, peer, session: declined })) => {
                *id == left && *peer == partner && *declined == session && self.authorised(id, token)
            }
            _ => false,
        };
        assert!(cause_ok, "{left} left its session with {partner} ({why:?}) on {fed:?}");
        self.partners.remove(&left);
        self.partners.remove(&partner);
    }

    /// Checks one datagram the rendezvous sent in answer to `msg` from `from`.
    #[allow(clippy::too_many_arguments)]
    fn reply(
        &mut self,
        config: &RendezvousConfig,
        now: Instant,
        from: SocketAddr,
        msg: &PunchMsg,
        to: SocketAddr,
        reply: PunchMsg,
        registered: &mut BTreeSet<String>,
        moved: &mut BTreeSet<String>,
    ) {
        match reply {
            PunchMsg::Verify { cookie } => {
                assert_eq!(to, from, "Verify must go to the request's source");
                // Every request but a `Decline`, which is never answered.
                let answerable = is_request(msg) && !matches!(msg, PunchMsg::Decline { .. });
                assert!(answerable, "Verify answers {msg:?}");
                self.cookies.entry(from).or_default().insert(cookie);
            }
            PunchMsg::Registered { id, public } => {
                let PunchMsg::Register { token, cookie, id: asked, .. } = msg else {
                    panic!("Registered answers {msg:?}")
                };
                assert_eq!(&id, asked, "Registered names another id than the Register");
                assert_eq!((to, public), (from, from), "Registered must go to, and name, the observed source");
                let refresh = self.holders.get(&id).is_some_and(|h| &h.token == token && h.public == from);
                let cookie_sent = self.cookies.get(&from).is_some_and(|c| c.contains(cookie));
                assert!(refresh || cookie_sent, "{id} registered at {from}, which never proved it receives there");
                let expires = now + config.registration_ttl;
                match self.holders.get_mut(&id) {
                    Some(holder) => {
                        assert_eq!(
                            &holder.token, token,
                            "{id} was re-registered with a token that did not register it: it was taken over"
                        );
                        if holder.public != from {
                            moved.insert(id.clone());
                        }
                        holder.public = from;
                        holder.expires = expires;
                    }
                    None => {
                        assert!(self.holders.len() < config.max_registrations, "{id} registered past the cap");
                        self.holders.insert(id.clone(), Holder { token: *token, public: from, expires });
                        registered.insert(id);
                    }
                }
            }
            PunchMsg::Refused { id, .. } => {
                assert_eq!(to, from, "Refused must go to the request's source");
                let asked = match msg {
                    PunchMsg::Register { id, .. } | PunchMsg::Connect { id, .. } | PunchMsg::Unregister { id, .. } => {
                        id
                    }
                    PunchMsg::RelayTo { from, .. } => from,
                    other => panic!("Refused answers {other:?}, which is not a request"),
                };
                assert_eq!(&id, asked, "Refused names another id than the request");
            }
            PunchMsg::PeerInfo { peer, public, session, .. } => {
                let PunchMsg::Connect { token, id, dest } = msg else { panic!("PeerInfo answers {msg:?}") };
                assert!(self.authorised(id, token), "{id} was introduced on a Connect without its token");
                let (asker, target) = (&self.holders[id], self.holders.get(dest));
                let target = target.unwrap_or_else(|| panic!("{id} was introduced to {dest}, who is not registered"));
                if &peer == dest {
                    assert_eq!((to, public), (from, target.public), "the asker's PeerInfo is wrong");
                } else {
                    assert_eq!(&peer, id, "PeerInfo about a third id");
                    assert_eq!((to, public), (target.public, asker.public), "the target's PeerInfo is wrong");
                }
                // Nobody is taken out of a live session but by its own request, and the same
                // two peers keep their session.
                for (who, other) in [(id, dest), (dest, id)] {
                    if let Some((partner, live)) = self.live(who) {
                        assert_eq!(&partner, other, "{dest} was introduced to {id} while {who} is with {partner}");
                        assert_eq!(live, session, "{id} and {dest} were given a new session while in one");
                    }
                }
                self.partners.insert(id.clone(), (dest.clone(), session));
                self.partners.insert(dest.clone(), (id.clone(), session));
            }
            PunchMsg::ConnectFailed { dest, reason } => {
                assert_eq!(to, from, "ConnectFailed must go to the request's source");
                let (token, id, asked) = match msg {
                    PunchMsg::Connect { token, id, dest } => (token, id, dest),
                    PunchMsg::RelayTo { token, from, to, .. } => (token, from, to),
                    other => panic!("ConnectFailed answers {other:?}"),
                };
                assert_eq!(&dest, asked, "ConnectFailed names another id than the request");
                assert!(self.authorised(id, token), "a request without the token of {id} was served");
                match self.live(&dest) {
                    Some((partner, _)) => {
                        assert_ne!(&partner, id, "ConnectFailed for {dest}, who is in a session with {id}");
                        assert_eq!(reason, busy_reason(&dest), "ConnectFailed for busy {dest} says otherwise");
                    }
                    None => {
                        assert!(!self.holders.contains_key(&dest), "ConnectFailed, but {dest} is registered and free")
                    }
                }
            }
            PunchMsg::RelayedFrom { from: sender, inner } => {
                let PunchMsg::RelayTo { token, from: id, to: recipient, inner: sent } = msg else {
                    panic!("RelayedFrom answers {msg:?}")
                };
                assert_eq!((&sender, &inner), (id, sent), "the relay changed the sender or the datagram");
                assert!(self.authorised(id, token), "{id} relayed without its token: someone spoke for it");
                assert!(
                    self.live(id).is_some_and(|(partner, _)| partner == *recipient),
                    "relayed between {id} and {recipient}, who are not in a session"
                );
                let target =
                    self.holders.get(recipient).unwrap_or_else(|| panic!("relayed to unregistered {recipient}"));
                assert_eq!(to, target.public, "relayed to somewhere other than {recipient}'s endpoint");
            }
            other => panic!("the rendezvous sent {other:?}, which only peers send"),
        }
    }

    /// The machine agrees with the book, and nothing outlived its expiry.
    fn agrees(&self, rendezvous: &Rendezvous, now: Instant, fed: Option<&PunchMsg>) {
        for (id, holder) in &self.holders {
            assert!(holder.expires > now, "{id} outlived its expiry {} (now {now})", holder.expires);
            assert_eq!(rendezvous.endpoint_of(id), Some(holder.public), "the endpoint of {id}");
        }
        assert_eq!(rendezvous.registrations(), self.holders.len(), "registrations besides the book's");
        let named = match fed {
            Some(
                PunchMsg::Register { id, .. }
                | PunchMsg::Connect { id, .. }
                | PunchMsg::Unregister { id, .. }
                | PunchMsg::Decline { id, .. },
            ) => Some(id),
            Some(PunchMsg::RelayTo { from, .. }) => Some(from),
            _ => None,
        };
        if let Some(id) = named.filter(|id| !self.holders.contains_key(*id)) {
            assert_eq!(rendezvous.endpoint_of(id), None, "{id} is registered behind the book's back");
        }
    }
}

/// Runs `data` as a script against a rendezvous. Panics on any broken rule.
pub fn fuzz_punch_rendezvous(data: &[u8]) {
    let mut s = Script::new(data);
    let config = RendezvousConfig {
        socket: SOCKET,
        registration_ttl: Duration::from_secs(10),
        max_registrations: 4,
        source_rate: 2,
        source_burst: 6,
        max_sources: 4,
        relay_rate: 1000,
        relay_burst: 3000,
    };
    let seed = u64::from(s.u8());
    let rendezvous = Rendezvous::new(Env::new(seed), Instant::ZERO, config.clone());
    let (mut d, outputs) = Driver::with_sockets(rendezvous, Instant::ZERO, &[SOCKET]);
    assert!(outputs.is_empty(), "the rendezvous said something before anyone spoke to it");
    let mut book = Book::default();
    while !s.is_empty() {
        let op = s.u8();
        let fed = match op % 10 {
            0..=7 => {
                let from = endpoint(s.u8());
                let valid = match op % 10 {
                    0..=4 => request(&mut s),
                    _ => any_message(&mut s),
                };
                let mut bytes = valid.to_bytes().to_vec();
                if op % 10 == 7 {
                    bytes = garbage(&mut s, &bytes);
                }
                Some((from, bytes))
            }
            _ => None,
        };
        let now = d.now();
        match fed {
            Some((from, mut bytes)) => {
                // Often the cookie the rendezvous gave this address, as a real peer sends it.
                if let Ok(PunchMsg::Register { token, id, private, .. }) =
                    PunchMsg::from_datagram(Bytes::from(bytes.clone()))
                {
                    let given = book.cookies.get(&from).and_then(|c| c.iter().nth(usize::from(s.u8()) % (c.len() + 1)));
                    if let Some(&cookie) = given {
                        bytes = PunchMsg::Register { token, cookie, id, private }.to_bytes().to_vec();
                    }
                }
                let msg = PunchMsg::from_datagram(Bytes::from(bytes.clone())).ok();
                let outputs = d.datagram(SOCKET, from, &bytes);
                let now = d.now();
                book.step(&config, now, msg.as_ref().map(|m| (from, m)), &outputs);
                book.agrees(&d.machine, now, msg.as_ref());
            }
            None => {
                let later = now + Duration::from_millis(u64::from(s.u8()) * 100);
                if op % 10 == 8 {
                    let outputs = d.timeout(later);
                    book.step(&config, later, None, &outputs);
                    book.agrees(&d.machine, later, None);
                } else {
                    // Time passes with nothing to wake the machine: the next datagram
                    // finds the expired registrations still there.
                    d.advance(later);
                }
            }
        }
        let r = &d.machine;
        assert!(r.registrations() <= config.max_registrations, "{} registrations", r.registrations());
        assert!(r.tracked_sources() <= config.max_sources, "{} sources tracked", r.tracked_sources());
    }
}
