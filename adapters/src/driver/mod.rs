//! The I/O loop, written once for every [`Runtime`].
//!
//! # Shape
//!
//! One task owns the machine (the *machine task*). Everything that happens on the network
//! reaches it as a message on one bounded inbound channel: per-connection reader tasks
//! send the bytes they read (64 KiB reads for bulk streams), writer tasks report what they
//! wrote, accept loops send new connections, connect tasks send outcomes, UDP receive loops
//! send datagrams. App commands ([`Handle::command`]) arrive on a second channel. The
//! machine task waits for a message, a command, or the machine's deadline; handles it;
//! drains [`Machine::poll_output`] after every call (the contract's rule 1); carries out
//! each output without awaiting any socket; and handles up to [`Config::budget`] items
//! per wake-up before it yields, so one busy connection cannot starve the others or the
//! runtime.
//!
//! Listeners given to [`Driver::listen`] are bound before the machine starts. A machine
//! may also ask for one at run time ([`Output::Listen`]): the machine task binds it there
//! and then, starts its accept loop, and answers `Input::Listened` after the drain;
//! [`Output::Unlisten`] drops the loop's stop channel, which closes the socket (a listener
//! given to [`Driver::listen`] closes the same way). A connection
//! accepted by a listener that was closed before the machine saw it is reset.
//!
//! Writes go into bounded per-connection queues. At the end of each wake-up the machine
//! task writes each queue it added to with one non-blocking vectored write, all chunks
//! queued in that wake-up together (so a frame header and its payload leave in one
//! system call and, with `TCP_NODELAY`, one segment); whatever the socket does not take
//! at once is left to a writer task per connection, which waits for the socket. Small
//! messages thus cross the driver with no task hop at all. A peer that does not read fills
//! only its own queue, and when that passes [`Config::write_queue_cap`] the connection is
//! aborted and the machine gets `Input::Closed { reason: NetError::SlowPeer }`. Every other
//! connection carries on.
//!
//! # Caps and their policies
//!
//! | what | default | when reached |
//! |---|---|---|
//! | [`Config::write_queue_cap`] | 8 MiB per connection | abort that connection, report `SlowPeer` |
//! | [`Config::inbound_capacity`] | 256 messages | readers and accept loops wait (TCP pushes back) |
//! | [`Config::command_capacity`] | 64 commands | [`Handle::command`] waits |
//! | [`Config::event_capacity`] | 1024 events | [`EventPolicy`]: drop oldest (counted) or wait |
//! | [`Config::linger`] | 5 s per graceful close | reset the connection |
//! | [`Config::max_lingering`] | 4096 connections | further graceful closes reset at once |
//! | [`Config::udp_send_queue`] | 1024 datagrams per socket | drop the datagram (counted) |
//! | [`Config::read_size`] | 64 KiB | largest single read |
//! | [`Config::read_ahead`] | 256 KiB per connection | its reader waits for the machine |
//!
//! Bytes read but not yet handled are bounded twice: by `read_ahead` per connection and by
//! `inbound_capacity` reads of at most `read_size` bytes in all. So the driver's memory is
//! bounded by these caps times the number of connections, which the machine caps itself.
//!
//! # Example
//!
//! ```no_run
//! use switchyard_adapters::{Driver, Runtime, SmolRuntime};
//! use switchyard_core::service::echo::{EchoConfig, EchoServer};
//! use switchyard_core::{Env, ListenerId};
//!
//! let rt = SmolRuntime;
//! rt.block_on(async {
//!     let server = EchoServer::new(Env::new(7), EchoConfig::default());
//!     let running = Driver::new(server)
//!         .listen(ListenerId(0), "127.0.0.1:0".parse().unwrap())
//!         .start(rt)
//!         .await?;
//!     println!("listening on {}", running.local_addr(ListenerId(0)).unwrap());
//!     let events = running.events();
//!     while let Ok(event) = events.recv().await {
//!         println!("{event:?}");
//!     }
//!     std::io::Result::Ok(())
//! })
//! .unwrap();
//! ```

mod conn;
pub(crate) mod listen;
mod read_buf;
mod stats;
mod udp;
mod wall;

pub use stats::Stats;
pub use wall::{unix_micros_now, WALL_CLOCK_SLACK};

use crate::runtime::{AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, Runtime};
use async_channel::{Receiver, Sender, TryRecvError};
use bytes::{Bytes, BytesMut};
use conn::{Conn, ReadLimits};
use futures_lite::future;
use stats::Counters;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant as StdInstant};
use switchyard_core::{CloseHow, ConnId, Input, Instant, ListenerId, Machine, NetError, Output, SocketId};
use tracing::Instrument;
use udp::UdpOut;
use wall::WallWatch;

/// What the driver does with a machine event when the embedder has not read the previous
/// [`Config::event_capacity`] events yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventPolicy {
    /// Drop the oldest waiting event and count it in [`Stats::events_dropped`]. The machine
    /// never waits for the embedder. Right for servers, whose events are for logs.
    #[default]
    DropOldest,
    /// Wait for room: the whole machine pauses until the embedder reads. Right for
    /// clients whose events are the data (received lines). The embedder must keep reading
    /// events while it awaits [`Handle::command`], or both wait for each other.
    Wait,
}

