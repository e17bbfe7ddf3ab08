//! `switchyard tunnel local|remote`: the two ends of the tunnel, each until Ctrl-C.

pub mod spec;

use crate::launch::{Fleet, LaunchError, Launchable, Readiness};
use crate::runtime::Program;
use crate::tls::ClientTls;
use crate::CliError;
use argh::FromArgs;
use spec::{Entrances, Forward, RouteSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_adapters::Runtime;
use switchyard_core::tls::{Secure, TlsEvent, TlsIdentity, TlsServe, Trust};
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::{LocalConfig, TunnelLocal};
use switchyard_core::tunnel::remote::{RemoteConfig, Routes, TunnelRemote};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::{Env, Instant, ListenerId};

/// Run one end of the tunnel: clients → local end → one carrier connection → remote end →
/// the route's target.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "tunnel",
    example = "head -c 32 /dev/urandom | base64 > tunnel.key\nswitchyard tunnel remote --secret-file tunnel.key --route 9090=127.0.0.1:9090 --route default=127.0.0.1:7007\nswitchyard tunnel local --secret-file tunnel.key --remote 127.0.0.1:7001 --forward 7090=9090",
    note = "Both ends need the same secret file: it authenticates the carrier (HMAC-SHA256). For encryption too, run the carrier over TLS: `switchyard cert` makes a certificate for `tunnel remote --tls-cert/--tls-key`, and `tunnel local --tls-pin` takes the fingerprint it prints."
)]
pub struct TunnelCmd {
    #[argh(subcommand)]
    end: End,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum End {
    Local(LocalCmd),
    Remote(RemoteCmd),
}

/// Run the tunnel's local end: clients connect here and are carried to the remote end over
/// one connection. A client's first bytes pick its route: `9090:time` goes to route 9090 as
/// `time`; no numeric prefix goes to the default route, untouched. A --forward port sends
/// every connection to one route with no prefix, like `ssh -L`.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "local",
    example = "switchyard tunnel local --secret-file tunnel.key\nswitchyard tunnel local --remote 203.0.113.7:7001 --secret-file tunnel.key --forward 7090=9090 --forward 127.0.0.1:2222=ssh\nswitchyard send 9090:time",
    note = "The carrier connects at start and reconnects after any loss (backoff from 100 ms up to 5 s). While it is down, clients get `error: tunnel is down (REASON); reconnecting`. Ctrl-C stops (exit 0)."
)]
pub struct LocalCmd {
    /// address of the prefix entrance clients connect to (default 127.0.0.1:7000)
    #[argh(option, default = "crate::addr::loopback(7000)", from_str_fn(crate::addr::parse))]
    listen: SocketAddr,

    /// address of the remote end's carrier listener (default 127.0.0.1:7001)
    #[argh(option, default = "crate::addr::loopback(7001)", from_str_fn(crate::addr::parse))]
    remote: SocketAddr,

    /// file holding the shared secret; the remote end must use the same file (required)
    #[argh(option)]
    secret_file: PathBuf,

    /// PORT=ROUTE or ADDR=ROUTE: every connection to PORT (on the --listen IP) or ADDR
    /// goes to ROUTE, bytes untouched; repeatable
    #[argh(option, from_str_fn(spec::parse_forward))]
    forward: Vec<Forward>,

    /// run the carrier over TLS, accepting only the remote end's certificate with this
    /// SHA-256 fingerprint (as `switchyard cert` prints it)
    #[argh(option, from_str_fn(crate::tls::parse_pin))]
    tls_pin: Option<switchyard_core::tls::Fingerprint>,

    /// run the carrier over TLS, accepting a certificate signed by a CA in this PEM file
    /// (`system`: the system's CA bundle) and valid for the remote's name
    #[argh(option)]
    tls_ca: Option<PathBuf>,

    /// the name TLS asks the remote end for and checks (default: the IP of --remote)
    #[argh(option)]
    tls_name: Option<String>,

    /// mutual TLS: present this PEM certificate (with --tls-client-key) to a remote end
    /// that requires one (its --tls-client-pin or --tls-client-ca)
    #[argh(option)]
    tls_client_cert: Option<PathBuf>,

    /// the PEM private key (Ed25519) of --tls-client-cert
    #[argh(option)]
    tls_client_key: Option<PathBuf>,

