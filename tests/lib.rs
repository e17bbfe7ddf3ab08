//! Helpers shared by the cross-crate tests.

use futures_lite::future;
use std::future::Future;
use std::time::Duration;
use switchyard_adapters::Runtime;

/// How long a loopback test may wait for anything before it fails: a guard against hangs,
/// never a timing assertion (speed is measured by `switchyard bench`, not by tests).
pub const GUARD: Duration = Duration::from_secs(60);

/// Runs `fut` to completion on `rt`, panicking with `what` if it is still running after
/// [`GUARD`].
pub fn guarded<R: Runtime, T>(rt: &R, what: &str, fut: impl Future<Output = T>) -> T {
    let deadline = rt.now() + GUARD;
    rt.block_on(future::or(fut, async {
        rt.sleep_until(deadline).await;
        panic!("timed out: {what}")
    }))
}

/// Declares `#[test]`s named after each given function, in a module per runtime (`smol`,
/// `async_std`, `mio`), each calling the function with that runtime: one test body, every
/// adapter.
#[macro_export]
macro_rules! for_each_runtime {
    ($($test:ident),* $(,)?) => {
        mod smol {
            $(#[test] fn $test() { super::$test(switchyard_adapters::SmolRuntime) })*
        }
        mod async_std {
            $(#[test] fn $test() { super::$test(switchyard_adapters::AsyncStdRuntime) })*
        }
        mod mio {
            $(#[test] fn $test() { super::$test(switchyard_adapters::MioRuntime) })*
        }
    };
}

/// A TLS certificate and key for `name` that are the same in every run (an Ed25519 key from
/// a fixed seed, rcgen's fixed default dates and a serial derived from the key), so a
/// simulation with TLS replays byte for byte from its seed alone.
pub fn fixed_identity(name: &str) -> switchyard_core::tls::TlsIdentity {
    use switchyard_core::tls::TlsIdentity;
    // PKCS#8 v1 for Ed25519 (RFC 8410): this prefix, then the 32-byte private key.
    let mut pkcs8 =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    pkcs8.extend_from_slice(&[7u8; 32]);
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("a valid Ed25519 key");
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .expect("a valid name")
        .self_signed(&key)
        .expect("rcgen signs with Ed25519");
    let key = rustls::pki_types::PrivateKeyDer::try_from(pkcs8).expect("PKCS#8");
    TlsIdentity { chain: vec![cert.der().clone()], key }
}
