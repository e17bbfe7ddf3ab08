//! Property tests for the mesh messages (`wire::mesh`, `docs/PROTOCOL.md` §4).
//!
//! The checks live in the harness shared with the `mesh_msg` fuzz target
//! (`fuzz/src/mesh.rs`, included below): every frame is judged by the decoder and by an
//! independent reading of the spec, which must agree, and every accepted frame must
//! re-encode to its exact bytes. The properties here feed it frames built to reach the
//! interesting cases (names of 1 and 32 bytes and one past, bodies at 4,096 bytes, lists
//! of 64 servers, one bad byte in a field), and add what the harness cannot know: that
//! what was encoded is what comes back, that it is laid out as the spec says, and that the
//! way a stream is cut into reads never matters.
//!
//! The mesh server's fuzz harness (`fuzz/src/mesh_server.rs`, with the checked driver of
//! `fuzz/src/driver.rs`) runs here on random scripts too, so it cannot rot between fuzzing
//! runs.
//!
//! Each property says what it would catch. `QUICKCHECK_TESTS=N` runs N cases per property
//! (by default 500, 5,000 of the cheap frame properties).

// The checked driver is shared with the tunnel's harnesses; the mesh server's uses only
// part of it.
#[allow(dead_code)]
#[path = "../../fuzz/src/driver.rs"]
mod driver;
#[path = "../../fuzz/src/mesh.rs"]
mod mesh;
#[path = "../../fuzz/src/mesh_server.rs"]
mod mesh_server;
#[path = "../../fuzz/src/spec.rs"]
mod spec;
mod support;

use bytes::BytesMut;
use mesh::{check_mesh_frame, fuzz_mesh_msg, spec_verdict, Verdict};
use quickcheck::{Arbitrary, Gen};
use support::{
    addr, addrs, below, body, bytes16, check, cut_reason, frame_bytes, name, noisy_payload, number, pick, put_addr,
    put_addrs, put_name, reason, Chunking,
};
use switchyard_core::wire::mesh::{MeshMsg, MeshMsgError, ReceiptStatus, MAX_BODY, MAX_REASON, MAX_SERVERS};
use switchyard_core::wire::{Frame, FrameDecoder, FrameType};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// Every message encodes to one frame that decodes back to the same message (reasons over
/// 256 bytes come back cut at the last character boundary within 256), and that frame is
/// judged valid by the spec's reading and re-encodes to itself.
///
/// Catches an encoder and decoder that disagree on a field's offset, width or byte order,
/// an IPv6 address that comes back as IPv4 (`::ffff:a.b.c.d` is generated), a name of 32
/// bytes or a body of 4,096 refused, a list of 64 servers refused or cut, and a reason cut
/// inside a character (which the decoder would then refuse as invalid UTF-8).
#[test]
fn messages_round_trip() {
    fn prop(msg: ArbMsg) {
        let wire = msg.0.to_bytes();
        let mut buf = BytesMut::from(&wire[..]);
        let frame = FrameDecoder::default().decode(&mut buf).expect("one frame").expect("whole");
        assert!(buf.is_empty(), "{:?} encoded as more than one frame", msg.0);
        let decoded = check_mesh_frame(frame).unwrap_or_else(|e| panic!("{:?} came back as {e:?}", msg.0));
        assert_eq!(decoded, expected_after_round_trip(msg.0));
    }
    check(500, prop as fn(_));
}

/// Every message is laid out byte for byte as `docs/PROTOCOL.md` §4 says, by an encoder
/// written from the spec here ([`spec_bytes`]).
///
/// Catches what a round trip hides because the decoder makes the same mistake: a
/// little-endian port or token, fields in another order (`Forward`'s hops before its
/// origin), a family byte other than 4 and 6, a type or subtype renumbered, or a reason cut
/// somewhere other than the last character boundary within 256 bytes.
#[test]
fn messages_have_the_documented_layout() {
    fn prop(msg: ArbMsg) {
        assert_eq!(&msg.0.to_bytes()[..], &spec_bytes(&msg.0)[..], "{:?}", msg.0);
    }
    check(500, prop as fn(_));
}

