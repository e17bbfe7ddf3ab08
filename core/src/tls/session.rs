//! One TLS connection inside [`Tls`](super::Tls): the rustls state, what the inner machine
//! wrote before the handshake finished, and how written plaintext maps to sent ciphertext.

use crate::machine::CloseHow;
use bytes::Bytes;
use rustls::Connection;
use std::collections::VecDeque;
use std::io::{Read, Write};

/// Plaintext an inner machine may write on an accepted connection before its handshake
/// finishes (a greeting, a banner). More than this and the connection is closed: no line
/// service writes that much unasked, and the bytes would sit in memory for a peer that may
/// never finish the handshake.
pub const MAX_EARLY_WRITES: usize = 64 * 1024;

/// Most plaintext bytes in one TLS record.
const RECORD_PAYLOAD: usize = 16 * 1024;
/// Bytes a TLS 1.3 record adds to its plaintext: the 5-byte header, the content-type byte
/// and a 16-byte AEAD tag.
const RECORD_OVERHEAD: usize = 5 + 1 + 16;

/// What a call into a session produced for the driver and the inner machine.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Ciphertext to write to the socket.
    pub cipher: Option<Bytes>,
    /// Plaintext that arrived, for the inner machine.
    pub plain: Vec<u8>,
    /// The peer sent close_notify: its side of the stream ended cleanly.
    pub peer_closed: bool,
    /// The handshake finished during this call.
    pub established: bool,
}

/// One TLS connection's state.
pub(crate) struct Session {
    tls: Connection,
    /// The handshake has finished and the inner machine knows.
    pub established: bool,
    /// The peer's close_notify was delivered to the inner machine.
    pub peer_closed: bool,
    /// Plaintext the inner machine wrote before the handshake finished.
    early: Vec<Bytes>,
    early_len: usize,
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
    /// Ciphertext written in total, and the marks `(ciphertext end, plaintext end)` of each
    /// write not yet reported sent, for mapping the driver's `Sent` back to plaintext.
    cipher_written: u64,
    plain_written: u64,
    cipher_sent: u64,
    plain_reported: u64,
    marks: VecDeque<(u64, u64)>,
    /// Bytes have arrived: the first one told whether the peer speaks TLS at all.
    pub heard: bool,
}

impl Session {
    /// A session for `tls`, which the inner machine already knows of (`inner_knows`) when
    /// it was accepted.
    pub fn new(mut tls: Connection, inner_knows: bool) -> Session {
        // Writes are encrypted and handed to the driver at once, so rustls need not cap
        // its own buffer: the driver's write queue is the one bound.
        tls.set_buffer_limit(None);
        Session {
            tls,
            established: false,
            peer_closed: false,
            early: Vec::new(),
            early_len: 0,
            close_after_handshake: None,
            inner_gone: false,
            inner_knows,
            local: None,
            cipher_written: 0,
            plain_written: 0,
            cipher_sent: 0,
            plain_reported: 0,
            marks: VecDeque::new(),
            heard: false,
        }
    }

    /// True for the accepting side of the connection.
    pub fn is_server(&self) -> bool {
        matches!(self.tls, Connection::Server(_))
    }

    /// True until the handshake is done.
    pub fn is_handshaking(&self) -> bool {
        !self.established
    }

    /// The negotiated cipher suite, once established.
    pub fn suite(&self) -> String {
        self.tls.negotiated_cipher_suite().map_or_else(|| "none".into(), |s| format!("{:?}", s.suite()))
    }

    /// Feeds ciphertext from the peer; returns what it produced, or the TLS error that ends
    /// the connection (with any alert for the peer in the progress's ciphertext).
    pub fn receive(&mut self, mut bytes: &[u8]) -> Result<Progress, (rustls::Error, Option<Bytes>)> {
        self.heard = true;
        let mut progress = Progress::default();
        while !bytes.is_empty() {
            if let Err(e) = self.tls.read_tls(&mut bytes) {
                let error = rustls::Error::General(format!("cannot take the record: {e}"));
                return Err((error, self.take_cipher()));
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => return Err((e, self.take_cipher())),
            };
            let waiting = state.plaintext_bytes_to_read();
            let peer_closed = state.peer_has_closed();
            if waiting > 0 {
                let start = progress.plain.len();
                progress.plain.resize(start + waiting, 0);
                let n = self.tls.reader().read(&mut progress.plain[start..]).unwrap_or(0);
                progress.plain.truncate(start + n);
            }
            if peer_closed && !self.peer_closed {
                self.peer_closed = true;
                progress.peer_closed = true;
            }
        }
        if !self.established && !self.tls.is_handshaking() {
            self.established = true;
            progress.established = true;
            for early in std::mem::take(&mut self.early) {
                self.encrypt(&early);
            }
            self.early_len = 0;
        }
        progress.cipher = self.take_cipher();
        Ok(progress)
    }

    /// The inner machine wrote `bytes`. Before the handshake finishes they wait (up to
    /// [`MAX_EARLY_WRITES`]; `Err` past that); after, they come back as ciphertext.
    pub fn write(&mut self, bytes: Bytes) -> Result<Option<Bytes>, usize> {
        if !self.established {
            self.early_len += bytes.len();
            if self.early_len > MAX_EARLY_WRITES {
                return Err(self.early_len);
            }
            self.early.push(bytes);
            return Ok(None);
        }
        self.encrypt(&bytes);
        Ok(self.take_cipher_of(bytes.len()))
    }

    fn encrypt(&mut self, bytes: &[u8]) {
        // With no buffer limit, rustls takes every byte.
        let _ = self.tls.writer().write_all(bytes);
        self.plain_written += bytes.len() as u64;
    }

    /// Queues close_notify (our side of the stream ends cleanly); returns its ciphertext.
    pub fn close_notify(&mut self) -> Option<Bytes> {
        self.tls.send_close_notify();
        self.take_cipher()
    }

    /// Whatever ciphertext rustls has queued (the ClientHello, after `new`).
    pub fn take_cipher(&mut self) -> Option<Bytes> {
        self.take_cipher_of(0)
    }

    /// [`Session::take_cipher`] after `plain` bytes were encrypted: the buffer is sized
    /// for their records at once, so a large write is not copied again as it grows.
    fn take_cipher_of(&mut self, plain: usize) -> Option<Bytes> {
        let records = plain / RECORD_PAYLOAD + 1;
        let mut out = Vec::with_capacity(plain + records * RECORD_OVERHEAD);
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return None;
        }
        self.cipher_written += out.len() as u64;
        self.marks.push_back((self.cipher_written, self.plain_written));
        Some(Bytes::from(out))
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
        delta as usize
    }
}
