//! Hosts: where machines run, and the type erasure that lets every host run a different
//! machine with a different event type.

use crate::env::Env;
use crate::id::{ConnId, ListenerId, SocketId};
use crate::machine::{Input, Machine, Output, Refusal};
use crate::time::Instant;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};

use super::net::RealmId;

/// A host in a [`Sim`](super::Sim), as returned by [`Sim::add_host`](super::Sim::add_host).
/// Only meaningful to the simulator that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub(super) usize);

/// How to add a host: its name, address, realm, and whether it boots at once.
///
/// ```
/// use switchyard_core::sim::HostSpec;
/// let spec = HostSpec::new("laptop", [192, 168, 1, 10].into()).down();
/// # let _ = spec;
/// ```
#[derive(Clone, Debug)]
pub struct HostSpec {
    pub(super) name: String,
    pub(super) ip: IpAddr,
    pub(super) realm: RealmId,
    pub(super) up: bool,
}

impl HostSpec {
    /// A host called `name` (unique in the simulation) at `ip` in the public realm, booted
    /// when added.
    pub fn new(name: impl Into<String>, ip: IpAddr) -> HostSpec {
        HostSpec { name: name.into(), ip, realm: RealmId::PUBLIC, up: true }
    }

    /// Puts the host in `realm` instead of the public one.
    pub fn realm(self, realm: RealmId) -> HostSpec {
        HostSpec { realm, ..self }
    }

    /// Adds the host switched off: its machine is first built by
    /// [`Sim::restart`](super::Sim::restart). Useful to configure its links before it
    /// sends anything, or to boot it at a scheduled time.
    pub fn down(self) -> HostSpec {
        HostSpec { up: false, ..self }
    }
}

/// One host: its configuration (which survives crashes) and its running machine.
pub(super) struct Host {
    pub(super) name: String,
    pub(super) realm: RealmId,
    pub(super) ip: IpAddr,
    pub(super) up: bool,
    /// Bumped on every crash, so that events meant for an earlier life are ignored.
    pub(super) incarnation: u64,
    /// The deadline a timer event is pending for, from the machine's `poll_timeout`.
    pub(super) timer: Option<Instant>,
    pub(super) listeners: BTreeMap<u16, ListenerId>,
    /// The ports of `listeners` the machine opened itself (`Output::Listen`): they belong to
    /// this life of the machine and close when it crashes.
    pub(super) machine_listeners: BTreeSet<u16>,
    pub(super) sockets: BTreeMap<SocketId, u16>,
    next_port: u16,
    pub(super) machine: Box<dyn HostedMachine>,
}

/// The first and last ephemeral ports, as IANA suggests.
const EPHEMERAL: (u16, u16) = (49152, 65535);

impl Host {
    pub(super) fn new(spec: HostSpec, machine: Box<dyn HostedMachine>) -> Host {
        Host {
            name: spec.name,
            realm: spec.realm,
            ip: spec.ip,
            up: false,
            incarnation: 0,
            timer: None,
            listeners: BTreeMap::new(),
            machine_listeners: BTreeSet::new(),
            sockets: BTreeMap::new(),
            next_port: EPHEMERAL.0,
            machine,
        }
    }

    pub(super) fn port_in_use(&self, port: u16) -> bool {
        self.listeners.contains_key(&port) || self.sockets.values().any(|&p| p == port)
    }

    /// A local port for an outgoing connection or an unnamed UDP socket: the next one in
    /// the ephemeral range that no listener or socket holds. Outgoing connections may share
    /// a port (the simulator tells them apart by connection id), so a long run never runs
    /// out.
    pub(super) fn ephemeral_port(&mut self) -> u16 {
        loop {
            let port = self.next_port;
            self.next_port = if port == EPHEMERAL.1 { EPHEMERAL.0 } else { port + 1 };
            if !self.port_in_use(port) {
                return port;
            }
        }
    }

    pub(super) fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }
}

