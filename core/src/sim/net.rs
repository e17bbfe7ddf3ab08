//! Addressing and reachability: realms, routes, NAT gateways, per-pair links and
//! partitions.
//!
//! The model is described in the [`sim`](super) module documentation ("Addresses and
//! realms", "NAT boxes"). [`Network::route`] is the single place that decides where a packet
//! goes when it is sent, and which source address the receiver observes; a packet addressed
//! to a NAT box is resolved further by [`Network::inbound`] when it arrives there.

use super::host::HostId;
use super::link::LinkConfig;
use super::nat::{MappingId, Nat, NatConfig, NatDrop, Proto};
use crate::rng::Rng;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// An address space in which hosts are named by IP address: the public network, or a
/// private one made with [`Sim::add_realm`](super::Sim::add_realm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealmId(pub(super) u16);

impl RealmId {
    /// The public network, where [`Sim::add_host`](super::Sim::add_host) puts hosts.
    pub const PUBLIC: RealmId = RealmId(0);
}

/// Which directions a [`Sim::partition`](super::Sim::partition) or
/// [`Sim::heal`](super::Sim::heal) affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Only packets from the first host to the second.
    OneWay,
    /// Packets in both directions.
    BothWays,
}

/// A packet about to be sent: who sends it, from where, to where.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outgoing {
    pub(super) host: HostId,
    pub(super) realm: RealmId,
    /// The sender's own address.
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) proto: Proto,
}

/// Where a packet goes, as decided by [`Network::route`] when it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Route {
    /// The packet crosses the link (and meets the partitions) from `via` to `to`: the
    /// sender itself, or its NAT box when the packet leaves a NAT realm.
    pub(super) via: HostId,
    /// The receiving host, or a NAT box that decides on arrival who, if anyone, gets it.
    pub(super) to: HostId,
    /// The source address as the receiver observes it.
    pub(super) seen_from: SocketAddr,
    /// The NAT mapping a stream holds while it is open, to give back when it closes.
    pub(super) pin: Option<Pin>,
}

/// A stream's hold on a NAT mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pin {
    pub(super) nat: HostId,
    pub(super) mapping: MappingId,
}

/// Why a packet goes nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NoRoute {
    /// Nothing at that address can be reached from the sender.
    Unreachable,
    /// The sender's NAT box dropped it on the way out.
    Nat { nat: HostId, reason: NatDrop },
}

/// The simulated network: who is where, how each path behaves, and what is cut.
pub(super) struct Network {
    realm_names: Vec<String>,
    by_addr: BTreeMap<(RealmId, IpAddr), HostId>,
    default_link: LinkConfig,
    links: BTreeMap<(HostId, HostId), LinkConfig>,
    blocked: BTreeSet<(HostId, HostId)>,
    /// The NAT box in front of each NAT realm.
    gateways: BTreeMap<RealmId, HostId>,
    /// Every NAT box, by the host that stands for it in the public realm.
    nats: BTreeMap<HostId, Nat>,
}

impl Network {
    pub(super) fn new(default_link: LinkConfig) -> Network {
        Network {
            realm_names: vec!["public".to_owned()],
            by_addr: BTreeMap::new(),
            default_link,
            links: BTreeMap::new(),
            blocked: BTreeSet::new(),
            gateways: BTreeMap::new(),
            nats: BTreeMap::new(),
        }
    }

    pub(super) fn add_realm(&mut self, name: &str) -> RealmId {
        let id = u16::try_from(self.realm_names.len()).expect("more than 65535 realms");
        self.realm_names.push(name.to_owned());
        RealmId(id)
    }

    pub(super) fn has_realm(&self, realm: RealmId) -> bool {
        usize::from(realm.0) < self.realm_names.len()
    }

    pub(super) fn realm_name(&self, realm: RealmId) -> &str {
        &self.realm_names[usize::from(realm.0)]
    }

