//! The decoder harness shared by the fuzz targets and by `core/tests/codec_props.rs`.
//! (The tunnel's machines have theirs in [`driver`] and [`tunnel`], the mesh messages in
//! [`mesh`], the mesh server in [`mesh_server`], the punch datagrams in [`punch`] and the
//! punch machines in [`punch_rendezvous`] and [`punch_peer`], the TLS layer in [`tls`]; the
//! field reading the mesh and punch checks share is in [`spec`].)
//!
//! Each `drive_*` function feeds a byte stream to one incremental decoder in chunks, the
//! way a driver does (append what arrived, then decode until the decoder asks for more),
//! and after every call asserts the decoder's whole contract against the bytes fed so far:
//!
//! - **sound**: every item handed out is exactly what the bytes it consumed say (a frame
//!   re-encodes to those bytes; a line is the bytes before the next `\n`, less one `\r`);
//! - **complete**: when the decoder asks for more, no complete item is left in the buffer,
//!   and the buffer holds exactly the bytes not yet consumed;
//! - **bounded**: what it keeps waiting for could still be valid, so a peer cannot make it
//!   buffer more than one frame (header plus cap) or one line (cap plus `\r`);
//! - **justified**: every error is one the spec calls for, at the first byte that calls
//!   for it.
//!
//! Those four pin the output down for any input and any chunking, so a caller only picks
//! the cap and the chunking. The fuzz targets read both from their input ([`Plan`]); the
//! quickcheck properties generate them and compare runs. Either way the checks live here,
//! once. `core/tests/codec_props.rs` includes this file with `#[path]`, so it must depend
//! on nothing but `switchyard-core`, `bytes` and `std`.
//!
//! The `fuzz_*` functions are the bodies of the targets in `fuzz_targets/`; the property
//! tests also run them on random inputs, so a target cannot rot between fuzzing runs.

// The machine harnesses: a checked driver and the tunnel's checks, scripts and pair; the
// mesh messages' checks; the punch datagrams' checks and its two machines' scripts; the
// field reading those two message checks share.
// `core/tests/tunnel_props.rs`, `core/tests/mesh_props.rs` and `core/tests/punch_props.rs`
// include these files themselves, with `#[path]`; `core/tests/codec_props.rs`, which
// includes this file, has no use for them (and would flag them as dead code), so a test
// build leaves them out.
#[cfg(not(test))]
pub mod driver;
#[cfg(not(test))]
pub mod mesh;
#[cfg(not(test))]
pub mod mesh_server;
#[cfg(not(test))]
pub mod punch;
#[cfg(not(test))]
pub mod punch_peer;
#[cfg(not(test))]
pub mod punch_rendezvous;
#[cfg(not(test))]
pub mod spec;
#[cfg(not(test))]
pub mod tls;
#[cfg(not(test))]
pub mod tunnel;

use bytes::{Bytes, BytesMut};
use switchyard_core::wire::frame::{HEADER_LEN, MAX_PAYLOAD};
use switchyard_core::wire::{Frame, FrameDecoder, FrameError, LineDecoder, LineError};

/// Body of the `frame_stream` target: a [`FrameDecoder`] over a chunked stream.
///
/// Input: one byte for the payload cap ([`max_payload_from`]), then a [`Plan`].
pub fn fuzz_frame_stream(data: &[u8]) {
    let plan = Plan::parse(data, 1);
    drive_frames(max_payload_from(plan.param(0)), plan.body, plan.sizes);
}

/// Body of the `frame_datagram` target: [`Frame::from_datagram`], checked by
/// [`check_datagram`].
///
/// Input: one byte for the payload cap ([`max_payload_from`]), then the datagram.
pub fn fuzz_frame_datagram(data: &[u8]) {
    let Some((&cap, datagram)) = data.split_first() else { return };
    let _ = check_datagram(max_payload_from(cap), datagram);
}

/// Body of the `line_stream` target: a [`LineDecoder`] with a small cap over a chunked
/// stream, then [`LineDecoder::finish`].
///
/// Input: one byte for the line cap ([`max_line_from`]), then a [`Plan`].
pub fn fuzz_line_stream(data: &[u8]) {
    let plan = Plan::parse(data, 1);
    drive_lines(max_line_from(plan.param(0)), plan.body, plan.sizes);
}

/// A frame payload cap from one input byte: `0..=127` as is (small, so oversized headers
/// are easy to reach), anything above means the largest, [`MAX_PAYLOAD`].
pub fn max_payload_from(byte: u8) -> usize {
    if byte < 128 {
        usize::from(byte)
    } else {
        MAX_PAYLOAD
    }
}

