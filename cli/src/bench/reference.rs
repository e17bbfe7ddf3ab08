//! A reference to measure the tunnel against on the same machine: a two-hop socat chain
//! (client -> socat -> socat -> target), the simplest relay that has the tunnel's shape.
//!
//! Wall-clock figures on a shared or virtual machine move with the machine (a thread's
//! wake-up can cost 5 µs on one and 40 µs on another), so a target stated as "better than
//! tool X on the reference machine" is checked best by running tool X here too.

use super::targets::Targets;
use crate::CliError;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long socat may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Two socat relays in a row in front of the sink and in front of the echo.
#[derive(Debug)]
pub struct SocatChain {
    /// Reaches the sink through both relays.
    pub sink: SocketAddr,
    /// Reaches the echo through both relays.
    pub echo: SocketAddr,
    children: Vec<Child>,
}

impl SocatChain {
    /// Starts the relays; an error if socat is not installed or does not come up.
    pub fn start(targets: &Targets) -> Result<SocatChain, CliError> {
        let mut chain = SocatChain { sink: targets.sink.addr, echo: targets.echo, children: Vec::new() };
        chain.sink = chain.hops(targets.sink.addr)?;
        chain.echo = chain.hops(targets.echo)?;
        Ok(chain)
    }

    /// The listening relays' process ids (each forks a process per connection, which
    /// inherits the listener's CPU affinity).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Two relays in a row to `target`; returns the first relay's address.
    fn hops(&mut self, target: SocketAddr) -> Result<SocketAddr, CliError> {
        let second = self.relay(target)?;
        self.relay(second)
    }

    /// One socat relay to `to` on a free loopback port, forking a process per connection
    /// with `TCP_NODELAY` on both sides (as the tunnel has), 64 KiB transfers, and the
    /// tunnel's accept backlog (socat's default of 5 drops SYNs when 64 streams open).
    fn relay(&mut self, to: SocketAddr) -> Result<SocketAddr, CliError> {
        let port = free_port()?;
        let child = Command::new("socat")
            .args([
                "-b65536".to_string(),
                format!("TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=1024"),
                format!("TCP4:{to},nodelay"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| CliError::new(format!("cannot start socat (is it installed?): {e}")))?;
        self.children.push(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY_TIMEOUT;
        // A probe connection makes socat fork a relay that ends when the probe closes.
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(CliError::new(format!("socat did not listen on {addr} within {READY_TIMEOUT:?}")));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(addr)
    }
}

impl Drop for SocatChain {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nothing listens on right now (bound and released: another process
/// could take it before socat does, which then fails to start and is reported).
fn free_port() -> Result<u16, CliError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::new(format!("cannot find a free loopback port: {e}")))
}
