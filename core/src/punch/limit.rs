//! Token buckets: how the rendezvous bounds what one source or one relayed peer may cost it.

use crate::time::Instant;
use std::time::Duration;

/// A token bucket in whole units (datagrams or bytes): it holds at most `burst` units and
/// refills at `per_second`. Integer arithmetic in micro-units, so it is exact and
/// deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    micro_units: u64,
    burst: u64,
    per_second: u64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` units refilling at `per_second`, as of `now`.
    pub fn full(now: Instant, burst: u32, per_second: u32) -> TokenBucket {
        let burst = u64::from(burst);
        TokenBucket { micro_units: burst * 1_000_000, burst, per_second: u64::from(per_second), updated: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated);
        self.updated = self.updated.max(now);
        let added = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).saturating_mul(self.per_second);
        self.micro_units = self.micro_units.saturating_add(added).min(self.burst * 1_000_000);
    }

    /// Takes `units` if the bucket holds them; false (and nothing taken) otherwise.
    pub fn take(&mut self, now: Instant, units: u32) -> bool {
        self.refill(now);
        let cost = u64::from(units) * 1_000_000;
        if self.micro_units >= cost {
            self.micro_units -= cost;
            true
        } else {
            false
        }
    }

    /// True when the bucket would be full at `now`: it remembers nothing a fresh bucket
    /// would not, so a table of buckets may forget it.
    pub fn is_full_at(&self, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(now);
        probe.micro_units >= probe.burst * 1_000_000
    }

    /// How long until `units` are available again, from `now` (zero if they are).
    pub fn wait_for(&self, now: Instant, units: u32) -> Duration {
        let mut probe = *self;
        probe.refill(now);
        let cost = u64::from(units) * 1_000_000;
        let missing = cost.saturating_sub(probe.micro_units);
        if missing == 0 || probe.per_second == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(missing.div_ceil(probe.per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::from_secs(1);
        let mut b = TokenBucket::full(t0, 3, 10);
        assert!(b.take(t0, 1) && b.take(t0, 1) && b.take(t0, 1));
        assert!(!b.take(t0, 1), "burst spent");
        assert_eq!(b.wait_for(t0, 1), Duration::from_millis(100));
        assert!(!b.take(t0 + Duration::from_millis(99), 1));
        assert!(b.take(t0 + Duration::from_millis(100), 1), "one unit per 100 ms");
        assert!(!b.is_full_at(t0 + Duration::from_millis(100)));
        assert!(b.is_full_at(t0 + Duration::from_millis(400)));
        assert!(!b.take(t0 + Duration::from_secs(60), 4), "never more than the burst at once");
    }
}
