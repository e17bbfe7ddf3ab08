//! Datagrams of the UDP hole-punching protocol: frame types 24 (rendezvous), 25 (relay)
//! and 26 (peer to peer), one [`Frame`] per datagram. Byte layouts are in
//! `docs/PROTOCOL.md` §5.
//!
//! | type | subtype | message         | payload                                              | direction          |
//! |------|---------|-----------------|------------------------------------------------------|--------------------|
//! | 24   | 0       | `Register`      | token\[16], cookie\[16], id, private addrs           | peer → rendezvous  |
//! | 24   | 1       | `Registered`    | id, public addr                                      | rendezvous → peer  |
//! | 24   | 2       | `Refused`       | id, code u8, reason                                  | rendezvous → peer  |
//! | 24   | 3       | `Connect`       | token\[16], id, dest id                              | peer → rendezvous  |
//! | 24   | 4       | `PeerInfo`      | peer id, session u64, public addr, private addrs     | rendezvous → peer  |
//! | 24   | 5       | `ConnectFailed` | dest id, reason                                      | rendezvous → peer  |
//! | 24   | 6       | `Unregister`    | token\[16], id                                       | peer → rendezvous  |
//! | 24   | 7       | `PeerLeft`      | peer id, session u64, why u8                         | rendezvous → peer  |
//! | 24   | 8       | `Decline`       | token\[16], id, peer id, session u64                 | peer → rendezvous  |
//! | 24   | 9       | `Verify`        | cookie\[16]                                          | rendezvous → peer  |
//! | 25   | 0       | `RelayTo`       | token\[16], from id, to id, inner datagram           | peer → rendezvous  |
//! | 25   | 1       | `RelayedFrom`   | from id, inner datagram                              | rendezvous → peer  |
//! | 26   | 0       | `Probe`         | session u64, nonce u64                               | peer → peer        |
//! | 26   | 1       | `ProbeAck`      | session u64, nonce u64                               | peer → peer        |
//! | 26   | 2       | `Data`          | session u64, epoch u64, seq u64, body                | peer → peer        |
//! | 26   | 3       | `Ack`           | session u64, epoch u64, next u64                     | peer → peer        |
//!
//! Names (ids) and addrs are encoded as in the mesh protocol (`docs/PROTOCOL.md` §4.1); a *token*
//! is 16 raw bytes the peer chose at random; a *body* is the rest of the payload, UTF-8 of
//! at most [`MAX_BODY`] bytes; a *reason* the rest of the payload, UTF-8 of at most
//! [`MAX_REASON`] bytes; an *inner datagram* the rest of the payload, at most
//! [`MAX_INNER`] bytes (a whole type-26 frame, carried opaquely by the rendezvous).

pub use crate::wire::fields::{is_valid_name, MAX_NAME};
use crate::wire::fields::{put_addr, put_addrs, put_name, FieldError, Fields};
use crate::wire::frame::{Frame, FrameType};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::SocketAddr;

/// Most private endpoints a peer reports (one per interface it has).
pub const MAX_PRIVATE: usize = 8;
/// Longest chat message body, in bytes.
pub const MAX_BODY: usize = 1024;
/// Longest reason text; longer reasons are cut at a character boundary when encoded.
pub const MAX_REASON: usize = 200;
/// Largest inner datagram a relay message carries: a `Data` frame with a full body fits.
pub const MAX_INNER: usize = 1100;
/// Length of a registration token.
pub const TOKEN_LEN: usize = 16;
/// Length of an address cookie.
pub const COOKIE_LEN: usize = 16;
/// Largest valid punch datagram (a `RelayTo` with the largest inner datagram); receivers
/// may refuse anything longer before decoding it.
pub const MAX_DATAGRAM: usize = 6 + TOKEN_LEN + 2 * (1 + crate::wire::fields::MAX_NAME) + MAX_INNER;
/// The smallest request a peer can send the rendezvous (an `Unregister` with a one-byte
/// id): a [`PunchMsg::Verify`] is smaller, so answering any request with one reflects
/// fewer bytes than came in.
pub const MIN_REQUEST: usize = 6 + TOKEN_LEN + 2;

/// The random secret a peer binds its registration to: whoever does not know it cannot
/// take over, re-point or speak for that peer's id at the rendezvous.
pub type Token = [u8; TOKEN_LEN];