/// Messages encoded back to back and read in arbitrary chunks (one byte at a time, or
/// across frame boundaries) decode, through a [`FrameDecoder`] over a `BytesMut` and
/// [`MeshMsg::decode`], to the same messages, with nothing left over.
///
/// Catches a message decoder that reads past its frame into the next one, or a message
/// whose frame length does not cover its payload (the stream goes out of step).
#[test]
fn message_streams_decode_the_same_through_any_chunking() {
    fn prop(msgs: Msgs, chunking: Chunking) {
        let msgs = msgs.0;
        let mut wire = BytesMut::new();
        for msg in &msgs {
            msg.encode(&mut wire);
        }
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for chunk in chunks(&wire, &chunking.0) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
                decoded.push(MeshMsg::decode(frame).unwrap_or_else(|e| panic!("refused with {e:?}")));
            }
        }
        assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
        let expected: Vec<MeshMsg> = msgs.into_iter().map(expected_after_round_trip).collect();
        assert_eq!(decoded, expected);
    }
    check(500, prop as fn(_, _));
}

// ---------------------------------------------------------------------------------------
// Any frame, any bytes
// ---------------------------------------------------------------------------------------

/// Any frame — mesh types 0–5 with every subtype up to 6, valid messages one byte off,
/// payloads of arbitrary bytes, other types — is judged without a panic, exactly as the
/// spec's reading judges it.
///
/// Catches a decoder that panics on a short payload, accepts trailing bytes, a name with a
/// space, a no-break space or a control character, a name of 0 or 33 bytes, 65 servers, a
/// family other than 4 and 6, a status other than 0 and 1, a body or reason that is not
/// UTF-8 or too long, or that refuses a valid message.
#[test]
fn any_frame_is_judged_as_the_spec_says() {
    fn prop(frame: ArbFrame) {
        let _ = check_mesh_frame(frame.0);
    }
    // Cheap, and one bad byte in the right field is a rare draw: many cases.
    check(5000, prop as fn(_));
}

/// The fuzz target's body on random inputs: arbitrary bytes, and streams of frames like
/// the ones above with arbitrary bytes after them. No frame panics the decoder or the
/// harness, and every frame is judged as the spec says. Keeps the target runnable between
/// fuzzing campaigns, and finds the shallow bugs on every `cargo test`.
#[test]
fn any_bytes_never_panic_the_mesh_decoder() {
    fn prop(stream: Stream) {
        fuzz_mesh_msg(&stream.0);
    }
    check(5000, prop as fn(_));
}