/// A machine with its event type erased, plus the factory that rebuilds it after a crash
/// and the log of its events.
pub(super) trait HostedMachine {
    fn start(&mut self, env: Env, now: Instant);
    fn stop(&mut self);
    /// [`Machine::accept_at`]: `at` is the listener's address on the host.
    fn accept(&mut self, now: Instant, id: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal>;
    fn handle_input(&mut self, now: Instant, input: Input<'_>);
    fn handle_timeout(&mut self, now: Instant);
    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128);
    /// The next output, with an event logged (stamped `now`) and rendered for the trace.
    fn poll_output(&mut self, now: Instant) -> Option<Output<String>>;
    /// `None` while the host is down.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The machine as `&M`, for downcasting; `None` while the host is down.
    fn machine(&self) -> Option<&dyn Any>;
    /// The machine as `&mut M`, for downcasting; `None` while the host is down.
    fn machine_mut(&mut self) -> Option<&mut dyn Any>;
    fn machine_type(&self) -> &'static str;
    /// The [`EventLog`] of the machine's event type, for downcasting.
    fn log(&self) -> &dyn Any;
    fn log_mut(&mut self) -> &mut dyn Any;
}

/// The events one host's machines emitted, across restarts, oldest first.
///
/// Capped at [`NetConfig::event_log_cap`](super::NetConfig::event_log_cap) entries; past
/// it the oldest entry is dropped (and counted), so a long run cannot grow it without bound.
pub(super) struct EventLog<E> {
    pub(super) entries: VecDeque<(Instant, E)>,
    cap: usize,
    pub(super) dropped: u64,
}

impl<E> EventLog<E> {
    fn push(&mut self, at: Instant, event: E) {
        if self.cap == 0 {
            self.dropped += 1;
            return;
        }
        if self.entries.len() == self.cap {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back((at, event));
    }
}

pub(super) type Factory<M> = Box<dyn FnMut(Env, Instant) -> M>;

struct Hosted<M: Machine> {
    factory: Factory<M>,
    machine: Option<M>,
    log: EventLog<M::Event>,
}

/// Wraps a factory so the simulator can run its machines beside machines of other types.
pub(super) fn hosted<M>(factory: Factory<M>, log_cap: usize) -> Box<dyn HostedMachine>
where
    M: Machine + 'static,
    M::Event: Debug + 'static,
{
    Box::new(Hosted { factory, machine: None, log: EventLog { entries: VecDeque::new(), cap: log_cap, dropped: 0 } })
}

impl<M> Hosted<M>
where
    M: Machine,
{
    fn running(&mut self) -> &mut M {
        // The simulator only calls a machine on a host that is up.
        self.machine.as_mut().expect("simulator called the machine of a host that is down")
    }
}

impl<M> HostedMachine for Hosted<M>
where
    M: Machine + 'static,
    M::Event: Debug + 'static,
{
    fn start(&mut self, env: Env, now: Instant) {
        self.machine = Some((self.factory)(env, now));
    }

    fn stop(&mut self) {
        self.machine = None;
    }

    fn accept(&mut self, now: Instant, id: ListenerId, peer: SocketAddr, at: SocketAddr) -> Result<ConnId, Refusal> {
        self.running().accept_at(now, id, peer, at)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.running().handle_input(now, input)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.running().handle_timeout(now)
    }

    fn handle_wall_clock(&mut self, now: Instant, unix_micros: i128) {
        self.running().handle_wall_clock(now, unix_micros)
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output<String>> {
        let output = self.machine.as_mut()?.poll_output()?;
        Some(output.map_event(|event| {
            let text = format!("{event:?}");
            self.log.push(now, event);
            text
        }))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.machine.as_ref()?.poll_timeout()
    }

    fn machine(&self) -> Option<&dyn Any> {
        self.machine.as_ref().map(|m| m as &dyn Any)
    }

    fn machine_mut(&mut self) -> Option<&mut dyn Any> {
        self.machine.as_mut().map(|m| m as &mut dyn Any)
    }

    fn machine_type(&self) -> &'static str {
        std::any::type_name::<M>()
    }

    fn log(&self) -> &dyn Any {
        &self.log
    }

    fn log_mut(&mut self) -> &mut dyn Any {
        &mut self.log
    }
}