    /// carriers (each on an event loop and CPU of its own) to spread clients over, each
    /// new client going to the least-loaded carrier that is up (default 1, at most 64)
    #[argh(option, default = "1", from_str_fn(parse_threads))]
    threads: usize,

    /// serve Prometheus metrics at http://ADDR/metrics: streams, carrier state,
    /// reconnects, refusals by reason, bytes (full build only; see the README's Metrics
    /// section)
    #[argh(option, from_str_fn(crate::addr::parse))]
    metrics: Option<SocketAddr>,
}

/// Run the tunnel's remote end: local ends connect their carrier here, and each stream is
/// connected to its route's target. Routes are an allowlist: the remote end connects
/// nowhere else.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "remote",
    example = "switchyard tunnel remote --secret-file tunnel.key --route 9090=127.0.0.1:9090 --route 10000=127.0.0.1:10000 --route default=127.0.0.1:7007",
    note = "A stream for a route not listed gets `error: unknown route NAME`; with no `default` route, clients without a prefix are refused. Ctrl-C stops (exit 0)."
)]
pub struct RemoteCmd {
    /// address to accept carriers on (default 127.0.0.1:7001)
    #[argh(option, default = "crate::addr::loopback(7001)", from_str_fn(crate::addr::parse))]
    listen: SocketAddr,

    /// file holding the shared secret; the local end must use the same file (required)
    #[argh(option)]
    secret_file: PathBuf,

    /// NAME=ADDR: streams for route NAME (`default`: clients without a prefix) connect to
    /// ADDR; repeatable, at least one
    #[argh(option, from_str_fn(spec::parse_route))]
    route: Vec<RouteSpec>,

    /// accept carriers over TLS only, with this PEM certificate (chain) and --tls-key;
    /// `switchyard cert` makes both files
    #[argh(option)]
    tls_cert: Option<PathBuf>,

    /// the PEM private key (Ed25519) of --tls-cert
    #[argh(option)]
    tls_key: Option<PathBuf>,

    /// mutual TLS: admit only local ends presenting the certificate with this SHA-256
    /// fingerprint (their --tls-client-cert), besides the secret
    #[argh(option, from_str_fn(crate::tls::parse_pin))]
    tls_client_pin: Option<switchyard_core::tls::Fingerprint>,

    /// mutual TLS: admit only local ends presenting a certificate a CA in this PEM file
    /// signed
    #[argh(option)]
    tls_client_ca: Option<PathBuf>,

    /// event loops (each on a CPU of its own) to spread carriers over, each new carrier
    /// going to the loop with the fewest connections (default 1, at most 64)
    #[argh(option, default = "1", from_str_fn(parse_threads))]
    threads: usize,

    /// serve Prometheus metrics at http://ADDR/metrics: streams, carrier state,
    /// reconnects, refusals by reason, bytes (full build only; see the README's Metrics
    /// section)
    #[argh(option, from_str_fn(crate::addr::parse))]
    metrics: Option<SocketAddr>,
}

