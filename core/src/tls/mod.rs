//! TLS 1.3 for any machine's connections, sans-IO and deterministic.
//!
//! [`Tls`] wraps a machine and sits between it and its driver. On the connections it is
//! told to secure (those accepted on chosen listeners, those dialled to chosen addresses)
//! it turns the driver's ciphertext into the plaintext the inner machine reads, and the
//! inner machine's writes into records: the handshake through rustls's IO-free API
//! (`process_tls_records` on our own buffers), the records after it sealed and opened in
//! place by the core itself (`records`, keys from rustls). Every other connection passes
//! through untouched. The inner machine is unchanged: it sees the same [`Input`]s as on a
//! plain connection, only later (a dialled connection is `Connected` once its handshake is
//! done, or `ConnectFailed` with the TLS reason) and in plaintext.
//!
//! # Determinism
//!
//! The core reads no clock and draws no entropy, and neither does rustls here: its
//! randomness comes from a ChaCha20 generator seeded with the 32 secret bytes the machine
//! is built with ([`Env::secret`](crate::Env::secret): drawn from the OS by the adapters'
//! users, derived from the run's seed by the simulator), and its `now` for certificate
//! validity from the machine's [`WallClock`]. The same seed replays the same handshake byte
//! for byte. See [`crypto`] for how the hooks are scoped to one call.
//!
//! # What is refused
//!
//! - Anything but TLS 1.3; key exchange X25519; server keys Ed25519 (`switchyard cert`).
//! - A peer that sends text where a TLS record belongs (`nc`, `telnet` on a TLS port) gets
//!   one plaintext line saying the port speaks TLS, then the connection closes.
//! - A certificate that does not match the pin, or does not chain to a given authority, or
//!   is outside its validity dates by the wall clock: the handshake fails with the reason.
//! - On a server with [`ClientCerts::Optional`], a client certificate that does not chain
//!   to the trust fails the handshake; one that chains is reported to the inner machine by
//!   [`Machine::peer_certified`] before the connection's first plaintext; no certificate is
//!   no report.
//! - A peer that ends the stream (TCP FIN) without TLS's close_notify: the inner machine
//!   sees the connection end abnormally (`Closed`), not cleanly, since the data may have
//!   been cut short.
//!
//! Each failure closes that one connection, emits [`TlsEvent::Failed`] with the reason,
//! and tells the inner machine; every other connection carries on.

pub mod crypto;
#[doc(hidden)]
pub mod fuzzing;
mod records;
mod session;
mod trust;

/// The DER types a [`TlsIdentity`] and [`Trust::Authorities`] are made of, from
/// `rustls-pki-types`, so an embedder needs no dependency of its own for them.
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use session::MAX_EARLY_WRITES;
pub use trust::{BadFingerprint, Fingerprint, Trust, TrustError};

use crate::id::{ConnId, ListenerId};
use crate::machine::{CloseHow, Input, Machine, NetError, Output, OutputQueue, Refusal};
use crate::time::{Instant, WallClock};
use bytes::BytesMut;
use crypto::Scope;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConfig, ServerConfig};
use session::{Broken, Session};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A server's certificate chain (its own first) and private key, as DER.
#[derive(Debug)]
pub struct TlsIdentity {
    /// The certificate chain, the server's own certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key (Ed25519, PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl TlsIdentity {
    /// The fingerprint of the server's own certificate: what clients pin.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.chain.first().map(|c| Fingerprint::of(c))
    }
}

/// Which connections get TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secure<T> {
    /// Every one.
    All,
    /// Only these (listeners, or destination addresses).
    Only(Vec<T>),
}

impl<T: PartialEq> Secure<T> {
    fn covers(&self, item: &T) -> bool {
        match self {
            Secure::All => true,
            Secure::Only(items) => items.contains(item),
        }
    }
}

