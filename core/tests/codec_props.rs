//! Property tests for the wire codecs (`wire::frame` and `wire::line`).
//!
//! The decoders' contract is checked by the harness shared with the fuzz targets
//! (`fuzz/src/lib.rs`, included below): after every decode call it asserts that what came
//! out is exactly what the consumed bytes say, that nothing complete is left behind, that
//! the buffer stays bounded, and that every error is called for. The properties here feed
//! that harness inputs built to reach the interesting cases (lengths at the cap and one past
//! it, payloads across the one-byte length boundary, `\r` right before the cap, headers
//! that are almost valid) and add what the harness cannot know: that what was encoded is
//! what comes back, and that the way a stream is cut into reads never matters.
//!
//! Each property says what it would catch. `QUICKCHECK_TESTS=N` runs N cases per property
//! (default 300).

#[path = "../../fuzz/src/lib.rs"]
mod harness;
mod support;

use bytes::{Bytes, BytesMut};
use harness::{check_datagram, drive_frames, drive_lines, strip_cr, FrameRun};
use quickcheck::{Arbitrary, Gen, Testable};
use support::{below, Chunking};
use switchyard_core::wire::frame::{HEADER_LEN, MAX_PAYLOAD};
use switchyard_core::wire::line::{encode_line, line_bytes};
use switchyard_core::wire::{Frame, FrameDecoder, FrameError, FrameType, LineDecoder, LineError};

