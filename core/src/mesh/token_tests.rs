//! A mesh server with per-user tokens: a listed name is registered only with its token,
//! and a registration that proves it takes the name from whoever holds it, here or at a
//! peer.

use super::tests::{messages, registered};
use super::*;
use crate::service::fixture::Fixture;
use crate::Rng;

const TOKENS: &str = "alice 0123456789abcdef0123\n";

fn me() -> SocketAddr {
    "127.0.0.1:5001".parse().unwrap()
}

fn peer() -> SocketAddr {
    "127.0.0.1:5002".parse().unwrap()
}

fn tokens() -> UserTokens {
    UserTokens::parse(TOKENS).unwrap()
}

fn with_tokens() -> Fixture<MeshServer> {
    let config = ServerConfig { user_tokens: tokens(), ..ServerConfig::new(me(), vec![]) };
    Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, config))
}

/// A user connection that asked for `name` and got the server's challenge: the
/// connection and the server's nonce.
fn challenged(f: &mut Fixture<MeshServer>, name: &str) -> (ConnId, Nonce) {
    let conn = f.connect();
    f.send(conn, &MeshMsg::Register { name: name.into() }.to_bytes());
    let [MeshMsg::RegisterChallenge { nonce }] = messages(f, conn)[..] else { panic!("a challenge for {name}") };
    (conn, nonce)
}

/// `proof` is what the client answers: made with the right token, or a wrong one.
fn answer(f: &mut Fixture<MeshServer>, conn: ConnId, nonce: &Nonce, token: &Secret) {
    let proof = super::super::tokens::answer(token, "alice", nonce, &mut Rng::new(5));
    f.send(conn, &proof.to_bytes());
}

/// alice, registered with her token.
fn proved_alice(f: &mut Fixture<MeshServer>) -> ConnId {
    let (conn, nonce) = challenged(f, "alice");
    answer(f, conn, &nonce, tokens().token("alice").unwrap());
    assert_eq!(messages(f, conn), [MeshMsg::Registered { name: "alice".into() }]);
    conn
}

/// A peer at [`peer`] that dialled `f` and announced itself (no mesh secret).
fn linked_peer(f: &mut Fixture<MeshServer>) -> ConnId {
    let conn = f.connect();
    f.send(conn, &MeshMsg::Announce { server: peer(), known: vec![] }.to_bytes());
    messages(f, conn);
    conn
}

fn said_to(f: &mut Fixture<MeshServer>, conn: ConnId) -> Option<String> {
    messages(f, conn).into_iter().find_map(|m| match m {
        MeshMsg::RegisterRefused { reason, .. } => Some(reason),
        _ => None,
    })
}

#[test]
fn a_listed_name_needs_its_token_and_a_wrong_one_is_refused() {
    let mut f = with_tokens();
    let (conn, nonce) = challenged(&mut f, "alice");
    answer(&mut f, conn, &nonce, &Secret::new(*b"a guessed token!!").unwrap());
    assert_eq!(said_to(&mut f, conn).as_deref(), Some("wrong token for alice"));
    assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful), "one guess per connection");
    assert!(f.machine.local_users().is_empty());
    proved_alice(&mut f);
    // A name the file does not list is first come, first served, as without tokens.
    registered(&mut f, "bob");
    assert_eq!(f.machine.local_users(), ["alice", "bob"]);
}

#[test]
fn a_client_without_the_token_may_leave_at_the_challenge() {
    let mut f = with_tokens();
    let (conn, _) = challenged(&mut f, "alice");
    f.send(conn, &MeshMsg::Leave.to_bytes());
    assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful));
    assert!(!f.events.iter().any(|e| matches!(e, MeshEvent::ProtocolError { .. })), "{:?}", f.events);
}

#[test]
fn a_client_that_never_answers_the_challenge_is_closed() {
    let mut f = with_tokens();
    let (conn, _) = challenged(&mut f, "alice");
    f.advance_to(Instant::ZERO + f.machine.config.hello_timeout + Duration::from_secs(2));
    assert_eq!(f.closed.get(&conn), Some(&CloseHow::Abort));
    assert!(f.machine.local_users().is_empty());
}

#[test]
fn a_login_with_the_token_takes_the_name_from_a_session_here_and_gets_its_messages() {
    let mut f = with_tokens();
    let old = proved_alice(&mut f);
    let bob = registered(&mut f, "bob");
    let new = proved_alice(&mut f);
    let told = said_to(&mut f, old).expect("the old session is told");
    assert!(told.contains("taken over by a login with its token"), "{told}");
    assert_eq!(f.closed.get(&old), Some(&CloseHow::Graceful));
    let id = Uuid::from_u128(1);
    f.send(bob, &MeshMsg::Send { id, to: "alice".into(), body: "hi".into() }.to_bytes());
    assert_eq!(messages(&mut f, new), [MeshMsg::Deliver { id, from: "bob".into(), body: "hi".into() }]);
    assert_eq!(messages(&mut f, old), [], "nothing reaches the old holder");
}

