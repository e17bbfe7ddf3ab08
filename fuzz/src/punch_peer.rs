//! The `punch_peer` fuzz target: a hole-punching `Peer` with small limits and short timers,
//! driven by a script of datagrams, commands and time under the checked [`Driver`].
//!
//! Each script step is read off the input: a rendezvous answer (`Registered`, `Refused`,
//! `PeerInfo`, `ConnectFailed`, `RelayedFrom`) from the rendezvous's address or, now and
//! then, from another one; a peer-to-peer message with fuzzer-chosen fields from one of a
//! few endpoints; a `ProbeAck` of a probe the peer sent, or an `Ack` of its data, directly
//! or through the relay (the nonces and epochs are the peer's random draws, which the
//! fuzzer could not guess); raw or corrupted bytes; `connect`, `send`, `leave`; or time,
//! by a step or straight to the peer's own deadline.
//!
//! Besides the driver's contract checks, every datagram the peer sends must be a valid
//! punch message (checked by [`check_punch_datagram`]) that a peer may send: requests (with
//! its own id and always the same token) only to the rendezvous, a relayed datagram only a
//! peer-to-peer message; peer-to-peer messages only of a session a `PeerInfo` from the
//! rendezvous named, direct probes only to endpoints it was told of, heard a probe from or
//! has a path to, a `ProbeAck` only answering a probe, to its source, an `Ack` only
//! answering data, a `Data` always with the body that was sent under its sequence number.
//! A `Decline` only names a session the rendezvous offered in that step (an introduction,
//! or a relayed message of it) and keeps the current session; a `PeerLeft` ends the
//! current session exactly when it names it; after `leave` the peer does nothing at all.
//! Commands are refused exactly when they should be, and `unacked() <= max_unacked` always.

use crate::driver::{Driver, Script};
use crate::punch::check_punch_datagram;
use crate::punch_rendezvous::{answer, body, endpoint, garbage, peer_message};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use switchyard_core::punch::{Peer, PeerConfig, PeerError, PeerEvent};
use switchyard_core::wire::punch::{Cookie, PunchMsg, Token, PEER};
use switchyard_core::{Env, Instant, Machine, Output, SocketId};

/// The socket the driver binds for the peer.
const SOCKET: SocketId = SocketId(5);
/// The peer's own id.
const ME: &str = "A";

fn rendezvous() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)), 3478)
}

/// What the harness fed the peer in one step, to judge what it sent back.
#[derive(Debug, Default)]
struct Fed {
    /// `Probe`s that arrived directly: source, session, nonce.
    probes: Vec<(SocketAddr, u64, u64)>,
    /// A `Data` arrived: directly from this source, or (`None`) through the relay.
    data: Vec<Option<SocketAddr>>,
    /// Sessions the rendezvous named, introducing a peer (`PeerInfo`) or relaying a
    /// peer-to-peer message from it: the ones the peer may decline.
    offered: Vec<(String, u64)>,
}

/// What the harness knows of the peer, from what it fed and what it saw sent.
#[derive(Debug, Default)]
struct Book {
    /// The peer's registration token, from its first request.
    token: Option<Token>,
    /// The cookie of the last `Verify` from the rendezvous (zeros before one).
    cookie: Cookie,
    /// Sessions named by a `PeerInfo` from the rendezvous.
    sessions: BTreeSet<u64>,
    /// Endpoints a `PeerInfo` from the rendezvous named, and sources of probes.
    candidates: BTreeSet<SocketAddr>,
    /// Sources of `ProbeAck`s: the endpoints a direct path may go to.
    acked_from: BTreeSet<SocketAddr>,
    /// Bodies passed to `send`.
    sent_bodies: BTreeSet<String>,
    /// The body each (epoch, seq) of `Data` carried.
    data_bodies: BTreeMap<(u64, u64), String>,
    /// The latest probes the peer sent: destination, session, nonce.
    probes: VecDeque<(SocketAddr, u64, u64)>,
    /// The latest data the peer sent: where (`None`: relayed), session, epoch, seq.
    data: VecDeque<(Option<SocketAddr>, u64, u64, u64)>,
}

