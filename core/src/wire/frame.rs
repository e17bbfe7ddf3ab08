//! The binary frame shared by every binary protocol (mesh, RTT, tunnel, punch):
//!
//! ```text
//!  0        1         2                 4                 6
//!  +--------+---------+--------+--------+--------+--------+-------------------+
//!  |  type  | subtype |  length (u16 BE) | reserved (u16 BE)| payload[length]  |
//!  +--------+---------+--------+--------+--------+--------+-------------------+
//! ```
//!
//! `reserved` must be zero: senders write 0 and receivers refuse anything else, so the field
//! can be given a meaning later without old peers misreading it. The frame layer does not
//! judge `type`: each protocol checks the types it speaks (see [`FrameType`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 6;
/// The largest payload the 16-bit length field can describe.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// The registry of frame types. Values 0–5 are the original mesh/RTT protocol's; later
/// protocols add theirs here and in `docs/PROTOCOL.md`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameType(pub u8);

impl FrameType {
    /// 0: ask a server what it knows (its peers, for discovery).
    pub const INFO_REQUEST: FrameType = FrameType(0);
    /// 1: a server announces itself, or answers an information request.
    pub const SERVER_ANNOUNCE: FrameType = FrameType(1);
    /// 2: a user registers a name.
    pub const USER_REGISTER: FrameType = FrameType(2);
    /// 3: a message from one user to another.
    pub const USER_MESSAGE: FrameType = FrameType(3);
    /// 4: an echo request, for round-trip-time measurement.
    pub const ECHO_REQUEST: FrameType = FrameType(4);
    /// 5: a user or server is leaving.
    pub const DISCONNECT: FrameType = FrameType(5);

    /// The registered name of this type, or `None` if it is not registered.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            FrameType::INFO_REQUEST => "information request",
            FrameType::SERVER_ANNOUNCE => "server announcement",
            FrameType::USER_REGISTER => "user registration",
            FrameType::USER_MESSAGE => "user message",
            FrameType::ECHO_REQUEST => "echo request",
            FrameType::DISCONNECT => "disconnect notification",
            _ => return None,
        })
    }
}

/// True when a stream that starts with `bytes` carries text, not frames: a `telnet` or
/// `nc` user's line starts with a printable ASCII character, and every frame type is kept
/// below 0x20 (the control characters) so that the first byte tells them apart. A server of
/// a binary protocol uses this to answer a text client in words before it closes.
pub fn starts_with_text(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|&b| (0x20..0x7f).contains(&b))
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({})", self.0, name),
            None => write!(f, "{}(unregistered)", self.0),
        }
    }
}

/// One decoded frame. The payload shares the receive buffer's memory (no copy).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    /// What kind of frame this is.
    pub kind: FrameType,
    /// Meaning depends on `kind` (e.g. request vs. response).
    pub subtype: u8,
    /// The payload, at most [`MAX_PAYLOAD`] bytes.
    pub payload: Bytes,
}

/// A frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The reserved header field was not zero.
    #[error("reserved header field is {0:#06x}, must be 0")]
    ReservedNotZero(u16),
    /// The declared payload length is above the receiver's cap.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Declared length.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// A datagram held more or fewer bytes than its header declared.
    #[error("datagram length mismatch: header says {declared} payload bytes, datagram has {actual}")]
    LengthMismatch {
        /// Payload length from the header.
        declared: usize,
        /// Payload bytes actually present.
        actual: usize,
    },
    /// A datagram was shorter than a header.
    #[error("truncated header: {0} bytes, need {HEADER_LEN}")]
    Truncated(usize),
}

impl Frame {
    /// A frame with the given type, subtype and payload.
    pub fn new(kind: FrameType, subtype: u8, payload: impl Into<Bytes>) -> Frame {
        Frame { kind, subtype, payload: payload.into() }
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Fails with [`FrameError::TooLong`] if the payload does not fit the length field.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        let len = u16::try_from(self.payload.len())
            .map_err(|_| FrameError::TooLong { len: self.payload.len(), max: MAX_PAYLOAD })?;
        out.reserve(self.encoded_len());
        out.put_u8(self.kind.0);
        out.put_u8(self.subtype);
        out.put_u16(len);
        out.put_u16(0);
        out.put_slice(&self.payload);
        Ok(())
    }

    /// The encoded frame as one buffer.
    pub fn to_bytes(&self) -> Result<Bytes, FrameError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes a datagram that must hold exactly one frame and nothing else.
    pub fn from_datagram(datagram: Bytes, max_payload: usize) -> Result<Frame, FrameError> {
        if datagram.len() < HEADER_LEN {
            return Err(FrameError::Truncated(datagram.len()));
        }
        let header = parse_header(&datagram[..HEADER_LEN], max_payload)?;
        let actual = datagram.len() - HEADER_LEN;
        if actual != header.len {
            return Err(FrameError::LengthMismatch { declared: header.len, actual });
        }
        Ok(Frame { kind: header.kind, subtype: header.subtype, payload: datagram.slice(HEADER_LEN..) })
    }
}

