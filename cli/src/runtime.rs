//! `--runtime`: which async runtime a subcommand runs on.

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;
use switchyard_adapters::mio_rt::{LoopOptions, MAX_BUSY_POLL};
#[cfg(feature = "full")]
use switchyard_adapters::{AsyncStdRuntime, SmolRuntime};
use switchyard_adapters::{MioRuntime, Runtime};
use switchyard_core::Env;

use crate::CliError;

/// The runtimes the CLI can drive machines on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeKind {
    /// smol.
    Smol,
    /// async-std (deprecated upstream; kept supported).
    AsyncStd,
    /// Switchyard's own single-threaded event loop on mio (edge-triggered epoll), the
    /// default: the fewest system calls and the least CPU per relayed message
    /// (`switchyard bench tunnel --pin-cpu 0`: 18–20 µs of the ends' CPU per round trip
    /// against smol's 25–27).
    #[default]
    Mio,
}

impl FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "smol" => Ok(RuntimeKind::Smol),
            "async-std" | "async_std" => Ok(RuntimeKind::AsyncStd),
            "mio" => Ok(RuntimeKind::Mio),
            other => Err(format!("unknown runtime {other:?}: expected smol, async-std or mio")),
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Smol => "smol",
            RuntimeKind::AsyncStd => "async-std",
            RuntimeKind::Mio => "mio",
        })
    }
}

/// A subcommand, written once for any runtime.
pub trait Program {
    /// Runs to completion on `rt`; `env` seeds the machines it builds.
    fn run<R: Runtime>(self, rt: R, env: Env) -> impl Future<Output = Result<ExitCode, CliError>>;

    /// True if the program runs blocking code on the thread that runs it, so its tasks
    /// must run on other threads.
    fn blocks_its_thread(&self) -> bool {
        false
    }
}

/// smol's executor threads asked for with `SMOL_THREADS` (smol's own variable).
#[cfg(feature = "full")]
fn smol_threads() -> usize {
    std::env::var("SMOL_THREADS").ok().and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// The `--busy-poll` window of this process, set once by [`run`]; children it starts as
/// parts of itself (the benchmark's tunnel ends) get the same.
static BUSY_POLL: OnceLock<Duration> = OnceLock::new();

/// This process's `--busy-poll` window; zero when off.
#[cfg(feature = "full")]
pub fn busy_poll() -> Duration {
    BUSY_POLL.get().copied().unwrap_or_default()
}

/// `--busy-poll MICROS`: how long the mio loop polls without sleeping after traffic.
pub fn parse_busy_poll(value: &str) -> Result<Duration, String> {
    let micros: u64 = value.parse().map_err(|_| format!("--busy-poll takes microseconds, not {value:?}"))?;
    let window = Duration::from_micros(micros);
    if window > MAX_BUSY_POLL {
        return Err(format!("--busy-poll {micros} is over the cap of {} µs", MAX_BUSY_POLL.as_micros()));
    }
    Ok(window)
}

/// Runs `program` on the chosen runtime, blocking the current thread. `busy_poll` (mio
/// only) is how long the loop polls without sleeping after traffic.
pub fn run<P: Program>(kind: RuntimeKind, busy_poll: Duration, program: P, env: Env) -> Result<ExitCode, CliError> {
    tracing::debug!(runtime = %kind, ?busy_poll, "starting");
    let _ = BUSY_POLL.set(busy_poll);
    if !busy_poll.is_zero() && kind != RuntimeKind::Mio {
        return Err(CliError::new(format!("--busy-poll needs --runtime mio, not {kind}")));
    }
    // A program that blocks its thread (the benchmark) runs its tasks on the background
    // loop, which never spins; it hands `busy_poll()` to the processes it starts instead.
    match kind {
        // One thread runs every task and the reactor unless more are asked for: a socket
        // event then wakes its task without a hop between threads, which is most of a
        // relay's latency on loopback (see `SmolRuntime`).
        #[cfg(feature = "full")]
        RuntimeKind::Smol if smol_threads() <= 1 && !program.blocks_its_thread() => {
            let rt = SmolRuntime;
            rt.run_here(program.run(rt, env))
        }
        #[cfg(feature = "full")]
        RuntimeKind::Smol => {
            let rt = SmolRuntime;
            rt.block_on(program.run(rt, env))
        }
        #[cfg(feature = "full")]
        RuntimeKind::AsyncStd => {
            let rt = AsyncStdRuntime;
            rt.block_on(program.run(rt, env))
        }
        #[cfg(not(feature = "full"))]
        RuntimeKind::Smol | RuntimeKind::AsyncStd => {
            Err(CliError::usage(format!("--runtime {kind}: the minimal build has the mio runtime only")))
        }
        // Like smol's single thread: tasks, timers and sockets on this thread's loop.
        RuntimeKind::Mio if !program.blocks_its_thread() => {
            let rt = MioRuntime;
            rt.run_here_with(LoopOptions::busy_poll(busy_poll), program.run(rt, env))
        }
        RuntimeKind::Mio => {
            let rt = MioRuntime;
            rt.block_on(program.run(rt, env))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_poll_takes_microseconds_up_to_the_cap() {
        assert_eq!(parse_busy_poll("50"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_busy_poll("0"), Ok(Duration::ZERO));
        let cap = MAX_BUSY_POLL.as_micros();
        assert_eq!(parse_busy_poll(&cap.to_string()), Ok(MAX_BUSY_POLL));
        assert!(parse_busy_poll(&(cap + 1).to_string()).unwrap_err().contains("over the cap"));
        assert!(parse_busy_poll("50us").unwrap_err().contains("microseconds"));
    }
}
