//! [`Runtime`] for smol.

use crate::runtime::Runtime;
use smol::net::{TcpListener, TcpStream, UdpSocket};
use smol::LocalExecutor;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant as StdInstant;

/// The smol runtime: sockets are `smol::net` types; tasks run on one of two executors.
///
/// - Inside [`SmolRuntime::run_here`], every task spawned on that thread runs on that
///   thread, which also drives the reactor (epoll) whenever its tasks wait. A socket
///   becoming ready then wakes a task on the same thread: no futex, no cross-CPU hop, no
///   eventfd write to interrupt another thread's `epoll_wait`. This is what
///   `switchyard --runtime smol` uses, like tokio's current-thread flavour.
/// - Elsewhere (and inside [`Runtime::block_on`]), tasks go to smol's global executor,
///   whose threads (`SMOL_THREADS`, default 1) run them while the calling thread is free
///   to block: right for tests and programs that mix async tasks with blocking code.
///
/// ```no_run
/// use switchyard_adapters::{Runtime, SmolRuntime};
/// let rt = SmolRuntime;
/// rt.run_here(async { /* start drivers here; they run on this thread */ });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

thread_local! {
    /// The executor of a thread inside [`SmolRuntime::run_here`]; `None` elsewhere.
    static HERE: RefCell<Option<Rc<LocalExecutor<'static>>>> = const { RefCell::new(None) };
}

impl SmolRuntime {
    /// Runs `future` on the current thread until it completes, with every task it spawns
    /// (and they spawn) on this thread too. Nothing else may block this thread meanwhile:
    /// blocking code belongs on a thread of its own (talking to machines through
    /// [`Handle::command_blocking`](crate::Handle::command_blocking)).
    ///
    /// Tasks still running when `future` completes are dropped, which closes their
    /// sockets. Never call it from inside a task.
    pub fn run_here<F: Future>(&self, future: F) -> F::Output {
        let executor = Rc::new(LocalExecutor::new());
        crate::runtime::with_thread_slot(&HERE, executor.clone(), || smol::block_on(executor.run(future)))
    }
}

impl Runtime for SmolRuntime {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    type UdpSocket = UdpSocket;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let here = HERE.with(|here| here.borrow().clone());
        match here {
            Some(executor) => executor.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }

    /// A new thread inside [`SmolRuntime::run_here`], so that the work and every task it
    /// spawns run there, beside (not on) the calling thread's executor.
    fn spawn_on_new_loop<F>(&self, future: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        std::thread::Builder::new().name("switchyard loop".into()).spawn(|| SmolRuntime.run_here(future)).map(drop)
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

    fn adopt_tcp(&self, stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        TcpStream::try_from(stream)
    }

    fn udp_bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<UdpSocket>> + Send {
        UdpSocket::bind(addr)
    }
}

crate::runtime::std_like_socket_impls!(TcpStream, TcpListener, UdpSocket);

#[cfg(test)]
mod tests {
    use super::*;

    crate::runtime::run_here_tests!(SmolRuntime);
}
