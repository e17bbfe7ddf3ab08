//! Messages of the P2P mesh and RTT protocol: the original's frame types 0–5, each one
//! [`Frame`] of the shared format. Byte layouts are in `docs/PROTOCOL.md` §4.
//!
//! | type | subtype | message          | payload                                          | direction       |
//! |------|---------|------------------|--------------------------------------------------|-----------------|
//! | 0    | 0       | `ListServers`    | (empty)                                          | any → server    |
//! | 1    | 0       | `Announce`       | server addr, known addrs                         | server → server |
//! | 1    | 1       | `ServerList`     | addrs (the answering server first)               | server → any    |
//! | 1    | 2       | `PeerHello`      | nonce \[32]                                      | dialler → server |
//! | 1    | 3       | `PeerChallenge`  | nonce \[32], proof \[32]                         | server → dialler |
//! | 1    | 4       | `PeerProof`      | proof \[32]                                      | dialler → server |
//! | 1    | 5       | `PeerRefused`    | reason                                           | server → server |
//! | 2    | 0       | `Register`       | name                                             | client → server |
//! | 2    | 1       | `Registered`     | name                                             | server → client |
//! | 2    | 2       | `RegisterRefused`| name, reason                                     | server → client |
//! | 2    | 3       | `Claim`          | name, home addr                                  | server → server |
//! | 2    | 4       | `ClaimOk`        | name, home addr                                  | server → server |
//! | 2    | 5       | `ClaimConflict`  | name, holder addr                                | server → server |
//! | 2    | 6       | `RegisterChallenge` | nonce \[32]                                   | server → client |
//! | 2    | 7       | `RegisterProof`  | nonce \[32], proof \[32]                         | client → server |
//! | 2    | 8       | `Takeover`       | name, home addr                                  | server → server |
//! | 3    | 0       | `Send`           | id, to name, body                                | client → server |
//! | 3    | 1       | `Deliver`        | id, from name, body                              | server → client |
//! | 3    | 2       | `Forward`        | id, attempt u8, hops u8, origin addr, from, to, body | server → server |
//! | 3    | 3       | `Receipt`        | id, status u8                                    | server → any    |
//! | 3    | 4       | `ReceiptRelay`   | id, status u8, hops u8, origin addr              | server → server |
//! | 4    | 0 / 1   | `Ping` / `Pong`  | token u64                                        | any             |
//! | 5    | 0       | `Leave`          | (empty)                                          | client → server |
//! | 5    | 1       | `Gone`           | name, home addr                                  | server → server |
//!
//! Field encodings: a *name* is a length byte and 1–[`MAX_NAME`] bytes of UTF-8 without
//! whitespace or control characters; an *addr* is a family byte (4 or 6), the address (4 or
//! 16 bytes) and a port (u16 BE); a list of addrs is a count byte (≤ [`MAX_SERVERS`]) and
//! that many addrs; an *id* is a UUID as 16 raw bytes; a *body* is the rest of the payload,
//! 0–[`MAX_BODY`] bytes of UTF-8; a *reason* the rest of the payload, UTF-8, ≤ 256 bytes.

pub use crate::auth::PROOF_LEN;
pub use crate::wire::fields::{is_valid_name, MAX_NAME};
use crate::wire::fields::{put_addr, put_addrs, put_name, FieldError, Fields};
use crate::wire::frame::{Frame, FrameError, FrameType};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::SocketAddr;
use uuid::Uuid;
/// Longest message body, in bytes.
pub const MAX_BODY: usize = 4096;
/// Most servers one list carries (and so the largest mesh a server tracks).
pub const MAX_SERVERS: usize = 64;
/// Longest reason text; longer reasons are cut at a character boundary when encoded.
pub const MAX_REASON: usize = 256;

/// What became of a message, as its [`MeshMsg::Receipt`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptStatus {
    /// The recipient's server handed it to the recipient.
    Delivered,
    /// No server of the mesh has a user of that name.
    NoSuchUser,
}

impl ReceiptStatus {
    fn to_u8(self) -> u8 {
        match self {
            ReceiptStatus::Delivered => 0,
            ReceiptStatus::NoSuchUser => 1,
        }
    }

