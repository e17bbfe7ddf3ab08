//! The tunnel end to end on real loopback sockets, under both adapters.
//!
//! Each test builds the seed topology in-process with the real machines, every one on its
//! own [`Driver`] on one runtime, every listener on 127.0.0.1 port 0 (so tests run in
//! parallel):
//!
//! ```text
//!  clients (std TcpStream)
//!  prefix entrance ──┐                                          ┌─ 9090     time (1 s ticks)
//!  forward → 9090 ───┤                                          ├─ 10000    broadcast
//!  forward → 7777 ───┼─ TunnelLocal ══ carrier ══ TunnelRemote ─┼─ 12345    greet
//!  forward → 9999 ───┘                                          ├─ 8080     stamp
//!                                                               ├─ 7777     byte echo
//!                                                               ├─ 9999     SHA-256 sink
//!                                                               └─ default  echo
//! ```
//!
//! The byte echo and the sink (`tests/support/raw.rs`) carry arbitrary bytes, which the
//! line services cannot. Clients are plain blocking `std::net::TcpStream`s, as `nc` would
//! be. Every test body is written once, generic over [`Runtime`], and instantiated for smol
//! and async-std at the bottom. Timeouts only guard against a hang; nothing asserts how long
//! anything took. The times each test takes are printed (`--nocapture`) for the record.

#[path = "support/raw.rs"]
mod raw;

use raw::{digest_line, ByteEcho, RawServer, Sha256Sink};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_adapters::{Driver, Handle, Running, Runtime};
use switchyard_core::service::broadcast::Broadcast;
use switchyard_core::service::echo::{EchoConfig, EchoServer};
use switchyard_core::service::line_server::LineServerConfig;
use switchyard_core::service::reply::{Preset, ReplyServer, ReplyService};
use switchyard_core::service::time::{TimeServer, TimeService};
use switchyard_core::time::WallClock;
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::{Entrance, LocalConfig, TunnelLocal};
use switchyard_core::tunnel::mux::MuxConfig;
use switchyard_core::tunnel::remote::{RemoteConfig, Routes, TunnelRemote};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::{Env, Instant, ListenerId, Machine};
use switchyard_tests::{guarded, GUARD};

/// How often a test re-checks a condition it waits for.
const POLL: Duration = Duration::from_millis(10);
/// Route names of the two raw helper services on the remote end.
const BYTE_ECHO_ROUTE: &str = "7777";
const SINK_ROUTE: &str = "9999";
/// Listeners of the local end.
const PREFIX: ListenerId = ListenerId(0);
const TIME_FORWARD: ListenerId = ListenerId(1);
const BYTE_ECHO_FORWARD: ListenerId = ListenerId(2);
const SINK_FORWARD: ListenerId = ListenerId(3);
/// The expected reply to a client that never completes its route prefix.
const NO_PREFIX: &str = "error: no route prefix within 3 s (send e.g. 9090:time)\n";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn secret() -> Secret {
    Secret::new(*b"loopback tunnel secret").unwrap()
}

/// Calls `check` every [`POLL`] until it returns `Some`; panics after the guard time.
/// Returns the value and how long the wait took.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return (value, start.elapsed());
        }
        assert!(start.elapsed() < GUARD, "timed out: {what}");
        std::thread::sleep(POLL);
    }
}

