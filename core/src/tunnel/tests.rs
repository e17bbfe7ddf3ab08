//! The tunnel's two ends under the simulator, wired to real services.

use crate::id::ListenerId;
use crate::service::broadcast::Broadcast;
use crate::service::echo::{EchoConfig, EchoServer};
use crate::service::line_server::LineServerConfig;
use crate::service::time::TimeService;
use crate::sim::{LinkConfig, NetConfig, Probe, ProbeEvent, Sim};
use crate::time::{Instant, WallClock};
use crate::tunnel::auth::Secret;
use crate::tunnel::local::{Entrance, LocalConfig, TunnelLocal};
use crate::tunnel::remote::{RemoteConfig, Routes, TunnelRemote};
use crate::tunnel::TunnelEvent;
use crate::{CloseHow, ConnId, NetError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) struct Topology {
    pub sim: Sim,
    pub local: crate::sim::HostId,
    pub remote: crate::sim::HostId,
    pub entry: SocketAddr,
    pub forward: SocketAddr,
    next_client: u8,
}

pub(crate) fn secret() -> Secret {
    Secret::new(*b"test secret").unwrap()
}

impl Topology {
    pub fn new(seed: u64, link: LinkConfig, local_secret: Secret) -> Topology {
        let mut sim = Sim::new(seed, NetConfig { link, ..NetConfig::default() });
        let wall = WallClock::new(1_759_329_025_000_000, Instant::ZERO, ::time::UtcOffset::UTC);
        let echo =
            sim.add_host("echo", [10, 0, 2, 1].into(), |env, _| EchoServer::new(env, EchoConfig::default())).unwrap();
        let echo_addr = sim.listen(echo, ListenerId(0), 7007).unwrap();
        let time = sim
            .add_host("time", [10, 0, 2, 2].into(), move |env, _| {
                TimeService::new(wall, Duration::from_secs(60)).server(env, LineServerConfig::default())
            })
            .unwrap();
        let time_addr = sim.listen(time, ListenerId(0), 9090).unwrap();
        let bcast = sim
            .add_host("broadcast", [10, 0, 2, 3].into(), |env, _| Broadcast::server(env, LineServerConfig::default()))
            .unwrap();
        let bcast_addr = sim.listen(bcast, ListenerId(0), 10000).unwrap();
        let mut routes = Routes::new();
        routes.add("9090", time_addr).add("10000", bcast_addr).add("default", echo_addr);
        let remote = sim
            .add_host("remote", [10, 0, 1, 2].into(), move |env, _| {
                TunnelRemote::new(env, RemoteConfig::new(secret(), routes.clone()))
            })
            .unwrap();
        let carrier_addr = sim.listen(remote, ListenerId(0), 7001).unwrap();
        let entrances = BTreeMap::from([
            (ListenerId(0), Entrance::Prefix),
            (ListenerId(1), Entrance::Forward { route: "9090".into() }),
        ]);
        let local = sim
            .add_host("local", [10, 0, 1, 1].into(), move |env, now| {
                TunnelLocal::new(env, now, LocalConfig::new(carrier_addr, local_secret.clone(), entrances.clone()))
            })
            .unwrap();
        let entry = sim.listen(local, ListenerId(0), 7000).unwrap();
        let forward = sim.listen(local, ListenerId(1), 7090).unwrap();
        Topology { sim, local, remote, entry, forward, next_client: 1 }
    }

    pub fn client(&mut self) -> crate::sim::HostId {
        let n = self.next_client;
        self.next_client += 1;
        self.sim.add_host(&format!("client{n}"), [10, 0, 0, n].into(), |env, _| Probe::new(env)).unwrap()
    }

    pub fn connect(&mut self, client: crate::sim::HostId, to: SocketAddr) -> ConnId {
        self.sim.with_machine(client, |p: &mut Probe, _| p.connect(to)).unwrap()
    }

    pub fn write(&mut self, client: crate::sim::HostId, conn: ConnId, bytes: &'static [u8]) {
        self.sim.with_machine(client, |p: &mut Probe, _| p.write(conn, Bytes::from_static(bytes))).unwrap();
    }

