//! Punch datagrams against the spec: [`check_punch_datagram`] judges any datagram twice,
//! once with [`PunchMsg::from_datagram`] and once with [`spec_verdict`], an independent
//! reading of the frame (`docs/PROTOCOL.md` §2) and of the message table in the module
//! documentation of `core/src/wire/punch.rs` (written down as data here, each field read as
//! §4.1 says, with the spec's numbers rather than the code's constants, so a change on one
//! side is caught), and asserts they agree; an accepted datagram must re-encode
//! ([`PunchMsg::to_bytes`]) to exactly its bytes.
//!
//! The fields are read by [`spec`](crate::spec), shared with the mesh harness; the table,
//! the verdicts and the rules only punch datagrams have are here.
//!
//! Like the rest of the harness this file depends only on `switchyard-core`, `bytes` and
//! `std`: `core/tests/punch_props.rs` includes it with `#[path]`, and `fuzz/src/spec.rs`
//! next to it as `spec`.

use crate::spec::{self, Broken};
use bytes::Bytes;
use switchyard_core::wire::frame::FrameError;
use switchyard_core::wire::punch::{PunchDatagramError, PunchMsg, PunchMsgError};

/// The largest valid punch datagram, by the spec's numbers: a `RelayTo` with a 6-byte
/// header, a 16-byte token, two 32-byte ids with their length bytes and a 1,100-byte inner
/// datagram. Receivers may refuse a datagram that says it is longer before decoding it.
pub const LARGEST_DATAGRAM: usize = 6 + 16 + 2 * 33 + 1100;

/// Body of the `punch_msg` target: one datagram, judged by [`check_punch_datagram`].
///
/// Input: one mode byte, then the datagram. An odd mode passes the datagram as it is; an
/// even one first sets its length field to the length of what follows the header, so the
/// fuzzer reaches the message layer without having to solve the frame's length.
pub fn fuzz_punch_msg(data: &[u8]) {
    let Some((&mode, datagram)) = data.split_first() else { return };
    let mut datagram = datagram.to_vec();
    if mode % 2 == 0 && datagram.len() >= 6 {
        let len = u16::try_from(datagram.len() - 6).unwrap_or(u16::MAX);
        datagram[2..4].copy_from_slice(&len.to_be_bytes());
    }
    let _ = check_punch_datagram(&datagram);
}

/// What the spec says of a datagram: a message, or which rule it breaks first, reading the
/// header, then the payload's fields from left to right (a field that does not fit in what
/// is left of the payload is a bad length before its content is looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid message.
    Valid,
    /// Shorter than the 6-byte header (the length given).
    Truncated(usize),
    /// A header whose reserved field (the value given) is not zero.
    ReservedNotZero(u16),
    /// A datagram that is not exactly `6 + length` bytes.
    LengthMismatch {
        /// The header's length field.
        declared: usize,
        /// The bytes after the header.
        actual: usize,
    },
    /// Not a punch type and subtype (24: 0–8, 25: 0–1, 26: 0–3).
    UnknownKind,
    /// The payload ends inside a field, or goes on after the last one.
    BadLength,
    /// An id that is not 1–32 bytes of UTF-8 without whitespace or control characters.
    BadName,
    /// An address whose family byte (the one given) is neither 4 nor 6.
    BadAddress(u8),
    /// A private endpoint list whose count byte (the one given) is over 8.
    TooManyEndpoints(usize),
    /// A body that is not UTF-8 or is over 1,024 bytes.
    BadBody,
    /// A reason that is not UTF-8 or is over 200 bytes.
    BadReason,
    /// A refusal code byte (the one given) over 4.
    BadCode(u8),
    /// A leave reason byte (the one given) over 3.
    BadLeaveReason(u8),
    /// An inner datagram over 1,100 bytes (its length given).
    InnerTooLong(usize),
}

