//! `switchyard serve <service>`: run a service until Ctrl-C.

use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::{Driver, Runtime};
use switchyard_core::service::echo::{EchoConfig, EchoEvent, EchoServer, DEFAULT_PORT};
use switchyard_core::service::line_server::{EndReason, LineServerEvent};
use switchyard_core::wire::line::DEFAULT_MAX_LINE;
use switchyard_core::{Env, ListenerId};

/// Run a service until Ctrl-C.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve", example = "switchyard serve echo")]
pub struct ServeCmd {
    #[argh(subcommand)]
    service: Service,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Service {
    Echo(EchoCmd),
}

impl Program for ServeCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        match self.service {
            Service::Echo(cmd) => cmd.run(rt, env).await,
        }
    }
}

fn default_echo_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))
}

/// Serve the line echo service: each line a client sends comes back to it. Try it with
/// `switchyard send hello` or `nc 127.0.0.1 7007`.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "echo",
    example = "switchyard serve echo\nswitchyard serve echo --listen 0.0.0.0:7007 --idle-timeout 60",
    note = "A line longer than --max-line gets `error: line too long (limit N bytes)` and the connection is closed; a silent connection gets `error: idle timeout`. Ctrl-C stops the server (exit 0)."
)]
pub struct EchoCmd {
    /// address to listen on (default 127.0.0.1:7007)
    #[argh(option, default = "default_echo_addr()", from_str_fn(crate::addr::parse))]
    listen: SocketAddr,

    /// longest line accepted, in bytes, newline excluded (default 65536)
    #[argh(option, default = "DEFAULT_MAX_LINE")]
    max_line: usize,

    /// close a connection after this many seconds without input; 0 never does
    /// (default 300)
    #[argh(option, default = "300")]
    idle_timeout: u64,

    /// most connections served at once; further ones are refused (default 10000)
    #[argh(option, default = "10_000")]
    max_connections: usize,
}

impl Program for EchoCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let config = EchoConfig {
            max_line: self.max_line,
            max_connections: self.max_connections,
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            ..EchoConfig::default()
        };
        let running = Driver::new(EchoServer::new(env, config))
            .listen(ListenerId(0), self.listen)
            .start(rt)
            .await
            .map_err(CliError::new)?;
        let handle = running.handle();
        ctrlc::set_handler(move || {
            if handle.is_running() {
                tracing::info!("interrupted: shutting down");
                handle.shutdown();
            } else {
                // A second Ctrl-C while shutting down: give up waiting.
                std::process::exit(130);
            }
        })
        .map_err(|e| CliError::new(format!("cannot install the Ctrl-C handler: {e}")))?;
        // Logged once Ctrl-C is handled, so whoever waits for this line may interrupt.
        let addr = running.local_addr(ListenerId(0)).unwrap_or(self.listen);
        tracing::info!("echo server listening on {addr}");

        let events = running.events();
        while let Ok(event) = events.recv().await {
            log_event(&event);
        }
        running.join().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}

fn log_event(event: &EchoEvent) {
    match event {
        LineServerEvent::Accepted { conn, peer } => tracing::info!("{conn} connected from {peer}"),
        LineServerEvent::Closed { conn, peer, reason } => match reason {
            EndReason::Finished => tracing::info!("{conn} from {peer} closed"),
            EndReason::Protocol(_) | EndReason::SlowConsumer(_) => {
                tracing::warn!("{conn} from {peer} disconnected: {reason}")
            }
            _ => tracing::info!("{conn} from {peer} closed: {reason}"),
        },
        LineServerEvent::Service(never) => match *never {},
    }
}
