//! [`Runtime`] for smol, the default runtime.

use crate::runtime::{AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, Runtime};
use smol::net::{TcpListener, TcpStream, UdpSocket};
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::Instant as StdInstant;

/// The smol runtime: tasks run on smol's global executor (its thread count comes from the
/// `SMOL_THREADS` environment variable, default 1), sockets are `smol::net` types.
///
/// ```no_run
/// use switchyard_adapters::{Runtime, SmolRuntime};
/// let rt = SmolRuntime;
/// rt.block_on(async { /* start drivers here */ });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    type UdpSocket = UdpSocket;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }

    fn sleep_until(&self, deadline: StdInstant) -> impl Future<Output = ()> + Send + 'static {
        let timer = smol::Timer::at(deadline);
        async move {
            timer.await;
        }
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        smol::block_on(future)
    }

    fn tcp_listen(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpListener>> + Send {
        std::future::ready(crate::runtime::bind_listener(addr).and_then(TcpListener::try_from))
    }

    fn tcp_connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    fn udp_bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<UdpSocket>> + Send {
        UdpSocket::bind(addr)
    }
}

impl AsyncTcpStream for TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, on)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
    fn set_linger_zero(&self) -> io::Result<()> {
        crate::runtime::set_linger_zero(self)
    }
}

impl AsyncTcpListener for TcpListener {
    type Stream = TcpStream;
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send + '_ {
        TcpListener::accept(self)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

impl AsyncUdpSocket for UdpSocket {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        UdpSocket::send_to(self, buf, to)
    }
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a {
        UdpSocket::recv_from(self, buf)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}
