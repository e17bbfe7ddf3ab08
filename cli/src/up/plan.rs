//! What `switchyard up` runs, in one place: every service with its port and tunnel route,
//! the mesh servers and the hole-punching rendezvous, and the two tunnel ends in front of
//! the services.
//!
//! To add a server to `up`, add a row to [`services`] (or, for a new kind of machine, a
//! variant to [`Role`] and its start-up in `up::launch_role`); the table `up` prints, the
//! remote end's routes and `demo` follow.

use crate::serve::ServiceKind;
use switchyard_core::tls::Fingerprint;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use switchyard_core::service::reply::Preset;
use switchyard_core::service::{broadcast, echo, time};

/// The remote tunnel end's carrier port.
pub const CARRIER_PORT: u16 = 7001;
/// The local tunnel end's prefix entrance.
pub const ENTRANCE_PORT: u16 = 7000;
/// Static forwards on the local end, like `ssh -L`: (port, route).
pub const FORWARDS: &[(u16, &str)] = &[(7090, "9090")];

/// The mesh servers `up` runs (the first three of the original's 5001–5005), each
/// seeded with the others.
pub const MESH_PORTS: [u16; 3] = [5001, 5002, 5003];

/// What one server of `up` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A line service.
    Service(ServiceKind),
    /// A P2P mesh server, seeded with the other [`MESH_PORTS`].
    Mesh,
    /// The hole-punching rendezvous server, on UDP.
    Rendezvous,
}

impl Role {
    /// Its name in the table and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Service(kind) => kind.name(),
            Role::Mesh => "mesh",
            Role::Rendezvous => "rendezvous",
        }
    }
}

/// One server `up` runs behind the tunnel.
#[derive(Debug, Clone)]
pub struct Server {
    /// What it is.
    pub role: Role,
    /// Its port on `--host`.
    pub port: u16,
    /// The tunnel route that reaches it (`default`: clients that send no prefix).
    pub route: Option<&'static str>,
    /// A hint for the table.
    pub note: String,
}

/// ` --OPTION ADDR` for a one-liner to paste, or nothing when `addr` is the option's
/// default (`up` on 127.0.0.1 keeps the short hints of the original).
pub fn option_unless_default(option: &str, addr: SocketAddr, default_port: u16) -> String {
    if addr == crate::addr::loopback(default_port) {
        String::new()
    } else {
        format!(" --{option} {addr}")
    }
}

/// ` --tls-pin SHA256:…` for a one-liner under `up --tls`, or nothing.
pub fn pin_option(pin: Option<Fingerprint>) -> String {
    pin.map_or_else(String::new, |pin| format!(" --tls-pin {pin}"))
}

/// Every server `up` runs besides the tunnel, in the order they start and are listed: the
/// services behind the tunnel, the mesh, then the rendezvous. `interval` is the time
/// service's; `host` is where they run, which the table's one-liners name unless it is
/// 127.0.0.1, so that each works as pasted; under `up --tls` they pin `pin`.
pub fn services(interval: Duration, host: IpAddr, pin: Option<Fingerprint>) -> Vec<Server> {
    let mesh_server =
        option_unless_default("server", SocketAddr::new(host, MESH_PORTS[0]), MESH_PORTS[0]) + &pin_option(pin);
    let rendezvous_port = crate::rendezvous::DEFAULT_PORT;
    let rendezvous = option_unless_default("rendezvous", SocketAddr::new(host, rendezvous_port), rendezvous_port);
    let service = |kind, port, route, note: &str| Server {
        role: Role::Service(kind),
        port,
        route: Some(route),
        note: note.to_owned(),
    };
    let every = format!("the time now, then every {} s", interval.as_secs());
    vec![
        service(ServiceKind::Echo, echo::DEFAULT_PORT, "default", "each line comes back"),
        service(ServiceKind::Time { interval }, time::DEFAULT_PORT, "9090", &every),
        service(ServiceKind::Broadcast, broadcast::DEFAULT_PORT, "10000", "to every other member; /who, /nick NAME"),
        service(
            ServiceKind::Reply(Preset::Greet),
            Preset::Greet.default_port(),
            "12345",
            "John → Hello Good morning !!!! ::: John",
        ),
        service(
            ServiceKind::Reply(Preset::Stamp),
            Preset::Stamp.default_port(),
            "8080",
            "Hi → Server received at DATE: Hi, then close",
        ),
        mesh(MESH_PORTS[0], &format!("P2P mesh; try: switchyard mesh chat{mesh_server} --user Alice")),
        mesh(MESH_PORTS[1], "linked with 5001 and 5003: users on any reach users on all"),
        mesh(MESH_PORTS[2], &format!("try: switchyard mesh chat{mesh_server} --user Bob --select fastest")),
        Server {
            role: Role::Rendezvous,
            port: rendezvous_port,
            route: None,
            note: if rendezvous.is_empty() {
                "UDP hole punching; try: switchyard punch --id A, then --id B --connect A".to_owned()
            } else {
                format!(
                    "UDP hole punching; try: switchyard punch{rendezvous} --id A, then switchyard punch{rendezvous} --id B --connect A"
                )
            },
        },
    ]
}

fn mesh(port: u16, note: &str) -> Server {
    Server { role: Role::Mesh, port, route: None, note: note.to_owned() }
}
