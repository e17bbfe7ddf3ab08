//! `serve hello --ports …`: the original's multi-port server and its interconnectivity
//! test.

use super::{launch, ServiceKind};
use crate::launch::Fleet;
use crate::session::Session;
use crate::{within, CliError};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::service::line_server::LineServerConfig;
use switchyard_core::service::reply::Preset;
use switchyard_core::Env;

/// How long each port of the interconnectivity test may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `hello` in `fleet` on every port of `ports` on `ip` that is free, checks which
/// ports of the list answer, and serves until Ctrl-C.
pub async fn serve<R: Runtime>(
    rt: &R,
    mut fleet: Fleet,
    mut env: Env,
    (ip, ports): (IpAddr, &[u16]),
    config: LineServerConfig,
) -> Result<ExitCode, CliError> {
    let kind = ServiceKind::Reply(Preset::Hello);
    let mut serving = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let listen = SocketAddr::new(ip, port);
        let space = u16::try_from(i + 1).unwrap_or(u16::MAX);
        match launch(rt, &mut fleet, env.child(space), kind, config.clone(), listen, None).await {
            Ok(addr) => serving.push(addr),
            Err(e) if e.error.kind() == io::ErrorKind::AddrInUse => {
                tracing::warn!("port {port} is in use: not serving it (another server may hold it)")
            }
            Err(e) => {
                fleet.stop_and_join().await;
                return Err(e.into());
            }
        }
    }
    if serving.is_empty() {
        return Err(CliError::new(format!("none of the ports {ports:?} on {ip} is free")));
    }
    let list: Vec<String> = serving.iter().map(ToString::to_string).collect();
    tracing::info!("hello server listening on {}", list.join(", "));
    for (i, &port) in ports.iter().enumerate() {
        let to = SocketAddr::new(ip, port);
        let space = u16::try_from(ports.len() + i + 1).unwrap_or(u16::MAX);
        match probe(rt, env.child(space), to).await {
            Ok(()) => tracing::info!("interconnectivity: {to} is up (hello → world)"),
            Err(e) => tracing::warn!("interconnectivity: {to} is down: {e}"),
        }
    }
    fleet.serve_until_ctrl_c(|| tracing::info!("serving until Ctrl-C")).await?;
    Ok(ExitCode::SUCCESS)
}

/// Sends `hello` to `to` and expects `world` within [`PROBE_TIMEOUT`].
async fn probe<R: Runtime>(rt: &R, env: Env, to: SocketAddr) -> Result<(), CliError> {
    let mut session = Session::open(rt, env, to, PROBE_TIMEOUT, None).await?;
    let exchange = async {
        session.send_line("hello".into()).await?;
        session.finish().await?;
        match session.next_line().await? {
            Some(line) if &line[..] == b"world" => Ok(()),
            Some(line) => Err(CliError::new(format!("answered {:?}", String::from_utf8_lossy(&line)))),
            None => Err(CliError::new("closed without an answer")),
        }
    };
    within(rt, rt.now() + PROBE_TIMEOUT, || CliError::new("no answer within 1 s"), exchange).await
}
