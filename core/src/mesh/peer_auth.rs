//! Peer authentication on a mesh link: before a server's `Announce` is believed, the two
//! servers prove to each other that they hold the mesh secret ([`crate::auth`]).
//!
//! ```text
//! dialler  → acceptor  PeerHello     { nonce_d }
//! acceptor → dialler   PeerChallenge { nonce_a, proof_a = HMAC(secret, "switchyard mesh v1 acceptor" | nonce_d | nonce_a) }
//! dialler  → acceptor  PeerProof     { proof_d = HMAC(secret, "switchyard mesh v1 dialler" | nonce_a | nonce_d) }
//! dialler  → acceptor  Announce …    (the link as without a secret)
//! ```
//!
//! Either side that finds the other's proof wrong (or gets an `Announce` with no proof)
//! sends `PeerRefused { reason }` and closes the link. Users never take part: a client
//! registers as before, and only the peer messages (claims, forwards, receipts, `Gone`)
//! need an authenticated link.

use crate::auth::{Secret, PROOF_LEN};
use crate::wire::mesh::MeshMsg;
use crate::Rng;

const ACCEPTOR_LABEL: &[u8] = b"switchyard mesh v1 acceptor";
const DIALLER_LABEL: &[u8] = b"switchyard mesh v1 dialler";

/// A nonce or a proof.
pub(super) type Nonce = [u8; PROOF_LEN];

/// A fresh nonce from the machine's generator.
pub(super) fn nonce(rng: &mut Rng) -> Nonce {
    let mut nonce = [0; PROOF_LEN];
    rng.fill_bytes(&mut nonce);
    nonce
}

/// The acceptor's answer to a dialler's `PeerHello`: its own nonce (kept to check the
/// dialler's proof) and the challenge to send.
pub(super) fn challenge(secret: &Secret, rng: &mut Rng, dialler: &Nonce) -> (Nonce, MeshMsg) {
    let own = nonce(rng);
    let proof = secret.prove(ACCEPTOR_LABEL, dialler, &own);
    (own, MeshMsg::PeerChallenge { nonce: own, proof })
}

/// The dialler's `PeerProof` for a challenge, or `None` when the acceptor's proof is wrong
/// (it does not hold this secret).
pub(super) fn answer(secret: &Secret, own: &Nonce, acceptor: &Nonce, proof: &[u8]) -> Option<MeshMsg> {
    secret
        .verify(ACCEPTOR_LABEL, own, acceptor, proof)
        .then(|| MeshMsg::PeerProof { proof: secret.prove(DIALLER_LABEL, acceptor, own) })
}

/// True when the dialler's proof is right.
pub(super) fn check(secret: &Secret, own: &Nonce, dialler: &Nonce, proof: &[u8]) -> bool {
    secret.verify(DIALLER_LABEL, own, dialler, proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_passes_with_one_secret_and_fails_with_two() {
        let (secret, other) = (Secret::new(*b"mesh").unwrap(), Secret::new(*b"other").unwrap());
        let mut rng = Rng::new(1);
        let dialler = nonce(&mut rng);
        let (acceptor, challenge) = challenge(&secret, &mut rng, &dialler);
        let MeshMsg::PeerChallenge { nonce: sent, proof } = challenge else { panic!("a challenge") };
        assert_eq!(sent, acceptor);
        let Some(MeshMsg::PeerProof { proof: answer_proof }) = answer(&secret, &dialler, &acceptor, &proof) else {
            panic!("the right secret answers")
        };
        assert!(check(&secret, &acceptor, &dialler, &answer_proof));
        assert!(answer(&other, &dialler, &acceptor, &proof).is_none(), "a dialler with another secret refuses");
        assert!(!check(&other, &acceptor, &dialler, &answer_proof), "an acceptor with another secret refuses");
        // The acceptor's own proof sent back as the dialler's is refused (the labels differ).
        assert!(!check(&secret, &acceptor, &dialler, &proof));
        assert!(!check(&secret, &dialler, &acceptor, &proof));
    }
}
