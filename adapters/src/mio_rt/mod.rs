//! [`Runtime`] on Switchyard's own event loop: one thread, mio's edge-triggered epoll
//! (kqueue on the BSDs), and nothing else.
//!
//! smol's reactor re-arms every socket after every event (one-shot epoll) and reprograms
//! a timerfd and re-arms its wake-up eventfd on every wait: six system calls per wake-up
//! besides the read and the write. Relaying a small message through a tunnel end is one
//! wake-up, so those calls were most of what the end itself spent on it. Here a wake-up
//! is one `epoll_wait`, one read and one write; timers live in a `BTreeMap` and become
//! the wait's timeout.
//!
//! Where tasks run:
//! - Inside [`MioRuntime::run_here`], on the calling thread, with the sockets and timers
//!   they open; this is what the `switchyard` binary uses by default.
//! - Spawned from anywhere else (including inside [`Runtime::block_on`], which only parks
//!   its thread until its future is done), on a background loop thread started on first
//!   use and kept for the life of the process, as smol's global executor is.
//!
//! Wakers may be woken from any thread. A socket belongs to the loop it was opened or
//! accepted on and gets its events there; a task on another loop that uses it is woken
//! across threads.
//!
//! A loop started with [`MioRuntime::run_here_with`] and [`LoopOptions::busy_poll`] keeps
//! polling for a while after traffic instead of sleeping at once; see [`busy_poll`].

pub mod busy_poll;
mod event_loop;
mod net;
mod readiness;
mod timer;

pub use busy_poll::{LoopOptions, MAX_BUSY_POLL};
pub use net::{TcpListener, TcpStream, UdpSocket};

use crate::runtime::Runtime;
use event_loop::{EventLoop, Shared};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant as StdInstant;

/// The event-loop runtime; see the [module docs](self).
///
/// ```no_run
/// use switchyard_adapters::{MioRuntime, Runtime};
/// let rt = MioRuntime;
/// rt.run_here(async { /* start drivers here; they run on this thread */ });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MioRuntime;