/// Runs `f` on a running machine (with its driver's current time) and returns the result.
fn query<R: Runtime, M, T>(rt: &R, running: &Running<M>, f: impl FnOnce(&mut M, Instant) -> T + Send + 'static) -> T
where
    M: Machine + 'static,
    T: Send + 'static,
{
    guarded(rt, "a command to a running machine", running.command(f)).expect("the machine is running")
}

/// How to shut down each driver a test started.
type Stoppers = Vec<Box<dyn Fn()>>;

/// The whole seed topology, each machine on its own driver; shut down when dropped.
struct Topology<R: Runtime> {
    rt: R,
    /// The wall clock every dated service was given (read once, as a driver would).
    wall: WallClock,
    echo: Running<EchoServer>,
    time: Running<TimeServer>,
    stamp: Running<ReplyServer>,
    remote: Running<TunnelRemote>,
    /// The remote end's carrier address (kept across a restart).
    remote_addr: SocketAddr,
    routes: Routes,
    local: Running<TunnelLocal>,
    /// Addresses of the local end's listeners.
    entry: SocketAddr,
    time_forward: SocketAddr,
    byte_echo_forward: SocketAddr,
    sink_forward: SocketAddr,
    /// Shuts down every driver started, in [`Drop`], so a test leaves no sockets behind.
    stoppers: Stoppers,
}

impl<R: Runtime> Topology<R> {
    /// Starts every service, the remote end, and a local end with the right secret, and
    /// waits until the carrier is up.
    fn start(rt: R) -> Topology<R> {
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970").as_micros();
        let wall = WallClock::utc(micros as i128, Instant::ZERO);
        let mut stoppers = Vec::new();
        let config = LineServerConfig::default;
        let echo = run(&rt, &mut stoppers, EchoServer::new(Env::new(1), EchoConfig::default()));
        let time =
            run(&rt, &mut stoppers, TimeService::new(wall, Duration::from_secs(1)).server(Env::new(2), config()));
        let broadcast = run(&rt, &mut stoppers, Broadcast::server(Env::new(3), config()));
        let greet = run(&rt, &mut stoppers, ReplyService::new(Preset::Greet, wall).server(Env::new(4), config()));
        let stamp = run(&rt, &mut stoppers, ReplyService::new(Preset::Stamp, wall).server(Env::new(5), config()));
        let byte_echo = run(&rt, &mut stoppers, RawServer::<ByteEcho>::new(Env::new(6)));
        let sink = run(&rt, &mut stoppers, RawServer::<Sha256Sink>::new(Env::new(7)));
        let mut routes = Routes::new();
        routes
            .add("9090", addr_of(&time))
            .add("10000", addr_of(&broadcast))
            .add("12345", addr_of(&greet))
            .add("8080", addr_of(&stamp))
            .add(BYTE_ECHO_ROUTE, addr_of(&byte_echo))
            .add(SINK_ROUTE, addr_of(&sink))
            .add("default", addr_of(&echo));
        let remote = start_remote(&rt, &mut stoppers, &routes, loopback()).expect("start the remote end");
        let remote_addr = remote.local_addr(ListenerId(0)).unwrap();
        let local = start_local(&rt, &mut stoppers, remote_addr, secret());
        let at = |id| local.local_addr(id).unwrap();
        let topology = Topology {
            wall,
            echo,
            time,
            stamp,
            remote_addr,
            routes,
            entry: at(PREFIX),
            time_forward: at(TIME_FORWARD),
            byte_echo_forward: at(BYTE_ECHO_FORWARD),
            sink_forward: at(SINK_FORWARD),
            remote,
            local,
            stoppers,
            rt,
        };
        topology.wait_until_up(&topology.local);
        topology
    }

    /// Waits until `local` has an authenticated carrier.
    fn wait_until_up(&self, local: &Running<TunnelLocal>) {
        eventually("the carrier coming up", || query(&self.rt, local, |l, _| l.is_up()).then_some(()));
    }

    /// Another local end in front of the same remote end, with its own secret.
    fn another_local(&mut self, secret: Secret) -> Running<TunnelLocal> {
        start_local(&self.rt, &mut self.stoppers, self.remote_addr, secret)
    }

    /// Open streams on the local and remote ends, and echo sessions.
    fn open_streams(&self) -> (usize, usize, usize) {
        let local = query(&self.rt, &self.local, |l, _| l.streams());
        let remote = query(&self.rt, &self.remote, |r, _| r.streams());
        let echo = query(&self.rt, &self.echo, |e, _| e.connections());
        (local, remote, echo)
    }

    /// The wall-clock time a running service shows now, as `YYYY-MM-DD HH:MM:SS`.
    fn shown_time<M: Machine + 'static>(&self, service: &Running<M>) -> String {
        let now = query(&self.rt, service, |_, now| now);
        self.wall.format(now)
    }
}

impl<R: Runtime> Drop for Topology<R> {
    fn drop(&mut self) {
        for stop in &self.stoppers {
            stop();
        }
    }
}

/// Starts `machine` on its own driver with `listeners`, and registers its shutdown.
fn run_on<R, M>(
    rt: &R,
    stoppers: &mut Stoppers,
    machine: M,
    listeners: &[(ListenerId, SocketAddr)],
) -> io::Result<Running<M>>
where
    R: Runtime,
    M: Machine + Send + 'static,
    M::Event: Send + Debug + 'static,
{
    let driver = listeners.iter().fold(Driver::new(machine), |d, &(id, addr)| d.listen(id, addr));
    let running = rt.block_on(driver.start(rt.clone()))?;
    let handle: Handle<M> = running.handle();
    stoppers.push(Box::new(move || handle.shutdown()));
    Ok(running)
}