    fn from_u8(b: u8) -> Option<ReceiptStatus> {
        match b {
            0 => Some(ReceiptStatus::Delivered),
            1 => Some(ReceiptStatus::NoSuchUser),
            _ => None,
        }
    }
}

/// One message of the mesh protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshMsg {
    /// Asks a server for the servers it knows (answered with [`MeshMsg::ServerList`]).
    ListServers,
    /// First message on a server-to-server link: who the sender is (the address it
    /// listens on) and every server it knows. Sent again when it learns of more.
    Announce {
        /// The sender's listening address: its identity in the mesh.
        server: SocketAddr,
        /// Other servers the sender knows.
        known: Vec<SocketAddr>,
    },
    /// The servers the answering server knows, itself first.
    ServerList {
        /// Listening addresses.
        servers: Vec<SocketAddr>,
    },
    /// First message on a link a server dials to a mesh with a secret: its fresh nonce.
    /// Answered with `PeerChallenge` (or `PeerRefused`).
    PeerHello {
        /// The dialler's nonce.
        nonce: [u8; PROOF_LEN],
    },
    /// The accepting server's nonce, and its proof over both nonces that it knows the
    /// mesh secret.
    PeerChallenge {
        /// The acceptor's nonce.
        nonce: [u8; PROOF_LEN],
        /// HMAC-SHA256(secret, "switchyard mesh v1 acceptor" | dialler nonce | acceptor nonce).
        proof: [u8; PROOF_LEN],
    },
    /// The dialler's proof; its `Announce` follows.
    PeerProof {
        /// HMAC-SHA256(secret, "switchyard mesh v1 dialler" | acceptor nonce | dialler nonce).
        proof: [u8; PROOF_LEN],
    },
    /// A server will not link with the other: why (no secret, a wrong one). The sender
    /// closes the link after it.
    PeerRefused {
        /// Why.
        reason: String,
    },
    /// A client asks to be known as `name`.
    Register {
        /// The name.
        name: String,
    },
    /// The registration succeeded.
    Registered {
        /// The name.
        name: String,
    },
    /// The registration was refused.
    RegisterRefused {
        /// The name asked for.
        name: String,
        /// Why (taken, invalid, server full, …).
        reason: String,
    },
    /// A server tells a peer that `name` lives at `home` (a new registration, or its
    /// users when a link comes up). Answered with `ClaimOk` or `ClaimConflict`.
    Claim {
        /// The user.
        name: String,
        /// The server the user is registered at.
        home: SocketAddr,
    },
    /// The peer accepts the claim.
    ClaimOk {
        /// The user.
        name: String,
        /// The claiming server, as in the claim.
        home: SocketAddr,
    },
    /// The peer knows `name` live at another server, `holder`, which keeps it.
    ClaimConflict {
        /// The user.
        name: String,
        /// The server that keeps the name.
        holder: SocketAddr,
    },
    /// The name asked for is one of the server's token-holding names (`--user-token-file`):
    /// the client proves it holds the name's token over this nonce before it registers.
    /// Answered with `RegisterProof`.
    RegisterChallenge {
        /// The server's fresh nonce.
        nonce: [u8; PROOF_LEN],
    },
    /// The client's answer to a `RegisterChallenge`: its own nonce and its proof.
    RegisterProof {
        /// The client's nonce.
        nonce: [u8; PROOF_LEN],
        /// HMAC-SHA256(token, "switchyard mesh v1 user " | name | server nonce | client nonce).
        proof: [u8; PROOF_LEN],
    },
    /// Like `Claim`, for a registration that proved the name's token: the peer gives the
    /// name up even where a user holds it (that user is told and disconnected) and
    /// answers `ClaimOk`; it answers `ClaimConflict` only to keep its own pending proved
    /// registration from a higher address.
    Takeover {
        /// The user.
        name: String,
        /// The server the user is registering at.
        home: SocketAddr,
    },
    /// A client sends `body` to the user `to`.
    Send {
        /// The message's id, chosen by the sending client; resends keep it.
        id: Uuid,
        /// The recipient.
        to: String,
        /// The text.
        body: String,
    },
    /// A server hands a message to its recipient.
    Deliver {
        /// The message's id.
        id: Uuid,
        /// The sender.
        from: String,
        /// The text.
        body: String,
    },
    /// A message travelling between servers.
    Forward {
        /// The message's id.
        id: Uuid,
        /// Which routing of the message this copy belongs to: the origin counts up each
        /// time it routes the same id again (the client resent it, or a one-hop forward
        /// went unanswered). A server passes on and delivers each attempt of an id once.
        attempt: u8,
        /// Further server-to-server hops allowed after this one.
        hops: u8,
        /// The server the sender is on: receipts go there.
        origin: SocketAddr,
        /// The sender.
        from: String,
        /// The recipient.
        to: String,
        /// The text.
        body: String,
    },
    /// What became of message `id`: to the origin server, then to the sending client.
    Receipt {
        /// The message's id.
        id: Uuid,
        /// The outcome.
        status: ReceiptStatus,
    },
    /// A receipt on its way to an origin server this server has no link to: passed on
    /// toward `origin`, flooding with a hop limit like a `Forward`.
    ReceiptRelay {
        /// The message's id.
        id: Uuid,
        /// The outcome.
        status: ReceiptStatus,
        /// Further server-to-server hops allowed after this one.
        hops: u8,
        /// The server the receipt is for.
        origin: SocketAddr,
    },
    /// An echo request: round-trip probes and link health checks.
    Ping {
        /// Echoed back in the `Pong`.
        token: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The `Ping`'s token.
        token: u64,
    },
    /// The client leaves; its server forgets it and tells the mesh.
    Leave,
    /// A server tells its peers that `name` left `home`.
    Gone {
        /// The user.
        name: String,
        /// The server it was registered at.
        home: SocketAddr,
    },
}

