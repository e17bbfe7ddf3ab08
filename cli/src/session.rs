//! A line session with a server: the client machinery `send`, `chat` and `demo` share.
//!
//! A [`Session`] is a [`LineClient`] running under its own driver. It can send one line and
//! print the replies ([`Session::one_shot`]), or hand lines to a caller that checks them
//! ([`Session::next_line`]). [`interactive`] sends what the user types while printing
//! whatever arrives, over as many sessions as it takes: a server that closes after one
//! exchange gets the next line on a new connection.

use crate::tls::ClientTls;
use crate::{input, within, CliError};
use async_channel::Receiver;
use bytes::Bytes;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::{Driver, EventPolicy, Running, Runtime};
use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent, SendError};
use switchyard_core::tls::{Tls, TlsEvent};
use switchyard_core::{Env, Instant};

/// How long interactive mode waits before retrying a line the client's send backlog
/// refused: the backlog drains as the server reads.
const BACKLOG_RETRY: Duration = Duration::from_millis(10);

/// Lines read from stdin ahead of the session: the stdin thread waits once this many are
/// queued.
const TYPED_LINES_QUEUED: usize = 64;

/// A connection to a line server. Dropping it closes the connection.
pub struct Session {
    to: SocketAddr,
    running: Running<Tls<LineClient>>,
    events: Receiver<TlsEvent<LineClientEvent>>,
    /// The server sent an `error: ` line.
    server_error: bool,
    /// Lines typed and sent since the server last sent a line: when it closes, these may
    /// never have been read (a one-exchange server reads one line).
    sent_since_reply: usize,
}

