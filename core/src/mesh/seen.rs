//! The dedup cache: which message ids (and which attempts of each) a server has seen, and
//! which it delivered.

use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use uuid::Uuid;

/// Message ids seen recently, and which attempts of each, each id kept for a TTL, at most
/// `cap` of them.
///
/// **When full** the oldest id is forgotten first (counted in [`SeenCache::evicted`]): a
/// copy of that message arriving later would be taken for new. The TTL and the cap are
/// chosen so that this needs a message to be resent after minutes, or a flood of more
/// than `cap` messages inside one TTL.
#[derive(Debug, Clone)]
pub struct SeenCache {
    ttl: Duration,
    cap: usize,
    ids: BTreeMap<Uuid, Entry>,
    /// Ids with their expiry, in the order they expire (insertion order: the TTL is the same
    /// for all).
    order: VecDeque<(Instant, Uuid)>,
    evicted: u64,
}

/// What the cache knows of one id.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Delivered to a local user.
    delivered: bool,
    /// Bit `n` set: attempt `n` was seen (attempts past 63 count as 63).
    attempts: u64,
}

fn bit(attempt: u8) -> u64 {
    1 << attempt.min(63)
}

impl SeenCache {
    /// An empty cache keeping ids for `ttl`, at most `cap` (at least 1) at once.
    pub fn new(ttl: Duration, cap: usize) -> SeenCache {
        SeenCache { ttl, cap: cap.max(1), ids: BTreeMap::new(), order: VecDeque::new(), evicted: 0 }
    }

    /// Records `id` at `now`; false if it was already there (a duplicate).
    pub fn insert(&mut self, now: Instant, id: Uuid) -> bool {
        self.expire(now);
        let new = !self.contains(&id);
        self.record(now, id, 0);
        new
    }

    /// Records attempt `attempt` of `id` at `now`; false if that attempt was already seen.
    pub fn record(&mut self, now: Instant, id: Uuid, attempt: u8) -> bool {
        self.expire(now);
        if let Some(entry) = self.ids.get_mut(&id) {
            let new = entry.attempts & bit(attempt) == 0;
            entry.attempts |= bit(attempt);
            return new;
        }
        if self.ids.len() >= self.cap {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.ids.remove(&oldest);
                self.evicted += 1;
            }
        }
        let until = now + self.ttl;
        self.ids.insert(id, Entry { delivered: false, attempts: bit(attempt) });
        self.order.push_back((until, id));
        true
    }

    /// The attempt after the highest one seen of `id` (0 if none was): what an origin
    /// routing `id` again numbers it.
    pub fn next_attempt(&self, id: &Uuid) -> u8 {
        match self.ids.get(id) {
            Some(entry) if entry.attempts != 0 => (64 - entry.attempts.leading_zeros()).min(63) as u8,
            _ => 0,
        }
    }

    /// True if `id` is in the cache.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains_key(id)
    }

    /// Marks `id` as delivered to a local user (so a copy gets its receipt again).
    pub fn mark_delivered(&mut self, id: &Uuid) {
        if let Some(entry) = self.ids.get_mut(id) {
            entry.delivered = true;
        }
    }

    /// True if `id` was delivered to a local user.
    pub fn delivered(&self, id: &Uuid) -> bool {
        self.ids.get(id).is_some_and(|e| e.delivered)
    }

    /// Forgets ids whose TTL has passed.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(until, id)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Ids forgotten early because the cache was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    #[test]
    fn duplicates_are_caught_until_the_ttl_passes() {
        let mut seen = SeenCache::new(Duration::from_secs(10), 100);
        let t0 = Instant::ZERO;
        assert!(seen.insert(t0, id(1)));
        assert!(!seen.insert(t0 + Duration::from_secs(9), id(1)));
        assert!(seen.insert(t0 + Duration::from_secs(10), id(1)), "expired, so new again");
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_and_counts_it() {
        let mut seen = SeenCache::new(Duration::from_secs(60), 2);
        for n in 1..=3 {
            assert!(seen.insert(Instant::ZERO, id(n)));
        }
        assert_eq!(seen.len(), 2);
        assert!(!seen.contains(&id(1)));
        assert!(seen.contains(&id(3)));
        assert_eq!(seen.evicted(), 1);
    }

    #[test]
    fn each_attempt_is_new_once_and_the_next_one_counts_up() {
        let mut seen = SeenCache::new(Duration::from_secs(60), 10);
        assert_eq!(seen.next_attempt(&id(1)), 0);
        assert!(seen.record(Instant::ZERO, id(1), 0));
        assert!(!seen.record(Instant::ZERO, id(1), 0));
        assert_eq!(seen.next_attempt(&id(1)), 1);
        assert!(seen.record(Instant::ZERO, id(1), 2));
        assert_eq!(seen.next_attempt(&id(1)), 3);
        assert!(!seen.record(Instant::ZERO, id(1), 2));
        assert_eq!(seen.len(), 1, "attempts share their id's entry");
    }

    #[test]
    fn delivery_is_remembered_with_the_id() {
        let mut seen = SeenCache::new(Duration::from_secs(60), 10);
        seen.insert(Instant::ZERO, id(1));
        assert!(!seen.delivered(&id(1)));
        seen.mark_delivered(&id(1));
        assert!(seen.delivered(&id(1)));
    }
}
