//! The driver's own guarantees, checked over loopback under both runtimes with a probe
//! machine that reports every input as an event and does what a command tells it.

use bytes::Bytes;
use futures_lite::future;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use switchyard_adapters::{Driver, Running, Runtime, Stats};
use switchyard_core::machine::OutputQueue;
use switchyard_core::{
    CloseHow, ConnId, ConnIds, Input, Instant, ListenerId, Machine, NetError, Output, Refusal, SocketId,
};

/// Generous guard so a broken driver fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Accepted(ConnId),
    Received(ConnId, Vec<u8>),
    ReadClosed(ConnId),
    Closed(ConnId, NetError),
    Datagram(SocketAddr, Vec<u8>),
    Listened(ListenerId, Result<SocketAddr, NetError>),
}

/// Accepts everything, reports every input, and writes or closes when told to.
#[derive(Default)]
struct Probe {
    ids: Option<ConnIds>,
    out: OutputQueue<Seen>,
    sent: usize,
    /// Every wall-clock report: when, and what it read.
    wall_clock: Vec<(Instant, i128)>,
}

impl Probe {
    fn push(&mut self, output: Output<Seen>) {
        self.out.push(output);
    }
}

impl Machine for Probe {
    type Event = Seen;

    fn accept(&mut self, _now: Instant, _listener: ListenerId, _peer: SocketAddr) -> Result<ConnId, Refusal> {
        let conn = self.ids.get_or_insert_with(|| ConnIds::new(0)).next();
        self.out.event(Seen::Accepted(conn));
        Ok(conn)
    }

    fn handle_input(&mut self, _now: Instant, input: Input<'_>) {
        let seen = match input {
            Input::Received { conn, bytes } => Seen::Received(conn, bytes.to_vec()),
            Input::ReadClosed { conn } => Seen::ReadClosed(conn),
            Input::Closed { conn, reason } => Seen::Closed(conn, reason),
            Input::Sent { bytes, .. } => {
                self.sent += bytes;
                return;
            }
            Input::Datagram { socket, from, bytes } => {
                // Echo it back, so the test sees the UDP path both ways.
                self.out.push(Output::Transmit { socket, to: from, bytes: Bytes::copy_from_slice(bytes) });
                Seen::Datagram(from, bytes.to_vec())
            }
            Input::Listened { listener, result } => Seen::Listened(listener, result),
            Input::Connected { .. } | Input::ConnectFailed { .. } => return,
        };
        self.out.event(seen);
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128) {
        self.wall_clock.push((now, unix_micros));
    }

    fn poll_output(&mut self) -> Option<Output<Seen>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

fn start<R: Runtime>(rt: &R, driver: Driver<Probe>) -> (Running<Probe>, SocketAddr) {
    let running = rt
        .block_on(driver.listen(ListenerId(0), "127.0.0.1:0".parse().unwrap()).start(rt.clone()))
        .expect("start the driver");
    let addr = running.local_addr(ListenerId(0)).unwrap();
    (running, addr)
}

/// The next event matching `want`, skipping others; panics after the guard time.
fn wait_for<R: Runtime>(rt: &R, running: &Running<Probe>, what: &str, want: impl Fn(&Seen) -> bool) -> Seen {
    let events = running.events();
    let deadline = rt.now() + GUARD;
    rt.block_on(future::or(
        async {
            loop {
                match events.recv().await {
                    Ok(seen) if want(&seen) => return seen,
                    Ok(_) => continue,
                    Err(_) => panic!("driver stopped while waiting for {what}"),
                }
            }
        },
        async {
            rt.sleep_until(deadline).await;
            panic!("timed out waiting for {what}")
        },
    ))
}

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream.set_write_timeout(Some(GUARD)).unwrap();
    stream
}

fn accepted<R: Runtime>(rt: &R, running: &Running<Probe>) -> ConnId {
    match wait_for(rt, running, "accept", |s| matches!(s, Seen::Accepted(_))) {
        Seen::Accepted(conn) => conn,
        _ => unreachable!(),
    }
}

