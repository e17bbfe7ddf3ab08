//! Property tests for the tunnel: its wire messages, each end under a scripted peer, and
//! both ends together.
//!
//! The checks live in the harness shared with the fuzz targets (`fuzz/src/driver.rs` and
//! `fuzz/src/tunnel/`, included below): the checked driver asserts the machine contract
//! after every call (ids, no output on a closed connection, no busy timeout), the tunnel
//! book asserts the tunnel's rules (authentication, stream ids and routes, credit both ways,
//! bytes intact, closes, pause/resume, deadlines), and the pair compares two wired ends
//! with a reference model. The properties here feed them generated inputs, and add what the
//! harness cannot know: that what was encoded is what comes back.
//!
//! Each property says what it would catch. `QUICKCHECK_TESTS=N` runs N cases per property
//! (by default 300, 5,000 of the cheap frame property, 100 of the end-to-end one).

#[path = "../../fuzz/src/driver.rs"]
mod driver;
mod support;
#[path = "../../fuzz/src/tunnel/mod.rs"]
mod tunnel;

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use support::{below, check};
use switchyard_core::tunnel::mux::MuxConfig;
use switchyard_core::wire::frame::MAX_PAYLOAD;
use switchyard_core::wire::proxy::{self, ProxyAddrs, ProxyVersion};
use switchyard_core::wire::tunnel::{StreamAddrs, StreamId, TunnelMsg, MAX_DATA, MAX_REASON, MAX_ROUTE, PROOF_LEN};
use switchyard_core::wire::{Frame, FrameDecoder, FrameType};
use tunnel::pair::{Entry, Scenario, Shut, StreamPlan};
use tunnel::wire::check_tunnel_frame;

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// Every message encodes to one frame that decodes back to the same message (reasons over
/// 256 bytes come back cut at the last character boundary within 256), and that frame is
/// judged valid by the spec's reading and re-encodes to itself.
///
/// Catches an encoder and decoder that disagree on a field's offset, width or byte order
/// (stream ids and window increments are u32, tokens u64, all big-endian), a `Data` frame
/// whose length field is wrong at 65,531 bytes, a reason cut inside a character (which
/// the decoder would then refuse as invalid UTF-8), and an `Open` whose client and
/// entrance addresses (IPv4 or IPv6, either order) come back swapped, cut, or lost.
#[test]
fn messages_round_trip() {
    fn prop(msg: ArbMsg) {
        let wire = msg.0.to_bytes();
        let mut buf = bytes::BytesMut::from(&wire[..]);
        let frame = FrameDecoder::default().decode(&mut buf).expect("one frame").expect("whole");
        assert!(buf.is_empty(), "{:?} encoded as more than one frame", msg.0);
        let decoded = check_tunnel_frame(frame).unwrap_or_else(|e| panic!("{:?} came back as {e:?}", msg.0));
        assert_eq!(decoded, expected_after_round_trip(msg.0));
    }
    check(300, prop as fn(_));
}

/// Any frame — tunnel types 16–21 with every subtype up to 5 and payload lengths at and
/// around each message's sizes, other types, arbitrary payloads — is judged without a panic,
/// exactly as the spec's reading judges it.
///
/// Catches a decoder that panics on a short payload (slicing a nonce out of 31 bytes),
/// accepts a `Hello` of 34 bytes, a route with a space or of 33 bytes, a reason that is
/// not UTF-8, or an `Open` address of family 5 or cut short, or refuses an empty route or
/// a 256-byte reason.
#[test]
fn any_frame_is_judged_as_the_spec_says() {
    fn prop(frame: ArbFrame) {
        let _ = check_tunnel_frame(frame.0);
    }
    // Cheap, and one bad byte in the right field is a rare draw: many cases.
    check(5000, prop as fn(_));
}

// ---------------------------------------------------------------------------------------
// PROXY protocol headers
// ---------------------------------------------------------------------------------------

