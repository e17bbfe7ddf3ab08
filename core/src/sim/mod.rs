//! The deterministic network simulator: runs any [`Machine`]s on virtual time over a
//! simulated network, reproducibly from one seed.
//!
//! It drives machines through the very contract the real adapters use (see
//! [`machine`](crate::machine)), so a scenario that passes here exercises the same code that
//! runs over sockets. It is public so embedders can test their own machines the same way.
//!
//! # A scenario
//!
//! ```
//! use std::time::Duration;
//! use switchyard_core::service::echo::{EchoConfig, EchoServer};
//! use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent};
//! use switchyard_core::sim::{LinkConfig, NetConfig, Sim};
//! use switchyard_core::{Instant, ListenerId};
//!
//! let link = LinkConfig::new(Duration::from_millis(20), Duration::from_millis(5));
//! let mut sim = Sim::new(7, NetConfig { link, ..NetConfig::default() });
//! let server = sim.add_host("server", [10, 0, 0, 1].into(), |env, _| EchoServer::new(env, EchoConfig::default())).unwrap();
//! let addr = sim.listen(server, ListenerId(0), 7007).unwrap();
//! let client = sim
//!     .add_host("client", [10, 0, 0, 2].into(), move |env, now| {
//!         LineClient::connect(env, now, addr, LineClientConfig::default())
//!     })
//!     .unwrap();
//! // Script the run ahead: an app command at 100 ms, a crash at 1 s.
//! sim.schedule(Instant::from_millis(100), move |sim| {
//!     sim.with_machine(client, |c: &mut LineClient, now| c.send_line(now, b"hi").unwrap()).unwrap();
//! });
//! sim.schedule(Instant::from_secs(1), move |sim| sim.crash(server));
//! sim.run_for(Duration::from_secs(2)).unwrap();
//!
//! let lines: Vec<_> = sim
//!     .events::<LineClientEvent>(client)
//!     .filter_map(|(_, e)| match e { LineClientEvent::Line(l) => Some(l.clone()), _ => None })
//!     .collect();
//! assert_eq!(lines, ["hi"]);
//! assert!(sim.events::<LineClientEvent>(client).any(|(_, e)| {
//!     *e == LineClientEvent::Closed(Some(switchyard_core::NetError::Reset))
//! }));
//! ```
//!
//! # The model
//!
//! **Time and events.** A queue of events ordered by (virtual time, sequence number); the
//! clock jumps from one event to the next, so a simulated hour of idle time costs nothing.
//! After every call into a machine the simulator drains its outputs and re-arms one timer
//! for its `poll_timeout` (stale timers are skipped). A deadline at or before now is acted on
//! at once; a machine that keeps returning one without progress spins until
//! [`NetConfig::max_steps`] turns the livelock into [`SimError::StepLimit`].
//!
//! **Randomness.** One [`Rng`] seeded by the run's seed makes every random choice: link
//! delays, datagram fates, and the seed of each machine's [`Env`] (drawn when the host boots,
//! so a restarted machine gets a fresh but reproducible seed). Scenarios draw their own
//! choices from it too, with [`Sim::fork_rng`]. Everything iterates in a fixed order, so a
//! seed replays the same run, and [`Sim::trace_hash`] proves it.
//!
//! **Hosts.** A host has a name, one IP address in one realm, listeners and UDP sockets (its
//! configuration, which survives crashes), and a machine built by a factory. A machine may
//! open listeners of its own with `Output::Listen` (the host's address or the wildcard, a
//! free port; answered with `Input::Listened` one step later) and close them with
//! `Output::Unlisten`; those belong to the machine's life and close when the host crashes.
//! `Output::Unlisten` closes a configured listener too, for good.
//!
//! **Addresses and realms.** Every host lives in one *realm*: an address space in which an
//! IP address names at most one host. [`RealmId::PUBLIC`] is the internet; [`Sim::add_realm`]
//! makes an isolated private one and [`Sim::add_nat`] one behind a NAT box. Private realms
//! may reuse the same addresses, as real LANs do. A destination is looked up in the
//! sender's realm; on a miss the packet leaves through the realm's NAT box if it has one,
//! and is unreachable otherwise. One routing function decides this for streams and
//! datagrams alike, and with it the source address the receiver observes (`accept`'s
//! `peer`, `Input::Datagram`'s `from`).
//!
//! **NAT boxes** follow RFC 4787, as a [`NatConfig`] sets them up. A NAT box is a host in
//! the public realm at its public address; the private side is a perfect, instant LAN.
//!
//! - *Mapping* ([`NatMapping`]): a datagram leaving the realm from an internal endpoint
//!   (address and port) uses the mapping of that endpoint (EIM), of that endpoint and the
//!   destination address (ADM), or of that endpoint and the destination address and port
//!   (APDM), made on first use. The receiver sees it come from the NAT's public address
//!   and the mapping's external port.
//! - *Port allocation* ([`PortAllocation`]): a new mapping gets the next free port counting
//!   up (sequential) or a port drawn from the run's generator (random), never one a live
//!   mapping holds.
//! - *Timeouts*: a datagram mapping lives for [`NatConfig::mapping_timeout`] after the last
//!   outbound packet that used it (RFC 4787 REQ-6). Inbound packets do not refresh it, so
//!   outsiders cannot keep open a hole the inside has stopped using. A dead mapping is gone:
//!   its port is free and the next outbound packet makes a new mapping, with a new port.
//! - *Filtering* ([`NatFiltering`]): a datagram to the NAT's public address goes to the live
//!   mapping with that external port if its source is admitted: any source (EIF), an
//!   address the mapping has sent to (ADF), or an address and port it has sent to (APDF).
//!   No such mapping, or not admitted: dropped.
//! - *When*: a packet is translated (mapping made or refreshed, destination noted for
//!   filtering) as it is sent, and a datagram reaching a NAT is looked up and filtered as it
//!   arrives, against the table as it stands then. So two peers that send to each other at
//!   the same instant each find the other's permission open when their packet gets there,
//!   which is what makes simultaneous hole punching work through real NATs.
//! - *Hairpinning*: a packet from behind a NAT to that NAT's own public address is, with
//!   [`NatConfig::hairpinning`], translated on the way out and then handled as inbound by
//!   the same NAT, so the receiver sees the sender's external endpoint (REQ-9); without it,
//!   dropped.
//! - *Streams*: a connection from behind a NAT takes a stream mapping (kept apart from the
//!   datagram mappings, from the same pool of ports) that does not expire while the
//!   simulator tracks the connection, and the acceptor's `peer` is the external endpoint.
//!   Connections to a NAT's public address are never forwarded: the SYN vanishes and the
//!   connect times out, as with a router that has no port forwarding. A SYN the sender's
//!   own NAT drops (table full, hairpinning off) times out the same way.
//! - *Links and partitions* are per pair of hosts, and a packet crossing the public realm
//!   takes the link, and meets the partitions, between its two public ends: each is a public
//!   host, or the NAT box of a host behind one. So to slow or cut the path between two
//!   hosts behind NATs, set it between their NAT boxes; a hairpinned packet takes the NAT's
//!   link to itself (the default link unless set).
//! - Every packet a NAT drops is recorded in the trace under the NAT's name with the reason:
//!   `filtered`, `no mapping`, `hairpinning off`, `mapping table full` or `no free port`.
//! - Not modelled: nested NAT (a NAT realm's gateway is always in the public realm), port
//!   forwarding, ICMP errors, a NAT reboot (crashing a NAT box does nothing), permissions
//!   that time out apart from their mapping, port-preserving allocation, and TCP hole
//!   punching.
//!
//! **Streams** model TCP between two hosts: reliable, ordered, with latency and jitter but
//! never reordered (each segment arrives at `max(previous arrival, now + latency +
//! jitter)`). Connect: the SYN takes one one-way delay to the acceptor's host, whose listener
//! calls `accept`; `Connected` reaches the initiator one one-way delay later. Nothing listening
//! on the port: `ConnectFailed(Refused)`. No host at the address: `ConnectFailed(Unreachable)`
//! at once. Host down, or SYN stuck behind a partition that does not heal in time:
//! `ConnectFailed(TimedOut)` after [`StreamConfig::connect_timeout`]; an attempt given up
//! (timed out or closed by the machine) before its SYN was accepted leaves no trace at the
//! acceptor. **A refused accept** looks as it does with a real kernel, which completes the
//! handshake before the application says no: the initiator sees `Connected`, then
//! `Closed(Reset)`. `Close` follows [`CloseHow`](crate::CloseHow): `HalfClose` sends a FIN
//! after the queued data and the peer gets `ReadClosed`; `Graceful` also flushes then FINs,
//! and the id is dead at once (data the peer sends afterwards is answered with a reset, as
//! a kernel does for a closed socket); `Abort` drops the queue and the peer gets
//! `Closed(Reset)` after the data already on the wire. Back-pressure: each direction has a
//! window ([`StreamConfig::window`]); `PauseReading` holds arriving bytes for that machine
//! (they count against the window); writes beyond the window queue at the sender, `Sent` is
//! reported as bytes enter the window, and a queue past [`StreamConfig::send_queue_cap`]
//! ends the connection with `Closed(SlowPeer)` for the writer and `Closed(Reset)` for the
//! reader, as the real driver does. A `Closed` from a reset is reported at once, even to a
//! paused reader (unread bytes are discarded, as `ECONNRESET` does).
//!
//! **Datagrams**: each is lost, duplicated, delayed and possibly held back (reordered) per
//! its [`LinkConfig`]; jitter alone reorders them too.
//!
//! **Partitions** ([`Sim::partition`], one-way or both ways) drop datagrams. Stream segments
//! that meet a partition are lost and retransmitted, in order, when it heals, like TCP
//! retransmission; acknowledgements wait likewise. If data stays stuck longer than
//! [`StreamConfig::partition_timeout`], both ends get `Closed(TimedOut)` (TCP's retry
//! limit, and the keepalive of the side that was not sending). A partition that carries no
//! stream traffic goes unnoticed, as with TCP.
//!
//! **Crash and restart.** [`Sim::crash`] drops the machine with everything it held; the
//! host's connections are reset as they would be by its kernel when a process dies: every
//! peer gets `Closed(Reset)` one one-way delay later, behind data already on the wire. While
//! down, the host answers nothing: connects to it time out, segments and datagrams to it
//! vanish. [`Sim::restart`] builds a new machine from the factory with a fresh seed; its
//! listeners and sockets are back at once. Segments for connections of the old life are
//! answered with a reset.
//!
//! **Not modelled:** bandwidth and congestion (only latency and windows), Nagle and delayed
//! acks, segment loss outside partitions, MTU and fragmentation, ICMP (a datagram to a port
//! with no socket vanishes), retransmission timers (a lost segment is resent exactly when
//! the partition heals), TIME_WAIT and port exhaustion, and DNS.
//!
//! # Scripting and checking a scenario
//!
//! Build hosts with [`Sim::add_host`] (or [`Sim::add_host_with`] and a [`HostSpec`], e.g.
//! to add a host down, set its links, and boot it later with [`Sim::restart`]); script
//! faults and app commands ahead with [`Sim::schedule`]; run with [`Sim::run_until`],
//! [`Sim::run_for`] or [`Sim::run_until_idle`]; then read what each machine reported with
//! [`Sim::events`] and inspect it with [`Sim::machine`]. [`Probe`] is a scripted machine
//! for poking at the network directly. [`check_seeds`] runs a scenario over many seeds and,
//! on failure, prints the seed and the `SWITCHYARD_SEED=<seed> cargo test ...` command
//! that replays it.
//!
//! # Caps
//!
//! Every buffer is bounded: stream windows and sender queues by [`StreamConfig`], the
//! trace tail and per-host event logs by [`NetConfig`] (oldest dropped), datagram size by
//! [`NetConfig::max_datagram`], NAT mapping tables by [`NatConfig::max_mappings`] (a packet
//! that needs one more mapping is dropped) and each mapping's list of peers by
//! [`NatConfig::PEERS_PER_MAPPING`] (the least recently contacted is forgotten), and the
//! event queue by the step limit. Machines bound everything else themselves.