fn command<R: Runtime>(rt: &R, running: &Running<Probe>, f: impl FnOnce(&mut Probe) + Send + 'static) {
    rt.block_on(running.command(move |m: &mut Probe, _now| f(m))).expect("machine running");
}

/// A peer that never reads gets aborted once its queue passes the cap; the machine hears
/// `SlowPeer`, and a second connection keeps working.
fn slow_peer_is_aborted_alone<R: Runtime>(rt: R) {
    let (running, addr) = start(&rt, Driver::new(Probe::default()).write_queue_cap(1 << 20));
    let _lazy = client(addr);
    let lazy = accepted(&rt, &running);
    let mut busy = client(addr);
    let busy_id = accepted(&rt, &running);

    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    command(&rt, &running, move |m| {
        for _ in 0..(64 << 20) / CHUNK.len() {
            m.push(Output::Write { conn: lazy, bytes: Bytes::from_static(&CHUNK) });
        }
    });
    wait_for(&rt, &running, "the slow peer's close", |s| *s == Seen::Closed(lazy, NetError::SlowPeer));
    let stats = running.stats();
    assert_eq!(stats.slow_peer_closes, 1);
    assert!(stats.queued_write_bytes <= 1 << 20, "queue stays within its cap: {stats:?}");

    busy.write_all(b"still here").unwrap();
    wait_for(&rt, &running, "the busy client's bytes", |s| matches!(s, Seen::Received(c, _) if *c == busy_id));
    command(&rt, &running, move |m| m.push(Output::Write { conn: busy_id, bytes: Bytes::from_static(b"pong") }));
    let mut buf = [0; 4];
    busy.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    running.shutdown();
}

/// `Abort` resets the peer; `Graceful` delivers what was written, then end of stream, even
/// when the peer has sent bytes the machine never read.
fn abort_resets_and_graceful_flushes<R: Runtime>(rt: R) {
    let (running, addr) = start(&rt, Driver::new(Probe::default()));

    let mut a = client(addr);
    let a_id = accepted(&rt, &running);
    command(&rt, &running, move |m| m.push(Output::Close { conn: a_id, how: CloseHow::Abort }));
    let mut buf = [0; 16];
    let err = a.read(&mut buf).expect_err("an aborted connection is reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);

    let mut g = client(addr);
    let g_id = accepted(&rt, &running);
    g.write_all(&[b'u'; 10_000]).unwrap();
    wait_for(&rt, &running, "unread input", |s| matches!(s, Seen::Received(c, _) if *c == g_id));
    command(&rt, &running, move |m| {
        m.push(Output::Write { conn: g_id, bytes: Bytes::from_static(b"bye\n") });
        m.push(Output::Close { conn: g_id, how: CloseHow::Graceful });
    });
    g.write_all(&[b'v'; 10_000]).unwrap();
    let mut got = Vec::new();
    g.read_to_end(&mut got).expect("graceful close ends with EOF, not a reset");
    assert_eq!(got, b"bye\n");
    running.shutdown();
}

/// The machine's half-close lets it still read; the peer's FIN then arrives as
/// `ReadClosed`, after which the connection is released without any further report.
fn half_close_both_ways<R: Runtime>(rt: R) {
    let (running, addr) = start(&rt, Driver::new(Probe::default()));
    let mut c = client(addr);
    let id = accepted(&rt, &running);
    command(&rt, &running, move |m| {
        m.push(Output::Write { conn: id, bytes: Bytes::from_static(b"one") });
        m.push(Output::Close { conn: id, how: CloseHow::HalfClose });
        // Dropped: the write side is shut.
        m.push(Output::Write { conn: id, bytes: Bytes::from_static(b"two") });
    });
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"one");
    c.write_all(b"after").unwrap();
    wait_for(&rt, &running, "bytes after our half-close", |s| *s == Seen::Received(id, b"after".to_vec()));
    c.shutdown(Shutdown::Write).unwrap();
    wait_for(&rt, &running, "the peer's FIN", |s| *s == Seen::ReadClosed(id));
    // Released: even the write and close below must produce no report for `id`.
    command(&rt, &running, move |m| {
        m.push(Output::Write { conn: id, bytes: Bytes::from_static(b"late") });
        m.push(Output::Close { conn: id, how: CloseHow::Abort });
    });
    running.shutdown();
    let events = running.events();
    let rest: Vec<Seen> = rt.block_on(async {
        let mut rest = Vec::new();
        while let Ok(seen) = events.recv().await {
            rest.push(seen);
        }
        rest
    });
    assert!(!rest.iter().any(|s| matches!(s, Seen::Closed(c, _) if *c == id)), "{rest:?}");
}

