//! What a machine is built from so that it is deterministic and can live beside others.

use crate::id::ConnIds;
use crate::rng::Rng;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// A machine's deterministic environment: its random number generator, the space it mints
/// connection ids in, and the secret its cryptography is seeded from.
///
/// Build one per machine with [`Env::new`] from a seed (the CLI draws the seed from the OS
/// once, at start-up; the simulator derives it from the run's seed). A node that hosts
/// several machines gives each child [`Env::child`] with a space of its own.
#[derive(Clone, Debug)]
pub struct Env {
    /// The machine's random number generator.
    pub rng: Rng,
    /// The machine's connection id allocator.
    pub conn_ids: ConnIds,
    secret: Secret,
}

/// 32 bytes that seed a machine's cryptographic generator (TLS). Never printed.
#[derive(Clone, PartialEq, Eq)]
struct Secret([u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Env {
    /// An environment seeded with `seed`, minting ids in space 0. Its secret is derived from
    /// the seed, which is right for simulations and tests (a seed replays TLS too) and
    /// wrong for anything exposed: give those [`Env::with_secret`] from the OS.
    pub fn new(seed: u64) -> Env {
        let derived = Sha256::new().chain_update(b"switchyard env secret").chain_update(seed.to_le_bytes());
        Env { rng: Rng::new(seed), conn_ids: ConnIds::new(0), secret: Secret(derived.finalize().into()) }
    }

    /// The same environment with 32 secret bytes of the embedder's (the CLI draws them from
    /// the operating system's entropy source), so its cryptography cannot be predicted from the seed.
    pub fn with_secret(mut self, secret: [u8; 32]) -> Env {
        self.secret = Secret(secret);
        self
    }

    /// A key for one use (`label`, e.g. `b"tls"`) derived from the secret: different
    /// labels give unrelated keys.
    pub fn secret(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret.0).expect("HMAC takes any key length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// An environment for a child machine: a generator forked from this one, id space
    /// `space`, which must differ from every sibling's, and a secret of its own.
    pub fn child(&mut self, space: u16) -> Env {
        let mut label = b"child ".to_vec();
        label.extend_from_slice(&space.to_le_bytes());
        Env { rng: self.rng.fork(), conn_ids: ConnIds::new(space), secret: Secret(self.secret(&label)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_follow_the_seed_or_the_given_bytes_and_differ_by_label_and_child() {
        let a = Env::new(1);
        assert_eq!(a.secret(b"tls"), Env::new(1).secret(b"tls"), "a seed replays its secret");
        assert_ne!(a.secret(b"tls"), Env::new(2).secret(b"tls"));
        assert_ne!(a.secret(b"tls"), a.secret(b"other"));
        let given = Env::new(1).with_secret([9; 32]);
        assert_ne!(given.secret(b"tls"), a.secret(b"tls"), "the embedder's bytes replace the seed's");
        let mut parent = Env::new(1);
        let (c1, c2) = (parent.child(1), parent.child(2));
        assert_ne!(c1.secret(b"tls"), c2.secret(b"tls"));
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.secret.0)), "Debug hides the secret");
    }
}
