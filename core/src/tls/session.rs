//! One TLS connection inside [`Tls`](super::Tls): the rustls state, the buffers around it,
//! what the inner machine wrote before the handshake finished, and how written plaintext
//! maps to sent ciphertext.
//!
//! The handshake runs through rustls's unbuffered API (`process_tls_records` on our own
//! buffers). Once it is done, the session's records are sealed and opened by
//! [`Records`](super::records::Records), in place, with rustls keeping only the keys: a
//! sent byte is copied once, into the ciphertext the driver is handed, and a received one
//! not at all.

use super::records::{Kernel, Records, Refused, MAX_PLAIN};
use super::Fingerprint;
use crate::chunks::ChunkBuf;
use crate::machine::CloseHow;
use bytes::{Buf, Bytes, BytesMut};
use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::{AlertDescription, CommonState};
use std::collections::VecDeque;

/// Plaintext an inner machine may write on an accepted connection before its handshake
/// finishes (a greeting, a banner). More than this and the connection is closed: no line
/// service writes that much unasked, and the bytes would sit in memory for a peer that may
/// never finish the handshake.
pub const MAX_EARLY_WRITES: usize = 64 * 1024;

/// Most ciphertext held back waiting for the rest of a record: a handshake message may span
/// records up to 64 KiB (rustls's own limit), plus one record being completed. A peer that
/// gets past this is refused; rustls's record and handshake limits make it unreachable.
const MAX_PENDING_CIPHER: usize = 96 * 1024;

/// Buffers with more room than this are given back once empty, so that an idle connection
/// does not keep the capacity of its largest burst.
const KEEP_CAPACITY: usize = 128 * 1024;

/// Smallest arena for outgoing ciphertext: a quiet connection's lines and alerts fit many
/// times over.
const MIN_OUT_ARENA: usize = 4 * 1024;

/// What a call into a session produced for the driver and the inner machine.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Ciphertext to write to the socket.
    pub cipher: Option<Bytes>,
    /// Plaintext that arrived, for the inner machine: one piece per record, each opened
    /// where its ciphertext lay (in the driver's read, so handing it on copies nothing).
    pub plain: Vec<BytesMut>,
    /// The peer sent close_notify: its side of the stream ended cleanly.
    pub peer_closed: bool,
    /// The handshake finished during this call.
    pub established: bool,
}

/// Why a session cannot go on.
#[derive(Debug)]
pub(crate) enum Broken {
    /// rustls refused what came (or could not write); any alert for the peer is in the bytes.
    Tls(rustls::Error, Option<Bytes>),
    /// The inner machine wrote this many bytes before the handshake finished, more than
    /// [`MAX_EARLY_WRITES`].
    TooEarly(usize),
}

/// The two kinds of rustls connection, behind one driving loop, and then the records.
enum Conn {
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
    /// The handshake is done and the records are ours.
    Records(Box<Records>),
    /// Between the two, or after rustls refused to hand the keys over.
    TakingOver,
}

/// One TLS connection's state.
pub(crate) struct Session {
    conn: Conn,
    io: Io,
    /// The peer's close_notify was delivered to the inner machine.
    pub peer_closed: bool,
    /// A close (`HalfClose` or `Graceful`) the inner machine asked for before the handshake
    /// finished, carried out once its early writes are out.
    pub close_after_handshake: Option<CloseHow>,
    /// The inner machine has been told this connection ended (or never knew it).
    pub inner_gone: bool,
    /// The inner machine has been told the connection is open (`Connected` for a dialled
    /// one; accepted ones are known from the start).
    pub inner_knows: bool,
    /// For a dialled connection: the local address the driver reported, handed to the
    /// inner machine once the handshake finishes.
    pub local: Option<std::net::SocketAddr>,
    /// Ciphertext handed out in total, and the marks `(ciphertext end, plaintext end)` of
    /// each hand-out not yet reported sent, for mapping the driver's `Sent` to plaintext.
    cipher_written: u64,
    cipher_sent: u64,
    plain_reported: u64,
    marks: VecDeque<(u64, u64)>,
    /// Bytes have arrived: the first one told whether the peer speaks TLS at all.
    pub heard: bool,
    /// On the accepting side, once established: the fingerprint of the certificate the
    /// client presented and the server's trust accepted (rustls verified it during the
    /// handshake; it is read before the keys are taken over, which ends rustls's state).
    pub client_certificate: Option<Fingerprint>,
}

