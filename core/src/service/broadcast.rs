//! The broadcast service: a line from one member goes to every other member.
//!
//! Lines from the server to members:
//!
//! | line                                   | when                                         |
//! |----------------------------------------|----------------------------------------------|
//! | `NAME: TEXT`                           | member NAME sent TEXT (never echoed to NAME) |
//! | `* welcome NAME, N member(s) online`   | to a member that just joined                 |
//! | `* NAME joined`                        | to the others when a member joins            |
//! | `* NAME left`                          | to the others when a member leaves           |
//! | `* OLD is now NEW`                     | to everyone after `/nick NEW`                |
//! | `* members: A, B (you), C`             | answer to `/who`                             |
//! | `* ...`                                | answers to other commands and their errors   |
//!
//! Commands: `/who`, `/nick NAME` (1–32 of `A-Z a-z 0-9 _ - .`, unique), `/help`. A new
//! member is `guestN` until it picks a name, N counting up and skipping names a member has
//! taken with `/nick`, so two members never share a name. Blank lines (empty, or only
//! spaces and tabs, as telnet sends when Enter is pressed) go to nobody.
//!
//! Each member's backlog is capped (`max_backlog` of the server config, 1 MiB by default
//! here): a member that reads too slowly is disconnected as a slow consumer, the others see
//! it leave, and nobody else is slowed.

use crate::id::ConnId;
use crate::service::line_server::{LineServer, LineServerConfig, LineService, Sessions};
use crate::Env;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;

/// Default TCP port of the broadcast service.
pub const DEFAULT_PORT: u16 = 10000;
/// Longest display name.
pub const MAX_NAME: usize = 32;

/// What the broadcast service reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastEvent {
    /// A member joined under `name`.
    Joined {
        /// Its connection.
        conn: ConnId,
        /// Its display name.
        name: String,
    },
    /// A member left.
    Left {
        /// Its connection.
        conn: ConnId,
        /// Its display name.
        name: String,
    },
    /// A member changed its display name.
    Renamed {
        /// Its connection.
        conn: ConnId,
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// A member's line was relayed to `recipients` others.
    Relayed {
        /// The sender's connection.
        conn: ConnId,
        /// How many members it was sent to.
        recipients: usize,
    },
}

/// The broadcast behaviour; wrap it with [`Broadcast::server`].
#[derive(Debug, Default)]
pub struct Broadcast {
    names: BTreeMap<ConnId, String>,
    guests: u64,
}

/// A broadcast server machine.
pub type BroadcastServer = LineServer<Broadcast>;

type Ctx<'a> = Sessions<'a, BroadcastEvent>;

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Broadcast {
    /// A server machine with broadcast's defaults: no idle timeout (members may listen
    /// quietly for hours) and a 1 MiB backlog per member.
    pub fn server(env: Env, config: LineServerConfig) -> BroadcastServer {
        let config = LineServerConfig { idle_timeout: None, max_backlog: 1024 * 1024, ..config };
        LineServer::with_service(env, config, Broadcast::default())
    }

    /// Display names of the current members, in join order.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.names.values().map(String::as_str)
    }

    fn name(&self, conn: ConnId) -> &str {
        self.names.get(&conn).map_or("?", String::as_str)
    }

    /// Sends `line` to every member except `except`; returns how many it went to.
    fn to_others(&self, sessions: &mut Ctx<'_>, except: ConnId, line: &Bytes) -> usize {
        let others: Vec<ConnId> = self.names.keys().copied().filter(|c| *c != except).collect();
        for conn in &others {
            sessions.send_raw(*conn, line.clone());
        }
        others.len()
    }

    /// The next `guestN` no member holds. Each taken name is skipped once at most, so this
    /// loops no more times than there are members.
    fn next_guest_name(&mut self) -> String {
        loop {
            self.guests += 1;
            let name = format!("guest{}", self.guests);
            if !self.names.values().any(|n| *n == name) {
                return name;
            }
        }
    }

    fn notice(text: &str) -> Bytes {
        Bytes::from(format!("* {text}\n"))
    }

    fn command(&mut self, sessions: &mut Ctx<'_>, conn: ConnId, line: &str) {
        let (cmd, arg) = line.split_once(' ').map_or((line, ""), |(c, a)| (c, a.trim()));
        match cmd {
            "/who" => {
                let list: Vec<String> =
                    self.names.iter().map(|(c, n)| if *c == conn { format!("{n} (you)") } else { n.clone() }).collect();
                sessions.send_raw(conn, Self::notice(&format!("members: {}", list.join(", "))));
            }
            "/nick" if !valid_name(arg) => sessions
                .send_raw(conn, Self::notice(&format!("invalid name {arg:?}: use 1-{MAX_NAME} of A-Z a-z 0-9 _ - ."))),
            "/nick" if self.names.iter().any(|(c, n)| n == arg && *c != conn) => {
                sessions.send_raw(conn, Self::notice(&format!("name {arg:?} is taken")))
            }
            "/nick" => {
                let from = self.names.insert(conn, arg.to_owned()).unwrap_or_default();
                let line = Self::notice(&format!("{from} is now {arg}"));
                self.to_others(sessions, conn, &line);
                sessions.send_raw(conn, line);
                sessions.event(BroadcastEvent::Renamed { conn, from, to: arg.to_owned() });
            }
            "/help" => sessions
                .send_raw(conn, Self::notice("commands: /who, /nick NAME, /help; other lines go to everyone else")),
            _ => sessions.send_raw(conn, Self::notice(&format!("unknown command {cmd:?}; try /help"))),
        }
    }
}

impl LineService for Broadcast {
    type Event = BroadcastEvent;

