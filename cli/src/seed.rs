//! The one seed a run draws from the operating system.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::SystemTime;

/// A seed from the OS: std's `RandomState` is keyed from OS randomness per process; the
/// time and process id are mixed in for good measure. Not for cryptography: it seeds the
/// machines' deterministic RNGs, and `--seed` replays a run.
pub fn from_os() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    hasher.finish()
}
