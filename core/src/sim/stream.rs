//! Stream connections: the simulator's model of TCP.
//!
//! A stream has two *sides* (the initiator that sent `Connect` and the acceptor whose
//! listener took it) and two *flows*, one per direction; `flows[i]` carries what
//! `sides[i]` wrote to the other side. Every packet of a flow (the SYN, the SYN-ACK,
//! data, FIN, RST) goes through the flow's *pipe*, a FIFO in which each segment arrives at
//! `max(previous arrival, now + latency + jitter)`: jitter delays but never reorders, and
//! control packets keep their place among the data, so `Connected` always precedes the
//! first `Received` and a reset comes after the data that was already on the wire.
//!
//! Flow control: a flow's *window* counts bytes that entered the pipe and that the
//! receiving machine has not yet taken (in flight, waiting behind a paused reader, or
//! acknowledged but the acknowledgement not yet back). Writes beyond the window wait in the
//! sender's queue; `Input::Sent` reports bytes as they enter the window.
//!
//! Links and partitions apply to a stream's *path*: the two hosts its packets cross the
//! network between. That is the two sides' hosts, except that a side behind a NAT is
//! represented by its NAT box. A stream from behind a NAT holds a NAT mapping while the
//! simulator tracks it, so the mapping cannot time out under an open connection.

use super::host::HostId;
use super::nat::Proto;
use super::net::{NoRoute, Outgoing, Pin, Route};
use super::{Event, Notice, Sim};
use crate::id::ConnId;
use crate::machine::{CloseHow, Input, NetError};
use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// The side that sent `Connect`.
const INITIATOR: usize = 0;
/// The side whose listener accepted.
const ACCEPTOR: usize = 1;

/// The other side (or the flow in the other direction).
fn other(side: usize) -> usize {
    1 - side
}

/// Every stream connection in the simulation, and which one each live connection id names.
#[derive(Default)]
pub(super) struct Streams {
    next_id: u64,
    map: BTreeMap<u64, Stream>,
    /// Live sides only: a released id is not here, so output about it is ignored.
    by_conn: BTreeMap<(HostId, ConnId), (u64, usize)>,
}

impl Streams {
    fn lookup(&self, host: HostId, conn: ConnId) -> Option<(u64, usize)> {
        self.by_conn.get(&(host, conn)).copied()
    }

