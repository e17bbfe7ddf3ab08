//! Running a simulation over many seeds, and replaying the one that failed.
//!
//! ```no_run
//! use switchyard_core::sim::{check_seeds, NetConfig, Sim, TestId};
//!
//! const TEST: TestId = TestId::integration("my-crate", "my_sim_tests", "my_scenario");
//!
//! #[test]
//! fn my_scenario() {
//!     check_seeds(&TEST, 0..200, |seed| {
//!         let mut sim = Sim::new(seed, NetConfig::default());
//!         // ... add hosts, script faults, run ...
//!         sim.run_for(std::time::Duration::from_secs(10)).map_err(|e| e.to_string())?;
//!         // ... check what the machines saw; describe any failure in the Err ...
//!         Ok(())
//!     });
//! }
//! ```
//!
//! When a seed fails, the test panics with the seed, the failure and the command that
//! replays exactly that run (`SWITCHYARD_SEED=<seed> cargo test ...`). With
//! `SWITCHYARD_SEED` set, only that seed runs.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The environment variable that names the one seed to run.
pub const SEED_ENV: &str = "SWITCHYARD_SEED";

/// Which test a seed sweep belongs to, so a failure can print the command that reruns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestId {
    package: &'static str,
    /// `None` for a unit test in the package's library.
    target: Option<&'static str>,
    name: &'static str,
}

impl TestId {
    /// A test in an integration-test target: `cargo test -p <package> --test <target> --
    /// <name> --exact`.
    pub const fn integration(package: &'static str, target: &'static str, name: &'static str) -> TestId {
        TestId { package, target: Some(target), name }
    }

    /// A unit test in the package's library; `name` is its full path, such as
    /// `sim::tests::streams::my_test`.
    pub const fn lib(package: &'static str, name: &'static str) -> TestId {
        TestId { package, target: None, name }
    }

    /// The shell command that runs this test with only `seed`.
    pub fn replay_command(&self, seed: u64) -> String {
        let target = match self.target {
            Some(target) => format!("--test {target}"),
            None => "--lib".to_owned(),
        };
        format!("{SEED_ENV}={seed} cargo test -p {} {target} -- {} --exact", self.package, self.name)
    }
}

/// Parses a seed written in decimal or as `0x`-prefixed hex.
pub fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The seed in `SWITCHYARD_SEED`, if it is set.
///
/// # Panics
///
/// If the variable is set but is not a seed: silently running every seed instead of the
/// one being replayed would hide the mistake.
pub fn seed_from_env() -> Option<u64> {
    let text = std::env::var(SEED_ENV).ok()?;
    match parse_seed(&text) {
        Some(seed) => Some(seed),
        None => panic!("{SEED_ENV}={text:?} is not a seed: give a decimal or 0x-prefixed hex u64"),
    }
}

/// Runs `check` for every seed in `seeds`, or only for the seed in `SWITCHYARD_SEED` when
/// it is set. See [`check_seeds_with`].
pub fn check_seeds<F>(test: &TestId, seeds: Range<u64>, check: F)
where
    F: FnMut(u64) -> Result<(), String>,
{
    check_seeds_with(test, seeds, seed_from_env(), check)
}

/// Runs `check` for every seed in `seeds`, or only for `replay` when it is `Some`, and
/// stops at the first failure.
///
/// `check` returns `Err(description)` for a failed run; a panic inside it counts as a
/// failure too. Either way this function panics with a message holding the seed, the
/// description and the exact command that replays the run (see
/// [`TestId::replay_command`]).
///
/// # Panics
///
/// On the first failing seed, as described.
pub fn check_seeds_with<F>(test: &TestId, seeds: Range<u64>, replay: Option<u64>, mut check: F)
where
    F: FnMut(u64) -> Result<(), String>,
{
    let run: Vec<u64> = match replay {
        Some(seed) => vec![seed],
        None => seeds.collect(),
    };
    for seed in run {
        let failure = match catch_unwind(AssertUnwindSafe(|| check(seed))) {
            Ok(Ok(())) => continue,
            Ok(Err(failure)) => failure,
            Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
        };
        panic!(
            "simulation {} failed with seed {seed}:\n{failure}\nreplay this exact run with:\n    {}",
            test.name,
            test.replay_command(seed)
        );
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else {
        "(a panic without a message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: TestId = TestId::integration("switchyard-tests", "sim_echo", "some_test");

    #[test]
    fn replay_command_names_the_seed_and_the_exact_test() {
        assert_eq!(
            TEST.replay_command(42),
            "SWITCHYARD_SEED=42 cargo test -p switchyard-tests --test sim_echo -- some_test --exact"
        );
        assert_eq!(
            TestId::lib("switchyard-core", "sim::tests::x").replay_command(7),
            "SWITCHYARD_SEED=7 cargo test -p switchyard-core --lib -- sim::tests::x --exact"
        );
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed(" 1234 "), Some(1234));
        assert_eq!(parse_seed("0xff"), Some(255));
        assert_eq!(parse_seed("seed"), None);
    }

    #[test]
    fn stops_at_the_first_failure_and_reports_it_with_the_replay_command() {
        let mut ran = Vec::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            check_seeds_with(&TEST, 0..10, None, |seed| {
                ran.push(seed);
                if seed == 3 {
                    Err("boom".to_owned())
                } else {
                    Ok(())
                }
            })
        }));
        let panic = result.expect_err("seed 3 fails");
        let message = panic_message(panic.as_ref());
        assert!(message.contains("failed with seed 3:\nboom"), "{message}");
        assert!(message.contains(&TEST.replay_command(3)), "{message}");
        assert_eq!(ran, [0, 1, 2, 3]);
    }

    #[test]
    fn a_replay_runs_only_that_seed_and_panics_count_as_failures() {
        let mut ran = Vec::new();
        check_seeds_with(&TEST, 0..10, Some(77), |seed| {
            ran.push(seed);
            Ok(())
        });
        assert_eq!(ran, [77]);
        let result = catch_unwind(|| check_seeds_with(&TEST, 0..1, None, |_| panic!("inner")));
        let panic = result.expect_err("the inner panic is a failure");
        assert!(panic_message(panic.as_ref()).contains("panicked: inner"));
    }
}
