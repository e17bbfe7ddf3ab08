//! One listening port served by several drivers: an accept thread hands each connection to
//! the driver a placement rule picks ([`Handle::adopt_blocking`](crate::Handle::adopt_blocking)),
//! so N event loops share a port with one thread hop per connection and none per byte.
//!
//! ```no_run
//! # use switchyard_adapters::spread::Spread;
//! # use switchyard_core::ListenerId;
//! let spread = Spread::start(ListenerId(0), "127.0.0.1:7000".parse().unwrap(), |listener, stream, peer| {
//!     // pick a driver, then: handles[i].adopt_blocking(listener, stream, peer)
//!     drop((listener, stream, peer));
//! })
//! .unwrap();
//! println!("accepting on {}", spread.local_addr());
//! spread.stop();
//! ```

use crate::driver::listen::ACCEPT_ERROR_BACKOFF;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use switchyard_core::ListenerId;

/// An accept thread on one listener; see the [module docs](self). Stops on
/// [`Spread::stop`] or when dropped.
pub struct Spread {
    local: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spread {
    /// Binds `addr` (with the drivers' backlog) and accepts on a thread of its own until
    /// stopped, calling `place` with each connection and its peer (the driver that adopts
    /// it sets `TCP_NODELAY`, as on the connections it accepts itself). `place` may block,
    /// which holds further accepts back (the kernel queues them).
    pub fn start(
        listener: ListenerId,
        addr: SocketAddr,
        mut place: impl FnMut(ListenerId, TcpStream, SocketAddr) + Send + 'static,
    ) -> io::Result<Spread> {
        let socket: TcpListener = crate::runtime::bind_listener(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {}", crate::describe(&e))))?;
        socket.set_nonblocking(false)?;
        let local = socket.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new().name(format!("accept {local}")).spawn(move || loop {
            let accepted = socket.accept();
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => place(listener, stream, peer),
                Err(e) => {
                    tracing::warn!(%local, "accept failed: {e}");
                    std::thread::sleep(ACCEPT_ERROR_BACKOFF);
                }
            }
        })?;
        Ok(Spread { local, stopping, thread: Some(thread) })
    }

    /// The address the listener bound (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting and waits for the thread to end. Connections already placed are
    /// the drivers' and carry on.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stopping.store(true, Ordering::SeqCst);
        // A blocking accept returns only with a connection: make one, which the thread
        // drops unplaced once it sees the flag.
        let wake = SocketAddr::new(reachable(self.local.ip()), self.local.port());
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            let _ = thread.join();
        }
    }
}

impl Drop for Spread {
    fn drop(&mut self) {
        self.halt();
    }
}

/// An address that reaches a listener bound to `ip`: loopback for a wildcard.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn each_connection_is_placed_with_its_peer_and_stop_ends_the_thread() {
        let (tx, rx) = mpsc::channel();
        let spread = Spread::start(ListenerId(3), "127.0.0.1:0".parse().unwrap(), move |id, stream, peer| {
            tx.send((id, stream.peer_addr().unwrap(), peer)).unwrap();
        })
        .unwrap();
        let client = TcpStream::connect(spread.local_addr()).unwrap();
        let (id, seen, peer) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((id, seen, peer), (ListenerId(3), client.local_addr().unwrap(), client.local_addr().unwrap()));
        spread.stop();
        // The thread has ended (its `place`, holding the sender, is gone) without placing
        // the wake-up connection.
        assert!(matches!(rx.recv(), Err(mpsc::RecvError)));
    }
}
