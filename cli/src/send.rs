//! `switchyard send`: a line client for the text services, through the tunnel by default.

use crate::runtime::Program;
use crate::session::{self, Dialer, Session};
use crate::tls::ClientTls;
use crate::CliError;
use argh::FromArgs;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::Env;

/// Where clients connect by default: the local tunnel's prefix entrance, which
/// `switchyard up` (and `switchyard tunnel local`) listens on.
pub fn default_entrance() -> SocketAddr {
    crate::addr::loopback(7000)
}

/// Send a line to a line service and print each reply line. By default it goes to the
/// local tunnel entrance, which routes it by its prefix: `9090:time` to the time service,
/// `12345:John` to greet, no prefix to echo. With MESSAGE: send it, print the replies, exit
/// when the server closes. Without: interactive; type lines, replies print as they arrive,
/// and `quit`, `exit`, `q` or Ctrl-D ends.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "send",
    example = "switchyard up &\nswitchyard send hello\nswitchyard send 9090:time\nswitchyard send --to 127.0.0.1:7007 hello world\nswitchyard send",
    note = "Reply lines starting with `error: ` go to stderr and make the exit code 1 (e.g. `error: tunnel is down ...`). A server that cannot be reached gives a one-line error and exit code 1. In interactive mode, when the server closes the connection (stamp does after each exchange), the client says so on stderr and sends the next line typed on a new connection; lines piped in at once share one connection, so such a server answers only the first: give it one MESSAGE per run."
)]
pub struct SendCmd {
    /// server address: the tunnel entrance, or a service directly (default
    /// 127.0.0.1:7000)
    #[argh(option, default = "default_entrance()", from_str_fn(crate::addr::parse))]
    to: SocketAddr,

    /// seconds to wait for the whole exchange with MESSAGE; in interactive mode, for
    /// connecting and for the last replies after quitting (default 10)
    #[argh(option, default = "10")]
    timeout: u64,

    /// use TLS, accepting only the server certificate with this SHA-256 fingerprint (as
    /// `switchyard cert` prints it)
    #[argh(option, from_str_fn(crate::tls::parse_pin))]
    tls_pin: Option<switchyard_core::tls::Fingerprint>,

    /// use TLS, accepting a server certificate signed by a CA in this PEM file (`system`:
    /// the system's CA bundle) and valid for the server's name
    #[argh(option)]
    tls_ca: Option<std::path::PathBuf>,

    /// the server name TLS asks for and checks (default: the IP address of --to)
    #[argh(option)]
    tls_name: Option<String>,

    /// the message (several words are joined with spaces); omit it to type lines
    #[argh(positional)]
    message: Vec<String>,
}

impl Program for SendCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let timeout = Duration::from_secs(self.timeout);
        let tls = ClientTls::from_options(self.tls_pin, self.tls_ca.as_deref(), self.tls_name)?;
        if self.message.is_empty() {
            let banner = format!("talking to {}{}", self.to, if tls.is_some() { " over TLS" } else { "" });
            return session::interactive(&rt, Dialer::new(env, self.to, None, timeout, tls), &banner).await;
        }
        let session = Session::open(&rt, env, self.to, timeout, tls.as_ref()).await?;
        session.one_shot(&rt, self.message.join(" "), timeout).await
    }
}
