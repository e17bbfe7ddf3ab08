//! Carrier authentication: mutual HMAC-SHA256 challenge-response over a shared secret.
//!
//! ```text
//! local  → remote   Hello     { version, nonce_l }
//! remote → local    Challenge { nonce_r, proof_r = HMAC(secret, "switchyard tunnel v1 remote" | nonce_l | nonce_r) }
//! local  → remote   Response  { proof_l = HMAC(secret, "switchyard tunnel v1 local"  | nonce_r | nonce_l) }
//! remote → local    Welcome   (or Refused { reason })
//! ```
//!
//! Each side proves it knows the secret over the other side's fresh nonce, so neither a
//! recorded exchange nor a reflected proof (the labels differ by role) can be replayed. The
//! secret itself never crosses the wire. The carrier is authenticated, not encrypted: run
//! it over WireGuard or SSH where confidentiality matters.

use crate::wire::tunnel::PROOF_LEN;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const REMOTE_LABEL: &[u8] = b"switchyard tunnel v1 remote";
const LOCAL_LABEL: &[u8] = b"switchyard tunnel v1 local";

/// A shared secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from raw bytes. Refuses an empty one: an empty key authenticates nobody.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Secret> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then_some(Secret(bytes))
    }

    /// A secret read from a file's contents: surrounding whitespace (a trailing newline
    /// from `echo` or an editor) is not part of it.
    pub fn from_file_contents(contents: &[u8]) -> Option<Secret> {
        Secret::new(contents.trim_ascii().to_vec())
    }

    fn mac(&self, label: &[u8], first: &[u8; PROOF_LEN], second: &[u8; PROOF_LEN]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac
    }

    /// The remote's proof over (local nonce, remote nonce).
    pub fn remote_proof(&self, nonce_l: &[u8; PROOF_LEN], nonce_r: &[u8; PROOF_LEN]) -> [u8; PROOF_LEN] {
        self.mac(REMOTE_LABEL, nonce_l, nonce_r).finalize().into_bytes().into()
    }

    /// The local's proof over (remote nonce, local nonce).
    pub fn local_proof(&self, nonce_r: &[u8; PROOF_LEN], nonce_l: &[u8; PROOF_LEN]) -> [u8; PROOF_LEN] {
        self.mac(LOCAL_LABEL, nonce_r, nonce_l).finalize().into_bytes().into()
    }

    /// Checks the remote's proof in constant time.
    pub fn verify_remote(&self, nonce_l: &[u8; PROOF_LEN], nonce_r: &[u8; PROOF_LEN], proof: &[u8]) -> bool {
        self.mac(REMOTE_LABEL, nonce_l, nonce_r).verify_slice(proof).is_ok()
    }

    /// Checks the local's proof in constant time.
    pub fn verify_local(&self, nonce_r: &[u8; PROOF_LEN], nonce_l: &[u8; PROOF_LEN], proof: &[u8]) -> bool {
        self.mac(LOCAL_LABEL, nonce_r, nonce_l).verify_slice(proof).is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_secret_nonces_and_role() {
        let secret = Secret::new(*b"correct horse").unwrap();
        let other = Secret::new(*b"battery staple").unwrap();
        let (nl, nr) = ([1u8; 32], [2u8; 32]);
        let proof = secret.remote_proof(&nl, &nr);
        assert!(secret.verify_remote(&nl, &nr, &proof));
        assert!(!other.verify_remote(&nl, &nr, &proof));
        assert!(!secret.verify_remote(&nr, &nl, &proof));
        // A remote proof reflected back as a local one is refused.
        assert!(!secret.verify_local(&nl, &nr, &proof));
        assert!(secret.verify_local(&nr, &nl, &secret.local_proof(&nr, &nl)));
    }

    #[test]
    fn file_contents_are_trimmed_and_empty_secrets_refused() {
        assert_eq!(Secret::from_file_contents(b"  s3cret\n"), Secret::new(*b"s3cret"));
        assert_eq!(Secret::from_file_contents(b"\n"), None);
        assert_eq!(format!("{:?}", Secret::new(*b"abc").unwrap()), "Secret(3 bytes)");
    }
}
