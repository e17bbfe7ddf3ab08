//! The event loop: one thread that runs tasks, fires timers and waits in `epoll_wait`
//! (through mio) for sockets, and the state other threads share with it.
//!
//! Per wake-up the loop makes one system call of its own, the wait; sockets are registered
//! once, edge-triggered, for both directions, so nothing is re-armed after an event. A
//! task woken from the loop's own thread is queued without a system call; only a wake from
//! another thread while the loop sleeps writes the wake-up eventfd.

use super::busy_poll::LoopOptions;
use super::readiness::Readiness;
use crate::runtime::lock;
use async_task::Runnable;
use mio::{Events, Poll, Registry, Token, Waker as PollWaker};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll as TaskPoll, Wake, Waker};
use std::time::{Duration, Instant};

/// The token of the wake-up eventfd; sockets count up from 1.
const WAKE_TOKEN: Token = Token(0);
/// Most events taken from the kernel per wait; more simply wait for the next round.
const EVENTS_PER_WAIT: usize = 1024;
/// Most tasks run between two looks at the sockets, so a task that keeps waking itself
/// cannot starve I/O.
const TASKS_PER_ROUND: usize = 256;

/// Timers waiting to fire, by deadline; the `u64` keeps equal deadlines apart.
pub(super) type TimerKey = (Instant, u64);

/// What a loop shares with every thread that spawns on it, registers a socket or a timer
/// with it, or wakes one of its tasks.
pub(super) struct Shared {
    registry: Registry,
    poll_waker: PollWaker,
    /// Tasks ready to run. async-task queues a task at most once until it runs, so this
    /// holds at most one entry per live task.
    queue: Mutex<VecDeque<Runnable>>,
    timers: Mutex<BTreeMap<TimerKey, Waker>>,
    next_timer: AtomicU64,
    /// Readiness of every registered socket, by token. One entry per open socket.
    sources: Mutex<HashMap<usize, Arc<Readiness>>>,
    next_token: AtomicUsize,
    /// The loop is in (or about to enter) its wait: a wake from now on must interrupt it.
    sleeping: AtomicBool,
    /// The loop has ended: nothing queued from now on will run.
    closed: AtomicBool,
    /// Polls made while busy-polling, over the loop's life (for tests and debugging).
    pub(super) busy_polls: AtomicU64,
}

