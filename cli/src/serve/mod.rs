//! `switchyard serve <service>`: run one line service until Ctrl-C.

mod line_cmd;
mod multi_port;

use crate::launch::{Fleet, LaunchError, Launchable};
use std::collections::BTreeMap;
use crate::runtime::Program;
use crate::{wall, CliError};
use argh::FromArgs;
use line_cmd::line_service_cmd;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::service::broadcast::Broadcast;
use switchyard_core::service::echo::EchoServer;
use switchyard_core::service::line_server::LineServerConfig;
use switchyard_core::service::reply::{Preset, ReplyService};
use switchyard_core::service::time::TimeService;
use switchyard_core::tls::{Tls, TlsIdentity};
use switchyard_core::Machine;
use switchyard_core::{Env, ListenerId};

/// Run a line service until Ctrl-C.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "serve",
    example = "switchyard serve echo\nswitchyard serve time --interval 5\nswitchyard serve broadcast --listen 0.0.0.0:10000",
    note = "Every service speaks newline-terminated lines, so nc and telnet work too. Ctrl-C stops the server (exit 0)."
)]
pub struct ServeCmd {
    #[argh(subcommand)]
    service: Service,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Service {
    Echo(EchoCmd),
    Time(TimeCmd),
    Broadcast(BroadcastCmd),
    Hello(HelloCmd),
    Greet(GreetCmd),
    Stamp(StampCmd),
}

line_service_cmd! {
    /// Serve the line echo service: each line a client sends comes back to it. Try it with
    /// `switchyard send --to 127.0.0.1:7007 hello` or `nc 127.0.0.1 7007`.
    #[argh(
        subcommand,
        name = "echo",
        example = "switchyard serve echo\nswitchyard serve echo --listen 0.0.0.0:7007 --idle-timeout 60",
        note = "A line longer than --max-line gets `error: line too long (limit N bytes)` and the connection is closed; a silent connection gets `error: idle timeout`. Ctrl-C stops the server (exit 0)."
    )]
    pub struct EchoCmd {
        listen: "crate::addr::loopback(7007)", "address to listen on (default 127.0.0.1:7007)",
        idle_timeout: on,
    }
}

line_service_cmd! {
    /// Serve the time service: the current local time (YYYY-MM-DD HH:MM:SS) at connect,
    /// then again every --interval seconds until the client leaves. Try it with
    /// `nc 127.0.0.1 9090`.
    #[argh(
        subcommand,
        name = "time",
        example = "switchyard serve time\nswitchyard serve time --interval 5",
        note = "Lines from clients are read but not answered. Times are in the local time zone read at start-up. Ctrl-C stops the server (exit 0)."
    )]
    pub struct TimeCmd {
        listen: "crate::addr::loopback(9090)", "address to listen on (default 127.0.0.1:9090)",
        idle_timeout: off,
        /// seconds between pushes, at least 1 (default 60)
        #[argh(option, default = "crate::serve::DEFAULT_INTERVAL", from_str_fn(crate::serve::parse_interval))]
        interval: Duration,
    }
}

line_service_cmd! {
    /// Serve the broadcast service: a line from one member goes to every other member as
    /// `NAME: TEXT`. Members see join and leave notices; `/who` lists members, `/nick NAME`
    /// renames, `/help` explains. Try it with `switchyard chat --to 127.0.0.1:10000`.
    #[argh(
        subcommand,
        name = "broadcast",
        example = "switchyard serve broadcast\nswitchyard serve broadcast --listen 0.0.0.0:10000",
        note = "A member that does not read its messages is disconnected once 1 MiB waits for it, so it never slows the others. Ctrl-C stops the server (exit 0)."
    )]
    pub struct BroadcastCmd {
        listen: "crate::addr::loopback(10000)", "address to listen on (default 127.0.0.1:10000)",
        idle_timeout: off,
    }
}

