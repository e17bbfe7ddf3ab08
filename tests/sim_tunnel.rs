//! The whole seed topology under the simulator: clients → local tunnel end → carrier →
//! remote tunnel end → echo, time and broadcast services, with the real machines.
//!
//! The first tests pin one behaviour each at one seed; `full_topology_survives_faults`
//! sweeps 500 seeds of random latency, jitter, traffic, a carrier cut and a remote restart,
//! and `full_topology_over_tls_survives_faults` 300 more with the carrier over TLS 1.3
//! (same guarantees; `a_seed_replays_a_tls_run_to_the_same_trace` checks that a seed
//! replays a TLS run to the same trace hash), and `full_topology_over_two_carriers_
//! survives_faults` 300 with two local ends (`--threads 2`), clients placed over them.

use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use switchyard_core::placement::{Load, Placement};
use switchyard_core::service::broadcast::{Broadcast, BroadcastServer};
use switchyard_core::service::echo::{EchoConfig, EchoServer};
use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent};
use switchyard_core::service::line_server::LineServerConfig;
use switchyard_core::service::time::{TimeServer, TimeService};
use switchyard_core::sim::{check_seeds, Cut, HostId, HostSpec, LinkConfig, NetConfig, Probe, ProbeEvent, Sim, TestId};
use switchyard_core::time::WallClock;
use switchyard_core::tls::{ClientCerts, Secure, Tls, TlsDial, TlsEvent, TlsServe, TlsSettings, Trust};
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::{Entrance, LocalConfig, TunnelLocal};
use switchyard_core::tunnel::remote::{RemoteConfig, Route, Routes, TunnelRemote};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::wire::proxy::{self, ProxyAddrs, ProxyHeader, ProxyVersion};
use switchyard_core::Env;
use switchyard_core::{CloseHow, ConnId, Instant, ListenerId, Rng};
use switchyard_tests::{fixed_identity, probe_received, CarrierFaults};

/// 2025-10-01 14:30:25 UTC at the simulation's zero.
fn wall() -> WallClock {
    WallClock::utc(1_759_329_025_000_000, Instant::ZERO)
}

fn secret() -> Secret {
    Secret::new(*b"test secret").unwrap()
}

fn lan() -> LinkConfig {
    LinkConfig::new(Duration::from_millis(5), Duration::from_millis(1))
}

/// The seed topology: three services, the two tunnel ends, and clients added on demand.
struct Topology {
    sim: Sim,
    local: HostId,
    remote: HostId,
    services: [HostId; 3],
    /// A scripted target behind route 7777, for flow-control tests.
    sink: HostId,
    /// The local end's prefix entrance.
    entry: SocketAddr,
    /// The remote end's carrier listener.
    carrier: SocketAddr,
    /// A static forward to route 9090 (time).
    forward: SocketAddr,
    /// A static forward configured with an invalid route name.
    bad_forward: SocketAddr,
    /// Static forwards to routes `v1` and `v2`, which reach the sink with a PROXY protocol
    /// header of that version.
    proxied: [SocketAddr; 2],
    clients: u16,
    /// The carrier runs over TLS: both ends are wrapped in [`Tls`].
    tls: bool,
    /// With [`Topology::add_worker`]: every local end (the first is `local`) and its prefix
    /// entrance, as the workers of one `tunnel local --threads N`; line clients are then
    /// placed on them by the accept thread's rule.
    workers: Rc<RefCell<Workers>>,
}

/// The local ends of a multi-carrier topology and the placement that spreads clients.
#[derive(Default)]
struct Workers {
    ends: Vec<(HostId, SocketAddr)>,
    placement: Placement,
}

impl Workers {
    /// The end the next client goes to (its index in `ends`), chosen as the accept thread
    /// would from each end's carrier state and open streams; `None` with one end.
    fn place(&mut self, sim: &Sim) -> Option<usize> {
        if self.ends.len() < 2 {
            return None;
        }
        let loads: Vec<Load> = self
            .ends
            .iter()
            .map(|&(host, _)| match sim.machine::<TunnelLocal>(host) {
                Ok(end) => Load { ready: end.is_up(), open: end.streams() },
                Err(_) => Load { ready: false, open: 0 },
            })
            .collect();
        self.placement.choose(&loads)
    }
}

impl Topology {
    fn new(seed: u64, link: LinkConfig, local_secret: Secret) -> Topology {
        Topology::build(seed, link, local_secret, false)
    }

    /// The topology with its carrier over TLS 1.3: the remote end serves a fixed
    /// certificate, the local end pins it.
    fn over_tls(seed: u64, link: LinkConfig) -> Topology {
        Topology::build(seed, link, secret(), true)
    }

