//! The event queue: what happens next, in virtual time.

use crate::time::Instant;
use std::collections::BTreeMap;

/// Events ordered by `(time, sequence number)`.
///
/// The sequence number breaks ties in the order events were scheduled, so two events at the
/// same instant always run in the same order: the determinism of the whole simulator rests
/// on this. The queue has no cap of its own; every event it holds was scheduled by a step
/// that counted against [`NetConfig::max_steps`](super::NetConfig::max_steps), so it can
/// only grow as far as a bounded run lets it.
pub(super) struct EventQueue<T> {
    next_seq: u64,
    events: BTreeMap<(Instant, u64), T>,
}

impl<T> EventQueue<T> {
    pub(super) fn new() -> Self {
        EventQueue { next_seq: 0, events: BTreeMap::new() }
    }

    /// Schedules `event` at `at`, after everything already scheduled at the same instant.
    pub(super) fn push(&mut self, at: Instant, event: T) {
        self.events.insert((at, self.next_seq), event);
        self.next_seq += 1;
    }

    /// When the next event is due.
    pub(super) fn next_time(&self) -> Option<Instant> {
        self.events.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Takes the next event.
    pub(super) fn pop(&mut self) -> Option<(Instant, T)> {
        self.events.pop_first().map(|((at, _), event)| (at, event))
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_by_scheduling_order() {
        let mut q = EventQueue::new();
        q.push(Instant::from_secs(2), "late");
        q.push(Instant::from_secs(1), "first");
        q.push(Instant::from_secs(1), "second");
        assert_eq!(q.next_time(), Some(Instant::from_secs(1)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, e)| e).collect();
        assert_eq!(order, ["first", "second", "late"]);
        assert_eq!(q.len(), 0);
    }
}
