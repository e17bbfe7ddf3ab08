//! NAT boxes: mapping and filtering behaviours, timeouts, port allocation, hairpinning, the
//! mapping cap, a hole punch between two NATs, and streams through a NAT.

use super::*;

const NAT_IP: [u8; 4] = [203, 0, 113, 1];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Public endpoints: `s1` has sockets 0 and 1 on ports 5000 and 5001, `s2` socket 0 on 5000.
fn s1a() -> SocketAddr {
    addr("198.51.100.1:5000")
}
fn s1b() -> SocketAddr {
    addr("198.51.100.1:5001")
}
fn s2a() -> SocketAddr {
    addr("198.51.100.2:5000")
}

fn probe(env: Env, _: Instant) -> Probe {
    Probe::new(env)
}

/// One NAT at 203.0.113.1 with `inside` (192.168.1.10, socket 0 on port 4000) behind it,
/// and the public hosts `s1` and `s2`; every link takes 5 ms.
struct World {
    sim: Sim,
    lan: RealmId,
    nat: HostId,
    inside: HostId,
    s1: HostId,
    s2: HostId,
}

fn world(seed: u64, config: NatConfig) -> World {
    let mut sim = Sim::new(seed, NetConfig { trace_tail: 1000, ..net(5) });
    let lan = sim.add_nat("nat", NAT_IP.into(), config).unwrap();
    let nat = sim.host("nat").unwrap();
    let inside = sim.add_host_with(HostSpec::new("inside", [192, 168, 1, 10].into()).realm(lan), probe).unwrap();
    let s1 = sim.add_host("s1", s1a().ip(), probe).unwrap();
    let s2 = sim.add_host("s2", s2a().ip(), probe).unwrap();
    sim.bind_udp(inside, SocketId(0), 4000).unwrap();
    sim.bind_udp(s1, SocketId(0), s1a().port()).unwrap();
    sim.bind_udp(s1, SocketId(1), s1b().port()).unwrap();
    sim.bind_udp(s2, SocketId(0), s2a().port()).unwrap();
    World { sim, lan, nat, inside, s1, s2 }
}

fn send(sim: &mut Sim, host: HostId, socket: u16, to: SocketAddr, bytes: &'static str) {
    sim.with_machine(host, |p: &mut Probe, _| p.transmit(SocketId(socket), to, bytes)).unwrap();
}

fn send_at(sim: &mut Sim, at: Instant, host: HostId, socket: u16, to: SocketAddr, bytes: &'static str) {
    sim.schedule(at, move |sim| send(sim, host, socket, to, bytes));
}

/// Every datagram `host` received on `socket`: (observed source, payload).
fn datagrams(sim: &Sim, host: HostId, socket: u16) -> Vec<(SocketAddr, String)> {
    sim.events::<ProbeEvent>(host)
        .filter_map(|(_, e)| match e {
            ProbeEvent::Datagram { socket: s, from, bytes } if *s == SocketId(socket) => {
                Some((*from, String::from_utf8_lossy(bytes).into_owned()))
            }
            _ => None,
        })
        .collect()
}

fn payloads(sim: &Sim, host: HostId, socket: u16) -> Vec<String> {
    datagrams(sim, host, socket).into_iter().map(|(_, p)| p).collect()
}

/// The one source `host` saw on `socket`.
fn seen_from(sim: &Sim, host: HostId, socket: u16) -> SocketAddr {
    let seen = datagrams(sim, host, socket);
    assert_eq!(seen.len(), 1, "{seen:?}\n{}", sim.trace_tail());
    seen[0].0
}

// --- Mapping -----------------------------------------------------------------------------

/// The external endpoint s1:5000, s1:5001 and s2:5000 each see for one internal socket.
fn seen_by_three_destinations(mapping: NatMapping) -> [SocketAddr; 3] {
    let mut w = world(1, NatConfig::new(mapping, NatFiltering::EndpointIndependent));
    for to in [s1a(), s1b(), s2a()] {
        send(&mut w.sim, w.inside, 0, to, "hi");
    }
    w.sim.run_for(ms(100)).unwrap();
    [seen_from(&w.sim, w.s1, 0), seen_from(&w.sim, w.s1, 1), seen_from(&w.sim, w.s2, 0)]
}

