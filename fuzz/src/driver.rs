//! A checked driver: runs one [`Machine`] exactly as the machine contract
//! (`core/src/machine.rs`) says a driver must, and asserts after every call the parts of the
//! contract that a driver can see from outside.
//!
//! The driver side is kept honest, so any failure is the machine's:
//!
//! - it reports only what a real driver could: `Connected`/`ConnectFailed` only for a
//!   connect in progress, `Received` only on an open connection that the machine has not
//!   paused and whose peer has not shut its side, `Sent` never more than was written;
//! - it drains [`Machine::poll_output`] after every call and hands the outputs back;
//! - time never goes back.
//!
//! On the machine side it asserts, for every output:
//!
//! - **ids**: a `Connect` names an id never seen before; every other output names a
//!   connection the machine accepted or connected. Once it is finished (closed by the
//!   machine with `Graceful`/`Abort`, reported `Closed`/`ConnectFailed`, or shut both ways)
//!   no `Write` may name it: its bytes would be lost unnoticed. A late `Close`,
//!   `PauseReading` or `ResumeReading` passes: the contract makes a late `Close` a no-op,
//!   drivers ignore all three for ids they released, and ids are never reused;
//! - **order**: no `Write` before `Connected`, none after the machine's own `HalfClose`, no
//!   second `HalfClose`;
//! - **sockets**: a `Transmit` only from a UDP socket the driver bound for the machine
//!   ([`Driver::with_sockets`]; the tunnel and mesh harnesses bind none);
//! - **listeners**: a `Listen` names an id not open now; an `Unlisten` names one the machine
//!   opened and has not closed (answered or not); [`Driver::listened`] answers a `Listen`
//!   once, and a refused one is dead. (The contract also lets a machine close a listener
//!   its embedder configured — a local end dropping a forward on a config reload — but no
//!   harness here configures listeners that way, so such an `Unlisten` fails the check.);
//! - **time**: after `handle_timeout(now)` the next deadline is after `now`, or `None`. A
//!   deadline that stays at or before `now` makes a driver spin (rule 3 of the contract).
//!
//! [`Driver::stale`] delivers the reports that may legitimately race with a close (rule 5:
//! input about a connection the machine no longer knows is ignored); the output checks then
//! catch a machine that acts on them. [`Driver::datagram`] delivers a datagram on a bound
//! socket, and [`Driver::command`] runs one of the machine's own commands (e.g.
//! `Peer::send`), draining after it like any other call.
//!
//! This file is shared, like `lib.rs`: the fuzz crate declares it as a module and
//! `core/tests/tunnel_props.rs` includes it with `#[path]`, so it depends only on
//! `switchyard-core`, `bytes` and `std`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use switchyard_core::machine::{CloseHow, Input, Machine, Output, Refusal};
use switchyard_core::{ConnId, Instant, ListenerId, SocketId};

/// Where a connection is in its life, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The machine asked for it; no `Connected` yet.
    Connecting,
    /// Open in at least one direction.
    Open,
    /// Gone: the driver reports nothing more about it.
    Finished,
}

/// One connection, as the driver tracks it.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Where it is in its life.
    pub phase: Phase,
    /// Where an outbound connection goes; the peer of an accepted one.
    pub addr: SocketAddr,
    /// The machine half-closed it: no more writes.
    pub write_shut: bool,
    /// The driver reported `ReadClosed`: no more `Received`.
    pub read_shut: bool,
    /// The machine paused reading it.
    pub paused: bool,
    /// Bytes the machine wrote to it.
    pub written: u64,
    /// Bytes the driver reported `Sent`.
    pub sent: u64,
}

impl Conn {
    /// Written and not yet reported sent.
    pub fn unsent(&self) -> u64 {
        self.written - self.sent
    }

    /// True while the connection may still carry something either way.
    pub fn is_live(&self) -> bool {
        self.phase != Phase::Finished
    }
}

/// A machine and the driver's view of its connections. See the module documentation.
#[derive(Debug)]
pub struct Driver<M: Machine> {
    /// The machine, for inspection between calls. Change it only through the driver.
    pub machine: M,
    now: Instant,
    conns: BTreeMap<ConnId, Conn>,
    sockets: BTreeSet<SocketId>,
    /// Listeners the machine opened and has not closed: bound (answered `Ok`) or not yet.
    listeners: BTreeMap<ListenerId, (SocketAddr, bool)>,
}

impl<M: Machine> Driver<M> {
    /// Takes over `machine` at `now`, draining what it queued at construction.
    pub fn new(machine: M, now: Instant) -> (Driver<M>, Vec<Output<M::Event>>) {
        Driver::with_sockets(machine, now, &[])
    }