    pub fn received(&self, client: crate::sim::HostId, conn: ConnId) -> String {
        let mut all = Vec::new();
        for (_, event) in self.sim.events::<ProbeEvent>(client) {
            if let ProbeEvent::Received { conn: c, bytes } = event {
                if *c == conn {
                    all.extend_from_slice(bytes);
                }
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    pub fn saw(&self, client: crate::sim::HostId, wanted: &ProbeEvent) -> bool {
        self.sim.events::<ProbeEvent>(client).any(|(_, e)| e == wanted)
    }

    pub fn run(&mut self, d: Duration) {
        self.sim.run_for(d).unwrap();
    }
}

fn lan() -> LinkConfig {
    LinkConfig::new(Duration::from_millis(5), Duration::from_millis(1))
}

#[test]
fn default_route_echoes_and_prefix_routes_to_time() {
    let mut t = Topology::new(1, lan(), secret());
    t.run(Duration::from_secs(1));
    assert!(t.sim.machine::<TunnelLocal>(t.local).unwrap().is_up());
    let c = t.client();
    let entry = t.entry;
    let echo = t.connect(c, entry);
    let time = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, echo, b"hello\n");
    t.write(c, time, b"9090:time\n");
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(c, echo), "hello\n");
    assert_eq!(t.received(c, time), "2025-10-01 14:30:26\n");
}

#[test]
fn half_close_passes_end_to_end() {
    let mut t = Topology::new(2, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.client();
    let entry = t.entry;
    let conn = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, conn, b"one\ntwo");
    t.sim.with_machine(c, |p: &mut Probe, _| p.close(conn, CloseHow::HalfClose)).unwrap();
    t.run(Duration::from_millis(300));
    assert_eq!(t.received(c, conn), "one\ntwo\n");
    assert!(t.saw(c, &ProbeEvent::ReadClosed { conn }));
    assert_eq!(t.sim.machine::<TunnelLocal>(t.local).unwrap().streams(), 0);
    assert_eq!(t.sim.machine::<TunnelRemote>(t.remote).unwrap().streams(), 0);
}

#[test]
fn unknown_prefix_and_silent_clients_get_error_lines() {
    let mut t = Topology::new(3, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.client();
    let entry = t.entry;
    let unknown = t.connect(c, entry);
    let silent = t.connect(c, entry);
    let long = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, unknown, b"1234:x\n");
    t.write(c, long, b"111111111111111111111111111111111111111111:x\n");
    t.run(Duration::from_secs(4));
    assert_eq!(t.received(c, unknown), "error: unknown route 1234\n");
    assert_eq!(t.received(c, long), "error: route prefix too long\n");
    assert!(t.received(c, silent).starts_with("error: no route prefix within 3 s"));
}

#[test]
fn wrong_secret_is_refused_and_clients_told_the_tunnel_is_down() {
    let mut t = Topology::new(4, lan(), Secret::new(*b"wrong").unwrap());
    t.run(Duration::from_secs(2));
    assert!(!t.sim.machine::<TunnelLocal>(t.local).unwrap().is_up());
    // Each end says the secrets differ; the local end notices first (the remote proves
    // itself first in the handshake).
    for host in [t.local, t.remote] {
        assert!(
            t.sim.events::<TunnelEvent>(host).any(
                |(_, e)| matches!(e, TunnelEvent::AuthFailed { reason, .. } if reason.contains("different secrets"))
            ),
            "{} did not report the secret mismatch",
            t.sim.name(host)
        );
    }
    let c = t.client();
    let entry = t.entry;
    let conn = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    assert!(t.received(c, conn).starts_with("error: tunnel is down"), "{}", t.received(c, conn));
}

#[test]
fn static_forward_needs_no_prefix() {
    let mut t = Topology::new(5, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.client();
    let forward = t.forward;
    let conn = t.connect(c, forward);
    t.run(Duration::from_millis(100));
    assert_eq!(t.received(c, conn), "2025-10-01 14:30:26\n");
}

#[test]
fn remote_restart_is_survived() {
    let mut t = Topology::new(6, lan(), secret());
    t.run(Duration::from_secs(1));
    let remote = t.remote;
    t.sim.crash(remote);
    t.run(Duration::from_millis(500));
    assert!(!t.sim.machine::<TunnelLocal>(t.local).unwrap().is_up());
    t.sim.restart(remote);
    // New streams must work within 2 s of the restart.
    t.run(Duration::from_secs(2));
    assert!(t.sim.machine::<TunnelLocal>(t.local).unwrap().is_up());
    let c = t.client();
    let entry = t.entry;
    let conn = t.connect(c, entry);
    t.run(Duration::from_millis(50));
    t.write(c, conn, b"back\n");
    t.run(Duration::from_millis(100));
    assert_eq!(t.received(c, conn), "back\n");
    let _ = NetError::Reset;
}