/// Runs `property` on 300 generated cases, or `QUICKCHECK_TESTS` if that is set.
fn check<A: Testable>(property: A) {
    support::check(300, property);
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// Every header field lands where `docs/PROTOCOL.md` puts it: type, subtype, big-endian
/// length, zero reserved, then the payload.
///
/// Catches a mis-encoded header that a round trip alone would hide because the decoder
/// makes the same mistake: a little-endian or truncated (`as u8`) length, type and subtype
/// swapped, a non-zero reserved field.
#[test]
fn frame_header_has_the_documented_layout() {
    fn prop(frame: ArbFrame) {
        let frame = frame.0;
        let wire = frame.to_bytes().expect("payloads up to MAX_PAYLOAD encode");
        let len = frame.payload.len();
        assert_eq!(wire.len(), HEADER_LEN + len);
        assert_eq!(frame.encoded_len(), wire.len());
        assert_eq!(wire[0], frame.kind.0, "type");
        assert_eq!(wire[1], frame.subtype, "subtype");
        assert_eq!(&wire[2..4], &(len as u16).to_be_bytes(), "length, big-endian");
        assert_eq!(&wire[4..6], &[0, 0], "reserved");
        assert_eq!(&wire[HEADER_LEN..], &frame.payload[..], "payload");
        let mut appended = BytesMut::from(&b"before"[..]);
        frame.encode(&mut appended).unwrap();
        assert_eq!(&appended[..6], b"before", "encode keeps what was in the buffer");
        assert_eq!(&appended[6..], &wire[..], "encode appends the same bytes as to_bytes");
    }
    check(prop as fn(_));
}

/// Frames encoded back to back and read in arbitrary chunks decode to the same frames,
/// with nothing left over.
///
/// Catches a decoder that loses or duplicates bytes at a read boundary, hands out a frame
/// one byte early or late (payloads of 0, 255, 256 and 65535 bytes are generated), or
/// carries state from one frame into the next.
#[test]
fn frames_round_trip_through_any_chunking() {
    fn prop(frames: Frames, chunking: Chunking) {
        let wire = encode_frames(&frames.0);
        let run = drive_frames(MAX_PAYLOAD, &wire, &chunking.0);
        assert_eq!(run, FrameRun { frames: frames.0, error: None, consumed: wire.len() });
    }
    check(prop as fn(_, _));
}

/// Valid frames followed by anything at all: the valid frames come out first, exactly,
/// and what follows is judged as if it were a stream of its own.
///
/// Catches a decoder that reads past a frame's end into the next bytes (so garbage after a
/// frame corrupts it), or that lets one frame's header influence the next.
#[test]
fn valid_frames_then_garbage_yield_the_valid_frames_first() {
    fn prop(frames: Frames, garbage: FrameSoup, chunking: Chunking) {
        let largest = frames.0.iter().map(|f| f.payload.len()).max().unwrap_or(0);
        let max = garbage.max_payload.max(largest);
        let prefix = encode_frames(&frames.0);
        let tail = garbage.bytes();
        let body = [&prefix[..], &tail[..]].concat();

        let run = drive_frames(max, &body, &chunking.0);
        assert!(run.frames.len() >= frames.0.len(), "lost valid frames: {run:?}");
        assert_eq!(run.frames[..frames.0.len()], frames.0[..], "the valid frames came out changed");

        let alone = drive_frames(max, &tail, &[]);
        assert_eq!(run.frames[frames.0.len()..], alone.frames[..], "the garbage decoded differently after frames");
        assert_eq!(run.error, alone.error);
        assert_eq!(run.consumed, prefix.len() + alone.consumed);
    }
    check(prop as fn(_, _, _));
}

/// Near-valid frame streams (bad reserved fields, lengths just over the cap, cut-off frames,
/// random bytes) give the same frames and the same error however they are cut into reads,
/// including one byte at a time, and the harness finds every step justified.
///
/// Catches an error raised late (after the payload was buffered) or early (on a header at
/// exactly the cap), a panic on a short read, and any dependence on read boundaries.
#[test]
fn frame_decoding_ignores_chunking_on_any_stream() {
    fn prop(soup: FrameSoup, chunking: Chunking) {
        let body = soup.bytes();
        let whole = drive_frames(soup.max_payload, &body, &[]);
        assert_eq!(drive_frames(soup.max_payload, &body, &chunking.0), whole, "chunked");
        assert_eq!(drive_frames(soup.max_payload, &body, &[1]), whole, "byte by byte");
    }
    check(prop as fn(_, _));
}

/// A datagram holding exactly one encoded frame decodes to that frame, the same as the
/// stream decoder, unless the payload is over the cap, when both refuse it the same way.
///
/// Catches `from_datagram` slicing the payload at the wrong offset, or it and the stream
/// decoder disagreeing about the cap (`>` against `>=`).
#[test]
fn datagram_of_one_frame_agrees_with_the_stream_decoder() {
    fn prop(frame: ArbFrame, cap: Cap) {
        let frame = frame.0;
        let wire = frame.to_bytes().unwrap();
        let len = frame.payload.len();
        match check_datagram(cap.0, &wire) {
            Ok(decoded) => assert!(decoded == frame && len <= cap.0),
            Err(error) => assert_eq!(error, FrameError::TooLong { len, max: cap.0 }),
        }
    }
    check(prop as fn(_, _));
}

/// A datagram that is a frame cut short, or a frame with bytes after it, is refused with
/// the error that names the problem, and arbitrary datagrams are judged as the stream
/// decoder judges the same bytes.
///
/// Catches a datagram decoder that accepts trailing bytes (two frames in one datagram would
/// then lose the second silently) or reads a short one as a frame.
#[test]
fn datagram_must_be_exactly_one_frame() {
    fn prop(frame: ArbFrame, cut: usize, extra: Vec<u8>, soup: FrameSoup) {
        let wire = frame.0.to_bytes().unwrap();
        let declared = frame.0.payload.len();
        let short = &wire[..cut % wire.len()];
        let expected = if short.len() < HEADER_LEN {
            FrameError::Truncated(short.len())
        } else {
            FrameError::LengthMismatch { declared, actual: short.len() - HEADER_LEN }
        };
        assert_eq!(check_datagram(MAX_PAYLOAD, short), Err(expected));
        if !extra.is_empty() {
            let long = [&wire[..], &extra[..]].concat();
            let actual = declared + extra.len();
            assert_eq!(check_datagram(MAX_PAYLOAD, &long), Err(FrameError::LengthMismatch { declared, actual }));
        }
        let _ = check_datagram(soup.max_payload, &soup.bytes());
    }
    check(prop as fn(_, _, _, _));
}

/// The fuzz targets' own bodies on random bytes: no decoder panics on anything, and the
/// targets themselves stay runnable between fuzzing campaigns.
#[test]
fn any_bytes_never_panic_the_decoders() {
    fn prop(data: Vec<u8>) {
        harness::fuzz_frame_stream(&data);
        harness::fuzz_frame_datagram(&data);
        harness::fuzz_line_stream(&data);
    }
    check(prop as fn(_));
}

/// The decoder never holds more than one frame in progress: a header announcing a payload
/// over the cap is refused as soon as its six bytes are in.
///
/// Catches a decoder that checks the length only once the payload has arrived, which lets
/// a peer make it buffer 64 KiB per connection whatever the cap.
#[test]
fn oversized_header_is_refused_before_its_payload() {
    fn prop(cap: Cap, over: u16, kind: u8) {
        let cap = cap.0;
        if cap >= MAX_PAYLOAD {
            return;
        }
        let len = (cap + 1 + usize::from(over)).min(MAX_PAYLOAD);
        let mut buf = BytesMut::from(&[kind, 0][..]);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(FrameDecoder::new(cap).decode(&mut buf), Err(FrameError::TooLong { len, max: cap }));
    }
    check(prop as fn(_, _, _));
}

// ---------------------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------------------

/// Lines encoded with `encode_line` (LF) or by telnet (CRLF), read in arbitrary chunks,
/// come back as they were, the last one through `finish` if it had no terminator.
///
/// One loss is by design and pinned here: `encode_line` writes a bare `\n`, so a line that
/// itself ends in `\r` loses that `\r` (the decoder takes `\r\n` as the terminator). With a
/// CRLF terminator it survives.
///
/// Catches a decoder that drops or keeps the wrong bytes around a terminator, splits a
/// `\r\n` across two reads wrongly, or refuses a line of exactly the cap.
#[test]
fn lines_round_trip_through_any_chunking() {
    fn prop(lines: Lines, chunking: Chunking) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for (line, ending) in &lines.lines {
            match ending {
                Ending::Lf => {
                    let before = wire.len();
                    encode_line(line, &mut wire);
                    assert_eq!(&wire[before..], &line_bytes(line)[..], "encode_line and line_bytes agree");
                    expected.push(strip_cr(line));
                }
                Ending::CrLf => {
                    wire.extend_from_slice(line);
                    wire.extend_from_slice(b"\r\n");
                    expected.push(Bytes::copy_from_slice(line));
                }
                Ending::None => {
                    wire.extend_from_slice(line);
                    expected.push(strip_cr(line));
                }
            }
        }
        let run = drive_lines(lines.cap, &wire, &chunking.0);
        assert_eq!(run.error, None);
        assert_eq!(run.lines, expected);
        assert_eq!(run.unterminated, matches!(lines.lines.last(), Some((_, Ending::None))));
        assert_eq!(run.consumed, wire.len());
    }
    check(prop as fn(_, _));
}

