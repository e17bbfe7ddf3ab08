//! Messages on the tunnel carrier: authentication, stream multiplexing and heartbeats, each
//! one [`Frame`] of the shared format. Byte layouts are in `docs/PROTOCOL.md` §3.
//!
//! | type | subtype | message     | payload                                        |
//! |------|---------|-------------|------------------------------------------------|
//! | 16   | 0       | `Hello`     | version u8, nonce \[32]                        |
//! | 16   | 1       | `Challenge` | nonce \[32], proof \[32]                       |
//! | 16   | 2       | `Response`  | proof \[32]                                    |
//! | 16   | 3       | `Welcome`   | (empty)                                        |
//! | 16   | 4       | `Refused`   | reason, UTF-8                                  |
//! | 17   | 0       | `Open`      | stream u32, route (ASCII, ≤ 32 bytes)          |
//! | 17   | 1       | `Open`      | stream u32, client addr, entrance addr, route  |
//! | 18   | 0       | `Data`      | stream u32, bytes                              |
//! | 19   | 0       | `Window`    | stream u32, increment u32                      |
//! | 20   | 0       | `Fin`       | stream u32                                     |
//! | 20   | 1       | `Refuse`    | stream u32, reason UTF-8 (the open failed)     |
//! | 20   | 2       | `Reset`     | stream u32, reason UTF-8 (aborted mid-stream)  |
//! | 21   | 0 / 1   | `Ping`/`Pong` | token u64                                    |
//! | 22   | 0       | `Publish`   | port u16 (exposing end → remote)               |
//! | 22   | 1       | `Published` | port u16 (remote → exposing end)               |
//! | 22   | 2       | `PublishRefused` | port u16, reason UTF-8                    |

use crate::wire::fields::{put_addr, FieldError, Fields};
use crate::wire::frame::{Frame, FrameError, FrameType, HEADER_LEN, MAX_PAYLOAD};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::net::SocketAddr;

/// Frame type 16: carrier authentication.
pub const AUTH: FrameType = FrameType(16);
/// Frame type 17: open a stream.
pub const STREAM_OPEN: FrameType = FrameType(17);
/// Frame type 18: stream data.
pub const STREAM_DATA: FrameType = FrameType(18);
/// Frame type 19: flow-control credit.
pub const STREAM_WINDOW: FrameType = FrameType(19);
/// Frame type 20: end of a stream (orderly or not).
pub const STREAM_CLOSE: FrameType = FrameType(20);
/// Frame type 21: carrier heartbeat.
pub const HEARTBEAT: FrameType = FrameType(21);
/// Frame type 22: publishing ports (the reverse tunnel).
pub const PUBLISH: FrameType = FrameType(22);

/// The newest tunnel protocol version this code speaks: 3, which adds publishing (type 22)
/// and streams the remote end opens. A local end says the oldest version that has what it
/// needs: [`ADDRS_VERSION`] without ports to publish, this with them.
pub const VERSION: u8 = 3;
/// Version 2: local ends send each stream's client addresses in its `Open` (subtype 1).
pub const ADDRS_VERSION: u8 = 2;
/// The first version whose carriers may publish ports: [`VERSION`].
pub const PUBLISH_VERSION: u8 = 3;
/// The oldest version a remote end still admits: 1, whose local ends send `Open` without
/// addresses (subtype 0). A local end sends [`VERSION`], so a remote end that speaks only 1
/// refuses it at once, by name, rather than on its first `Open`.
pub const MIN_VERSION: u8 = 1;
/// Length of nonces and HMAC-SHA256 proofs.
pub use crate::auth::PROOF_LEN;
/// Longest route name.
pub const MAX_ROUTE: usize = 32;
/// Longest reason text; longer reasons are cut at a character boundary when encoded.
pub const MAX_REASON: usize = 256;
/// Most stream bytes one `Data` frame carries.
pub const MAX_DATA: usize = MAX_PAYLOAD - 4;

/// A stream id, never reused on one carrier. The local end chooses ids with the top bit
/// clear; the remote end (for visitors of a published port) ids with it set
/// ([`REMOTE_STREAMS`]), so both sides open streams without ever choosing the same id.
pub type StreamId = u32;

