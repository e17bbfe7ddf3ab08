//! `switchyard rendezvous`: the hole-punching rendezvous server on one UDP socket.

use crate::launch::{Fleet, LaunchError};
use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use std::net::SocketAddr;
use std::process::ExitCode;
use switchyard_adapters::Runtime;
use switchyard_core::punch::{Rendezvous, RendezvousConfig};
use switchyard_core::{Env, Instant};

/// The rendezvous server's UDP port, as in the original (`SERVER_PORT`).
pub const DEFAULT_PORT: u16 = 9999;

/// Run the hole-punching rendezvous server: peers register an id here, ask to be
/// introduced to another id, punch a direct UDP path to each other, and fall back to
/// this server as a relay when no direct path forms.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "rendezvous",
    example = "switchyard rendezvous\nswitchyard rendezvous --listen 0.0.0.0:9999",
    note = "The default, 127.0.0.1:9999, serves peers on this machine only: to serve peers behind NATs, listen on a public address (or 0.0.0.0:9999) that they can reach. A peer's public endpoint is the source address its registration arrived from; a registration lasts 60 s after its last refresh (peers refresh every 15 s), and an id is held by the peer that registered it (others are refused) until it leaves or expires. A peer in a session is not introduced to a third peer (that peer is told it is busy); when one peer of a session leaves, expires or connects elsewhere, the other is told at once. Limits: 10,000 ids; per source IP, bursts of 200 datagrams and 50 a second sustained (more are dropped); relayed traffic only within a session, 64 KiB/s per peer. Logs every registration, introduction, refusal and expiry. Ctrl-C stops the server (exit 0). Wire format: docs/PROTOCOL.md section 5."
)]
pub struct RendezvousCmd {
    /// UDP address to listen on (default 127.0.0.1:9999)
    #[argh(option, default = "crate::addr::loopback(DEFAULT_PORT)", from_str_fn(crate::addr::parse))]
    listen: SocketAddr,

    /// serve Prometheus metrics at http://ADDR/metrics: registrations, introductions,
    /// relayed bytes, rate limits (see the README's Metrics section)
    #[argh(option, from_str_fn(crate::addr::parse))]
    metrics: Option<SocketAddr>,
}

impl Program for RendezvousCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let mut fleet = Fleet::with_metrics(self.metrics)?;
        let announce = start(&rt, &mut fleet, env, self.listen).await?;
        fleet.serve_until_ctrl_c(|| tracing::info!("{announce}")).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Starts a rendezvous server (as `rendezvous` and a config file's `[[rendezvous]]` run
/// it): [`launch`], and returns the line that says where it listens.
pub async fn start<R: Runtime>(rt: &R, fleet: &mut Fleet, env: Env, listen: SocketAddr) -> Result<String, CliError> {
    let addr = launch(rt, fleet, env, listen).await?;
    Ok(format!("rendezvous listening on UDP {addr}"))
}

/// Starts a rendezvous server with the default limits on `listen`, in `fleet` (`up` runs
/// one too); returns the address it got.
pub async fn launch<R: Runtime>(
    rt: &R,
    fleet: &mut Fleet,
    env: Env,
    listen: SocketAddr,
) -> Result<SocketAddr, LaunchError> {
    let config = RendezvousConfig::default();
    let socket = config.socket;
    let server = Rendezvous::new(env, Instant::ZERO, config);
    let bound = fleet.launch_udp(rt, "rendezvous", server, &[(socket, listen)]).await?;
    Ok(bound[&socket])
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::punch::PeerConfig;

    /// The help is written out by hand: it must say what the machines really do.
    #[test]
    fn the_help_states_the_default_limits() {
        let c = RendezvousConfig::default();
        let refresh = PeerConfig::new("A", crate::addr::loopback(DEFAULT_PORT)).refresh_interval;
        assert_eq!(c.max_registrations, 10_000, "the help says 10,000 ids");
        let wanted = [
            format!(
                "lasts {} s after its last refresh (peers refresh every {} s)",
                c.registration_ttl.as_secs(),
                refresh.as_secs()
            ),
            format!("bursts of {} datagrams and {} a second", c.source_burst, c.source_rate),
            format!("{} KiB/s per peer", c.relay_rate / 1024),
        ];
        crate::assert_help_says::<RendezvousCmd>("rendezvous", &wanted);
    }
}
