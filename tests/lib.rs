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
    let (key, der) = fixed_key(7);
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .expect("a valid name")
        .self_signed(&key)
        .expect("rcgen signs with Ed25519");
    switchyard_core::tls::TlsIdentity { chain: vec![cert.der().clone()], key: der }
}

/// A mesh CA and, for each of `names`, a certificate it issued (both for serving and for
/// presenting as a client, as `switchyard cert --issuer` makes them), the same in every run
/// like [`fixed_identity`]: the CA's certificate, then the identities in the order of
/// `names`.
pub fn fixed_mesh_ca(
    names: &[String],
) -> (switchyard_core::tls::CertificateDer<'static>, Vec<switchyard_core::tls::TlsIdentity>) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
    let (ca_key, _) = fixed_key(200);
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("no names");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).expect("rcgen signs with Ed25519");
    let identities = names
        .iter()
        .zip(1u8..)
        .map(|(name, seed)| {
            let (key, der) = fixed_key(seed);
            let mut leaf = CertificateParams::new(vec![name.clone()]).expect("a valid name");
            leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("the CA signs");
            switchyard_core::tls::TlsIdentity { chain: vec![leaf.der().clone()], key: der }
        })
        .collect();
    (ca.der().clone(), identities)
}

/// An Ed25519 key whose 32 private bytes are all `seed`: as rcgen's key pair, and as DER.
fn fixed_key(seed: u8) -> (rcgen::KeyPair, switchyard_core::tls::PrivateKeyDer<'static>) {
    // PKCS#8 v1 for Ed25519 (RFC 8410): this prefix, then the 32-byte private key.
    let mut pkcs8 =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    pkcs8.extend_from_slice(&[seed; 32]);
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("a valid Ed25519 key");
    (key, switchyard_core::tls::PrivateKeyDer::try_from(pkcs8).expect("PKCS#8"))
}

/// Every byte the [`Probe`](switchyard_core::sim::Probe) on `host` received on `conn`, in
/// order.
pub fn probe_received(
    sim: &switchyard_core::sim::Sim,
    host: switchyard_core::sim::HostId,
    conn: switchyard_core::ConnId,
) -> Vec<u8> {
    use switchyard_core::sim::ProbeEvent;
    let mut all = Vec::new();
    for (_, event) in sim.events::<ProbeEvent>(host) {
        if let ProbeEvent::Received { conn: c, bytes } = event {
            if *c == conn {
                all.extend_from_slice(bytes);
            }
        }
    }
    all
}

/// The faults of the tunnel sweeps, drawn from a scenario's generator: a two-way cut of the
/// carrier's path long enough for the heartbeat to declare it dead, then a host crash and
/// restart.
#[derive(Debug, Clone, Copy)]
pub struct CarrierFaults {
    /// The cut begins.
    pub cut_at: switchyard_core::Instant,
    /// The cut heals (9-12 s later).
    pub heal_at: switchyard_core::Instant,
    /// The host crashes (3-6 s after the heal).
    pub crash_at: switchyard_core::Instant,
    /// It restarts (0.2-2.5 s later).
    pub restart_at: switchyard_core::Instant,
}

impl CarrierFaults {
    /// Draws the times from `rng`.
    pub fn draw(rng: &mut switchyard_core::Rng) -> CarrierFaults {
        let cut_at = switchyard_core::Instant::from_millis(rng.range_inclusive(3_000, 8_000));
        let heal_at = cut_at + Duration::from_secs(rng.range_inclusive(9, 12));
        let crash_at = heal_at + Duration::from_secs(rng.range_inclusive(3, 6));
        let restart_at = crash_at + Duration::from_millis(rng.range_inclusive(200, 2_500));
        CarrierFaults { cut_at, heal_at, crash_at, restart_at }
    }

    /// Schedules a cut of the path between `a` and `b`, and a crash and restart of `crashed`.
    pub fn schedule(
        &self,
        sim: &mut switchyard_core::sim::Sim,
        (a, b): (switchyard_core::sim::HostId, switchyard_core::sim::HostId),
        crashed: switchyard_core::sim::HostId,
    ) {
        use switchyard_core::sim::Cut;
        sim.schedule(self.cut_at, move |sim| sim.partition(a, b, Cut::BothWays));
        sim.schedule(self.heal_at, move |sim| sim.heal(a, b, Cut::BothWays));
        sim.schedule(self.crash_at, move |sim| sim.crash(crashed));
        sim.schedule(self.restart_at, move |sim| sim.restart(crashed));
    }

    /// True when `start..=end` overlaps a fault's window: recovery is promised within 2 s of
    /// the restart, and a stream on a cut carrier can only fail once it is declared dead
    /// (within 10 s of the cut), so such a stream may end early.
    pub fn overlaps(&self, start: switchyard_core::Instant, end: switchyard_core::Instant) -> bool {
        let windows = [
            (self.cut_at, self.heal_at + Duration::from_secs(3)),
            (self.crash_at, self.restart_at + Duration::from_secs(2)),
        ];
        windows.iter().any(|&(a, b)| start <= b && end >= a)
    }
}
