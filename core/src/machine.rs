//! The machine contract: how a driver, the simulator or an embedder runs a protocol.
//!
//! Every protocol in Switchyard is a value implementing [`Machine`]. It owns its state and
//! performs no I/O: the *driver* (the smol or async-std adapter, the simulator, or your own
//! loop) owns the sockets and the clock, feeds the machine what happened, and carries out
//! what the machine asks for.
//!
//! # The order of calls
//!
//! ```text
//!   loop {
//!       one of:  machine.accept_at(now, listener, peer, at)  a listener accepted a connection
//!                machine.handle_input(now, input)         bytes, a datagram, a connect result, a close
//!                machine.handle_timeout(now)              the instant from poll_timeout arrived
//!                machine.some_app_command(now, ..)        e.g. EchoClient::send_line
//!       then:    while let Some(out) = machine.poll_output() { carry it out }
//!       then:    deadline = machine.poll_timeout()        arm one timer; None = wait for input
//!   }
//! ```
//!
//! 1. **Drain after every mutation.** After *any* call that takes `&mut self` and `now`, call
//!    [`Machine::poll_output`] until it returns `None`, then read
//!    [`Machine::poll_timeout`]. Outputs queue inside the machine until drained.
//! 2. **Time is an input.** Pass the current time with every call. A machine keeps the
//!    largest `now` it has seen, so an earlier `now` is harmless. Calling `handle_timeout`
//!    early or twice is harmless too; a deadline at or before `now` is always acted on and
//!    then moved forward, so a driver never spins on a stale deadline.
//! 3. **Connections.** The machine names connections ([`ConnId`]). For an inbound one,
//!    [`Machine::accept_at`] (or [`Machine::accept`], for a driver that cannot tell the
//!    socket's local address) returns the new id (or a refusal, and the driver drops the
//!    socket). For an outbound one, the machine emits [`Output::Connect`] and the driver
//!    answers [`Input::Connected`] or [`Input::ConnectFailed`]. The driver honours every
//!    [`Output::Close`] and reports every close it sees ([`Input::ReadClosed`] for a peer's
//!    half-close, [`Input::Closed`] for the end of the connection).
//! 4. **Bad peers are not errors of the machine.** A peer that breaks the protocol gets its
//!    one connection closed, with an event saying why; every other connection carries on.
//! 5. **Unknown ids are ignored.** Reports may race with a close the machine already
//!    emitted; a machine silently ignores input for connections it no longer knows.
//! 6. **Wall-clock time is an input too.** Drivers call [`Machine::handle_wall_clock`]
//!    when they start and whenever the system clock has parted from their monotonic one
//!    (a suspended host, a clock set by hand or by NTP), so a machine that shows dates
//!    never drifts; machines that show none ignore it.
//! 7. **Listeners at run time.** Listeners the embedder configures are bound before the
//!    machine starts. A machine that learns only later which ports to serve (the tunnel's
//!    remote end, publishing the ports an exposing end asks for) emits [`Output::Listen`]
//!    with a [`ListenerId`] that is not open (mint fresh ones, and reuse one only long after
//!    it closed: see below); the driver binds and answers
//!    [`Input::Listened`] with the bound address or the error, and from then on hands
//!    that listener's connections to `accept_at` as usual. [`Output::Unlisten`] closes it,
//!    or a listener the embedder configured (the tunnel's local end dropping a static
//!    forward on a config reload):
//!    connections it already accepted carry on, and a connection the driver accepted but
//!    had not yet handed over is dropped (until the id is opened again, when it would go
//!    to the new listener: hence fresh ids).
//! 8. **Certified clients.** Under the [`Tls`](crate::tls::Tls) layer, a connection whose
//!    client presented a certificate the server trusts is reported by
//!    [`Machine::peer_certified`] once, after its handshake and before its first
//!    `Received`; drivers never call it themselves.

use crate::id::{ConnId, ListenerId, SocketId};
use crate::time::Instant;
use crate::tls::Fingerprint;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;