/// A frame that is not a valid mesh message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshMsgError {
    /// The frame type or subtype is not part of the mesh protocol.
    #[error("unexpected frame type {kind:?} subtype {subtype} in the mesh protocol")]
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
    /// A user name is empty, too long, not UTF-8, or holds whitespace or control characters.
    #[error("invalid user name")]
    BadName,
    /// An address has an unknown family byte.
    #[error("invalid address family {0}")]
    BadAddress(u8),
    /// A server list is longer than [`MAX_SERVERS`].
    #[error("server list of {0} entries (at most {MAX_SERVERS})")]
    TooManyServers(usize),
    /// A body is not UTF-8 or longer than [`MAX_BODY`].
    #[error("invalid message body")]
    BadBody,
    /// A reason is not UTF-8 or too long.
    #[error("invalid reason text")]
    BadReason,
    /// A receipt's status byte is unknown.
    #[error("unknown receipt status {0}")]
    BadStatus(u8),
}

/// True when `body` fits a message: at most [`MAX_BODY`] bytes.
pub fn is_valid_body(body: &str) -> bool {
    body.len() <= MAX_BODY
}

impl FieldError for MeshMsgError {
    fn bad_length(what: &'static str, len: usize) -> Self {
        MeshMsgError::BadLength { what, len }
    }
    fn bad_name() -> Self {
        MeshMsgError::BadName
    }
    fn bad_address(family: u8) -> Self {
        MeshMsgError::BadAddress(family)
    }
    fn too_many_addrs(count: usize) -> Self {
        MeshMsgError::TooManyServers(count)
    }
}

fn put_body(out: &mut BytesMut, body: &str) {
    assert!(is_valid_body(body), "message body over {MAX_BODY} bytes");
    out.put_slice(body.as_bytes());
}

fn truncated_reason(reason: &str) -> &[u8] {
    super::utf8_prefix(reason, MAX_REASON)
}

