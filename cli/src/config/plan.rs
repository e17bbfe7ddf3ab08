//! A config file checked and turned into what each role starts with: every value parsed,
//! every file it names read, secrets paired up, ports checked for clashes. Nothing listens
//! until [`Plan::start`].

use super::schema::{ConfigFile, ExposeSection, LocalSection, MeshSection, RemoteSection, ServiceName, ServiceSection};
use super::resolve;
use crate::launch::Fleet;
use crate::mesh::{MeshAuth, MeshControl, ServerTls};
use crate::serve::ServiceKind;
use crate::tunnel::spec::{read_secret, Entrances, Forward};
use crate::tunnel::{Carrier, ForwardControl, RemoteEnd, RouteControl};
use crate::{seed, CliError};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::auth::Secret;
use switchyard_core::service::line_server::LineServerConfig;
use switchyard_core::service::reply::Preset;
use switchyard_core::service::{broadcast, echo, time};
use switchyard_core::tls::TlsIdentity;
use switchyard_core::mesh::tokens::UserTokens;
use switchyard_core::Env;

/// Largest config file read, so a wrong path (a log, a disk image) fails fast.
pub const MAX_FILE: u64 = 1 << 20;

/// A checked config file, ready to start.
pub struct Plan {
    /// The file as parsed, kept to tell what a reload changes.
    pub parsed: ConfigFile,
    services: Vec<Service>,
    remotes: Vec<RemoteEnd>,
    locals: Vec<(SocketAddr, Vec<Forward>, Carrier)>,
    exposes: Vec<Carrier>,
    meshes: Vec<Mesh>,
    rendezvous: Vec<SocketAddr>,
}

struct Service {
    kind: ServiceKind,
    limits: LineServerConfig,
    listen: SocketAddr,
    tls: Option<TlsIdentity>,
}

struct Mesh {
    listen: SocketAddr,
    peers: Vec<SocketAddr>,
    auth: MeshAuth,
    tls: Option<ServerTls>,
}

/// What [`Plan::start`] started.
pub struct Started {
    /// One line per role: where it listens.
    pub announce: Vec<String>,
    /// What a reload needs.
    pub running: Running,
}

/// A started config: the file it came from, and the controls of its remote ends.
pub struct Running {
    /// The file as parsed at start or at the last reload.
    pub parsed: ConfigFile,
    /// The route control of each `[[tunnel_remote]]`, in file order.
    pub remotes: Vec<RouteControl>,
    /// The forward control of each `[[tunnel_local]]`, in file order.
    pub locals: Vec<ForwardControl>,
    /// The control of each `[[mesh_server]]`, in file order, with the user tokens it runs.
    pub meshes: Vec<(MeshControl, UserTokens)>,
}

/// Where in the file a mistake is, for `FILE:LINE:COLUMN: WHAT`.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, what: impl std::fmt::Display) -> CliError {
        let Some(span) = span else { return CliError::new(format!("{}: {what}", self.path.display())) };
        let before = &self.text[..span.start.min(self.text.len())];
        let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
        CliError::new(format!("{}:{}:{column}: {what}", self.path.display(), self.line_of(span.start)))
    }

    /// The line (from 1) of byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }
}