/// The server side: connections accepted on `listeners` are TLS, with this identity.
#[derive(Debug, Clone)]
pub struct TlsServe {
    /// The certificate and key to present.
    pub identity: TlsIdentity,
    /// The listeners whose connections are TLS.
    pub listeners: Secure<ListenerId>,
    /// What to ask of clients' certificates: nothing, a certificate every client must
    /// present, or one a client may present (see [`ClientCerts`]).
    pub clients: ClientCerts,
}

/// Whether a TLS server asks its clients for a certificate, and which it accepts.
#[derive(Debug, Clone)]
pub enum ClientCerts {
    /// No certificate is asked for.
    None,
    /// Mutual TLS: every client must present a certificate this trust accepts, or the
    /// handshake fails.
    Required(Trust),
    /// A client may present a certificate; if it does, the trust must accept it (or the
    /// handshake fails), and the inner machine is told of it by
    /// [`Machine::peer_certified`] before any of the connection's plaintext. A client
    /// without one is served as usual. For a port that users without certificates share
    /// with servers that have them (a mesh server with `--mesh-ca`).
    Optional(Trust),
}

/// The client side: connections the inner machine dials to `to` are TLS, checked against
/// `trust`, asking for `server_name` (SNI, and the name a CA-issued certificate must carry;
/// `None`: the IP address dialled, which suits a machine that dials several servers).
#[derive(Debug, Clone)]
pub struct TlsDial {
    /// What server certificates to accept.
    pub trust: Trust,
    /// The name to ask for and check (a DNS name or an IP address); `None` for the IP
    /// address of each connection's destination.
    pub server_name: Option<String>,
    /// The destinations that are TLS.
    pub to: Secure<SocketAddr>,
    /// Mutual TLS: the certificate and key to present to servers that ask for one.
    pub identity: Option<TlsIdentity>,
}

/// What to secure; either side may be absent.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Accepted connections to secure, and with what.
    pub serve: Option<TlsServe>,
    /// Dialled connections to secure, and how to check the server.
    pub dial: Option<TlsDial>,
}

/// Why TLS could not be set up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    /// The server's certificate or key was refused.
    #[error("the TLS certificate and key cannot be used: {0}")]
    Identity(String),
    /// The server name is neither a DNS name nor an IP address.
    #[error("{0:?} is not a server name TLS can check (a DNS name or an IP address)")]
    ServerName(String),
    /// The trust could not be set up.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// What a TLS-wrapped machine reports: the inner machine's events, and each connection's
/// handshake result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsEvent<E> {
    /// The inner machine's event.
    Inner(E),
    /// A connection's handshake finished.
    Secured {
        /// The connection.
        conn: ConnId,
        /// The cipher suite agreed, e.g. `TLS13_AES_128_GCM_SHA256`.
        suite: String,
    },
    /// A connection was refused or ended by TLS, with the reason; it is closed.
    Failed {
        /// The connection.
        conn: ConnId,
        /// Why, in words.
        reason: String,
    },
}

/// The line a text client (`nc`, `telnet`) on a TLS port gets before the port closes.
pub const TEXT_ON_TLS_REPLY: &str =
    "error: this port speaks TLS; connect with a TLS client (e.g. openssl s_client -connect HOST:PORT)\n";

/// True when `bytes` start like a TLS record (content type 20–23, then version 3.x): what a
/// plaintext protocol that gets TLS instead sees, so it can say so rather than report a
/// broken frame.
pub fn looks_like_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x14..=0x17, 0x03, 0x00..=0x04, ..])
}

/// For a plaintext client of a binary protocol whose decoder just failed on `bytes`: if
/// they are a TLS record, the one line that says so (`the PEER speaks TLS: give this end
/// --tls-pin or --tls-ca`), to report instead of the decoder's error.
pub fn tls_instead(bytes: &[u8], peer: &str) -> Option<String> {
    looks_like_record(bytes).then(|| format!("the {peer} speaks TLS: give this end --tls-pin or --tls-ca"))
}