/// What the rendezvous sends a source to prove that it receives at its address: the
/// rendezvous accepts a `Register` from that address only with it. All zeros: none yet.
pub type Cookie = [u8; COOKIE_LEN];

/// Frame type of messages between a peer and the rendezvous server.
pub const RENDEZVOUS: FrameType = FrameType(24);
/// Frame type of relayed traffic.
pub const RELAY: FrameType = FrameType(25);
/// Frame type of messages between two peers (direct or inside a relay message).
pub const PEER: FrameType = FrameType(26);

/// Why the rendezvous refused a request, as the code byte of [`PunchMsg::Refused`] says:
/// what the peer should do about it depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// 0: a `Register` for an id held with another token. Final.
    Taken = 0,
    /// 1: a `Register` for a new id while the rendezvous is at its cap. Final.
    Full = 1,
    /// 2: a request whose token matches no live registration of its id (the rendezvous
    /// restarted, the registration expired, or the sender is not who it claims): register
    /// again.
    NotRegistered = 2,
    /// 3: a `RelayTo` between two peers the rendezvous has not introduced to each other
    /// (since their registrations began): connect again.
    NotIntroduced = 3,
    /// 4: a `Connect` to the asker's own id.
    OwnId = 4,
}

impl RefusalCode {
    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(b: u8) -> Option<RefusalCode> {
        Some(match b {
            0 => RefusalCode::Taken,
            1 => RefusalCode::Full,
            2 => RefusalCode::NotRegistered,
            3 => RefusalCode::NotIntroduced,
            4 => RefusalCode::OwnId,
            _ => return None,
        })
    }
}

/// Why a peer is no longer in a session, as the `why` byte of [`PunchMsg::PeerLeft`] says:
/// the other side tells its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaveReason {
    /// 0: it unregistered (its user quit).
    Quit = 0,
    /// 1: its registration expired (it stopped refreshing: it crashed or lost its network).
    Expired = 1,
    /// 2: it was introduced to another peer it asked for.
    MovedOn = 2,
    /// 3: it declined the introduction: it is busy in another session.
    Busy = 3,
}

impl LeaveReason {
    /// Every reason, in code order: a code is its index.
    const ALL: [LeaveReason; 4] = [LeaveReason::Quit, LeaveReason::Expired, LeaveReason::MovedOn, LeaveReason::Busy];

    fn from_u8(b: u8) -> Option<LeaveReason> {
        LeaveReason::ALL.get(usize::from(b)).copied()
    }
}

/// The reason text of a `Connect` refused because `dest` is busy in another session, the
/// same whether the rendezvous refuses it or `dest` itself declines.
pub fn busy_reason(dest: &str) -> String {
    format!("peer {dest} is busy in another session")
}