impl Shared {
    /// Interrupts the loop's wait if it is waiting (or about to), so it sees new work.
    pub(super) fn notify(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.poll_waker.wake() {
                tracing::error!("cannot wake the event loop: {e}");
            }
        }
    }

    /// Queues a task to run on this loop.
    ///
    /// Never drops the task here, even when the loop has ended: this runs inside whatever
    /// woke the task (a channel's notify, with the channel's lock held), and dropping the
    /// task's future there could re-enter that lock. A task queued after the loop ended
    /// stays queued, unrun, until the process ends.
    pub(super) fn schedule(&self, runnable: Runnable) {
        lock(&self.queue).push_back(runnable);
        if !self.closed.load(Ordering::Acquire) {
            self.notify();
        }
    }

    /// Registers `source` for edge-triggered readable and writable events and returns its
    /// token; `readiness` hears about them.
    pub(super) fn register<S: mio::event::Source>(
        &self,
        source: &mut S,
        readiness: Arc<Readiness>,
    ) -> io::Result<Token> {
        let token = Token(self.next_token.fetch_add(1, Ordering::Relaxed));
        lock(&self.sources).insert(token.0, readiness);
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        if let Err(e) = self.registry.register(source, token, interest) {
            lock(&self.sources).remove(&token.0);
            return Err(e);
        }
        Ok(token)
    }

    /// Undoes [`Shared::register`]; called once, as the socket closes.
    pub(super) fn deregister<S: mio::event::Source>(&self, source: &mut S, token: Token) {
        // Closing the descriptor removes it from epoll anyway, and tokens are never reused
        // (they only count up), so a failed deregistration is harmless: an event already
        // taken for this token finds no source and is skipped.
        let _ = self.registry.deregister(source);
        let readiness = lock(&self.sources).remove(&token.0);
        drop(readiness);
    }

    /// Adds a timer firing at `deadline`; returns its key for [`Shared::update_timer`] and
    /// [`Shared::cancel_timer`].
    pub(super) fn add_timer(&self, deadline: Instant, waker: Waker) -> TimerKey {
        let key = (deadline, self.next_timer.fetch_add(1, Ordering::Relaxed));
        lock(&self.timers).insert(key, waker);
        // The loop may be waiting with a later timeout.
        self.notify();
        key
    }

    /// Replaces the waker of a pending timer; false if it has already fired.
    pub(super) fn update_timer(&self, key: TimerKey, waker: &Waker) -> bool {
        match lock(&self.timers).get_mut(&key) {
            Some(old) => {
                if !old.will_wake(waker) {
                    *old = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    /// Removes a timer that has not fired.
    pub(super) fn cancel_timer(&self, key: TimerKey) {
        let waker = lock(&self.timers).remove(&key);
        drop(waker);
    }

    /// Wakes every timer due at `now`.
    fn fire_timers(&self, now: Instant) {
        let due = {
            let mut timers = lock(&self.timers);
            // Most waits have no timer due: skip the split, which allocates.
            if !timers.first_key_value().is_some_and(|(key, _)| key.0 <= now) {
                return;
            }
            let later = timers.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *timers, later)
        };
        due.into_values().for_each(Waker::wake);
    }

    /// The earliest pending timer's deadline.
    fn next_deadline(&self) -> Option<Instant> {
        lock(&self.timers).first_key_value().map(|(key, _)| key.0)
    }

    fn has_tasks(&self) -> bool {
        !lock(&self.queue).is_empty()
    }

    /// Ends the loop for good: drops queued tasks, timers and socket wakers, which frees
    /// the tasks they hold (they hold this `Shared` in turn).
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let timers = std::mem::take(&mut *lock(&self.timers));
        drop(timers);
        let sources: Vec<Arc<Readiness>> = lock(&self.sources).values().cloned().collect();
        for readiness in sources {
            readiness.forget_wakers();
        }
        // Dropping a queued task (or the last waker of one, which queues it) drops its
        // future, which may close sockets and wake or queue other tasks: repeat until
        // nothing is left. Every lock is free here, so the drops cannot deadlock.
        loop {
            let queue = std::mem::take(&mut *lock(&self.queue));
            if queue.is_empty() {
                break;
            }
            drop(queue);
        }
    }
}

/// Wakes the future a loop runs to completion.
struct MainWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.shared.notify();
    }
}

/// An event loop and the poller it waits on; run it with [`EventLoop::run`] on the thread
/// that owns it.
pub(super) struct EventLoop {
    poll: Poll,
    events: Events,
    /// The sources of the last wait's events, kept to save an allocation per wait.
    ready: Vec<(Arc<Readiness>, Edges)>,
    shared: Arc<Shared>,
    options: LoopOptions,
    /// The last wait brought socket events: the next one may busy-poll.
    after_io: bool,
}

/// What one event says about a socket.
struct Edges {
    readable: bool,
    writable: bool,
    /// Read side, write side: closed by the peer or an error.
    closed: [bool; 2],
}

