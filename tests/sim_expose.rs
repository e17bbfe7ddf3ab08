//! The reverse tunnel under the simulator: an exposing end (a `TunnelLocal` with ports to
//! publish) behind a NAT dials out to a public remote end, which listens on the published
//! ports and sends each visitor through the carrier to the service behind the NAT.
//!
//! One behaviour per test at one seed (version negotiation included), then
//! `exposed_services_survive_faults` sweeps 200 seeds of latency, jitter, visitors, a
//! carrier cut and an exposing-end restart.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_core::service::echo::{EchoConfig, EchoServer};
use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent};
use switchyard_core::sim::{check_seeds, Cut, HostId, HostSpec, LinkConfig, NatConfig, NetConfig, Probe, ProbeEvent};
use switchyard_core::sim::{Sim, TestId};
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::{LocalConfig, TunnelLocal};
use switchyard_core::tunnel::mux::MuxConfig;
use switchyard_core::tunnel::remote::{PublishConfig, RemoteConfig, Routes, TunnelRemote};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::{CloseHow, ConnId, Instant, ListenerId, Rng};

const PUBLIC_IP: [u8; 4] = [203, 0, 113, 7];
/// Published to the echo service.
const ECHO_PORT: u16 = 12345;
/// Published to a scripted service (a probe).
const PROBE_PORT: u16 = 12346;
/// Asked for, but outside the remote end's range.
const OUTSIDE: u16 = 14000;

fn secret() -> Secret {
    Secret::new(*b"expose secret").unwrap()
}

/// Echo and a probe service behind a NAT with the exposing end; the remote end in public.
struct Expose {
    sim: Sim,
    expose: HostId,
    remote: HostId,
    router: HostId,
    service: HostId,
    visitors: u8,
}

impl Expose {
    fn new(seed: u64, link: LinkConfig) -> Expose {
        Expose::with_streams(seed, link, MuxConfig::default().max_streams)
    }

    /// [`Expose::new`] with at most `max_streams` streams per carrier at the remote end.
    fn with_streams(seed: u64, link: LinkConfig, max_streams: usize) -> Expose {
        let mut sim = Sim::new(seed, NetConfig { link, ..NetConfig::default() });
        let remote = sim
            .add_host("remote", PUBLIC_IP.into(), move |env, _| {
                let mut config = RemoteConfig::new(secret(), Routes::new());
                config.publish = Some(PublishConfig::new(12000..=13000, [0, 0, 0, 0].into()));
                config.mux.max_streams = max_streams;
                TunnelRemote::new(env, config)
            })
            .unwrap();
        let carrier = sim.listen(remote, ListenerId(0), 7001).unwrap();
        let home = sim.add_nat("router", [198, 51, 100, 1].into(), NatConfig::default()).unwrap();
        let router = sim.host("router").unwrap();
        let echo = HostSpec::new("echo", [192, 168, 1, 3].into()).realm(home);
        let echo = sim.add_host_with(echo, |env, _| EchoServer::new(env, EchoConfig::default())).unwrap();
        let echo_addr = sim.listen(echo, ListenerId(0), 7007).unwrap();
        let service = HostSpec::new("service", [192, 168, 1, 4].into()).realm(home);
        let service = sim.add_host_with(service, |env, _| Probe::new(env)).unwrap();
        let service_addr = sim.listen(service, ListenerId(0), 8000).unwrap();
        let publish = BTreeMap::from([(ECHO_PORT, echo_addr), (PROBE_PORT, service_addr), (OUTSIDE, echo_addr)]);
        let expose = HostSpec::new("expose", [192, 168, 1, 2].into()).realm(home);
        let expose = sim
            .add_host_with(expose, move |env, now| {
                let mut config = LocalConfig::new(carrier, secret(), BTreeMap::new());
                config.publish = publish.clone();
                TunnelLocal::new(env, now, config)
            })
            .unwrap();
        Expose { sim, expose, remote, router, service, visitors: 0 }
    }