/// The buffers a session's rustls state works on, apart from the state so that one
/// driving loop serves client and server.
#[derive(Default)]
struct Io {
    /// Handshake ciphertext received and not yet processed: between calls, the start of a
    /// record (or of a handshake message spanning records) that a read cut off, which the
    /// next read's bytes are copied after; during a call, `incoming[..start]` is processed.
    incoming: BytesMut,
    start: usize,
    /// Ciphertext produced and not yet handed out. Hand-outs are split off it, so once the
    /// driver has written and dropped them their arena is used again (without the page
    /// faults and zeroing of a fresh allocation per write).
    out: ChunkBuf,
    /// Length of the last hand-out, to tell a bulk sender from a quiet one.
    last_hand_out: usize,
    /// Plaintext records not yet handed to the inner machine: any rustls opened during the
    /// handshake (from its own memory), then those `Records` opened right after it.
    received: Vec<BytesMut>,
    /// Plaintext encrypted in total.
    plain_written: u64,
    /// Plaintext the inner machine wrote before the handshake finished.
    early: Vec<Bytes>,
    early_len: usize,
}

impl Io {
    /// Drops the ciphertext rustls has processed off the front of `incoming`.
    fn drop_processed(&mut self) {
        self.incoming.advance(self.start);
        self.start = 0;
    }
}

/// What a run of the driving loop saw.
#[derive(Default)]
struct Turn {
    established: bool,
    peer_closed: bool,
}

/// `process_tls_records` and the common state, for either kind of connection.
trait Unbuffered {
    type Data;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &CommonState;
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

impl Session {
    /// A session for a connection we dial.
    pub fn client(conn: UnbufferedClientConnection) -> Session {
        Session::new(Conn::Client(Box::new(conn)), false)
    }

    /// A session for a connection we accepted, which the inner machine already knows of.
    pub fn server(conn: UnbufferedServerConnection) -> Session {
        Session::new(Conn::Server(Box::new(conn)), true)
    }

    fn new(conn: Conn, inner_knows: bool) -> Session {
        Session {
            conn,
            io: Io::default(),
            peer_closed: false,
            close_after_handshake: None,
            inner_gone: false,
            inner_knows,
            local: None,
            cipher_written: 0,
            cipher_sent: 0,
            plain_reported: 0,
            marks: VecDeque::new(),
            heard: false,
            client_certificate: None,
        }
    }

    /// The record layer, once the handshake is done.
    #[cfg(test)]
    pub fn records(&mut self) -> Option<&mut Records> {
        match &mut self.conn {
            Conn::Records(records) => Some(records),
            _ => None,
        }
    }

    /// True for the accepting side of the connection.
    pub fn is_server(&self) -> bool {
        matches!(self.conn, Conn::Server(_))
    }

    /// True until the handshake is done.
    pub fn is_handshaking(&self) -> bool {
        !matches!(self.conn, Conn::Records(_))
    }

    /// The negotiated cipher suite, once established.
    pub fn suite(&self) -> String {
        let common = match &self.conn {
            Conn::Client(c) => c.common(),
            Conn::Server(s) => s.common(),
            Conn::Records(records) => return records.suite(),
            Conn::TakingOver => return "none".into(),
        };
        common.negotiated_cipher_suite().map_or_else(|| "none".into(), |s| format!("{:?}", s.suite()))
    }

