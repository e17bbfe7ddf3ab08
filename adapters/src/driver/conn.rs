//! One TCP connection: the state the machine task shares with the connection's reader and
//! writer tasks, and those tasks.
//!
//! The machine task never awaits a socket. It appends writes to the connection's queue and
//! flips flags; a reader task per connection feeds the machine task through the inbound
//! channel, and a writer task per connection drains the queue. Ending a connection early
//! (abort, linger timeout) shuts the socket down, which wakes both tasks out of any pending
//! read or write.
//!
//! **Writing from the machine task.** At the end of each wake-up the machine task offers
//! every connection it wrote to one non-blocking vectored write of its queue
//! ([`Conn::write_now`]), unless the writer task is in the middle of a batch. Usually the
//! socket takes it all: the bytes leave with no task hop, and the writer task is not woken
//! at all. Whatever the socket does not take stays queued for the writer task, which alone
//! ever waits for a socket to become writable. `busy` makes the two writers exclusive.

use super::read_buf::ReadBuf;
use super::stats::Counters;
use super::NetMsg;
use crate::net_error::net_error;
use crate::notify::Notify;
use crate::runtime::{lock, AsyncTcpStream, Runtime};
use async_channel::Sender;
use bytes::{Buf, Bytes};
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;
use switchyard_core::ConnId;

/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;
/// Most bytes the writer takes off the queue per batch. It reports `Sent` after each batch,
/// so this bounds how stale the machine's view of its send backlog can get.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Most queued bytes the machine task writes itself. Beyond this it is bulk, and the
/// writer task takes it: while it writes, the machine task goes on reading, so more
/// accumulates for the next batch and the two overlap on a multi-threaded executor.
/// Measured (bench tunnel, single stream): writing bulk from the machine task too cost
/// 15–25 % more CPU per byte in the tunnel ends, from smaller writes.
const DIRECT_MAX: usize = 16 * 1024;

/// What the reader does with what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum ReadMode {
    /// Read and report.
    Run = 0,
    /// Do not read until resumed: TCP flow control pushes back on the peer.
    Paused = 1,
    /// The machine is done with the connection: read and drop until EOF, so that closing
    /// the socket does not reset it while the peer still reads our last bytes.
    Discard = 2,
    /// Stop now.
    Stop = 3,
}

impl ReadMode {
    fn from_u8(v: u8) -> ReadMode {
        match v {
            0 => ReadMode::Run,
            1 => ReadMode::Paused,
            2 => ReadMode::Discard,
            _ => ReadMode::Stop,
        }
    }
}

/// How the machine asked to close, as the writer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// Flush, shut down the write side, keep the connection.
    Half,
    /// Flush, shut down the write side, wait for the reader to see EOF, release.
    Graceful,
    /// Drop everything and reset.
    Abort,
}

#[derive(Debug, Default)]
struct WriteState {
    queue: VecDeque<Bytes>,
    /// Bytes in `queue` plus the batch being written.
    queued: usize,
    close: Option<Close>,
    /// A batch taken off `queue` is being written (by the writer task or, for the length
    /// of one non-blocking call, by the machine task): nobody else may write now.
    busy: bool,
    /// The writer task has finished (or the connection was aborted): the queue is gone
    /// for good, and its bytes are no longer counted.
    done: bool,
}

/// How a connection's reader reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadLimits {
    /// Largest single read.
    pub(super) size: usize,
    /// Most bytes read but not yet handled by the machine; the reader waits past it. This
    /// bounds what one connection holds in the inbound channel, keeps it from crowding
    /// out the others there, and makes `PauseReading` take effect within this many bytes.
    pub(super) ahead: usize,
}

/// The write queue was full: the peer reads too slowly.
#[derive(Debug)]
pub(super) struct QueueFull {
    /// Bytes already queued.
    pub(super) queued: usize,
}

/// A connection's shared state.
#[derive(Debug)]
pub(super) struct Conn<S> {
    pub(super) id: ConnId,
    write: Mutex<WriteState>,
    read_mode: AtomicU8,
    limits: ReadLimits,
    /// Bytes reported `Received` that the machine task has not handled yet.
    unhandled: AtomicUsize,
    /// Wakes the reader: resumed, stopped, or `unhandled` fell below the limit.
    reader_wake: Notify,
    writer_wake: Notify,
    reader_done: AtomicBool,
    writer_done: AtomicBool,
    writer_done_wake: Notify,
    /// Set by [`Conn::abort`]; wakes a writer blocked on a peer that does not read.
    reset: AtomicBool,
    reset_wake: Notify,
    /// The machine task's handle on the socket, to reset it from outside the tasks. The
    /// writer drops it when it finishes, so the socket closes once the tasks are gone.
    socket: Mutex<Option<S>>,
    counters: Arc<Counters>,
}

