//! `switchyard tunnel local|remote|expose`: the two ends of the tunnel, and the exposing end
//! of the reverse tunnel, each until Ctrl-C.

pub mod spec;

use crate::control::Control;
use crate::launch::{Fleet, LaunchError, Launchable, Readiness};
use crate::runtime::Program;
use crate::tls::ClientTls;
use crate::CliError;
use argh::FromArgs;
use spec::{Entrances, Forward, Publish, RouteSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use switchyard_adapters::{Handle, Runtime};
use switchyard_core::tls::{ClientCerts, Secure, TlsEvent, TlsIdentity, TlsServe, Trust};
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::{LocalConfig, TunnelLocal};
use switchyard_core::tunnel::remote::{PublishConfig, RemoteConfig, Route, Routes, TunnelRemote};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::{Env, Instant, ListenerId};

/// Run one end of the tunnel: clients → local end → one carrier connection → remote end →
/// the route's target; or, reversed, visitors of a public remote end → the carrier → an
/// exposing end behind NAT → its local service.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "tunnel",
    example = "head -c 32 /dev/urandom | base64 > tunnel.key\nswitchyard tunnel remote --secret-file tunnel.key --route 9090=127.0.0.1:9090 --route default=127.0.0.1:7007\nswitchyard tunnel local --secret-file tunnel.key --remote 127.0.0.1:7001 --forward 7090=9090\nswitchyard tunnel remote --listen 0.0.0.0:7001 --secret-file tunnel.key --allow-publish 12000-13000\nswitchyard tunnel expose --remote 203.0.113.7:7001 --secret-file tunnel.key --publish 12345=127.0.0.1:12345",
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
    Expose(ExposeCmd),
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
    example = "switchyard tunnel remote --secret-file tunnel.key --route 9090=127.0.0.1:9090 --route 10000=127.0.0.1:10000 --route default=127.0.0.1:7007\nswitchyard tunnel remote --secret-file tunnel.key --route web=127.0.0.1:8080,proxy=v1",
    note = "A stream for a route not listed gets `error: unknown route NAME`; with no `default` route, clients without a prefix are refused. Ctrl-C stops (exit 0)."
)]
pub struct RemoteCmd {
    /// address to accept carriers on (default 127.0.0.1:7001)
    #[argh(option, default = "crate::addr::loopback(7001)", from_str_fn(crate::addr::parse))]
    listen: SocketAddr,

    /// file holding the shared secret; the local end must use the same file (required)
    #[argh(option)]
    secret_file: PathBuf,

    /// NAME=ADDR[,proxy=v1|v2]: streams for route NAME (`default`: clients without a
    /// prefix) connect to ADDR, with proxy= first sending ADDR a PROXY protocol header
    /// carrying the client's address; repeatable, at least one
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

    /// LO-HI (or one PORT): exposing ends (`tunnel expose`) may publish these ports here,
    /// on the --listen IP; without it every publish request is refused
    #[argh(option, from_str_fn(spec::parse_port_range))]
    allow_publish: Option<RangeInclusive<u16>>,

    /// serve Prometheus metrics at http://ADDR/metrics: streams, carrier state,
    /// reconnects, refusals by reason, bytes (full build only; see the README's Metrics
    /// section)
    #[argh(option, from_str_fn(crate::addr::parse))]
    metrics: Option<SocketAddr>,
}

/// Run the exposing end of a reverse tunnel: from behind NAT, dial out to a public remote
/// end (`tunnel remote --allow-publish`), which then listens on each published port and
/// sends every visitor through the carrier to the local service here. No port forwarding
/// on the router is needed: only this end's outbound connection.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "expose",
    example = "switchyard tunnel expose --remote 203.0.113.7:7001 --secret-file tunnel.key --publish 12345=127.0.0.1:12345\nswitchyard tunnel expose --remote 203.0.113.7:7001 --secret-file tunnel.key --publish 12345=127.0.0.1:12345 --publish 12080=127.0.0.1:8080 --tls-pin SHA256:...",
    note = "Each port is asked for once the carrier is up: `published 12345 at 203.0.113.7:12345 → 127.0.0.1:12345`, or a warning with the remote end's reason (outside its --allow-publish, taken by another exposing end, bind failed). The carrier reconnects after any loss (backoff from 100 ms up to 5 s) and publishes again; while it is down the ports are closed. Ctrl-C stops (exit 0)."
)]
pub struct ExposeCmd {
    /// address of the remote end's carrier listener (required)
    #[argh(option, from_str_fn(crate::addr::parse))]
    remote: SocketAddr,

