//! # switchyard-core
//!
//! Every Switchyard protocol as a pure, sans-IO state machine, the wire codecs they speak,
//! and a deterministic simulator that runs them without sockets.
//!
//! Nothing in this crate reads a clock, draws entropy, touches a socket or is `async`:
//! time arrives as [`Instant`] arguments, randomness as seeds ([`Env`]), and the network as
//! [`Input`]s. That is what lets the same machine run under smol, async-std, the simulator,
//! or a plain blocking loop of your own.
//!
//! ## Driving a machine
//!
//! Read [`machine`] first: it gives the contract and the order of calls. In short, after
//! every call that changes a machine, drain [`Machine::poll_output`] until `None`, then arm
//! a timer for [`Machine::poll_timeout`].
//!
//! ## Map
//!
//! - [`wire`]: frame and line codecs.
//! - [`service`]: the text services (echo, time, broadcast, reply presets) and a line client.
//! - [`tunnel`]: the local and remote tunnel ends and their stream multiplexer.
//! - [`mesh`]: the P2P message mesh and RTT-based server selection.
//! - [`punch`]: UDP hole punching: rendezvous server, punching peer, relay fallback.
//! - [`tls`]: TLS 1.3 around any machine's connections, deterministic like the rest.
//! - [`sim`]: the deterministic network simulator, public for embedders' own tests.
//! - [`auth`]: challenge-response over a shared secret (tunnel carriers, mesh peers).
//! - [`time`], [`id`], [`rng`], [`backoff`], [`mod@env`]: the deterministic building blocks.

pub mod auth;
pub mod backoff;
pub mod chunk_queue;
pub mod chunks;
pub mod env;
pub mod id;
pub mod machine;
pub mod mesh;
pub mod placement;
pub mod punch;
pub mod rng;
pub mod service;
pub mod sim;
pub mod time;
pub mod tls;
pub mod tunnel;
pub mod wire;

pub use env::Env;
pub use id::{ConnId, ConnIds, ListenerId, SocketId};
pub use machine::{CloseHow, Input, Machine, NetError, Output, Refusal};
pub use rng::Rng;
pub use time::Instant;
