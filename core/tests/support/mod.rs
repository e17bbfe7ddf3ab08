//! What the property-test files share: how many cases a property runs, uniform picks, the
//! read sizes a stream is cut into, and the message fields of `docs/PROTOCOL.md` §4.1 that
//! the mesh and punch properties both generate and encode. Each test file includes this
//! with `mod support;` and uses what it needs.

#![allow(dead_code)]

use quickcheck::{Arbitrary, Gen, QuickCheck, Testable};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use switchyard_core::wire::mesh::{is_valid_name, MAX_NAME};

/// Runs `property` on `default` generated cases, or `QUICKCHECK_TESTS` if that is set.
pub fn check<A: Testable>(default: u64, property: A) {
    let mut qc = QuickCheck::new();
    if std::env::var_os("QUICKCHECK_TESTS").is_none() {
        qc = qc.tests(default);
    }
    qc.quickcheck(property);
}

/// A uniform pick from `0..n` (`n > 0`).
pub fn below(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n
}

/// Read sizes, cycled over a stream: mostly tiny, sometimes empty reads, sometimes large
/// ones. No sizes means the whole stream in one read.
#[derive(Clone, Debug)]
pub struct Chunking(pub Vec<u8>);

impl Arbitrary for Chunking {
    fn arbitrary(g: &mut Gen) -> Self {
        let sizes = (0..below(g, 6))
            .map(|_| match below(g, 8) {
                0 => 0,
                1..=3 => 1 + below(g, 3),
                4..=5 => 1 + below(g, 16),
                _ => below(g, 256),
            })
            .map(|n| n as u8)
            .collect();
        Chunking(sizes)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Chunking))
    }
}

// ---------------------------------------------------------------------------------------
// The fields of `docs/PROTOCOL.md` §4.1, shared by the mesh messages and the punch
// datagrams: generators with values at their edges, and the spec's encoding, written here
// without the codec.
// ---------------------------------------------------------------------------------------

/// One of `items` (not empty).
pub fn pick<T: Copy>(g: &mut Gen, items: &[T]) -> T {
    *g.choose(items).expect("not empty")
}

/// A string of exactly `len` bytes: characters from `pool` (or any `char` that `keep`
/// accepts), filled with ASCII where a wide character would overrun.
pub fn text(g: &mut Gen, len: usize, pool: &[char], keep: impl Fn(char) -> bool) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        let mut c = if below(g, 4) == 0 { char::arbitrary(g) } else { pick(g, pool) };
        if !keep(c) || s.len() + c.len_utf8() > len {
            c = char::from(b'a' + below(g, 26) as u8);
        }
        s.push(c);
    }
    s
}

/// A valid name (a mesh user's name, a punch id): often 1 or 32 bytes, ASCII and
/// multi-byte characters (a soft hyphen, a zero-width space: not whitespace, so allowed).
pub fn name(g: &mut Gen) -> String {
    let len = match below(g, 4) {
        0 => 1,
        1 => MAX_NAME,
        _ => 1 + below(g, MAX_NAME),
    };
    let pool = ['B', 'o', '_', '-', '!', '~', '0', 'é', 'ß', '€', '名', '𝄞', '\u{ad}', '\u{200b}'];
    let name = text(g, len, &pool, |c| is_valid_name(c.encode_utf8(&mut [0; 4])));
    assert!(is_valid_name(&name), "generated an invalid name {name:?}");
    name
}

/// A body of at most `max` bytes: often empty, `max - 1` or `max` bytes; any UTF-8,
/// whitespace and controls included.
pub fn body(g: &mut Gen, max: usize) -> String {
    let len = match below(g, 6) {
        0 => 0,
        1 => max,
        2 => max - 1,
        _ => below(g, 200),
    };
    text(g, len, &['h', 'i', ' ', '\n', '\t', '\0', 'é', '€', '𝄞'], |_| true)
}

/// A reason: ASCII and two-, three- and four-byte characters, often around the cut at
/// `max` bytes (which then falls inside a character).
pub fn reason(g: &mut Gen, max: usize) -> String {
    let len = if bool::arbitrary(g) { max - 16 + below(g, 40) } else { below(g, 20) };
    let mut s = String::new();
    while s.len() < len {
        s.push(pick(g, &['a', ' ', 'é', '€', '𝄞', '\n']));
    }
    s
}

