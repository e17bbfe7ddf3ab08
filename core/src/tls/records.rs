//! TLS 1.3 records once a session's handshake is done: sealed and opened here, in place,
//! with ring's AEADs, while rustls keeps the keys (its kernel-connection API: it computes
//! the next traffic secret at a key update and takes the server's session tickets).
//!
//! Why not rustls's own record layer: for every record it copies the plaintext it is given
//! into a buffer of its own before sealing it, and every record it opens into a fresh
//! vector, so a relayed byte was copied twice more on each side than it needs to be. Here a
//! sent byte is copied once, into the ciphertext arena where it is sealed, and a received
//! record is opened where the driver read it and handed on as a slice of that read. Only a
//! record cut in two by a read is copied, to join its halves.
//!
//! What it does (RFC 8446 §5): records of application data, alerts (close_notify ends the
//! peer's side; any other alert but user_canceled ends the connection) and post-handshake
//! handshake messages (`KeyUpdate` both ways, `NewSessionTicket` from a server); anything
//! else is refused with the alert the RFC names. Each sending key is replaced (a
//! `KeyUpdate` of ours) well before its suite's confidentiality limit.

use super::session::{append, reserve};
use crate::chunks::ChunkBuf;
use bytes::{Buf, BytesMut};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{AlertDescription, ConnectionTrafficSecrets, InvalidMessage, PeerMisbehaved, SupportedCipherSuite};

/// A record header: content type, legacy version, length.
const HEADER: usize = 5;
/// The AEAD tag every suite here adds.
const TAG: usize = 16;
/// Most plaintext bytes in one record.
pub(crate) const MAX_PLAIN: usize = 16 * 1024;
/// Most bytes of a received record after its header (RFC 8446 §5.2: 2^14 + 256).
const MAX_CIPHER: usize = MAX_PLAIN + 256;
/// Bytes a record of ours adds to its plaintext: the header, the content type and the tag.
pub(crate) const RECORD_OVERHEAD: usize = HEADER + 1 + TAG;
/// Most bytes of post-handshake handshake messages held while their rest arrives (tickets
/// are a few hundred bytes; rustls's handshake limit is the same).
const MAX_HANDSHAKE: usize = 64 * 1024;

const APPLICATION_DATA: u8 = 0x17;
const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

/// rustls's hold on the session's keys, for a key update or a ticket.
pub(crate) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update(&mut self, sending: bool) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match (self, sending) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
        }
    }

    fn suite(&self) -> SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }
}

/// One direction's key: the AEAD key, the IV its nonces are made from, and the sequence
/// number of its next record.
struct Key {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Key {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Key, rustls::Error> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return Err(rustls::Error::General("a cipher suite this build does not seal".into())),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| rustls::Error::EncryptError)?;
        let iv = <[u8; NONCE_LEN]>::try_from(iv.as_ref()).map_err(|_| rustls::Error::EncryptError)?;
        Ok(Key { key: LessSafeKey::new(key), iv, seq })
    }

    /// The nonce of the next record (RFC 8446 §5.3: the IV with the sequence number XORed
    /// into its last 8 bytes), moving the sequence on.
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }
}

/// Why a record could not be opened: the error for the log, and the alert to send.
pub(crate) struct Refused {
    pub error: rustls::Error,
    pub alert: Option<AlertDescription>,
}

impl Refused {
    fn new(error: rustls::Error, alert: AlertDescription) -> Refused {
        Refused { error, alert: Some(alert) }
    }

    fn unexpected(what: &'static str) -> Refused {
        Refused::new(
            rustls::Error::InvalidMessage(InvalidMessage::UnexpectedMessage(what)),
            AlertDescription::UnexpectedMessage,
        )
    }
}

/// What the records of one read held.
#[derive(Default)]
pub(crate) struct Opened {
    /// Each application-data record's plaintext, a slice of the read (or of the joined
    /// halves of a record the read cut).
    pub plain: Vec<BytesMut>,
    /// The peer sent close_notify.
    pub peer_closed: bool,
}

/// The record layer of one established session.
pub(crate) struct Records {
    kernel: Kernel,
    tx: Key,
    rx: Key,
    /// Records sealed under one key before we move to the next.
    rekey_after: u64,
    /// Key updates sent (ours, and answers to the peer's requests).
    updates_sent: u64,
    /// The start of a record a read cut off.
    partial: BytesMut,
    /// The start of a post-handshake handshake message that spans records.
    handshake: Vec<u8>,
    /// close_notify came: anything after it is ignored.
    peer_closed: bool,
}

impl Records {
    /// Takes over a session whose handshake rustls has finished.
    pub fn new(kernel: Kernel, secrets: rustls::ExtractedSecrets) -> Result<Records, rustls::Error> {
        // Half the suite's limit (2^24 records for AES-GCM, none for ChaCha20-Poly1305), so
        // the key is replaced long before it: every 2^23 records, 128 GiB of full ones.
        let limit = kernel.suite().tls13().map_or(1 << 23, |suite| suite.common.confidentiality_limit);
        let rekey_after = (limit / 2).max(1);
        Ok(Records {
            tx: Key::new(secrets.tx)?,
            rx: Key::new(secrets.rx)?,
            kernel,
            rekey_after,
            updates_sent: 0,
            partial: BytesMut::new(),
            handshake: Vec::new(),
            peer_closed: false,
        })
    }

