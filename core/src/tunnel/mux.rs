//! Many streams over one carrier connection, with per-stream flow control. Both tunnel
//! ends use this one multiplexer; they differ only in how streams begin.
//!
//! Each stream joins a local connection (the client's at the local end, the target's at
//! the remote end) to a stream id on the carrier.
//!
//! **Flow control.** A sender may have at most `initial_window` bytes of a stream that the
//! receiver has not yet handed to the operating system. The receiver returns credit
//! (`Window`) as the driver reports bytes `Sent` on the local connection, so a stream whose
//! reader is slow stops at its window and never stalls the others, and the receiver holds
//! at most one window per stream.
//!
//! **Scheduling.** Bytes read from a connection wait in that stream's `pending` buffer
//! (at most `stream_buffer`; past it the connection's reads are paused). The scheduler moves
//! them onto the carrier round-robin, at most one frame per stream per turn, and only while
//! the carrier's unsent backlog is under `carrier_high`: a bulk stream cannot fill the
//! carrier queue ahead of an interactive one, and the driver's carrier queue stays bounded.
//!
//! **Closing.** A connection's end of input becomes `Fin` once its pending bytes are sent;
//! a `Fin` from the peer becomes a half-close of the connection once the bytes before it are
//! written. A stream is forgotten when both directions have finished. An error on either
//! side becomes `Reset`, and the other side aborts its connection.

use crate::chunk_queue::ChunkQueue;
use crate::id::ConnId;
use crate::machine::{Backlog, CloseHow, Output, OutputQueue};
use crate::wire::tunnel::{encode_data_header, StreamId, TunnelMsg, MAX_DATA};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};

/// Flow-control and buffering limits of a multiplexer.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Credit each stream starts with, per direction: the most unconsumed bytes in flight.
    pub initial_window: u32,
    /// Bytes read from a connection that may wait for the carrier before its reads pause.
    pub stream_buffer: usize,
    /// Unsent carrier bytes above which the scheduler stops adding data frames.
    pub carrier_high: usize,
    /// Most streams open on one carrier; more are refused.
    pub max_streams: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            initial_window: 4 * 1024 * 1024,
            stream_buffer: 256 * 1024,
            carrier_high: 1024 * 1024,
            max_streams: 16 * 1024,
        }
    }
}

/// The peer broke the multiplexing protocol; the carrier must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxViolation {
    /// The peer sent more than the credit it was given.
    #[error("stream {stream}: {len} bytes sent with only {allowed} bytes of credit")]
    OverWindow {
        /// The stream.
        stream: StreamId,
        /// Bytes in the frame.
        len: usize,
        /// Credit left.
        allowed: u64,
    },
    /// The peer granted credit beyond 2^31 - 1 bytes.
    #[error("stream {stream}: window grown past 2^31 - 1 bytes")]
    WindowOverflow {
        /// The stream.
        stream: StreamId,
    },
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndKind {
    /// Both directions finished in order.
    Finished,
    /// The open was refused (by the remote end, or because the target was unreachable).
    Refused(String),
    /// The stream was aborted by either side.
    Reset(String),
}

/// A stream the multiplexer has forgotten; owners drain these with [`Mux::pop_ended`] to
/// drop their own references to the stream's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The stream.
    pub stream: StreamId,
    /// Its connection.
    pub conn: ConnId,
    /// How it ended.
    pub kind: EndKind,
}

/// How far one stream has got; exposed for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes read from the connection not yet framed onto the carrier.
    pub pending: usize,
    /// Credit left to send on the carrier.
    pub send_credit: u64,
    /// Bytes the peer may still send us.
    pub recv_allowed: u64,
}

#[derive(Debug)]
struct Stream {
    conn: ConnId,
    /// False while the remote end is still connecting to the target.
    conn_ready: bool,
    // Connection → carrier.
    pending: ChunkQueue,
    send_credit: u64,
    reads_paused: bool,
    conn_eof: bool,
    fin_sent: bool,
    queued: bool,
    // Carrier → connection.
    /// Written to the connection once it is up, before any stream byte (a PROXY header).
    preamble: Option<Bytes>,
    /// Bytes of the preamble not yet reported sent: they earn the peer no credit.
    preamble_unsent: usize,
    early: VecDeque<Bytes>,
    recv_allowed: u64,
    unacked: Backlog,
    consumed: u64,
    fin_received: bool,
    conn_write_closed: bool,
}

