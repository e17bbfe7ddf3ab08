//! The fixed sets a `reason` label takes its values from.
//!
//! The machines explain a refusal in words (`unknown route 1234`), and some of those words
//! come from the peer (a remote end's refusal, read by the local end). A label holding
//! them would grow a new series per distinct text, so each is mapped here to one of a few
//! kinds, by the phrases the core writes; anything else is [`OTHER`].

use switchyard_core::service::line_server::EndReason;

/// A listener's accept refused by the machine at its connection cap.
pub const AT_CAPACITY: &str = "at_capacity";
/// A peer whose driver write queue passed its cap.
pub const WRITE_QUEUE: &str = "write_queue";
/// A line-service client whose backlog of replies passed its cap.
pub const BACKLOG: &str = "backlog";
/// Anything the other kinds do not name.
pub const OTHER: &str = "other";

/// Why the local tunnel end turned a client away: `tunnel_down`, `bad_prefix`,
/// `prefix_timeout`, `too_many_streams` or `other`.
pub fn client_refusal(reason: &str) -> &'static str {
    if reason.starts_with("tunnel is down") || reason.starts_with("tunnel carrier lost") {
        "tunnel_down"
    } else if reason.contains("route prefix too long") || reason.contains("invalid route name") {
        "bad_prefix"
    } else if reason.starts_with("no route prefix within") {
        "prefix_timeout"
    } else if reason.contains("too many streams") {
        "too_many_streams"
    } else {
        OTHER
    }
}

/// Why a tunnel stream was refused: `unknown_route`, `no_default_route`,
/// `too_many_streams`, `target_unreachable` or `other`.
pub fn stream_refusal(reason: &str) -> &'static str {
    if reason.contains("unknown route") {
        "unknown_route"
    } else if reason.contains("no default route") {
        "no_default_route"
    } else if reason.contains("too many streams") {
        "too_many_streams"
    } else if reason.contains("target") {
        "target_unreachable"
    } else {
        OTHER
    }
}

/// Why a line-service connection ended.
pub fn line_end(reason: &EndReason) -> &'static str {
    match reason {
        EndReason::Finished => "finished",
        EndReason::ByService => "by_service",
        EndReason::Protocol(_) => "protocol",
        EndReason::IdleTimeout => "idle_timeout",
        EndReason::SlowConsumer(_) => "slow_consumer",
        EndReason::Net(_) => "network",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_maps_to_a_few_kinds() {
        assert_eq!(client_refusal("tunnel is down (connect refused); reconnecting"), "tunnel_down");
        assert_eq!(client_refusal("tunnel carrier lost: heartbeat timeout"), "tunnel_down");
        assert_eq!(client_refusal("route prefix too long"), "bad_prefix");
        assert_eq!(client_refusal("no route prefix within 3 s (send e.g. 9090:time)"), "prefix_timeout");
        assert_eq!(stream_refusal("unknown route 1234"), "unknown_route");
        assert_eq!(stream_refusal("cannot reach the route's target: connection refused"), "target_unreachable");
        // A peer's own words never become a label.
        assert_eq!(stream_refusal("anything a peer may say"), OTHER);
        assert_eq!(client_refusal("anything a peer may say"), OTHER);
    }
}
