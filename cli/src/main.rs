//! `switchyard`: run Switchyard services and clients over real sockets.
//!
//! ```text
//! switchyard [--runtime smol|async-std|mio] [--busy-poll MICROS] [-v...] [--seed N] <command>
//!   up [--host IP] [--interval SECS]              the whole network on loopback, until Ctrl-C
//!   demo [--host IP]                              up, plus every flow with a transcript
//!   run FILE                                      every role a TOML config file names
//!   config check FILE                             check a config file, start nothing
//!   serve echo|time|broadcast|hello|greet|stamp   run one line service
//!   tunnel local|remote|expose ...                run one end of the tunnel (or expose)
//!   mesh server|chat ...                          a P2P mesh server, or chat through the mesh
//!   rendezvous [--listen ADDR]                    the UDP hole-punching rendezvous server
//!   punch --id ID [--connect DEST] ...            a hole-punching peer: register, punch, chat
//!   send [--to ADDR] [MESSAGE...]                 send one line (or type lines), print the replies
//!   chat [--to ADDR] [PREFIX]                     interactive session, routed by PREFIX
//! ```
//!
//! Exit codes: 0 success; 1 a runtime error (one line on stderr, `switchyard: ...`) or an
//! `error: ...` line from the server; 2 a usage error.

/// Prints a line on stdout and flushes it at once (a script or a person may be waiting for
/// it). A stdout nobody reads any more (`switchyard … | head -1`) is no reason to panic or
/// to stop: the line is dropped and the command carries on, as `println!` would not.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*).and_then(|()| out.flush());
    }};
}

mod addr;
mod control;
mod events;
mod launch;
mod logging;
mod repeats;
mod runtime;
mod seed;
mod tls;
mod tunnel;

/// Items of the full build only (cargo feature `full`, on by default); the minimal build
/// has the tunnel alone.
macro_rules! full_build_only {
    ($($item:item)*) => { $( #[cfg(feature = "full")] $item )* };
}

full_build_only! {
    mod bench;
    mod cert;
    mod chat;
    mod config;
    mod demo;
    mod input;
    mod mesh;
    mod metrics;
    mod punch;
    mod rendezvous;
    mod send;
    mod serve;
    mod session;
    mod up;
    mod wall;
}

use argh::FromArgs;
use runtime::{Program, RuntimeKind};
use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::Env;

/// Switchyard: network services as sans-IO state machines, run over real sockets.
#[derive(FromArgs, Debug)]
#[cfg_attr(
    feature = "full",
    argh(example = "switchyard up &\nswitchyard send hello\nswitchyard send 9090:time\nswitchyard chat 10000:")
)]
#[cfg_attr(
    not(feature = "full"),
    argh(
        example = "switchyard tunnel remote --secret-file tunnel.key --route default=127.0.0.1:7007\nswitchyard tunnel local --remote 203.0.113.7:7001 --secret-file tunnel.key",
        note = "This is the minimal build: the tunnel only, on the mio runtime only."
    )
)]
#[argh(
    note = "Logs go to stderr; RUST_LOG (e.g. RUST_LOG=debug) overrides -v. Exit codes: 0 success, 1 error, 2 usage error."
)]
struct Cli {
    /// async runtime to run on: mio (default), Switchyard's own single-threaded event
    /// loop with the fewest system calls per relayed message; smol; or async-std
    #[argh(option, default = "RuntimeKind::Mio")]
    runtime: RuntimeKind,

    /// microseconds the event loop keeps polling without sleeping after traffic, so that
    /// a reply finds it awake instead of waiting for a wake-up: lower latency (most on
    /// virtual machines) for up to that much CPU per burst (mio runtime only; at most
    /// 1000; default 0, off)
    #[argh(option, default = "Duration::ZERO", from_str_fn(runtime::parse_busy_poll))]
    busy_poll: Duration,

    /// more logging: -v for debug, -vv for trace
    #[argh(switch, short = 'v')]
    verbose: u8,

