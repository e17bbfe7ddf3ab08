//! `switchyard mesh server` and `switchyard mesh chat`: the P2P mesh from the command line.

use crate::control::Control;
use crate::input::{self, End};
use crate::launch::{Fleet, LaunchError};
use crate::tls::ClientTls;
use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::{Driver, EventPolicy, Handle, Runtime, Stopped};
use switchyard_core::auth::Secret;
use switchyard_core::mesh::client::{ClientConfig, ClientEvent, MeshClient, Selection};
use switchyard_core::mesh::server::{MeshServer, ServerConfig, DEFAULT_PORTS};
use switchyard_core::mesh::tokens::UserTokens;
use switchyard_core::tls::{ClientCerts, Fingerprint, Secure, Tls, TlsEvent, TlsIdentity, TlsServe, Trust};
use switchyard_core::wire::mesh::{is_valid_name, ReceiptStatus};
use switchyard_core::{Env, Instant, ListenerId};

/// Run a P2P mesh server or chat through the mesh.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "mesh",
    example = "switchyard mesh server --listen 127.0.0.1:5001\nswitchyard mesh chat --server 127.0.0.1:5001 --user Alice",
    note = "Wire format: docs/PROTOCOL.md section 4."
)]
pub struct MeshCmd {
    #[argh(subcommand)]
    what: What,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum What {
    Server(ServerCmd),
    Chat(ChatCmd),
}

/// Run a mesh server: users register here, and messages reach users on any server.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "server",
    example = "switchyard mesh server\nswitchyard mesh server --listen 127.0.0.1:5002\nhead -c 32 /dev/urandom | base64 > mesh.key\nswitchyard mesh server --listen 10.0.0.2:5001 --peer 10.0.0.1:5001 --mesh-secret-file mesh.key\nswitchyard mesh server --listen 10.0.0.2:5001 --peer 10.0.0.1:5001 --tls-cert s2/cert.pem --tls-key s2/key.pem --mesh-ca ca/cert.pem\necho \"Alice $(head -c 18 /dev/urandom | base64)\" >> users.tokens\nswitchyard mesh server --user-token-file users.tokens",
    note = "The server dials its peers (with no --peer: the other ports of 5001-5005 on its own IP, as the original does) and learns the rest of the mesh from them; a full mesh forms from any connected set of seeds. Users and servers share the one port. Names are unique across the mesh; with --user-token-file the names it lists are registered only with their tokens, and a login with the token takes its name over at once. With --mesh-secret-file (the same file on every server) a server links only with servers that prove they hold it; with --mesh-ca, only with servers holding a certificate that CA issued (users need none; with both, either admits); without either it listens on loopback only, unless --insecure. Ctrl-C stops the server (exit 0)."
)]
pub struct ServerCmd {
    /// address to listen on and to be known by in the mesh (default 127.0.0.1:5001)
    #[argh(option, default = "crate::addr::loopback(5001)", from_str_fn(crate::addr::parse))]
    listen: SocketAddr,

    /// a server to dial at start (repeatable)
    #[argh(option, from_str_fn(crate::addr::parse))]
    peer: Vec<SocketAddr>,

    /// a file holding the mesh secret, the same on every server: servers link only with
    /// servers that prove they hold it (HMAC-SHA256 challenge, docs/PROTOCOL.md 4.3)
    #[argh(option)]
    mesh_secret_file: Option<PathBuf>,

    /// a file of `NAME TOKEN` lines, the same on every server: a listed name is registered
    /// only by a client that proves its token (`mesh chat --user-token-file`), and such a
    /// login takes the name over from whoever holds it, so a user whose server died or
    /// whose old session still hangs gets its name back at once (docs/PROTOCOL.md 4.3)
    #[argh(option)]
    user_token_file: Option<PathBuf>,

    /// listen beyond loopback without --mesh-secret-file or --mesh-ca: any process that
    /// reaches the port may then join the mesh as a server and forge, veto or take users'
    /// messages
    #[argh(switch)]
    insecure: bool,

