//! NAT boxes after RFC 4787: how one NAT is configured, its mapping table, and the
//! translation and filtering it applies to each packet.
//!
//! [`Network`](super::net::Network) decides *when* a NAT is consulted (outbound when a
//! packet is sent, inbound when it arrives); this module decides *what* the NAT does. The
//! model is described in the [`sim`](super) module documentation ("NAT boxes").

use super::host::HostId;
use crate::id::{ConnId, ListenerId};
use crate::machine::{Input, Machine, Output, Refusal};
use crate::rng::Rng;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Which outbound packets share one external endpoint (RFC 4787 §4.1).
///
/// A mapping is made for an internal endpoint (private address and port) the first time it
/// sends out of the realm; this says which later packets from that endpoint reuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatMapping {
    /// EIM: one mapping per internal endpoint, whatever the destination. Every peer sees
    /// the same external endpoint, so an address learned from a server works for others.
    EndpointIndependent,
    /// ADM: one mapping per internal endpoint and destination IP address.
    AddressDependent,
    /// APDM: one mapping per internal endpoint and destination IP address and port (the
    /// "symmetric NAT").
    AddressAndPortDependent,
}

/// Which inbound packets a mapping lets through (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatFiltering {
    /// EIF: any source may send to the mapping's external endpoint.
    EndpointIndependent,
    /// ADF: only sources whose IP address the mapping has sent to.
    AddressDependent,
    /// APDF: only sources (IP address and port) the mapping has sent to.
    AddressAndPortDependent,
}

/// How a NAT chooses the external port of a new mapping. Either way it never hands out a
/// port held by a live mapping; when every port of the range is held, the packet that
/// needed a new mapping is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortAllocation {
    /// The next free port counting up from where the last allocation stopped, starting at
    /// the first port of [`PortAllocation::range`] and wrapping within it: consecutive new
    /// mappings get consecutive ports, which is what port prediction relies on.
    Sequential,
    /// A port drawn from the simulation's seeded generator, uniform over
    /// [`PortAllocation::range`] (the next free one up if that port is held): unpredictable
    /// to peers, yet the same for the same seed.
    Random,
}

impl PortAllocation {
    /// The external ports this policy hands out: `20000..=65535` for `Sequential`,
    /// `1024..=65535` for `Random`.
    pub const fn range(self) -> RangeInclusive<u16> {
        match self {
            PortAllocation::Sequential => 20000..=65535,
            PortAllocation::Random => 1024..=65535,
        }
    }
}

/// How a NAT box behaves; give it to [`Sim::add_nat`](super::Sim::add_nat).
///
/// `NatConfig::default()` is a common home router: endpoint-independent mapping,
/// address-and-port-dependent filtering ("EIM/APDF"), sequential ports, a two-minute
/// mapping timeout (RFC 4787 REQ-5's minimum), no hairpinning, and at most 4096 mappings.
///
/// ```
/// use std::time::Duration;
/// use switchyard_core::sim::{NatConfig, NatFiltering, NatMapping};
///
/// let symmetric = NatConfig::new(NatMapping::AddressAndPortDependent, NatFiltering::AddressAndPortDependent)
///     .with_timeout(Duration::from_secs(30));
/// assert_eq!(symmetric.to_string(), "APDM/APDF");
/// ```
///
/// Each mapping also remembers the remote endpoints it has sent to, which is what ADF and
/// APDF filter against; it keeps the [`NatConfig::PEERS_PER_MAPPING`] most recently
/// contacted and forgets the least recent one beyond that (closing its permission).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Which outbound packets share an external endpoint.
    pub mapping: NatMapping,
    /// Which inbound packets a mapping admits.
    pub filtering: NatFiltering,
    /// How a new mapping's external port is chosen.
    pub ports: PortAllocation,
    /// How long a datagram mapping lives after the last outbound packet that used it.
    /// Inbound packets do not extend it. A mapping whose timeout has passed is gone: its
    /// port is free again and the next outbound packet makes a new mapping.
    pub mapping_timeout: Duration,
    /// Whether a host behind the NAT can reach another host behind it through the NAT's
    /// public address (RFC 4787 REQ-9). When false such packets are dropped.
    pub hairpinning: bool,
    /// Most live mappings (datagram and stream) at once. A packet that needs a new mapping
    /// when the table is full is dropped; existing mappings keep working.
    pub max_mappings: usize,
}

