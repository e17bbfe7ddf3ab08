//! `switchyard send`: a line client for the text services.

use crate::runtime::Program;
use crate::{within, CliError};
use argh::FromArgs;
use async_channel::Receiver;
use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::{Driver, EventPolicy, Handle, Runtime};
use switchyard_core::service::echo::DEFAULT_PORT;
use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent, SendError};
use switchyard_core::{Env, Instant};

/// Lines typed in interactive mode that end the session, as in the seed's lab client.
const QUIT_WORDS: [&str; 3] = ["quit", "exit", "q"];

/// How long interactive mode waits before retrying a line the client's send backlog
/// refused: the backlog drains as the server reads.
const BACKLOG_RETRY: Duration = Duration::from_millis(10);

fn default_server() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))
}

/// Send a line to a line service (echo by default) and print each reply line. With
/// MESSAGE: send it, print the replies, exit when the server closes. Without: interactive;
/// type lines, replies print as they arrive, and `quit`, `exit`, `q` or Ctrl-D ends.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "send",
    example = "switchyard send hello\nswitchyard send --to 127.0.0.1:7007 hello world\nswitchyard send",
    note = "Reply lines starting with `error: ` go to stderr and make the exit code 1. A server that cannot be reached gives a one-line error and exit code 1."
)]
pub struct SendCmd {
    /// server address (default 127.0.0.1:7007)
    #[argh(option, default = "default_server()", from_str_fn(crate::addr::parse))]
    to: SocketAddr,

    /// seconds to wait for the whole exchange with MESSAGE; in interactive mode, for
    /// connecting and for the last replies after quitting (default 10)
    #[argh(option, default = "10")]
    timeout: u64,

    /// the message (several words are joined with spaces); omit it to type lines
    #[argh(positional)]
    message: Vec<String>,
}

impl Program for SendCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let timeout = Duration::from_secs(self.timeout);
        let config = LineClientConfig { connect_timeout: timeout, ..LineClientConfig::default() };
        let client = LineClient::connect(env, Instant::ZERO, self.to, config);
        // The events are the replies: never drop one, let a slow stdout push back instead.
        let running =
            Driver::new(client).event_policy(EventPolicy::Wait).start(rt.clone()).await.map_err(CliError::new)?;
        let replies = Replies { to: self.to, events: running.events(), server_error: false };
        let result = if self.message.is_empty() {
            interactive(&rt, running.handle(), replies, timeout).await
        } else {
            one_shot(&rt, running.handle(), replies, self.message.join(" "), timeout).await
        };
        running.shutdown();
        result
    }
}

/// Sends `line`, half-closes, prints replies until the server closes.
async fn one_shot<R: Runtime>(
    rt: &R,
    handle: Handle<LineClient>,
    mut replies: Replies,
    line: String,
    timeout: Duration,
) -> Result<ExitCode, CliError> {
    let deadline = rt.now() + timeout;
    let sent = handle
        .command(move |client: &mut LineClient, now| {
            client.send_line(now, line.as_bytes())?;
            client.finish(now);
            Ok(())
        })
        .await
        .map_err(CliError::new)?;
    match sent {
        // The connection already failed (refused, say): the events below say why.
        Ok(()) | Err(SendError::Closed) => {}
        Err(e) => return Err(CliError::new(format!("cannot send: {e}"))),
    }
    let to = replies.to;
    within(rt, deadline, || timed_out(to, timeout), replies.print_until_closed()).await
}

/// Reads stdin lines on a thread and sends them; prints replies as they arrive.
async fn interactive<R: Runtime>(
    rt: &R,
    handle: Handle<LineClient>,
    mut replies: Replies,
    timeout: Duration,
) -> Result<ExitCode, CliError> {
    eprintln!("switchyard: talking to {}; type lines to send; quit, exit, q or Ctrl-D ends", replies.to);
    let (finished_tx, finished_rx) = async_channel::bounded::<()>(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            send_stdin_lines(&handle);
            let _ = finished_tx.send_blocking(());
        })
        .map_err(|e| CliError::new(format!("cannot start the stdin reader: {e}")))?;
    // Once the user is done, the server gets `timeout` to send its last replies.
    let to = replies.to;
    let tail = async {
        let _ = finished_rx.recv().await;
        within(rt, rt.now() + timeout, || timed_out(to, timeout), futures_lite::future::pending()).await
    };
    futures_lite::future::or(replies.print_until_closed(), tail).await
}

/// The stdin thread: each line is sent; a quit word or end of input half-closes.
fn send_stdin_lines(handle: &Handle<LineClient>) {
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if QUIT_WORDS.contains(&line.trim()) {
            break;
        }
        loop {
            let line = line.clone();
            match handle.command_blocking(move |c: &mut LineClient, now| c.send_line(now, line.as_bytes())) {
                Ok(Ok(())) => break,
                Ok(Err(SendError::Backlogged { .. })) => std::thread::sleep(BACKLOG_RETRY),
                Ok(Err(SendError::Closed)) | Err(_) => return,
                Ok(Err(e)) => {
                    eprintln!("switchyard: line not sent: {e}");
                    break;
                }
            }
        }
    }
    let _ = handle.command_blocking(|c: &mut LineClient, now| c.finish(now));
}

fn timed_out(to: SocketAddr, timeout: Duration) -> CliError {
    CliError::new(format!("no complete reply from {to} within {} s", timeout.as_secs()))
}

/// Prints what the client reports until the connection ends.
struct Replies {
    to: SocketAddr,
    events: Receiver<LineClientEvent>,
    /// The server sent an `error: ` line.
    server_error: bool,
}

impl Replies {
    async fn print_until_closed(&mut self) -> Result<ExitCode, CliError> {
        while let Ok(event) = self.events.recv().await {
            match event {
                LineClientEvent::Connected { local } => tracing::debug!(%local, "connected to {}", self.to),
                LineClientEvent::Line(line) => {
                    if self.print(&line).is_err() {
                        // stdout is gone (e.g. `| head`): nobody is left to read replies.
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                LineClientEvent::ConnectFailed(e) => {
                    return Err(CliError::new(format!("cannot connect to {}: {e}", self.to)))
                }
                LineClientEvent::ProtocolError(e) => {
                    return Err(CliError::new(format!("bad reply from {}: {e}", self.to)))
                }
                LineClientEvent::Closed(Some(e)) => {
                    return Err(CliError::new(format!("connection to {} lost: {e}", self.to)))
                }
                LineClientEvent::Closed(None) => break,
            }
        }
        Ok(if self.server_error { ExitCode::FAILURE } else { ExitCode::SUCCESS })
    }

    /// One reply line: errors from the server to stderr, everything else to stdout.
    fn print(&mut self, line: &[u8]) -> io::Result<()> {
        if line.starts_with(b"error: ") {
            self.server_error = true;
            let mut err = io::stderr().lock();
            err.write_all(line)?;
            return err.write_all(b"\n");
        }
        let mut out = io::stdout().lock();
        out.write_all(line)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}
