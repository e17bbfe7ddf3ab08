//! Carrier authentication: mutual HMAC-SHA256 challenge-response over a shared secret
//! ([`crate::auth`]).
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
//! it over TLS (`--tls-cert` on the remote end) where confidentiality matters.

pub use crate::auth::Secret;
use crate::wire::tunnel::PROOF_LEN;

const REMOTE_LABEL: &[u8] = b"switchyard tunnel v1 remote";
const LOCAL_LABEL: &[u8] = b"switchyard tunnel v1 local";

impl Secret {
    /// The remote's proof over (local nonce, remote nonce).
    pub fn remote_proof(&self, nonce_l: &[u8; PROOF_LEN], nonce_r: &[u8; PROOF_LEN]) -> [u8; PROOF_LEN] {
        self.prove(REMOTE_LABEL, nonce_l, nonce_r)
    }

    /// The local's proof over (remote nonce, local nonce).
    pub fn local_proof(&self, nonce_r: &[u8; PROOF_LEN], nonce_l: &[u8; PROOF_LEN]) -> [u8; PROOF_LEN] {
        self.prove(LOCAL_LABEL, nonce_r, nonce_l)
    }

    /// Checks the remote's proof in constant time.
    pub fn verify_remote(&self, nonce_l: &[u8; PROOF_LEN], nonce_r: &[u8; PROOF_LEN], proof: &[u8]) -> bool {
        self.verify(REMOTE_LABEL, nonce_l, nonce_r, proof)
    }

    /// Checks the local's proof in constant time.
    pub fn verify_local(&self, nonce_r: &[u8; PROOF_LEN], nonce_l: &[u8; PROOF_LEN], proof: &[u8]) -> bool {
        self.verify(LOCAL_LABEL, nonce_r, nonce_l, proof)
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
}