/// A line cap from one input byte: `0..=63`, small so the cap is easy to cross.
pub fn max_line_from(byte: u8) -> usize {
    usize::from(byte % 64)
}

/// How a fuzz input is read: `n_params` bytes of parameters for the target, one byte `k`,
/// `k % 8` chunk sizes, then the stream body. Missing pieces read as empty, so every
/// input is valid.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// The target's parameters (see [`Plan::param`]).
    pub params: &'a [u8],
    /// Chunk sizes, cycled over the body (see [`chunks`]).
    pub sizes: &'a [u8],
    /// The bytes the decoder sees.
    pub body: &'a [u8],
}

impl<'a> Plan<'a> {
    /// Splits `data` as described on [`Plan`].
    pub fn parse(data: &'a [u8], n_params: usize) -> Plan<'a> {
        let (params, rest) = data.split_at(n_params.min(data.len()));
        let (count, rest) = match rest.split_first() {
            Some((&k, rest)) => (usize::from(k % 8), rest),
            None => (0, rest),
        };
        let (sizes, body) = rest.split_at(count.min(rest.len()));
        Plan { params, sizes, body }
    }

    /// Parameter `i`, or 0 if the input was too short to have it.
    pub fn param(&self, i: usize) -> u8 {
        self.params.get(i).copied().unwrap_or(0)
    }
}

/// Splits `body` into consecutive chunks whose sizes cycle through `sizes`.
///
/// A size of 0 makes an empty chunk: the driver decodes with nothing new, which must be
/// harmless. If no size is above 0 the body arrives as one chunk.
pub fn chunks<'a>(body: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let whole = sizes.iter().all(|&s| s == 0);
    let mut rest = body;
    let mut next = 0;
    let mut sent_whole = false;
    std::iter::from_fn(move || {
        if whole {
            if sent_whole {
                return None;
            }
            sent_whole = true;
            return Some(std::mem::take(&mut rest));
        }
        if rest.is_empty() {
            return None;
        }
        let size = usize::from(sizes[next % sizes.len()]).min(rest.len());
        next += 1;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Everything a [`FrameDecoder`] made of a stream. Equal for any chunking of the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRun {
    /// Frames decoded, in order.
    pub frames: Vec<Frame>,
    /// The error that stopped decoding, if any.
    pub error: Option<FrameError>,
    /// Bytes of the stream the frames took up.
    pub consumed: usize,
}

/// Feeds `body` to a `FrameDecoder::new(max_payload)` in [`chunks`], decoding after each,
/// until the body ends or the decoder fails, and checks its contract after every call.
///
/// Panics, with the reason, on any breach.
pub fn drive_frames(max_payload: usize, body: &[u8], sizes: &[u8]) -> FrameRun {
    let mut decoder = FrameDecoder::new(max_payload);
    assert_eq!(decoder.max_payload(), max_payload.min(MAX_PAYLOAD), "the cap is clamped to what u16 can say");
    let mut buf = BytesMut::new();
    let mut run = FrameRun { frames: Vec::new(), error: None, consumed: 0 };
    let mut fed = 0;
    for chunk in chunks(body, sizes) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        if let Err(error) = drain_frames(&mut decoder, &mut buf, &body[..fed], &mut run) {
            run.error = Some(error);
            break;
        }
    }
    run
}

/// Decodes until the decoder wants more or fails; `seen` is every byte fed so far.
fn drain_frames(
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
    seen: &[u8],
    run: &mut FrameRun,
) -> Result<(), FrameError> {
    let max = decoder.max_payload();
    loop {
        match decoder.decode(buf) {
            Ok(Some(frame)) => {
                let wire = frame.to_bytes().expect("a decoded frame must re-encode");
                let end = run.consumed + wire.len();
                assert!(end <= seen.len(), "{frame:?} claims {} bytes that have not arrived", end - seen.len());
                assert_eq!(
                    &wire[..],
                    &seen[run.consumed..end],
                    "{frame:?} does not re-encode to the bytes it came from"
                );
                assert!(frame.payload.len() <= max, "{frame:?} is over the cap of {max}");
                run.consumed = end;
                run.frames.push(frame);
            }
            Ok(None) => {
                let pending = &seen[run.consumed..];
                assert_eq!(&buf[..], pending, "the buffer must hold exactly the bytes not yet decoded");
                if let Some(header) = RawHeader::read(pending) {
                    assert!(
                        header.reserved == 0 && header.len <= max,
                        "{header:?} is invalid under cap {max} but was left pending instead of refused"
                    );
                    assert!(pending.len() < HEADER_LEN + header.len, "a complete frame was left in the buffer");
                }
                return Ok(());
            }
            Err(error) => {
                check_frame_error(max, &error, &seen[run.consumed..]);
                return Err(error);
            }
        }
    }
}

/// Asserts that `error` is what the header at the front of `pending` calls for.
fn check_frame_error(max: usize, error: &FrameError, pending: &[u8]) {
    let header = RawHeader::read(pending).unwrap_or_else(|| panic!("{error:?} before a whole header arrived"));
    match *error {
        FrameError::ReservedNotZero(reserved) => {
            assert!(reserved != 0 && reserved == header.reserved, "{error:?} but the header is {header:?}")
        }
        FrameError::TooLong { len, max: reported } => assert!(
            len == header.len && len > max && reported == max,
            "{error:?} but the header is {header:?} and the cap {max}"
        ),
        FrameError::LengthMismatch { .. } | FrameError::Truncated(_) => {
            panic!("{error:?} is for datagrams; a stream decoder waits for more bytes instead")
        }
    }
}

/// The header fields that decide validity, read straight from the bytes (independently of
/// the decoder's own parser).
#[derive(Debug)]
struct RawHeader {
    len: usize,
    reserved: u16,
}

impl RawHeader {
    fn read(bytes: &[u8]) -> Option<RawHeader> {
        let header = bytes.get(..HEADER_LEN)?;
        Some(RawHeader {
            len: usize::from(u16::from_be_bytes([header[2], header[3]])),
            reserved: u16::from_be_bytes([header[4], header[5]]),
        })
    }
}

/// Decodes `datagram` with [`Frame::from_datagram`] and checks the result against a
/// [`FrameDecoder`] fed the same bytes: they accept the same frames and refuse the same
/// headers, a datagram is refused exactly when it is not one whole frame, and an accepted
/// frame re-encodes to the datagram.
///
/// Panics, with the reason, on any disagreement.
pub fn check_datagram(max_payload: usize, datagram: &[u8]) -> Result<Frame, FrameError> {
    let max = max_payload.min(MAX_PAYLOAD);
    let result = Frame::from_datagram(Bytes::copy_from_slice(datagram), max);
    let mut buf = BytesMut::from(datagram);
    let streamed = FrameDecoder::new(max).decode(&mut buf);
    match &result {
        Ok(frame) => {
            assert_eq!(&frame.to_bytes().expect("re-encode")[..], datagram, "{frame:?} re-encodes differently");
            assert_eq!(streamed, Ok(Some(frame.clone())), "the stream decoder disagrees on a whole frame");
            assert!(buf.is_empty(), "the stream decoder left {} bytes of a whole frame", buf.len());
        }
        Err(FrameError::Truncated(n)) => {
            assert!(*n == datagram.len() && *n < HEADER_LEN, "Truncated({n}) for {} bytes", datagram.len());
            assert_eq!(streamed, Ok(None), "the stream decoder should wait for the rest of the header");
        }
        Err(FrameError::LengthMismatch { declared, actual }) => {
            let header = RawHeader::read(datagram).expect("a length mismatch needs a header");
            assert_eq!((*declared, *actual), (header.len, datagram.len() - HEADER_LEN));
            assert_ne!(declared, actual, "a datagram of the declared length was refused");
            match streamed {
                Ok(None) => assert!(declared > actual, "the stream decoder waits, yet the datagram is long enough"),
                Ok(Some(frame)) => assert!(
                    declared < actual && frame.payload.len() == *declared && buf.len() == actual - declared,
                    "the stream decoder took {frame:?} and left {} bytes",
                    buf.len()
                ),
                Err(error) => panic!("the stream decoder refused a header the datagram decoder accepted: {error:?}"),
            }
        }
        Err(error) => {
            check_frame_error(max, error, datagram);
            assert_eq!(streamed.as_ref(), Err(error), "the stream and datagram decoders judge a header differently");
        }
    }
    result
}

/// Everything a [`LineDecoder`] made of a stream, [`LineDecoder::finish`] included. Equal
/// for any chunking of the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRun {
    /// Lines decoded, in order, without terminators.
    pub lines: Vec<Bytes>,
    /// True if the last line had no `\n` and came from `finish`.
    pub unterminated: bool,
    /// The error that stopped decoding, if any.
    pub error: Option<LineError>,
    /// Bytes of the stream the lines and their terminators took up.
    pub consumed: usize,
}

/// Feeds `body` to a `LineDecoder::new(max_line)` in [`chunks`], decoding after each, then
/// calls `finish` at the end of the stream, and checks its contract after every call.
///
/// Panics, with the reason, on any breach.
pub fn drive_lines(max_line: usize, body: &[u8], sizes: &[u8]) -> LineRun {
    let mut decoder = LineDecoder::new(max_line);
    assert_eq!(decoder.max_line(), max_line);
    let mut buf = BytesMut::new();
    let mut run = LineRun { lines: Vec::new(), unterminated: false, error: None, consumed: 0 };
    let mut fed = 0;
    for chunk in chunks(body, sizes) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        if let Err(error) = drain_lines(&mut decoder, &mut buf, &body[..fed], &mut run) {
            run.error = Some(error);
            return run;
        }
    }
    // End of stream: `finish` hands out what is left as a last line, then `None`.
    loop {
        let pending = &body[run.consumed..];
        match decoder.finish(&mut buf) {
            Ok(Some(line)) => {
                assert!(!run.unterminated, "finish handed out a second line after the unterminated one");
                assert!(!pending.is_empty(), "finish made a line out of nothing");
                assert!(!pending.contains(&b'\n'), "a terminated line was left for finish");
                assert_eq!(line, strip_cr(pending), "finish's line is not the rest of the stream less one '\\r'");
                assert!(line.len() <= max_line, "finish's line of {} bytes is over the cap {max_line}", line.len());
                run.consumed = body.len();
                run.unterminated = true;
                run.lines.push(line);
            }
            Ok(None) => {
                assert!(pending.is_empty() && buf.is_empty(), "finish dropped {} bytes", pending.len());
                return run;
            }
            Err(error) => {
                check_line_error(max_line, &error, pending, true);
                run.error = Some(error);
                return run;
            }
        }
    }
}