impl Program for TunnelCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let metrics = match &self.end {
            End::Local(cmd) => cmd.metrics,
            End::Remote(cmd) => cmd.metrics,
        };
        let mut fleet = Fleet::with_metrics(metrics)?;
        let announce = match self.end {
            End::Local(cmd) => {
                let secret = spec::read_secret(&cmd.secret_file)?;
                let mut tls = ClientTls::from_options(cmd.tls_pin, cmd.tls_ca.as_deref(), cmd.tls_name)?;
                let identity =
                    crate::tls::client_identity(cmd.tls_client_cert.as_deref(), cmd.tls_client_key.as_deref())?;
                match (&mut tls, identity) {
                    (Some(tls), identity) => tls.identity = identity,
                    (None, Some(_)) => return Err(CliError::usage("--tls-client-cert needs --tls-pin or --tls-ca")),
                    (None, None) => {}
                }
                let over = if tls.is_some() { " over TLS" } else { "" };
                let entrances = Entrances::new(cmd.listen, &cmd.forward);
                let carrier = Carrier { remote: cmd.remote, secret, tls, entrance_tls: None, threads: cmd.threads };
                let bound = launch_local(&rt, &mut fleet, env, carrier, &entrances, |_| {}).await?;
                let listening: Vec<String> =
                    entrances.describe(&bound).map(|(addr, kind)| format!("{addr} ({kind})")).collect();
                format!("tunnel local end listening on {}; carrier to {}{over}", listening.join(", "), cmd.remote)
            }
            End::Remote(cmd) => {
                if cmd.route.is_empty() {
                    return Err(CliError::usage("tunnel remote needs at least one --route NAME=ADDR"));
                }
                let secret = spec::read_secret(&cmd.secret_file)?;
                let identity = crate::tls::server_identity(cmd.tls_cert.as_deref(), cmd.tls_key.as_deref())?;
                let clients = crate::tls::client_trust(cmd.tls_client_pin, cmd.tls_client_ca.as_deref())?;
                if clients.is_some() && identity.is_none() {
                    return Err(CliError::usage("--tls-client-pin and --tls-client-ca need --tls-cert and --tls-key"));
                }
                let over = match (&identity, &clients) {
                    (None, _) => "",
                    (Some(_), None) => " (TLS)",
                    (Some(_), Some(_)) => " (TLS, client certificates required)",
                };
                let routes = routes(&cmd.route);
                let tls = RemoteTls { identity, clients, targets: None };
                let bound =
                    launch_remote(&rt, &mut fleet, env, cmd.listen, (secret, tls), routes.clone(), cmd.threads).await?;
                let listed: Vec<String> = routes.iter().map(|(name, target)| format!("{name} → {target}")).collect();
                format!("tunnel remote end{over} listening on {bound}; routes: {}", listed.join(", "))
            }
        };
        fleet.serve_until_ctrl_c(|| tracing::info!("{announce}")).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The allowlist from `--route` values (a name given twice keeps the last).
pub fn routes(specs: &[RouteSpec]) -> Routes {
    let mut routes = Routes::new();
    for spec in specs {
        routes.add(&spec.name, spec.target);
    }
    routes
}

/// Where and how a local end reaches its remote end.
pub struct Carrier {
    /// The remote end's carrier address.
    pub remote: SocketAddr,
    /// The secret both ends hold.
    pub secret: Secret,
    /// TLS for the carrier, if any.
    pub tls: Option<ClientTls>,
    /// TLS for the prefix entrance too (`up --tls`), with this identity.
    pub entrance_tls: Option<TlsIdentity>,
    /// Carriers to spread clients over, each with its own event loop.
    pub threads: usize,
}

/// Most event loops one tunnel end runs.
const MAX_THREADS: usize = 64;

/// A `--threads` value: 1 to [`MAX_THREADS`].
fn parse_threads(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!("--threads takes 1 to {MAX_THREADS}, not {value:?}")),
    }
}

/// Whether a local end can carry new clients, from its event: up once the carrier
/// authenticated, not while it reconnects.
fn carrier_ready(event: &TunnelEvent) -> Option<bool> {
    match event {
        TunnelEvent::CarrierUp { .. } => Some(true),
        TunnelEvent::CarrierDown { .. } | TunnelEvent::CarrierConnecting { .. } => Some(false),
        _ => None,
    }
}

/// [`carrier_ready`] for a local end over TLS.
fn tls_carrier_ready(event: &TlsEvent<TunnelEvent>) -> Option<bool> {
    match event {
        TlsEvent::Inner(event) => carrier_ready(event),
        _ => None,
    }
}

/// Starts `machines` in `fleet`: one under its own driver (`watch` seeing its events), or
/// several spread over event loops of their own ([`Fleet::launch_spread`]).
async fn launch_workers<R: Runtime, M: Launchable>(
    rt: &R,
    fleet: &mut Fleet,
    name: &str,
    mut machines: Vec<M>,
    listeners: &[(ListenerId, SocketAddr)],
    watch: impl FnMut(&M::Event) + Send + 'static,
    ready: Readiness<M::Event>,
) -> Result<BTreeMap<ListenerId, SocketAddr>, LaunchError> {
    match machines.len() {
        1 => fleet.launch_watched(rt, name, machines.remove(0), listeners, watch).await,
        _ => fleet.launch_spread(rt, name, machines, listeners, ready).await,
    }
}

/// `threads` environments for the workers of one end: `env` itself for one, children for
/// more.
fn worker_envs(mut env: Env, threads: usize) -> Vec<Env> {
    match threads {
        0 | 1 => vec![env],
        n => (1..=n).map(|i| env.child(i as u16)).collect(),
    }
}

