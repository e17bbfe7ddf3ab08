//! Parsing `ADDR` arguments.

use std::net::{SocketAddr, ToSocketAddrs};

/// `HOST:PORT` as an address: an IP literal (`127.0.0.1:7007`, `[::1]:7007`) or a name
/// resolved once, at start-up (`localhost:7007`), taking its first address.
pub fn parse(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{s} resolves to no address")),
        Err(e) => Err(format!("expected HOST:PORT, like 127.0.0.1:7007 ({s}: {e})")),
    }
}

/// `127.0.0.1:port`, where every service listens by default.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))
}
