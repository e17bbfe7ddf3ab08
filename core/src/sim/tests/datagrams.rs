//! Datagrams: delivery, observed addresses, and seed-determined faults.

use super::*;

/// Sends `count` numbered datagrams from a to b, one per millisecond, and returns the
/// numbers b received in arrival order.
fn numbered_run(seed: u64, link: LinkConfig, count: u32) -> Vec<u32> {
    let mut p = pair(seed, NetConfig { link, ..NetConfig::default() });
    let (a, b) = (p.a, p.b);
    p.sim.bind_udp(a, SocketId(0), 0).unwrap();
    let to = p.sim.bind_udp(b, SocketId(0), 9000).unwrap();
    for i in 0..count {
        p.sim.schedule(at_ms(u64::from(i)), move |sim| {
            sim.with_machine(a, |probe: &mut Probe, _| probe.transmit(SocketId(0), to, i.to_be_bytes().to_vec()))
                .unwrap();
        });
    }
    p.sim.run_for(Duration::from_secs(10)).unwrap();
    p.events(b)
        .into_iter()
        .filter_map(|(_, e)| match e {
            ProbeEvent::Datagram { bytes, .. } => Some(u32::from_be_bytes(bytes[..].try_into().unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn loss_duplication_and_reordering_follow_the_seed_and_their_rates() {
    let link = LinkConfig::new(ms(20), Duration::ZERO).with_datagram_faults(0.2, 0.1, 0.3);
    let count = 2000;
    let run = numbered_run(30, link.clone(), count);
    assert_eq!(run, numbered_run(30, link.clone(), count), "same seed, same fates");
    assert_ne!(run, numbered_run(31, link, count), "another seed, other fates");

    let distinct: std::collections::BTreeSet<u32> = run.iter().copied().collect();
    let lost = f64::from(count - distinct.len() as u32) / f64::from(count);
    let duplicated = (run.len() - distinct.len()) as f64 / distinct.len() as f64;
    let overtaken = run.windows(2).filter(|w| w[1] < w[0]).count();
    assert!((0.16..0.24).contains(&lost), "loss rate {lost}");
    assert!((0.07..0.13).contains(&duplicated), "duplication rate {duplicated}");
    assert!(overtaken > 100, "reordering: only {overtaken} inversions");
}

#[test]
fn a_perfect_link_delivers_every_datagram_once_in_order() {
    let run = numbered_run(32, LinkConfig::new(ms(5), Duration::ZERO), 100);
    assert_eq!(run, (0..100).collect::<Vec<_>>());
}

#[test]
fn jitter_alone_reorders_datagrams() {
    let run = numbered_run(33, LinkConfig::new(ms(5), ms(30)), 200);
    assert_eq!(run.len(), 200);
    assert!(run.windows(2).any(|w| w[1] < w[0]));
}

#[test]
fn the_receiver_sees_the_source_address_and_unbound_ports_or_down_hosts_drop() {
    let mut p = pair(34, net(5));
    let (a, b) = (p.a, p.b);
    let from = p.sim.bind_udp(a, SocketId(3), 4000).unwrap();
    let to = p.sim.bind_udp(b, SocketId(4), 4001).unwrap();
    p.probe(a, |probe| {
        probe.transmit(SocketId(3), to, "hello");
        probe.transmit(SocketId(3), "10.0.0.2:4999".parse().unwrap(), "nobody");
    });
    p.sim.run_for(ms(100)).unwrap();
    let datagrams: Vec<_> = p.events(b).into_iter().filter(|(_, e)| matches!(e, ProbeEvent::Datagram { .. })).collect();
    assert_eq!(datagrams, [(at_ms(5), ProbeEvent::Datagram { socket: SocketId(4), from, bytes: "hello".into() })]);
    assert!(p.sim.trace_tail().contains("dropped: no socket"));

    p.sim.crash(b);
    p.probe(a, |probe| probe.transmit(SocketId(3), to, "into the void"));
    p.sim.run_for(ms(100)).unwrap();
    p.sim.restart(b);
    p.sim.run_for(ms(100)).unwrap();
    assert_eq!(p.events(b).iter().filter(|(_, e)| matches!(e, ProbeEvent::Datagram { .. })).count(), 1);
    assert!(p.sim.trace_tail().contains("dropped: host down"));
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    let run = |seed| {
        let link = LinkConfig::new(ms(3), ms(7)).with_datagram_faults(0.1, 0.1, 0.1);
        let mut p = pair(seed, NetConfig { link, ..NetConfig::default() });
        let (a_conn, _) = p.connect();
        p.probe(p.a, |probe| probe.write(a_conn, payload(100_000)));
        let (a, b) = (p.a, p.b);
        p.sim.bind_udp(a, SocketId(0), 0).unwrap();
        let to = p.sim.bind_udp(b, SocketId(0), 1).unwrap();
        for i in 0..50u8 {
            p.probe(a, |probe| probe.transmit(SocketId(0), to, vec![i]));
        }
        p.sim.run_for(Duration::from_secs(1)).unwrap();
        (p.sim.trace_hash(), p.sim.trace_records())
    };
    assert_eq!(run(35), run(35));
    assert_ne!(run(35).0, run(36).0);
}
