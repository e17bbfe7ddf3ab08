//! Tunnel messages against the spec: [`check_tunnel_frame`] judges any frame twice, once
//! with [`TunnelMsg::decode`] and once with [`spec_verdict`], an independent reading of
//! `docs/PROTOCOL.md` §3 (its numbers are the spec's, not the code's constants, so a
//! renumbering on one side is caught), and asserts they agree; an accepted frame must
//! re-encode to exactly its bytes.
//!
//! [`CarrierReader`] reads one direction of a carrier with those checks, for the
//! [`Book`](super::book::Book).

use bytes::{Bytes, BytesMut};
use switchyard_core::wire::frame::{Frame, HEADER_LEN};
use switchyard_core::wire::tunnel::{CarrierError, TunnelMsg, TunnelMsgError, MAX_REASON, STREAM_DATA};
use switchyard_core::wire::FrameDecoder;

/// Body of the `tunnel_msg` target: the input is a stream of frames; each whole frame is
/// judged by [`check_tunnel_frame`]. Frame decoding itself is `frame_stream`'s business.
pub fn fuzz_tunnel_msg(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut decoder = FrameDecoder::default();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let _ = check_tunnel_frame(frame);
    }
}

/// What the spec says of a frame: a message, or which rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid message.
    Valid,
    /// Not a tunnel type and subtype.
    UnknownKind,
    /// A payload length the message cannot have.
    BadLength,
    /// A route that is not 0–32 bytes of printable ASCII without spaces.
    BadRoute,
    /// A reason that is not UTF-8 or is over 256 bytes.
    BadReason,
    /// A `Data` frame with a stream id and no bytes.
    EmptyData,
    /// An `Open` address whose family byte is not 4 or 6.
    BadAddress,
}

impl Verdict {
    fn of(error: &TunnelMsgError) -> Verdict {
        match error {
            TunnelMsgError::UnknownKind { .. } => Verdict::UnknownKind,
            TunnelMsgError::BadLength { .. } => Verdict::BadLength,
            TunnelMsgError::BadRoute => Verdict::BadRoute,
            TunnelMsgError::BadReason => Verdict::BadReason,
            TunnelMsgError::EmptyData => Verdict::EmptyData,
            TunnelMsgError::BadAddress(_) => Verdict::BadAddress,
        }
    }
}

/// The spec's verdict on `frame` (`docs/PROTOCOL.md` §3.2–3.4 and §3.6).
///
/// Routes: the spec says "ASCII"; the code takes printable ASCII without space (0x21–0x7E),
/// which is what a route name in a `--route` flag can be. That narrower reading is the one
/// checked.
pub fn spec_verdict(frame: &Frame) -> Verdict {
    let p = &frame.payload[..];
    let exactly = |n: usize| if p.len() == n { Verdict::Valid } else { Verdict::BadLength };
    let reason = |r: &[u8]| {
        if r.len() <= MAX_REASON && std::str::from_utf8(r).is_ok() {
            Verdict::Valid
        } else {
            Verdict::BadReason
        }
    };
    match (frame.kind.0, frame.subtype) {
        (16, 0) => exactly(1 + 32),
        (16, 1) => exactly(32 + 32),
        (16, 2) => exactly(32),
        (16, 3) => exactly(0),
        (16, 4) => reason(p),
        (17, 0) if p.len() < 4 => Verdict::BadLength,
        (17, 0) => route(&p[4..]),
        (17, 1) => open_with_addrs(p).unwrap_or_else(|verdict| verdict),
        (18, 0) if p.len() < 4 => Verdict::BadLength,
        (18, 0) if p.len() == 4 => Verdict::EmptyData,
        (18, 0) => Verdict::Valid,
        (19, 0) => exactly(4 + 4),
        (20, 0) => exactly(4),
        (20, 1 | 2) if p.len() < 4 => Verdict::BadLength,
        (20, 1 | 2) => reason(&p[4..]),
        (21, 0 | 1) => exactly(8),
        (22, 0 | 1) => exactly(2),
        (22, 2) if p.len() < 2 => Verdict::BadLength,
        (22, 2) => reason(&p[2..]),
        _ => Verdict::UnknownKind,
    }
}

/// The spec's verdict on the payload of an `Open` with addresses: stream u32, two addrs
/// (family 4 or 6, the address, port u16), then the route.
fn open_with_addrs(p: &[u8]) -> Result<Verdict, Verdict> {
    let mut at = 4;
    for _ in 0..2 {
        let size = match p.get(at) {
            None => return Err(Verdict::BadLength),
            Some(4) => 4,
            Some(6) => 16,
            Some(_) => return Err(Verdict::BadAddress),
        };
        at += 1 + size + 2;
    }
    Ok(route(p.get(at..).ok_or(Verdict::BadLength)?))
}

