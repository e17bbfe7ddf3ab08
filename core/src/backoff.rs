//! Jittered exponential backoff, for anything that retries a peer that did not answer: the
//! tunnel's carrier, a mesh server's links, a mesh client looking for a server.
//!
//! The first retry waits `first`, each further one twice as long, capped at `max`; every
//! delay is spread ±20 % by the machine's own [`Rng`] so that many clients that lost the
//! same server do not come back in lockstep. A success resets it.

use crate::rng::Rng;
use std::time::Duration;

/// Share of each delay that is jitter, either side.
const JITTER: f64 = 0.2;

/// Consecutive failures and the delay they earn. Call [`Backoff::next_delay`] after each
/// failure and [`Backoff::reset`] after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff whose first delay is `first` and whose delays never exceed `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, failures: 0 }
    }

    /// Counts one more failure and returns how long to wait before the next attempt:
    /// `first · 2^(failures before this one)`, capped at `max`, jittered ±20 % (still at
    /// most `max`).
    pub fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        let exponent = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let base = self.first.saturating_mul(1 << exponent).min(self.max);
        rng.jitter(base, JITTER).min(self.max)
    }

    /// Forgets the failures: the next delay is `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_the_jitter_and_reset_after_a_success() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut backoff = Backoff::new(first, max);
        let mut rng = Rng::new(7);
        for expected_ms in [100u64, 200, 400, 800, 1000, 1000] {
            let delay = backoff.next_delay(&mut rng);
            let expected = Duration::from_millis(expected_ms);
            assert!(delay >= expected.mul_f64(1.0 - JITTER), "{delay:?} below {expected:?} - 20 %");
            assert!(delay <= expected.mul_f64(1.0 + JITTER).min(max), "{delay:?} above {expected:?} + 20 %");
        }
        assert_eq!(backoff.failures(), 6);
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= first.mul_f64(1.0 + JITTER));
    }

    #[test]
    fn a_long_run_of_failures_never_overflows() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(30));
        }
    }
}