    /// seed for the machines' random choices (default: drawn from the OS; -v logs it)
    #[argh(option)]
    seed: Option<u64>,

    /// print the version and the git revision it was built from, then exit
    #[argh(switch, short = 'V')]
    version: bool,

    #[argh(subcommand)]
    command: Option<Command>,
}

/// What `--version` prints: `switchyard 0.1.0 (git 1a2b3c4d5e6f)`, with `-dirty` when the
/// checkout had changes, and no revision when built without one (cli/build.rs).
fn version_line() -> String {
    let build = if cfg!(feature = "full") { "" } else { ", minimal build" };
    match option_env!("SWITCHYARD_GIT_REV") {
        Some(rev) => format!("switchyard {} (git {rev}{build})", env!("CARGO_PKG_VERSION")),
        None if build.is_empty() => format!("switchyard {}", env!("CARGO_PKG_VERSION")),
        None => format!("switchyard {} (minimal build)", env!("CARGO_PKG_VERSION")),
    }
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    #[cfg(feature = "full")]
    Up(up::UpCmd),
    #[cfg(feature = "full")]
    Demo(demo::DemoCmd),
    #[cfg(feature = "full")]
    Run(config::RunCmd),
    #[cfg(feature = "full")]
    Config(config::ConfigCmd),
    #[cfg(feature = "full")]
    Serve(serve::ServeCmd),
    Tunnel(tunnel::TunnelCmd),
    #[cfg(feature = "full")]
    Mesh(mesh::MeshCmd),
    #[cfg(feature = "full")]
    Rendezvous(rendezvous::RendezvousCmd),
    #[cfg(feature = "full")]
    Punch(punch::PunchCmd),
    #[cfg(feature = "full")]
    Bench(bench::BenchCmd),
    #[cfg(feature = "full")]
    Cert(cert::CertCmd),
    #[cfg(feature = "full")]
    Send(send::SendCmd),
    #[cfg(feature = "full")]
    Chat(chat::ChatCmd),
}

impl Command {
    fn quietness(&self) -> logging::Quietness {
        match self {
            Command::Tunnel(_) => logging::Quietness::Server,
            #[cfg(feature = "full")]
            Command::Up(_) | Command::Serve(_) | Command::Rendezvous(_) | Command::Run(_) => logging::Quietness::Server,
            #[cfg(feature = "full")]
            Command::Mesh(cmd) if cmd.is_server() => logging::Quietness::Server,
            #[cfg(feature = "full")]
            Command::Mesh(_) | Command::Punch(_) => logging::Quietness::Client,
            // The demo's transcript is its output; its servers log only problems.
            #[cfg(feature = "full")]
            Command::Demo(_)
            | Command::Send(_)
            | Command::Chat(_)
            | Command::Bench(_)
            | Command::Cert(_)
            | Command::Config(_) => logging::Quietness::Client,
        }
    }
}