/// A frame's header, judged on its own: for a reader that takes a long payload as it
/// arrives rather than whole ([`FrameDecoder::header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What kind of frame this is.
    pub kind: FrameType,
    /// Meaning depends on `kind`.
    pub subtype: u8,
    /// Payload bytes after the header.
    pub len: usize,
}

fn parse_header(mut h: &[u8], max_payload: usize) -> Result<Header, FrameError> {
    let kind = FrameType(h.get_u8());
    let subtype = h.get_u8();
    let len = usize::from(h.get_u16());
    let reserved = h.get_u16();
    if reserved != 0 {
        return Err(FrameError::ReservedNotZero(reserved));
    }
    if len > max_payload {
        return Err(FrameError::TooLong { len, max: max_payload });
    }
    Ok(Header { kind, subtype, len })
}

/// Incremental frame decoder for a byte stream.
///
/// Append received bytes to a `BytesMut` and call [`FrameDecoder::decode`] until it returns
/// `Ok(None)`. The header is validated as soon as its six bytes are in, so a bad length or
/// reserved field is refused before any payload is buffered: the buffer never holds more
/// than one header plus `max_payload` bytes of a frame in progress.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_payload: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(MAX_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `max_payload` (clamped to [`MAX_PAYLOAD`]).
    pub fn new(max_payload: usize) -> FrameDecoder {
        FrameDecoder { max_payload: max_payload.min(MAX_PAYLOAD) }
    }

    /// The payload cap in force.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The header at the start of `buf`, checked as [`decode`](FrameDecoder::decode) would;
    /// `Ok(None)` while `buf` holds fewer than [`HEADER_LEN`] bytes.
    pub fn header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        match buf.get(..HEADER_LEN) {
            Some(header) => parse_header(header, self.max_payload).map(Some),
            None => Ok(None),
        }
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. After an error the stream is out of sync:
    /// report it and close the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = parse_header(&buf[..HEADER_LEN], self.max_payload)?;
        if buf.len() < HEADER_LEN + header.len {
            buf.reserve(HEADER_LEN + header.len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(header.len).freeze();
        Ok(Some(Frame { kind: header.kind, subtype: header.subtype, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_layout() {
        let frame = Frame::new(FrameType::USER_MESSAGE, 7, &b"hi"[..]);
        assert_eq!(&frame.to_bytes().unwrap()[..], &[3, 7, 0, 2, 0, 0, b'h', b'i']);
    }

    #[test]
    fn text_is_told_from_frames_by_its_first_byte() {
        assert!(starts_with_text(b"hello\r\n"));
        assert!(starts_with_text(b"J"));
        assert!(!starts_with_text(b""));
        let registered = (0..=u8::MAX).map(FrameType).filter(|t| t.name().is_some());
        use crate::wire::{punch, tunnel};
        let others = [
            tunnel::AUTH,
            tunnel::STREAM_OPEN,
            tunnel::STREAM_DATA,
            tunnel::STREAM_WINDOW,
            tunnel::STREAM_CLOSE,
            tunnel::HEARTBEAT,
            punch::RENDEZVOUS,
            punch::RELAY,
            punch::PEER,
        ];
        for kind in registered.chain(others) {
            let frame = Frame::new(kind, 0, &b"x"[..]).to_bytes().unwrap();
            assert!(!starts_with_text(&frame), "frame type {kind:?} reads as text");
        }
    }

    #[test]
    fn decodes_across_partial_arrivals() {
        let wire = Frame::new(FrameType::ECHO_REQUEST, 1, &b"ping"[..]).to_bytes().unwrap();
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            assert_eq!(dec.decode(&mut buf).unwrap(), None, "frame complete too early at {i}");
            buf.put_u8(*byte);
        }
        let frame = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.kind, FrameType::ECHO_REQUEST);
        assert_eq!(&frame.payload[..], b"ping");
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_bad_headers_before_buffering_payload() {
        let mut dec = FrameDecoder::new(10);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 11, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::TooLong { len: 11, max: 10 }));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0, 1][..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::ReservedNotZero(1)));
    }

    #[test]
    fn datagram_must_hold_exactly_one_frame() {
        let wire = Frame::new(FrameType(40), 0, &b"abc"[..]).to_bytes().unwrap();
        assert_eq!(Frame::from_datagram(wire.clone(), MAX_PAYLOAD).unwrap().payload, Bytes::from("abc"));
        let mut long = BytesMut::from(&wire[..]);
        long.put_u8(0);
        assert_eq!(
            Frame::from_datagram(long.freeze(), MAX_PAYLOAD),
            Err(FrameError::LengthMismatch { declared: 3, actual: 4 })
        );
        assert_eq!(Frame::from_datagram(Bytes::from_static(&[1, 2]), MAX_PAYLOAD), Err(FrameError::Truncated(2)));
    }

    #[test]
    fn oversized_payload_is_refused_on_encode() {
        let frame = Frame::new(FrameType(0), 0, vec![0u8; MAX_PAYLOAD + 1]);
        assert!(matches!(frame.encode(&mut BytesMut::new()), Err(FrameError::TooLong { .. })));
    }
}