/// One datagram of the hole-punching protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PunchMsg {
    /// A peer registers `id` (or refreshes its registration), bound to `token`, and reports
    /// the endpoints it has on its own networks. The rendezvous records the datagram's
    /// observed source as the public endpoint.
    Register {
        /// The registration secret.
        token: Token,
        /// The cookie the rendezvous last sent this peer's address in a `Verify`; all zeros
        /// before the first.
        cookie: Cookie,
        /// The id to register.
        id: String,
        /// The peer's own (private) endpoints, at most [`MAX_PRIVATE`].
        private: Vec<SocketAddr>,
    },
    /// The registration holds; `public` is where the rendezvous saw it come from.
    Registered {
        /// The registered id.
        id: String,
        /// The peer's public endpoint as observed by the rendezvous.
        public: SocketAddr,
    },
    /// The rendezvous refused a registration, a connect, a relay or an unregister.
    Refused {
        /// The id the request was for.
        id: String,
        /// Why, for the machine.
        code: RefusalCode,
        /// Why, for people.
        reason: String,
    },
    /// A peer asks to be introduced to `dest`.
    Connect {
        /// The asker's registration secret.
        token: Token,
        /// The asker's id.
        id: String,
        /// The peer it wants to reach.
        dest: String,
    },
    /// The rendezvous introduces `peer` (sent to both sides of a `Connect`).
    PeerInfo {
        /// The other peer's id.
        peer: String,
        /// Names this introduction: both sides put it in every peer-to-peer datagram.
        session: u64,
        /// The other peer's public endpoint (observed by the rendezvous).
        public: SocketAddr,
        /// The other peer's private endpoints, as it reported them.
        private: Vec<SocketAddr>,
    },
    /// A `Connect` could not be served.
    ConnectFailed {
        /// The peer asked for.
        dest: String,
        /// Why (e.g. not registered).
        reason: String,
    },
    /// A peer leaves: its id is free again.
    Unregister {
        /// The registration secret.
        token: Token,
        /// The id.
        id: String,
    },
    /// The other side of a session is no longer in it: sent to the peer that stays, when
    /// the other unregisters, expires, is introduced to a third peer, or declines.
    PeerLeft {
        /// The peer that left.
        peer: String,
        /// The session it left.
        session: u64,
        /// Why.
        why: LeaveReason,
    },
    /// A peer in a session declines an introduction to `peer` it did not ask for: the
    /// rendezvous forgets that introduction and tells `peer` (a [`PunchMsg::PeerLeft`]
    /// with [`LeaveReason::Busy`]).
    Decline {
        /// The decliner's registration secret.
        token: Token,
        /// The decliner's id.
        id: String,
        /// The peer it was introduced to.
        peer: String,
        /// The declined introduction's session.
        session: u64,
    },
    /// The rendezvous asks the sender to prove it receives at the address it sent from:
    /// send `Register` again with this cookie. The answer to a `Register` from an address
    /// not proven yet, and to any request whose full answer would be larger than it.
    Verify {
        /// The cookie to put in the next `Register`.
        cookie: Cookie,
    },
    /// A peer asks the rendezvous to pass `inner` to `to`.
    RelayTo {
        /// The sender's registration secret.
        token: Token,
        /// The sender's id.
        from: String,
        /// The recipient's id.
        to: String,
        /// A peer-to-peer datagram, carried opaquely.
        inner: Bytes,
    },
    /// The rendezvous hands on a relayed datagram.
    RelayedFrom {
        /// The sender's id (checked by the rendezvous against its token).
        from: String,
        /// The sender's peer-to-peer datagram.
        inner: Bytes,
    },
    /// A connectivity check on one candidate path, also the keepalive of a path in use.
    Probe {
        /// The introduction it belongs to.
        session: u64,
        /// Echoed in the `ProbeAck`.
        nonce: u64,
    },
    /// The answer to a `Probe`, sent to the probe's observed source.
    ProbeAck {
        /// The introduction it belongs to.
        session: u64,
        /// The probe's nonce.
        nonce: u64,
    },
    /// One chat message of the reliable channel.
    Data {
        /// The introduction it belongs to.
        session: u64,
        /// The sender's channel epoch: a new epoch means the sender started over.
        epoch: u64,
        /// Sequence number within the epoch, from 0.
        seq: u64,
        /// The text.
        body: String,
    },
    /// Cumulative acknowledgement: every `Data` of `epoch` below `next` arrived.
    Ack {
        /// The introduction it belongs to.
        session: u64,
        /// The epoch of the data it acknowledges.
        epoch: u64,
        /// The lowest sequence number not received yet.
        next: u64,
    },
}

/// A datagram that is not a valid punch message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PunchMsgError {
    /// The frame type or subtype is not part of the punch protocol.
    #[error("unexpected frame type {kind:?} subtype {subtype} in the punch protocol")]
    UnknownKind {
        /// The frame type.
        kind: FrameType,
        /// The subtype.
        subtype: u8,
    },
    /// The payload ended before a field did, or went on after the last one.
    #[error("{what}: payload of {len} bytes is malformed")]
    BadLength {
        /// The message.
        what: &'static str,
        /// The payload length.
        len: usize,
    },
    /// An id is empty, too long, not UTF-8, or holds whitespace or control characters.
    #[error("invalid peer id")]
    BadName,
    /// An address has an unknown family byte.
    #[error("invalid address family {0}")]
    BadAddress(u8),
    /// A private endpoint list is longer than [`MAX_PRIVATE`].
    #[error("{0} private endpoints (at most {MAX_PRIVATE})")]
    TooManyEndpoints(usize),
    /// A body is not UTF-8 or longer than [`MAX_BODY`].
    #[error("invalid message body")]
    BadBody,
    /// A reason is not UTF-8 or too long.
    #[error("invalid reason text")]
    BadReason,
    /// A refusal code is not one of [`RefusalCode`]'s.
    #[error("unknown refusal code {0}")]
    BadCode(u8),
    /// A leave reason is not one of [`LeaveReason`]'s.
    #[error("unknown leave reason {0}")]
    BadLeaveReason(u8),
    /// A relayed inner datagram is longer than [`MAX_INNER`].
    #[error("relayed datagram of {0} bytes (at most {MAX_INNER})")]
    InnerTooLong(usize),
}

