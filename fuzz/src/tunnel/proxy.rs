//! PROXY protocol headers (`switchyard_core::wire::proxy`): the body of the `proxy_header`
//! target, and the expected result of a round trip, for `core/tests/tunnel_props.rs`.

use std::net::{IpAddr, SocketAddr};
use switchyard_core::wire::proxy::{self, ProxyAddrs, ProxyHeader, ProxyVersion, V1_MAX, V2_HEADER};

/// Body of the `proxy_header` target: [`proxy::decode`] on arbitrary bytes, checked by
/// [`check_decode`].
pub fn fuzz_proxy_header(data: &[u8]) {
    let _ = check_decode(data);
}

/// Decodes `input` and asserts the decoder's contract:
///
/// - **bounded**: it asks for more only while a header could still fit (a v1 line under 107
///   bytes, a v2 header under 16 bytes plus its length field), and an accepted header is at
///   most that long;
/// - **incremental**: every proper prefix of an accepted header asks for more, so a reader
///   that decodes after each read finds the same header at the same length;
/// - **sound**: re-encoding what was read and decoding it again gives the same header, as
///   [`expected_header`] says the encoder writes it (v2 TLVs and v1 text forms are not
///   kept).
///
/// Catches a decoder that panics on a short or odd input, waits for ever on bytes that can
/// no longer be a header (a peer could make a reader buffer without bound), or that takes
/// a prefix for a whole header.
pub fn check_decode(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, proxy::ProxyError> {
    let result = proxy::decode(input);
    match &result {
        Ok(None) => {
            let v2_len = input.get(14..16).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            let bound = if input.first() == Some(&b'P') { V1_MAX } else { V2_HEADER + v2_len };
            assert!(input.len() < bound, "{input:?}: more bytes asked for past {bound}");
        }
        Ok(Some((header, n))) => {
            let bound = match header.version {
                ProxyVersion::V1 => V1_MAX,
                ProxyVersion::V2 => V2_HEADER + usize::from(u16::MAX),
            };
            assert!(*n <= input.len() && *n <= bound, "{input:?}: a header of {n} bytes");
            for k in 0..*n {
                assert_eq!(proxy::decode(&input[..k]), Ok(None), "{input:?}: its first {k} bytes judged whole");
            }
            let again = proxy::to_bytes(header.version, header.addrs);
            let (reread, m) = proxy::decode(&again).expect("re-encoded").expect("whole");
            let want = expected_header(header.version, header.addrs);
            assert_eq!((reread, m), (want, again.len()), "{input:?}: {header:?} re-encodes as {again:?}");
        }
        Err(_) => {}
    }
    result
}

/// What a header of `version` for `addrs` decodes to, from the spec: IPv4-mapped addresses
/// as IPv4; then v1 names one protocol for both (`UNKNOWN` when the families differ), and
/// v2 sends differing families both as IPv6, the IPv4 one mapped.
pub fn expected_header(version: ProxyVersion, addrs: Option<ProxyAddrs>) -> ProxyHeader {
    let unmap = |a: SocketAddr| match a.ip() {
        IpAddr::V6(ip) => ip.to_ipv4_mapped().map_or(a, |v4| SocketAddr::new(v4.into(), a.port())),
        IpAddr::V4(_) => a,
    };
    let map = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(ip.to_ipv6_mapped().into(), a.port()),
        IpAddr::V6(_) => a,
    };
    let addrs = addrs.map(|a| ProxyAddrs { source: unmap(a.source), destination: unmap(a.destination) });
    let addrs = match addrs {
        Some(a) if a.source.is_ipv4() == a.destination.is_ipv4() => Some(a),
        Some(_) if version == ProxyVersion::V1 => None,
        Some(a) => Some(ProxyAddrs { source: map(a.source), destination: map(a.destination) }),
        None => None,
    };
    ProxyHeader { version, addrs }
}