    /// file holding the shared secret; the remote end must use the same file (required)
    #[argh(option)]
    secret_file: PathBuf,

    /// PORT=ADDR: the remote end listens on PORT, and its visitors reach ADDR from here;
    /// repeatable, at least one
    #[argh(option, from_str_fn(spec::parse_publish))]
    publish: Vec<Publish>,

    /// run the carrier over TLS (the local services stay plain), accepting a certificate
    /// a CA in this PEM file signed (`system`: the system's CA bundle) for the remote's name
    #[argh(option)]
    tls_ca: Option<PathBuf>,

    /// with --tls-ca or --tls-pin: the name to ask for (default: the IP of --remote)
    #[argh(option)]
    tls_name: Option<String>,

    /// run the carrier over TLS (the local services stay plain), accepting only the
    /// remote end's certificate with this SHA-256 fingerprint
    #[argh(option, from_str_fn(crate::tls::parse_pin))]
    tls_pin: Option<switchyard_core::tls::Fingerprint>,

    /// serve Prometheus metrics at http://ADDR/metrics: streams, carrier state,
    /// reconnects, refusals by reason, bytes (full build only; see the README's Metrics
    /// section)
    #[argh(option, from_str_fn(crate::addr::parse))]
    metrics: Option<SocketAddr>,
}

impl ExposeCmd {
    /// The ports to publish, each once.
    fn publish(&self) -> Result<BTreeMap<u16, SocketAddr>, CliError> {
        spec::publish_map(&self.publish, ("tunnel expose", "--publish")).map_err(CliError::usage)
    }
}

impl Program for TunnelCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let metrics = match &self.end {
            End::Local(cmd) => cmd.metrics,
            End::Remote(cmd) => cmd.metrics,
            End::Expose(cmd) => cmd.metrics,
        };
        let mut fleet = Fleet::with_metrics(metrics)?;
        let announce = match self.end {
            End::Local(cmd) => {
                let tls = local_tls(
                    (cmd.tls_pin, cmd.tls_ca.as_deref(), cmd.tls_name),
                    (cmd.tls_client_cert.as_deref(), cmd.tls_client_key.as_deref()),
                )?;
                let secret = spec::read_secret(&cmd.secret_file)?;
                let (remote, threads) = (cmd.remote, cmd.threads);
                let carrier = Carrier { remote, secret, tls, entrance_tls: None, threads, publish: BTreeMap::new() };
                start_local(&rt, &mut fleet, env, (cmd.listen, &cmd.forward), carrier).await?.0
            }
            End::Expose(cmd) => {
                let publish = cmd.publish()?;
                let tls = local_tls((cmd.tls_pin, cmd.tls_ca.as_deref(), cmd.tls_name), (None, None))?;
                let secret = spec::read_secret(&cmd.secret_file)?;
                let carrier = Carrier { remote: cmd.remote, secret, tls, entrance_tls: None, threads: 1, publish };
                start_expose(&rt, &mut fleet, env, carrier).await?
            }
            End::Remote(cmd) => {
                if cmd.route.is_empty() && cmd.allow_publish.is_none() {
                    return Err(CliError::usage(
                        "tunnel remote needs at least one --route NAME=ADDR, or --allow-publish LO-HI",
                    ));
                }
                let tls = remote_tls(
                    (cmd.tls_cert.as_deref(), cmd.tls_key.as_deref()),
                    (cmd.tls_client_pin, cmd.tls_client_ca.as_deref()),
                )?;
                let secret = spec::read_secret(&cmd.secret_file)?;
                let (listen, threads, allow_publish) = (cmd.listen, cmd.threads, cmd.allow_publish);
                let end = RemoteEnd { listen, secret, tls, routes: routes(&cmd.route), threads, allow_publish };
                start_remote(&rt, &mut fleet, env, end).await?.0
            }
        };
        fleet.serve_until_ctrl_c(|| tracing::info!("{announce}")).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// A local end's carrier TLS from its options (`--tls-pin`/`--tls-ca`/`--tls-name`, and
