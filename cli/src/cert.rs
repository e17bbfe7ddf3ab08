//! `switchyard cert`: a self-signed Ed25519 certificate and key for the TLS options, and
//! the fingerprint clients pin; or a CA (`--ca`) and certificates it issues (`--issuer`),
//! for a mesh whose servers admit each other by certificate (`mesh server --mesh-ca`).

use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use switchyard_adapters::Runtime;
use switchyard_core::tls::{CertificateDer, Fingerprint, PrivateKeyDer, TlsIdentity};
use switchyard_core::Env;

/// Write a self-signed certificate and private key for TLS (Ed25519, PEM), and print the
/// certificate's SHA-256 fingerprint: give the files to a server (`--tls-cert`,
/// `--tls-key`) and the fingerprint to its clients (`--tls-pin`).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "cert",
    example = "switchyard cert --name tunnel.example.org --out /etc/switchyard\nswitchyard cert --name 203.0.113.7 --name localhost --out .\nswitchyard cert --ca --name \"Example mesh CA\" --out ca\nswitchyard cert --name 10.0.0.2 --issuer ca --out s2",
    note = "Writes OUT/cert.pem and OUT/key.pem (the key readable by its owner only) and refuses to overwrite either unless --force. A pinned client accepts exactly this certificate whatever its names and dates; a client that checks with --tls-ca instead needs the name it dials among the --name values. With --ca it writes a certificate authority instead (--name is its name); with --issuer DIR the certificate is signed by the CA in DIR/cert.pem and DIR/key.pem (made by --ca, or any CA certificate with its key in PKCS#8, as openssl writes them), for serving and for presenting as a client: what each server of a mesh with --mesh-ca needs, for its IP address."
)]
pub struct CertCmd {
    /// a DNS name or IP address the certificate is for; repeat for several (default
    /// localhost)
    #[argh(option)]
    name: Vec<String>,

    /// directory to write cert.pem and key.pem into, created if missing (default .)
    #[argh(option, default = "PathBuf::from(\".\")")]
    out: PathBuf,

    /// days the certificate is valid from now (default 825)
    #[argh(option, default = "825")]
    days: u32,

    /// overwrite cert.pem and key.pem if they exist
    #[argh(switch)]
    force: bool,

    /// make a certificate authority that issues certificates (--issuer), not a
    /// certificate for a server; --name is the CA's name (default "Switchyard mesh CA")
    #[argh(switch)]
    ca: bool,

    /// a directory holding a CA's cert.pem and key.pem (from `switchyard cert --ca`, or
    /// any CA's, the key PKCS#8): sign the certificate with it instead of self-signing
    #[argh(option)]
    issuer: Option<PathBuf>,
}

/// A certificate made by [`make`]: its PEM, its key's PEM, and its fingerprint.
pub struct Made {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER.
    pub fingerprint: Fingerprint,
    /// The same certificate and key as DER, for a server in this process (`up --tls`).
    pub identity: TlsIdentity,
}

/// A self-signed Ed25519 certificate for `names`, valid from an hour ago (for clocks a
/// little behind) for `days` days.
pub fn make(names: &[String], days: u32) -> Result<Made, CliError> {
    let key = ed25519_key()?;
    let params = params(names, names.first().cloned().unwrap_or_default(), days)?;
    let cert = params.self_signed(&key).map_err(cannot_make)?;
    made(&cert, key)
}

/// The parameters every certificate made here shares: the `names` (subject alternative
/// names), the common name `common`, and the validity, from an hour ago (for clocks a
/// little behind) for `days` days.
fn params(names: &[String], common: String, days: u32) -> Result<rcgen::CertificateParams, CliError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| CliError::usage(format!("--name: {e}")))?;
    params.distinguished_name = common_name(common);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    Ok(params)
}

fn common_name(name: String) -> rcgen::DistinguishedName {
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, name);
    subject
}

fn cannot_make(e: rcgen::Error) -> CliError {
    CliError::new(format!("cannot make the certificate: {e}"))
}

/// What a CA needs beyond the shared parameters: it signs certificates, and only that.
fn as_ca(params: &mut rcgen::CertificateParams) {
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
}

/// A certificate authority named `name`, valid for `days` days: it issues the
/// certificates of a mesh's servers ([`issue`]).
pub fn make_ca(name: &str, days: u32) -> Result<Made, CliError> {
    let key = ed25519_key()?;
    let mut params = params(&[], name.to_owned(), days)?;
    as_ca(&mut params);
    let cert = params.self_signed(&key).map_err(cannot_make)?;
    made(&cert, key)
}