mod config;
mod datagram;
mod error;
mod harness;
mod host;
mod link;
mod nat;
mod net;
mod probe;
mod queue;
mod stream;
mod trace;

#[cfg(test)]
mod tests;

pub use config::{NetConfig, StreamConfig};
pub use error::{ConfigError, HostDown, SimError};
pub use harness::{check_seeds, check_seeds_with, parse_seed, seed_from_env, TestId, SEED_ENV};
pub use host::{HostId, HostSpec};
pub use link::LinkConfig;
pub use nat::{NatConfig, NatFiltering, NatMapping, PortAllocation};
pub use net::{Cut, RealmId};
pub use probe::{Probe, ProbeEvent};

use crate::env::Env;
use crate::id::{ConnId, ListenerId, SocketId};
use crate::machine::{Input, Machine, NetError, Output};
use crate::rng::Rng;
use crate::time::Instant;
use datagram::DatagramInFlight;
use host::{EventLog, Host};
use net::Network;
use queue::EventQueue;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use stream::{StreamEvent, Streams};
use trace::{describe_input, describe_output, Trace};

/// Something scheduled with [`Sim::schedule`].
type Action = Box<dyn FnOnce(&mut Sim)>;

/// The deterministic network simulator. See the [module documentation](self) for the
/// model and an example.
pub struct Sim {
    seed: u64,
    now: Instant,
    rng: Rng,
    config: NetConfig,
    queue: EventQueue<Event>,
    steps: u64,
    hosts: Vec<Host>,
    names: BTreeMap<String, HostId>,
    net: Network,
    streams: Streams,
    trace: Trace,
    /// The first contract violation; sticky, returned by every later `run_*`.
    fault: Option<SimError>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("steps", &self.steps)
            .field("hosts", &self.names.keys().collect::<Vec<_>>())
            .field("pending_events", &self.queue.len())
            .field("open_streams", &self.streams.len())
            .field("fault", &self.fault)
            .finish_non_exhaustive()
    }
}

