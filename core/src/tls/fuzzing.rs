//! A hook for the `tls_records` fuzz target, not an API: two of the layer's sessions past
//! their handshake, where the client seals records of whatever content type and inner bytes
//! the fuzzer says (alerts, handshake messages, padding, nothing), and the server opens
//! them in reads cut where the fuzzer says. The fuzzer's raw bytes cannot get past a
//! record's tag, so without this the code behind it (alerts, `KeyUpdate`, tickets) would
//! only ever see what our own sessions send.

use super::crypto::Scope;
use super::session::{Broken, Session};
use super::{client_config, server_config, ClientCerts, TlsIdentity, Trust};
use bytes::{Bytes, BytesMut};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;

/// What the server's session made of one read.
#[derive(Debug)]
pub enum Opened {
    /// Plaintext records, and whether close_notify came.
    Plain { plain: Vec<BytesMut>, peer_closed: bool },
    /// The session was refused, with the reason.
    Refused(String),
}

/// A client and a server session joined past the handshake (see the module docs).
pub struct SealedPair {
    client: Session,
    server: Session,
    scope: Option<Scope>,
    /// Ciphertext the client sealed that the server has not read yet.
    pub wire: Vec<u8>,
}

impl SealedPair {
    /// Runs the handshake between a client pinning `identity`'s certificate and a server
    /// holding it, at `unix_micros`, with randomness from `seed`.
    ///
    /// # Panics
    /// If the handshake does not finish: the identity must be a usable Ed25519 one.
    pub fn new(identity: TlsIdentity, seed: [u8; 32], unix_micros: i128) -> SealedPair {
        let pin = identity.fingerprint().expect("the identity has a certificate");
        let server_config = server_config(identity, &ClientCerts::None).expect("a usable identity");
        let client_config = client_config(&Trust::Pin(pin), None).expect("a pin is always usable");
        let mut scope = Scope::new(seed);
        scope.unix_micros = unix_micros;
        let name = ServerName::try_from("fuzz.test").expect("a valid name");
        let ((client, server), scope) = scope.lend(|| {
            (
                Session::client(UnbufferedClientConnection::new(client_config, name).expect("a client")),
                Session::server(UnbufferedServerConnection::new(server_config).expect("a server")),
            )
        });
        let mut pair = SealedPair { client, server, scope: Some(scope), wire: Vec::new() };
        let mut to_server = pair.lend(|p| p.client.take_cipher()).ok().flatten();
        while let Some(hello) = to_server.take() {
            let answer = pair.lend(|p| p.server.receive(BytesMut::from(&hello[..]))).expect("the handshake").cipher;
            if let Some(answer) = answer {
                to_server = pair.lend(|p| p.client.receive(BytesMut::from(&answer[..]))).expect("the handshake").cipher;
            }
        }
        assert!(!pair.client.is_handshaking() && !pair.server.is_handshaking(), "the handshake finished");
        pair
    }

    fn lend<R>(&mut self, f: impl FnOnce(&mut SealedPair) -> R) -> R {
        let scope = self.scope.take().expect("not lent twice");
        let (result, scope) = scope.lend(|| f(self));
        self.scope = Some(scope);
        result
    }

    /// The client seals `inner` (at most 16 KiB are used) as one record of inner content
    /// type `content_type`. A 0 is padding: the type is then the last byte of `inner` that
    /// is not 0, if there is one.
    pub fn seal(&mut self, content_type: u8, inner: &[u8]) {
        if let Some(cipher) = self.lend(|p| p.client.seal_raw(content_type, inner)) {
            self.wire.extend_from_slice(&cipher);
        }
    }

    /// The client writes `bytes` as the inner machine would.
    pub fn write(&mut self, bytes: &[u8]) {
        let bytes = Bytes::copy_from_slice(bytes);
        if let Ok(Some(cipher)) = self.lend(|p| p.client.write(bytes)) {
            self.wire.extend_from_slice(&cipher);
        }
    }

    /// The server reads the next `n` bytes of [`wire`](SealedPair::wire).
    pub fn read(&mut self, n: usize) -> Opened {
        let n = n.min(self.wire.len());
        let read = BytesMut::from(&self.wire[..n]);
        self.wire.drain(..n);
        match self.lend(|p| p.server.receive(read)) {
            Ok(progress) => Opened::Plain { plain: progress.plain, peer_closed: progress.peer_closed },
            Err(Broken::Tls(error, _)) => Opened::Refused(error.to_string()),
            Err(Broken::TooEarly(n)) => Opened::Refused(format!("{n} bytes early")),
        }
    }
}
