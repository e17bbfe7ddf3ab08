//! Sockets on the event loop: mio's non-blocking sockets, each registered once with the
//! loop it was opened on, behind the runtime traits.

use super::event_loop::Shared;
use super::readiness::{Dir, Readiness};
use crate::runtime::{AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket};
use futures_lite::io::{AsyncRead, AsyncWrite};
use mio::Token;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A mio socket registered with a loop, deregistered when dropped.
struct Registered<S: mio::event::Source> {
    io: S,
    readiness: Arc<Readiness>,
    token: Token,
    owner: Arc<Shared>,
}

impl<S: mio::event::Source> Registered<S> {
    fn new(mut io: S, owner: Arc<Shared>, writable: bool) -> io::Result<Registered<S>> {
        let readiness = Arc::new(Readiness::new(writable));
        let token = owner.register(&mut io, readiness.clone())?;
        Ok(Registered { io, readiness, token, owner })
    }

    fn poll_io<T>(
        &self,
        dir: Dir,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&S) -> io::Result<T>,
        drained: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        self.readiness.poll_io(dir, cx, || op(&self.io), drained)
    }
}

impl<S: mio::event::Source> Drop for Registered<S> {
    fn drop(&mut self) {
        self.owner.deregister(&mut self.io, self.token);
    }
}

/// A connected TCP stream; clones share the socket (one may read while another writes).
#[derive(Clone)]
pub struct TcpStream(Arc<Registered<mio::net::TcpStream>>);

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TcpStream").field(&self.0.io).finish()
    }
}

impl TcpStream {
    fn registered(io: mio::net::TcpStream, owner: Arc<Shared>, writable: bool) -> io::Result<TcpStream> {
        Ok(TcpStream(Arc::new(Registered::new(io, owner, writable)?)))
    }

    /// A connected std stream, registered on `owner`'s loop.
    pub(super) fn adopt(stream: std::net::TcpStream, owner: Arc<Shared>) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        TcpStream::registered(mio::net::TcpStream::from_std(stream), owner, true)
    }

    /// Opens a connection to `addr` on `owner`'s loop.
    pub(super) async fn connect(addr: SocketAddr, owner: Arc<Shared>) -> io::Result<TcpStream> {
        let stream = TcpStream::registered(mio::net::TcpStream::connect(addr)?, owner, false)?;
        // The connect finishes with the first writable edge; then either an error is
        // pending on the socket or it has a peer. Without either it is still connecting
        // (the edge was spurious): wait for the next one.
        poll_fn(|cx| {
            stream.0.poll_io(
                Dir::Write,
                cx,
                |io| {
                    if let Some(e) = io.take_error()? {
                        return Err(e);
                    }
                    match io.peer_addr() {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(io::ErrorKind::WouldBlock.into()),
                        Err(e) => Err(e),
                    }
                },
                |_| false,
            )
        })
        .await?;
        Ok(stream)
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let want = buf.len();
        // A read that returns less than asked emptied the receive queue; 0 is end of
        // stream, which stays readable.
        self.0.poll_io(Dir::Read, cx, |mut io| io.read(buf), |&n| n > 0 && n < want)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let want = buf.len();
        self.0.poll_io(Dir::Write, cx, |mut io| io.write(buf), |&n| n < want)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        self.0.poll_io(Dir::Write, cx, |mut io| io.write_vectored(bufs), |&n| n < want)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket: nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.io.shutdown(Shutdown::Write))
    }
}

impl AsyncTcpStream for TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.io.local_addr()
    }
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.io.set_nodelay(on)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.io.shutdown(how)
    }
    fn set_linger_zero(&self) -> io::Result<()> {
        crate::runtime::set_linger_zero(&self.0.io)
    }
    const WAITS_READABLE: bool = true;
    fn readable(&self) -> impl Future<Output = ()> + Send + '_ {
        poll_fn(|cx| self.0.readiness.poll_ready(Dir::Read, cx))
    }
}

/// A listening TCP socket.
pub struct TcpListener(Registered<mio::net::TcpListener>);

impl TcpListener {
    /// Registers `listener` (already bound and non-blocking) with `owner`'s loop.
    pub(super) fn new(listener: std::net::TcpListener, owner: Arc<Shared>) -> io::Result<TcpListener> {
        Ok(TcpListener(Registered::new(mio::net::TcpListener::from_std(listener), owner, true)?))
    }
}

impl AsyncTcpListener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (io, peer) = poll_fn(|cx| self.0.poll_io(Dir::Read, cx, |io| io.accept(), |_| false)).await?;
        // The accepted socket joins the loop of whoever accepts it.
        Ok((TcpStream::registered(io, super::loop_here(), true)?, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.io.local_addr()
    }
}

/// A bound UDP socket.
pub struct UdpSocket(Registered<mio::net::UdpSocket>);

impl UdpSocket {
    /// Binds a UDP socket to `addr` on `owner`'s loop.
    pub(super) fn bind(addr: SocketAddr, owner: Arc<Shared>) -> io::Result<UdpSocket> {
        Ok(UdpSocket(Registered::new(mio::net::UdpSocket::bind(addr)?, owner, true)?))
    }
}

impl AsyncUdpSocket for UdpSocket {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        poll_fn(move |cx| self.0.poll_io(Dir::Write, cx, |io| io.send_to(buf, to), |_| false))
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a {
        // One datagram per call, so only `WouldBlock` says the queue is empty.
        poll_fn(move |cx| self.0.poll_io(Dir::Read, cx, |io| io.recv_from(buf), |_| false))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.io.local_addr()
    }
}