enum Event {
    Action(Action),
    Timer {
        host: HostId,
        incarnation: u64,
        deadline: Instant,
    },
    /// An input the simulator decided on while the machine was being drained, delivered
    /// as its own step so no machine is re-entered.
    Notify {
        host: HostId,
        incarnation: u64,
        conn: ConnId,
        notice: Notice,
    },
    /// The answer to an `Output::Listen`, delivered as its own step.
    Listened {
        host: HostId,
        incarnation: u64,
        listener: ListenerId,
        result: Result<SocketAddr, NetError>,
    },
    Stream(StreamEvent),
    Datagram(DatagramInFlight),
}

enum Notice {
    ConnectFailed(NetError),
    Closed(NetError),
}

/// The host name trace lines about the network as a whole carry.
const NET: &str = "net";

impl Sim {
    /// An empty simulation at virtual time zero whose every random choice follows `seed`.
    pub fn new(seed: u64, config: NetConfig) -> Sim {
        Sim {
            seed,
            now: Instant::ZERO,
            rng: Rng::new(seed),
            queue: EventQueue::new(),
            steps: 0,
            hosts: Vec::new(),
            names: BTreeMap::new(),
            net: Network::new(config.link.clone()),
            streams: Streams::default(),
            trace: Trace::new(config.trace_tail),
            fault: None,
            config,
        }
    }

