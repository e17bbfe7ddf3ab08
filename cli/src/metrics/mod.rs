//! `--metrics ADDR`: every long-running role's counters, as Prometheus scrapes them.
//!
//! Three sources feed one [`Metrics`] registry, none of them a change to a machine:
//!
//! - **The drivers' counters** ([`Handle::stats`](switchyard_adapters::Handle::stats): connections, bytes, refusals, slow
//!   peers), read at each scrape.
//! - **The machines' events**, counted as [`Fleet`](crate::launch::Fleet) logs them
//!   ([`CountEvent`], one implementation per event type, beside
//!   [`LogEvent`](crate::events::LogEvent)).
//! - **The machines' own state** (tunnel streams and carriers, mesh users and peers, the
//!   dedup cache, rendezvous registrations), read by a task on the fleet's runtime once per
//!   [`SAMPLE_INTERVAL`] through [`Handle::command`](switchyard_adapters::Handle::command) ([`Sample`]): a closure of a few
//!   loads on the machine's loop, never a lock the machine waits on.
//!
//! The scrape server ([`http`]) is a std thread of its own, so a slow scraper never
//! reaches a machine. Every series has the labels `machine` (its log name, `tunnel local`)
//! and `listen` (its first listen address, telling apart `up`'s three mesh servers);
//! `reason` labels take values from small fixed sets ([`kinds`]), never a peer's text.

mod count;
pub mod http;
pub mod kinds;

pub use count::{CountEvent, Sample};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use switchyard_adapters::Stats;

/// How often each machine's state is sampled for its gauges.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The labels every series carries: which machine.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct MachineLabels {
    /// The machine's log name (`echo`, `tunnel local`); workers of `--threads` share it.
    machine: String,
    /// Its first listen address (as bound; as configured for `--threads` workers).
    listen: String,
}

impl MachineLabels {
    /// The labels of the machine named `name` whose first listen address is `listen`.
    pub fn new(name: &str, listen: Option<std::net::SocketAddr>) -> MachineLabels {
        MachineLabels { machine: name.to_owned(), listen: listen.map(|a| a.to_string()).unwrap_or_default() }
    }
}

/// [`MachineLabels`] and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    machine: String,
    listen: String,
    /// One of a fixed set of kinds ([`kinds`]).
    reason: &'static str,
}

type Counters = Family<MachineLabels, Counter>;
type Gauges = Family<MachineLabels, Gauge>;
type ReasonCounters = Family<ReasonLabels, Counter>;

/// Declares [`Families`], one field per metric family, and its registration, from one
/// table: `field: Type, "name", Unit or None, "help";`. The encoder appends `_bytes` for
/// [`Unit::Bytes`] and `_total` to every counter.
macro_rules! families {
    ($($field:ident: $ty:ty, $name:literal, $unit:expr, $help:literal;)*) => {
        /// Every metric family, registered once.
        #[derive(Default)]
        struct Families {
            $($field: $ty,)*
        }

        impl Families {
            /// Registers every family in `registry` under its name, unit and help.
            fn register(&self, registry: &mut Registry) {
                $(
                    let unit: Option<Unit> = $unit;
                    match unit {
                        Some(unit) => registry.register_with_unit($name, $help, unit, self.$field.clone()),
                        None => registry.register($name, $help, self.$field.clone()),
                    }
                )*
            }
        }
    };
}

const BYTES: Option<Unit> = Some(Unit::Bytes);

