//! The P2P mesh: servers that find each other and relay messages between users, and the
//! client that picks the fastest server.
//!
//! - [`server`]: a mesh server (discovery, user registry, routing, dedup, receipts).
//! - [`client`]: a user's session with one server, with an outbox that makes delivery
//!   exactly-once across reconnects.
//! - [`seen`]: the bounded cache of message ids that drops duplicates.
//! - [`reader`]: framing of mesh messages on a connection.
//! - `peer_auth`: the mesh-secret handshake on server links.
//! - [`tokens`]: per-user tokens, so a listed name is registered only by its holder.
//!
//! Wire format: `docs/PROTOCOL.md` §4 and [`crate::wire::mesh`].

pub mod client;
mod peer_auth;
pub mod reader;
pub mod seen;
pub mod server;
pub mod tokens;

use std::net::SocketAddr;
use uuid::Uuid;

/// What a mesh server reports, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// A server was added to the known set.
    PeerLearned {
        /// Its address.
        server: SocketAddr,
    },
    /// Our link to a server is up.
    PeerUp {
        /// Its address.
        server: SocketAddr,
    },
    /// Our link to a server went down.
    PeerDown {
        /// Its address.
        server: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A user registered here.
    UserRegistered {
        /// The name.
        name: String,
    },
    /// A registration here was refused.
    RegisterRefused {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A user registered here left.
    UserLeft {
        /// The name.
        name: String,
        /// Why (left, connection closed, name lost to another server).
        reason: String,
    },
    /// A message was delivered: to a user here, or (for a sender here) anywhere.
    Delivered {
        /// The message.
        id: Uuid,
        /// The recipient.
        to: String,
    },
    /// A message from a user here found no recipient.
    NoSuchUser {
        /// The message.
        id: Uuid,
        /// The name it was sent to.
        to: String,
    },
    /// No receipt came for a message to a user the server knows of; the client resends.
    ReceiptOverdue {
        /// The message.
        id: Uuid,
        /// The recipient.
        to: String,
    },
    /// A server link was refused, by us or by the other server, and closed: no mesh
    /// secret, a wrong one, or an `Announce` without proof.
    PeerRefused {
        /// The other end's address.
        peer: SocketAddr,
        /// Who refused (`we refused it: …` or `it refused us: …`) and why.
        reason: String,
    },
    /// A connection that had not yet said whether it is a user or a server failed its TLS
    /// handshake and was closed, in a mesh that admits servers by certificate: a server
    /// with a certificate from another CA, or as likely a user whose client refused ours.
    /// Not a [`PeerRefused`](Self::PeerRefused), since nothing said it was a server.
    HandshakeFailed {
        /// Its remote address.
        peer: SocketAddr,
        /// Why, as the TLS layer put it (`TLS: …`).
        reason: String,
    },
    /// A connection broke the protocol and was closed.
    ProtocolError {
        /// Its remote address.
        peer: SocketAddr,
        /// What it did.
        reason: String,
    },
}