    /// The negotiated suite's name.
    pub fn suite(&self) -> String {
        format!("{:?}", self.kernel.suite().suite())
    }

    /// Seals `plain` into `out` as records of at most [`MAX_PLAIN`] bytes.
    pub fn seal(&mut self, out: &mut ChunkBuf, plain: &[u8]) -> Result<(), rustls::Error> {
        // Room for all of them at once, so the records of one write share an arena.
        reserve(out, plain.len() + plain.len().div_ceil(MAX_PLAIN) * RECORD_OVERHEAD);
        for chunk in plain.chunks(MAX_PLAIN) {
            if self.tx.seq >= self.rekey_after {
                self.update_sending_key(out, false)?;
            }
            self.seal_record(out, APPLICATION_DATA, chunk);
        }
        Ok(())
    }

    /// Seals an alert: close_notify (a warning) or a fatal one.
    pub fn seal_alert(&mut self, out: &mut ChunkBuf, alert: AlertDescription) {
        let level = if alert == AlertDescription::CloseNotify { 1 } else { 2 };
        self.seal_record(out, ALERT, &[level, u8::from(alert)]);
    }

    /// Seals one record of any inner content type (for the `tls_records` fuzz target).
    pub fn seal_raw(&mut self, out: &mut ChunkBuf, content_type: u8, inner: &[u8]) {
        self.seal_record(out, content_type, &inner[..inner.len().min(MAX_PLAIN)]);
    }

