//! What a machine is built from so that it is deterministic and can live beside others.

use crate::id::ConnIds;
use crate::rng::Rng;

/// A machine's deterministic environment: its random number generator and the space it
/// mints connection ids in.
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
}

impl Env {
    /// An environment seeded with `seed`, minting ids in space 0.
    pub fn new(seed: u64) -> Env {
        Env { rng: Rng::new(seed), conn_ids: ConnIds::new(0) }
    }

    /// An environment for a child machine: a generator forked from this one and id space
    /// `space`, which must differ from every sibling's.
    pub fn child(&mut self, space: u16) -> Env {
        Env { rng: self.rng.fork(), conn_ids: ConnIds::new(space) }
    }
}
