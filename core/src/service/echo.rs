//! The echo service: every line comes back as it was sent.
//!
//! All limits (line length, connection cap, idle timeout, back-pressure on a client that
//! sends without reading) are [`LineServer`]'s, documented there and in
//! `docs/PROTOCOL.md` §1. When the client half-closes, a final unterminated line is echoed
//! too, then the server closes: `printf hello | nc 127.0.0.1 7007` prints `hello`.

use crate::id::ConnId;
use crate::service::line_server::{LineServer, LineServerConfig, LineServerEvent, LineService, Sessions};
use crate::Env;
use bytes::Bytes;
use std::convert::Infallible;

/// Default TCP port of the echo service.
pub const DEFAULT_PORT: u16 = 7007;

/// Tunables of [`EchoServer`]: the limits every line service shares.
pub type EchoConfig = LineServerConfig;

/// What the echo server reports: only the life of each connection.
pub type EchoEvent = LineServerEvent<Infallible>;

/// A line echo server machine. Give the driver one listener; any listener id works.
///
/// ```
/// use switchyard_core::{Env, Instant, Machine, Input, Output, ListenerId};
/// use switchyard_core::service::echo::{EchoServer, EchoConfig};
///
/// let mut server = EchoServer::new(Env::new(1), EchoConfig::default());
/// let now = Instant::ZERO;
/// let conn = server.accept(now, ListenerId(0), "127.0.0.1:5555".parse().unwrap()).unwrap();
/// server.handle_input(now, Input::Received { conn, bytes: "hello\n".into() });
/// let writes: Vec<_> = std::iter::from_fn(|| server.poll_output())
///     .filter_map(|o| match o { Output::Write { bytes, .. } => Some(bytes), _ => None })
///     .collect();
/// assert_eq!(writes, vec![bytes::Bytes::from("hello\n")]);
/// ```
pub type EchoServer = LineServer<Echo>;

/// The echo behaviour: each line back to its sender.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl LineService for Echo {
    type Event = Infallible;

    fn line(&mut self, sessions: &mut Sessions<'_, Infallible>, conn: ConnId, line: Bytes) {
        sessions.send(conn, &line);
    }
}

impl EchoServer {
    /// An echo server with the given limits.
    pub fn new(env: Env, config: EchoConfig) -> EchoServer {
        LineServer::with_service(env, config, Echo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{CloseHow, Input, Machine, NetError, Output, Refusal};
    use crate::service::fixture::Fixture;
    use crate::service::line_server::EndReason;
    use crate::time::Instant;
    use crate::wire::line::LineError;
    use crate::ListenerId;
    use std::time::Duration;

    fn server(config: EchoConfig) -> Fixture<EchoServer> {
        Fixture::new(EchoServer::new(Env::new(9), config))
    }

    fn ended(f: &Fixture<EchoServer>, conn: ConnId) -> Option<&EndReason> {
        f.events.iter().find_map(|e| match e {
            EchoEvent::Closed { conn: c, reason, .. } if *c == conn => Some(reason),
            _ => None,
        })
    }

    #[test]
    fn echoes_each_line_even_when_split_across_reads() {
        let mut f = server(EchoConfig::default());
        let conn = f.connect();
        f.send(conn, b"hel");
        f.send(conn, b"lo\r\nworld\n");
        assert_eq!(f.take(conn), "hello\nworld\n");
    }

    #[test]
    fn overlong_line_gets_an_error_and_only_that_connection_closes() {
        let mut f = server(EchoConfig { max_line: 4, ..EchoConfig::default() });
        let bad = f.connect();
        let good = f.connect();
        f.send(bad, b"toolong\n");
        assert_eq!(f.take(bad), "error: line too long (limit 4 bytes)\n");
        assert_eq!(f.closed.get(&bad), Some(&CloseHow::Graceful));
        assert_eq!(ended(&f, bad), Some(&EndReason::Protocol(LineError::TooLong { max: 4 })));
        f.send(good, b"ok\n");
        assert_eq!(f.take(good), "ok\n");
        assert_eq!(f.machine.connections(), 1);
    }

    #[test]
    fn final_unterminated_line_is_echoed_at_eof() {
        let mut f = server(EchoConfig::default());
        let conn = f.connect();
        f.send(conn, b"bye");
        f.input(Input::ReadClosed { conn });
        assert_eq!(f.take(conn), "bye\n");
        assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful));
        assert_eq!(ended(&f, conn), Some(&EndReason::Finished));
    }

    #[test]
    fn refuses_past_the_connection_cap() {
        let mut f = server(EchoConfig { max_connections: 1, ..EchoConfig::default() });
        f.connect();
        let peer = "10.0.0.1:4000".parse().unwrap();
        assert_eq!(f.machine.accept(f.now, ListenerId(0), peer), Err(Refusal::AtCapacity { limit: 1 }));
    }

    #[test]
    fn idle_connection_is_closed_at_its_deadline_and_not_before() {
        let mut f = server(EchoConfig { idle_timeout: Some(Duration::from_secs(10)), ..EchoConfig::default() });
        let conn = f.connect();
        f.now = Instant::from_secs(5);
        f.send(conn, b"x\n");
        f.take(conn);
        assert_eq!(f.machine.poll_timeout(), Some(Instant::from_secs(15)));
        f.advance_to(Instant::from_secs(14));
        assert_eq!(f.take(conn), "");
        f.advance_to(Instant::from_secs(15));
        assert_eq!(f.take(conn), "error: idle timeout\n");
        assert_eq!(ended(&f, conn), Some(&EndReason::IdleTimeout));
        assert_eq!(f.machine.poll_timeout(), None);
    }

    #[test]
    fn pauses_a_client_that_does_not_read_and_resumes_when_drained() {
        let mut echo = EchoServer::new(Env::new(9), EchoConfig { pause_above: 10, ..EchoConfig::default() });
        let conn = echo.accept(Instant::ZERO, ListenerId(0), "10.0.0.1:4000".parse().unwrap()).unwrap();
        let drain = |m: &mut EchoServer| std::iter::from_fn(|| m.poll_output()).collect::<Vec<_>>();
        drain(&mut echo);
        echo.handle_input(Instant::ZERO, Input::Received { conn, bytes: "0123456789\n".into() });
        assert!(drain(&mut echo).contains(&Output::PauseReading { conn }));
        echo.handle_input(Instant::ZERO, Input::Sent { conn, bytes: 5 });
        assert!(!drain(&mut echo).contains(&Output::ResumeReading { conn }));
        echo.handle_input(Instant::ZERO, Input::Sent { conn, bytes: 6 });
        assert!(drain(&mut echo).contains(&Output::ResumeReading { conn }));
    }

    #[test]
    fn input_for_unknown_connections_is_ignored() {
        let mut f = server(EchoConfig::default());
        let ghost = ConnId::new(0, 99);
        f.send(ghost, b"x\n");
        f.input(Input::Closed { conn: ghost, reason: NetError::Reset });
        assert!(f.written.is_empty() && f.events.is_empty());
    }
}
