//! References to measure the tunnel against on the same machine: the tools the tunnel's
//! targets are stated against (a two-hop socat chain, bore, rathole), each run in the
//! tunnel's shape (client -> entry -> exit -> target) in front of the same sink and echo.
//!
//! Wall-clock figures on a shared or virtual machine move with the machine (a thread's
//! wake-up can cost 5 µs on one and 40 µs on another), so a target stated as "better than
//! tool X on the reference machine" is checked best by running tool X here too.

use super::ends::{free_port, loopback, own_executable, probe, write_private};
use super::os::{cpu_time, process_cpu, rss};
use super::targets::Targets;
use crate::CliError;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a tool may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for socat's per-connection processes to be gone after a run, before its
/// CPU is read.
const SETTLE: Duration = Duration::from_secs(2);

/// bore's control port, fixed in bore.
const BORE_CONTROL_PORT: u16 = 7835;

/// A relay the tunnel can be measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Two socat relays in a row, forking a process per connection.
    Socat,
    /// bore (`bore server` and `bore local`): a control connection plus one new TCP
    /// connection between the two ends per stream.
    Bore,
    /// rathole (server and client from one TOML file each), TCP transport.
    Rathole,
    /// rathole with its `tls` transport (native-tls: OpenSSL), a fresh self-signed
    /// certificate in a PKCS#12 archive made by the `openssl` command.
    RatholeTls,
    /// rathole with its `noise` transport (`Noise_NK_25519_ChaChaPoly_BLAKE2s`, its
    /// default), a key pair from `rathole --genkey`.
    RatholeNoise,
    /// Switchyard's own tunnel with its carrier over TLS 1.3 (a fresh self-signed
    /// certificate, pinned), to set beside the plaintext tunnel.
    TunnelTls,
}

impl Tool {
    /// The name on the command line and in the figures; also the executable looked up on
    /// the PATH when no path is given.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Socat => "socat",
            Tool::Bore => "bore",
            Tool::Rathole => "rathole",
            Tool::RatholeTls => "rathole-tls",
            Tool::RatholeNoise => "rathole-noise",
            Tool::TunnelTls => "tunnel-tls",
        }
    }

    /// The executable looked up on the PATH when no path is given: the rathole transports
    /// are one program.
    fn default_exe(self) -> &'static str {
        match self {
            Tool::RatholeTls | Tool::RatholeNoise => Tool::Rathole.name(),
            other => other.name(),
        }
    }

    /// Every tool, in the order `--help` lists them.
    const ALL: [Tool; 6] =
        [Tool::Socat, Tool::Bore, Tool::Rathole, Tool::RatholeTls, Tool::RatholeNoise, Tool::TunnelTls];
}

/// rathole's transport, and how to secure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RatholeTransport {
    Tcp,
    Tls,
    Noise,
}

/// A tool to run and the executable to run it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    /// Which tool.
    pub tool: Tool,
    /// Its executable: a path, or a name looked up on the PATH.
    pub exe: PathBuf,
}

/// The tools of `--against`, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolList(pub Vec<ToolSpec>);

/// Parses `--against`: comma-separated tool names, each optionally `=PATH` to its
/// executable (`socat,bore=/opt/bore/bin/bore,rathole`).
pub fn parse_tools(s: &str) -> Result<ToolList, String> {
    let mut specs: Vec<ToolSpec> = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (name, path) = match part.split_once('=') {
            Some((name, path)) if !path.is_empty() => (name, Some(PathBuf::from(path))),
            Some(_) => return Err(format!("{part:?}: no path after '='")),
            None => (part, None),
        };
        let tool = Tool::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Tool::ALL.iter().map(|t| t.name()).collect();
            format!("{name:?} is not a tool to measure against ({})", names.join(", "))
        })?;
        let exe = path.unwrap_or_else(|| PathBuf::from(tool.default_exe()));
        if specs.iter().any(|s| s.tool == tool) {
            return Err(format!("{name} is named twice"));
        }
        specs.push(ToolSpec { tool, exe });
    }
    Ok(ToolList(specs))
}

/// One tool running in front of the sink and the echo, until dropped.
#[derive(Debug)]
pub struct Reference {
    /// Which tool.
    pub tool: Tool,
    /// Reaches the sink through both hops.
    pub sink: SocketAddr,
    /// Reaches the echo through both hops.
    pub echo: SocketAddr,
    children: Vec<Child>,
    /// The processes of the path to the sink, entry then exit, for the memory figure and
    /// the CPU split.
    sink_path: Vec<u32>,
    files: Vec<PathBuf>,
}