    /// Feeds ciphertext from the peer, decrypting it where it lies; returns what it
    /// produced, or why the connection ends (with any alert for the peer).
    pub fn receive(&mut self, bytes: BytesMut) -> Result<Progress, Broken> {
        self.heard = true;
        if matches!(self.conn, Conn::Records(_)) {
            let mut progress = Progress::default();
            self.open(bytes, &mut progress)?;
            progress.cipher = self.hand_out();
            return Ok(progress);
        }
        let io = &mut self.io;
        if io.incoming.is_empty() {
            io.incoming = bytes;
        } else {
            // Only the start of a record is copied: the record it completes.
            io.incoming.extend_from_slice(&bytes);
        }
        let turn = self.drive()?;
        let pending = self.io.incoming.len();
        if pending > MAX_PENDING_CIPHER {
            let error = rustls::Error::General(format!("{pending} bytes of ciphertext without a whole record"));
            return Err(Broken::Tls(error, None));
        }
        if turn.peer_closed {
            self.peer_closed = true;
        }
        Ok(Progress {
            cipher: self.hand_out(),
            plain: std::mem::take(&mut self.io.received),
            peer_closed: turn.peer_closed,
            established: turn.established,
        })
    }

    /// The inner machine wrote `bytes`. Before the handshake finishes they wait (up to
    /// [`MAX_EARLY_WRITES`]); after, they come back as ciphertext.
    pub fn write(&mut self, bytes: Bytes) -> Result<Option<Bytes>, Broken> {
        if self.is_handshaking() {
            self.io.early_len += bytes.len();
            if self.io.early_len > MAX_EARLY_WRITES {
                return Err(Broken::TooEarly(self.io.early_len));
            }
            self.io.early.push(bytes);
            return Ok(None);
        }
        self.seal(&bytes)?;
        Ok(self.hand_out())
    }

    /// Queues close_notify (our side of the stream ends cleanly); returns its ciphertext.
    /// Before the handshake is done there is nothing to close: the caller waits for it.
    pub fn close_notify(&mut self) -> Result<Option<Bytes>, Broken> {
        if let Conn::Records(records) = &mut self.conn {
            records.seal_alert(&mut self.io.out, AlertDescription::CloseNotify);
        }
        Ok(self.hand_out())
    }

    /// Whatever ciphertext is due with nothing received (the ClientHello, after `client`).
    pub fn take_cipher(&mut self) -> Result<Option<Bytes>, Broken> {
        if !matches!(self.conn, Conn::Records(_)) {
            self.drive()?;
        }
        Ok(self.hand_out())
    }

    fn drive(&mut self) -> Result<Turn, Broken> {
        let io = &mut self.io;
        let result = match &mut self.conn {
            Conn::Client(c) => drive(&mut **c, io),
            Conn::Server(s) => drive(&mut **s, io),
            Conn::Records(_) | Conn::TakingOver => return Ok(Turn::default()),
        };
        let mut turn = result.map_err(|error| {
            match &mut self.conn {
                Conn::Client(c) => encode_alert(&mut **c, &mut self.io),
                Conn::Server(s) => encode_alert(&mut **s, &mut self.io),
                Conn::Records(_) | Conn::TakingOver => {}
            }
            // The alert goes out after anything produced before the error.
            Broken::Tls(error, self.hand_out())
        })?;
        self.io.drop_processed();
        if turn.established {
            self.take_over(&mut turn)?;
        }
        Ok(turn)
    }

