//! A client for any line service (echo now; time, broadcast and the replies later): it
//! connects, sends lines, and reports every line that comes back.
//!
//! Lines sent before the connection is up wait in a bounded queue; so does everything the
//! driver has not yet reported sent. Past `max_backlog` bytes, [`LineClient::send_line`]
//! refuses with [`SendError::Backlogged`] so the caller slows down instead of the client
//! buffering without bound.

use crate::id::ConnId;
use crate::machine::{Backlog, CloseHow, Input, Machine, NetError, Output, OutputQueue};
use crate::time::{Clock, Instant};
use crate::wire::line::{line_bytes, LineDecoder, LineError, DEFAULT_MAX_LINE};
use crate::Env;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

/// Tunables of [`LineClient`].
#[derive(Debug, Clone)]
pub struct LineClientConfig {
    /// Longest line accepted from the server, and longest line `send_line` takes.
    pub max_line: usize,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Most bytes queued or unsent at once before `send_line` refuses.
    pub max_backlog: usize,
}

impl Default for LineClientConfig {
    fn default() -> Self {
        LineClientConfig {
            max_line: DEFAULT_MAX_LINE,
            connect_timeout: Duration::from_secs(10),
            max_backlog: 1024 * 1024,
        }
    }
}

/// What the client tells its embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineClientEvent {
    /// The connection is open.
    Connected {
        /// The local address it got.
        local: SocketAddr,
    },
    /// A line arrived from the server (terminator removed).
    Line(Bytes),
    /// The connection could not be opened (including the connect timeout).
    ConnectFailed(NetError),
    /// The server sent something that is not a line protocol (e.g. a line over the cap);
    /// the client closed the connection.
    ProtocolError(LineError),
    /// The connection ended. `None` when the server closed it normally.
    Closed(Option<NetError>),
}

/// Why [`LineClient::send_line`] refused a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed, or `finish` was called.
    #[error("connection is closed")]
    Closed,
    /// The line contains a newline, which would split it in two.
    #[error("line contains a newline")]
    ContainsNewline,
    /// The line is longer than the configured cap.
    #[error("line too long (limit {max} bytes)")]
    TooLong {
        /// The cap in force.
        max: usize,
    },
    /// Too much is already waiting to be sent; try again after some is sent.
    #[error("send backlog full ({max} bytes)")]
    Backlogged {
        /// The cap in force.
        max: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting { deadline: Instant },
    Open,
    Closed,
}

/// A line-protocol client machine. Construct it with [`LineClient::connect`], drain it, and
/// drive it like any [`Machine`].
#[derive(Debug)]
pub struct LineClient {
    config: LineClientConfig,
    clock: Clock,
    conn: ConnId,
    state: State,
    pending: VecDeque<Bytes>,
    backlog: Backlog,
    finish_requested: bool,
    inbox: BytesMut,
    decoder: LineDecoder,
    out: OutputQueue<LineClientEvent>,
}

impl LineClient {
    /// A client that starts connecting to `server` at `now`.
    pub fn connect(mut env: Env, now: Instant, server: SocketAddr, config: LineClientConfig) -> LineClient {
        let conn = env.conn_ids.next();
        let mut out = OutputQueue::default();
        out.push(Output::Connect { conn, to: server });
        LineClient {
            decoder: LineDecoder::new(config.max_line),
            state: State::Connecting { deadline: now + config.connect_timeout },
            config,
            clock: Clock::new(now),
            conn,
            pending: VecDeque::new(),
            backlog: Backlog::default(),
            finish_requested: false,
            inbox: BytesMut::new(),
            out,
        }
    }

    /// The connection this client uses.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// True until the connection has ended (or failed to open).
    pub fn is_open(&self) -> bool {
        self.state != State::Closed
    }

    /// Sends `line` (a `\n` is added). Queued until the connection is up.
    pub fn send_line(&mut self, now: Instant, line: &[u8]) -> Result<(), SendError> {
        self.clock.advance(now);
        if self.state == State::Closed || self.finish_requested {
            return Err(SendError::Closed);
        }
        if line.contains(&b'\n') {
            return Err(SendError::ContainsNewline);
        }
        if line.len() > self.config.max_line {
            return Err(SendError::TooLong { max: self.config.max_line });
        }
        if self.backlog.unsent() + line.len() + 1 > self.config.max_backlog {
            return Err(SendError::Backlogged { max: self.config.max_backlog });
        }
        self.queue(line_bytes(line));
        Ok(())
    }