impl Reference {
    /// Starts `spec`'s tool in front of the targets and waits until both paths accept
    /// connections; an error names the tool and what failed. `ends_args` are the global
    /// options Switchyard's own ends get (`tunnel-tls`: the runtime, `--busy-poll`).
    pub fn start(spec: &ToolSpec, targets: &Targets, ends_args: &[String], end_args: &[String]) -> Result<Reference, CliError> {
        let mut reference = Reference {
            tool: spec.tool,
            sink: targets.sink.addr,
            echo: targets.echo,
            children: Vec::new(),
            sink_path: Vec::new(),
            files: Vec::new(),
        };
        match spec.tool {
            Tool::Socat => reference.start_socat(spec, targets)?,
            Tool::Bore => reference.start_bore(spec, targets)?,
            Tool::Rathole => reference.start_rathole(spec, targets, RatholeTransport::Tcp)?,
            Tool::RatholeTls => reference.start_rathole(spec, targets, RatholeTransport::Tls)?,
            Tool::RatholeNoise => reference.start_rathole(spec, targets, RatholeTransport::Noise)?,
            Tool::TunnelTls => reference.start_tunnel_tls(spec, targets, ends_args, end_args)?,
        }
        for addr in [reference.sink, reference.echo] {
            reference.wait_listening(addr)?;
        }
        if matches!(spec.tool, Tool::TunnelTls | Tool::RatholeTls | Tool::RatholeNoise) {
            reference.wait_echoing()?;
        }
        Ok(reference)
    }

    /// The tool's long-lived processes (socat forks one more per connection, which
    /// inherits the listener's CPU affinity).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// CPU time the tool's processes have used so far. socat's work is done in processes
    /// forked per connection, which count once their parent has waited for them: so for
    /// socat this first waits (a bounded while) until the connections' processes are gone,
    /// and so must be read after a run's connections have closed.
    pub fn cpu(&self) -> Option<Duration> {
        if self.tool == Tool::Socat {
            self.settle_children();
            return self.pids().into_iter().map(|pid| process_cpu(pid).ok()).sum();
        }
        self.pids().into_iter().map(|pid| cpu_time(pid).ok()).sum()
    }

