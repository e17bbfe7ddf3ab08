//! `switchyard bench mesh`: message rate between users on two mesh servers, and the
//! latency one server-to-server hop adds.

use super::ends::{free_port, loopback, Proc};
use super::stats::{micros, percentile};
use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use switchyard_adapters::Runtime;
use switchyard_core::mesh::reader::MsgReader;
use switchyard_core::wire::mesh::{MeshMsg, ReceiptStatus};
use switchyard_core::{Env, Rng};
use uuid::Uuid;

/// How long any single wait may take before the benchmark gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Measure the P2P mesh on loopback: messages per second and the latency of a hop.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "mesh",
    example = "switchyard bench mesh\nswitchyard bench mesh --messages 20000 --round-trips 2000",
    note = "Two mesh servers run as child processes (`switchyard mesh server`) on 127.0.0.1, linked to each other. Users are blocking clients of this process speaking the mesh protocol.

Rate: a sender on server 1 sends --messages messages to a receiver on server 2 with up to --window of them awaiting receipts; the time runs from the first send to the last receipt. It is measured for a receiver on the same server too.

Latency: one message at a time, from the send to the receiver's copy arriving: --round-trips of them to a receiver on the same server (no hop between servers) and to one on the other server (one hop). p50 and p99 are nearest-rank percentiles; the hop adds the difference. Everything talks to 127.0.0.1 only, every wait is bounded, and the command stops by itself. Build with --release."
)]
pub struct MeshCmd {
    /// messages per rate run (default 50000)
    #[argh(option, default = "50_000")]
    messages: usize,

    /// most messages awaiting receipts in a rate run (default 256)
    #[argh(option, default = "256")]
    window: usize,

    /// timed messages per latency run (default 5000)
    #[argh(option, default = "5000")]
    round_trips: usize,
}

impl Program for MeshCmd {
    async fn run<R: Runtime>(self, _rt: R, env: Env) -> Result<ExitCode, CliError> {
        if self.messages == 0 || self.window == 0 || self.round_trips == 0 {
            return Err(CliError::usage("--messages, --window and --round-trips must be at least 1"));
        }
        let mut rng = env.rng;
        let (a, b) = (loopback(free_port()?), loopback(free_port()?));
        let _servers = [server(a, b)?, server(b, a)?];
        let sender = User::register(a, "sender")?;
        let near = User::register(a, "near")?;
        let far = User::register(b, "far")?;
        // Registration on one server completes once the other has answered the claim: both
        // know all three users now. One message each way proves the link.
        for receiver in [&near, &far] {
            sender.warm_up(receiver, &mut rng)?;
        }
        say!("switchyard bench mesh: two servers on 127.0.0.1 ({a}, {b}), users as blocking clients");

        say!("\nrate ({} messages, {} awaiting receipts at most)", self.messages, self.window);
        for (label, receiver) in [("same server", &near), ("across servers", &far)] {
            let took = rate_run(&sender, receiver, self.messages, self.window, &mut rng)?;
            let per_sec = self.messages as f64 / took.as_secs_f64().max(1e-9);
            say!("  {label:<15} {per_sec:>10.0} messages/s  ({:.2} s)", took.as_secs_f64());
        }

        say!("\nlatency, send to delivery ({} messages, one at a time)", self.round_trips);
        let mut near_samples = latency_run(&sender, &near, self.round_trips, &mut rng)?;
        let mut far_samples = latency_run(&sender, &far, self.round_trips, &mut rng)?;
        near_samples.sort_unstable();
        far_samples.sort_unstable();
        for p in [50.0, 99.0] {
            let (n, f) = (percentile(&near_samples, p), percentile(&far_samples, p));
            let added = f.as_secs_f64() * 1e6 - n.as_secs_f64() * 1e6;
            say!(
                "  p{p:<4} same server {:>9}  across servers {:>9}  one hop adds {added:+.1} µs",
                micros(n.as_secs_f64() * 1e6),
                micros(f.as_secs_f64() * 1e6)
            );
        }
        let p99 = percentile(&far_samples, 99.0);
        let verdict = if p99 <= Duration::from_millis(1) { "met" } else { "MISSED" };
        say!("\ntarget: p99 across servers <= 1 ms: {} {verdict}", micros(p99.as_secs_f64() * 1e6));
        Ok(ExitCode::SUCCESS)
    }
}

/// A mesh server child process on `listen`, seeded with `peer`, once it listens.
fn server(listen: SocketAddr, peer: SocketAddr) -> Result<Proc, CliError> {
    let args = ["mesh", "server", "--listen", &listen.to_string(), "--peer", &peer.to_string()].map(String::from);
    let mut proc = Proc::spawn("a mesh server", &args)?;
    proc.wait_listening(listen, IO_TIMEOUT)?;
    Ok(proc)
}

/// A registered user: a blocking connection speaking the mesh protocol.
struct User {
    name: String,
    stream: TcpStream,
    reader: std::sync::Mutex<MsgReader>,
    server: SocketAddr,
}

