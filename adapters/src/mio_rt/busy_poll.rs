//! Busy polling: after a wait that brought socket events, the loop polls without sleeping
//! for a while before it sleeps, so the next event finds it awake.
//!
//! A loop that sleeps in `epoll_wait` must be woken by the kernel when its next packet
//! arrives, and where it last ran on another CPU that wake-up is an inter-processor
//! interrupt. On a virtual machine an idle virtual CPU halts, and waking it costs a trip
//! through the hypervisor that can take longer than relaying the message (on the 2-core
//! development VM a direct loopback round trip takes about 55 µs across CPUs and 4 µs on
//! one). A loop that is still polling when the reply comes back needs no wake-up at all.
//! This is what `SO_BUSY_POLL`, DPDK and Aeron's busy-spin idle strategy trade: CPU time
//! for latency. Here the trade is bounded: the loop spins only after socket events (never
//! when only a timer fired, so an idle process stays idle), at most for the window, and
//! never past its next timer. Between two polls it yields its CPU (`sched_yield`): on a
//! machine with fewer CPUs than busy processes, a loop that spun without yielding kept the
//! very peers it waited for from running (on the 2-core VM, p99 137–178 µs spinning
//! against 56–92 µs yielding).

use std::time::{Duration, Instant};

/// The longest window accepted: beyond a millisecond a loop is burning a CPU, not waiting
/// for a reply.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// Options of a loop started by [`MioRuntime::run_here_with`](super::MioRuntime::run_here_with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// How long the loop polls without sleeping after a wait that brought socket events;
    /// zero (the default) never spins. Capped at [`MAX_BUSY_POLL`]. Each spin costs up to
    /// this much CPU per burst of traffic; it buys the round trips of a request-reply
    /// protocol the wake-ups they would otherwise wait for.
    pub busy_poll: Duration,
}

impl LoopOptions {
    /// Options with a busy-poll window of `window`, capped at [`MAX_BUSY_POLL`].
    pub fn busy_poll(window: Duration) -> LoopOptions {
        LoopOptions { busy_poll: window.min(MAX_BUSY_POLL) }
    }

    /// Until when a wait starting at `now` polls without sleeping, or `None` to sleep at
    /// once: spins only after a wait that brought socket events (`after_io`), and stops at
    /// the next timer so the timer fires on time.
    pub(super) fn spin_until(&self, now: Instant, after_io: bool, next_timer: Option<Instant>) -> Option<Instant> {
        let window = self.busy_poll.min(MAX_BUSY_POLL);
        if window.is_zero() || !after_io {
            return None;
        }
        let until = now + window;
        Some(next_timer.map_or(until, |timer| timer.min(until))).filter(|&until| until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn spins_for_the_window_after_socket_events() {
        let now = Instant::now();
        assert_eq!(LoopOptions::busy_poll(50 * US).spin_until(now, true, None), Some(now + 50 * US));
    }

    #[test]
    fn never_spins_when_off_or_after_a_wait_without_socket_events() {
        let now = Instant::now();
        assert_eq!(LoopOptions::default().spin_until(now, true, None), None);
        assert_eq!(LoopOptions::busy_poll(50 * US).spin_until(now, false, None), None);
    }

    #[test]
    fn stops_at_the_next_timer() {
        let now = Instant::now();
        let options = LoopOptions::busy_poll(50 * US);
        assert_eq!(options.spin_until(now, true, Some(now + 20 * US)), Some(now + 20 * US));
        assert_eq!(options.spin_until(now, true, Some(now + 80 * US)), Some(now + 50 * US));
        // A timer already due: fire it rather than spin.
        assert_eq!(options.spin_until(now, true, Some(now)), None);
    }

    /// Whatever the window, the timer and the last wait: the loop spins only after socket
    /// events with a window set, never past the window, the cap or the next timer, and
    /// always a little when it may.
    #[test]
    fn a_spin_never_outlasts_the_window_the_cap_or_the_next_timer() {
        fn prop(window_us: u16, after_io: bool, timer_us: Option<u16>) {
            let base = Instant::now();
            let now = base + Duration::from_millis(1);
            let next_timer = timer_us.map(|us| base + u32::from(us) * US);
            let options = LoopOptions::busy_poll(u32::from(window_us) * US);
            let window = options.busy_poll;
            let may_spin = after_io && !window.is_zero() && next_timer.map_or(true, |timer| timer > now);
            match options.spin_until(now, after_io, next_timer) {
                None => assert!(!may_spin, "no spin though it may: {window:?} {after_io} {next_timer:?}"),
                Some(until) => {
                    assert!(may_spin, "spins though it may not");
                    assert!(until > now && until <= now + window && window <= MAX_BUSY_POLL);
                    assert!(next_timer.map_or(true, |timer| until <= timer), "spins past the next timer");
                }
            }
        }
        quickcheck::QuickCheck::new().tests(2000).quickcheck(prop as fn(u16, bool, Option<u16>));
    }

    #[test]
    fn the_window_is_capped() {
        let now = Instant::now();
        let options = LoopOptions::busy_poll(Duration::from_secs(5));
        assert_eq!(options.busy_poll, MAX_BUSY_POLL);
        // Also when the field was set directly.
        let set = LoopOptions { busy_poll: Duration::from_secs(5) };
        assert_eq!(set.spin_until(now, true, None), Some(now + MAX_BUSY_POLL));
    }
}
