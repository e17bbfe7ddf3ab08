//! Partitions, crashes, restarts, the step limit and contract violations.

use super::*;

#[test]
fn a_two_way_partition_holds_stream_data_until_it_heals() {
    let mut p = pair(20, net(10));
    let (a_conn, b_conn) = p.connect();
    let (a, b) = (p.a, p.b);
    p.sim.partition(a, b, Cut::BothWays);
    p.probe(a, |probe| probe.write(a_conn, "held"));
    p.sim.run_for(Duration::from_secs(5)).unwrap();
    assert_eq!(p.received(b, b_conn), b"", "nothing crosses a partition");
    p.probe(a, |probe| probe.write(a_conn, " then more"));
    let healed_at = p.sim.now();
    p.sim.heal(a, b, Cut::BothWays);
    p.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(p.received(b, b_conn), b"held then more", "retransmitted in order after the heal");
    let (at, _) = p.first(b, |e| matches!(e, ProbeEvent::Received { .. })).unwrap();
    assert_eq!(at, healed_at + ms(10));
    assert!(p.first(a, |e| matches!(e, ProbeEvent::Closed { .. })).is_none());
}

#[test]
fn a_one_way_partition_blocks_only_its_direction() {
    let mut p = pair(21, net(10));
    let (a_conn, b_conn) = p.connect();
    let (a, b) = (p.a, p.b);
    let a_udp = p.sim.bind_udp(a, SocketId(1), 5000).unwrap();
    let b_udp = p.sim.bind_udp(b, SocketId(2), 5000).unwrap();
    p.sim.partition(a, b, Cut::OneWay);
    p.probe(a, |probe| {
        probe.write(a_conn, "a->b");
        probe.transmit(SocketId(1), b_udp, "dgram a->b");
    });
    p.probe(b, |probe| {
        probe.write(b_conn, "b->a");
        probe.transmit(SocketId(2), a_udp, "dgram b->a");
    });
    p.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(p.received(a, a_conn), b"b->a");
    assert_eq!(p.received(b, b_conn), b"");
    let datagram = |p: &Pair, host| p.events(host).into_iter().any(|(_, e)| matches!(e, ProbeEvent::Datagram { .. }));
    assert!(datagram(&p, a), "b->a is open");
    assert!(!datagram(&p, b), "a->b datagrams are dropped, not held");
    p.sim.heal(a, b, Cut::OneWay);
    p.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(p.received(b, b_conn), b"a->b");
    assert!(!datagram(&p, b), "a dropped datagram stays dropped");
}

#[test]
fn a_partition_outlasting_the_timeout_closes_both_ends_with_timed_out() {
    let stream = StreamConfig { partition_timeout: Some(Duration::from_secs(20)), ..StreamConfig::default() };
    let mut p = pair(22, NetConfig { stream, ..net(10) });
    let (a_conn, b_conn) = p.connect();
    let (a, b) = (p.a, p.b);
    p.sim.partition(a, b, Cut::BothWays);
    let written_at = p.sim.now();
    p.probe(a, |probe| probe.write(a_conn, "stuck"));
    p.sim.run_for(Duration::from_secs(60)).unwrap();
    let deadline = written_at + ms(10) + Duration::from_secs(20);
    assert_eq!(
        p.first(a, |e| matches!(e, ProbeEvent::Closed { .. })),
        Some((deadline, ProbeEvent::Closed { conn: a_conn, reason: NetError::TimedOut }))
    );
    assert_eq!(
        p.first(b, |e| matches!(e, ProbeEvent::Closed { .. })),
        Some((deadline, ProbeEvent::Closed { conn: b_conn, reason: NetError::TimedOut }))
    );
    assert_eq!(p.sim.open_streams(), 0);
}

#[test]
fn crash_resets_peers_and_restart_brings_the_listener_back() {
    let mut p = pair(23, net(10));
    let (a_conn, _) = p.connect();
    let (a, b) = (p.a, p.b);
    let crashed_at = p.sim.now();
    p.sim.crash(b);
    assert!(!p.sim.is_up(b));
    assert!(p.sim.with_machine(b, |_: &mut Probe, _| ()).is_err(), "no machine while down");
    p.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(
        p.first(a, |e| matches!(e, ProbeEvent::Closed { .. })),
        Some((crashed_at + ms(10), ProbeEvent::Closed { conn: a_conn, reason: NetError::Reset }))
    );
    p.sim.restart(b);
    let (second, b_second) = p.connect();
    assert_ne!(second, a_conn);
    p.probe(a, |probe| probe.write(second, "again"));
    p.sim.run_for(ms(100)).unwrap();
    assert_eq!(p.received(b, b_second), b"again");
    let accepts = p.events(b).iter().filter(|(_, e)| matches!(e, ProbeEvent::Accepted { .. })).count();
    assert_eq!(accepts, 2, "the event log spans both lives");
}