impl MeshMsg {
    /// The frame type and subtype of this message.
    pub fn kind(&self) -> (FrameType, u8) {
        match self {
            MeshMsg::ListServers => (FrameType::INFO_REQUEST, 0),
            MeshMsg::Announce { .. } => (FrameType::SERVER_ANNOUNCE, 0),
            MeshMsg::ServerList { .. } => (FrameType::SERVER_ANNOUNCE, 1),
            MeshMsg::PeerHello { .. } => (FrameType::SERVER_ANNOUNCE, 2),
            MeshMsg::PeerChallenge { .. } => (FrameType::SERVER_ANNOUNCE, 3),
            MeshMsg::PeerProof { .. } => (FrameType::SERVER_ANNOUNCE, 4),
            MeshMsg::PeerRefused { .. } => (FrameType::SERVER_ANNOUNCE, 5),
            MeshMsg::Register { .. } => (FrameType::USER_REGISTER, 0),
            MeshMsg::Registered { .. } => (FrameType::USER_REGISTER, 1),
            MeshMsg::RegisterRefused { .. } => (FrameType::USER_REGISTER, 2),
            MeshMsg::Claim { .. } => (FrameType::USER_REGISTER, 3),
            MeshMsg::ClaimOk { .. } => (FrameType::USER_REGISTER, 4),
            MeshMsg::ClaimConflict { .. } => (FrameType::USER_REGISTER, 5),
            MeshMsg::RegisterChallenge { .. } => (FrameType::USER_REGISTER, 6),
            MeshMsg::RegisterProof { .. } => (FrameType::USER_REGISTER, 7),
            MeshMsg::Takeover { .. } => (FrameType::USER_REGISTER, 8),
            MeshMsg::Send { .. } => (FrameType::USER_MESSAGE, 0),
            MeshMsg::Deliver { .. } => (FrameType::USER_MESSAGE, 1),
            MeshMsg::Forward { .. } => (FrameType::USER_MESSAGE, 2),
            MeshMsg::Receipt { .. } => (FrameType::USER_MESSAGE, 3),
            MeshMsg::ReceiptRelay { .. } => (FrameType::USER_MESSAGE, 4),
            MeshMsg::Ping { .. } => (FrameType::ECHO_REQUEST, 0),
            MeshMsg::Pong { .. } => (FrameType::ECHO_REQUEST, 1),
            MeshMsg::Leave => (FrameType::DISCONNECT, 0),
            MeshMsg::Gone { .. } => (FrameType::DISCONNECT, 1),
        }
    }

    /// Appends the message, framed, to `out`.
    ///
    /// Panics only on a caller bug: a name that [`is_valid_name`] refuses, a body over
    /// [`MAX_BODY`], or a list over [`MAX_SERVERS`]. Reasons are cut to [`MAX_REASON`].
    pub fn encode(&self, out: &mut BytesMut) {
        let mut p = BytesMut::new();
        match self {
            MeshMsg::ListServers | MeshMsg::Leave => {}
            MeshMsg::Announce { server, known } => {
                put_addr(&mut p, server);
                put_addrs(&mut p, known, MAX_SERVERS);
            }
            MeshMsg::ServerList { servers } => put_addrs(&mut p, servers, MAX_SERVERS),
            MeshMsg::PeerHello { nonce } | MeshMsg::RegisterChallenge { nonce } => p.put_slice(nonce),
            MeshMsg::PeerChallenge { nonce, proof } | MeshMsg::RegisterProof { nonce, proof } => {
                p.put_slice(nonce);
                p.put_slice(proof);
            }
            MeshMsg::PeerProof { proof } => p.put_slice(proof),
            MeshMsg::PeerRefused { reason } => p.put_slice(truncated_reason(reason)),
            MeshMsg::Register { name } | MeshMsg::Registered { name } => put_name(&mut p, name),
            MeshMsg::RegisterRefused { name, reason } => {
                put_name(&mut p, name);
                p.put_slice(truncated_reason(reason));
            }
            MeshMsg::Claim { name, home }
            | MeshMsg::ClaimOk { name, home }
            | MeshMsg::Takeover { name, home }
            | MeshMsg::Gone { name, home } => {
                put_name(&mut p, name);
                put_addr(&mut p, home);
            }
            MeshMsg::ClaimConflict { name, holder } => {
                put_name(&mut p, name);
                put_addr(&mut p, holder);
            }
            MeshMsg::Send { id, to, body } => {
                p.put_slice(id.as_bytes());
                put_name(&mut p, to);
                put_body(&mut p, body);
            }
            MeshMsg::Deliver { id, from, body } => {
                p.put_slice(id.as_bytes());
                put_name(&mut p, from);
                put_body(&mut p, body);
            }
            MeshMsg::Forward { id, attempt, hops, origin, from, to, body } => {
                p.put_slice(id.as_bytes());
                p.put_u8(*attempt);
                p.put_u8(*hops);
                put_addr(&mut p, origin);
                put_name(&mut p, from);
                put_name(&mut p, to);
                put_body(&mut p, body);
            }
            MeshMsg::Receipt { id, status } => {
                p.put_slice(id.as_bytes());
                p.put_u8(status.to_u8());
            }
            MeshMsg::ReceiptRelay { id, status, hops, origin } => {
                p.put_slice(id.as_bytes());
                p.put_u8(status.to_u8());
                p.put_u8(*hops);
                put_addr(&mut p, origin);
            }
            MeshMsg::Ping { token } | MeshMsg::Pong { token } => p.put_u64(*token),
        }
        let (kind, subtype) = self.kind();
        Frame::new(kind, subtype, p.freeze()).encode(out).expect("mesh payloads fit a frame");
    }