/// Frames whose judgement the spec fixes, judged by both the decoder and the spec's
/// reading (so neither can drift towards the other): the examples of §4.2, and a frame at
/// each edge of each rule.
#[test]
fn edge_frames_are_judged_as_the_spec_says() {
    let frame = |kind: u8, subtype: u8, payload: Vec<u8>| Frame::new(FrameType(kind), subtype, payload);
    let judge = |frame: Frame| {
        let verdict = spec_verdict(&frame);
        (check_mesh_frame(frame), verdict)
    };
    let named = |name: &[u8]| [&[name.len() as u8][..], name].concat();
    let addr4 = [4, 127, 0, 0, 1, 0x13, 0x89];
    let bad_length = |what: &'static str, len: usize| (Err(MeshMsgError::BadLength { what, len }), Verdict::BadLength);

    // The examples of §4.2, byte for byte.
    let mut send = vec![3, 0, 0, 0x15, 0, 0];
    send.extend([1; 16]);
    send.extend([2, 0x42, 0x6f, 0x68, 0x69]);
    let mut buf = BytesMut::from(&send[..]);
    let msg = MeshMsg::Send { id: Uuid::from_bytes([1; 16]), to: "Bo".into(), body: "hi".into() };
    assert_eq!(judge(FrameDecoder::default().decode(&mut buf).unwrap().unwrap()), (Ok(msg), Verdict::Valid));
    let list = [1, 1, 0, 8, 0, 0, 1, 4, 0x7f, 0, 0, 1, 0x13, 0x89];
    let mut buf = BytesMut::from(&list[..]);
    let msg = MeshMsg::ServerList { servers: vec!["127.0.0.1:5001".parse().unwrap()] };
    assert_eq!(judge(FrameDecoder::default().decode(&mut buf).unwrap().unwrap()), (Ok(msg), Verdict::Valid));

    // Names: 1 and 32 bytes, multi-byte characters; not 0 or 33 bytes, no whitespace
    // (ASCII or not), no control characters, UTF-8 only.
    for name in ["a", "Zoë", "名前", &"x".repeat(32), "a\u{ad}b"] {
        let msg = MeshMsg::Register { name: name.to_owned() };
        assert_eq!(judge(frame(2, 0, named(name.as_bytes()))), (Ok(msg), Verdict::Valid), "{name:?}");
    }
    let bad_names: [&[u8]; 9] =
        [b"", &[b'x'; 33], b"a b", b"a\tb", "a\u{a0}b".as_bytes(), "\u{3000}".as_bytes(), b"a\x7f", &[0xc3], b"\x00"];
    for name in bad_names {
        assert_eq!(judge(frame(2, 1, named(name))), (Err(MeshMsgError::BadName), Verdict::BadName), "{name:?}");
    }
    // A name that does not fit the payload is a bad length, however bad its bytes.
    assert_eq!(judge(frame(2, 0, vec![3, b' '])), bad_length("register", 2));
    assert_eq!(judge(frame(2, 0, vec![])), bad_length("register", 0));

    // Addresses and lists: family 4 or 6, at most 64, the port whole.
    let mut sixty_four = vec![64];
    for _ in 0..64 {
        sixty_four.extend(addr4);
    }
    assert!(judge(frame(1, 1, sixty_four.clone())).0.is_ok());
    sixty_four[0] = 65;
    assert_eq!(judge(frame(1, 1, sixty_four)), (Err(MeshMsgError::TooManyServers(65)), Verdict::TooManyServers(65)));
    assert_eq!(judge(frame(1, 1, vec![255])), (Err(MeshMsgError::TooManyServers(255)), Verdict::TooManyServers(255)));
    assert_eq!(judge(frame(1, 1, vec![1, 5, 0, 0])), (Err(MeshMsgError::BadAddress(5)), Verdict::BadAddress(5)));
    assert_eq!(judge(frame(1, 0, [&addr4[..6]].concat())), bad_length("announce", 6));
    assert_eq!(judge(frame(1, 0, [&addr4[..], &[0]].concat())).1, Verdict::Valid);
    let mut v6 = vec![6];
    v6.extend([0; 15]);
    v6.extend([1, 0, 80]);
    assert_eq!(judge(frame(2, 3, [&named(b"Bob")[..], &v6].concat())).1, Verdict::Valid);

    // Bodies: 0–4,096 bytes of UTF-8, anything else refused.
    let id = [7; 16];
    let send = |body: &[u8]| frame(3, 0, [&id[..], &named(b"Bob"), body].concat());
    assert_eq!(judge(send(b"")).1, Verdict::Valid);
    assert_eq!(judge(send(" \t\n\0".as_bytes())).1, Verdict::Valid);
    assert_eq!(judge(send(&[b'x'; 4096])).1, Verdict::Valid);
    assert_eq!(judge(send(&[b'x'; 4097])), (Err(MeshMsgError::BadBody), Verdict::BadBody));
    assert_eq!(judge(send(&[0xff])), (Err(MeshMsgError::BadBody), Verdict::BadBody));

    // Reasons: UTF-8, at most 256 bytes.
    let refused = |reason: &[u8]| frame(2, 2, [&named(b"Bob")[..], reason].concat());
    assert_eq!(judge(refused(&[b'r'; 256])).1, Verdict::Valid);
    assert_eq!(judge(refused(&[b'r'; 257])), (Err(MeshMsgError::BadReason), Verdict::BadReason));
    assert_eq!(judge(refused(&[0xe2, 0x82])), (Err(MeshMsgError::BadReason), Verdict::BadReason));

    // Receipts, tokens, empty messages: exact lengths, statuses 0 and 1.
    assert_eq!(judge(frame(3, 3, [&id[..], &[1]].concat())).1, Verdict::Valid);
    assert_eq!(judge(frame(3, 3, [&id[..], &[2]].concat())), (Err(MeshMsgError::BadStatus(2)), Verdict::BadStatus(2)));
    assert_eq!(judge(frame(3, 3, [&id[..], &[0, 0]].concat())), bad_length("receipt", 18));
    let relay = |status: u8, rest: &[u8]| frame(3, 4, [&id[..], &[status, 9], rest].concat());
    assert_eq!(judge(relay(0, &addr4)).1, Verdict::Valid);
    assert_eq!(judge(relay(2, &addr4)), (Err(MeshMsgError::BadStatus(2)), Verdict::BadStatus(2)));
    assert_eq!(judge(relay(1, &addr4[..6])), bad_length("receipt relay", 24));
    assert_eq!(judge(frame(4, 1, vec![0; 8])).1, Verdict::Valid);
    assert_eq!(judge(frame(4, 0, vec![0; 7])), bad_length("ping", 7));
    assert_eq!(judge(frame(5, 0, vec![0])), bad_length("leave", 1));
    assert_eq!(judge(frame(0, 0, vec![])).1, Verdict::Valid);

    // Other types and subtypes.
    for (kind, subtype) in [(0, 1), (1, 6), (2, 9), (3, 5), (4, 2), (5, 2), (6, 0), (16, 0), (255, 255)] {
        let unknown = MeshMsgError::UnknownKind { kind: FrameType(kind), subtype };
        assert_eq!(judge(frame(kind, subtype, vec![])), (Err(unknown), Verdict::UnknownKind));
    }
}

