//! Virtual time for machines: an [`Instant`] the driver hands in, never one read from a clock.
//!
//! A machine learns the time only through the `now` argument of every call. Drivers build
//! `Instant`s from their runtime's clock (microseconds since the driver started); the
//! simulator builds them from its virtual clock. Because `Instant` is plain data, tests can
//! construct any moment they like.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in microseconds from an arbitrary zero chosen by the driver.
///
/// Arithmetic saturates: adding a huge [`Duration`] gives [`Instant::MAX`], and subtracting a
/// later instant from an earlier one gives [`Duration::ZERO`]. Nothing here panics.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The driver's zero.
    pub const ZERO: Instant = Instant { micros: 0 };
    /// The far future; a deadline that never fires.
    pub const MAX: Instant = Instant { micros: u64::MAX };

    /// The instant `micros` microseconds after zero.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant { micros }
    }

    /// The instant `millis` milliseconds after zero (saturating).
    pub const fn from_millis(millis: u64) -> Instant {
        Instant { micros: millis.saturating_mul(1_000) }
    }

    /// The instant `secs` seconds after zero (saturating).
    pub const fn from_secs(secs: u64) -> Instant {
        Instant { micros: secs.saturating_mul(1_000_000) }
    }

    /// Microseconds since zero.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Time since zero as a [`Duration`].
    pub const fn since_zero(self) -> Duration {
        Duration::from_micros(self.micros)
    }

    /// `self + d`, clamped to [`Instant::MAX`]. Sub-microsecond parts of `d` are dropped.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let add = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant { micros: self.micros.saturating_add(add) }
    }

    /// `self - d`, clamped to [`Instant::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Instant {
        let sub = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant { micros: self.micros.saturating_sub(sub) }
    }

    /// How long after `earlier` this is; zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.micros / 1_000_000, self.micros % 1_000_000)
    }
}

/// The latest `now` a machine has been given.
///
/// Rule 1 of the machine contract: time never goes back inside a machine. A driver on a
/// misbehaving clock may hand in an earlier instant; `advance` keeps the maximum so every
/// deadline computation sees a monotonic clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    latest: Instant,
}

impl Clock {
    /// A clock that starts at `now`.
    pub fn new(now: Instant) -> Clock {
        Clock { latest: now }
    }

    /// Records `now` and returns the effective time: the maximum seen so far.
    pub fn advance(&mut self, now: Instant) -> Instant {
        if now > self.latest {
            self.latest = now;
        }
        self.latest
    }

    /// The effective time without recording anything.
    pub fn now(&self) -> Instant {
        self.latest
    }
}

/// A set of deadlines keyed by `K`, with the earliest available in `O(log n)`.
///
/// Machines with many connections keep one deadline per connection (idle timeouts,
/// handshakes) here instead of scanning every connection in `poll_timeout`. Setting a key
/// again replaces its deadline; each key has at most one.
///
/// Capacity follows the owner: one entry per key, and keys are things the owner already
/// bounds (connections, streams), so this table needs no cap of its own.
#[derive(Clone, Debug)]
pub struct Deadlines<K: Ord + Copy> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Copy> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines { by_time: BTreeSet::new(), by_key: BTreeMap::new() }
    }
}

impl<K: Ord + Copy> Deadlines<K> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or moves) `key`'s deadline to `at`.
    pub fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_time.remove(&(old, key));
        }
        self.by_time.insert((at, key));
    }

    /// Removes `key`'s deadline, if any.
    pub fn cancel(&mut self, key: K) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key));
        }
    }

    /// `key`'s deadline, if it has one.
    pub fn get(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns a key whose deadline is at or before `now`, earliest first.
    /// Call it in a loop until `None` to handle every expired key.
    pub fn pop_expired(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.pop_first();
        self.by_key.remove(&key);
        Some(key)
    }

    /// Number of keys with a deadline.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no deadline is set.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Wall-clock time for machines that show dates (the time service, `stamp` replies).
///
/// The embedder reads the system clock once, at start-up, and builds this from that
/// reading, the [`Instant`] it was taken at, and the local UTC offset (which the `time`
/// crate can only read safely before threads start). Later wall times are that reading plus
/// elapsed `Instant`s, so a machine never reads a clock and the simulator can pick any date.
///
/// The monotonic clock behind `Instant`s does not follow the wall clock: a host that was
/// suspended, or whose clock was set or slewed, has the two part. So the driver reports the
/// wall clock through [`Machine::handle_wall_clock`](crate::Machine::handle_wall_clock)
/// whenever they have parted, and the machine calls [`WallClock::rebase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    unix_micros_at_zero: i128,
    offset: time::UtcOffset,
}

