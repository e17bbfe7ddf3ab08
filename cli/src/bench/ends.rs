//! The two tunnel ends under test, as child processes (like a real deployment, and so
//! their memory can be measured) or inside the benchmark's own process.
//!
//! Either way the local end has one static forward per target (`sink`, `echo`, `hold`),
//! and the remote end routes each of those names to the matching target.

use super::targets::Targets;
use crate::CliError;
use std::any::TypeId;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use switchyard_adapters::{AsyncStdRuntime, Driver, Handle, MioRuntime, Runtime};
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::{Entrance, LocalConfig, TunnelLocal};
use switchyard_core::tunnel::remote::{RemoteConfig, Routes, TunnelRemote};
use switchyard_core::{Env, Instant as CoreInstant, ListenerId};

/// The route names, in the order of the local end's forward listeners (ids 1, 2, 3).
const ROUTES: [&str; 3] = ["sink", "echo", "hold"];

/// How long the ends may take to come up and pass a first round trip.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of each child's stderr kept, to explain a child that fails.
const LOG_LINES: usize = 20;

/// The local end's forward addresses: connect here to reach each target through the tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Forwards {
    /// Reaches the sink.
    pub sink: SocketAddr,
    /// Reaches the echo.
    pub echo: SocketAddr,
    /// Reaches the hold.
    pub hold: SocketAddr,
}

/// Running tunnel ends; dropping this stops them.
#[derive(Debug)]
pub struct Ends {
    /// Where clients enter the tunnel.
    pub forwards: Forwards,
    how: How,
}

#[derive(Debug)]
enum How {
    Children { local: Proc, remote: Proc, secret_file: PathBuf },
    InProcess { local: Handle<TunnelLocal>, remote: Handle<TunnelRemote> },
}

/// A child process (this executable with other arguments) and the tail of its stderr;
/// dropping it kills the process.
#[derive(Debug)]
pub(super) struct Proc {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// Starts this executable with `args`; `name` names it in errors.
    pub(super) fn spawn(name: &'static str, args: &[String]) -> Result<Proc, CliError> {
        Proc::spawn_from(&own_executable()?, name, args)
    }

    /// Starts the executable `exe` with `args`; `name` names it in errors.
    pub(super) fn spawn_from(exe: &Path, name: &'static str, args: &[String]) -> Result<Proc, CliError> {
        let mut child = Command::new(exe)
            .args(args)
            // Per-stream info lines cost the ends time and tell the benchmark nothing.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CliError::new(format!("cannot start {name} ({}): {e}", exe.display())))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            // Drains stderr so the child never blocks on a full pipe, keeping the tail.
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        Ok(Proc { name, child, log })
    }