// ---------------------------------------------------------------------------------------
// The spec's encoding
// ---------------------------------------------------------------------------------------

/// `msg` encoded as `docs/PROTOCOL.md` §2 and §4 describe it, without the codec: a header
/// of type, subtype, u16 big-endian length and two zero bytes, then the fields of §4.2's
/// table as §4.1 encodes them.
fn spec_bytes(msg: &MeshMsg) -> Vec<u8> {
    let mut p = Vec::new();
    let (kind, subtype) = match msg {
        MeshMsg::ListServers => (0, 0),
        MeshMsg::Announce { server, known } => {
            put_addr(&mut p, server);
            put_addrs(&mut p, known);
            (1, 0)
        }
        MeshMsg::ServerList { servers } => {
            put_addrs(&mut p, servers);
            (1, 1)
        }
        MeshMsg::PeerHello { nonce } => {
            p.extend_from_slice(nonce);
            (1, 2)
        }
        MeshMsg::PeerChallenge { nonce, proof } => {
            p.extend_from_slice(nonce);
            p.extend_from_slice(proof);
            (1, 3)
        }
        MeshMsg::PeerProof { proof } => {
            p.extend_from_slice(proof);
            (1, 4)
        }
        MeshMsg::PeerRefused { reason } => {
            p.extend_from_slice(cut_reason(reason, 256).as_bytes());
            (1, 5)
        }
        MeshMsg::Register { name: n } => {
            put_name(&mut p, n);
            (2, 0)
        }
        MeshMsg::Registered { name: n } => {
            put_name(&mut p, n);
            (2, 1)
        }
        MeshMsg::RegisterRefused { name: n, reason } => {
            put_name(&mut p, n);
            p.extend_from_slice(cut_reason(reason, 256).as_bytes());
            (2, 2)
        }
        MeshMsg::Claim { name: n, home } => {
            put_name(&mut p, n);
            put_addr(&mut p, home);
            (2, 3)
        }
        MeshMsg::ClaimOk { name: n, home } => {
            put_name(&mut p, n);
            put_addr(&mut p, home);
            (2, 4)
        }
        MeshMsg::RegisterChallenge { nonce } => {
            p.extend_from_slice(nonce);
            (2, 6)
        }
        MeshMsg::RegisterProof { nonce, proof } => {
            p.extend_from_slice(nonce);
            p.extend_from_slice(proof);
            (2, 7)
        }
        MeshMsg::Takeover { name: n, home } => {
            put_name(&mut p, n);
            put_addr(&mut p, home);
            (2, 8)
        }
        MeshMsg::ClaimConflict { name: n, holder } => {
            put_name(&mut p, n);
            put_addr(&mut p, holder);
            (2, 5)
        }
        MeshMsg::Send { id, to, body } => {
            p.extend_from_slice(id.as_bytes());
            put_name(&mut p, to);
            p.extend_from_slice(body.as_bytes());
            (3, 0)
        }
        MeshMsg::Deliver { id, from, body } => {
            p.extend_from_slice(id.as_bytes());
            put_name(&mut p, from);
            p.extend_from_slice(body.as_bytes());
            (3, 1)
        }
        MeshMsg::Forward { id, attempt, hops, origin, from, to, body } => {
            p.extend_from_slice(id.as_bytes());
            p.push(*attempt);
            p.push(*hops);
            put_addr(&mut p, origin);
            put_name(&mut p, from);
            put_name(&mut p, to);
            p.extend_from_slice(body.as_bytes());
            (3, 2)
        }
        MeshMsg::Receipt { id, status } => {
            p.extend_from_slice(id.as_bytes());
            p.push(match status {
                ReceiptStatus::Delivered => 0,
                ReceiptStatus::NoSuchUser => 1,
            });
            (3, 3)
        }
        MeshMsg::ReceiptRelay { id, status, hops, origin } => {
            p.extend_from_slice(id.as_bytes());
            p.push(match status {
                ReceiptStatus::Delivered => 0,
                ReceiptStatus::NoSuchUser => 1,
            });
            p.push(*hops);
            put_addr(&mut p, origin);
            (3, 4)
        }
        MeshMsg::Ping { token } => {
            p.extend_from_slice(&token.to_be_bytes());
            (4, 0)
        }
        MeshMsg::Pong { token } => {
            p.extend_from_slice(&token.to_be_bytes());
            (4, 1)
        }
        MeshMsg::Leave => (5, 0),
        MeshMsg::Gone { name: n, home } => {
            put_name(&mut p, n);
            put_addr(&mut p, home);
            (5, 1)
        }
    };
    frame_bytes(kind, subtype, &p)
}