/// Pausing stops reads (TCP pushes back), resuming delivers everything in order.
fn pause_and_resume<R: Runtime>(rt: R) {
    let (running, addr) = start(&rt, Driver::new(Probe::default()));
    let mut c = client(addr);
    let id = accepted(&rt, &running);
    command(&rt, &running, move |m| m.push(Output::PauseReading { conn: id }));
    assert_eq!(running.stats().paused_readers, 1);
    c.write_all(b"held back").unwrap();
    command(&rt, &running, move |m| m.push(Output::ResumeReading { conn: id }));
    let mut got = Vec::new();
    while got.len() < 9 {
        match wait_for(&rt, &running, "resumed bytes", |s| matches!(s, Seen::Received(..))) {
            Seen::Received(_, bytes) => got.extend(bytes),
            _ => unreachable!(),
        }
    }
    assert_eq!(got, b"held back");
    assert_eq!(running.stats().paused_readers, 0);
    running.shutdown();
}

/// Datagrams in, transmits out.
fn udp_round_trip<R: Runtime>(rt: R) {
    let running = rt
        .block_on(Driver::new(Probe::default()).bind_udp(SocketId(0), "127.0.0.1:0".parse().unwrap()).start(rt.clone()))
        .unwrap();
    let server = running.udp_local_addr(SocketId(0)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(GUARD)).unwrap();
    sock.send_to(b"ping", server).unwrap();
    let mut buf = [0; 16];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"ping"[..], server));
    let me = sock.local_addr().unwrap();
    wait_for(&rt, &running, "the datagram event", |s| *s == Seen::Datagram(me, b"ping".to_vec()));
    running.shutdown();
}

/// Binding an address in use is an error from `start`, naming the address.
fn bind_errors_come_back_from_start<R: Runtime>(rt: R) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = rt.block_on(Driver::new(Probe::default()).listen(ListenerId(0), addr).start(rt.clone())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    assert_eq!(err.to_string(), format!("cannot listen on {addr}: address already in use"));
}

/// After shutdown, `join` hands the machine back with its final state.
fn join_returns_the_machine<R: Runtime>(rt: R) {
    let (running, addr) = start(&rt, Driver::new(Probe::default()));
    let mut c = client(addr);
    let id = accepted(&rt, &running);
    command(&rt, &running, move |m| m.push(Output::Write { conn: id, bytes: Bytes::from_static(b"12345") }));
    let mut buf = [0; 5];
    c.read_exact(&mut buf).unwrap();
    // `Sent` follows the write; wait until the machine has counted it.
    let deadline = std::time::Instant::now() + GUARD;
    while rt.block_on(running.command(|m: &mut Probe, _| m.sent)).unwrap() < 5 {
        assert!(std::time::Instant::now() < deadline, "Sent never reported");
        std::thread::sleep(Duration::from_millis(5));
    }
    running.shutdown();
    let machine = rt.block_on(running.join()).expect("the machine comes back");
    assert_eq!(machine.sent, 5);
    assert!(rt.block_on(running.command(|_: &mut Probe, _| ())).is_err());
}

/// The machine hears the wall clock as soon as the driver starts (the system clock read
/// then), and not again while the clock keeps step with the monotonic one.
fn wall_clock_is_reported_at_start_only_while_in_step<R: Runtime>(rt: R) {
    let before = switchyard_adapters::unix_micros_now();
    let (running, addr) = start(&rt, Driver::new(Probe::default()));
    let after = switchyard_adapters::unix_micros_now();
    // A few wake-ups: connections in and out.
    let _c = client(addr);
    accepted(&rt, &running);
    let reports = rt.block_on(running.command(|m: &mut Probe, _| m.wall_clock.clone())).unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (at, unix_micros) = reports[0];
    assert!((before..=after).contains(&(unix_micros - i128::from(at.as_micros()))), "{reports:?}");
    running.shutdown();
}

