//! The `mesh_server` fuzz target: a `MeshServer` with small limits, driven by a script of
//! users, peers and garbage.
//!
//! Each script step is read off the input: accept a connection (a user or a server), send
//! a well-formed mesh message with fields from the input on a live connection, send raw
//! bytes, answer a dial the server made (connected or failed), end a connection either
//! way, report a stale close, or let time pass. Half the scripts give the server a mesh
//! secret, so peers that announce themselves without proving it are refused; half list
//! two names with tokens, so their registrations are challenged and taken over. The checked [`Driver`] asserts the machine
//! contract after every call; after every step this harness asserts the server's caps
//! (dedup cache, messages awaiting receipts, connections) hold.

use crate::driver::{Driver, Phase, Script};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use switchyard_core::auth::Secret;
use switchyard_core::mesh::server::{MeshServer, ServerConfig};
use switchyard_core::mesh::tokens::UserTokens;
use switchyard_core::wire::mesh::{MeshMsg, ReceiptStatus};
use switchyard_core::{ConnId, Env, Input, Instant, ListenerId, NetError};
use uuid::Uuid;

/// The token file of scripts whose server lists names with tokens.
const TOKENS: &str = "Alice 0123456789abcdef\nBob fedcba9876543210\n";

/// One of a few server addresses: the server itself, its two seeds, or strangers.
fn server_addr(b: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + b % 5)), 5001)
}

/// One of a few user names, so registrations, claims and messages collide.
fn name(b: u8) -> String {
    ["Alice", "Bob", "Carol", "Dave"][usize::from(b % 4)].to_owned()
}

/// One of a few message ids, so duplicates are common.
fn id(b: u8) -> Uuid {
    Uuid::from_bytes([b % 6; 16])
}

/// A well-formed message with fields from the script.
fn message(s: &mut Script<'_>) -> MeshMsg {
    let (a, b, c) = (s.u8(), s.u8(), s.u8());
    match s.u8() % 24 {
        0 => MeshMsg::ListServers,
        1 => MeshMsg::Announce { server: server_addr(a), known: vec![server_addr(b), server_addr(c)] },
        2 => MeshMsg::ServerList { servers: vec![server_addr(a)] },
        3 => MeshMsg::Register { name: name(a) },
        4 => MeshMsg::Registered { name: name(a) },
        5 => MeshMsg::RegisterRefused { name: name(a), reason: "no".into() },
        6 => MeshMsg::Claim { name: name(a), home: server_addr(b) },
        7 => MeshMsg::ClaimOk { name: name(a), home: server_addr(b) },
        8 => MeshMsg::ClaimConflict { name: name(a), holder: server_addr(b) },
        9 => MeshMsg::Send { id: id(a), to: name(b), body: "hi".into() },
        10 => MeshMsg::Deliver { id: id(a), from: name(b), body: "hi".into() },
        11 => MeshMsg::Forward {
            id: id(a),
            attempt: c % 3,
            hops: c % 4,
            origin: server_addr(b),
            from: name(b),
            to: name(c),
            body: "hi".into(),
        },
        12 => {
            let status = if b % 2 == 0 { ReceiptStatus::Delivered } else { ReceiptStatus::NoSuchUser };
            if c % 2 == 0 {
                MeshMsg::Receipt { id: id(a), status }
            } else {
                MeshMsg::ReceiptRelay { id: id(a), status, hops: c % 4, origin: server_addr(b) }
            }
        }
        13 => MeshMsg::Ping { token: u64::from(a) },
        14 => MeshMsg::Pong { token: u64::from(a) },
        15 => MeshMsg::Leave,
        // Handshake messages with nonces and proofs from the script: wrong ones, but they
        // reach every refusal (and a server without a secret refuses them all).
        16 => MeshMsg::PeerHello { nonce: [a; 32] },
        17 => MeshMsg::PeerChallenge { nonce: [a; 32], proof: [b; 32] },
        18 => MeshMsg::PeerProof { proof: [a; 32] },
        19 => MeshMsg::PeerRefused { reason: "no".into() },
        // Token messages: a proof from the script is a wrong one, and a takeover from a
        // peer reaches every rule of a token-holding name.
        20 => MeshMsg::RegisterChallenge { nonce: [a; 32] },
        21 => MeshMsg::RegisterProof { nonce: [a; 32], proof: [b; 32] },
        22 => MeshMsg::Takeover { name: name(a), home: server_addr(b) },
        _ => MeshMsg::Gone { name: name(a), home: server_addr(b) },
    }
}