/// Tunables of a [`Driver`]; see the [module documentation](self) for each cap's policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most bytes queued for writing on one connection; past it the connection is aborted
    /// as a slow peer.
    pub write_queue_cap: usize,
    /// Largest single read from a connection.
    pub read_size: usize,
    /// Most bytes of one connection read but not yet handled by the machine. Its reader
    /// waits past it, so `PauseReading` takes effect within this many bytes and one busy
    /// connection cannot fill the inbound channel.
    pub read_ahead: usize,
    /// How long a graceful close may take to flush and see the peer's end of stream before
    /// the connection is reset.
    pub linger: Duration,
    /// Most connections lingering in a graceful close at once; past it closes reset.
    pub max_lingering: usize,
    /// Capacity of the inbound channel from socket tasks to the machine task, in messages.
    pub inbound_capacity: usize,
    /// Capacity of the command channel, in commands.
    pub command_capacity: usize,
    /// Capacity of the event channel, in events (at least 1).
    pub event_capacity: usize,
    /// What to do when the event channel is full.
    pub event_policy: EventPolicy,
    /// Most messages and commands handled per wake-up before the machine task yields.
    pub budget: usize,
    /// Capacity of each UDP socket's send queue, in datagrams.
    pub udp_send_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            write_queue_cap: 8 * 1024 * 1024,
            read_size: 64 * 1024,
            read_ahead: 256 * 1024,
            linger: Duration::from_secs(5),
            max_lingering: 4096,
            inbound_capacity: 256,
            command_capacity: 64,
            event_capacity: 1024,
            event_policy: EventPolicy::DropOldest,
            budget: 64,
            udp_send_queue: 1024,
        }
    }
}

/// A machine plus the sockets it serves, ready to [`start`](Driver::start) on a runtime.
///
/// ```no_run
/// # use switchyard_adapters::{Driver, EventPolicy, SmolRuntime};
/// # use switchyard_core::{Env, Instant, service::line_client::*};
/// # async fn f() -> std::io::Result<()> {
/// let to = "127.0.0.1:7007".parse().unwrap();
/// let client = LineClient::connect(Env::new(1), Instant::ZERO, to, LineClientConfig::default());
/// let running = Driver::new(client).event_policy(EventPolicy::Wait).start(SmolRuntime).await?;
/// running.command(|c: &mut LineClient, now| c.send_line(now, b"hello")).await.unwrap().unwrap();
/// # Ok(()) }
/// ```
pub struct Driver<M> {
    machine: M,
    listeners: Vec<(ListenerId, SocketAddr)>,
    sockets: Vec<(SocketId, SocketAddr)>,
    config: Config,
}

impl<M> fmt::Debug for Driver<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("listeners", &self.listeners)
            .field("sockets", &self.sockets)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<M> Driver<M>