#[test]
fn endpoint_independent_mapping_shows_every_destination_the_same_external_endpoint() {
    let [a, b, c] = seen_by_three_destinations(NatMapping::EndpointIndependent);
    assert_eq!(a, SocketAddr::new(NAT_IP.into(), 20000), "translated to the NAT's public address");
    assert_eq!((a, a), (b, c));
}

#[test]
fn address_dependent_mapping_shares_an_endpoint_per_destination_address() {
    let [a, b, c] = seen_by_three_destinations(NatMapping::AddressDependent);
    assert_eq!(a, b, "same destination address, other port: same mapping");
    assert_ne!(a, c, "another destination address: another mapping");
    assert_eq!(a.ip(), c.ip());
}

#[test]
fn address_and_port_dependent_mapping_gives_each_destination_its_own_endpoint() {
    let [a, b, c] = seen_by_three_destinations(NatMapping::AddressAndPortDependent);
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
}

// --- Filtering ---------------------------------------------------------------------------

/// After `inside` sent to s1:5000, which of (s1:5000, s1:5001, s2:5000) get through to it.
fn admitted(filtering: NatFiltering) -> [bool; 3] {
    let mut w = world(2, NatConfig::new(NatMapping::EndpointIndependent, filtering));
    send(&mut w.sim, w.inside, 0, s1a(), "out");
    w.sim.run_for(ms(100)).unwrap();
    let external = seen_from(&w.sim, w.s1, 0);
    send(&mut w.sim, w.s1, 0, external, "contacted");
    send(&mut w.sim, w.s1, 1, external, "same address, other port");
    send(&mut w.sim, w.s2, 0, external, "other address");
    w.sim.run_for(ms(100)).unwrap();
    let got = payloads(&w.sim, w.inside, 0);
    let trace = w.sim.trace_tail();
    let filtered = trace.lines().filter(|l| l.contains("nat: net datagram from") && l.ends_with("filtered")).count();
    let answer = ["contacted", "same address, other port", "other address"].map(|p| got.iter().any(|g| g == p));
    assert_eq!(filtered, answer.iter().filter(|&&a| !a).count(), "each drop is in the trace");
    answer
}

#[test]
fn endpoint_independent_filtering_admits_anyone() {
    assert_eq!(admitted(NatFiltering::EndpointIndependent), [true, true, true]);
}

#[test]
fn address_dependent_filtering_admits_any_port_of_a_contacted_address() {
    assert_eq!(admitted(NatFiltering::AddressDependent), [true, true, false]);
}

#[test]
fn address_and_port_dependent_filtering_admits_only_the_contacted_endpoint() {
    assert_eq!(admitted(NatFiltering::AddressAndPortDependent), [true, false, false]);
}

#[test]
fn unsolicited_inbound_without_a_mapping_is_dropped_even_with_open_filtering() {
    let mut w = world(3, NatConfig::new(NatMapping::EndpointIndependent, NatFiltering::EndpointIndependent));
    send(&mut w.sim, w.s1, 0, SocketAddr::new(NAT_IP.into(), 20000), "knock");
    w.sim.run_for(ms(100)).unwrap();
    assert!(payloads(&w.sim, w.inside, 0).is_empty());
    assert!(w
        .sim
        .trace_tail()
        .contains("nat: net datagram from 198.51.100.1:5000 to 203.0.113.1:20000 dropped by NAT: no mapping"));
    assert_eq!(w.sim.nat_mappings(w.lan), 0);
}

// --- Timeouts ----------------------------------------------------------------------------

fn thirty_second_nat(seed: u64) -> World {
    world(seed, NatConfig::default().with_timeout(Duration::from_secs(30)))
}

