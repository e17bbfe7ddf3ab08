//! The servers at the far end of the tunnel (and of the direct runs): a sink that discards
//! and counts, an echo for round trips, and a hold that keeps idle connections open.
//!
//! They are plain threads on blocking std sockets, not machines under a driver: the
//! benchmark measures the tunnel, so the endpoints must be as cheap as TCP allows, and
//! the same endpoints serve the direct runs the tunnel is compared with. Their accept
//! threads live as long as the process (the benchmark is a short-lived command).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Size of each read and write the endpoints make: large, so they are never the bottleneck.
pub const IO_SIZE: usize = 256 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds a listener on an ephemeral loopback port and runs `serve` on each connection it
/// accepts, in the accept thread itself (`serve` spawns if it needs to).
fn listen(name: &str, serve: impl Fn(TcpStream) + Send + 'static) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    thread::Builder::new().name(format!("bench-{name}")).spawn(move || {
        for stream in listener.incoming().flatten() {
            serve(stream);
        }
    })?;
    Ok(addr)
}

/// One bulk transfer as the sink sees it: connections accepted, bytes counted, and the
/// instant the last expected byte arrived.
#[derive(Debug, Default)]
pub struct Tally {
    expected: u64,
    accepted: AtomicUsize,
    bytes: AtomicU64,
    done: Mutex<Option<Instant>>,
    done_cv: Condvar,
}

impl Tally {
    /// Connections the sink accepted for this transfer.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    fn add(&self, n: usize) {
        let total = self.bytes.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        if total >= self.expected {
            let mut done = lock(&self.done);
            done.get_or_insert_with(Instant::now);
            self.done_cv.notify_all();
        }
    }

    /// Waits until every expected byte has arrived, for at most `timeout`; returns when
    /// the last one did, or the bytes counted so far on a timeout.
    pub fn wait(&self, timeout: Duration) -> Result<Instant, u64> {
        let guard = lock(&self.done);
        let (guard, _) =
            self.done_cv.wait_timeout_while(guard, timeout, |d| d.is_none()).unwrap_or_else(|e| e.into_inner());
        (*guard).ok_or_else(|| self.bytes.load(Ordering::Acquire))
    }
}

/// Reads and discards everything each connection sends, counting it into the tally of
/// the transfer under way when the connection was accepted.
#[derive(Debug)]
pub struct Sink {
    pub addr: SocketAddr,
    current: Arc<Mutex<Arc<Tally>>>,
}

impl Sink {
    /// Starts the sink on an ephemeral loopback port.
    pub fn start() -> io::Result<Sink> {
        let current = Arc::new(Mutex::new(Arc::new(Tally::default())));
        let shared = current.clone();
        let addr = listen("sink", move |stream| {
            let tally = lock(&shared).clone();
            tally.accepted.fetch_add(1, Ordering::AcqRel);
            let _ = thread::Builder::new().name("bench-sink-conn".into()).spawn(move || discard(stream, &tally));
        })?;
        Ok(Sink { addr, current })
    }

    /// Begins a transfer of `expected` bytes: connections accepted from now on count into
    /// the returned tally.
    pub fn begin(&self, expected: u64) -> Arc<Tally> {
        let tally = Arc::new(Tally { expected, ..Tally::default() });
        *lock(&self.current) = tally.clone();
        tally
    }
}

fn discard(mut stream: TcpStream, tally: &Tally) {
    let mut buf = vec![0u8; IO_SIZE];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => tally.add(n),
        }
    }
}

/// Starts an echo server on an ephemeral loopback port: every byte comes straight back.
pub fn start_echo() -> io::Result<SocketAddr> {
    listen("echo", |stream| {
        let _ = thread::Builder::new().name("bench-echo-conn".into()).spawn(move || echo(stream));
    })
}

fn echo(mut stream: TcpStream) {
    // Round trips of small messages: never let Nagle hold an echo back.
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The far end of idle streams: a child process (`switchyard bench hold`) that accepts
/// connections and keeps them open without reading.
///
/// A process of its own because the open-file limit is per process (20,000 on the
/// reference machine, and an unprivileged process cannot raise it): ten thousand idle
/// streams cost the benchmark ten thousand client sockets already, and this side as many.
/// The child prints one line per connection it holds; dropping the `Hold` kills it, which
/// closes them all.
#[derive(Debug)]
pub struct Hold {
    pub addr: SocketAddr,
    held: Arc<AtomicUsize>,
    child: Mutex<Child>,
}

impl Hold {
    /// Starts the hold process and reads the address it listens on.
    pub fn start() -> io::Result<Hold> {
        let exe = std::env::current_exe()?;
        let mut child =
            Command::new(exe).args(["bench", "hold"]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout from the hold process"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().transpose()?.unwrap_or_default();
        let addr = first.trim().parse().map_err(|_| io::Error::other(format!("hold process said {first:?}")))?;
        let held = Arc::new(AtomicUsize::new(0));
        let count = held.clone();
        thread::spawn(move || {
            for _ in lines.map_while(Result::ok) {
                count.fetch_add(1, Ordering::AcqRel);
            }
        });
        Ok(Hold { addr, held, child: Mutex::new(child) })
    }

    /// The hold process's id.
    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Connections held so far.
    pub fn count(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Closes every held connection, by ending the hold process.
    pub fn release(&self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

/// The body of `switchyard bench hold`: prints the address it listens on, then one line
/// per connection it accepts and keeps, until killed (or its stdout closes).
pub fn serve_hold() -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", listener.local_addr()?)?;
    out.flush()?;
    let mut held = Vec::new();
    for stream in listener.incoming() {
        held.push(stream?);
        writeln!(out, "+")?;
        out.flush()?;
    }
    Ok(())
}

/// The three endpoints together.
#[derive(Debug)]
pub struct Targets {
    pub sink: Sink,
    pub echo: SocketAddr,
    pub hold: Hold,
}

impl Targets {
    /// Starts all three.
    pub fn start() -> io::Result<Targets> {
        Ok(Targets { sink: Sink::start()?, echo: start_echo()?, hold: Hold::start()? })
    }
}
