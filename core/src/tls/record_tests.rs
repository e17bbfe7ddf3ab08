//! The record layer past the handshake ([`super::records`]), between two [`Session`]s and
//! against rustls's own record layer: bytes both ways under any cut of the reads, key
//! updates each way, and what a damaged or oversized record gets.

use super::crypto::Scope;
use super::session::{Broken, Progress, Session};
use super::{client_config, server_config, ClientCerts, TlsIdentity, Trust};
use bytes::{Bytes, BytesMut};
use quickcheck::{QuickCheck, TestResult};
use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConfig, ServerConfig};
use std::io::{Read, Write};
use std::sync::Arc;

/// 2026-12-01 00:00:00 UTC.
const DEC_2026: i128 = 1_796_083_200_000_000;
const NAME: &str = "records.test";

/// The client and server configs `Tls` builds: a self-signed certificate for [`NAME`],
/// pinned by the client.
fn configs() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let cert = CertificateParams::new(vec![NAME.to_owned()]).unwrap().self_signed(&key).unwrap();
    let identity =
        TlsIdentity { chain: vec![cert.der().clone()], key: PrivateKeyDer::try_from(key.serialize_der()).unwrap() };
    let pin = identity.fingerprint().unwrap();
    (client_config(&Trust::Pin(pin), None).unwrap(), server_config(identity, &ClientCerts::None).unwrap())
}

/// Runs `f` with a scope lent to rustls (randomness from `scope`, the time Dec 2026).
fn scoped<R>(scope: &mut Option<Scope>, f: impl FnOnce() -> R) -> R {
    let mut lent = scope.take().unwrap();
    lent.unix_micros = DEC_2026;
    let (result, back) = lent.lend(f);
    *scope = Some(back);
    result
}

fn ok(result: Result<Progress, Broken>) -> Progress {
    result.unwrap_or_else(|broken| match broken {
        Broken::Tls(error, _) => panic!("the session broke: {error}"),
        Broken::TooEarly(n) => panic!("early writes: {n}"),
    })
}

/// Two sessions of ours, handshaken, with the ciphertext each has sent and not yet been
/// fed to the other.
struct Pair {
    client: Session,
    server: Session,
    scope: Option<Scope>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    got_by_server: Vec<u8>,
    got_by_client: Vec<u8>,
    server_heard_close: bool,
}

impl Pair {
    fn handshaken() -> Pair {
        let (client_config, server_config) = configs();
        let mut scope = Some(Scope::new([7; 32]));
        let (client, server) = scoped(&mut scope, || {
            let name = ServerName::try_from(NAME).unwrap();
            (
                Session::client(UnbufferedClientConnection::new(client_config, name).unwrap()),
                Session::server(UnbufferedServerConnection::new(server_config).unwrap()),
            )
        });
        let mut pair = Pair {
            client,
            server,
            scope,
            to_server: Vec::new(),
            to_client: Vec::new(),
            got_by_server: Vec::new(),
            got_by_client: Vec::new(),
            server_heard_close: false,
        };
        let hello = pair.with_scope(|p| p.client.take_cipher()).unwrap().unwrap();
        pair.to_server.extend_from_slice(&hello);
        for _ in 0..10 {
            pair.deliver(&[usize::MAX]);
        }
        assert!(!pair.client.is_handshaking() && !pair.server.is_handshaking(), "the handshake finished");
        assert!(pair.client.records().is_some() && pair.server.records().is_some(), "the records are ours");
        pair
    }

    fn with_scope<R>(&mut self, f: impl FnOnce(&mut Pair) -> R) -> R {
        let mut scope = self.scope.take();
        let result = scoped(&mut scope, || f(self));
        self.scope = scope;
        result
    }

    /// Feeds each side what the other sent, in reads of the sizes `cuts` gives in turn.
    fn deliver(&mut self, cuts: &[usize]) {
        let to_server = std::mem::take(&mut self.to_server);
        for read in reads(&to_server, cuts) {
            let progress = ok(self.with_scope(|p| p.server.receive(read)));
            self.take(true, progress);
        }
        let to_client = std::mem::take(&mut self.to_client);
        for read in reads(&to_client, cuts) {
            let progress = ok(self.with_scope(|p| p.client.receive(read)));
            self.take(false, progress);
        }
    }