#[test]
fn a_mapping_dies_after_its_timeout_without_outbound_traffic() {
    let mut w = thirty_second_nat(4);
    let (inside, s1) = (w.inside, w.s1);
    send(&mut w.sim, inside, 0, s1a(), "out");
    w.sim.run_for(ms(100)).unwrap();
    let external = seen_from(&w.sim, s1, 0);
    send_at(&mut w.sim, Instant::from_secs(29), s1, 0, external, "in time");
    send_at(&mut w.sim, Instant::from_secs(31), s1, 0, external, "too late");
    w.sim.run_until(Instant::from_secs(30)).unwrap();
    assert_eq!(w.sim.nat_mappings(w.lan), 0, "dead at exactly the timeout");
    w.sim.run_until(Instant::from_secs(32)).unwrap();
    assert_eq!(payloads(&w.sim, inside, 0), ["in time"]);
    assert!(w.sim.trace_tail().contains("dropped by NAT: no mapping"));

    // The port of the dead mapping is not reused for the next one.
    send(&mut w.sim, inside, 0, s1a(), "again");
    w.sim.run_for(ms(100)).unwrap();
    let seen: Vec<SocketAddr> = datagrams(&w.sim, s1, 0).into_iter().map(|(from, _)| from).collect();
    assert_eq!(seen, [external, SocketAddr::new(NAT_IP.into(), external.port() + 1)]);
}

#[test]
fn outbound_traffic_keeps_a_mapping_alive_and_inbound_traffic_does_not() {
    let mut w = thirty_second_nat(5);
    let (inside, s1, s2) = (w.inside, w.s1, w.s2);
    // Kept alive from inside every 20 s: still open at 65 s.
    for at in [0, 20, 40] {
        send_at(&mut w.sim, Instant::from_secs(at), inside, 0, s1a(), "keepalive");
    }
    w.sim.run_for(ms(100)).unwrap();
    let external = seen_from(&w.sim, s1, 0);
    send_at(&mut w.sim, Instant::from_secs(65), s1, 0, external, "kept");
    w.sim.run_until(Instant::from_secs(66)).unwrap();
    assert_eq!(payloads(&w.sim, inside, 0), ["kept"]);

    // From a second internal socket, sent to once; s2 answers at 20 s and 35 s.
    w.sim.bind_udp(inside, SocketId(1), 4001).unwrap();
    send(&mut w.sim, inside, 1, s2a(), "once");
    w.sim.run_for(ms(100)).unwrap();
    let external = seen_from(&w.sim, s2, 0);
    let start = w.sim.now();
    send_at(&mut w.sim, start + Duration::from_secs(20), s2, 0, external, "answer");
    send_at(&mut w.sim, start + Duration::from_secs(35), s2, 0, external, "answer after timeout");
    w.sim.run_for(Duration::from_secs(40)).unwrap();
    assert_eq!(payloads(&w.sim, inside, 1), ["answer"], "the inbound answer did not refresh the mapping");
}

// --- Port allocation ---------------------------------------------------------------------

#[test]
fn sequential_allocation_gives_consecutive_ports_to_consecutive_mappings() {
    let mut w = world(6, NatConfig::default());
    for socket in 1..3 {
        w.sim.bind_udp(w.inside, SocketId(socket), 4000 + socket).unwrap();
    }
    for socket in 0..3 {
        send(&mut w.sim, w.inside, socket, s1a(), "hi");
    }
    w.sim.run_for(ms(100)).unwrap();
    let ports: Vec<u16> = datagrams(&w.sim, w.s1, 0).into_iter().map(|(from, _)| from.port()).collect();
    assert_eq!(ports, [20000, 20001, 20002]);
    assert_eq!(w.sim.nat_mappings(w.lan), 3);
}

#[test]
fn random_allocation_follows_the_seed() {
    let first_port = |seed| {
        let mut w = world(seed, NatConfig::default().with_ports(PortAllocation::Random));
        send(&mut w.sim, w.inside, 0, s1a(), "hi");
        w.sim.run_for(ms(100)).unwrap();
        seen_from(&w.sim, w.s1, 0).port()
    };
    assert_eq!(first_port(7), first_port(7), "same seed, same port");
    let ports: std::collections::BTreeSet<u16> = (0..8).map(first_port).collect();
    assert!(ports.len() > 4, "other seeds, other ports: {ports:?}");
    assert!(ports.iter().all(|p| PortAllocation::Random.range().contains(p)));
}

// --- Hairpinning -------------------------------------------------------------------------