    fn build(seed: u64, link: LinkConfig, local_secret: Secret, tls: bool) -> Topology {
        let mut sim = Sim::new(seed, NetConfig { link, ..NetConfig::default() });
        let echo =
            sim.add_host("echo", [10, 0, 2, 1].into(), |env, _| EchoServer::new(env, EchoConfig::default())).unwrap();
        let echo_addr = sim.listen(echo, ListenerId(0), 7007).unwrap();
        let time = sim
            .add_host("time", [10, 0, 2, 2].into(), |env, _| {
                TimeService::new(wall(), Duration::from_secs(60)).server(env, LineServerConfig::default())
            })
            .unwrap();
        let time_addr = sim.listen(time, ListenerId(0), 9090).unwrap();
        let broadcast = sim
            .add_host("broadcast", [10, 0, 2, 3].into(), |env, _| Broadcast::server(env, LineServerConfig::default()))
            .unwrap();
        let broadcast_addr = sim.listen(broadcast, ListenerId(0), 10000).unwrap();
        let sink = sim.add_host("sink", [10, 0, 2, 4].into(), |env, _| Probe::new(env)).unwrap();
        let sink_addr = sim.listen(sink, ListenerId(0), 7777).unwrap();
        let proxy_v1 = Route { target: sim.listen(sink, ListenerId(1), 7781).unwrap(), proxy: Some(ProxyVersion::V1) };
        let proxy_v2 = Route { target: sim.listen(sink, ListenerId(2), 7782).unwrap(), proxy: Some(ProxyVersion::V2) };
        let mut routes = Routes::new();
        routes.add("9090", time_addr).add("10000", broadcast_addr).add("7777", sink_addr).add("default", echo_addr);
        routes.add("v1", proxy_v1).add("v2", proxy_v2);
        let remote_end = move |env: Env| TunnelRemote::new(env, RemoteConfig::new(secret(), routes.clone()));
        let remote = if tls {
            sim.add_host("remote", [10, 0, 1, 2].into(), move |env, _| {
                let serve =
                    TlsServe { identity: fixed_identity("remote"), listeners: Secure::All, clients: ClientCerts::None };
                let settings = TlsSettings { serve: Some(serve), dial: None };
                let secret = env.secret(b"tls");
                Tls::new(remote_end(env), settings, secret, wall()).expect("a usable identity")
            })
        } else {
            sim.add_host("remote", [10, 0, 1, 2].into(), move |env, _| remote_end(env))
        }
        .unwrap();
        let carrier = sim.listen(remote, ListenerId(0), 7001).unwrap();
        let entrances = BTreeMap::from([
            (ListenerId(0), Entrance::Prefix),
            (ListenerId(1), Entrance::Forward { route: "9090".into() }),
            // A route name the wire cannot carry (a space): a configuration mistake.
            (ListenerId(2), Entrance::Forward { route: "bad route".into() }),
            (ListenerId(3), Entrance::Forward { route: "v1".into() }),
            (ListenerId(4), Entrance::Forward { route: "v2".into() }),
        ]);
        let local_end = move |env: Env, now| {
            TunnelLocal::new(env, now, LocalConfig::new(carrier, local_secret.clone(), entrances.clone()))
        };
        let local = if tls {
            sim.add_host("local", [10, 0, 1, 1].into(), move |env, now| {
                let pin = fixed_identity("remote").fingerprint().expect("a certificate");
                let dial = TlsDial {
                    trust: Trust::Pin(pin),
                    server_name: Some("remote".into()),
                    to: Secure::All,
                    identity: None,
                };
                let settings = TlsSettings { serve: None, dial: Some(dial) };
                let secret = env.secret(b"tls");
                Tls::new(local_end(env, now), settings, secret, wall()).expect("a usable trust")
            })
        } else {
            sim.add_host("local", [10, 0, 1, 1].into(), local_end)
        }
        .unwrap();
        let entry = sim.listen(local, ListenerId(0), 7000).unwrap();
        let forward = sim.listen(local, ListenerId(1), 7090).unwrap();
        let bad_forward = sim.listen(local, ListenerId(2), 7091).unwrap();
        let proxied =
            [sim.listen(local, ListenerId(3), 7081).unwrap(), sim.listen(local, ListenerId(4), 7082).unwrap()];
        Topology {
            sim,
            local,
            remote,
            services: [echo, time, broadcast],
            sink,
            entry,
            carrier,
            forward,
            bad_forward,
            proxied,
            clients: 0,
            tls,
            workers: Rc::default(),
        }
    }

    /// Adds one more local end (prefix entrance only) carrying to the same remote end: with
    /// `local`, the workers of `tunnel local --threads N`. Returns it and its entrance.
    fn add_worker(&mut self) -> (HostId, SocketAddr) {
        assert!(!self.tls, "multi-carrier topologies are plaintext here");
        let carrier = self.carrier;
        let mut workers = self.workers.borrow_mut();
        if workers.ends.is_empty() {
            workers.ends.push((self.local, self.entry));
        }
        let n = workers.ends.len() as u8;
        let prefix_only = BTreeMap::from([(ListenerId(0), Entrance::Prefix)]);
        let host = self
            .sim
            .add_host(&format!("local{}", n + 1), [10, 0, 1, 2 + n].into(), move |env, now| {
                TunnelLocal::new(env, now, LocalConfig::new(carrier, secret(), prefix_only.clone()))
            })
            .unwrap();
        let entry = self.sim.listen(host, ListenerId(0), 7000).unwrap();
        workers.ends.push((host, entry));
        (host, entry)
    }

    fn next_client_spec(&mut self) -> HostSpec {
        self.clients += 1;
        let [hi, lo] = self.clients.to_be_bytes();
        HostSpec::new(format!("client{}", self.clients), [10, 1, hi, lo].into())
    }