/// A machine whose chosen connections run over TLS 1.3. See the [module docs](self).
pub struct Tls<M: Machine> {
    inner: M,
    server: Option<(Arc<ServerConfig>, Secure<ListenerId>)>,
    client: Option<(Arc<ClientConfig>, Option<ServerName<'static>>, Secure<SocketAddr>)>,
    sessions: BTreeMap<ConnId, Session>,
    /// The generator and time lent to rustls; out only during a call (see `in_scope`).
    scope: Option<Scope>,
    wall: WallClock,
    now: Instant,
    out: OutputQueue<TlsEvent<M::Event>>,
}

impl<M: Machine> Tls<M> {
    /// Wraps `inner`. `secret` seeds the TLS randomness (draw it from the OS, or
    /// [`Env::secret`](crate::Env::secret)); `wall` is the wall clock at start, re-based by
    /// [`Machine::handle_wall_clock`].
    pub fn new(inner: M, settings: TlsSettings, secret: [u8; 32], wall: WallClock) -> Result<Tls<M>, TlsError> {
        let server = match settings.serve {
            None => None,
            Some(serve) => Some((server_config(serve.identity, &serve.clients)?, serve.listeners)),
        };
        let client = match settings.dial {
            None => None,
            Some(dial) => {
                let name = match dial.server_name {
                    None => None,
                    Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?),
                };
                Some((client_config(&dial.trust, dial.identity)?, name, dial.to))
            }
        };
        let mut tls = Tls {
            inner,
            server,
            client,
            sessions: BTreeMap::new(),
            scope: Some(Scope::new(secret)),
            wall,
            now: Instant::ZERO,
            out: OutputQueue::default(),
        };
        // A client machine asks to connect as it is built.
        tls.in_scope(|tls| tls.pump());
        Ok(tls)
    }

    /// The inner machine, to inspect it.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// Runs an app command `f` on the inner machine (a client's `send_line`, say) and takes
    /// in what it wrote; drain outputs afterwards, as after any call.
    pub fn command<T>(&mut self, now: Instant, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        self.advance(now);
        let result = f(&mut self.inner, self.now);
        self.in_scope(|tls| tls.pump());
        result
    }

    /// Connections whose handshake has not finished, and those running TLS in all.
    pub fn sessions(&self) -> (usize, usize) {
        (self.sessions.values().filter(|s| s.is_handshaking()).count(), self.sessions.len())
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Runs `f` with this machine's generator and wall time lent to rustls.
    fn in_scope<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let mut scope = self.scope.take().expect("a TLS machine is not called from inside itself");
        scope.unix_micros = self.wall.unix_micros(self.now);
        let (result, scope) = scope.lend(|| f(self));
        self.scope = Some(scope);
        result
    }

    /// Takes every output of the inner machine, securing what belongs to TLS connections.
    fn pump(&mut self) {
        while let Some(output) = self.inner.poll_output() {
            match output {
                Output::Connect { conn, to } => {
                    if let Some((config, name, dests)) = &self.client {
                        if dests.covers(&to) {
                            let name = name.clone().unwrap_or_else(|| ServerName::IpAddress(to.ip().into()));
                            match UnbufferedClientConnection::new(config.clone(), name) {
                                Ok(c) => {
                                    self.sessions.insert(conn, Session::client(c));
                                }
                                Err(e) => {
                                    // Only a broken provider fails here; the inner machine
                                    // hears of it as a failed connect.
                                    let reason = describe(&e, Side::Client);
                                    self.out.event(TlsEvent::Failed { conn, reason: reason.clone() });
                                    self.inner.handle_input(
                                        self.now,
                                        Input::ConnectFailed { conn, error: NetError::Other(format!("TLS: {reason}")) },
                                    );
                                    continue;
                                }
                            }
                        }
                    }
                    self.out.push(Output::Connect { conn, to });
                }
                Output::Write { conn, bytes } => match self.sessions.get_mut(&conn) {
                    None => self.out.write(conn, bytes),
                    Some(session) => match session.write(bytes) {
                        Ok(Some(cipher)) => self.out.write(conn, cipher),
                        Ok(None) => {}
                        Err(broken) => self.broken(conn, broken, None),
                    },
                },
                Output::Close { conn, how } => self.inner_close(conn, how),
                Output::Event(e) => self.out.event(TlsEvent::Inner(e)),
                other @ (Output::PauseReading { .. }
                | Output::ResumeReading { .. }
                | Output::Transmit { .. }
                | Output::Listen { .. }
                | Output::Unlisten { .. }) => self.out.push(other.map_event(|_| unreachable!("not an event"))),
            }
        }
    }