/// Two hosts behind one EIM/EIF NAT learn their external endpoints from s1, then the
/// first sends to the second's. Returns what the second received.
fn hairpin(hairpinning: bool) -> (Vec<(SocketAddr, String)>, SocketAddr, String) {
    let config = NatConfig::new(NatMapping::EndpointIndependent, NatFiltering::EndpointIndependent)
        .with_hairpinning(hairpinning);
    let mut w = world(8, config);
    let spec = HostSpec::new("neighbour", [192, 168, 1, 11].into()).realm(w.lan);
    let neighbour = w.sim.add_host_with(spec, probe).unwrap();
    w.sim.bind_udp(neighbour, SocketId(0), 4000).unwrap();
    send(&mut w.sim, w.inside, 0, s1a(), "inside");
    send(&mut w.sim, neighbour, 0, s1a(), "neighbour");
    w.sim.run_for(ms(100)).unwrap();
    let seen = datagrams(&w.sim, w.s1, 0);
    let (inside_external, neighbour_external) = (seen[0].0, seen[1].0);
    send(&mut w.sim, w.inside, 0, neighbour_external, "via the public address");
    w.sim.run_for(ms(100)).unwrap();
    (datagrams(&w.sim, neighbour, 0), inside_external, w.sim.trace_tail())
}

#[test]
fn hairpinning_delivers_with_the_senders_external_endpoint() {
    let (got, inside_external, _) = hairpin(true);
    assert_eq!(got, [(inside_external, "via the public address".to_owned())]);
}

#[test]
fn without_hairpinning_a_packet_to_the_nats_own_address_is_dropped() {
    let (got, _, trace) = hairpin(false);
    assert!(got.is_empty(), "{got:?}");
    assert!(
        trace.contains("nat: net datagram from 192.168.1.10:4000 to 203.0.113.1:20001 dropped by NAT: hairpinning off")
    );
}

// --- The mapping cap ---------------------------------------------------------------------

#[test]
fn a_full_mapping_table_drops_new_mappings_and_keeps_the_old_ones() {
    let config =
        NatConfig::new(NatMapping::EndpointIndependent, NatFiltering::EndpointIndependent).with_max_mappings(3);
    let mut w = world(9, config);
    for socket in 1..4 {
        w.sim.bind_udp(w.inside, SocketId(socket), 4000 + socket).unwrap();
    }
    let names = ["0", "1", "2", "3"];
    for socket in 0..4 {
        send(&mut w.sim, w.inside, socket, s1a(), names[usize::from(socket)]);
    }
    w.sim.run_for(ms(100)).unwrap();
    let seen = datagrams(&w.sim, w.s1, 0);
    assert_eq!(seen.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["0", "1", "2"]);
    assert!(w.sim.trace_tail().contains("to 198.51.100.1:5000 dropped by NAT: mapping table full"));
    assert_eq!(w.sim.nat_mappings(w.lan), 3);

    for (i, (external, _)) in seen.iter().enumerate() {
        send(&mut w.sim, w.s1, 0, *external, names[i]);
    }
    send(&mut w.sim, w.inside, 0, s1a(), "0 again");
    w.sim.run_for(ms(100)).unwrap();
    for socket in 0..3 {
        assert_eq!(payloads(&w.sim, w.inside, socket), [names[usize::from(socket)]]);
    }
    assert_eq!(payloads(&w.sim, w.s1, 0).last().map(String::as_str), Some("0 again"));
}

// --- Links, partitions, two NATs ---------------------------------------------------------

#[test]
fn traffic_through_a_nat_takes_the_nats_link_and_meets_its_partitions() {
    let mut w = world(10, NatConfig::default());
    let (nat, s1) = (w.nat, w.s1);
    w.sim.set_link(nat, s1, LinkConfig::new(ms(50), Duration::ZERO));
    w.sim.partition(nat, s1, Cut::BothWays);
    send(&mut w.sim, w.inside, 0, s1a(), "cut");
    w.sim.run_for(ms(100)).unwrap();
    assert!(datagrams(&w.sim, s1, 0).is_empty());
    w.sim.heal_all();
    let sent_at = w.sim.now();
    send(&mut w.sim, w.inside, 0, s1a(), "healed");
    w.sim.run_for(ms(100)).unwrap();
    let (at, _) = w.sim.events::<ProbeEvent>(s1).last().unwrap();
    assert_eq!(at, sent_at + ms(50), "the NAT's link to s1, not the default");
}