    /// speak TLS 1.3 to users and peers, with this PEM certificate (chain) and --tls-key;
    /// peers are dialled over TLS too, trusting this same certificate unless --tls-pin or
    /// --tls-ca says otherwise
    #[argh(option)]
    tls_cert: Option<PathBuf>,

    /// the PEM private key (Ed25519) of --tls-cert
    #[argh(option)]
    tls_key: Option<PathBuf>,

    /// with --tls-cert: accept only peers whose certificate has this SHA-256 fingerprint
    #[argh(option, from_str_fn(crate::tls::parse_pin))]
    tls_pin: Option<Fingerprint>,

    /// with --tls-cert: accept peers whose certificate a CA in this PEM file signed for the
    /// peer's IP address
    #[argh(option)]
    tls_ca: Option<PathBuf>,

    /// with --tls-cert and --tls-key issued by it for --listen's IP (`switchyard cert --ca`,
    /// then `--issuer`): the mesh CA, a PEM file. Servers link only with servers holding a
    /// certificate it issued (or proving --mesh-secret-file, if given too): peers are
    /// dialled presenting --tls-cert and trusting only this CA, and a server that connects
    /// without such a certificate is refused; users need none. Replaces --tls-pin/--tls-ca,
    /// and lets the server listen beyond loopback without a secret
    #[argh(option)]
    mesh_ca: Option<PathBuf>,

    /// serve Prometheus metrics at http://ADDR/metrics: users, peers, messages delivered,
    /// forwarded and deduplicated, the dedup cache (see the README's Metrics section)
    #[argh(option, from_str_fn(crate::addr::parse))]
    metrics: Option<SocketAddr>,
}

/// Chat through the mesh: register a name, send `<recipient> <message>` lines, see what
/// arrives.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "chat",
    example = "switchyard mesh chat --user Alice\nswitchyard mesh chat --server 127.0.0.1:5001,127.0.0.1:5002 --user Bob\nswitchyard mesh chat --server 127.0.0.1:5001 --user Carol --select fastest",
    note = "Type `<recipient> <message>` to send (the original's syntax); incoming messages print as `<sender>: <message>`, receipts as `delivered to <name>` or `no such user <name>`. quit, exit or q leaves the mesh at once; the end of input (Ctrl-D, or a pipe) leaves once registered and every message sent has its receipt, waiting at most 5 s. Without --select, the servers are used in order, failing over to the next. With --select fastest, the client learns every server from the first, measures the round-trip time to each, uses the fastest, and moves only when another is clearly faster (by --switch-ratio of its RTT and --switch-min-ms, a third and 10 ms by default, for 2 s running); if its server dies it is on another within 3 s. Messages wait in an outbox until their receipt arrives and are resent after a move, so none is lost or doubled (order is kept on one session, not across a move). When no server answers, the client says so once and tries them all again after a jittered backoff (250 ms doubling to 10 s). Exit 1 if the input ends before any server took the registration (each server's last failure is named) or with messages still awaiting receipts."
)]
pub struct ChatCmd {
    /// servers, comma-separated (default 127.0.0.1:5001)
    #[argh(option, default = "Servers(vec![crate::addr::loopback(5001)])", from_str_fn(parse_servers))]
    server: Servers,

    /// the name to register (1-32 bytes, no spaces)
    #[argh(option)]
    user: String,

    /// how to pick a server: in-order (default) or fastest
    #[argh(option, default = "SelectArg::InOrder", from_str_fn(parse_select))]
    select: SelectArg,

    /// with --select fastest: move only to a server whose RTT is lower by at least this
    /// share of the current one (default 0.33)
    #[argh(option, default = "1.0 / 3.0", from_str_fn(parse_ratio))]
    switch_ratio: f64,

    /// with --select fastest: and lower by at least this many milliseconds (default 10)
    #[argh(option, default = "10")]
    switch_min_ms: u64,

