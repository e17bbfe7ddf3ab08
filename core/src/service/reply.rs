//! The template-reply presets: one fixed transformation of each line.
//!
//! | preset  | request          | reply                                                    |
//! |---------|------------------|----------------------------------------------------------|
//! | `hello` | `hello`          | `world` (anything else: `error: expected "hello"`)       |
//! | `greet` | `John`           | `Hello Good morning !!!! ::: John`                       |
//! | `stamp` | `Hello, World!`  | `Server received at 2025-10-01 14:30:25: Hello, World!`, then the server closes (one exchange per connection, as the original lab server did) |
//!
//! A request ends at its newline, or after [`UNTERMINATED_LINE_AFTER`] with no newline and
//! nothing more arriving (the seeds' clients send no newline).

use crate::id::ConnId;
use crate::service::error_line;
use crate::service::line_server::{LineServer, LineServerConfig, LineService, Sessions};
use crate::time::{Instant, WallClock};
use crate::Env;
use bytes::{Bytes, BytesMut};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a reply preset waits for the newline of a request before it answers the bytes
/// it has: a client that sends `John` with no newline gets its greeting after this pause.
pub const UNTERMINATED_LINE_AFTER: Duration = Duration::from_secs(1);

/// Which reply template a [`ReplyService`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `hello` → `world`.
    Hello,
    /// `NAME` → `Hello Good morning !!!! ::: NAME`.
    Greet,
    /// `TEXT` → `Server received at YYYY-MM-DD HH:MM:SS: TEXT`, then close.
    Stamp,
}

impl Preset {
    /// The preset's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Hello => "hello",
            Preset::Greet => "greet",
            Preset::Stamp => "stamp",
        }
    }

    /// The preset's default TCP port.
    pub fn default_port(self) -> u16 {
        match self {
            Preset::Hello => 5001,
            Preset::Greet => 12345,
            Preset::Stamp => 8080,
        }
    }
}

/// Longest part of a request or reply that a [`ReplyEvent`] carries: logs stay bounded
/// however long the lines are.
pub const EXCERPT_LEN: usize = 200;

/// The start of a line, at most [`EXCERPT_LEN`] bytes, and the line's whole length.
/// Displays quoted, with non-printable bytes escaped and `… (N bytes)` when cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// The first bytes of the line, newline excluded.
    pub bytes: Bytes,
    /// The line's length in bytes, newline excluded.
    pub len: usize,
}

impl Excerpt {
    /// The excerpt of `line`; a trailing newline is not part of it.
    pub fn of(line: &Bytes) -> Excerpt {
        let line = line.strip_suffix(b"\n").map_or_else(|| line.clone(), |l| line.slice(..l.len()));
        Excerpt { bytes: line.slice(..line.len().min(EXCERPT_LEN)), len: line.len() }
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.bytes.escape_ascii())?;
        if self.len > self.bytes.len() {
            write!(f, "… ({} bytes)", self.len)?;
        }
        Ok(())
    }
}

/// What a reply server reports besides connects and closes: each exchange, as the lab
/// server logs `Received from …` and `Sent response to …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyEvent {
    /// A client's request was answered.
    Answered {
        /// Its connection.
        conn: ConnId,
        /// Its address.
        peer: SocketAddr,
        /// What it sent.
        request: Excerpt,
        /// What it got back.
        reply: Excerpt,
    },
}

/// A reply service; wrap it with [`ReplyService::server`].
#[derive(Debug, Clone)]
pub struct ReplyService {
    preset: Preset,
    wall: WallClock,
}

/// A reply server machine.
pub type ReplyServer = LineServer<ReplyService>;

impl ReplyService {
    /// A service applying `preset`; `wall` dates the `stamp` replies.
    pub fn new(preset: Preset, wall: WallClock) -> ReplyService {
        ReplyService { preset, wall }
    }

    /// A server machine for this service.
    pub fn server(self, env: Env, config: LineServerConfig) -> ReplyServer {
        LineServer::with_service(env, config, self)
    }
}

fn joined(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 1);
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

impl LineService for ReplyService {
    type Event = ReplyEvent;

    fn line(&mut self, sessions: &mut Sessions<'_, ReplyEvent>, conn: ConnId, line: Bytes) {
        let reply = match self.preset {
            Preset::Hello if line.trim_ascii().eq_ignore_ascii_case(b"hello") => joined(&[b"world"]),
            Preset::Hello => error_line("expected \"hello\""),
            Preset::Greet => joined(&[b"Hello Good morning !!!! ::: ", &line]),
            Preset::Stamp => {
                let stamp = self.wall.format(sessions.now());
                joined(&[b"Server received at ", stamp.as_bytes(), b": ", &line])
            }
        };
        if let Some(peer) = sessions.peer(conn) {
            sessions.event(ReplyEvent::Answered {
                conn,
                peer,
                request: Excerpt::of(&line),
                reply: Excerpt::of(&reply),
            });
        }
        sessions.send_raw(conn, reply);
        if self.preset == Preset::Stamp {
            sessions.close(conn);
        }
    }