/// An address: IPv4 or IPv6 (loopback, unspecified, IPv4-mapped, random), ports at the
/// edges.
pub fn addr(g: &mut Gen) -> SocketAddr {
    let ip = match below(g, 6) {
        0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        1 => IpAddr::V4(Ipv4Addr::from(u32::arbitrary(g))),
        2 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        3 => IpAddr::V6(Ipv4Addr::from(u32::arbitrary(g)).to_ipv6_mapped()),
        4 => IpAddr::V6(pick(g, &[Ipv6Addr::UNSPECIFIED, Ipv6Addr::from(u128::MAX)])),
        _ => IpAddr::V6(Ipv6Addr::from(u128::arbitrary(g))),
    };
    let any = u16::arbitrary(g);
    SocketAddr::new(ip, pick(g, &[0, 1, 0x1389, 0xff00, u16::MAX, any]))
}

/// An address list of at most `max`: empty, one, the most allowed, or anything in between.
pub fn addrs(g: &mut Gen, max: usize) -> Vec<SocketAddr> {
    let len = match below(g, 5) {
        0 => 0,
        1 => 1,
        2 => max,
        _ => below(g, max + 1),
    };
    (0..len).map(|_| addr(g)).collect()
}

/// 16 raw bytes (a message id, a token): all zeros, all ones, or random.
pub fn bytes16(g: &mut Gen) -> [u8; 16] {
    let random: [u8; 16] = std::array::from_fn(|_| u8::arbitrary(g));
    pick(g, &[[0; 16], [0xff; 16], random, random])
}

/// A u64 field at its edges, byte-order revealing, or random.
pub fn number(g: &mut Gen) -> u64 {
    let any = u64::arbitrary(g);
    pick(g, &[0, 1, u64::MAX, 0x0102_0304_0506_0708, any])
}

/// A payload to throw at a decoder: often one of the `sizes` that matter (the fixed-size
/// messages', the caps'), else up to 300 bytes; its bytes arbitrary, one of the `special`
/// values (families, counts, codes), a lone UTF-8 lead byte, or ASCII letters.
pub fn noisy_payload(g: &mut Gen, sizes: &[usize], special: &[u8]) -> Vec<u8> {
    let len = if below(g, 3) == 0 { below(g, 300) } else { pick(g, sizes) };
    (0..len)
        .map(|_| match below(g, 6) {
            0 => u8::arbitrary(g),
            1 => pick(g, special),
            2 => 0xc3, // a lone UTF-8 lead byte
            _ => b'a' + below(g, 26) as u8,
        })
        .collect()
}

/// Appends a name as §4.1 encodes it: length u8, then the bytes.
pub fn put_name(p: &mut Vec<u8>, name: &str) {
    p.push(name.len() as u8);
    p.extend_from_slice(name.as_bytes());
}

/// Appends an address as §4.1 encodes it: family u8 (4 or 6), the address, port u16
/// big-endian.
pub fn put_addr(p: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            p.push(4);
            p.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            p.push(6);
            p.extend_from_slice(&ip.octets());
        }
    }
    p.extend_from_slice(&[(addr.port() >> 8) as u8, addr.port() as u8]);
}

/// Appends an address list as §4.1 encodes it: count u8, then the addresses.
pub fn put_addrs(p: &mut Vec<u8>, list: &[SocketAddr]) {
    p.push(list.len() as u8);
    for a in list {
        put_addr(p, a);
    }
}

/// One frame as §2 lays it out: type, subtype, u16 big-endian length, two zero bytes, then
/// `payload`.
pub fn frame_bytes(kind: u8, subtype: u8, payload: &[u8]) -> Vec<u8> {
    let mut wire = vec![kind, subtype];
    wire.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    wire.extend_from_slice(&[0, 0]);
    wire.extend_from_slice(payload);
    wire
}

/// `reason` cut to the longest prefix of at most `max` bytes that ends on a character
/// boundary, as senders cut it.
pub fn cut_reason(reason: &str, max: usize) -> &str {
    let end = (0..=reason.len().min(max)).rev().find(|&i| reason.is_char_boundary(i)).unwrap_or(0);
    &reason[..end]
}