impl FieldError for PunchMsgError {
    fn bad_length(what: &'static str, len: usize) -> Self {
        PunchMsgError::BadLength { what, len }
    }
    fn bad_name() -> Self {
        PunchMsgError::BadName
    }
    fn bad_address(family: u8) -> Self {
        PunchMsgError::BadAddress(family)
    }
    fn too_many_addrs(count: usize) -> Self {
        PunchMsgError::TooManyEndpoints(count)
    }
}

/// True when `body` fits a chat message: at most [`MAX_BODY`] bytes.
pub fn is_valid_body(body: &str) -> bool {
    body.len() <= MAX_BODY
}

impl PunchMsg {
    /// The frame type and subtype of this message.
    pub fn kind(&self) -> (FrameType, u8) {
        match self {
            PunchMsg::Register { .. } => (RENDEZVOUS, 0),
            PunchMsg::Registered { .. } => (RENDEZVOUS, 1),
            PunchMsg::Refused { .. } => (RENDEZVOUS, 2),
            PunchMsg::Connect { .. } => (RENDEZVOUS, 3),
            PunchMsg::PeerInfo { .. } => (RENDEZVOUS, 4),
            PunchMsg::ConnectFailed { .. } => (RENDEZVOUS, 5),
            PunchMsg::Unregister { .. } => (RENDEZVOUS, 6),
            PunchMsg::PeerLeft { .. } => (RENDEZVOUS, 7),
            PunchMsg::Decline { .. } => (RENDEZVOUS, 8),
            PunchMsg::Verify { .. } => (RENDEZVOUS, 9),
            PunchMsg::RelayTo { .. } => (RELAY, 0),
            PunchMsg::RelayedFrom { .. } => (RELAY, 1),
            PunchMsg::Probe { .. } => (PEER, 0),
            PunchMsg::ProbeAck { .. } => (PEER, 1),
            PunchMsg::Data { .. } => (PEER, 2),
            PunchMsg::Ack { .. } => (PEER, 3),
        }
    }

    /// The session a peer-to-peer message (type 26) belongs to; `None` for other messages.
    pub fn peer_session(&self) -> Option<u64> {
        match self {
            PunchMsg::Probe { session, .. }
            | PunchMsg::ProbeAck { session, .. }
            | PunchMsg::Data { session, .. }
            | PunchMsg::Ack { session, .. } => Some(*session),
            _ => None,
        }
    }

    /// The message as one datagram.
    ///
    /// Panics only on a caller bug: an id that [`is_valid_name`] refuses, a body over
    /// [`MAX_BODY`], an inner datagram over [`MAX_INNER`], or more than [`MAX_PRIVATE`]
    /// private endpoints. Reasons are cut to [`MAX_REASON`].
    pub fn to_bytes(&self) -> Bytes {
        let mut p = BytesMut::new();
        match self {
            PunchMsg::Register { token, cookie, id, private } => {
                p.put_slice(token);
                p.put_slice(cookie);
                put_name(&mut p, id);
                put_addrs(&mut p, private, MAX_PRIVATE);
            }
            PunchMsg::Registered { id, public } => {
                put_name(&mut p, id);
                put_addr(&mut p, public);
            }
            PunchMsg::Refused { id, code, reason } => {
                put_name(&mut p, id);
                p.put_u8(code.to_u8());
                p.put_slice(super::utf8_prefix(reason, MAX_REASON));
            }
            PunchMsg::ConnectFailed { dest, reason } => {
                put_name(&mut p, dest);
                p.put_slice(super::utf8_prefix(reason, MAX_REASON));
            }
            PunchMsg::Connect { token, id, dest } => {
                p.put_slice(token);
                put_name(&mut p, id);
                put_name(&mut p, dest);
            }
            PunchMsg::PeerInfo { peer, session, public, private } => {
                put_name(&mut p, peer);
                p.put_u64(*session);
                put_addr(&mut p, public);
                put_addrs(&mut p, private, MAX_PRIVATE);
            }
            PunchMsg::Unregister { token, id } => {
                p.put_slice(token);
                put_name(&mut p, id);
            }
            PunchMsg::PeerLeft { peer, session, why } => {
                put_name(&mut p, peer);
                p.put_u64(*session);
                p.put_u8(*why as u8);
            }
            PunchMsg::Decline { token, id, peer, session } => {
                p.put_slice(token);
                put_name(&mut p, id);
                put_name(&mut p, peer);
                p.put_u64(*session);
            }
            PunchMsg::Verify { cookie } => p.put_slice(cookie),
            PunchMsg::RelayTo { token, from, to, inner } => {
                assert!(inner.len() <= MAX_INNER, "relayed datagram over {MAX_INNER} bytes");
                p.put_slice(token);
                put_name(&mut p, from);
                put_name(&mut p, to);
                p.put_slice(inner);
            }
            PunchMsg::RelayedFrom { from, inner } => {
                assert!(inner.len() <= MAX_INNER, "relayed datagram over {MAX_INNER} bytes");
                put_name(&mut p, from);
                p.put_slice(inner);
            }
            PunchMsg::Probe { session, nonce } | PunchMsg::ProbeAck { session, nonce } => {
                p.put_u64(*session);
                p.put_u64(*nonce);
            }
            PunchMsg::Data { session, epoch, seq, body } => {
                assert!(is_valid_body(body), "message body over {MAX_BODY} bytes");
                p.put_u64(*session);
                p.put_u64(*epoch);
                p.put_u64(*seq);
                p.put_slice(body.as_bytes());
            }
            PunchMsg::Ack { session, epoch, next } => {
                p.put_u64(*session);
                p.put_u64(*epoch);
                p.put_u64(*next);
            }
        }
        let (kind, subtype) = self.kind();
        Frame::new(kind, subtype, p.freeze()).to_bytes().expect("punch payloads fit a frame")
    }