/// Where a service started by [`run`] listens.
fn addr_of<M: Machine + 'static>(service: &Running<M>) -> SocketAddr {
    service.local_addr(ListenerId(0)).expect("listener 0")
}

/// Starts a service on 127.0.0.1 port 0 as listener 0.
fn run<R, M>(rt: &R, stoppers: &mut Stoppers, machine: M) -> Running<M>
where
    R: Runtime,
    M: Machine + Send + 'static,
    M::Event: Send + Debug + 'static,
{
    run_on(rt, stoppers, machine, &[(ListenerId(0), loopback())]).expect("start a service")
}

/// A remote end at `at` with the secret and the allowlist `routes`.
fn start_remote<R: Runtime>(
    rt: &R,
    stoppers: &mut Stoppers,
    routes: &Routes,
    at: SocketAddr,
) -> io::Result<Running<TunnelRemote>> {
    let remote = TunnelRemote::new(Env::new(8), RemoteConfig::new(secret(), routes.clone()));
    run_on(rt, stoppers, remote, &[(ListenerId(0), at)])
}

/// A local end with a prefix entrance and three static forwards (time, byte echo, sink).
fn start_local<R: Runtime>(
    rt: &R,
    stoppers: &mut Stoppers,
    remote: SocketAddr,
    secret: Secret,
) -> Running<TunnelLocal> {
    let forward = |route: &str| Entrance::Forward { route: route.into() };
    let entrances = BTreeMap::from([
        (PREFIX, Entrance::Prefix),
        (TIME_FORWARD, forward("9090")),
        (BYTE_ECHO_FORWARD, forward(BYTE_ECHO_ROUTE)),
        (SINK_FORWARD, forward(SINK_ROUTE)),
    ]);
    let local = TunnelLocal::new(Env::new(9), Instant::ZERO, LocalConfig::new(remote, secret, entrances.clone()));
    let listeners: Vec<_> = entrances.keys().map(|&id| (id, loopback())).collect();
    run_on(rt, stoppers, local, &listeners).expect("start the local end")
}

/// A blocking client, as `nc` would be: one socket (so 1,000 of them cost 1,000 file
/// descriptors, not 2,000), read through a buffer and written directly.
struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let socket = TcpStream::connect(addr).expect("connect");
        socket.set_read_timeout(Some(GUARD)).unwrap();
        socket.set_write_timeout(Some(GUARD)).unwrap();
        Client(BufReader::new(socket))
    }

    /// Connects and sends `first` at once, as a client with a route prefix does.
    fn open(addr: SocketAddr, first: &[u8]) -> Client {
        let mut client = Client::connect(addr);
        client.send(first);
        client
    }

    fn socket(&self) -> &TcpStream {
        self.0.get_ref()
    }

    fn send(&mut self, bytes: &[u8]) {
        // Writing beside the read buffer is fine: it only holds bytes already received.
        self.0.get_mut().write_all(bytes).expect("send");
    }

    /// The next line, newline included; empty at the end of the stream.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).expect("receive a line");
        line
    }

    /// Everything until the server's end of stream, which must be orderly (a FIN, not a
    /// reset).
    fn rest_bytes(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        self.0.read_to_end(&mut all).expect("an orderly end of stream");
        all
    }

    /// [`Client::rest_bytes`] as text (lossy: error lines are text; binary payloads are
    /// compared as bytes).
    fn rest(&mut self) -> String {
        String::from_utf8_lossy(&self.rest_bytes()).into_owned()
    }

    /// Shuts down the write side: the server sees the end of input.
    fn finish(&mut self) {
        self.socket().shutdown(Shutdown::Write).expect("half-close");
    }

    fn echo(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
        assert_eq!(self.line(), format!("{line}\n"));
    }
}

/// Opens a client on `addr`, sends `first`, and returns everything it gets until the end.
fn reply_to(addr: SocketAddr, first: &[u8]) -> String {
    Client::open(addr, first).rest()
}

/// True for `YYYY-MM-DD HH:MM:SS`.
fn is_timestamp(s: &str) -> bool {
    s.len() == 19
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
}