/// The bit that marks a stream id as the remote end's.
pub const REMOTE_STREAMS: StreamId = 0x8000_0000;

/// Where a stream's client connection came from and arrived at, as the local end saw it:
/// what a route with a PROXY protocol header tells its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAddrs {
    /// The client's address (the connection's peer).
    pub client: SocketAddr,
    /// The address the client connected to (the local end's listener).
    pub entrance: SocketAddr,
}

/// One message on the carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelMsg {
    /// Local → remote, first: protocol version and the local's challenge nonce.
    Hello {
        /// Protocol version.
        version: u8,
        /// Fresh random nonce.
        nonce: [u8; PROOF_LEN],
    },
    /// Remote → local: the remote's nonce, and its proof that it knows the secret.
    Challenge {
        /// Fresh random nonce.
        nonce: [u8; PROOF_LEN],
        /// HMAC over both nonces (see `tunnel::auth`).
        proof: [u8; PROOF_LEN],
    },
    /// Local → remote: the local's proof that it knows the secret.
    Response {
        /// HMAC over both nonces.
        proof: [u8; PROOF_LEN],
    },
    /// Remote → local: authenticated; streams may open.
    Welcome,
    /// Either way: authentication failed; the carrier closes.
    Refused {
        /// Why, for the logs.
        reason: String,
    },
    /// Local → remote: open `stream` to `route` (empty = the default route). Subtype 1
    /// when `addrs` is known, subtype 0 (from older local ends) when not.
    Open {
        /// The new stream.
        stream: StreamId,
        /// Route name.
        route: String,
        /// The client's connection; the reference local end always sends it.
        addrs: Option<StreamAddrs>,
    },
    /// Stream bytes, in order.
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes (1..=[`MAX_DATA`]).
        bytes: Bytes,
    },
    /// The sender may send `increment` more bytes on `stream`.
    Window {
        /// The stream.
        stream: StreamId,
        /// Extra credit.
        increment: u32,
    },
    /// The sender will send no more data on `stream` (half-close).
    Fin {
        /// The stream.
        stream: StreamId,
    },
    /// Remote → local: the stream could not be opened; the client gets `reason`.
    Refuse {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: String,
    },
    /// The stream was aborted; drop it without delivering more.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: String,
    },
    /// Heartbeat request; answer with `Pong` carrying the same token.
    Ping {
        /// Echoed back.
        token: u64,
    },
    /// Heartbeat answer.
    Pong {
        /// The token of the `Ping`.
        token: u64,
    },
    /// Exposing end → remote: listen on `port` and send its visitors to me.
    Publish {
        /// The port to publish.
        port: u16,
    },
    /// Remote → exposing end: `port` is published; its visitors arrive as streams.
    Published {
        /// The port.
        port: u16,
    },
    /// Remote → exposing end: `port` was not published.
    PublishRefused {
        /// The port.
        port: u16,
        /// Why.
        reason: String,
    },
}

/// A frame that is not a valid tunnel message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelMsgError {
    /// The frame type or subtype is not part of the tunnel protocol.
    #[error("unexpected frame type {kind:?} subtype {subtype} on a tunnel carrier")]
    UnknownKind {
        /// The frame type.
        kind: FrameType,
        /// The subtype.
        subtype: u8,
    },
    /// The payload length does not fit the message.
    #[error("{what}: payload of {len} bytes is malformed")]
    BadLength {
        /// The message.
        what: &'static str,
        /// The payload length.
        len: usize,
    },
    /// A route name is not printable ASCII or too long.
    #[error("invalid route name")]
    BadRoute,
    /// A reason is not UTF-8 or too long.
    #[error("invalid reason text")]
    BadReason,
    /// A data frame carried no bytes.
    #[error("empty data frame")]
    EmptyData,
    /// An address in an `Open` has a family byte other than 4 or 6.
    #[error("unknown address family {0} in an open")]
    BadAddress(u8),
}