    /// Parses one datagram: the frame layer first (exactly one frame, see
    /// [`Frame::from_datagram`]), then the message.
    pub fn from_datagram(datagram: Bytes) -> Result<PunchMsg, PunchDatagramError> {
        let frame = Frame::from_datagram(datagram, MAX_DATAGRAM)?;
        Ok(PunchMsg::decode(frame)?)
    }

    /// Parses a frame as a punch message.
    pub fn decode(frame: Frame) -> Result<PunchMsg, PunchMsgError> {
        let (kind, subtype) = (frame.kind, frame.subtype);
        let what = match (kind, subtype) {
            (RENDEZVOUS, 0) => "register",
            (RENDEZVOUS, 1) => "registered",
            (RENDEZVOUS, 2) => "refused",
            (RENDEZVOUS, 3) => "connect",
            (RENDEZVOUS, 4) => "peer info",
            (RENDEZVOUS, 5) => "connect failed",
            (RENDEZVOUS, 6) => "unregister",
            (RENDEZVOUS, 7) => "peer left",
            (RENDEZVOUS, 8) => "decline",
            (RENDEZVOUS, 9) => "verify",
            (RELAY, 0) => "relay to",
            (RELAY, 1) => "relayed from",
            (PEER, 0) => "probe",
            (PEER, 1) => "probe ack",
            (PEER, 2) => "data",
            (PEER, 3) => "ack",
            _ => return Err(PunchMsgError::UnknownKind { kind, subtype }),
        };
        let mut f = Fields::new(what, frame.payload);
        let inner = |f: &mut Fields<PunchMsgError>| {
            let inner = f.rest();
            if inner.len() > MAX_INNER {
                return Err(PunchMsgError::InnerTooLong(inner.len()));
            }
            Ok(inner)
        };
        let msg = match (kind, subtype) {
            (RENDEZVOUS, 0) => PunchMsg::Register {
                token: f.array()?,
                cookie: f.array()?,
                id: f.name()?,
                private: f.addrs(MAX_PRIVATE)?,
            },
            (RENDEZVOUS, 1) => PunchMsg::Registered { id: f.name()?, public: f.addr()? },
            (RENDEZVOUS, 2) => {
                let id = f.name()?;
                let b = f.u8()?;
                let code = RefusalCode::from_u8(b).ok_or(PunchMsgError::BadCode(b))?;
                PunchMsg::Refused { id, code, reason: f.text(MAX_REASON, PunchMsgError::BadReason)? }
            }
            (RENDEZVOUS, 3) => PunchMsg::Connect { token: f.array()?, id: f.name()?, dest: f.name()? },
            (RENDEZVOUS, 4) => PunchMsg::PeerInfo {
                peer: f.name()?,
                session: f.u64()?,
                public: f.addr()?,
                private: f.addrs(MAX_PRIVATE)?,
            },
            (RENDEZVOUS, 5) => {
                PunchMsg::ConnectFailed { dest: f.name()?, reason: f.text(MAX_REASON, PunchMsgError::BadReason)? }
            }
            (RENDEZVOUS, 6) => PunchMsg::Unregister { token: f.array()?, id: f.name()? },
            (RENDEZVOUS, 7) => {
                let (peer, session, b) = (f.name()?, f.u64()?, f.u8()?);
                PunchMsg::PeerLeft {
                    peer,
                    session,
                    why: LeaveReason::from_u8(b).ok_or(PunchMsgError::BadLeaveReason(b))?,
                }
            }
            (RENDEZVOUS, 8) => {
                PunchMsg::Decline { token: f.array()?, id: f.name()?, peer: f.name()?, session: f.u64()? }
            }
            (RENDEZVOUS, 9) => PunchMsg::Verify { cookie: f.array()? },
            (RELAY, 0) => {
                PunchMsg::RelayTo { token: f.array()?, from: f.name()?, to: f.name()?, inner: inner(&mut f)? }
            }
            (RELAY, 1) => PunchMsg::RelayedFrom { from: f.name()?, inner: inner(&mut f)? },
            (PEER, 0) => PunchMsg::Probe { session: f.u64()?, nonce: f.u64()? },
            (PEER, 1) => PunchMsg::ProbeAck { session: f.u64()?, nonce: f.u64()? },
            (PEER, 2) => PunchMsg::Data {
                session: f.u64()?,
                epoch: f.u64()?,
                seq: f.u64()?,
                body: f.text(MAX_BODY, PunchMsgError::BadBody)?,
            },
            (PEER, 3) => PunchMsg::Ack { session: f.u64()?, epoch: f.u64()?, next: f.u64()? },
            _ => unreachable!("every known kind is listed above"),
        };
        f.end()?;
        Ok(msg)
    }
}