impl User {
    /// Connects to `server` and registers `name`, retrying while the servers are still
    /// linking (a claim needs the peer's answer, or its timeout).
    fn register(server: SocketAddr, name: &str) -> Result<User, CliError> {
        let stream =
            TcpStream::connect(server).map_err(|e| CliError::new(format!("cannot connect to {server}: {e}")))?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(CliError::new)?;
        let user = User { name: name.to_owned(), stream, reader: Default::default(), server };
        user.write(&MeshMsg::Register { name: name.to_owned() })?;
        match user.next()? {
            MeshMsg::Registered { .. } => Ok(user),
            other => Err(CliError::new(format!("registering {name} at {server}: {other:?}"))),
        }
    }

    fn write(&self, msg: &MeshMsg) -> Result<(), CliError> {
        (&self.stream).write_all(&msg.to_bytes()).map_err(|e| CliError::new(format!("write to {}: {e}", self.server)))
    }

    /// The next message from the server, skipping pings (answered).
    fn next(&self) -> Result<MeshMsg, CliError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(msg) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).next_msg() {
                let msg = msg.map_err(|e| CliError::new(format!("from {}: {e}", self.server)))?;
                if let MeshMsg::Ping { token } = msg {
                    self.write(&MeshMsg::Pong { token })?;
                    continue;
                }
                return Ok(msg);
            }
            let n =
                (&self.stream).read(&mut buf).map_err(|e| CliError::new(format!("read from {}: {e}", self.server)))?;
            if n == 0 {
                return Err(CliError::new(format!("{} closed the connection", self.server)));
            }
            self.reader.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
        }
    }

    /// Sends a message to `receiver` until one is delivered (the servers may still be
    /// linking and sharing who is where), and waits for it to arrive.
    fn warm_up(&self, receiver: &User, rng: &mut Rng) -> Result<(), CliError> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let id = rng.uuid();
            self.write(&MeshMsg::Send { id, to: receiver.name.clone(), body: "warm-up".into() })?;
            match receipt(self, id)? {
                ReceiptStatus::Delivered => return wait_deliver(receiver, id),
                ReceiptStatus::NoSuchUser if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                ReceiptStatus::NoSuchUser => {
                    return Err(CliError::new(format!("{} is unknown to the mesh after 10 s", receiver.name)))
                }
            }
        }
    }
}

fn wait_deliver(receiver: &User, id: Uuid) -> Result<(), CliError> {
    loop {
        if let MeshMsg::Deliver { id: got, .. } = receiver.next()? {
            if got == id {
                return Ok(());
            }
        }
    }
}

/// The status of the receipt for `id`.
fn receipt(sender: &User, id: Uuid) -> Result<ReceiptStatus, CliError> {
    loop {
        if let MeshMsg::Receipt { id: got, status } = sender.next()? {
            if got == id {
                return Ok(status);
            }
        }
    }
}

fn wait_receipt(sender: &User, id: Uuid) -> Result<(), CliError> {
    match receipt(sender, id)? {
        ReceiptStatus::Delivered => Ok(()),
        ReceiptStatus::NoSuchUser => Err(CliError::new("the benchmark's receiver was not found")),
    }
}

/// `count` messages from `sender` to `receiver`, at most `window` awaiting receipts; the
/// receiver is read on its own thread.
fn rate_run(sender: &User, receiver: &User, count: usize, window: usize, rng: &mut Rng) -> Result<Duration, CliError> {
    let ids: Vec<Uuid> = (0..count).map(|_| rng.uuid()).collect();
    let to = &receiver.name;
    let start = Instant::now();
    std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            for _ in 0..count {
                loop {
                    if let MeshMsg::Deliver { .. } = receiver.next()? {
                        break;
                    }
                }
            }
            Ok::<_, CliError>(())
        });
        let (mut sent, mut acked) = (0, 0);
        while acked < count {
            while sent < count && sent - acked < window {
                sender.write(&MeshMsg::Send { id: ids[sent], to: to.clone(), body: "x".repeat(64) })?;
                sent += 1;
            }
            if let MeshMsg::Receipt { status, .. } = sender.next()? {
                if status != ReceiptStatus::Delivered {
                    return Err(CliError::new("a benchmark message was not delivered"));
                }
                acked += 1;
            }
        }
        reading.join().map_err(|_| CliError::new("the receiving thread panicked"))?
    })?;
    Ok(start.elapsed())
}

/// `count` messages one at a time (plus 200 untimed first), each timed from its send to
/// its arrival at `receiver`.
fn latency_run(sender: &User, receiver: &User, count: usize, rng: &mut Rng) -> Result<Vec<Duration>, CliError> {
    const WARM_UP: usize = 200;
    let to = &receiver.name;
    let mut samples = Vec::with_capacity(count);
    for i in 0..WARM_UP + count {
        let id = rng.uuid();
        let start = Instant::now();
        sender.write(&MeshMsg::Send { id, to: to.clone(), body: "x".repeat(64) })?;
        wait_deliver(receiver, id)?;
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
        wait_receipt(sender, id)?;
    }
    Ok(samples)
}