    fn take(&mut self, at_server: bool, progress: Progress) {
        let (answer, got) = if at_server {
            (&mut self.to_client, &mut self.got_by_server)
        } else {
            (&mut self.to_server, &mut self.got_by_client)
        };
        answer.extend_from_slice(progress.cipher.as_deref().unwrap_or_default());
        for plain in progress.plain {
            got.extend_from_slice(&plain);
        }
        if at_server && progress.peer_closed {
            self.server_heard_close = true;
        }
    }

    fn write(&mut self, from_client: bool, bytes: &[u8]) {
        let bytes = Bytes::copy_from_slice(bytes);
        let cipher = self.with_scope(|p| if from_client { p.client.write(bytes) } else { p.server.write(bytes) });
        let cipher = cipher.unwrap_or_else(|_| panic!("a write failed")).expect("ciphertext for a write");
        if from_client { &mut self.to_server } else { &mut self.to_client }.extend_from_slice(&cipher);
    }
}

/// `bytes` cut into reads of the sizes `cuts` gives, cycling (0 counts as 1).
fn reads(bytes: &[u8], cuts: &[usize]) -> Vec<BytesMut> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = cuts[i % cuts.len()].max(1).min(bytes.len() - at);
        out.push(BytesMut::from(&bytes[at..at + n]));
        at += n;
        i += 1;
    }
    out
}

/// A pattern that is not the same from one write to the next.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

#[test]
fn bytes_cross_both_ways_under_key_updates_and_reads_cut_anywhere() {
    let mut pair = Pair::handshaken();
    // Every third record under a new key, each way.
    pair.client.records().unwrap().rekey_every(3);
    pair.server.records().unwrap().rekey_every(3);
    let sizes = [1, 5, 16 * 1024, 16 * 1024 + 1, 64 * 1024, 100_000, 7];
    let mut sent_up = Vec::new();
    let mut sent_down = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let up = pattern(size, i as u8);
        let down = pattern(size, 100 + i as u8);
        pair.write(true, &up);
        pair.write(false, &down);
        sent_up.extend_from_slice(&up);
        sent_down.extend_from_slice(&down);
        // Reads that cut headers, tags and records anywhere.
        pair.deliver(&[1, 3, 4, 5, 6, 17, 4096, 16 * 1024 + 22, 70_000]);
    }
    assert_eq!(pair.got_by_server, sent_up, "the server got every byte, in order");
    assert_eq!(pair.got_by_client, sent_down, "the client got every byte, in order");
    // 7 writes of 1 to 7 records each way: a new key every 3 records.
    assert!(pair.client.records().unwrap().updates_sent() >= 5, "the client moved keys on schedule");
    assert!(pair.server.records().unwrap().updates_sent() >= 5, "the server moved keys on schedule");
    let cipher = pair.with_scope(|p| p.client.close_notify()).unwrap().unwrap();
    pair.to_server.extend_from_slice(&cipher);
    pair.deliver(&[2]);
    assert!(pair.server_heard_close, "close_notify under the latest key ends the client's side");
}

#[test]
fn any_cut_of_the_reads_gives_the_same_bytes() {
    fn prop(cuts: Vec<u16>, sizes: Vec<u16>) -> TestResult {
        if cuts.is_empty() || sizes.is_empty() {
            return TestResult::discard();
        }
        let cuts: Vec<usize> = cuts.into_iter().map(usize::from).collect();
        let mut pair = Pair::handshaken();
        pair.client.records().unwrap().rekey_every(2);
        let mut sent = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let bytes = pattern(usize::from(size) + 1, i as u8);
            pair.write(true, &bytes);
            sent.extend_from_slice(&bytes);
        }
        pair.deliver(&cuts);
        TestResult::from_bool(pair.got_by_server == sent)
    }
    QuickCheck::new().tests(30).quickcheck(prop as fn(Vec<u16>, Vec<u16>) -> TestResult);
}

