//! The simulator's tunables, each with its cap and the policy when the cap is reached.

use super::link::LinkConfig;
use std::time::Duration;

/// Everything about the simulated network and the run itself. `NetConfig::default()` is a
/// fast, perfect network with generous caps; tests change the fields they care about.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The link between any two hosts without an override from
    /// [`Sim::set_link`](super::Sim::set_link).
    pub link: LinkConfig,
    /// How stream (TCP-like) connections behave.
    pub stream: StreamConfig,
    /// Largest datagram payload; bigger ones are dropped at the sender (like `EMSGSIZE`,
    /// but silent: no machine expects to see that error).
    pub max_datagram: usize,
    /// Most events one simulator processes over its whole life. Reaching it makes every
    /// `run_*` return [`SimError::StepLimit`](super::SimError::StepLimit): a livelock (a
    /// machine whose deadline never moves forward, two machines ping-ponging at one instant)
    /// becomes a failure instead of a hang.
    pub max_steps: u64,
    /// How many recent trace lines [`Sim::trace_tail`](super::Sim::trace_tail) keeps for
    /// failure reports; older lines are dropped. Does not affect the trace hash.
    pub trace_tail: usize,
    /// Most events kept per host for [`Sim::events`](super::Sim::events); past it the
    /// oldest is dropped.
    pub event_log_cap: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            link: LinkConfig::default(),
            stream: StreamConfig::default(),
            max_datagram: 65_507,
            max_steps: 2_000_000,
            trace_tail: 64,
            event_log_cap: 100_000,
        }
    }
}

/// How simulated stream connections behave. See the [`sim`](super) module documentation
/// for the model.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// How long an unanswered connection attempt (host down, partition, lost SYN) waits
    /// before [`NetError::TimedOut`](crate::NetError::TimedOut).
    pub connect_timeout: Duration,
    /// Bytes in flight per direction: sent but not yet read by the receiving machine. It
    /// stands for the two socket buffers of a real connection. Writes past it wait in the
    /// sender's queue; `Input::Sent` is reported as bytes enter the window.
    pub window: usize,
    /// Largest sender queue (bytes written but not yet in the window). Past it the
    /// simulator gives up on the connection as the real driver does: the writer gets
    /// `Closed(SlowPeer)` and the peer `Closed(Reset)`.
    pub send_queue_cap: usize,
    /// Largest segment: bigger writes are delivered as several `Received` inputs.
    pub max_segment: usize,
    /// How long a `Graceful` close may take to get its queued bytes into the window before
    /// the connection is reset instead (a peer that never reads must not pin it forever).
    pub flush_timeout: Duration,
    /// How long a direction may be stuck behind a partition, with data waiting, before
    /// both ends get `Closed(TimedOut)` (TCP's retransmission limit). `None`: wait for the
    /// heal however long it takes.
    pub partition_timeout: Option<Duration>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            connect_timeout: Duration::from_secs(3),
            window: 256 * 1024,
            send_queue_cap: 8 * 1024 * 1024,
            max_segment: 16 * 1024,
            flush_timeout: Duration::from_secs(30),
            partition_timeout: Some(Duration::from_secs(60)),
        }
    }
}
