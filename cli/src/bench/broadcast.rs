//! `switchyard bench broadcast`: fan-out of the broadcast service to many members, and the
//! same load on nats-server (one subject, a subscriber per member) beside it.

use super::ends::{free_port, loopback, Proc};
use super::os::{peak_rss, raise_nofile};
use super::stats::{megabytes, micros, percentile};
use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_adapters::{AsyncTcpStream, Runtime};
use switchyard_core::Env;

/// How long connecting, subscribing and each run may take before the bench gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most latency samples kept in a run: past this, every k-th message's deliveries are
/// sampled (the same messages at every member), so memory stays bounded at any size.
const MAX_SAMPLES: u64 = 4_000_000;
/// The NATS subject every member subscribes to.
const SUBJECT: &str = "bench";

/// Measure the broadcast service's fan-out on loopback: deliveries per second and
/// publish-to-delivery latency, beside nats-server under the same load.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "broadcast",
    example = "switchyard bench broadcast\nswitchyard bench broadcast --members 200 --publishers 4 --messages 500\nswitchyard bench broadcast --against nats\nswitchyard bench broadcast --against nats=/usr/local/bin/nats-server",
    note = "The broadcast service runs as a child process (`switchyard serve broadcast`) on 127.0.0.1. --members members connect and stay silent; --publishers more members each send --messages lines, `p<publisher> <seq> <nanoseconds>`, as fast as the window lets them: a publisher sends message k only once every member has message k - --window of it, so the figures are what the service sustains without a backlog building up (a member that still falls 1 MiB behind is disconnected by the service as a slow consumer, and counted as lost). Members are tasks of this process on --runtime (one thread under mio).

Deliveries per second: messages times members over the time from the first send to the last delivery. Latency: from the send (the time in the message) to its arrival at each member, every delivery counted (past 4 million deliveries, those of every k-th message); p50 and p99 are nearest-rank percentiles. Server RSS peak: the server's VmHWM after the run.

--against nats starts nats-server (the Debian package `nats-server`, found on the PATH, or nats=PATH) on 127.0.0.1 and runs the same load on it: each member a NATS connection subscribed to one subject, each publisher a connection publishing to it. Everything talks to 127.0.0.1 only, every wait is bounded, and the command stops by itself. Build with --release."
)]
pub struct BroadcastCmd {
    /// members that receive every message (default 1000)
    #[argh(option, default = "1000")]
    members: usize,

    /// members that publish, besides those (default 1)
    #[argh(option, default = "1")]
    publishers: usize,

    /// messages each publisher sends (default 2000)
    #[argh(option, default = "2000")]
    messages: u64,

    /// most messages of a publisher not yet delivered to every member (default 16)
    #[argh(option, default = "16")]
    window: u64,

    /// also run the load on nats-server: `nats`, or `nats=PATH` for its executable
    #[argh(option)]
    against: Option<String>,
}

/// The two servers the same load runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// Switchyard's broadcast service.
    Broadcast,
    /// nats-server, one subject.
    Nats,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Broadcast => "broadcast",
            System::Nats => "nats-server",
        }
    }
}

/// One run's figures.
struct Figures {
    deliveries_per_sec: f64,
    p50: Duration,
    p99: Duration,
    server_peak: u64,
    lost: usize,
}

