//! What every line service shares: sessions, line framing, limits and their policies.
//!
//! A service (echo, time, broadcast, the reply presets) implements [`LineService`]: a few
//! callbacks that see whole lines. [`LineServer`] wraps it into a [`Machine`] and owns
//! everything else, once for all services:
//!
//! - **Framing**: lines up to `max_line` bytes; past it, `error: line too long (limit N
//!   bytes)` and the connection closes (the stream can no longer be framed).
//! - **Connection cap**: past `max_connections`, accepts are refused.
//! - **Idle timeout**: a connection with no input for `idle_timeout` gets
//!   `error: idle timeout` and is closed (services with pushes may turn it off).
//! - **Unterminated lines**: a service that answers requests may take bytes that have
//!   waited [`LineService::unterminated_line_after`] with no newline, and nothing more
//!   arriving, as a whole line: clients written like the seeds' (`sock.send(text)`, no
//!   newline, then wait for the answer) get one instead of waiting for the idle timeout.
//! - **Back-pressure**: when more than `pause_above` bytes of replies to one client wait to
//!   be sent, the server stops reading from that client until half have gone, so a client
//!   that floods without reading is slowed by TCP, not buffered.
//! - **Slow consumers**: when more than `max_backlog` bytes wait for one client anyway
//!   (broadcast traffic from *other* members, which pausing cannot stop), that client is
//!   disconnected with a reason, as Redis and NATS do with slow subscribers. The others are
//!   never slowed and memory stays bounded.

use crate::id::{ConnId, ListenerId};
use crate::machine::{Backlog, CloseHow, Input, Machine, NetError, Output, OutputQueue, Refusal};
use crate::service::error_line;
use crate::time::{Clock, Deadlines, Instant};
use crate::wire::line::{line_bytes, LineDecoder, LineError, DEFAULT_MAX_LINE};
use crate::Env;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Limits shared by every line service. See the [module documentation](self) for the
/// policy applied at each.
#[derive(Debug, Clone)]
pub struct LineServerConfig {
    /// Longest accepted line, terminator excluded.
    pub max_line: usize,
    /// Most connections open at once; accepts beyond it are refused.
    pub max_connections: usize,
    /// Close a connection with no input for this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// Unsent bytes to one client at which the server stops reading from it.
    pub pause_above: usize,
    /// Unsent bytes to one client at which it is disconnected as too slow.
    pub max_backlog: usize,
}

impl Default for LineServerConfig {
    fn default() -> Self {
        LineServerConfig {
            max_line: DEFAULT_MAX_LINE,
            max_connections: 10_000,
            idle_timeout: Some(Duration::from_secs(300)),
            pause_above: 256 * 1024,
            max_backlog: 4 * 1024 * 1024,
        }
    }
}

/// What a line server tells its embedder: the life of each connection, and the service's
/// own events. Every `Accepted` is followed by exactly one `Closed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineServerEvent<E> {
    /// A client connected.
    Accepted {
        /// Its connection.
        conn: ConnId,
        /// Its address.
        peer: SocketAddr,
    },
    /// A connection ended.
    Closed {
        /// Its connection.
        conn: ConnId,
        /// Its address.
        peer: SocketAddr,
        /// Why.
        reason: EndReason,
    },
    /// Something the service itself reports.
    Service(E),
}

/// Why a line-service connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndReason {
    /// The client finished (half-closed) and the service closed after answering.
    #[error("client finished")]
    Finished,
    /// The service closed the connection as part of its protocol (e.g. one exchange only).
    #[error("closed by the service")]
    ByService,
    /// The client broke the line protocol.
    #[error("protocol error: {0}")]
    Protocol(LineError),
    /// The client sent nothing for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// More than `max_backlog` bytes waited for a client that did not read.
    #[error("slow consumer: backlog over {0} bytes")]
    SlowConsumer(usize),
    /// The network ended it (reset, error).
    #[error("{0}")]
    Net(NetError),
}

/// The callbacks a line service implements. Each gets a [`Sessions`] handle to reply,
/// push to other clients, set timers and close connections.
pub trait LineService {
    /// The service's own events, wrapped in [`LineServerEvent::Service`].
    type Event;