families! {
    connections_open: Gauges, "switchyard_connections_open", None, "Connections the machine has open now";
    connections_accepted: Counters, "switchyard_connections_accepted", None, "Inbound connections accepted";
    connections_refused: ReasonCounters, "switchyard_connections_refused", None,
        "Inbound connections refused, or turned away before they got a service, by reason";
    connections_closed: ReasonCounters, "switchyard_connections_closed", None,
        "Line-service connections ended, by reason";
    received_bytes: Counters, "switchyard_received", BYTES, "Bytes read from TCP connections and UDP datagrams";
    sent_bytes: Counters, "switchyard_sent", BYTES, "Bytes written to TCP connections and UDP datagrams";
    write_queue_bytes: Gauges, "switchyard_write_queue", BYTES, "Bytes waiting in the per-connection write queues";
    slow_consumer_disconnects: ReasonCounters, "switchyard_slow_consumer_disconnects", None,
        "Connections ended because their peer read too slowly, by reason";
    events_dropped: Counters, "switchyard_events_dropped", None, "Machine events dropped unlogged";
    datagrams_dropped: Counters, "switchyard_datagrams_dropped", None, "Outgoing datagrams dropped";
    tls_handshakes: ReasonCounters, "switchyard_tls_handshakes", None, "TLS handshakes, by outcome";
    replies: Counters, "switchyard_replies", None, "Requests a reply preset answered";
    broadcast_lines: Counters, "switchyard_broadcast_lines", None, "Lines the broadcast service relayed";
    broadcast_deliveries: Counters, "switchyard_broadcast_deliveries", None, "Lines delivered to broadcast members";
    tunnel_streams_opened: Counters, "switchyard_tunnel_streams_opened", None, "Tunnel streams opened";
    tunnel_streams_closed: ReasonCounters, "switchyard_tunnel_streams_closed", None, "Tunnel streams ended, by how";
    tunnel_streams_refused: ReasonCounters, "switchyard_tunnel_streams_refused", None,
        "Tunnel streams refused, by reason";
    tunnel_streams_open: Gauges, "switchyard_tunnel_streams_open", None, "Tunnel streams open now";
    tunnel_carriers_up: Gauges, "switchyard_tunnel_carriers_up", None,
        "Authenticated tunnel carriers now (local end: 0 or 1 per worker)";
    tunnel_carrier_attempts: Counters, "switchyard_tunnel_carrier_attempts", None,
        "Connection attempts to the remote end";
    tunnel_reconnects: Counters, "switchyard_tunnel_reconnects", None,
        "Carriers lost or attempts failed, each followed by a reconnect after backoff";
    tunnel_carriers_closed: Counters, "switchyard_tunnel_carriers_closed", None, "Carriers the remote end saw end";
    tunnel_auth_failures: Counters, "switchyard_tunnel_auth_failures", None, "Carrier authentications that failed";
    mesh_users: Gauges, "switchyard_mesh_users", None, "Users registered at this mesh server now";
    mesh_peers: Gauges, "switchyard_mesh_peers", None, "Mesh servers linked now";
    mesh_dedup_cache_entries: Gauges, "switchyard_mesh_dedup_cache_entries", None,
        "Message ids in the dedup cache now";
    mesh_messages_delivered: Counters, "switchyard_mesh_messages_delivered", None,
        "Mesh messages delivered to a user here";
    mesh_messages_undeliverable: Counters, "switchyard_mesh_messages_undeliverable", None,
        "Mesh messages answered no such user";
    mesh_messages_forwarded: Counters, "switchyard_mesh_messages_forwarded", None,
        "Mesh messages forwarded to other servers";
    mesh_messages_deduplicated: Counters, "switchyard_mesh_messages_deduplicated", None,
        "Copies of mesh messages dropped as already seen";
    mesh_registrations: Counters, "switchyard_mesh_registrations", None, "Users registered";
    mesh_registrations_refused: Counters, "switchyard_mesh_registrations_refused", None, "User registrations refused";
    mesh_link_failures: ReasonCounters, "switchyard_mesh_link_failures", None,
        "Server links refused or dropped, and peers cut off for protocol errors, by reason";
    rendezvous_registrations: Gauges, "switchyard_rendezvous_registrations", None,
        "Ids registered at the rendezvous now";
    rendezvous_registered: Counters, "switchyard_rendezvous_registered", None, "Registrations the rendezvous accepted";
    rendezvous_refusals: Counters, "switchyard_rendezvous_refusals", None, "Requests the rendezvous refused";
    rendezvous_introductions: Counters, "switchyard_rendezvous_introductions", None, "Pairs of peers introduced";
    rendezvous_relayed_bytes: Counters, "switchyard_rendezvous_relayed", BYTES,
        "Bytes relayed between the peers of a session";
    rendezvous_rate_limited: ReasonCounters, "switchyard_rendezvous_rate_limited", None,
        "Bursts of datagrams dropped over a rate limit, by which limit";
    rendezvous_bad_datagrams: Counters, "switchyard_rendezvous_bad_datagrams", None,
        "Datagrams that were not rendezvous frames";
}

