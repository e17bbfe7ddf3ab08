//! Mesh messages against the spec: [`check_mesh_frame`] judges any frame twice, once with
//! [`MeshMsg::decode`] and once with [`spec_verdict`], an independent reading of
//! `docs/PROTOCOL.md` §4 (the message table of §4.2 written down as data, each field read
//! as §4.1 says, with the spec's numbers rather than the code's constants, so a change on
//! one side is caught), and asserts they agree; an accepted frame must re-encode
//! ([`MeshMsg::to_bytes`]) to exactly its bytes.
//!
//! The fields are read by [`spec`](crate::spec), shared with the punch harness; the table,
//! the verdicts and the rules only mesh messages have are here.
//!
//! Like the rest of the harness this file depends only on `switchyard-core`, `bytes` and
//! `std`: `core/tests/mesh_props.rs` includes it with `#[path]`, and `fuzz/src/spec.rs`
//! next to it as `spec`.

use crate::spec::{self, Broken};
use bytes::BytesMut;
use switchyard_core::wire::frame::Frame;
use switchyard_core::wire::mesh::{MeshMsg, MeshMsgError};
use switchyard_core::wire::FrameDecoder;

/// Body of the `mesh_msg` target: the input is a stream of frames; each whole frame is
/// judged by [`check_mesh_frame`]. Frame decoding itself is `frame_stream`'s business.
pub fn fuzz_mesh_msg(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut decoder = FrameDecoder::default();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let _ = check_mesh_frame(frame);
    }
}

/// What the spec says of a frame: a message, or which rule it breaks first, reading the
/// payload's fields from left to right (a field that does not fit in what is left of the
/// payload is a bad length before its content is looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid message.
    Valid,
    /// Not a mesh type and subtype (§4.2).
    UnknownKind,
    /// The payload ends inside a field, or goes on after the last one.
    BadLength,
    /// A name that is not 1–32 bytes of UTF-8 without whitespace or control characters.
    BadName,
    /// An address whose family byte (the one given) is neither 4 nor 6.
    BadAddress(u8),
    /// An address list whose count byte (the one given) is over 64.
    TooManyServers(usize),
    /// A body that is not UTF-8 or is over 4,096 bytes.
    BadBody,
    /// A reason that is not UTF-8 or is over 256 bytes.
    BadReason,
    /// A receipt status (the byte given) other than 0 and 1.
    BadStatus(u8),
}

impl Verdict {
    fn of(error: &MeshMsgError) -> Verdict {
        match *error {
            MeshMsgError::UnknownKind { .. } => Verdict::UnknownKind,
            MeshMsgError::BadLength { .. } => Verdict::BadLength,
            MeshMsgError::BadName => Verdict::BadName,
            MeshMsgError::BadAddress(family) => Verdict::BadAddress(family),
            MeshMsgError::TooManyServers(count) => Verdict::TooManyServers(count),
            MeshMsgError::BadBody => Verdict::BadBody,
            MeshMsgError::BadReason => Verdict::BadReason,
            MeshMsgError::BadStatus(status) => Verdict::BadStatus(status),
        }
    }
}

/// A field of §4.1 (and the two one-byte fields §4.2 names in place).
#[derive(Debug, Clone, Copy)]
enum Field {
    /// Length u8, then 1–32 bytes of UTF-8, no whitespace, no control characters.
    Name,
    /// Family u8 (4 or 6), 4 or 16 bytes of address, port u16.
    Addr,
    /// Count u8 (at most 64), then that many addrs.
    Addrs,
    /// 16 raw bytes.
    Id,
    /// The rest of the payload: 0–4,096 bytes of UTF-8.
    Body,
    /// The rest of the payload: UTF-8, at most 256 bytes.
    Reason,
    /// u64.
    Token,
    /// 32 raw bytes: a nonce or an HMAC-SHA256 proof.
    Proof,
    /// `Forward`'s and `ReceiptRelay`'s hop count, any u8.
    Hops,
    /// `Forward`'s attempt number, any u8.
    Attempt,
    /// `Receipt`'s and `ReceiptRelay`'s status u8: 0 delivered, 1 no such user.
    Status,
}