/// `--tls-client-cert`/`--tls-client-key` for mutual TLS): `None` for a plaintext carrier.
pub fn local_tls(
    (pin, ca, name): (Option<switchyard_core::tls::Fingerprint>, Option<&std::path::Path>, Option<String>),
    (client_cert, client_key): (Option<&std::path::Path>, Option<&std::path::Path>),
) -> Result<Option<ClientTls>, CliError> {
    let mut tls = ClientTls::from_options(pin, ca, name)?;
    match (&mut tls, crate::tls::client_identity(client_cert, client_key)?) {
        (Some(tls), identity) => tls.identity = identity,
        (None, Some(_)) => return Err(CliError::usage("--tls-client-cert needs --tls-pin or --tls-ca")),
        (None, None) => {}
    }
    Ok(tls)
}

/// A remote end's carrier TLS from its options (`--tls-cert`/`--tls-key`, and
/// `--tls-client-pin`/`--tls-client-ca` for mutual TLS).
pub fn remote_tls(
    (cert, key): (Option<&std::path::Path>, Option<&std::path::Path>),
    (client_pin, client_ca): (Option<switchyard_core::tls::Fingerprint>, Option<&std::path::Path>),
) -> Result<RemoteTls, CliError> {
    let identity = crate::tls::server_identity(cert, key)?;
    let clients = crate::tls::client_trust(client_pin, client_ca)?;
    if clients.is_some() && identity.is_none() {
        return Err(CliError::usage("--tls-client-pin and --tls-client-ca need --tls-cert and --tls-key"));
    }
    Ok(RemoteTls { identity, clients, targets: None })
}

/// Starts a local end with its prefix entrance on `listen` and `forwards`, carrying to
/// `carrier` (as `tunnel local` and a config file's `[[tunnel_local]]` run it); returns
/// the line that says what listens where.
pub async fn start_local<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    (listen, forwards): (SocketAddr, &[Forward]),
    carrier: Carrier,
) -> Result<(String, ForwardControl), CliError> {
    let over = if carrier.tls.is_some() { " over TLS" } else { "" };
    let remote = carrier.remote;
    let entrances = Entrances::new(listen, forwards);
    // Forwards a reload added that could not listen, so that the next reload tries again.
    let failed = Arc::new(Mutex::new(Vec::new()));
    let seen = failed.clone();
    let watch = move |event: &TunnelEvent| {
        if let TunnelEvent::ForwardFailed { addr, route, .. } = event {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push((*addr, route.clone()));
        }
    };
    let (bound, control) = launch_local(rt, fleet, env, carrier, &entrances, watch).await?;
    let listening: Vec<String> = entrances.describe(&bound).map(|(addr, kind)| format!("{addr} ({kind})")).collect();
    let announce = format!("tunnel local end listening on {}; carrier to {remote}{over}", listening.join(", "));
    let open = entrances.forwards();
    Ok((announce, ForwardControl { control, open, failed, next: FIRST_RELOADED_LISTENER }))
}

/// Starts an exposing end publishing `carrier.publish` (as `tunnel expose` and a config
/// file's `[[tunnel_expose]]` run it); returns the line that says what it publishes.
pub async fn start_expose<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    carrier: Carrier,
) -> Result<String, CliError> {
    let over = if carrier.tls.is_some() { " over TLS" } else { "" };
    let listed: Vec<String> = carrier.publish.iter().map(|(port, to)| format!("{port} → {to}")).collect();
    let announce = format!("tunnel expose: carrier to {}{over}; publishing {}", carrier.remote, listed.join(", "));
    launch_local(rt, fleet, env, carrier, &Entrances::none(), |_| {}).await?;
    Ok(announce)
}