    pub(super) fn is_live(&self, host: HostId, conn: ConnId) -> bool {
        self.by_conn.contains_key(&(host, conn))
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes the network holds for streams: queued at senders, in flight, and waiting for
    /// paused readers.
    pub(super) fn buffered_bytes(&self) -> usize {
        let segment_bytes = |seg: &Segment| match seg {
            Segment::Data(bytes) => bytes.len(),
            _ => 0,
        };
        self.map
            .values()
            .flat_map(|s| s.flows.iter())
            .map(|f| {
                f.queued
                    + f.pipe.iter().map(|(_, seg)| segment_bytes(seg)).sum::<usize>()
                    + f.inbox.iter().map(segment_bytes).sum::<usize>()
            })
            .sum()
    }
}

struct Stream {
    sides: [Side; 2],
    flows: [Flow; 2],
    /// Where each side's packets enter and leave the network: its host, or its NAT box.
    path: [HostId; 2],
    /// The NAT mapping the initiator's connection holds, released with the stream.
    pin: Option<Pin>,
}

impl Stream {
    /// The link flow `f` crosses: from its sender's end of the path to the other end.
    fn hop(&self, f: usize) -> (HostId, HostId) {
        (self.path[f], self.path[other(f)])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SideState {
    /// The acceptor before the SYN has reached its host.
    Pending,
    /// The machine knows the connection by `conn`; `connecting` until the initiator sees
    /// `Connected`.
    Live { conn: ConnId, connecting: bool },
    /// Released: the machine closed it or was told it ended, or its host crashed.
    Gone,
}

struct Side {
    host: HostId,
    state: SideState,
    /// This side's own address.
    local: SocketAddr,
    /// The other side's address as this side observes it.
    peer: SocketAddr,
    paused: bool,
    read_open: bool,
    write_open: bool,
}

impl Side {
    fn new(host: HostId, state: SideState, local: SocketAddr, peer: SocketAddr) -> Side {
        Side { host, state, local, peer, paused: false, read_open: true, write_open: true }
    }

    fn live(&self) -> Option<(ConnId, bool)> {
        match self.state {
            SideState::Live { conn, connecting } => Some((conn, connecting)),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Segment {
    Syn,
    /// The SYN-ACK: the initiator learns it is connected.
    Open,
    Data(Bytes),
    Fin,
    Reset(NetError),
}

#[derive(Default)]
struct Flow {
    /// The sender may put data on the wire: the acceptor from accept on, the initiator
    /// once it has seen `Connected`.
    open: bool,
    /// Written, not yet in the window. Capped by `StreamConfig::send_queue_cap`.
    queue: VecDeque<Bytes>,
    queued: usize,
    /// A FIN goes out once the queue is empty.
    fin_queued: bool,
    fin_sent: bool,
    /// A reset went out: nothing more enters this flow.
    reset: bool,
    in_window: usize,
    pipe: VecDeque<(Instant, Segment)>,
    last_arrival: Instant,
    /// Since when the head segment has been stuck behind a partition.
    stalled_since: Option<Instant>,
    /// Acknowledged bytes whose acknowledgement met a partition on the way back.
    held_acks: usize,
    /// Arrived while the reader was paused; bounded by the window.
    inbox: VecDeque<Segment>,
    unreported_sent: usize,
    report_scheduled: bool,
    drain_scheduled: bool,
}

/// A stream event in the simulator's queue.
pub(super) enum StreamEvent {
    /// Segments of `flow` may be due.
    Arrive {
        stream: u64,
        flow: usize,
    },
    /// `bytes` of `flow` were read; the acknowledgement reaches the sender now.
    Ack {
        stream: u64,
        flow: usize,
        bytes: usize,
    },
    /// Tell the sender of `flow` how much entered the window since the last report.
    ReportSent {
        stream: u64,
        flow: usize,
    },
    /// The reader of `flow` resumed: hand it what waited.
    Drain {
        stream: u64,
        flow: usize,
    },
    ConnectTimeout {
        stream: u64,
    },
    /// A graceful close must have flushed by now.
    FlushDeadline {
        stream: u64,
        flow: usize,
    },
    /// `flow` has been stalled since `since`: give up if it still is.
    StallTimeout {
        stream: u64,
        flow: usize,
        since: Instant,
    },
}

impl Sim {
    pub(super) fn on_stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Arrive { stream, flow } => self.arrive_due(stream, flow),
            StreamEvent::Ack { stream, flow, bytes } => self.ack(stream, flow, bytes),
            StreamEvent::ReportSent { stream, flow } => self.report_sent(stream, flow),
            StreamEvent::Drain { stream, flow } => self.drain_inbox(stream, flow),
            StreamEvent::ConnectTimeout { stream } => self.connect_timeout(stream),
            StreamEvent::FlushDeadline { stream, flow } => self.flush_deadline(stream, flow),
            StreamEvent::StallTimeout { stream, flow, since } => self.stall_timeout(stream, flow, since),
        }
    }

    // --- What machines ask for -------------------------------------------------------

    pub(super) fn stream_connect(&mut self, host: HostId, conn: ConnId, to: SocketAddr) {
        if self.streams.is_live(host, conn) {
            return self.violation(host, format!("Connect reuses live connection id {conn}"));
        }
        let h = &mut self.hosts[host.0];
        let port = h.ephemeral_port();
        let local = if to.ip().is_loopback() { SocketAddr::new(to.ip(), port) } else { h.addr(port) };
        let out = Outgoing { host, realm: h.realm, src: local, dst: to, proto: Proto::Stream };
        let (route, syn_leaves) = match self.net.route(out, self.now, &mut self.rng) {
            Ok(route) => (route, true),
            Err(NoRoute::Unreachable) => {
                let incarnation = self.hosts[host.0].incarnation;
                let notice = Notice::ConnectFailed(NetError::Unreachable);
                return self.queue.push(self.now, Event::Notify { host, incarnation, conn, notice });
            }
            Err(NoRoute::Nat { nat, reason }) => {
                // The NAT drops the SYN as it leaves; like any lost SYN, the connect times out.
                self.record(nat, &format!("net stream SYN from {local} to {to} dropped by NAT: {reason}"), &[]);
                (Route { via: host, to: nat, seen_from: local, pin: None }, false)
            }
        };
        let id = self.streams.next_id;
        self.streams.next_id += 1;
        let sides = [
            Side::new(host, SideState::Live { conn, connecting: true }, local, to),
            Side::new(route.to, SideState::Pending, to, route.seen_from),
        ];
        let stream = Stream { sides, flows: Default::default(), path: [route.via, route.to], pin: route.pin };
        self.streams.map.insert(id, stream);
        self.streams.by_conn.insert((host, conn), (id, INITIATOR));
        if syn_leaves {
            self.push_segment(id, INITIATOR, Segment::Syn);
        }
        let at = self.now + self.config.stream.connect_timeout;
        self.queue.push(at, Event::Stream(StreamEvent::ConnectTimeout { stream: id }));
    }

    /// Writes to a released or unknown id are dropped, as the contract says; so are writes
    /// after the machine shut its own write side.
    pub(super) fn stream_write(&mut self, host: HostId, conn: ConnId, bytes: Bytes) {
        let Some((id, side)) = self.streams.lookup(host, conn) else { return };
        let cap = self.config.stream.send_queue_cap;
        let s = self.stream(id);
        if !s.sides[side].write_open || bytes.is_empty() {
            return;
        }
        let flow = &mut s.flows[side];
        flow.queued += bytes.len();
        flow.queue.push_back(bytes);
        self.pump(id, side);
        if self.stream(id).flows[side].queued > cap {
            // What the real driver does when its bounded write queue overflows.
            let incarnation = self.hosts[host.0].incarnation;
            let notice = Notice::Closed(NetError::SlowPeer);
            self.queue.push(self.now, Event::Notify { host, incarnation, conn, notice });
            self.reset_flow(id, side, NetError::Reset);
            self.release(id, side);
        }
    }

    pub(super) fn stream_close(&mut self, host: HostId, conn: ConnId, how: CloseHow) {
        let Some((id, side)) = self.streams.lookup(host, conn) else { return };
        match how {
            CloseHow::HalfClose => {
                self.shut_write(id, side);
                self.finish_if_done(id, side);
            }
            CloseHow::Graceful => {
                self.shut_write(id, side);
                if !self.stream(id).flows[side].fin_sent {
                    let at = self.now + self.config.stream.flush_timeout;
                    self.queue.push(at, Event::Stream(StreamEvent::FlushDeadline { stream: id, flow: side }));
                }
                self.release(id, side);
            }
            CloseHow::Abort => {
                self.reset_flow(id, side, NetError::Reset);
                self.release(id, side);
            }
        }
    }

    pub(super) fn stream_pause(&mut self, host: HostId, conn: ConnId, paused: bool) {
        let Some((id, side)) = self.streams.lookup(host, conn) else { return };
        let s = self.stream(id);
        s.sides[side].paused = paused;
        let incoming = &mut s.flows[other(side)];
        if !paused && !incoming.inbox.is_empty() && !incoming.drain_scheduled {
            incoming.drain_scheduled = true;
            let event = StreamEvent::Drain { stream: id, flow: other(side) };
            self.queue.push(self.now, Event::Stream(event));
        }
    }

    // --- Faults ----------------------------------------------------------------------

    /// The host's sides all end: each peer gets a reset after what was already on the wire,
    /// as when a process dies and its kernel closes its sockets.
    pub(super) fn streams_crash(&mut self, host: HostId) {
        let ids: Vec<u64> = self
            .streams
            .map
            .iter()
            .filter(|(_, s)| s.sides.iter().any(|side| side.host == host && side.state != SideState::Pending))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            for side in [INITIATOR, ACCEPTOR] {
                let Some(s) = self.streams.map.get(&id) else { break };
                if s.sides[side].host != host || s.sides[side].state == SideState::Pending {
                    continue;
                }
                self.reset_flow(id, side, NetError::Reset);
                self.release(id, side);
            }
        }
    }

    /// After a heal: every stalled flow whose path is open again retransmits, and held
    /// acknowledgements go out.
    pub(super) fn streams_unstall(&mut self) {
        let ids: Vec<u64> = self.streams.map.keys().copied().collect();
        for id in ids {
            for f in [INITIATOR, ACCEPTOR] {
                let Some(s) = self.streams.map.get_mut(&id) else { break };
                let (from, to) = s.hop(f);
                let flow = &mut s.flows[f];
                if flow.stalled_since.is_some() && !self.net.is_blocked(from, to) {
                    flow.stalled_since = None;
                    // Retransmission: the segments leave again now, still in order.
                    let link = self.net.link(from, to);
                    let mut previous = self.now;
                    for (at, _) in flow.pipe.iter_mut() {
                        *at = previous.max(self.now + link.sample_delay(&mut self.rng));
                        previous = *at;
                        self.queue.push(*at, Event::Stream(StreamEvent::Arrive { stream: id, flow: f }));
                    }
                    flow.last_arrival = previous;
                }
                if flow.held_acks > 0 && !self.net.is_blocked(to, from) {
                    let bytes = std::mem::take(&mut flow.held_acks);
                    let at = self.now + self.net.link(to, from).sample_delay(&mut self.rng);
                    self.queue.push(at, Event::Stream(StreamEvent::Ack { stream: id, flow: f, bytes }));
                }
            }
        }
    }

    // --- The wire --------------------------------------------------------------------

    fn stream(&mut self, id: u64) -> &mut Stream {
        self.streams.map.get_mut(&id).expect("stream looked up by a live id exists")
    }

    /// Puts a segment on flow `f`'s wire, behind everything already there.
    fn push_segment(&mut self, id: u64, f: usize, segment: Segment) {
        let Some(s) = self.streams.map.get_mut(&id) else { return };
        let (from, to) = s.hop(f);
        let flow = &mut s.flows[f];
        if flow.reset {
            return;
        }
        if matches!(segment, Segment::Reset(_)) {
            flow.reset = true;
        }
        let delay = self.net.link(from, to).sample_delay(&mut self.rng);
        let at = flow.last_arrival.max(self.now + delay);
        flow.last_arrival = at;
        flow.pipe.push_back((at, segment));
        if flow.stalled_since.is_none() {
            self.queue.push(at, Event::Stream(StreamEvent::Arrive { stream: id, flow: f }));
        }
    }

    /// Moves queued bytes into the window, and the FIN after them.
    fn pump(&mut self, id: u64, f: usize) {
        let window = self.config.stream.window;
        let max_segment = self.config.stream.max_segment.max(1);
        loop {
            let Some(s) = self.streams.map.get_mut(&id) else { return };
            let flow = &mut s.flows[f];
            if !flow.open || flow.reset {
                break;
            }
            let segment = if let Some(front) = flow.queue.front_mut() {
                let room = window.saturating_sub(flow.in_window);
                if room == 0 {
                    break;
                }
                let n = room.min(front.len()).min(max_segment);
                let chunk =
                    if n == front.len() { flow.queue.pop_front().unwrap_or_default() } else { front.split_to(n) };
                flow.queued -= n;
                flow.in_window += n;
                flow.unreported_sent += n;
                Segment::Data(chunk)
            } else if flow.fin_queued && !flow.fin_sent {
                flow.fin_sent = true;
                Segment::Fin
            } else {
                break;
            };
            self.push_segment(id, f, segment);
        }
        let Some(s) = self.streams.map.get_mut(&id) else { return };
        let flow = &mut s.flows[f];
        if flow.unreported_sent > 0 && !flow.report_scheduled {
            // One report per instant, however many writes: drivers may coalesce.
            flow.report_scheduled = true;
            self.queue.push(self.now, Event::Stream(StreamEvent::ReportSent { stream: id, flow: f }));
        }
    }

    fn shut_write(&mut self, id: u64, side: usize) {
        let s = self.stream(id);
        if !s.sides[side].write_open {
            return;
        }
        s.sides[side].write_open = false;
        s.flows[side].fin_queued = true;
        self.pump(id, side);
    }

    /// Drops what `side` has queued and sends a reset to the other side.
    fn reset_flow(&mut self, id: u64, side: usize, reason: NetError) {
        let Some(s) = self.streams.map.get_mut(&id) else { return };
        let flow = &mut s.flows[side];
        flow.queue.clear();
        flow.queued = 0;
        flow.fin_queued = false;
        self.push_segment(id, side, Segment::Reset(reason));
    }

    /// The side's machine is done with the connection: nothing more is reported to it.
    /// A stream with no live side left is forgotten.
    fn release(&mut self, id: u64, side: usize) {
        let Some(s) = self.streams.map.get_mut(&id) else { return };
        if let Some((conn, _)) = s.sides[side].live() {
            self.streams.by_conn.remove(&(s.sides[side].host, conn));
        }
        s.sides[side].state = SideState::Gone;
        // Unread bytes go with the socket.
        s.flows[other(side)].inbox.clear();
        if s.sides[other(side)].live().is_none() {
            self.remove_stream(id);
        }
    }

    fn remove_stream(&mut self, id: u64) {
        if let Some(s) = self.streams.map.remove(&id) {
            for side in &s.sides {
                if let Some((conn, _)) = side.live() {
                    self.streams.by_conn.remove(&(side.host, conn));
                }
            }
            if let Some(pin) = s.pin {
                self.net.release(pin, self.now);
            }
        }
    }

    /// Both directions shut from this side's view: the contract says the driver releases it.
    fn finish_if_done(&mut self, id: u64, side: usize) {
        let Some(s) = self.streams.map.get(&id) else { return };
        let side_ref = &s.sides[side];
        if side_ref.live().is_some() && !side_ref.read_open && !side_ref.write_open {
            self.release(id, side);
        }
    }

    // --- Arrivals --------------------------------------------------------------------

    fn arrive_due(&mut self, id: u64, f: usize) {
        let Some(s) = self.streams.map.get_mut(&id) else { return };
        let (from, to) = s.hop(f);
        let flow = &mut s.flows[f];
        let due = flow.pipe.front().is_some_and(|&(at, _)| at <= self.now);
        if flow.stalled_since.is_some() || !due {
            return;
        }
        if self.net.is_blocked(from, to) {
            // The segment is lost; TCP keeps retransmitting it (and, in order, everything
            // behind it) until the partition heals, which `streams_unstall` models.
            flow.stalled_since = Some(self.now);
            if let Some(timeout) = self.config.stream.partition_timeout {
                let event = StreamEvent::StallTimeout { stream: id, flow: f, since: self.now };
                self.queue.push(self.now + timeout, Event::Stream(event));
            }
            let what = format!("net stream {id} stalled by partition {} -> {}", self.name(from), self.name(to));
            return self.record(from, &what, &[]);
        }
        loop {
            let Some(s) = self.streams.map.get_mut(&id) else { return };
            let flow = &mut s.flows[f];
            if !flow.pipe.front().is_some_and(|&(at, _)| at <= self.now) {
                return;
            }
            let Some((_, segment)) = flow.pipe.pop_front() else { return };
            self.arrive(id, f, segment);
        }
    }

    /// One segment of flow `f` reaches the other side's host.
    fn arrive(&mut self, id: u64, f: usize, segment: Segment) {
        let r = other(f);
        let s = self.stream(id);
        let host = s.sides[r].host;
        let sender_live = s.sides[f].live().is_some();
        let state = s.sides[r].state;
        if !self.hosts[host.0].up {
            let what = format!("net stream {id} lost {segment:?}: host down");
            return self.record(host, &what, &[]);
        }
        match (state, segment) {
            (SideState::Pending, Segment::Syn) => self.accept_syn(id),
            (SideState::Pending, _) | (SideState::Gone, Segment::Reset(_)) => {}
            (SideState::Gone, _) => {
                // Like a kernel answering a segment for a socket it no longer has.
                if sender_live {
                    self.push_segment(id, r, Segment::Reset(NetError::Reset));
                }
            }
            (SideState::Live { conn, connecting }, Segment::Reset(reason)) => {
                self.release(id, r);
                let input = if connecting {
                    Input::ConnectFailed { conn, error: reason }
                } else {
                    Input::Closed { conn, reason }
                };
                self.deliver(host, input);
            }
            (SideState::Live { conn, connecting: true }, Segment::Open) => {
                let s = self.stream(id);
                s.sides[r].state = SideState::Live { conn, connecting: false };
                s.flows[r].open = true;
                let local = s.sides[r].local;
                self.deliver(host, Input::Connected { conn, local });
                self.pump(id, r);
            }
            (SideState::Live { .. }, segment @ (Segment::Data(_) | Segment::Fin)) => {
                let s = self.stream(id);
                if s.sides[r].paused || !s.flows[f].inbox.is_empty() {
                    s.flows[f].inbox.push_back(segment);
                } else {
                    self.consume(id, f, segment);
                }
            }
            // A SYN or SYN-ACK cannot reach a side that is already live.
            (SideState::Live { .. }, Segment::Syn | Segment::Open) => {}
        }
    }

    /// The SYN reached a host that is up: a listener takes it or the host refuses it; a NAT
    /// box drops it.
    fn accept_syn(&mut self, id: u64) {
        let side = &self.stream(id).sides[ACCEPTOR];
        let (host, local, peer) = (side.host, side.local, side.peer);
        if self.net.is_nat(host) {
            // No port forwarding: the SYN vanishes and the initiator's connect times out.
            let what = format!("net stream {id} SYN from {peer} dropped by NAT: inbound streams are not forwarded");
            return self.record(host, &what, &[]);
        }
        self.stream(id).sides[ACCEPTOR].state = SideState::Gone;
        let Some(&listener) = self.hosts[host.0].listeners.get(&local.port()) else {
            return self.push_segment(id, ACCEPTOR, Segment::Reset(NetError::Refused));
        };
        let result = self.hosts[host.0].machine.accept(self.now, listener, peer, local);
        self.record(host, &format!("accept {listener:?} from {peer} -> {result:?}"), &[]);
        match result {
            Ok(conn) if self.streams.is_live(host, conn) => {
                self.violation(host, format!("accept returned live connection id {conn}"));
                self.push_segment(id, ACCEPTOR, Segment::Reset(NetError::Reset));
            }
            Ok(conn) => {
                let s = self.stream(id);
                s.sides[ACCEPTOR].state = SideState::Live { conn, connecting: false };
                s.flows[ACCEPTOR].open = true;
                self.streams.by_conn.insert((host, conn), (id, ACCEPTOR));
                self.push_segment(id, ACCEPTOR, Segment::Open);
            }
            Err(_) => {
                // The kernel completed the handshake before the machine refused, as with a
                // real listener: the initiator sees `Connected`, then a reset.
                self.push_segment(id, ACCEPTOR, Segment::Open);
                self.push_segment(id, ACCEPTOR, Segment::Reset(NetError::Reset));
            }
        }
        self.settle(host);
    }

    /// Hands a data or FIN segment of flow `f` to the reading machine.
    fn consume(&mut self, id: u64, f: usize, segment: Segment) {
        let r = other(f);
        let s = self.stream(id);
        let (reader, (ack_from, ack_to)) = (s.sides[r].host, s.hop(r));
        let Some((conn, _)) = s.sides[r].live() else { return };
        match segment {
            Segment::Data(bytes) => {
                let at = self.now + self.net.link(ack_from, ack_to).sample_delay(&mut self.rng);
                self.queue.push(at, Event::Stream(StreamEvent::Ack { stream: id, flow: f, bytes: bytes.len() }));
                self.deliver(reader, Input::Received { conn, bytes: BytesMut::from(bytes) });
            }
            Segment::Fin => {
                s.sides[r].read_open = false;
                self.deliver(reader, Input::ReadClosed { conn });
                self.finish_if_done(id, r);
            }
            Segment::Syn | Segment::Open | Segment::Reset(_) => {}
        }
    }

    fn ack(&mut self, id: u64, f: usize, bytes: usize) {
        let Some(s) = self.streams.map.get_mut(&id) else { return };
        let (sender, receiver) = s.hop(f);
        let flow = &mut s.flows[f];
        if self.net.is_blocked(receiver, sender) {
            flow.held_acks += bytes;
            return;
        }
        flow.in_window = flow.in_window.saturating_sub(bytes);
        self.pump(id, f);
    }

    fn report_sent(&mut self, id: u64, f: usize) {
        let Some(s) = self.streams.map.get_mut(&id) else { return };
        let flow = &mut s.flows[f];
        flow.report_scheduled = false;
        let bytes = std::mem::take(&mut flow.unreported_sent);
        if let (Some((conn, _)), true) = (s.sides[f].live(), bytes > 0) {
            let host = s.sides[f].host;
            self.deliver(host, Input::Sent { conn, bytes });
        }
    }

    fn drain_inbox(&mut self, id: u64, f: usize) {
        let r = other(f);
        if let Some(s) = self.streams.map.get_mut(&id) {
            s.flows[f].drain_scheduled = false;
        }
        loop {
            let Some(s) = self.streams.map.get_mut(&id) else { return };
            if s.sides[r].live().is_none() || s.sides[r].paused {
                return;
            }
            let Some(segment) = s.flows[f].inbox.pop_front() else { return };
            self.consume(id, f, segment);
        }
    }

    fn connect_timeout(&mut self, id: u64) {
        let Some(s) = self.streams.map.get(&id) else { return };
        let host = s.sides[INITIATOR].host;
        if let Some((conn, true)) = s.sides[INITIATOR].live() {
            self.release(id, INITIATOR);
            self.deliver(host, Input::ConnectFailed { conn, error: NetError::TimedOut });
        }
    }

    fn flush_deadline(&mut self, id: u64, f: usize) {
        let Some(s) = self.streams.map.get(&id) else { return };
        if !s.flows[f].fin_sent && !s.flows[f].reset {
            let host = s.sides[f].host;
            self.record(host, &format!("net stream {id} graceful close did not flush in time: reset"), &[]);
            self.reset_flow(id, f, NetError::Reset);
        }
    }

    /// A partition outlasted `partition_timeout` while data waited: both ends give up.
    fn stall_timeout(&mut self, id: u64, f: usize, since: Instant) {
        let Some(s) = self.streams.map.get(&id) else { return };
        if s.flows[f].stalled_since != Some(since) {
            return;
        }
        let ends: Vec<(HostId, ConnId, bool)> = s
            .sides
            .iter()
            .filter_map(|side| side.live().map(|(conn, connecting)| (side.host, conn, connecting)))
            .collect();
        self.remove_stream(id);
        for (host, conn, connecting) in ends {
            let error = NetError::TimedOut;
            let input =
                if connecting { Input::ConnectFailed { conn, error } } else { Input::Closed { conn, reason: error } };
            self.deliver(host, input);
        }
    }
}