/// The spec's verdict on a route: 0–32 bytes of printable ASCII without spaces.
fn route(r: &[u8]) -> Verdict {
    if r.len() <= 32 && r.iter().all(|b| (0x21..=0x7e).contains(b)) {
        Verdict::Valid
    } else {
        Verdict::BadRoute
    }
}

/// Decodes `frame` as a tunnel message and checks the result against [`spec_verdict`]; a
/// message must re-encode to exactly the frame's bytes. Panics, with the frame, on any
/// disagreement.
///
/// Catches a decoder that reads a field at the wrong offset or width (the re-encoding
/// differs), accepts a payload of the wrong length, lets a non-UTF-8 reason or a bad route
/// through, or refuses a valid message.
pub fn check_tunnel_frame(frame: Frame) -> Result<TunnelMsg, TunnelMsgError> {
    let wire = frame.to_bytes().expect("a decoded frame re-encodes");
    let verdict = spec_verdict(&frame);
    let result = TunnelMsg::decode(frame.clone());
    match &result {
        Ok(msg) => {
            assert_eq!(verdict, Verdict::Valid, "{frame:?} decoded as {msg:?}, but the spec refuses it");
            assert_eq!(&msg.to_bytes()[..], &wire[..], "{msg:?} re-encodes differently from {frame:?}");
        }
        Err(error) => assert_eq!(Verdict::of(error), verdict, "{frame:?} refused with {error:?}"),
    }
    if let Err(TunnelMsgError::UnknownKind { kind, subtype }) = &result {
        assert_eq!((*kind, *subtype), (frame.kind, frame.subtype), "UnknownKind names another frame");
    }
    if let Err(TunnelMsgError::BadLength { len, .. }) = &result {
        assert_eq!(*len, frame.payload.len(), "BadLength reports the wrong length");
    }
    result
}

/// One direction of a carrier, read frame by frame as it arrives, every frame judged by
/// [`check_tunnel_frame`]. A data frame's payload is returned as it arrives (as the
/// machines hand it on), in `Data` pieces that join up to the frame's payload.
#[derive(Debug, Default)]
pub struct CarrierReader {
    inbox: BytesMut,
    decoder: FrameDecoder,
    consumed: u64,
    /// Payload bytes of the data frame at the front of `inbox` already returned.
    returned: usize,
    broken: bool,
}

/// The stream of the data frame that `inbox` begins, once its header and stream id are in.
fn data_frame_stream(decoder: &FrameDecoder, inbox: &[u8]) -> Option<u32> {
    let header = decoder.header(inbox).ok()??;
    let id: [u8; 4] = inbox.get(HEADER_LEN..HEADER_LEN + 4)?.try_into().ok()?;
    let is_data = header.kind == STREAM_DATA && header.subtype == 0 && header.len > 4;
    is_data.then(|| u32::from_be_bytes(id))
}

impl CarrierReader {
    /// Appends `bytes` and returns each message with the offset of its frame's first byte
    /// in the direction's byte stream. After the first error, which a reader of the carrier
    /// must treat as fatal, the reader stays broken and returns nothing more.
    pub fn read(&mut self, bytes: &[u8]) -> (Vec<(u64, TunnelMsg)>, Option<CarrierError>) {
        let mut msgs = Vec::new();
        if self.broken {
            return (msgs, None);
        }
        self.inbox.extend_from_slice(bytes);
        loop {
            let error = match self.decoder.decode(&mut self.inbox) {
                Ok(None) => {
                    // A data frame cut off: its payload so far.
                    if let Some(stream) = data_frame_stream(&self.decoder, &self.inbox) {
                        let have = &self.inbox[HEADER_LEN + 4..];
                        if have.len() > self.returned {
                            let piece = Bytes::copy_from_slice(&have[self.returned..]);
                            self.returned = have.len();
                            msgs.push((self.consumed, TunnelMsg::Data { stream, bytes: piece }));
                        }
                    }
                    return (msgs, None);
                }
                Ok(Some(frame)) => {
                    let start = self.consumed;
                    self.consumed += frame.encoded_len() as u64;
                    match check_tunnel_frame(frame) {
                        Ok(TunnelMsg::Data { stream, mut bytes }) => {
                            // Only what was not returned while the frame was arriving.
                            let _ = bytes.split_to(std::mem::take(&mut self.returned));
                            if !bytes.is_empty() {
                                msgs.push((start, TunnelMsg::Data { stream, bytes }));
                            }
                            continue;
                        }
                        Ok(msg) => {
                            msgs.push((start, msg));
                            continue;
                        }
                        Err(error) => CarrierError::from(error),
                    }
                }
                Err(error) => CarrierError::from(error),
            };
            self.broken = true;
            return (msgs, Some(error));
        }
    }

    /// True once the direction held something that is not a tunnel message.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}