impl NatConfig {
    /// How many remote endpoints each mapping remembers for filtering; beyond it the least
    /// recently contacted is forgotten.
    pub const PEERS_PER_MAPPING: usize = 64;

    /// The default configuration with the given mapping and filtering behaviours.
    pub fn new(mapping: NatMapping, filtering: NatFiltering) -> NatConfig {
        NatConfig { mapping, filtering, ..NatConfig::default() }
    }

    /// The same configuration with another port allocation policy.
    pub fn with_ports(self, ports: PortAllocation) -> NatConfig {
        NatConfig { ports, ..self }
    }

    /// The same configuration with another mapping timeout.
    pub fn with_timeout(self, mapping_timeout: Duration) -> NatConfig {
        NatConfig { mapping_timeout, ..self }
    }

    /// The same configuration with hairpinning on or off.
    pub fn with_hairpinning(self, hairpinning: bool) -> NatConfig {
        NatConfig { hairpinning, ..self }
    }

    /// The same configuration with another cap on live mappings.
    pub fn with_max_mappings(self, max_mappings: usize) -> NatConfig {
        NatConfig { max_mappings, ..self }
    }
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            mapping: NatMapping::EndpointIndependent,
            filtering: NatFiltering::AddressAndPortDependent,
            ports: PortAllocation::Sequential,
            mapping_timeout: Duration::from_secs(120),
            hairpinning: false,
            max_mappings: 4096,
        }
    }
}

/// The behaviours in the usual shorthand, such as `EIM/APDF`, for test messages.
impl fmt::Display for NatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mapping = match self.mapping {
            NatMapping::EndpointIndependent => "EIM",
            NatMapping::AddressDependent => "ADM",
            NatMapping::AddressAndPortDependent => "APDM",
        };
        let filtering = match self.filtering {
            NatFiltering::EndpointIndependent => "EIF",
            NatFiltering::AddressDependent => "ADF",
            NatFiltering::AddressAndPortDependent => "APDF",
        };
        write!(f, "{mapping}/{filtering}")
    }
}

/// Why a NAT dropped a packet; the words go into the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NatDrop {
    /// Inbound: the mapping exists but the source is not admitted by the filtering.
    Filtered,
    /// Inbound: no live mapping has that external port.
    NoMapping,
    /// Outbound to the NAT's own public address with hairpinning off.
    HairpinningOff,
    /// Outbound: a new mapping was needed and `max_mappings` are live.
    TableFull,
    /// Outbound: a new mapping was needed and every port of the range is held.
    NoFreePort,
}

impl fmt::Display for NatDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatDrop::Filtered => "filtered",
            NatDrop::NoMapping => "no mapping",
            NatDrop::HairpinningOff => "hairpinning off",
            NatDrop::TableFull => "mapping table full",
            NatDrop::NoFreePort => "no free port",
        })
    }
}

/// Which kind of traffic a mapping serves. Datagram and stream mappings are separate, as
/// UDP and TCP mappings are in a real NAT, but draw from one pool of external ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Proto {
    Datagram,
    Stream,
}

/// A mapping, named so an open stream can release the one it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct MappingId(u64);

/// The part of the destination a mapping is specific to, per [`NatMapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Remote {
    Any,
    Ip(IpAddr),
    Endpoint(SocketAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    proto: Proto,
    internal: SocketAddr,
    remote: Remote,
}

struct Mapping {
    key: Key,
    host: HostId,
    port: u16,
    /// Open streams holding the mapping. While any do it never expires, and it is absent
    /// from the expiry index.
    streams: usize,
    expires: Instant,
    /// Remote endpoints sent to, with when; bounded by `NatConfig::PEERS_PER_MAPPING`.
    peers: BTreeMap<SocketAddr, Instant>,
}

