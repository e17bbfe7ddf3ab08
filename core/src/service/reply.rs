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
use std::convert::Infallible;
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
    type Event = Infallible;

    fn line(&mut self, sessions: &mut Sessions<'_, Infallible>, conn: ConnId, line: Bytes) {
        match self.preset {
            Preset::Hello if line.trim_ascii().eq_ignore_ascii_case(b"hello") => sessions.send(conn, b"world"),
            Preset::Hello => sessions.send_raw(conn, error_line("expected \"hello\"")),
            Preset::Greet => sessions.send_raw(conn, joined(&[b"Hello Good morning !!!! ::: ", &line])),
            Preset::Stamp => {
                let stamp = self.wall.format(sessions.now());
                sessions.send_raw(conn, joined(&[b"Server received at ", stamp.as_bytes(), b": ", &line]));
                sessions.close(conn);
            }
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
    use crate::service::line_server::LineServerConfig;

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
    fn stamp_answers_once_then_closes() {
        let mut f = fixture(Preset::Stamp);
        let conn = f.connect();
        f.send(conn, b"Hello, World!\nignored\n");
        assert_eq!(f.take(conn), "Server received at 2025-10-01 14:30:25: Hello, World!\n");
        assert!(f.closed.contains_key(&conn));
    }
}