/// What a message is after encoding and decoding: the same, with its reason cut.
fn expected_after_round_trip(msg: MeshMsg) -> MeshMsg {
    match msg {
        MeshMsg::RegisterRefused { name, reason } => {
            MeshMsg::RegisterRefused { name, reason: cut_reason(&reason, 256).into() }
        }
        MeshMsg::PeerRefused { reason } => MeshMsg::PeerRefused { reason: cut_reason(&reason, 256).into() },
        other => other,
    }
}

/// Splits `body` into consecutive chunks whose sizes cycle through `sizes`; sizes of 0
/// make empty chunks (a read that brought nothing), and if no size is above 0 the body
/// comes as one chunk.
fn chunks<'a>(body: &'a [u8], sizes: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.iter().all(|&s| s == 0) {
        return vec![body];
    }
    let mut out = Vec::new();
    let mut rest = body;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(usize::from(size).min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// A message id: all zeros, all ones, or random.
fn id(g: &mut Gen) -> Uuid {
    Uuid::from_bytes(bytes16(g))
}

/// Any mesh message with fields at their edges.
#[derive(Clone, Debug)]
struct ArbMsg(MeshMsg);

impl Arbitrary for ArbMsg {
    fn arbitrary(g: &mut Gen) -> Self {
        let status = |g: &mut Gen| pick(g, &[ReceiptStatus::Delivered, ReceiptStatus::NoSuchUser]);
        let proof = |g: &mut Gen| -> [u8; 32] { [bytes16(g), bytes16(g)].concat().try_into().expect("32 bytes") };
        ArbMsg(match below(g, 25) {
            0 => MeshMsg::ListServers,
            1 => MeshMsg::Announce { server: addr(g), known: addrs(g, MAX_SERVERS) },
            2 => MeshMsg::ServerList { servers: addrs(g, MAX_SERVERS) },
            3 => MeshMsg::Register { name: name(g) },
            4 => MeshMsg::Registered { name: name(g) },
            5 => MeshMsg::RegisterRefused { name: name(g), reason: reason(g, MAX_REASON) },
            6 => MeshMsg::Claim { name: name(g), home: addr(g) },
            7 => MeshMsg::ClaimOk { name: name(g), home: addr(g) },
            8 => MeshMsg::ClaimConflict { name: name(g), holder: addr(g) },
            9 => MeshMsg::Send { id: id(g), to: name(g), body: body(g, MAX_BODY) },
            10 => MeshMsg::Deliver { id: id(g), from: name(g), body: body(g, MAX_BODY) },
            11 => MeshMsg::Forward {
                id: id(g),
                attempt: u8::arbitrary(g),
                hops: u8::arbitrary(g),
                origin: addr(g),
                from: name(g),
                to: name(g),
                body: body(g, MAX_BODY),
            },
            12 => MeshMsg::Receipt { id: id(g), status: status(g) },
            13 => MeshMsg::ReceiptRelay { id: id(g), status: status(g), hops: u8::arbitrary(g), origin: addr(g) },
            14 => MeshMsg::Ping { token: number(g) },
            15 => MeshMsg::Pong { token: number(g) },
            16 => MeshMsg::Leave,
            17 => MeshMsg::PeerHello { nonce: proof(g) },
            18 => MeshMsg::PeerChallenge { nonce: proof(g), proof: proof(g) },
            19 => MeshMsg::PeerProof { proof: proof(g) },
            20 => MeshMsg::PeerRefused { reason: reason(g, MAX_REASON) },
            21 => MeshMsg::RegisterChallenge { nonce: proof(g) },
            22 => MeshMsg::RegisterProof { nonce: proof(g), proof: proof(g) },
            23 => MeshMsg::Takeover { name: name(g), home: addr(g) },
            _ => MeshMsg::Gone { name: name(g), home: addr(g) },
        })
    }
}

/// Up to 8 messages, to send back to back.
#[derive(Clone, Debug)]
struct Msgs(Vec<MeshMsg>);

impl Arbitrary for Msgs {
    fn arbitrary(g: &mut Gen) -> Self {
        Msgs((0..below(g, 9)).map(|_| ArbMsg::arbitrary(g).0).collect())
    }

    /// The same stream less one message.
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let msgs = self.0.clone();
        Box::new((0..msgs.len()).map(move |i| {
            let mut fewer = msgs.clone();
            fewer.remove(i);
            Msgs(fewer)
        }))
    }
}