/// One NAT box: its configuration and its mapping table.
///
/// The table holds at most `max_mappings` live mappings (a new one beyond that is refused)
/// and each mapping at most `PEERS_PER_MAPPING` peers (least recent forgotten). Dead
/// mappings are removed lazily, before every lookup, through an index ordered by expiry.
pub(super) struct Nat {
    pub(super) public_ip: IpAddr,
    pub(super) config: NatConfig,
    next_id: u64,
    /// Where the next sequential allocation starts looking.
    next_port: u16,
    mappings: BTreeMap<u64, Mapping>,
    by_key: BTreeMap<Key, u64>,
    by_port: BTreeMap<u16, u64>,
    expiry: BTreeSet<(Instant, u64)>,
}

impl Nat {
    pub(super) fn new(public_ip: IpAddr, config: NatConfig) -> Nat {
        Nat {
            public_ip,
            next_id: 0,
            next_port: *config.ports.range().start(),
            config,
            mappings: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_port: BTreeMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    /// Mappings alive at `now`. Takes `&self`, so it counts what `expire` would keep.
    pub(super) fn live(&self, now: Instant) -> usize {
        self.mappings.len() - self.expiry.range(..=(now, u64::MAX)).count()
    }

    /// Translates a packet from `internal` (on `host`) to `remote`: finds or makes the
    /// mapping, refreshes its timer and, for a datagram, remembers `remote` for filtering;
    /// a stream holds the mapping until [`Nat::release`]. Returns the external port.
    pub(super) fn outbound(
        &mut self,
        proto: Proto,
        (host, internal): (HostId, SocketAddr),
        remote: SocketAddr,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<(u16, MappingId), NatDrop> {
        self.expire(now);
        let key = Key {
            proto,
            internal,
            remote: match self.config.mapping {
                NatMapping::EndpointIndependent => Remote::Any,
                NatMapping::AddressDependent => Remote::Ip(remote.ip()),
                NatMapping::AddressAndPortDependent => Remote::Endpoint(remote),
            },
        };
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => self.create(key, host, rng)?,
        };
        let m = self.mappings.get_mut(&id).expect("indexed mappings exist");
        if m.streams == 0 {
            self.expiry.remove(&(m.expires, id));
        }
        // RFC 4787 REQ-6: outbound traffic refreshes the mapping.
        m.expires = now + self.config.mapping_timeout;
        match proto {
            Proto::Stream => m.streams += 1,
            Proto::Datagram => remember(&mut m.peers, remote, now),
        }
        if m.streams == 0 {
            self.expiry.insert((m.expires, id));
        }
        Ok((m.port, MappingId(id)))
    }

    /// A stream that held the mapping is gone; the mapping's timeout starts now.
    pub(super) fn release(&mut self, mapping: MappingId, now: Instant) {
        let id = mapping.0;
        let Some(m) = self.mappings.get_mut(&id) else { return };
        m.streams = m.streams.saturating_sub(1);
        if m.streams == 0 {
            m.expires = now + self.config.mapping_timeout;
            self.expiry.insert((m.expires, id));
        }
    }

    /// Where a datagram from `from` to external `port` goes, if the filtering admits it.
    /// Inbound packets leave the mapping's timer alone: a flood from outside must not keep
    /// a mapping open that the host behind the NAT has stopped using.
    pub(super) fn inbound(&mut self, port: u16, from: SocketAddr, now: Instant) -> Result<(HostId, u16), NatDrop> {
        self.expire(now);
        let m = self
            .by_port
            .get(&port)
            .and_then(|id| self.mappings.get(id))
            .filter(|m| m.key.proto == Proto::Datagram)
            .ok_or(NatDrop::NoMapping)?;
        let admitted = match self.config.filtering {
            NatFiltering::EndpointIndependent => true,
            NatFiltering::AddressDependent => m.peers.keys().any(|peer| peer.ip() == from.ip()),
            NatFiltering::AddressAndPortDependent => m.peers.contains_key(&from),
        };
        if admitted {
            Ok((m.host, m.key.internal.port()))
        } else {
            Err(NatDrop::Filtered)
        }
    }

    fn create(&mut self, key: Key, host: HostId, rng: &mut Rng) -> Result<u64, NatDrop> {
        if self.mappings.len() >= self.config.max_mappings {
            return Err(NatDrop::TableFull);
        }
        let port = self.allocate(rng).ok_or(NatDrop::NoFreePort)?;
        let id = self.next_id;
        self.next_id += 1;
        let mapping = Mapping { key, host, port, streams: 0, expires: Instant::ZERO, peers: BTreeMap::new() };
        self.mappings.insert(id, mapping);
        self.by_key.insert(key, id);
        self.by_port.insert(port, id);
        Ok(id)
    }

    /// A port no live mapping holds, per the allocation policy; `None` if all are held.
    fn allocate(&mut self, rng: &mut Rng) -> Option<u16> {
        let range = self.config.ports.range();
        let (first, last) = (*range.start(), *range.end());
        let start = match self.config.ports {
            PortAllocation::Sequential => self.next_port,
            PortAllocation::Random => {
                u16::try_from(rng.range_inclusive(u64::from(first), u64::from(last))).unwrap_or(first)
            }
        };
        let after = |port: u16| if port >= last { first } else { port + 1 };
        let mut port = start;
        for _ in range {
            if !self.by_port.contains_key(&port) {
                self.next_port = after(port);
                return Some(port);
            }
            port = after(port);
        }
        None
    }

    /// Removes every mapping whose timeout has passed, freeing its port.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(m) = self.mappings.remove(&id) {
                self.by_key.remove(&m.key);
                self.by_port.remove(&m.port);
            }
        }
    }
}

