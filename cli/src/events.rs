//! How each machine's events become log lines.
//!
//! Levels follow what an operator needs: connections come and go at `info`; a peer that
//! breaks the protocol or a carrier that drops is a `warn`; a failed authentication is an
//! `error`, because it means two ends are misconfigured and nothing will work until someone
//! fixes a secret file. Every line starts with the machine's name (`echo:`,
//! `tunnel local:`), so the logs of `switchyard up`, where many machines share stderr,
//! stay readable.

use crate::repeats::{Occurrence, Repeats};
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Instant;
use switchyard_core::mesh::MeshEvent;
use switchyard_core::punch::RendezvousEvent;
use switchyard_core::service::broadcast::BroadcastEvent;
use switchyard_core::service::line_server::{EndReason, LineServerEvent};
use switchyard_core::service::reply::ReplyEvent;
use switchyard_core::tls::TlsEvent;
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::wire::punch::LeaveReason;

/// The server-link refusals logged lately, by machine, peer IP and reason.
static REFUSALS: Mutex<Repeats> = Mutex::new(Repeats::new());

/// An event that knows how to log itself.
pub trait LogEvent {
    /// Logs the event of the machine called `name`.
    fn log(&self, name: &str);
}

impl<E: LogEvent> LogEvent for TlsEvent<E> {
    fn log(&self, name: &str) {
        match self {
            TlsEvent::Inner(event) => event.log(name),
            TlsEvent::Secured { conn, suite } => tracing::debug!("{name}: {conn} secured: TLS 1.3, {suite}"),
            // The inner machine reports the connection's end with this reason too.
            TlsEvent::Failed { conn, reason } => tracing::debug!("{name}: {conn} TLS failed: {reason}"),
        }
    }
}

impl LogEvent for Infallible {
    fn log(&self, _name: &str) {
        match *self {}
    }
}

impl LogEvent for BroadcastEvent {
    fn log(&self, name: &str) {
        match self {
            BroadcastEvent::Joined { conn, name: who } => tracing::info!("{name}: {conn} joined as {who}"),
            BroadcastEvent::Left { conn, name: who } => tracing::info!("{name}: {conn} ({who}) left"),
            BroadcastEvent::Renamed { conn, from, to } => tracing::info!("{name}: {conn} renamed {from} to {to}"),
            // One per message: too many for info.
            BroadcastEvent::Relayed { conn, recipients } => {
                tracing::debug!("{name}: {conn} sent a line to {recipients} member(s)")
            }
        }
    }
}

impl LogEvent for ReplyEvent {
    fn log(&self, name: &str) {
        match self {
            // Two lines, as the lab server prints them: what came in, then what went out.
            ReplyEvent::Answered { conn, peer, request, reply } => {
                tracing::info!("{name}: received from {peer} ({conn}): {request}");
                tracing::info!("{name}: sent response to {peer} ({conn}): {reply}");
            }
        }
    }
}

impl<E: LogEvent> LogEvent for LineServerEvent<E> {
    fn log(&self, name: &str) {
        match self {
            LineServerEvent::Accepted { conn, peer } => tracing::info!("{name}: {conn} connected from {peer}"),
            LineServerEvent::Closed { conn, peer, reason } => match reason {
                EndReason::Finished => tracing::info!("{name}: {conn} from {peer} closed"),
                EndReason::Protocol(_) | EndReason::SlowConsumer(_) => {
                    tracing::warn!("{name}: {conn} from {peer} disconnected: {reason}")
                }
                _ => tracing::info!("{name}: {conn} from {peer} closed: {reason}"),
            },
            LineServerEvent::Service(event) => event.log(name),
        }
    }
}

/// A route name for people: the empty route is the default one.
fn route_name(route: &str) -> &str {
    if route.is_empty() {
        "default"
    } else {
        route
    }
}