    /// The setup on a quiet LAN, run for a second: the carrier is up, the ports published.
    fn up(seed: u64) -> Expose {
        let mut t = Expose::new(seed, lan());
        t.run(Duration::from_secs(1));
        t
    }

    fn published(port: u16) -> SocketAddr {
        SocketAddr::new(PUBLIC_IP.into(), port)
    }

    fn visitor_spec(&mut self) -> HostSpec {
        self.visitors += 1;
        HostSpec::new(format!("visitor{}", self.visitors), [100, 64, 0, self.visitors].into())
    }

    /// A scripted visitor in the public realm.
    fn probe(&mut self) -> HostId {
        let spec = self.visitor_spec();
        self.sim.add_host_with(spec, |env, _| Probe::new(env)).unwrap()
    }

    /// A new visitor connected to published `port` and given 100 ms to get through.
    fn visit(&mut self, port: u16) -> (HostId, ConnId) {
        let v = self.probe();
        let conn = self.connect(v, Expose::published(port));
        self.run(Duration::from_millis(100));
        (v, conn)
    }

    fn connect(&mut self, host: HostId, to: SocketAddr) -> ConnId {
        self.sim.with_machine(host, |p: &mut Probe, _| p.connect(to)).unwrap()
    }

    fn write(&mut self, host: HostId, conn: ConnId, bytes: &'static [u8]) {
        self.sim.with_machine(host, |p: &mut Probe, _| p.write(conn, Bytes::from_static(bytes))).unwrap();
    }

    fn close(&mut self, host: HostId, conn: ConnId, how: CloseHow) {
        self.sim.with_machine(host, |p: &mut Probe, _| p.close(conn, how)).unwrap();
    }

    fn received(&self, host: HostId, conn: ConnId) -> Vec<u8> {
        switchyard_tests::probe_received(&self.sim, host, conn)
    }

    fn saw(&self, host: HostId, wanted: &ProbeEvent) -> bool {
        self.sim.events::<ProbeEvent>(host).any(|(_, e)| e == wanted)
    }

