//! Address cookies: how the rendezvous learns that a source really receives at the address
//! it sends from, without keeping state for sources it has not heard back from.
//!
//! A cookie is `HMAC-SHA256(key, "switchyard rendezvous cookie" | period u64 BE | ip | port)`
//! cut to 16 bytes, where `period` counts [`COOKIE_PERIOD`]s of the machine's clock and the
//! key is drawn from the machine's environment. Only the rendezvous can make one, and one
//! made for another address or more than two periods ago does not pass. A spoofed source
//! never sees the cookie sent to the address it forged, so it cannot register there.

use crate::time::Instant;
use crate::wire::punch::{Cookie, COOKIE_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long a cookie stays current; the one before the current period is still accepted,
/// so a cookie lives between one and two periods.
pub const COOKIE_PERIOD: Duration = Duration::from_secs(60);

const LABEL: &[u8] = b"switchyard rendezvous cookie";

/// Makes and checks the cookies of one rendezvous.
#[derive(Debug)]
pub struct Cookies {
    key: [u8; 32],
}

impl Cookies {
    /// Cookies keyed with `key` (from [`Env::secret`](crate::Env::secret)).
    pub fn new(key: [u8; 32]) -> Cookies {
        Cookies { key }
    }

    fn mac(&self, period: u64, addr: SocketAddr) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(LABEL);
        mac.update(&period.to_be_bytes());
        match addr.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&addr.port().to_be_bytes());
        mac
    }

    fn period(now: Instant) -> u64 {
        now.since_zero().as_secs() / COOKIE_PERIOD.as_secs()
    }

    /// The cookie for `addr` now.
    pub fn issue(&self, now: Instant, addr: SocketAddr) -> Cookie {
        let tag = self.mac(Cookies::period(now), addr).finalize().into_bytes();
        tag[..COOKIE_LEN].try_into().expect("a SHA-256 tag is longer than a cookie")
    }

    /// True when `cookie` was issued for `addr` in this period or the one before; compared
    /// in constant time.
    pub fn check(&self, now: Instant, addr: SocketAddr, cookie: &Cookie) -> bool {
        let period = Cookies::period(now);
        [Some(period), period.checked_sub(1)]
            .into_iter()
            .flatten()
            .any(|p| self.mac(p, addr).verify_truncated_left(cookie).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_passes_for_its_address_for_one_to_two_periods_only() {
        let cookies = Cookies::new([7; 32]);
        let (a, b): (SocketAddr, SocketAddr) = ("192.0.2.1:4000".parse().unwrap(), "192.0.2.1:4001".parse().unwrap());
        let at = |secs| Instant::from_secs(secs);
        let cookie = cookies.issue(at(30), a);
        assert!(cookies.check(at(30), a, &cookie));
        assert!(cookies.check(at(119), a, &cookie), "still good in the next period");
        assert!(!cookies.check(at(120), a, &cookie), "two periods on, stale");
        assert!(!cookies.check(at(30), b, &cookie), "another port");
        assert!(!cookies.check(at(30), a, &[0; COOKIE_LEN]), "no cookie");
        assert!(!Cookies::new([8; 32]).check(at(30), a, &cookie), "another rendezvous's key");
    }
}
