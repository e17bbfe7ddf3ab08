//! What can go wrong when building or running a simulation.

use super::net::RealmId;
use crate::time::Instant;
use std::net::IpAddr;

/// A run stopped because something is wrong with the machines under test.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// [`NetConfig::max_steps`](super::NetConfig::max_steps) events were processed: most
    /// likely a livelock.
    #[error("step limit of {steps} events reached at {at}: a livelock, or raise NetConfig::max_steps")]
    StepLimit {
        /// Events processed.
        steps: u64,
        /// Virtual time when the limit was hit.
        at: Instant,
    },
    /// A machine broke the machine contract (e.g. reused a live connection id, or sent
    /// from a UDP socket it was never given).
    #[error("machine on host {host} broke the contract at {at}: {what}")]
    Contract {
        /// The host's name.
        host: String,
        /// Virtual time of the offence.
        at: Instant,
        /// What it did.
        what: String,
    },
}

/// The simulation was set up inconsistently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Another host already has this name.
    #[error("a host called {0} already exists")]
    NameInUse(String),
    /// Another host in the realm already has this address.
    #[error("address {ip} is taken in realm {realm}")]
    AddressInUse {
        /// The realm's name.
        realm: String,
        /// The address.
        ip: IpAddr,
    },
    /// The realm was not made by this simulator.
    #[error("unknown realm {0:?}")]
    UnknownRealm(RealmId),
    /// The host already listens or has a socket on this port.
    #[error("port {port} is in use on host {host}")]
    PortInUse {
        /// The host's name.
        host: String,
        /// The port.
        port: u16,
    },
    /// The host already has a UDP socket with this id.
    #[error("host {host} already has socket {socket}")]
    SocketInUse {
        /// The host's name.
        host: String,
        /// The socket id.
        socket: u16,
    },
    /// The host already has a listener with this id.
    #[error("host {host} already has listener {listener}")]
    ListenerInUse {
        /// The host's name.
        host: String,
        /// The listener id.
        listener: u16,
    },
}

/// The host's machine cannot be reached because the host is down (crashed, or added down
/// and not yet booted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host {0} is down")]
pub struct HostDown(pub String);
