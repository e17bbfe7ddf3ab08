//! The system clock, watched against the driver's monotonic one.
//!
//! A machine counts time in the driver's monotonic [`Instant`]s, which do not follow the
//! wall clock: a host that was suspended, or whose clock was set by hand or stepped by NTP,
//! has the two part, and a time service built on one reading at start-up would drift. So
//! the driver reads the system clock at every wake-up (a vDSO call, tens of nanoseconds)
//! and reports it through [`Machine::handle_wall_clock`](switchyard_core::Machine) when it
//! has moved from where the monotonic clock says it should be by more than
//! [`WALL_CLOCK_SLACK`].

use std::time::{Duration, SystemTime};
use switchyard_core::Instant;

/// How far the wall clock may part from the monotonic one before the machine is told:
/// well under the second that dates are shown in, well over what NTP slews in a minute.
pub const WALL_CLOCK_SLACK: Duration = Duration::from_millis(100);

/// The system clock now, in microseconds since 1970-01-01 UTC (negative before it).
pub fn unix_micros_now() -> i128 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i128::try_from(since.as_micros()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_micros()).unwrap_or(i128::MAX),
    }
}

/// Where the wall clock stood at the driver's `Instant::ZERO`, as last reported.
#[derive(Debug)]
pub(super) struct WallWatch {
    unix_micros_at_zero: i128,
}

impl WallWatch {
    /// A watch whose first [`WallWatch::check`] reports the wall clock, whatever it reads.
    pub(super) fn new() -> WallWatch {
        WallWatch { unix_micros_at_zero: i128::MIN }
    }

    /// The wall clock's reading, if the machine should hear it at `now`: the first time,
    /// and whenever it has parted from the last report by more than the slack.
    pub(super) fn check(&mut self, now: Instant) -> Option<i128> {
        self.check_reading(now, unix_micros_now())
    }

    fn check_reading(&mut self, now: Instant, unix_micros: i128) -> Option<i128> {
        let since_zero = i128::from(now.as_micros());
        let expected = self.unix_micros_at_zero.saturating_add(since_zero);
        if unix_micros.abs_diff(expected) <= WALL_CLOCK_SLACK.as_micros() {
            return None;
        }
        self.unix_micros_at_zero = unix_micros - since_zero;
        Some(unix_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_first_reading_then_only_jumps_past_the_slack() {
        let mut watch = WallWatch::new();
        let start = 1_759_329_025_000_000;
        assert_eq!(watch.check_reading(Instant::ZERO, start), Some(start));
        // In step with the monotonic clock, or within the slack: nothing to say.
        assert_eq!(watch.check_reading(Instant::from_secs(60), start + 60_000_000), None);
        assert_eq!(watch.check_reading(Instant::from_secs(61), start + 61_090_000), None);
        // Suspended for 90 minutes: the monotonic clock saw one second of it.
        let woke = start + 62_000_000 + 5_400_000_000;
        assert_eq!(watch.check_reading(Instant::from_secs(62), woke), Some(woke));
        assert_eq!(watch.check_reading(Instant::from_secs(63), woke + 1_000_000), None);
        // Set back by hand.
        let set_back = woke - 3_600_000_000;
        assert_eq!(watch.check_reading(Instant::from_secs(64), set_back), Some(set_back));
    }

    #[test]
    fn the_system_clock_is_read_as_unix_microseconds() {
        // After 2020-01-01 and before 2200: a reading in microseconds, not seconds or nanos.
        let now = unix_micros_now();
        assert!((1_577_836_800_000_000..7_258_118_400_000_000).contains(&now), "{now}");
    }
}
