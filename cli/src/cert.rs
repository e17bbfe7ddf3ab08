//! `switchyard cert`: a self-signed Ed25519 certificate and key for the TLS options, and
//! the fingerprint clients pin.

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
    example = "switchyard cert --name tunnel.example.org --out /etc/switchyard\nswitchyard cert --name 203.0.113.7 --name localhost --out .",
    note = "Writes OUT/cert.pem and OUT/key.pem (the key readable by its owner only) and refuses to overwrite either unless --force. A pinned client accepts exactly this certificate whatever its names and dates; a client that checks with --tls-ca instead needs the name it dials among the --name values."
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
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| CliError::usage(format!("--name: {e}")))?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, names.first().cloned().unwrap_or_default());
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    let cert = params.self_signed(&key).map_err(|e| CliError::new(format!("cannot make the certificate: {e}")))?;
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

impl Program for CertCmd {
    async fn run<R: Runtime>(self, _rt: R, _env: Env) -> Result<ExitCode, CliError> {
        if self.days == 0 {
            return Err(CliError::usage("--days must be at least 1"));
        }
        let names = if self.name.is_empty() { vec!["localhost".to_owned()] } else { self.name };
        let made = make(&names, self.days)?;
        fs::create_dir_all(&self.out).map_err(|e| CliError::new(format!("cannot create {}: {e}", self.out.display())))?;
        let (cert, key) = (self.out.join("cert.pem"), self.out.join("key.pem"));
        write_file(&cert, made.cert_pem.as_bytes(), false, self.force)?;
        write_file(&key, made.key_pem.as_bytes(), true, self.force)?;
        println!(
            "wrote {} and {} (Ed25519, for {}, valid {} days)",
            cert.display(),
            key.display(),
            names.join(", "),
            self.days
        );
        println!("fingerprint {}", made.fingerprint);
        println!("server: --tls-cert {} --tls-key {}", cert.display(), key.display());
        println!("client: --tls-pin {}", made.fingerprint);
        Ok(ExitCode::SUCCESS)
    }
}