    /// Waits until no process of the tool has a child left (socat's per-connection
    /// processes exit as their connections close, and are counted once reaped), for at
    /// most [`SETTLE`].
    fn settle_children(&self) {
        let deadline = Instant::now() + SETTLE;
        let has_children = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).is_ok_and(|c| !c.trim().is_empty())
        };
        while self.pids().into_iter().any(has_children) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The entry and the exit process of the path to the sink, for their CPU split (read
    /// after [`Reference::cpu`], which lets socat's children be counted).
    pub fn relay_pids(&self) -> Option<[u32; 2]> {
        match self.sink_path[..] {
            [entry, exit] => Some([entry, exit]),
            _ => None,
        }
    }

    /// [`Reference::relay_pids`] where `perf stat -p` sees every system call: not for
    /// socat, whose per-connection processes start after perf attached.
    pub fn syscall_pids(&self) -> Option<[u32; 2]> {
        self.relay_pids().filter(|_| self.tool != Tool::Socat)
    }

    /// Resident memory of the entry and the exit of the path to the sink, together.
    pub fn path_rss(&self) -> Option<u64> {
        self.sink_path.iter().map(|&pid| rss(pid).ok().map(|r| r.total)).sum()
    }

    /// socat: two relays in a row to each target, forking a process per connection with
    /// `TCP_NODELAY` on both sides (as the tunnel has), 64 KiB transfers, and the tunnel's
    /// accept backlog (socat's default of 5 drops SYNs when 64 streams open).
    fn start_socat(&mut self, spec: &ToolSpec, targets: &Targets) -> Result<(), CliError> {
        let mut relay = |to: SocketAddr| {
            self.spawn_listening(spec, |port| {
                vec![
                    "-b65536".to_string(),
                    format!("TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=1024"),
                    format!("TCP4:{to},nodelay"),
                ]
            })
        };
        let (exit, exit_pid) = relay(targets.sink.addr)?;
        let (entry, entry_pid) = relay(exit)?;
        let (echo_exit, _) = relay(targets.echo)?;
        let (echo, _) = relay(echo_exit)?;
        (self.sink, self.echo) = (entry, echo);
        self.sink_path = vec![entry_pid, exit_pid];
        Ok(())
    }

    /// bore: one server on 127.0.0.1 (its control port is fixed at 7835, so it must be
    /// free) and a `bore local` per target, each asking for a port of our choosing.
    fn start_bore(&mut self, spec: &ToolSpec, targets: &Targets) -> Result<(), CliError> {
        // Another bore server there would take our clients without a word.
        std::net::TcpListener::bind(loopback(BORE_CONTROL_PORT)).map_err(|e| {
            CliError::new(format!("bore needs its control port 127.0.0.1:{BORE_CONTROL_PORT}, which is taken: {e}"))
        })?;
        let server = self.spawn(spec, Command::new(&spec.exe).args(["server", "--bind-addr", "127.0.0.1"]))?;
        self.wait_listening(loopback(BORE_CONTROL_PORT))?;
        let mut expose = |target: SocketAddr| {
            self.spawn_listening(spec, |port| {
                let (port, target_port, host) = (port.to_string(), target.port().to_string(), target.ip().to_string());
                ["local", &target_port, "--local-host", &host, "--to", "127.0.0.1", "--port", &port].map(String::from).to_vec()
            })
        };
        let (sink, sink_client) = expose(targets.sink.addr)?;
        let echo = expose(targets.echo)?.0;
        (self.sink, self.echo) = (sink, echo);
        self.sink_path = vec![server, sink_client];
        Ok(())
    }

    /// rathole: a server with a service per target and a client that serves both, over
    /// `transport` with `TCP_NODELAY` (as the tunnel has).
    fn start_rathole(&mut self, spec: &ToolSpec, targets: &Targets, transport: RatholeTransport) -> Result<(), CliError> {
        let control = loopback(free_port()?);
        let (sink, echo) = (loopback(free_port()?), loopback(free_port()?));
        let token = format!("switchyard-bench-{}", std::process::id());
        let (kind, server_security, client_security) = match transport {
            RatholeTransport::Tcp => ("tcp", String::new(), String::new()),
            RatholeTransport::Tls => {
                let (pkcs12, password, cert) = self.rathole_identity()?;
                let server = format!("[server.transport.tls]\npkcs12 = \"{pkcs12}\"\npkcs12_password = \"{password}\"\n");
                let client = format!("[client.transport.tls]\ntrusted_root = \"{cert}\"\nhostname = \"localhost\"\n");
                ("tls", server, client)
            }
            RatholeTransport::Noise => {
                let (private, public) = rathole_keys(spec)?;
                let server = format!("[server.transport.noise]\nlocal_private_key = \"{private}\"\n");
                let client = format!("[client.transport.noise]\nremote_public_key = \"{public}\"\n");
                ("noise", server, client)
            }
        };
        let server = format!(
            "[server]\nbind_addr = \"{control}\"\ndefault_token = \"{token}\"\n\
             [server.transport]\ntype = \"{kind}\"\n[server.transport.tcp]\nnodelay = true\n{server_security}\
             [server.services.sink]\nbind_addr = \"{sink}\"\n\
             [server.services.echo]\nbind_addr = \"{echo}\"\n"
        );
        let client = format!(
            "[client]\nremote_addr = \"{control}\"\ndefault_token = \"{token}\"\n\
             [client.transport]\ntype = \"{kind}\"\n[client.transport.tcp]\nnodelay = true\n{client_security}\
             [client.services.sink]\nlocal_addr = \"{}\"\n\
             [client.services.echo]\nlocal_addr = \"{}\"\n",
            targets.sink.addr, targets.echo
        );
        let server_pid = self.spawn_with_config(spec, "server", &server)?;
        self.wait_listening(control)?;
        let client_pid = self.spawn_with_config(spec, "client", &client)?;
        (self.sink, self.echo) = (sink, echo);
        self.sink_path = vec![server_pid, client_pid];
        Ok(())
    }

    /// A fresh certificate for `localhost` for rathole's TLS server, as the PKCS#12 archive
    /// it reads (made by the `openssl` command) and its password, and the certificate's
    /// PEM file for the client to trust; all removed on drop.
    fn rathole_identity(&mut self) -> Result<(String, String, String), CliError> {
        let made = crate::cert::make(&["localhost".to_owned()], 1)?;
        let cert = self.private_file("rathole-cert.pem", made.cert_pem.as_bytes())?;
        let key = self.private_file("rathole-key.pem", made.key_pem.as_bytes())?;
        let pkcs12 = self.private_file("rathole-identity.p12", b"")?;
        let password = format!("bench{}", std::process::id());
        let made = Command::new("openssl")
            .args(["pkcs12", "-export", "-in", &cert, "-inkey", &key, "-out", &pkcs12, "-passout"])
            .arg(format!("pass:{password}"))
            .output()
            .map_err(|e| CliError::new(format!("rathole-tls needs the openssl command to make its PKCS#12 archive: {e}")))?;
        if !made.status.success() {
            let why = String::from_utf8_lossy(&made.stderr);
            return Err(CliError::new(format!("openssl pkcs12 -export failed: {}", why.trim())));
        }
        Ok((pkcs12, password, cert))
    }

    /// Writes `contents` to a temporary file only its owner can read, removed on drop.
    fn private_file(&mut self, name: &str, contents: &[u8]) -> Result<String, CliError> {
        let path = std::env::temp_dir().join(format!("switchyard-bench-{}-{name}", std::process::id()));
        write_private(&path, contents)?;
        self.files.push(path.clone());
        Ok(path.display().to_string())
    }

    /// Switchyard's tunnel with its carrier over TLS: a remote end serving a fresh
    /// certificate and a local end pinning it, a forward per target, as the plaintext
    /// tunnel under test has. The executable is this one unless a path is given.
    fn start_tunnel_tls(
        &mut self,
        spec: &ToolSpec,
        targets: &Targets,
        ends_args: &[String],
        end_args: &[String],
    ) -> Result<(), CliError> {
        let exe = if spec.exe == Path::new(Tool::TunnelTls.name()) { own_executable()? } else { spec.exe.clone() };
        let spec = ToolSpec { tool: spec.tool, exe };
        let made = crate::cert::make(&["127.0.0.1".to_owned()], 1)?;
        let cert = self.private_file("tls-cert.pem", made.cert_pem.as_bytes())?;
        let key = self.private_file("tls-key.pem", made.key_pem.as_bytes())?;
        let secret = self.private_file("tls-secret", format!("{:x}", std::process::id()).repeat(4).as_bytes())?;
        let carrier = loopback(free_port()?);
        let mut remote: Vec<String> = ends_args.to_vec();
        remote.extend(["tunnel", "remote", "--listen", &carrier.to_string(), "--secret-file", &secret].map(String::from));
        remote.extend(["--tls-cert", &cert, "--tls-key", &key].map(String::from));
        remote.extend_from_slice(end_args);
        remote.extend(["--route".into(), format!("sink={}", targets.sink.addr), "--route".into(), format!("echo={}", targets.echo)]);
        let remote_pid = self.spawn(&spec, Command::new(&spec.exe).args(&remote).env("RUST_LOG", "warn"))?;
        let (sink, echo) = (loopback(free_port()?), loopback(free_port()?));
        let mut local: Vec<String> = ends_args.to_vec();
        local.extend(["tunnel", "local", "--listen", &loopback(free_port()?).to_string()].map(String::from));
        local.extend(["--remote", &carrier.to_string(), "--secret-file", &secret].map(String::from));
        local.extend(["--tls-pin".into(), made.fingerprint.to_string()]);
        local.extend_from_slice(end_args);
        local.extend(["--forward".into(), format!("{}=sink", sink.port()), "--forward".into(), format!("{}=echo", echo.port())]);
        let local_pid = self.spawn(&spec, Command::new(&spec.exe).args(&local).env("RUST_LOG", "warn"))?;
        (self.sink, self.echo) = (sink, echo);
        self.sink_path = vec![local_pid, remote_pid];
        Ok(())
    }

    /// Waits until a round trip passes the echo path (the carrier is up, its handshake
    /// done), or a process exits.
    fn wait_echoing(&mut self) -> Result<(), CliError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match probe(self.echo) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    let name = self.tool.name();
                    return Err(CliError::new(format!("{name} did not carry a round trip within {READY_TIMEOUT:?}: {e}{}", self.logged())));
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Starts the tool with the arguments `args` gives for a free loopback port it is to
    /// listen on; returns that address and the process id.
    fn spawn_listening(
        &mut self,
        spec: &ToolSpec,
        args: impl FnOnce(u16) -> Vec<String>,
    ) -> Result<(SocketAddr, u32), CliError> {
        let port = free_port()?;
        let pid = self.spawn(spec, Command::new(&spec.exe).args(args(port)))?;
        Ok((loopback(port), pid))
    }

    /// Writes `config` to a file removed on drop and starts `rathole --ROLE FILE`.
    fn spawn_with_config(&mut self, spec: &ToolSpec, role: &str, config: &str) -> Result<u32, CliError> {
        // Named for the transport too: rathole reloads a config file that changes under it.
        let name = spec.tool.name();
        let file = std::env::temp_dir().join(format!("switchyard-bench-{}-{name}-{role}.toml", std::process::id()));
        std::fs::write(&file, config)
            .map_err(|e| CliError::new(format!("cannot write the rathole {role} config {}: {e}", file.display())))?;
        self.files.push(file.clone());
        self.spawn(spec, Command::new(&spec.exe).arg(format!("--{role}")).arg(&file))
    }

    /// Starts `command` with its output going to a log file (removed on drop, quoted if
    /// the tool fails to start); returns its process id.
    fn spawn(&mut self, spec: &ToolSpec, command: &mut Command) -> Result<u32, CliError> {
        let name = spec.tool.name();
        let log = std::env::temp_dir().join(format!("switchyard-bench-{}-{name}-{}.log", std::process::id(), self.children.len()));
        let file = std::fs::File::create(&log)
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", log.display())))?;
        self.files.push(log);
        let child = command
            .stdin(Stdio::null())
            .stdout(file.0)
            .stderr(file.1)
            .spawn()
            .map_err(|e| CliError::new(format!("cannot start {name} ({}): {e}", spec.exe.display())))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// The first lines the tool's processes logged, for an error message.
    fn logged(&self) -> String {
        let text: Vec<String> = self
            .files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| t.lines().take(3).map(str::to_owned).collect::<Vec<_>>())
            .collect();
        if text.is_empty() {
            String::new()
        } else {
            format!(": it said: {}", text.join(" / "))
        }
    }

    /// Waits until `addr` accepts a connection (which each tool relays to its target and
    /// closes: the targets ignore connections that send nothing), or a process exits.
    fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), CliError> {
        let name = self.tool.name();
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = self.children.iter_mut().find_map(|c| c.try_wait().ok().flatten()) {
                return Err(CliError::new(format!("{name} exited ({status}) before listening on {addr}{}", self.logged())));
            }
            if Instant::now() > deadline {
                return Err(CliError::new(format!("{name} did not listen on {addr} within {READY_TIMEOUT:?}")));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A Noise key pair from `rathole --genkey` (base64 private and public keys).
fn rathole_keys(spec: &ToolSpec) -> Result<(String, String), CliError> {
    let out = Command::new(&spec.exe)
        .arg("--genkey")
        .output()
        .map_err(|e| CliError::new(format!("cannot run {} --genkey: {e}", spec.exe.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let after = |label: &str| {
        let mut lines = text.lines().map(str::trim).skip_while(|l| *l != label).skip(1);
        lines.find(|l| !l.is_empty()).map(str::to_owned)
    };
    match (after("Private Key:"), after("Public Key:")) {
        (Some(private), Some(public)) => Ok((private, public)),
        _ => Err(CliError::new(format!("{} --genkey printed no key pair: {text:?}", spec.exe.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_named_with_optional_paths() {
        let list = parse_tools("rathole-noise,rathole-tls=/opt/rh").unwrap();
        let got: Vec<(Tool, &str)> = list.0.iter().map(|s| (s.tool, s.exe.to_str().unwrap())).collect();
        assert_eq!(got, [(Tool::RatholeNoise, "rathole"), (Tool::RatholeTls, "/opt/rh")], "one rathole, three transports");
        let list = parse_tools("socat, bore=/opt/bore,rathole").unwrap();
        let got: Vec<(Tool, &str)> = list.0.iter().map(|s| (s.tool, s.exe.to_str().unwrap())).collect();
        assert_eq!(got, [(Tool::Socat, "socat"), (Tool::Bore, "/opt/bore"), (Tool::Rathole, "rathole")]);
    }

    #[test]
    fn unknown_repeated_or_pathless_tools_are_refused_by_name() {
        assert!(parse_tools("frp").unwrap_err().contains("\"frp\" is not a tool"));
        assert!(parse_tools("bore,bore=/x").unwrap_err().contains("bore is named twice"));
        assert!(parse_tools("rathole=").unwrap_err().contains("no path after '='"));
    }
}
