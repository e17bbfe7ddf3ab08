//! The time service: the current local time at connect, then again every interval until
//! the client leaves.
//!
//! The machine never reads a clock: the driver gives it a [`WallClock`] (a Unix time read
//! once at start-up and the local UTC offset) and the time of each push is that plus the
//! elapsed [`Instant`]s. Lines from the client are read (so the line limits apply) but not
//! answered: the original service answered a connection, not a request, and `9090:time`
//! through the tunnel must produce one time line, not two.

use crate::id::ConnId;
use crate::service::line_server::{LineServer, LineServerConfig, LineService, Sessions};
use crate::time::{Instant, WallClock};
use crate::Env;
use bytes::Bytes;
use std::convert::Infallible;
use std::time::Duration;

/// Default TCP port of the time service.
pub const DEFAULT_PORT: u16 = 9090;
/// Default interval between pushes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The time service's behaviour; wrap it with [`TimeService::server`].
#[derive(Debug, Clone)]
pub struct TimeService {
    wall: WallClock,
    interval: Duration,
}

/// A time server machine.
pub type TimeServer = LineServer<TimeService>;

impl TimeService {
    /// Pushes `wall`'s time every `interval` (at least one millisecond).
    pub fn new(wall: WallClock, interval: Duration) -> TimeService {
        TimeService { wall, interval: interval.max(Duration::from_millis(1)) }
    }

    /// A server machine for this service. Clients only listen, so the idle timeout is off.
    pub fn server(self, env: Env, config: LineServerConfig) -> TimeServer {
        LineServer::with_service(env, LineServerConfig { idle_timeout: None, ..config }, self)
    }

    fn push(&self, sessions: &mut Sessions<'_, Infallible>, conn: ConnId) {
        let now = sessions.now();
        sessions.send(conn, self.wall.format(now).as_bytes());
        sessions.set_timer(conn, now + self.interval);
    }
}

impl LineService for TimeService {
    type Event = Infallible;

    fn opened(&mut self, sessions: &mut Sessions<'_, Infallible>, conn: ConnId) {
        self.push(sessions, conn);
    }

    fn line(&mut self, _sessions: &mut Sessions<'_, Infallible>, _conn: ConnId, _line: Bytes) {}

    fn timer(&mut self, sessions: &mut Sessions<'_, Infallible>, conn: ConnId) {
        self.push(sessions, conn);
    }

    fn wall_clock(&mut self, now: Instant, unix_micros: i128) {
        self.wall.rebase(unix_micros, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Input, Machine};
    use crate::service::fixture::Fixture;

    fn wall() -> WallClock {
        // 2025-10-01 14:30:25 UTC at the driver's zero.
        WallClock::utc(1_759_329_025_000_000, Instant::ZERO)
    }

    #[test]
    fn answers_at_once_then_every_interval_until_the_client_leaves() {
        let service = TimeService::new(wall(), Duration::from_secs(60));
        let mut f = Fixture::new(service.server(Env::new(1), LineServerConfig::default()));
        let conn = f.connect();
        assert_eq!(f.take(conn), "2025-10-01 14:30:25\n");
        f.send(conn, b"time\n");
        assert_eq!(f.take(conn), "", "requests are answered by the pushes, not echoed");
        f.advance_to(Instant::from_secs(59));
        assert_eq!(f.take(conn), "");
        f.advance_to(Instant::from_secs(120));
        assert_eq!(f.take(conn), "2025-10-01 14:31:25\n2025-10-01 14:32:25\n");
        f.input(Input::ReadClosed { conn });
        assert!(f.closed.contains_key(&conn));
        assert_eq!(f.machine.poll_timeout(), None, "no pushes after the client left");
    }

    #[test]
    fn a_wall_clock_jump_reaches_the_next_answer() {
        let service = TimeService::new(wall(), Duration::from_secs(60));
        let mut f = Fixture::new(service.server(Env::new(1), LineServerConfig::default()));
        // The host was suspended for 90 minutes: the monotonic clock says 10 s passed.
        let now = Instant::from_secs(10);
        f.machine.handle_wall_clock(now, 1_759_329_025_000_000 + 5_410_000_000);
        f.advance_to(now);
        let conn = f.connect();
        assert_eq!(f.take(conn), "2025-10-01 16:00:35\n");
    }
}