    /// The message as one encoded buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Parses a frame as a mesh message.
    pub fn decode(frame: Frame) -> Result<MeshMsg, MeshMsgError> {
        let (kind, subtype) = (frame.kind, frame.subtype);
        let what = match (kind, subtype) {
            (FrameType::INFO_REQUEST, 0) => "list servers",
            (FrameType::SERVER_ANNOUNCE, 0) => "announce",
            (FrameType::SERVER_ANNOUNCE, 1) => "server list",
            (FrameType::SERVER_ANNOUNCE, 2) => "peer hello",
            (FrameType::SERVER_ANNOUNCE, 3) => "peer challenge",
            (FrameType::SERVER_ANNOUNCE, 4) => "peer proof",
            (FrameType::SERVER_ANNOUNCE, 5) => "peer refused",
            (FrameType::USER_REGISTER, 0) => "register",
            (FrameType::USER_REGISTER, 1) => "registered",
            (FrameType::USER_REGISTER, 2) => "register refused",
            (FrameType::USER_REGISTER, 3) => "claim",
            (FrameType::USER_REGISTER, 4) => "claim ok",
            (FrameType::USER_REGISTER, 5) => "claim conflict",
            (FrameType::USER_REGISTER, 6) => "register challenge",
            (FrameType::USER_REGISTER, 7) => "register proof",
            (FrameType::USER_REGISTER, 8) => "takeover",
            (FrameType::USER_MESSAGE, 0) => "send",
            (FrameType::USER_MESSAGE, 1) => "deliver",
            (FrameType::USER_MESSAGE, 2) => "forward",
            (FrameType::USER_MESSAGE, 3) => "receipt",
            (FrameType::USER_MESSAGE, 4) => "receipt relay",
            (FrameType::ECHO_REQUEST, 0) => "ping",
            (FrameType::ECHO_REQUEST, 1) => "pong",
            (FrameType::DISCONNECT, 0) => "leave",
            (FrameType::DISCONNECT, 1) => "gone",
            _ => return Err(MeshMsgError::UnknownKind { kind, subtype }),
        };
        let mut f = Fields::new(what, frame.payload);
        let msg = match (kind.0, subtype) {
            (0, 0) => MeshMsg::ListServers,
            (1, 0) => MeshMsg::Announce { server: f.addr()?, known: f.addrs(MAX_SERVERS)? },
            (1, 1) => MeshMsg::ServerList { servers: f.addrs(MAX_SERVERS)? },
            (1, 2) => MeshMsg::PeerHello { nonce: f.array()? },
            (1, 3) => MeshMsg::PeerChallenge { nonce: f.array()?, proof: f.array()? },
            (1, 4) => MeshMsg::PeerProof { proof: f.array()? },
            (1, 5) => MeshMsg::PeerRefused { reason: f.text(MAX_REASON, MeshMsgError::BadReason)? },
            (2, 0) => MeshMsg::Register { name: f.name()? },
            (2, 1) => MeshMsg::Registered { name: f.name()? },
            (2, 2) => {
                MeshMsg::RegisterRefused { name: f.name()?, reason: f.text(MAX_REASON, MeshMsgError::BadReason)? }
            }
            (2, 3) => MeshMsg::Claim { name: f.name()?, home: f.addr()? },
            (2, 4) => MeshMsg::ClaimOk { name: f.name()?, home: f.addr()? },
            (2, 5) => MeshMsg::ClaimConflict { name: f.name()?, holder: f.addr()? },
            (2, 6) => MeshMsg::RegisterChallenge { nonce: f.array()? },
            (2, 7) => MeshMsg::RegisterProof { nonce: f.array()?, proof: f.array()? },
            (2, 8) => MeshMsg::Takeover { name: f.name()?, home: f.addr()? },
            (3, 0) => MeshMsg::Send { id: f.uuid()?, to: f.name()?, body: f.text(MAX_BODY, MeshMsgError::BadBody)? },
            (3, 1) => {
                MeshMsg::Deliver { id: f.uuid()?, from: f.name()?, body: f.text(MAX_BODY, MeshMsgError::BadBody)? }
            }
            (3, 2) => MeshMsg::Forward {
                id: f.uuid()?,
                attempt: f.u8()?,
                hops: f.u8()?,
                origin: f.addr()?,
                from: f.name()?,
                to: f.name()?,
                body: f.text(MAX_BODY, MeshMsgError::BadBody)?,
            },
            (3, 3) => {
                let id = f.uuid()?;
                let b = f.u8()?;
                MeshMsg::Receipt { id, status: ReceiptStatus::from_u8(b).ok_or(MeshMsgError::BadStatus(b))? }
            }
            (3, 4) => {
                let id = f.uuid()?;
                let b = f.u8()?;
                let status = ReceiptStatus::from_u8(b).ok_or(MeshMsgError::BadStatus(b))?;
                MeshMsg::ReceiptRelay { id, status, hops: f.u8()?, origin: f.addr()? }
            }
            (4, 0) => MeshMsg::Ping { token: f.u64()? },
            (4, 1) => MeshMsg::Pong { token: f.u64()? },
            (5, 0) => MeshMsg::Leave,
            (5, 1) => MeshMsg::Gone { name: f.name()?, home: f.addr()? },
            _ => unreachable!("every known kind is listed above"),
        };
        f.end()?;
        Ok(msg)
    }
}