/// Something that happened on the network, reported by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// An outbound connection the machine asked for (via [`Output::Connect`]) is open.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The local address the socket got.
        local: SocketAddr,
    },
    /// An outbound connection could not be opened. The id is dead; no more input for it.
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// Why.
        error: NetError,
    },
    /// Bytes arrived on a connection, in order.
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes, handed over: a machine keeps what it needs without a copy
        /// ([`BytesMut::freeze`] and slice it, or `split_to`), and may work on them in
        /// place (the TLS layer decrypts where they lie). Reading them as a `&[u8]` is
        /// `&bytes[..]`.
        bytes: BytesMut,
    },
    /// The peer shut its write side (TCP FIN): no more `Received` on this connection, but
    /// the machine may still write. This is how half-close reaches a machine. Reported once.
    /// If the machine had already half-closed its own side, the connection is finished and
    /// the driver releases it: nothing more is reported, and a later `Close` is a no-op.
    ReadClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The connection ended abnormally in both directions: reset, I/O error, or the driver
    /// gave up on a slow peer ([`NetError::SlowPeer`]). No more input for it, and writes to
    /// it are dropped. (An orderly end arrives as [`Input::ReadClosed`] instead.)
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: NetError,
    },
    /// The driver handed `bytes` more bytes of this connection's writes to the operating
    /// system. Machines that apply back-pressure count these against what they wrote;
    /// others ignore it. Drivers may coalesce several writes into one report.
    Sent {
        /// The connection.
        conn: ConnId,
        /// How many bytes left the driver's queue.
        bytes: usize,
    },
    /// A datagram arrived on a UDP socket.
    Datagram {
        /// The socket it arrived on.
        socket: SocketId,
        /// Its source address, as observed by the receiving socket.
        from: SocketAddr,
        /// The payload.
        bytes: &'a [u8],
    },
    /// The answer to [`Output::Listen`]: the listener is bound (at the address given, with
    /// the real port when port 0 was asked for) and its connections will come to
    /// `accept_at`, or it could not be bound and the id is dead.
    Listened {
        /// The listener the machine named.
        listener: ListenerId,
        /// The bound address, or why binding failed (e.g. the address is in use).
        result: Result<SocketAddr, NetError>,
    },
}

/// Something the machine asks the driver to do, or tells its embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<E> {
    /// Open a TCP connection to `to` and name it `conn`. Answer with
    /// [`Input::Connected`] or [`Input::ConnectFailed`].
    Connect {
        /// The id the machine minted for it.
        conn: ConnId,
        /// Where to connect.
        to: SocketAddr,
    },
    /// Append `bytes` to the connection's outgoing stream.
    Write {
        /// The connection.
        conn: ConnId,
        /// What to send.
        bytes: Bytes,
    },
    /// Close the connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// How.
        how: CloseHow,
    },
    /// Stop reading from this connection until [`Output::ResumeReading`]: the machine
    /// cannot take more yet, and TCP flow control should push back on the peer.
    PauseReading {
        /// The connection.
        conn: ConnId,
    },
    /// Start reading from a paused connection again.
    ResumeReading {
        /// The connection.
        conn: ConnId,
    },
    /// Send one datagram from a UDP socket.
    Transmit {
        /// The socket to send from.
        socket: SocketId,
        /// Destination.
        to: SocketAddr,
        /// Payload.
        bytes: Bytes,
    },
    /// Bind a TCP listener on `addr` and name it `listener` (an id not open now; see rule 7
    /// of the [module documentation](self)). Answer with [`Input::Listened`].
    Listen {
        /// The id the machine minted for it.
        listener: ListenerId,
        /// Where to listen (port 0: any free port).
        addr: SocketAddr,
    },
    /// Close listener `listener` (one the machine asked for with [`Output::Listen`], or one
    /// the embedder configured): it accepts nothing more. Connections it accepted are not
    /// affected. Nothing is reported.
    Unlisten {
        /// The listener.
        listener: ListenerId,
    },
    /// Something the embedder may want to know (log, print, assert on).
    Event(E),
}

/// How a machine wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseHow {
    /// Send everything written so far, then shut down the write side (TCP FIN) and keep
    /// reading. The driver reports [`Input::ReadClosed`] / [`Input::Closed`] later as usual.
    HalfClose,
    /// Send everything written so far, then close both directions. The id is dead at once:
    /// the driver reports nothing more about it. A driver bounds the flush (a peer that never
    /// reads must not pin the socket forever) and resets the connection when the bound passes.
    Graceful,
    /// Drop whatever is queued and reset the connection now. The id is dead at once.
    Abort,
}

/// Why a connection failed or ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The peer closed the connection in an orderly way.
    #[error("closed by peer")]
    PeerClosed,
    /// The peer refused the connection (nothing listening).
    #[error("connection refused")]
    Refused,
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    Reset,
    /// No route to the address, or the network is down.
    #[error("network unreachable")]
    Unreachable,
    /// The operation timed out.
    #[error("timed out")]
    TimedOut,
    /// The driver's write queue for this connection hit its cap: the peer reads too slowly.
    #[error("peer too slow: write queue full")]
    SlowPeer,
    /// Anything else, with the operating system's description.
    #[error("{0}")]
    Other(String),
}

/// Why a machine refused an inbound connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The machine is at its connection cap.
    #[error("too many connections (limit {limit})")]
    AtCapacity {
        /// The cap in force.
        limit: usize,
    },
    /// The listener is not one this machine serves.
    #[error("unknown listener {0:?}")]
    UnknownListener(ListenerId),
}