impl Book {
    /// Checks the datagrams of one step's outputs; `fed` is what the step delivered.
    fn sent(&mut self, outputs: &[Output<PeerEvent>], fed: &Fed) {
        for output in outputs {
            let Output::Transmit { socket, to, bytes } = output else { continue };
            assert_eq!(*socket, SOCKET, "sent from the wrong socket");
            let msg = check_punch_datagram(bytes).unwrap_or_else(|e| panic!("sent an invalid datagram: {e}"));
            if msg.kind().0 == PEER {
                self.peer_msg(Some(*to), msg, fed);
                continue;
            }
            assert_eq!(*to, rendezvous(), "sent {msg:?} to {to}, which is not the rendezvous");
            let token = match &msg {
                PunchMsg::Register { token, cookie, id, private } => {
                    assert_eq!((id.as_str(), private.as_slice()), (ME, &[private_endpoint()][..]), "{msg:?}");
                    assert_eq!(*cookie, self.cookie, "registered without the cookie the rendezvous sent last");
                    token
                }
                PunchMsg::Connect { token, id, dest } => {
                    assert_eq!(id, ME, "connected as another id");
                    assert_ne!(dest, ME, "asked to be introduced to itself");
                    token
                }
                PunchMsg::Unregister { token, id } => {
                    assert_eq!(id, ME, "unregistered another id");
                    token
                }
                PunchMsg::Decline { token, id, peer, session } => {
                    assert_eq!(id, ME, "declined as another id");
                    let offered = fed.offered.contains(&(peer.clone(), *session));
                    assert!(offered, "declined {peer}'s session {session}, which nobody offered in this step");
                    token
                }
                PunchMsg::RelayTo { token, from, inner, .. } => {
                    assert_eq!(from, ME, "relayed as another id");
                    let inner =
                        check_punch_datagram(inner).unwrap_or_else(|e| panic!("relayed an invalid datagram: {e}"));
                    assert_eq!(inner.kind().0, PEER, "relayed {inner:?}, which is not peer-to-peer");
                    self.peer_msg(None, inner, fed);
                    token
                }
                other => panic!("a peer sent {other:?}, which only the rendezvous sends"),
            };
            assert_eq!(*self.token.get_or_insert(*token), *token, "the peer changed its token");
        }
    }

    /// Checks one peer-to-peer message the peer sent, to `to` or (`None`) through the relay.
    fn peer_msg(&mut self, to: Option<SocketAddr>, msg: PunchMsg, fed: &Fed) {
        let session = msg.peer_session().expect("type 26");
        assert!(self.sessions.contains(&session), "{msg:?}: no PeerInfo from the rendezvous named that session");
        match msg {
            PunchMsg::Probe { session, nonce } => {
                // Through the relay: one per round of punching, which nobody acknowledges.
                let Some(to) = to else { return };
                // A candidate, or the path an acknowledgement came on (keepalives).
                let named = self.candidates.contains(&to) || self.acked_from.contains(&to);
                assert!(named, "probed {to}, which nobody named");
                if self.probes.len() == 16 {
                    self.probes.pop_front();
                }
                self.probes.push_back((to, session, nonce));
            }
            PunchMsg::ProbeAck { session, nonce } => {
                let to = to.expect("probes are answered direct");
                assert!(fed.probes.contains(&(to, session, nonce)), "ProbeAck {nonce} to {to} answers no probe");
            }
            PunchMsg::Data { session, epoch, seq, body } => {
                if let Some(to) = to {
                    assert!(self.acked_from.contains(&to), "data to {to}, which never acknowledged a probe");
                }
                assert!(self.sent_bodies.contains(&body), "sent data {body:?} nobody wrote");
                let first = self.data_bodies.entry((epoch, seq)).or_insert_with(|| body.clone());
                assert_eq!(*first, body, "seq {seq} of epoch {epoch} carried two bodies");
                if self.data.len() == 16 {
                    self.data.pop_front();
                }
                self.data.push_back((to, session, epoch, seq));
            }
            PunchMsg::Ack { .. } => {
                assert!(fed.data.contains(&to), "an Ack to {to:?} answers no data from there");
            }
            _ => unreachable!("type 26"),
        }
    }

