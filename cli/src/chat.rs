//! `switchyard chat`: an interactive line session routed through the tunnel at once.

use crate::runtime::Program;
use crate::session::{self, Dialer};
use crate::tls::ClientTls;
use crate::CliError;
use argh::FromArgs;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::Env;

/// Talk to a service interactively: send each line typed, print every line that arrives as
/// it arrives (broadcasts from other members, time ticks). PREFIX (e.g. `10000:` for
/// broadcast, `9090:` for time) is sent first, on its own, so the tunnel routes the session
/// before the first line is typed.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "chat",
    example = "switchyard chat 10000:\nswitchyard chat 9090:\nswitchyard chat --to 127.0.0.1:10000",
    note = "`quit`, `exit`, `q` or Ctrl-D ends the session. When the server closes the connection (stamp does after each exchange), the client says so and sends the next line typed on a new connection, PREFIX first. Lines from the server starting with `error: ` go to stderr and make the exit code 1."
)]
pub struct ChatCmd {
    /// server address: the tunnel entrance, or a service directly (default
    /// 127.0.0.1:7000)
    #[argh(option, default = "crate::send::default_entrance()", from_str_fn(crate::addr::parse))]
    to: SocketAddr,

    /// seconds to wait for connecting, and for the last lines after quitting
    /// (default 10)
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

    /// route prefix sent before anything else, like `10000:` (a missing colon is added);
    /// omit it for the default route or a service reached directly
    #[argh(positional, from_str_fn(parse_prefix))]
    prefix: Option<String>,
}

/// A route prefix: digits and a colon. Bare digits get their colon, because without it the
/// tunnel would read the digits and the first typed line as one (`10000hi`) and pick the
/// default route.
fn parse_prefix(s: &str) -> Result<String, String> {
    let digits = s.strip_suffix(':').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a route prefix like 10000: (got {s:?})"));
    }
    Ok(format!("{digits}:"))
}

impl Program for ChatCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let timeout = Duration::from_secs(self.timeout);
        let tls = ClientTls::from_options(self.tls_pin, self.tls_ca.as_deref(), self.tls_name)?;
        let over = if tls.is_some() { " over TLS" } else { "" };
        let banner = match &self.prefix {
            Some(prefix) => format!("chatting with route {} via {}{over}", prefix.trim_end_matches(':'), self.to),
            None => format!("chatting with {}{over}", self.to),
        };
        session::interactive(&rt, Dialer::new(env, self.to, self.prefix, timeout, tls), &banner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_digits_with_a_colon() {
        assert_eq!(parse_prefix("10000:").as_deref(), Ok("10000:"));
        assert_eq!(parse_prefix("9090").as_deref(), Ok("9090:"));
        assert!(parse_prefix(":").is_err());
        assert!(parse_prefix("abc:").is_err());
    }
}