/// A sans-IO protocol state machine. See the [module documentation](self) for the order
/// in which a driver calls these methods.
pub trait Machine {
    /// What the machine tells its embedder (a reply arrived, a peer misbehaved, …).
    type Event;

    /// A listener accepted a connection from `peer`. Returns the id the machine gives it,
    /// or a refusal, in which case the driver closes the socket.
    ///
    /// By default every connection is refused: right for a machine that has no listeners
    /// (a client, or one that only speaks datagrams).
    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        let _ = (now, peer);
        Err(Refusal::UnknownListener(listener))
    }

    /// [`Machine::accept`] on listener `id`, also told the local address `at` which the
    /// connection arrived: the accepted socket's own address, which is the listener's, or
    /// with a wildcard listener (`0.0.0.0`) the address the client dialled. Drivers that
    /// know it call this one.
    ///
    /// By default the address is dropped and [`Machine::accept`] called; machines that
    /// pass it on override this (the tunnel's local end puts it in each stream's `Open`,
    /// for PROXY protocol headers), and wrappers forward it.
    fn accept_at(&mut self, now: Instant, id: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal> {
        let _ = at;
        self.accept(now, id, peer)
    }

    /// Something happened on the network.
    fn handle_input(&mut self, now: Instant, input: Input<'_>);

    /// The deadline from [`Machine::poll_timeout`] has arrived (or it is any later time:
    /// early and repeated calls are harmless).
    fn handle_timeout(&mut self, now: Instant);

    /// The wall clock reads `unix_micros` (microseconds since 1970-01-01 UTC) at `now`.
    /// Machines that show dates re-base their [`WallClock`](crate::time::WallClock) on it;
    /// by default it is ignored. Drain outputs after it like after any other call.
    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128) {
        let _ = (now, unix_micros);
    }

    /// The client on `conn`, a connection this machine accepted, proved with its TLS
    /// handshake that it holds a certificate the server's trust accepts (one with this
    /// SHA-256 `fingerprint`): the [`Tls`](crate::tls::Tls) layer calls it once the
    /// handshake is done, before any of the connection's plaintext reaches this machine,
    /// on listeners that take client certificates ([`ClientCerts`](crate::tls::ClientCerts)).
    /// A machine that admits some clients by certificate (a mesh server that links with
    /// servers holding a certificate from its mesh CA) marks the connection; by default it
    /// is ignored. Wrappers forward it. Drain outputs after it like after any other call.
    fn peer_certified(&mut self, now: Instant, conn: ConnId, fingerprint: Fingerprint) {
        let _ = (now, conn, fingerprint);
    }

    /// The next thing to do. Call until `None` after every mutating call.
    fn poll_output(&mut self) -> Option<Output<Self::Event>>;

    /// When to call [`Machine::handle_timeout`] next; `None` means only input can wake it.
    fn poll_timeout(&self) -> Option<Instant>;
}

impl<M: Machine + ?Sized> Machine for Box<M> {
    type Event = M::Event;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        (**self).accept(now, listener, peer)
    }
    fn accept_at(&mut self, now: Instant, id: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal> {
        (**self).accept_at(now, id, peer, at)
    }
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        (**self).handle_input(now, input)
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now)
    }
    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128) {
        (**self).handle_wall_clock(now, unix_micros)
    }
    fn peer_certified(&mut self, now: Instant, conn: ConnId, fingerprint: Fingerprint) {
        (**self).peer_certified(now, conn, fingerprint)
    }
    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        (**self).poll_output()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
}

/// A machine that may not exist yet: `None` does nothing (refuses every connection, ignores
/// every input, never wakes). For a machine that can only be built once its driver has
/// bound its sockets, e.g. a hole-punching peer that reports its socket's address: start
/// the driver with `None`, then put the machine in with an app command.
impl<M: Machine> Machine for Option<M> {
    type Event = M::Event;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        match self {
            Some(m) => m.accept(now, listener, peer),
            None => Err(Refusal::UnknownListener(listener)),
        }
    }
    fn accept_at(&mut self, now: Instant, id: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal> {
        match self {
            Some(m) => m.accept_at(now, id, peer, at),
            None => Err(Refusal::UnknownListener(id)),
        }
    }
    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if let Some(m) = self {
            m.handle_input(now, input);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if let Some(m) = self {
            m.handle_timeout(now);
        }
    }
    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128) {
        if let Some(m) = self {
            m.handle_wall_clock(now, unix_micros);
        }
    }
    fn peer_certified(&mut self, now: Instant, conn: ConnId, fingerprint: Fingerprint) {
        if let Some(m) = self {
            m.peer_certified(now, conn, fingerprint);
        }
    }
    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        self.as_mut()?.poll_output()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.as_ref()?.poll_timeout()
    }
}