impl LogEvent for TunnelEvent {
    fn log(&self, name: &str) {
        match self {
            TunnelEvent::CarrierConnecting { remote, attempt } => {
                tracing::debug!("{name}: connecting to the remote end {remote} (attempt {attempt})")
            }
            TunnelEvent::CarrierAccepted { peer } => tracing::debug!("{name}: carrier from {peer}: authenticating"),
            TunnelEvent::CarrierUp { peer } => tracing::info!("{name}: carrier up: authenticated with {peer}"),
            TunnelEvent::CarrierDown { reason, retry_in } => {
                tracing::warn!("{name}: carrier down: {reason}; retrying in {:.1} s", retry_in.as_secs_f64())
            }
            TunnelEvent::CarrierClosed { peer, reason } => {
                tracing::warn!("{name}: carrier from {peer} closed: {reason}")
            }
            TunnelEvent::AuthFailed { peer, reason } => {
                tracing::error!("{name}: authentication with {peer} failed: {reason}")
            }
            TunnelEvent::StreamOpened { stream, route, peer, client } => {
                // At the remote end `peer` is the carrier's: name the real client too.
                let client = client.filter(|c| c != peer).map(|c| format!(" (client {c})")).unwrap_or_default();
                tracing::info!("{name}: stream {stream} for {peer}{client} opened to route {}", route_name(route))
            }
            TunnelEvent::StreamRefused { stream, reason } => {
                tracing::info!("{name}: stream {stream} refused: {reason}")
            }
            TunnelEvent::StreamReset { stream, reason } => tracing::info!("{name}: stream {stream} reset: {reason}"),
            TunnelEvent::StreamEnded { stream } => tracing::debug!("{name}: stream {stream} ended"),
            TunnelEvent::Published { port, peer, service: Some(service) } => {
                tracing::info!("{name}: published {port} at {}:{port} → {service}", peer.ip())
            }
            TunnelEvent::Published { port, peer, service: None } => {
                tracing::info!("{name}: published port {port} for {peer}")
            }
            TunnelEvent::PublishRefused { port, peer, reason } => {
                tracing::warn!("{name}: port {port} not published ({peer}): {reason}")
            }
            TunnelEvent::Unpublished { port, peer } => {
                tracing::info!("{name}: port {port} closed: the carrier from {peer} ended")
            }
            TunnelEvent::ForwardOpened { addr, route } => {
                tracing::info!("{name}: forward on {addr} to route {route} listening")
            }
            TunnelEvent::ForwardFailed { addr, route, reason } => {
                tracing::error!("{name}: forward on {addr} to route {route} cannot listen: {reason}")
            }
            TunnelEvent::ClientRefused { peer: Some(peer), reason } => {
                tracing::info!("{name}: client {peer} turned away: {reason}")
            }
            TunnelEvent::ClientRefused { peer: None, reason } => {
                tracing::info!("{name}: a client was turned away: {reason}")
            }
        }
    }
}

