//! How each machine's events and state become metrics: [`CountEvent`] per event type
//! (beside [`LogEvent`](crate::events::LogEvent)), [`Sample`] per machine type.

use super::{kinds, Counting, Sampled};
use std::convert::Infallible;
use switchyard_core::mesh::server::MeshServer;
use switchyard_core::mesh::MeshEvent;
use switchyard_core::punch::{Rendezvous, RendezvousEvent};
use switchyard_core::service::broadcast::BroadcastEvent;
use switchyard_core::service::line_server::{EndReason, LineServer, LineServerEvent, LineService};
use switchyard_core::service::reply::ReplyEvent;
use switchyard_core::tls::{Tls, TlsEvent};
use switchyard_core::tunnel::local::TunnelLocal;
use switchyard_core::tunnel::remote::TunnelRemote;
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::Machine;

/// An event that knows which counters it moves.
pub trait CountEvent {
    /// Counts the event into the machine's `counting`.
    fn count(&self, counting: &Counting);
}

/// A machine whose own state feeds gauges: read on the machine's loop, so it must be quick
/// (a few lengths, no allocation it can avoid).
pub trait Sample {
    /// What the machine holds now.
    fn sample(&self) -> Sampled {
        Sampled::default()
    }
}

impl<E: CountEvent> CountEvent for TlsEvent<E> {
    fn count(&self, c: &Counting) {
        match self {
            TlsEvent::Inner(event) => event.count(c),
            TlsEvent::Secured { .. } => c.add_reason(|f| &f.tls_handshakes, "secured"),
            TlsEvent::Failed { .. } => c.add_reason(|f| &f.tls_handshakes, "failed"),
        }
    }
}

impl<M: Machine + Sample> Sample for Tls<M> {
    fn sample(&self) -> Sampled {
        self.inner().sample()
    }
}

impl CountEvent for Infallible {
    fn count(&self, _: &Counting) {
        match *self {}
    }
}

impl CountEvent for BroadcastEvent {
    fn count(&self, c: &Counting) {
        if let BroadcastEvent::Relayed { recipients, .. } = self {
            c.add(|f| &f.broadcast_lines, 1);
            c.add(|f| &f.broadcast_deliveries, *recipients as u64);
        }
    }
}

impl CountEvent for ReplyEvent {
    fn count(&self, c: &Counting) {
        match self {
            ReplyEvent::Answered { .. } => c.add(|f| &f.replies, 1),
        }
    }
}

impl<E: CountEvent> CountEvent for LineServerEvent<E> {
    fn count(&self, c: &Counting) {
        match self {
            // The driver counts accepts.
            LineServerEvent::Accepted { .. } => {}
            LineServerEvent::Closed { reason, .. } => {
                c.add_reason(|f| &f.connections_closed, kinds::line_end(reason));
                if let EndReason::SlowConsumer(_) = reason {
                    c.add_reason(|f| &f.slow_consumer_disconnects, kinds::BACKLOG);
                }
            }
            LineServerEvent::Service(event) => event.count(c),
        }
    }
}

/// The line services keep their sessions' count in the driver's `connections`.
impl<S: LineService> Sample for LineServer<S> {}

impl CountEvent for TunnelEvent {
    fn count(&self, c: &Counting) {
        match self {
            TunnelEvent::CarrierConnecting { .. } => c.add(|f| &f.tunnel_carrier_attempts, 1),
            TunnelEvent::CarrierDown { .. } => c.add(|f| &f.tunnel_reconnects, 1),
            TunnelEvent::CarrierClosed { .. } => c.add(|f| &f.tunnel_carriers_closed, 1),
            TunnelEvent::AuthFailed { .. } => c.add(|f| &f.tunnel_auth_failures, 1),
            TunnelEvent::StreamOpened { .. } => c.add(|f| &f.tunnel_streams_opened, 1),
            TunnelEvent::StreamEnded { .. } => c.add_reason(|f| &f.tunnel_streams_closed, "finished"),
            TunnelEvent::StreamReset { .. } => c.add_reason(|f| &f.tunnel_streams_closed, "reset"),
            TunnelEvent::StreamRefused { reason, .. } => {
                c.add_reason(|f| &f.tunnel_streams_refused, kinds::stream_refusal(reason))
            }
            TunnelEvent::ClientRefused { reason, .. } => {
                c.add_reason(|f| &f.connections_refused, kinds::client_refusal(reason))
            }
            // Published ports and reloaded forwards are logged; no metric counts them yet.
            TunnelEvent::CarrierAccepted { .. }
            | TunnelEvent::CarrierUp { .. }
            | TunnelEvent::Published { .. }
            | TunnelEvent::Unpublished { .. }
            | TunnelEvent::PublishRefused { .. }
            | TunnelEvent::ForwardOpened { .. }
            | TunnelEvent::ForwardFailed { .. } => {}
        }
    }
}