    /// A scripted client host.
    fn probe(&mut self) -> HostId {
        let spec = self.next_client_spec();
        self.sim.add_host_with(spec, |env, _| Probe::new(env)).unwrap()
    }

    /// A line client that connects to the prefix entrance at `at` (its host boots then):
    /// the local end's, or with several workers the one placement picks then.
    fn line_client(&mut self, at: Instant) -> HostId {
        let entry = Rc::new(Cell::new(self.entry));
        let target = entry.clone();
        let spec = self.next_client_spec().down();
        let host = self
            .sim
            .add_host_with(spec, move |env, now| {
                LineClient::connect(env, now, target.get(), LineClientConfig::default())
            })
            .unwrap();
        let workers = self.workers.clone();
        self.sim.schedule(at, move |sim| {
            let mut workers = workers.borrow_mut();
            if let Some(placed) = workers.place(sim) {
                entry.set(workers.ends[placed].1);
            }
            sim.restart(host)
        });
        host
    }

    fn connect(&mut self, client: HostId, to: SocketAddr) -> ConnId {
        self.sim.with_machine(client, |p: &mut Probe, _| p.connect(to)).unwrap()
    }

    fn write(&mut self, client: HostId, conn: ConnId, bytes: &'static [u8]) {
        self.sim.with_machine(client, |p: &mut Probe, _| p.write(conn, Bytes::from_static(bytes))).unwrap();
    }

    fn received(&self, client: HostId, conn: ConnId) -> String {
        String::from_utf8_lossy(&probe_received(&self.sim, client, conn)).into_owned()
    }

    /// Every byte `host` received on `conn`.
    fn bytes_received(&self, host: HostId, conn: ConnId) -> Vec<u8> {
        probe_received(&self.sim, host, conn)
    }

    fn saw(&self, client: HostId, wanted: &ProbeEvent) -> bool {
        self.sim.events::<ProbeEvent>(client).any(|(_, e)| e == wanted)
    }

    fn run(&mut self, d: Duration) {
        self.sim.run_for(d).unwrap();
    }

    /// The local end's machine, inside its TLS layer if it has one; `None` while it is down.
    fn local_end(&self) -> Option<&TunnelLocal> {
        if self.tls {
            self.sim.machine::<Tls<TunnelLocal>>(self.local).ok().map(Tls::inner)
        } else {
            self.sim.machine::<TunnelLocal>(self.local).ok()
        }
    }

    /// The remote end's machine, as [`Topology::local_end`].
    fn remote_end(&self) -> Option<&TunnelRemote> {
        if self.tls {
            self.sim.machine::<Tls<TunnelRemote>>(self.remote).ok().map(Tls::inner)
        } else {
            self.sim.machine::<TunnelRemote>(self.remote).ok()
        }
    }

    fn local_is_up(&self) -> bool {
        self.local_end().is_some_and(TunnelLocal::is_up)
    }

    /// Open streams and service sessions left anywhere.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let mut check = |what: &str, n: usize| {
            if n > 0 {
                left.push(format!("{what}: {n}"));
            }
        };
        check("local streams", self.local_end().map_or(0, TunnelLocal::streams));
        for &(host, _) in self.workers.borrow().ends.iter().skip(1) {
            check("another worker's streams", self.sim.machine::<TunnelLocal>(host).map_or(0, TunnelLocal::streams));
        }
        check("remote streams", self.remote_end().map_or(0, TunnelRemote::streams));
        let [echo, time, broadcast] = self.services;
        check("echo sessions", self.sim.machine::<EchoServer>(echo).map_or(0, |m| m.connections()));
        check("time sessions", self.sim.machine::<TimeServer>(time).map_or(0, |m| m.connections()));
        check("broadcast sessions", self.sim.machine::<BroadcastServer>(broadcast).map_or(0, |m| m.connections()));
        left
    }
}

fn lines(sim: &Sim, host: HostId) -> Vec<(Instant, String)> {
    sim.events::<LineClientEvent>(host)
        .filter_map(|(at, e)| match e {
            LineClientEvent::Line(line) => Some((at, String::from_utf8_lossy(line).into_owned())),
            _ => None,
        })
        .collect()
}

fn closed_by(sim: &Sim, host: HostId) -> Option<Option<switchyard_core::NetError>> {
    sim.events::<LineClientEvent>(host).find_map(|(_, e)| match e {
        LineClientEvent::Closed(reason) => Some(reason.clone()),
        _ => None,
    })
}

fn send_at(sim: &mut Sim, host: HostId, at: Instant, line: String) {
    sim.schedule(at, move |sim| {
        let _ = sim.with_machine(host, |c: &mut LineClient, now| c.send_line(now, line.as_bytes()));
    });
}

fn finish_at(sim: &mut Sim, host: HostId, at: Instant) {
    sim.schedule(at, move |sim| {
        let _ = sim.with_machine(host, |c: &mut LineClient, now| c.finish(now));
    });
}