    fn inner_close(&mut self, conn: ConnId, how: CloseHow) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return self.out.close(conn, how);
        };
        if how == CloseHow::Graceful || how == CloseHow::Abort {
            session.inner_gone = true;
        }
        match how {
            CloseHow::Abort => {
                self.sessions.remove(&conn);
                self.out.close(conn, how);
            }
            _ if session.is_handshaking() => {
                // What the inner machine wrote goes out once the handshake is done.
                session.close_after_handshake = Some(how);
            }
            _ => {
                match session.close_notify() {
                    Ok(Some(cipher)) => self.out.write(conn, cipher),
                    Ok(None) => {}
                    Err(broken) => return self.broken(conn, broken, None),
                }
                if how == CloseHow::Graceful {
                    self.sessions.remove(&conn);
                }
                self.out.close(conn, how);
            }
        }
    }

    /// Ends `conn` because its session broke, sending any alert first; `instead` is a
    /// better reason than rustls's, when one is known.
    fn broken(&mut self, conn: ConnId, broken: Broken, instead: Option<String>) {
        match broken {
            Broken::Tls(error, alert) => {
                if let Some(alert) = alert {
                    self.out.write(conn, alert);
                }
                let side = match self.sessions.get(&conn) {
                    Some(s) if s.is_server() => Side::Server,
                    _ => Side::Client,
                };
                self.fail(conn, instead.unwrap_or_else(|| describe(&error, side)), CloseHow::Graceful);
            }
            Broken::TooEarly(len) => {
                let reason = format!(
                    "the service wrote {len} bytes before the TLS handshake finished (limit {MAX_EARLY_WRITES})"
                );
                self.fail(conn, reason, CloseHow::Abort);
            }
        }
    }

    /// Ends `conn` for a TLS reason: the inner machine hears it as the connection failing.
    fn fail(&mut self, conn: ConnId, reason: String, how: CloseHow) {
        let Some(session) = self.sessions.remove(&conn) else { return };
        self.out.event(TlsEvent::Failed { conn, reason: reason.clone() });
        self.out.close(conn, how);
        if session.inner_gone {
            return;
        }
        let error = NetError::Other(format!("TLS: {reason}"));
        let input = if session.inner_knows {
            Input::Closed { conn, reason: error }
        } else {
            Input::ConnectFailed { conn, error }
        };
        self.inner.handle_input(self.now, input);
    }

    fn received(&mut self, conn: ConnId, bytes: BytesMut) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return self.inner.handle_input(self.now, Input::Received { conn, bytes });
        };
        if !session.heard && crate::wire::frame::starts_with_text(&bytes) {
            self.out.write(conn, bytes::Bytes::from_static(TEXT_ON_TLS_REPLY.as_bytes()));
            let reason =
                format!("the peer sent text, not TLS: {}", crate::service::reply::Excerpt::of(&bytes.freeze()));
            return self.fail(conn, reason, CloseHow::Graceful);
        }
        // Binary, but not a handshake record: a plaintext client of a binary protocol (a
        // tunnel end or mesh client without TLS options). rustls answers it with an alert,
        // which such a client can recognise (see `looks_like_record`); the log says what
        // came instead of a handshake.
        let not_a_handshake = (!session.heard && session.is_server() && !bytes.starts_with(&[0x16])).then(|| {
            format!(
                "the peer did not start a TLS handshake (its first byte is 0x{:02x}): a client without TLS?",
                bytes[0]
            )
        });
        match session.receive(bytes) {
            Err(broken) => self.broken(conn, broken, not_a_handshake),
            Ok(progress) => {
                if let Some(cipher) = progress.cipher {
                    self.out.write(conn, cipher);
                }
                if progress.established {
                    self.established(conn);
                }
                for plain in progress.plain {
                    // The inner machine may end the connection on any record.
                    if !self.inner_listens(conn) {
                        return;
                    }
                    self.inner.handle_input(self.now, Input::Received { conn, bytes: plain });
                }
                if !self.inner_listens(conn) {
                    return;
                }
                if progress.peer_closed {
                    self.inner.handle_input(self.now, Input::ReadClosed { conn });
                }
            }
        }
    }

    /// True while the inner machine still takes input for `conn`.
    fn inner_listens(&self, conn: ConnId) -> bool {
        self.sessions.get(&conn).is_some_and(|s| !s.inner_gone)
    }

    fn established(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        self.out.event(TlsEvent::Secured { conn, suite: session.suite() });
        let certified = session.client_certificate;
        // The early writes were encrypted when the handshake finished; send them.
        match session.take_cipher() {
            Ok(Some(cipher)) => self.out.write(conn, cipher),
            Ok(None) => {}
            Err(broken) => return self.broken(conn, broken, None),
        }
        // Before any plaintext of the connection, so the inner machine can admit by it.
        if let Some(fingerprint) = certified {
            self.inner.peer_certified(self.now, conn, fingerprint);
        }
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        if !session.inner_knows {
            session.inner_knows = true;
            let local = session.local.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            self.inner.handle_input(self.now, Input::Connected { conn, local });
        }
        if let Some(how) = session.close_after_handshake.take() {
            self.inner_close(conn, how);
        }
    }

    fn read_closed(&mut self, conn: ConnId) {
        let Some(session) = self.sessions.get(&conn) else {
            return self.inner.handle_input(self.now, Input::ReadClosed { conn });
        };
        if session.peer_closed {
            // close_notify came first and was delivered; the FIN adds nothing.
            if session.inner_gone {
                self.sessions.remove(&conn);
            }
            return;
        }
        let reason = if session.is_handshaking() {
            "the peer closed the connection during the TLS handshake".to_owned()
        } else {
            "the peer ended the stream without TLS close_notify (it may have been cut short)".to_owned()
        };
        self.fail(conn, reason, CloseHow::Graceful);
    }

    fn closed(&mut self, conn: ConnId, reason: NetError) {
        match self.sessions.remove(&conn) {
            None => self.inner.handle_input(self.now, Input::Closed { conn, reason }),
            Some(session) if session.inner_gone => {}
            Some(session) if session.inner_knows => self.inner.handle_input(self.now, Input::Closed { conn, reason }),
            Some(_) => self.inner.handle_input(self.now, Input::ConnectFailed { conn, error: reason }),
        }
    }

    fn sent(&mut self, conn: ConnId, bytes: usize) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return self.inner.handle_input(self.now, Input::Sent { conn, bytes });
        };
        let plain = session.sent(bytes);
        if plain > 0 && !session.inner_gone {
            self.inner.handle_input(self.now, Input::Sent { conn, bytes: plain });
        }
    }
}