/// Checks `line` is a time line between `earliest` and `latest` (this format sorts as
/// text); returns the timestamp.
fn timestamp_between<'a>(line: &'a str, earliest: &str, latest: &str) -> &'a str {
    let stamp = line.strip_suffix('\n').unwrap_or_else(|| panic!("{line:?} is not a whole line"));
    assert!(is_timestamp(stamp), "{line:?} is not YYYY-MM-DD HH:MM:SS");
    assert!(earliest <= stamp && stamp <= latest, "{stamp} is not between {earliest} and {latest}");
    stamp
}

/// The byte patterns bulk tests send. Both are generated on the fly from their position,
/// so a test can stream any amount without holding it.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// Lines of 63 letters and a newline, the last line cut short but still ended by a
    /// newline: what a line service echoes back unchanged. Starts with a letter, so the
    /// prefix entrance sends it to the default route.
    Lines,
    /// Pseudo-random bytes (xorshift64*): every value, `CR`, `LF`, digits and colons too.
    Noise,
}

/// A deterministic payload of `len` bytes of `pattern`, produced chunk by chunk.
struct Payload {
    pattern: Pattern,
    len: u64,
    offset: u64,
    state: u64,
}

impl Payload {
    fn new(pattern: Pattern, len: u64) -> Payload {
        Payload { pattern, len, offset: 0, state: 0x9e37_79b9_7f4a_7c15 }
    }

    /// Fills the start of `buf` with the next bytes; returns how many (0 at the end).
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min((self.len - self.offset) as usize);
        match self.pattern {
            Pattern::Lines => {
                for (i, byte) in buf[..n].iter_mut().enumerate() {
                    let at = self.offset + i as u64;
                    *byte =
                        if at % 64 == 63 || at + 1 == self.len { b'\n' } else { b'a' + ((at + at / 64) % 26) as u8 };
                }
            }
            // Whole 8-byte words per step; `buf` is a multiple of 8 long except at the end.
            Pattern::Noise => {
                for word in buf[..n].chunks_mut(8) {
                    self.state ^= self.state >> 12;
                    self.state ^= self.state << 25;
                    self.state ^= self.state >> 27;
                    let bytes = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                    word.copy_from_slice(&bytes[..word.len()]);
                }
            }
        }
        self.offset += n as u64;
        n
    }
}

/// How many bytes one direction of a stream carried and their SHA-256, plus the first
/// [`HEAD`] bytes verbatim for messages and small replies.
#[derive(Debug)]
struct Seen {
    len: u64,
    sha256: [u8; 32],
    head: Vec<u8>,
}

/// Bytes per write and per read in bulk transfers.
const CHUNK: usize = 64 * 1024;
/// Bytes of a stream [`Seen`] keeps verbatim.
const HEAD: usize = 4096;

/// Builds a [`Seen`] from bytes as they pass, without keeping them.
#[derive(Default)]
struct Tally {
    hasher: Sha256,
    len: u64,
    head: Vec<u8>,
}

impl Tally {
    fn add(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        let keep = bytes.len().min(HEAD - self.head.len());
        self.head.extend_from_slice(&bytes[..keep]);
    }

    fn seen(self) -> Seen {
        Seen { len: self.len, sha256: self.hasher.finalize().into(), head: self.head }
    }
}

/// Connects to `addr`, sends `payload` from a writer thread and half-closes, while this
/// thread reads until the end of stream: both at once, so a reply as big as the payload
/// never deadlocks on full socket buffers. `before_reading` runs once the writer has
/// started and before the first read (to hold the reply back). Returns what was sent and
/// what came back.
fn exchange(addr: SocketAddr, mut payload: Payload, before_reading: impl FnOnce()) -> (Seen, Seen) {
    let mut client = Client::connect(addr);
    let mut writer = client.socket().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut sent = Tally::default();
        let mut chunk = vec![0; CHUNK];
        loop {
            let n = payload.fill(&mut chunk);
            if n == 0 {
                break;
            }
            sent.add(&chunk[..n]);
            writer.write_all(&chunk[..n]).expect("send the payload");
        }
        writer.shutdown(Shutdown::Write).expect("half-close");
        sent.seen()
    });
    before_reading();
    let mut received = Tally::default();
    let mut chunk = vec![0; CHUNK];
    loop {
        let n = client.0.read(&mut chunk).expect("read the reply until an orderly end");
        if n == 0 {
            break;
        }
        received.add(&chunk[..n]);
    }
    (sender.join().expect("the writer thread"), received.seen())
}