/// Reads `path` as UTF-8 text of at most [`MAX_FILE`] bytes.
fn read_text(path: &Path) -> Result<String, CliError> {
    let cannot = |e: std::io::Error| CliError::new(format!("cannot read config file {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > MAX_FILE {
        return Err(CliError::new(format!("config file {} is {size} bytes; the limit is {MAX_FILE}", path.display())));
    }
    let bytes = std::fs::read(path).map_err(cannot)?;
    String::from_utf8(bytes).map_err(|_| CliError::new(format!("config file {} is not UTF-8 text", path.display())))
}

/// True when a role listening on `listen` is reached by dialling `dialled`: the same
/// address, or the same port on a wildcard listener dialled at loopback.
fn reaches(listen: SocketAddr, dialled: SocketAddr) -> bool {
    listen == dialled
        || (listen.ip().is_unspecified()
            && listen.port() == dialled.port()
            && (dialled.ip().is_loopback() || dialled.ip().is_unspecified()))
}

impl Plan {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Plan, CliError> {
        let text = read_text(path)?;
        let source = Source { path, text: &text };
        let parsed: ConfigFile =
            toml::from_str(&text).map_err(|e| source.error(e.span(), e.message().trim_end().replace('\n', ": ")))?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        Plan::check(parsed, &source, &base)
    }

    fn check(parsed: ConfigFile, source: &Source, base: &Path) -> Result<Plan, CliError> {
        let file = |p: &Option<PathBuf>| p.as_deref().map(|p| resolve(base, p));
        let at = |span: Range<usize>| move |e: CliError| source.error(Some(span.clone()), e);
        let tunnel_secret = in_run_secret()?;
        let mesh_secret = in_run_secret()?;

        let mut services = Vec::new();
        for section in &parsed.service {
            let span = section.span();
            let service = service(section.get_ref(), &file).map_err(at(span))?;
            services.push(service);
        }

        let shared_remotes: Vec<SocketAddr> =
            parsed.tunnel_remote.iter().filter(|r| r.get_ref().secret_file.is_none()).map(|r| remote_listen(r.get_ref())).collect();
        // Where the dialling ends without a secret file dial: local ends and exposing ends.
        let shared_locals: Vec<SocketAddr> = parsed
            .tunnel_local
            .iter()
            .filter(|l| l.get_ref().secret_file.is_none())
            .map(|l| local_remote(l.get_ref()))
            .chain(parsed.tunnel_expose.iter().filter(|e| e.get_ref().secret_file.is_none()).map(|e| expose_remote(e.get_ref())))
            .collect();
        // The secret of an end that dials `remote`: its own file's, or the run's shared
        // with a remote end of this file that has none.
        let dialler_secret = |what: &str, secret_file: &Option<PathBuf>, remote: SocketAddr, span: Range<usize>| {
            match file(secret_file) {
                Some(path) => read_secret(&path).map_err(at(span)),
                None if shared_remotes.iter().any(|&listen| reaches(listen, remote)) => Ok(tunnel_secret.clone()),
                None => Err(source.error(
                    Some(span),
                    format!("this [[{what}]] has no secret_file, and no [[tunnel_remote]] of this file without one listens on {remote}: give both ends the same secret_file"),
                )),
            }
        };

        let mut remotes = Vec::new();
        for section in &parsed.tunnel_remote {
            let (span, r) = (section.span(), section.get_ref());
            let listen = remote_listen(r);
            if r.routes.get_ref().is_empty() && r.allow_publish.is_none() {
                let at = if r.routes.span().is_empty() { span.clone() } else { r.routes.span() };
                let what = "a [[tunnel_remote]] needs at least one route, like \"default=127.0.0.1:7007\", or allow_publish";
                return Err(source.error(Some(at), what));
            }
            let secret = match file(&r.secret_file) {
                Some(path) => read_secret(&path).map_err(at(span.clone()))?,
                None if shared_locals.iter().any(|&d| reaches(listen, d)) => tunnel_secret.clone(),
                None => {
                    return Err(source.error(
                        Some(span),
                        format!("this [[tunnel_remote]] on {listen} has no secret_file, and no [[tunnel_local]] of this file without one dials it: give it the secret_file its local ends hold"),
                    ))
                }
            };
            let tls = crate::tunnel::remote_tls(
                (file(&r.tls_cert).as_deref(), file(&r.tls_key).as_deref()),
                (r.tls_client_pin, file(&r.tls_client_ca).as_deref()),
            )
            .map_err(at(span))?;
            let routes = crate::tunnel::routes(r.routes.get_ref());
            let threads = r.threads.unwrap_or(1);
            remotes.push(RemoteEnd { listen, secret, tls, routes, threads, allow_publish: r.allow_publish.clone() });
        }

        let mut locals = Vec::new();
        for section in &parsed.tunnel_local {
            let (span, l) = (section.span(), section.get_ref());
            let remote = local_remote(l);
            let secret = dialler_secret("tunnel_local", &l.secret_file, remote, span.clone())?;
            let tls = crate::tunnel::local_tls(
                (l.tls_pin, file(&l.tls_ca).as_deref(), l.tls_name.clone()),
                (file(&l.tls_client_cert).as_deref(), file(&l.tls_client_key).as_deref()),
            )
            .map_err(at(span))?;
            let threads = l.threads.unwrap_or(1);
            let carrier = Carrier { remote, secret, tls, entrance_tls: None, threads, publish: Default::default() };
            locals.push((local_listen(l), l.forwards.clone(), carrier));
        }

        let mut exposes = Vec::new();
        for section in &parsed.tunnel_expose {
            let (span, e) = (section.span(), section.get_ref());
            let remote = expose_remote(e);
            let secret = dialler_secret("tunnel_expose", &e.secret_file, remote, span.clone())?;
            let publish = crate::tunnel::spec::publish_map(e.publish.get_ref(), ("a [[tunnel_expose]]", "publish"))
                .map_err(|what| source.error(Some(e.publish.span()), what))?;
            let tls = crate::tunnel::local_tls((e.tls_pin, file(&e.tls_ca).as_deref(), e.tls_name.clone()), (None, None))
                .map_err(at(span))?;
            exposes.push(Carrier { remote, secret, tls, entrance_tls: None, threads: 1, publish });
        }

        let shared_meshes: Vec<SocketAddr> = parsed
            .mesh_server
            .iter()
            .filter(|m| shares_the_run_secret(m.get_ref()))
            .map(|m| mesh_listen(m.get_ref()))
            .collect();
        let mut meshes = Vec::new();
        for section in &parsed.mesh_server {
            let (span, m) = (section.span(), section.get_ref());
            meshes.push(mesh(m, &file, (&shared_meshes, &mesh_secret)).map_err(at(span))?);
        }
        let plan = Plan {
            services,
            remotes,
            locals,
            exposes,
            meshes,
            rendezvous: parsed.rendezvous.iter().map(|r| r.get_ref().listen.unwrap_or(crate::addr::loopback(crate::rendezvous::DEFAULT_PORT))).collect(),
            parsed,
        };
        plan.check_ports(source)?;
        Ok(plan)
    }

    /// Two roles of the file on one TCP address (or two rendezvous on one UDP address)
    /// could never both start: say which, at the second, before anything does.
    fn check_ports(&self, source: &Source) -> Result<(), CliError> {
        let p = &self.parsed;
        let mut tcp: Vec<(SocketAddr, &str, Range<usize>)> = Vec::new();
        tcp.extend(self.services.iter().zip(&p.service).map(|(s, at)| (s.listen, s.kind.name(), at.span())));
        tcp.extend(self.remotes.iter().zip(&p.tunnel_remote).map(|(r, at)| (r.listen, "tunnel remote", at.span())));
        for ((listen, forwards, _), at) in self.locals.iter().zip(&p.tunnel_local) {
            let listeners = Entrances::new(*listen, forwards).listeners();
            tcp.extend(listeners.into_iter().map(|(_, addr)| (addr, "tunnel local", at.span())));
        }
        tcp.extend(self.meshes.iter().zip(&p.mesh_server).map(|(m, at)| (m.listen, "mesh server", at.span())));
        let overlap = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        for (i, (addr, what, span)) in tcp.iter().enumerate() {
            if let Some((other, first, first_at)) = tcp[..i].iter().find(|(other, _, _)| overlap(*other, *addr)) {
                let on = if other == addr { addr.to_string() } else { format!("{addr} and {other}") };
                let line = source.line_of(first_at.start);
                let what = format!("{what} and the {first} of line {line} both listen on {on}: give one another address");
                return Err(source.error(Some(span.clone()), what));
            }
        }
        for (i, (addr, at)) in self.rendezvous.iter().zip(&p.rendezvous).enumerate() {
            if addr.port() != 0 && self.rendezvous[..i].contains(addr) {
                return Err(source.error(Some(at.span()), format!("two [[rendezvous]] on UDP {addr}")));
            }
        }
        Ok(())
    }

    /// True when the file names no role.
    fn is_empty(&self) -> bool {
        let Plan { parsed: _, services, remotes, locals, exposes, meshes, rendezvous } = self;
        services.is_empty()
            && remotes.is_empty()
            && locals.is_empty()
            && exposes.is_empty()
            && meshes.is_empty()
            && rendezvous.is_empty()
    }

    /// `3 services, 1 tunnel remote (5 routes), ...`: what the file starts.
    pub fn summary(&self) -> String {
        let count = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let routes: usize = self.remotes.iter().map(|r| r.routes.iter().count()).sum();
        let forwards: usize = self.locals.iter().map(|(_, f, _)| f.len()).sum();
        let mut parts = Vec::new();
        if !self.services.is_empty() {
            parts.push(count(self.services.len(), "service", "services"));
        }
        if !self.remotes.is_empty() {
            parts.push(format!("{} ({})", count(self.remotes.len(), "tunnel remote", "tunnel remotes"), count(routes, "route", "routes")));
        }
        if !self.locals.is_empty() {
            parts.push(format!("{} ({})", count(self.locals.len(), "tunnel local", "tunnel locals"), count(forwards, "forward", "forwards")));
        }
        if !self.exposes.is_empty() {
            let ports: usize = self.exposes.iter().map(|e| e.publish.len()).sum();
            parts.push(format!("{} ({})", count(self.exposes.len(), "tunnel expose", "tunnel exposes"), count(ports, "published port", "published ports")));
        }
        if !self.meshes.is_empty() {
            parts.push(count(self.meshes.len(), "mesh server", "mesh servers"));
        }
        if !self.rendezvous.is_empty() {
            parts.push(count(self.rendezvous.len(), "rendezvous", "rendezvous"));
        }
        if parts.is_empty() {
            return String::from("nothing to run");
        }
        parts.join(", ")
    }

    /// The user tokens of each `[[mesh_server]]`, in file order (none for one without
    /// `user_token_file`): what a reload gives the running servers.
    pub fn mesh_tokens(&self) -> Vec<UserTokens> {
        self.meshes.iter().map(|m| m.auth.user_tokens.clone()).collect()
    }

    /// Starts every role in `fleet`: services, mesh servers and rendezvous first, then the
    /// remote tunnel ends, then the local ends, so a carrier finds its remote end at once.
    /// On an error, what had started is left in `fleet` for the caller to stop.
    pub async fn start<R: Runtime>(self, rt: &R, fleet: &mut Fleet, mut env: Env) -> Result<Started, CliError> {
        let mut spaces = 1u16..;
        let mut child = || env.child(spaces.next().unwrap_or(u16::MAX));
        let mut announce = Vec::new();
        let tokens = self.mesh_tokens();
        if self.is_empty() {
            return Err(CliError::new("the config file names no role: add a [[service]], [[tunnel_remote]], [[tunnel_local]], [[tunnel_expose]], [[mesh_server]] or [[rendezvous]]"));
        }
        for s in self.services {
            announce.push(crate::serve::start(rt, fleet, child(), (s.kind, s.limits), s.listen, s.tls).await?);
        }
        let mut meshes = Vec::new();
        for (m, tokens) in self.meshes.into_iter().zip(tokens) {
            let (line, control) = crate::mesh::start_server(rt, fleet, child(), (m.listen, m.peers), m.auth, m.tls).await?;
            announce.push(line);
            meshes.push((control, tokens));
        }
        for listen in self.rendezvous {
            announce.push(crate::rendezvous::start(rt, fleet, child(), listen).await?);
        }
        let mut remotes = Vec::new();
        for end in self.remotes {
            let (line, control) = crate::tunnel::start_remote(rt, fleet, child(), end).await?;
            announce.push(line);
            remotes.push(control);
        }
        let mut locals = Vec::new();
        for (listen, forwards, carrier) in self.locals {
            let (line, control) = crate::tunnel::start_local(rt, fleet, child(), (listen, &forwards), carrier).await?;
            announce.push(line);
            locals.push(control);
        }
        for carrier in self.exposes {
            announce.push(crate::tunnel::start_expose(rt, fleet, child(), carrier).await?);
        }
        Ok(Started { announce, running: Running { parsed: self.parsed, remotes, locals, meshes } })
    }
}

/// A secret for the roles of one file that name no secret file: drawn from the OS, never
/// written anywhere, as `up` does.
fn in_run_secret() -> Result<Secret, CliError> {
    let bytes = seed::secret_from_os().map_err(CliError::new)?;
    Ok(Secret::new(bytes).expect("32 bytes are not empty"))
}

fn remote_listen(r: &RemoteSection) -> SocketAddr {
    r.listen.unwrap_or(crate::addr::loopback(7001))
}

/// Where a `[[tunnel_local]]` listens for its prefix entrance (bare forward ports too).
pub(super) fn local_listen(l: &LocalSection) -> SocketAddr {
    l.listen.unwrap_or(crate::addr::loopback(7000))
}

fn local_remote(l: &LocalSection) -> SocketAddr {
    l.remote.unwrap_or(crate::addr::loopback(7001))
}

fn expose_remote(e: &ExposeSection) -> SocketAddr {
    e.remote.unwrap_or(crate::addr::loopback(7001))
}

fn mesh_listen(m: &MeshSection) -> SocketAddr {
    m.listen.unwrap_or(crate::addr::loopback(switchyard_core::mesh::server::DEFAULT_PORTS[0]))
}

/// A `[[service]]`, checked.
fn service(s: &ServiceSection, file: &impl Fn(&Option<PathBuf>) -> Option<PathBuf>) -> Result<Service, CliError> {
    let (kind, port, idles) = match s.kind {
        ServiceName::Echo => (ServiceKind::Echo, echo::DEFAULT_PORT, true),
        ServiceName::Time => {
            let secs = s.interval.as_ref().map_or(crate::serve::DEFAULT_INTERVAL.as_secs(), |i| *i.get_ref());
            if secs == 0 {
                return Err(CliError::new("interval is in seconds, at least 1"));
            }
            (ServiceKind::Time { interval: Duration::from_secs(secs) }, time::DEFAULT_PORT, false)
        }
        ServiceName::Broadcast => (ServiceKind::Broadcast, broadcast::DEFAULT_PORT, false),
        ServiceName::Hello => (ServiceKind::Reply(Preset::Hello), Preset::Hello.default_port(), true),
        ServiceName::Greet => (ServiceKind::Reply(Preset::Greet), Preset::Greet.default_port(), true),
        ServiceName::Stamp => (ServiceKind::Reply(Preset::Stamp), Preset::Stamp.default_port(), true),
    };
    let name = kind.name();
    if s.interval.is_some() && !matches!(kind, ServiceKind::Time { .. }) {
        return Err(CliError::new(format!("interval is for the time service, not {name}")));
    }
    if s.idle_timeout.is_some() && !idles {
        return Err(CliError::new(format!("the {name} service keeps silent clients: it takes no idle_timeout")));
    }
    let mut limits = LineServerConfig::default();
    if !idles {
        limits.idle_timeout = None;
    }
    if let Some(secs) = &s.idle_timeout {
        limits.idle_timeout = (*secs.get_ref() > 0).then(|| Duration::from_secs(*secs.get_ref()));
    }
    if let Some(max_line) = &s.max_line {
        limits.max_line = *max_line.get_ref();
    }
    if let Some(max) = s.max_connections {
        limits.max_connections = max;
    }
    let tls = crate::tls::server_identity(file(&s.tls_cert).as_deref(), file(&s.tls_key).as_deref())?;
    Ok(Service { kind, limits, listen: s.listen.unwrap_or(crate::addr::loopback(port)), tls })
}

/// True for a `[[mesh_server]]` that authenticates its peers with the secret drawn for the
/// run: one with no secret file of its own, no mesh CA, and not `insecure`.
fn shares_the_run_secret(m: &MeshSection) -> bool {
    m.mesh_secret_file.is_none() && m.mesh_ca.is_none() && !m.insecure
}

/// A `[[mesh_server]]`, checked: servers without a secret file (and not `insecure`) share
/// `shared_secret`, so each of their peers must be one of them (`shared`).
fn mesh(
    m: &MeshSection,
    file: &impl Fn(&Option<PathBuf>) -> Option<PathBuf>,
    (shared, shared_secret): (&[SocketAddr], &Secret),
) -> Result<Mesh, CliError> {
    let listen = mesh_listen(m);
    let peers = m.peers.as_ref().map_or_else(|| crate::mesh::default_peers(listen), |p| p.get_ref().clone());
    let secret = match (file(&m.mesh_secret_file), m.insecure) {
        (Some(_), true) => return Err(CliError::new("insecure is for a server without mesh_secret_file; drop one")),
        (None, true) if m.mesh_ca.is_some() => {
            return Err(CliError::new("insecure is for a server without mesh_ca; drop one"))
        }
        (Some(path), false) => Some(read_secret(&path)?),
        (None, _) if !shares_the_run_secret(m) => None,
        (None, _) => {
            if let Some(stranger) = peers.iter().find(|&&peer| !shared.iter().any(|&l| reaches(l, peer))) {
                return Err(CliError::new(format!(
                    "peer {stranger} is not a [[mesh_server]] of this file, and servers without mesh_secret_file share a secret only among themselves: give every server of the mesh the same mesh_secret_file"
                )));
            }
            Some(shared_secret.clone())
        }
    };
    let tls = ServerTls::from_options(
        (file(&m.tls_cert).as_deref(), file(&m.tls_key).as_deref()),
        (m.tls_pin, file(&m.tls_ca).as_deref()),
        (file(&m.mesh_ca).as_deref(), listen),
    )?;
    let user_tokens = file(&m.user_token_file).as_deref().map(crate::mesh::read_user_tokens).transpose()?;
    Ok(Mesh { listen, peers, auth: MeshAuth { secret, user_tokens: user_tokens.unwrap_or_default() }, tls })
}
