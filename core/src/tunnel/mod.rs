//! The tunnel: clients → local end → one carrier connection → remote end → a route's target.
//!
//! - [`local`]: accepts clients, routes them by prefix or static forward, keeps the carrier up;
//!   as the exposing end, also publishes ports at the remote end and connects their visitors'
//!   streams to local services (the reverse tunnel).
//! - [`remote`]: authenticates carriers and connects streams to allowlisted targets; listens on
//!   the ports exposing ends publish (within its allowed range) and opens a stream per visitor.
//! - [`mux`]: many streams over one carrier with per-stream flow control (both ends).
//! - [`carrier`]: a carrier's framing and heartbeat (both ends).
//! - [`auth`]: the HMAC-SHA256 challenge-response that opens every carrier.
//! - [`prefix`]: reading the route from a client's first bytes.
//!
//! Wire format: `docs/PROTOCOL.md` §3 and [`crate::wire::tunnel`].

pub mod auth;
pub mod carrier;
pub mod local;
pub mod mux;
pub mod prefix;
pub mod remote;

use crate::wire::tunnel::StreamId;
use mux::{EndKind, Ended};
use std::net::SocketAddr;
use std::time::Duration;

/// What either tunnel end reports, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// Local: connecting to the remote end (`attempt` counts since the last success).
    CarrierConnecting {
        /// The remote end.
        remote: SocketAddr,
        /// 1 for the first try after a success or at start.
        attempt: u32,
    },
    /// Remote: a carrier connection arrived and must now authenticate.
    CarrierAccepted {
        /// Where it came from.
        peer: SocketAddr,
    },
    /// Either end: the carrier authenticated; streams may open.
    CarrierUp {
        /// The other end.
        peer: SocketAddr,
    },
    /// Local: the carrier is down; the next attempt is in `retry_in`.
    CarrierDown {
        /// Why.
        reason: String,
        /// Backoff before the next attempt.
        retry_in: Duration,
    },
    /// Remote: a carrier ended.
    CarrierClosed {
        /// The local end it came from.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Either end: authentication failed (wrong secret, bad proof, version mismatch).
    AuthFailed {
        /// The other end.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A stream opened to `route` (empty: the default route).
    StreamOpened {
        /// The stream.
        stream: StreamId,
        /// Its route.
        route: String,
        /// The client (local end) or carrier peer (remote end).
        peer: SocketAddr,
        /// The client: at the local end `peer`; at the remote end the address the local
        /// end named in the `Open` (`None` from a version-1 local end, which names none).
        client: Option<SocketAddr>,
    },
    /// A stream could not open; its client got the reason as an `error:` line.
    StreamRefused {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: String,
    },
    /// A stream was aborted mid-way by either side.
    StreamReset {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: String,
    },
    /// A stream finished in both directions.
    StreamEnded {
        /// The stream.
        stream: StreamId,
    },
    /// Either end: a port is published at the remote end; its visitors become streams.
    Published {
        /// The port.
        port: u16,
        /// The other end of the carrier.
        peer: SocketAddr,
        /// At the exposing end, the local service the port leads to (the remote end does
        /// not know it).
        service: Option<SocketAddr>,
    },
    /// Either end: a port was not published (outside the allowed range, taken, bind failed).
    PublishRefused {
        /// The port.
        port: u16,
        /// The other end of the carrier.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Remote: a published port was closed because its carrier ended.
    Unpublished {
        /// The port.
        port: u16,
        /// The exposing end it belonged to.
        peer: SocketAddr,
    },
    /// Local: a static forward added while the end runs listens.
    ForwardOpened {
        /// Where it listens.
        addr: SocketAddr,
        /// Its route.
        route: String,
    },
    /// Local: a static forward added while the end runs could not listen.
    ForwardFailed {
        /// Where it was to listen.
        addr: SocketAddr,
        /// Its route.
        route: String,
        /// Why (the address is in use, say).
        reason: String,
    },
    /// Local: a client was turned away before it got a stream (tunnel down, bad prefix,
    /// prefix timeout); it got an `error:` line saying why.
    ClientRefused {
        /// The client, when known.
        peer: Option<SocketAddr>,
        /// Why.
        reason: String,
    },
}

impl From<Ended> for TunnelEvent {
    fn from(ended: Ended) -> TunnelEvent {
        let stream = ended.stream;
        match ended.kind {
            EndKind::Finished => TunnelEvent::StreamEnded { stream },
            EndKind::Refused(reason) => TunnelEvent::StreamRefused { stream, reason },
            EndKind::Reset(reason) => TunnelEvent::StreamReset { stream, reason },
        }
    }
}