where
    M: Machine + Send + 'static,
    M::Event: Send + fmt::Debug + 'static,
{
    /// A driver for `machine` with no sockets and the default [`Config`].
    ///
    /// A machine built just before `start` should take `Instant::ZERO` as its current
    /// time: the driver's clock starts at zero when it starts.
    pub fn new(machine: M) -> Driver<M> {
        Driver { machine, listeners: Vec::new(), sockets: Vec::new(), config: Config::default() }
    }

    /// Listens for TCP connections on `addr`; the machine sees them in
    /// [`Machine::accept`] with listener `id`. Port 0 picks a free port: read it back with
    /// [`Running::local_addr`].
    pub fn listen(mut self, id: ListenerId, addr: SocketAddr) -> Driver<M> {
        self.listeners.push((id, addr));
        self
    }

    /// Binds a UDP socket on `addr`, named `id` in `Input::Datagram` and `Output::Transmit`.
    pub fn bind_udp(mut self, id: SocketId, addr: SocketAddr) -> Driver<M> {
        self.sockets.push((id, addr));
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Driver<M> {
        self.config = config;
        self
    }

    /// Sets [`Config::write_queue_cap`].
    pub fn write_queue_cap(mut self, bytes: usize) -> Driver<M> {
        self.config.write_queue_cap = bytes;
        self
    }

    /// Sets [`Config::event_policy`].
    pub fn event_policy(mut self, policy: EventPolicy) -> Driver<M> {
        self.config.event_policy = policy;
        self
    }

    /// Sets [`Config::linger`].
    pub fn linger(mut self, linger: Duration) -> Driver<M> {
        self.config.linger = linger;
        self
    }

    /// Binds every listener and socket, then starts the machine task on `rt`.
    ///
    /// Binding happens before the machine runs, so an address in use or a port that needs
    /// privileges is an error here (its message names the address), not a log line later.
    pub async fn start<R: Runtime>(self, rt: R) -> io::Result<Running<M>> {
        let Driver { machine, listeners, sockets, config } = self;
        let in_context = |what: &str, addr: SocketAddr, e: io::Error| {
            io::Error::new(e.kind(), format!("cannot {what} {addr}: {}", crate::describe(&e)))
        };
        let mut bound = Vec::new();
        let mut listener_addrs = BTreeMap::new();
        for (id, addr) in listeners {
            let listener = rt.tcp_listen(addr).await.map_err(|e| in_context("listen on", addr, e))?;
            let local = listener.local_addr()?;
            if listener_addrs.insert(id, local).is_some() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("listener {id:?} given twice")));
            }
            bound.push((id, listener));
        }
        let mut bound_sockets = Vec::new();
        let mut socket_addrs = BTreeMap::new();
        for (id, addr) in sockets {
            let socket = rt.udp_bind(addr).await.map_err(|e| in_context("bind UDP", addr, e))?;
            let local = socket.local_addr()?;
            if socket_addrs.insert(id, local).is_some() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("UDP socket {id:?} given twice")));
            }
            bound_sockets.push((id, socket));
        }

        let (net_tx, net_rx) = async_channel::bounded(config.inbound_capacity.max(1));
        let (cmd_tx, cmd_rx) = async_channel::bounded(config.command_capacity.max(1));
        let (event_tx, event_rx) = async_channel::bounded(config.event_capacity.max(1));
        let (done_tx, done_rx) = async_channel::bounded(1);
        // Never sent on: dropping the sender (when the machine task ends) wakes every
        // accept and receive loop, which then stop.
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let counters = Arc::new(Counters::default());

        for (&id, addr) in &listener_addrs {
            tracing::debug!(listener = ?id, %addr, "listening");
        }
        // Each listener has a stop channel of its own, so that `Output::Unlisten` can close
        // any of them, configured here or opened at run time.
        let mut opened = HashMap::new();
        for (id, listener) in bound {
            opened.insert(id, listen::start(&rt, id, listener, net_tx.clone()));
        }
        let mut udp = BTreeMap::new();
        for (id, socket) in bound_sockets {
            let out = udp::start(&rt, id, socket, config.udp_send_queue, (net_tx.clone(), stop_rx.clone()), &counters);
            udp.insert(id, out);
        }

        let task = MachineTask {
            wall: WallWatch::new(),
            start: rt.now(),
            rt: rt.clone(),
            machine,
            config,
            conns: HashMap::new(),
            udp,
            net_tx,
            events: event_tx,
            counters: counters.clone(),
            deferred: VecDeque::new(),
            opened,
            dirty: Vec::new(),
            noop_waker: Waker::from(Arc::new(NoopWake)),
            last_timeout: None,
            warned_stale_deadline: false,
            _stop: stop_tx,
            _keep_commands_open: cmd_tx.clone(),
        };
        let span = tracing::debug_span!("machine", kind = short_type_name::<M>());
        rt.spawn(
            async move {
                let machine = task.run(net_rx, cmd_rx).await;
                let _ = done_tx.try_send(machine);
            }
            .instrument(span),
        );
        Ok(Running {
            handle: Handle { commands: cmd_tx, counters },
            events: event_rx,
            done: done_rx,
            listeners: listener_addrs,
            sockets: socket_addrs,
        })
    }
}

/// A machine running under a driver: its addresses, its events, and a [`Handle`] to
/// command it.
///
/// The machine runs until [`Running::shutdown`] (or [`Handle::shutdown`]); dropping this
/// value does not stop it.
pub struct Running<M: Machine> {
    handle: Handle<M>,
    events: Receiver<M::Event>,
    done: Receiver<M>,
    listeners: BTreeMap<ListenerId, SocketAddr>,
    sockets: BTreeMap<SocketId, SocketAddr>,
}

impl<M: Machine> fmt::Debug for Running<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running").field("listeners", &self.listeners).field("sockets", &self.sockets).finish()
    }
}

impl<M: Machine + 'static> Running<M> {
    /// The address listener `id` is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self, id: ListenerId) -> Option<SocketAddr> {
        self.listeners.get(&id).copied()
    }

    /// The address UDP socket `id` is bound to.
    pub fn udp_local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.sockets.get(&id).copied()
    }

    /// A cloneable handle for commands, statistics and shutdown.
    pub fn handle(&self) -> Handle<M> {
        self.handle.clone()
    }

    /// The machine's events, in order (subject to [`EventPolicy`]). The channel ends when
    /// the machine task ends. Every event is also logged with `tracing` at debug level.
    pub fn events(&self) -> Receiver<M::Event> {
        self.events.clone()
    }

    /// Same as [`Handle::command`].
    pub async fn command<T, F>(&self, f: F) -> Result<T, Stopped>
    where
        F: FnOnce(&mut M, Instant) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.command(f).await
    }

    /// Same as [`Handle::shutdown`].
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Same as [`Handle::stats`].
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Waits until the machine task has ended (after a shutdown) and returns the machine,
    /// so its final state can be inspected. `None` if another caller took it already.
    pub async fn join(&self) -> Option<M> {
        self.done.recv().await.ok()
    }
}

/// A cloneable, `Send` handle on a running machine.
pub struct Handle<M: Machine> {
    commands: Sender<Command<M>>,
    counters: Arc<Counters>,
}