/// The payload layout of each message, the table of §4.2; `None` for any other type and
/// subtype.
fn layout(kind: u8, subtype: u8) -> Option<&'static [Field]> {
    use Field::*;
    Some(match (kind, subtype) {
        (0, 0) => &[],                                          // ListServers
        (1, 0) => &[Addr, Addrs],                               // Announce
        (1, 1) => &[Addrs],                                     // ServerList
        (1, 2) | (1, 4) => &[Proof],                            // PeerHello, PeerProof
        (1, 3) => &[Proof, Proof],                              // PeerChallenge
        (1, 5) => &[Reason],                                    // PeerRefused
        (2, 0) | (2, 1) => &[Name],                             // Register, Registered
        (2, 2) => &[Name, Reason],                              // RegisterRefused
        (2, 3) | (2, 4) | (2, 5) | (2, 8) => &[Name, Addr],     // Claim, ClaimOk, ClaimConflict, Takeover
        (2, 6) => &[Proof],                                     // RegisterChallenge
        (2, 7) => &[Proof, Proof],                              // RegisterProof
        (3, 0) | (3, 1) => &[Id, Name, Body],                   // Send, Deliver
        (3, 2) => &[Id, Attempt, Hops, Addr, Name, Name, Body], // Forward
        (3, 3) => &[Id, Status],                                // Receipt
        (3, 4) => &[Id, Status, Hops, Addr],                    // ReceiptRelay
        (4, 0) | (4, 1) => &[Token],                            // Ping, Pong
        (5, 0) => &[],                                          // Leave
        (5, 1) => &[Name, Addr],                                // Gone
        _ => return None,
    })
}

/// The spec's verdict on `frame` (`docs/PROTOCOL.md` §4.1–4.2).
///
/// Two readings are the checked ones where the spec leaves room: "whitespace" is Unicode's
/// `White_Space` property and "control characters" its general category `Cc` (see
/// [`spec::name_char_ok`]); and a reason over 256 bytes, which senders must cut, is
/// refused.
pub fn spec_verdict(frame: &Frame) -> Verdict {
    let Some(fields) = layout(frame.kind.0, frame.subtype) else { return Verdict::UnknownKind };
    spec::read_payload(&frame.payload, fields, read).err().unwrap_or(Verdict::Valid)
}

impl From<Broken> for Verdict {
    fn from(broken: Broken) -> Verdict {
        match broken {
            Broken::Length => Verdict::BadLength,
            Broken::Name => Verdict::BadName,
            Broken::Address(family) => Verdict::BadAddress(family),
            Broken::Count(count) => Verdict::TooManyServers(count),
        }
    }
}

/// Reads one `field` off the front of `rest`, or says which rule it breaks.
fn read(field: Field, rest: &mut &[u8]) -> Result<(), Verdict> {
    match field {
        Field::Name => spec::name(rest)?,
        Field::Addr => spec::addr(rest)?,
        Field::Addrs => spec::addrs(rest, 64)?,
        Field::Id => {
            spec::take(rest, 16)?;
        }
        Field::Token => {
            spec::take(rest, 8)?;
        }
        Field::Proof => {
            spec::take(rest, 32)?;
        }
        Field::Hops | Field::Attempt => {
            spec::byte(rest)?;
        }
        Field::Status => {
            let status = spec::byte(rest)?;
            if status > 1 {
                return Err(Verdict::BadStatus(status));
            }
        }
        Field::Body => {
            if !spec::text_within(rest, 4096) {
                return Err(Verdict::BadBody);
            }
        }
        Field::Reason => {
            if !spec::text_within(rest, 256) {
                return Err(Verdict::BadReason);
            }
        }
    }
    Ok(())
}

/// Decodes `frame` as a mesh message and checks the result against [`spec_verdict`]; a
/// message must re-encode to exactly the frame's bytes. Panics, with the frame, on any
/// disagreement.
///
/// Catches a decoder that reads a field at the wrong offset or width or a port in the
/// wrong byte order (the re-encoding differs), accepts trailing bytes, a name with a space,
/// a no-break space or a control character, an empty or 33-byte name, a list of 65 servers,
/// an unknown family or status, or a body or reason that is not UTF-8 or is too long, or
/// refuses a valid message (a 32-byte name, a 4,096-byte body, an empty body).
pub fn check_mesh_frame(frame: Frame) -> Result<MeshMsg, MeshMsgError> {
    let wire = frame.to_bytes().expect("a decoded frame re-encodes");
    let verdict = spec_verdict(&frame);
    let result = MeshMsg::decode(frame.clone());
    match &result {
        Ok(msg) => {
            assert_eq!(verdict, Verdict::Valid, "{frame:?} decoded as {msg:?}, but the spec refuses it");
            assert_eq!(&msg.to_bytes()[..], &wire[..], "{msg:?} re-encodes differently from {frame:?}");
        }
        Err(error) => assert_eq!(Verdict::of(error), verdict, "{frame:?} refused with {error:?}"),
    }
    if let Err(MeshMsgError::UnknownKind { kind, subtype }) = &result {
        assert_eq!((*kind, *subtype), (frame.kind, frame.subtype), "UnknownKind names another frame");
    }
    if let Err(MeshMsgError::BadLength { len, .. }) = &result {
        assert_eq!(*len, frame.payload.len(), "BadLength reports the wrong length");
    }
    result
}
