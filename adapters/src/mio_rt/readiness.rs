//! Edge-triggered readiness of one socket, per direction, and the one way every socket
//! operation waits on it ([`Readiness::poll_io`]).
//!
//! The kernel reports a direction once when it becomes ready (edge-triggered), so the
//! flag stays set until an operation proves otherwise: `WouldBlock`, or a read or write
//! shorter than asked for (the socket had no more to give or room to take; any byte or
//! room that arrives after it raises a new edge). Each edge bumps a tick, and a flag is
//! only cleared if no edge came in since the operation began, so an edge that lands
//! between the system call and the clearing is never lost. Once the kernel reports a
//! direction closed (the peer's FIN, a reset, an error), it stays ready for good: a short
//! read then only means the data ran out before the end of stream, which the next read
//! returns, and no further edge would announce it.

use crate::runtime::lock;
use std::io;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// One direction of a socket.
#[derive(Debug, Default)]
struct Direction {
    ready: bool,
    /// Closed by the peer or an error: `ready` is never cleared again.
    closed: bool,
    tick: u64,
    /// The task waiting on this direction: one, for every socket the driver uses.
    waker: Option<Waker>,
    /// Any further tasks waiting at the same time (two tasks sending on one UDP socket,
    /// say); empty, and never allocated, in the usual case.
    more_wakers: Vec<Waker>,
}

impl Direction {
    /// Remembers `waker` to wake on the next edge, unless it is already remembered.
    fn wait(&mut self, waker: &Waker) {
        match &self.waker {
            None => self.waker = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) if self.more_wakers.iter().any(|w| w.will_wake(waker)) => {}
            Some(_) => self.more_wakers.push(waker.clone()),
        }
    }

    /// Every waiting task's waker, to wake once the lock is released.
    fn take_wakers(&mut self) -> impl Iterator<Item = Waker> {
        self.waker.take().into_iter().chain(std::mem::take(&mut self.more_wakers))
    }
}

/// Which direction an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    /// Reading, accepting, receiving.
    Read,
    /// Writing, sending, finishing a connect.
    Write,
}

/// The readiness of one registered socket.
#[derive(Debug)]
pub(super) struct Readiness {
    state: Mutex<[Direction; 2]>,
}

impl Readiness {
    /// Both directions assumed ready, so the first operation is tried at once; a socket
    /// still connecting passes `writable: false` and waits for its first writable edge.
    pub(super) fn new(writable: bool) -> Readiness {
        let read = Direction { ready: true, ..Direction::default() };
        let write = Direction { ready: writable, ..Direction::default() };
        Readiness { state: Mutex::new([read, write]) }
    }

    /// Records an edge from the kernel and wakes whoever waits on it; `closed` marks a
    /// direction that can never block again.
    pub(super) fn set_ready(&self, readable: bool, writable: bool, closed: [bool; 2]) {
        let mut wake: [Option<Waker>; 2] = [None, None];
        let mut more = Vec::new();
        {
            let mut state = lock(&self.state);
            for (i, edge) in [readable, writable].into_iter().enumerate() {
                if edge || closed[i] {
                    let d = &mut state[i];
                    d.ready = true;
                    d.closed |= closed[i];
                    d.tick = d.tick.wrapping_add(1);
                    let mut wakers = d.take_wakers();
                    wake[i] = wakers.next();
                    more.extend(wakers);
                }
            }
        }
        wake.into_iter().flatten().chain(more).for_each(Waker::wake);
    }

    /// Drops both wakers (the loop is closing; they would never be woken).
    pub(super) fn forget_wakers(&self) {
        let wakers: Vec<Waker> = lock(&self.state).iter_mut().flat_map(Direction::take_wakers).collect();
        drop(wakers);
    }

    /// `Ready` if `dir` is ready (an operation would be tried at once); otherwise stores
    /// the task's waker for the next edge and returns `Pending`.
    pub(super) fn poll_ready(&self, dir: Dir, cx: &mut Context<'_>) -> Poll<()> {
        match self.ready_tick(dir as usize, cx) {
            Some(_) => Poll::Ready(()),
            None => Poll::Pending,
        }
    }

    /// The edge count of direction `i` if it is ready; otherwise stores the task's waker
    /// for the next edge and returns `None`.
    fn ready_tick(&self, i: usize, cx: &mut Context<'_>) -> Option<u64> {
        let mut state = lock(&self.state);
        let d = &mut state[i];
        if !d.ready {
            d.wait(cx.waker());
            return None;
        }
        Some(d.tick)
    }

