//! Whom a TLS client trusts: one pinned certificate, or the certificate authorities given.

use super::crypto::verify_algorithms;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::DistinguishedName;
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The SHA-256 of a certificate's DER bytes, written `SHA256:` and 64 hex digits (the form
/// `switchyard cert` prints; colons between byte pairs and upper case are accepted too, as
/// `openssl x509 -fingerprint -sha256` prints it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a certificate.
    pub fn of(cert: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(cert).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a fingerprint did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 fingerprint: want `SHA256:` and 64 hex digits (as `switchyard cert` prints), got {0:?}")]
pub struct BadFingerprint(pub String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Fingerprint, BadFingerprint> {
        let bad = || BadFingerprint(s.to_owned());
        let hex = s.trim();
        let hex = hex.strip_prefix("SHA256:").or_else(|| hex.strip_prefix("sha256:")).unwrap_or(hex);
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// What one side accepts of the other's certificate: a client of a server's, or a server
/// of a client's (mutual TLS).
#[derive(Clone, Debug)]
pub enum Trust {
    /// Exactly the certificate with this fingerprint, whatever its name and dates (as chisel
    /// pins a server): for self-signed certificates from `switchyard cert`.
    Pin(Fingerprint),
    /// A certificate chain to one of these authorities, valid now (by the machine's wall
    /// clock) and, for a server, for the name the client dials.
    Authorities(Vec<CertificateDer<'static>>),
}

/// A trust that could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// No authority was given.
    #[error("no certificate authority given (the CA file holds no certificate)")]
    NoAuthorities,
    /// An authority's certificate did not parse.
    #[error("certificate authority {index} is not a usable certificate: {reason}")]
    BadAuthority {
        /// Its position in the list, from 1.
        index: usize,
        /// What was wrong.
        reason: String,
    },
}

/// The authorities as a root store.
fn roots(certs: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TrustError> {
    if certs.is_empty() {
        return Err(TrustError::NoAuthorities);
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| TrustError::BadAuthority { index: i + 1, reason: e.to_string() })?;
    }
    Ok(Arc::new(roots))
}

impl Trust {
    /// The rustls verifier of servers for this trust.
    pub(crate) fn verifier(&self) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
        match self {
            Trust::Pin(pin) => Ok(Arc::new(PinVerifier { pin: *pin, mandatory: true })),
            Trust::Authorities(certs) => {
                let provider = Arc::new(super::crypto::provider());
                WebPkiServerVerifier::builder_with_provider(roots(certs)?, provider)
                    .build()
                    .map(|v| v as Arc<dyn ServerCertVerifier>)
                    .map_err(|e| TrustError::BadAuthority { index: 1, reason: e.to_string() })
            }
        }
    }

    /// The rustls verifier of clients for this trust. With `mandatory` a client must present
    /// a certificate; without, one that presents none is let through (and one that presents
    /// a certificate this trust refuses is still refused).
    pub(crate) fn client_verifier(&self, mandatory: bool) -> Result<Arc<dyn ClientCertVerifier>, TrustError> {
        match self {
            Trust::Pin(pin) => Ok(Arc::new(PinVerifier { pin: *pin, mandatory })),
            Trust::Authorities(certs) => {
                let provider = Arc::new(super::crypto::provider());
                let builder = WebPkiClientVerifier::builder_with_provider(roots(certs)?, provider);
                let builder = if mandatory { builder } else { builder.allow_unauthenticated() };
                builder.build().map_err(|e| TrustError::BadAuthority { index: 1, reason: e.to_string() })
            }
        }
    }
}

/// The peer's certificate did not match the pin.
#[derive(Debug, thiserror::Error)]
#[error("its fingerprint is {found}, not the pinned {pinned}")]
struct PinMismatch {
    found: Fingerprint,
    pinned: Fingerprint,
}

/// Accepts the one pinned certificate; still checks that the peer holds its key (the
/// handshake signature), so a copy of the certificate alone is worth nothing. Serves both
/// sides: a client checking a server, a server checking a client.
#[derive(Debug)]
struct PinVerifier {
    pin: Fingerprint,
    /// As a client verifier: a client must present a certificate (else it may present none).
    mandatory: bool,
}

impl PinVerifier {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let found = Fingerprint::of(end_entity);
        if found == self.pin {
            return Ok(());
        }
        let mismatch = PinMismatch { found, pinned: self.pin };
        Err(Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch)))))
    }
}

impl ClientCertVerifier for PinVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(self)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Only TLS 1.3 is offered, so a TLS 1.2 signature is a peer breaking the protocol.
        Err(Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &verify_algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn a_fingerprint_reads_back_in_every_form_people_paste() {
        let fp = Fingerprint::of(b"certificate");
        let shown = fp.to_string();
        assert!(shown.starts_with("SHA256:") && shown.len() == 7 + 64);
        assert_eq!(shown.parse::<Fingerprint>(), Ok(fp));
        let openssl_style: String = fp.0.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        assert_eq!(openssl_style.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(shown[7..].parse::<Fingerprint>(), Ok(fp), "the bare hex");
        for bad in ["", "SHA256:", "SHA256:zz", &shown[..shown.len() - 1], &format!("{shown}00")] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} should be refused");
        }
    }

    quickcheck! {
        fn any_fingerprint_round_trips(bytes: Vec<u8>) -> bool {
            let fp = Fingerprint::of(&bytes);
            fp.to_string().parse::<Fingerprint>() == Ok(fp)
        }

        fn parsing_never_panics(s: String) -> bool {
            let _ = s.parse::<Fingerprint>();
            true
        }
    }
}