impl Verdict {
    fn of(error: &PunchDatagramError) -> Verdict {
        match *error {
            PunchDatagramError::Frame(FrameError::Truncated(n)) => Verdict::Truncated(n),
            PunchDatagramError::Frame(FrameError::ReservedNotZero(r)) => Verdict::ReservedNotZero(r),
            PunchDatagramError::Frame(FrameError::LengthMismatch { declared, actual }) => {
                Verdict::LengthMismatch { declared, actual }
            }
            PunchDatagramError::Frame(FrameError::TooLong { .. }) => {
                unreachable!("an over-cap length is judged apart (see check_punch_datagram)")
            }
            PunchDatagramError::Message(ref error) => match *error {
                PunchMsgError::UnknownKind { .. } => Verdict::UnknownKind,
                PunchMsgError::BadLength { .. } => Verdict::BadLength,
                PunchMsgError::BadName => Verdict::BadName,
                PunchMsgError::BadAddress(family) => Verdict::BadAddress(family),
                PunchMsgError::TooManyEndpoints(count) => Verdict::TooManyEndpoints(count),
                PunchMsgError::BadBody => Verdict::BadBody,
                PunchMsgError::BadReason => Verdict::BadReason,
                PunchMsgError::BadCode(code) => Verdict::BadCode(code),
                PunchMsgError::BadLeaveReason(why) => Verdict::BadLeaveReason(why),
                PunchMsgError::InnerTooLong(len) => Verdict::InnerTooLong(len),
            },
        }
    }
}

/// A field of §4.1, or one the punch table names in place.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// Length u8, then 1–32 bytes of UTF-8, no whitespace, no control characters.
    Name,
    /// Family u8 (4 or 6), 4 or 16 bytes of address, port u16.
    Addr,
    /// Count u8 (at most 8 private endpoints), then that many addrs.
    Addrs,
    /// 16 raw bytes: a token, or a cookie.
    Token,
    /// u64 (a session, a nonce, an epoch, a sequence number).
    U64,
    /// The rest of the payload: 0–1,024 bytes of UTF-8.
    Body,
    /// The rest of the payload: UTF-8, at most 200 bytes.
    Reason,
    /// u8, 0–4: why a request was refused.
    Code,
    /// u8, 0–3: why a peer left a session.
    Why,
    /// The rest of the payload: at most 1,100 raw bytes.
    Inner,
}

/// The payload layout of each message, the table of `core/src/wire/punch.rs`; `None` for
/// any other type and subtype.
fn layout(kind: u8, subtype: u8) -> Option<&'static [Field]> {
    use Field::*;
    Some(match (kind, subtype) {
        (24, 0) => &[Token, Token, Name, Addrs], // Register: token, cookie, …
        (24, 1) => &[Name, Addr],                // Registered
        (24, 2) => &[Name, Code, Reason],        // Refused
        (24, 3) => &[Token, Name, Name],         // Connect
        (24, 4) => &[Name, U64, Addr, Addrs],    // PeerInfo
        (24, 5) => &[Name, Reason],              // ConnectFailed
        (24, 6) => &[Token, Name],               // Unregister
        (24, 7) => &[Name, U64, Why],            // PeerLeft
        (24, 8) => &[Token, Name, Name, U64],    // Decline
        (24, 9) => &[Token],                     // Verify: the cookie
        (25, 0) => &[Token, Name, Name, Inner],  // RelayTo
        (25, 1) => &[Name, Inner],               // RelayedFrom
        (26, 0) | (26, 1) => &[U64, U64],        // Probe, ProbeAck
        (26, 2) => &[U64, U64, U64, Body],       // Data
        (26, 3) => &[U64, U64, U64],             // Ack
        _ => return None,
    })
}

/// The spec's verdict on `datagram`: the frame of §2 (exactly one frame fills a datagram),
/// then the message. The receiver's length cap is left out: see [`check_punch_datagram`].
///
/// The fields are read by the readers shared with the mesh harness ([`spec`]), so the
/// reading where the spec leaves room is the mesh's too: "whitespace" is Unicode's
/// `White_Space` property and "control characters" its general category `Cc` (see
/// [`spec::name_char_ok`]).
pub fn spec_verdict(datagram: &[u8]) -> Verdict {
    if datagram.len() < 6 {
        return Verdict::Truncated(datagram.len());
    }
    let reserved = u16::from_be_bytes([datagram[4], datagram[5]]);
    if reserved != 0 {
        return Verdict::ReservedNotZero(reserved);
    }
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let actual = datagram.len() - 6;
    if declared != actual {
        return Verdict::LengthMismatch { declared, actual };
    }
    let Some(fields) = layout(datagram[0], datagram[1]) else { return Verdict::UnknownKind };
    spec::read_payload(&datagram[6..], fields, read).err().unwrap_or(Verdict::Valid)
}