impl<S: AsyncTcpStream> Conn<S> {
    /// A connection; `socket` is `None` while an outbound connection is being opened.
    pub(super) fn new(id: ConnId, socket: Option<S>, limits: ReadLimits, counters: Arc<Counters>) -> Arc<Conn<S>> {
        Arc::new(Conn {
            id,
            write: Mutex::new(WriteState::default()),
            read_mode: AtomicU8::new(ReadMode::Run as u8),
            limits,
            unhandled: AtomicUsize::new(0),
            reader_wake: Notify::new(),
            writer_wake: Notify::new(),
            reader_done: AtomicBool::new(false),
            writer_done: AtomicBool::new(false),
            writer_done_wake: Notify::new(),
            reset: AtomicBool::new(false),
            reset_wake: Notify::new(),
            socket: Mutex::new(socket),
            counters,
        })
    }

    fn read_mode(&self) -> ReadMode {
        ReadMode::from_u8(self.read_mode.load(Ordering::Acquire))
    }

    /// Moves the reader from `from` to `to`; false if it was in another mode.
    fn switch_read_mode(&self, from: ReadMode, to: ReadMode) -> bool {
        let ok = self.read_mode.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if ok {
            self.reader_wake.notify();
        }
        ok
    }

    /// Appends `bytes` to the write queue, unless that would take it past `cap` bytes.
    /// Writes after a close are dropped. Nobody is woken: the machine task follows up with
    /// [`Conn::write_now`] at the end of its wake-up, which writes or wakes the writer.
    pub(super) fn enqueue(&self, bytes: Bytes, cap: usize) -> Result<(), QueueFull> {
        let len = bytes.len();
        {
            let mut w = lock(&self.write);
            if w.close.is_some() || len == 0 {
                return Ok(());
            }
            if w.queued.saturating_add(len) > cap {
                return Err(QueueFull { queued: w.queued });
            }
            w.queue.push_back(bytes);
            w.queued += len;
        }
        self.counters.queued_write_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Writes as much of the queue as the socket takes without waiting, from the calling
    /// task, unless the writer task is busy with a batch; wakes the writer task for
    /// whatever is left. Returns the bytes written. Errors are left to the writer task,
    /// which meets them on its own write and reports them.
    pub(super) fn write_now(&self, cx: &mut Context<'_>) -> usize {
        let mut batch: [Option<Bytes>; MAX_IOV] = std::array::from_fn(|_| None);
        let (taken, socket) = {
            let mut w = lock(&self.write);
            let socket = lock(&self.socket).clone();
            if w.busy || w.queue.is_empty() || w.queued > DIRECT_MAX || socket.is_none() {
                drop(w);
                self.writer_wake.notify();
                return 0;
            }
            w.busy = true;
            let (mut taken, mut bytes) = (0, 0);
            while taken < MAX_IOV && bytes < MAX_BATCH_BYTES {
                let Some(chunk) = w.queue.pop_front() else { break };
                bytes += chunk.len();
                batch[taken] = Some(chunk);
                taken += 1;
            }
            (taken, socket)
        };
        let written = match socket {
            Some(mut socket) => {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                for (slot, chunk) in iov.iter_mut().zip(batch[..taken].iter().flatten()) {
                    *slot = IoSlice::new(chunk);
                }
                match Pin::new(&mut socket).poll_write_vectored(cx, &iov[..taken]) {
                    Poll::Ready(Ok(n)) => {
                        self.counters.sent(n);
                        n
                    }
                    Poll::Ready(Err(_)) | Poll::Pending => 0,
                }
            }
            None => 0,
        };
        let mut w = lock(&self.write);
        w.busy = false;
        if w.done {
            // The writer finished meanwhile (on another thread) and already dropped the
            // queue and its count, this batch included: nothing to put back or report.
            return 0;
        }
        // Put back what the socket did not take, in order, ahead of anything queued since.
        for chunk in batch[..taken].iter_mut().rev().filter_map(Option::take) {
            w.queue.push_front(chunk);
        }
        // Then drop from its front the bytes the socket took.
        let mut n = written;
        while n > 0 {
            let Some(front) = w.queue.front_mut() else { break };
            if n >= front.len() {
                n -= front.len();
                w.queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        w.queued -= written.min(w.queued);
        let more = !w.queue.is_empty() || w.close.is_some();
        drop(w);
        self.counters.queued_write_bytes.fetch_sub(written, Ordering::Relaxed);
        if more {
            self.writer_wake.notify();
        }
        written
    }

    /// Wakes the writer task to write whatever is queued.
    pub(super) fn wake_writer(&self) {
        self.writer_wake.notify();
    }

    /// The machine task has handled `n` received bytes: the reader may read on.
    pub(super) fn handled(&self, n: usize) {
        let before = self.unhandled.fetch_sub(n, Ordering::AcqRel);
        if before >= self.limits.ahead {
            self.reader_wake.notify();
        }
    }

    /// Stops reading (the reader finishes a read already under way).
    pub(super) fn pause(&self) -> bool {
        self.switch_read_mode(ReadMode::Run, ReadMode::Paused)
    }

    /// Starts reading again after [`Conn::pause`].
    pub(super) fn resume(&self) -> bool {
        self.switch_read_mode(ReadMode::Paused, ReadMode::Run)
    }

    /// Flush what is queued, then shut down the write side.
    pub(super) fn half_close(&self) {
        let mut w = lock(&self.write);
        if w.close.is_none() {
            w.close = Some(Close::Half);
        }
        drop(w);
        self.writer_wake.notify();
    }

    /// Flush, shut down the write side, drain the read side until EOF, then close. The
    /// caller bounds the whole thing with [`reap`].
    pub(super) fn graceful(&self) {
        let mut w = lock(&self.write);
        if w.close != Some(Close::Abort) {
            w.close = Some(Close::Graceful);
        }
        drop(w);
        let _ = self.switch_read_mode(ReadMode::Run, ReadMode::Discard)
            || self.switch_read_mode(ReadMode::Paused, ReadMode::Discard);
        self.writer_wake.notify();
    }

    /// Drops whatever is queued, stops both tasks and resets the connection now.
    ///
    /// `SO_LINGER` 0 makes the final close (when the last clone drops) send RST. Shutting
    /// down the read side wakes a pending read without sending anything (a write-side
    /// shutdown would send FIN, and the peer would see an orderly end instead of a reset);
    /// `reset_wake` wakes the writer. The socket is taken under the write lock, the same
    /// lock a finishing writer takes it under, so exactly one of them handles it.
    pub(super) fn abort(&self) {
        let (dropped, socket) = {
            let mut w = lock(&self.write);
            w.close = Some(Close::Abort);
            w.done = true;
            w.queue.clear();
            (std::mem::take(&mut w.queued), lock(&self.socket).take())
        };
        self.counters.queued_write_bytes.fetch_sub(dropped, Ordering::Relaxed);
        self.read_mode.store(ReadMode::Stop as u8, Ordering::Release);
        self.reset.store(true, Ordering::Release);
        self.reader_wake.notify();
        self.writer_wake.notify();
        self.reset_wake.notify();
        if let Some(socket) = socket {
            let _ = socket.set_linger_zero();
            let _ = socket.shutdown(Shutdown::Read);
        }
    }

    /// Completes once [`Conn::abort`] has been called.
    async fn until_reset(&self) {
        while !self.reset.load(Ordering::Acquire) {
            self.reset_wake.notified().await;
        }
    }

    /// True while the machine still wants to hear about this connection.
    fn reports(&self) -> bool {
        matches!(lock(&self.write).close, None | Some(Close::Half))
    }

    /// Stores the socket of a freshly opened outbound connection; false if it was aborted
    /// meanwhile.
    fn attach(&self, socket: S) -> bool {
        let w = lock(&self.write);
        if w.close == Some(Close::Abort) {
            return false;
        }
        *lock(&self.socket) = Some(socket);
        true
    }

    /// Moves the next batch off the queue into `batch` (and marks the writer busy until
    /// [`Conn::wrote`]); returns the close request when the queue is empty, and `Some(None)`
    /// (nothing to do yet) while the machine task is writing.
    fn take_batch(&self, batch: &mut VecDeque<Bytes>) -> Option<Option<Close>> {
        let mut w = lock(&self.write);
        if w.busy {
            // `write_now` wakes this task when it is done.
            return Some(None);
        }
        let mut bytes = 0;
        while bytes < MAX_BATCH_BYTES && batch.len() < MAX_IOV {
            let Some(chunk) = w.queue.pop_front() else { break };
            bytes += chunk.len();
            batch.push_back(chunk);
        }
        if batch.is_empty() {
            Some(w.close)
        } else {
            w.busy = true;
            None
        }
    }

    /// Counts `n` bytes as written, ending the writer's batch.
    fn wrote(&self, n: usize) {
        let n = {
            let mut w = lock(&self.write);
            let n = n.min(w.queued);
            w.queued -= n;
            w.busy = false;
            n
        };
        self.counters.queued_write_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    fn reader_finished(&self) {
        self.reader_done.store(true, Ordering::Release);
        self.writer_wake.notify();
    }

    /// The writer is gone: release the queue and the machine task's socket handle.
    fn writer_finished(&self) {
        let (dropped, socket) = {
            let mut w = lock(&self.write);
            w.done = true;
            w.queue.clear();
            (std::mem::take(&mut w.queued), lock(&self.socket).take())
        };
        self.counters.queued_write_bytes.fetch_sub(dropped, Ordering::Relaxed);
        // The reader must not outlive the writer (after a write error, say): wake it. After
        // a graceful close it has already seen EOF, so nothing is unread and this is moot.
        if let Some(socket) = socket {
            let _ = socket.shutdown(Shutdown::Read);
        }
        self.writer_done.store(true, Ordering::Release);
        self.writer_done_wake.notify();
    }
}

/// Spawns the reader and writer of a connection whose socket is open.
pub(super) fn spawn_tasks<R: Runtime>(
    rt: &R,
    conn: Arc<Conn<R::TcpStream>>,
    stream: R::TcpStream,
    tx: Sender<NetMsg<R::TcpStream>>,
) {
    rt.spawn(read(conn.clone(), stream.clone(), tx.clone()));
    rt.spawn(write(conn, stream, tx));
}

/// Opens an outbound connection, reports the outcome, then becomes its writer.
pub(super) async fn connect<R: Runtime>(
    rt: R,
    conn: Arc<Conn<R::TcpStream>>,
    to: SocketAddr,
    tx: Sender<NetMsg<R::TcpStream>>,
) {
    let id = conn.id;
    let aborted = async {
        conn.until_reset().await;
        None
    };
    let Some(result) = future::or(async { Some(rt.tcp_connect(to).await) }, aborted).await else {
        return conn.writer_finished();
    };
    let opened = result.and_then(|stream| {
        let local = stream.local_addr()?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(conn = %id, "cannot set TCP_NODELAY: {e}");
        }
        Ok((stream, local))
    });
    let (stream, local) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = tx.send(NetMsg::ConnectFailed { conn: id, error: net_error(&e) }).await;
            return conn.writer_finished();
        }
    };
    // Report before the reader starts, so `Connected` precedes the first `Received`.
    if !conn.attach(stream.clone()) || tx.send(NetMsg::Connected { conn: id, local }).await.is_err() {
        return conn.writer_finished();
    }
    rt.spawn(read(conn.clone(), stream.clone(), tx.clone()));
    write(conn, stream, tx).await;
}

/// The reader task: reads until EOF or error, honouring pause, discard and the read-ahead
/// limit.
async fn read<S: AsyncTcpStream>(conn: Arc<Conn<S>>, mut stream: S, tx: Sender<NetMsg<S>>) {
    let id = conn.id;
    let mut buf = ReadBuf::new(conn.limits.size);
    loop {
        match conn.read_mode() {
            ReadMode::Stop => break,
            ReadMode::Paused => {
                conn.reader_wake.notified().await;
                continue;
            }
            ReadMode::Run if conn.unhandled.load(Ordering::Acquire) >= conn.limits.ahead => {
                conn.reader_wake.notified().await;
                continue;
            }
            ReadMode::Run | ReadMode::Discard => {}
        }
        let result = read_some(&mut stream, &mut buf).await;
        let report = matches!(conn.read_mode(), ReadMode::Run | ReadMode::Paused);
        let msg = match result {
            Ok(0) => NetMsg::ReadEof { conn: id },
            Ok(n) => {
                conn.counters.received(n);
                if report {
                    conn.unhandled.fetch_add(n, Ordering::AcqRel);
                }
                NetMsg::Received { conn: id, bytes: buf.take(n) }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => NetMsg::Failed { conn: id, error: net_error(&e) },
        };
        let last = !matches!(msg, NetMsg::Received { .. });
        if report && tx.send(msg).await.is_err() {
            break;
        }
        if last {
            break;
        }
    }
    conn.reader_finished();
}

/// One read into `buf`. Where the runtime can wait for readability, a quiet connection
/// with nothing to read gives its arena back and waits without it: ten thousand idle
/// streams would otherwise hold one each. One with bytes waiting reads them at once.
async fn read_some<S: AsyncTcpStream>(stream: &mut S, buf: &mut ReadBuf) -> io::Result<usize> {
    if !S::WAITS_READABLE {
        return stream.read(buf.space()).await;
    }
    if let Some(result) = future::poll_once(stream.read(buf.space())).await {
        return result;
    }
    if buf.release_if_quiet() {
        stream.readable().await;
    }
    stream.read(buf.space()).await
}

/// The writer task: writes queued chunks in vectored batches, reports `Sent` per batch,
/// and carries out the close the machine asked for.
async fn write<S: AsyncTcpStream>(conn: Arc<Conn<S>>, mut stream: S, tx: Sender<NetMsg<S>>) {
    let id = conn.id;
    let mut batch = VecDeque::new();
    let mut shut_write = false;
    loop {
        let close = match conn.take_batch(&mut batch) {
            None => {
                let reset = async {
                    conn.until_reset().await;
                    Err(io::ErrorKind::ConnectionAborted.into())
                };
                match future::or(write_batch(&mut stream, &mut batch, &conn.counters), reset).await {
                    Ok(n) => {
                        conn.wrote(n);
                        if conn.reports() && tx.send(NetMsg::Sent { conn: id, bytes: n }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        batch.clear();
                        if conn.reports() {
                            let _ = tx.send(NetMsg::Failed { conn: id, error: net_error(&e) }).await;
                        }
                        break;
                    }
                }
                continue;
            }
            Some(close) => close,
        };
        match close {
            None => conn.writer_wake.notified().await,
            Some(Close::Half) => {
                if !shut_write {
                    shut_write = true;
                    if let Err(e) = stream.shutdown(Shutdown::Write) {
                        tracing::debug!(conn = %id, "half-close failed: {e}");
                    }
                }
                conn.writer_wake.notified().await;
            }
            Some(Close::Graceful) => {
                if !shut_write {
                    let _ = stream.shutdown(Shutdown::Write);
                }
                while !conn.reader_done.load(Ordering::Acquire) {
                    conn.writer_wake.notified().await;
                }
                break;
            }
            Some(Close::Abort) => break,
        }
    }
    conn.writer_finished();
}

/// Writes every chunk of `batch` with as few system calls as the socket allows.
/// Counts each write in `counters` as it happens, so that bytes written before an error
/// are counted too.
async fn write_batch<S: AsyncTcpStream>(
    stream: &mut S,
    batch: &mut VecDeque<Bytes>,
    counters: &Counters,
) -> io::Result<usize> {
    let mut total = 0;
    while !batch.is_empty() {
        let result = {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut k = 0;
            for (slot, chunk) in iov.iter_mut().zip(batch.iter()) {
                *slot = IoSlice::new(chunk);
                k += 1;
            }
            stream.write_vectored(&iov[..k]).await
        };
        let mut n = match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        counters.sent(n);
        total += n;
        while n > 0 {
            let Some(front) = batch.front_mut() else { break };
            if n >= front.len() {
                n -= front.len();
                batch.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(total)
}

/// Bounds a graceful close: when `deadline` passes before the writer has finished
/// (flushed, shut down, seen the peer's EOF), the connection is reset.
pub(super) async fn reap<R: Runtime>(rt: R, conn: Arc<Conn<R::TcpStream>>, deadline: StdInstant) {
    let finished = async {
        while !conn.writer_done.load(Ordering::Acquire) {
            conn.writer_done_wake.notified().await;
        }
        true
    };
    let timed_out = async {
        rt.sleep_until(deadline).await;
        false
    };
    if !future::or(finished, timed_out).await {
        tracing::debug!(conn = %conn.id, "linger timeout: resetting the connection");
        conn.abort();
    }
    conn.counters.lingering.fetch_sub(1, Ordering::Relaxed);
}

/// Counts connections lingering in a graceful close.
pub(super) fn try_linger(counters: &Counters, max: usize) -> bool {
    counters.lingering.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
}
