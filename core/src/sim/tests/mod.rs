//! Unit tests of the simulator, driving [`Probe`] machines (and a few deliberately broken
//! ones) at explicit virtual times.

mod datagrams;
mod faults;
mod nat;
mod streams;

use super::*;
use crate::machine::CloseHow;
use bytes::Bytes;

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn at_ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// A network whose every link has `latency_ms` and no jitter.
pub(super) fn net(latency_ms: u64) -> NetConfig {
    NetConfig { link: LinkConfig::new(ms(latency_ms), Duration::ZERO), ..NetConfig::default() }
}

/// Two probes, `a` at 10.0.0.1 and `b` at 10.0.0.2 listening on port 80.
pub(super) struct Pair {
    pub sim: Sim,
    pub a: HostId,
    pub b: HostId,
    pub addr: SocketAddr,
}

pub(super) fn pair(seed: u64, config: NetConfig) -> Pair {
    let mut sim = Sim::new(seed, config);
    let a = sim.add_host("a", [10, 0, 0, 1].into(), |env, _| Probe::new(env)).unwrap();
    let b = sim.add_host("b", [10, 0, 0, 2].into(), |env, _| Probe::new(env)).unwrap();
    let addr = sim.listen(b, ListenerId(0), 80).unwrap();
    Pair { sim, a, b, addr }
}

impl Pair {
    /// Connects `a` to `b` and runs until both ends know; returns (a's id, b's id).
    pub fn connect(&mut self) -> (ConnId, ConnId) {
        let addr = self.addr;
        let conn = self.probe(self.a, |p| p.connect(addr));
        self.sim.run_for(Duration::from_secs(1)).unwrap();
        let accepted = self.events(self.b).iter().rev().find_map(|(_, e)| match e {
            ProbeEvent::Accepted { conn: Some(c), .. } => Some(*c),
            _ => None,
        });
        assert!(self
            .events(self.a)
            .iter()
            .any(|(_, e)| matches!(e, ProbeEvent::Connected { conn: c, .. } if *c == conn)));
        (conn, accepted.expect("b accepted"))
    }

    pub fn probe<R>(&mut self, host: HostId, f: impl FnOnce(&mut Probe) -> R) -> R {
        self.sim.with_machine(host, |p: &mut Probe, _| f(p)).unwrap()
    }

    pub fn events(&self, host: HostId) -> Vec<(Instant, ProbeEvent)> {
        self.sim.events::<ProbeEvent>(host).map(|(at, e)| (at, e.clone())).collect()
    }

    /// Every byte `host` received on `conn`, in order.
    pub fn received(&self, host: HostId, conn: ConnId) -> Vec<u8> {
        self.sim
            .events::<ProbeEvent>(host)
            .filter_map(|(_, e)| match e {
                ProbeEvent::Received { conn: c, bytes } if *c == conn => Some(bytes.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Total bytes reported `Sent` to `host` on `conn`.
    pub fn sent(&self, host: HostId, conn: ConnId) -> usize {
        self.sim
            .events::<ProbeEvent>(host)
            .filter_map(|(_, e)| match e {
                ProbeEvent::Sent { conn: c, bytes } if *c == conn => Some(*bytes),
                _ => None,
            })
            .sum()
    }

    /// The first event on `host` matching `pred`, with its time.
    pub fn first(&self, host: HostId, pred: impl Fn(&ProbeEvent) -> bool) -> Option<(Instant, ProbeEvent)> {
        self.events(host).into_iter().find(|(_, e)| pred(e))
    }
}

pub(super) fn payload(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}