/// A certificate for `names` signed by the CA in `issuer` (its `cert.pem` and `key.pem`:
/// any CA's, not only one [`make_ca`] made), for serving and for presenting as a client (a
/// mesh server does both), valid for `days` days. Checked to chain to the CA before it is
/// returned; also returns the CA's name.
pub fn issue(names: &[String], days: u32, issuer: &Path) -> Result<(Made, String), CliError> {
    let ca_file = issuer.join("cert.pem");
    let ca_cert = crate::tls::load_certificates(&ca_file, "--issuer")?.remove(0);
    let refused = |why: String| CliError::new(format!("--issuer: {}: {why}", ca_file.display()));
    let ca_params = ca_params(&ca_cert).map_err(refused)?;
    let ca_key_file = issuer.join("key.pem");
    let ca_key_pem = fs::read_to_string(&ca_key_file)
        .map_err(|e| CliError::new(format!("--issuer: cannot read {}: {e}", ca_key_file.display())))?;
    // ring reads PKCS#8 only; OpenSSL still writes the older forms in places.
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| {
        CliError::new(format!(
            "--issuer: {} is not a PKCS#8 PEM private key (BEGIN PRIVATE KEY; `openssl pkcs8 -topk8 -nocrypt` converts one): {e}",
            ca_key_file.display()
        ))
    })?;
    let ca_name = name_of(&ca_params.distinguished_name);
    // rcgen signs with the issuer's name, key identifier and key alone; a CA certificate
    // made again from what was read of the one on disk stands in for it, sharing all three.
    let ca = ca_params.self_signed(&ca_key).map_err(cannot_make)?;
    let key = ed25519_key()?;
    let mut params = params(names, names.first().cloned().unwrap_or_default(), days)?;
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(cannot_make)?;
    let made = made(&cert, key)?;
    let trust = switchyard_core::tls::Trust::Authorities(vec![ca_cert]);
    let now = crate::wall::unix_secs_now();
    let name = names.first().map_or("localhost", String::as_str);
    switchyard_core::tls::check_identity(&trust, &made.identity, name, now).map_err(|why| {
        let key = ca_key_file.display();
        refused(format!("the certificate issued does not chain to it ({why}); is {key} its key?"))
    })?;
    Ok((made, ca_name))
}

/// What rcgen reads of the CA certificate `cert`: what `--issuer` signs with. Refused, with
/// why, unless its basic constraints say it is a CA; `--mesh-ca` asks the same, since
/// rustls, which does not look, would believe a trust anchor that is not one.
pub(crate) fn ca_params(cert: &CertificateDer<'_>) -> Result<rcgen::CertificateParams, String> {
    let params = rcgen::CertificateParams::from_ca_cert_der(cert).map_err(|e| format!("cannot read its certificate: {e}"))?;
    match params.is_ca {
        rcgen::IsCa::Ca(_) => Ok(params),
        rcgen::IsCa::NoCa | rcgen::IsCa::ExplicitNoCa => {
            Err("not a CA certificate (its basic constraints do not say CA:TRUE)".to_owned())
        }
    }
}

/// The CA's name, for `cert` to say whom it issued by: its common name, or, for a CA from
/// elsewhere without one, the rest of its subject.
fn name_of(subject: &rcgen::DistinguishedName) -> String {
    use rcgen::DnValue;
    let text = |value: &DnValue| match value {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
        DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
        DnValue::TeletexString(s) => Some(s.as_str().to_owned()),
        // UCS-2 and UTF-32 (BmpString, UniversalString): rare in names, and left out.
        _ => None,
    };
    match subject.get(&rcgen::DnType::CommonName).and_then(text) {
        Some(common) => common,
        None => subject.iter().filter_map(|(_, value)| text(value)).collect::<Vec<_>>().join(", "),
    }
}

/// A certificate made with `key` as [`Made`].
fn made(cert: &rcgen::Certificate, key: rcgen::KeyPair) -> Result<Made, CliError> {
    let private = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| CliError::new(format!("cannot make a key: {e}")))?;
    Ok(Made {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        fingerprint: Fingerprint::of(cert.der()),
        identity: TlsIdentity { chain: vec![cert.der().clone()], key: private },
    })
}