/// Connections in `phase` that may still be read from, in id order.
fn readable(d: &Driver<MeshServer>, phase: Phase) -> Vec<ConnId> {
    d.conns().filter(|(_, c)| c.phase == phase && !c.read_shut && !c.paused).map(|(id, _)| id).collect()
}

fn pick(ids: &[ConnId], b: u8) -> Option<ConnId> {
    (!ids.is_empty()).then(|| ids[usize::from(b) % ids.len()])
}

/// Runs `data` as a script against a mesh server. Panics on any broken rule.
pub fn fuzz_mesh_server(data: &[u8]) {
    let mut s = Script::new(data);
    let me = server_addr(0);
    let mut config = ServerConfig::new(me, vec![server_addr(1), server_addr(2)]);
    config.max_connections = 6;
    config.max_users = 3;
    config.max_pending = 2;
    config.dedup_cap = 3;
    let seed = s.u8();
    // Half the scripts run a server with a mesh secret, half an open one.
    config.peer_secret = (seed & 0x80 != 0).then(|| Secret::new(*b"fuzz mesh").expect("not empty"));
    // And half of each half lists two names with tokens.
    if seed & 0x40 != 0 {
        config.user_tokens = UserTokens::parse(TOKENS).expect("a token file");
    }
    let seed = u64::from(seed);
    let (mut d, _) = Driver::new(MeshServer::new(Env::new(seed), Instant::ZERO, config.clone()), Instant::ZERO);
    while !s.is_empty() {
        let op = s.u8();
        let arg = s.u8();
        match op % 10 {
            0 => {
                let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, arg)), 40_000);
                let _ = d.accept(ListenerId(u16::from(arg % 2)), peer, server_addr(0));
            }
            1 => {
                if let Some(conn) = pick(&readable(&d, Phase::Open), arg) {
                    let bytes = message(&mut s).to_bytes();
                    d.input(Input::Received { conn, bytes: (&bytes[..]).into() });
                }
            }
            2 => {
                if let Some(conn) = pick(&readable(&d, Phase::Open), arg) {
                    let n = usize::from(s.u8() % 32) + 1;
                    let bytes = s.take(n).to_vec();
                    if !bytes.is_empty() {
                        d.input(Input::Received { conn, bytes: (&bytes[..]).into() });
                    }
                }
            }
            3 | 4 => {
                let connecting: Vec<ConnId> =
                    d.conns().filter(|(_, c)| c.phase == Phase::Connecting).map(|(id, _)| id).collect();
                if let Some(conn) = pick(&connecting, arg) {
                    let input = if op % 10 == 3 {
                        Input::Connected { conn, local: SocketAddr::new(me.ip(), 50_000) }
                    } else {
                        Input::ConnectFailed { conn, error: NetError::Refused }
                    };
                    d.input(input);
                }
            }
            5 => {
                if let Some(conn) = pick(&readable(&d, Phase::Open), arg) {
                    d.input(Input::ReadClosed { conn });
                }
            }
            6 => {
                let open: Vec<ConnId> = d.conns().filter(|(_, c)| c.phase == Phase::Open).map(|(id, _)| id).collect();
                if let Some(conn) = pick(&open, arg) {
                    d.input(Input::Closed { conn, reason: NetError::Reset });
                }
            }
            7 => {
                let finished: Vec<ConnId> =
                    d.conns().filter(|(_, c)| c.phase == Phase::Finished).map(|(id, _)| id).collect();
                if let Some(conn) = pick(&finished, arg) {
                    d.stale(Input::Closed { conn, reason: NetError::Reset });
                }
            }
            // A reload: the names with tokens change under live sessions and challenges.
            8 => {
                let tokens =
                    if arg % 2 == 0 { UserTokens::default() } else { UserTokens::parse(TOKENS).expect("a token file") };
                d.machine.set_user_tokens(tokens);
            }
            _ => {
                let now = d.now() + Duration::from_millis(u64::from(arg) * 50);
                d.timeout(now);
            }
        }
        let server = &d.machine;
        assert!(server.seen().len() <= config.dedup_cap, "dedup cache over its cap");
        assert!(server.pending_receipts() <= config.max_pending, "too many messages awaiting receipts");
        let live = d.conns().filter(|(_, c)| c.is_live()).count();
        // Its own dials (one per known peer) come on top of the accepted connections.
        assert!(live <= config.max_connections + 5, "{live} live connections");
    }
}