/// The listener id of the first forward a reload adds; each later one takes the next, so
/// an id is never reused (see the machine contract's rule 7).
const FIRST_RELOADED_LISTENER: u16 = 1024;

/// A running local end's static forwards, and how a config reload changes them.
// Only `switchyard run` reloads, and the minimal build has no `run`.
#[cfg_attr(not(feature = "full"), allow(dead_code))]
pub struct ForwardControl {
    control: Control<TunnelLocal>,
    /// Each open forward: its listener, address and route.
    open: Vec<(ListenerId, SocketAddr, String)>,
    /// Forwards that could not listen since the last reload (address, route): no longer
    /// open. At most one entry per forward a reload added.
    failed: Arc<Mutex<Vec<(SocketAddr, String)>>>,
    next: u16,
}

#[cfg(feature = "full")]
impl ForwardControl {
    /// How many workers (`--threads`) the end runs.
    pub fn workers(&self) -> usize {
        self.control.workers()
    }

    /// Makes the end's forwards those of `forwards` (bare ports on `listen`'s IP, as at
    /// start): each open forward not wanted any more is closed (its streams carry on), and
    /// each wanted one not open is listened on; whether it could be is logged as the end's
    /// event. Each change is logged as `reload: WHO: …` before it is made, so the end's own
    /// line (`listening`, `cannot listen`) follows it; returns how many there were. Only for
    /// an end with one worker ([`ForwardControl::workers`]): the listeners of several are
    /// shared by an accept thread, not theirs, so a reload refuses to change those.
    pub async fn replace(&mut self, who: &str, listen: SocketAddr, forwards: &[Forward]) -> Result<usize, String> {
        let failed = std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()));
        self.open.retain(|(_, addr, route)| !failed.iter().any(|(a, r)| a == addr && r == route));
        let wanted = Entrances::new(listen, forwards).forwards();
        let same =
            |a: &(ListenerId, SocketAddr, String), b: &(ListenerId, SocketAddr, String)| a.1 == b.1 && a.2 == b.2;
        let closing: Vec<_> = self.open.iter().filter(|o| !wanted.iter().any(|w| same(o, w))).cloned().collect();
        let opening: Vec<_> = wanted.iter().filter(|w| !self.open.iter().any(|o| same(o, w))).cloned().collect();
        if closing.is_empty() && opening.is_empty() {
            return Ok(0);
        }
        debug_assert_eq!(self.workers(), 1, "the caller refuses the reload of a multi-worker end");
        let changes = closing.len() + opening.len();
        for (listener, addr, route) in closing {
            tracing::info!("reload: {who}: closing the forward on {addr} to route {route}");
            self.control.each(move |end| end.close_forward(listener)).await.map_err(|e| e.to_string())?;
            self.open.retain(|o| o.0 != listener);
        }
        for (_, addr, route) in opening {
            let listener = ListenerId(self.next);
            self.next = self.next.checked_add(1).ok_or("no listener ids left: restart it")?;
            tracing::info!("reload: {who}: opening a forward on {addr} to route {route}");
            let for_end = route.clone();
            self.control
                .each(move |end| end.open_forward(listener, addr, for_end.clone()))
                .await
                .map_err(|e| e.to_string())?;
            self.open.push((listener, addr, route));
        }
        Ok(changes)
    }
}

/// What a remote end runs with, from flags or a config file.
pub struct RemoteEnd {
    /// Where carriers connect.
    pub listen: SocketAddr,
    /// The secret both ends hold.
    pub secret: Secret,
    /// Its TLS.
    pub tls: RemoteTls,
    /// Its allowlist.
    pub routes: Routes,
    /// Event loops to spread carriers over.
    pub threads: usize,
    /// The ports exposing ends may publish, on the `listen` IP; `None`: no publishing.
    pub allow_publish: Option<RangeInclusive<u16>>,
}

