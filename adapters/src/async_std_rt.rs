//! [`Runtime`] for async-std.
//!
//! async-std is deprecated upstream in favour of smol. It stays supported here for
//! embedders already on it; new code should prefer [`SmolRuntime`](crate::SmolRuntime).

use crate::runtime::Runtime;
use async_std::net::{TcpListener, TcpStream, UdpSocket};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant as StdInstant;

/// The async-std runtime: tasks run on async-std's global executor, sockets are
/// `async_std::net` types.
///
/// ```no_run
/// use switchyard_adapters::{AsyncStdRuntime, Runtime};
/// let rt = AsyncStdRuntime;
/// rt.block_on(async { /* start drivers here */ });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    type UdpSocket = UdpSocket;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(future));
    }

    fn sleep_until(&self, deadline: StdInstant) -> impl Future<Output = ()> + Send + 'static {
        async_std::task::sleep(deadline.saturating_duration_since(StdInstant::now()))
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        async_std::task::block_on(future)
    }

    fn tcp_listen(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpListener>> + Send {
        std::future::ready(crate::runtime::bind_listener(addr).map(TcpListener::from))
    }

    fn tcp_connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }

    fn adopt_tcp(&self, stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream::from(stream))
    }

    fn udp_bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<UdpSocket>> + Send {
        UdpSocket::bind(addr)
    }
}

crate::runtime::std_like_socket_impls!(TcpStream, TcpListener, UdpSocket);