/// What a [`Sample`] read from a machine: its gauges and the counters only it keeps.
/// `None` for what the machine does not have, so an echo server shows no mesh series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sampled {
    /// Tunnel streams open.
    pub tunnel_streams: Option<u64>,
    /// Authenticated carriers.
    pub carriers_up: Option<u64>,
    /// Mesh users registered here.
    pub mesh_users: Option<u64>,
    /// Mesh servers linked.
    pub mesh_peers: Option<u64>,
    /// Ids in the mesh dedup cache.
    pub dedup_entries: Option<u64>,
    /// Mesh messages forwarded to other servers (a counter).
    pub forwarded: Option<u64>,
    /// Mesh message copies dropped (a counter).
    pub deduplicated: Option<u64>,
    /// Rendezvous registrations.
    pub registrations: Option<u64>,
    /// Bytes the rendezvous relayed (a counter).
    pub relayed_bytes: Option<u64>,
}

impl Sampled {
    /// Adds `other` in, field by field (the workers of one role sum).
    fn add(&mut self, other: &Sampled) {
        fn sum(a: &mut Option<u64>, b: Option<u64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        }
        sum(&mut self.tunnel_streams, other.tunnel_streams);
        sum(&mut self.carriers_up, other.carriers_up);
        sum(&mut self.mesh_users, other.mesh_users);
        sum(&mut self.mesh_peers, other.mesh_peers);
        sum(&mut self.dedup_entries, other.dedup_entries);
        sum(&mut self.forwarded, other.forwarded);
        sum(&mut self.deduplicated, other.deduplicated);
        sum(&mut self.registrations, other.registrations);
        sum(&mut self.relayed_bytes, other.relayed_bytes);
    }
}

/// One running driver, as a scrape reads it.
struct Source {
    labels: MachineLabels,
    stats: Box<dyn Fn() -> Stats + Send + Sync>,
    /// The latest [`Sample`] of its machine, `None` before the first.
    sampled: Arc<Mutex<Option<Sampled>>>,
}

/// The registry behind `--metrics`: shared by the fleet (which registers machines and
/// counts their events) and the scrape server.
pub struct Metrics {
    families: Families,
    registry: Mutex<Registry>,
    sources: Mutex<Vec<Source>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("sources", &lock(&self.sources).len()).finish()
    }
}

/// Locks `m`, even after a panic elsewhere: every value behind these locks stays valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets counter `c` to `v`: for counts another party keeps (the driver, the machine),
/// which only grow.
fn set_counter(c: &Counter, v: u64) {
    c.inner().store(v, Relaxed);
}

impl Metrics {
    /// An empty registry with every family registered.
    pub fn new() -> Arc<Metrics> {
        let families = Families::default();
        let mut registry = Registry::default();
        families.register(&mut registry);
        Arc::new(Metrics { families, registry: Mutex::new(registry), sources: Mutex::new(Vec::new()) })
    }

    /// Starts counting the events of the machine labelled `labels`: they go through the
    /// returned [`Counting`].
    pub fn counting(self: &Arc<Metrics>, labels: MachineLabels) -> Counting {
        Counting { metrics: self.clone(), labels }
    }

    /// Adds a running driver to what each scrape reads: `stats` reads its counters;
    /// returns the slot its [`Sample`]s go into.
    pub fn add_source(
        &self,
        labels: &MachineLabels,
        stats: impl Fn() -> Stats + Send + Sync + 'static,
    ) -> Arc<Mutex<Option<Sampled>>> {
        let sampled = Arc::new(Mutex::new(None));
        let source = Source { labels: labels.clone(), stats: Box::new(stats), sampled: sampled.clone() };
        lock(&self.sources).push(source);
        sampled
    }

