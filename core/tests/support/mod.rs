//! What the property-test files share: how many cases a property runs, uniform picks, and
//! the read sizes a stream is cut into. Each test file includes this with `mod support;`
//! and uses what it needs.

#![allow(dead_code)]

use quickcheck::{Arbitrary, Gen, QuickCheck, Testable};

/// Runs `property` on `default` generated cases, or `QUICKCHECK_TESTS` if that is set.
pub fn check<A: Testable>(default: u64, property: A) {
    let mut qc = QuickCheck::new();
    if std::env::var_os("QUICKCHECK_TESTS").is_none() {
        qc = qc.tests(default);
    }
    qc.quickcheck(property);
}

/// A uniform pick from `0..n` (`n > 0`).
pub fn below(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n
}

/// Read sizes, cycled over a stream: mostly tiny, sometimes empty reads, sometimes large
/// ones. No sizes means the whole stream in one read.
#[derive(Clone, Debug)]
pub struct Chunking(pub Vec<u8>);

impl Arbitrary for Chunking {
    fn arbitrary(g: &mut Gen) -> Self {
        let sizes = (0..below(g, 6))
            .map(|_| match below(g, 8) {
                0 => 0,
                1..=3 => 1 + below(g, 3),
                4..=5 => 1 + below(g, 16),
                _ => below(g, 256),
            })
            .map(|n| n as u8)
            .collect();
        Chunking(sizes)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Chunking))
    }
}