/// Every header decodes back to what it was written for: the same version, and the
/// addresses as the spec has the encoder write them (IPv4-mapped ones as IPv4; families
/// that differ as v1 `UNKNOWN`, or in v2 both as IPv6), taking exactly the header's bytes
/// when the client's first bytes follow it; the decoder's own contract holds on it too.
///
/// Catches source and destination swapped, ports in the wrong byte order or text form, a
/// v2 length that does not match the addresses, an IPv6 text form the v1 reader cannot
/// parse, and a header that swallows the stream's first byte or leaves one of its own.
#[test]
fn proxy_headers_round_trip() {
    fn prop(h: ArbProxy) {
        let header = proxy::to_bytes(h.version, h.addrs);
        let stream = [&header[..], b"GET / HTTP/1.1\r\n"].concat();
        let (decoded, n) = tunnel::proxy::check_decode(&stream).expect("valid").expect("whole");
        assert_eq!((decoded, n), (tunnel::proxy::expected_header(h.version, h.addrs), header.len()));
    }
    check(1000, prop as fn(_));
}

/// Any bytes near a header — a valid one cut, extended, or with one byte changed, or noise —
/// are judged by the decoder under its contract (see `fuzz/src/tunnel/proxy.rs`).
///
/// Catches a panic on a cut v2 header, waiting on a v1 line past 107 bytes, and a prefix
/// of a header taken for a whole one.
#[test]
fn any_bytes_are_judged_by_the_proxy_decoder() {
    fn prop(h: ArbProxy, at: usize, byte: u8, how: u8) {
        let mut bytes = proxy::to_bytes(h.version, h.addrs).to_vec();
        match how % 4 {
            0 => bytes.truncate(at % (bytes.len() + 1)),
            1 => bytes.extend(std::iter::repeat(byte).take(at % 200)),
            2 => {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            _ => bytes = (0..at % 300).map(|i| (i as u8).wrapping_mul(byte)).collect(),
        }
        tunnel::proxy::fuzz_proxy_header(&bytes);
    }
    check(2000, prop as fn(_, _, _, _));
}

// ---------------------------------------------------------------------------------------
// The machines
// ---------------------------------------------------------------------------------------

/// The fuzz targets' bodies on random scripts: each end under arbitrary sequences of frames
/// and driver events, the pair on arbitrary scenarios, and arbitrary frame streams. Keeps
/// the targets runnable between fuzzing campaigns, and finds the shallow bugs on every
/// `cargo test`.
#[test]
fn fuzz_targets_hold_on_random_scripts() {
    fn prop(script: Script) {
        tunnel::wire::fuzz_tunnel_msg(&script.0);
        tunnel::script::fuzz_tunnel_remote(&script.0);
        tunnel::script::fuzz_tunnel_local(&script.0);
        tunnel::pair::fuzz_tunnel_pair(&script.0);
    }
    check(300, prop as fn(_));
}

/// The scripted prologues still do what they say: after each, the end has a stream open.
/// (If a change to the script format breaks them, the properties above lose their depth
/// silently; this makes it loud.)
#[test]
fn prologues_open_a_stream() {
    assert_eq!(tunnel::script::streams_after(&tunnel::script::remote_prologue(), false), 1);
    assert_eq!(tunnel::script::streams_after(&tunnel::script::local_prologue(), true), 1);
}

/// Scripts that pin what fuzzing found or must never miss, each a prologue and the steps
/// after it (see `fuzz/src/tunnel/script.rs` for how a byte picks a step). Each fails on
/// the bug it names: the bugs were fixed in `core/src/tunnel`, and the rules were checked
/// by breaking a scratch copy of the core.
#[test]
fn regressions_stay_fixed() {
    use tunnel::script::{fuzz_tunnel_local, fuzz_tunnel_remote, local_prologue, local_setup, remote_prologue};
    let deliver = [11, 3, 0];
    // The local end came up on a Welcome sent straight after its Hello, from a remote end
    // that never proved it has the secret.
    fuzz_tunnel_local(&[&local_setup()[..], &[0, 1, 1], &[2, 0, 13, 4], &deliver].concat());
    // The remote end refused a stream whose target did not accept in time, but left the
    // connect open: time jumps to that deadline.
    fuzz_tunnel_remote(&[&remote_prologue()[..], &[27, 2]].concat());
    // The local end wrote the error line of a Refuse after the Fin had half-closed the
    // client.
    let (fin, refuse) = ([2, 0, 9, 0, 0], [2, 0, 11, 0, 0, 0, 0, 0, 0]); // reason: 0 bytes (a u32)
    fuzz_tunnel_local(&[&local_prologue()[..], &fin, &refuse, &deliver].concat());
    // The peer's limits are enforced by closing the carrier: a window past 2^31 - 1, Data
    // one byte past the credit, an Open that reuses an id.
    fuzz_tunnel_local(&[&local_prologue()[..], &[2, 0, 8, 1, 0, 0], &deliver].concat());
    fuzz_tunnel_local(&[&local_prologue()[..], &[2, 0, 5, 0, 0, 1, 7], &deliver].concat());
    fuzz_tunnel_remote(&[&remote_prologue()[..], &[2, 0, 3, 0, 2], &deliver].concat());
}

/// The remote end's script reaches publishing: the scripted local end (version 3) asks for
/// port 12000, and the driver binds it, so the port is published; asked again, or asked for
/// a port the driver cannot bind, it is not; and at the teardown every published port is
/// closed with its carrier (the script's own check).
#[test]
fn scripts_reach_publishing() {
    use tunnel::script::{fuzz_tunnel_remote, published_after, remote_prologue};
    let deliver = [11, 3, 0];
    let (ask_12000, ask_12001) = ([2, 0, 13, 5, 0], [2, 0, 13, 5, 1]);
    let (bind, refuse) = ([0, 1], [0, 3]);
    let published = [&remote_prologue()[..], &ask_12000, &deliver, &bind].concat();
    assert_eq!(published_after(&published), [12000]);
    fuzz_tunnel_remote(&published);
    let twice = [&published[..], &ask_12000, &deliver].concat();
    assert_eq!(published_after(&twice), [12000]);
    fuzz_tunnel_remote(&twice);
    assert_eq!(published_after(&[&remote_prologue()[..], &ask_12001, &deliver, &bind].concat()), [12001]);
    let in_use = [&remote_prologue()[..], &ask_12001, &deliver, &refuse].concat();
    assert_eq!(published_after(&in_use), Vec::<u16>::new());
    fuzz_tunnel_remote(&in_use);
}

/// A local and a remote end wired together in memory: clients on the prefix entrance (with
/// a `9090:` or `7777:` prefix, or none) and on a static forward send arbitrary bytes,
/// targets answer, either side shuts first, carrier bytes move in chunks of any size, `Sent`
/// arrives at arbitrary times, and windows, stream buffers and carrier thresholds are as
/// small as 1–16 bytes. Every stream's bytes reach the right target and come back intact, in
/// order, once; each side sees the other's end of input after the last byte; both ends end
/// with no stream, no connection but the carrier, and nothing unsent (see
/// `fuzz/src/tunnel/pair.rs`).
///
/// Catches bytes lost, duplicated or crossed between streams, a prefix not stripped, a
/// stream that stalls (credit never returned, reads never resumed, a `Fin` that overtakes
/// data or is never sent), and streams or connections that outlive their end.
#[test]
fn streams_arrive_intact() {
    fn prop(scenario: Scenario) {
        tunnel::pair::run(&scenario);
    }
    check(100, prop as fn(_));
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn array(g: &mut Gen) -> [u8; PROOF_LEN] {
    std::array::from_fn(|_| u8::arbitrary(g))
}

/// What a message is after encoding and decoding: the same, with reasons cut to the
/// longest prefix of at most 256 bytes that ends on a character boundary.
fn expected_after_round_trip(msg: TunnelMsg) -> TunnelMsg {
    let cut = |reason: String| {
        let end = (0..=reason.len().min(MAX_REASON)).rev().find(|&i| reason.is_char_boundary(i)).unwrap_or(0);
        reason[..end].to_owned()
    };
    match msg {
        TunnelMsg::Refused { reason } => TunnelMsg::Refused { reason: cut(reason) },
        TunnelMsg::Refuse { stream, reason } => TunnelMsg::Refuse { stream, reason: cut(reason) },
        TunnelMsg::Reset { stream, reason } => TunnelMsg::Reset { stream, reason: cut(reason) },
        TunnelMsg::PublishRefused { port, reason } => TunnelMsg::PublishRefused { port, reason: cut(reason) },
        other => other,
    }
}

/// A reason: ASCII, two-, three- and four-byte characters, often around the 256-byte cut.
fn reason(g: &mut Gen) -> String {
    let len = if bool::arbitrary(g) { 240 + below(g, 40) } else { below(g, 20) };
    let mut s = String::new();
    while s.len() < len {
        s.push(*g.choose(&['a', ' ', 'é', '€', '𝄞', '\n']).expect("not empty"));
    }
    s
}

/// A port, often at the edges.
fn port(g: &mut Gen) -> u16 {
    let any = u16::arbitrary(g);
    *g.choose(&[0, 1, 12345, u16::MAX, any]).expect("not empty")
}

/// A stream id, often at the edges (the top bit marks the remote end's ids).
fn stream_id(g: &mut Gen) -> StreamId {
    let any = u32::arbitrary(g);
    *g.choose(&[0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, u32::MAX, any]).expect("not empty")
}

/// Any tunnel message with fields at their edges.
#[derive(Clone, Debug)]
struct ArbMsg(TunnelMsg);

impl Arbitrary for ArbMsg {
    fn arbitrary(g: &mut Gen) -> Self {
        let route = |g: &mut Gen| -> String {
            let len = if bool::arbitrary(g) { MAX_ROUTE } else { below(g, MAX_ROUTE + 1) };
            (0..len).map(|_| char::from(0x21 + below(g, 0x7e - 0x21 + 1) as u8)).collect()
        };
        ArbMsg(match below(g, 17) {
            0 => TunnelMsg::Hello { version: u8::arbitrary(g), nonce: array(g) },
            1 => TunnelMsg::Challenge { nonce: array(g), proof: array(g) },
            2 => TunnelMsg::Response { proof: array(g) },
            3 => TunnelMsg::Welcome,
            4 => TunnelMsg::Refused { reason: reason(g) },
            5 => TunnelMsg::Open { stream: stream_id(g), route: route(g), addrs: None },
            6 => {
                let some = 1 + below(g, 1000);
                let len = *g.choose(&[1, 2, 255, 256, MAX_DATA - 1, MAX_DATA, some]).expect("not empty");
                let byte = u8::arbitrary(g);
                TunnelMsg::Data { stream: stream_id(g), bytes: Bytes::from(vec![byte; len]) }
            }
            7 => {
                let any = u32::arbitrary(g);
                TunnelMsg::Window {
                    stream: stream_id(g),
                    increment: *g.choose(&[0, 1, u32::MAX, any]).expect("not empty"),
                }
            }
            8 => TunnelMsg::Fin { stream: stream_id(g) },
            9 => TunnelMsg::Refuse { stream: stream_id(g), reason: reason(g) },
            10 => TunnelMsg::Reset { stream: stream_id(g), reason: reason(g) },
            11 => TunnelMsg::Ping { token: u64::arbitrary(g) },
            12 => TunnelMsg::Pong { token: u64::arbitrary(g) },
            13 => TunnelMsg::Publish { port: port(g) },
            14 => TunnelMsg::Published { port: port(g) },
            15 => TunnelMsg::PublishRefused { port: port(g), reason: reason(g) },
            _ => {
                let addrs = StreamAddrs { client: socket_addr(g), entrance: socket_addr(g) };
                TunnelMsg::Open { stream: stream_id(g), route: route(g), addrs: Some(addrs) }
            }
        })
    }
}

/// A socket address: IPv4 or IPv6 (sometimes IPv4-mapped, loopback or unspecified), any
/// port, often at the edges.
fn socket_addr(g: &mut Gen) -> SocketAddr {
    let any = u32::arbitrary(g);
    let v4 = Ipv4Addr::from(*g.choose(&[0, 0x7f00_0001, u32::MAX, any]).expect("not empty"));
    let ip = match below(g, 4) {
        0 => IpAddr::V4(v4),
        1 => IpAddr::V6(v4.to_ipv6_mapped()),
        2 => IpAddr::V6(*g.choose(&[Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST]).expect("not empty")),
        _ => IpAddr::V6(Ipv6Addr::from(u128::arbitrary(g))),
    };
    let port = u16::arbitrary(g);
    SocketAddr::new(ip, *g.choose(&[0, 1, u16::MAX, port]).expect("not empty"))
}

/// A PROXY header to write: either version, for addresses of any families, or none.
#[derive(Clone, Debug)]
struct ArbProxy {
    version: ProxyVersion,
    addrs: Option<ProxyAddrs>,
}

impl Arbitrary for ArbProxy {
    fn arbitrary(g: &mut Gen) -> Self {
        let version = if bool::arbitrary(g) { ProxyVersion::V1 } else { ProxyVersion::V2 };
        let addrs = (below(g, 8) != 0).then(|| ProxyAddrs { source: socket_addr(g), destination: socket_addr(g) });
        ArbProxy { version, addrs }
    }
}

/// A frame aimed at the tunnel decoder: a valid message, a valid message one step off (a
/// byte short or long, or one bad byte in a route, a reason or a field), or a frame of a
/// tunnel type (or any type) with a payload length at one of the messages' sizes.
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
        let mut buf = bytes::BytesMut::from(&wire[..]);
        ArbFrame(FrameDecoder::default().decode(&mut buf).expect("valid").expect("whole"))
    }

    /// The frame one step from valid: a byte cut or added at the end (if the length field
    /// can say it), or one byte of the payload replaced by a space, a lone UTF-8 lead byte,
    /// DEL, NUL or 0xff.
    fn mutated(self, g: &mut Gen) -> ArbFrame {
        let mut payload = self.0.payload.to_vec();
        match below(g, 3) {
            0 => {
                payload.pop();
            }
            1 if payload.len() < MAX_PAYLOAD => payload.push(u8::arbitrary(g)),
            _ if payload.is_empty() => payload.push(b' '),
            _ => {
                let at = below(g, payload.len());
                payload[at] = *g.choose(&[b' ', 0xc3, 0x7f, 0, 0xff]).expect("not empty");
            }
        }
        ArbFrame(Frame::new(self.0.kind, self.0.subtype, payload))
    }

    /// Anything near the tunnel's types.
    fn random(g: &mut Gen) -> ArbFrame {
        let kind = if below(g, 8) == 0 { u8::arbitrary(g) } else { 16 + below(g, 7) as u8 };
        let subtype = if below(g, 8) == 0 { u8::arbitrary(g) } else { below(g, 6) as u8 };
        // Each message's sizes; an `Open` with two addresses is 18, 30 or 42 bytes and a route.
        let sizes = [0, 1, 2, 3, 4, 5, 7, 8, 9, 18, 30, 31, 32, 33, 34, 36, 37, 42, 63, 64, 65, 258, 260, 261];
        let len = if below(g, 6) == 0 { below(g, 300) } else { *g.choose(&sizes).expect("not empty") };
        let payload: Vec<u8> = (0..len)
            .map(|_| match below(g, 6) {
                0 => u8::arbitrary(g),
                1 => b' ',
                2 => 0xc3, // a lone UTF-8 lead byte
                _ => b'a' + below(g, 26) as u8,
            })
            .collect();
        ArbFrame(Frame::new(FrameType(kind), subtype, payload))
    }
}