#[test]
fn two_peers_behind_port_restricted_nats_punch_through_by_sending_at_once() {
    let mut sim = Sim::new(11, NetConfig { trace_tail: 1000, ..net(20) });
    let lan_a = sim.add_nat("nat-a", [203, 0, 113, 1].into(), NatConfig::default()).unwrap();
    let lan_b = sim.add_nat("nat-b", [203, 0, 113, 2].into(), NatConfig::default()).unwrap();
    // Overlapping private addresses, as two home LANs have.
    let a = sim.add_host_with(HostSpec::new("a", [192, 168, 1, 10].into()).realm(lan_a), probe).unwrap();
    let b = sim.add_host_with(HostSpec::new("b", [192, 168, 1, 10].into()).realm(lan_b), probe).unwrap();
    let server = sim.add_host("server", [198, 51, 100, 1].into(), probe).unwrap();
    let rendezvous = sim.bind_udp(server, SocketId(0), 3478).unwrap();
    for host in [a, b] {
        sim.bind_udp(host, SocketId(0), 4000).unwrap();
        send(&mut sim, host, 0, rendezvous, "where am I");
    }
    sim.run_for(ms(100)).unwrap();
    let seen = datagrams(&sim, server, 0);
    let (ea, eb) = (seen[0].0, seen[1].0);
    assert_eq!((ea.ip(), eb.ip()), ([203, 0, 113, 1].into(), [203, 0, 113, 2].into()));

    // Alone, a's packet meets b's filter: b has not sent to a.
    send_at(&mut sim, at_ms(500), a, 0, eb, "lone");
    // At once: a's packet leaves before b's, and still gets in, because nat-b checks it on
    // arrival, 20 ms later, after b's packet to a has opened the way.
    sim.schedule(at_ms(1000), move |sim| {
        send(sim, a, 0, eb, "from a");
        send(sim, b, 0, ea, "from b");
    });
    sim.run_until(at_ms(1100)).unwrap();
    assert!(sim.trace_tail().contains(&format!("nat-b: net datagram from {ea} to {eb} dropped by NAT: filtered")));
    assert_eq!(datagrams(&sim, b, 0), [(ea, "from a".to_owned())]);
    assert_eq!(datagrams(&sim, a, 0), [(eb, "from b".to_owned())]);
}

#[test]
fn the_same_seed_gives_the_same_trace_through_nats() {
    let run = |seed| {
        let link = LinkConfig::new(ms(10), ms(10)).with_datagram_faults(0.1, 0.1, 0.1);
        let mut sim = Sim::new(seed, NetConfig { link, ..NetConfig::default() });
        let config = NatConfig::default().with_ports(PortAllocation::Random).with_timeout(Duration::from_secs(1));
        let lan = sim.add_nat("nat", NAT_IP.into(), config).unwrap();
        let inside = sim.add_host_with(HostSpec::new("inside", [192, 168, 1, 10].into()).realm(lan), probe).unwrap();
        let server = sim.add_host("server", s1a().ip(), probe).unwrap();
        let to = sim.bind_udp(server, SocketId(0), s1a().port()).unwrap();
        for socket in 0..5 {
            sim.bind_udp(inside, SocketId(socket), 0).unwrap();
        }
        for i in 0..100u64 {
            let socket = (i % 5) as u16;
            send_at(&mut sim, at_ms(i * 37), inside, socket, to, "tick");
        }
        sim.run_for(Duration::from_secs(5)).unwrap();
        (sim.trace_hash(), datagrams(&sim, server, 0))
    };
    let (hash, seen) = run(12);
    assert_eq!((hash, seen.clone()), run(12));
    assert!(seen.len() > 50, "most datagrams get through: {}", seen.len());
    assert_ne!(hash, run(13).0);
}

// --- Streams -----------------------------------------------------------------------------