/// Starts a remote end (as `tunnel remote` and a config file's `[[tunnel_remote]]` run
/// it); returns the line that says where it listens and what it routes to, and the
/// control that replaces its routes while it runs.
pub async fn start_remote<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    end: RemoteEnd,
) -> Result<(String, RouteControl), CliError> {
    let over = match (&end.tls.identity, &end.tls.clients) {
        (None, _) => "",
        (Some(_), None) => " (TLS)",
        (Some(_), Some(_)) => " (TLS, client certificates required)",
    };
    let mut listed = describe_routes(&end.routes);
    if listed.is_empty() {
        listed = String::from("none");
    }
    let publish = end.allow_publish.as_ref().map(|ports| PublishConfig::new(ports.clone(), end.listen.ip()));
    let published = match &publish {
        Some(p) => format!("; exposing ends may publish ports {}-{} on {}", p.ports.start(), p.ports.end(), p.ip),
        None => String::new(),
    };
    let config = RemoteSetup { routes: end.routes, publish, threads: end.threads };
    let (bound, control) = launch_remote(rt, fleet, env, end.listen, (end.secret, end.tls), config).await?;
    Ok((format!("tunnel remote end{over} listening on {bound}; routes: {listed}{published}"), control))
}

/// `9090 → 127.0.0.1:9090, default → 127.0.0.1:7007`, for logs.
pub fn describe_routes(routes: &Routes) -> String {
    let listed: Vec<String> = routes
        .iter()
        .map(|(name, route)| match route.proxy {
            None => format!("{name} → {}", route.target),
            Some(version) => format!("{name} → {} (PROXY {})", route.target, version.name()),
        })
        .collect();
    listed.join(", ")
}