    fn seal_record(&mut self, out: &mut ChunkBuf, content_type: u8, plain: &[u8]) {
        let body = plain.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (body >> 8) as u8, body as u8];
        let tx = &mut self.tx;
        append(out, HEADER + body, |buf| {
            let Some(record) = buf.get_mut(..HEADER + body) else { return Err(HEADER + body) };
            record[..HEADER].copy_from_slice(&header);
            let (inner, tag_room) = record[HEADER..].split_at_mut(plain.len() + 1);
            inner[..plain.len()].copy_from_slice(plain);
            inner[plain.len()] = content_type;
            let nonce = tx.next_nonce();
            // Sealing fails only for a message longer than the AEAD allows (GiBs).
            let tag =
                tx.key.seal_in_place_separate_tag(nonce, Aad::from(header), inner).expect("a record fits the AEAD");
            tag_room.copy_from_slice(tag.as_ref());
            Ok(HEADER + body)
        });
    }

    /// Sends our `KeyUpdate` under the current key, then moves to the next one.
    fn update_sending_key(&mut self, out: &mut ChunkBuf, update_requested: bool) -> Result<(), rustls::Error> {
        self.seal_record(out, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, u8::from(update_requested)]);
        self.tx = Key::new(self.kernel.update(true)?)?;
        self.updates_sent += 1;
        Ok(())
    }

    /// Opens the records in `read`, ciphertext from the peer; a record it cuts off is kept
    /// for the next read. Answers (a `KeyUpdate`) go into `out`.
    pub fn open(&mut self, mut read: BytesMut, out: &mut ChunkBuf) -> Result<Opened, Refused> {
        let mut opened = Opened::default();
        if !self.partial.is_empty() {
            // Copy only what completes the cut record; the rest is opened where it lies.
            let need = match record_len(&self.partial)? {
                Some(len) => len - self.partial.len(),
                None => HEADER - self.partial.len(),
            };
            let take = need.min(read.len());
            self.partial.extend_from_slice(&read.split_to(take));
            if record_len(&self.partial)? != Some(self.partial.len()) {
                // Still short: a header just completed says how much more, or the read ran out.
                return if read.is_empty() { Ok(opened) } else { self.open(read, out) };
            }
            let record = std::mem::take(&mut self.partial);
            self.open_record(record, out, &mut opened)?;
        }
        while !read.is_empty() && !self.peer_closed {
            match record_len(&read)? {
                Some(len) if len <= read.len() => {
                    let record = read.split_to(len);
                    self.open_record(record, out, &mut opened)?;
                }
                _ => {
                    self.partial = read;
                    break;
                }
            }
        }
        Ok(opened)
    }

    fn open_record(&mut self, mut record: BytesMut, out: &mut ChunkBuf, opened: &mut Opened) -> Result<(), Refused> {
        if self.peer_closed {
            return Ok(());
        }
        if record[0] != APPLICATION_DATA {
            return Err(Refused::unexpected("a record in the clear after the handshake"));
        }
        if record.len() < HEADER + 1 + TAG {
            return Err(Refused::new(rustls::Error::DecryptError, AlertDescription::BadRecordMac));
        }
        let header: [u8; HEADER] = record[..HEADER].try_into().expect("a record has a header");
        let nonce = self.rx.next_nonce();
        let inner_len = match self.rx.key.open_in_place(nonce, Aad::from(header), &mut record[HEADER..]) {
            Ok(inner) => inner.len(),
            Err(_) => return Err(Refused::new(rustls::Error::DecryptError, AlertDescription::BadRecordMac)),
        };
        record.advance(HEADER);
        record.truncate(inner_len);
        // The content type is the last byte that is not padding.
        let Some(type_at) = record.iter().rposition(|&b| b != 0) else {
            return Err(Refused::unexpected("a record with no content type"));
        };
        let content_type = record[type_at];
        record.truncate(type_at);
        if content_type != HANDSHAKE && !self.handshake.is_empty() {
            return Err(Refused::unexpected("a handshake message cut by another record"));
        }
        match content_type {
            APPLICATION_DATA => {
                if !record.is_empty() {
                    opened.plain.push(record);
                }
            }
            ALERT => self.alert(&record, opened)?,
            HANDSHAKE => self.handshake(&record, out)?,
            _ => return Err(Refused::unexpected("a record of an unknown content type")),
        }
        Ok(())
    }

    fn alert(&mut self, alert: &[u8], opened: &mut Opened) -> Result<(), Refused> {
        let &[_level, description] = alert else {
            return Err(Refused::new(
                rustls::Error::InvalidMessage(InvalidMessage::MessageTooShort),
                AlertDescription::DecodeError,
            ));
        };
        match AlertDescription::from(description) {
            AlertDescription::CloseNotify => {
                self.peer_closed = true;
                opened.peer_closed = true;
                Ok(())
            }
            // A warning that close_notify follows (RFC 8446 §6.1).
            AlertDescription::UserCanceled => Ok(()),
            other => Err(Refused { error: rustls::Error::AlertReceived(other), alert: None }),
        }
    }

    fn handshake(&mut self, bytes: &[u8], out: &mut ChunkBuf) -> Result<(), Refused> {
        if bytes.is_empty() {
            return Err(Refused::unexpected("an empty handshake record"));
        }
        if self.handshake.len() + bytes.len() > MAX_HANDSHAKE {
            return Err(Refused::new(
                rustls::Error::InvalidMessage(InvalidMessage::HandshakePayloadTooLarge),
                AlertDescription::UnexpectedMessage,
            ));
        }
        self.handshake.extend_from_slice(bytes);
        let mut at = 0;
        while let [kind, a, b, c, ..] = self.handshake[at..] {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            let Some(body) = self.handshake.get(at + 4..at + 4 + len) else { break };
            let body = body.to_vec();
            at += 4 + len;
            match kind {
                KEY_UPDATE => {
                    // The next record is under the new key, so nothing may follow in this one.
                    if at != self.handshake.len() {
                        return Err(Refused::new(
                            rustls::Error::PeerMisbehaved(PeerMisbehaved::KeyEpochWithPendingFragment),
                            AlertDescription::UnexpectedMessage,
                        ));
                    }
                    let requested = match body[..] {
                        [0] => false,
                        [1] => true,
                        _ => {
                            return Err(Refused::new(
                                rustls::Error::InvalidMessage(InvalidMessage::InvalidKeyUpdate),
                                AlertDescription::IllegalParameter,
                            ))
                        }
                    };
                    self.rx = Key::new(self.kernel.update(false).map_err(internal)?).map_err(internal)?;
                    if requested {
                        self.update_sending_key(out, false).map_err(internal)?;
                    }
                }
                NEW_SESSION_TICKET => match &mut self.kernel {
                    Kernel::Client(kernel) => kernel
                        .handle_new_session_ticket(&body)
                        .map_err(|error| Refused { error, alert: Some(AlertDescription::DecodeError) })?,
                    Kernel::Server(_) => return Err(Refused::unexpected("a session ticket from a client")),
                },
                _ => return Err(Refused::unexpected("a handshake message after the handshake")),
            }
        }
        self.handshake.drain(..at);
        Ok(())
    }
}

fn internal(error: rustls::Error) -> Refused {
    Refused::new(error, AlertDescription::InternalError)
}

/// The whole length of the record that `bytes` starts with, once its header is there.
fn record_len(bytes: &[u8]) -> Result<Option<usize>, Refused> {
    let &[_, _, _, hi, lo, ..] = bytes else { return Ok(None) };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_CIPHER {
        return Err(Refused::new(rustls::Error::PeerSentOversizedRecord, AlertDescription::RecordOverflow));
    }
    Ok(Some(HEADER + len))
}

#[cfg(test)]
impl Records {
    /// Moves to a new sending key after `records` records, to see key updates without
    /// sealing 2^23 records first.
    pub fn rekey_every(&mut self, records: u64) {
        self.rekey_after = records;
    }

    /// Key updates this end has sent.
    pub fn updates_sent(&self) -> u64 {
        self.updates_sent
    }
}
