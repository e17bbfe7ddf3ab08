//! `switchyard up`: the whole network in one process, until Ctrl-C.
//!
//! Every machine runs on the one runtime, each under its own driver: the services first,
//! then the remote tunnel end routing to them, then the local end in front of it, so the
//! carrier finds its remote end at the first attempt. The carrier's secret is drawn from
//! the OS for this run and never written anywhere: both ends live in this process.

pub mod plan;

use crate::launch::{Fleet, LaunchError};
use crate::runtime::Program;
use crate::tls::ClientTls;
use crate::tunnel::spec::{EntranceKind, Entrances, Forward, ForwardListen};
use crate::{seed, serve, tunnel, within, CliError};
use argh::FromArgs;
use plan::{Role, Server};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::service::line_server::LineServerConfig;
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::remote::Routes;
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::tls::{Fingerprint, Trust, TlsIdentity};
use switchyard_core::Env;

/// How long the local end may take to authenticate its carrier before `up` gives up: on
/// loopback it takes milliseconds, so this only catches a broken set-up.
const CARRIER_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Run the whole network on loopback in one process: echo, time, broadcast, greet and
/// stamp, the remote tunnel end routing to them by prefix, the local tunnel end in front,
/// three P2P mesh servers (5001-5003) and the hole-punching rendezvous (UDP 9999), until
/// Ctrl-C. Prints a table of what listens where.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "up",
    example = "switchyard up\nswitchyard send hello\nswitchyard send 9090:time\nswitchyard chat 10000:\nswitchyard up --host 127.0.0.2 --interval 5",
    note = "A port already in use stops everything with a one-line error (exit 1); --host 127.0.0.N runs another copy beside it. Ctrl-C stops every server (exit 0)."
)]
pub struct UpCmd {
    /// IP address every server listens on (default 127.0.0.1)
    #[argh(option, default = "IpAddr::V4(Ipv4Addr::LOCALHOST)")]
    host: IpAddr,

    /// seconds between the time service's pushes, at least 1 (default 60)
    #[argh(option, default = "serve::DEFAULT_INTERVAL", from_str_fn(serve::parse_interval))]
    interval: Duration,

    /// TLS 1.3 on every TCP port but the static forwards (tunnel entrance and carrier,
    /// services, mesh), with a fresh self-signed certificate; the table prints its
    /// fingerprint and the one-liners pin it
    #[argh(switch)]
    tls: bool,

    /// print the config file that runs the same servers (`switchyard run FILE`) and exit,
    /// a starting point for a config of your own
    #[argh(switch)]
    print_config: bool,

    /// serve Prometheus metrics at http://ADDR/metrics for every machine, each under its
    /// own labels (`machine`, `listen`; see the README's Metrics section)
    #[argh(option, from_str_fn(crate::addr::parse))]
    metrics: Option<SocketAddr>,
}

