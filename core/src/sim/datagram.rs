//! Datagrams: UDP sockets and what the network does to each packet.
//!
//! A datagram is routed when it is sent, given its fate by the link (lost, duplicated,
//! delayed by latency, jitter and perhaps a reordering hold-back), and checked again when it
//! arrives: a partition, a host that is down or a port with no socket drops it silently,
//! as a real network does.

use super::host::HostId;
use super::net::Route;
use super::{Event, Sim};
use crate::id::SocketId;
use crate::machine::Input;
use bytes::Bytes;
use std::net::SocketAddr;

/// A datagram on its way.
pub(super) struct DatagramInFlight {
    from: HostId,
    to: HostId,
    port: u16,
    /// The source address as the receiver observes it.
    seen_from: SocketAddr,
    bytes: Bytes,
}

impl Sim {
    pub(super) fn transmit(&mut self, host: HostId, socket: SocketId, to: SocketAddr, bytes: Bytes) {
        let h = &self.hosts[host.0];
        let Some(&port) = h.sockets.get(&socket) else {
            return self.violation(host, format!("Transmit from {socket:?}, which the host never bound"));
        };
        if bytes.len() > self.config.max_datagram {
            let what = format!("net datagram of {} bytes dropped: over max_datagram", bytes.len());
            return self.record(host, &what, &[]);
        }
        let Route::To { host: dst, seen_from } = self.net.route(host, h.realm, h.addr(port), to) else {
            return self.record(host, &format!("net datagram to {to} dropped: unreachable"), &[]);
        };
        let Some(delays) = self.net.link(host, dst).datagram_fate(&mut self.rng) else {
            return self.record(host, &format!("net datagram to {to} lost"), &[]);
        };
        if delays.len() > 1 {
            self.record(host, &format!("net datagram to {to} duplicated"), &[]);
        }
        for delay in delays {
            let datagram = DatagramInFlight { from: host, to: dst, port: to.port(), seen_from, bytes: bytes.clone() };
            self.queue.push(self.now + delay, Event::Datagram(datagram));
        }
    }

    pub(super) fn datagram_arrives(&mut self, d: DatagramInFlight) {
        let h = &self.hosts[d.to.0];
        let drop_reason = if !h.up {
            Some("host down")
        } else if self.net.is_blocked(d.from, d.to) {
            Some("partition")
        } else {
            None
        };
        let socket = h.sockets.iter().find(|&(_, &port)| port == d.port).map(|(&socket, _)| socket);
        match (drop_reason, socket) {
            (None, Some(socket)) => {
                self.deliver(d.to, Input::Datagram { socket, from: d.seen_from, bytes: &d.bytes });
            }
            (reason, _) => {
                let what = format!("net datagram from {} dropped: {}", d.seen_from, reason.unwrap_or("no socket"));
                self.record(d.to, &what, &[]);
            }
        }
    }
}
