//! One carrier connection as both tunnel ends see it: its frame decoder, its heartbeat, and
//! the multiplexer that writes to it.

use crate::id::ConnId;
use crate::machine::OutputQueue;
use crate::time::Instant;
use crate::tunnel::mux::{Mux, MuxConfig};
use crate::wire::frame::FrameDecoder;
use crate::wire::tunnel::{CarrierError, TunnelMsg};
use bytes::BytesMut;
use std::time::Duration;

/// Heartbeat timing of a carrier.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    /// Send a `Ping` after this long without sending one.
    pub interval: Duration,
    /// Declare the carrier dead after this long without receiving anything.
    pub dead_after: Duration,
}

impl Default for HeartbeatConfig {
    /// A ping every 2 s, dead after 8 s of silence: a dead carrier is noticed within 10 s
    /// even when the last ping was just sent.
    fn default() -> Self {
        HeartbeatConfig { interval: Duration::from_secs(2), dead_after: Duration::from_secs(8) }
    }
}

/// What a carrier's timer asks of its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing to do.
    Alive,
    /// Nothing heard for `dead_after`: close the carrier.
    Dead,
}

/// A carrier connection: framing, heartbeat and multiplexer.
#[derive(Debug)]
pub struct Carrier {
    /// The stream multiplexer (also the carrier's only writer).
    pub mux: Mux,
    inbox: BytesMut,
    decoder: FrameDecoder,
    heartbeat: HeartbeatConfig,
    last_heard: Instant,
    next_ping: Instant,
    pings: u64,
}

impl Carrier {
    /// A carrier on `conn`, just opened at `now`.
    pub fn new(conn: ConnId, now: Instant, heartbeat: HeartbeatConfig, mux: MuxConfig) -> Carrier {
        Carrier {
            mux: Mux::new(conn, mux),
            inbox: BytesMut::new(),
            decoder: FrameDecoder::default(),
            heartbeat,
            last_heard: now,
            next_ping: now + heartbeat.interval,
            pings: 0,
        }
    }

    /// The carrier connection.
    pub fn conn(&self) -> ConnId {
        self.mux.carrier()
    }

    /// Takes bytes received on the carrier; read the messages with [`Carrier::next_message`].
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) {
        self.last_heard = now;
        self.inbox.extend_from_slice(bytes);
    }

    /// The next complete message, if any. After an error the carrier must be closed.
    pub fn next_message(&mut self) -> Option<Result<TunnelMsg, CarrierError>> {
        match self.decoder.decode(&mut self.inbox) {
            Ok(Some(frame)) => Some(TunnelMsg::decode(frame).map_err(CarrierError::from)),
            Ok(None) => None,
            Err(error) => Some(Err(error.into())),
        }
    }

    /// When the heartbeat needs attention.
    pub fn deadline(&self) -> Instant {
        self.next_ping.min(self.last_heard + self.heartbeat.dead_after)
    }

    /// Runs the heartbeat at `now`: pings when due, and reports a silent carrier as dead.
    pub fn on_timeout<E>(&mut self, now: Instant, out: &mut OutputQueue<E>) -> Liveness {
        if now >= self.last_heard + self.heartbeat.dead_after {
            return Liveness::Dead;
        }
        if now >= self.next_ping {
            self.pings += 1;
            self.mux.send(&TunnelMsg::Ping { token: self.pings }, out);
            self.next_ping = now + self.heartbeat.interval;
        }
        Liveness::Alive
    }

    /// Answers a `Ping`.
    pub fn pong<E>(&mut self, token: u64, out: &mut OutputQueue<E>) {
        self.mux.send(&TunnelMsg::Pong { token }, out);
    }
}