/// Frame decoding errors and message errors as one type, for stream readers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshStreamError {
    /// The byte stream is not framed correctly.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame is not a valid mesh message.
    #[error(transparent)]
    Message(#[from] MeshMsgError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FrameDecoder;

    fn decode(wire: &[u8]) -> Result<MeshMsg, MeshMsgError> {
        let mut buf = BytesMut::from(wire);
        let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        MeshMsg::decode(frame)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let id = Uuid::from_bytes([7; 16]);
        for msg in [
            MeshMsg::ListServers,
            MeshMsg::Announce { server: addr("127.0.0.1:5001"), known: vec![addr("[::1]:5002")] },
            MeshMsg::ServerList { servers: vec![] },
            MeshMsg::PeerHello { nonce: [1; PROOF_LEN] },
            MeshMsg::PeerChallenge { nonce: [2; PROOF_LEN], proof: [3; PROOF_LEN] },
            MeshMsg::PeerProof { proof: [4; PROOF_LEN] },
            MeshMsg::PeerRefused { reason: "wrong mesh secret".into() },
            MeshMsg::Register { name: "Alice".into() },
            MeshMsg::Registered { name: "Alice".into() },
            MeshMsg::RegisterRefused { name: "Alice".into(), reason: "taken".into() },
            MeshMsg::Claim { name: "Bob".into(), home: addr("10.0.0.1:5003") },
            MeshMsg::ClaimOk { name: "Bob".into(), home: addr("10.0.0.1:5003") },
            MeshMsg::ClaimConflict { name: "Bob".into(), holder: addr("10.0.0.2:5001") },
            MeshMsg::RegisterChallenge { nonce: [5; PROOF_LEN] },
            MeshMsg::RegisterProof { nonce: [6; PROOF_LEN], proof: [7; PROOF_LEN] },
            MeshMsg::Takeover { name: "Bob".into(), home: addr("10.0.0.3:5001") },
            MeshMsg::Send { id, to: "Bob".into(), body: "Hello, how are you?".into() },
            MeshMsg::Deliver { id, from: "Alice".into(), body: String::new() },
            MeshMsg::Forward {
                id,
                attempt: 1,
                hops: 3,
                origin: addr("127.0.0.1:5001"),
                from: "Alice".into(),
                to: "Bob".into(),
                body: "hi".into(),
            },
            MeshMsg::Receipt { id, status: ReceiptStatus::NoSuchUser },
            MeshMsg::ReceiptRelay { id, status: ReceiptStatus::Delivered, hops: 2, origin: addr("127.0.0.1:5003") },
            MeshMsg::Ping { token: u64::MAX },
            MeshMsg::Pong { token: 0 },
            MeshMsg::Leave,
            MeshMsg::Gone { name: "Bob".into(), home: addr("127.0.0.1:5002") },
        ] {
            assert_eq!(decode(&msg.to_bytes()), Ok(msg));
        }
    }

    #[test]
    fn send_layout_is_id_then_name_then_body() {
        let wire = MeshMsg::Send { id: Uuid::from_bytes([1; 16]), to: "Bo".into(), body: "hi".into() }.to_bytes();
        let mut want = vec![3, 0, 0, 21, 0, 0];
        want.extend([1; 16]);
        want.extend([2, b'B', b'o', b'h', b'i']);
        assert_eq!(&wire[..], &want[..]);
    }

    #[test]
    fn a_peer_challenge_is_the_nonce_then_the_proof() {
        let wire = MeshMsg::PeerChallenge { nonce: [5; PROOF_LEN], proof: [6; PROOF_LEN] }.to_bytes();
        let mut want = vec![1, 3, 0, 64, 0, 0];
        want.extend([5; 32]);
        want.extend([6; 32]);
        assert_eq!(&wire[..], &want[..]);
        let short = Frame::new(FrameType(1), 4, &[0u8; 31][..]);
        assert_eq!(MeshMsg::decode(short), Err(MeshMsgError::BadLength { what: "peer proof", len: 31 }));
    }

    #[test]
    fn addresses_are_family_octets_port() {
        let wire = MeshMsg::ServerList { servers: vec![addr("127.0.0.1:5001")] }.to_bytes();
        assert_eq!(&wire[..], &[1, 1, 0, 8, 0, 0, 1, 4, 127, 0, 0, 1, 0x13, 0x89]);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let frame = |kind: u8, subtype, payload: &'static [u8]| Frame::new(FrameType(kind), subtype, payload);
        assert_eq!(MeshMsg::decode(frame(2, 0, b"\x03a b")), Err(MeshMsgError::BadName));
        assert_eq!(MeshMsg::decode(frame(2, 0, b"\x00")), Err(MeshMsgError::BadName));
        assert_eq!(MeshMsg::decode(frame(2, 0, b"\x05ab")), Err(MeshMsgError::BadLength { what: "register", len: 3 }));
        assert_eq!(MeshMsg::decode(frame(4, 0, &[0; 9])), Err(MeshMsgError::BadLength { what: "ping", len: 9 }));
        assert_eq!(MeshMsg::decode(frame(1, 1, &[1, 5, 0, 0])), Err(MeshMsgError::BadAddress(5)));
        assert_eq!(MeshMsg::decode(frame(1, 1, &[65])), Err(MeshMsgError::TooManyServers(65)));
        let mut receipt = vec![0; 16];
        receipt.push(9);
        assert_eq!(MeshMsg::decode(Frame::new(FrameType(3), 3, receipt)), Err(MeshMsgError::BadStatus(9)));
        assert!(matches!(MeshMsg::decode(frame(6, 0, b"")), Err(MeshMsgError::UnknownKind { .. })));
        assert!(matches!(MeshMsg::decode(frame(0, 1, b"")), Err(MeshMsgError::UnknownKind { .. })));
    }

    #[test]
    fn names_refuse_whitespace_control_and_length() {
        assert!(is_valid_name("Alice"));
        assert!(is_valid_name("Zoë"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a\u{7}"));
        assert!(!is_valid_name(&"x".repeat(MAX_NAME + 1)));
    }
}