/// `YYYY-MM-DD HH:MM:SS`, the format every Switchyard service prints dates in.
const DATE_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

impl WallClock {
    /// A wall clock that read `unix_micros` (microseconds since 1970-01-01 UTC) at `at`,
    /// showing times at UTC offset `offset`.
    pub fn new(unix_micros: i128, at: Instant, offset: time::UtcOffset) -> WallClock {
        WallClock { unix_micros_at_zero: unix_micros - i128::from(at.as_micros()), offset }
    }

    /// The wall clock read `unix_micros` at `at`: later times count from there. The UTC
    /// offset stays as it was.
    pub fn rebase(&mut self, unix_micros: i128, at: Instant) {
        self.unix_micros_at_zero = unix_micros - i128::from(at.as_micros());
    }

    /// Microseconds since 1970-01-01 UTC at `now`.
    pub fn unix_micros(&self, now: Instant) -> i128 {
        self.unix_micros_at_zero + i128::from(now.as_micros())
    }

    /// A wall clock showing UTC; see [`WallClock::new`].
    pub fn utc(unix_micros: i128, at: Instant) -> WallClock {
        WallClock::new(unix_micros, at, time::UtcOffset::UTC)
    }

    /// The local date and time at `now`. Dates outside the `time` crate's range clamp to
    /// the Unix epoch rather than fail: a service must not die over a bad clock reading.
    pub fn at(&self, now: Instant) -> time::OffsetDateTime {
        let nanos = self.unix_micros(now) * 1_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .to_offset(self.offset)
    }

    /// The local time at `now` as `YYYY-MM-DD HH:MM:SS`.
    pub fn format(&self, now: Instant) -> String {
        self.at(now).format(DATE_TIME).unwrap_or_else(|_| String::from("0000-00-00 00:00:00"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::from_secs(1) - Instant::from_secs(2), Duration::ZERO);
        assert_eq!(Instant::from_secs(3) - Instant::from_secs(1), Duration::from_secs(2));
        assert_eq!(Instant::from_millis(1500).to_string(), "1.500000s");
    }

    #[test]
    fn clock_never_goes_back() {
        let mut clock = Clock::new(Instant::from_secs(5));
        assert_eq!(clock.advance(Instant::from_secs(3)), Instant::from_secs(5));
        assert_eq!(clock.advance(Instant::from_secs(7)), Instant::from_secs(7));
    }

    #[test]
    fn wall_clock_adds_elapsed_time_and_applies_the_offset() {
        // 2025-10-01 12:30:25 UTC, read at 10 s after the driver's zero.
        let reading = 1_759_321_825_000_000i128;
        let offset = time::UtcOffset::from_hms(2, 0, 0).unwrap();
        let wall = WallClock::new(reading, Instant::from_secs(10), offset);
        assert_eq!(wall.format(Instant::from_secs(10)), "2025-10-01 14:30:25");
        assert_eq!(wall.format(Instant::from_secs(75)), "2025-10-01 14:31:30");
        // The host slept for an hour and a half: the driver reports the wall clock again.
        let mut wall = wall;
        wall.rebase(reading + 5_400_000_000 + 65_000_000, Instant::from_secs(75));
        assert_eq!(wall.format(Instant::from_secs(75)), "2025-10-01 16:01:30");
        assert_eq!(wall.format(Instant::from_secs(76)), "2025-10-01 16:01:31");
    }

    #[test]
    fn deadlines_pop_in_order_and_replace_on_set() {
        let mut d = Deadlines::new();
        d.set(1u32, Instant::from_secs(10));
        d.set(2u32, Instant::from_secs(5));
        d.set(1u32, Instant::from_secs(3));
        assert_eq!(d.len(), 2);
        assert_eq!(d.next(), Some(Instant::from_secs(3)));
        assert_eq!(d.pop_expired(Instant::from_secs(4)), Some(1));
        assert_eq!(d.pop_expired(Instant::from_secs(4)), None);
        d.cancel(2);
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
    }
}