    /// The seed this simulation runs on.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// A generator for the scenario's own random choices (how many clients, when to crash),
    /// drawn from the simulation's, so the one seed decides those too.
    pub fn fork_rng(&mut self) -> Rng {
        self.rng.fork()
    }

    // --- Building the network --------------------------------------------------------

    /// A new private address space with no way out: its hosts reach each other and
    /// nothing else, and nothing outside reaches them (an isolated LAN). For a LAN behind a
    /// NAT, use [`Sim::add_nat`].
    pub fn add_realm(&mut self, name: &str) -> RealmId {
        self.net.add_realm(name)
    }

    /// Adds a NAT box called `name` at `public_ip` in the public realm, and returns the new
    /// private realm behind it: put hosts there with [`HostSpec::realm`]. Their packets to
    /// addresses outside the realm leave through the NAT, translated and filtered as
    /// `config` says (see the [module documentation](self), "NAT boxes").
    ///
    /// The NAT box is itself a host named `name` ([`Sim::host`] finds it), so links and
    /// partitions between it and public hosts apply to everything it forwards. It runs no
    /// machine of its own and does not crash. Fails if the name is taken or a public host
    /// already has `public_ip`.
    ///
    /// ```
    /// use switchyard_core::sim::{HostSpec, NatConfig, NetConfig, Probe, Sim};
    ///
    /// let mut sim = Sim::new(1, NetConfig::default());
    /// let home = sim.add_nat("home-router", [203, 0, 113, 1].into(), NatConfig::default()).unwrap();
    /// let laptop = HostSpec::new("laptop", [192, 168, 1, 10].into()).realm(home);
    /// sim.add_host_with(laptop, |env, _| Probe::new(env)).unwrap();
    /// assert_eq!(sim.nat_mappings(home), 0);
    /// ```
    pub fn add_nat(&mut self, name: &str, public_ip: IpAddr, config: NatConfig) -> Result<RealmId, ConfigError> {
        let host = self.add_host(name, public_ip, |_, _| nat::NatBox)?;
        Ok(self.net.add_nat(name, host, public_ip, config))
    }

    /// How many mappings the NAT in front of `realm` holds now (datagram mappings whose
    /// timeout has not passed, and those of open streams); 0 for a realm without a NAT.
    pub fn nat_mappings(&self, realm: RealmId) -> usize {
        self.net.nat_mappings(realm, self.now)
    }

    /// Adds a host called `name` at `ip` in the public realm and boots it: `factory` builds
    /// its machine now, and again on every [`Sim::restart`].
    ///
    /// The factory gets an [`Env`] seeded from the simulation and the current time. The
    /// machine's events (`M::Event`) are kept for [`Sim::events`].
    pub fn add_host<M, F>(&mut self, name: &str, ip: IpAddr, factory: F) -> Result<HostId, ConfigError>
    where
        M: Machine + 'static,
        M::Event: Debug + 'static,
        F: FnMut(Env, Instant) -> M + 'static,
    {
        self.add_host_with(HostSpec::new(name, ip), factory)
    }

