//! The echo service: every line comes back as it was sent.
//!
//! Limits, each with its policy:
//! - a line longer than `max_line` gets `error: line too long (limit N bytes)` and the
//!   connection is closed (the rest of the stream cannot be framed);
//! - more than `max_connections` open connections: new ones are refused at accept;
//! - a connection silent for `idle_timeout` gets `error: idle timeout` and is closed;
//! - a client that sends faster than it reads: once `backlog_limit` bytes of replies are
//!   waiting, the server stops reading from it until half have gone, so TCP pushes back
//!   on the client and the server's memory per connection stays bounded.
//!
//! When the client half-closes, a final unterminated line is echoed too, then the server
//! closes: `printf hello | nc 127.0.0.1 7007` prints `hello`.

use crate::id::{ConnId, ListenerId};
use crate::machine::{Backlog, CloseHow, Input, Machine, NetError, Output, OutputQueue, Refusal};
use crate::service::error_line;
use crate::time::{Clock, Deadlines, Instant};
use crate::wire::line::{line_bytes, LineDecoder, LineError, DEFAULT_MAX_LINE};
use crate::Env;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Default TCP port of the echo service.
pub const DEFAULT_PORT: u16 = 7007;

/// Tunables of [`EchoServer`].
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Longest accepted line, terminator excluded.
    pub max_line: usize,
    /// Most connections open at once; accepts beyond it are refused.
    pub max_connections: usize,
    /// A connection with no input for this long is closed.
    pub idle_timeout: Duration,
    /// Unsent reply bytes at which the server stops reading from that client.
    pub backlog_limit: usize,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            max_line: DEFAULT_MAX_LINE,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(300),
            backlog_limit: 256 * 1024,
        }
    }
}

/// What the echo server tells its embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EchoEvent {
    /// A client connected.
    Accepted {
        /// Its connection.
        conn: ConnId,
        /// Its address.
        peer: SocketAddr,
    },
    /// A client broke the protocol and was disconnected.
    ProtocolError {
        /// Its connection.
        conn: ConnId,
        /// Its address.
        peer: SocketAddr,
        /// What it did wrong.
        error: LineError,
    },
    /// A client was silent too long and was disconnected.
    IdleTimeout {
        /// Its connection.
        conn: ConnId,
        /// Its address.
        peer: SocketAddr,
    },
    /// A connection ended. `reason` is `None` when the client finished normally (EOF).
    Closed {
        /// Its connection.
        conn: ConnId,
        /// Its address.
        peer: SocketAddr,
        /// Why, when it was not a normal end.
        reason: Option<NetError>,
    },
}

#[derive(Debug)]
struct Session {
    peer: SocketAddr,
    inbox: BytesMut,
    decoder: LineDecoder,
    backlog: Backlog,
    paused: bool,
}

/// A line echo server machine. Give the driver one listener; any [`ListenerId`] works.
///
/// ```
/// use switchyard_core::{Env, Instant, Machine, Input, Output, ListenerId};
/// use switchyard_core::service::echo::{EchoServer, EchoConfig};
///
/// let mut server = EchoServer::new(Env::new(1), EchoConfig::default());
/// let now = Instant::ZERO;
/// let conn = server.accept(now, ListenerId(0), "127.0.0.1:5555".parse().unwrap()).unwrap();
/// server.handle_input(now, Input::Received { conn, bytes: b"hello\n" });
/// let writes: Vec<_> = std::iter::from_fn(|| server.poll_output())
///     .filter_map(|o| match o { Output::Write { bytes, .. } => Some(bytes), _ => None })
///     .collect();
/// assert_eq!(writes, vec![bytes::Bytes::from("hello\n")]);
/// ```
#[derive(Debug)]
pub struct EchoServer {
    env: Env,
    config: EchoConfig,
    clock: Clock,
    sessions: BTreeMap<ConnId, Session>,
    idle: Deadlines<ConnId>,
    out: OutputQueue<EchoEvent>,
}

impl EchoServer {
    /// A server with no connections yet.
    pub fn new(env: Env, config: EchoConfig) -> EchoServer {
        EchoServer {
            env,
            config,
            clock: Clock::default(),
            sessions: BTreeMap::new(),
            idle: Deadlines::new(),
            out: OutputQueue::default(),
        }
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.sessions.len()
    }

