//! One carrier connection as both tunnel ends see it: its frame decoder, its heartbeat, and
//! the multiplexer that writes to it.

use crate::id::ConnId;
use crate::machine::OutputQueue;
use crate::time::Instant;
use crate::tunnel::mux::{Mux, MuxConfig};
use crate::wire::frame::{FrameDecoder, HEADER_LEN};
use crate::wire::tunnel::{CarrierError, TunnelMsg};
use bytes::BytesMut;
use std::collections::VecDeque;
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
///
/// **Receiving.** Each complete frame of a read is copied into a buffer of its own exact
/// size; only a frame split across reads waits in `inbox`. A data frame's payload is then
/// handed on (to a connection's write queue) without another copy, and freeing it frees
/// exactly its buffer. Accumulating every read in one growing buffer instead kept that
/// buffer shared with payloads still queued, so each read reallocated it, often above
/// the allocator's mmap threshold: page faults and `munmap`s on every read in bulk
/// transfers.
#[derive(Debug)]
pub struct Carrier {
    /// The stream multiplexer (also the carrier's only writer).
    pub mux: Mux,
    /// Complete frames received and not yet decoded, each in its own buffer.
    frames: VecDeque<BytesMut>,
    /// The start of a frame whose end has not arrived yet.
    inbox: BytesMut,
    decoder: FrameDecoder,
    heartbeat: HeartbeatConfig,
    last_heard: Instant,
    next_ping: Instant,
    pings: u64,
}

/// Bytes a frame's whole encoding takes, from its header at the start of `buf`; 0 when
/// `buf` does not hold a whole header yet.
fn frame_len(buf: &[u8]) -> usize {
    match buf.get(2..4) {
        Some(&[hi, lo]) if buf.len() >= HEADER_LEN => HEADER_LEN + usize::from(u16::from_be_bytes([hi, lo])),
        _ => 0,
    }
}

/// Bytes still to arrive before `partial`, the start of one frame, holds the whole header
/// (when it does not yet) or the whole frame.
fn missing(partial: &[u8]) -> usize {
    match frame_len(partial) {
        0 => HEADER_LEN - partial.len(),
        len => len.saturating_sub(partial.len()),
    }
}

impl Carrier {
    /// A carrier on `conn`, just opened at `now`.
    pub fn new(conn: ConnId, now: Instant, heartbeat: HeartbeatConfig, mux: MuxConfig) -> Carrier {
        Carrier {
            mux: Mux::new(conn, mux),
            frames: VecDeque::new(),
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

    /// Takes bytes received on the carrier; read the messages with [`Carrier::next_message`]
    /// (all of them, before the next `receive`).
    pub fn receive(&mut self, now: Instant, mut bytes: &[u8]) {
        self.last_heard = now;
        // First finish the frame an earlier read began: its header, then its payload.
        while !self.inbox.is_empty() && !bytes.is_empty() {
            let take = missing(&self.inbox).min(bytes.len());
            self.inbox.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if missing(&self.inbox) == 0 {
                self.frames.push_back(self.inbox.split());
            }
        }
        // Then every whole frame of this read, each copied once into a buffer of its size.
        loop {
            let len = frame_len(bytes);
            if len == 0 || len > bytes.len() {
                break;
            }
            self.frames.push_back(BytesMut::from(&bytes[..len]));
            bytes = &bytes[len..];
        }
        // A frame cut off by the end of the read waits for the rest. The decoder judges its
        // header as soon as it is complete, before more of the payload is buffered.
        self.inbox.extend_from_slice(bytes);
    }

    /// The next complete message, if any. After an error the carrier must be closed.
    pub fn next_message(&mut self) -> Option<Result<TunnelMsg, CarrierError>> {
        let buf = match self.frames.front_mut() {
            Some(frame) => frame,
            None => &mut self.inbox,
        };
        let decoded = self.decoder.decode(buf);
        if matches!(decoded, Ok(Some(_))) && self.frames.front().is_some_and(BytesMut::is_empty) {
            self.frames.pop_front();
        }
        match decoded {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn carrier() -> Carrier {
        let conn = crate::id::ConnIds::new(0).next();
        Carrier::new(conn, Instant::ZERO, HeartbeatConfig::default(), MuxConfig::default())
    }

    fn messages() -> Vec<TunnelMsg> {
        vec![
            TunnelMsg::Data { stream: 1, bytes: Bytes::from(vec![7u8; 65_531]) },
            TunnelMsg::Window { stream: 1, increment: 1 << 20 },
            TunnelMsg::Data { stream: 2, bytes: Bytes::from_static(b"hi") },
            TunnelMsg::Ping { token: 9 },
            TunnelMsg::Data { stream: 3, bytes: Bytes::from(vec![1u8; 3000]) },
        ]
    }

    /// Every message comes out whole and in order however the reads cut the stream.
    #[test]
    fn decodes_the_same_whatever_the_read_sizes() {
        let wire: Vec<u8> = messages().iter().flat_map(|m| m.to_bytes().to_vec()).collect();
        for read in [1, 5, 6, 7, 1000, 65_536, 65_537, wire.len()] {
            let mut carrier = carrier();
            let mut got = Vec::new();
            for chunk in wire.chunks(read) {
                carrier.receive(Instant::ZERO, chunk);
                while let Some(msg) = carrier.next_message() {
                    got.push(msg.unwrap());
                }
            }
            assert_eq!(got, messages(), "reads of {read} bytes");
            assert!(carrier.frames.is_empty() && carrier.inbox.is_empty());
        }
    }

    /// A bad header is refused as soon as it is complete, not once its payload arrived.
    #[test]
    fn refuses_a_bad_header_before_its_payload() {
        let mut carrier = carrier();
        carrier.receive(Instant::ZERO, &[18, 0, 0xff, 0xff, 0, 1, 0, 0]);
        assert!(matches!(carrier.next_message(), Some(Err(_))));
    }
}