    /// Runs `op` while `dir` is ready, until it does not return `WouldBlock`; then, or if
    /// `dir` is not ready, stores the task's waker and returns `Pending`. `drained` tells
    /// from a successful result that the socket has nothing more for now (a short read or
    /// write), which saves the system call that would only return `WouldBlock`.
    pub(super) fn poll_io<T>(
        &self,
        dir: Dir,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
        drained: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        let i = dir as usize;
        loop {
            let Some(tick) = self.ready_tick(i, cx) else { return Poll::Pending };
            match op() {
                Ok(value) => {
                    if drained(&value) {
                        self.clear(i, tick);
                    }
                    return Poll::Ready(Ok(value));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear(i, tick),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn clear(&self, i: usize, tick: u64) {
        let mut state = lock(&self.state);
        if state[i].tick == tick && !state[i].closed {
            state[i].ready = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn would_block<T>() -> io::Result<T> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    #[test]
    fn waits_after_would_block_and_wakes_on_the_next_edge() {
        let r = Readiness::new(true);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(r.poll_io(Dir::Read, &mut cx, would_block::<()>, |_| false).is_pending());
        // Not ready now: the operation is not even tried.
        let tried = AtomicUsize::new(0);
        let op = || {
            tried.fetch_add(1, Ordering::SeqCst);
            Ok(5)
        };
        assert!(r.poll_io(Dir::Read, &mut cx, op, |_| false).is_pending());
        assert_eq!(tried.load(Ordering::SeqCst), 0);
        r.set_ready(true, false, [false; 2]);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(r.poll_io(Dir::Read, &mut cx, op, |_| false), Poll::Ready(Ok(5))));
    }

    #[test]
    fn two_tasks_waiting_on_one_direction_are_both_woken() {
        let r = Readiness::new(true);
        let (a, b) = (Arc::new(Count(AtomicUsize::new(0))), Arc::new(Count(AtomicUsize::new(0))));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        assert!(r.poll_io(Dir::Write, &mut Context::from_waker(&wa), would_block::<()>, |_| false).is_pending());
        assert!(r.poll_io(Dir::Write, &mut Context::from_waker(&wb), would_block::<()>, |_| false).is_pending());
        // Polling again with a waker already stored does not store it twice.
        assert!(r.poll_io(Dir::Write, &mut Context::from_waker(&wb), would_block::<()>, |_| false).is_pending());
        r.set_ready(false, true, [false; 2]);
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (1, 1));
    }

    #[test]
    fn an_edge_during_the_operation_keeps_the_direction_ready() {
        let r = Arc::new(Readiness::new(true));
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        // The edge lands after the system call returned WouldBlock but before the flag is
        // cleared: the next poll must try again rather than sleep through it.
        let first = std::cell::Cell::new(true);
        let op = || {
            if first.replace(false) {
                r.set_ready(true, false, [false; 2]);
                would_block()
            } else {
                Ok(7)
            }
        };
        assert!(matches!(r.poll_io(Dir::Read, &mut cx, op, |_| false), Poll::Ready(Ok(7))));
    }

    #[test]
    fn a_short_read_clears_readiness_without_another_call() {
        let r = Readiness::new(true);
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(r.poll_io(Dir::Read, &mut cx, || Ok(3), |&n| n < 10), Poll::Ready(Ok(3))));
        assert!(r.poll_io(Dir::Read, &mut cx, || Ok(3), |&n| n < 10).is_pending());
        // The other direction is independent.
        assert!(matches!(r.poll_io(Dir::Write, &mut cx, || Ok(1), |_| false), Poll::Ready(Ok(1))));
    }

    #[test]
    fn a_closed_direction_stays_ready_after_a_short_read() {
        let r = Readiness::new(true);
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        // The peer's FIN arrived with the last data: the short read drains the data, and
        // the end of stream must still be read, with no edge left to announce it.
        r.set_ready(true, false, [true, false]);
        assert!(matches!(r.poll_io(Dir::Read, &mut cx, || Ok(3), |&n| n < 10), Poll::Ready(Ok(3))));
        assert!(matches!(r.poll_io(Dir::Read, &mut cx, || Ok(0), |&n| n < 10), Poll::Ready(Ok(0))));
    }
}
