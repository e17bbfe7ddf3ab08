//! Warnings that would repeat at every retry. A server link refused for a wrong secret or
//! a missing certificate is refused again at each redial (every 5 s at most) until someone
//! fixes a file: the first refusal is a warning, the same refusal again within
//! [`QUIET_FOR`] is a debug line, and the next warning after that says how many there
//! were in between.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a warning stays quiet after it was logged.
pub const QUIET_FOR: Duration = Duration::from_secs(600);

/// Most warnings remembered; past it the oldest is forgotten (and so logged again the
/// next time it happens).
pub const MAX_REMEMBERED: usize = 256;

/// What to do with one occurrence of a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// Log it as a warning; `repeats` is how many times it happened, unlogged, since the
    /// last time it was.
    Warn {
        /// Occurrences since the last warning.
        repeats: u32,
    },
    /// Log it only at debug level: it was warned about within [`QUIET_FOR`].
    Quiet,
}

/// The warnings logged lately, by key, with when each was last logged and how many times
/// it happened since.
#[derive(Debug, Default)]
pub struct Repeats {
    seen: BTreeMap<String, (Instant, u32)>,
}

impl Repeats {
    /// An empty record, usable in a `static`.
    pub const fn new() -> Repeats {
        Repeats { seen: BTreeMap::new() }
    }

    /// Records that the warning `key` happened at `now`, and says whether to log it.
    pub fn occurred(&mut self, key: &str, now: Instant) -> Occurrence {
        if let Some((logged, repeats)) = self.seen.get_mut(key) {
            if now.saturating_duration_since(*logged) < QUIET_FOR {
                *repeats += 1;
                return Occurrence::Quiet;
            }
            let repeats = std::mem::take(repeats);
            *logged = now;
            return Occurrence::Warn { repeats };
        }
        if self.seen.len() >= MAX_REMEMBERED {
            let oldest = self.seen.iter().min_by_key(|(_, (logged, _))| *logged).map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                self.seen.remove(&key);
            }
        }
        self.seen.insert(key.to_owned(), (now, 0));
        Occurrence::Warn { repeats: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_quiet_for_a_while_then_says_how_often_it_repeated() {
        let mut repeats = Repeats::new();
        let start = Instant::now();
        assert_eq!(repeats.occurred("a", start), Occurrence::Warn { repeats: 0 });
        for i in 1..=3 {
            assert_eq!(repeats.occurred("a", start + Duration::from_secs(5 * i)), Occurrence::Quiet);
        }
        assert_eq!(
            repeats.occurred("b", start + Duration::from_secs(20)),
            Occurrence::Warn { repeats: 0 },
            "another key"
        );
        assert_eq!(repeats.occurred("a", start + QUIET_FOR), Occurrence::Warn { repeats: 3 });
        assert_eq!(repeats.occurred("a", start + QUIET_FOR + Duration::from_secs(1)), Occurrence::Quiet);
    }

    #[test]
    fn past_its_cap_the_oldest_warning_is_forgotten() {
        let mut repeats = Repeats::new();
        let start = Instant::now();
        for i in 0..MAX_REMEMBERED {
            repeats.occurred(&i.to_string(), start + Duration::from_millis(i as u64));
        }
        assert_eq!(repeats.seen.len(), MAX_REMEMBERED);
        repeats.occurred("new", start + Duration::from_secs(1));
        assert_eq!(repeats.seen.len(), MAX_REMEMBERED);
        let later = start + Duration::from_secs(2);
        assert_eq!(repeats.occurred("0", later), Occurrence::Warn { repeats: 0 }, "the oldest was forgotten");
        // (Coming back, "0" pushed out the next oldest, "1".)
        assert_eq!(repeats.occurred("2", later), Occurrence::Quiet, "the others are remembered");
    }
}