impl FieldError for TunnelMsgError {
    fn bad_length(what: &'static str, len: usize) -> Self {
        TunnelMsgError::BadLength { what, len }
    }
    // The tunnel reads no name fields and no address lists: these two are never called.
    fn bad_name() -> Self {
        TunnelMsgError::BadRoute
    }
    fn bad_address(family: u8) -> Self {
        TunnelMsgError::BadAddress(family)
    }
    fn too_many_addrs(_: usize) -> Self {
        TunnelMsgError::BadLength { what: "open", len: 0 }
    }
}

/// True when `route` can be sent in an `Open`: at most [`MAX_ROUTE`] bytes of printable
/// ASCII without spaces (0x21–0x7E); empty is the default route. Configuration that names
/// routes (static forwards) checks with this before a route ever reaches the wire.
pub fn is_valid_route(route: &[u8]) -> bool {
    route.len() <= MAX_ROUTE && route.iter().all(|b| b.is_ascii_graphic())
}

fn check_route(route: &[u8]) -> Result<String, TunnelMsgError> {
    if !is_valid_route(route) {
        return Err(TunnelMsgError::BadRoute);
    }
    String::from_utf8(route.to_vec()).map_err(|_| TunnelMsgError::BadRoute)
}

fn check_reason(reason: &[u8]) -> Result<String, TunnelMsgError> {
    if reason.len() > MAX_REASON {
        return Err(TunnelMsgError::BadReason);
    }
    String::from_utf8(reason.to_vec()).map_err(|_| TunnelMsgError::BadReason)
}

fn truncated_reason(reason: &str) -> &[u8] {
    super::utf8_prefix(reason, MAX_REASON)
}

fn array(bytes: &[u8]) -> [u8; PROOF_LEN] {
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(&bytes[..PROOF_LEN]);
    out
}

/// Writes the frame header and stream id of a `Data` message carrying `len` bytes, so the
/// caller can send the payload as a separate buffer without copying it.
pub fn encode_data_header(stream: StreamId, len: usize, out: &mut BytesMut) {
    debug_assert!(len <= MAX_DATA);
    out.put_u8(STREAM_DATA.0);
    out.put_u8(0);
    out.put_u16((len + 4) as u16);
    out.put_u16(0);
    out.put_u32(stream);
}

impl TunnelMsg {
    fn kind(&self) -> (FrameType, u8) {
        match self {
            TunnelMsg::Hello { .. } => (AUTH, 0),
            TunnelMsg::Challenge { .. } => (AUTH, 1),
            TunnelMsg::Response { .. } => (AUTH, 2),
            TunnelMsg::Welcome => (AUTH, 3),
            TunnelMsg::Refused { .. } => (AUTH, 4),
            TunnelMsg::Open { addrs: None, .. } => (STREAM_OPEN, 0),
            TunnelMsg::Open { addrs: Some(_), .. } => (STREAM_OPEN, 1),
            TunnelMsg::Data { .. } => (STREAM_DATA, 0),
            TunnelMsg::Window { .. } => (STREAM_WINDOW, 0),
            TunnelMsg::Fin { .. } => (STREAM_CLOSE, 0),
            TunnelMsg::Refuse { .. } => (STREAM_CLOSE, 1),
            TunnelMsg::Reset { .. } => (STREAM_CLOSE, 2),
            TunnelMsg::Ping { .. } => (HEARTBEAT, 0),
            TunnelMsg::Pong { .. } => (HEARTBEAT, 1),
            TunnelMsg::Publish { .. } => (PUBLISH, 0),
            TunnelMsg::Published { .. } => (PUBLISH, 1),
            TunnelMsg::PublishRefused { .. } => (PUBLISH, 2),
        }
    }