    /// Takes over `machine` at `now` with the UDP `sockets` bound for it, draining what it
    /// queued at construction.
    pub fn with_sockets(machine: M, now: Instant, sockets: &[SocketId]) -> (Driver<M>, Vec<Output<M::Event>>) {
        let sockets = sockets.iter().copied().collect();
        let mut driver = Driver { machine, now, conns: BTreeMap::new(), sockets, listeners: BTreeMap::new() };
        let outputs = driver.drain();
        (driver, outputs)
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The driver's view of `conn`, if the machine ever named it.
    pub fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(&conn)
    }

    /// Every connection the machine ever named, in id order.
    pub fn conns(&self) -> impl Iterator<Item = (ConnId, &Conn)> + '_ {
        self.conns.iter().map(|(id, conn)| (*id, conn))
    }

    /// Listeners the machine opened and has not closed: (id, address asked for, bound).
    pub fn listeners(&self) -> impl Iterator<Item = (ListenerId, SocketAddr, bool)> + '_ {
        self.listeners.iter().map(|(&id, &(addr, bound))| (id, addr, bound))
    }

    /// Answers the machine's `Listen` of `listener` with the bound address or an error, then
    /// drains. Panics if there is no unanswered `Listen` of it (a harness bug).
    pub fn listened(
        &mut self,
        listener: ListenerId,
        result: Result<SocketAddr, switchyard_core::NetError>,
    ) -> Vec<Output<M::Event>> {
        let entry = self.listeners.get_mut(&listener);
        let entry = entry.unwrap_or_else(|| panic!("harness bug: {listener:?} was never asked for or is closed"));
        assert!(!entry.1, "harness bug: {listener:?} was answered already");
        if result.is_ok() {
            entry.1 = true;
        } else {
            self.listeners.remove(&listener);
        }
        self.machine.handle_input(self.now, Input::Listened { listener, result });
        self.drain()
    }

    /// Moves the clock to `now` (never back) without calling the machine.
    pub fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// A listener accepted a connection from `peer` at `local`, as a real driver reports it
    /// ([`Machine::accept_at`]).
    pub fn accept(
        &mut self,
        listener: ListenerId,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> (Result<ConnId, Refusal>, Vec<Output<M::Event>>) {
        let result = self.machine.accept_at(self.now, listener, peer, local);
        if let Ok(conn) = result {
            assert!(!self.conns.contains_key(&conn), "accept returned {conn}, an id the machine used before");
            self.conns.insert(conn, Conn::new(Phase::Open, peer));
        }
        (result, self.drain())
    }

    /// Reports `input` about a connection in the state a real driver would report it in,
    /// then drains. Panics if the report itself would break the contract (a harness bug).
    pub fn input(&mut self, input: Input<'_>) -> Vec<Output<M::Event>> {
        let id = input.conn().expect("harness bug: datagrams go through Driver::datagram");
        let conn = self.conns.get_mut(&id).unwrap_or_else(|| panic!("harness bug: {input:?} for unknown {id}"));
        let open = conn.phase == Phase::Open;
        match &input {
            Input::Connected { .. } | Input::ConnectFailed { .. } => {
                assert_eq!(conn.phase, Phase::Connecting, "harness bug: {input:?} for a connection not connecting");
                let connected = matches!(input, Input::Connected { .. });
                conn.phase = if connected { Phase::Open } else { Phase::Finished };
            }
            Input::Received { bytes, .. } => {
                assert!(open && !conn.read_shut && !conn.paused, "harness bug: {input:?} on {conn:?}");
                assert!(!bytes.is_empty(), "harness bug: an empty read");
            }
            Input::ReadClosed { .. } => {
                assert!(open && !conn.read_shut, "harness bug: {input:?} on {conn:?}");
                conn.read_shut = true;
                if conn.write_shut {
                    conn.phase = Phase::Finished;
                }
            }
            Input::Closed { .. } => {
                assert!(open, "harness bug: {input:?} on {conn:?}");
                conn.phase = Phase::Finished;
            }
            Input::Sent { bytes, .. } => {
                assert!(open && *bytes as u64 <= conn.unsent(), "harness bug: {input:?} on {conn:?}");
                conn.sent += *bytes as u64;
            }
            Input::Datagram { .. } | Input::Listened { .. } => unreachable!("no conn"),
        }
        self.machine.handle_input(self.now, input);
        self.drain()
    }

    /// Reports `input` about a connection that is finished or was never named: a report
    /// that raced with the machine's own close. The machine must ignore it.
    pub fn stale(&mut self, input: Input<'_>) -> Vec<Output<M::Event>> {
        let id = input.conn().expect("stale reports are about connections");
        assert!(self.conns.get(&id).map_or(true, |c| !c.is_live()), "harness bug: {id} is live, not stale");
        self.machine.handle_input(self.now, input);
        self.drain()
    }

    /// A datagram arrived on `socket` from `from`. Panics if the driver never bound `socket`
    /// (a harness bug: no driver reports datagrams on a socket it does not have).
    #[allow(dead_code)] // Only the punch harnesses bind sockets; tunnel_props includes this file too.
    pub fn datagram(&mut self, socket: SocketId, from: SocketAddr, bytes: &[u8]) -> Vec<Output<M::Event>> {
        assert!(self.sockets.contains(&socket), "harness bug: a datagram on {socket:?}, which is not bound");
        self.machine.handle_input(self.now, Input::Datagram { socket, from, bytes });
        self.drain()
    }

    /// Runs one of the machine's own commands, `f(machine, now)`, then drains.
    #[allow(dead_code)] // Only the punch harnesses have commands; tunnel_props includes this file too.
    pub fn command<R>(&mut self, f: impl FnOnce(&mut M, Instant) -> R) -> (R, Vec<Output<M::Event>>) {
        let result = f(&mut self.machine, self.now);
        (result, self.drain())
    }

    /// Moves the clock to `now` and calls `handle_timeout`, then checks the next deadline
    /// has moved past `now`.
    pub fn timeout(&mut self, now: Instant) -> Vec<Output<M::Event>> {
        self.advance(now);
        self.machine.handle_timeout(self.now);
        let outputs = self.drain();
        if let Some(next) = self.machine.poll_timeout() {
            assert!(
                next > self.now,
                "after handle_timeout({}) the next deadline is {next}: a driver would spin",
                self.now
            );
        }
        outputs
    }

    /// Drains the machine, checking every output against the connection table.
    fn drain(&mut self) -> Vec<Output<M::Event>> {
        let mut outputs = Vec::new();
        while let Some(output) = self.machine.poll_output() {
            self.check(&output);
            outputs.push(output);
        }
        outputs
    }

    fn check(&mut self, output: &Output<M::Event>) {
        let (id, what) = match output {
            Output::Connect { conn, to } => {
                assert!(!self.conns.contains_key(conn), "Connect reuses {conn}");
                self.conns.insert(*conn, Conn::new(Phase::Connecting, *to));
                return;
            }
            Output::Write { conn, .. } => (conn, "Write"),
            Output::Close { conn, .. } => (conn, "Close"),
            Output::PauseReading { conn } => (conn, "PauseReading"),
            Output::ResumeReading { conn } => (conn, "ResumeReading"),
            Output::Transmit { socket, to, .. } => {
                assert!(
                    self.sockets.contains(socket),
                    "the machine sent a datagram to {to} from {socket:?}, not bound"
                );
                return;
            }
            Output::Listen { listener, addr } => {
                let open = self.listeners.insert(*listener, (*addr, false));
                assert!(open.is_none(), "Listen names {listener:?}, which is open");
                return;
            }
            Output::Unlisten { listener } => {
                assert!(self.listeners.remove(listener).is_some(), "Unlisten of {listener:?}, which is not open");
                return;
            }
            Output::Event(_) => return,
        };
        let Some(conn) = self.conns.get_mut(id) else { panic!("{what} on {id}, an id the machine never minted") };
        if !conn.is_live() {
            assert!(what != "Write", "Write on {id}, which is finished: the bytes are lost ({conn:?})");
            return;
        }
        match output {
            Output::Write { bytes, .. } => {
                assert_eq!(conn.phase, Phase::Open, "Write on {id} before it connected");
                assert!(!conn.write_shut, "Write on {id} after the machine half-closed it");
                conn.written += bytes.len() as u64;
            }
            Output::Close { how: CloseHow::HalfClose, .. } => {
                assert_eq!(conn.phase, Phase::Open, "HalfClose of {id} before it connected");
                assert!(!conn.write_shut, "HalfClose of {id} twice");
                conn.write_shut = true;
                if conn.read_shut {
                    conn.phase = Phase::Finished;
                }
            }
            Output::Close { .. } => conn.phase = Phase::Finished,
            Output::PauseReading { .. } => conn.paused = true,
            Output::ResumeReading { .. } => conn.paused = false,
            _ => unreachable!(),
        }
    }
}

impl Conn {
    fn new(phase: Phase, addr: SocketAddr) -> Conn {
        Conn { phase, addr, write_shut: false, read_shut: false, paused: false, written: 0, sent: 0 }
    }
}

/// A fuzz input read as a script, a byte or a run of bytes at a time; past the end every
/// read is 0, which ends a script.
#[allow(dead_code)] // The mesh server, TLS and punch harnesses read scripts so; others include this file too.
#[derive(Debug)]
pub struct Script<'a> {
    data: &'a [u8],
}

#[allow(dead_code)]
impl<'a> Script<'a> {
    /// A script over `data`.
    pub fn new(data: &'a [u8]) -> Script<'a> {
        Script { data }
    }

    /// The next byte, or 0 past the end.
    pub fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.data.split_first() else { return 0 };
        self.data = rest;
        b
    }

    /// The next byte modulo `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n
    }

    /// The next `n` bytes, or as many as are left.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// True once every byte is read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
