//! The config `switchyard up` runs, as a file: `switchyard up --print-config` prints it as
//! a starting point, and `switchyard run` of it starts the same servers on the same ports.
//! It is written from [`crate::up::plan`], the table `up` itself starts from, so the two
//! cannot drift apart.

use crate::up::plan::{self, Role};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The built-in config for `--host` `host` and the time service's `interval`, with a
/// comment on each section.
pub fn seed_topology(host: IpAddr, interval: Duration) -> String {
    let at = |port: u16| SocketAddr::new(host, port);
    // Listening on every interface (`--host 0.0.0.0`, as in a container), the roles still
    // dial each other on loopback.
    let dial = |port: u16| match host.is_unspecified() {
        true => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port),
        false => at(port),
    };
    let mut out = String::from(
        "# The seed topology, as `switchyard up` runs it. Start it with `switchyard run FILE`;\n\
         # check an edited copy with `switchyard config check FILE`; `kill -HUP` reloads routes.\n\
         # Keys are the flags of each role's own command (`switchyard serve echo --help`, ...).\n\
         # Roles without secret_file / mesh_secret_file share a secret drawn for each run: give\n\
         # both ends the same secret file once they run on different hosts.\n",
    );
    let services = plan::services(interval, host, None);
    for server in &services {
        match server.role {
            Role::Service(kind) => {
                let _ = write!(out, "\n# {}\n[[service]]\nkind = \"{}\"\nlisten = \"{}\"\n", server.note, kind.name(), at(server.port));
                if let crate::serve::ServiceKind::Time { interval } = kind {
                    let _ = writeln!(out, "interval = {}", interval.as_secs());
                }
            }
            Role::Mesh => {
                let peers: Vec<String> = plan::MESH_PORTS
                    .iter()
                    .filter(|&&p| p != server.port)
                    .map(|&p| format!("\"{}\"", dial(p)))
                    .collect();
                let _ = write!(
                    out,
                    "\n# P2P mesh server\n[[mesh_server]]\nlisten = \"{}\"\npeers = [{}]\n",
                    at(server.port),
                    peers.join(", ")
                );
            }
            Role::Rendezvous => {
                let _ = write!(out, "\n# UDP hole-punching rendezvous\n[[rendezvous]]\nlisten = \"{}\"\n", at(server.port));
            }
        }
    }
    // Named routes first, `default` last, as the remote end lists them.
    let mut routes: Vec<(&str, u16)> = services.iter().filter_map(|s| Some((s.route?, s.port))).collect();
    routes.sort_by_key(|&(name, _)| name == "default");
    let routes: Vec<String> = routes.iter().map(|&(name, port)| format!("  \"{name}={}\",", dial(port))).collect();
    let _ = write!(
        out,
        "\n# The tunnel's remote end: routes are its allowlist (reloaded on SIGHUP)\n[[tunnel_remote]]\nlisten = \"{}\"\nroutes = [\n{}\n]\n",
        at(plan::CARRIER_PORT),
        routes.join("\n")
    );
    let forwards: Vec<String> = plan::FORWARDS.iter().map(|(port, route)| format!("\"{port}={route}\"")).collect();
    let _ = write!(
        out,
        "\n# The tunnel's local end: the prefix entrance, and static forwards like ssh -L\n[[tunnel_local]]\nlisten = \"{}\"\nremote = \"{}\"\nforwards = [{}]\n",
        at(plan::ENTRANCE_PORT),
        dial(plan::CARRIER_PORT),
        forwards.join(", ")
    );
    out
}
