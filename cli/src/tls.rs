//! TLS options on the command line: reading certificates and keys from PEM files, and
//! turning `--tls-pin` / `--tls-ca` into what a client trusts.
//!
//! The core takes DER bytes and never touches a file; this module is where files are read,
//! and where a bad one gets an error that names it.

use crate::CliError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use switchyard_core::time::WallClock;
use switchyard_core::tls::{Fingerprint, Secure, Tls, TlsDial, TlsError, TlsIdentity, TlsServe, TlsSettings, Trust};
use switchyard_core::Machine;

/// A server's `--tls-cert` and `--tls-key`, both or neither.
pub fn server_identity(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsIdentity>, CliError> {
    identity_from(("--tls-cert", cert), ("--tls-key", key))
}

/// A client's `--tls-client-cert` and `--tls-client-key`, both or neither.
pub fn client_identity(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsIdentity>, CliError> {
    identity_from(("--tls-client-cert", cert), ("--tls-client-key", key))
}

/// A certificate and key from the options named, both or neither.
fn identity_from(
    (cert_option, cert): (&str, Option<&Path>),
    (key_option, key): (&str, Option<&Path>),
) -> Result<Option<TlsIdentity>, CliError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let chain = load_certificates(cert, cert_option)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, key_option, "private key", e))?;
            Ok(Some(TlsIdentity { chain, key }))
        }
        (Some(_), None) => {
            Err(CliError::usage(format!("{cert_option} needs {key_option} (the certificate's private key)")))
        }
        (None, Some(_)) => {
            Err(CliError::usage(format!("{key_option} needs {cert_option} (the certificate it belongs to)")))
        }
    }
}

/// Every certificate in a PEM file; an error names the file and the option it came from.
pub fn load_certificates(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, CliError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, option, "certificate", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(path, option, "certificate", e))?;
    if certs.is_empty() {
        return Err(CliError::new(format!("{option} {}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

fn pem_error(path: &Path, option: &str, what: &str, error: rustls::pki_types::pem::Error) -> CliError {
    use rustls::pki_types::pem::Error;
    let why = match error {
        Error::Io(e) => format!("cannot read it: {e}"),
        Error::NoItemsFound => format!("no PEM {what} in it"),
        other => format!("not a PEM {what}: {other}"),
    };
    CliError::new(format!("{option} {}: {why}", path.display()))
}

/// Where `--tls-ca system` looks for the system's CA bundle, after `SSL_CERT_FILE`: Debian
/// and Ubuntu, Fedora and RHEL, then Alpine and the BSDs.
const SYSTEM_BUNDLES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The system's CA bundle: `SSL_CERT_FILE` if set (as OpenSSL reads it), else the first of
/// [`SYSTEM_BUNDLES`] that exists.
fn system_bundle() -> Result<std::path::PathBuf, CliError> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(file.into());
    }
    SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.exists()).map(Path::to_path_buf).ok_or_else(|| {
        CliError::new(format!(
            "--tls-ca system: no CA bundle found (set SSL_CERT_FILE, or looked in {}); give --tls-ca FILE",
            SYSTEM_BUNDLES.join(", ")
        ))
    })
}

/// What a client trusts from `--tls-pin` or `--tls-ca` (one of them, or neither for a
/// plaintext connection); `--tls-ca system` is the system's CA bundle.
pub fn client_trust(pin: Option<Fingerprint>, ca: Option<&Path>) -> Result<Option<Trust>, CliError> {
    match (pin, ca) {
        (None, None) => Ok(None),
        (Some(pin), None) => Ok(Some(Trust::Pin(pin))),
        (None, Some(ca)) if ca == Path::new("system") => {
            Ok(Some(Trust::Authorities(load_certificates(&system_bundle()?, "--tls-ca system")?)))
        }
        (None, Some(ca)) => Ok(Some(Trust::Authorities(load_certificates(ca, "--tls-ca")?))),
        (Some(_), Some(_)) => Err(CliError::usage("give --tls-pin or --tls-ca, not both")),
    }
}

/// `--tls-pin`: a certificate fingerprint.
pub fn parse_pin(s: &str) -> Result<Fingerprint, String> {
    s.parse().map_err(|e: switchyard_core::tls::BadFingerprint| e.to_string())
}

/// A client's TLS: what it trusts and the name it asks for (`--tls-name`; without it, the
/// IP address of each server dialled).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// What server certificates to accept.
    pub trust: Trust,
    /// The name to ask for and check; `None` for each server's IP address.
    pub server_name: Option<String>,
    /// Mutual TLS: the certificate and key to present when the server asks for one.
    pub identity: Option<TlsIdentity>,
    /// Secure only connections to this address (a tunnel end's carrier: an exposing end
    /// also dials its local services, which stay plain); `None`: every connection.
    pub only: Option<SocketAddr>,
}

impl ClientTls {
    /// From a client's options: `None` when neither `--tls-pin` nor `--tls-ca` is given.
    pub fn from_options(
        pin: Option<Fingerprint>,
        ca: Option<&Path>,
        name: Option<String>,
    ) -> Result<Option<ClientTls>, CliError> {
        let Some(trust) = client_trust(pin, ca)? else {
            if name.is_some() {
                return Err(CliError::usage("--tls-name needs --tls-pin or --tls-ca"));
            }
            return Ok(None);
        };
        Ok(Some(ClientTls { trust, server_name: name, identity: None, only: None }))
    }
}

/// `machine`, with every connection it accepts secured by `identity` when there is one and
/// every connection it dials secured by `client`; plain pass-through when both are absent.
/// `secret` is the machine's [`Env::secret`](switchyard_core::Env::secret) for `b"tls"`.
#[cfg(feature = "full")] // Its users (services, mesh, send) are in the full build only.
pub fn wrap<M: Machine>(
    machine: M,
    identity: Option<TlsIdentity>,
    client: Option<&ClientTls>,
    secret: [u8; 32],
) -> Result<Tls<M>, TlsError> {
    let serve = identity.map(|identity| TlsServe {
        identity,
        listeners: Secure::All,
        clients: switchyard_core::tls::ClientCerts::None,
    });
    wrap_on(machine, serve, client, secret)
}

/// [`wrap`] with the server side spelled out: TLS on some listeners only (`up --tls`'s
/// local end: the entrance, not the static forwards, whose bytes pass untouched), or with
/// client certificates required (`tunnel remote --tls-client-pin`).
pub fn wrap_on<M: Machine>(
    machine: M,
    serve: Option<TlsServe>,
    client: Option<&ClientTls>,
    secret: [u8; 32],
) -> Result<Tls<M>, TlsError> {
    let settings = TlsSettings {
        serve,
        dial: client.map(|c| TlsDial {
            trust: c.trust.clone(),
            server_name: c.server_name.clone(),
            to: c.only.map_or(Secure::All, |to| Secure::Only(vec![to])),
            identity: c.identity.clone(),
        }),
    };
    Tls::new(machine, settings, secret, wall_clock())
}

/// The wall clock a TLS layer checks certificate dates by: the system clock read now, as
/// the driver's `Instant::ZERO` (the driver re-bases it when the system clock jumps). UTC:
/// certificate dates have no time zone.
fn wall_clock() -> WallClock {
    WallClock::utc(switchyard_adapters::unix_micros_now(), switchyard_core::Instant::ZERO)
}