/// Notes that the mapping sent to `remote`, forgetting the least recently contacted peer
/// (other than `remote`) when over the cap.
fn remember(peers: &mut BTreeMap<SocketAddr, Instant>, remote: SocketAddr, now: Instant) {
    peers.insert(remote, now);
    if peers.len() > NatConfig::PEERS_PER_MAPPING {
        let oldest = peers.iter().filter(|(&peer, _)| peer != remote).min_by_key(|(_, &at)| at).map(|(&peer, _)| peer);
        if let Some(oldest) = oldest {
            peers.remove(&oldest);
        }
    }
}

/// The machine a NAT box's host runs: none to speak of. The simulator handles everything
/// addressed to a NAT itself, so this is never given a connection or a datagram.
#[derive(Debug)]
pub(super) struct NatBox;

impl Machine for NatBox {
    type Event = ();

    fn accept(&mut self, _: Instant, _: ListenerId, _: SocketAddr) -> Result<ConnId, Refusal> {
        Err(Refusal::AtCapacity { limit: 0 })
    }

    fn handle_input(&mut self, _: Instant, _: Input<'_>) {}

    fn handle_timeout(&mut self, _: Instant) {}

    fn poll_output(&mut self) -> Option<Output<()>> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostId = HostId(0);

    fn nat(config: NatConfig) -> Nat {
        Nat::new([203, 0, 113, 1].into(), config)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sequential_allocation_wraps_and_skips_ports_in_use() {
        let mut n = nat(NatConfig::default());
        let mut rng = Rng::new(1);
        n.next_port = 65534;
        let mut out = |n: &mut Nat, port: u16| {
            let internal = SocketAddr::new([192, 168, 0, 1].into(), port);
            n.outbound(Proto::Datagram, (HOST, internal), addr("1.1.1.1:1"), Instant::ZERO, &mut rng).unwrap().0
        };
        assert_eq!([out(&mut n, 1), out(&mut n, 2), out(&mut n, 3)], [65534, 65535, 20000]);
        n.next_port = 65535;
        assert_eq!(out(&mut n, 4), 20001, "held ports are skipped, across the wrap");
    }

    #[test]
    fn the_peer_list_forgets_the_least_recently_contacted() {
        let mut peers = BTreeMap::new();
        for i in 0..=NatConfig::PEERS_PER_MAPPING as u16 {
            remember(&mut peers, SocketAddr::new([1, 1, 1, 1].into(), 100 + i), Instant::from_micros(u64::from(i)));
        }
        assert_eq!(peers.len(), NatConfig::PEERS_PER_MAPPING);
        assert!(!peers.contains_key(&addr("1.1.1.1:100")));
        assert!(peers.contains_key(&addr("1.1.1.1:101")));
    }
}