    /// Notes what a datagram from `from` tells the harness about where the peer may send.
    fn fed(&mut self, from: SocketAddr, msg: &PunchMsg, fed: &mut Fed) {
        match msg {
            PunchMsg::PeerInfo { peer, session, public, private } if from == rendezvous() => {
                self.sessions.insert(*session);
                self.candidates.insert(*public);
                self.candidates.extend(private);
                fed.offered.push((peer.clone(), *session));
            }
            PunchMsg::Verify { cookie } if from == rendezvous() => self.cookie = *cookie,
            PunchMsg::RelayedFrom { from: peer, inner } if from == rendezvous() => {
                let relayed = PunchMsg::from_datagram(inner.clone());
                if let Ok(PunchMsg::Data { .. }) = relayed {
                    fed.data.push(None);
                }
                if let Some(session) = relayed.ok().and_then(|m| m.peer_session()) {
                    fed.offered.push((peer.clone(), session));
                }
            }
            PunchMsg::Probe { session, nonce } => {
                self.candidates.insert(from);
                fed.probes.push((from, *session, *nonce));
            }
            PunchMsg::ProbeAck { .. } => {
                self.acked_from.insert(from);
            }
            PunchMsg::Data { .. } => fed.data.push(Some(from)),
            _ => {}
        }
    }
}

fn private_endpoint() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2)), 4000)
}

/// Where a datagram comes from: mostly the pool of [`endpoint`], sometimes the rendezvous.
fn source(b: u8) -> SocketAddr {
    if b % 5 == 0 {
        rendezvous()
    } else {
        endpoint(b)
    }
}