    /// Sends `bytes` exactly as given, with no newline added: for a tunnel route prefix
    /// such as `10000:` that must reach the tunnel before the first line. Same limits as
    /// [`LineClient::send_line`], except that newlines are allowed.
    pub fn send_raw(&mut self, now: Instant, bytes: &[u8]) -> Result<(), SendError> {
        self.clock.advance(now);
        if self.state == State::Closed || self.finish_requested {
            return Err(SendError::Closed);
        }
        if self.backlog.unsent() + bytes.len() > self.config.max_backlog {
            return Err(SendError::Backlogged { max: self.config.max_backlog });
        }
        self.queue(Bytes::copy_from_slice(bytes));
        Ok(())
    }

    fn queue(&mut self, bytes: Bytes) {
        self.backlog.wrote(bytes.len());
        match self.state {
            State::Open => self.out.write(self.conn, bytes),
            _ => self.pending.push_back(bytes),
        }
    }

    /// Half-closes once everything queued is sent: the server sees end of input and the
    /// client still reads the rest of its replies.
    pub fn finish(&mut self, now: Instant) {
        self.clock.advance(now);
        if self.finish_requested || self.state == State::Closed {
            return;
        }
        self.finish_requested = true;
        if self.state == State::Open {
            self.out.close(self.conn, CloseHow::HalfClose);
        }
    }

    /// Closes at once, gracefully (what was written is still sent).
    pub fn close(&mut self, now: Instant) {
        self.clock.advance(now);
        if self.state != State::Closed {
            self.state = State::Closed;
            self.out.close(self.conn, CloseHow::Graceful);
            self.out.event(LineClientEvent::Closed(None));
        }
    }

    fn fail(&mut self, event: LineClientEvent, how: Option<CloseHow>) {
        self.state = State::Closed;
        self.pending.clear();
        if let Some(how) = how {
            self.out.close(self.conn, how);
        }
        self.out.event(event);
    }

    fn connected(&mut self, local: SocketAddr) {
        if !matches!(self.state, State::Connecting { .. }) {
            return;
        }
        self.state = State::Open;
        self.out.event(LineClientEvent::Connected { local });
        for bytes in self.pending.drain(..) {
            self.out.write(self.conn, bytes);
        }
        if self.finish_requested {
            self.out.close(self.conn, CloseHow::HalfClose);
        }
    }

    fn received(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
        loop {
            match self.decoder.decode(&mut self.inbox) {
                Ok(Some(line)) => self.out.event(LineClientEvent::Line(line)),
                Ok(None) => return,
                Err(error) => return self.fail(LineClientEvent::ProtocolError(error), Some(CloseHow::Abort)),
            }
        }
    }

    fn read_closed(&mut self) {
        match self.decoder.finish(&mut self.inbox) {
            Ok(Some(line)) => self.out.event(LineClientEvent::Line(line)),
            Ok(None) => {}
            Err(error) => return self.fail(LineClientEvent::ProtocolError(error), Some(CloseHow::Abort)),
        }
        self.fail(LineClientEvent::Closed(None), Some(CloseHow::Graceful));
    }
}

