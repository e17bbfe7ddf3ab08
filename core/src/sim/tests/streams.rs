//! Stream connections: handshake timing, ordering, closes and back-pressure.

use super::*;

#[test]
fn handshake_and_data_each_take_one_one_way_latency() {
    let mut p = pair(1, net(10));
    let addr = p.addr;
    let conn = p.probe(p.a, |probe| probe.connect(addr));
    p.sim.run_until(at_ms(100)).unwrap();
    let (accepted_at, accepted) = p.first(p.b, |e| matches!(e, ProbeEvent::Accepted { .. })).unwrap();
    assert_eq!(accepted_at, at_ms(10), "the SYN takes one one-way latency");
    let ProbeEvent::Accepted { conn: Some(b_conn), peer, .. } = accepted else { panic!("{accepted:?}") };
    assert_eq!(peer, "10.0.0.1:49152".parse().unwrap());
    let (connected_at, _) = p.first(p.a, |e| matches!(e, ProbeEvent::Connected { .. })).unwrap();
    assert_eq!(connected_at, at_ms(20), "Connected comes back one more latency later");

    p.probe(p.a, |probe| probe.write(conn, "ping"));
    p.sim.run_until(at_ms(200)).unwrap();
    let (received_at, _) = p.first(p.b, |e| matches!(e, ProbeEvent::Received { .. })).unwrap();
    assert_eq!(received_at, at_ms(110));
    assert_eq!(p.received(p.b, b_conn), b"ping");
    // Sent is reported as the bytes enter the window, at the time of the write.
    let (sent_at, _) = p.first(p.a, |e| matches!(e, ProbeEvent::Sent { .. })).unwrap();
    assert_eq!(sent_at, at_ms(100));
    assert_eq!(p.sent(p.a, conn), 4);
}

#[test]
fn jitter_delays_segments_but_never_reorders_them() {
    let config = NetConfig { link: LinkConfig::new(ms(5), ms(50)), ..NetConfig::default() };
    let mut p = pair(2, config);
    let (a_conn, b_conn) = p.connect();
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let chunk = format!("<{i}>");
        expected.extend_from_slice(chunk.as_bytes());
        let a = p.a;
        p.sim.schedule(p.sim.now() + ms(u64::from(i)), move |sim| {
            sim.with_machine(a, |probe: &mut Probe, _| probe.write(a_conn, chunk)).unwrap();
        });
    }
    p.sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(p.received(p.b, b_conn), expected, "bytes arrive complete and in order");
    let times: Vec<Instant> =
        p.events(p.b).into_iter().filter(|(_, e)| matches!(e, ProbeEvent::Received { .. })).map(|(t, _)| t).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    let distinct: std::collections::BTreeSet<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(distinct.len() > 10, "jitter should spread the arrivals: {distinct:?}");
}