line_service_cmd! {
    /// Serve the `hello` reply preset: `hello` gets `world`, anything else an error line
    /// (the connection stays open).
    #[argh(
        subcommand,
        name = "hello",
        example = "switchyard serve hello\nswitchyard send --to 127.0.0.1:5001 hello\nswitchyard serve hello --ports 5001,5002,5003,5004,5005",
        note = "With --ports, as the original's multi-port server: the same service on each port of the list (on --listen's IP; a port already in use is skipped with a warning: another server may hold it), then an interconnectivity test: every port of the list is sent `hello`, and the log says which answer `world`. A request sent with no newline (as the seeds' clients send it) is answered once 1 s passes with nothing more arriving. Ctrl-C stops the server (exit 0)."
    )]
    pub struct HelloCmd {
        listen: "crate::addr::loopback(5001)", "address to listen on (default 127.0.0.1:5001)",
        idle_timeout: on,
        /// serve on each of these ports of --listen's IP instead (comma-separated, e.g.
        /// 5001,5002,5003), and check at start which of them answer
        #[argh(option, from_str_fn(crate::serve::parse_ports))]
        ports: Option<Ports>,
    }
}

line_service_cmd! {
    /// Serve the `greet` reply preset: `John` gets `Hello Good morning !!!! ::: John`.
    #[argh(
        subcommand,
        name = "greet",
        example = "switchyard serve greet\nswitchyard send --to 127.0.0.1:12345 John",
        note = "A request sent with no newline (as the seeds' clients send it) is answered once 1 s passes with nothing more arriving. Ctrl-C stops the server (exit 0)."
    )]
    pub struct GreetCmd {
        listen: "crate::addr::loopback(12345)", "address to listen on (default 127.0.0.1:12345)",
        idle_timeout: on,
    }
}

line_service_cmd! {
    /// Serve the `stamp` reply preset: `Hello, World!` gets
    /// `Server received at YYYY-MM-DD HH:MM:SS: Hello, World!`, then the server closes (one
    /// exchange per connection, as the original lab server does).
    #[argh(
        subcommand,
        name = "stamp",
        example = "switchyard serve stamp\nswitchyard send --to 127.0.0.1:8080 'Hello, World!'",
        note = "A request sent with no newline (as the seeds' clients send it) is answered once 1 s passes with nothing more arriving. Ctrl-C stops the server (exit 0)."
    )]
    pub struct StampCmd {
        listen: "crate::addr::loopback(8080)", "address to listen on (default 127.0.0.1:8080)",
        idle_timeout: on,
    }
}

/// `--ports`: a comma-separated list of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(Vec<u16>);

/// Parses `5001,5002,5003`.
pub fn parse_ports(s: &str) -> Result<Ports, String> {
    let ports: Vec<u16> = s
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse().map_err(|_| format!("{p:?} is not a port number")))
        .collect::<Result<_, _>>()?;
    if ports.is_empty() || ports.contains(&0) {
        return Err(format!("expected ports like 5001,5002 (got {s:?})"));
    }
    Ok(Ports(ports))
}

/// Default seconds between time pushes.
pub const DEFAULT_INTERVAL: Duration = switchyard_core::service::time::DEFAULT_INTERVAL;

/// `--interval`: whole seconds, at least one.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("expected a whole number of seconds, at least 1 (got {s:?})")),
    }
}

/// A line service, as `serve` and `up` start it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// Each line back to its sender.
    Echo,
    /// The time at connect and every `interval`.
    Time {
        /// Time between pushes.
        interval: Duration,
    },
    /// Lines to every other member.
    Broadcast,
    /// A reply template.
    Reply(Preset),
}

impl ServiceKind {
    /// The service's name, as in `serve NAME` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Echo => "echo",
            ServiceKind::Time { .. } => "time",
            ServiceKind::Broadcast => "broadcast",
            ServiceKind::Reply(preset) => preset.name(),
        }
    }
}