thread_local! {
    /// The loop of a thread inside [`MioRuntime::run_here`]; `None` elsewhere.
    static HERE: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// The background loop, for work started outside any `run_here`.
static BACKGROUND: OnceLock<Arc<Shared>> = OnceLock::new();

fn background() -> Arc<Shared> {
    BACKGROUND
        .get_or_init(|| {
            let event_loop = EventLoop::new(LoopOptions::default())
                .unwrap_or_else(|e| panic!("cannot create the background event loop: {e}"));
            let shared = event_loop.shared().clone();
            std::thread::Builder::new()
                .name("switchyard-loop".into())
                .spawn(move || event_loop.run(std::future::pending::<()>()))
                .unwrap_or_else(|e| panic!("cannot start the background event loop thread: {e}"));
            shared
        })
        .clone()
}

/// The loop work started on this thread belongs to.
fn loop_here() -> Arc<Shared> {
    HERE.with(|here| here.borrow().clone()).unwrap_or_else(background)
}

impl MioRuntime {
    /// Runs `future` on the current thread until it completes, with every task it spawns
    /// and every socket and timer it opens on this thread's own loop. Nothing else may
    /// block this thread meanwhile. Tasks still pending when `future` completes are
    /// dropped, which closes their sockets. Never call it from inside a task.
    ///
    /// Panics if the operating system refuses an epoll instance or an eventfd.
    pub fn run_here<F: Future>(&self, future: F) -> F::Output {
        self.run_here_with(LoopOptions::default(), future)
    }

    /// [`MioRuntime::run_here`] with a loop tuned by `options`, e.g. busy polling:
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use switchyard_adapters::mio_rt::{LoopOptions, MioRuntime};
    /// MioRuntime.run_here_with(LoopOptions::busy_poll(Duration::from_micros(50)), async { /* ... */ });
    /// ```
    pub fn run_here_with<F: Future>(&self, options: LoopOptions, future: F) -> F::Output {
        assert!(HERE.with(|here| here.borrow().is_none()), "MioRuntime::run_here called inside run_here");
        let event_loop = EventLoop::new(options).unwrap_or_else(|e| panic!("cannot create an event loop: {e}"));
        let shared = event_loop.shared().clone();
        crate::runtime::with_thread_slot(&HERE, shared, || event_loop.run(future))
    }
}

impl Runtime for MioRuntime {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    type UdpSocket = UdpSocket;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let owner = loop_here();
        let schedule_on = owner.clone();
        let (runnable, task) = async_task::spawn(future, move |runnable| schedule_on.schedule(runnable));
        task.detach();
        owner.schedule(runnable);
    }

    fn sleep_until(&self, deadline: StdInstant) -> impl Future<Output = ()> + Send + 'static {
        timer::Timer::new(deadline)
    }

    fn spawn_on_new_loop<F>(&self, future: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        std::thread::Builder::new().name("switchyard loop".into()).spawn(|| MioRuntime.run_here(future)).map(drop)
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        futures_lite::future::block_on(future)
    }

    fn tcp_listen(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpListener>> + Send {
        std::future::ready(crate::runtime::bind_listener(addr).and_then(|l| TcpListener::new(l, loop_here())))
    }

    fn tcp_connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr, loop_here())
    }

    fn adopt_tcp(&self, stream: std::net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::adopt(stream, loop_here())
    }

    fn udp_bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<UdpSocket>> + Send {
        std::future::ready(UdpSocket::bind(addr, loop_here()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{AsyncTcpListener, AsyncUdpSocket};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::sync::atomic::Ordering;
    use std::thread;
    use std::time::Duration;

    crate::runtime::run_here_tests!(MioRuntime);

    #[test]
    fn a_woken_task_from_another_thread_runs_on_its_loop() {
        let rt = MioRuntime;
        let (tx, rx) = async_channel::bounded::<u32>(1);
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send_blocking(7).expect("the loop still listens");
        });
        // The loop sleeps in epoll_wait with nothing to do until the other thread's send
        // wakes it through the eventfd.
        assert_eq!(rt.run_here(async move { rx.recv().await }), Ok(7));
        sender.join().expect("sender");
    }

    #[test]
    fn a_task_woken_after_its_loop_ended_is_not_dropped_inside_the_wake() {
        let rt = MioRuntime;
        let (tx, rx) = async_channel::bounded::<()>(1);
        rt.run_here(async move {
            rt.spawn(async move {
                let _ = rx.recv().await;
            });
            // Let the task run once and park on the channel before the loop ends.
            futures_lite::future::yield_now().await;
        });
        // Dropping the sender wakes the parked task while the channel holds its lock;
        // dropping the task's future right there would take that lock again and hang.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            drop(tx);
            let _ = done_tx.send(());
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(20)).is_ok(), "waking a task of an ended loop hung");
    }

    #[test]
    fn wakes_from_many_threads_are_never_lost() {
        wakes_from_many_threads_reach(LoopOptions::default());
    }

    #[test]
    fn wakes_from_many_threads_are_never_lost_while_busy_polling() {
        // A wake-up that comes while the loop spins must end the spin, not wait it out.
        wakes_from_many_threads_reach(LoopOptions::busy_poll(MAX_BUSY_POLL));
    }

    fn wakes_from_many_threads_reach(options: LoopOptions) {
        const THREADS: usize = 4;
        const MESSAGES: usize = 20_000;
        let rt = MioRuntime;
        // Rendezvous channels: every message needs its receiving task woken from another
        // thread, at any point of the loop's cycle (running, about to sleep, asleep). A
        // lost wake-up leaves a sender blocked for good, and the guard below fails.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let total = rt.run_here_with(options, async move {
                let (count_tx, count_rx) = async_channel::unbounded::<usize>();
                for _ in 0..THREADS {
                    let (tx, rx) = async_channel::bounded::<usize>(1);
                    thread::spawn(move || (0..MESSAGES).for_each(|i| tx.send_blocking(i).expect("receiver alive")));
                    let count_tx = count_tx.clone();
                    rt.spawn(async move {
                        let mut n = 0;
                        while rx.recv().await.is_ok() {
                            n += 1;
                        }
                        let _ = count_tx.send(n).await;
                    });
                }
                let mut total = 0;
                for _ in 0..THREADS {
                    total += count_rx.recv().await.expect("a receiver reports");
                }
                total
            });
            let _ = done_tx.send(total);
        });
        let total = done_rx.recv_timeout(Duration::from_secs(60)).expect("a wake-up was lost: the loop stalled");
        assert_eq!(total, THREADS * MESSAGES);
    }

    #[test]
    fn a_timer_awaited_outside_any_loop_wakes_the_sleeping_background_loop() {
        let rt = MioRuntime;
        // The background loop may be asleep with no deadline at all: adding this timer
        // from another thread must wake it to take the new deadline into account.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let start = StdInstant::now();
            rt.block_on(rt.sleep_until(start + Duration::from_millis(30)));
            let _ = done_tx.send(StdInstant::now() >= start + Duration::from_millis(30));
        });
        let on_time = done_rx.recv_timeout(Duration::from_secs(20)).expect("the timer never fired");
        assert!(on_time, "the timer fired before its deadline");
    }

    #[test]
    fn timers_fire_in_deadline_order() {
        assert_eq!(timer_order_beside_traffic(LoopOptions::default()), [1, 2, 0]);
    }

    #[test]
    fn a_busy_polling_loop_still_fires_timers_in_order() {
        // The datagrams keep the loop spinning while the timers come due.
        assert_eq!(timer_order_beside_traffic(LoopOptions::busy_poll(MAX_BUSY_POLL)), [1, 2, 0]);
    }

    /// The order three timers (30, 10 and 20 ms) fire in, on a loop run with `options`,
    /// while two of its UDP sockets bounce a datagram between them.
    fn timer_order_beside_traffic(options: LoopOptions) -> Vec<usize> {
        let rt = MioRuntime;
        rt.run_here_with(options, async move {
            let a = rt.udp_bind("127.0.0.1:0".parse().unwrap()).await.expect("bind a");
            let b = rt.udp_bind("127.0.0.1:0".parse().unwrap()).await.expect("bind b");
            let b_addr = b.local_addr().expect("addr");
            a.send_to(b"ball", b_addr).await.expect("serve");
            for (from, to) in [(b, a.local_addr().expect("addr")), (a, b_addr)] {
                rt.spawn(async move {
                    let mut buf = [0u8; 8];
                    while let Ok((n, _)) = from.recv_from(&mut buf).await {
                        let _ = from.send_to(&buf[..n], to).await;
                    }
                });
            }
            let (tx, rx) = async_channel::unbounded();
            let start = StdInstant::now();
            for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
                let tx = tx.clone();
                rt.spawn(async move {
                    rt.sleep_until(start + Duration::from_millis(ms)).await;
                    let _ = tx.send(i).await;
                });
            }
            let mut order = Vec::new();
            for _ in 0..3 {
                order.push(rx.recv().await.expect("timer task"));
            }
            assert!(StdInstant::now() >= start + Duration::from_millis(30));
            order
        })
    }

    #[test]
    fn tcp_round_trip_with_half_close_and_a_refused_connect() {
        let rt = MioRuntime;
        rt.run_here(async move {
            let listener = rt.tcp_listen("127.0.0.1:0".parse().unwrap()).await.expect("listen");
            let addr = listener.local_addr().expect("addr");
            rt.spawn(async move {
                let (mut conn, _) = listener.accept().await.expect("accept");
                let mut all = Vec::new();
                conn.read_to_end(&mut all).await.expect("read to EOF");
                conn.write_all(&all).await.expect("echo");
                conn.close().await.expect("close");
            });
            let mut client = rt.tcp_connect(addr).await.expect("connect");
            // More than a socket buffer, so writes and reads both wait on edges.
            let sent: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
            let mut writer = client.clone();
            let payload = sent.clone();
            rt.spawn(async move {
                writer.write_all(&payload).await.expect("write");
                writer.close().await.expect("half-close");
            });
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.expect("read back");
            assert!(back == sent, "echoed bytes differ");

            // Nothing listens on a port just released.
            let closed = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr")
            };
            let refused = rt.tcp_connect(closed).await.expect_err("nothing listens");
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        });
    }

    /// Busy polls the loop made while `ping_pongs` round trips of one byte crossed a TCP
    /// connection to an echo thread, under `options`.
    fn busy_polls_over_ping_pongs(options: LoopOptions, ping_pongs: usize) -> u64 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let echo = thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().expect("accept");
            let mut byte = [0u8; 1];
            while conn.read_exact(&mut byte).is_ok() {
                conn.write_all(&byte).expect("echo");
            }
        });
        let rt = MioRuntime;
        let polls = rt.run_here_with(options, async move {
            let mut conn = rt.tcp_connect(addr).await.expect("connect");
            for i in 0..ping_pongs {
                let byte = [i as u8];
                conn.write_all(&byte).await.expect("ping");
                let mut back = [0u8; 1];
                conn.read_exact(&mut back).await.expect("pong");
                assert_eq!(back, byte);
            }
            HERE.with(|here| here.borrow().as_ref().expect("inside run_here").busy_polls.load(Ordering::Relaxed))
        });
        echo.join().expect("echo thread");
        polls
    }

    #[test]
    fn a_busy_polling_loop_polls_without_sleeping_between_replies() {
        // Every reply is waited for: after each ping's write the loop spins for the pong.
        assert!(busy_polls_over_ping_pongs(LoopOptions::busy_poll(MAX_BUSY_POLL), 200) > 0);
    }

    #[test]
    fn a_loop_never_busy_polls_unless_asked() {
        assert_eq!(busy_polls_over_ping_pongs(LoopOptions::default(), 200), 0);
    }

    #[test]
    fn udp_datagrams_cross_between_two_sockets_of_the_background_loop() {
        let rt = MioRuntime;
        rt.block_on(async move {
            let a = rt.udp_bind("127.0.0.1:0".parse().unwrap()).await.expect("bind a");
            let b = rt.udp_bind("127.0.0.1:0".parse().unwrap()).await.expect("bind b");
            let b_addr = b.local_addr().expect("addr");
            for i in 0..100u8 {
                a.send_to(&[i; 32], b_addr).await.expect("send");
                let mut buf = [0u8; 64];
                let (n, from) = b.recv_from(&mut buf).await.expect("recv");
                assert_eq!((n, buf[0], from), (32, i, a.local_addr().expect("addr")));
            }
        });
    }
}