    fn wall_clock(&mut self, now: Instant, unix_micros: i128) {
        self.wall.rebase(unix_micros, now);
    }

    /// The seeds' clients send their text with no newline and wait for the answer, as the
    /// originals' servers answered each `recv`: a pause this long ends the request.
    fn unterminated_line_after(&self) -> Option<Duration> {
        Some(UNTERMINATED_LINE_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::service::fixture::Fixture;
    use crate::service::line_server::{LineServerConfig, LineServerEvent};

    fn fixture(preset: Preset) -> Fixture<ReplyServer> {
        let wall = WallClock::utc(1_759_329_025_000_000, Instant::ZERO);
        Fixture::new(ReplyService::new(preset, wall).server(Env::new(1), LineServerConfig::default()))
    }

    #[test]
    fn hello_answers_world_and_explains_anything_else() {
        let mut f = fixture(Preset::Hello);
        let conn = f.connect();
        f.send(conn, b"hello\r\nbonjour\n");
        assert_eq!(f.take(conn), "world\nerror: expected \"hello\"\n");
        assert!(!f.closed.contains_key(&conn));
    }

    #[test]
    fn greet_matches_the_original_format() {
        let mut f = fixture(Preset::Greet);
        let conn = f.connect();
        f.send(conn, b"John\n");
        assert_eq!(f.take(conn), "Hello Good morning !!!! ::: John\n");
    }

    #[test]
    fn a_request_without_a_newline_is_answered_once_the_client_pauses() {
        let mut f = fixture(Preset::Greet);
        let conn = f.connect();
        f.send(conn, b"Jo");
        f.advance_to(Instant::ZERO + UNTERMINATED_LINE_AFTER / 2);
        f.send(conn, b"hn");
        // The pause is counted from the last bytes, so "Jo" + "hn" is one request.
        f.advance_to(Instant::ZERO + UNTERMINATED_LINE_AFTER);
        assert_eq!(f.take(conn), "");
        f.advance_to(Instant::ZERO + UNTERMINATED_LINE_AFTER * 2);
        assert_eq!(f.take(conn), "Hello Good morning !!!! ::: John\n");
        // A whole line later is answered at once, and leaves no wait behind it.
        f.send(conn, b"Ann\n");
        assert_eq!(f.take(conn), "Hello Good morning !!!! ::: Ann\n");
        assert_eq!(f.machine.poll_timeout(), Some(f.now + Duration::from_secs(300)), "only the idle timeout is left");
    }

    #[test]
    fn each_exchange_is_reported_with_both_lines_cut_to_a_bounded_excerpt() {
        let mut f = fixture(Preset::Stamp);
        let conn = f.connect();
        let long = "x".repeat(EXCERPT_LEN + 50);
        f.send(conn, format!("{long}\r\n").as_bytes());
        let answered: Vec<_> = f
            .events
            .iter()
            .filter_map(|e| match e {
                LineServerEvent::Service(ReplyEvent::Answered { request, reply, .. }) => Some((request, reply)),
                _ => None,
            })
            .collect();
        let [(request, reply)] = answered[..] else { panic!("one exchange expected: {:?}", f.events) };
        assert_eq!((request.bytes.len(), request.len), (EXCERPT_LEN, EXCERPT_LEN + 50));
        assert_eq!(request.to_string(), format!("\"{}\"… ({} bytes)", &long[..EXCERPT_LEN], EXCERPT_LEN + 50));
        assert!(reply.bytes.starts_with(b"Server received at 2025-10-01 14:30:25: xxx"), "{reply}");
        assert_eq!(reply.len, "Server received at 2025-10-01 14:30:25: ".len() + long.len(), "no newline counted");
        assert_eq!(Excerpt::of(&Bytes::from_static(b"tab\there\n")).to_string(), "\"tab\\there\"");
    }

    #[test]
    fn stamp_answers_once_then_closes() {
        let mut f = fixture(Preset::Stamp);
        let conn = f.connect();
        f.send(conn, b"Hello, World!\nignored\n");
        assert_eq!(f.take(conn), "Server received at 2025-10-01 14:30:25: Hello, World!\n");
        assert!(f.closed.contains_key(&conn));
    }
}