impl LogEvent for MeshEvent {
    fn log(&self, name: &str) {
        match self {
            MeshEvent::PeerLearned { server } => tracing::debug!("{name}: learned of server {server}"),
            MeshEvent::PeerUp { server } => tracing::info!("{name}: linked to server {server}"),
            MeshEvent::PeerDown { server, reason } => tracing::warn!("{name}: link to {server} down: {reason}"),
            MeshEvent::UserRegistered { name: user } => tracing::info!("{name}: {user} registered"),
            MeshEvent::RegisterRefused { name: user, reason } => {
                tracing::info!("{name}: registration of {user} refused: {reason}")
            }
            MeshEvent::UserLeft { name: user, reason } => tracing::info!("{name}: {user} left ({reason})"),
            // One per message: too many for info.
            MeshEvent::Delivered { id, to } => tracing::debug!("{name}: message {id} delivered to {to}"),
            MeshEvent::NoSuchUser { id, to } => tracing::debug!("{name}: message {id}: no such user {to}"),
            MeshEvent::ReceiptOverdue { id, to } => {
                tracing::debug!("{name}: message {id} to {to}: no receipt yet; the client will resend")
            }
            MeshEvent::PeerRefused { peer, reason } => {
                // Refused again at every redial until someone fixes a secret or a
                // certificate; an accepting server sees a new port each time.
                let key = format!("{name} {} {reason}", peer.ip());
                let occurrence =
                    REFUSALS.lock().map_or(Occurrence::Warn { repeats: 0 }, |mut r| r.occurred(&key, Instant::now()));
                let line = format!("{name}: server link with {peer} closed: {reason}");
                match occurrence {
                    Occurrence::Warn { repeats: 0 } => tracing::warn!("{line}"),
                    Occurrence::Warn { repeats } => {
                        tracing::warn!("{line} (refused {repeats} more time(s) since the last warning)")
                    }
                    Occurrence::Quiet => tracing::debug!("{line}"),
                }
            }
            // Nothing says whose it was: a user's as likely as a server's, so not a server
            // link, and no louder than a client turned away.
            MeshEvent::HandshakeFailed { peer, reason } => {
                let reason = reason.strip_prefix("TLS: ").unwrap_or(reason);
                tracing::info!("{name}: connection from {peer} closed: its TLS handshake failed: {reason}")
            }
            MeshEvent::ProtocolError { peer, reason } => {
                tracing::warn!("{name}: {peer} disconnected: protocol error: {reason}")
            }
        }
    }
}

impl LogEvent for RendezvousEvent {
    fn log(&self, name: &str) {
        match self {
            RendezvousEvent::Registered { id, public } => tracing::info!("{name}: {id} registered at {public}"),
            // Its NAT gave it a new mapping (or it moved networks): peers introduced from
            // now on get the new endpoint.
            RendezvousEvent::Moved { id, public } => tracing::info!("{name}: {id} moved to {public}"),
            RendezvousEvent::Verifying { from } => tracing::debug!("{name}: asked {from} to prove its address"),
            RendezvousEvent::Refused { from, id, reason } => {
                tracing::info!("{name}: refused {id} from {from}: {reason}")
            }
            RendezvousEvent::Introduced { from, to, .. } => tracing::info!("{name}: introduced {from} ↔ {to}"),
            RendezvousEvent::Busy { from, to, partner } => {
                tracing::info!("{name}: refused to introduce {from} to {to}: {to} is in a session with {partner}")
            }
            RendezvousEvent::SessionEnded { left, told, why } => {
                let why = left_because(*why);
                tracing::info!("{name}: told {told} that {left} left their session ({why})")
            }
            RendezvousEvent::Forgotten { id, expired: false } => tracing::info!("{name}: {id} left"),
            RendezvousEvent::Forgotten { id, expired: true } => {
                tracing::info!("{name}: {id} expired (no refresh in time)")
            }
            // Reported once per burst of drops, so a flood is one line, not a flood of lines.
            RendezvousEvent::RateLimited { source } => {
                tracing::warn!("{name}: {source} is over its datagram rate; dropping its datagrams")
            }
            RendezvousEvent::RelayLimited { id } => {
                tracing::warn!("{name}: {id} is over its relay rate; dropping what it relays")
            }
            RendezvousEvent::BadDatagram { from, error } => {
                tracing::warn!("{name}: bad datagram from {from}: {error}")
            }
        }
    }
}

/// Why a punch peer left its session, in words: the peer's `PEER LEFT` line and the
/// rendezvous's log both say it this way.
pub(crate) fn left_because(why: LeaveReason) -> &'static str {
    match why {
        LeaveReason::Quit => "it quit",
        LeaveReason::Expired => "it stopped answering the rendezvous",
        LeaveReason::MovedOn => "it connected to another peer",
        LeaveReason::Busy => "it is busy in another session",
    }
}