impl<M: Machine> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle { commands: self.commands.clone(), counters: self.counters.clone() }
    }
}

impl<M: Machine> fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("stats", &self.counters.snapshot()).finish()
    }
}

impl<M: Machine + 'static> Handle<M> {
    /// Runs `f` on the machine inside its task, with the driver's current time, then
    /// drains the machine's outputs as after any other call. This is how an app calls a
    /// machine's own methods, e.g. `LineClient::send_line`. Returns what `f` returns once
    /// the outputs have been carried out (writes queued, closes begun), or [`Stopped`] if
    /// the machine task has ended.
    pub async fn command<T, F>(&self, f: F) -> Result<T, Stopped>
    where
        F: FnOnce(&mut M, Instant) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (command, reply) = Self::wrap(f);
        self.commands.send(command).await.map_err(|_| Stopped)?;
        reply.recv().await.map_err(|_| Stopped)
    }

    /// [`Handle::command`] for plain threads (e.g. one reading stdin). Blocks the thread;
    /// never call it from inside an async task.
    pub fn command_blocking<T, F>(&self, f: F) -> Result<T, Stopped>
    where
        F: FnOnce(&mut M, Instant) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (command, reply) = Self::wrap(f);
        self.commands.send_blocking(command).map_err(|_| Stopped)?;
        reply.recv_blocking().map_err(|_| Stopped)
    }

    fn wrap<T, F>(f: F) -> (Command<M>, Receiver<T>)
    where
        F: FnOnce(&mut M, Instant) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = async_channel::bounded(1);
        (Command::Call(Box::new(Call { f: Some(f), result: None, reply })), rx)
    }

    /// Hands the machine a connection that was accepted elsewhere (another thread's
    /// listener, spreading connections over several drivers), as if its listener
    /// `listener` had accepted it from `peer`: the machine's `accept` decides, and a
    /// refusal resets it. Waits while the command channel is full; [`Stopped`] (and the
    /// connection is dropped) if the machine task has ended.
    pub async fn adopt(
        &self,
        listener: ListenerId,
        stream: std::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<(), Stopped> {
        self.commands.send(Command::Adopt { listener, stream, peer }).await.map_err(|_| Stopped)
    }

    /// [`Handle::adopt`] for plain threads (an accept thread). Blocks while the command
    /// channel is full; never call it from inside an async task.
    pub fn adopt_blocking(
        &self,
        listener: ListenerId,
        stream: std::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<(), Stopped> {
        self.commands.send_blocking(Command::Adopt { listener, stream, peer }).map_err(|_| Stopped)
    }

    /// Asks the machine task to stop. Commands already sent run first. Then every
    /// connection is closed gracefully (flushed, bounded by [`Config::linger`]), listeners
    /// and UDP sockets close, the event channel ends and [`Running::join`] returns. Safe to
    /// call from any thread (e.g. a Ctrl-C handler), any number of times.
    pub fn shutdown(&self) {
        self.commands.close();
    }

    /// True until the machine task has been asked to stop.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// A snapshot of the driver's counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

/// The machine task has stopped, so the command did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the machine has stopped")
    }
}

impl std::error::Error for Stopped {}

/// An app command in flight to the machine task.
trait CommandFn<M>: Send {
    /// Runs the command on the machine.
    fn run(&mut self, machine: &mut M, now: Instant);
    /// Sends the result back; called after the outputs were drained.
    fn reply(self: Box<Self>);
}

/// What reaches the machine task on its command channel.
enum Command<M> {
    /// Run a closure on the machine ([`Handle::command`]).
    Call(Box<dyn CommandFn<M>>),
    /// Take over a connection accepted elsewhere ([`Handle::adopt`]).
    Adopt { listener: ListenerId, stream: std::net::TcpStream, peer: SocketAddr },
}

struct Call<F, T> {
    f: Option<F>,
    result: Option<T>,
    reply: Sender<T>,
}

impl<M, F, T> CommandFn<M> for Call<F, T>
where
    F: FnOnce(&mut M, Instant) -> T + Send,
    T: Send,
{
    fn run(&mut self, machine: &mut M, now: Instant) {
        if let Some(f) = self.f.take() {
            self.result = Some(f(machine, now));
        }
    }

    fn reply(self: Box<Self>) {
        if let Some(result) = self.result {
            // The caller may have stopped waiting; that is fine.
            let _ = self.reply.try_send(result);
        }
    }
}

/// What socket tasks tell the machine task.
pub(crate) enum NetMsg<S> {
    Accepted {
        listener: ListenerId,
        stream: S,
        peer: SocketAddr,
    },
    Connected {
        conn: ConnId,
        local: SocketAddr,
    },
    ConnectFailed {
        conn: ConnId,
        error: NetError,
    },
    Received {
        conn: ConnId,
        bytes: BytesMut,
    },
    /// End of stream from the peer.
    ReadEof {
        conn: ConnId,
    },
    /// A read or write failed; the connection is dead.
    Failed {
        conn: ConnId,
        error: NetError,
    },
    Sent {
        conn: ConnId,
        bytes: usize,
    },
    Datagram {
        socket: SocketId,
        from: SocketAddr,
        bytes: Bytes,
    },
}