    fn opened(&mut self, sessions: &mut Ctx<'_>, conn: ConnId) {
        let name = self.next_guest_name();
        self.names.insert(conn, name.clone());
        sessions.send_raw(conn, Self::notice(&format!("welcome {name}, {} member(s) online", self.names.len())));
        self.to_others(sessions, conn, &Self::notice(&format!("{name} joined")));
        sessions.event(BroadcastEvent::Joined { conn, name });
    }

    fn line(&mut self, sessions: &mut Ctx<'_>, conn: ConnId, line: Bytes) {
        if line.first() == Some(&b'/') {
            return self.command(sessions, conn, &String::from_utf8_lossy(&line));
        }
        if line.iter().all(|b| matches!(b, b' ' | b'\t')) {
            return;
        }
        let name = self.name(conn);
        let mut out = BytesMut::with_capacity(name.len() + 2 + line.len() + 1);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\n");
        let recipients = self.to_others(sessions, conn, &out.freeze());
        sessions.event(BroadcastEvent::Relayed { conn, recipients });
    }

    fn closed(&mut self, sessions: &mut Ctx<'_>, conn: ConnId) {
        if let Some(name) = self.names.remove(&conn) {
            self.to_others(sessions, conn, &Self::notice(&format!("{name} left")));
            sessions.event(BroadcastEvent::Left { conn, name });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{CloseHow, Input, NetError};
    use crate::service::fixture::Fixture;
    use crate::service::line_server::{EndReason, LineServerEvent};

    fn server() -> Fixture<BroadcastServer> {
        Fixture::new(Broadcast::server(Env::new(1), LineServerConfig::default()))
    }

    #[test]
    fn a_line_reaches_every_other_member_and_not_the_sender() {
        let mut f = server();
        let a = f.connect();
        let b = f.connect();
        let c = f.connect();
        assert_eq!(f.take(a), "* welcome guest1, 1 member(s) online\n* guest2 joined\n* guest3 joined\n");
        f.take(b);
        f.take(c);
        f.send(a, b"hi all\n");
        assert_eq!(f.take(a), "");
        assert_eq!(f.take(b), "guest1: hi all\n");
        assert_eq!(f.take(c), "guest1: hi all\n");
    }

    #[test]
    fn nick_who_and_leave_notices() {
        let mut f = server();
        let a = f.connect();
        let b = f.connect();
        f.send(a, b"/nick alice\n");
        assert!(f.take(b).ends_with("* guest1 is now alice\n"));
        assert_eq!(f.take(a), "* welcome guest1, 1 member(s) online\n* guest2 joined\n* guest1 is now alice\n");
        f.send(b, b"/nick alice\n");
        assert_eq!(f.take(b), "* name \"alice\" is taken\n");
        f.send(b, b"/nick bad name!\n");
        assert!(f.take(b).starts_with("* invalid name"));
        f.send(b, b"/who\n");
        assert_eq!(f.take(b), "* members: alice, guest2 (you)\n");
        f.input(Input::Closed { conn: b, reason: NetError::Reset });
        assert_eq!(f.take(a), "* guest2 left\n");
        assert!(f.service_left("guest2"));
    }

    #[test]
    fn a_guest_name_taken_by_nick_is_skipped_and_names_stay_unique() {
        let mut f = server();
        let a = f.connect();
        f.send(a, b"/nick guest2\n");
        f.send(a, b"/nick guest3\n");
        let b = f.connect();
        assert_eq!(f.take(b), "* welcome guest2, 2 member(s) online\n");
        let c = f.connect();
        assert_eq!(f.take(c), "* welcome guest4, 3 member(s) online\n");
        // `/nick` keeps its check: a guest cannot take the name another member holds.
        f.send(c, b"/nick guest3\n");
        assert_eq!(f.take(c), "* name \"guest3\" is taken\n");
        f.send(c, b"/who\n");
        assert_eq!(f.take(c), "* members: guest3, guest2, guest4 (you)\n");
    }

    #[test]
    fn blank_lines_go_to_nobody() {
        let mut f = server();
        let a = f.connect();
        let b = f.connect();
        f.take(a);
        f.take(b);
        f.send(a, b"\n \r\n\t \nreal\n");
        assert_eq!(f.take(b), "guest1: real\n");
        assert_eq!(f.take(a), "");
    }

    #[test]
    fn a_member_that_does_not_read_is_dropped_without_slowing_the_others() {
        let config = LineServerConfig { max_backlog: 100, ..LineServerConfig::default() };
        let mut f = Fixture::new(LineServer::with_service(Env::new(1), config, Broadcast::default()));
        let talker = f.connect();
        let slow = f.connect();
        let fast = f.connect();
        for _ in 0..10 {
            f.send(talker, b"0123456789\n");
            // `fast` reads everything; `slow` never does, so its backlog (welcome, a join
            // notice, then 19 bytes a message) passes 100 bytes at the third message.
            let n = f.take(fast).len();
            f.input(Input::Sent { conn: fast, bytes: n });
        }
        assert_eq!(f.closed.get(&slow), Some(&CloseHow::Abort));
        assert!(f.events.iter().any(|e| matches!(e,
            LineServerEvent::Closed { conn, reason: EndReason::SlowConsumer(100), .. } if *conn == slow)));
        assert!(!f.closed.contains_key(&fast));
        f.send(talker, b"still here\n");
        assert_eq!(f.take(fast), "guest1: still here\n");
    }

    impl Fixture<BroadcastServer> {
        fn service_left(&self, who: &str) -> bool {
            self.events
                .iter()
                .any(|e| matches!(e, LineServerEvent::Service(BroadcastEvent::Left { name, .. }) if name == who))
        }
    }
}
