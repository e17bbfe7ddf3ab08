//! The crypto provider that keeps TLS deterministic: ring's ciphers, with every random byte
//! and every reading of the time supplied by the machine that runs the connection.
//!
//! rustls asks its provider for randomness (hello randoms, key shares, ticket nonces) and a
//! time provider for `now` (certificate validity). Both are process-wide hooks in rustls
//! (`&'static` references), while Switchyard's randomness and time belong to one machine.
//! So the hooks here read a per-thread *scope* that `Scope::lend` fills with the
//! machine's own generator and wall time for the length of one call into the machine, and
//! empties afterwards. Outside a scope they fail closed: rustls gets an error, never
//! entropy from elsewhere.
//!
//! Key exchange is X25519 through `x25519-dalek` (and P-256 through `p256`, for peers that
//! offer nothing else), its secret drawn from the scope: ring's own key exchange only takes
//! ring's system generator. Signing is Ed25519 only, the one
//! ring signature that needs no randomness (ring's ECDSA and RSA signers draw from the OS).

use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rustls::crypto::{ActiveKeyExchange, CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, SharedSecret};
use rustls::crypto::{SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::{PrivateKeyDer, UnixTime};
use rustls::sign::SigningKey;
use rustls::time_provider::TimeProvider;
use rustls::{Error, NamedGroup, PeerMisbehaved};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

/// What one machine lends rustls for the length of a call: its generator and its wall time.
#[derive(Debug)]
pub(crate) struct Scope {
    /// The machine's cryptographic generator, seeded from its environment's secret.
    pub rng: ChaCha20Rng,
    /// Microseconds since 1970 UTC at the call, from the machine's wall clock.
    pub unix_micros: i128,
}

thread_local! {
    static CURRENT: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

impl Scope {
    /// A scope whose generator is seeded with `seed`.
    pub fn new(seed: [u8; 32]) -> Scope {
        Scope { rng: ChaCha20Rng::from_seed(seed), unix_micros: 0 }
    }

    /// Runs `f` with this scope lent to rustls's hooks, and gives the scope back with `f`'s
    /// result (its generator's state moved on, for the next call). A scope already lent on
    /// this thread (a TLS machine inside another) is put back afterwards, even if `f`
    /// panics, so a hook never outlives its call.
    pub fn lend<R>(self, f: impl FnOnce() -> R) -> (R, Scope) {
        /// Puts the outer scope back in place of the lent one when dropped.
        struct Restore {
            outer: Option<Option<Scope>>,
        }
        impl Restore {
            fn finish(mut self) -> Option<Scope> {
                CURRENT.with(|c| c.replace(self.outer.take().flatten()))
            }
        }
        impl Drop for Restore {
            fn drop(&mut self) {
                if let Some(outer) = self.outer.take() {
                    CURRENT.with(|c| c.replace(outer));
                }
            }
        }
        let restore = Restore { outer: Some(CURRENT.with(|c| c.replace(Some(self)))) };
        let result = f();
        let lent = restore.finish().expect("a hook never takes the scope out of its slot");
        (result, lent)
    }
}

/// Fills `dest` from the scope's generator; fails when no machine has lent one.
fn fill_from_scope(dest: &mut [u8]) -> Result<(), GetRandomFailed> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(scope) => {
            scope.rng.fill_bytes(dest);
            Ok(())
        }
        None => Err(GetRandomFailed),
    })
}

/// rustls's randomness: the current scope's generator.
#[derive(Debug)]
struct ScopedRandom;

impl SecureRandom for ScopedRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), GetRandomFailed> {
        fill_from_scope(dest)
    }
}

/// rustls's clock: the current scope's wall time (none outside a scope, and rustls then
/// refuses to check a certificate rather than guess).
#[derive(Debug)]
pub(crate) struct ScopedTime;

impl TimeProvider for ScopedTime {
    fn current_time(&self) -> Option<UnixTime> {
        let micros = CURRENT.with(|c| c.borrow().as_ref().map(|s| s.unix_micros))?;
        let secs = u64::try_from(micros.div_euclid(1_000_000)).ok()?;
        Some(UnixTime::since_unix_epoch(Duration::from_secs(secs)))
    }
}

/// X25519 key exchange with the secret drawn from the current scope.
#[derive(Debug)]
struct ScopedX25519;

impl SupportedKxGroup for ScopedX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut secret = [0u8; 32];
        fill_from_scope(&mut secret)?;
        let secret = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One X25519 exchange in progress: our secret and the public key we sent.
struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer_pub_key.try_into().map_err(|_| PeerMisbehaved::InvalidKeyShare)?;
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // A low-order peer key gives an all-zero secret anyone can compute (RFC 7748 §6.1).
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// P-256 (secp256r1) key exchange with the secret drawn from the current scope, for peers
/// that offer no X25519 (socat asks for prime256v1 unless told otherwise).
#[derive(Debug)]
struct ScopedP256;

/// Draws before giving up on finding a valid P-256 scalar: each draw fails with
/// probability below 2^-32, so this never runs out with a working generator.
const P256_DRAWS: usize = 8;

impl SupportedKxGroup for ScopedP256 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        for _ in 0..P256_DRAWS {
            let mut bytes = [0u8; 32];
            fill_from_scope(&mut bytes)?;
            // Zero and values at or above the group order are not scalars: draw again.
            if let Ok(secret) = p256::SecretKey::from_bytes(&bytes.into()) {
                let public = secret.public_key().to_encoded_point(false).as_bytes().to_vec();
                return Ok(Box::new(P256Exchange { secret, public }));
            }
        }
        Err(GetRandomFailed.into())
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