/// A frame aimed at the mesh decoder: a valid message, a valid message one step off (a
/// byte short or long, one byte replaced by a value that breaks some rule, a no-break
/// space in place of two bytes, or another subtype), or a frame of a mesh type (or any
/// type) with a payload of arbitrary bytes.
#[derive(Clone, Debug)]
struct ArbFrame(Frame);

impl Arbitrary for ArbFrame {
    fn arbitrary(g: &mut Gen) -> Self {
        match below(g, 3) {
            0 => ArbFrame::random(g),
            1 => ArbFrame::valid(g),
            _ => ArbFrame::valid(g).mutated(g),
        }
    }
}

impl ArbFrame {
    /// A valid message's frame.
    fn valid(g: &mut Gen) -> ArbFrame {
        let wire = ArbMsg::arbitrary(g).0.to_bytes();
        let mut buf = BytesMut::from(&wire[..]);
        ArbFrame(FrameDecoder::default().decode(&mut buf).expect("valid").expect("whole"))
    }

    /// The frame one step from valid.
    fn mutated(self, g: &mut Gen) -> ArbFrame {
        let Frame { kind, mut subtype, payload } = self.0;
        let mut payload = payload.to_vec();
        match below(g, 5) {
            0 => {
                payload.pop();
            }
            1 => payload.push(u8::arbitrary(g)),
            2 => subtype = below(g, 7) as u8,
            3 if payload.len() >= 2 => {
                // U+00A0 or U+0085: whitespace to Unicode, not to ASCII.
                let at = below(g, payload.len() - 1);
                payload[at..at + 2].copy_from_slice(pick(g, &[[0xc2, 0xa0], [0xc2, 0x85]]).as_slice());
            }
            _ if payload.is_empty() => payload.push(b' '),
            _ => {
                // A space, a control, a lone UTF-8 lead byte, families, counts, statuses,
                // name lengths around the cap.
                let at = below(g, payload.len());
                payload[at] = pick(g, &[b' ', 0x7f, 0, 0xc3, 0xff, 1, 2, 4, 5, 6, 32, 33, 64, 65]);
            }
        }
        ArbFrame(Frame::new(kind, subtype, payload))
    }