    /// The process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until something accepts connections on `addr` (the process listens), failing
    /// if the process exits first or `timeout` passes.
    pub(super) fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> Result<(), CliError> {
        let deadline = Instant::now() + timeout;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = self.exited() {
                return Err(self.failure(status));
            }
            if Instant::now() > deadline {
                return Err(CliError::new(format!("{} did not listen on {addr} within {timeout:?}", self.name)));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The exit status, if the process has ended.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error saying the process ended, with the tail of its stderr.
    pub(super) fn failure(&self, status: ExitStatus) -> CliError {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let tail: Vec<&str> = log.iter().map(String::as_str).collect();
        CliError::new(format!("{} exited ({status}):\n  {}", self.name, tail.join("\n  ")))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Nothing of the child's state matters any more: stop it at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's executable.
pub(super) fn own_executable() -> Result<PathBuf, CliError> {
    std::env::current_exe().map_err(|e| CliError::new(format!("cannot find our own executable: {e}")))
}

/// True when the executable `exe` has the `tunnel` subcommand that child-process ends need.
pub fn has_tunnel_command(exe: &Path) -> bool {
    let status =
        Command::new(exe).args(["tunnel", "local", "--help"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    status.is_ok_and(|s| s.success())
}

/// The global options of a child end: the runtime the benchmark runs on, and its
/// `--busy-poll` if any.
pub(super) fn global_args<R: Runtime>() -> Vec<String> {
    let mut args = vec!["--runtime".to_string(), runtime_flag::<R>().to_string()];
    let busy_poll = crate::runtime::busy_poll();
    if !busy_poll.is_zero() {
        args.extend(["--busy-poll".to_string(), busy_poll.as_micros().to_string()]);
    }
    args
}

/// The `--runtime` value naming `R`, so child ends run on the runtime the benchmark was
/// asked for.
pub(super) fn runtime_flag<R: Runtime>() -> &'static str {
    if TypeId::of::<R>() == TypeId::of::<AsyncStdRuntime>() {
        "async-std"
    } else if TypeId::of::<R>() == TypeId::of::<MioRuntime>() {
        "mio"
    } else {
        "smol"
    }
}

/// Ports handed out by [`free_port`] so far in this process: each call tries the next one.
static PORTS_HANDED_OUT: AtomicU16 = AtomicU16::new(0);

/// How many ports below the kernel's ephemeral range [`free_port`] chooses among.
const PORT_SPAN: u16 = 10_000;

/// A loopback port nobody listens on right now, for a child process to listen on.
///
/// It lies below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), from which
/// the source ports of outgoing connections are drawn: a port from that range (the
/// kernel's choice for port 0) can be taken by some connection's source port between this
/// check and the child's bind, and the child then fails with "address already in use"
/// (seen with rathole's connections during a bench). Ports are tried in turn from a random
/// start.
pub(super) fn free_port() -> Result<u16, CliError> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let first = low.saturating_sub(PORT_SPAN).max(1024);
    let span = low.saturating_sub(first);
    if span < 100 {
        // An ephemeral range reaching down to the privileged ports: take the kernel's choice.
        return TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| CliError::new(format!("cannot find a free loopback port: {e}")));
    }
    // A random start (std's hasher keys come from the OS), so that benches and tests
    // running side by side use far-apart runs of ports.
    let start = (RandomState::new().build_hasher().finish() % u64::from(span)) as u16;
    for _ in 0..span {
        let n = PORTS_HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = first + (start.wrapping_add(n)) % span;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(CliError::new(format!("cannot find a free loopback port in {first}..{low}")))
}

/// `127.0.0.1:port`.
pub(super) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn random_secret(env: &mut Env) -> Vec<u8> {
    let mut bytes = [0u8; 32];
    env.rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()
}

impl Ends {
    /// Starts both ends as child processes running the executable `exe` (`switchyard
    /// tunnel local` and `switchyard tunnel remote`) and waits until a round trip passes
    /// through them. `end_args` follow each end's subcommand (`--threads N`).
    pub fn spawn<R: Runtime>(exe: &Path, env: &mut Env, targets: &Targets, end_args: &[String]) -> Result<Ends, CliError> {
        let secret_file = std::env::temp_dir().join(format!("switchyard-bench-{}.secret", std::process::id()));
        write_private(&secret_file, &random_secret(env))?;
        let carrier = loopback(free_port()?);
        let file = secret_file.display().to_string();
        let mut remote_args = global_args::<R>();
        remote_args.extend(["tunnel".into(), "remote".into()]);
        remote_args.extend(["--listen".into(), carrier.to_string(), "--secret-file".into(), file.clone()]);
        for (name, addr) in ROUTES.iter().zip([targets.sink.addr, targets.echo, targets.hold.addr]) {
            remote_args.extend(["--route".into(), format!("{name}={addr}")]);
        }
        remote_args.extend_from_slice(end_args);
        let remote = Proc::spawn_from(exe, "the tunnel's remote end", &remote_args)?;
        let ports = [free_port()?, free_port()?, free_port()?];
        let mut local_args = global_args::<R>();
        local_args.extend(["tunnel".into(), "local".into()]);
        local_args.extend(["--listen".into(), loopback(free_port()?).to_string(), "--remote".into()]);
        local_args.extend([carrier.to_string(), "--secret-file".into(), file]);
        for (name, port) in ROUTES.iter().zip(ports) {
            local_args.extend(["--forward".into(), format!("{port}={name}")]);
        }
        local_args.extend_from_slice(end_args);
        let local = Proc::spawn_from(exe, "the tunnel's local end", &local_args)?;
        let forwards = Forwards { sink: loopback(ports[0]), echo: loopback(ports[1]), hold: loopback(ports[2]) };
        let mut ends = Ends { forwards, how: How::Children { local, remote, secret_file } };
        ends.wait_ready()?;
        Ok(ends)
    }

    /// Starts both ends inside this process, each machine under its own driver on `rt`,
    /// and waits until a round trip passes through them.
    pub async fn in_process<R: Runtime>(rt: &R, env: &mut Env, targets: &Targets) -> Result<Ends, CliError> {
        let secret = Secret::new(random_secret(env)).expect("32 random bytes as hex are never empty");
        let mut routes = Routes::new();
        for (name, addr) in ROUTES.iter().zip([targets.sink.addr, targets.echo, targets.hold.addr]) {
            routes.add(name, addr);
        }
        let remote = TunnelRemote::new(env.child(1), RemoteConfig::new(secret.clone(), routes));
        let remote = Driver::new(remote).listen(ListenerId(0), loopback(0)).start(rt.clone()).await;
        let remote = remote.map_err(|e| CliError::new(format!("tunnel remote end: {e}")))?;
        let carrier = remote.local_addr(ListenerId(0)).expect("the listener was bound");
        let ids = [ListenerId(1), ListenerId(2), ListenerId(3)];
        let entrances: BTreeMap<ListenerId, Entrance> =
            ids.iter().zip(ROUTES).map(|(&id, name)| (id, Entrance::Forward { route: name.into() })).collect();
        let local = TunnelLocal::new(env.child(2), CoreInstant::ZERO, LocalConfig::new(carrier, secret, entrances));
        let local = ids.iter().fold(Driver::new(local), |d, &id| d.listen(id, loopback(0))).start(rt.clone()).await;
        let local = local.map_err(|e| CliError::new(format!("tunnel local end: {e}")))?;
        let addr = |id| local.local_addr(id).expect("the listener was bound");
        let forwards = Forwards { sink: addr(ids[0]), echo: addr(ids[1]), hold: addr(ids[2]) };
        let mut ends = Ends { forwards, how: How::InProcess { local: local.handle(), remote: remote.handle() } };
        ends.wait_ready()?;
        Ok(ends)
    }

    /// The process ids of the local and remote ends, when they run as child processes.
    pub fn pids(&self) -> Option<(u32, u32)> {
        match &self.how {
            How::Children { local, remote, .. } => Some((local.child.id(), remote.child.id())),
            How::InProcess { .. } => None,
        }
    }

    /// Fails if a child end has exited.
    pub fn check_alive(&mut self) -> Result<(), CliError> {
        if let How::Children { local, remote, .. } = &mut self.how {
            for proc in [local, remote] {
                if let Some(status) = proc.exited() {
                    return Err(proc.failure(status));
                }
            }
        }
        Ok(())
    }

    /// Waits until the carrier is up: a 64-byte round trip through the echo forward.
    fn wait_ready(&mut self) -> Result<(), CliError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::from("no attempt yet");
        while Instant::now() < deadline {
            self.check_alive()?;
            match probe(self.forwards.echo) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e.to_string(),
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(CliError::new(format!("the tunnel did not come up within {READY_TIMEOUT:?}: {last_error}")))
    }
}

impl Drop for Ends {
    fn drop(&mut self) {
        match &self.how {
            How::Children { secret_file, .. } => {
                let _ = std::fs::remove_file(secret_file);
            }
            How::InProcess { local, remote } => {
                local.shutdown();
                remote.shutdown();
            }
        }
    }
}

/// One round trip through `echo`; while the carrier is down the local end answers with
/// an `error:` line and closes instead.
pub(super) fn probe(echo: SocketAddr) -> std::io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&echo, Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    let message = [b'x'; 64];
    conn.write_all(&message)?;
    let mut reply = [0u8; 64];
    conn.read_exact(&mut reply)?;
    if reply == message {
        Ok(())
    } else {
        Err(std::io::Error::other(String::from_utf8_lossy(&reply).trim_end().to_owned()))
    }
}

/// Writes a file only its owner can read (it holds a secret or a key), replacing any left
/// from an earlier run.
pub(super) fn write_private(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    crate::cert::write_file(path, contents, true, true)
}
