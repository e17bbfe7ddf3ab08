//! Links: how long a packet takes between two hosts, and what can happen to a datagram on
//! the way.

use crate::rng::Rng;
use std::time::Duration;

/// The behaviour of the path from one host to another.
///
/// Every packet (a stream segment, an acknowledgement, a datagram) takes `latency` plus a
/// uniform random extra of up to `jitter`. Streams never reorder (they model TCP, which
/// puts segments back in order); datagrams are independent, so jitter alone reorders them.
/// `loss`, `duplicate` and `reorder` apply to datagrams only: TCP hides loss as delay, which
/// the simulator models with partitions instead.
///
/// Set the default for every pair in [`NetConfig::link`](super::NetConfig::link) and
/// override a pair with [`Sim::set_link`](super::Sim::set_link).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way base delay.
    pub latency: Duration,
    /// Largest random extra delay added to each packet (uniform in `0..=jitter`).
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub loss: f64,
    /// Probability in `[0, 1]` that a datagram is delivered twice (each copy with its own
    /// delay).
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a datagram is held back by an extra delay of up to
    /// `reorder_delay`, so that later datagrams overtake it.
    pub reorder: f64,
    /// Largest extra delay of a held-back datagram.
    pub reorder_delay: Duration,
}

impl Default for LinkConfig {
    /// A perfect 1 ms link: no jitter, no loss, no duplication, no reordering.
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(50),
        }
    }
}

impl LinkConfig {
    /// A perfect link with the given one-way latency and jitter.
    pub fn new(latency: Duration, jitter: Duration) -> LinkConfig {
        LinkConfig { latency, jitter, ..LinkConfig::default() }
    }

    /// The same link with datagram loss, duplication and reordering probabilities.
    pub fn with_datagram_faults(self, loss: f64, duplicate: f64, reorder: f64) -> LinkConfig {
        LinkConfig { loss, duplicate, reorder, ..self }
    }

    /// The delay of one packet: latency plus a random share of the jitter.
    pub(super) fn sample_delay(&self, rng: &mut Rng) -> Duration {
        self.latency + uniform_up_to(rng, self.jitter)
    }

    /// What happens to one datagram: `None` if it is lost, else the delay of each copy that
    /// arrives. Random draws happen in a fixed order so a seed always gives the same fate.
    pub(super) fn datagram_fate(&self, rng: &mut Rng) -> Option<Vec<Duration>> {
        if rng.chance(self.loss) {
            return None;
        }
        let copies = if rng.chance(self.duplicate) { 2 } else { 1 };
        let delays = (0..copies)
            .map(|_| {
                let held =
                    if rng.chance(self.reorder) { uniform_up_to(rng, self.reorder_delay) } else { Duration::ZERO };
                self.sample_delay(rng) + held
            })
            .collect();
        Some(delays)
    }
}

/// A uniform duration in `0..=max`, at microsecond resolution (the resolution of
/// [`Instant`](crate::Instant)).
fn uniform_up_to(rng: &mut Rng, max: Duration) -> Duration {
    if max.is_zero() {
        // No draw: a link without jitter leaves the random stream untouched.
        return Duration::ZERO;
    }
    let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.range_inclusive(0, micros))
}