/// The machine task's record of one connection.
struct Entry<S> {
    conn: Arc<Conn<S>>,
    /// Written to during this wake-up: in `MachineTask::dirty`.
    dirty: bool,
    /// The machine asked for `HalfClose`.
    half_closed: bool,
    /// `ReadClosed` was reported.
    read_eof: bool,
    paused: bool,
}

enum Wake<S, C> {
    Net(Result<NetMsg<S>, async_channel::RecvError>),
    Command(Result<C, async_channel::RecvError>),
    Timer,
}

type Timer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The task that owns the machine.
struct MachineTask<R: Runtime, M: Machine> {
    rt: R,
    machine: M,
    /// The driver's zero: `Instant`s given to the machine count from here.
    start: StdInstant,
    /// The system clock as last reported to the machine.
    wall: WallWatch,
    config: Config,
    conns: HashMap<ConnId, Entry<R::TcpStream>>,
    udp: BTreeMap<SocketId, UdpOut>,
    /// Handed to each new connection's tasks.
    net_tx: Sender<NetMsg<R::TcpStream>>,
    events: Sender<M::Event>,
    counters: Arc<Counters>,
    /// Reports the driver decided on while draining (slow peers' closes, listen results),
    /// made after the drain.
    deferred: VecDeque<Deferred>,
    /// Open listeners: those bound at start and those the machine opened
    /// (`Output::Listen`). Dropping one's sender stops its accept loop, which closes the
    /// socket; all of them stop with the machine task.
    opened: HashMap<ListenerId, Sender<()>>,
    /// Connections written to since the last [`MachineTask::flush_writes`].
    dirty: Vec<ConnId>,
    /// For the non-blocking writes of `flush_writes`: it must not be woken (the writer
    /// task does any waiting for a socket).
    noop_waker: Waker,
    /// The `now` of the last `handle_timeout`: a deadline at or before it is stale.
    last_timeout: Option<Instant>,
    warned_stale_deadline: bool,
    _stop: Sender<()>,
    /// Keeps the command channel open when every handle is dropped: only `shutdown` stops.
    _keep_commands_open: Sender<Command<M>>,
}