impl Program for BroadcastCmd {
    async fn run<R: Runtime>(self, rt: R, _env: Env) -> Result<ExitCode, CliError> {
        if self.members == 0 || self.publishers == 0 || self.messages == 0 || self.window == 0 {
            return Err(CliError::usage("--members, --publishers, --messages and --window must be at least 1"));
        }
        let nats = match self.against.as_deref() {
            None => None,
            Some("nats") => Some(PathBuf::from("nats-server")),
            Some(other) => match other.strip_prefix("nats=") {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => return Err(CliError::usage(format!("--against {other:?}: the one system to measure against is nats (or nats=PATH)"))),
            },
        };
        if let Some(exe) = &nats {
            // Before the service's run, so that a missing nats-server costs no waiting.
            let found = std::process::Command::new(exe).arg("--version").output();
            if let Err(e) = found {
                return Err(CliError::new(format!("cannot start nats-server ({}): {e}", exe.display())));
            }
        }
        // Every member is a connection of this process and of the server.
        let want = (self.members + self.publishers) as u64 + 256;
        let have = raise_nofile(want);
        if have < want {
            return Err(CliError::new(format!("--members {} needs {want} open files; the limit is {have}", self.members)));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        say!(
            "switchyard bench broadcast: {} members, {} publisher(s) x {} messages, {} in flight per publisher; loopback, {cpus} CPUs",
            self.members,
            self.publishers,
            self.messages,
            self.window
        );
        say!("\n  {:<12} {:>13} {:>10} {:>10} {:>16} {:>13}", "system", "deliveries/s", "p50", "p99", "server RSS peak", "members lost");
        let mut results = Vec::new();
        for (system, exe) in [(System::Broadcast, None), (System::Nats, nats)] {
            if system == System::Nats && exe.is_none() {
                continue;
            }
            let figures = self.measure(&rt, system, exe).await?;
            say!(
                "  {:<12} {:>13.0} {:>10} {:>10} {:>16} {:>13}",
                system.name(),
                figures.deliveries_per_sec,
                micros(figures.p50.as_secs_f64() * 1e6),
                micros(figures.p99.as_secs_f64() * 1e6),
                megabytes(figures.server_peak as f64),
                figures.lost
            );
            results.push(figures);
        }
        if let [ours, nats] = &results[..] {
            let ratio = ours.deliveries_per_sec / nats.deliveries_per_sec.max(1e-9);
            let verdict = if ratio >= 1.0 { "met" } else { "MISSED" };
            say!("\nagainst nats-server: deliveries/s {ratio:.2}x   target >= 1.00x   {verdict}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl BroadcastCmd {
    /// Starts `system`'s server, connects the members and publishers, runs the load and
    /// stops the server.
    async fn measure<R: Runtime>(&self, rt: &R, system: System, exe: Option<PathBuf>) -> Result<Figures, CliError> {
        let addr = loopback(free_port()?);
        let mut server = start_server(system, exe, addr)?;
        let shared = Arc::new(Shared::new(self.members, self.publishers, self.messages));
        let (done_tx, done_rx) = async_channel::bounded::<()>(self.members);
        for member in 0..self.members {
            let stream = connect(rt, addr).await?;
            let (shared, done) = (shared.clone(), done_tx.clone());
            let messages = self.messages;
            rt.spawn(async move {
                let _ = subscribe(system, stream, member, &shared, messages).await;
                let _ = done.send(()).await;
            });
        }
        self.wait(rt, "members to join", || shared.joined.load(Ordering::Acquire) >= self.members, &mut server).await?;
        let mut streams = Vec::new();
        for _ in 0..self.publishers {
            streams.push(connect(rt, addr).await?);
        }
        for (p, stream) in streams.into_iter().enumerate() {
            let shared = shared.clone();
            let (messages, window) = (self.messages, self.window);
            rt.spawn(async move {
                if let Err(e) = publish(system, stream, p, &shared, messages, window).await {
                    *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            });
        }
        let ready = || shared.ready.load(Ordering::Acquire) >= self.members;
        self.wait(rt, "members to hear every publisher", ready, &mut server).await?;
        shared.go.0.close();
        let budget = SETUP_TIMEOUT + Duration::from_millis(self.messages * self.publishers as u64 * self.members as u64 / 1000);
        let deadline = Instant::now() + budget;
        for _ in 0..self.members {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = async {
                rt.sleep_until(Instant::now() + left).await;
                Err(())
            };
            if futures_lite::future::or(async { done_rx.recv().await.map_err(|_| ()) }, timeout).await.is_err() {
                let got = shared.deliveries.load(Ordering::Acquire);
                return Err(CliError::new(format!("{}: {got} of {} deliveries within {budget:?}", system.name(), self.expected())));
            }
        }
        if let Some(e) = shared.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(e);
        }
        let server_peak = peak_rss(server.pid()).unwrap_or(0);
        let took = Duration::from_nanos(shared.last_delivery.load(Ordering::Acquire).saturating_sub(shared.first_send.load(Ordering::Acquire)));
        let mut samples = std::mem::take(&mut *shared.samples.lock().unwrap_or_else(|e| e.into_inner()));
        samples.sort_unstable();
        let delivered = shared.deliveries.load(Ordering::Acquire);
        Ok(Figures {
            deliveries_per_sec: delivered as f64 / took.as_secs_f64().max(1e-9),
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            server_peak,
            lost: shared.lost.load(Ordering::Acquire),
        })
    }

    fn expected(&self) -> u64 {
        self.messages * self.publishers as u64 * self.members as u64
    }

    /// Waits until `ok()` (checked every millisecond), the server exits, or the setup
    /// timeout.
    async fn wait<R: Runtime>(&self, rt: &R, what: &str, ok: impl Fn() -> bool, server: &mut Proc) -> Result<(), CliError> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while !ok() {
            if let Some(status) = server.exited() {
                return Err(server.failure(status));
            }
            if Instant::now() > deadline {
                return Err(CliError::new(format!("timed out after {SETUP_TIMEOUT:?} waiting for {what}")));
            }
            rt.sleep_until(Instant::now() + Duration::from_millis(1)).await;
        }
        Ok(())
    }
}

/// The server of `system` on `addr`, once it accepts connections.
fn start_server(system: System, exe: Option<PathBuf>, addr: SocketAddr) -> Result<Proc, CliError> {
    let mut server = match system {
        System::Broadcast => {
            let args = ["serve", "broadcast", "--listen", &addr.to_string()].map(String::from);
            Proc::spawn("the broadcast service", &args)?
        }
        System::Nats => {
            let exe = exe.expect("nats runs only with an executable");
            let args = ["-a", "127.0.0.1", "-p", &addr.port().to_string()].map(String::from);
            Proc::spawn_from(&exe, "nats-server", &args)?
        }
    };
    server.wait_listening(addr, SETUP_TIMEOUT)?;
    Ok(server)
}

async fn connect<R: Runtime>(rt: &R, addr: SocketAddr) -> Result<R::TcpStream, CliError> {
    let stream = rt.tcp_connect(addr).await.map_err(|e| CliError::new(format!("cannot connect to {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// What the members and publishers share.
struct Shared {
    start: Instant,
    publishers: usize,
    /// For each member and publisher, one more than the last sequence number it has.
    got: Vec<AtomicU64>,
    /// Members that joined, members that heard every publisher's first line.
    joined: AtomicUsize,
    ready: AtomicUsize,
    /// Closed once every member is ready: publishers start.
    go: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Per publisher: a member got more of its messages (a wake-up for a publisher
    /// waiting for its window to open; one pending at most).
    progress: Vec<(async_channel::Sender<()>, async_channel::Receiver<()>)>,
    deliveries: AtomicU64,
    /// Nanoseconds since `start`.
    first_send: AtomicU64,
    last_delivery: AtomicU64,
    /// Members whose connection ended before they had every message.
    lost: AtomicUsize,
    /// Publish-to-delivery latency of the deliveries of every `stride`-th message.
    samples: Mutex<Vec<Duration>>,
    stride: u64,
    failure: Mutex<Option<CliError>>,
}

impl Shared {
    fn new(members: usize, publishers: usize, messages: u64) -> Shared {
        let deliveries = messages * (members * publishers) as u64;
        Shared {
            start: Instant::now(),
            publishers,
            got: (0..members * publishers).map(|_| AtomicU64::new(0)).collect(),
            joined: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            go: async_channel::bounded(1),
            progress: (0..publishers).map(|_| async_channel::bounded(1)).collect(),
            deliveries: AtomicU64::new(0),
            first_send: AtomicU64::new(u64::MAX),
            last_delivery: AtomicU64::new(0),
            lost: AtomicUsize::new(0),
            samples: Mutex::new(Vec::new()),
            stride: deliveries.div_ceil(MAX_SAMPLES).max(1),
            failure: Mutex::new(None),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// How many messages of publisher `p` every member has.
    fn delivered_everywhere(&self, p: usize) -> u64 {
        self.got.iter().skip(p).step_by(self.publishers).map(|g| g.load(Ordering::Acquire)).min().unwrap_or(0)
    }
}

/// Splits a byte stream into lines (without `\r\n` or `\n`).
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    start: usize,
}

impl Lines {
    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn next_line(&mut self) -> Option<&[u8]> {
        let end = self.buf[self.start..].iter().position(|&b| b == b'\n')? + self.start;
        let line = &self.buf[self.start..end];
        self.start = end + 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// A bench message: `p<publisher> <seq> <nanoseconds since start>`.
fn message(p: usize, seq: u64, at: u64) -> String {
    format!("p{p} {seq} {at}")
}

fn parse_message(text: &[u8]) -> Option<(usize, u64, u64)> {
    let text = std::str::from_utf8(text).ok()?.strip_prefix('p')?;
    let mut fields = text.split(' ');
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// One member: joins (broadcast) or subscribes (NATS), then reads until it has every
/// message of every publisher.
async fn subscribe<S: AsyncTcpStream>(
    system: System,
    mut stream: S,
    member: usize,
    shared: &Shared,
    messages: u64,
) -> Result<(), ()> {
    let publishers = shared.publishers;
    if system == System::Nats {
        let hello = format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {SUBJECT} 1\r\nPING\r\n");
        stream.write_all(hello.as_bytes()).await.map_err(|_| ())?;
    }
    let (mut lines, mut buf) = (Lines::default(), vec![0u8; 64 * 1024]);
    let (mut joined, mut heard, mut complete) = (false, 0, 0);
    let mut samples = Vec::with_capacity((messages.div_ceil(shared.stride) as usize).saturating_mul(publishers));
    let mut payload_next = false;
    let result = loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break Err(()),
            Ok(n) => n,
        };
        lines.push(&buf[..n]);
        let now = shared.now();
        let mut pong = false;
        while let Some(line) = lines.next_line() {
            let text = match system {
                System::Nats if payload_next => {
                    payload_next = false;
                    line
                }
                System::Nats => {
                    payload_next = line.starts_with(b"MSG ");
                    if line == b"PING" {
                        pong = true;
                    } else if line == b"PONG" && !joined {
                        joined = true;
                        shared.joined.fetch_add(1, Ordering::AcqRel);
                    }
                    continue;
                }
                System::Broadcast => {
                    if line.starts_with(b"* welcome ") && !joined {
                        joined = true;
                        shared.joined.fetch_add(1, Ordering::AcqRel);
                    }
                    // `NAME: TEXT`: the text of a member's line.
                    match line.iter().position(|&b| b == b':') {
                        Some(i) if !line.starts_with(b"* ") => line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]),
                        _ => continue,
                    }
                }
            };
            if text == b"sync" {
                heard += 1;
                if heard == publishers {
                    shared.ready.fetch_add(1, Ordering::AcqRel);
                }
                continue;
            }
            let Some((p, seq, at)) = parse_message(text) else { continue };
            let Some(got) = shared.got.get(member * publishers + p) else { continue };
            got.store(seq + 1, Ordering::Release);
            let _ = shared.progress[p].0.try_send(());
            if seq % shared.stride == 0 {
                samples.push(Duration::from_nanos(now.saturating_sub(at)));
            }
            shared.deliveries.fetch_add(1, Ordering::AcqRel);
            if seq + 1 == messages {
                complete += 1;
            }
        }
        if pong && stream.write_all(b"PONG\r\n").await.is_err() {
            break Err(());
        }
        if complete == publishers {
            shared.last_delivery.fetch_max(now, Ordering::AcqRel);
            break Ok(());
        }
    };
    if result.is_err() {
        shared.lost.fetch_add(1, Ordering::AcqRel);
    }
    shared.samples.lock().unwrap_or_else(|e| e.into_inner()).extend(samples);
    result
}

/// One publisher: announces itself with `sync`, waits for the start, then sends its
/// messages within the window, and meanwhile drains what the server sends it.
async fn publish<S: AsyncTcpStream>(
    system: System,
    mut stream: S,
    p: usize,
    shared: &Shared,
    messages: u64,
    window: u64,
) -> Result<(), CliError> {
    let frame = |text: &str| match system {
        System::Broadcast => format!("{text}\n"),
        System::Nats => format!("PUB {SUBJECT} {}\r\n{text}\r\n", text.len()),
    };
    let fail = |e: std::io::Error| CliError::new(format!("publisher {p}: {e}"));
    let mut hello = String::new();
    if system == System::Nats {
        hello.push_str("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
    }
    hello.push_str(&frame("sync"));
    stream.write_all(hello.as_bytes()).await.map_err(fail)?;
    // What comes back (others' lines, notices, NATS pings) is read and dropped, so the
    // server never counts a publisher as a slow consumer.
    let mut reader = stream.clone();
    let drain = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = Lines::default();
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => lines.push(&buf[..n]),
            }
            while let Some(line) = lines.next_line() {
                if line == b"PING" {
                    let _ = reader.write_all(b"PONG\r\n").await;
                }
            }
        }
    };
    let send = async {
        // Returns once the start closes the channel.
        let _ = shared.go.1.recv().await;
        let mut seq = 0;
        let mut batch = String::new();
        while seq < messages {
            let allowed = (shared.delivered_everywhere(p) + window).min(messages);
            if allowed <= seq {
                // A member's progress wakes this; one that came since the check is pending.
                let _ = shared.progress[p].1.recv().await;
                continue;
            }
            let at = shared.now();
            shared.first_send.fetch_min(at, Ordering::AcqRel);
            batch.clear();
            for s in seq..allowed {
                batch.push_str(&frame(&message(p, s, at)));
            }
            stream.write_all(batch.as_bytes()).await.map_err(fail)?;
            seq = allowed;
        }
        // Keep the connection open until the run is over: closing it early would be a
        // member leaving, announced to everyone.
        std::future::pending::<()>().await;
        Ok(())
    };
    futures_lite::future::or(async { drain.await; Err(CliError::new(format!("publisher {p}: the server closed the connection"))) }, send).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_newlines_and_drop_carriage_returns() {
        let mut lines = Lines::default();
        lines.push(b"MSG bench 1 5\r\npay");
        assert_eq!(lines.next_line(), Some(&b"MSG bench 1 5"[..]));
        assert_eq!(lines.next_line(), None);
        lines.push(b"load\r\nguest1: p0 1 2\n");
        assert_eq!(lines.next_line(), Some(&b"payload"[..]));
        assert_eq!(lines.next_line(), Some(&b"guest1: p0 1 2"[..]));
        assert_eq!(lines.next_line(), None);
    }

    #[test]
    fn messages_read_back_as_written() {
        assert_eq!(parse_message(message(3, 17, 123_456).as_bytes()), Some((3, 17, 123_456)));
        assert_eq!(parse_message(b"sync"), None);
        assert_eq!(parse_message(b"p1 2"), None);
    }
}