/// Sends `len` bytes of `pattern` through `addr` to a service that echoes them, and
/// checks that exactly the same bytes came back and the stream then ended.
fn round_trip(addr: SocketAddr, pattern: Pattern, len: u64) {
    round_trip_holding_back(addr, pattern, len, || {});
}

/// [`round_trip`], with `meanwhile` run before the client starts reading the reply.
fn round_trip_holding_back(addr: SocketAddr, pattern: Pattern, len: u64, meanwhile: impl FnOnce()) {
    let (sent, received) = exchange(addr, Payload::new(pattern, len), meanwhile);
    assert_eq!(sent.len, len);
    assert_eq!(received.len, len, "{pattern:?} {len} B: {} B came back", received.len);
    assert_eq!(received.sha256, sent.sha256, "{pattern:?} {len} B came back altered");
}

/// Half-close payload sizes the issue names: 0 B, 1 B, 64 KiB, 16 MiB.
const HALF_CLOSE_SIZES: [u64; 4] = [0, 1, 64 * 1024, 16 * 1024 * 1024];

// ---------------------------------------------------------------------------------------
// Seed flows.

/// `hello` through the prefix entrance reaches the default route (echo) and comes back.
fn echo_flow<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    let mut client = Client::connect(t.entry);
    client.echo("hello");
    client.echo("and again");
    client.finish();
    assert_eq!(client.rest(), "", "the echo ends after the client does");
}

/// `9090:time` answers at once with the time the service shows, then pushes ticks every
/// second; the static forward to route 9090 needs no prefix; the client leaving ends it.
fn time_flow<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    let before = t.shown_time(&t.time);
    let mut client = Client::open(t.entry, b"9090:time\n");
    let first = client.line();
    let at_once = timestamp_between(&first, &before, &t.shown_time(&t.time)).to_owned();
    // Two more ticks, each later than the one before (1 s apart, so never the same second).
    let mut last = at_once;
    for _ in 0..2 {
        let tick = client.line();
        let stamp = timestamp_between(&tick, &last, &t.shown_time(&t.time)).to_owned();
        assert!(stamp > last, "tick {stamp} after {last}");
        last = stamp;
    }
    client.finish();
    // A tick may have crossed the half-close; anything else is wrong.
    let rest = client.rest();
    assert!(rest.lines().all(is_timestamp), "after leaving: {rest:?}");

    let before = t.shown_time(&t.time);
    let mut forwarded = Client::connect(t.time_forward);
    let line = forwarded.line();
    timestamp_between(&line, &before, &t.shown_time(&t.time));
}

/// Two members meet through `10000:`: each line reaches the other exactly once and never
/// its sender; joins and leaves are announced.
fn broadcast_flow<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    let welcome = |client: &mut Client, members: usize| {
        let line = client.line();
        let Some((name, rest)) = line.strip_prefix("* welcome ").and_then(|l| l.split_once(", ")) else {
            panic!("not a welcome: {line:?}")
        };
        assert_eq!(rest, format!("{members} member(s) online\n"));
        name.to_owned()
    };
    let mut a = Client::open(t.entry, b"10000:");
    let a_name = welcome(&mut a, 1);
    let mut b = Client::open(t.entry, b"10000:");
    let b_name = welcome(&mut b, 2);
    assert_eq!(a.line(), format!("* {b_name} joined\n"));

    a.send(b"hello from a\n");
    assert_eq!(b.line(), format!("{a_name}: hello from a\n"));
    b.send(b"hello from b\n");
    // Had a's own line come back to it, or b's line twice, it would be read here first:
    // the server writes to each member in order.
    assert_eq!(a.line(), format!("{b_name}: hello from b\n"));
    // Members are listed in join order.
    for (client, members) in
        [(&mut a, format!("{a_name} (you), {b_name}")), (&mut b, format!("{a_name}, {b_name} (you)"))]
    {
        client.send(b"/who\n");
        assert_eq!(client.line(), format!("* members: {members}\n"), "where the member list was due");
    }
    b.finish();
    assert_eq!(b.rest(), "");
    assert_eq!(a.line(), format!("* {b_name} left\n"));
}

/// `12345:John` gets the greeting of the original lab server.
fn greet_flow<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    let mut client = Client::open(t.entry, b"12345:John\n");
    assert_eq!(client.line(), "Hello Good morning !!!! ::: John\n");
}