/// Checks that `identity`'s certificate is one `trust` accepts both ways at `unix_secs`
/// (seconds since 1970, UTC): as a server's for `name` (a DNS name or an IP address), and
/// as a client's. For an identity presented in both directions (a mesh server dials its
/// peers with the certificate it serves), so a wrong one is refused when it is loaded, in
/// words, rather than at every peer. `Err` holds the reason.
pub fn check_identity(trust: &Trust, identity: &TlsIdentity, name: &str, unix_secs: u64) -> Result<(), String> {
    let (leaf, intermediates) = identity.chain.split_first().ok_or("it holds no certificate")?;
    let server_name =
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()).to_string())?;
    let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix_secs));
    // The certificate is our own, so the hints for a peer's (give its CA, pin it) do not fit.
    let refused = |error: rustls::Error| match error {
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        ) => "it is signed by another authority".to_owned(),
        other => describe(&other, Side::Client),
    };
    let servers = trust.verifier().map_err(|e| e.to_string())?;
    servers.verify_server_cert(leaf, intermediates, &server_name, &[], now).map_err(refused)?;
    let clients = trust.client_verifier(true).map_err(|e| e.to_string())?;
    clients
        .verify_client_cert(leaf, intermediates, now)
        .map_err(|e| format!("as a client certificate: {}", refused(e)))?;
    Ok(())
}