impl<R, M> MachineTask<R, M>
where
    R: Runtime,
    M: Machine + Send + 'static,
    M::Event: Send + fmt::Debug + 'static,
{
    async fn run(mut self, net_rx: Receiver<NetMsg<R::TcpStream>>, cmd_rx: Receiver<Command<M>>) -> M {
        let mut timer: Option<(Instant, Timer)> = None;
        let budget = self.config.budget.max(1);
        // A machine may have queued outputs when it was built (a client's `Connect`).
        self.drain().await;
        self.watch_wall_clock().await;
        'run: loop {
            // Writes queued by the previous wake-up (or by the first drain) leave now,
            // all of them before the task sleeps.
            self.flush_writes().await;
            let deadline = self.next_deadline();
            if timer.as_ref().map(|(at, _)| *at) != deadline {
                timer = deadline.and_then(|at| {
                    let std_at = self.start.checked_add(at.since_zero())?;
                    Some((at, Box::pin(self.rt.sleep_until(std_at)) as Timer))
                });
            }
            let wake = {
                let net = async { Wake::Net(net_rx.recv().await) };
                let command = async { Wake::Command(cmd_rx.recv().await) };
                let fire = async {
                    match timer.as_mut() {
                        Some((_, sleep)) => sleep.as_mut().await,
                        None => future::pending().await,
                    }
                    Wake::Timer
                };
                future::or(future::or(net, command), fire).await
            };
            self.watch_wall_clock().await;
            match wake {
                Wake::Net(Ok(msg)) => self.on_net(msg).await,
                Wake::Command(Ok(command)) => self.on_command(command).await,
                // The task holds a sender of each, so only `shutdown` closes one.
                Wake::Net(Err(_)) | Wake::Command(Err(_)) => break 'run,
                Wake::Timer => {
                    timer = None;
                    self.on_timeout().await;
                }
            }
            // More of the same wake-up, up to the budget, alternating so neither source
            // can shut the other out.
            let mut spent = 1;
            while spent < budget {
                let mut progressed = false;
                match cmd_rx.try_recv() {
                    Ok(command) => {
                        self.on_command(command).await;
                        spent += 1;
                        progressed = true;
                    }
                    Err(TryRecvError::Closed) => break 'run,
                    Err(TryRecvError::Empty) => {}
                }
                if let Ok(msg) = net_rx.try_recv() {
                    self.on_net(msg).await;
                    spent += 1;
                    progressed = true;
                }
                if !progressed {
                    break;
                }
            }
            // A deadline that passed while this wake-up was busy.
            if self.machine.poll_timeout().is_some_and(|at| at <= self.now()) {
                self.on_timeout().await;
            }
            if spent >= budget {
                future::yield_now().await;
            }
        }
        self.shutdown();
        self.machine
    }

    /// Tells the machine the wall clock if it has parted from the monotonic one (or has
    /// never been told), then carries out what that changed.
    async fn watch_wall_clock(&mut self) {
        let now = self.now();
        if let Some(unix_micros) = self.wall.check(now) {
            self.machine.handle_wall_clock(now, unix_micros);
            self.drain().await;
        }
    }

    /// The driver's current time as the machine counts it.
    fn now(&self) -> Instant {
        let micros = self.rt.now().saturating_duration_since(self.start).as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The machine's deadline, moved past one it already had `handle_timeout` for: a
    /// machine that keeps returning a stale deadline would otherwise spin this loop.
    fn next_deadline(&mut self) -> Option<Instant> {
        let at = self.machine.poll_timeout()?;
        match self.last_timeout {
            Some(last) if at <= last => {
                if !self.warned_stale_deadline {
                    self.warned_stale_deadline = true;
                    tracing::warn!(%at, "machine returned a deadline it was already woken for; retrying in 1 ms");
                }
                Some(last + Duration::from_millis(1))
            }
            _ => Some(at),
        }
    }

    async fn on_command(&mut self, command: Command<M>) {
        match command {
            Command::Call(mut call) => {
                let now = self.now();
                call.run(&mut self.machine, now);
                self.drain().await;
                call.reply();
            }
            Command::Adopt { listener, stream, peer } => {
                // Wrapped here, so that the socket joins this task's event loop.
                let stream = match self.rt.adopt_tcp(stream) {
                    Ok(stream) => stream,
                    Err(e) => return tracing::warn!(%peer, "cannot take over a connection: {e}"),
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                let now = self.now();
                self.on_accept(now, listener, stream, peer);
                self.drain().await;
            }
        }
    }

    async fn on_timeout(&mut self) {
        let now = self.now();
        self.last_timeout = Some(now);
        self.machine.handle_timeout(now);
        self.drain().await;
    }

    async fn on_net(&mut self, msg: NetMsg<R::TcpStream>) {
        let now = self.now();
        match msg {
            NetMsg::Accepted { listener, stream, peer } => {
                if !self.opened.contains_key(&listener) {
                    // Accepted just before the machine closed that listener: not its any more.
                    tracing::debug!(%peer, ?listener, "connection to a closed listener dropped");
                    let _ = stream.set_linger_zero();
                    return;
                }
                self.on_accept(now, listener, stream, peer)
            }
            NetMsg::Connected { conn, local } => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                tracing::debug!(%conn, %local, "connected");
                self.machine.handle_input(now, Input::Connected { conn, local });
            }
            NetMsg::ConnectFailed { conn, error } => {
                if self.remove(conn).is_none() {
                    return;
                }
                tracing::debug!(%conn, %error, "connect failed");
                self.machine.handle_input(now, Input::ConnectFailed { conn, error });
            }
            NetMsg::Received { conn, bytes } => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                let len = bytes.len();
                tracing::trace!(%conn, len, "received");
                self.machine.handle_input(now, Input::Received { conn, bytes });
                if let Some(entry) = self.conns.get(&conn) {
                    entry.conn.handled(len);
                }
            }
            NetMsg::ReadEof { conn } => {
                let Some(entry) = self.conns.get_mut(&conn) else { return };
                if entry.half_closed {
                    // Both directions are done: report this last event, then release the
                    // connection; nothing more is reported and a later `Close` is a no-op.
                    tracing::debug!(%conn, "peer finished after our half-close: released");
                    if let Some(entry) = self.remove(conn) {
                        self.close_gracefully(entry);
                    }
                } else {
                    entry.read_eof = true;
                    tracing::debug!(%conn, "peer half-closed");
                }
                self.machine.handle_input(now, Input::ReadClosed { conn });
            }
            NetMsg::Failed { conn, error } => {
                let Some(entry) = self.remove(conn) else { return };
                entry.conn.abort();
                tracing::debug!(%conn, %error, "connection failed");
                self.machine.handle_input(now, Input::Closed { conn, reason: error });
            }
            NetMsg::Sent { conn, bytes } => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                self.machine.handle_input(now, Input::Sent { conn, bytes });
            }
            NetMsg::Datagram { socket, from, bytes } => {
                tracing::trace!(?socket, %from, len = bytes.len(), "datagram");
                self.machine.handle_input(now, Input::Datagram { socket, from, bytes: &bytes });
            }
        }
        self.drain().await;
    }

    fn on_accept(&mut self, now: Instant, listener: ListenerId, stream: R::TcpStream, peer: SocketAddr) {
        // The socket's own address, not the listener's: with a wildcard listener it is the
        // address the client dialled (what a PROXY protocol header names as destination).
        let accepted = match stream.local_addr() {
            Ok(local) => self.machine.accept_at(now, listener, peer, local),
            Err(_) => self.machine.accept(now, listener, peer),
        };
        match accepted {
            Ok(id) => {
                self.counters.accepted.fetch_add(1, Relaxed);
                tracing::debug!(conn = %id, %peer, ?listener, "accepted");
                let conn = Conn::new(id, Some(stream.clone()), self.read_limits(), self.counters.clone());
                self.insert(id, conn.clone());
                conn::spawn_tasks(&self.rt, conn, stream, self.net_tx.clone());
            }
            Err(refusal) => {
                // Reset rather than close: the peer sees its connection refused, not an
                // orderly (empty) session. The simulator models refusals the same way.
                self.counters.refused.fetch_add(1, Relaxed);
                tracing::info!(%peer, ?listener, "connection refused: {refusal}");
                let _ = stream.set_linger_zero();
                drop(stream);
            }
        }
    }

    /// Writes what this wake-up queued, from this task, as far as each socket takes it
    /// without waiting (see [`conn`]), and reports the bytes written as `Sent`. A report
    /// is a mutation, after which the machine may write more (a multiplexer refilling its
    /// carrier): so drain and write again, a bounded number of rounds, after which the
    /// writer tasks carry on.
    async fn flush_writes(&mut self) {
        const ROUNDS: usize = 8;
        for _ in 0..ROUNDS {
            let sent = self.write_dirty();
            if sent.is_empty() {
                return;
            }
            let now = self.now();
            for (conn, bytes) in sent {
                self.machine.handle_input(now, Input::Sent { conn, bytes });
            }
            self.drain().await;
        }
        // Out of rounds: hand what is still queued to the writer tasks.
        for conn in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.conns.get_mut(&conn) {
                entry.dirty = false;
                entry.conn.wake_writer();
            }
        }
    }

    /// One round of [`MachineTask::flush_writes`]: a non-blocking write of each dirty
    /// connection's queue; returns the bytes each one wrote.
    fn write_dirty(&mut self) -> Vec<(ConnId, usize)> {
        let mut cx = Context::from_waker(&self.noop_waker);
        let mut sent = Vec::new();
        for conn in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.conns.get_mut(&conn) else { continue };
            entry.dirty = false;
            let n = entry.conn.write_now(&mut cx);
            if n > 0 {
                sent.push((conn, n));
            }
        }
        sent
    }

    /// Carries out every queued output, then reports the closes the driver decided on
    /// meanwhile (each report is a mutation, so drain again).
    async fn drain(&mut self) {
        loop {
            while let Some(output) = self.machine.poll_output() {
                self.carry_out(output).await;
            }
            let Some(report) = self.deferred.pop_front() else { break };
            let now = self.now();
            let input = match report {
                Deferred::Closed(conn, reason) => Input::Closed { conn, reason },
                Deferred::Listened(listener, result) => Input::Listened { listener, result },
            };
            self.machine.handle_input(now, input);
        }
    }

    async fn carry_out(&mut self, output: Output<M::Event>) {
        match output {
            Output::Connect { conn, to } => {
                tracing::debug!(%conn, %to, "connecting");
                let c = Conn::new(conn, None, self.read_limits(), self.counters.clone());
                self.insert(conn, c.clone());
                let task = conn::connect(self.rt.clone(), c, to, self.net_tx.clone());
                self.rt.spawn(task);
            }
            Output::Write { conn, bytes } => self.write(conn, bytes),
            Output::Close { conn, how } => self.close(conn, how),
            Output::PauseReading { conn } => {
                if let Some(entry) = self.conns.get_mut(&conn).filter(|e| !e.paused) {
                    entry.paused = true;
                    entry.conn.pause();
                    self.counters.paused_readers.fetch_add(1, Relaxed);
                }
            }
            Output::ResumeReading { conn } => {
                if let Some(entry) = self.conns.get_mut(&conn).filter(|e| e.paused) {
                    entry.paused = false;
                    entry.conn.resume();
                    self.counters.paused_readers.fetch_sub(1, Relaxed);
                }
            }
            Output::Transmit { socket, to, bytes } => match self.udp.get(&socket) {
                Some(out) => out.transmit(socket, to, bytes, &self.counters),
                None => tracing::debug!(?socket, "transmit on an unknown UDP socket dropped"),
            },
            Output::Listen { listener, addr } => {
                let result = self.open_listener(listener, addr).await;
                match &result {
                    Ok(at) => tracing::debug!(?listener, %at, "listening"),
                    Err(error) => tracing::debug!(?listener, %addr, %error, "cannot listen"),
                }
                self.deferred.push_back(Deferred::Listened(listener, result));
            }
            Output::Unlisten { listener } => {
                if self.opened.remove(&listener).is_some() {
                    tracing::debug!(?listener, "listener closed");
                }
            }
            Output::Event(event) => self.emit(event).await,
        }
    }

    /// Binds a listener the machine asked for and starts its accept loop.
    async fn open_listener(&mut self, id: ListenerId, addr: SocketAddr) -> Result<SocketAddr, NetError> {
        if self.opened.contains_key(&id) {
            return Err(NetError::Other(format!("listener {id:?} is already open")));
        }
        let failed = |e: io::Error| NetError::Other(format!("cannot listen on {addr}: {}", crate::describe(&e)));
        let listener = self.rt.tcp_listen(addr).await.map_err(failed)?;
        let local = listener.local_addr().map_err(failed)?;
        self.opened.insert(id, listen::start(&self.rt, id, listener, self.net_tx.clone()));
        Ok(local)
    }

    fn write(&mut self, conn: ConnId, bytes: Bytes) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            tracing::trace!(%conn, "write to a closed connection dropped");
            return;
        };
        if entry.half_closed {
            tracing::debug!(%conn, "write after half-close dropped");
            return;
        }
        let queued = entry.conn.enqueue(bytes, self.config.write_queue_cap);
        if queued.is_ok() && !entry.dirty {
            entry.dirty = true;
            self.dirty.push(conn);
        }
        if let Err(full) = queued {
            tracing::warn!(
                %conn,
                queued = full.queued,
                cap = self.config.write_queue_cap,
                "peer too slow: write queue full, aborting the connection"
            );
            if let Some(entry) = self.remove(conn) {
                entry.conn.abort();
            }
            self.counters.slow_peer_closes.fetch_add(1, Relaxed);
            self.deferred.push_back(Deferred::Closed(conn, NetError::SlowPeer));
        }
    }

    fn close(&mut self, conn: ConnId, how: CloseHow) {
        tracing::debug!(%conn, ?how, "close");
        match how {
            CloseHow::Abort => {
                if let Some(entry) = self.remove(conn) {
                    entry.conn.abort();
                }
            }
            CloseHow::Graceful => {
                if let Some(entry) = self.remove(conn) {
                    self.close_gracefully(entry);
                }
            }
            CloseHow::HalfClose => {
                let Some(entry) = self.conns.get_mut(&conn) else { return };
                if entry.half_closed {
                    return;
                }
                entry.half_closed = true;
                if entry.read_eof {
                    // Both directions are done now: finish like a graceful close.
                    if let Some(entry) = self.remove(conn) {
                        self.close_gracefully(entry);
                    }
                } else {
                    entry.conn.half_close();
                }
            }
        }
    }

    /// Flush, FIN, drain the peer's remaining bytes until its FIN, close — all bounded by
    /// [`Config::linger`]. Draining matters: closing a socket with unread input sends RST,
    /// and an RST can destroy our last bytes (say, an error line) before the peer reads them.
    fn close_gracefully(&self, entry: Entry<R::TcpStream>) {
        if !conn::try_linger(&self.counters, self.config.max_lingering) {
            tracing::warn!(conn = %entry.conn.id, "too many connections lingering: resetting instead of closing");
            entry.conn.abort();
            return;
        }
        entry.conn.graceful();
        let deadline = self.rt.now() + self.config.linger;
        self.rt.spawn(conn::reap(self.rt.clone(), entry.conn, deadline));
    }

    fn read_limits(&self) -> ReadLimits {
        let size = self.config.read_size.max(1);
        ReadLimits { size, ahead: self.config.read_ahead.max(size) }
    }

    fn insert(&mut self, id: ConnId, conn: Arc<Conn<R::TcpStream>>) {
        let entry = Entry { conn, dirty: false, half_closed: false, read_eof: false, paused: false };
        if let Some(old) = self.conns.insert(id, entry) {
            tracing::error!(conn = %id, "machine reused a connection id; aborting the older connection");
            old.conn.abort();
        }
        self.counters.connections.store(self.conns.len(), Relaxed);
    }

    fn remove(&mut self, id: ConnId) -> Option<Entry<R::TcpStream>> {
        let entry = self.conns.remove(&id)?;
        if entry.paused {
            self.counters.paused_readers.fetch_sub(1, Relaxed);
        }
        self.counters.connections.store(self.conns.len(), Relaxed);
        Some(entry)
    }

    async fn emit(&mut self, event: M::Event) {
        tracing::debug!(?event, "event");
        match self.config.event_policy {
            EventPolicy::DropOldest => {
                if let Ok(Some(_dropped)) = self.events.force_send(event) {
                    let n = self.counters.events_dropped.fetch_add(1, Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(dropped = n, "events are not being read: dropping the oldest");
                    }
                }
            }
            // An error means nobody holds the receiver any more: nothing to wait for.
            EventPolicy::Wait => drop(self.events.send(event).await),
        }
    }

    fn shutdown(&mut self) {
        tracing::debug!(connections = self.conns.len(), "stopping");
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(entry) = self.remove(id) {
                self.close_gracefully(entry);
            }
        }
        // Ends the UDP send loops; dropping `_stop` with `self` ends the receive and
        // accept loops.
        self.udp.clear();
    }
}

/// A report the machine task owes the machine, made once the current drain is done.
enum Deferred {
    /// The driver closed a connection itself (a slow peer).
    Closed(ConnId, NetError),
    /// The outcome of an `Output::Listen`.
    Listened(ListenerId, Result<SocketAddr, NetError>),
}

/// A waker that does nothing, for polls whose `Pending` nobody waits on.
struct NoopWake;

impl std::task::Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// `EchoServer` rather than `switchyard_core::service::echo::EchoServer`, for log spans.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let generic = full.find('<').unwrap_or(full.len());
    let start = full[..generic].rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}