impl Program for UpCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        if self.print_config {
            if self.tls {
                return Err(CliError::usage(
                    "--print-config prints no TLS: up --tls makes its certificate in memory. Make one with `switchyard cert` and add tls_cert/tls_key to the sections",
                ));
            }
            say!("{}", crate::config::seed::seed_topology(self.host, self.interval).trim_end());
            return Ok(ExitCode::SUCCESS);
        }
        let tls = if self.tls { Some(UpTls::new(self.host)?) } else { None };
        let header = match &tls {
            None => format!("switchyard up: all services on {} (Ctrl-C stops)", self.host),
            Some(tls) => format!(
                "switchyard up: all services on {} over TLS, certificate {} (Ctrl-C stops)",
                self.host, tls.fingerprint
            ),
        };
        let fleet = Fleet::with_metrics(self.metrics)?;
        let up = start(&rt, fleet, env, (self.host, self.interval), tls).await?;
        let table = up.table(&header);
        up.fleet
            .serve_until_ctrl_c(|| {
                // Nobody reading stdout is no reason to stop serving.
                let mut out = io::stdout().lock();
                let _ = out.write_all(table.as_bytes()).and_then(|()| out.flush());
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// One line of the table: what listens where.
#[derive(Debug, Clone)]
struct Row {
    what: String,
    addr: SocketAddr,
    note: String,
}

/// The network `up` started.
#[derive(Debug)]
pub struct Up {
    /// Every machine.
    pub fleet: Fleet,
    /// Where clients enter the tunnel.
    pub entrance: SocketAddr,
    /// The static forwards: (address, route).
    pub forwards: Vec<(SocketAddr, String)>,
    rows: Vec<Row>,
}

impl Up {
    /// The table of what listens where, under `header`.
    pub fn table(&self, header: &str) -> String {
        let mut out = format!("{header}\n");
        let width = self.rows.iter().map(|r| r.addr.to_string().len()).max().unwrap_or(0);
        for Row { what, addr, note } in &self.rows {
            let _ = writeln!(out, "  {what:<16} {:<width$}   {note}", addr.to_string());
        }
        out
    }
}

/// `up --tls`: one fresh self-signed certificate for every server, and the pin on it that
/// the servers (dialling each other) and the table's one-liners use.
#[derive(Clone)]
pub struct UpTls {
    identity: TlsIdentity,
    fingerprint: Fingerprint,
    pin: ClientTls,
}

impl UpTls {
    /// A certificate for `host` (and localhost), valid for 30 days, never written to disk.
    pub fn new(host: IpAddr) -> Result<UpTls, CliError> {
        let made = crate::cert::make(&[host.to_string(), "localhost".into()], 30)?;
        let pin = ClientTls { trust: Trust::Pin(made.fingerprint), server_name: None, identity: None, only: None };
        Ok(UpTls { identity: made.identity, fingerprint: made.fingerprint, pin })
    }
}

/// Starts every server of [`plan`] in `fleet` on `host` (the time service pushing every
/// `interval`, over TLS with `tls`) and waits until the tunnel carrier is up. On any
/// failure, whatever had started is stopped again before the error returns.
pub async fn start<R: Runtime>(
    rt: &R,
    mut fleet: Fleet,
    mut env: Env,
    (host, interval): (IpAddr, Duration),
    tls: Option<UpTls>,
) -> Result<Up, CliError> {
    // Each machine mints connection ids in a space of its own, so an id in the shared log
    // names one connection.
    let mut spaces = 1u16..;
    let mut child = || env.child(spaces.next().unwrap_or(u16::MAX));
    let pin = tls.as_ref().map(|t| t.fingerprint);
    let services = plan::services(interval, host, pin);
    let started = async {
        let (routes, service_rows) = launch_services(rt, &mut fleet, &mut child, host, &services, tls.as_ref()).await?;
        let tunnel = launch_tunnel(rt, &mut fleet, &mut child, host, routes, tls.as_ref()).await?;
        Ok::<_, CliError>((tunnel, service_rows))
    };
    match started.await {
        Ok((tunnel, service_rows)) => {
            let mut rows = tunnel.rows(&services, pin);
            rows.extend(service_rows);
            Ok(Up { fleet, entrance: tunnel.entrance, forwards: tunnel.forwards, rows })
        }
        Err(e) => {
            fleet.stop_and_join().await;
            Err(e)
        }
    }
}

/// A secret shared by servers that all live in this process (the carrier's two ends, the
/// mesh servers), so it is never written anywhere: from the OS, and deliberately not from
/// `--seed` (visible to every local user).
fn in_process_secret() -> Result<Secret, CliError> {
    let bytes = seed::secret_from_os().map_err(CliError::new)?;
    Ok(Secret::new(bytes).expect("32 bytes are not empty"))
}

/// Starts the servers behind the tunnel; returns the routes to them and their rows.
async fn launch_services<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    child: &mut impl FnMut() -> Env,
    host: IpAddr,
    services: &[Server],
    tls: Option<&UpTls>,
) -> Result<(Routes, Vec<Row>), CliError> {
    let mut routes = Routes::new();
    let mut rows = Vec::new();
    let mesh_secret = in_process_secret()?;
    for server in services {
        let name = server.role.name();
        let listen = SocketAddr::new(host, server.port);
        let addr = launch_role(rt, fleet, child(), server.role, listen, (tls, &mesh_secret))
            .await
            .map_err(|e| taken(e, &format!("the {name} service")))?;
        if let Some(route) = server.route {
            routes.add(route, addr);
        }
        rows.push(Row { what: name.into(), addr, note: server.note.clone() });
    }
    Ok((routes, rows))
}

/// Where the tunnel's two ends listen.
struct Tunnel {
    carrier: SocketAddr,
    entrance: SocketAddr,
    forwards: Vec<(SocketAddr, String)>,
}

/// Starts the remote end routing to `routes`, then the local end in front of it, and waits
/// for the carrier between them.
async fn launch_tunnel<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    child: &mut impl FnMut() -> Env,
    host: IpAddr,
    routes: Routes,
    tls: Option<&UpTls>,
) -> Result<Tunnel, CliError> {
    let secret = in_process_secret()?;
    let carrier_listen = SocketAddr::new(host, plan::CARRIER_PORT);
    // Under --tls the carrier and the services behind the remote end speak TLS too.
    let remote_tls = tunnel::RemoteTls {
        identity: tls.map(|t| t.identity.clone()),
        clients: None,
        targets: tls.map(|t| t.pin.clone()),
    };
    let setup = tunnel::RemoteSetup { routes, publish: None, threads: 1 };
    let (carrier, _) = tunnel::launch_remote(rt, fleet, child(), carrier_listen, (secret.clone(), remote_tls), setup)
        .await
        .map_err(|e| taken(e, "the tunnel's remote end"))?;

    let forwards: Vec<Forward> = plan::FORWARDS
        .iter()
        .map(|&(port, route)| Forward { listen: ForwardListen::Port(port), route: route.into() })
        .collect();
    let entrances = Entrances::new(SocketAddr::new(host, plan::ENTRANCE_PORT), &forwards);
    let (up_tx, up_rx) = async_channel::bounded::<()>(1);
    let watch = move |event: &TunnelEvent| {
        if matches!(event, TunnelEvent::CarrierUp { .. }) {
            let _ = up_tx.try_send(());
        }
    };
    let (bound, _) = tunnel::launch_local(rt, fleet, child(), tunnel::Carrier {
            remote: carrier,
            secret,
            tls: tls.map(|t| t.pin.clone()),
            entrance_tls: tls.map(|t| t.identity.clone()),
            threads: 1,
            publish: Default::default(),
        }, &entrances, watch)
        .await
        .map_err(|e| taken(e, "the tunnel's local end"))?;
    let carrier_up = async { up_rx.recv().await.map_err(|_| CliError::new("the tunnel's local end stopped")) };
    let secs = CARRIER_UP_TIMEOUT.as_secs();
    let too_slow = || CliError::new(format!("the tunnel carrier did not come up within {secs} s"));
    within(rt, rt.now() + CARRIER_UP_TIMEOUT, too_slow, carrier_up).await?;

    let mut tunnel = Tunnel { carrier, entrance: carrier, forwards: Vec::new() };
    for (addr, kind) in entrances.describe(&bound) {
        match kind {
            EntranceKind::Prefix => tunnel.entrance = addr,
            EntranceKind::Forward(route) => tunnel.forwards.push((addr, route.to_owned())),
        }
    }
    Ok(tunnel)
}

