//! A line session with a server: the client machinery `send`, `chat` and `demo` share.
//!
//! A [`Session`] is a [`LineClient`] running under its own driver. It can send one line and
//! print the replies ([`Session::one_shot`]), send what the user types while printing
//! whatever arrives ([`Session::interactive`]), or hand lines to a caller that checks them
//! ([`Session::next_line`]).

use crate::{input, within, CliError};
use async_channel::Receiver;
use bytes::Bytes;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::{Driver, EventPolicy, Handle, Running, Runtime};
use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent, SendError};
use switchyard_core::{Env, Instant};

/// How long interactive mode waits before retrying a line the client's send backlog
/// refused: the backlog drains as the server reads.
const BACKLOG_RETRY: Duration = Duration::from_millis(10);

/// A connection to a line server. Dropping it closes the connection.
pub struct Session {
    to: SocketAddr,
    running: Running<LineClient>,
    events: Receiver<LineClientEvent>,
    /// The server sent an `error: ` line.
    server_error: bool,
}

impl Session {
    /// Starts connecting to `to`; gives up after `timeout`. Lines sent before the
    /// connection is up wait for it.
    pub async fn open<R: Runtime>(rt: &R, env: Env, to: SocketAddr, timeout: Duration) -> Result<Session, CliError> {
        let config = LineClientConfig { connect_timeout: timeout, ..LineClientConfig::default() };
        let client = LineClient::connect(env, Instant::ZERO, to, config);
        // The events are the replies: never drop one, let a slow reader push back instead.
        let running =
            Driver::new(client).event_policy(EventPolicy::Wait).start(rt.clone()).await.map_err(CliError::new)?;
        let events = running.events();
        Ok(Session { to, running, events, server_error: false })
    }

    /// The server's address.
    pub fn to(&self) -> SocketAddr {
        self.to
    }

    /// Runs `f` on the client. A connection that already failed is not an error here: the
    /// next event says why it failed, which is the better message.
    async fn command(
        &self,
        f: impl FnOnce(&mut LineClient, Instant) -> Result<(), SendError> + Send + 'static,
    ) -> Result<(), CliError> {
        match self.running.command(f).await.map_err(CliError::new)? {
            Ok(()) | Err(SendError::Closed) => Ok(()),
            Err(e) => Err(CliError::new(format!("cannot send: {e}"))),
        }
    }

    /// Sends `bytes` as they are, no newline added: a tunnel route prefix such as `10000:`.
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), CliError> {
        self.command(move |client, now| client.send_raw(now, &bytes)).await
    }

    /// Sends `line` and a newline.
    pub async fn send_line(&self, line: String) -> Result<(), CliError> {
        self.command(move |client, now| client.send_line(now, line.as_bytes())).await
    }

    /// Half-closes once everything sent is delivered: the server sees the end of input and
    /// may still answer.
    pub async fn finish(&self) -> Result<(), CliError> {
        self.command(|client, now| {
            client.finish(now);
            Ok(())
        })
        .await
    }

    /// The next line from the server; `None` once the server has closed the connection.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, CliError> {
        while let Ok(event) = self.events.recv().await {
            match event {
                LineClientEvent::Connected { local } => tracing::debug!(%local, "connected to {}", self.to),
                LineClientEvent::Line(line) => return Ok(Some(line)),
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
        Ok(None)
    }

    /// Prints every line until the server closes. Exit code 1 if it sent an `error: ` line.
    async fn print_until_closed(&mut self) -> Result<ExitCode, CliError> {
        while let Some(line) = self.next_line().await? {
            if self.print(&line).is_err() {
                // stdout is gone (e.g. `| head`): nobody is left to read replies.
                return Ok(ExitCode::SUCCESS);
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

    /// Sends `line`, half-closes, and prints the replies until the server closes, all
    /// within `timeout`.
    pub async fn one_shot<R: Runtime>(mut self, rt: &R, line: String, timeout: Duration) -> Result<ExitCode, CliError> {
        let deadline = rt.now() + timeout;
        self.send_line(line).await?;
        self.finish().await?;
        let to = self.to;
        within(rt, deadline, || timed_out(to, timeout), self.print_until_closed()).await
    }

    /// Sends each line typed on stdin and prints whatever the server sends as it arrives.
    /// A quit word or the end of input half-closes; the server then gets `timeout` to send
    /// its last lines and close. `banner` goes to stderr first.
    pub async fn interactive<R: Runtime>(
        mut self,
        rt: &R,
        banner: &str,
        timeout: Duration,
    ) -> Result<ExitCode, CliError> {
        eprintln!("switchyard: {banner}; type lines to send; quit, exit, q or Ctrl-D ends");
        let handle = self.running.handle();
        let finished_rx = input::spawn(move || send_stdin_lines(&handle))?;
        let to = self.to;
        let tail = async {
            let _ = finished_rx.recv().await;
            within(rt, rt.now() + timeout, || timed_out(to, timeout), futures_lite::future::pending()).await
        };
        futures_lite::future::or(self.print_until_closed(), tail).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

/// The stdin thread: each line is sent; a quit word or end of input half-closes.
fn send_stdin_lines(handle: &Handle<LineClient>) {
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if input::QUIT_WORDS.contains(&line.trim()) {
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