/// PKCS#8 v1 for Ed25519 (RFC 8410) up to the private key: what follows is its 32 bytes.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A new Ed25519 key, kept as PKCS#8 v1. ring makes v2 (the public key appended), which
/// OpenSSL 3.0 cannot read; v1 suits OpenSSL-based tools (nginx, haproxy) as well as rustls.
fn ed25519_key() -> Result<rcgen::KeyPair, CliError> {
    let failed = |e: rcgen::Error| CliError::new(format!("cannot make a key: {e}"));
    let v2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(failed)?.serialize_der();
    // v2 has the same 16-byte prefix but for its version (1) and outer length, then the key.
    let private = v2.get(16..48).ok_or_else(|| CliError::new("cannot make a key: unexpected PKCS#8 layout"))?;
    let v1: Vec<u8> = ED25519_PKCS8_V1_PREFIX.iter().chain(private).copied().collect();
    rcgen::KeyPair::try_from(v1.as_slice()).map_err(failed)
}

/// Writes `contents` to `path`, readable by its owner only when `private` (keys, secrets);
/// refuses an existing file unless `force`.
pub(crate) fn write_file(path: &Path, contents: &[u8], private: bool, force: bool) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(if private { 0o600 } else { 0o644 });
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            CliError::new(format!("{} exists; pass --force to replace it", path.display()))
        }
        _ => CliError::new(format!("cannot write {}: {e}", path.display())),
    })?;
    file.write_all(contents).map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

impl CertCmd {
    /// Writes `made` as OUT/cert.pem and OUT/key.pem; returns the two paths.
    fn write(&self, made: &Made) -> Result<(PathBuf, PathBuf), CliError> {
        fs::create_dir_all(&self.out).map_err(|e| CliError::new(format!("cannot create {}: {e}", self.out.display())))?;
        let (cert, key) = (self.out.join("cert.pem"), self.out.join("key.pem"));
        write_file(&cert, made.cert_pem.as_bytes(), false, self.force)?;
        write_file(&key, made.key_pem.as_bytes(), true, self.force)?;
        Ok((cert, key))
    }

    /// `--ca`: a CA, and what to do with it.
    fn write_ca(&self) -> Result<(), CliError> {
        if self.issuer.is_some() || self.name.len() > 1 {
            return Err(CliError::usage("--ca takes one --name (the CA's) and no --issuer"));
        }
        let name = self.name.first().map_or("Switchyard mesh CA", String::as_str);
        let (cert, key) = self.write(&make_ca(name, self.days)?)?;
        say!("wrote {} and {} (Ed25519 CA {name:?}, valid {} days)", cert.display(), key.display(), self.days);
        say!("issue a certificate: switchyard cert --name IP --issuer {} --out DIR", self.out.display());
        say!("mesh servers: --mesh-ca {}; clients: --tls-ca {}", cert.display(), cert.display());
        say!("keep {} secret: whoever holds it can issue certificates this CA's mesh admits", key.display());
        Ok(())
    }
}

impl Program for CertCmd {
    async fn run<R: Runtime>(self, _rt: R, _env: Env) -> Result<ExitCode, CliError> {
        if self.days == 0 {
            return Err(CliError::usage("--days must be at least 1"));
        }
        if self.ca {
            self.write_ca()?;
            return Ok(ExitCode::SUCCESS);
        }
        let names = if self.name.is_empty() { vec!["localhost".to_owned()] } else { self.name.clone() };
        let (made, ca) = match &self.issuer {
            None => (make(&names, self.days)?, None),
            Some(issuer) => {
                let (made, name) = issue(&names, self.days, issuer)?;
                (made, Some((name, issuer.join("cert.pem"))))
            }
        };
        let (cert, key) = self.write(&made)?;
        let by = ca.as_ref().map_or(String::new(), |(name, _)| format!(", issued by {name:?}"));
        let (cert, key) = (cert.display(), key.display());
        say!("wrote {cert} and {key} (Ed25519, for {}{by}, valid {} days)", names.join(", "), self.days);
        say!("fingerprint {}", made.fingerprint);
        match ca {
            None => {
                say!("server: --tls-cert {cert} --tls-key {key}");
                say!("client: --tls-pin {}", made.fingerprint);
            }
            Some((_, ca)) => {
                let ca = ca.display();
                say!("mesh server: --tls-cert {cert} --tls-key {key} --mesh-ca {ca}");
                say!("client: --tls-ca {ca}");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