/// The multiplexer of one carrier. The owning machine feeds it connection and carrier
/// events; it writes frames and connection outputs into the owner's [`OutputQueue`].
#[derive(Debug)]
pub struct Mux {
    config: MuxConfig,
    carrier: ConnId,
    carrier_backlog: Backlog,
    streams: BTreeMap<StreamId, Stream>,
    by_conn: BTreeMap<ConnId, StreamId>,
    ready: VecDeque<StreamId>,
    ended: VecDeque<Ended>,
    /// Frame headers are cut from this buffer so data frames cost no allocation each.
    headers: BytesMut,
}

const MAX_WINDOW: u64 = i32::MAX as u64;

impl Mux {
    /// A multiplexer writing its frames to `carrier`.
    pub fn new(carrier: ConnId, config: MuxConfig) -> Mux {
        Mux {
            config,
            carrier,
            carrier_backlog: Backlog::default(),
            streams: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            ready: VecDeque::new(),
            ended: VecDeque::new(),
            headers: BytesMut::new(),
        }
    }

    /// The carrier connection.
    pub fn carrier(&self) -> ConnId {
        self.carrier
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when no stream is open.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// True when another stream may open.
    pub fn has_room(&self) -> bool {
        self.streams.len() < self.config.max_streams
    }

    /// The stream a connection belongs to.
    pub fn stream_of(&self, conn: ConnId) -> Option<StreamId> {
        self.by_conn.get(&conn).copied()
    }

    /// True when `stream` is open.
    pub fn contains(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Flow-control state of `stream`.
    pub fn stats(&self, stream: StreamId) -> Option<StreamStats> {
        self.streams.get(&stream).map(|s| StreamStats {
            pending: s.pending.len(),
            send_credit: s.send_credit,
            recv_allowed: s.recv_allowed,
        })
    }

    /// Unsent bytes queued on the carrier.
    pub fn carrier_backlog(&self) -> usize {
        self.carrier_backlog.unsent()
    }

    /// Adds a stream joined to `conn`. `conn_ready` is false when the connection is still
    /// being opened (call [`Mux::conn_connected`] when it is).
    pub fn add(&mut self, stream: StreamId, conn: ConnId, conn_ready: bool) {
        self.add_with_preamble(stream, conn, conn_ready, None)
    }

    /// [`Mux::add`] for a connection that must receive `preamble` before any of the
    /// stream's bytes (the remote end's PROXY header). The preamble is the machine's own,
    /// so the peer's credit does not pay for it. Give it only for a connection still being
    /// opened (`conn_ready` false): it is written when [`Mux::conn_connected`] is called.
    pub fn add_with_preamble(&mut self, stream: StreamId, conn: ConnId, conn_ready: bool, preamble: Option<Bytes>) {
        debug_assert!(preamble.is_none() || !conn_ready, "a preamble is written at conn_connected");
        let window = u64::from(self.config.initial_window);
        self.streams.insert(
            stream,
            Stream {
                conn,
                conn_ready,
                pending: ChunkQueue::new(),
                send_credit: window,
                reads_paused: false,
                conn_eof: false,
                fin_sent: false,
                queued: false,
                preamble,
                preamble_unsent: 0,
                early: VecDeque::new(),
                recv_allowed: window,
                unacked: Backlog::default(),
                consumed: 0,
                fin_received: false,
                conn_write_closed: false,
            },
        );
        self.by_conn.insert(conn, stream);
    }

    /// Writes a control message to the carrier.
    pub fn send<E>(&mut self, msg: &TunnelMsg, out: &mut OutputQueue<E>) {
        let bytes = msg.to_bytes();
        self.carrier_backlog.wrote(bytes.len());
        out.write(self.carrier, bytes);
    }

    /// Bytes arrived on a stream's connection: queue them for the carrier (large chunks as
    /// they are, so they reach the carrier's write queue without a copy).
    pub fn conn_received<E>(&mut self, conn: ConnId, bytes: BytesMut, out: &mut OutputQueue<E>) {
        let Some(&id) = self.by_conn.get(&conn) else { return };
        let Some(stream) = self.streams.get_mut(&id) else { return };
        if stream.fin_sent || stream.conn_eof {
            return;
        }
        stream.pending.push(bytes);
        if !stream.reads_paused && stream.pending.len() >= self.config.stream_buffer {
            stream.reads_paused = true;
            out.push(Output::PauseReading { conn });
        }
        self.enqueue(id);
        self.flush(out);
    }

    /// A stream's connection reached end of input: send `Fin` after its pending bytes.
    pub fn conn_read_closed<E>(&mut self, conn: ConnId, out: &mut OutputQueue<E>) {
        let Some(&id) = self.by_conn.get(&conn) else { return };
        let Some(stream) = self.streams.get_mut(&id) else { return };
        stream.conn_eof = true;
        self.enqueue(id);
        self.flush(out);
    }

    /// A stream's connection failed mid-stream: tell the peer to abort its side.
    pub fn reset_conn<E>(&mut self, conn: ConnId, reason: &str, out: &mut OutputQueue<E>) {
        let Some(&stream) = self.by_conn.get(&conn) else { return };
        self.send(&TunnelMsg::Reset { stream, reason: reason.to_owned() }, out);
        self.forget(stream, EndKind::Reset(reason.to_owned()));
    }

    /// A stream's connection could not be opened: the peer's client gets `reason`.
    pub fn refuse_conn<E>(&mut self, conn: ConnId, reason: &str, out: &mut OutputQueue<E>) {
        let Some(&stream) = self.by_conn.get(&conn) else { return };
        self.send(&TunnelMsg::Refuse { stream, reason: reason.to_owned() }, out);
        self.forget(stream, EndKind::Refused(reason.to_owned()));
    }

    /// The next stream forgotten since the last call.
    pub fn pop_ended(&mut self) -> Option<Ended> {
        self.ended.pop_front()
    }

    /// A connection opened by the remote end is up: deliver what arrived meanwhile.
    pub fn conn_connected<E>(&mut self, conn: ConnId, out: &mut OutputQueue<E>) {
        let Some(&id) = self.by_conn.get(&conn) else { return };
        let Some(stream) = self.streams.get_mut(&id) else { return };
        stream.conn_ready = true;
        if let Some(preamble) = stream.preamble.take() {
            stream.preamble_unsent = preamble.len();
            stream.unacked.wrote(preamble.len());
            out.write(conn, preamble);
        }
        for bytes in std::mem::take(&mut stream.early) {
            stream.unacked.wrote(bytes.len());
            out.write(conn, bytes);
        }
        self.after_delivery(id, out);
        self.enqueue(id);
        self.flush(out);
    }

    /// The driver sent `n` bytes of a stream connection's writes: return credit to the peer
    /// once a quarter window has been consumed.
    pub fn conn_sent<E>(&mut self, conn: ConnId, n: usize, out: &mut OutputQueue<E>) {
        let Some(&id) = self.by_conn.get(&conn) else { return };
        let Some(stream) = self.streams.get_mut(&id) else { return };
        stream.unacked.sent(n);
        // Sent bytes are reported in order: the preamble's come first.
        let own = n.min(stream.preamble_unsent);
        stream.preamble_unsent -= own;
        stream.consumed += (n - own) as u64;
        if stream.fin_received {
            return;
        }
        if stream.consumed >= u64::from(self.config.initial_window / 4) {
            let increment = stream.consumed as u32;
            stream.consumed = 0;
            stream.recv_allowed += u64::from(increment);
            self.send(&TunnelMsg::Window { stream: id, increment }, out);
        }
    }

    /// The driver sent `n` bytes of the carrier's writes: there may be room for more data.
    pub fn carrier_sent<E>(&mut self, n: usize, out: &mut OutputQueue<E>) {
        self.carrier_backlog.sent(n);
        self.flush(out);
    }

    /// Handles a stream message from the peer (`Data`, `Window`, `Fin`, `Refuse`, `Reset`).
    /// Messages for streams that are already gone are ignored: they were in flight when the
    /// stream ended.
    pub fn receive<E>(&mut self, msg: TunnelMsg, out: &mut OutputQueue<E>) -> Result<(), MuxViolation> {
        match msg {
            TunnelMsg::Data { stream: id, bytes } => {
                let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
                if bytes.len() as u64 > stream.recv_allowed {
                    return Err(MuxViolation::OverWindow {
                        stream: id,
                        len: bytes.len(),
                        allowed: stream.recv_allowed,
                    });
                }
                stream.recv_allowed -= bytes.len() as u64;
                if stream.fin_received {
                    return Ok(());
                }
                if stream.conn_ready {
                    stream.unacked.wrote(bytes.len());
                    out.write(stream.conn, bytes);
                } else {
                    stream.early.push_back(bytes);
                }
            }
            TunnelMsg::Window { stream: id, increment } => {
                let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
                stream.send_credit += u64::from(increment);
                if stream.send_credit > MAX_WINDOW {
                    return Err(MuxViolation::WindowOverflow { stream: id });
                }
                self.enqueue(id);
                self.flush(out);
            }
            TunnelMsg::Fin { stream: id } => {
                let Some(stream) = self.streams.get_mut(&id) else { return Ok(()) };
                stream.fin_received = true;
                self.after_delivery(id, out);
            }
            TunnelMsg::Refuse { stream: id, reason } => {
                if let Some(stream) = self.streams.get(&id) {
                    // After a `Fin` the connection's write side is shut: nothing more to say.
                    if !stream.conn_write_closed {
                        out.write(stream.conn, crate::service::error_line(&reason));
                    }
                    out.close(stream.conn, CloseHow::Graceful);
                    self.forget(id, EndKind::Refused(reason));
                }
            }
            TunnelMsg::Reset { stream: id, reason } => {
                if let Some(stream) = self.streams.get(&id) {
                    out.close(stream.conn, CloseHow::Abort);
                    self.forget(id, EndKind::Reset(reason));
                }
            }
            // Control messages belong to the owner; nothing for the multiplexer to do.
            _ => {}
        }
        Ok(())
    }

    /// Refuses a stream the peer asked to open.
    pub fn refuse<E>(&mut self, stream: StreamId, reason: &str, out: &mut OutputQueue<E>) {
        self.send(&TunnelMsg::Refuse { stream, reason: reason.to_owned() }, out);
    }

    /// The carrier is gone: abort every stream's connection. Returns their connections;
    /// nothing is queued for [`Mux::pop_ended`].
    pub fn abort_all<E>(&mut self, out: &mut OutputQueue<E>) -> Vec<ConnId> {
        let conns: Vec<ConnId> = self.by_conn.keys().copied().collect();
        for conn in &conns {
            out.close(*conn, CloseHow::Abort);
        }
        self.streams.clear();
        self.by_conn.clear();
        self.ready.clear();
        self.ended.clear();
        conns
    }

    fn forget(&mut self, id: StreamId, kind: EndKind) {
        if let Some(stream) = self.streams.remove(&id) {
            self.by_conn.remove(&stream.conn);
            self.ended.push_back(Ended { stream: id, conn: stream.conn, kind });
        }
    }

    /// After data or `Fin` from the peer: once everything before the `Fin` is handed to the
    /// connection, shut its write side, and forget the stream if the other way is done too.
    fn after_delivery<E>(&mut self, id: StreamId, out: &mut OutputQueue<E>) {
        let Some(stream) = self.streams.get_mut(&id) else { return };
        if stream.fin_received && stream.conn_ready && stream.early.is_empty() && !stream.conn_write_closed {
            stream.conn_write_closed = true;
            let how = if stream.conn_eof { CloseHow::Graceful } else { CloseHow::HalfClose };
            out.close(stream.conn, how);
        }
        self.forget_if_done(id)
    }

    fn forget_if_done(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(|s| s.fin_sent && s.conn_write_closed) {
            self.forget(id, EndKind::Finished);
        }
    }

    fn enqueue(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.get_mut(&id) {
            let has_data = !stream.pending.is_empty() && stream.send_credit > 0;
            let owes_fin = stream.pending.is_empty() && stream.conn_eof && !stream.fin_sent;
            if !stream.queued && (has_data || owes_fin) {
                stream.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    fn flush<E>(&mut self, out: &mut OutputQueue<E>) {
        while self.carrier_backlog.unsent() < self.config.carrier_high {
            let Some(id) = self.ready.pop_front() else { break };
            let Some(stream) = self.streams.get_mut(&id) else { continue };
            stream.queued = false;
            let n = stream.pending.len().min(MAX_DATA).min(stream.send_credit.min(MAX_DATA as u64) as usize);
            if n > 0 {
                stream.send_credit -= n as u64;
                if self.headers.capacity() - self.headers.len() < 10 {
                    self.headers.reserve(4096);
                }
                encode_data_header(id, n, &mut self.headers);
                let header = self.headers.split().freeze();
                self.carrier_backlog.wrote(header.len() + n);
                out.write(self.carrier, header);
                let carrier = self.carrier;
                stream.pending.take(n, |piece| out.write(carrier, piece));
                if stream.reads_paused && stream.pending.len() <= self.config.stream_buffer / 2 {
                    stream.reads_paused = false;
                    out.push(Output::ResumeReading { conn: stream.conn });
                }
            }
            let send_fin = stream.pending.is_empty() && stream.conn_eof && !stream.fin_sent;
            if send_fin {
                stream.fin_sent = true;
                self.send(&TunnelMsg::Fin { stream: id }, out);
                self.forget_if_done(id);
            } else {
                self.enqueue(id);
            }
        }
    }
}
