//! What a run draws from the operating system: the one seed for its machines, and the
//! secret bytes for its cryptography (TLS, the carrier secret of `switchyard up`).

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

/// 32 secret bytes from the OS (`getrandom`): the seed of a run's TLS randomness.
pub fn secret_from_os() -> Result<[u8; 32], String> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("cannot draw random bytes from the OS: {e}"))?;
    Ok(secret)
}
