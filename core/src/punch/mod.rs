//! UDP hole punching: a [`Rendezvous`] server that introduces peers (and relays for them
//! when no direct path forms), and a [`Peer`] that registers, punches through NATs and
//! chats reliably over whichever path it has.
//!
//! ```text
//!   peer A ──Register──▶ rendezvous ◀──Register── peer B      (public endpoint = observed source)
//!   peer A ──Connect B─▶ rendezvous ──PeerInfo──▶ A and B    (each learns the other's endpoints)
//!   peer A ◀══Probe/ProbeAck══▶ peer B                        (both punch at once; first ack wins)
//!   peer A ══Data/Ack══▶ peer B, or via RelayTo/RelayedFrom   (reliable chat, direct or relayed)
//! ```
//!
//! The wire format is [`crate::wire::punch`] (`docs/PROTOCOL.md` §5). Both machines speak
//! only datagrams, on one UDP socket each.

pub mod channel;
pub mod cookie;
pub mod limit;
pub mod peer;
pub mod rendezvous;

pub use peer::{PathKind, Peer, PeerConfig, PeerError, PeerEvent};
pub use rendezvous::{Rendezvous, RendezvousConfig, RendezvousEvent};