    /// Adds a host as `spec` describes (realm, booted or down). See [`Sim::add_host`].
    pub fn add_host_with<M, F>(&mut self, spec: HostSpec, factory: F) -> Result<HostId, ConfigError>
    where
        M: Machine + 'static,
        M::Event: Debug + 'static,
        F: FnMut(Env, Instant) -> M + 'static,
    {
        if self.names.contains_key(&spec.name) {
            return Err(ConfigError::NameInUse(spec.name));
        }
        if !self.net.has_realm(spec.realm) {
            return Err(ConfigError::UnknownRealm(spec.realm));
        }
        let id = HostId(self.hosts.len());
        if !self.net.claim(spec.realm, spec.ip, id) {
            let realm = self.net.realm_name(spec.realm).to_owned();
            return Err(ConfigError::AddressInUse { realm, ip: spec.ip });
        }
        let boot = spec.up;
        self.names.insert(spec.name.clone(), id);
        let machine = host::hosted(Box::new(factory), self.config.event_log_cap);
        self.hosts.push(Host::new(spec, machine));
        if boot {
            self.restart(id);
        }
        Ok(id)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Option<HostId> {
        self.names.get(name).copied()
    }

    /// The host's name.
    pub fn name(&self, host: HostId) -> &str {
        &self.hosts[host.0].name
    }

    /// The host's IP address.
    pub fn ip(&self, host: HostId) -> IpAddr {
        self.hosts[host.0].ip
    }

    /// True unless the host has crashed (or was added down) and not been restarted.
    pub fn is_up(&self, host: HostId) -> bool {
        self.hosts[host.0].up
    }

    /// Opens a stream listener on `port` (0: an ephemeral port) that hands connections to
    /// the host's machine as `listener`. Returns the address to connect to. Listeners are
    /// host configuration: they survive crashes and are back on restart.
    pub fn listen(&mut self, host: HostId, listener: ListenerId, port: u16) -> Result<SocketAddr, ConfigError> {
        let h = &mut self.hosts[host.0];
        if h.listeners.values().any(|&l| l == listener) {
            return Err(ConfigError::ListenerInUse { host: h.name.clone(), listener: listener.0 });
        }
        let port = Self::claim_port(h, port)?;
        h.listeners.insert(port, listener);
        Ok(h.addr(port))
    }

    /// Binds UDP socket `socket` to `port` (0: an ephemeral port). Returns its address.
    /// Sockets are host configuration: they survive crashes.
    pub fn bind_udp(&mut self, host: HostId, socket: SocketId, port: u16) -> Result<SocketAddr, ConfigError> {
        let h = &mut self.hosts[host.0];
        if h.sockets.contains_key(&socket) {
            return Err(ConfigError::SocketInUse { host: h.name.clone(), socket: socket.0 });
        }
        let port = Self::claim_port(h, port)?;
        h.sockets.insert(socket, port);
        Ok(h.addr(port))
    }

    fn claim_port(h: &mut Host, port: u16) -> Result<u16, ConfigError> {
        if port == 0 {
            return Ok(h.ephemeral_port());
        }
        if h.port_in_use(port) {
            return Err(ConfigError::PortInUse { host: h.name.clone(), port });
        }
        Ok(port)
    }

    /// Sets the link between `a` and `b`, in both directions.
    pub fn set_link(&mut self, a: HostId, b: HostId, link: LinkConfig) {
        self.net.set_link(a, b, link.clone());
        self.net.set_link(b, a, link);
    }

    /// Sets the link for packets from `from` to `to` only.
    pub fn set_link_one_way(&mut self, from: HostId, to: HostId, link: LinkConfig) {
        self.net.set_link(from, to, link);
    }

    // --- Faults ----------------------------------------------------------------------

    /// Cuts the path from `a` to `b` ([`Cut::OneWay`]) or both ways. See the
    /// [module documentation](self) for what happens to traffic.
    pub fn partition(&mut self, a: HostId, b: HostId, cut: Cut) {
        self.net.set_blocked(a, b, cut, true);
        let what = format!("partition {} -> {} {cut:?}", self.name(a), self.name(b));
        self.trace.record(self.now, NET, &what, &[]);
    }

    /// Restores the path from `a` to `b` ([`Cut::OneWay`]) or both ways; held stream
    /// traffic is retransmitted.
    pub fn heal(&mut self, a: HostId, b: HostId, cut: Cut) {
        self.net.set_blocked(a, b, cut, false);
        let what = format!("heal {} -> {} {cut:?}", self.name(a), self.name(b));
        self.trace.record(self.now, NET, &what, &[]);
        self.streams_unstall();
    }

    /// Removes every partition.
    pub fn heal_all(&mut self) {
        self.net.clear_blocked();
        self.trace.record(self.now, NET, "heal all", &[]);
        self.streams_unstall();
    }

    /// Crashes the host: its machine is dropped, its connections are reset (peers get
    /// `Closed(Reset)` one one-way delay later) and it answers nothing until
    /// [`Sim::restart`]. Crashing a host that is down, or a NAT box, does nothing.
    pub fn crash(&mut self, host: HostId) {
        if !self.hosts[host.0].up {
            return;
        }
        if self.net.is_nat(host) {
            // A NAT reboot (losing its table) is not modelled; say so in the trace.
            return self.record(host, "crash ignored: NAT boxes do not crash", &[]);
        }
        self.record(host, "crash", &[]);
        self.streams_crash(host);
        let h = &mut self.hosts[host.0];
        h.machine.stop();
        for port in std::mem::take(&mut h.machine_listeners) {
            h.listeners.remove(&port);
        }
        h.up = false;
        h.incarnation += 1;
        h.timer = None;
    }

    /// Boots a host that is down: a new machine from its factory, with a fresh seed drawn
    /// from the simulation. Its listeners and sockets work again at once. Restarting a host
    /// that is up does nothing.
    pub fn restart(&mut self, host: HostId) {
        if self.hosts[host.0].up {
            return;
        }
        let env = Env::new(self.rng.next_u64());
        let h = &mut self.hosts[host.0];
        h.up = true;
        h.machine.start(env, self.now);
        self.record(host, "boot", &[]);
        self.settle(host);
    }

    // --- Scripting and app commands ---------------------------------------------------

    /// Runs `action` at virtual time `at` (or now, if `at` has passed): a crash, a heal,
    /// an app command through [`Sim::with_machine`], a new host, anything.
    pub fn schedule(&mut self, at: Instant, action: impl FnOnce(&mut Sim) + 'static) {
        self.queue.push(at.max(self.now), Event::Action(Box::new(action)));
    }

    /// Calls `f` with the host's machine and the current time (for app commands such as
    /// `LineClient::send_line`), then drains the machine as the contract requires.
    ///
    /// # Panics
    ///
    /// If the host's machine is not an `M`.
    pub fn with_machine<M, R>(&mut self, host: HostId, f: impl FnOnce(&mut M, Instant) -> R) -> Result<R, HostDown>
    where
        M: Machine + 'static,
    {
        let now = self.now;
        let h = &mut self.hosts[host.0];
        let actual = h.machine.machine_type();
        let Some(machine) = h.machine.machine_mut() else { return Err(HostDown(h.name.clone())) };
        let Some(machine) = machine.downcast_mut::<M>() else {
            panic!("host {} runs {actual}, not {}", h.name, std::any::type_name::<M>());
        };
        let result = f(machine, now);
        self.record(host, "app command", &[]);
        self.settle(host);
        Ok(result)
    }

    /// Tells the host's machine that its wall clock now reads `unix_micros` (microseconds
    /// since 1970 UTC), as a driver does when the system clock jumps (a suspended host, a
    /// clock set by hand), then drains it. Virtual time does not move.
    pub fn set_wall_clock(&mut self, host: HostId, unix_micros: i128) -> Result<(), HostDown> {
        let now = self.now;
        let h = &mut self.hosts[host.0];
        if h.machine.machine().is_none() {
            return Err(HostDown(h.name.clone()));
        }
        h.machine.handle_wall_clock(now, unix_micros);
        self.record(host, "wall clock", unix_micros.to_string().as_bytes());
        self.settle(host);
        Ok(())
    }

    /// The host's machine, to inspect its state. Use [`Sim::with_machine`] to change it.
    ///
    /// # Panics
    ///
    /// If the host's machine is not an `M`.
    pub fn machine<M: Machine + 'static>(&self, host: HostId) -> Result<&M, HostDown> {
        let h = &self.hosts[host.0];
        let Some(machine) = h.machine.machine() else { return Err(HostDown(h.name.clone())) };
        match machine.downcast_ref::<M>() {
            Some(machine) => Ok(machine),
            None => panic!("host {} runs {}, not {}", h.name, h.machine.machine_type(), std::any::type_name::<M>()),
        }
    }