    /// use TLS, accepting only servers whose certificate has this SHA-256 fingerprint (as
    /// `switchyard cert` prints it)
    #[argh(option, from_str_fn(crate::tls::parse_pin))]
    tls_pin: Option<Fingerprint>,

    /// use TLS, accepting a server certificate signed by a CA in this PEM file (`system`:
    /// the system's CA bundle) and valid for the server's name
    #[argh(option)]
    tls_ca: Option<PathBuf>,

    /// the server name TLS asks for and checks (default: the IP address of each server)
    #[argh(option)]
    tls_name: Option<String>,

    /// a file holding this user's `NAME TOKEN` line (the servers' --user-token-file, or just
    /// the one line): with it, a server that lists the name lets this client register it,
    /// and takes it over from an older session of the same user anywhere in the mesh
    #[argh(option)]
    user_token_file: Option<PathBuf>,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a share between 0 and 1, like 0.33 (got {s:?})")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelectArg {
    InOrder,
    Fastest,
}

fn parse_select(s: &str) -> Result<SelectArg, String> {
    match s {
        "in-order" => Ok(SelectArg::InOrder),
        "fastest" => Ok(SelectArg::Fastest),
        other => Err(format!("unknown selection {other:?}: expected in-order or fastest")),
    }
}

/// A comma-separated list of servers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Servers(Vec<SocketAddr>);

fn parse_servers(s: &str) -> Result<Servers, String> {
    s.split(',').filter(|p| !p.is_empty()).map(crate::addr::parse).collect::<Result<_, _>>().map(Servers)
}

impl MeshCmd {
    /// True for `mesh server` (its logs are a server's), false for `mesh chat`.
    pub fn is_server(&self) -> bool {
        matches!(self.what, What::Server(_))
    }
}

impl Program for MeshCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        match self.what {
            What::Server(cmd) => cmd.run(rt, env).await,
            What::Chat(cmd) => cmd.run(rt, env).await,
        }
    }
}

/// The peers a server dials by default: the other default ports on its own IP.
pub fn default_peers(listen: SocketAddr) -> Vec<SocketAddr> {
    DEFAULT_PORTS.iter().filter(|&&p| p != listen.port()).map(|&p| SocketAddr::new(listen.ip(), p)).collect()
}

/// Whom a mesh server admits: servers that prove `secret` (any, without one), and the
/// names of `user_tokens` only to clients that prove their tokens.
#[derive(Debug, Clone, Default)]
pub struct MeshAuth {
    /// The mesh secret (`--mesh-secret-file`).
    pub secret: Option<Secret>,
    /// The names that need a token (`--user-token-file`).
    pub user_tokens: UserTokens,
}