impl EventLoop {
    /// A new loop with its own epoll instance and wake-up eventfd.
    pub(super) fn new(options: LoopOptions) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let poll_waker = PollWaker::new(poll.registry(), WAKE_TOKEN)?;
        let shared = Arc::new(Shared {
            registry,
            poll_waker,
            queue: Mutex::new(VecDeque::new()),
            timers: Mutex::new(BTreeMap::new()),
            next_timer: AtomicU64::new(0),
            sources: Mutex::new(HashMap::new()),
            next_token: AtomicUsize::new(WAKE_TOKEN.0 + 1),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            busy_polls: AtomicU64::new(0),
        });
        let events = Events::with_capacity(EVENTS_PER_WAIT);
        Ok(EventLoop { poll, events, ready: Vec::new(), shared, options, after_io: false })
    }

    /// The handle other threads use to reach this loop.
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs tasks, timers and sockets until `main` completes, then closes the loop: tasks
    /// still pending are dropped.
    pub(super) fn run<F: Future>(mut self, main: F) -> F::Output {
        let main_waker = Arc::new(MainWaker { woken: AtomicBool::new(true), shared: self.shared.clone() });
        let waker = Waker::from(main_waker.clone());
        let mut cx = Context::from_waker(&waker);
        let mut main = pin!(main);
        let output = loop {
            if main_waker.woken.swap(false, Ordering::SeqCst) {
                if let TaskPoll::Ready(output) = main.as_mut().poll(&mut cx) {
                    break output;
                }
            }
            self.run_tasks();
            if let Err(e) = self.wait(&main_waker) {
                // Only a broken epoll instance gets here; nothing can run without it.
                panic!("event loop: epoll_wait failed: {e}");
            }
        };
        self.shared.close();
        output
    }

    fn run_tasks(&self) {
        for _ in 0..TASKS_PER_ROUND {
            let Some(runnable) = lock(&self.shared.queue).pop_front() else { return };
            runnable.run();
        }
    }

    /// Fires due timers, then waits for sockets: not at all if work is already waiting,
    /// else until the next timer or a wake-up, after busy-polling if the options ask for it.
    fn wait(&mut self, main: &MainWaker) -> io::Result<()> {
        let now = Instant::now();
        self.shared.fire_timers(now);
        self.shared.sleeping.store(true, Ordering::SeqCst);
        // Read only now: work queued or a timer added before `sleeping` was set is seen
        // here, and anything later wakes the wait through `notify`.
        let busy = self.shared.has_tasks() || main.woken.load(Ordering::SeqCst);
        let next_timer = self.shared.next_deadline();
        let result = if busy {
            self.poll.poll(&mut self.events, Some(Duration::ZERO))
        } else {
            match self.options.spin_until(now, self.after_io, next_timer) {
                Some(until) => self.spin(until, next_timer),
                None => self.poll.poll(&mut self.events, next_timer.map(|at| at.saturating_duration_since(now))),
            }
        };
        self.shared.sleeping.store(false, Ordering::SeqCst);
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        self.after_io = self.events.iter().any(|event| event.token() != WAKE_TOKEN);
        // Look every source up under one lock, then wake outside it, so that no waker (of
        // this loop's tasks, another loop's, or a thread in `block_on`) runs under it.
        let sources = lock(&self.shared.sources);
        self.ready.extend(self.events.iter().filter(|event| event.token() != WAKE_TOKEN).filter_map(|event| {
            let readiness = sources.get(&event.token().0)?.clone();
            let error = event.is_error();
            let edges = Edges {
                readable: event.is_readable(),
                writable: event.is_writable(),
                closed: [event.is_read_closed() || error, event.is_write_closed() || error],
            };
            Some((readiness, edges))
        }));
        drop(sources);
        for (readiness, edges) in self.ready.drain(..) {
            readiness.set_ready(edges.readable, edges.writable, edges.closed);
        }
        Ok(())
    }

    /// Polls without sleeping until an event arrives, a wake-up comes (`notify` clears
    /// `sleeping`), or `until`; then, if nothing came, sleeps as [`EventLoop::wait`] would.
    fn spin(&mut self, until: Instant, next_timer: Option<Instant>) -> io::Result<()> {
        loop {
            self.poll.poll(&mut self.events, Some(Duration::ZERO))?;
            self.shared.busy_polls.fetch_add(1, Ordering::Relaxed);
            if !self.events.is_empty() || !self.shared.sleeping.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= until {
                return self.poll.poll(&mut self.events, next_timer.map(|at| at.saturating_duration_since(now)));
            }
            // Lets whatever else is runnable on this CPU (often the peer being waited for)
            // go first; see `busy_poll`.
            std::thread::yield_now();
        }
    }
}