#[test]
fn default_route_echoes_and_prefix_routes_to_time() {
    let mut t = Topology::new(1, lan(), secret());
    t.run(Duration::from_secs(1));
    assert!(t.local_is_up());
    let c = t.probe();
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

/// The time host's wall clock jumps 90 minutes (a suspended machine) while virtual time
/// moves on a second: a client connected before it sees the jump in its next push, and a
/// new client in its first answer.
#[test]
fn a_wall_clock_jump_reaches_the_time_service_answers() {
    let mut t = Topology::new(4, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.probe();
    // A client through the tunnel's entrance to the time service, after its first answer.
    let ask_time = |t: &mut Topology| {
        let entry = t.entry;
        let conn = t.connect(c, entry);
        t.run(Duration::from_millis(100));
        t.write(c, conn, b"9090:time\n");
        t.run(Duration::from_millis(200));
        conn
    };
    let before = ask_time(&mut t);
    assert_eq!(t.received(c, before), "2025-10-01 14:30:26\n");
    let time_host = t.services[1];
    let jumped = 1_759_329_025_000_000 + 5_400_000_000 + i128::from(t.sim.now().as_micros());
    t.sim.set_wall_clock(time_host, jumped).unwrap();
    let after = ask_time(&mut t);
    assert_eq!(t.received(c, after), "2025-10-01 16:00:26\n");
    t.run(Duration::from_secs(60));
    let pushed = t.received(c, before);
    assert_eq!(pushed, "2025-10-01 14:30:26\n2025-10-01 16:01:26\n", "the next push shows the new time");
}

#[test]
fn half_close_passes_end_to_end_and_nothing_is_left_behind() {
    let mut t = Topology::new(2, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.probe();
    let entry = t.entry;
    let conn = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, conn, b"one\ntwo");
    t.sim.with_machine(c, |p: &mut Probe, _| p.close(conn, CloseHow::HalfClose)).unwrap();
    t.run(Duration::from_millis(300));
    assert_eq!(t.received(c, conn), "one\ntwo\n");
    assert!(t.saw(c, &ProbeEvent::ReadClosed { conn }));
    assert_eq!(t.leftovers(), Vec::<String>::new());
}

#[test]
fn unknown_prefix_overlong_prefix_and_silent_clients_get_error_lines() {
    let mut t = Topology::new(3, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.probe();
    let entry = t.entry;
    let unknown = t.connect(c, entry);
    let silent = t.connect(c, entry);
    let long = t.connect(c, entry);
    let good = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, unknown, b"1234:x\n");
    t.write(c, long, b"111111111111111111111111111111111111111111:x\n");
    t.write(c, good, b"still fine\n");
    t.run(Duration::from_secs(4));
    assert_eq!(t.received(c, unknown), "error: unknown route 1234\n");
    assert_eq!(t.received(c, long), "error: route prefix too long\n");
    assert_eq!(t.received(c, silent), "error: no route prefix within 3 s (send e.g. 9090:time)\n");
    assert_eq!(t.received(c, good), "still fine\n", "bad neighbours never disturb a good stream");
}

#[test]
fn wrong_secret_is_refused_on_both_ends_and_clients_told_the_tunnel_is_down() {
    let mut t = Topology::new(4, lan(), Secret::new(*b"wrong").unwrap());
    t.run(Duration::from_secs(2));
    assert!(!t.local_is_up());
    // The local end notices first (the remote proves itself first); both say why.
    for host in [t.local, t.remote] {
        assert!(
            t.sim.events::<TunnelEvent>(host).any(
                |(_, e)| matches!(e, TunnelEvent::AuthFailed { reason, .. } if reason.contains("different secrets"))
            ),
            "{} did not report the secret mismatch",
            t.sim.name(host)
        );
    }
    let c = t.probe();
    let entry = t.entry;
    let conn = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    assert!(t.received(c, conn).starts_with("error: tunnel is down"), "{}", t.received(c, conn));
}

/// A config reload replaces the remote end's routes while streams are open: the stream on
/// the removed route carries on (routes are looked up only when a stream opens), a new
/// stream for it is refused with the reason, and the routes kept still work.
#[test]
fn replaced_routes_refuse_new_streams_and_spare_open_ones() {
    let mut t = Topology::new(5, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.probe();
    let entry = t.entry;
    let open = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, open, b"hello\n");
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(c, open), "hello\n");

    let remote = t.remote;
    t.sim
        .with_machine(remote, |end: &mut TunnelRemote, _| {
            let mut kept = Routes::new();
            for (name, target) in end.routes().iter().filter(|(name, _)| *name != "default") {
                kept.add(name, target);
            }
            end.set_routes(kept);
        })
        .unwrap();
    let refused = t.connect(c, entry);
    let time = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, open, b"again\n");
    t.write(c, refused, b"hi\n");
    t.write(c, time, b"9090:time\n");
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(c, open), "hello\nagain\n");
    assert_eq!(t.received(c, refused), "error: no default route on the remote end\n");
    assert_eq!(t.received(c, time), "2025-10-01 14:30:26\n");
}

