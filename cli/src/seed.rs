//! What a run draws from the operating system: the one seed for its machines, and the
//! carrier secret of `switchyard up`.

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

/// A 32-byte secret for a carrier whose two ends live in this process (`switchyard up`),
/// so it is never written anywhere. Drawn from the OS as [`from_os`] is, and deliberately
/// not from `--seed`: a seed on a command line is visible to every local user (`ps`), and
/// the secret is what keeps them from opening streams over the carrier.
#[cfg(feature = "full")]
pub fn carrier_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_mut(8) {
        chunk.copy_from_slice(&from_os().to_le_bytes());
    }
    secret
}