    /// The handshake is done: the keys go from rustls to our [`Records`], which seal the
    /// early writes and open whatever came after the handshake's last record.
    fn take_over(&mut self, turn: &mut Turn) -> Result<(), Broken> {
        let extracted = match std::mem::replace(&mut self.conn, Conn::TakingOver) {
            Conn::Client(c) => c.dangerous_into_kernel_connection().map(|(s, k)| (s, Kernel::Client(k))),
            Conn::Server(c) => {
                self.client_certificate =
                    c.peer_certificates().and_then(|chain| chain.first()).map(|c| Fingerprint::of(c));
                c.dangerous_into_kernel_connection().map(|(s, k)| (s, Kernel::Server(k)))
            }
            other => {
                self.conn = other;
                return Ok(());
            }
        };
        let records = extracted.and_then(|(secrets, kernel)| Records::new(kernel, secrets));
        self.conn = Conn::Records(Box::new(records.map_err(|error| Broken::Tls(error, None))?));
        for early in std::mem::take(&mut self.io.early) {
            self.seal(&early)?;
        }
        self.io.early_len = 0;
        let rest = std::mem::take(&mut self.io.incoming);
        if !rest.is_empty() {
            let mut progress = Progress::default();
            self.open(rest, &mut progress)?;
            self.io.received.append(&mut progress.plain);
            turn.peer_closed |= progress.peer_closed;
        }
        Ok(())
    }

    /// Seals plaintext of the inner machine's into `io.out`.
    fn seal(&mut self, plain: &[u8]) -> Result<(), Broken> {
        let Conn::Records(records) = &mut self.conn else {
            return Err(Broken::Tls(rustls::Error::HandshakeNotComplete, None));
        };
        records.seal(&mut self.io.out, plain).map_err(|error| Broken::Tls(error, None))?;
        self.io.plain_written += plain.len() as u64;
        Ok(())
    }

    /// Seals `inner` as one record of inner content type `content_type`, whatever they are,
    /// once established (for the `tls_records` fuzz target).
    pub fn seal_raw(&mut self, content_type: u8, inner: &[u8]) -> Option<Bytes> {
        let Conn::Records(records) = &mut self.conn else { return None };
        records.seal_raw(&mut self.io.out, content_type, inner);
        self.hand_out()
    }

    /// Opens the records of `bytes` into `progress`; a refused one is answered with its alert.
    fn open(&mut self, bytes: BytesMut, progress: &mut Progress) -> Result<(), Broken> {
        let Conn::Records(records) = &mut self.conn else { return Ok(()) };
        match records.open(bytes, &mut self.io.out) {
            Ok(opened) => {
                progress.plain.extend(opened.plain);
                if opened.peer_closed {
                    self.peer_closed = true;
                    progress.peer_closed = true;
                }
                Ok(())
            }
            Err(Refused { error, alert }) => {
                if let Some(alert) = alert {
                    records.seal_alert(&mut self.io.out, alert);
                }
                Err(Broken::Tls(error, self.hand_out()))
            }
        }
    }

    /// Splits off the ciphertext produced since the last hand-out, marking where it ends.
    fn hand_out(&mut self) -> Option<Bytes> {
        if self.io.out.pending() == 0 {
            return None;
        }
        let cipher = self.io.out.take();
        self.io.last_hand_out = cipher.len();
        self.cipher_written += cipher.len() as u64;
        self.marks.push_back((self.cipher_written, self.io.plain_written));
        Some(cipher.freeze())
    }