    fn end(&mut self, conn: ConnId, how: Option<CloseHow>) -> Option<Session> {
        let session = self.sessions.remove(&conn)?;
        self.idle.cancel(conn);
        if let Some(how) = how {
            self.out.close(conn, how);
        }
        Some(session)
    }

    fn echo(&mut self, conn: ConnId, line: &[u8]) {
        let reply = line_bytes(line);
        if let Some(session) = self.sessions.get_mut(&conn) {
            session.backlog.wrote(reply.len());
        }
        self.out.write(conn, reply);
    }

    fn received(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        session.inbox.extend_from_slice(bytes);
        self.idle.set(conn, now + self.config.idle_timeout);
        loop {
            let Some(session) = self.sessions.get_mut(&conn) else { return };
            match session.decoder.decode(&mut session.inbox) {
                Ok(Some(line)) => self.echo(conn, &line),
                Ok(None) => break,
                Err(error) => return self.protocol_error(conn, error),
            }
        }
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        if !session.paused && session.backlog.above(self.config.backlog_limit) {
            session.paused = true;
            self.out.push(Output::PauseReading { conn });
        }
    }

    fn protocol_error(&mut self, conn: ConnId, error: LineError) {
        self.out.write(conn, error_line(&error));
        if let Some(session) = self.end(conn, Some(CloseHow::Graceful)) {
            self.out.event(EchoEvent::ProtocolError { conn, peer: session.peer, error });
        }
    }

    fn read_closed(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        match session.decoder.finish(&mut session.inbox) {
            Ok(Some(line)) => self.echo(conn, &line),
            Ok(None) => {}
            Err(error) => return self.protocol_error(conn, error),
        }
        if let Some(session) = self.end(conn, Some(CloseHow::Graceful)) {
            self.out.event(EchoEvent::Closed { conn, peer: session.peer, reason: None });
        }
    }

    fn sent(&mut self, conn: ConnId, bytes: usize) {
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        session.backlog.sent(bytes);
        if session.paused && session.backlog.drained(self.config.backlog_limit) {
            session.paused = false;
            self.out.push(Output::ResumeReading { conn });
        }
    }
}

impl Machine for EchoServer {
    type Event = EchoEvent;