/// Reads a `--user-token-file`: `NAME TOKEN` lines ([`UserTokens::parse`]), at most
/// 16 MiB; an error names the file and the line.
pub fn read_user_tokens(path: &Path) -> Result<UserTokens, CliError> {
    const MAX_FILE: u64 = 16 << 20;
    let shown = path.display();
    let too_big = std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_FILE);
    if too_big {
        return Err(CliError::new(format!("token file {shown} is over {} MiB", MAX_FILE >> 20)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| CliError::new(format!("cannot read token file {shown}: {e}")))?;
    let tokens = UserTokens::parse(&text).map_err(|e| CliError::new(format!("token file {shown}, {e}")))?;
    if tokens.is_empty() {
        return Err(CliError::new(format!("token file {shown} lists no `NAME TOKEN` line")));
    }
    Ok(tokens)
}

/// A mesh server on `listen` that dials `peers`, as `mesh server` and `up` run it: a
/// `telnet` user who reaches its port is told how to talk to it and where the text
/// services are.
/// `peers_by_certificate`: admit peers by a certificate from the mesh CA (see
/// [`ServerConfig::peers_by_certificate`]).
pub fn server(
    env: Env,
    listen: SocketAddr,
    peers: Vec<SocketAddr>,
    auth: MeshAuth,
    peers_by_certificate: bool,
) -> MeshServer {
    let text_client_reply = format!(
        "error: {listen} is a Switchyard mesh server: it speaks binary frames (docs/PROTOCOL.md section 4), \
         not text. Chat through it with `switchyard mesh chat --server {listen} --user NAME`; \
         the hello/world service is `switchyard serve hello` (port 5001 when no mesh server holds it).\n"
    );
    let config = ServerConfig {
        text_client_reply,
        peer_secret: auth.secret,
        user_tokens: auth.user_tokens,
        peers_by_certificate,
        ..ServerConfig::new(listen, peers)
    };
    MeshServer::new(env, Instant::ZERO, config)
}

/// How a mesh server speaks TLS: the identity it serves, and what it trusts of the peers
/// it dials.
pub struct ServerTls {
    /// Its certificate and key.
    pub identity: TlsIdentity,
    /// Its peers' certificates.
    pub peers: ClientTls,
    /// The mesh CA (`--mesh-ca`): servers whose client certificate it issued are admitted
    /// as peers, and the port asks every client for an optional certificate from it.
    pub mesh_ca: Option<Trust>,
}

impl ServerTls {
    /// From `mesh server`'s options: none without `--tls-cert`; peers trusted by
    /// `--mesh-ca` (which `listen`'s IP must hold a certificate of), or `--tls-pin`/`--tls-ca`,
    /// or else by the fingerprint of its own certificate (one certificate shared by every
    /// server of the mesh).
    pub fn from_options(
        (cert, key): (Option<&Path>, Option<&Path>),
        (pin, ca): (Option<Fingerprint>, Option<&Path>),
        (mesh_ca, listen): (Option<&Path>, SocketAddr),
    ) -> Result<Option<ServerTls>, CliError> {
        let Some(identity) = crate::tls::server_identity(cert, key)? else {
            if mesh_ca.is_some() {
                return Err(CliError::usage(
                    "--mesh-ca needs --tls-cert and --tls-key: a certificate the CA issued for this server's IP (switchyard cert --issuer)",
                ));
            }
            if pin.is_some() || ca.is_some() {
                return Err(CliError::usage("--tls-pin and --tls-ca (for peers) need --tls-cert and --tls-key"));
            }
            return Ok(None);
        };
        // An identity was read, so there is a --tls-cert to name.
        if let (Some(mesh_ca), Some(cert)) = (mesh_ca, cert) {
            if pin.is_some() || ca.is_some() {
                return Err(CliError::usage("--mesh-ca says which peers to trust; drop --tls-pin and --tls-ca"));
            }
            return Self::by_mesh_ca(identity, (mesh_ca, cert), listen).map(Some);
        }
        let own = identity.fingerprint().ok_or_else(|| CliError::new("--tls-cert holds no certificate"))?;
        let peers = ClientTls::from_options(pin.or(Some(own)).filter(|_| ca.is_none()), ca, None)?
            .expect("a pin or a CA is given");
        Ok(Some(ServerTls { identity, peers, mesh_ca: None }))
    }

    /// A server of a mesh CA's: its own certificate must be one the CA issued for
    /// `listen`'s IP, both ways (peers check it as a server's and as a client's), since
    /// every peer would refuse it otherwise.
    fn by_mesh_ca(identity: TlsIdentity, (ca, cert): (&Path, &Path), listen: SocketAddr) -> Result<ServerTls, CliError> {
        let authorities = crate::tls::load_certificates(ca, "--mesh-ca")?;
        for authority in &authorities {
            crate::cert::ca_params(authority).map_err(|why| {
                CliError::new(format!("--mesh-ca {}: {why}; make one with switchyard cert --ca", ca.display()))
            })?;
        }
        let trust = Trust::Authorities(authorities);
        let now = crate::wall::unix_secs_now();
        switchyard_core::tls::check_identity(&trust, &identity, &listen.ip().to_string(), now).map_err(|why| {
            CliError::new(format!(
                "--tls-cert {}: not a certificate the mesh CA {} issued for {} ({why}); issue one with `switchyard cert --name {} --issuer DIR`",
                cert.display(),
                ca.display(),
                listen.ip(),
                listen.ip()
            ))
        })?;
        let peers = ClientTls { trust: trust.clone(), server_name: None, identity: Some(identity.clone()), only: None };
        Ok(ServerTls { identity, peers, mesh_ca: Some(trust) })
    }
}

/// Runs calls on a running mesh server's machine (a reload's new user tokens).
pub type MeshControl = Control<MeshServer>;

/// Starts a mesh server on `listen` that dials `peers` (as `mesh server` and `up` run it),
/// admitting servers and users by `auth`, over TLS with `tls`; returns the address it
/// bound, and its control.
pub async fn launch_server<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    (listen, peers): (SocketAddr, Vec<SocketAddr>),
    auth: MeshAuth,
    tls: Option<ServerTls>,
) -> Result<(SocketAddr, MeshControl), LaunchError> {
    let secret = env.secret(b"tls");
    let (serve, dial, by_certificate) = match tls {
        Some(tls) => {
            let by_certificate = tls.mesh_ca.is_some();
            // Users present no certificate; servers of the mesh CA do, and are admitted by it.
            let clients = tls.mesh_ca.map_or(ClientCerts::None, ClientCerts::Optional);
            (Some(TlsServe { identity: tls.identity, listeners: Secure::All, clients }), Some(tls.peers), by_certificate)
        }
        None => (None, None, false),
    };
    let machine = server(env, listen, peers, auth, by_certificate);
    let machine =
        crate::tls::wrap_on(machine, serve, dial.as_ref(), secret).map_err(|e| LaunchError::tls_refused("mesh", e))?;
    let (bound, handle) = fleet.launch_controlled(rt, "mesh", machine, &[(ListenerId(0), listen)], |_| {}).await?;
    Ok((bound[&ListenerId(0)], Control::over(vec![handle])))
}