impl Machine for LineClient {
    type Event = LineClientEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.clock.advance(now);
        if input.conn() != Some(self.conn) || self.state == State::Closed {
            return;
        }
        match input {
            Input::Connected { local, .. } => self.connected(local),
            Input::ConnectFailed { error, .. } => self.fail(LineClientEvent::ConnectFailed(error), None),
            Input::Received { bytes, .. } => self.received(&bytes),
            Input::ReadClosed { .. } => self.read_closed(),
            Input::Closed { reason, .. } => self.fail(LineClientEvent::Closed(Some(reason)), None),
            Input::Sent { bytes, .. } => self.backlog.sent(bytes),
            Input::Datagram { .. } | Input::Listened { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if let State::Connecting { deadline } = self.state {
            if now >= deadline {
                self.fail(LineClientEvent::ConnectFailed(NetError::TimedOut), Some(CloseHow::Abort));
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<LineClientEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline } => Some(deadline),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "127.0.0.1:7007";
    const LOCAL: &str = "127.0.0.1:40000";

    fn drain(c: &mut LineClient) -> Vec<Output<LineClientEvent>> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn client() -> LineClient {
        LineClient::connect(Env::new(1), Instant::ZERO, SERVER.parse().unwrap(), LineClientConfig::default())
    }

    #[test]
    fn queues_lines_until_connected_then_half_closes_when_finished() {
        let mut c = client();
        let conn = c.conn();
        assert_eq!(drain(&mut c), vec![Output::Connect { conn, to: SERVER.parse().unwrap() }]);
        c.send_line(Instant::ZERO, b"hello").unwrap();
        c.finish(Instant::ZERO);
        assert!(drain(&mut c).is_empty());
        c.handle_input(Instant::ZERO, Input::Connected { conn, local: LOCAL.parse().unwrap() });
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Event(LineClientEvent::Connected { local: LOCAL.parse().unwrap() }),
                Output::Write { conn, bytes: Bytes::from("hello\n") },
                Output::Close { conn, how: CloseHow::HalfClose },
            ]
        );
        c.handle_input(Instant::ZERO, Input::Received { conn, bytes: "hello\n".into() });
        assert_eq!(drain(&mut c), vec![Output::Event(LineClientEvent::Line(Bytes::from("hello")))]);
    }

    #[test]
    fn raw_bytes_go_out_unchanged_before_the_first_line() {
        let mut c = client();
        let conn = c.conn();
        c.send_raw(Instant::ZERO, b"10000:").unwrap();
        c.send_line(Instant::ZERO, b"hi").unwrap();
        drain(&mut c);
        c.handle_input(Instant::ZERO, Input::Connected { conn, local: LOCAL.parse().unwrap() });
        let writes: Vec<_> = drain(&mut c)
            .into_iter()
            .filter_map(|o| match o {
                Output::Write { bytes, .. } => Some(bytes),
                _ => None,
            })
            .collect();
        assert_eq!(writes, vec![Bytes::from("10000:"), Bytes::from("hi\n")]);
    }

    #[test]
    fn connect_times_out() {
        let mut c = client();
        let conn = c.conn();
        drain(&mut c);
        assert_eq!(c.poll_timeout(), Some(Instant::from_secs(10)));
        c.handle_timeout(Instant::from_secs(10));
        assert_eq!(
            drain(&mut c),
            vec![
                Output::Close { conn, how: CloseHow::Abort },
                Output::Event(LineClientEvent::ConnectFailed(NetError::TimedOut)),
            ]
        );
        assert_eq!(c.send_line(Instant::from_secs(11), b"x"), Err(SendError::Closed));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn refuses_bad_lines_and_too_much_backlog() {
        let config = LineClientConfig { max_line: 8, max_backlog: 10, ..LineClientConfig::default() };
        let mut c = LineClient::connect(Env::new(1), Instant::ZERO, SERVER.parse().unwrap(), config);
        assert_eq!(c.send_line(Instant::ZERO, b"a\nb"), Err(SendError::ContainsNewline));
        assert_eq!(c.send_line(Instant::ZERO, b"123456789"), Err(SendError::TooLong { max: 8 }));
        c.send_line(Instant::ZERO, b"12345678").unwrap();
        assert_eq!(c.send_line(Instant::ZERO, b"1"), Err(SendError::Backlogged { max: 10 }));
        let conn = c.conn();
        c.handle_input(Instant::ZERO, Input::Connected { conn, local: LOCAL.parse().unwrap() });
        c.handle_input(Instant::ZERO, Input::Sent { conn, bytes: 9 });
        assert_eq!(c.send_line(Instant::ZERO, b"1"), Ok(()));
    }

    #[test]
    fn server_eof_delivers_the_last_partial_line_then_closes() {
        let mut c = client();
        let conn = c.conn();
        c.handle_input(Instant::ZERO, Input::Connected { conn, local: LOCAL.parse().unwrap() });
        drain(&mut c);
        c.handle_input(Instant::ZERO, Input::Received { conn, bytes: "tail".into() });
        c.handle_input(Instant::ZERO, Input::ReadClosed { conn });
        let out = drain(&mut c);
        assert_eq!(out[0], Output::Event(LineClientEvent::Line(Bytes::from("tail"))));
        assert!(out.contains(&Output::Event(LineClientEvent::Closed(None))));
        assert!(!c.is_open());
    }
}