/// One P-256 exchange in progress: our secret and the uncompressed public point we sent.
struct P256Exchange {
    secret: p256::SecretKey,
    public: Vec<u8>,
}

impl ActiveKeyExchange for P256Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        // TLS 1.3 sends points uncompressed only (RFC 8446 §4.2.8.2); decoding checks that
        // the point is on the curve.
        if peer_pub_key.len() != 65 || peer_pub_key[0] != 0x04 {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let peer = p256::PublicKey::from_sec1_bytes(peer_pub_key).map_err(|_| PeerMisbehaved::InvalidKeyShare)?;
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), peer.as_affine());
        Ok(SharedSecret::from(&shared.raw_secret_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

/// Loads Ed25519 keys only, the one ring signer that draws no randomness.
#[derive(Debug)]
struct Ed25519Keys;

impl KeyProvider for Ed25519Keys {
    fn load_private_key(&self, key_der: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, Error> {
        let unsupported = || {
            Error::General(
                "the key is not an Ed25519 key in PKCS#8: Switchyard's TLS signs with Ed25519 only \
                 (`switchyard cert` makes one)"
                    .into(),
            )
        };
        match key_der {
            PrivateKeyDer::Pkcs8(key) => rustls::crypto::ring::sign::any_eddsa_type(&key).map_err(|_| unsupported()),
            _ => Err(unsupported()),
        }
    }
}

static SCOPED_RANDOM: ScopedRandom = ScopedRandom;
static SCOPED_X25519: ScopedX25519 = ScopedX25519;
static SCOPED_P256: ScopedP256 = ScopedP256;
static ED25519_KEYS: Ed25519Keys = Ed25519Keys;

/// The signature algorithms a peer's certificate may use: every one ring verifies
/// (verifying needs no randomness).
// ring's provider is deprecated for its key exchanges (no post-quantum group); only its
// verification algorithms are used here.
#[allow(deprecated)]
pub(crate) fn verify_algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// The provider every Switchyard TLS connection uses: TLS 1.3's three suites from ring,
/// X25519 (preferred) and P-256, Ed25519 keys, and randomness from the current scope.
pub(crate) fn provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite::*;
    CryptoProvider {
        cipher_suites: vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: vec![&SCOPED_X25519, &SCOPED_P256],
        signature_verification_algorithms: verify_algorithms(),
        secure_random: &SCOPED_RANDOM,
        key_provider: &ED25519_KEYS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_fail_closed_outside_a_scope_and_draw_the_scope_inside_one() {
        let mut buf = [0u8; 8];
        assert!(ScopedRandom.fill(&mut buf).is_err(), "no entropy without a machine's scope");
        assert!(ScopedTime.current_time().is_none());
        assert!(ScopedX25519.start().is_err());

        let mut scope = Scope::new([7; 32]);
        scope.unix_micros = 1_700_000_000_500_000;
        let (first, scope) = scope.lend(|| {
            let mut b = [0u8; 8];
            ScopedRandom.fill(&mut b).unwrap();
            assert_eq!(ScopedTime.current_time(), Some(UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000))));
            b
        });
        let (second, _) = scope.lend(|| {
            let mut b = [0u8; 8];
            ScopedRandom.fill(&mut b).unwrap();
            b
        });
        assert_ne!(first, second, "the generator moves on across scopes");
        let again = Scope::new([7; 32]);
        assert_eq!(
            again
                .lend(|| {
                    let mut b = [0u8; 8];
                    ScopedRandom.fill(&mut b).unwrap();
                    b
                })
                .0,
            first,
            "the same seed draws the same bytes"
        );
        assert!(ScopedRandom.fill(&mut buf).is_err(), "the scope is taken back after the call");
    }

    #[test]
    fn p256_agrees_and_refuses_points_off_the_curve_or_compressed() {
        Scope::new([2; 32]).lend(|| {
            let a = ScopedP256.start().unwrap();
            let b = ScopedP256.start().unwrap();
            let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
            assert_eq!((a_pub.len(), a_pub[0]), (65, 0x04), "uncompressed");
            assert_eq!(a.complete(&b_pub).unwrap().secret_bytes(), b.complete(&a_pub).unwrap().secret_bytes());
            let mut off_curve = a_pub.clone();
            off_curve[64] ^= 1;
            assert!(ScopedP256.start().unwrap().complete(&off_curve).is_err());
            assert!(ScopedP256.start().unwrap().complete(&a_pub[..33]).is_err(), "compressed points are refused");
        });
    }

    #[test]
    fn x25519_agrees_and_refuses_a_low_order_key() {
        Scope::new([1; 32]).lend(|| {
            let a = ScopedX25519.start().unwrap();
            let b = ScopedX25519.start().unwrap();
            let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
            assert_eq!(a.complete(&b_pub).unwrap().secret_bytes(), b.complete(&a_pub).unwrap().secret_bytes());
            let c = ScopedX25519.start().unwrap();
            assert!(c.complete(&[0u8; 32]).is_err(), "the all-zero point is refused");
            let d = ScopedX25519.start().unwrap();
            assert!(d.complete(&[9u8; 31]).is_err(), "a short key is refused");
        });
    }
}