impl ServerCmd {
    /// The mesh secret from `--mesh-secret-file`; without one (or a mesh CA, which
    /// authenticates servers too), the server must listen on loopback or be told
    /// `--insecure`, since anyone who reaches it could join the mesh.
    fn peer_secret(&self) -> Result<Option<Secret>, CliError> {
        let by_ca = self.mesh_ca.is_some();
        match (&self.mesh_secret_file, self.insecure) {
            (Some(_), true) => Err(CliError::usage("--insecure is for a server without --mesh-secret-file; drop one")),
            (None, true) if by_ca => Err(CliError::usage("--insecure is for a server without --mesh-ca; drop one")),
            (Some(path), false) => crate::tunnel::spec::read_secret(path).map(Some),
            (None, false) if !by_ca && !self.listen.ip().is_loopback() => Err(CliError::usage(format!(
                "a mesh server on {} without --mesh-secret-file would let anyone who reaches it join the mesh \
                 as a server and forge, veto or take users' messages. Give every server the same secret file \
                 (`head -c 32 /dev/urandom | base64 > mesh.key`, then --mesh-secret-file mesh.key), \
                 or certificates from one CA (--mesh-ca, see `switchyard cert --ca`), \
                 or --insecure to run it open anyway",
                self.listen
            ))),
            (None, _) => Ok(None),
        }
    }