    /// The events the host's machines have emitted (across restarts), oldest first, with
    /// the time of each. The log keeps the last [`NetConfig::event_log_cap`] entries.
    ///
    /// # Panics
    ///
    /// If `E` is not the event type of the host's machine.
    pub fn events<E: 'static>(&self, host: HostId) -> impl Iterator<Item = (Instant, &E)> + '_ {
        self.log::<E>(host).entries.iter().map(|(at, event)| (*at, event))
    }

    /// Takes the events logged so far out of the log, leaving it empty.
    ///
    /// # Panics
    ///
    /// If `E` is not the event type of the host's machine.
    pub fn take_events<E: 'static>(&mut self, host: HostId) -> Vec<(Instant, E)> {
        let h = &mut self.hosts[host.0];
        let (name, actual) = (&h.name, h.machine.machine_type());
        match h.machine.log_mut().downcast_mut::<EventLog<E>>() {
            Some(log) => log.entries.drain(..).collect(),
            None => panic!("host {name} runs {actual}, whose events are not {}", std::any::type_name::<E>()),
        }
    }

    /// How many events the host's log dropped because it was full.
    ///
    /// # Panics
    ///
    /// If `E` is not the event type of the host's machine.
    pub fn events_dropped<E: 'static>(&self, host: HostId) -> u64 {
        self.log::<E>(host).dropped
    }

    fn log<E: 'static>(&self, host: HostId) -> &EventLog<E> {
        let h = &self.hosts[host.0];
        match h.machine.log().downcast_ref::<EventLog<E>>() {
            Some(log) => log,
            None => panic!(
                "host {} runs {}, whose events are not {}",
                h.name,
                h.machine.machine_type(),
                std::any::type_name::<E>()
            ),
        }
    }

    // --- Running -----------------------------------------------------------------------

    /// Processes one event. `Ok(false)` when nothing is scheduled.
    pub fn step(&mut self) -> Result<bool, SimError> {
        self.check()?;
        let Some(at) = self.queue.next_time() else { return Ok(false) };
        if self.steps >= self.config.max_steps {
            return Err(SimError::StepLimit { steps: self.steps, at });
        }
        let Some((at, event)) = self.queue.pop() else { return Ok(false) };
        self.steps += 1;
        self.now = self.now.max(at);
        self.handle(event);
        self.check()?;
        Ok(true)
    }

    /// Runs every event due at or before `deadline`, then sets the clock to `deadline`.
    pub fn run_until(&mut self, deadline: Instant) -> Result<(), SimError> {
        while self.queue.next_time().is_some_and(|at| at <= deadline) {
            self.step()?;
        }
        self.check()?;
        self.now = self.now.max(deadline);
        Ok(())
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) -> Result<(), SimError> {
        self.run_until(self.now + duration)
    }

    /// Runs until nothing is scheduled. A machine with a periodic timer is never idle: the
    /// step limit ends such a run, so prefer [`Sim::run_until`] for those.
    pub fn run_until_idle(&mut self) -> Result<(), SimError> {
        while self.step()? {}
        Ok(())
    }

    fn check(&self) -> Result<(), SimError> {
        match &self.fault {
            Some(fault) => Err(fault.clone()),
            None => Ok(()),
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Action(action) => action(self),
            Event::Timer { host, incarnation, deadline } => self.on_timer(host, incarnation, deadline),
            Event::Notify { host, incarnation, conn, notice } => {
                if self.hosts[host.0].incarnation == incarnation {
                    let input = match notice {
                        Notice::ConnectFailed(error) => Input::ConnectFailed { conn, error },
                        Notice::Closed(reason) => Input::Closed { conn, reason },
                    };
                    self.deliver(host, input);
                }
            }
            Event::Listened { host, incarnation, listener, result } => {
                if self.hosts[host.0].incarnation == incarnation {
                    self.deliver(host, Input::Listened { listener, result });
                }
            }
            Event::Stream(event) => self.on_stream_event(event),
            Event::Datagram(datagram) => self.datagram_arrives(datagram),
        }
    }

    // --- Observing ---------------------------------------------------------------------

    /// Events processed so far (what [`NetConfig::max_steps`] bounds).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Events scheduled and not yet run.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// A stable 64-bit hash (FNV-1a) of the trace: every input and output of every machine,
    /// payloads included, with its time and host, and every fault the network applied. Two
    /// runs with the same seed and scenario give the same hash, on any platform and Rust
    /// version.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// How many records the trace hash covers.
    pub fn trace_records(&self) -> u64 {
        self.trace.records()
    }

    /// The last [`NetConfig::trace_tail`] trace lines, one per line, for failure reports.
    pub fn trace_tail(&self) -> String {
        self.trace.tail()
    }

    /// Stream bytes the network holds right now: in sender queues, in flight, and waiting
    /// for paused readers. Bounded by the [`StreamConfig`] caps.
    pub fn buffered_bytes(&self) -> usize {
        self.streams.buffered_bytes()
    }

    /// Stream connections the simulator still tracks (at least one side open).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    // --- Driving machines --------------------------------------------------------------

    fn record(&mut self, host: HostId, what: &str, payload: &[u8]) {
        self.trace.record(self.now, &self.hosts[host.0].name, what, payload);
    }

    fn violation(&mut self, host: HostId, what: String) {
        self.record(host, &format!("contract violation: {what}"), &[]);
        if self.fault.is_none() {
            let host = self.hosts[host.0].name.clone();
            self.fault = Some(SimError::Contract { host, at: self.now, what });
        }
    }

    /// Gives `input` to the host's machine, then drains it.
    fn deliver(&mut self, host: HostId, input: Input<'_>) {
        let h = &mut self.hosts[host.0];
        if !h.up {
            return;
        }
        let (what, payload) = describe_input(&input);
        self.trace.record(self.now, &h.name, &what, payload);
        h.machine.handle_input(self.now, input);
        self.settle(host);
    }

    /// Rule 1 of the contract: carry out every output, then re-arm the timer.
    fn settle(&mut self, host: HostId) {
        while let Some(output) = self.hosts[host.0].machine.poll_output(self.now) {
            let (what, payload) = describe_output(&output);
            self.trace.record(self.now, &self.hosts[host.0].name, &what, payload);
            self.carry_out(host, output);
        }
        self.arm_timer(host);
    }

    /// Never calls a machine: every consequence for a machine is a later step, so a
    /// machine is never re-entered while it is being drained.
    fn carry_out(&mut self, host: HostId, output: Output<String>) {
        match output {
            Output::Connect { conn, to } => self.stream_connect(host, conn, to),
            Output::Write { conn, bytes } => self.stream_write(host, conn, bytes),
            Output::Close { conn, how } => self.stream_close(host, conn, how),
            Output::PauseReading { conn } => self.stream_pause(host, conn, true),
            Output::ResumeReading { conn } => self.stream_pause(host, conn, false),
            Output::Transmit { socket, to, bytes } => self.transmit(host, socket, to, bytes),
            Output::Listen { listener, addr } => self.machine_listen(host, listener, addr),
            Output::Unlisten { listener } => {
                let h = &mut self.hosts[host.0];
                let port = h.listeners.iter().find(|(_, &l)| l == listener);
                if let Some((&port, _)) = port {
                    h.listeners.remove(&port);
                    h.machine_listeners.remove(&port);
                }
            }
            Output::Event(_) => {}
        }
    }

    /// `Output::Listen`: binds as a kernel would (the host's own address or the wildcard;
    /// a port nothing holds), and answers in a step of its own.
    fn machine_listen(&mut self, host: HostId, listener: ListenerId, addr: SocketAddr) {
        let h = &mut self.hosts[host.0];
        let result = if !addr.ip().is_unspecified() && addr.ip() != h.ip {
            Err(NetError::Other(format!("cannot listen on {addr}: address not available")))
        } else if h.listeners.values().any(|&l| l == listener) {
            Err(NetError::Other(format!("listener {listener:?} is already open")))
        } else {
            match Self::claim_port(h, addr.port()) {
                Ok(port) => {
                    h.listeners.insert(port, listener);
                    h.machine_listeners.insert(port);
                    Ok(h.addr(port))
                }
                Err(_) => Err(NetError::Other(format!("cannot listen on {addr}: address already in use"))),
            }
        };
        let incarnation = h.incarnation;
        self.queue.push(self.now, Event::Listened { host, incarnation, listener, result });
    }

    /// Keeps one pending timer per host, for the machine's latest deadline.
    fn arm_timer(&mut self, host: HostId) {
        let h = &mut self.hosts[host.0];
        let deadline = h.machine.poll_timeout();
        if deadline == h.timer {
            return;
        }
        h.timer = deadline;
        // `Instant::MAX` is documented as a deadline that never fires.
        if let Some(deadline) = deadline.filter(|&d| d != Instant::MAX) {
            let event = Event::Timer { host, incarnation: h.incarnation, deadline };
            self.queue.push(deadline.max(self.now), event);
        }
    }

    fn on_timer(&mut self, host: HostId, incarnation: u64, deadline: Instant) {
        let h = &mut self.hosts[host.0];
        if !h.up || h.incarnation != incarnation || h.timer != Some(deadline) {
            return; // superseded by a later poll_timeout, or meant for an earlier life
        }
        h.timer = None;
        self.trace.record(self.now, &h.name, "timeout", &[]);
        h.machine.handle_timeout(self.now);
        self.settle(host);
    }
}