    /// Appends the message, framed, to `out`.
    ///
    /// Panics only on a caller bug: a `Data` message over [`MAX_DATA`] bytes or a route
    /// over [`MAX_ROUTE`]. Reasons are cut to [`MAX_REASON`] bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut payload = BytesMut::new();
        match self {
            TunnelMsg::Hello { version, nonce } => {
                payload.put_u8(*version);
                payload.put_slice(nonce);
            }
            TunnelMsg::Challenge { nonce, proof } => {
                payload.put_slice(nonce);
                payload.put_slice(proof);
            }
            TunnelMsg::Response { proof } => payload.put_slice(proof),
            TunnelMsg::Welcome => {}
            TunnelMsg::Refused { reason } => payload.put_slice(truncated_reason(reason)),
            TunnelMsg::Open { stream, route, addrs } => {
                assert!(route.len() <= MAX_ROUTE, "route name over {MAX_ROUTE} bytes");
                payload.put_u32(*stream);
                if let Some(addrs) = addrs {
                    put_addr(&mut payload, &addrs.client);
                    put_addr(&mut payload, &addrs.entrance);
                }
                payload.put_slice(route.as_bytes());
            }
            TunnelMsg::Data { stream, bytes } => {
                encode_data_header(*stream, bytes.len(), out);
                out.put_slice(bytes);
                return;
            }
            TunnelMsg::Window { stream, increment } => {
                payload.put_u32(*stream);
                payload.put_u32(*increment);
            }
            TunnelMsg::Fin { stream } => payload.put_u32(*stream),
            TunnelMsg::Refuse { stream, reason } | TunnelMsg::Reset { stream, reason } => {
                payload.put_u32(*stream);
                payload.put_slice(truncated_reason(reason));
            }
            TunnelMsg::Ping { token } | TunnelMsg::Pong { token } => payload.put_u64(*token),
            TunnelMsg::Publish { port } | TunnelMsg::Published { port } => payload.put_u16(*port),
            TunnelMsg::PublishRefused { port, reason } => {
                payload.put_u16(*port);
                payload.put_slice(truncated_reason(reason));
            }
        }
        let (kind, subtype) = self.kind();
        Frame::new(kind, subtype, payload.freeze()).encode(out).expect("tunnel control payloads are small");
    }

    /// The message as one encoded buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + 16);
        self.encode(&mut out);
        out.freeze()
    }

    /// Parses a frame as a tunnel message. `Data` payloads share the frame's memory.
    pub fn decode(frame: Frame) -> Result<TunnelMsg, TunnelMsgError> {
        let len = frame.payload.len();
        let bad = |what| TunnelMsgError::BadLength { what, len };
        let mut p = frame.payload;
        Ok(match (frame.kind, frame.subtype) {
            (AUTH, 0) if len == 1 + PROOF_LEN => TunnelMsg::Hello { version: p[0], nonce: array(&p[1..]) },
            (AUTH, 0) => return Err(bad("hello")),
            (AUTH, 1) if len == 2 * PROOF_LEN => {
                TunnelMsg::Challenge { nonce: array(&p[..PROOF_LEN]), proof: array(&p[PROOF_LEN..]) }
            }
            (AUTH, 1) => return Err(bad("challenge")),
            (AUTH, 2) if len == PROOF_LEN => TunnelMsg::Response { proof: array(&p) },
            (AUTH, 2) => return Err(bad("response")),
            (AUTH, 3) if len == 0 => TunnelMsg::Welcome,
            (AUTH, 3) => return Err(bad("welcome")),
            (AUTH, 4) => TunnelMsg::Refused { reason: check_reason(&p)? },
            (STREAM_OPEN, 0) if len >= 4 => {
                let stream = p.get_u32();
                TunnelMsg::Open { stream, route: check_route(&p)?, addrs: None }
            }
            (STREAM_OPEN, 0) => return Err(bad("open")),
            (STREAM_OPEN, 1) => {
                let mut fields = Fields::new("open", p);
                let stream = u32::from_be_bytes(fields.array()?);
                let addrs = StreamAddrs { client: fields.addr()?, entrance: fields.addr()? };
                TunnelMsg::Open { stream, route: check_route(&fields.rest())?, addrs: Some(addrs) }
            }
            (STREAM_DATA, 0) if len > 4 => {
                let stream = p.get_u32();
                TunnelMsg::Data { stream, bytes: p }
            }
            (STREAM_DATA, 0) if len == 4 => return Err(TunnelMsgError::EmptyData),
            (STREAM_DATA, 0) => return Err(bad("data")),
            (STREAM_WINDOW, 0) if len == 8 => TunnelMsg::Window { stream: p.get_u32(), increment: p.get_u32() },
            (STREAM_WINDOW, 0) => return Err(bad("window")),
            (STREAM_CLOSE, 0) if len == 4 => TunnelMsg::Fin { stream: p.get_u32() },
            (STREAM_CLOSE, 0) => return Err(bad("fin")),
            (STREAM_CLOSE, sub @ (1 | 2)) if len >= 4 => {
                let stream = p.get_u32();
                let reason = check_reason(&p)?;
                if sub == 1 {
                    TunnelMsg::Refuse { stream, reason }
                } else {
                    TunnelMsg::Reset { stream, reason }
                }
            }
            (STREAM_CLOSE, 1 | 2) => return Err(bad("stream close")),
            (HEARTBEAT, sub @ (0 | 1)) if len == 8 => {
                let token = p.get_u64();
                if sub == 0 {
                    TunnelMsg::Ping { token }
                } else {
                    TunnelMsg::Pong { token }
                }
            }
            (HEARTBEAT, 0 | 1) => return Err(bad("heartbeat")),
            (PUBLISH, 0) if len == 2 => TunnelMsg::Publish { port: p.get_u16() },
            (PUBLISH, 1) if len == 2 => TunnelMsg::Published { port: p.get_u16() },
            (PUBLISH, 2) if len >= 2 => {
                let port = p.get_u16();
                TunnelMsg::PublishRefused { port, reason: check_reason(&p)? }
            }
            (PUBLISH, 0..=2) => return Err(bad("publish")),
            (kind, subtype) => return Err(TunnelMsgError::UnknownKind { kind, subtype }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FrameDecoder;

    fn round_trip(msg: TunnelMsg) {
        let wire = msg.to_bytes();
        let mut buf = BytesMut::from(&wire[..]);
        let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(TunnelMsg::decode(frame).unwrap(), msg);
    }

    #[test]
    fn every_message_round_trips() {
        for msg in [
            TunnelMsg::Hello { version: VERSION, nonce: [7; 32] },
            TunnelMsg::Challenge { nonce: [1; 32], proof: [2; 32] },
            TunnelMsg::Response { proof: [3; 32] },
            TunnelMsg::Welcome,
            TunnelMsg::Refused { reason: "bad secret".into() },
            TunnelMsg::Open { stream: 9, route: "9090".into(), addrs: None },
            TunnelMsg::Open { stream: 10, route: String::new(), addrs: None },
            TunnelMsg::Open {
                stream: 11,
                route: "web".into(),
                addrs: Some(StreamAddrs {
                    client: "127.0.0.77:5000".parse().unwrap(),
                    entrance: "[::1]:7090".parse().unwrap(),
                }),
            },
            TunnelMsg::Data { stream: 1, bytes: Bytes::from_static(b"abc") },
            TunnelMsg::Window { stream: 1, increment: 65536 },
            TunnelMsg::Fin { stream: 4 },
            TunnelMsg::Refuse { stream: 4, reason: "unknown route 1234".into() },
            TunnelMsg::Reset { stream: 4, reason: "target reset".into() },
            TunnelMsg::Ping { token: u64::MAX },
            TunnelMsg::Pong { token: 1 },
            TunnelMsg::Publish { port: 12345 },
            TunnelMsg::Published { port: 1 },
            TunnelMsg::PublishRefused { port: 65535, reason: "port 65535 is outside 12000-13000".into() },
            TunnelMsg::PublishRefused { port: 80, reason: String::new() },
        ] {
            round_trip(msg);
        }
    }

    #[test]
    fn data_layout_is_header_then_stream_then_bytes() {
        let wire = TunnelMsg::Data { stream: 0x01020304, bytes: Bytes::from_static(b"hi") }.to_bytes();
        assert_eq!(&wire[..], &[18, 0, 0, 6, 0, 0, 1, 2, 3, 4, b'h', b'i']);
    }

    #[test]
    fn open_with_addresses_is_stream_then_both_addrs_then_route() {
        let addrs = StreamAddrs { client: "10.0.0.7:258".parse().unwrap(), entrance: "10.0.0.1:7090".parse().unwrap() };
        let wire = TunnelMsg::Open { stream: 3, route: "web".into(), addrs: Some(addrs) }.to_bytes();
        let payload = [&[0, 0, 0, 3, 4, 10, 0, 0, 7, 1, 2, 4, 10, 0, 0, 1, 0x1b, 0xb2][..], b"web"].concat();
        assert_eq!(&wire[..6], &[17, 1, 0, payload.len() as u8, 0, 0]);
        assert_eq!(&wire[6..], &payload[..]);
    }

    #[test]
    fn publish_layouts_are_port_then_reason() {
        assert_eq!(&TunnelMsg::Publish { port: 12345 }.to_bytes()[..], &[22, 0, 0, 2, 0, 0, 0x30, 0x39]);
        assert_eq!(&TunnelMsg::Published { port: 12345 }.to_bytes()[..], &[22, 1, 0, 2, 0, 0, 0x30, 0x39]);
        let refused = TunnelMsg::PublishRefused { port: 80, reason: "no".into() }.to_bytes();
        assert_eq!(&refused[..], &[22, 2, 0, 4, 0, 0, 0, 80, b'n', b'o']);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let frame = |kind, subtype, payload: &'static [u8]| Frame::new(kind, subtype, Bytes::from_static(payload));
        assert_eq!(TunnelMsg::decode(frame(STREAM_DATA, 0, &[0, 0, 0, 1])), Err(TunnelMsgError::EmptyData));
        assert_eq!(
            TunnelMsg::decode(frame(STREAM_WINDOW, 0, &[0; 7])),
            Err(TunnelMsgError::BadLength { what: "window", len: 7 })
        );
        assert_eq!(TunnelMsg::decode(frame(STREAM_OPEN, 0, b"\0\0\0\x01a b")), Err(TunnelMsgError::BadRoute));
        let open = |payload| TunnelMsg::decode(frame(STREAM_OPEN, 1, payload));
        assert_eq!(open(b"\0\0\0\x01\x05"), Err(TunnelMsgError::BadAddress(5)));
        assert_eq!(open(b"\0\0\0\x01\x04\x7f\0\0\x01\0"), Err(TunnelMsgError::BadLength { what: "open", len: 10 }));
        assert_eq!(open(b"\0\0\0"), Err(TunnelMsgError::BadLength { what: "open", len: 3 }));
        assert!(matches!(TunnelMsg::decode(frame(FrameType(3), 0, b"")), Err(TunnelMsgError::UnknownKind { .. })));
        assert!(matches!(TunnelMsg::decode(frame(AUTH, 9, b"")), Err(TunnelMsgError::UnknownKind { .. })));
        let publish = |subtype, payload| TunnelMsg::decode(frame(PUBLISH, subtype, payload));
        assert_eq!(publish(0, b"\x30"), Err(TunnelMsgError::BadLength { what: "publish", len: 1 }));
        assert_eq!(publish(1, b"\x30\x39\x00"), Err(TunnelMsgError::BadLength { what: "publish", len: 3 }));
        assert_eq!(publish(2, b"\x30"), Err(TunnelMsgError::BadLength { what: "publish", len: 1 }));
        assert_eq!(publish(2, b"\x30\x39\xff"), Err(TunnelMsgError::BadReason));
        assert!(matches!(publish(3, b"\x30\x39"), Err(TunnelMsgError::UnknownKind { .. })));
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let reason = "é".repeat(200);
        let wire = TunnelMsg::Reset { stream: 1, reason }.to_bytes();
        let mut buf = BytesMut::from(&wire[..]);
        let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        let TunnelMsg::Reset { reason, .. } = TunnelMsg::decode(frame).unwrap() else { panic!() };
        assert_eq!(reason.len(), MAX_REASON);
    }
}

/// Frame decoding errors and message errors as one type, for carrier readers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    /// The byte stream is not framed correctly.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame is not a valid tunnel message.
    #[error(transparent)]
    Message(#[from] TunnelMsgError),
}