/// Runs `data` as a script against a peer. Panics on any broken rule.
pub fn fuzz_punch_peer(data: &[u8]) {
    let mut s = Script::new(data);
    let mut config = PeerConfig::new(ME, rendezvous());
    config.socket = SOCKET;
    config.private = vec![private_endpoint()];
    config.refresh_interval = Duration::from_secs(2);
    config.punch_for = Duration::from_secs(1);
    config.upgrade_interval = Duration::from_secs(3);
    config.keepalive_interval = Duration::from_secs(1);
    config.path_timeout = Duration::from_secs(3);
    config.max_unacked = 3;
    config.relay = s.u8() % 4 != 0;
    let seed = u64::from(s.u8());
    let (mut d, outputs) =
        Driver::with_sockets(Peer::new(Env::new(seed), Instant::ZERO, config.clone()), Instant::ZERO, &[SOCKET]);
    let mut book = Book::default();
    book.sent(&outputs, &Fed::default());
    let mut left = false;
    while !s.is_empty() {
        let op = s.u8();
        let mut fed = Fed::default();
        let before = d.machine.session().map(|(peer, session)| (peer.to_owned(), session));
        // A `PeerLeft` from the rendezvous, if this step feeds one.
        let mut peer_left = None;
        let datagram: Option<(SocketAddr, Vec<u8>)> = match op % 13 {
            0 | 1 => {
                let from = if s.below(8) == 0 { source(s.u8()) } else { rendezvous() };
                let msg = match s.below(3) {
                    0 => PunchMsg::Registered { id: ME.to_owned(), public: endpoint(s.u8()) },
                    _ => answer(&mut s),
                };
                Some((from, msg.to_bytes().to_vec()))
            }
            2 => Some((source(s.u8()), peer_message(&mut s).to_bytes().to_vec())),
            3 => {
                // Acknowledge one of the peer's probes, usually from where it went.
                let pick = s.u8();
                let other = s.u8();
                book.probes.get(usize::from(pick) % book.probes.len().max(1)).map(|&(to, session, nonce)| {
                    let from = if other % 4 == 0 { endpoint(other) } else { to };
                    (from, PunchMsg::ProbeAck { session, nonce }.to_bytes().to_vec())
                })
            }
            4 => {
                // Acknowledge some of the peer's data, on the path it came on.
                let pick = s.u8();
                let next = s.u8() % 3;
                book.data.get(usize::from(pick) % book.data.len().max(1)).map(|&(to, session, epoch, seq)| {
                    let ack = PunchMsg::Ack { session, epoch, next: seq + u64::from(next) };
                    match to {
                        Some(to) => (to, ack.to_bytes().to_vec()),
                        None => {
                            let relayed = PunchMsg::RelayedFrom { from: "B".to_owned(), inner: ack.to_bytes() };
                            (rendezvous(), relayed.to_bytes().to_vec())
                        }
                    }
                })
            }
            5 => {
                // A peer-to-peer message through the relay, from one of a few ids.
                let from = ["B", "C"][s.below(2)].to_owned();
                let inner = peer_message(&mut s).to_bytes();
                Some((rendezvous(), PunchMsg::RelayedFrom { from, inner }.to_bytes().to_vec()))
            }
            6 => {
                let from = source(s.u8());
                let valid = peer_message(&mut s).to_bytes();
                Some((from, garbage(&mut s, &valid)))
            }
            _ => None,
        };
        let outputs = match (op % 13, datagram) {
            (_, Some((from, bytes))) => {
                if let Ok(msg) = PunchMsg::from_datagram(Bytes::from(bytes.clone())) {
                    book.fed(from, &msg, &mut fed);
                    if let (PunchMsg::PeerLeft { peer, session, .. }, true) = (&msg, from == rendezvous()) {
                        peer_left = Some((peer.clone(), *session));
                    }
                }
                d.datagram(SOCKET, from, &bytes)
            }
            (0..=6, None) => Vec::new(),
            (7, None) => {
                let dest = ["B", "C", ME, "", "no spaces"][s.below(5)];
                let (result, outputs) = d.command(|peer, now| peer.connect(now, dest));
                let expected = match dest {
                    "" | "no spaces" => Err(PeerError::InvalidId(dest.to_owned())),
                    ME => Err(PeerError::OwnId(dest.to_owned())),
                    _ => Ok(()),
                };
                assert_eq!(result, expected, "connect({dest:?})");
                outputs
            }
            (8 | 9, None) => {
                let text = if s.below(16) == 0 { "y".repeat(1025) } else { body(&mut s) };
                let unacked = d.machine.unacked();
                if text.len() <= 1024 {
                    book.sent_bodies.insert(text.clone());
                }
                let (result, outputs) = d.command(|peer, now| peer.send(now, &text));
                match result {
                    Ok(_) => assert!(text.len() <= 1024 && unacked < config.max_unacked, "send took {text:?}"),
                    Err(PeerError::TooLong(n)) => assert!(n == text.len() && n > 1024, "{n}-byte body refused"),
                    Err(PeerError::QueueFull(_)) => {
                        assert_eq!(unacked, config.max_unacked, "queue full with {unacked} unacked")
                    }
                    Err(PeerError::NoPeer) => assert_eq!(unacked, 0, "no peer, yet messages wait"),
                    Err(e) => panic!("send refused with {e}"),
                }
                outputs
            }
            (10, None) => {
                let outputs = d.command(|peer, now| peer.leave(now)).1;
                left = true;
                outputs
            }
            (11, None) => {
                let now = d.now() + Duration::from_millis(u64::from(s.u8()) * 50);
                d.timeout(now)
            }
            _ => {
                // Straight to the peer's own deadline (or a little past it).
                let now = d.now();
                let at = d.machine.poll_timeout().unwrap_or(now).max(now);
                d.timeout(at + Duration::from_millis(u64::from(s.u8() % 4)))
            }
        };
        book.sent(&outputs, &fed);
        assert!(d.machine.unacked() <= config.max_unacked, "{} messages unacknowledged", d.machine.unacked());
        let after = d.machine.session().map(|(peer, session)| (peer.to_owned(), session));
        if let Some(ended) = peer_left {
            // Only the current session's own `PeerLeft` ends it; a stale one changes nothing,
            // nor does anything after `leave`.
            let expected = if before.as_ref() == Some(&ended) && !left { None } else { before.clone() };
            assert_eq!(after, expected, "session {before:?} after PeerLeft {ended:?}");
        }
        let declined = outputs.iter().any(|o| {
            matches!(o, Output::Transmit { bytes, .. } if matches!(PunchMsg::from_datagram(bytes.clone()), Ok(PunchMsg::Decline { .. })))
        });
        if declined && before.is_some() {
            assert_eq!(after, before, "declining an introduction changed the session");
        }
        if left && op % 13 != 10 {
            assert!(outputs.is_empty(), "after leave the peer still did {outputs:?}");
        }
    }
}