impl From<Broken> for Verdict {
    fn from(broken: Broken) -> Verdict {
        match broken {
            Broken::Length => Verdict::BadLength,
            Broken::Name => Verdict::BadName,
            Broken::Address(family) => Verdict::BadAddress(family),
            Broken::Count(count) => Verdict::TooManyEndpoints(count),
        }
    }
}

/// Reads one `field` off the front of `rest`, or says which rule it breaks.
fn read(field: Field, rest: &mut &[u8]) -> Result<(), Verdict> {
    match field {
        Field::Name => spec::name(rest)?,
        Field::Addr => spec::addr(rest)?,
        Field::Addrs => spec::addrs(rest, 8)?,
        Field::Token => {
            spec::take(rest, 16)?;
        }
        Field::U64 => {
            spec::take(rest, 8)?;
        }
        Field::Body => {
            if !spec::text_within(rest, 1024) {
                return Err(Verdict::BadBody);
            }
        }
        Field::Code => {
            let code = spec::byte(rest)?;
            if code > 4 {
                return Err(Verdict::BadCode(code));
            }
        }
        Field::Why => {
            let why = spec::byte(rest)?;
            if why > 3 {
                return Err(Verdict::BadLeaveReason(why));
            }
        }
        Field::Reason => {
            if !spec::text_within(rest, 200) {
                return Err(Verdict::BadReason);
            }
        }
        Field::Inner => {
            let inner = std::mem::take(rest);
            if inner.len() > 1100 {
                return Err(Verdict::InnerTooLong(inner.len()));
            }
        }
    }
    Ok(())
}

/// Decodes `datagram` with [`PunchMsg::from_datagram`] and checks the result against
/// [`spec_verdict`]; a message must re-encode to exactly the datagram. Panics, with the
/// datagram, on any disagreement.
///
/// One refusal is judged apart: a header whose length is over the decoder's cap
/// (`FrameError::TooLong`) is justified only when the datagram it announces is over
/// [`LARGEST_DATAGRAM`] (a valid message is never refused for its size) and the header
/// is otherwise sound.
///
/// Catches a decoder that panics on a short payload, reads a field at the wrong offset or
/// width or a port in the wrong byte order (the re-encoding differs), accepts trailing
/// bytes, an id with a space, a no-break space or a control character, an empty or 33-byte
/// id, nine private endpoints, an unknown family, a body over 1,024 bytes, a reason over
/// 200, an inner datagram over 1,100 or text that is not UTF-8, or refuses a valid message
/// (a 32-byte id, a 1,024-byte body, a `RelayTo` of the largest size).
pub fn check_punch_datagram(datagram: &[u8]) -> Result<PunchMsg, PunchDatagramError> {
    let verdict = spec_verdict(datagram);
    let result = PunchMsg::from_datagram(Bytes::copy_from_slice(datagram));
    let show = || format!("{datagram:02x?}");
    match &result {
        Ok(msg) => {
            assert_eq!(verdict, Verdict::Valid, "{} decoded as {msg:?}, but the spec refuses it", show());
            assert_eq!(&msg.to_bytes()[..], datagram, "{msg:?} re-encodes differently from {}", show());
            assert!(datagram.len() <= LARGEST_DATAGRAM, "{msg:?} is over the largest valid datagram");
        }
        Err(PunchDatagramError::Frame(FrameError::TooLong { len, max })) => {
            assert!(
                !matches!(verdict, Verdict::Truncated(_) | Verdict::ReservedNotZero(_)),
                "{} refused as too long, but the spec says {verdict:?}",
                show()
            );
            let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
            assert!(*len == declared && len > max, "TooLong {{ len: {len}, max: {max} }} for {}", show());
            assert!(
                6 + len > LARGEST_DATAGRAM,
                "{} refused as too long, but a valid datagram may be that long",
                show()
            );
        }
        Err(error) => assert_eq!(Verdict::of(error), verdict, "{} refused with {error:?}", show()),
    }
    if let Err(PunchDatagramError::Message(PunchMsgError::UnknownKind { kind, subtype })) = &result {
        assert_eq!((kind.0, *subtype), (datagram[0], datagram[1]), "UnknownKind names another frame");
    }
    if let Err(PunchDatagramError::Message(PunchMsgError::BadLength { len, .. })) = &result {
        assert_eq!(*len, datagram.len() - 6, "BadLength reports the wrong length");
    }
    result
}