/// A config reload adds a static forward while the local end runs (a listener it asks the
/// driver for) and then removes it: clients of the new forward reach its route with no
/// prefix; once removed, it refuses new clients, and the stream opened through it carries
/// on.
#[test]
fn forwards_open_and_close_while_the_local_end_runs() {
    let mut t = Topology::new(6, lan(), secret());
    t.run(Duration::from_secs(1));
    let (local, c) = (t.local, t.probe());
    let addr: SocketAddr = "10.0.1.1:7095".parse().unwrap();
    t.sim
        .with_machine(local, |end: &mut TunnelLocal, _| end.open_forward(ListenerId(40), addr, "9090".into()))
        .unwrap();
    t.run(Duration::from_millis(100));
    let opened = TunnelEvent::ForwardOpened { addr, route: "9090".into() };
    assert!(t.sim.events::<TunnelEvent>(local).any(|(_, e)| *e == opened), "the forward listens");
    let through = t.connect(c, addr);
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(c, through), "2025-10-01 14:30:26\n", "the time, with no prefix");

    t.sim.with_machine(local, |end: &mut TunnelLocal, _| end.close_forward(ListenerId(40))).unwrap();
    t.run(Duration::from_millis(100));
    let refused = t.connect(c, addr);
    // The time service pushes again a minute after the first answer.
    t.run(Duration::from_secs(61));
    let failed = t
        .sim
        .events::<ProbeEvent>(c)
        .any(|(_, e)| matches!(e, ProbeEvent::ConnectFailed { conn, .. } if *conn == refused));
    assert!(failed, "the removed forward refuses new clients");
    assert_eq!(t.received(c, through).lines().count(), 2, "the open stream carries on: {:?}", t.received(c, through));

    // A forward on a port the host already serves cannot listen, and says so.
    let taken: SocketAddr = "10.0.1.1:7000".parse().unwrap();
    t.sim
        .with_machine(local, |end: &mut TunnelLocal, _| end.open_forward(ListenerId(41), taken, "9090".into()))
        .unwrap();
    t.run(Duration::from_millis(100));
    let failed = t
        .sim
        .events::<TunnelEvent>(local)
        .any(|(_, e)| matches!(e, TunnelEvent::ForwardFailed { addr, .. } if *addr == taken));
    assert!(failed, "a taken port is reported");
}

