//! What the interactive clients (`send`, `chat`, `mesh chat`, `punch`) share about typed
//! input: a thread that reads stdin, the words that quit, and the bounded wait at the end
//! of input.
//!
//! stdin is read on a plain thread because a blocking read cannot be cancelled and no
//! runtime here offers async stdin; the thread commands the machine through
//! [`Handle::command_blocking`](switchyard_adapters::Handle::command_blocking) and hands
//! its result to the async side over a channel.

use crate::CliError;
use async_channel::Receiver;
use std::io::{self, BufRead};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// Lines typed that end an interactive session, as in the seed's lab clients.
pub const QUIT_WORDS: [&str; 3] = ["quit", "exit", "q"];

/// How long a client that leaves lets its last datagram or frame go out before it stops
/// its driver: a command returns once its output is queued, not yet sent.
pub const LEAVE_GRACE: Duration = Duration::from_millis(100);

/// How often [`wait_until`] asks again.
const POLL: Duration = Duration::from_millis(20);

/// How reading typed commands ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A quit word.
    Quit,
    /// The end of input (Ctrl-D, or a pipe closing) or a read error.
    Eof,
    /// The handler said the machine has stopped.
    Stopped,
}

/// Runs `read` on a thread of its own; the receiver gets what it returns.
pub fn spawn<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> Result<Receiver<T>, CliError> {
    let (done_tx, done_rx) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let _ = done_tx.send_blocking(read());
        })
        .map_err(|e| CliError::new(format!("cannot start the stdin reader: {e}")))?;
    Ok(done_rx)
}

/// Reads stdin and calls `each` with every non-empty line, trimmed, until a quit word, the
/// end of input, or `each` breaks (the machine has stopped).
pub fn commands(mut each: impl FnMut(&str) -> ControlFlow<()>) -> End {
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if QUIT_WORDS.contains(&line) {
            return End::Quit;
        }
        if each(line).is_break() {
            return End::Stopped;
        }
    }
    End::Eof
}

/// Asks `settled` every few milliseconds until it answers true or fails (the machine has
/// stopped), giving up at `deadline`. Returns whether it settled.
pub fn wait_until<E>(deadline: Instant, mut settled: impl FnMut() -> Result<bool, E>) -> bool {
    loop {
        match settled() {
            Ok(true) => return true,
            Err(_) => return false,
            Ok(false) if Instant::now() >= deadline => return false,
            Ok(false) => std::thread::sleep(POLL),
        }
    }
}
