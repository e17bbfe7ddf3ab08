//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2): the bytes
//! a proxy writes to a server before the client's own, so the server learns the client's
//! address. The tunnel's remote end writes one to the targets of routes set up with
//! `proxy=v1` or `proxy=v2` (`docs/PROTOCOL.md` §3.5).
//!
//! - **v1** is one text line of at most 107 bytes:
//!   `PROXY TCP4 192.0.2.7 198.51.100.1 51000 7000\r\n` (`TCP6` with IPv6 addresses), or
//!   `PROXY UNKNOWN\r\n` when the addresses are not known or not of one family.
//! - **v2** is binary: the 12-byte signature, a version/command byte (`0x21`: version 2,
//!   PROXY; `0x20`: LOCAL, no addresses), a family byte (`0x11` TCP over IPv4, `0x21` TCP
//!   over IPv6, `0x00` unspecified), the length of what follows (u16 BE), then source
//!   address, destination address, source port, destination port.
//!
//! Mixed families: an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, what a dual-stack
//! socket reports for an IPv4 peer) is taken as the IPv4 address first. If the two still
//! differ, v1 says `UNKNOWN` (its line has one protocol for both), and v2 sends both as IPv6,
//! the IPv4 one mapped, so the client's address is not lost. Both follow what HAProxy does.
//!
//! [`decode`] reads a header back; the tests and the `proxy_header` fuzz target use it.

use bytes::{BufMut, Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, `\r\n` included: the spec's bound, for `UNKNOWN` followed by the
/// longest IPv6 addresses and ports.
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version/command, family, length.
pub const V2_HEADER: usize = 16;

/// Which version of the header a route writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyVersion {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    /// The name the CLI and logs use: `v1` or `v2`.
    pub fn name(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }
}

/// The two ends of the connection a header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddrs {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Its version.
    pub version: ProxyVersion,
    /// The addresses; `None` for v1 `UNKNOWN`, v2 LOCAL, or v2 with the unspecified family.
    pub addrs: Option<ProxyAddrs>,
}

/// Bytes that are not a valid PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Neither `PROXY ` nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A v1 line without `\r\n` within 107 bytes.
    #[error("PROXY v1 line longer than {V1_MAX} bytes")]
    TooLong,
    /// A v1 line whose fields are wrong.
    #[error("malformed PROXY v1 line: {0}")]
    BadLine(&'static str),
    /// A v2 version/command byte other than 0x20 or 0x21.
    #[error("PROXY v2 version/command byte {0:#04x} is not 0x20 or 0x21")]
    BadCommand(u8),
    /// A v2 family byte other than TCP over IPv4 or IPv6, or unspecified.
    #[error("PROXY v2 family byte {0:#04x} is not supported")]
    BadFamily(u8),
    /// A v2 length too short for its family's addresses.
    #[error("PROXY v2 length {len} is too short for family {family:#04x}")]
    BadLength {
        /// The family byte.
        family: u8,
        /// The length field.
        len: usize,
    },
}

