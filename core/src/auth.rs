//! Challenge-response over a shared secret: the one piece of keyed proof the tunnel carrier
//! and the mesh's peer links both use.
//!
//! Each side sends a fresh nonce; each proves it knows the secret with
//! `HMAC-SHA256(secret, label | their nonce | own nonce)`, where the label names the
//! protocol and the prover's role. So a recorded proof fails against a new nonce, a proof
//! reflected back to its sender fails (the other role's label), and a proof from one
//! protocol never passes in the other. The secret itself never crosses the wire.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Bytes in a nonce and in a proof.
pub const PROOF_LEN: usize = 32;

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

    fn mac(&self, label: &[u8], theirs: &[u8; PROOF_LEN], own: &[u8; PROOF_LEN]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label);
        mac.update(theirs);
        mac.update(own);
        mac
    }

    /// The proof of the role `label` over the other side's nonce and its own.
    pub fn prove(&self, label: &[u8], theirs: &[u8; PROOF_LEN], own: &[u8; PROOF_LEN]) -> [u8; PROOF_LEN] {
        self.mac(label, theirs, own).finalize().into_bytes().into()
    }

    /// Checks, in constant time, a proof of the role `label` made over `theirs` (the
    /// verifier's nonce, as the prover saw it) and `own` (the prover's nonce).
    pub fn verify(&self, label: &[u8], theirs: &[u8; PROOF_LEN], own: &[u8; PROOF_LEN], proof: &[u8]) -> bool {
        self.mac(label, theirs, own).verify_slice(proof).is_ok()
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
    fn proofs_verify_only_with_the_same_secret_nonces_and_label() {
        let secret = Secret::new(*b"correct horse").unwrap();
        let other = Secret::new(*b"battery staple").unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let proof = secret.prove(b"role a", &a, &b);
        assert!(secret.verify(b"role a", &a, &b, &proof));
        assert!(!other.verify(b"role a", &a, &b, &proof));
        assert!(!secret.verify(b"role a", &b, &a, &proof), "nonces swapped");
        assert!(!secret.verify(b"role b", &a, &b, &proof), "another role's label");
        assert!(!secret.verify(b"role a", &a, &b, &proof[..31]), "a short proof");
    }

    #[test]
    fn file_contents_are_trimmed_and_empty_secrets_refused() {
        assert_eq!(Secret::from_file_contents(b"  s3cret\n"), Secret::new(*b"s3cret"));
        assert_eq!(Secret::from_file_contents(b"\n"), None);
        assert_eq!(format!("{:?}", Secret::new(*b"abc").unwrap()), "Secret(3 bytes)");
    }
}