/// Starts a local end in `fleet`, carrying to `carrier.remote` (over TLS when it says so);
/// returns where its listeners bound. `watch` sees its events (see
/// [`Fleet::launch_watched`]).
pub async fn launch_local<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    carrier: Carrier,
    entrances: &Entrances,
    mut watch: impl FnMut(&TunnelEvent) + Send + 'static,
) -> Result<BTreeMap<ListenerId, SocketAddr>, LaunchError> {
    const NAME: &str = "tunnel local";
    // The driver's clock starts at zero, and so does the machine's.
    let config = LocalConfig::new(carrier.remote, carrier.secret, entrances.config());
    let machines = worker_envs(env, carrier.threads).into_iter().map(|env| {
        let secret = env.secret(b"tls");
        (TunnelLocal::new(env, Instant::ZERO, config.clone()), secret)
    });
    let listeners = entrances.listeners();
    match (carrier.tls, carrier.entrance_tls) {
        // Plaintext stays unwrapped: the relay's hot path gains no layer it does not use.
        (None, None) => {
            let machines = machines.map(|(machine, _)| machine).collect();
            let ready = Readiness { at_start: false, on_event: carrier_ready };
            launch_workers(rt, fleet, NAME, machines, &listeners, watch, ready).await
        }
        (tls, entrance) => {
            // The prefix entrance is listener 0; forwards pass bytes untouched, so plain.
            let entrance_only = Secure::Only(vec![ListenerId(0)]);
            let wrapped = machines.map(|(machine, secret)| {
                let serve = entrance.clone().map(|identity| TlsServe {
                    identity,
                    listeners: entrance_only.clone(),
                    clients: None,
                });
                crate::tls::wrap_on(machine, serve, tls.as_ref(), secret).map_err(|e| LaunchError::tls_refused(NAME, e))
            });
            let machines = wrapped.collect::<Result<Vec<_>, _>>()?;
            let watch = move |e: &TlsEvent<TunnelEvent>| {
                if let TlsEvent::Inner(e) = e {
                    watch(e)
                }
            };
            let ready = Readiness { at_start: false, on_event: tls_carrier_ready };
            launch_workers(rt, fleet, NAME, machines, &listeners, watch, ready).await
        }
    }
}

/// How a remote end uses TLS: on its carrier listener (with this identity), and to the
/// route targets it dials (`up --tls`, whose services speak TLS).
#[derive(Default)]
pub struct RemoteTls {
    /// The identity carriers are accepted with; `None` for plaintext carriers.
    pub identity: Option<TlsIdentity>,
    /// Mutual TLS: the client certificates a local end must present.
    pub clients: Option<Trust>,
    /// TLS to the route targets; `None` for plaintext targets.
    pub targets: Option<ClientTls>,
}

/// Starts a remote end in `fleet`, accepting carriers on `listen` (over TLS only, with the
/// identity when one is given); returns the address it bound.
pub async fn launch_remote<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    listen: SocketAddr,
    (secret, tls): (Secret, RemoteTls),
    routes: Routes,
    threads: usize,
) -> Result<SocketAddr, LaunchError> {
    const NAME: &str = "tunnel remote";
    let config = RemoteConfig::new(secret, routes);
    let machines = worker_envs(env, threads).into_iter().map(|env| {
        let secret = env.secret(b"tls");
        (TunnelRemote::new(env, config.clone()), secret)
    });
    let at = [(ListenerId(0), listen)];
    // Every loop can take a carrier: placement goes by connections alone.
    let bound = match tls {
        RemoteTls { identity: None, targets: None, .. } => {
            let machines = machines.map(|(machine, _)| machine).collect();
            launch_workers(rt, fleet, NAME, machines, &at, |_| {}, Readiness { at_start: true, on_event: |_| None })
                .await?
        }
        RemoteTls { identity, clients, targets } => {
            let serve = identity.map(|identity| TlsServe { identity, listeners: Secure::All, clients });
            let wrapped = machines.map(|(machine, secret)| {
                crate::tls::wrap_on(machine, serve.clone(), targets.as_ref(), secret)
                    .map_err(|e| LaunchError::tls_refused(NAME, e))
            });
            let machines = wrapped.collect::<Result<Vec<_>, _>>()?;
            launch_workers(rt, fleet, NAME, machines, &at, |_| {}, Readiness { at_start: true, on_event: |_| None })
                .await?
        }
    };
    Ok(bound.get(&ListenerId(0)).copied().unwrap_or(listen))
}
