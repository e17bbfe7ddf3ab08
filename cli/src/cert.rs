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
use switchyard_core::tls::{Fingerprint, PrivateKeyDer, TlsIdentity};
use switchyard_core::Env;

/// Write a self-signed certificate and private key for TLS (Ed25519, PEM), and print the
/// certificate's SHA-256 fingerprint: give the files to a server (`--tls-cert`,
/// `--tls-key`) and the fingerprint to its clients (`--tls-pin`).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "cert",
    example = "switchyard cert --name tunnel.example.org --out /etc/switchyard\nswitchyard cert --name 203.0.113.7 --name localhost --out .\nswitchyard cert --ca --name \"Example mesh CA\" --out ca\nswitchyard cert --name 10.0.0.2 --issuer ca --out s2",
    note = "Writes OUT/cert.pem and OUT/key.pem (the key readable by its owner only) and refuses to overwrite either unless --force. A pinned client accepts exactly this certificate whatever its names and dates; a client that checks with --tls-ca instead needs the name it dials among the --name values. With --ca it writes a certificate authority instead (--name is its name); with --issuer DIR the certificate is signed by the CA in DIR/cert.pem and DIR/key.pem (made by --ca), for serving and for presenting as a client: what each server of a mesh with --mesh-ca needs, for its IP address."
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

    /// a directory holding a CA's cert.pem and key.pem (from `switchyard cert --ca`):
    /// sign the certificate with it instead of self-signing
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

/// A certificate for `names` signed by the CA in `issuer` (its `cert.pem` and `key.pem`),
/// for serving and for presenting as a client (a mesh server does both), valid for `days`
/// days. Checked to chain to the CA before it is returned; also returns the CA's name.
pub fn issue(names: &[String], days: u32, issuer: &Path) -> Result<(Made, String), CliError> {
    let ca_file = issuer.join("cert.pem");
    let ca_cert = crate::tls::load_certificates(&ca_file, "--issuer")?.remove(0);
    let ca_key_file = issuer.join("key.pem");
    let ca_key_pem = fs::read_to_string(&ca_key_file)
        .map_err(|e| CliError::new(format!("--issuer: cannot read {}: {e}", ca_key_file.display())))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| CliError::new(format!("--issuer: {} is not a PEM private key: {e}", ca_key_file.display())))?;
    let not_ours = || CliError::new(format!("--issuer: {} is not a CA `switchyard cert --ca` made", ca_file.display()));
    let ca_name = subject_common_name(&ca_cert).ok_or_else(not_ours)?;
    // rcgen signs with the issuer's name and key alone; a CA certificate made again from
    // them stands in for the one on disk, whose name and key it shares.
    let mut ca_params = params(&[], ca_name.clone(), 1)?;
    as_ca(&mut ca_params);
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
    switchyard_core::tls::check_identity(&trust, &made.identity, name, now)
        .map_err(|why| CliError::new(format!("{}: the issued certificate does not chain to it ({why})", not_ours())))?;
    Ok((made, ca_name))
}

/// The elements (tag and contents) of a certificate's (DER) to-be-signed part: the version
/// if given, serial, signature algorithm, issuer, validity, subject, key, extensions.
fn tbs_elements(cert: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let (_, cert, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(cert)?;
    let mut elements = Vec::new();
    while !tbs.is_empty() {
        let (tag, contents, rest) = der_element(tbs)?;
        elements.push((tag, contents));
        tbs = rest;
    }
    Some(elements)
}

/// The common name in the subject of a certificate (DER) that is a CA (its basic
/// constraints say so): what `--issuer` signs in the name of.
fn subject_common_name(cert: &[u8]) -> Option<String> {
    if !is_ca(cert) {
        return None;
    }
    let elements = tbs_elements(cert)?;
    let version = usize::from(elements.first()?.0 == 0xa0);
    let (_, mut subject) = *elements.get(version + 4)?;
    while !subject.is_empty() {
        let (_, set, rest) = der_element(subject)?;
        subject = rest;
        let (_, attribute, _) = der_element(set)?;
        let (_, oid, value) = der_element(attribute)?;
        if oid == [0x55, 0x04, 0x03] {
            return String::from_utf8(der_element(value)?.1.to_vec()).ok();
        }
    }
    None
}

/// True when a certificate (DER) is a CA's: its basic constraints say so. A trust anchor
/// that is not one would still be believed by rustls, which does not look.
pub(crate) fn is_ca(cert: &[u8]) -> bool {
    let extensions = tbs_elements(cert).and_then(|e| e.iter().find(|(tag, _)| *tag == 0xa3).map(|&(_, x)| x));
    extensions.and_then(says_ca).unwrap_or(false)
}

/// True when the extensions (`[3]` of a certificate) hold basic constraints with cA set.
fn says_ca(extensions: &[u8]) -> Option<bool> {
    let (_, mut list, _) = der_element(extensions)?;
    while !list.is_empty() {
        let (_, extension, rest) = der_element(list)?;
        list = rest;
        let (_, oid, mut value) = der_element(extension)?;
        if oid != [0x55, 0x1d, 0x13] {
            continue; // not basicConstraints
        }
        if value.first() == Some(&0x01) {
            value = der_element(value)?.2; // the critical flag
        }
        let (_, octets, _) = der_element(value)?;
        let (_, constraints, _) = der_element(octets)?;
        return Some(matches!(constraints, [0x01, 0x01, ca, ..] if *ca != 0));
    }
    Some(false)
}

/// One DER element off the front of `der`: its tag, its contents, and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0, |len, &b| len << 8 | usize::from(b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
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
        println!("wrote {} and {} (Ed25519 CA {name:?}, valid {} days)", cert.display(), key.display(), self.days);
        println!("issue a certificate: switchyard cert --name IP --issuer {} --out DIR", self.out.display());
        println!("mesh servers: --mesh-ca {}; clients: --tls-ca {}", cert.display(), cert.display());
        println!("keep {} secret: whoever holds it can issue certificates this CA's mesh admits", key.display());
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
        println!("wrote {cert} and {key} (Ed25519, for {}{by}, valid {} days)", names.join(", "), self.days);
        println!("fingerprint {}", made.fingerprint);
        match ca {
            None => {
                println!("server: --tls-cert {cert} --tls-key {key}");
                println!("client: --tls-pin {}", made.fingerprint);
            }
            Some((_, ca)) => {
                let ca = ca.display();
                println!("mesh server: --tls-cert {cert} --tls-key {key} --mesh-ca {ca}");
                println!("client: --tls-ca {ca}");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