/// IPv4-mapped IPv6 addresses as the IPv4 addresses they are.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Appends the header `version` writes for `addrs` (`None`: not known) to `out`.
pub fn encode(version: ProxyVersion, addrs: Option<ProxyAddrs>, out: &mut BytesMut) {
    let addrs = addrs.map(|a| (unmapped(a.source), unmapped(a.destination)));
    match version {
        ProxyVersion::V1 => match addrs {
            Some((src, dst)) if src.is_ipv4() == dst.is_ipv4() => {
                let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
                let line = format!("PROXY {proto} {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port());
                out.put_slice(line.as_bytes());
            }
            _ => out.put_slice(b"PROXY UNKNOWN\r\n"),
        },
        ProxyVersion::V2 => {
            out.put_slice(&V2_SIGNATURE);
            match addrs {
                None => {
                    out.put_slice(&[0x20, 0x00]);
                    out.put_u16(0);
                }
                Some((src, dst)) => {
                    out.put_u8(0x21);
                    match (src.ip(), dst.ip()) {
                        (IpAddr::V4(s), IpAddr::V4(d)) => {
                            out.put_u8(0x11);
                            out.put_u16(12);
                            out.put_slice(&s.octets());
                            out.put_slice(&d.octets());
                        }
                        (s, d) => {
                            out.put_u8(0x21);
                            out.put_u16(36);
                            out.put_slice(&as_v6(s).octets());
                            out.put_slice(&as_v6(d).octets());
                        }
                    }
                    out.put_u16(src.port());
                    out.put_u16(dst.port());
                }
            }
        }
    }
}

/// The header as one buffer (see [`encode`]).
pub fn to_bytes(version: ProxyVersion, addrs: Option<ProxyAddrs>) -> Bytes {
    let mut out = BytesMut::with_capacity(V1_MAX);
    encode(version, addrs, &mut out);
    out.freeze()
}

/// Reads a header from the start of `input`: `Ok(Some((header, n)))` when the first `n`
/// bytes are one, `Ok(None)` when they could still become one (more bytes needed), an error
/// as soon as they cannot. v2 TLVs after the addresses are skipped.
pub fn decode(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let v1 = b"PROXY ";
    let starts = |sig: &[u8]| sig.starts_with(&input[..input.len().min(sig.len())]);
    if !input.is_empty() && starts(v1) {
        decode_v1(input)
    } else if starts(&V2_SIGNATURE) {
        decode_v2(input)
    } else {
        Err(ProxyError::NotProxy)
    }
}

fn decode_v1(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &input[..input.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= V1_MAX { Err(ProxyError::TooLong) } else { Ok(None) };
    };
    let line = std::str::from_utf8(&input[..end]).map_err(|_| ProxyError::BadLine("not ASCII"))?;
    let header = |addrs| Ok(Some((ProxyHeader { version: ProxyVersion::V1, addrs }, end + 2)));
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked by `decode`
    let v4 = match fields.next() {
        Some("UNKNOWN") => return header(None),
        Some("TCP4") => true,
        Some("TCP6") => false,
        _ => return Err(ProxyError::BadLine("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut field = || fields.next().ok_or(ProxyError::BadLine("too few fields"));
    let ip = |text: &str| -> Result<IpAddr, ProxyError> {
        let ip = if v4 {
            text.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
        } else {
            text.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
        };
        ip.ok_or(ProxyError::BadLine("address is not of the line's protocol"))
    };
    // Ports are decimal without leading zeros.
    let port = |text: &str| -> Result<u16, ProxyError> {
        match text.parse::<u16>() {
            Ok(p) if p.to_string() == text => Ok(p),
            _ => Err(ProxyError::BadLine("port is not 0-65535 in decimal")),
        }
    };
    let (src, dst) = (ip(field()?)?, ip(field()?)?);
    let (sport, dport) = (port(field()?)?, port(field()?)?);
    if fields.next().is_some() {
        return Err(ProxyError::BadLine("too many fields"));
    }
    header(Some(ProxyAddrs { source: SocketAddr::new(src, sport), destination: SocketAddr::new(dst, dport) }))
}

fn decode_v2(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if input.len() < V2_HEADER {
        return Ok(None);
    }
    let (command, family) = (input[12], input[13]);
    let len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let need = match family {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        other => return Err(ProxyError::BadFamily(other)),
    };
    if command != 0x20 && command != 0x21 {
        return Err(ProxyError::BadCommand(command));
    }
    if len < need {
        return Err(ProxyError::BadLength { family, len });
    }
    if input.len() < V2_HEADER + len {
        return Ok(None);
    }
    let a = &input[V2_HEADER..];
    let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
    let addrs = match family {
        // LOCAL: the connection is the proxy's own; whatever addresses follow are ignored.
        _ if command == 0x20 => None,
        0x11 => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
            Some(ProxyAddrs { source: SocketAddr::new(ip(0), port(8)), destination: SocketAddr::new(ip(4), port(10)) })
        }
        0x21 => {
            let ip = |at: usize| {
                let octets: [u8; 16] = a[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Some(ProxyAddrs {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => None,
    };
    Ok(Some((ProxyHeader { version: ProxyVersion::V2, addrs }, V2_HEADER + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(source: &str, destination: &str) -> Option<ProxyAddrs> {
        Some(ProxyAddrs { source: source.parse().unwrap(), destination: destination.parse().unwrap() })
    }

    #[test]
    fn v1_lines_are_as_the_spec_writes_them() {
        let line = |a| to_bytes(ProxyVersion::V1, a);
        assert_eq!(
            &line(addrs("127.0.0.77:51000", "127.0.0.1:7090"))[..],
            b"PROXY TCP4 127.0.0.77 127.0.0.1 51000 7090\r\n"
        );
        assert_eq!(&line(addrs("[2001:db8::7]:1", "[::1]:65535"))[..], b"PROXY TCP6 2001:db8::7 ::1 1 65535\r\n");
        assert_eq!(&line(addrs("[::ffff:10.0.0.1]:5", "10.0.0.2:6"))[..], b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n");
        assert_eq!(&line(addrs("10.0.0.1:5", "[::1]:6"))[..], b"PROXY UNKNOWN\r\n");
        assert_eq!(&line(None)[..], b"PROXY UNKNOWN\r\n");
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let a = addrs(&format!("[{longest}]:65535"), &format!("[{longest}]:65535"));
        // The spec's 107 leaves room for `UNKNOWN` before such addresses; `TCP6` needs 104.
        assert_eq!(line(a).len(), V1_MAX - 3);
    }

    #[test]
    fn v2_headers_are_as_the_spec_writes_them() {
        let h = to_bytes(ProxyVersion::V2, addrs("192.0.2.7:51000", "198.51.100.1:7000"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1, 0xc7, 0x38, 0x1b, 0x58]);
        assert_eq!(&h[..], &want[..]);
        let local = to_bytes(ProxyVersion::V2, None);
        assert_eq!(&local[12..], &[0x20, 0x00, 0, 0]);
        // Mixed families: both as IPv6, the IPv4 one mapped.
        let mixed = to_bytes(ProxyVersion::V2, addrs("192.0.2.7:1", "[::1]:2"));
        assert_eq!((mixed[13], mixed.len()), (0x21, V2_HEADER + 36));
        let (header, _) = decode(&mixed).unwrap().unwrap();
        assert_eq!(header.addrs, addrs("[::ffff:192.0.2.7]:1", "[::1]:2"));
    }

    #[test]
    fn decoding_waits_for_a_whole_header_and_refuses_bad_ones() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET /";
        assert_eq!(decode(&line[..10]), Ok(None));
        let (header, n) = decode(line).unwrap().unwrap();
        assert_eq!((header.addrs, n), (addrs("1.2.3.4:1", "5.6.7.8:2"), line.len() - 5));
        assert_eq!(
            decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
            Err(ProxyError::BadLine("port is not 0-65535 in decimal"))
        );
        assert_eq!(
            decode(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(ProxyError::BadLine("address is not of the line's protocol"))
        );
        assert_eq!(decode(&[b'P'; 200][..]), Err(ProxyError::NotProxy));
        assert_eq!(decode(format!("PROXY UNKNOWN {}", "x".repeat(120)).as_bytes()), Err(ProxyError::TooLong));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        let v2 = to_bytes(ProxyVersion::V2, addrs("[::1]:1", "[::2]:2"));
        assert_eq!(decode(&v2[..v2.len() - 1]), Ok(None));
        let mut bad = v2.to_vec();
        bad[12] = 0x22;
        assert_eq!(decode(&bad), Err(ProxyError::BadCommand(0x22)));
        bad[12] = 0x21;
        bad[15] = 35;
        assert_eq!(decode(&bad), Err(ProxyError::BadLength { family: 0x21, len: 35 }));
        bad[13] = 0x12;
        assert_eq!(decode(&bad), Err(ProxyError::BadFamily(0x12)));
    }
}