/// The line cap is exact: a line of `cap` bytes passes with either terminator, `cap + 1`
/// fails with either, and an unterminated line fails as soon as it can no longer fit
/// (`cap + 1` bytes not ending in `\r`), without waiting for a newline.
///
/// Catches an off-by-one on the cap in either direction, a CRLF line at the cap refused
/// because of its `\r`, and a decoder that buffers an over-long line until its newline.
#[test]
fn line_cap_is_exact() {
    fn prop(cap: u8, fill: u8) {
        let cap = usize::from(cap);
        let fill = if fill == b'\n' || fill == b'\r' { b'x' } else { fill };
        let line = |n: usize, tail: &[u8]| [&vec![fill; n][..], tail].concat();
        let too_long = Err(LineError::TooLong { max: cap });
        let decode = |bytes: &[u8]| LineDecoder::new(cap).decode(&mut BytesMut::from(bytes));
        let at_cap = Ok(Some(Bytes::from(vec![fill; cap])));

        assert_eq!(decode(&line(cap, b"\n")), at_cap, "cap bytes + LF");
        assert_eq!(decode(&line(cap, b"\r\n")), at_cap, "cap bytes + CRLF");
        assert_eq!(decode(&line(cap + 1, b"\n")), too_long, "cap + 1 bytes + LF");
        assert_eq!(decode(&line(cap + 1, b"\r\n")), too_long, "cap + 1 bytes + CRLF");
        assert_eq!(decode(&line(cap, b"")), Ok(None), "cap bytes, open");
        assert_eq!(decode(&line(cap, b"\r")), Ok(None), "cap bytes + CR could still be CRLF");
        assert_eq!(decode(&line(cap, b"\ry")), too_long, "cap bytes + CR + more can no longer fit");
        assert_eq!(decode(&line(cap + 1, b"")), too_long, "cap + 1 bytes fail before any newline");

        let finish = |bytes: &[u8]| LineDecoder::new(cap).finish(&mut BytesMut::from(bytes));
        let nothing_left = if cap == 0 { Ok(None) } else { at_cap.clone() };
        assert_eq!(finish(&line(cap, b"")), nothing_left, "finish: cap bytes (none left when the cap is 0)");
        assert_eq!(finish(&line(cap, b"\r")), at_cap, "finish: cap bytes + CR");
    }
    check(prop as fn(_, _));
}