/// One port spread over two drivers: connections alternate between them (the placement
/// rule over their open counts), and an adopted connection reads and writes like one the
/// driver accepted itself.
fn spread_places_connections_on_several_drivers<R: Runtime>(rt: R) {
    use switchyard_adapters::spread::Spread;
    use switchyard_core::placement::{Load, Placement};
    let drivers: Vec<Running<Probe>> =
        (0..2).map(|_| rt.block_on(Driver::new(Probe::default()).start(rt.clone())).expect("start")).collect();
    let handles: Vec<_> = drivers.iter().map(Running::handle).collect();
    let mut placement = Placement::new();
    let spread = Spread::start(ListenerId(0), "127.0.0.1:0".parse().unwrap(), move |listener, stream, peer| {
        let loads: Vec<Load> = handles.iter().map(|h| Load { ready: true, open: h.stats().connections }).collect();
        let chosen = placement.choose(&loads).expect("two drivers");
        handles[chosen].adopt_blocking(listener, stream, peer).expect("driver running");
    })
    .unwrap();
    let mut clients = Vec::new();
    for round in 0..2 {
        for (i, running) in drivers.iter().enumerate() {
            let mut client = client(spread.local_addr());
            let conn = accepted(&rt, running);
            let line = format!("round {round} to driver {i}\n");
            client.write_all(line.as_bytes()).unwrap();
            let want = Seen::Received(conn, line.clone().into_bytes());
            wait_for(&rt, running, "the client's bytes", |s| *s == want);
            command(&rt, running, move |m| m.push(Output::Write { conn, bytes: Bytes::from(line) }));
            clients.push(client);
        }
    }
    for (k, client) in clients.iter_mut().enumerate() {
        let mut echoed = vec![0; format!("round {} to driver {}\n", k / 2, k % 2).len()];
        client.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, format!("round {} to driver {}\n", k / 2, k % 2).into_bytes());
    }
    spread.stop();
    for running in &drivers {
        assert_eq!(running.stats().connections, 2, "each driver holds two of the four");
        running.shutdown();
    }
}

/// A listener the machine asks for at run time is bound and answered, accepts like one
/// given at start, refuses a second bind of its port, and stops accepting once closed while
/// what it accepted carries on.
fn listeners_open_and_close_at_run_time<R: Runtime>(rt: R) {
    let (running, _) = start(&rt, Driver::new(Probe::default()));
    let ask = |id: ListenerId, addr: SocketAddr| move |m: &mut Probe| m.push(Output::Listen { listener: id, addr });
    command(&rt, &running, ask(ListenerId(5), "127.0.0.1:0".parse().unwrap()));
    let addr = match wait_for(&rt, &running, "listened", |s| matches!(s, Seen::Listened(ListenerId(5), _))) {
        Seen::Listened(_, Ok(addr)) => addr,
        other => panic!("the listener was not bound: {other:?}"),
    };
    assert_ne!(addr.port(), 0, "the real port is reported");
    let mut first = client(addr);
    let conn = accepted(&rt, &running);

    command(&rt, &running, ask(ListenerId(6), addr));
    match wait_for(&rt, &running, "second listen", |s| matches!(s, Seen::Listened(ListenerId(6), _))) {
        Seen::Listened(_, Err(NetError::Other(error))) => assert!(error.contains("in use"), "{error}"),
        other => panic!("a port in use was bound again: {other:?}"),
    }
    command(&rt, &running, ask(ListenerId(0), "127.0.0.1:0".parse().unwrap()));
    let reused = wait_for(&rt, &running, "reused id", |s| matches!(s, Seen::Listened(ListenerId(0), _)));
    assert!(matches!(reused, Seen::Listened(_, Err(_))), "the configured listener's id was taken again: {reused:?}");

    command(&rt, &running, |m| m.push(Output::Unlisten { listener: ListenerId(5) }));
    // The accept loop ends on its own task: the port closes very soon after.
    let deadline = std::time::Instant::now() + GUARD;
    while TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the closed listener still accepts");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.write_all(b"after").unwrap();
    let got = wait_for(&rt, &running, "bytes", |s| matches!(s, Seen::Received(c, _) if *c == conn));
    assert_eq!(got, Seen::Received(conn, b"after".to_vec()));
}

