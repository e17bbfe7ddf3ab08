//! Tiny byte-stream services for end-to-end tests: a byte echo and a SHA-256 sink.
//!
//! The line services cap a line at 64 KiB and rewrite `CR LF` as `LF`, so they cannot
//! prove that *arbitrary* bytes cross a tunnel untouched. These machines can: [`ByteEcho`]
//! returns every byte as it came, and [`Sha256Sink`] answers, once the client has
//! half-closed, with how many bytes it received and their SHA-256, so a test can send far
//! more than it could hold twice in memory.
//!
//! Both are [`RawServer`]s: one machine that owns the connection bookkeeping and the
//! back-pressure, and a [`RawHandler`] per connection that says what to answer.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use switchyard_core::machine::{Backlog, OutputQueue};
use switchyard_core::{CloseHow, ConnId, Env, Input, Instant, ListenerId, Machine, Output, Refusal};

/// Unsent replies to one client above which a [`RawServer`] stops reading from it (and
/// resumes at half): a client that sends without reading is pushed back by TCP instead of
/// filling the driver's write queue until it is dropped as a slow peer.
const PAUSE_ABOVE: usize = 256 * 1024;

/// What a [`RawServer`] does with one connection's bytes.
pub trait RawHandler: Default {
    /// Bytes arrived; returns what to send back, if anything.
    fn received(&mut self, bytes: &[u8]) -> Option<Bytes>;
    /// The client half-closed; returns a last reply, sent before the server closes.
    fn finished(self) -> Option<Bytes>;
}

/// Returns every byte to its sender, unchanged, and closes after the client half-closes.
#[derive(Debug, Default)]
pub struct ByteEcho;

impl RawHandler for ByteEcho {
    fn received(&mut self, bytes: &[u8]) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(bytes))
    }
    fn finished(self) -> Option<Bytes> {
        None
    }
}

/// Swallows everything; at the client's half-close answers `LEN HEX_SHA256\n` and closes.
#[derive(Debug, Default)]
pub struct Sha256Sink {
    hasher: Sha256,
    len: u64,
}

impl RawHandler for Sha256Sink {
    fn received(&mut self, bytes: &[u8]) -> Option<Bytes> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        None
    }
    fn finished(self) -> Option<Bytes> {
        Some(Bytes::from(digest_line(self.len, &self.hasher.finalize().into())))
    }
}

/// The line a [`Sha256Sink`] answers for `len` bytes hashing to `sha256`.
pub fn digest_line(len: u64, sha256: &[u8; 32]) -> String {
    let mut line = format!("{len} ");
    for byte in sha256 {
        let _ = write!(line, "{byte:02x}");
    }
    line.push('\n');
    line
}

#[derive(Debug)]
struct RawConn<H> {
    handler: H,
    backlog: Backlog,
    paused: bool,
}

/// A server machine running one `H` per connection. It follows the machine contract like
/// the real services: ids it mints, back-pressure through `PauseReading`, a graceful close
/// once the client has finished and the last reply is queued.
#[derive(Debug)]
pub struct RawServer<H> {
    env: Env,
    conns: BTreeMap<ConnId, RawConn<H>>,
    out: OutputQueue<Infallible>,
}

impl<H: RawHandler> RawServer<H> {
    /// A server with no connections yet.
    pub fn new(env: Env) -> Self {
        RawServer { env, conns: BTreeMap::new(), out: OutputQueue::default() }
    }

    fn send(&mut self, conn: ConnId, bytes: Bytes) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.backlog.wrote(bytes.len());
        self.out.write(conn, bytes);
        if !c.paused && c.backlog.above(PAUSE_ABOVE) {
            c.paused = true;
            self.out.push(Output::PauseReading { conn });
        }
    }
}

impl<H: RawHandler> Machine for RawServer<H> {
    type Event = Infallible;

    fn accept(&mut self, _now: Instant, _listener: ListenerId, _peer: SocketAddr) -> Result<ConnId, Refusal> {
        let conn = self.env.conn_ids.next();
        self.conns.insert(conn, RawConn { handler: H::default(), backlog: Backlog::default(), paused: false });
        Ok(conn)
    }

    fn handle_input(&mut self, _now: Instant, input: Input<'_>) {
        match input {
            Input::Received { conn, bytes } => {
                let reply = self.conns.get_mut(&conn).and_then(|c| c.handler.received(&bytes));
                if let Some(reply) = reply {
                    self.send(conn, reply);
                }
            }
            Input::ReadClosed { conn } => {
                let Some(c) = self.conns.remove(&conn) else { return };
                if let Some(last) = c.handler.finished() {
                    self.out.write(conn, last);
                }
                self.out.close(conn, CloseHow::Graceful);
            }
            Input::Sent { conn, bytes } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                c.backlog.sent(bytes);
                if c.paused && c.backlog.drained(PAUSE_ABOVE) {
                    c.paused = false;
                    self.out.push(Output::ResumeReading { conn });
                }
            }
            Input::Closed { conn, .. } => {
                self.conns.remove(&conn);
            }
            Input::Connected { .. } | Input::ConnectFailed { .. } | Input::Datagram { .. } | Input::Listened { .. } => {
            }
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<Output<Infallible>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
