//! The small runtime trait the driver is written against.
//!
//! The driver needs very little from an async runtime: spawn a detached task, sleep until
//! an instant, read the clock, and open TCP listeners, TCP connections and UDP sockets. Each
//! supported runtime implements [`Runtime`] with its own socket types
//! ([`SmolRuntime`](crate::SmolRuntime), [`AsyncStdRuntime`](crate::AsyncStdRuntime)); the
//! socket traits below add the few socket operations the driver uses beyond
//! `AsyncRead`/`AsyncWrite`.
//!
//! To run the driver on another runtime, implement these four traits for it; nothing else
//! in the crate changes.

use futures_lite::io::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::Instant as StdInstant;

/// An async runtime the driver can run on.
///
/// All methods may be called from any thread, inside or outside the runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream. Cloning yields another handle to the same socket, so the
    /// driver can read and write it from two tasks.
    type TcpStream: AsyncTcpStream;
    /// A listening TCP socket.
    type TcpListener: AsyncTcpListener<Stream = Self::TcpStream>;
    /// A bound UDP socket.
    type UdpSocket: AsyncUdpSocket;

    /// Runs `future` to completion in the background. The driver never joins its tasks:
    /// they end on their own when their connection or the driver ends.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Runs `future` on an event loop of its own where the runtime has one loop per
    /// thread ([`MioRuntime`](crate::MioRuntime) and [`SmolRuntime`](crate::SmolRuntime):
    /// a new thread, whose loop also runs every task `future` spawns), else like
    /// [`Runtime::spawn`] (async-std's executor shares its threads among all tasks). This
    /// is how several drivers use several cores. Fails only if a thread cannot be started.
    fn spawn_on_new_loop<F>(&self, future: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(future);
        Ok(())
    }

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: StdInstant) -> impl Future<Output = ()> + Send + 'static;

    /// The current time. The driver maps it to `switchyard_core::Instant` as the time
    /// elapsed since the driver started.
    fn now(&self) -> StdInstant {
        StdInstant::now()
    }

    /// Runs `future` on the current thread until it completes, driving the runtime.
    /// For `main` functions and tests; never call it from inside a task.
    fn block_on<F: Future>(&self, future: F) -> F::Output;

    /// Binds a TCP listener to `addr`.
    fn tcp_listen(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::TcpListener>> + Send;

    /// Opens a TCP connection to `addr`.
    fn tcp_connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;

    /// Takes over a connected std stream (made non-blocking here), e.g. one another thread
    /// accepted. On [`MioRuntime`](crate::MioRuntime) the socket joins the event loop of the
    /// calling thread, so call it where the stream will be used (the driver does so in its
    /// machine task).
    fn adopt_tcp(&self, stream: std::net::TcpStream) -> io::Result<Self::TcpStream>;

    /// Binds a UDP socket to `addr`.
    fn udp_bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::UdpSocket>> + Send;
}

/// The socket operations the driver needs on a TCP stream, beyond reading and writing.
pub trait AsyncTcpStream: AsyncRead + AsyncWrite + Clone + Unpin + Send + Sync + 'static {
    /// The local address of the socket.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Sets `TCP_NODELAY` (the driver turns it on for every stream: it batches writes
    /// itself, so Nagle's delay would only add latency).
    fn set_nodelay(&self, on: bool) -> io::Result<()>;
    /// Shuts down one or both directions; affects every clone.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// Sets `SO_LINGER` to zero, so that closing the socket resets the connection (RST)
    /// instead of sending FIN. Used to abort a connection.
    fn set_linger_zero(&self) -> io::Result<()>;
    /// Whether [`AsyncTcpStream::readable`] waits for the socket. The driver lets a
    /// quiet connection wait there without its read buffer only on runtimes where it
    /// does; elsewhere connections wait inside their reads.
    const WAITS_READABLE: bool = false;
    /// Waits until a read would not block (bytes, the end of stream or an error are
    /// there), without reading. By default (a runtime that cannot tell) it is ready at
    /// once.
    fn readable(&self) -> impl Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }
}

/// A listening TCP socket.
pub trait AsyncTcpListener: Send + Sync + 'static {
    /// The stream type accepted connections come as.
    type Stream;
    /// Waits for the next inbound connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_;
    /// The address the listener is bound to (with the real port when bound to port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A bound UDP socket.
pub trait AsyncUdpSocket: Send + Sync + 'static {
    /// Sends one datagram to `to`.
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>> + Send + 'a;
    /// Waits for one datagram; returns its length and source.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a;
    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Accept-queue length of every listener: connections the kernel completes before the
