//! Helpers shared by the cross-crate tests.

use futures_lite::future;
use std::future::Future;
use std::time::Duration;
use switchyard_adapters::Runtime;

/// How long a loopback test may wait for anything before it fails: a guard against hangs,
/// never a timing assertion (speed is measured by `switchyard bench`, not by tests).
pub const GUARD: Duration = Duration::from_secs(60);

/// Runs `fut` to completion on `rt`, panicking with `what` if it is still running after
/// [`GUARD`].
pub fn guarded<R: Runtime, T>(rt: &R, what: &str, fut: impl Future<Output = T>) -> T {
    let deadline = rt.now() + GUARD;
    rt.block_on(future::or(fut, async {
        rt.sleep_until(deadline).await;
        panic!("timed out: {what}")
    }))
}

/// Declares `#[test]`s named after each given function, in a module per runtime (`smol`,
/// `async_std`, `mio`), each calling the function with that runtime: one test body, every
/// adapter.
#[macro_export]
macro_rules! for_each_runtime {
    ($($test:ident),* $(,)?) => {
        mod smol {
            $(#[test] fn $test() { super::$test(switchyard_adapters::SmolRuntime) })*
        }
        mod async_std {
            $(#[test] fn $test() { super::$test(switchyard_adapters::AsyncStdRuntime) })*
        }
        mod mio {
            $(#[test] fn $test() { super::$test(switchyard_adapters::MioRuntime) })*
        }
    };
}