    /// The driver sent `n` more bytes of ciphertext: how many plaintext bytes that
    /// completes, for the inner machine's `Sent`.
    pub fn sent(&mut self, n: usize) -> usize {
        self.cipher_sent += n as u64;
        let mut plain_done = self.plain_reported;
        while let Some(&(cipher_end, plain_end)) = self.marks.front() {
            if cipher_end > self.cipher_sent {
                break;
            }
            plain_done = plain_end;
            self.marks.pop_front();
        }
        // Plaintext still waiting as early writes is not counted until it is encrypted.
        let delta = plain_done.saturating_sub(self.plain_reported);
        self.plain_reported = plain_done;
        if self.cipher_sent == self.cipher_written {
            // Everything handed out is written. A connection whose writes have become
            // small needs no spare arenas, and an idle one keeps no more than
            // KEEP_CAPACITY of its largest burst.
            if self.io.last_hand_out < MIN_OUT_ARENA {
                self.io.out.release_spares();
            }
            self.io.out.shrink_to(KEEP_CAPACITY);
        }
        delta as usize
    }
}

/// Runs rustls until it waits for the peer or the handshake is done, processing
/// `io.incoming[io.start..]`: records are decrypted into `io.plain`, and handshake and alert
/// records are encoded into `io.out`.
fn drive<C: Unbuffered>(conn: &mut C, io: &mut Io) -> Result<Turn, rustls::Error> {
    let mut turn = Turn::default();
    loop {
        let was_established = !conn.common().is_handshaking();
        let UnbufferedStatus { mut discard, state } = conn.process(&mut io.incoming[io.start..]);
        let state = match state {
            Ok(state) => state,
            Err(error) => {
                io.start += discard;
                return Err(error);
            }
        };
        let offered_write = matches!(state, ConnectionState::WriteTraffic(_));
        let idle = match state {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    let record = record?;
                    discard += record.discard;
                    if !record.payload.is_empty() {
                        io.received.push(BytesMut::from(record.payload));
                    }
                }
                false
            }
            ConnectionState::EncodeTlsData(mut data) => {
                encode(&mut io.out, &mut data);
                false
            }
            ConnectionState::TransmitTlsData(data) => {
                // What was encoded goes out with everything else this call produces.
                data.done();
                false
            }
            ConnectionState::PeerClosed => {
                turn.peer_closed = true;
                false
            }
            ConnectionState::WriteTraffic(_) if was_established => {
                // Done: from here the session's records are ours (`Session::take_over`).
                turn.established = true;
                true
            }
            // Either the handshake finished in this call (go round once more to see it
            // established) or it has not (rustls offers a server WriteTraffic for half-RTT
            // data, which is not sent): decided below, once the state lets go of `conn`.
            ConnectionState::WriteTraffic(_) => false,
            // BlockedHandshake, Closed, and early data (never enabled): wait for the peer.
            _ => true,
        };
        io.start += discard;
        if idle || (!was_established && conn.common().is_handshaking() && offered_write) {
            return Ok(turn);
        }
    }
}

/// Makes room for `room` more bytes in `out`, in an arena of the size [`append`] picks.
pub(super) fn reserve(out: &mut ChunkBuf, room: usize) {
    out.space(room, arena_for(room));
}

/// An arena of the next power of two holds one write of up to a mux frame (64 KiB) with
/// its records' overhead, and the small writes around it.
fn arena_for(room: usize) -> usize {
    room.next_power_of_two().max(MIN_OUT_ARENA)
}

/// Appends what `write` puts in a buffer of `room` bytes to `out`; `write` returns the bytes
/// it wrote, or the room it needs, and is called again with that much.
pub(super) fn append(out: &mut ChunkBuf, mut room: usize, mut write: impl FnMut(&mut [u8]) -> Result<usize, usize>) {
    loop {
        let space = out.space(room, arena_for(room));
        let offered = space.len();
        match write(space) {
            Ok(n) => return out.commit(n),
            Err(needed) if needed > offered => room = needed,
            // rustls asked for no more than it had: give up rather than loop.
            Err(_) => return,
        }
    }
}

/// Encodes a handshake or alert record into `out`.
fn encode<D>(out: &mut ChunkBuf, data: &mut rustls::unbuffered::EncodeTlsData<'_, D>) {
    append(out, MAX_PLAIN, |buf| match data.encode(buf) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => Err(required_size),
        // Each state is encoded once, so this is not reached; nothing is lost.
        Err(EncodeError::AlreadyEncoded) => Ok(0),
    });
}

/// After an error, encodes the alert rustls queued for the peer into `io.out`.
///
/// rustls hands queued records out before it looks at the input again, so one call yields
/// the alert; a second would process the input again and fail a second time.
fn encode_alert<C: Unbuffered>(conn: &mut C, io: &mut Io) {
    // The same buffer goes in as before the error, since rustls keeps positions into it.
    if let Ok(ConnectionState::EncodeTlsData(mut data)) = conn.process(&mut io.incoming[io.start..]).state {
        encode(&mut io.out, &mut data);
    }
}