#[test]
fn a_login_with_the_token_takes_over_a_name_held_at_a_peer() {
    let mut f = with_tokens();
    let link = linked_peer(&mut f);
    f.send(link, &MeshMsg::Claim { name: "alice".into(), home: peer() }.to_bytes());
    assert_eq!(messages(&mut f, link), [MeshMsg::ClaimOk { name: "alice".into(), home: peer() }]);
    let (conn, nonce) = challenged(&mut f, "alice");
    answer(&mut f, conn, &nonce, tokens().token("alice").unwrap());
    assert_eq!(messages(&mut f, link), [MeshMsg::Takeover { name: "alice".into(), home: me() }]);
    assert_eq!(messages(&mut f, conn), [], "registered only once the peer gave the name up");
    f.send(link, &MeshMsg::ClaimOk { name: "alice".into(), home: me() }.to_bytes());
    assert_eq!(messages(&mut f, conn), [MeshMsg::Registered { name: "alice".into() }]);
    assert_eq!(f.machine.location("alice"), Some(me()));
}

#[test]
fn a_takeover_from_a_peer_evicts_the_user_here_and_a_plain_claim_does_not() {
    let mut f = with_tokens();
    let alice = proved_alice(&mut f);
    let link = linked_peer(&mut f);
    f.send(link, &MeshMsg::Claim { name: "alice".into(), home: peer() }.to_bytes());
    assert_eq!(messages(&mut f, link), [MeshMsg::ClaimConflict { name: "alice".into(), holder: me() }]);
    assert!(!f.closed.contains_key(&alice), "a claim alone takes nothing");
    f.send(link, &MeshMsg::Takeover { name: "alice".into(), home: peer() }.to_bytes());
    assert_eq!(messages(&mut f, link), [MeshMsg::ClaimOk { name: "alice".into(), home: peer() }]);
    let told = said_to(&mut f, alice).expect("alice is told");
    assert!(told.contains(&format!("taken over by a login with its token at {}", peer())), "{told}");
    assert_eq!(f.closed.get(&alice), Some(&CloseHow::Graceful));
    assert_eq!(f.machine.location("alice"), Some(peer()), "messages to alice go to the peer now");
}

#[test]
fn a_takeover_of_a_name_the_tokens_do_not_list_is_only_a_claim() {
    let mut f = with_tokens();
    let bob = registered(&mut f, "bob");
    let link = linked_peer(&mut f);
    f.send(link, &MeshMsg::Takeover { name: "bob".into(), home: peer() }.to_bytes());
    assert_eq!(messages(&mut f, link), [MeshMsg::ClaimConflict { name: "bob".into(), holder: me() }]);
    assert!(!f.closed.contains_key(&bob));
    assert_eq!(f.machine.location("bob"), Some(me()));
}

#[test]
fn two_logins_with_the_token_at_once_leave_the_name_with_the_lower_address() {
    let mut f = with_tokens();
    let link = linked_peer(&mut f);
    let (conn, nonce) = challenged(&mut f, "alice");
    answer(&mut f, conn, &nonce, tokens().token("alice").unwrap());
    messages(&mut f, link);
    // The peer (a higher address) is taking alice over at the same moment: we keep her.
    f.send(link, &MeshMsg::Takeover { name: "alice".into(), home: peer() }.to_bytes());
    assert_eq!(messages(&mut f, link), [MeshMsg::ClaimConflict { name: "alice".into(), holder: me() }]);
    f.send(link, &MeshMsg::ClaimOk { name: "alice".into(), home: me() }.to_bytes());
    assert_eq!(messages(&mut f, conn), [MeshMsg::Registered { name: "alice".into() }]);
}

#[test]
fn tokens_replaced_at_run_time_apply_to_the_next_registrations_only() {
    let mut f = Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, ServerConfig::new(me(), vec![])));
    let squatter = registered(&mut f, "alice");
    f.machine.set_user_tokens(tokens());
    let (pending, nonce) = challenged(&mut f, "alice");
    assert!(!f.closed.contains_key(&squatter), "a session that holds a newly listed name keeps it");
    // Listed now: a login with the token takes the name over from the session without it.
    answer(&mut f, pending, &nonce, tokens().token("alice").unwrap());
    assert_eq!(messages(&mut f, pending), [MeshMsg::Registered { name: "alice".into() }]);
    let told = said_to(&mut f, squatter).expect("the squatter is told");
    assert!(told.contains("taken over by a login with its token"), "{told}");

    // A token changed between the challenge and the proof: the old token no longer proves.
    let (conn, nonce) = challenged(&mut f, "alice");
    f.machine.set_user_tokens(UserTokens::parse("alice a-brand-new-token-0001\n").unwrap());
    answer(&mut f, conn, &nonce, tokens().token("alice").unwrap());
    assert_eq!(said_to(&mut f, conn).as_deref(), Some("wrong token for alice"));

    // Unlisted between the challenge and the proof: registered as any name (taken here).
    let (conn, nonce) = challenged(&mut f, "alice");
    f.machine.set_user_tokens(UserTokens::default());
    answer(&mut f, conn, &nonce, &Secret::new(*b"no token is asked now").unwrap());
    let refused = said_to(&mut f, conn).expect("alice is held by the proved session");
    assert!(refused.contains("taken"), "{refused}");
    assert_eq!(f.machine.local_users(), ["alice"]);
}