#[test]
fn big_writes_arrive_as_several_segments() {
    let config = NetConfig { stream: StreamConfig { max_segment: 1000, ..StreamConfig::default() }, ..net(1) };
    let mut p = pair(3, config);
    let (a_conn, b_conn) = p.connect();
    p.probe(p.a, |probe| probe.write(a_conn, payload(4500)));
    p.sim.run_for(ms(100)).unwrap();
    let sizes: Vec<usize> = p
        .events(p.b)
        .into_iter()
        .filter_map(|(_, e)| match e {
            ProbeEvent::Received { bytes, .. } => Some(bytes.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [1000, 1000, 1000, 1000, 500]);
    assert_eq!(p.received(p.b, b_conn), payload(4500));
}

#[test]
fn connect_failures_refused_unreachable_and_timed_out() {
    let mut p = pair(4, net(10));
    let refused = p.probe(p.a, |probe| probe.connect("10.0.0.2:81".parse().unwrap()));
    let unreachable = p.probe(p.a, |probe| probe.connect("10.9.9.9:80".parse().unwrap()));
    p.sim.crash(p.b);
    let addr = p.addr;
    let timed_out = p.probe(p.a, |probe| probe.connect(addr));
    p.sim.run_for(Duration::from_secs(10)).unwrap();
    let failure = |p: &Pair, conn| {
        p.first(p.a, |e| matches!(e, ProbeEvent::ConnectFailed { conn: c, .. } if *c == conn)).unwrap()
    };
    assert_eq!(
        failure(&p, unreachable),
        (at_ms(0), ProbeEvent::ConnectFailed { conn: unreachable, error: NetError::Unreachable })
    );
    // Port 81 on b: the SYN was still in flight when b went down, so it times out as well;
    // refusal needs an up host with no listener.
    assert_eq!(failure(&p, refused).1, ProbeEvent::ConnectFailed { conn: refused, error: NetError::TimedOut });
    assert_eq!(
        failure(&p, timed_out),
        (at_ms(3000), ProbeEvent::ConnectFailed { conn: timed_out, error: NetError::TimedOut })
    );

    p.sim.restart(p.b);
    let refused = p.probe(p.a, |probe| probe.connect("10.0.0.2:81".parse().unwrap()));
    let start = p.sim.now();
    p.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(
        failure(&p, refused),
        (start + ms(20), ProbeEvent::ConnectFailed { conn: refused, error: NetError::Refused })
    );
    assert_eq!(p.sim.open_streams(), 0, "failed attempts leave nothing behind");
}

#[test]
fn a_refused_accept_is_connected_then_reset() {
    let mut p = pair(5, net(10));
    p.probe(p.b, |probe| probe.refuse_accepts(true));
    let addr = p.addr;
    let conn = p.probe(p.a, |probe| probe.connect(addr));
    p.sim.run_for(ms(100)).unwrap();
    let seen = p.events(p.a);
    assert_eq!(
        seen,
        [
            (at_ms(20), ProbeEvent::Connected { conn, local: "10.0.0.1:49152".parse().unwrap() }),
            (at_ms(20), ProbeEvent::Closed { conn, reason: NetError::Reset }),
        ]
    );
    assert_eq!(p.sim.open_streams(), 0);
}

#[test]
fn half_close_delivers_read_closed_after_the_data_and_the_other_way_stays_open() {
    let mut p = pair(6, net(10));
    let (a_conn, b_conn) = p.connect();
    p.probe(p.a, |probe| {
        probe.write(a_conn, "last words");
        probe.close(a_conn, CloseHow::HalfClose);
    });
    p.sim.run_for(ms(100)).unwrap();
    let tail: Vec<_> = p.events(p.b).into_iter().map(|(_, e)| e).skip(1).collect();
    assert_eq!(
        tail,
        [ProbeEvent::Received { conn: b_conn, bytes: "last words".into() }, ProbeEvent::ReadClosed { conn: b_conn }]
    );
    // b can still answer on its open half, then half-closes too: the connection is done.
    p.probe(p.b, |probe| {
        probe.write(b_conn, "reply");
        probe.close(b_conn, CloseHow::HalfClose);
    });
    p.sim.run_for(ms(100)).unwrap();
    assert_eq!(p.received(p.a, a_conn), b"reply");
    assert!(p.events(p.a).iter().any(|(_, e)| *e == ProbeEvent::ReadClosed { conn: a_conn }));
    assert_eq!(p.sim.open_streams(), 0, "both halves shut: both ends released");
}

#[test]
fn graceful_close_flushes_then_writes_to_the_dead_end_are_reset() {
    let mut p = pair(7, net(10));
    let (a_conn, b_conn) = p.connect();
    p.probe(p.a, |probe| {
        probe.write(a_conn, "bye");
        probe.close(a_conn, CloseHow::Graceful);
    });
    p.sim.run_for(ms(100)).unwrap();
    assert_eq!(p.received(p.b, b_conn), b"bye");
    assert!(p.events(p.b).iter().any(|(_, e)| *e == ProbeEvent::ReadClosed { conn: b_conn }));
    let a_events = p.events(p.a).len();
    p.probe(p.b, |probe| probe.write(b_conn, "too late"));
    p.sim.run_for(ms(100)).unwrap();
    assert_eq!(p.events(p.a).len(), a_events, "a gracefully closed id hears nothing more");
    assert!(p.events(p.b).iter().any(|(_, e)| *e == ProbeEvent::Closed { conn: b_conn, reason: NetError::Reset }));
    assert_eq!(p.sim.open_streams(), 0);
}

#[test]
fn abort_drops_the_queue_and_resets_the_peer() {
    let config = NetConfig { stream: StreamConfig { window: 100, ..StreamConfig::default() }, ..net(10) };
    let mut p = pair(8, config);
    let (a_conn, b_conn) = p.connect();
    p.probe(p.a, |probe| {
        probe.write(a_conn, payload(1000));
        probe.close(a_conn, CloseHow::Abort);
    });
    p.sim.run_for(ms(100)).unwrap();
    assert_eq!(p.received(p.b, b_conn), payload(100).to_vec(), "only the bytes already on the wire arrive");
    let last = p.events(p.b).pop().unwrap().1;
    assert_eq!(last, ProbeEvent::Closed { conn: b_conn, reason: NetError::Reset });
    assert_eq!(p.sim.open_streams(), 0);
}

#[test]
fn pause_holds_bytes_and_sent_follows_the_window() {
    let config = NetConfig { stream: StreamConfig { window: 1000, ..StreamConfig::default() }, ..net(10) };
    let mut p = pair(9, config);
    p.probe(p.b, |probe| probe.pause_new_connections(true));
    let (a_conn, b_conn) = p.connect();
    p.probe(p.a, |probe| probe.write(a_conn, payload(3000)));
    p.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(p.received(p.b, b_conn), b"", "a paused reader gets nothing");
    assert_eq!(p.sent(p.a, a_conn), 1000, "only a window's worth left the sender's queue");
    assert_eq!(p.sim.buffered_bytes(), 3000);

    p.probe(p.b, |probe| probe.resume(b_conn));
    p.sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(p.received(p.b, b_conn), payload(3000).to_vec());
    assert_eq!(p.sent(p.a, a_conn), 3000, "Sent reported as acknowledgements freed the window");
    assert_eq!(p.sim.buffered_bytes(), 0);
}

#[test]
fn a_sender_queue_past_its_cap_is_a_slow_peer() {
    let stream = StreamConfig { window: 1000, send_queue_cap: 2000, ..StreamConfig::default() };
    let mut p = pair(10, NetConfig { stream, ..net(10) });
    p.probe(p.b, |probe| probe.pause_new_connections(true));
    let (a_conn, b_conn) = p.connect();
    p.probe(p.a, |probe| probe.write(a_conn, payload(2500)));
    p.sim.run_for(ms(100)).unwrap();
    assert!(p.first(p.a, |e| matches!(e, ProbeEvent::Closed { .. })).is_none(), "1500 queued: under the cap");
    p.probe(p.a, |probe| probe.write(a_conn, payload(600)));
    p.sim.run_for(ms(100)).unwrap();
    assert!(p.events(p.a).iter().any(|(_, e)| *e == ProbeEvent::Closed { conn: a_conn, reason: NetError::SlowPeer }));
    assert!(p.events(p.b).iter().any(|(_, e)| *e == ProbeEvent::Closed { conn: b_conn, reason: NetError::Reset }));
    assert_eq!(p.sim.open_streams(), 0);
    assert_eq!(p.sim.buffered_bytes(), 0);
}

#[test]
fn a_graceful_close_that_cannot_flush_is_reset_at_the_bound() {
    let stream = StreamConfig { window: 1000, flush_timeout: Duration::from_secs(5), ..StreamConfig::default() };
    let mut p = pair(11, NetConfig { stream, ..net(10) });
    p.probe(p.b, |probe| probe.pause_new_connections(true));
    let (a_conn, b_conn) = p.connect();
    let closed_at = p.sim.now();
    p.probe(p.a, |probe| {
        probe.write(a_conn, payload(5000));
        probe.close(a_conn, CloseHow::Graceful);
    });
    p.sim.run_for(Duration::from_secs(10)).unwrap();
    let (at, event) = p.first(p.b, |e| matches!(e, ProbeEvent::Closed { .. })).unwrap();
    assert_eq!(event, ProbeEvent::Closed { conn: b_conn, reason: NetError::Reset });
    assert_eq!(at, closed_at + Duration::from_secs(5) + ms(10));
    assert_eq!(p.sim.open_streams(), 0);
}

#[test]
fn loopback_connections_reach_the_same_host() {
    let mut p = pair(12, net(10));
    let b = p.b;
    let conn = p.probe(b, |probe| probe.connect("127.0.0.1:80".parse().unwrap()));
    p.sim.run_for(ms(100)).unwrap();
    let accepted = p.first(b, |e| matches!(e, ProbeEvent::Accepted { .. })).unwrap().1;
    assert!(matches!(accepted, ProbeEvent::Accepted { peer, .. } if peer.ip().is_loopback()));
    assert!(p.events(b).iter().any(|(_, e)| matches!(e, ProbeEvent::Connected { conn: c, .. } if *c == conn)));
}

#[test]
fn a_machine_opens_and_closes_listeners_at_run_time() {
    let mut p = pair(9, net(5));
    let wild: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    p.probe(p.b, |probe| probe.listen(ListenerId(7), wild));
    // The port the configuration already holds, and an address the host does not have.
    p.probe(p.b, |probe| probe.listen(ListenerId(8), "0.0.0.0:80".parse().unwrap()));
    p.probe(p.b, |probe| probe.listen(ListenerId(9), "10.9.9.9:81".parse().unwrap()));
    p.sim.run_for(ms(1)).unwrap();
    let listened: Vec<_> = p
        .events(p.b)
        .into_iter()
        .filter_map(|(_, e)| match e {
            ProbeEvent::Listened { listener, result } => Some((listener, result.is_ok())),
            _ => None,
        })
        .collect();
    assert_eq!(listened, [(ListenerId(7), true), (ListenerId(8), false), (ListenerId(9), false)]);
    let ProbeEvent::Listened { result: Ok(bound), .. } =
        p.first(p.b, |e| matches!(e, ProbeEvent::Listened { listener: ListenerId(7), .. })).unwrap().1
    else {
        panic!("listener 7 was not bound")
    };
    assert_eq!(bound, "10.0.0.2:8080".parse().unwrap());

    let conn = p.probe(p.a, |probe| probe.connect(bound));
    p.sim.run_for(ms(100)).unwrap();
    assert!(p
        .first(p.b, |e| matches!(e, ProbeEvent::Accepted { listener: ListenerId(7), conn: Some(_), .. }))
        .is_some());
    assert!(p.first(p.a, |e| matches!(e, ProbeEvent::Connected { conn: c, .. } if *c == conn)).is_some());

    // Closed: the next connect is refused, and the open connection carries on.
    p.probe(p.b, |probe| probe.unlisten(ListenerId(7)));
    p.probe(p.a, |probe| probe.write(conn, "still here"));
    let second = p.probe(p.a, |probe| probe.connect(bound));
    p.sim.run_for(ms(100)).unwrap();
    assert!(p
        .first(p.a, |e| matches!(e, ProbeEvent::ConnectFailed { conn: c, error: NetError::Refused } if *c == second))
        .is_some());
    let accepted = p.events(p.b).iter().filter(|(_, e)| matches!(e, ProbeEvent::Accepted { .. })).count();
    assert_eq!(accepted, 1);
    assert!(p
        .events(p.b)
        .iter()
        .any(|(_, e)| matches!(e, ProbeEvent::Received { bytes, .. } if &bytes[..] == b"still here")));

    // A machine's listener ends with its life; the configured one is back after a restart.
    p.probe(p.b, |probe| probe.listen(ListenerId(10), wild));
    p.sim.run_for(ms(1)).unwrap();
    p.sim.crash(p.b);
    p.sim.restart(p.b);
    let third = p.probe(p.a, |probe| probe.connect(bound));
    let configured = p.addr;
    let fourth = p.probe(p.a, |probe| probe.connect(configured));
    p.sim.run_for(ms(100)).unwrap();
    assert!(p
        .first(p.a, |e| matches!(e, ProbeEvent::ConnectFailed { conn: c, error: NetError::Refused } if *c == third))
        .is_some());
    assert!(p.first(p.a, |e| matches!(e, ProbeEvent::Connected { conn: c, .. } if *c == fourth)).is_some());
}