impl Session {
    /// Starts connecting to `to`, over TLS with `tls`; gives up after `timeout` (the TLS
    /// handshake included). Lines sent before the connection is up wait for it.
    pub async fn open<R: Runtime>(
        rt: &R,
        env: Env,
        to: SocketAddr,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Session, CliError> {
        let config = LineClientConfig { connect_timeout: timeout, ..LineClientConfig::default() };
        let secret = env.secret(b"tls");
        let client = LineClient::connect(env, Instant::ZERO, to, config);
        let client = crate::tls::wrap(client, None, tls, secret).map_err(CliError::new)?;
        // The events are the replies: never drop one, let a slow reader push back instead.
        let running =
            Driver::new(client).event_policy(EventPolicy::Wait).start(rt.clone()).await.map_err(CliError::new)?;
        let events = running.events();
        Ok(Session { to, running, events, server_error: false, sent_since_reply: 0 })
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
        match self.running.command(|tls, now| tls.command(now, f)).await.map_err(CliError::new)? {
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
            let event = match event {
                TlsEvent::Inner(event) => event,
                TlsEvent::Secured { suite, .. } => {
                    tracing::debug!("secured with TLS 1.3 ({suite})");
                    continue;
                }
                // The client's own ConnectFailed or Closed follows, with the reason.
                TlsEvent::Failed { .. } => continue,
            };
            match event {
                LineClientEvent::Connected { local } => tracing::debug!(%local, "connected to {}", self.to),
                LineClientEvent::Line(line) => {
                    self.sent_since_reply = 0;
                    return Ok(Some(line));
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

    /// For the line saying the server closed: the lines it may not have read, if any.
    fn unread_note(&self) -> String {
        match self.sent_since_reply {
            0 => String::new(),
            n => format!(" ({n} line(s) sent after its last reply may not have been read)"),
        }
    }

    /// Whether the server has sent an `error: ` line on this session.
    pub fn saw_server_error(&self) -> bool {
        self.server_error
    }

    /// Sends a line the user typed: while the client's send backlog is full, waits for it
    /// to drain. Returns false if the connection is already closed (the line was not sent).
    async fn send_typed<R: Runtime>(&mut self, rt: &R, line: &str) -> Result<bool, CliError> {
        loop {
            let bytes = line.as_bytes().to_vec();
            let sent = self.running.command(move |tls, now| tls.command(now, |c, now| c.send_line(now, &bytes)));
            match sent.await.map_err(CliError::new)? {
                Ok(()) => {
                    self.sent_since_reply += 1;
                    return Ok(true);
                }
                Err(SendError::Backlogged { .. }) => rt.sleep_until(rt.now() + BACKLOG_RETRY).await,
                Err(SendError::Closed) => return Ok(false),
                Err(e) => {
                    eprintln!("switchyard: line not sent: {e}");
                    return Ok(true);
                }
            }
        }
    }
}

/// Opens sessions to one server for [`interactive`]: the first, and a new one for a line
/// typed after the server closed the last (a server with one exchange per connection,
/// like `stamp`). Each gets the route prefix first, if there is one.
pub struct Dialer {
    env: Env,
    to: SocketAddr,
    prefix: Option<String>,
    timeout: Duration,
    tls: Option<ClientTls>,
    opened: u16,
}

impl Dialer {
    /// Sessions to `to`, each sent `prefix` (e.g. `10000:`) first; `timeout` bounds each
    /// connect. With `tls`, each session is TLS.
    pub fn new(
        env: Env,
        to: SocketAddr,
        prefix: Option<String>,
        timeout: Duration,
        tls: Option<ClientTls>,
    ) -> Dialer {
        Dialer { env, to, prefix, timeout, tls, opened: 0 }
    }

    async fn open<R: Runtime>(&mut self, rt: &R) -> Result<Session, CliError> {
        self.opened = self.opened.wrapping_add(1);
        let session = Session::open(rt, self.env.child(self.opened), self.to, self.timeout, self.tls.as_ref()).await?;
        if let Some(prefix) = &self.prefix {
            session.send_raw(prefix.clone().into_bytes()).await?;
        }
        Ok(session)
    }
}

/// What the interactive loop waits for next.
enum Next {
    /// A line typed, or `None` at the end of input (or a quit word).
    Typed(Option<String>),
    /// A line from the server, or `None` once it closed the connection.
    Reply(Result<Option<Bytes>, CliError>),
}

/// Sends each line typed on stdin and prints whatever the server sends as it arrives. When
/// the server closes the connection the client says so and keeps reading: the next line
/// typed goes on a new connection. A quit word or the end of input half-closes; the server
/// then gets `timeout` to send its last lines and close. `banner` goes to stderr first.
/// Exit code 1 if the server sent an `error: ` line.
pub async fn interactive<R: Runtime>(rt: &R, mut dialer: Dialer, banner: &str) -> Result<ExitCode, CliError> {
    let (to, timeout) = (dialer.to, dialer.timeout);
    let mut session = Some(dialer.open(rt).await?);
    eprintln!("switchyard: {banner}; type lines to send; quit, exit, q or Ctrl-D ends");
    let typed = spawn_stdin_lines()?;
    let mut server_error = false;
    loop {
        let next = match session.as_mut() {
            Some(s) => {
                let typed = async { Next::Typed(typed.recv().await.ok()) };
                futures_lite::future::or(typed, async { Next::Reply(s.next_line().await) }).await
            }
            None => Next::Typed(typed.recv().await.ok()),
        };
        match next {
            Next::Typed(Some(line)) => {
                if let Some(s) = session.as_mut() {
                    if s.send_typed(rt, &line).await? {
                        continue;
                    }
                }
                // Closed before the line went: print what the server said last, then the
                // line goes on a new connection.
                if let Some(mut old) = session.take() {
                    old.print_until_closed().await?;
                    server_error |= old.saw_server_error();
                    eprintln!("switchyard: {to} closed the connection{}; reconnecting", old.unread_note());
                }
                let s = session.insert(dialer.open(rt).await?);
                s.send_typed(rt, &line).await?;
            }
            Next::Typed(None) => {
                let Some(mut s) = session.take() else { break };
                s.finish().await?;
                within(rt, rt.now() + timeout, || timed_out(to, timeout), s.print_until_closed()).await?;
                server_error |= s.saw_server_error();
                break;
            }
            Next::Reply(Ok(Some(line))) => {
                let Some(s) = session.as_mut() else { continue };
                if s.print(&line).is_err() {
                    // stdout is gone (e.g. `| head`): nobody is left to read replies.
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Next::Reply(Ok(None)) => {
                let Some(old) = session.take() else { continue };
                server_error |= old.saw_server_error();
                eprintln!("switchyard: {to} closed the connection{}; the next line reconnects", old.unread_note());
            }
            Next::Reply(Err(e)) => return Err(e),
        }
    }
    Ok(if server_error { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Lines typed on stdin, read on a thread of their own; the channel closes at a quit word
/// or the end of input. Bounded, so a pasted flood waits for the server instead of
/// filling memory.
fn spawn_stdin_lines() -> Result<Receiver<String>, CliError> {
    let (lines_tx, lines_rx) = async_channel::bounded(TYPED_LINES_QUEUED);
    input::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if input::QUIT_WORDS.contains(&line.trim()) || lines_tx.send_blocking(line).is_err() {
                break;
            }
        }
    })?;
    Ok(lines_rx)
}

impl Drop for Session {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

fn timed_out(to: SocketAddr, timeout: Duration) -> CliError {
    CliError::new(format!("no complete reply from {to} within {} s", timeout.as_secs()))
}