/// Streams of runs around the cap, `\r`s and `\n`s in every arrangement, and random bytes
/// give the same lines and the same error however they are cut into reads, including one
/// byte at a time, and the harness finds every step justified (no line over the cap, none
/// holding `\n`, never more than `cap + 1` bytes buffered).
///
/// Catches a decoder whose remembered scan position goes stale across reads (a newline
/// missed, or found twice), or whose cap check depends on where a read ended.
#[test]
fn line_decoding_ignores_chunking_on_any_stream() {
    fn prop(soup: LineSoup, chunking: Chunking) {
        let body = soup.bytes();
        let whole = drive_lines(soup.cap, &body, &[]);
        assert_eq!(drive_lines(soup.cap, &body, &chunking.0), whole, "chunked");
        assert_eq!(drive_lines(soup.cap, &body, &[1]), whole, "byte by byte");
    }
    check(prop as fn(_, _));
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Shrink candidates for a list: the list without one of its items, for each item.
fn without_each<T: Clone + 'static>(items: &[T]) -> impl Iterator<Item = Vec<T>> {
    let items = items.to_vec();
    (0..items.len()).map(move |i| {
        let mut fewer = items.clone();
        fewer.remove(i);
        fewer
    })
}

/// `len` bytes: a short random pattern repeated, cheap even for 64 KiB payloads.
fn filler(g: &mut Gen, len: usize) -> Vec<u8> {
    let mut pattern = Vec::<u8>::arbitrary(g);
    if pattern.is_empty() {
        pattern.push(u8::arbitrary(g));
    }
    pattern.iter().copied().cycle().take(len).collect()
}

fn encode_frames(frames: &[Frame]) -> BytesMut {
    let mut wire = BytesMut::new();
    for frame in frames {
        frame.encode(&mut wire).expect("generated frames fit the length field");
    }
    wire
}

/// A frame whose payload length is small, near the one-byte boundary (250..=261), up to
/// 4 KiB, or at the very top of the length field.
#[derive(Clone, Debug)]
struct ArbFrame(Frame);

