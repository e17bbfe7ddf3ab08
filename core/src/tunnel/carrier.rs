//! One carrier connection as both tunnel ends see it: its frame decoder, its heartbeat, and
//! the multiplexer that writes to it.

use crate::chunk_queue::keep;
use crate::id::ConnId;
use crate::machine::OutputQueue;
use crate::time::Instant;
use crate::tunnel::mux::{Mux, MuxConfig};
use crate::wire::frame::{FrameDecoder, HEADER_LEN};
use crate::wire::tunnel::{CarrierError, StreamId, TunnelMsg, STREAM_DATA};
use bytes::{Buf, BytesMut};
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
/// **Receiving.** Each read is decoded where it lies. A data frame's payload is handed on
/// (to its stream's connection) as slices of the read, a piece per read it spans, so
/// relayed bytes are never copied between the socket read and the write; pieces under
/// [`COPY_BELOW`](crate::chunk_queue::COPY_BELOW) are copied, so that small ones kept for a
/// slow reader do not hold a read arena each. Only the start of a frame that a read cut
/// off is copied, and then only up to its data (a data frame's 10-byte prefix, or a
/// control frame whole), so the carrier never buffers more than one control frame.
#[derive(Debug)]
pub struct Carrier {
    /// The stream multiplexer (also the carrier's only writer).
    pub mux: Mux,
    /// The latest read, from where decoding has got to.
    rest: BytesMut,
    /// The start of a frame that a read cut off, until it is complete: a header, a data
    /// frame's prefix, or a control frame.
    inbox: BytesMut,
    /// The data frame whose payload is arriving: its stream and the bytes still to come.
    data: Option<(StreamId, usize)>,
    decoder: FrameDecoder,
    heartbeat: HeartbeatConfig,
    last_heard: Instant,
    next_ping: Instant,
    pings: u64,
}

/// What of a data frame is read before its payload: the header and the stream id.
const DATA_PREFIX: usize = HEADER_LEN + 4;