impl Program for Command {
    fn blocks_its_thread(&self) -> bool {
        // The benchmark's clients and targets are blocking code on this thread.
        #[cfg(feature = "full")]
        if let Command::Bench(_) = self {
            return true;
        }
        false
    }

    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        match self {
            Command::Tunnel(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Up(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Demo(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Run(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Config(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Serve(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Mesh(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Rendezvous(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Punch(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Bench(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Cert(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Send(cmd) => cmd.run(rt, env).await,
            #[cfg(feature = "full")]
            Command::Chat(cmd) => cmd.run(rt, env).await,
        }
    }
}

/// A failure reported as one line on stderr, `switchyard: <message>`, with exit code 1
/// (2 for a usage error).
#[derive(Debug)]
pub struct CliError {
    message: String,
    usage: bool,
}

impl CliError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> CliError {
        CliError { message: message.to_string(), usage: false }
    }

    /// A usage error (exit code 2) that argh cannot check, e.g. "at least one --route".
    pub fn usage(message: impl fmt::Display) -> CliError {
        CliError { message: message.to_string(), usage: true }
    }

    /// The process exit code for this error.
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(if self.usage { 2 } else { 1 })
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Completes with `Err(on_timeout)` if `future` has not completed by `deadline`.
pub async fn within<R: Runtime, T>(
    rt: &R,
    deadline: std::time::Instant,
    on_timeout: impl FnOnce() -> CliError,
    future: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    let expired = async {
        rt.sleep_until(deadline).await;
        Err(on_timeout())
    };
    futures_lite::future::or(future, expired).await
}

/// argh has no combined short flags: turn `-vv` into `-v -v` (up to a `--`).
fn expand_verbosity(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut options = true;
    for arg in args {
        options &= arg != "--";
        let vs = arg.strip_prefix('-').filter(|v| v.len() > 1 && v.bytes().all(|b| b == b'v'));
        match vs {
            Some(vs) if options => out.extend(vs.bytes().map(|_| "-v".to_string())),
            _ => out.push(arg),
        }
    }
    out
}

fn main() -> ExitCode {
    // First, while this is the only thread: see `wall` for why.
    #[cfg(feature = "full")]
    wall::capture_offset();
    let args = expand_verbosity(std::env::args().collect());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (name, rest) = strs.split_first().map_or(("switchyard", &[][..]), |(n, r)| (*n, r));
    let name = std::path::Path::new(name).file_name().and_then(|n| n.to_str()).unwrap_or("switchyard");
    let cli = match Cli::from_args(&[name], rest) {
        Ok(cli) => cli,
        Err(early) => {
            // argh itself would exit 1 for usage errors; 2 is the convention.
            return match early.status {
                Ok(()) => {
                    say!("{}", early.output.trim_end());
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("{}", early.output.trim_end());
                    ExitCode::from(2)
                }
            };
        }
    };
    if cli.version {
        say!("{}", version_line());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("switchyard: a command is needed: `switchyard --help` lists them");
        return ExitCode::from(2);
    };
    logging::init(cli.verbose, command.quietness());
    let seed = cli.seed.unwrap_or_else(seed::from_os);
    tracing::debug!("seed for this run: {seed} (pass --seed {seed} to replay it)");
    // TLS is seeded from the OS whatever --seed says: a seed on a command line is visible
    // to every local user, and would give away the session keys.
    let env = match seed::secret_from_os() {
        Ok(secret) => Env::new(seed).with_secret(secret),
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime::run(cli.runtime, cli.busy_poll, command, env) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e}");
            e.exit_code()
        }
    }
}

/// Test support: the `--help` text of the subcommand `C` (named `name`), with runs of
/// whitespace collapsed since argh wraps it, must hold every phrase of `wanted`. For help
/// texts that state defaults the code defines elsewhere.
#[cfg(test)]
fn assert_help_says<C: argh::FromArgs>(name: &str, wanted: &[String]) {
    let help = C::from_args(&[name], &["--help"]).err().expect("help is an early exit").output;
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in wanted {
        assert!(help.contains(want.as_str()), "the help lacks {want:?}:\n{help}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn expands_combined_verbosity_flags_before_a_double_dash() {
        assert_eq!(expand_verbosity(args("sy -vv send -v")), args("sy -v -v send -v"));
        assert_eq!(expand_verbosity(args("sy send -- -vv")), args("sy send -- -vv"));
        assert_eq!(expand_verbosity(args("sy -x -verbose")), args("sy -x -verbose"));
    }

    #[test]
    fn busy_poll_is_off_by_default_and_its_help_states_the_cap() {
        let cli = Cli::from_args(&["switchyard"], &["tunnel", "local", "--secret-file", "k"]).expect("parses");
        assert_eq!(cli.busy_poll, Duration::ZERO);
        let cap = switchyard_adapters::mio_rt::MAX_BUSY_POLL.as_micros();
        assert_help_says::<Cli>("switchyard", &[format!("at most {cap}; default 0, off")]);
    }
}