#[test]
fn a_crash_reset_held_by_a_partition_arrives_after_the_heal_and_the_new_life_sees_nothing() {
    let mut p = pair(24, net(10));
    let (a_conn, _) = p.connect();
    let (a, b) = (p.a, p.b);
    // The crash's reset to a meets a partition; a writes to b, which restarted meanwhile.
    p.sim.partition(b, a, Cut::OneWay);
    p.sim.crash(b);
    p.sim.restart(b);
    p.probe(a, |probe| probe.write(a_conn, "anyone?"));
    p.sim.run_for(ms(100)).unwrap();
    assert!(p.first(a, |e| matches!(e, ProbeEvent::Closed { .. })).is_none());
    p.sim.heal(b, a, Cut::OneWay);
    p.sim.run_for(ms(100)).unwrap();
    assert_eq!(
        p.first(a, |e| matches!(e, ProbeEvent::Closed { .. })).unwrap().1,
        ProbeEvent::Closed { conn: a_conn, reason: NetError::Reset }
    );
    assert!(
        !p.events(b).iter().any(|(_, e)| matches!(e, ProbeEvent::Received { .. })),
        "the new machine never sees it"
    );
}

/// A machine whose deadline is always in the past and never moves: a livelock.
struct Spinner;

impl Machine for Spinner {
    type Event = ();
    fn accept(&mut self, _: Instant, l: ListenerId, _: SocketAddr) -> Result<ConnId, crate::Refusal> {
        Err(crate::Refusal::UnknownListener(l))
    }
    fn handle_input(&mut self, _: Instant, _: Input<'_>) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<()>> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(Instant::ZERO)
    }
}

#[test]
fn the_step_limit_turns_a_livelock_into_an_error() {
    let mut sim = Sim::new(25, NetConfig { max_steps: 1000, ..NetConfig::default() });
    sim.add_host("spinner", [10, 0, 0, 1].into(), |_, _| Spinner).unwrap();
    let error = sim.run_for(Duration::from_secs(1)).unwrap_err();
    assert_eq!(error, SimError::StepLimit { steps: 1000, at: Instant::ZERO });
    assert_eq!(sim.run_for(Duration::from_secs(1)), Err(error), "the limit is sticky");
    assert!(sim.trace_tail().contains("spinner: timeout"));
}

#[test]
fn a_contract_violation_stops_the_run_with_the_culprit() {
    let mut p = pair(26, net(10));
    p.probe(p.a, |probe| probe.transmit(SocketId(9), "10.0.0.2:1".parse().unwrap(), "x"));
    let error = p.sim.run_for(ms(10)).unwrap_err();
    assert!(matches!(&error, SimError::Contract { host, .. } if host == "a"), "{error}");
    assert!(error.to_string().contains("SocketId(9)"), "{error}");
}

#[test]
fn setup_mistakes_are_typed_errors() {
    let mut p = pair(27, net(1));
    let again = p.sim.add_host("a", [10, 0, 0, 9].into(), |env, _| Probe::new(env));
    assert_eq!(again.err(), Some(ConfigError::NameInUse("a".into())));
    let taken = p.sim.add_host("c", [10, 0, 0, 1].into(), |env, _| Probe::new(env));
    assert!(matches!(taken, Err(ConfigError::AddressInUse { .. })));
    assert!(matches!(p.sim.listen(p.b, ListenerId(1), 80), Err(ConfigError::PortInUse { port: 80, .. })));
    // The same address is free in another realm: private address spaces overlap.
    let lan = p.sim.add_realm("lan");
    let spec = HostSpec::new("c", [10, 0, 0, 1].into()).realm(lan);
    assert!(p.sim.add_host_with(spec, |env, _| Probe::new(env)).is_ok());
}

#[test]
fn realms_are_separate_address_spaces() {
    let mut sim = Sim::new(28, net(1));
    let lan = sim.add_realm("lan");
    let public = sim.add_host("public", [10, 0, 0, 1].into(), |env, _| Probe::new(env)).unwrap();
    let private =
        sim.add_host_with(HostSpec::new("private", [10, 0, 0, 2].into()).realm(lan), |env, _| Probe::new(env)).unwrap();
    sim.listen(private, ListenerId(0), 80).unwrap();
    let conn = sim.with_machine(public, |p: &mut Probe, _| p.connect("10.0.0.2:80".parse().unwrap())).unwrap();
    sim.run_for(ms(10)).unwrap();
    let failed = sim
        .events::<ProbeEvent>(public)
        .any(|(_, e)| *e == ProbeEvent::ConnectFailed { conn, error: NetError::Unreachable });
    assert!(failed, "no route from the public realm into a realm without a NAT");
}

#[test]
fn a_host_added_down_boots_on_restart_with_a_fresh_machine() {
    let mut sim = Sim::new(29, net(1));
    let h = sim.add_host_with(HostSpec::new("late", [10, 0, 0, 1].into()).down(), |env, _| Probe::new(env)).unwrap();
    assert!(!sim.is_up(h));
    sim.schedule(at_ms(500), move |sim| sim.restart(h));
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert!(sim.is_up(h));
    assert!(sim.trace_tail().contains("0.500000s late: boot"));
}
