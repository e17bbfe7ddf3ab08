//! [`Probe`]: a scripted machine for testing the simulator, drivers and network scenarios.

use crate::env::Env;
use crate::id::{ConnId, ListenerId, SocketId};
use crate::machine::{CloseHow, Input, Machine, NetError, Output, OutputQueue, Refusal};
use crate::time::{Clock, Instant};
use bytes::Bytes;
use std::net::SocketAddr;

/// A machine that does exactly what its test tells it and reports every input as a
/// [`ProbeEvent`], so a test can assert on what a peer saw and when.
///
/// Drive it through [`Sim::with_machine`](super::Sim::with_machine):
///
/// ```
/// use switchyard_core::sim::{NetConfig, Probe, ProbeEvent, Sim};
/// use switchyard_core::ListenerId;
/// use std::time::Duration;
///
/// let mut sim = Sim::new(1, NetConfig::default());
/// let a = sim.add_host("a", [10, 0, 0, 1].into(), |env, _| Probe::new(env)).unwrap();
/// let b = sim.add_host("b", [10, 0, 0, 2].into(), |env, _| Probe::new(env)).unwrap();
/// let addr = sim.listen(b, ListenerId(0), 80).unwrap();
/// let conn = sim.with_machine(a, |p: &mut Probe, _| p.connect(addr)).unwrap();
/// sim.run_for(Duration::from_millis(10)).unwrap();
/// assert!(sim.events::<ProbeEvent>(a).any(|(_, e)| *e == ProbeEvent::Connected {
///     conn,
///     local: "10.0.0.1:49152".parse().unwrap(),
/// }));
/// ```
///
/// It keeps nothing itself: everything it learns goes out as events, which the simulator's
/// bounded event log keeps.
#[derive(Debug)]
pub struct Probe {
    env: Env,
    clock: Clock,
    out: OutputQueue<ProbeEvent>,
    refuse: bool,
    pause_new: bool,
    wake: Option<Instant>,
}

/// Everything a [`Probe`] was told, as it was told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// A listener handed it a connection; `conn` is `None` if it refused it.
    Accepted {
        /// The listener.
        listener: ListenerId,
        /// The id it gave the connection, or `None` when it refused.
        conn: Option<ConnId>,
        /// The peer's address as observed.
        peer: SocketAddr,
    },
    /// [`Input::Connected`].
    Connected {
        /// The connection.
        conn: ConnId,
        /// Its local address.
        local: SocketAddr,
    },
    /// [`Input::ConnectFailed`].
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// Why.
        error: NetError,
    },
    /// [`Input::Received`].
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// [`Input::ReadClosed`].
    ReadClosed {
        /// The connection.
        conn: ConnId,
    },
    /// [`Input::Closed`].
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: NetError,
    },
    /// [`Input::Sent`].
    Sent {
        /// The connection.
        conn: ConnId,
        /// How many bytes.
        bytes: usize,
    },
    /// [`Input::Datagram`].
    Datagram {
        /// The socket.
        socket: SocketId,
        /// The observed source.
        from: SocketAddr,
        /// The payload.
        bytes: Bytes,
    },
    /// [`Input::Listened`].
    Listened {
        /// The listener.
        listener: ListenerId,
        /// Its address, or why it could not be bound.
        result: Result<SocketAddr, NetError>,
    },
    /// The deadline set with [`Probe::wake_at`] arrived.
    Woke,
}

impl Probe {
    /// A probe that accepts every connection and reads everything.
    pub fn new(env: Env) -> Probe {
        Probe { env, clock: Clock::default(), out: OutputQueue::default(), refuse: false, pause_new: false, wake: None }
    }

    /// From now on, refuse (`true`) or accept (`false`) inbound connections.
    pub fn refuse_accepts(&mut self, refuse: bool) {
        self.refuse = refuse;
    }

    /// From now on, pause reading every new connection as soon as it opens, so the test
    /// can exercise back-pressure without racing the first bytes.
    pub fn pause_new_connections(&mut self, pause: bool) {
        self.pause_new = pause;
    }

    /// Opens a connection to `to`; returns its id.
    pub fn connect(&mut self, to: SocketAddr) -> ConnId {
        let conn = self.env.conn_ids.next();
        self.out.push(Output::Connect { conn, to });
        conn
    }

    /// Writes `bytes` on `conn`.
    pub fn write(&mut self, conn: ConnId, bytes: impl Into<Bytes>) {
        self.out.write(conn, bytes.into());
    }

    /// Closes `conn`.
    pub fn close(&mut self, conn: ConnId, how: CloseHow) {
        self.out.close(conn, how);
    }

    /// Stops reading `conn`.
    pub fn pause(&mut self, conn: ConnId) {
        self.out.push(Output::PauseReading { conn });
    }

    /// Reads `conn` again.
    pub fn resume(&mut self, conn: ConnId) {
        self.out.push(Output::ResumeReading { conn });
    }

    /// Sends a datagram from `socket` to `to`.
    pub fn transmit(&mut self, socket: SocketId, to: SocketAddr, bytes: impl Into<Bytes>) {
        self.out.push(Output::Transmit { socket, to, bytes: bytes.into() });
    }

    /// Asks for a listener on `addr` at run time (answered as [`ProbeEvent::Listened`]).
    pub fn listen(&mut self, listener: ListenerId, addr: SocketAddr) {
        self.out.push(Output::Listen { listener, addr });
    }

    /// Closes a listener opened with [`Probe::listen`].
    pub fn unlisten(&mut self, listener: ListenerId) {
        self.out.push(Output::Unlisten { listener });
    }

    /// Asks to be woken at `at` (reported as [`ProbeEvent::Woke`]); replaces any earlier
    /// request.
    pub fn wake_at(&mut self, at: Instant) {
        self.wake = Some(at);
    }
}

impl Machine for Probe {
    type Event = ProbeEvent;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        self.clock.advance(now);
        if self.refuse {
            self.out.event(ProbeEvent::Accepted { listener, conn: None, peer });
            return Err(Refusal::AtCapacity { limit: 0 });
        }
        let conn = self.env.conn_ids.next();
        self.out.event(ProbeEvent::Accepted { listener, conn: Some(conn), peer });
        if self.pause_new {
            self.pause(conn);
        }
        Ok(conn)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.clock.advance(now);
        let event = match input {
            Input::Connected { conn, local } => {
                if self.pause_new {
                    self.pause(conn);
                }
                ProbeEvent::Connected { conn, local }
            }
            Input::ConnectFailed { conn, error } => ProbeEvent::ConnectFailed { conn, error },
            Input::Received { conn, bytes } => ProbeEvent::Received { conn, bytes: bytes.freeze() },
            Input::ReadClosed { conn } => ProbeEvent::ReadClosed { conn },
            Input::Closed { conn, reason } => ProbeEvent::Closed { conn, reason },
            Input::Sent { conn, bytes } => ProbeEvent::Sent { conn, bytes },
            Input::Datagram { socket, from, bytes } => {
                ProbeEvent::Datagram { socket, from, bytes: Bytes::copy_from_slice(bytes) }
            }
            Input::Listened { listener, result } => ProbeEvent::Listened { listener, result },
        };
        self.out.event(event);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.wake.is_some_and(|at| at <= now) {
            self.wake = None;
            self.out.event(ProbeEvent::Woke);
        }
    }

    fn poll_output(&mut self) -> Option<Output<ProbeEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }
}