/// `8080:Hello, World!` gets `Server received at <now>: Hello, World!`, then the server
/// closes: one exchange per connection.
fn stamp_flow<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    let before = t.shown_time(&t.stamp);
    let reply = reply_to(t.entry, b"8080:Hello, World!\n");
    let after = t.shown_time(&t.stamp);
    let rest = reply.strip_prefix("Server received at ").unwrap_or_else(|| panic!("unexpected {reply:?}"));
    // `HH:MM:SS` has colons but no ": ", so the first ": " ends the timestamp.
    let Some((stamp, text)) = rest.split_once(": ") else { panic!("unexpected {reply:?}") };
    timestamp_between(&format!("{stamp}\n"), &before, &after);
    assert_eq!(text, "Hello, World!\n", "in {reply:?}");
}

// ---------------------------------------------------------------------------------------
// Half-close and bulk data.

/// Line data through the prefix entrance and the echo service: for each size, the client
/// writes, shuts down its write side, and still reads the whole reply, then the end.
fn half_close_through_the_echo_route<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    for len in HALF_CLOSE_SIZES {
        round_trip(t.entry, Pattern::Lines, len);
    }
}

/// Arbitrary bytes through a static forward to the byte echo: the same, byte for byte.
fn half_close_through_a_static_forward<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    for len in HALF_CLOSE_SIZES {
        round_trip(t.byte_echo_forward, Pattern::Noise, len);
    }
}

/// A client that sends 16 MiB to the byte echo without reading the reply stalls its own
/// stream: the reply fills the client's socket buffers (which do not grow while it does
/// not read), then the local end's queue up to the stream's flow-control window, and stops
/// there. Another stream on the same carrier keeps working meanwhile, the local end's
/// queues stay bounded, and once the client reads, every byte comes back intact.
fn a_stalled_stream_stalls_alone<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    let mux = MuxConfig::default();
    let window = mux.initial_window as usize;
    // The local end returns credit in steps of a quarter window, so up to a quarter may
    // have gone on to the client's socket unacknowledged: the queue stops at three quarters
    // or more.
    let stalled = window - window / 4;
    // The stalled reply (one window) plus, at most, the carrier's unsent data and a frame.
    let bound = window + mux.carrier_high + 64 * 1024;
    let mut other = Client::connect(t.entry);
    other.echo("before the stall");
    round_trip_holding_back(t.byte_echo_forward, Pattern::Noise, 16 * 1024 * 1024, || {
        let queued = || t.local.stats().queued_write_bytes;
        eventually("most of a window of reply waiting for the client", || (queued() >= stalled).then_some(()));
        for i in 0..20 {
            other.echo(&format!("still moving {i}"));
            assert!(queued() <= bound, "{} bytes queued at the local end (bound {bound})", queued());
        }
    });
    other.echo("after the stall");
    assert_eq!(t.local.stats().slow_peer_closes, 0, "the stalled client was not dropped");
}

/// 256 MiB through a static forward to the sink: the sink's count and SHA-256 of what it
/// received match what the client sent. Streamed in 64 KiB chunks, never held.
fn bulk_256_mib_through_a_static_forward<R: Runtime>(rt: R) {
    const LEN: u64 = 256 * 1024 * 1024;
    let t = Topology::start(rt);
    let started = std::time::Instant::now();
    let (sent, received) = exchange(t.sink_forward, Payload::new(Pattern::Noise, LEN), || {});
    let took = started.elapsed();
    eprintln!("256 MiB through the tunnel in {took:.2?} ({:.0} MiB/s)", 256.0 / took.as_secs_f64());
    assert_eq!(sent.len, LEN);
    assert_eq!(String::from_utf8_lossy(&received.head), digest_line(sent.len, &sent.sha256));
    assert_eq!(received.len as usize, received.head.len(), "nothing after the digest line");
}