/// Why a datagram is not a punch message: bad framing, or a bad message in a good frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PunchDatagramError {
    /// The datagram is not exactly one valid frame.
    #[error(transparent)]
    Frame(#[from] crate::wire::frame::FrameError),
    /// The frame is not a valid punch message.
    #[error(transparent)]
    Message(#[from] PunchMsgError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn every_message() -> Vec<PunchMsg> {
        let token = [9; TOKEN_LEN];
        let inner = PunchMsg::Probe { session: 1, nonce: 2 }.to_bytes();
        vec![
            PunchMsg::Register {
                token,
                cookie: [3; COOKIE_LEN],
                id: "A".into(),
                private: vec![addr("192.168.1.2:4000"), addr("[fd00::1]:4000")],
            },
            PunchMsg::Registered { id: "A".into(), public: addr("198.51.100.7:20000") },
            PunchMsg::Refused { id: "A".into(), code: RefusalCode::Taken, reason: "id A is taken".into() },
            PunchMsg::Connect { token, id: "A".into(), dest: "B".into() },
            PunchMsg::PeerInfo { peer: "B".into(), session: 77, public: addr("203.0.113.9:1"), private: vec![] },
            PunchMsg::ConnectFailed { dest: "B".into(), reason: "not registered".into() },
            PunchMsg::Unregister { token, id: "A".into() },
            PunchMsg::PeerLeft { peer: "A".into(), session: 77, why: LeaveReason::Busy },
            PunchMsg::Decline { token, id: "A".into(), peer: "C".into(), session: 78 },
            PunchMsg::Verify { cookie: [5; COOKIE_LEN] },
            PunchMsg::RelayTo { token, from: "A".into(), to: "B".into(), inner: inner.clone() },
            PunchMsg::RelayedFrom { from: "A".into(), inner },
            PunchMsg::Probe { session: u64::MAX, nonce: 0 },
            PunchMsg::ProbeAck { session: 3, nonce: 4 },
            PunchMsg::Data { session: 1, epoch: 2, seq: 3, body: "hello ✓".into() },
            PunchMsg::Ack { session: 1, epoch: 2, next: 4 },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for msg in every_message() {
            let wire = msg.to_bytes();
            assert_eq!(PunchMsg::from_datagram(wire.clone()), Ok(msg.clone()), "{wire:02x?}");
            assert!(wire.len() <= MAX_DATAGRAM);
        }
    }

    #[test]
    fn a_probe_is_laid_out_as_documented() {
        let wire = PunchMsg::Probe { session: 0x0102030405060708, nonce: 0x1112131415161718 }.to_bytes();
        assert_eq!(
            &wire[..],
            [26, 0, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
    }

    #[test]
    fn a_register_is_laid_out_as_documented() {
        let token: Token = std::array::from_fn(|i| i as u8);
        let cookie: Cookie = std::array::from_fn(|i| 0x80 | i as u8);
        let msg = PunchMsg::Register { token, cookie, id: "A".into(), private: vec![addr("192.168.1.2:4000")] };
        let mut expected = vec![0x18, 0, 0, 0x2a, 0, 0];
        expected.extend(token);
        expected.extend(cookie);
        expected.extend([1, b'A', 1, 4, 192, 168, 1, 2, 0x0f, 0xa0]);
        assert_eq!(&msg.to_bytes()[..], expected);
    }

    /// Smaller than every request, so answering any request with one never amplifies.
    #[test]
    fn a_verify_is_smaller_than_the_smallest_request() {
        let verify = PunchMsg::Verify { cookie: [0; COOKIE_LEN] }.to_bytes();
        assert_eq!(verify.len(), 22);
        let smallest = PunchMsg::Unregister { token: [0; TOKEN_LEN], id: "A".into() }.to_bytes();
        assert_eq!(smallest.len(), MIN_REQUEST);
        assert!(verify.len() < MIN_REQUEST);
    }

    #[test]
    fn a_peer_left_is_laid_out_as_documented() {
        let msg = PunchMsg::PeerLeft { peer: "A".into(), session: 0x0102030405060708, why: LeaveReason::MovedOn };
        assert_eq!(&msg.to_bytes()[..], [0x18, 7, 0, 0x0b, 0, 0, 1, b'A', 1, 2, 3, 4, 5, 6, 7, 8, 2]);
    }

    #[test]
    fn malformed_datagrams_get_typed_errors() {
        let frame = |kind: u8, subtype: u8, payload: &[u8]| {
            let mut w = vec![kind, subtype];
            w.extend((payload.len() as u16).to_be_bytes());
            w.extend([0, 0]);
            w.extend(payload);
            PunchMsg::from_datagram(Bytes::from(w))
        };
        assert_eq!(frame(24, 10, &[]), Err(PunchMsgError::UnknownKind { kind: RENDEZVOUS, subtype: 10 }.into()));
        assert_eq!(frame(24, 9, &[0; 15]), Err(PunchMsgError::BadLength { what: "verify", len: 15 }.into()));
        assert_eq!(frame(24, 7, &[1, b'A', 0, 0, 0, 0, 0, 0, 0, 1, 4]), Err(PunchMsgError::BadLeaveReason(4).into()));
        assert_eq!(frame(26, 0, &[0; 15]), Err(PunchMsgError::BadLength { what: "probe", len: 15 }.into()));
        assert_eq!(frame(26, 0, &[0; 17]), Err(PunchMsgError::BadLength { what: "probe", len: 17 }.into()));
        assert_eq!(frame(24, 1, &[1, b' ', 4, 1, 2, 3, 4, 0, 1]), Err(PunchMsgError::BadName.into()));
        assert_eq!(frame(24, 2, &[1, b'A', 5]), Err(PunchMsgError::BadCode(5).into()));
        assert_eq!(frame(24, 1, &[1, b'A', 5, 1, 2, 3, 4, 0, 1]), Err(PunchMsgError::BadAddress(5).into()));
        let mut register = vec![0; TOKEN_LEN + COOKIE_LEN];
        register.extend([1, b'A', 9]);
        assert_eq!(frame(24, 0, &register), Err(PunchMsgError::TooManyEndpoints(9).into()));
        let mut data = vec![0; 24];
        data.extend([0xff]);
        assert_eq!(frame(26, 2, &data), Err(PunchMsgError::BadBody.into()));
        let mut relayed = vec![1, b'A'];
        relayed.extend(vec![0; MAX_INNER + 1]);
        assert_eq!(frame(25, 1, &relayed), Err(PunchMsgError::InnerTooLong(MAX_INNER + 1).into()));
        assert!(matches!(PunchMsg::from_datagram(Bytes::from_static(&[26, 0, 0])), Err(PunchDatagramError::Frame(_))));
    }
}