impl Carrier {
    /// A carrier on `conn`, just opened at `now`.
    pub fn new(conn: ConnId, now: Instant, heartbeat: HeartbeatConfig, mux: MuxConfig) -> Carrier {
        Carrier {
            mux: Mux::new(conn, mux),
            rest: BytesMut::new(),
            inbox: BytesMut::new(),
            data: None,
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
    pub fn receive(&mut self, now: Instant, bytes: BytesMut) {
        self.last_heard = now;
        debug_assert!(self.rest.is_empty(), "the previous read's messages were not all taken");
        self.rest = bytes;
    }

    /// The next message, if any. A data frame comes as one `Data` message per read it spans
    /// (each at most the frame's payload), in order. After an error the carrier must be
    /// closed.
    pub fn next_message(&mut self) -> Option<Result<TunnelMsg, CarrierError>> {
        if let Some((stream, left)) = self.data {
            if self.rest.is_empty() {
                return None;
            }
            let piece = self.rest.split_to(left.min(self.rest.len()));
            self.data = (left > piece.len()).then(|| (stream, left - piece.len()));
            return Some(Ok(TunnelMsg::Data { stream, bytes: keep(piece) }));
        }
        // The header is judged as soon as it is complete, before any payload is buffered.
        let header: [u8; HEADER_LEN] = self.peek(HEADER_LEN)?.try_into().ok()?;
        let header = match self.decoder.header(&header) {
            Ok(Some(header)) => header,
            Ok(None) => return None,
            Err(error) => return Some(Err(error.into())),
        };
        let is_data = header.kind == STREAM_DATA && header.subtype == 0 && header.len > 4;
        let mut frame = self.gather(if is_data { DATA_PREFIX } else { HEADER_LEN + header.len })?;
        if is_data {
            frame.advance(HEADER_LEN);
            self.data = Some((frame.get_u32(), header.len - 4));
            return self.next_message();
        }
        match self.decoder.decode(&mut frame) {
            Ok(Some(frame)) => Some(TunnelMsg::decode(frame).map_err(CarrierError::from)),
            // `gather` returned the whole frame.
            Ok(None) => None,
            Err(error) => Some(Err(error.into())),
        }
    }

    /// The first `want` bytes of the frame being read, left in place: in the read itself if
    /// no earlier read began the frame and this one holds them, else copied into the inbox
    /// (as far as the read goes). `None` until all `want` have arrived.
    fn peek(&mut self, want: usize) -> Option<&[u8]> {
        if self.inbox.is_empty() && self.rest.len() >= want {
            return Some(&self.rest[..want]);
        }
        let take = want.saturating_sub(self.inbox.len()).min(self.rest.len());
        self.inbox.extend_from_slice(&self.rest[..take]);
        self.rest.advance(take);
        self.inbox.get(..want)
    }

    /// The next `want` bytes of the frame being read as one buffer, taken (see
    /// [`Carrier::peek`]).
    fn gather(&mut self, want: usize) -> Option<BytesMut> {
        self.peek(want)?;
        Some(if self.inbox.is_empty() { self.rest.split_to(want) } else { self.inbox.split() })
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

    /// Consecutive `Data` pieces of one stream joined, as a reader of the stream sees them.
    fn joined(messages: Vec<TunnelMsg>) -> Vec<TunnelMsg> {
        let mut out: Vec<TunnelMsg> = Vec::new();
        for msg in messages {
            if let (Some(TunnelMsg::Data { stream: last, bytes: kept }), TunnelMsg::Data { stream, bytes }) =
                (out.last_mut(), &msg)
            {
                if last == stream {
                    *kept = [&kept[..], &bytes[..]].concat().into();
                    continue;
                }
            }
            out.push(msg);
        }
        out
    }

    /// Every message comes out in order however the reads cut the stream; a data frame may
    /// come in pieces, which join up to its payload.
    #[test]
    fn decodes_the_same_whatever_the_read_sizes() {
        let wire: Vec<u8> = messages().iter().flat_map(|m| m.to_bytes().to_vec()).collect();
        for read in [1, 5, 6, 7, 9, 10, 11, 1000, 65_536, 65_537, wire.len()] {
            let mut carrier = carrier();
            let mut got = Vec::new();
            for chunk in wire.chunks(read) {
                carrier.receive(Instant::ZERO, BytesMut::from(chunk));
                while let Some(msg) = carrier.next_message() {
                    got.push(msg.unwrap());
                }
            }
            assert_eq!(joined(got), messages(), "reads of {read} bytes");
            assert!(carrier.rest.is_empty() && carrier.inbox.is_empty() && carrier.data.is_none());
        }
    }

    /// A data payload that a read holds whole reaches the multiplexer as a slice of the
    /// read, not a copy.
    #[test]
    fn a_data_payload_is_a_slice_of_the_read() {
        let msg = TunnelMsg::Data { stream: 4, bytes: Bytes::from(vec![5u8; 10_000]) };
        let read = BytesMut::from(&msg.to_bytes()[..]);
        let payload_at = read[DATA_PREFIX..].as_ptr();
        let mut carrier = carrier();
        carrier.receive(Instant::ZERO, read);
        match carrier.next_message() {
            Some(Ok(TunnelMsg::Data { stream: 4, bytes })) => {
                assert_eq!(bytes.len(), 10_000);
                assert_eq!(bytes.as_ptr(), payload_at, "the payload was copied");
            }
            other => panic!("expected the data, got {other:?}"),
        }
        assert!(carrier.next_message().is_none());
    }

    /// A bad header is refused as soon as it is complete, not once its payload arrived.
    #[test]
    fn refuses_a_bad_header_before_its_payload() {
        let mut carrier = carrier();
        carrier.receive(Instant::ZERO, BytesMut::from(&[18, 0, 0xff, 0xff, 0, 1, 0, 0][..]));
        assert!(matches!(carrier.next_message(), Some(Err(_))));
    }
}