/// driver accepts them. std's default of 128 drops SYNs when a thousand clients connect at
/// once (each dropped SYN costs the client a 1 s retransmission); the kernel still caps it
/// at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A non-blocking std listener bound to `addr` with a [`LISTEN_BACKLOG`]-deep accept queue,
/// ready to hand to any runtime's `TcpListener` conversion. Runtimes use this instead of
/// their own `bind`, which keeps std's backlog of 128.
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does on Unix: a restarted server can rebind while old connections linger.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Sets `SO_LINGER = 0` on any socket the OS can hand out a descriptor for: a ready-made
/// [`AsyncTcpStream::set_linger_zero`] for runtimes whose streams implement `AsFd`.
#[cfg(unix)]
pub fn set_linger_zero<S: std::os::fd::AsFd>(socket: &S) -> io::Result<()> {
    socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO))
}

/// Sets `SO_LINGER = 0` on any socket the OS can hand out a handle for: a ready-made
/// [`AsyncTcpStream::set_linger_zero`] for runtimes whose streams implement `AsSocket`.
#[cfg(windows)]
pub fn set_linger_zero<S: std::os::windows::io::AsSocket>(socket: &S) -> io::Result<()> {
    socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO))
}

/// Locks `m`, taking the data even if a thread panicked while holding it: no critical
/// section in this crate can panic half-way, so a poisoned lock still holds consistent data.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with `value` in the thread-local `slot`, and empties the slot when `f`
/// returns or panics: how a runtime's `run_here` tells the code it runs which executor or
/// loop this thread belongs to.
#[cfg(any(feature = "smol", feature = "mio"))]
pub(crate) fn with_thread_slot<T: 'static, R>(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    /// Empties the slot on the way out, even by a panic.
    struct Clear<T: 'static>(&'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>);
    impl<T: 'static> Drop for Clear<T> {
        fn drop(&mut self) {
            let value = self.0.with(|slot| slot.borrow_mut().take());
            drop(value);
        }
    }
    slot.with(|s| *s.borrow_mut() = Some(value));
    let _clear = Clear(slot);
    f()
}

/// Implements [`AsyncTcpStream`], [`AsyncTcpListener`] and [`AsyncUdpSocket`] for a
/// runtime's socket types whose inherent methods already have the std-like signatures
/// (smol's and async-std's `net` types): each trait method calls its namesake.
#[cfg(any(feature = "smol", feature = "async-std"))]
macro_rules! std_like_socket_impls {
    ($tcp:ty, $listener:ty, $udp:ty) => {
        impl $crate::runtime::AsyncTcpStream for $tcp {
            fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                <$tcp>::local_addr(self)
            }
            fn set_nodelay(&self, on: bool) -> std::io::Result<()> {
                <$tcp>::set_nodelay(self, on)
            }
            fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
                <$tcp>::shutdown(self, how)
            }
            fn set_linger_zero(&self) -> std::io::Result<()> {
                $crate::runtime::set_linger_zero(self)
            }
        }

        impl $crate::runtime::AsyncTcpListener for $listener {
            type Stream = $tcp;
            fn accept(
                &self,
            ) -> impl std::future::Future<Output = std::io::Result<($tcp, std::net::SocketAddr)>> + Send + '_ {
                <$listener>::accept(self)
            }
            fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                <$listener>::local_addr(self)
            }
        }

        impl $crate::runtime::AsyncUdpSocket for $udp {
            fn send_to<'a>(
                &'a self,
                buf: &'a [u8],
                to: std::net::SocketAddr,
            ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a {
                <$udp>::send_to(self, buf, to)
            }
            fn recv_from<'a>(
                &'a self,
                buf: &'a mut [u8],
            ) -> impl std::future::Future<Output = std::io::Result<(usize, std::net::SocketAddr)>> + Send + 'a {
                <$udp>::recv_from(self, buf)
            }
            fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                <$udp>::local_addr(self)
            }
        }
    };
}
#[cfg(any(feature = "smol", feature = "async-std"))]
pub(crate) use std_like_socket_impls;

/// The tests every runtime with a `run_here` (one thread for all its tasks) must pass:
/// expand it in the runtime's test module with the runtime's value.
#[cfg(test)]
macro_rules! run_here_tests {
    ($rt:expr) => {
        #[test]
        fn run_here_keeps_spawned_tasks_on_the_calling_thread() {
            let rt = $rt;
            let caller = std::thread::current().id();
            let (tx, rx) = async_channel::bounded(1);
            let ran_on = rt.run_here(async move {
                // A task that spawns another: both must stay on this thread.
                rt.spawn(async move {
                    rt.spawn(async move {
                        let _ = tx.send(std::thread::current().id()).await;
                    });
                });
                rx.recv().await.expect("the inner task runs")
            });
            assert_eq!(ran_on, caller);
        }

        #[test]
        fn outside_run_here_spawned_tasks_run_on_another_thread() {
            let rt = $rt;
            let caller = std::thread::current().id();
            let (tx, rx) = async_channel::bounded(1);
            rt.spawn(async move {
                let _ = tx.send(std::thread::current().id()).await;
            });
            // The task runs on the runtime's own thread, even while this thread blocks on
            // something else entirely.
            let ran_on = rx.recv_blocking().expect("the task runs without this thread");
            assert_ne!(ran_on, caller);
        }
    };
}
#[cfg(test)]
pub(crate) use run_here_tests;