    async fn run<R: Runtime>(self, rt: R, mut env: Env) -> Result<ExitCode, CliError> {
        let secret = self.peer_secret()?;
        let tls = ServerTls::from_options(
            (self.tls_cert.as_deref(), self.tls_key.as_deref()),
            (self.tls_pin, self.tls_ca.as_deref()),
            (self.mesh_ca.as_deref(), self.listen),
        )?;
        let user_tokens = self.user_token_file.as_deref().map(read_user_tokens).transpose()?.unwrap_or_default();
        let auth = MeshAuth { secret, user_tokens };
        let peers = if self.peer.is_empty() { default_peers(self.listen) } else { self.peer };
        let mut fleet = Fleet::with_metrics(self.metrics)?;
        let (announce, _) = start_server(&rt, &mut fleet, env.child(1), (self.listen, peers), auth, tls).await?;
        fleet.serve_until_ctrl_c(|| tracing::info!("{announce}")).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Starts a mesh server (as `mesh server` and a config file's `[[mesh_server]]` run it):
/// [`launch_server`], and returns the line that says where it listens, whom it dials,
/// whom it links with and how many names need tokens, and its control. A server with no
/// secret is warned about at once.
pub async fn start_server<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    (listen, peers): (SocketAddr, Vec<SocketAddr>),
    auth: MeshAuth,
    tls: Option<ServerTls>,
) -> Result<(String, MeshControl), CliError> {
    let over = if tls.is_some() { " (TLS)" } else { "" };
    let by_ca = tls.as_ref().is_some_and(|t| t.mesh_ca.is_some());
    let who = match (auth.secret.is_some(), by_ca) {
        (true, true) => "servers that prove the mesh secret or have a certificate from the mesh CA",
        (true, false) => "servers that prove the mesh secret",
        (false, true) => "servers with a certificate from the mesh CA",
        (false, false) => "any server (no mesh secret)",
    };
    if auth.secret.is_none() && !by_ca && !listen.ip().is_loopback() {
        tracing::warn!("no mesh secret: any process that reaches {listen} may join the mesh as a server");
    }
    let tokens = match auth.user_tokens.len() {
        0 => String::new(),
        n => format!("; {n} name(s) only with their tokens"),
    };
    let listed = match &peers[..] {
        [] => String::from("no server"),
        peers => peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    };
    let (addr, control) = launch_server(rt, fleet, env, (listen, peers), auth, tls).await?;
    Ok((format!("mesh server{over} listening on {addr}; dialling {listed}; linking with {who}{tokens}"), control))
}

impl ChatCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        if !is_valid_name(&self.user) {
            return Err(CliError::usage(format!("--user {:?}: a name is 1-32 bytes with no spaces", self.user)));
        }
        if self.server.0.is_empty() {
            return Err(CliError::usage("--server needs at least one address"));
        }
        let selection = match self.select {
            SelectArg::InOrder => Selection::InOrder,
            SelectArg::Fastest => Selection::Fastest {
                switch_ratio: self.switch_ratio,
                switch_min: Duration::from_millis(self.switch_min_ms),
            },
        };
        let tls = ClientTls::from_options(self.tls_pin, self.tls_ca.as_deref(), self.tls_name)?;
        let user = &self.user;
        let token = self.user_token_file.as_deref().map(|path| {
            read_user_tokens(path)?.token(user).cloned().ok_or_else(|| {
                CliError::usage(format!("{} has no `{user} TOKEN` line for --user {user}", path.display()))
            })
        });
        let token = token.transpose()?;
        let config = ClientConfig { token, ..ClientConfig::new(&self.user, self.server.0, selection) };
        let secret = env.secret(b"tls");
        let client = MeshClient::new(env, Instant::ZERO, config);
        let client = crate::tls::wrap(client, None, tls.as_ref(), secret).map_err(CliError::new)?;
        let running =
            Driver::new(client).event_policy(EventPolicy::Wait).start(rt.clone()).await.map_err(CliError::new)?;
        let events = running.events();
        let handle = running.handle();
        let ending_rx = input::spawn(move || read_commands(&handle))?;
        let mut view = View::new(self.select == SelectArg::Fastest);
        let print = async {
            while let Ok(event) = events.recv().await {
                // A TLS failure reaches the client as a failed connect, which it reports.
                let TlsEvent::Inner(event) = event else { continue };
                if let Some(code) = view.show(&event) {
                    return code;
                }
            }
            ExitCode::SUCCESS
        };
        let quit = async {
            let ending = ending_rx.recv().await.unwrap_or(Ending::Done);
            rt.sleep_until(rt.now() + input::LEAVE_GRACE).await;
            ending.outcome()
        };
        let outcome = futures_lite::future::or(async { Ok(print.await) }, quit).await;
        running.shutdown();
        outcome
    }
}