/// 1,000 streams open at once through the prefix entrance, each sending three unique
/// lines: each gets exactly its own lines back, both tunnel ends count 1,000 open streams
/// while they are, and nothing is left open once every client has finished.
fn a_thousand_concurrent_streams<R: Runtime>(rt: R) {
    const STREAMS: usize = 1000;
    const LINES: usize = 3;
    // Each stream holds four sockets in this process: client, local end, remote end → echo,
    // and echo's.
    raise_fd_limit(4 * STREAMS as libc::rlim_t + 512);
    let t = Topology::start(rt);
    let lines = |i: usize| (0..LINES).map(move |j| format!("stream {i} line {j}\n"));
    // Each client sends as soon as it is connected: one waiting for the others to connect
    // first could rightly be timed out for not sending its route prefix.
    let started = std::time::Instant::now();
    let mut clients: Vec<Client> =
        (0..STREAMS).map(|i| Client::open(t.entry, lines(i).collect::<String>().as_bytes())).collect();
    eprintln!("{STREAMS} clients connected in {:.2?}", started.elapsed());
    for (i, client) in clients.iter_mut().enumerate() {
        for want in lines(i) {
            assert_eq!(client.line(), want, "stream {i}");
        }
    }
    let (local, remote, echo) = t.open_streams();
    assert_eq!((local, remote, echo), (STREAMS, STREAMS, STREAMS), "(local, remote, echo) open at once");
    for client in &mut clients {
        client.finish();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.rest(), "", "stream {i} got something after its own lines");
    }
    drop(clients);
    eventually("every stream and session to be released", || (t.open_streams() == (0, 0, 0)).then_some(()));
}

/// Raises this process's soft limit on open files to at least `want` (within the hard
/// limit), for tests that hold thousands of sockets.
fn raise_fd_limit(want: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        if limit.rlim_cur < want {
            limit.rlim_cur = limit.rlim_max.min(want);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
    }
    assert!(limit.rlim_cur >= want, "need {want} open files, the hard limit is {}", limit.rlim_max);
}

// ---------------------------------------------------------------------------------------
// Bad input: a clear error for the bad client, and no disturbance for anyone else.

/// Runs `bad` while a good echo stream is open through the same local end, and checks the
/// good stream works before and after: bad input never disturbs other streams.
fn beside_a_good_stream<R: Runtime>(t: &Topology<R>, bad: impl FnOnce()) {
    let mut good = Client::connect(t.entry);
    good.echo("before");
    bad();
    good.echo("after");
    assert!(query(&t.rt, &t.local, |l, _| l.is_up()), "the carrier survived");
}

/// 33 digits before the colon is one too many: `error: route prefix too long`. 32 is a
/// route name, which the remote does not know: `error: unknown route …`.
fn overlong_prefix<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    beside_a_good_stream(&t, || {
        let digits = "1".repeat(33);
        assert_eq!(reply_to(t.entry, format!("{digits}:x\n").as_bytes()), "error: route prefix too long\n");
        let digits = "1".repeat(32);
        assert_eq!(reply_to(t.entry, format!("{digits}:x\n").as_bytes()), format!("error: unknown route {digits}\n"));
    });
}

/// A numeric route the remote end does not list gets an explicit error line, never a
/// silent close.
fn unknown_route<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    beside_a_good_stream(&t, || {
        assert_eq!(reply_to(t.entry, b"1234:x\n"), "error: unknown route 1234\n");
    });
}

/// Binary garbage as the first bytes goes to the default route, the echo service, which
/// treats it as line content: bytes without a newline come back as one line once the
/// client half-closes; more than 64 KiB without a newline gets `error: line too long` and
/// an orderly close. Never a hang, never a reset.
fn binary_garbage<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    // Every byte value but LF and CR (the line terminators), starting with NUL and 0xff.
    let garbage = |len: usize| -> Vec<u8> {
        (0..len).map(|i| (i * 151 + 255) as u8).map(|b| if b == b'\n' || b == b'\r' { 0 } else { b }).collect()
    };
    beside_a_good_stream(&t, || {
        let short = garbage(4096);
        let mut client = Client::open(t.entry, &short);
        client.finish();
        assert_eq!(client.rest_bytes(), [short.as_slice(), b"\n"].concat(), "the garbage echoed as one line");

        let long = garbage(100 * 1024);
        assert_eq!(reply_to(t.entry, &long), "error: line too long (limit 65536 bytes)\n");
    });
}

/// A client that never completes its first line — only digits, or nothing at all — is
/// told after the 3 s prefix timeout and closed.
fn unfinished_prefix<R: Runtime>(rt: R) {
    let t = Topology::start(rt);
    beside_a_good_stream(&t, || {
        let mut digits = Client::open(t.entry, b"9090");
        let mut silent = Client::connect(t.entry);
        assert_eq!(digits.rest(), NO_PREFIX);
        assert_eq!(silent.rest(), NO_PREFIX);
    });
}

