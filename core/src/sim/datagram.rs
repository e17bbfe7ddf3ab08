//! Datagrams: UDP sockets and what the network does to each packet.
//!
//! A datagram is routed when it is sent (and translated then by the sender's NAT, if it
//! leaves a NAT realm), given its fate by the link (lost, duplicated, delayed by latency,
//! jitter and perhaps a reordering hold-back), and checked again when it arrives: a
//! partition, a host that is down or a port with no socket drops it silently, as a real
//! network does. A datagram addressed to a NAT box is matched against the NAT's mappings
//! and filtering only when it arrives, against the state they have then.

use super::host::HostId;
use super::nat::Proto;
use super::net::{NoRoute, Outgoing};
use super::{Event, Sim};
use crate::id::SocketId;
use crate::machine::Input;
use bytes::Bytes;
use std::net::SocketAddr;

/// A datagram on its way.
pub(super) struct DatagramInFlight {
    /// Where it crosses the network from: the sender, or the NAT box it left through.
    via: HostId,
    /// The receiving host, or a NAT box that decides on arrival.
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
        let src = h.addr(port);
        let out = Outgoing { host, realm: h.realm, src, dst: to, proto: Proto::Datagram };
        let route = match self.net.route(out, self.now, &mut self.rng) {
            Ok(route) => route,
            Err(NoRoute::Unreachable) => {
                return self.record(host, &format!("net datagram to {to} dropped: unreachable"), &[]);
            }
            Err(NoRoute::Nat { nat, reason }) => {
                return self.record(nat, &format!("net datagram from {src} to {to} dropped by NAT: {reason}"), &[]);
            }
        };
        let Some(delays) = self.net.link(route.via, route.to).datagram_fate(&mut self.rng) else {
            return self.record(host, &format!("net datagram to {to} lost"), &[]);
        };
        if delays.len() > 1 {
            self.record(host, &format!("net datagram to {to} duplicated"), &[]);
        }
        for delay in delays {
            let datagram = DatagramInFlight {
                via: route.via,
                to: route.to,
                port: to.port(),
                seen_from: route.seen_from,
                bytes: bytes.clone(),
            };
            self.queue.push(self.now + delay, Event::Datagram(datagram));
        }
    }

    /// A datagram reaches `d.to`. One addressed to a NAT box goes on to the host behind it
    /// that the NAT's mappings and filtering pick as they stand now, on arrival, so two
    /// peers punching at once are each judged after the other's packet has gone out.
    pub(super) fn datagram_arrives(&mut self, d: DatagramInFlight) {
        // The partition lies on the hop to `d.to`: it drops a datagram to a NAT box before
        // the NAT sees it, just as at any other host.
        let blocked = self.net.is_blocked(d.via, d.to);
        let (host, port) = if !blocked && self.net.is_nat(d.to) {
            match self.net.inbound(d.to, d.port, d.seen_from, self.now) {
                Ok(inside) => inside,
                Err(reason) => {
                    let public = SocketAddr::new(self.hosts[d.to.0].ip, d.port);
                    let what = format!("net datagram from {} to {public} dropped by NAT: {reason}", d.seen_from);
                    return self.record(d.to, &what, &[]);
                }
            }
        } else {
            (d.to, d.port)
        };
        let h = &self.hosts[host.0];
        let drop_reason = if !h.up {
            Some("host down")
        } else if blocked {
            Some("partition")
        } else {
            None
        };
        let socket = h.sockets.iter().find(|&(_, &bound)| bound == port).map(|(&socket, _)| socket);
        match (drop_reason, socket) {
            (None, Some(socket)) => {
                self.deliver(host, Input::Datagram { socket, from: d.seen_from, bytes: &d.bytes });
            }
            (reason, _) => {
                let what = format!("net datagram from {} dropped: {}", d.seen_from, reason.unwrap_or("no socket"));
                self.record(host, &what, &[]);
            }
        }
    }
}