/// How long the end of input waits for the registration and the receipts of messages still
/// in the outbox, so
/// `echo "Bob hi" | switchyard mesh chat --user Alice` reports the outcome.
const EOF_RECEIPT_WAIT: Duration = Duration::from_secs(5);

/// How typed input ended, as the stdin thread saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// A quit word, the machine stopped, or the end of input with everything settled.
    Done,
    /// The end of input came and no server took the registration in time: each server
    /// tried, with why it failed last.
    NeverRegistered(Vec<(SocketAddr, String)>),
    /// The end of input came with this many messages still awaiting their receipts.
    Unanswered(usize),
}

impl Ending {
    /// The exit code, or the one-line error that makes it 1.
    fn outcome(self) -> Result<ExitCode, CliError> {
        match self {
            Ending::Done => Ok(ExitCode::SUCCESS),
            Ending::NeverRegistered(failures) if failures.is_empty() => Err(CliError::new(format!(
                "no mesh server took the registration within {} s",
                EOF_RECEIPT_WAIT.as_secs()
            ))),
            Ending::NeverRegistered(failures) => {
                let tried: Vec<String> = failures.iter().map(|(server, why)| format!("{server} ({why})")).collect();
                Err(CliError::new(format!("no mesh server reachable: {}", tried.join(", "))))
            }
            Ending::Unanswered(n) => {
                Err(CliError::new(format!("{n} message(s) got no receipt within {} s", EOF_RECEIPT_WAIT.as_secs())))
            }
        }
    }
}

/// The stdin thread: `<recipient> <message>` lines are sent; a quit word leaves the mesh at
/// once; the end of input leaves once every message has its receipt (at most
/// [`EOF_RECEIPT_WAIT`]), and says what was still unsettled then.
fn read_commands(handle: &Handle<Tls<MeshClient>>) -> Ending {
    let end = input::commands(|line| {
        let Some((to, body)) = line.split_once(char::is_whitespace) else {
            eprintln!("switchyard: type `<recipient> <message>`");
            return ControlFlow::Continue(());
        };
        let (to, body) = (to.to_owned(), body.trim_start().to_owned());
        match on_client(handle, move |c, now| c.send(now, &to, &body)) {
            Ok(Ok(_)) => ControlFlow::Continue(()),
            Ok(Err(e)) => {
                eprintln!("switchyard: not sent: {e}");
                ControlFlow::Continue(())
            }
            Err(_) => ControlFlow::Break(()),
        }
    });
    let ending = match end {
        End::Stopped => return Ending::Done,
        // Registered (or refused, which ends the program) and every receipt in.
        End::Eof => {
            input::wait_until(std::time::Instant::now() + EOF_RECEIPT_WAIT, || {
                on_client(handle, |c, _| c.server().is_some() && c.outbox_len() == 0)
            });
            let unsettled = on_client(handle, |c, _| match c.server() {
                None => Ending::NeverRegistered(c.failures()),
                Some(_) if c.outbox_len() > 0 => Ending::Unanswered(c.outbox_len()),
                Some(_) => Ending::Done,
            });
            unsettled.unwrap_or(Ending::Done)
        }
        End::Quit => Ending::Done,
    };
    let _ = on_client(handle, |c, now| c.leave(now));
    ending
}

/// Runs `f` on the client inside its TLS layer, then lets the layer take what it wrote.
fn on_client<T: Send + 'static>(
    handle: &Handle<Tls<MeshClient>>,
    f: impl FnOnce(&mut MeshClient, Instant) -> T + Send + 'static,
) -> Result<T, Stopped> {
    handle.command_blocking(move |tls: &mut Tls<MeshClient>, now| tls.command(now, f))
}