    /// Claims `ip` in `realm` for `host`; false if another host has it.
    pub(super) fn claim(&mut self, realm: RealmId, ip: IpAddr, host: HostId) -> bool {
        match self.by_addr.entry((realm, ip)) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(host);
                true
            }
        }
    }

    /// Makes a realm behind a NAT box: `host`, already at `public_ip` in the public realm.
    pub(super) fn add_nat(&mut self, name: &str, host: HostId, public_ip: IpAddr, config: NatConfig) -> RealmId {
        let realm = self.add_realm(name);
        self.gateways.insert(realm, host);
        self.nats.insert(host, Nat::new(public_ip, config));
        realm
    }

    /// True when `host` stands for a NAT box.
    pub(super) fn is_nat(&self, host: HostId) -> bool {
        self.nats.contains_key(&host)
    }

    /// Live mappings of the NAT in front of `realm`; 0 for a realm without one.
    pub(super) fn nat_mappings(&self, realm: RealmId, now: Instant) -> usize {
        self.gateways.get(&realm).and_then(|nat| self.nats.get(nat)).map_or(0, |nat| nat.live(now))
    }

    /// Where a packet goes, decided when it is sent.
    ///
    /// Loopback destinations come back to the sender. Otherwise the destination is looked
    /// up in the sender's realm; on a miss, a NAT realm hands the packet to its NAT box,
    /// which translates it now (the private side is instant, so the NAT sees it as it is
    /// sent) and sends it on in the public realm, from the NAT's public address. A public
    /// destination that is a NAT box (another one, or this one: hairpinning) is decided
    /// by [`Network::inbound`] when the packet gets there.
    pub(super) fn route(&mut self, out: Outgoing, now: Instant, rng: &mut Rng) -> Result<Route, NoRoute> {
        let Outgoing { host: from, realm, src, dst, proto } = out;
        if dst.ip().is_loopback() {
            let seen_from = SocketAddr::new(dst.ip(), src.port());
            return Ok(Route { via: from, to: from, seen_from, pin: None });
        }
        if let Some(&to) = self.by_addr.get(&(realm, dst.ip())) {
            return Ok(Route { via: from, to, seen_from: src, pin: None });
        }
        let Some(&nat) = self.gateways.get(&realm) else { return Err(NoRoute::Unreachable) };
        // Checked before translating, so a packet to nowhere opens no mapping.
        let Some(&to) = self.by_addr.get(&(RealmId::PUBLIC, dst.ip())) else { return Err(NoRoute::Unreachable) };
        let gateway = self.nats.get_mut(&nat).expect("every gateway is a NAT box");
        if to == nat && !gateway.config.hairpinning {
            return Err(NoRoute::Nat { nat, reason: NatDrop::HairpinningOff });
        }
        let (port, mapping) =
            gateway.outbound(proto, (from, src), dst, now, rng).map_err(|reason| NoRoute::Nat { nat, reason })?;
        let pin = (proto == Proto::Stream).then_some(Pin { nat, mapping });
        Ok(Route { via: nat, to, seen_from: SocketAddr::new(gateway.public_ip, port), pin })
    }

    /// Where a datagram from `from` that reached NAT box `nat`'s external `port` goes
    /// (the internal host and port), decided by the NAT's mapping table and filtering as
    /// they stand now, when it arrives.
    pub(super) fn inbound(
        &mut self,
        nat: HostId,
        port: u16,
        from: SocketAddr,
        now: Instant,
    ) -> Result<(HostId, u16), NatDrop> {
        self.nats.get_mut(&nat).expect("inbound is only asked of NAT boxes").inbound(port, from, now)
    }

    /// A stream that held a mapping is gone.
    pub(super) fn release(&mut self, pin: Pin, now: Instant) {
        if let Some(nat) = self.nats.get_mut(&pin.nat) {
            nat.release(pin.mapping, now);
        }
    }

    /// The link packets from `from` to `to` take.
    pub(super) fn link(&self, from: HostId, to: HostId) -> &LinkConfig {
        self.links.get(&(from, to)).unwrap_or(&self.default_link)
    }

    pub(super) fn set_link(&mut self, from: HostId, to: HostId, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// True when packets from `from` to `to` are dropped by a partition. A host is never
    /// partitioned from itself.
    pub(super) fn is_blocked(&self, from: HostId, to: HostId) -> bool {
        from != to && self.blocked.contains(&(from, to))
    }

    pub(super) fn set_blocked(&mut self, a: HostId, b: HostId, cut: Cut, blocked: bool) {
        let mut pairs = vec![(a, b)];
        if cut == Cut::BothWays {
            pairs.push((b, a));
        }
        for pair in pairs {
            if blocked {
                self.blocked.insert(pair);
            } else {
                self.blocked.remove(&pair);
            }
        }
    }

    pub(super) fn clear_blocked(&mut self) {
        self.blocked.clear();
    }
}
