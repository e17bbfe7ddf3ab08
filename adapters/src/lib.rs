//! Drives switchyard-core machines over real sockets, on smol, async-std or Switchyard's
//! own event loop on mio.
//!
//! A machine from `switchyard-core` does no I/O; this crate gives it sockets and a clock.
//! The I/O loop ([`Driver`]) is written once, generic over a small [`Runtime`] trait, and
//! each runtime implements that trait thinly with its own types:
//!
//! - [`SmolRuntime`] (cargo feature `smol`, on by default): the general-purpose choice for
//!   an application that already runs smol.
//! - [`AsyncStdRuntime`] (cargo feature `async-std`, on by default): async-std is
//!   deprecated upstream in favour of smol; it stays supported for embedders already on
//!   it. Turn the feature off to drop the dependency.
//! - [`MioRuntime`] (cargo feature `mio`, on by default): Switchyard's own single-threaded
//!   event loop on mio's edge-triggered epoll, for a process whose work is relaying
//!   (a tunnel end): one `epoll_wait`, one read and one write per relayed message, where
//!   smol's reactor adds six re-arming calls. The `switchyard` binary runs on it by
//!   default. See [`mio_rt`].
//!
//! ```no_run
//! use switchyard_adapters::{Driver, Runtime, SmolRuntime};
//! use switchyard_core::service::echo::{EchoConfig, EchoServer};
//! use switchyard_core::{Env, ListenerId};
//!
//! let rt = SmolRuntime;
//! let running = rt
//!     .block_on(
//!         Driver::new(EchoServer::new(Env::new(1), EchoConfig::default()))
//!             .listen(ListenerId(0), "127.0.0.1:7007".parse().unwrap())
//!             .start(rt),
//!     )
//!     .expect("bind");
//! // ... later, from anywhere:
//! running.shutdown();
//! ```
//!
//! See [`driver`] for how the loop works and every cap it keeps.

pub mod driver;
mod net_error;
mod notify;
pub mod runtime;
pub mod spread;

#[cfg(feature = "async-std")]
mod async_std_rt;
#[cfg(feature = "mio")]
pub mod mio_rt;
#[cfg(feature = "smol")]
mod smol_rt;

pub use driver::{unix_micros_now, Config, Driver, EventPolicy, Handle, Running, Stats, Stopped, WALL_CLOCK_SLACK};
pub use net_error::{describe, net_error};
pub use runtime::{AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, Runtime};

#[cfg(feature = "async-std")]
pub use async_std_rt::AsyncStdRuntime;
#[cfg(feature = "mio")]
pub use mio_rt::MioRuntime;
#[cfg(feature = "smol")]
pub use smol_rt::SmolRuntime;
