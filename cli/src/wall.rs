//! Wall-clock time for the services that print dates (time, stamp).
//!
//! Core machines never read a clock: each gets a [`WallClock`] built here from one reading
//! of the system clock, paired with the driver's `Instant::ZERO`, and the local UTC offset.
//! The driver then re-bases it whenever the system clock jumps (see
//! `switchyard_adapters::driver`'s wall-clock watch), so a long-running server never drifts.
//!
//! The offset needs care: the `time` crate refuses to read it once the process has more
//! than one thread (reading the time zone races with `setenv` in another thread, which is
//! undefined behaviour in libc), and the Ctrl-C handler and the runtimes start threads. So
//! `main` calls [`capture_offset`] before anything else, and later calls use that reading.

use std::sync::{Once, OnceLock};
use switchyard_core::time::WallClock;
use switchyard_core::Instant;
use time::UtcOffset;

/// The local UTC offset as read at start-up, or why it could not be read.
static OFFSET: OnceLock<Result<UtcOffset, String>> = OnceLock::new();

/// Reads the local UTC offset. Call it first thing in `main`, while the process has one
/// thread; later calls keep the first reading.
pub fn capture_offset() {
    OFFSET.get_or_init(|| UtcOffset::current_local_offset().map_err(|e| e.to_string()));
}

/// The local UTC offset read by [`capture_offset`]; UTC, with a warning logged once, if it
/// could not be read.
fn offset() -> UtcOffset {
    static WARNED: Once = Once::new();
    match OFFSET.get() {
        Some(Ok(offset)) => *offset,
        Some(Err(error)) => {
            WARNED.call_once(|| tracing::warn!("cannot read the local time zone ({error}); showing times in UTC"));
            UtcOffset::UTC
        }
        None => {
            WARNED.call_once(|| tracing::warn!("local time zone not read at start-up; showing times in UTC"));
            UtcOffset::UTC
        }
    }
}

/// Seconds since 1970 (UTC) by the system clock now; 0 before 1970. For checks done once
/// outside any machine, such as whether a certificate is valid today.
pub fn unix_secs_now() -> u64 {
    u64::try_from(switchyard_adapters::unix_micros_now() / 1_000_000).unwrap_or(0)
}

/// A wall clock for a machine about to start under a driver: the system clock read now,
/// taken as the driver's `Instant::ZERO`. The driver starts a moment later, so dates run
/// behind by that moment (microseconds), never ahead.
pub fn clock() -> WallClock {
    WallClock::new(switchyard_adapters::unix_micros_now(), Instant::ZERO, offset())
}