/// Waits until the driver's counters satisfy `done` (its tasks count a write just after the
/// system call returns, so a peer may see the bytes a moment before the counter moves).
fn stats_reach<R: Runtime>(rt: &R, running: &Running<Probe>, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = rt.now() + GUARD;
    loop {
        let stats = running.stats();
        if done(&stats) {
            return stats;
        }
        assert!(rt.now() < deadline, "timed out waiting for {what}: {stats:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Accepted connections and the bytes read and written, over TCP and UDP, are counted
/// exactly: what a client sent, what it was sent.
fn counts_connections_and_bytes_each_way<R: Runtime>(rt: R) {
    let driver = Driver::new(Probe::default()).bind_udp(SocketId(0), "127.0.0.1:0".parse().unwrap());
    let (running, addr) = start(&rt, driver);
    assert_eq!((running.stats().accepted, running.stats().bytes_received, running.stats().bytes_sent), (0, 0, 0));
    let mut c = client(addr);
    let id = accepted(&rt, &running);
    c.write_all(&[b'i'; 10_000]).unwrap();
    let mut got = 0;
    while got < 10_000 {
        if let Seen::Received(_, bytes) =
            wait_for(&rt, &running, "the client's bytes", |s| matches!(s, Seen::Received(..)))
        {
            got += bytes.len();
        }
    }
    static OUT: [u8; 5_000] = [b'o'; 5_000];
    command(&rt, &running, move |m| m.push(Output::Write { conn: id, bytes: Bytes::from_static(&OUT) }));
    let mut back = [0; 5_000];
    c.read_exact(&mut back).unwrap();
    let stats = stats_reach(&rt, &running, "5000 bytes sent", |s| s.bytes_sent == 5_000);
    assert_eq!((stats.accepted, stats.bytes_received), (1, 10_000));

    let server = running.udp_local_addr(SocketId(0)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(GUARD)).unwrap();
    sock.send_to(b"ping", server).unwrap();
    let mut buf = [0; 16];
    assert_eq!(sock.recv_from(&mut buf).unwrap().0, 4);
    let stats = stats_reach(&rt, &running, "the echoed datagram", |s| s.bytes_sent == 5_004);
    assert_eq!(stats.bytes_received, 10_004);
    let _second = client(addr);
    stats_reach(&rt, &running, "a second accept", |s| s.accepted == 2);
    running.shutdown();
}

macro_rules! for_each_runtime {
    ($($test:ident),* $(,)?) => {
        mod smol {
            $(#[test] fn $test() { super::$test(switchyard_adapters::SmolRuntime) })*
        }
        mod async_std {
            $(#[test] fn $test() { super::$test(switchyard_adapters::AsyncStdRuntime) })*
        }
    };
}

for_each_runtime!(
    slow_peer_is_aborted_alone,
    abort_resets_and_graceful_flushes,
    half_close_both_ways,
    pause_and_resume,
    udp_round_trip,
    bind_errors_come_back_from_start,
    join_returns_the_machine,
    wall_clock_is_reported_at_start_only_while_in_step,
    spread_places_connections_on_several_drivers,
    listeners_open_and_close_at_run_time,
    counts_connections_and_bytes_each_way,
);

/// The mio runtime runs the same driver; this checks its listener path and its counters.
#[cfg(feature = "mio")]
mod mio {
    #[test]
    fn listeners_open_and_close_at_run_time() {
        super::listeners_open_and_close_at_run_time(switchyard_adapters::MioRuntime)
    }

    #[test]
    fn counts_connections_and_bytes_each_way() {
        super::counts_connections_and_bytes_each_way(switchyard_adapters::MioRuntime)
    }
}