impl Tunnel {
    /// The tunnel's rows of the table; `services` says what each route reaches, `pin` the
    /// certificate clients pin under `--tls`.
    fn rows(&self, services: &[Server], pin: Option<Fingerprint>) -> Vec<Row> {
        let entrance = Row { what: "tunnel entrance".into(), addr: self.entrance, note: try_hint(self.entrance, pin) };
        let mut rows = vec![entrance];
        for (addr, route) in &self.forwards {
            let note = format!("→ route {route}{}, no prefix", served_by(services, route));
            rows.push(Row { what: "forward".into(), addr: *addr, note });
        }
        // Named routes first, `default` last, as the remote end matches them.
        let (default, named): (Vec<&Server>, Vec<&Server>) =
            services.iter().filter(|s| s.route.is_some()).partition(|s| s.route == Some("default"));
        let routes: Vec<String> =
            named.iter().chain(&default).filter_map(|s| Some(format!("{} {}", s.route?, s.role.name()))).collect();
        rows.push(Row {
            what: "tunnel carrier".into(),
            addr: self.carrier,
            note: format!("routes: {}", routes.join(", ")),
        });
        rows
    }
}

/// Starts one server of the plan: over TLS with `tls`; a mesh server linking only with
/// servers that prove `mesh_secret`.
async fn launch_role<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    role: Role,
    listen: SocketAddr,
    (tls, mesh_secret): (Option<&UpTls>, &Secret),
) -> Result<SocketAddr, LaunchError> {
    let identity = tls.map(|t| t.identity.clone());
    match role {
        Role::Service(kind) => serve::launch(rt, fleet, env, kind, LineServerConfig::default(), listen, identity).await,
        Role::Mesh => {
            let peers = plan::MESH_PORTS
                .iter()
                .filter(|&&port| port != listen.port())
                .map(|&port| SocketAddr::new(listen.ip(), port))
                .collect();
            let tls = tls.map(|t| crate::mesh::ServerTls { identity: t.identity.clone(), peers: t.pin.clone(), mesh_ca: None });
            let auth = crate::mesh::MeshAuth { secret: Some(mesh_secret.clone()), ..Default::default() };
            Ok(crate::mesh::launch_server(rt, fleet, env, (listen, peers), auth, tls).await?.0)
        }
        Role::Rendezvous => crate::rendezvous::launch(rt, fleet, env, listen).await,
    }
}

/// A start-up error naming what wanted the port; for a port in use, how to run beside it.
fn taken(e: LaunchError, what: &str) -> CliError {
    if e.error.kind() == io::ErrorKind::AddrInUse {
        CliError::new(format!(
            "{what} cannot start: {} (is another `switchyard up` running? --host 127.0.0.N runs one beside it)",
            e.error
        ))
    } else {
        CliError::new(format!("{what} cannot start: {}", e.error))
    }
}

/// ` (time)` for the route time is served on.
fn served_by(services: &[Server], route: &str) -> String {
    services.iter().find(|s| s.route == Some(route)).map(|s| format!(" ({})", s.role.name())).unwrap_or_default()
}

/// The one-liners to try against the entrance.
fn try_hint(entrance: SocketAddr, pin: Option<Fingerprint>) -> String {
    let to = plan::option_unless_default("to", entrance, plan::ENTRANCE_PORT) + &plan::pin_option(pin);
    format!("try: switchyard send{to} hello | switchyard send{to} 9090:time | switchyard chat{to} 10000:")
}
