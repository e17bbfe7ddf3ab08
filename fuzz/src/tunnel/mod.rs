//! The tunnel harness, shared by the fuzz targets `tunnel_msg`, `tunnel_local`,
//! `tunnel_remote`, `tunnel_pair` and `proxy_header` and by `core/tests/tunnel_props.rs`.
//!
//! - [`wire`]: every tunnel frame is judged against `docs/PROTOCOL.md` §3 by an independent
//!   reading of the spec, and every accepted one re-encodes to its exact bytes.
//! - [`book`]: the [`Book`](book::Book) watches one tunnel end through its driver — every
//!   frame it writes on a carrier, every frame delivered to it, every byte it writes to or
//!   reads from a stream's connection — and asserts the tunnel's rules: authentication,
//!   stream ids, credit in both directions, bytes intact and in order, half-close only after
//!   everything before the `Fin`, pause/resume, and every deadline.
//! - [`script`]: a fuzz input read as a script for a scripted peer of one end (the remote
//!   end's local ends and targets, or the local end's remote end and clients).
//! - [`pair`]: a local and a remote end wired together in memory, with clients and
//!   targets, checked end to end against a reference model (each stream's bytes arrive
//!   intact at the right target and back, and both ends finish with nothing left).
//! - [`proxy`]: the PROXY protocol header decoder's contract, on any bytes.
//!
//! Like `driver.rs` this directory depends only on `switchyard-core`, `bytes` and `std`, and
//! names its sibling as `crate::driver`, so a crate that includes it with `#[path]` must
//! include `driver.rs` as a module called `driver` at its root.

pub mod book;
pub mod pair;
pub mod proxy;
pub mod script;
pub mod wire;

use switchyard_core::machine::Machine;
use switchyard_core::tunnel::local::TunnelLocal;
use switchyard_core::tunnel::remote::TunnelRemote;
use switchyard_core::tunnel::TunnelEvent;

/// What the harness reads from either tunnel end between calls.
pub trait TunnelEnd: Machine<Event = TunnelEvent> {
    /// Streams the end has open.
    fn open_streams(&self) -> usize;
    /// Local end: its carrier is authenticated. Remote end: some carrier is.
    fn authenticated(&self) -> bool;
}

impl TunnelEnd for TunnelLocal {
    fn open_streams(&self) -> usize {
        self.streams()
    }
    fn authenticated(&self) -> bool {
        self.is_up()
    }
}

impl TunnelEnd for TunnelRemote {
    fn open_streams(&self) -> usize {
        self.streams()
    }
    fn authenticated(&self) -> bool {
        self.carriers() > 0
    }
}