/// Prints events as the original client does, plus receipts and moves: one line per change
/// of state, so a client that cannot reach any server says so once and waits quietly.
struct View {
    fastest: bool,
    /// Servers whose first RTT was printed.
    measured: Vec<SocketAddr>,
    /// The server we are registered on.
    registered: Option<SocketAddr>,
    /// Every server failed and the client is backing off: attempts are not printed until
    /// one succeeds.
    unreachable: bool,
}

impl View {
    fn new(fastest: bool) -> View {
        View { fastest, measured: Vec::new(), registered: None, unreachable: false }
    }

    /// Prints `event`; returns an exit code when the session is over for good.
    fn show(&mut self, event: &ClientEvent) -> Option<ExitCode> {
        let mut out = io::stdout().lock();
        let _ = match event {
            ClientEvent::Measured { server, rtt } if !self.measured.contains(server) => {
                self.measured.push(*server);
                writeln!(out, "Server {server}: RTT {:.6} seconds", rtt.as_secs_f64())
            }
            ClientEvent::Rtt { .. } | ClientEvent::Measured { .. } => Ok(()),
            ClientEvent::Selected { .. } | ClientEvent::Lost { .. } | ClientEvent::NoServer { .. }
                if self.unreachable =>
            {
                Ok(())
            }
            ClientEvent::Selected { server, rtt: Some(rtt), why } if self.fastest => {
                if why == "first" {
                    writeln!(out, "Best server: {server} with RTT {:.6} seconds", rtt.as_secs_f64())
                } else {
                    writeln!(out, "Switching to {server} (RTT {:.6} seconds): {why}", rtt.as_secs_f64())
                }
            }
            ClientEvent::Selected { server, why, .. } if why != "first" => {
                writeln!(out, "Switching to {server}: {why}")
            }
            ClientEvent::Selected { .. } => Ok(()),
            ClientEvent::Registered { server } => {
                self.registered = Some(*server);
                self.unreachable = false;
                if self.fastest {
                    writeln!(out, "Connected to best server on port {}", server.port())
                } else {
                    writeln!(out, "Connected to {server}")
                }
            }
            ClientEvent::Refused { reason } => {
                let _ = out.flush();
                let what = if self.registered.is_some() { "name lost" } else { "registration refused" };
                eprintln!("switchyard: {what}: {reason}");
                return Some(ExitCode::FAILURE);
            }
            ClientEvent::Message { from, body, .. } => writeln!(out, "{from}: {body}"),
            ClientEvent::Receipt { to, status: ReceiptStatus::Delivered, .. } => writeln!(out, "delivered to {to}"),
            ClientEvent::Receipt { to, status: ReceiptStatus::NoSuchUser, .. } => writeln!(out, "no such user {to}"),
            ClientEvent::Lost { server, reason } if self.registered == Some(*server) => {
                self.registered = None;
                writeln!(out, "Lost {server}: {reason}")
            }
            ClientEvent::Lost { server, reason } => writeln!(out, "Cannot reach {server}: {reason}"),
            ClientEvent::NoServer { retry_in, .. } => {
                self.unreachable = true;
                writeln!(
                    out,
                    "No server reachable; retrying in {:.1} s and backing off (quit or Ctrl-D gives up)",
                    retry_in.as_secs_f64()
                )
            }
        };
        let _ = out.flush();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_peers_are_the_other_default_ports_on_the_same_ip() {
        let peers = default_peers("127.0.0.2:5003".parse().unwrap());
        let ports: Vec<u16> = peers.iter().map(|a| a.port()).collect();
        assert_eq!(ports, vec![5001, 5002, 5004, 5005]);
        assert!(peers.iter().all(|a| a.ip().to_string() == "127.0.0.2"));
    }

    #[test]
    fn switch_ratios_are_shares_below_one() {
        assert_eq!(parse_ratio("0.5"), Ok(0.5));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
    }

    #[test]
    fn server_lists_are_comma_separated() {
        assert_eq!(parse_servers("127.0.0.1:5001,127.0.0.1:5002").unwrap().0.len(), 2);
        assert!(parse_servers("127.0.0.1:5001,nonsense").is_err());
    }
}