/// The rustls config a server side of [`Tls`] uses: TLS 1.3, our provider, `identity`, and
/// client certificates asked for and checked as `clients` says.
fn server_config(identity: TlsIdentity, clients: &ClientCerts) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_details(Arc::new(crypto::provider()), Arc::new(crypto::ScopedTime))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Identity(e.to_string()))?;
    let builder = match clients {
        ClientCerts::None => builder.with_no_client_auth(),
        ClientCerts::Required(trust) => builder.with_client_cert_verifier(trust.client_verifier(true)?),
        ClientCerts::Optional(trust) => builder.with_client_cert_verifier(trust.client_verifier(false)?),
    };
    let mut config =
        builder.with_single_cert(identity.chain, identity.key).map_err(|e| TlsError::Identity(e.to_string()))?;
    // Records after the handshake are sealed and opened by `records`.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The rustls config a client side of [`Tls`] uses: TLS 1.3, our provider, servers checked
/// by `trust`, and `identity` as the client certificate if given.
fn client_config(trust: &Trust, identity: Option<TlsIdentity>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_details(Arc::new(crypto::provider()), Arc::new(crypto::ScopedTime))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Identity(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(trust.verifier()?);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(|e| TlsError::Identity(format!("the client certificate: {e}")))?,
    };
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// Which end of a connection this machine is: what a certificate error is about (the
/// server's certificate, checked by a client, or a client's, checked by a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// A rustls error in words a user can act on, as `side` of the connection saw it.
fn describe(error: &rustls::Error, side: Side) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    let peer = if side == Side::Server { "client" } else { "server" };
    match error {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("the {peer}'s certificate is refused: {other}")
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)
            if side == Side::Server =>
        {
            "the client's certificate is not signed by an authority this port trusts (its CA is not ours)".into()
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the server's certificate is not signed by a trusted authority (give its CA, or pin it)".into()
        }
        Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => format!("{error} (by this machine's clock)"),
        Error::AlertReceived(
            AlertDescription::BadCertificate | AlertDescription::CertificateUnknown | AlertDescription::UnknownCA,
        ) => "the peer refused our certificate (it does not trust it: a wrong pin or CA on its side?)".into(),
        // What a verifier answers a certificate signed by another key in the issuer's
        // name (another CA named alike) with.
        Error::AlertReceived(AlertDescription::DecryptError) => {
            "the peer refused our certificate or handshake signature (alert DecryptError: a certificate from a CA it does not trust?)".into()
        }
        Error::AlertReceived(AlertDescription::CertificateExpired) => {
            "the peer refused our certificate as expired".into()
        }
        Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the peer requires a client certificate (see --tls-client-cert)".into()
        }
        Error::NoCertificatesPresented => "the client presented no certificate; this port requires one".into(),
        Error::AlertReceived(alert) => format!("the peer ended the handshake (alert {alert:?})"),
        Error::InvalidMessage(m) => format!("the peer does not speak TLS 1.3 ({m:?})"),
        Error::PeerIncompatible(p) => format!("the peer cannot speak what we require: TLS 1.3 with X25519 ({p:?})"),
        Error::FailedToGetCurrentTime => "no wall-clock time to check the certificate with".into(),
        other => other.to_string(),
    }
}