    /// Anything near the mesh's types, with lengths at the fixed-size messages' sizes.
    fn random(g: &mut Gen) -> ArbFrame {
        let kind = if below(g, 8) == 0 { u8::arbitrary(g) } else { below(g, 7) as u8 };
        let subtype = if below(g, 8) == 0 { u8::arbitrary(g) } else { below(g, 7) as u8 };
        let sizes = [0, 1, 2, 7, 8, 9, 16, 17, 18, 19, 20, 26, 27, 36];
        let payload = noisy_payload(g, &sizes, &[0, 1, 4, 6, 64, 65]);
        ArbFrame(Frame::new(FrameType(kind), subtype, payload))
    }
}

/// A fuzz input: arbitrary bytes, or a few [`ArbFrame`]s back to back, sometimes followed
/// by arbitrary bytes (the frame decoder stops at them or waits for more).
#[derive(Clone, Debug)]
struct Stream(Vec<u8>);

impl Arbitrary for Stream {
    fn arbitrary(g: &mut Gen) -> Self {
        if below(g, 4) == 0 {
            return Stream(Vec::arbitrary(g));
        }
        let mut wire = BytesMut::new();
        for _ in 0..1 + below(g, 4) {
            ArbFrame::arbitrary(g).0.encode(&mut wire).expect("mesh-sized payloads fit a frame");
        }
        if bool::arbitrary(g) {
            wire.extend_from_slice(&Vec::<u8>::arbitrary(g));
        }
        Stream(wire.to_vec())
    }

    /// Cuts the stream short, or drops a quarter of it: a few candidates per step, so a
    /// failing stream of kilobytes shrinks in a few dozen runs (`Vec`'s own shrinking tries
    /// every byte, which takes minutes). Frames are read in order, so a prefix replays the
    /// start of the stream exactly.
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let bytes = self.0.clone();
        let len = bytes.len();
        let cuts = [len / 2, len * 3 / 4, len.saturating_sub(1)];
        let prefixes = cuts.into_iter().filter(move |&n| n < len).map({
            let bytes = bytes.clone();
            move |n| Stream(bytes[..n].to_vec())
        });
        let holes = (1..=4)
            .map(move |q| (len * (q - 1) / 4, len * q / 4))
            .filter(|(a, b)| a < b)
            .map(move |(a, b)| Stream([&bytes[..a], &bytes[b..]].concat()));
        Box::new(prefixes.chain(holes))
    }
}

/// Random scripts of users, peers, garbage and time never panic the mesh server, break
/// the machine contract or take it past its caps (the `mesh_server` fuzz target's checks).
///
/// Catches a server that writes to a connection it closed, answers a stale report, returns
/// a deadline it was already woken for, or lets its dedup cache or receipts table grow.
#[test]
fn scripts_never_break_the_mesh_server() {
    fn prop(script: Vec<u8>) {
        mesh_server::fuzz_mesh_server(&script);
    }
    check(2_000, prop as fn(_));
}
