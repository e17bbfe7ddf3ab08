//! Addressing and reachability: realms, routes, per-pair links and partitions.
//!
//! The model is described in the [`sim`](super) module documentation ("Addresses, realms
//! and where NAT fits"). [`Network::route`] is the single place that decides where a packet
//! goes and which source address the receiver observes: the NAT extension point.

use super::host::HostId;
use super::link::LinkConfig;
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

/// Where a packet goes, as decided by [`Network::route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Deliver to `host`, which observes the packet as coming from `seen_from`.
    To {
        /// The receiving host.
        host: HostId,
        /// The source address as the receiver observes it (a NAT will rewrite it).
        seen_from: SocketAddr,
    },
    /// Nothing at that address can be reached from the sender.
    Unreachable,
}

/// The simulated network: who is where, how each path behaves, and what is cut.
pub(super) struct Network {
    realm_names: Vec<String>,
    by_addr: BTreeMap<(RealmId, IpAddr), HostId>,
    default_link: LinkConfig,
    links: BTreeMap<(HostId, HostId), LinkConfig>,
    blocked: BTreeSet<(HostId, HostId)>,
}

impl Network {
    pub(super) fn new(default_link: LinkConfig) -> Network {
        Network {
            realm_names: vec!["public".to_owned()],
            by_addr: BTreeMap::new(),
            default_link,
            links: BTreeMap::new(),
            blocked: BTreeSet::new(),
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

    /// Where a packet sent by `from` (in `realm`, from its socket `src`) to `dst` goes.
    ///
    /// Loopback destinations come back to the sender. Otherwise the destination is looked
    /// up in the sender's realm only. A NAT box will extend this: on a miss, hand the packet
    /// to the realm's gateway, which maps `src` to its public address (RFC 4787 mapping
    /// behaviour) and, for packets coming in, applies its filtering behaviour, mapping
    /// timeouts and hairpinning; the translated source becomes `seen_from`.
    pub(super) fn route(&self, from: HostId, realm: RealmId, src: SocketAddr, dst: SocketAddr) -> Route {
        if dst.ip().is_loopback() {
            return Route::To { host: from, seen_from: SocketAddr::new(dst.ip(), src.port()) };
        }
        match self.by_addr.get(&(realm, dst.ip())) {
            Some(&host) => Route::To { host, seen_from: src },
            None => Route::Unreachable,
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