/// Starts service `kind` with limits `config` on `listen` in `fleet`, over TLS with `tls`
/// when given; returns the address it bound. Services that print dates get a wall clock
/// read now.
pub async fn launch<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    kind: ServiceKind,
    config: LineServerConfig,
    listen: SocketAddr,
    tls: Option<TlsIdentity>,
) -> Result<SocketAddr, LaunchError> {
    let name = kind.name();
    let secret = env.secret(b"tls");
    let secured = Secured { name, listen, tls, secret };
    let bound = match kind {
        ServiceKind::Echo => secured.launch(rt, fleet, EchoServer::new(env, config)).await,
        ServiceKind::Time { interval } => {
            secured.launch(rt, fleet, TimeService::new(wall::clock(), interval).server(env, config)).await
        }
        ServiceKind::Broadcast => secured.launch(rt, fleet, Broadcast::server(env, config)).await,
        ServiceKind::Reply(preset) => {
            secured.launch(rt, fleet, ReplyService::new(preset, wall::clock()).server(env, config)).await
        }
    }?;
    Ok(bound.get(&ListenerId(0)).copied().unwrap_or(listen))
}

/// How [`launch`] starts a service: its name and address, and TLS when there is an
/// identity (a pass-through wrapper when not, so every service runs as one type of machine).
struct Secured {
    name: &'static str,
    listen: SocketAddr,
    tls: Option<TlsIdentity>,
    secret: [u8; 32],
}

impl Secured {
    async fn launch<R: Runtime, M>(self, rt: &R, fleet: &mut Fleet, machine: M) -> Result<BTreeMap<ListenerId, SocketAddr>, LaunchError>
    where
        Tls<M>: Launchable,
        M: Machine,
    {
        let machine =
            crate::tls::wrap(machine, self.tls, None, self.secret).map_err(|e| LaunchError::tls_refused(self.name, e))?;
        fleet.launch(rt, self.name, machine, &[(ListenerId(0), self.listen)]).await
    }
}

impl Program for ServeCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        if let Service::Hello(cmd) = &self.service {
            if let Some(ports) = &cmd.ports {
                if cmd.tls_cert.is_some() || cmd.tls_key.is_some() {
                    return Err(CliError::usage("--ports serves plaintext only: drop --tls-cert/--tls-key, or --ports"));
                }
                let fleet = Fleet::with_metrics(cmd.metrics)?;
                return multi_port::serve(&rt, fleet, env, (cmd.listen.ip(), &ports.0), cmd.config()).await;
            }
        }
        let ((kind, listen, config, tls), metrics) = match self.service {
            Service::Echo(cmd) => ((ServiceKind::Echo, cmd.listen, cmd.config(), cmd.tls()?), cmd.metrics),
            Service::Time(cmd) => {
                ((ServiceKind::Time { interval: cmd.interval }, cmd.listen, cmd.config(), cmd.tls()?), cmd.metrics)
            }
            Service::Broadcast(cmd) => ((ServiceKind::Broadcast, cmd.listen, cmd.config(), cmd.tls()?), cmd.metrics),
            Service::Hello(cmd) => ((ServiceKind::Reply(Preset::Hello), cmd.listen, cmd.config(), cmd.tls()?), cmd.metrics),
            Service::Greet(cmd) => ((ServiceKind::Reply(Preset::Greet), cmd.listen, cmd.config(), cmd.tls()?), cmd.metrics),
            Service::Stamp(cmd) => ((ServiceKind::Reply(Preset::Stamp), cmd.listen, cmd.config(), cmd.tls()?), cmd.metrics),
        };
        let mut fleet = Fleet::with_metrics(metrics)?;
        let announce = start(&rt, &mut fleet, env, (kind, config), listen, tls).await?;
        fleet.serve_until_ctrl_c(|| tracing::info!("{announce}")).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Starts a service (as `serve` and a config file's `[[service]]` run it): [`launch`], and
/// returns the line that says where it listens.
pub async fn start<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    (kind, config): (ServiceKind, LineServerConfig),
    listen: SocketAddr,
    tls: Option<TlsIdentity>,
) -> Result<String, CliError> {
    let secured = if tls.is_some() { " (TLS)" } else { "" };
    let addr = launch(rt, fleet, env, kind, config, listen, tls).await?;
    Ok(format!("{} server{secured} listening on {addr}", kind.name()))
}