/// A fuzz input: up to 4 KiB of arbitrary bytes, sometimes long runs of one byte (which the
/// scripts read as the same step repeated); half of them start with a prologue that gets a
/// stream open at one end, so random steps start from there.
#[derive(Clone, Debug)]
struct Script(Vec<u8>);

impl Arbitrary for Script {
    fn arbitrary(g: &mut Gen) -> Self {
        let len = below(g, 4096);
        let mut bytes = match below(g, 4) {
            0 => tunnel::script::remote_prologue(),
            1 => tunnel::script::local_prologue(),
            _ => Vec::with_capacity(len),
        };
        let len = bytes.len() + len;
        while bytes.len() < len {
            let byte = u8::arbitrary(g);
            let run = if below(g, 8) == 0 { 1 + below(g, 32) } else { 1 };
            bytes.extend(std::iter::repeat(byte).take(run));
        }
        Script(bytes)
    }

    /// Cuts the script short, or drops a run from its middle: a few candidates per step,
    /// so a failing script of thousands of bytes shrinks in a few dozen runs. (Steps are
    /// read in order, so a prefix replays the start of the run exactly.)
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let bytes = self.0.clone();
        let len = bytes.len();
        let cuts = [len / 2, len * 3 / 4, len.saturating_sub(1)];
        let prefixes = cuts.into_iter().filter(move |&n| n < len).map({
            let bytes = bytes.clone();
            move |n| Script(bytes[..n].to_vec())
        });
        let holes = (1..4)
            .map(move |q| (len * (q - 1) / 4, len * q / 4))
            .filter(|(a, b)| a < b)
            .map(move |(a, b)| Script([&bytes[..a], &bytes[b..]].concat()));
        Box::new(prefixes.chain(holes))
    }
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Self {
        let mux = MuxConfig {
            initial_window: *g.choose(&[16, 64, 1000, 65536, 4 << 20]).expect("not empty"),
            stream_buffer: *g.choose(&[1, 7, 300, 256 << 10]).expect("not empty"),
            carrier_high: *g.choose(&[1, 40, 2000, 1 << 20]).expect("not empty"),
            max_streams: 16,
        };
        let bytes = |g: &mut Gen| -> Vec<u8> {
            let len = *g.choose(&[0, 1, 10, 100, 1000, 5000]).expect("not empty");
            let seed = u8::arbitrary(g);
            (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
        };
        let streams = (0..1 + below(g, 6))
            .map(|_| StreamPlan {
                entry: g
                    .choose(&[Entry::Forward, Entry::Prefix("9090"), Entry::Prefix("7777"), Entry::Default])
                    .cloned()
                    .expect(""),
                up: bytes(g),
                down: bytes(g),
                shut: *g.choose(&[Shut::ClientFirst, Shut::TargetFirst, Shut::Either]).expect("not empty"),
            })
            .collect();
        Scenario { seed: u64::arbitrary(g), mux, streams }
    }

    /// Fewer streams, then shorter bytes, then default limits; the seed stays.
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let mut smaller = Vec::new();
        for i in 0..self.streams.len() {
            let mut s = self.clone();
            s.streams.remove(i);
            if !s.streams.is_empty() {
                smaller.push(s);
            }
        }
        for i in 0..self.streams.len() {
            for half in [true, false] {
                let mut s = self.clone();
                let bytes = if half { &mut s.streams[i].up } else { &mut s.streams[i].down };
                if !bytes.is_empty() {
                    bytes.truncate(bytes.len() / 2);
                    smaller.push(s);
                }
            }
        }
        Box::new(smaller.into_iter())
    }
}
