//! Per-user tokens (`--user-token-file`): names that only the holder of their token may
//! register, wherever in the mesh and whoever holds the name now.
//!
//! The file is shared by every server, and each user keeps (at least) its own line:
//!
//! ```text
//! # NAME TOKEN — one user per line; blank lines and lines starting with # are skipped
//! alice  q8V1t0mJ3m1c0Rr5X2u9bA
//! bob    nC7zZ0Jt4dK2e8Yw1Hh6sQ
//! ```
//!
//! A server that lists the name a client registers answers with a nonce; the client proves
//! it holds the token over that nonce and its own:
//!
//! ```text
//! client → server   Register          { name }
//! server → client   RegisterChallenge { nonce_s }
//! client → server   RegisterProof     { nonce_c, proof = HMAC(token, "switchyard mesh v1 user " | name | nonce_s | nonce_c) }
//! ```
//!
//! The token never crosses the wire, a recorded proof fails against a new nonce, and a
//! proof for one name never passes for another. A proved registration takes the name over
//! (`Takeover`, docs/PROTOCOL.md §4.3): a user coming back after its server changed, or
//! before its old session timed out, gets its name at once.

use super::peer_auth::nonce;
use crate::auth::{Secret, PROOF_LEN};
use crate::wire::mesh::{is_valid_name, MeshMsg};
use crate::Rng;
use std::collections::BTreeMap;

/// Most names one token file may list: as many as a mesh tracks
/// ([`ServerConfig::max_users`](super::server::ServerConfig::max_users)' default).
pub const MAX_TOKENS: usize = 100_000;

/// Shortest token accepted, in bytes: a short token is guessed by whoever may connect.
pub const MIN_TOKEN_LEN: usize = 16;

/// The label every proof starts with; the name follows it.
const LABEL: &[u8] = b"switchyard mesh v1 user ";

/// The names that need a token, each with its token. `Debug` never shows a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserTokens {
    tokens: BTreeMap<String, Secret>,
}

/// A token file that could not be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct TokenFileError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl UserTokens {
    /// Reads a token file's contents: `NAME TOKEN` per line, separated by spaces or tabs;
    /// blank lines and lines starting with `#` are skipped. Refuses a name that is not a
    /// valid user name, a token shorter than [`MIN_TOKEN_LEN`], a name listed twice, a
    /// line with more than two fields, and more than [`MAX_TOKENS`] names.
    pub fn parse(contents: &str) -> Result<UserTokens, TokenFileError> {
        let mut tokens = BTreeMap::new();
        for (i, line) in contents.lines().enumerate() {
            let bad = |reason: String| TokenFileError { line: i + 1, reason };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad("expected `NAME TOKEN`".into()));
            };
            if !is_valid_name(name) {
                return Err(bad(format!("{name:?} is not a user name (1-32 bytes, no spaces)")));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token of {name} is {} bytes; use at least {MIN_TOKEN_LEN} random ones \
                     (`head -c 18 /dev/urandom | base64`)",
                    token.len()
                )));
            }
            if tokens.len() >= MAX_TOKENS {
                return Err(bad(format!("more than {MAX_TOKENS} names")));
            }
            let secret = Secret::new(token.as_bytes()).expect("a token is not empty");
            if tokens.insert(name.to_owned(), secret).is_some() {
                return Err(bad(format!("{name} is listed twice")));
            }
        }
        Ok(UserTokens { tokens })
    }

    /// True when `name` needs its token to register.
    pub fn lists(&self, name: &str) -> bool {
        self.tokens.contains_key(name)
    }

    /// The token of `name`, if listed: what a client proves with.
    pub fn token(&self, name: &str) -> Option<&Secret> {
        self.tokens.get(name)
    }

    /// How many names are listed.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when no name is listed (the file held only comments).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// True when `proof` is `name`'s token's proof over the server's nonce `ours` and the
    /// client's `theirs` (compared in constant time); false for an unlisted name.
    pub fn check(&self, name: &str, ours: &[u8; PROOF_LEN], theirs: &[u8; PROOF_LEN], proof: &[u8]) -> bool {
        self.token(name).is_some_and(|token| token.verify(&label(name), ours, theirs, proof))
    }
}