impl Arbitrary for ArbFrame {
    fn arbitrary(g: &mut Gen) -> Self {
        let len = match below(g, 20) {
            0 => MAX_PAYLOAD - below(g, 3),
            1..=3 => 250 + below(g, 12),
            4..=5 => below(g, 4097),
            _ => below(g, 17),
        };
        ArbFrame(Frame::new(FrameType(u8::arbitrary(g)), u8::arbitrary(g), filler(g, len)))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let f = &self.0;
        let mut smaller = Vec::new();
        if !f.payload.is_empty() {
            smaller.push(Frame::new(f.kind, f.subtype, f.payload.slice(..f.payload.len() / 2)));
            smaller.push(Frame::new(f.kind, f.subtype, f.payload.slice(..f.payload.len() - 1)));
        }
        if f.kind.0 != 0 || f.subtype != 0 {
            smaller.push(Frame::new(FrameType(0), 0, f.payload.clone()));
        }
        Box::new(smaller.into_iter().map(ArbFrame))
    }
}

/// Up to eight frames.
#[derive(Clone, Debug)]
struct Frames(Vec<Frame>);

impl Arbitrary for Frames {
    fn arbitrary(g: &mut Gen) -> Self {
        Frames((0..below(g, 9)).map(|_| ArbFrame::arbitrary(g).0).collect())
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let wrapped: Vec<ArbFrame> = self.0.iter().cloned().map(ArbFrame).collect();
        Box::new(wrapped.shrink().map(|v| Frames(v.into_iter().map(|f| f.0).collect())))
    }
}

/// A frame payload cap: 0, tiny, around 255/256, or the largest.
#[derive(Clone, Copy, Debug)]
struct Cap(usize);

impl Arbitrary for Cap {
    fn arbitrary(g: &mut Gen) -> Self {
        Cap(match below(g, 6) {
            0 => 0,
            1 => MAX_PAYLOAD,
            2 => 254 + below(g, 4),
            _ => below(g, 65),
        })
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Cap))
    }
}

/// A piece of a frame stream that is valid, almost valid, or not a frame at all.
#[derive(Clone, Debug)]
enum FramePiece {
    /// A valid frame (whether its payload fits the cap is up to the draw).
    Frame(Frame),
    /// A frame whose reserved field is not zero.
    BadReserved(Frame, u16),
    /// A header declaring `cap + over` payload bytes, with no payload.
    OverCap(u16),
    /// The first bytes of a valid frame.
    Cut(Frame, usize),
    /// Anything.
    Raw(Vec<u8>),
}

/// A frame stream of up to eight [`FramePiece`]s, and the cap to decode it with.
#[derive(Clone, Debug)]
struct FrameSoup {
    max_payload: usize,
    pieces: Vec<FramePiece>,
}

impl FrameSoup {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in &self.pieces {
            match piece {
                FramePiece::Frame(f) => out.extend_from_slice(&f.to_bytes().unwrap()),
                FramePiece::BadReserved(f, reserved) => {
                    let mut wire = f.to_bytes().unwrap().to_vec();
                    wire[4..6].copy_from_slice(&reserved.max(&1).to_be_bytes());
                    out.extend_from_slice(&wire);
                }
                FramePiece::OverCap(over) => {
                    let len = (self.max_payload + usize::from(*over)).min(MAX_PAYLOAD) as u16;
                    out.extend_from_slice(&[9, 9]);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&[0, 0]);
                }
                FramePiece::Cut(f, at) => {
                    let wire = f.to_bytes().unwrap();
                    out.extend_from_slice(&wire[..at % wire.len()]);
                }
                FramePiece::Raw(bytes) => out.extend_from_slice(bytes),
            }
        }
        out
    }
}

impl Arbitrary for FrameSoup {
    fn arbitrary(g: &mut Gen) -> Self {
        let max_payload = Cap::arbitrary(g).0;
        let small_frame = |g: &mut Gen| {
            let len = below(g, max_payload.min(40) + 2);
            Frame::new(FrameType(u8::arbitrary(g)), u8::arbitrary(g), filler(g, len))
        };
        let pieces = (0..below(g, 9))
            .map(|_| match below(g, 10) {
                0..=3 => FramePiece::Frame(small_frame(g)),
                4 => FramePiece::BadReserved(small_frame(g), u16::arbitrary(g)),
                5 => FramePiece::OverCap(below(g, 3) as u16),
                6..=7 => FramePiece::Cut(small_frame(g), usize::arbitrary(g)),
                _ => FramePiece::Raw((0..below(g, 12)).map(|_| u8::arbitrary(g)).collect()),
            })
            .collect();
        FrameSoup { max_payload, pieces }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let max_payload = self.max_payload;
        Box::new(without_each(&self.pieces).map(move |pieces| FrameSoup { max_payload, pieces }))
    }
}

