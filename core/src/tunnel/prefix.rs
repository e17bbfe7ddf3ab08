//! Routing by prefix: `9090:time` goes to route `9090` with `time` passed on; a first line
//! with no numeric prefix goes, untouched, to the default route.

use crate::wire::tunnel::MAX_ROUTE;

/// Most bytes read while looking for a prefix.
pub const PREFIX_CAP: usize = 64;

/// What the first bytes of a client stream say about its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixDecision {
    /// Only digits so far: more bytes are needed to tell.
    Undecided,
    /// `DIGITS:` — route `DIGITS`; the first `consumed` bytes are the prefix and are dropped.
    Route {
        /// The route name (the digits).
        route: String,
        /// Bytes of prefix, colon included.
        consumed: usize,
    },
    /// Not a prefix: the default route, every byte passed on.
    Default,
    /// More than [`MAX_ROUTE`] digits: refused.
    TooLong,
}

/// Decides the route from the first bytes of a stream. Call again as bytes arrive while it
/// says [`PrefixDecision::Undecided`]; at end of input or timeout, see [`decide_at_end`].
pub fn decide(first: &[u8]) -> PrefixDecision {
    for (i, &byte) in first.iter().enumerate() {
        match byte {
            b'0'..=b'9' if i < MAX_ROUTE => {}
            b'0'..=b'9' => return PrefixDecision::TooLong,
            b':' if i > 0 => {
                let route = String::from_utf8_lossy(&first[..i]).into_owned();
                return PrefixDecision::Route { route, consumed: i + 1 };
            }
            _ => return PrefixDecision::Default,
        }
    }
    PrefixDecision::Undecided
}

/// The decision when the client stops sending (end of input) while undecided: what it
/// sent was not a prefix, so it goes to the default route.
pub fn decide_at_end(first: &[u8]) -> PrefixDecision {
    match decide(first) {
        PrefixDecision::Undecided => PrefixDecision::Default,
        decided => decided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(r: &str, consumed: usize) -> PrefixDecision {
        PrefixDecision::Route { route: r.into(), consumed }
    }

    #[test]
    fn numeric_prefix_selects_a_route() {
        assert_eq!(decide(b"9090:time\n"), route("9090", 5));
        assert_eq!(decide(b"10000:"), route("10000", 6));
    }

    #[test]
    fn anything_else_is_the_default_route() {
        assert_eq!(decide(b"hello\n"), PrefixDecision::Default);
        assert_eq!(decide(b":x"), PrefixDecision::Default);
        assert_eq!(decide(b"12a:"), PrefixDecision::Default);
        assert_eq!(decide(b"\n"), PrefixDecision::Default);
    }

    #[test]
    fn digits_alone_wait_and_too_many_are_refused() {
        assert_eq!(decide(b""), PrefixDecision::Undecided);
        assert_eq!(decide(b"909"), PrefixDecision::Undecided);
        assert_eq!(decide_at_end(b"909"), PrefixDecision::Default);
        assert_eq!(decide(&[b'1'; MAX_ROUTE]), PrefixDecision::Undecided);
        assert_eq!(decide(&[b'1'; MAX_ROUTE + 1]), PrefixDecision::TooLong);
    }
}