#[test]
fn static_forward_needs_no_prefix() {
    let mut t = Topology::new(5, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.probe();
    let forward = t.forward;
    let conn = t.connect(c, forward);
    t.run(Duration::from_millis(100));
    assert_eq!(t.received(c, conn), "2025-10-01 14:30:26\n");
}

#[test]
fn a_forward_with_an_invalid_route_name_costs_only_its_client() {
    let mut t = Topology::new(9, lan(), secret());
    t.run(Duration::from_secs(1));
    let c = t.probe();
    let (bad_forward, entry) = (t.bad_forward, t.entry);
    let bad = t.connect(c, bad_forward);
    let good = t.connect(c, entry);
    t.run(Duration::from_millis(100));
    t.write(c, good, b"fine\n");
    t.run(Duration::from_millis(100));
    assert_eq!(t.received(c, bad), "error: invalid route name \"bad route\" in the forward's configuration\n");
    assert_eq!(t.received(c, good), "fine\n");
    assert!(t.local_is_up(), "the carrier must not pay for a bad forward");
}

/// Routes with `proxy=v1` and `proxy=v2`: the target's first bytes are a PROXY header that
/// names the client (its address and port, as the local end accepted it) and the forward it
/// connected to, then the stream's bytes exactly as sent, even bytes that look like a
/// header themselves.
#[test]
fn proxied_routes_tell_the_target_who_the_client_is() {
    proxied_routes_name_the_client(Topology::new(11, lan(), secret()));
}

/// The same with the carrier over TLS: the TLS layer hands the local end the address each
/// client connected to, as the driver gave it.
#[test]
fn proxied_routes_tell_the_target_who_the_client_is_over_tls() {
    proxied_routes_name_the_client(Topology::over_tls(12, lan()));
}

fn proxied_routes_name_the_client(mut t: Topology) {
    t.run(Duration::from_secs(1));
    let c = t.probe();
    let [v1, v2] = t.proxied;
    let conns = [t.connect(c, v1), t.connect(c, v2)];
    t.run(Duration::from_millis(100));
    let sent: [&'static [u8]; 2] =
        [b"PROXY TCP4 6.6.6.6 6.6.6.6 1 2\r\nhello\n", b"\r\n\r\n\0\r\nQUIT\n\x21\x11 bytes"];
    for (conn, bytes) in conns.iter().zip(sent) {
        t.write(c, *conn, bytes);
    }
    t.run(Duration::from_millis(200));
    let sink = t.sink;
    for (i, ((conn, bytes), (version, entrance))) in
        conns.iter().zip(sent).zip([(ProxyVersion::V1, v1), (ProxyVersion::V2, v2)]).enumerate()
    {
        let client = t
            .sim
            .events::<ProbeEvent>(c)
            .find_map(|(_, e)| match e {
                ProbeEvent::Connected { conn: k, local } if k == conn => Some(*local),
                _ => None,
            })
            .expect("the client connected");
        let at_sink = t
            .sim
            .events::<ProbeEvent>(sink)
            .find_map(|(_, e)| match e {
                ProbeEvent::Accepted { listener, conn: Some(k), .. } if *listener == ListenerId(1 + i as u16) => {
                    Some(*k)
                }
                _ => None,
            })
            .expect("the sink accepted the stream");
        let got = t.bytes_received(sink, at_sink);
        let (header, n) = proxy::decode(&got).expect("a PROXY header").expect("a whole one");
        let addrs = Some(ProxyAddrs { source: client, destination: entrance });
        assert_eq!(header, ProxyHeader { version, addrs }, "route {}", version.name());
        assert_eq!(&got[n..], bytes, "route {}: the stream's bytes after the header", version.name());
        if version == ProxyVersion::V1 {
            let line =
                format!("PROXY TCP4 {} {} {} {}\r\n", client.ip(), entrance.ip(), client.port(), entrance.port());
            assert_eq!(&got[..n], line.as_bytes());
        }
    }
}

#[test]
fn new_streams_work_within_two_seconds_of_a_remote_restart() {
    let mut t = Topology::new(6, lan(), secret());
    t.run(Duration::from_secs(1));
    let remote = t.remote;
    t.sim.crash(remote);
    t.run(Duration::from_millis(500));
    assert!(!t.local_is_up());
    t.sim.restart(remote);
    t.run(Duration::from_secs(2));
    assert!(t.local_is_up());
    let c = t.probe();
    let entry = t.entry;
    let conn = t.connect(c, entry);
    t.run(Duration::from_millis(50));
    t.write(c, conn, b"back\n");
    t.run(Duration::from_millis(100));
    assert_eq!(t.received(c, conn), "back\n");
}

#[test]
fn a_cut_carrier_is_detected_within_ten_seconds_and_rebuilt() {
    let mut t = Topology::new(7, lan(), secret());
    t.run(Duration::from_secs(1));
    let (local, remote) = (t.local, t.remote);
    let cut_at = t.sim.now();
    t.sim.partition(local, remote, Cut::BothWays);
    t.run(Duration::from_secs(12));
    let down_at = t
        .sim
        .events::<TunnelEvent>(local)
        .find_map(|(at, e)| matches!(e, TunnelEvent::CarrierDown { .. }).then_some(at))
        .expect("the local end noticed the dead carrier");
    assert!(down_at - cut_at <= Duration::from_secs(10), "noticed after {:?}", down_at - cut_at);
    t.sim.heal(local, remote, Cut::BothWays);
    t.run(Duration::from_secs(6));
    assert!(t.local_is_up());
}

/// `--threads 2` under the simulator: two local ends (the workers of one `tunnel local`),
/// each with its own carrier to the one remote end, and clients placed by the rule the
/// accept thread uses ([`Placement`] over each worker's carrier state and open streams).
/// Streams spread over both; cutting one carrier ends only its streams; new clients go to
/// the other while it is down; rebuilt, it takes clients again.
#[test]
fn two_carriers_share_the_streams_and_losing_one_spares_the_other() {
    let mut t = Topology::new(13, lan(), secret());
    let (second, second_entry) = t.add_worker();
    t.run(Duration::from_secs(1));
    let workers = [(t.local, t.entry), (second, second_entry)];
    let client = t.probe();
    // Places one client, says hello through it, and returns where it went and its stream.
    let open = |t: &mut Topology, hello: &'static [u8]| {
        let worker = t.workers.borrow_mut().place(&t.sim).expect("two workers");
        let conn = t.connect(client, workers[worker].1);
        t.run(Duration::from_millis(100));
        t.write(client, conn, hello);
        t.run(Duration::from_millis(200));
        assert_eq!(t.received(client, conn), String::from_utf8_lossy(hello), "through worker {worker}");
        (worker, conn)
    };
    let first: Vec<_> = [&b"a\n"[..], b"b\n", b"c\n", b"d\n"].into_iter().map(|hello| open(&mut t, hello)).collect();
    let placed: Vec<usize> = first.iter().map(|&(worker, _)| worker).collect();
    assert_eq!(placed, [0, 1, 0, 1], "spread over both carriers");

    t.sim.partition(t.local, t.remote, Cut::BothWays);
    t.run(Duration::from_secs(12));
    for &(_, conn) in &first {
        t.write(client, conn, b"again\n");
    }
    t.run(Duration::from_millis(300));
    for (&(worker, conn), hello) in first.iter().zip(["a", "b", "c", "d"]) {
        let got = t.received(client, conn);
        let want = if worker == 1 { format!("{hello}\nagain\n") } else { format!("{hello}\n") };
        assert_eq!(got, want, "a stream of worker {worker} after worker 0's carrier was cut");
    }
    for hello in [&b"e\n"[..], b"f\n", b"g\n"] {
        assert_eq!(open(&mut t, hello).0, 1, "placed on the worker whose carrier is down");
    }

    t.sim.heal(t.local, t.remote, Cut::BothWays);
    t.run(Duration::from_secs(6));
    assert_eq!(open(&mut t, b"h\n").0, 0, "the rebuilt carrier, now the least loaded, takes the next client");
}

#[test]
fn a_stream_whose_target_never_reads_stalls_alone_and_memory_stays_bounded() {
    let mut t = Topology::new(8, lan(), secret());
    let sink = t.sink;
    t.sim.with_machine(sink, |p: &mut Probe, _| p.pause_new_connections(true)).unwrap();
    t.run(Duration::from_secs(1));
    let c = t.probe();
    let entry = t.entry;
    let bulk = t.connect(c, entry);
    let chat = t.connect(c, entry);
    t.run(Duration::from_millis(50));
    // 7 MiB towards a target that reads nothing: more than the 4 MiB stream window.
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    t.sim.with_machine(c, |p: &mut Probe, _| p.write(bulk, Bytes::from_static(b"7777:"))).unwrap();
    for _ in 0..7 {
        let bytes = Bytes::from(chunk.clone());
        t.sim.with_machine(c, |p: &mut Probe, _| p.write(bulk, bytes)).unwrap();
    }
    t.run(Duration::from_secs(2));
    t.write(c, chat, b"still moving\n");
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(c, chat), "still moving\n", "the stalled stream held up another");

    // Back-pressure reached the client: what left its socket is bounded by the stream
    // window (4 MiB), the local end's stream buffer (256 KiB) and three simulated socket
    // windows (256 KiB each) on the way; the rest of the 7 MiB still waits at the client.
    let accepted: usize = t
        .sim
        .events::<ProbeEvent>(c)
        .filter_map(|(_, e)| match e {
            ProbeEvent::Sent { conn, bytes } if *conn == bulk => Some(*bytes),
            _ => None,
        })
        .sum();
    let bound = 4 * 1024 * 1024 + 256 * 1024 + 3 * 256 * 1024 + 5;
    assert!(accepted <= bound, "the client pushed {accepted} bytes into a stalled stream (bound {bound})");
    assert!(accepted >= 4 * 1024 * 1024, "only {accepted} bytes moved: the window was not used");

    // Once the target reads, every byte arrives, in order.
    let target_conn = t
        .sim
        .events::<ProbeEvent>(sink)
        .find_map(|(_, e)| match e {
            ProbeEvent::Accepted { conn: Some(conn), .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    t.sim.with_machine(sink, |p: &mut Probe, _| p.resume(target_conn)).unwrap();
    t.run(Duration::from_secs(5));
    let mut got = Vec::new();
    for (_, e) in t.sim.events::<ProbeEvent>(sink) {
        if let ProbeEvent::Received { bytes, .. } = e {
            got.extend_from_slice(bytes);
        }
    }
    assert_eq!(got.len(), 7 * chunk.len());
    assert!(got.chunks(chunk.len()).all(|c| c == &chunk[..]), "bytes arrived corrupted or out of order");
}

const FULL: TestId = TestId::integration("switchyard-tests", "sim_tunnel", "full_topology_survives_faults");

/// What one echo client did, for checking against what it saw.
struct EchoClient {
    host: HostId,
    start: Instant,
    end: Instant,
    sent: Vec<String>,
}

/// One seed of the full topology. Echo clients come and go through a carrier cut and a
/// remote restart; afterwards, time and broadcast clients run in calm weather. Checks:
/// every echo returns (exactly, in order) unless its stream overlapped a fault, in which
/// case it got a prefix and a clear end; no byte crosses streams (every line is unique to its
/// client); time ticks arrive at connect and each interval; every broadcast reaches every
/// other member exactly once; nothing is left open at the end.
fn full_topology(seed: u64) -> Result<(), String> {
    full_topology_with(seed, false, 1).map(|_| ())
}

/// [`full_topology`], with the carrier over TLS when `tls`; returns the run's trace hash.
/// The full topology at `seed`, with its carrier over TLS or not, and with `carriers` local
/// ends (the workers of `tunnel local --threads N`, clients placed over them; the cut hits
/// the first one's carrier only). Returns the trace hash.
fn full_topology_with(seed: u64, tls: bool, carriers: usize) -> Result<u64, String> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let latency = Duration::from_millis(rng.range_inclusive(1, 20));
    let jitter = latency.mul_f64(0.3);
    let link = LinkConfig::new(latency, jitter);
    let mut t = if tls { Topology::over_tls(seed, link) } else { Topology::new(seed, link, secret()) };
    let workers: Vec<HostId> = (1..carriers).map(|_| t.add_worker().0).collect();
    let (local, remote) = (t.local, t.remote);

    // Faults: a carrier cut (a two-way partition long enough for the heartbeat to declare
    // the carrier dead), then a remote restart.
    let faults = CarrierFaults::draw(&mut rng);
    faults.schedule(&mut t.sim, (local, remote), remote);
    let overlaps = |start: Instant, end: Instant| faults.overlaps(start, end);

    // Echo clients through the faults.
    let mut echo_clients = Vec::new();
    for n in 0..rng.range_inclusive(6, 12) {
        let start = Instant::from_millis(rng.range_inclusive(500, 30_000));
        let host = t.line_client(start);
        let mut at = start + Duration::from_millis(50);
        let mut sent = Vec::new();
        for i in 0..rng.range_inclusive(1, 8) {
            let line = format!("client {n} line {i} {}", "x".repeat(rng.below(40) as usize));
            send_at(&mut t.sim, host, at, line.clone());
            sent.push(line);
            at = at + Duration::from_millis(rng.range_inclusive(1, 400));
        }
        finish_at(&mut t.sim, host, at);
        echo_clients.push(EchoClient { host, start, end: at + Duration::from_secs(1), sent });
    }

    // Calm weather from 60 s: time for 130 s (ticks at connect, +60 s, +120 s), and three
    // broadcast members who each say three things once everyone has joined.
    let time_client = t.line_client(Instant::from_secs(60));
    send_at(&mut t.sim, time_client, Instant::from_secs(60) + Duration::from_millis(10), "9090:time".into());
    finish_at(&mut t.sim, time_client, Instant::from_secs(190));
    let members: Vec<HostId> =
        (0..3).map(|i| t.line_client(Instant::from_secs(61) + Duration::from_millis(i))).collect();
    for (i, &member) in members.iter().enumerate() {
        send_at(&mut t.sim, member, Instant::from_secs(61) + Duration::from_millis(100), format!("10000:/nick m{i}"));
        for k in 0..3 {
            let at = Instant::from_secs(63) + Duration::from_millis(rng.range_inclusive(0, 2_000) + k);
            send_at(&mut t.sim, member, at, format!("hello {k} from m{i}"));
        }
        finish_at(&mut t.sim, member, Instant::from_secs(70));
    }

    t.sim.run_until(Instant::from_secs(200)).map_err(|e| e.to_string())?;

    for client in &echo_clients {
        let got: Vec<String> = lines(&t.sim, client.host).into_iter().map(|(_, l)| l).collect();
        let end = closed_by(&t.sim, client.host);
        let complete = got == client.sent && end == Some(None);
        if complete {
            continue;
        }
        if !overlaps(client.start, client.end) {
            return Err(format!(
                "echo client {} (up {}..{}) away from any fault got {got:?} (end {end:?}), sent {:?}",
                t.sim.name(client.host),
                client.start,
                client.end,
                client.sent
            ));
        }
        // Near a fault: a clear refusal, or a prefix of the echoes before an abort.
        let refused = got.len() == 1 && got[0].starts_with("error: tunnel");
        let prefix = got.len() <= client.sent.len() && got.iter().zip(&client.sent).all(|(a, b)| a == b);
        if !(refused || prefix) || end.is_none() {
            return Err(format!(
                "echo client {} near a fault got {got:?} (end {end:?}), sent {:?}",
                t.sim.name(client.host),
                client.sent
            ));
        }
    }

    let ticks: Vec<String> = lines(&t.sim, time_client).into_iter().map(|(_, l)| l).collect();
    let first = wall().format(Instant::from_secs(60));
    if ticks.len() != 3 || !ticks[0].starts_with(&first[..16]) {
        return Err(format!("time client got {ticks:?}, wanted 3 ticks starting near {first}"));
    }

    for (i, &member) in members.iter().enumerate() {
        let got: Vec<String> = lines(&t.sim, member).into_iter().map(|(_, l)| l).collect();
        for (j, _) in members.iter().enumerate().filter(|(j, _)| *j != i) {
            for k in 0..3 {
                let want = format!("m{j}: hello {k} from m{j}");
                let n = got.iter().filter(|l| **l == want).count();
                if n != 1 {
                    return Err(format!("member m{i} got {want:?} {n} times; all: {got:?}"));
                }
            }
        }
        if got.iter().any(|l| l.ends_with(&format!("from m{i}")) && !l.starts_with('*')) {
            return Err(format!("member m{i} got its own message back: {got:?}"));
        }
    }

    let left = t.leftovers();
    if !left.is_empty() {
        return Err(format!("left open after every client finished: {left:?}"));
    }
    for &host in workers.iter().chain(std::iter::once(&local).filter(|_| carriers > 1)) {
        let opened = t.sim.events::<TunnelEvent>(host).filter(|(_, e)| matches!(e, TunnelEvent::StreamOpened { .. }));
        if opened.count() == 0 {
            return Err(format!("worker {} carried no stream", t.sim.name(host)));
        }
    }
    if tls
        && t.sim.events::<TlsEvent<TunnelEvent>>(local).filter(|(_, e)| matches!(e, TlsEvent::Secured { .. })).count()
            < 3
    {
        return Err(
            "the carrier was not secured for each of its three lives (start, after the cut, after the restart)".into(),
        );
    }
    Ok(t.sim.trace_hash())
}

#[test]
fn full_topology_survives_faults() {
    check_seeds(&FULL, 0..500, full_topology);
}

const FULL_TLS: TestId =
    TestId::integration("switchyard-tests", "sim_tunnel", "full_topology_over_tls_survives_faults");

#[test]
fn full_topology_over_tls_survives_faults() {
    check_seeds(&FULL_TLS, 0..300, |seed| full_topology_with(seed, true, 1).map(|_| ()));
}

const TWO_CARRIERS: TestId =
    TestId::integration("switchyard-tests", "sim_tunnel", "full_topology_over_two_carriers_survives_faults");

/// The sweep once more with two local ends (`--threads 2`), clients placed over them, the
/// first one's carrier cut: the same guarantees, and both carriers carry streams.
#[test]
fn full_topology_over_two_carriers_survives_faults() {
    check_seeds(&TWO_CARRIERS, 0..300, |seed| full_topology_with(seed, false, 2).map(|_| ()));
}

const TLS_REPLAY: TestId =
    TestId::integration("switchyard-tests", "sim_tunnel", "a_seed_replays_a_tls_run_to_the_same_trace");

#[test]
fn a_seed_replays_a_tls_run_to_the_same_trace() {
    check_seeds(&TLS_REPLAY, 0..5, |seed| {
        let first = full_topology_with(seed, true, 1)?;
        let again = full_topology_with(seed, true, 1)?;
        let other = full_topology_with(seed + 1000, true, 1)?;
        match (first == again, first != other) {
            (true, true) => Ok(()),
            (false, _) => Err(format!("the same seed gave traces {first:#x} and {again:#x}")),
            (_, false) => Err(format!("seeds {seed} and {} gave the same trace {first:#x}", seed + 1000)),
        }
    });
}