#[test]
fn a_stream_from_behind_a_nat_is_seen_from_the_nat_and_holds_its_mapping_while_open() {
    let mut w = world(14, NatConfig::default().with_timeout(Duration::from_secs(10)));
    let (inside, s1) = (w.inside, w.s1);
    let listener = w.sim.listen(s1, ListenerId(0), 80).unwrap();
    let conn = w.sim.with_machine(inside, |p: &mut Probe, _| p.connect(listener)).unwrap();
    w.sim.run_for(ms(100)).unwrap();
    let accepted = w.sim.events::<ProbeEvent>(s1).find_map(|(_, e)| match e {
        ProbeEvent::Accepted { conn: Some(c), peer, .. } => Some((*c, *peer)),
        _ => None,
    });
    let (s1_conn, peer) = accepted.expect("s1 accepted");
    assert_eq!(peer, SocketAddr::new(NAT_IP.into(), 20000));
    let connected = w.sim.events::<ProbeEvent>(inside).any(|(_, e)| {
        matches!(e, ProbeEvent::Connected { conn: c, local } if *c == conn && local.ip() == IpAddr::from([192, 168, 1, 10]))
    });
    assert!(connected, "the initiator sees its private address as local");
    w.sim.with_machine(s1, |p: &mut Probe, _| p.write(s1_conn, "through the NAT")).unwrap();
    w.sim.run_for(ms(100)).unwrap();
    let received = w
        .sim
        .events::<ProbeEvent>(inside)
        .any(|(_, e)| *e == ProbeEvent::Received { conn, bytes: "through the NAT".into() });
    assert!(received);

    // Idle far past the datagram timeout: the open stream keeps its mapping.
    w.sim.run_for(Duration::from_secs(60)).unwrap();
    assert_eq!(w.sim.nat_mappings(w.lan), 1);
    w.sim.with_machine(inside, |p: &mut Probe, _| p.close(conn, CloseHow::Abort)).unwrap();
    w.sim.run_for(Duration::from_secs(9)).unwrap();
    assert_eq!(w.sim.nat_mappings(w.lan), 1, "the timeout starts when the stream is gone");
    w.sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(w.sim.nat_mappings(w.lan), 0);
}

#[test]
fn a_stream_to_a_nats_public_address_times_out() {
    let mut w = world(15, NatConfig::default());
    let (inside, s1) = (w.inside, w.s1);
    w.sim.listen(inside, ListenerId(0), 80).unwrap();
    let conn = w.sim.with_machine(s1, |p: &mut Probe, _| p.connect(SocketAddr::new(NAT_IP.into(), 80))).unwrap();
    w.sim.run_for(Duration::from_secs(5)).unwrap();
    let failed = w.sim.events::<ProbeEvent>(s1).find(|(_, e)| matches!(e, ProbeEvent::ConnectFailed { .. }));
    let timeout = StreamConfig::default().connect_timeout;
    assert_eq!(failed, Some((Instant::ZERO + timeout, &ProbeEvent::ConnectFailed { conn, error: NetError::TimedOut })));
    assert!(w.sim.events::<ProbeEvent>(inside).next().is_none(), "nothing reached the host behind the NAT");
    assert!(w
        .sim
        .trace_tail()
        .contains("nat: net stream 0 SYN from 198.51.100.1:49152 dropped by NAT: inbound streams are not forwarded"));
    assert_eq!(w.sim.open_streams(), 0);
}

#[test]
fn a_nat_box_is_a_host_whose_address_public_hosts_cannot_take() {
    let mut w = world(16, NatConfig::default());
    let clash = w.sim.add_host("clash", NAT_IP.into(), probe);
    assert!(matches!(clash, Err(ConfigError::AddressInUse { .. })), "{clash:?}");
    let again = w.sim.add_nat("other-nat", s1a().ip(), NatConfig::default());
    assert!(matches!(again, Err(ConfigError::AddressInUse { .. })), "{again:?}");
    assert_eq!(w.sim.ip(w.nat), IpAddr::from(NAT_IP));
    w.sim.crash(w.nat);
    assert!(w.sim.is_up(w.nat), "NAT boxes do not crash");
    assert_eq!(NatConfig::default().to_string(), "EIM/APDF");
}