    /// The connections the scripted service accepted, in order.
    fn service_conns(&self) -> Vec<ConnId> {
        self.sim
            .events::<ProbeEvent>(self.service)
            .filter_map(|(_, e)| match e {
                ProbeEvent::Accepted { conn: Some(c), .. } => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn run(&mut self, d: Duration) {
        self.sim.run_for(d).unwrap();
    }

    fn remote_ports(&self) -> Vec<u16> {
        self.sim.machine::<TunnelRemote>(self.remote).map(TunnelRemote::published).unwrap_or_default()
    }

    fn events(&self, host: HostId) -> Vec<TunnelEvent> {
        self.sim.events::<TunnelEvent>(host).map(|(_, e)| e.clone()).collect()
    }

    /// How many times the exposing end heard `port` was published.
    fn times_published(&self, port: u16) -> usize {
        self.events(self.expose)
            .iter()
            .filter(|e| matches!(e, TunnelEvent::Published { port: p, .. } if *p == port))
            .count()
    }
}

fn lan() -> LinkConfig {
    LinkConfig::new(Duration::from_millis(5), Duration::from_millis(1))
}

#[test]
fn a_visitor_of_a_published_port_reaches_the_service_behind_the_nat() {
    let mut t = Expose::up(1);
    assert_eq!(t.remote_ports(), [ECHO_PORT, PROBE_PORT]);
    assert_eq!((t.times_published(ECHO_PORT), t.times_published(PROBE_PORT)), (1, 1));
    let refused = t.events(t.expose).into_iter().find_map(|e| match e {
        TunnelEvent::PublishRefused { port: OUTSIDE, reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(refused.as_deref(), Some("port 14000 is outside the range this remote end allows (12000-13000)"));

    let v = t.probe();
    let conn = t.connect(v, Expose::published(ECHO_PORT));
    t.run(Duration::from_millis(100));
    t.write(v, conn, b"hello from outside\n");
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(v, conn), b"hello from outside\n");
    // The exposing end knows who the visitor is (the remote end passes the address on).
    let visitor_addr = t.events(t.expose).into_iter().find_map(|e| match e {
        TunnelEvent::StreamOpened { route, client, .. } if route == ECHO_PORT.to_string() => client,
        _ => None,
    });
    assert_eq!(visitor_addr.map(|a| a.ip()), Some([100, 64, 0, 1].into()));

    // A port that was refused is not listened on: the visitor is refused by the host.
    let c2 = t.connect(v, Expose::published(OUTSIDE));
    t.run(Duration::from_millis(100));
    assert!(t.saw(v, &ProbeEvent::ConnectFailed { conn: c2, error: switchyard_core::NetError::Refused }));
}

#[test]
fn half_close_passes_both_ways_through_the_reverse_tunnel() {
    let mut t = Expose::up(2);
    let (v, conn) = t.visit(PROBE_PORT);
    t.write(v, conn, b"request");
    t.close(v, conn, CloseHow::HalfClose);
    t.run(Duration::from_millis(200));
    let [served] = t.service_conns()[..] else { panic!("the service accepted {:?}", t.service_conns()) };
    let service = t.service;
    assert_eq!(t.received(service, served), b"request");
    assert!(t.saw(service, &ProbeEvent::ReadClosed { conn: served }), "the visitor's FIN reached the service");
    // The other way is still open: the answer comes after the visitor's half-close.
    t.write(service, served, b"answer");
    t.close(service, served, CloseHow::HalfClose);
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(v, conn), b"answer");
    assert!(t.saw(v, &ProbeEvent::ReadClosed { conn }));
    t.run(Duration::from_secs(1));
    let streams = |m: &TunnelLocal| m.streams();
    assert_eq!(t.sim.machine::<TunnelLocal>(t.expose).map(streams).unwrap(), 0, "the stream ended at the exposing end");
    assert_eq!(t.sim.machine::<TunnelRemote>(t.remote).map(TunnelRemote::streams).unwrap(), 0);
}

#[test]
fn a_cut_carrier_closes_the_published_ports_and_a_new_one_publishes_them_again() {
    let mut t = Expose::up(3);
    let (v, conn) = t.visit(PROBE_PORT);
    t.write(v, conn, b"mid-stream");
    t.run(Duration::from_millis(100));
    let (router, remote) = (t.router, t.remote);
    t.sim.partition(router, remote, Cut::BothWays);
    t.run(Duration::from_secs(11));
    // The remote end noticed the silence, closed the ports and reset their visitors.
    assert!(t.events(remote).iter().any(|e| matches!(e, TunnelEvent::Unpublished { port: PROBE_PORT, .. })));
    assert!(t.remote_ports().is_empty(), "ports still published: {:?}", t.remote_ports());
    assert!(
        t.sim.events::<ProbeEvent>(v).any(|(_, e)| matches!(e, ProbeEvent::Closed { conn: c, .. } if *c == conn)),
        "the visitor mid-stream was reset"
    );
    let refused = t.connect(v, Expose::published(ECHO_PORT));
    t.run(Duration::from_millis(100));
    assert!(t.saw(v, &ProbeEvent::ConnectFailed { conn: refused, error: switchyard_core::NetError::Refused }));

    t.sim.heal(router, remote, Cut::BothWays);
    t.run(Duration::from_secs(7));
    assert_eq!(t.remote_ports(), [ECHO_PORT, PROBE_PORT], "published again after the reconnect");
    assert_eq!(t.times_published(ECHO_PORT), 2);
    let again = t.connect(v, Expose::published(ECHO_PORT));
    t.run(Duration::from_millis(100));
    t.write(v, again, b"back\n");
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(v, again), b"back\n");
}

#[test]
fn visitors_past_the_carriers_stream_cap_are_reset_and_the_others_carry_on() {
    let mut t = Expose::with_streams(6, lan(), 2);
    t.run(Duration::from_secs(1));
    let (first, a) = t.visit(ECHO_PORT);
    let (second, b) = t.visit(PROBE_PORT);
    let (third, c) = t.visit(ECHO_PORT);
    t.run(Duration::from_millis(100));
    assert!(
        t.sim.events::<ProbeEvent>(third).any(|(_, e)| matches!(e, ProbeEvent::Closed { conn, .. } if *conn == c)),
        "the third visitor was let in past the cap of 2 streams"
    );
    t.write(first, a, b"still served\n");
    t.run(Duration::from_millis(200));
    assert_eq!(t.received(first, a), b"still served\n");
    assert!(t
        .sim
        .events::<ProbeEvent>(second)
        .all(|(_, e)| !matches!(e, ProbeEvent::Closed { conn, .. } if *conn == b)));
}

#[test]
fn a_second_exposing_end_cannot_take_a_published_port() {
    let mut t = Expose::new(4, lan());
    let echo_addr: SocketAddr = "192.168.1.3:7007".parse().unwrap();
    let carrier = SocketAddr::new(PUBLIC_IP.into(), 7001);
    let other = t
        .sim
        .add_host("other", [100, 64, 1, 1].into(), move |env, now| {
            let mut config = LocalConfig::new(carrier, secret(), BTreeMap::new());
            config.publish = BTreeMap::from([(ECHO_PORT, echo_addr)]);
            config.backoff_first = Duration::from_secs(1);
            TunnelLocal::new(env, now + Duration::from_millis(500), config)
        })
        .unwrap();
    t.run(Duration::from_secs(2));
    let reason = t.events(other).into_iter().find_map(|e| match e {
        TunnelEvent::PublishRefused { port: ECHO_PORT, reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(reason.as_deref(), Some("port 12345 is already published by another exposing end"));
    assert_eq!(t.times_published(ECHO_PORT), 1);
}

#[test]
fn a_remote_end_without_allow_publish_refuses_with_a_reason() {
    let mut sim = Sim::new(5, NetConfig { link: lan(), ..NetConfig::default() });
    let remote = sim.add_host("remote", PUBLIC_IP.into(), |env, _| {
        TunnelRemote::new(env, RemoteConfig::new(secret(), Routes::new()))
    });
    let carrier = sim.listen(remote.unwrap(), ListenerId(0), 7001).unwrap();
    let expose = sim
        .add_host("expose", [100, 64, 1, 1].into(), move |env, now| {
            let mut config = LocalConfig::new(carrier, secret(), BTreeMap::new());
            config.publish = BTreeMap::from([(12345, "100.64.1.1:7007".parse().unwrap())]);
            TunnelLocal::new(env, now, config)
        })
        .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    let reason = sim.events::<TunnelEvent>(expose).find_map(|(_, e)| match e {
        TunnelEvent::PublishRefused { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason.as_deref(), Some("this remote end does not allow publishing (start it with --allow-publish)"));
}

const SWEEP: TestId = TestId::integration("switchyard-tests", "sim_expose", "exposed_services_survive_faults");

/// One visitor of the sweep: an echo client of the published port.
struct Visitor {
    host: HostId,
    start: Instant,
    end: Instant,
    sent: Vec<String>,
}

/// Random latency and jitter, 5-12 echo visitors at random times, a carrier cut (the
/// router's link to the remote end, long enough for the heartbeat to declare the carrier
/// dead) and a restart of the exposing end. Every visitor away from the faults gets exactly
/// its lines back, in order; one near a fault gets a prefix of them and a clear end (or a
/// refused connect while the port is closed); no line reaches another visitor (each is
/// unique to its visitor); the port is published again after each fault; nothing is left
/// open at the end.
fn exposed_services(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0xe4b05e);
    let latency = Duration::from_millis(rng.range_inclusive(1, 20));
    let mut t = Expose::new(seed, LinkConfig::new(latency, latency.mul_f64(0.3)));
    let (router, remote, expose) = (t.router, t.remote, t.expose);
    let faults = switchyard_tests::CarrierFaults::draw(&mut rng);
    faults.schedule(&mut t.sim, (router, remote), expose);
    let overlaps = |start: Instant, end: Instant| faults.overlaps(start, end);

    let mut visitors = Vec::new();
    for n in 0..rng.range_inclusive(5, 12) {
        let start = Instant::from_millis(rng.range_inclusive(1_000, 30_000));
        let spec = t.visitor_spec().down();
        let host = t
            .sim
            .add_host_with(spec, |env, now| {
                LineClient::connect(env, now, Expose::published(ECHO_PORT), LineClientConfig::default())
            })
            .unwrap();
        t.sim.schedule(start, move |sim| sim.restart(host));
        let mut at = start + Duration::from_millis(50);
        let mut sent = Vec::new();
        for i in 0..rng.range_inclusive(1, 8) {
            let line = format!("visitor {n} line {i} {}", "x".repeat(rng.below(40) as usize));
            let copy = line.clone();
            t.sim.schedule(at, move |sim| {
                let _ = sim.with_machine(host, |c: &mut LineClient, now| c.send_line(now, copy.as_bytes()));
            });
            sent.push(line);
            at = at + Duration::from_millis(rng.range_inclusive(1, 400));
        }
        t.sim.schedule(at, move |sim| {
            let _ = sim.with_machine(host, |c: &mut LineClient, now| c.finish(now));
        });
        visitors.push(Visitor { host, start, end: at + Duration::from_secs(1), sent });
    }
    t.sim.run_until(Instant::from_secs(60)).map_err(|e| e.to_string())?;

    for v in &visitors {
        let got: Vec<String> = t
            .sim
            .events::<LineClientEvent>(v.host)
            .filter_map(|(_, e)| match e {
                LineClientEvent::Line(line) => Some(String::from_utf8_lossy(line).into_owned()),
                _ => None,
            })
            .collect();
        let end = t.sim.events::<LineClientEvent>(v.host).find_map(|(_, e)| match e {
            LineClientEvent::Closed(reason) => Some(reason.clone()),
            _ => None,
        });
        let name = t.sim.name(v.host).to_owned();
        if got == v.sent && end == Some(None) {
            continue;
        }
        if !overlaps(v.start, v.end) {
            return Err(format!(
                "{name} (up {}..{}) away from faults got {got:?} (end {end:?}), sent {:?}",
                v.start, v.end, v.sent
            ));
        }
        // While the port is closed (the carrier down) the connect itself is refused.
        let refused =
            t.sim.events::<LineClientEvent>(v.host).any(|(_, e)| matches!(e, LineClientEvent::ConnectFailed(_)));
        let prefix = got.len() <= v.sent.len() && got.iter().zip(&v.sent).all(|(a, b)| a == b);
        if !prefix || (end.is_none() && !(refused && got.is_empty())) {
            return Err(format!("{name} near a fault got {got:?} (end {end:?}), sent {:?}", v.sent));
        }
    }
    // Published at start, after the cut and after the restart: three lives of the carrier.
    let lives = t
        .sim
        .events::<TunnelEvent>(remote)
        .filter(|(_, e)| matches!(e, TunnelEvent::Published { port: ECHO_PORT, .. }))
        .count();
    if lives != 3 || t.remote_ports() != [ECHO_PORT, PROBE_PORT] {
        return Err(format!(
            "port {ECHO_PORT} published {lives} times (want 3); published now: {:?}",
            t.remote_ports()
        ));
    }
    let streams = (
        t.sim.machine::<TunnelLocal>(expose).map_or(0, TunnelLocal::streams),
        t.sim.machine::<TunnelRemote>(remote).map_or(0, TunnelRemote::streams),
    );
    if streams != (0, 0) {
        return Err(format!("streams left open (exposing end, remote end): {streams:?}"));
    }
    Ok(())
}

#[test]
fn exposed_services_survive_faults() {
    check_seeds(&SWEEP, 0..200, exposed_services);
}

/// Version negotiation (PROTOCOL §3.2): a plain local end says version 2 in its `Hello`, so
/// a version-2 remote end still takes it; an exposing end says 3, and a version-2 remote end
/// (played by a probe answering as one does) refuses it by name, which the exposing end
/// reports; a `Hello` of a version the remote end does not know is refused with the range.
#[test]
fn versions_are_negotiated_and_an_older_remote_end_refuses_by_name() {
    use switchyard_core::wire::tunnel::TunnelMsg;
    let mut sim = Sim::new(7, NetConfig { link: lan(), ..NetConfig::default() });
    let old_remote = sim.add_host("old", PUBLIC_IP.into(), |env, _| Probe::new(env)).unwrap();
    let carrier = sim.listen(old_remote, ListenerId(0), 7001).unwrap();
    let end = |publish: bool| {
        move |env, now| {
            let mut config = LocalConfig::new(carrier, secret(), BTreeMap::new());
            if publish {
                config.publish = BTreeMap::from([(ECHO_PORT, "100.64.1.1:7007".parse().unwrap())]);
            }
            config.backoff_first = Duration::from_secs(60);
            TunnelLocal::new(env, now, config)
        }
    };
    let plain = sim.add_host("plain", [100, 64, 1, 1].into(), end(false)).unwrap();
    let expose = sim.add_host("expose", [100, 64, 1, 2].into(), end(true)).unwrap();
    sim.run_for(Duration::from_millis(100)).unwrap();
    let hellos: Vec<(ConnId, u8)> = sim
        .events::<ProbeEvent>(old_remote)
        .filter_map(|(_, e)| match e {
            // Type 16, subtype 0, length 33, reserved, then the version.
            ProbeEvent::Received { conn, bytes } if bytes.starts_with(&[16, 0, 0, 33, 0, 0]) => Some((*conn, bytes[6])),
            _ => None,
        })
        .collect();
    let peer_of = |conn: ConnId| {
        sim.events::<ProbeEvent>(old_remote).find_map(|(_, e)| match e {
            ProbeEvent::Accepted { conn: Some(c), peer, .. } if *c == conn => Some(peer.ip()),
            _ => None,
        })
    };
    let mut versions: Vec<(std::net::IpAddr, u8)> = hellos.iter().map(|&(c, v)| (peer_of(c).unwrap(), v)).collect();
    versions.sort();
    assert_eq!(versions, [([100, 64, 1, 1].into(), 2), ([100, 64, 1, 2].into(), 3)], "plain says 2, exposing 3");
    let refusal = TunnelMsg::Refused { reason: "protocol version 3 not supported (want 1 to 2)".into() }.to_bytes();
    let exposing = hellos.iter().find(|&&(_, v)| v == 3).unwrap().0;
    sim.with_machine(old_remote, |p: &mut Probe, _| p.write(exposing, refusal)).unwrap();
    sim.run_for(Duration::from_millis(100)).unwrap();
    let failed = sim.events::<TunnelEvent>(expose).find_map(|(_, e)| match e {
        TunnelEvent::AuthFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(failed.as_deref(), Some("the remote end refused us: protocol version 3 not supported (want 1 to 2)"));
    assert!(sim.events::<TunnelEvent>(plain).all(|(_, e)| !matches!(e, TunnelEvent::AuthFailed { .. })));

    // And today's remote end names its own range to a newer Hello.
    let mut t = Expose::new(8, lan());
    let probe = t.probe();
    let conn = t.connect(probe, SocketAddr::new(PUBLIC_IP.into(), 7001));
    t.run(Duration::from_millis(100));
    t.sim
        .with_machine(probe, |p: &mut Probe, _| {
            p.write(conn, TunnelMsg::Hello { version: 4, nonce: [0; 32] }.to_bytes())
        })
        .unwrap();
    t.run(Duration::from_millis(100));
    let answer = t.received(probe, conn);
    let want = TunnelMsg::Refused { reason: "protocol version 4 not supported (want 1 to 3)".into() }.to_bytes();
    assert_eq!(answer, want[..]);
}