/// The allowlist from `--route` values (a name given twice keeps the last).
pub fn routes(specs: &[RouteSpec]) -> Routes {
    let mut routes = Routes::new();
    for spec in specs {
        routes.add(&spec.name, Route { target: spec.target, proxy: spec.proxy });
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
    /// Ports to publish at the remote end → the local service of each (`tunnel expose`).
    pub publish: BTreeMap<u16, SocketAddr>,
}

/// Most event loops one tunnel end runs.
const MAX_THREADS: usize = 64;

/// A `--threads` value: 1 to [`MAX_THREADS`].
pub fn parse_threads(value: &str) -> Result<usize, String> {
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
) -> Result<(BTreeMap<ListenerId, SocketAddr>, Vec<Handle<M>>), LaunchError> {
    match machines.len() {
        1 => {
            let (bound, handle) = fleet.launch_controlled(rt, name, machines.remove(0), listeners, watch).await?;
            Ok((bound, vec![handle]))
        }
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
/// returns where its listeners bound, and the control that changes its forwards. `watch` sees its events (see
/// [`Fleet::launch_controlled`](crate::launch::Fleet::launch_controlled)).
pub async fn launch_local<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    carrier: Carrier,
    entrances: &Entrances,
    mut watch: impl FnMut(&TunnelEvent) + Send + 'static,
) -> Result<(BTreeMap<ListenerId, SocketAddr>, Control<TunnelLocal>), LaunchError> {
    let name = if carrier.publish.is_empty() { "tunnel local" } else { "tunnel expose" };
    // The driver's clock starts at zero, and so does the machine's.
    let mut config = LocalConfig::new(carrier.remote, carrier.secret, entrances.config());
    config.publish = carrier.publish;
    // Only the carrier is TLS: an exposing end's connections to its services stay plain.
    let tls = carrier.tls.map(|tls| ClientTls { only: Some(carrier.remote), ..tls });
    let machines = worker_envs(env, carrier.threads).into_iter().map(|env| {
        let secret = env.secret(b"tls");
        (TunnelLocal::new(env, Instant::ZERO, config.clone()), secret)
    });
    let listeners = entrances.listeners();
    match (tls, carrier.entrance_tls) {
        // Plaintext stays unwrapped: the relay's hot path gains no layer it does not use.
        (None, None) => {
            let machines = machines.map(|(machine, _)| machine).collect();
            let ready = Readiness { at_start: false, on_event: carrier_ready };
            let (bound, handles) = launch_workers(rt, fleet, name, machines, &listeners, watch, ready).await?;
            Ok((bound, Control::over(handles)))
        }
        (tls, entrance) => {
            // The prefix entrance is listener 0; forwards pass bytes untouched, so plain.
            let entrance_only = Secure::Only(vec![ListenerId(0)]);
            let wrapped = machines.map(|(machine, secret)| {
                let serve = entrance.clone().map(|identity| TlsServe {
                    identity,
                    listeners: entrance_only.clone(),
                    clients: ClientCerts::None,
                });
                crate::tls::wrap_on(machine, serve, tls.as_ref(), secret).map_err(|e| LaunchError::tls_refused(name, e))
            });
            let machines = wrapped.collect::<Result<Vec<_>, _>>()?;
            let watch = move |e: &TlsEvent<TunnelEvent>| {
                if let TlsEvent::Inner(e) = e {
                    watch(e)
                }
            };
            let ready = Readiness { at_start: false, on_event: tls_carrier_ready };
            let (bound, handles) = launch_workers(rt, fleet, name, machines, &listeners, watch, ready).await?;
            Ok((bound, Control::over(handles)))
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

/// What a remote end serves: its allowlist, what exposing ends may publish, and how many
/// event loops it spreads carriers over.
pub struct RemoteSetup {
    /// Where streams may go.
    pub routes: Routes,
    /// What exposing ends may publish; `None` refuses every publish request.
    pub publish: Option<PublishConfig>,
    /// Event loops (workers); each worker publishes the ports of its own carriers.
    pub threads: usize,
}

/// Starts a remote end in `fleet`, accepting carriers on `listen` (over TLS only, with the
/// identity when one is given); returns the address it bound and the control that
/// replaces its routes while it runs.
pub async fn launch_remote<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    listen: SocketAddr,
    (secret, tls): (Secret, RemoteTls),
    RemoteSetup { routes, publish, threads }: RemoteSetup,
) -> Result<(SocketAddr, RouteControl), LaunchError> {
    const NAME: &str = "tunnel remote";
    let mut config = RemoteConfig::new(secret, routes);
    config.publish = publish;
    let machines = worker_envs(env, threads).into_iter().map(|env| {
        let secret = env.secret(b"tls");
        (TunnelRemote::new(env, config.clone()), secret)
    });
    let at = [(ListenerId(0), listen)];
    let (bound, control) = match tls {
        RemoteTls { identity: None, targets: None, .. } => {
            let machines = machines.map(|(machine, _)| machine).collect();
            let (bound, handles) = launch_workers(rt, fleet, NAME, machines, &at, |_| {}, always_ready()).await?;
            (bound, RouteControl::over(handles))
        }
        RemoteTls { identity, clients, targets } => {
            // Carriers only: visitors of published ports (listeners the machine opens) stay
            // plain, as the services they reach are.
            let carriers = Secure::Only(vec![ListenerId(0)]);
            let clients = clients.map_or(ClientCerts::None, ClientCerts::Required);
            let serve = identity.map(|identity| TlsServe { identity, listeners: carriers, clients });
            let wrapped = machines.map(|(machine, secret)| {
                crate::tls::wrap_on(machine, serve.clone(), targets.as_ref(), secret)
                    .map_err(|e| LaunchError::tls_refused(NAME, e))
            });
            let machines = wrapped.collect::<Result<Vec<_>, _>>()?;
            let (bound, handles) = launch_workers(rt, fleet, NAME, machines, &at, |_| {}, always_ready()).await?;
            (bound, RouteControl::over(handles))
        }
    };
    Ok((bound.get(&ListenerId(0)).copied().unwrap_or(listen), control))
}

/// Every remote worker can take a carrier: placement goes by connections alone.
fn always_ready<E>() -> Readiness<E> {
    Readiness { at_start: true, on_event: |_| None }
}

/// The control of a remote end: its routes.
pub type RouteControl = Control<TunnelRemote>;