fn label(name: &str) -> Vec<u8> {
    [LABEL, name.as_bytes()].concat()
}

/// The client's answer to a server's `RegisterChallenge` for `name`.
pub fn answer(token: &Secret, name: &str, server_nonce: &[u8; PROOF_LEN], rng: &mut Rng) -> MeshMsg {
    let own = nonce(rng);
    MeshMsg::RegisterProof { nonce: own, proof: token.prove(&label(name), server_nonce, &own) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    const FILE: &str = "# users\n\nalice  0123456789abcdef\n\tbob\tfedcba9876543210xyz  \n";

    #[test]
    fn a_file_lists_names_and_skips_comments_and_blanks() {
        let tokens = UserTokens::parse(FILE).unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.lists("alice") && tokens.lists("bob") && !tokens.lists("carol"));
        assert!(!format!("{tokens:?}").contains("0123456789abcdef"), "Debug shows no token");
    }

    #[test]
    fn a_proof_passes_for_its_name_and_nonce_only() {
        let tokens = UserTokens::parse(FILE).unwrap();
        let mut rng = Rng::new(3);
        let ours = nonce(&mut rng);
        let token = tokens.token("alice").unwrap();
        let MeshMsg::RegisterProof { nonce: theirs, proof } = answer(token, "alice", &ours, &mut rng) else {
            panic!("a proof")
        };
        assert!(tokens.check("alice", &ours, &theirs, &proof));
        assert!(!tokens.check("bob", &ours, &theirs, &proof), "alice's proof is not bob's");
        assert!(!tokens.check("alice", &nonce(&mut rng), &theirs, &proof), "a recorded proof fails a new nonce");
        assert!(!tokens.check("carol", &ours, &theirs, &proof), "an unlisted name proves nothing");
        let wrong = Secret::new(*b"not alice's token").unwrap();
        let MeshMsg::RegisterProof { nonce: theirs, proof } = answer(&wrong, "alice", &ours, &mut rng) else {
            panic!("a proof")
        };
        assert!(!tokens.check("alice", &ours, &theirs, &proof), "a wrong token fails");
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (file, line, says) in [
            ("alice\n", 1, "expected `NAME TOKEN`"),
            ("alice 0123456789abcdef extra\n", 1, "expected"),
            ("# ok\nalice short\n", 2, "at least 16"),
            ("alice 0123456789abcdef\nalice 0123456789abcdef\n", 2, "listed twice"),
            (&format!("{} 0123456789abcdef\n", "x".repeat(33)), 1, "not a user name"),
        ] {
            let err = UserTokens::parse(file).unwrap_err();
            assert_eq!(err.line, line, "{file:?}");
            assert!(err.reason.contains(says), "{file:?}: {err}");
        }
    }

    quickcheck! {
        fn parsing_any_text_never_panics(text: String) -> bool {
            let _ = UserTokens::parse(&text);
            true
        }

        /// A file written from any names and tokens (made valid) lists exactly them.
        fn a_written_file_reads_back(users: Vec<(u16, String)>) -> bool {
            let users: BTreeMap<String, String> = users
                .into_iter()
                .map(|(n, t)| {
                    let token: String = t.chars().filter(|c| c.is_ascii_graphic()).collect();
                    (format!("user{n}"), format!("{token}{}", "t".repeat(MIN_TOKEN_LEN)))
                })
                .collect();
            let file: String = users.iter().map(|(n, t)| format!("{n}\t{t}\n# comment\n")).collect();
            let tokens = UserTokens::parse(&file).expect("a valid file");
            tokens.len() == users.len()
                && users.iter().all(|(n, t)| tokens.token(n) == Secret::new(t.as_bytes()).as_ref())
        }
    }
}