    /// A client connected (already counted in `sessions`).
    fn opened(&mut self, _sessions: &mut Sessions<'_, Self::Event>, _conn: ConnId) {}

    /// A whole line arrived from `conn`.
    fn line(&mut self, sessions: &mut Sessions<'_, Self::Event>, conn: ConnId, line: Bytes);

    /// The client half-closed: it will send nothing more. The default closes the
    /// connection once the replies so far are sent.
    fn finished(&mut self, sessions: &mut Sessions<'_, Self::Event>, conn: ConnId) {
        sessions.finish(conn);
    }

    /// The connection is gone (any cause). `sessions` no longer lists it.
    fn closed(&mut self, _sessions: &mut Sessions<'_, Self::Event>, _conn: ConnId) {}

    /// A timer set with [`Sessions::set_timer`] for `conn` fired.
    fn timer(&mut self, _sessions: &mut Sessions<'_, Self::Event>, _conn: ConnId) {}

    /// The wall clock reads `unix_micros` at `now` (see
    /// [`Machine::handle_wall_clock`]): a service that shows dates re-bases its clock.
    fn wall_clock(&mut self, _now: Instant, _unix_micros: i128) {}

    /// How long bytes without a newline may wait, with nothing more arriving, before they
    /// are taken as a whole line. `None` (the default) waits for the newline: right for
    /// services whose clients are line-oriented (chat, echo through a tunnel).
    fn unterminated_line_after(&self) -> Option<Duration> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Idle,
    Service,
    /// A partial line has waited [`LineService::unterminated_line_after`].
    Unterminated,
}

#[derive(Debug)]
struct Session {
    peer: SocketAddr,
    inbox: BytesMut,
    decoder: LineDecoder,
    backlog: Backlog,
    paused: bool,
    /// Set once the server decided to close; input that is still in flight is ignored.
    closing: bool,
}

#[derive(Debug)]
struct Shared<E> {
    config: LineServerConfig,
    now: Instant,
    sessions: BTreeMap<ConnId, Session>,
    timers: Deadlines<(ConnId, Timer)>,
    out: OutputQueue<LineServerEvent<E>>,
    /// Connections ended inside a callback, whose `closed` callback is still owed.
    ended: Vec<ConnId>,
}

/// The sessions of a line server, as a service sees them from a callback.
pub struct Sessions<'a, E> {
    shared: &'a mut Shared<E>,
}

impl<E> Sessions<'_, E> {
    /// The current time.
    pub fn now(&self) -> Instant {
        self.shared.now
    }

    /// The address of `conn`, if it is open.
    pub fn peer(&self, conn: ConnId) -> Option<SocketAddr> {
        self.shared.sessions.get(&conn).map(|s| s.peer)
    }

    /// Every open connection, in id order (the order clients connected).
    pub fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.shared.sessions.iter().filter(|(_, s)| !s.closing).map(|(c, _)| *c)
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.conns().count()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `line` and a newline to `conn`. A client whose backlog passes `max_backlog`
    /// is disconnected as a slow consumer instead.
    pub fn send(&mut self, conn: ConnId, line: &[u8]) {
        self.send_raw(conn, line_bytes(line));
    }

    /// Sends bytes that are already framed (end in a newline) to `conn`.
    pub fn send_raw(&mut self, conn: ConnId, bytes: Bytes) {
        let max_backlog = self.shared.config.max_backlog;
        let Some(session) = self.shared.sessions.get_mut(&conn) else { return };
        if session.closing {
            return;
        }
        if session.backlog.unsent() + bytes.len() > max_backlog {
            self.end(conn, CloseHow::Abort, EndReason::SlowConsumer(max_backlog));
            return;
        }
        session.backlog.wrote(bytes.len());
        self.shared.out.write(conn, bytes);
    }

    /// Sends `error: <reason>` to `conn` and closes it once that is sent.
    pub fn close_with_error(&mut self, conn: ConnId, reason: impl std::fmt::Display) {
        self.send_raw(conn, error_line(reason));
        self.close(conn);
    }

    /// Closes `conn` once what was sent to it is delivered.
    pub fn close(&mut self, conn: ConnId) {
        self.end(conn, CloseHow::Graceful, EndReason::ByService);
    }

    /// Closes `conn` after its client finished, once the replies are delivered: the
    /// orderly end of a session ([`EndReason::Finished`]).
    pub fn finish(&mut self, conn: ConnId) {
        self.end(conn, CloseHow::Graceful, EndReason::Finished);
    }

    /// Calls the service's `timer` for `conn` at `at` (replacing an earlier timer).
    pub fn set_timer(&mut self, conn: ConnId, at: Instant) {
        if self.shared.sessions.contains_key(&conn) {
            self.shared.timers.set((conn, Timer::Service), at);
        }
    }

    /// Reports a service event to the embedder.
    pub fn event(&mut self, event: E) {
        self.shared.out.event(LineServerEvent::Service(event));
    }

    /// Closes `conn` with `how`, reports why, and queues the service's `closed` callback.
    /// The first reason given wins: a connection ends once.
    fn end(&mut self, conn: ConnId, how: CloseHow, reason: EndReason) {
        let Some(session) = self.shared.sessions.get_mut(&conn) else { return };
        if session.closing {
            return;
        }
        session.closing = true;
        self.shared.out.close(conn, how);
        self.shared.out.event(LineServerEvent::Closed { conn, peer: session.peer, reason });
        self.shared.ended.push(conn);
    }

    /// Sends `error: <error>` and closes `conn`, reporting `reason`.
    fn fail(&mut self, conn: ConnId, error: impl std::fmt::Display, reason: EndReason) {
        self.send_raw(conn, error_line(error));
        self.end(conn, CloseHow::Graceful, reason);
    }
}

/// A line service wrapped into a [`Machine`]. Give the driver one or more listeners; any
/// [`ListenerId`] works.
#[derive(Debug)]
pub struct LineServer<S: LineService> {
    env: Env,
    clock: Clock,
    shared: Shared<S::Event>,
    service: S,
}

impl<S: LineService> LineServer<S> {
    /// A server running `service` with the given limits.
    pub fn with_service(env: Env, config: LineServerConfig, service: S) -> Self {
        LineServer {
            env,
            clock: Clock::default(),
            shared: Shared {
                config,
                now: Instant::ZERO,
                sessions: BTreeMap::new(),
                timers: Deadlines::new(),
                out: OutputQueue::default(),
                ended: Vec::new(),
            },
            service,
        }
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.shared.sessions.len()
    }

    /// The service, e.g. to inspect its state in tests.
    pub fn service(&self) -> &S {
        &self.service
    }

    fn tick(&mut self, now: Instant) {
        self.shared.now = self.clock.advance(now);
    }

    /// Runs `f` with the service and a sessions handle, then settles connections ended
    /// inside it: forgets them and tells the service, which may end more.
    fn with<R>(&mut self, f: impl FnOnce(&mut S, &mut Sessions<'_, S::Event>) -> R) -> R {
        let result = f(&mut self.service, &mut Sessions { shared: &mut self.shared });
        while let Some(conn) = self.shared.ended.pop() {
            self.forget(conn);
            self.service.closed(&mut Sessions { shared: &mut self.shared }, conn);
        }
        result
    }

    fn forget(&mut self, conn: ConnId) {
        self.shared.sessions.remove(&conn);
        self.shared.timers.cancel((conn, Timer::Idle));
        self.shared.timers.cancel((conn, Timer::Service));
        self.shared.timers.cancel((conn, Timer::Unterminated));
    }

    fn received(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(session) = self.shared.sessions.get_mut(&conn) else { return };
        if session.closing {
            return;
        }
        session.inbox.extend_from_slice(bytes);
        if let Some(idle) = self.shared.config.idle_timeout {
            self.shared.timers.set((conn, Timer::Idle), self.shared.now + idle);
        }
        loop {
            let Some(session) = self.shared.sessions.get_mut(&conn).filter(|s| !s.closing) else { return };
            match session.decoder.decode(&mut session.inbox) {
                Ok(Some(line)) => self.with(|service, sessions| service.line(sessions, conn, line)),
                Ok(None) => break,
                Err(error) => return self.protocol_error(conn, error),
            }
        }
        self.watch_unterminated(conn);
        self.apply_pause(conn);
    }

    /// Starts (or restarts) the wait for the rest of a partial line, or stops it when no
    /// partial line is left.
    fn watch_unterminated(&mut self, conn: ConnId) {
        let Some(after) = self.service.unterminated_line_after() else { return };
        let Some(session) = self.shared.sessions.get(&conn) else { return };
        let timer = (conn, Timer::Unterminated);
        if session.inbox.is_empty() {
            self.shared.timers.cancel(timer);
        } else {
            self.shared.timers.set(timer, self.shared.now + after);
        }
    }

    /// The partial line waited long enough: it is the client's whole line.
    fn take_unterminated(&mut self, conn: ConnId) {
        let Some(session) = self.shared.sessions.get_mut(&conn).filter(|s| !s.closing) else { return };
        match session.decoder.finish(&mut session.inbox) {
            Ok(Some(line)) => self.with(|service, sessions| service.line(sessions, conn, line)),
            Ok(None) => {}
            Err(error) => self.protocol_error(conn, error),
        }
    }

    fn apply_pause(&mut self, conn: ConnId) {
        let pause_above = self.shared.config.pause_above;
        let Some(session) = self.shared.sessions.get_mut(&conn) else { return };
        if !session.paused && session.backlog.above(pause_above) {
            session.paused = true;
            self.shared.out.push(Output::PauseReading { conn });
        } else if session.paused && session.backlog.drained(pause_above) {
            session.paused = false;
            self.shared.out.push(Output::ResumeReading { conn });
        }
    }

    fn protocol_error(&mut self, conn: ConnId, error: LineError) {
        self.with(|_, sessions| sessions.fail(conn, &error, EndReason::Protocol(error.clone())));
    }

    fn read_closed(&mut self, conn: ConnId) {
        let Some(session) = self.shared.sessions.get_mut(&conn).filter(|s| !s.closing) else { return };
        match session.decoder.finish(&mut session.inbox) {
            Ok(Some(line)) => self.with(|service, sessions| service.line(sessions, conn, line)),
            Ok(None) => {}
            Err(error) => return self.protocol_error(conn, error),
        }
        if self.shared.sessions.get(&conn).is_some_and(|s| !s.closing) {
            self.with(|service, sessions| service.finished(sessions, conn));
        }
    }

    fn closed(&mut self, conn: ConnId, reason: NetError) {
        let Some(session) = self.shared.sessions.get(&conn).filter(|s| !s.closing) else { return };
        let peer = session.peer;
        self.forget(conn);
        self.shared.out.event(LineServerEvent::Closed { conn, peer, reason: EndReason::Net(reason) });
        self.with(|service, sessions| service.closed(sessions, conn));
    }
}

impl<S: LineService> Machine for LineServer<S> {
    type Event = LineServerEvent<S::Event>;

    fn accept(&mut self, now: Instant, _listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        self.tick(now);
        let limit = self.shared.config.max_connections;
        if self.shared.sessions.len() >= limit {
            return Err(Refusal::AtCapacity { limit });
        }
        let conn = self.env.conn_ids.next();
        let session = Session {
            peer,
            inbox: BytesMut::new(),
            decoder: LineDecoder::new(self.shared.config.max_line),
            backlog: Backlog::default(),
            paused: false,
            closing: false,
        };
        self.shared.sessions.insert(conn, session);
        if let Some(idle) = self.shared.config.idle_timeout {
            self.shared.timers.set((conn, Timer::Idle), self.shared.now + idle);
        }
        self.shared.out.event(LineServerEvent::Accepted { conn, peer });
        self.with(|service, sessions| service.opened(sessions, conn));
        Ok(conn)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.tick(now);
        match input {
            Input::Received { conn, bytes } => self.received(conn, &bytes),
            Input::ReadClosed { conn } => self.read_closed(conn),
            Input::Sent { conn, bytes } => {
                if let Some(session) = self.shared.sessions.get_mut(&conn) {
                    session.backlog.sent(bytes);
                    self.apply_pause(conn);
                }
            }
            Input::Closed { conn, reason } => self.closed(conn, reason),
            // Line servers open no connections and bind no UDP sockets.
            Input::Connected { .. } | Input::ConnectFailed { .. } | Input::Datagram { .. } | Input::Listened { .. } => {
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some((conn, timer)) = self.shared.timers.pop_expired(self.shared.now) {
            match timer {
                Timer::Idle => self.with(|_, sessions| sessions.fail(conn, "idle timeout", EndReason::IdleTimeout)),
                Timer::Service => self.with(|service, sessions| service.timer(sessions, conn)),
                Timer::Unterminated => self.take_unterminated(conn),
            }
        }
    }

    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128) {
        self.tick(now);
        self.service.wall_clock(self.shared.now, unix_micros);
    }

    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        self.shared.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.shared.timers.next()
    }
}