impl Input<'_> {
    /// The connection this input is about, if it is about one.
    pub fn conn(&self) -> Option<ConnId> {
        match *self {
            Input::Connected { conn, .. }
            | Input::ConnectFailed { conn, .. }
            | Input::Received { conn, .. }
            | Input::ReadClosed { conn }
            | Input::Closed { conn, .. }
            | Input::Sent { conn, .. } => Some(conn),
            Input::Datagram { .. } | Input::Listened { .. } => None,
        }
    }
}

impl<E> Output<E> {
    /// The same output with its event (if any) mapped through `f`. Node machines use this
    /// to wrap their children's events in their own event type.
    pub fn map_event<F, T>(self, f: F) -> Output<T>
    where
        F: FnOnce(E) -> T,
    {
        match self {
            Output::Connect { conn, to } => Output::Connect { conn, to },
            Output::Write { conn, bytes } => Output::Write { conn, bytes },
            Output::Close { conn, how } => Output::Close { conn, how },
            Output::PauseReading { conn } => Output::PauseReading { conn },
            Output::ResumeReading { conn } => Output::ResumeReading { conn },
            Output::Transmit { socket, to, bytes } => Output::Transmit { socket, to, bytes },
            Output::Listen { listener, addr } => Output::Listen { listener, addr },
            Output::Unlisten { listener } => Output::Unlisten { listener },
            Output::Event(e) => Output::Event(f(e)),
        }
    }
}

/// The queue of outputs a machine has produced and its driver has not drained yet.
///
/// Every machine keeps one. It is bounded by construction: a machine only adds to it inside
/// a call, and rule 1 of the contract has the driver drain it after every call.
#[derive(Debug)]
pub struct OutputQueue<E> {
    queue: std::collections::VecDeque<Output<E>>,
}

impl<E> Default for OutputQueue<E> {
    fn default() -> Self {
        OutputQueue { queue: std::collections::VecDeque::new() }
    }
}

impl<E> OutputQueue<E> {
    /// Queues any output.
    pub fn push(&mut self, output: Output<E>) {
        self.queue.push_back(output);
    }

    /// Queues a write of `bytes` on `conn`.
    pub fn write(&mut self, conn: ConnId, bytes: Bytes) {
        self.push(Output::Write { conn, bytes });
    }

    /// Queues a close of `conn`.
    pub fn close(&mut self, conn: ConnId, how: CloseHow) {
        self.push(Output::Close { conn, how });
    }

    /// Queues an event for the embedder.
    pub fn event(&mut self, event: E) {
        self.push(Output::Event(event));
    }

    /// The oldest queued output, for [`Machine::poll_output`].
    pub fn pop(&mut self) -> Option<Output<E>> {
        self.queue.pop_front()
    }

    /// Number of queued outputs.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Bytes a machine has written to one connection that the driver has not yet reported
/// [`Input::Sent`]: the machine's view of that connection's send backlog.
///
/// Machines use it for back-pressure with hysteresis: pause reading the input that produces
/// writes when the backlog passes `high`, resume when it falls to half of that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    unsent: usize,
}

impl Backlog {
    /// Counts `n` bytes just written.
    pub fn wrote(&mut self, n: usize) {
        self.unsent = self.unsent.saturating_add(n);
    }

    /// Counts `n` bytes the driver reported sent.
    pub fn sent(&mut self, n: usize) {
        self.unsent = self.unsent.saturating_sub(n);
    }

    /// Bytes written but not yet sent.
    pub fn unsent(&self) -> usize {
        self.unsent
    }

    /// True when the backlog is above `high`: time to pause.
    pub fn above(&self, high: usize) -> bool {
        self.unsent > high
    }

    /// True when the backlog has drained to half of `high` or less: time to resume.
    pub fn drained(&self, high: usize) -> bool {
        self.unsent <= high / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::echo::{EchoConfig, EchoServer};
    use crate::Env;

    #[test]
    fn an_absent_machine_does_nothing_and_a_present_one_runs() {
        let now = Instant::from_secs(1);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut slot: Option<EchoServer> = None;
        assert_eq!(slot.accept(now, ListenerId(0), peer), Err(Refusal::UnknownListener(ListenerId(0))));
        slot.handle_input(now, Input::ReadClosed { conn: ConnId::new(0, 1) });
        slot.handle_timeout(now);
        assert_eq!((slot.poll_output(), slot.poll_timeout()), (None, None));

        slot = Some(EchoServer::new(Env::new(1), EchoConfig::default()));
        let conn = slot.accept(now, ListenerId(0), peer).expect("the echo server accepts");
        slot.handle_input(now, Input::Received { conn, bytes: "hi\n".into() });
        let wrote = std::iter::from_fn(|| slot.poll_output())
            .any(|o| matches!(o, Output::Write { bytes, .. } if &bytes[..] == b"hi\n"));
        assert!(wrote, "the echo server inside the Option echoed");
    }
}
