//! The client side of each measurement: bulk transfers, round trips, idle streams.
//!
//! Plain threads on blocking sockets, for the reason given in [`super::targets`]. Every
//! socket operation has a timeout, so a stalled tunnel fails the run instead of hanging it.

use super::targets::{Hold, Sink, IO_SIZE};
use crate::CliError;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Longest any single read, write or connect may block.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn connect(to: SocketAddr) -> Result<TcpStream, CliError> {
    let stream = TcpStream::connect_timeout(&to, IO_TIMEOUT)
        .map_err(|e| CliError::new(format!("cannot connect to {to}: {e}")))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| CliError::new(format!("cannot set timeouts on a connection to {to}: {e}")))?;
    Ok(stream)
}

/// Waits until `ready()` holds, polling, for at most `timeout`.
fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(200));
    }
    true
}

/// Sends `bytes` in total over `streams` concurrent connections to `to`, whose bytes all
/// end up in `sink`, and returns the time from the first byte written to the last byte
/// received by the sink. Connections are opened (and, through a tunnel, their streams
/// reach the sink) before the clock starts, so only the transfer is timed.
pub fn bulk(to: SocketAddr, streams: usize, bytes: u64, sink: &Sink) -> Result<Duration, CliError> {
    let tally = sink.begin(bytes);
    let conns = (0..streams).map(|_| connect(to)).collect::<Result<Vec<_>, _>>()?;
    if !wait_until(IO_TIMEOUT, || tally.accepted() >= streams) {
        return Err(CliError::new(format!("only {} of {streams} streams reached the sink", tally.accepted())));
    }
    let start = Arc::new(Barrier::new(streams));
    let share = bytes / streams as u64;
    let writers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            // The first stream also carries the remainder of an uneven split.
            let n = if i == 0 { bytes - share * (streams as u64 - 1) } else { share };
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                send(conn, n).map(|()| began)
            })
        })
        .collect();
    // Generous: even 20 MiB/s finishes in time, and a stalled transfer still ends.
    let timeout = IO_TIMEOUT + Duration::from_secs(bytes / (20 << 20));
    let outcome = tally.wait(timeout);
    // The clock starts at the first writer's first byte, as each writer saw it: with many
    // writers on few CPUs, any other thread may be scheduled late.
    let mut began = None::<Instant>;
    for writer in writers {
        let at = writer.join().map_err(|_| CliError::new("a bulk writer thread panicked"))??;
        began = Some(began.map_or(at, |b| b.min(at)));
    }
    match (outcome, began) {
        (Ok(done), Some(began)) => Ok(done.saturating_duration_since(began)),
        (_, None) => Err(CliError::new("no bulk writer ran")),
        (Err(got), _) => Err(CliError::new(format!("the sink got {got} of {bytes} bytes within {timeout:?}"))),
    }
}

/// Writes `n` bytes of a fixed pattern, then ends the stream.
fn send(mut conn: TcpStream, mut n: u64) -> Result<(), CliError> {
    let chunk: Vec<u8> = (0..IO_SIZE).map(|i| i as u8).collect();
    while n > 0 {
        let len = n.min(IO_SIZE as u64) as usize;
        conn.write_all(&chunk[..len]).map_err(|e| CliError::new(format!("bulk write failed: {e}")))?;
        n -= len as u64;
    }
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

/// Round trips not recorded before the timed ones: they warm caches, allocators and
/// TCP's state on every hop.
pub const WARM_UP: usize = 200;

/// Size of each round-trip message.
pub const MESSAGE: usize = 64;

/// Round trips each path makes before the next path takes its turn.
pub const TURN: usize = 50;

/// Times `count` round trips of a 64-byte message through each of the echoes at `paths`,
/// one outstanding at a time; returns each path's samples, sorted.
///
/// The paths take turns, [`TURN`] round trips each, rather than one after the other: a
/// virtual machine has episodes of tens of milliseconds in which every round trip is
/// several times slower (seen on the 2-core development VM about once a second, through
/// direct TCP, the tunnel and bore alike), and measured one after the other, whichever path
/// ran during one would carry it alone in its p99. Taking turns spreads such episodes over
/// every path, so what differs between their figures is the path.
pub fn round_trips(paths: &[SocketAddr], count: usize) -> Result<Vec<Vec<Duration>>, CliError> {
    let mut pingers = paths.iter().map(|&to| Pinger::connect(to)).collect::<Result<Vec<_>, _>>()?;
    for pinger in &mut pingers {
        for _ in 0..WARM_UP {
            pinger.trip()?;
        }
    }
    let mut samples: Vec<Vec<Duration>> = paths.iter().map(|_| Vec::with_capacity(count)).collect();
    let mut done = 0;
    while done < count {
        let turn = TURN.min(count - done);
        for (pinger, samples) in pingers.iter_mut().zip(&mut samples) {
            for _ in 0..turn {
                samples.push(pinger.trip()?);
            }
        }
        done += turn;
    }
    for s in &mut samples {
        s.sort_unstable();
    }
    Ok(samples)
}

/// One connection to an echo, timing round trips of numbered messages.
struct Pinger {
    to: SocketAddr,
    conn: TcpStream,
    sent: u64,
}

impl Pinger {
    fn connect(to: SocketAddr) -> Result<Pinger, CliError> {
        let conn = connect(to)?;
        conn.set_nodelay(true).map_err(|e| CliError::new(format!("cannot set TCP_NODELAY: {e}")))?;
        Ok(Pinger { to, conn, sent: 0 })
    }

    /// One round trip; an error if it fails or the reply is not the message.
    fn trip(&mut self) -> Result<Duration, CliError> {
        let (i, to) = (self.sent, self.to);
        self.sent += 1;
        let mut message = [0u8; MESSAGE];
        let mut reply = [0u8; MESSAGE];
        message[..8].copy_from_slice(&i.to_be_bytes());
        let sent = Instant::now();
        self.conn.write_all(&message).and_then(|()| self.conn.read_exact(&mut reply)).map_err(|e| {
            CliError::new(format!("round trip {i} through {to} failed: {e} (is the route's echo reachable?)"))
        })?;
        let took = sent.elapsed();
        if reply != message {
            return Err(CliError::new(format!("round trip {i} through {to} came back altered")));
        }
        Ok(took)
    }
}

/// Opens `count` connections to `to` whose far ends `hold` keeps, and returns them once
/// every one has reached the hold (through a tunnel: every stream is open end to end).
/// Closing them is up to the caller (dropping them, and the hold).
///
/// At most `IN_FLIGHT` (64) connections are on their way at once, so a listener's accept
/// backlog never overflows (an overflow costs a SYN retransmit, a second each).
pub fn idle_streams(to: SocketAddr, count: usize, hold: &Hold) -> Result<Vec<TcpStream>, CliError> {
    const IN_FLIGHT: usize = 64;
    let base = hold.count();
    let mut conns = Vec::with_capacity(count);
    while conns.len() < count {
        if !wait_until(IO_TIMEOUT, || conns.len() < hold.count() - base + IN_FLIGHT) {
            break;
        }
        conns.push(connect(to)?);
    }
    if !wait_until(IO_TIMEOUT, || hold.count() - base >= count) {
        let held = hold.count() - base;
        return Err(CliError::new(format!("only {held} of {count} idle streams reached the far end")));
    }
    Ok(conns)
}