/// A local end with the wrong secret never gets a carrier: both ends report the secret
/// mismatch, and its clients get `error: tunnel is down (…)`. The right local end's
/// streams carry on.
fn wrong_secret<R: Runtime>(rt: R) {
    let mut t = Topology::start(rt);
    let bad = t.another_local(Secret::new(*b"not the secret").unwrap());
    let bad_entry = bad.local_addr(PREFIX).unwrap();
    beside_a_good_stream(&t, || {
        secret_mismatch_reported(&t.rt, &bad, "the local end with the wrong secret");
        secret_mismatch_reported(&t.rt, &t.remote, "the remote end");
        let reply = reply_to(bad_entry, b"hello\n");
        assert!(reply.starts_with("error: tunnel is down ("), "{reply:?}");
        assert_eq!(reply.matches('\n').count(), 1, "one error line, then the end: {reply:?}");
        assert!(!query(&t.rt, &bad, |l, _| l.is_up()));
    });
}

/// Waits until a tunnel end reports that the two ends' secrets differ.
fn secret_mismatch_reported<R: Runtime, M: Machine<Event = TunnelEvent> + 'static>(
    rt: &R,
    end: &Running<M>,
    who: &str,
) {
    let events = end.events();
    guarded(rt, &format!("{who} reporting the secret mismatch"), async {
        loop {
            match events.recv().await.expect("events until shutdown") {
                TunnelEvent::AuthFailed { reason, .. } if reason.contains("different secrets") => return,
                _ => {}
            }
        }
    })
}

/// The remote end restarts (its driver shut down, a new one started on the same port):
/// streams open at the time end (no bytes, no hang), clients meanwhile are told the tunnel
/// is down, and new streams work again once the local end has reconnected.
fn remote_restart<R: Runtime>(rt: R) {
    let mut t = Topology::start(rt);
    let mut open = Client::connect(t.entry);
    open.echo("before the restart");

    t.remote.shutdown();
    guarded(&t.rt, "the remote end stopping", t.remote.join());
    let mut buf = [0; 64];
    match open.0.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("a stream open across the restart should end, got {other:?}"),
    }
    eventually("the local end noticing", || (!query(&t.rt, &t.local, |l, _| l.is_up())).then_some(()));
    let reply = reply_to(t.entry, b"hello\n");
    assert!(reply.starts_with("error: tunnel is down ("), "{reply:?}");

    // Stay down long enough for the local end's reconnect backoff to grow past its first
    // steps, as after a real crash; then restart on the same address. The old listener
    // closes asynchronously after the driver stops, so binding is retried.
    std::thread::sleep(Duration::from_secs(1));
    let (remote, _) = eventually("binding the restarted remote end", || {
        match start_remote(&t.rt, &mut t.stoppers, &t.routes, t.remote_addr) {
            Ok(remote) => Some(remote),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => None,
            Err(e) => panic!("restart the remote end: {e}"),
        }
    });
    t.remote = remote;
    let (_, recovered) = eventually("a new stream working after the restart", || {
        let mut client = Client::open(t.entry, b"back\n");
        match client.line().as_str() {
            "back\n" => Some(()),
            line if line.starts_with("error: tunnel is down") => None,
            line => panic!("after the restart: {line:?}"),
        }
    });
    eprintln!("new streams work {recovered:.2?} after the remote end restarted");
}

macro_rules! for_each_runtime {
    ($($test:ident),* $(,)?) => {
        mod smol {
            $(#[test] fn $test() { super::timed(stringify!($test), "smol", || super::$test(switchyard_adapters::SmolRuntime)) })*
        }
        mod async_std {
            $(#[test] fn $test() { super::timed(stringify!($test), "async-std", || super::$test(switchyard_adapters::AsyncStdRuntime)) })*
        }
    };
}

/// Runs a test and prints how long it took, for the record (not an assertion).
fn timed(test: &str, runtime: &str, body: impl FnOnce()) {
    let start = std::time::Instant::now();
    body();
    eprintln!("{test} [{runtime}]: {:.2?}", start.elapsed());
}

for_each_runtime!(
    echo_flow,
    time_flow,
    broadcast_flow,
    greet_flow,
    stamp_flow,
    half_close_through_the_echo_route,
    half_close_through_a_static_forward,
    a_stalled_stream_stalls_alone,
    bulk_256_mib_through_a_static_forward,
    a_thousand_concurrent_streams,
    overlong_prefix,
    unknown_route,
    binary_garbage,
    unfinished_prefix,
    wrong_secret,
    remote_restart,
);