impl<M: Machine> Tls<M> {
    /// Accepts through `accept` (the inner machine's `accept` or `accept_at`), then starts
    /// a TLS session on the connection if `listener` is secured.
    fn accept_by(
        &mut self,
        now: Instant,
        listener: ListenerId,
        accept: impl FnOnce(&mut M, Instant) -> Result<ConnId, Refusal>,
    ) -> Result<ConnId, Refusal> {
        self.advance(now);
        self.in_scope(|tls| {
            let conn = accept(&mut tls.inner, tls.now)?;
            if let Some((config, listeners)) = &tls.server {
                if listeners.covers(&listener) {
                    match UnbufferedServerConnection::new(config.clone()) {
                        Ok(c) => {
                            tls.sessions.insert(conn, Session::server(c));
                        }
                        Err(e) => {
                            let reason = describe(&e, Side::Server);
                            tls.out.event(TlsEvent::Failed { conn, reason: reason.clone() });
                            tls.out.close(conn, CloseHow::Abort);
                            let reason = NetError::Other(format!("TLS: {reason}"));
                            tls.inner.handle_input(tls.now, Input::Closed { conn, reason });
                        }
                    }
                }
            }
            tls.pump();
            Ok(conn)
        })
    }
}

impl<M: Machine> Machine for Tls<M> {
    type Event = TlsEvent<M::Event>;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        self.accept_by(now, listener, |inner, now| inner.accept(now, listener, peer))
    }

    fn accept_at(&mut self, now: Instant, id: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal> {
        self.accept_by(now, id, |inner, now| inner.accept_at(now, id, peer, at))
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.advance(now);
        self.in_scope(|tls| {
            match input {
                Input::Connected { conn, local } => match tls.sessions.get_mut(&conn) {
                    None => tls.inner.handle_input(tls.now, Input::Connected { conn, local }),
                    Some(session) => {
                        session.local = Some(local);
                        match session.take_cipher() {
                            Ok(Some(hello)) => tls.out.write(conn, hello),
                            Ok(None) => {}
                            Err(broken) => tls.broken(conn, broken, None),
                        }
                    }
                },
                Input::ConnectFailed { conn, error } => {
                    tls.sessions.remove(&conn);
                    tls.inner.handle_input(tls.now, Input::ConnectFailed { conn, error });
                }
                Input::Received { conn, bytes } => tls.received(conn, bytes),
                Input::ReadClosed { conn } => tls.read_closed(conn),
                Input::Closed { conn, reason } => tls.closed(conn, reason),
                Input::Sent { conn, bytes } => tls.sent(conn, bytes),
                other @ (Input::Datagram { .. } | Input::Listened { .. }) => tls.inner.handle_input(tls.now, other),
            }
            tls.pump();
        })
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.in_scope(|tls| {
            tls.inner.handle_timeout(tls.now);
            tls.pump();
        })
    }

    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128) {
        self.advance(now);
        self.wall.rebase(unix_micros, self.now);
        self.in_scope(|tls| {
            tls.inner.handle_wall_clock(tls.now, unix_micros);
            tls.pump();
        })
    }

    fn peer_certified(&mut self, now: Instant, conn: ConnId, fingerprint: Fingerprint) {
        self.advance(now);
        self.in_scope(|tls| {
            tls.inner.peer_certified(tls.now, conn, fingerprint);
            tls.pump();
        })
    }

    fn poll_output(&mut self) -> Option<Output<Self::Event>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
}

#[cfg(test)]
mod record_tests;
#[cfg(test)]
mod tests;