/// Decodes until the decoder wants more or fails; `seen` is every byte fed so far.
fn drain_lines(decoder: &mut LineDecoder, buf: &mut BytesMut, seen: &[u8], run: &mut LineRun) -> Result<(), LineError> {
    let cap = decoder.max_line();
    loop {
        let pending = &seen[run.consumed..];
        match decoder.decode(buf) {
            Ok(Some(line)) => {
                let newline = pending.iter().position(|&b| b == b'\n').expect("a line before its '\\n' arrived");
                assert_eq!(
                    line,
                    strip_cr(&pending[..newline]),
                    "the line is not the bytes before '\\n' less one '\\r'"
                );
                assert!(!line.contains(&b'\n'), "a line contains '\\n'");
                assert!(line.len() <= cap, "a line of {} bytes is over the cap {cap}", line.len());
                run.consumed += newline + 1;
                run.lines.push(line);
            }
            Ok(None) => {
                assert_eq!(&buf[..], pending, "the buffer must hold exactly the bytes not yet decoded");
                assert!(!pending.contains(&b'\n'), "a complete line was left in the buffer");
                assert!(
                    could_fit(cap, pending),
                    "{} bytes without '\\n' can no longer fit the cap {cap}, but were left pending",
                    pending.len()
                );
                assert!(buf.len() <= cap.saturating_add(1), "buffered {} bytes under a cap of {cap}", buf.len());
                return Ok(());
            }
            Err(error) => {
                check_line_error(cap, &error, pending, false);
                return Err(error);
            }
        }
    }
}

/// Asserts that `error` is what the line at the front of `pending` calls for. `at_end`:
/// the stream has ended, so an unterminated line is final.
fn check_line_error(cap: usize, error: &LineError, pending: &[u8], at_end: bool) {
    match *error {
        LineError::TooLong { max } => assert_eq!(max, cap, "the error reports the wrong cap"),
    }
    let justified = match pending.iter().position(|&b| b == b'\n') {
        Some(newline) => strip_cr(&pending[..newline]).len() > cap,
        None if at_end => strip_cr(pending).len() > cap,
        None => !could_fit(cap, pending),
    };
    assert!(justified, "{error:?} on a line that fits (or still could): {:?}", Bytes::copy_from_slice(pending));
}

/// Whether an unterminated line could still end within the cap: it is no longer than the
/// cap, or one longer with a `\r` that a `\n` may follow.
fn could_fit(cap: usize, open: &[u8]) -> bool {
    open.len() <= cap || (open.last() == Some(&b'\r') && open.len() - 1 == cap)
}

/// `line` less one trailing `\r`, as the line decoder strips it.
pub fn strip_cr(line: &[u8]) -> Bytes {
    Bytes::copy_from_slice(line.strip_suffix(b"\r").unwrap_or(line))
}