#[test]
fn a_damaged_record_is_refused_with_bad_record_mac_and_an_alert() {
    let mut pair = Pair::handshaken();
    pair.write(true, b"a line\n");
    let mut cipher = std::mem::take(&mut pair.to_server);
    let last = cipher.len() - 1;
    cipher[last] ^= 1;
    let result = pair.with_scope(|p| p.server.receive(BytesMut::from(&cipher[..])));
    match result {
        Err(Broken::Tls(rustls::Error::DecryptError, Some(alert))) => {
            // The alert is sealed: a record of application-data type, 2 bytes inside.
            assert_eq!(alert[..3], [0x17, 3, 3]);
            assert_eq!(alert.len(), 5 + 2 + 1 + 16);
        }
        Err(Broken::Tls(error, alert)) => panic!("refused otherwise: {error}, alert {alert:?}"),
        Err(Broken::TooEarly(_)) => panic!("early writes"),
        Ok(progress) => panic!("a damaged record was opened: {:?}", progress.plain),
    }
}

#[test]
fn a_record_longer_than_the_rfc_allows_is_refused_from_its_header() {
    let mut pair = Pair::handshaken();
    // 2^14 + 257 bytes announced: refused before they arrive.
    let header = BytesMut::from(&[0x17, 3, 3, 0x41, 0x01][..]);
    match pair.with_scope(|p| p.server.receive(header)) {
        Err(Broken::Tls(rustls::Error::PeerSentOversizedRecord, Some(_))) => {}
        Err(Broken::Tls(error, _)) => panic!("refused otherwise: {error}"),
        _ => panic!("an oversized record was waited for"),
    }
}

#[test]
fn a_record_in_the_clear_after_the_handshake_is_refused() {
    let mut pair = Pair::handshaken();
    let handshake = BytesMut::from(&[0x16, 3, 3, 0, 4, 24, 0, 0, 0][..]);
    match pair.with_scope(|p| p.server.receive(handshake)) {
        Err(Broken::Tls(rustls::Error::InvalidMessage(_), Some(_))) => {}
        Err(Broken::Tls(error, _)) => panic!("refused otherwise: {error}"),
        _ => panic!("a plaintext record was taken"),
    }
}

/// rustls's own (buffered) client against our server's records: it asks for a key update,
/// which ours answers, and the bytes go on both ways under the new keys.
#[test]
fn a_rustls_peer_that_refreshes_its_keys_is_answered_and_carries_on() {
    let (client_config, server_config) = configs();
    let mut scope = Some(Scope::new([9; 32]));
    let name = ServerName::try_from(NAME).unwrap();
    let (mut client, mut server) = scoped(&mut scope, || {
        (
            rustls::ClientConnection::new(client_config, name).unwrap(),
            Session::server(UnbufferedServerConnection::new(server_config).unwrap()),
        )
    });
    // Carries bytes both ways until neither side has any; returns what the server read.
    let mut shuttle = |client: &mut rustls::ClientConnection, server: &mut Session| {
        let mut got = Vec::new();
        scoped(&mut scope, || loop {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            let mut answered = false;
            for read in reads(&wire, &[5, 1000, 3]) {
                let progress = ok(server.receive(read));
                for plain in progress.plain {
                    got.extend_from_slice(&plain);
                }
                if let Some(cipher) = progress.cipher {
                    let mut wire = &cipher[..];
                    while !wire.is_empty() {
                        client.read_tls(&mut wire).unwrap();
                        client.process_new_packets().unwrap();
                    }
                    answered = true;
                }
            }
            if wire.is_empty() && !answered {
                return got;
            }
        })
    };
    shuttle(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    client.writer().write_all(b"before\n").unwrap();
    assert_eq!(shuttle(&mut client, &mut server), b"before\n");
    client.refresh_traffic_keys().unwrap();
    client.writer().write_all(b"after\n").unwrap();
    assert_eq!(shuttle(&mut client, &mut server), b"after\n", "our end follows the client's new key");
    assert_eq!(server.records().unwrap().updates_sent(), 1, "and answers its request with a key update of ours");
    // Our answer went under our old key and everything after under the new one; rustls
    // checks both.
    let reply = pattern(40_000, 3);
    let cipher = scoped(&mut scope, || server.write(Bytes::from(reply.clone()))).ok().flatten().unwrap();
    let (mut wire, mut got, mut buf) = (&cipher[..], Vec::new(), [0; 4096]);
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
        while let Ok(n @ 1..) = client.reader().read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(got, reply, "rustls opens what we sealed under the new key");
}