    /// Reads every source into the families: the driver counters summed per machine (the
    /// workers of `--threads` add up), and the latest samples.
    fn refresh(&self) {
        let mut per_machine: BTreeMap<&MachineLabels, (Stats, Option<Sampled>)> = BTreeMap::new();
        let sources = lock(&self.sources);
        for source in sources.iter() {
            let stats = (source.stats)();
            let sampled = *lock(&source.sampled);
            let (sum, sum_sampled) = per_machine.entry(&source.labels).or_default();
            sum.connections += stats.connections;
            sum.queued_write_bytes += stats.queued_write_bytes;
            sum.accepted += stats.accepted;
            sum.refused += stats.refused;
            sum.bytes_received += stats.bytes_received;
            sum.bytes_sent += stats.bytes_sent;
            sum.slow_peer_closes += stats.slow_peer_closes;
            sum.events_dropped += stats.events_dropped;
            sum.datagrams_dropped += stats.datagrams_dropped;
            if let Some(sampled) = sampled {
                sum_sampled.get_or_insert_with(Sampled::default).add(&sampled);
            }
        }
        let f = &self.families;
        for (labels, (stats, sampled)) in per_machine {
            let reason = |reason| ReasonLabels { machine: labels.machine.clone(), listen: labels.listen.clone(), reason };
            f.connections_open.get_or_create(labels).set(to_i64(stats.connections as u64));
            f.write_queue_bytes.get_or_create(labels).set(to_i64(stats.queued_write_bytes as u64));
            set_counter(&f.connections_accepted.get_or_create(labels), stats.accepted);
            set_counter(&f.connections_refused.get_or_create(&reason(kinds::AT_CAPACITY)), stats.refused);
            set_counter(&f.received_bytes.get_or_create(labels), stats.bytes_received);
            set_counter(&f.sent_bytes.get_or_create(labels), stats.bytes_sent);
            set_counter(&f.slow_consumer_disconnects.get_or_create(&reason(kinds::WRITE_QUEUE)), stats.slow_peer_closes);
            set_counter(&f.events_dropped.get_or_create(labels), stats.events_dropped);
            set_counter(&f.datagrams_dropped.get_or_create(labels), stats.datagrams_dropped);
            let Some(s) = sampled else { continue };
            let gauges = [
                (&f.tunnel_streams_open, s.tunnel_streams),
                (&f.tunnel_carriers_up, s.carriers_up),
                (&f.mesh_users, s.mesh_users),
                (&f.mesh_peers, s.mesh_peers),
                (&f.mesh_dedup_cache_entries, s.dedup_entries),
                (&f.rendezvous_registrations, s.registrations),
            ];
            for (family, value) in gauges {
                if let Some(v) = value {
                    family.get_or_create(labels).set(to_i64(v));
                }
            }
            let counters = [
                (&f.mesh_messages_forwarded, s.forwarded),
                (&f.mesh_messages_deduplicated, s.deduplicated),
                (&f.rendezvous_relayed_bytes, s.relayed_bytes),
            ];
            for (family, value) in counters {
                if let Some(v) = value {
                    set_counter(&family.get_or_create(labels), v);
                }
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of everything, read now.
    pub fn encode(&self) -> String {
        self.refresh();
        let mut text = String::new();
        let registry = lock(&self.registry);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

/// A gauge's value: Prometheus gauges here are `i64`; no count comes near its limit.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One machine's handle on the registry: what its events are counted into.
#[derive(Clone)]
pub struct Counting {
    metrics: Arc<Metrics>,
    labels: MachineLabels,
}

impl Counting {
    /// Adds `n` to this machine's counter in `family`.
    fn add(&self, family: impl FnOnce(&Families) -> &Counters, n: u64) {
        family(&self.metrics.families).get_or_create(&self.labels).inc_by(n);
    }

    /// Adds one to this machine's counter in `family` for `reason`.
    fn add_reason(&self, family: impl FnOnce(&Families) -> &ReasonCounters, reason: &'static str) {
        let labels = ReasonLabels { machine: self.labels.machine.clone(), listen: self.labels.listen.clone(), reason };
        family(&self.metrics.families).get_or_create(&labels).inc();
    }
}
