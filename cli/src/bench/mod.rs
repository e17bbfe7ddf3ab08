//! `switchyard bench`: measurements on loopback.
//!
//! - [`tunnel`]: the command, its figures and the summary against the targets.
//! - [`mesh`]: `bench mesh`, message rate and hop latency of the P2P mesh.
//! - [`broadcast`]: `bench broadcast`, fan-out of the broadcast service beside nats-server.
//! - [`ends`]: the tunnel ends under test, as child processes or in-process.
//! - [`handshake`]: the CPU cost of one TLS handshake in Switchyard's TLS layer.
//! - [`targets`]: the sink, echo and hold servers the traffic ends at.
//! - [`reference`](mod@reference): socat, bore and rathole in the tunnel's shape, to measure it against here.
//! - [`split`]: each relay process's user and system CPU and system calls in a transfer.
//! - [`load`]: the clients: bulk transfers, round trips, idle streams.
//! - [`stats`]: percentiles, medians, units.
//! - [`os`]: resident memory and CPU time of a process, load average, open-file limit.
//!
//! Benchmarks talk only to 127.0.0.1, bound every wait, and stop by themselves.

mod broadcast;
mod ends;
mod handshake;
mod load;
mod mesh;
mod os;
mod reference;
mod split;
mod stats;
mod targets;
mod tunnel;

use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use std::process::ExitCode;
use switchyard_adapters::Runtime;
use switchyard_core::Env;

/// Measure Switchyard on loopback and compare with plain TCP.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bench", example = "switchyard bench tunnel\nswitchyard bench mesh\nswitchyard bench broadcast --against nats")]
pub struct BenchCmd {
    #[argh(subcommand)]
    what: What,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum What {
    Tunnel(tunnel::TunnelCmd),
    Mesh(mesh::MeshCmd),
    Broadcast(broadcast::BroadcastCmd),
    Hold(HoldCmd),
}

/// Accept connections on an ephemeral 127.0.0.1 port and keep them open and silent until
/// killed; prints the address, then a line per connection. `bench tunnel` runs this as a
/// child process to hold the far ends of its idle streams.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "hold")]
pub struct HoldCmd {}

impl Program for BenchCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        match self.what {
            What::Tunnel(cmd) => cmd.run(rt, env).await,
            What::Mesh(cmd) => cmd.run(rt, env).await,
            What::Broadcast(cmd) => cmd.run(rt, env).await,
            What::Hold(HoldCmd {}) => {
                targets::serve_hold().map_err(|e| CliError::new(format!("hold: {e}")))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