    fn accept(&mut self, now: Instant, _listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        let now = self.clock.advance(now);
        if self.sessions.len() >= self.config.max_connections {
            return Err(Refusal::AtCapacity { limit: self.config.max_connections });
        }
        let conn = self.env.conn_ids.next();
        let session = Session {
            peer,
            inbox: BytesMut::new(),
            decoder: LineDecoder::new(self.config.max_line),
            backlog: Backlog::default(),
            paused: false,
        };
        self.sessions.insert(conn, session);
        self.idle.set(conn, now + self.config.idle_timeout);
        self.out.event(EchoEvent::Accepted { conn, peer });
        Ok(conn)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        let now = self.clock.advance(now);
        match input {
            Input::Received { conn, bytes } => self.received(now, conn, bytes),
            Input::ReadClosed { conn } => self.read_closed(conn),
            Input::Sent { conn, bytes } => self.sent(conn, bytes),
            Input::Closed { conn, reason } => {
                if let Some(session) = self.end(conn, None) {
                    self.out.event(EchoEvent::Closed { conn, peer: session.peer, reason: Some(reason) });
                }
            }
            // The echo server opens no connections and binds no UDP sockets.
            Input::Connected { .. } | Input::ConnectFailed { .. } | Input::Datagram { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        while let Some(conn) = self.idle.pop_expired(now) {
            self.out.write(conn, error_line("idle timeout"));
            if let Some(session) = self.end(conn, Some(CloseHow::Graceful)) {
                self.out.event(EchoEvent::IdleTimeout { conn, peer: session.peer });
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<EchoEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.idle.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const PEER: &str = "10.0.0.1:4000";

    fn server(config: EchoConfig) -> EchoServer {
        EchoServer::new(Env::new(9), config)
    }

    fn drain(server: &mut EchoServer) -> Vec<Output<EchoEvent>> {
        std::iter::from_fn(|| server.poll_output()).collect()
    }

    fn writes(outputs: &[Output<EchoEvent>]) -> Vec<Bytes> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Write { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn echoes_each_line_even_when_split_across_reads() {
        let mut s = server(EchoConfig::default());
        let conn = s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()).unwrap();
        s.handle_input(Instant::ZERO, Input::Received { conn, bytes: b"hel" });
        s.handle_input(Instant::ZERO, Input::Received { conn, bytes: b"lo\r\nworld\n" });
        let out = drain(&mut s);
        assert_eq!(writes(&out), vec![Bytes::from("hello\n"), Bytes::from("world\n")]);
    }

    #[test]
    fn overlong_line_gets_an_error_and_only_that_connection_closes() {
        let mut s = server(EchoConfig { max_line: 4, ..EchoConfig::default() });
        let bad = s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()).unwrap();
        let good = s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()).unwrap();
        drain(&mut s);
        s.handle_input(Instant::ZERO, Input::Received { conn: bad, bytes: b"toolong\n" });
        let out = drain(&mut s);
        assert_eq!(writes(&out), vec![Bytes::from("error: line too long (limit 4 bytes)\n")]);
        assert!(out.contains(&Output::Close { conn: bad, how: CloseHow::Graceful }));
        s.handle_input(Instant::ZERO, Input::Received { conn: good, bytes: b"ok\n" });
        assert_eq!(writes(&drain(&mut s)), vec![Bytes::from("ok\n")]);
        assert_eq!(s.connections(), 1);
    }

    #[test]
    fn final_unterminated_line_is_echoed_at_eof() {
        let mut s = server(EchoConfig::default());
        let conn = s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()).unwrap();
        s.handle_input(Instant::ZERO, Input::Received { conn, bytes: b"bye" });
        s.handle_input(Instant::ZERO, Input::ReadClosed { conn });
        let out = drain(&mut s);
        assert_eq!(writes(&out), vec![Bytes::from("bye\n")]);
        assert!(out.contains(&Output::Close { conn, how: CloseHow::Graceful }));
    }

    #[test]
    fn refuses_past_the_connection_cap() {
        let mut s = server(EchoConfig { max_connections: 1, ..EchoConfig::default() });
        s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()).unwrap();
        assert_eq!(
            s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()),
            Err(Refusal::AtCapacity { limit: 1 })
        );
    }

    #[test]
    fn idle_connection_is_closed_at_its_deadline_and_not_before() {
        let mut s = server(EchoConfig { idle_timeout: Duration::from_secs(10), ..EchoConfig::default() });
        let conn = s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()).unwrap();
        s.handle_input(Instant::from_secs(5), Input::Received { conn, bytes: b"x\n" });
        assert_eq!(s.poll_timeout(), Some(Instant::from_secs(15)));
        drain(&mut s);
        s.handle_timeout(Instant::from_secs(14));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(Instant::from_secs(15));
        let out = drain(&mut s);
        assert!(out.contains(&Output::Event(EchoEvent::IdleTimeout { conn, peer: PEER.parse().unwrap() })));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn pauses_a_client_that_does_not_read_and_resumes_when_drained() {
        let mut s = server(EchoConfig { backlog_limit: 10, ..EchoConfig::default() });
        let conn = s.accept(Instant::ZERO, ListenerId(0), PEER.parse().unwrap()).unwrap();
        s.handle_input(Instant::ZERO, Input::Received { conn, bytes: b"0123456789\n" });
        assert!(drain(&mut s).contains(&Output::PauseReading { conn }));
        s.handle_input(Instant::ZERO, Input::Sent { conn, bytes: 5 });
        assert!(!drain(&mut s).contains(&Output::ResumeReading { conn }));
        s.handle_input(Instant::ZERO, Input::Sent { conn, bytes: 6 });
        assert!(drain(&mut s).contains(&Output::ResumeReading { conn }));
    }

    #[test]
    fn input_for_unknown_connections_is_ignored() {
        let mut s = server(EchoConfig::default());
        let ghost = crate::ConnId::new(0, 99);
        s.handle_input(Instant::ZERO, Input::Received { conn: ghost, bytes: b"x\n" });
        s.handle_input(Instant::ZERO, Input::Closed { conn: ghost, reason: NetError::Reset });
        assert!(drain(&mut s).is_empty());
    }
}