impl Sample for TunnelLocal {
    fn sample(&self) -> Sampled {
        let (streams, up) = (self.streams() as u64, u64::from(self.is_up()));
        Sampled { tunnel_streams: Some(streams), carriers_up: Some(up), ..Sampled::default() }
    }
}

impl Sample for TunnelRemote {
    fn sample(&self) -> Sampled {
        let (streams, carriers) = (self.streams() as u64, self.carriers() as u64);
        Sampled { tunnel_streams: Some(streams), carriers_up: Some(carriers), ..Sampled::default() }
    }
}

impl CountEvent for MeshEvent {
    fn count(&self, c: &Counting) {
        match self {
            MeshEvent::UserRegistered { .. } => c.add(|f| &f.mesh_registrations, 1),
            MeshEvent::RegisterRefused { .. } => c.add(|f| &f.mesh_registrations_refused, 1),
            MeshEvent::Delivered { .. } => c.add(|f| &f.mesh_messages_delivered, 1),
            MeshEvent::NoSuchUser { .. } => c.add(|f| &f.mesh_messages_undeliverable, 1),
            MeshEvent::PeerDown { .. } => c.add_reason(|f| &f.mesh_link_failures, "link_down"),
            MeshEvent::PeerRefused { .. } => c.add_reason(|f| &f.mesh_link_failures, "refused"),
            MeshEvent::ProtocolError { .. } => c.add_reason(|f| &f.mesh_link_failures, "protocol"),
            MeshEvent::PeerLearned { .. }
            | MeshEvent::PeerUp { .. }
            | MeshEvent::UserLeft { .. }
            | MeshEvent::ReceiptOverdue { .. }
            // Counted as a failed TLS handshake; nothing says it was a server link.
            | MeshEvent::HandshakeFailed { .. } => {}
        }
    }
}

impl Sample for MeshServer {
    fn sample(&self) -> Sampled {
        Sampled {
            mesh_users: Some(self.local_users().len() as u64),
            mesh_peers: Some(self.linked_peers().len() as u64),
            dedup_entries: Some(self.seen().len() as u64),
            forwarded: Some(self.message_counts().forwarded),
            deduplicated: Some(self.message_counts().deduplicated),
            ..Sampled::default()
        }
    }
}

impl CountEvent for RendezvousEvent {
    fn count(&self, c: &Counting) {
        match self {
            RendezvousEvent::Registered { .. } => c.add(|f| &f.rendezvous_registered, 1),
            RendezvousEvent::Refused { .. } | RendezvousEvent::Busy { .. } => c.add(|f| &f.rendezvous_refusals, 1),
            RendezvousEvent::Introduced { .. } => c.add(|f| &f.rendezvous_introductions, 1),
            RendezvousEvent::RateLimited { .. } => c.add_reason(|f| &f.rendezvous_rate_limited, "source"),
            RendezvousEvent::RelayLimited { .. } => c.add_reason(|f| &f.rendezvous_rate_limited, "relay"),
            RendezvousEvent::BadDatagram { .. } => c.add(|f| &f.rendezvous_bad_datagrams, 1),
            RendezvousEvent::Moved { .. }
            | RendezvousEvent::Verifying { .. }
            | RendezvousEvent::SessionEnded { .. }
            | RendezvousEvent::Forgotten { .. } => {}
        }
    }
}

impl Sample for Rendezvous {
    fn sample(&self) -> Sampled {
        Sampled {
            registrations: Some(self.registrations() as u64),
            relayed_bytes: Some(self.relayed_bytes()),
            ..Sampled::default()
        }
    }
}