/// How a generated line ends on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Lf,
    CrLf,
    /// No terminator: only the last line, read by `finish`.
    None,
}

/// Lines that fit `cap` (often exactly), made of letters, `\r`s and other bytes but never
/// `\n`, each with an ending; only the last may have none.
#[derive(Clone, Debug)]
struct Lines {
    cap: usize,
    lines: Vec<(Vec<u8>, Ending)>,
}

impl Arbitrary for Lines {
    fn arbitrary(g: &mut Gen) -> Self {
        let cap = line_cap(g);
        let count = below(g, 10);
        let lines = (0..count)
            .map(|i| {
                let len = if bool::arbitrary(g) { cap } else { below(g, cap + 1) };
                let line: Vec<u8> = (0..len)
                    .map(|_| match below(g, 6) {
                        0 => b'\r',
                        1 => match u8::arbitrary(g) {
                            b'\n' => b'-',
                            b => b,
                        },
                        _ => b'a' + below(g, 26) as u8,
                    })
                    .collect();
                let ending = match below(g, 3) {
                    // An unterminated empty line is no line at all.
                    0 if i + 1 == count && !line.is_empty() => Ending::None,
                    0 | 1 => Ending::Lf,
                    _ => Ending::CrLf,
                };
                (line, ending)
            })
            .collect();
        Lines { cap, lines }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let cap = self.cap;
        Box::new(without_each(&self.lines).map(move |mut lines| {
            // Only the last line may be unterminated.
            let last = lines.len().saturating_sub(1);
            for (_, ending) in &mut lines[..last] {
                if *ending == Ending::None {
                    *ending = Ending::Lf;
                }
            }
            Lines { cap, lines }
        }))
    }
}

/// A line cap: mostly 0..40, sometimes up to 300.
fn line_cap(g: &mut Gen) -> usize {
    if below(g, 5) == 0 {
        below(g, 301)
    } else {
        below(g, 41)
    }
}

/// A line stream: runs of a letter around the cap in length (`cap - 1 ..= cap + 2`, or
/// shorter), each followed by a terminator, a stray `\r`, several newlines, or nothing;
/// with random bytes mixed in.
#[derive(Clone, Debug)]
struct LineSoup {
    cap: usize,
    pieces: Vec<Vec<u8>>,
}

impl LineSoup {
    fn bytes(&self) -> Vec<u8> {
        self.pieces.concat()
    }
}

impl Arbitrary for LineSoup {
    fn arbitrary(g: &mut Gen) -> Self {
        const TAILS: [&[u8]; 7] = [b"", b"\n", b"\r\n", b"\r", b"\r\r\n", b"\n\n", b"\r\r"];
        let cap = line_cap(g);
        let pieces = (0..below(g, 12))
            .map(|_| {
                if below(g, 5) == 0 {
                    return (0..below(g, 8))
                        .map(|_| {
                            let any = u8::arbitrary(g);
                            *g.choose(&[b'\r', b'\n', b'z', any]).unwrap()
                        })
                        .collect();
                }
                let len = match below(g, 3) {
                    0 => below(g, cap + 1),
                    _ => (cap + below(g, 4)).saturating_sub(1),
                };
                [&vec![b'a'; len][..], g.choose(&TAILS).unwrap()].concat()
            })
            .collect();
        LineSoup { cap, pieces }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let cap = self.cap;
        Box::new(without_each(&self.pieces).map(move |pieces| LineSoup { cap, pieces }))
    }
}
