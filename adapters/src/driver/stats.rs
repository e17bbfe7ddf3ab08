//! Counters a running driver keeps, for tests, logs and operators.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A snapshot of a driver's counters, from [`Handle::stats`](super::Handle::stats).
///
/// Gauges (`connections`, `queued_write_bytes`, `paused_readers`, `lingering`) say how
/// things stand now; counters (`accepted`, `refused`, `bytes_*`, `*_closes`, `*_dropped`)
/// only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections the machine has open (accepted, connecting or connected).
    pub connections: usize,
    /// Bytes in all per-connection write queues, including those being written now.
    pub queued_write_bytes: usize,
    /// Connections whose reading is paused at the machine's request.
    pub paused_readers: usize,
    /// Connections closed gracefully that are still flushing or draining.
    pub lingering: usize,
    /// Connections aborted because their write queue hit its cap.
    pub slow_peer_closes: u64,
    /// Events dropped because the embedder did not read them in time.
    pub events_dropped: u64,
    /// Outgoing datagrams dropped because a socket's send queue was full.
    pub datagrams_dropped: u64,
    /// Inbound connections the machine accepted (from its listeners or adopted).
    pub accepted: u64,
    /// Inbound connections the machine refused.
    pub refused: u64,
    /// Bytes read from TCP connections and UDP datagrams received, counted per read.
    pub bytes_received: u64,
    /// Bytes written to TCP connections and UDP datagrams sent, counted per write.
    pub bytes_sent: u64,
}

/// The live counters behind [`Stats`], shared by the driver and its tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicUsize,
    pub(crate) queued_write_bytes: AtomicUsize,
    pub(crate) paused_readers: AtomicUsize,
    pub(crate) lingering: AtomicUsize,
    pub(crate) slow_peer_closes: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) datagrams_dropped: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
}

impl Counters {
    /// Counts `n` bytes read by one system call. Relaxed: the counters order nothing, and a
    /// relayed read must not pay for a fence.
    pub(crate) fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Relaxed);
    }

    /// Counts `n` bytes written by one system call (or one batch of them).
    pub(crate) fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            connections: self.connections.load(Relaxed),
            queued_write_bytes: self.queued_write_bytes.load(Relaxed),
            paused_readers: self.paused_readers.load(Relaxed),
            lingering: self.lingering.load(Relaxed),
            slow_peer_closes: self.slow_peer_closes.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            datagrams_dropped: self.datagrams_dropped.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused: self.refused.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
        }
    }
}
