//! A test fixture for line servers: connect clients, send lines, read what each got.

use crate::id::{ConnId, ListenerId};
use crate::machine::{CloseHow, Input, Machine, Output};
use crate::time::Instant;
use std::collections::BTreeMap;

/// Drives one machine by hand, keeping what was written to each connection.
pub struct Fixture<M: Machine> {
    pub machine: M,
    pub now: Instant,
    pub written: BTreeMap<ConnId, Vec<u8>>,
    pub closed: BTreeMap<ConnId, CloseHow>,
    pub events: Vec<M::Event>,
    /// Connections the machine dialled, and where to.
    pub dialled: Vec<(ConnId, std::net::SocketAddr)>,
}

impl<M: Machine> Fixture<M> {
    pub fn new(machine: M) -> Self {
        let mut fixture = Fixture {
            machine,
            now: Instant::ZERO,
            written: BTreeMap::new(),
            closed: BTreeMap::new(),
            events: Vec::new(),
            dialled: Vec::new(),
        };
        fixture.drain();
        fixture
    }

    pub fn drain(&mut self) {
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Write { conn, bytes } => self.written.entry(conn).or_default().extend_from_slice(&bytes),
                Output::Close { conn, how } => {
                    self.closed.insert(conn, how);
                }
                Output::Event(event) => self.events.push(event),
                Output::Connect { conn, to } => self.dialled.push((conn, to)),
                _ => {}
            }
        }
    }

    pub fn connect(&mut self) -> ConnId {
        let conn = self.machine.accept(self.now, ListenerId(0), "127.0.0.1:40000".parse().unwrap()).unwrap();
        self.drain();
        conn
    }

    pub fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        self.machine.handle_input(self.now, Input::Received { conn, bytes: bytes.into() });
        self.drain();
    }

    pub fn input(&mut self, input: Input<'_>) {
        self.machine.handle_input(self.now, input);
        self.drain();
    }

    /// Moves time to `at`, firing every deadline on the way at its own instant.
    pub fn advance_to(&mut self, at: Instant) {
        while let Some(deadline) = self.machine.poll_timeout().filter(|d| *d <= at) {
            self.now = deadline.max(self.now);
            self.machine.handle_timeout(self.now);
            self.drain();
        }
        self.now = at;
    }

    /// What `conn` received since the last call, as text.
    pub fn take(&mut self, conn: ConnId) -> String {
        String::from_utf8_lossy(&self.written.remove(&conn).unwrap_or_default()).into_owned()
    }
}
