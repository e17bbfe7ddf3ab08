//! A local and a remote tunnel end wired together in memory, checked end to end: the body
//! of the `tunnel_pair` target and of the quickcheck property `streams_arrive_intact`.
//!
//! A [`Scenario`] lists streams: each has an entry (a static forward, a `DIGITS:` prefix or
//! the default route), bytes the client sends, bytes its target answers, and who shuts its
//! side first. One seed then drives a deterministic schedule in which every move is picked
//! at random among those possible: carrier bytes leave a sender (`Sent`) and reach the
//! other end in chunks of any size; clients connect (once the carrier is up), send in
//! chunks, read what they were written (`Sent`) and shut their side; targets accept the
//! remote end's connects, reply, read and shut theirs; time creeps on, and when nothing else
//! can happen it jumps to the next deadline (heartbeats).
//!
//! Both ends run under a [`Rig`], so every rule of the [`Book`](super::book::Book) and
//! the [`Driver`](crate::driver::Driver) is checked on both at every step. At the end the
//! reference model is compared: every client's bytes reached the target of its route, once,
//! in order and intact (after the PROXY v1 line naming the client, on route 7777), and every
//! reply came back the same way; each side saw the other's
//! end of input after the last byte and nothing after it; no stream was reset or refused;
//! both ends have no stream and no open connection but the carrier; and nothing is left
//! in flight or unsent anywhere.
//!
//! It catches what a one-sided harness cannot: a stream that stalls for good (flow control
//! that never reopens, a pause never resumed, a `Fin` never sent), data routed to another
//! stream's target, and a half-close that does not pass end to end. A run that makes no
//! progress for 60 s of virtual time fails and says which streams are stuck.

use crate::driver::Phase;
use crate::tunnel::book::Book;
use crate::tunnel::script::{secret, Rig, Source};
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_core::machine::{CloseHow, Input, Machine, Output};
use switchyard_core::tunnel::local::{Entrance, LocalConfig, TunnelLocal};
use switchyard_core::tunnel::mux::MuxConfig;
use switchyard_core::tunnel::remote::{RemoteConfig, Route, Routes, TunnelRemote};
use switchyard_core::tunnel::TunnelEvent;
use switchyard_core::wire::proxy::ProxyVersion;
use switchyard_core::{ConnId, Env, Instant, ListenerId, Rng};

/// How a stream enters the tunnel, and so which target it must reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The static forward to route `7777`.
    Forward,
    /// The prefix entrance with `DIGITS:` first: `9090` or `7777`.
    Prefix(&'static str),
    /// The prefix entrance with no prefix: the default route. The client's bytes must not
    /// start with digits and a colon (they are made to start with a letter).
    Default,
}

/// Who shuts their side first on a stream; the other shuts after seeing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shut {
    /// The client, once it has sent everything (the half-close case: the target answers
    /// after the client's end of input).
    ClientFirst,
    /// The target, once it has sent everything.
    TargetFirst,
    /// Each as soon as it has sent everything, in whatever order the schedule picks.
    Either,
}

/// One stream of a [`Scenario`].
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// How it enters.
    pub entry: Entry,
    /// What the client sends, after any prefix.
    pub up: Vec<u8>,
    /// What the target answers.
    pub down: Vec<u8>,
    /// Who shuts first.
    pub shut: Shut,
}

/// Streams, limits and the seed of a schedule.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Drives every choice of the schedule.
    pub seed: u64,
    /// The multiplexer's limits, the same at both ends.
    pub mux: MuxConfig,
    /// The streams.
    pub streams: Vec<StreamPlan>,
}

impl Scenario {
    /// A scenario read from fuzz input: limits, then up to eight streams.
    pub fn from_bytes(data: &[u8]) -> Scenario {
        let mut src = Source::new(data);
        let mux = MuxConfig {
            initial_window: [16, 100, 1000, 65536][src.below(4)],
            stream_buffer: [1, 10, 300, 65536][src.below(4)],
            carrier_high: [1, 50, 2000, 1 << 20][src.below(4)],
            max_streams: 16,
        };
        let seed = u64::from(src.u32());
        let mut streams = Vec::new();
        while !src.is_empty() && streams.len() < 8 {
            let entry = match src.below(4) {
                0 => Entry::Forward,
                1 => Entry::Prefix("9090"),
                2 => Entry::Prefix("7777"),
                _ => Entry::Default,
            };
            let shut = [Shut::ClientFirst, Shut::TargetFirst, Shut::Either][src.below(3)];
            let len = src.below(64);
            let up = src.take(len).to_vec();
            let down = crate::tunnel::script::pattern(src.byte(), [0, 1, 100, 5000][src.below(4)]);
            streams.push(StreamPlan { entry, up, down, shut });
        }
        Scenario { seed, mux, streams }
    }

    /// The bytes the client of `plan` sends: its prefix, then `up` (with a letter first on
    /// the default route, so that it is not read as a prefix).
    pub fn client_bytes(plan: &StreamPlan) -> Vec<u8> {
        match plan.entry {
            Entry::Forward => plan.up.clone(),
            Entry::Prefix(route) => [route.as_bytes(), b":", &plan.up].concat(),
            Entry::Default => [b"x", &plan.up[..]].concat(),
        }
    }

    /// What the target of stream `i`, `plan`, must receive. Route 7777 has `proxy=v1`: its
    /// target gets the client's address first, as the spec writes it (the client of stream
    /// `i` is 10.1.0.`i+1`:50000, accepted at [`entrance_addr`] of its listener).
    pub fn target_bytes(i: usize, plan: &StreamPlan) -> Vec<u8> {
        let entrance = entrance_addr(listener_of(&plan.entry));
        let header = format!("PROXY TCP4 10.1.0.{} {} 50000 {}\r\n", i + 1, entrance.ip(), entrance.port());
        match plan.entry {
            Entry::Forward | Entry::Prefix("7777") => [header.as_bytes(), &plan.up].concat(),
            Entry::Prefix(_) => plan.up.clone(),
            Entry::Default => [b"x", &plan.up[..]].concat(),
        }
    }
}

/// Body of the `tunnel_pair` target.
pub fn fuzz_tunnel_pair(data: &[u8]) {
    run(&Scenario::from_bytes(data));
}

const REMOTE_ADDR: SocketAddr = addr([10, 0, 1, 2], 7001);

const fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])), port)
}

/// The local end's listener a client of `entry` connects to.
fn listener_of(entry: &Entry) -> ListenerId {
    ListenerId(u16::from(*entry == Entry::Forward))
}

/// The address of the local end's `listener`.
fn entrance_addr(listener: ListenerId) -> SocketAddr {
    addr([10, 0, 0, 9], 7000 + listener.0)
}

/// The target each entry must reach.
fn target_of(entry: &Entry) -> SocketAddr {
    match entry {
        Entry::Forward | Entry::Prefix("7777") => addr([10, 0, 2, 2], 7777),
        Entry::Prefix(_) => addr([10, 0, 2, 1], 9090),
        Entry::Default => addr([10, 0, 2, 3], 7007),
    }
}

/// One direction of the carrier: bytes written and not yet sent, and sent not yet delivered.
#[derive(Debug, Default)]
struct Pipe {
    queue: BytesMut,
    wire: BytesMut,
}

/// One application end of a stream: a client at the local end, or a target at the remote.
#[derive(Debug, Default)]
struct App {
    /// The connection the tunnel end knows it by.
    conn: Option<ConnId>,
    /// What it sends.
    out: Vec<u8>,
    sent: usize,
    /// It shut its side.
    shut: bool,
    /// Written to it and not yet read.
    unread: BytesMut,
    /// Everything it read.
    got: Vec<u8>,
    /// The tunnel end shut its write side, and everything before that was read.
    eof: bool,
    /// The tunnel end shut its write side (half-close or graceful close).
    closing: bool,
}

impl App {
    fn done_sending(&self) -> bool {
        self.sent == self.out.len()
    }
}

/// Where the schedule is.
struct Pair<'a> {
    scenario: &'a Scenario,
    rng: Rng,
    local: Rig<TunnelLocal>,
    remote: Rig<TunnelRemote>,
    /// The carrier's id at each end, once it exists.
    carrier: Option<(ConnId, ConnId)>,
    up: Pipe,
    down: Pipe,
    clients: Vec<App>,
    targets: Vec<App>,
    /// Remote end's target connections not yet matched to a stream plan.
    unmatched: Vec<ConnId>,
}

/// Runs `scenario` and checks it. Panics, with the reason, on any failure.
pub fn run(scenario: &Scenario) {
    let mut rng = Rng::new(scenario.seed);
    let routes = {
        let mut routes = Routes::new();
        routes.add("9090", target_of(&Entry::Prefix("9090")));
        routes.add("7777", Route { target: target_of(&Entry::Forward), proxy: Some(ProxyVersion::V1) });
        routes.add("default", target_of(&Entry::Default));
        routes
    };
    let mut remote_config = RemoteConfig::new(secret(), routes);
    remote_config.mux = scenario.mux.clone();
    remote_config.connect_timeout = Duration::from_secs(3600);
    let entrances = BTreeMap::from([
        (ListenerId(0), Entrance::Prefix),
        (ListenerId(1), Entrance::Forward { route: "7777".into() }),
    ]);
    let mut local_config = LocalConfig::new(REMOTE_ADDR, secret(), entrances);
    local_config.mux = scenario.mux.clone();
    local_config.prefix_timeout = Duration::from_secs(3600);
    let remote_book = Book::remote(&remote_config);
    let local_book = Book::local(&local_config);
    let remote = Rig::new(TunnelRemote::new(Env::new(rng.next_u64()), remote_config), remote_book, Instant::ZERO);
    let local_machine = TunnelLocal::new(Env::new(rng.next_u64()), Instant::ZERO, local_config);
    let local = Rig::new(local_machine, local_book, Instant::ZERO);
    let mut pair = Pair {
        scenario,
        rng,
        local,
        remote,
        carrier: None,
        up: Pipe::default(),
        down: Pipe::default(),
        clients: scenario.streams.iter().map(|p| App { out: Scenario::client_bytes(p), ..App::default() }).collect(),
        targets: scenario.streams.iter().map(|p| App { out: p.down.clone(), ..App::default() }).collect(),
        unmatched: Vec::new(),
    };
    pair.connect_carrier();
    let (mut progress, mut since) = (pair.progress(), pair.now());
    for _ in 0..MAX_STEPS {
        if pair.finished() {
            return pair.check_end();
        }
        pair.step();
        if pair.progress() != progress {
            (progress, since) = (pair.progress(), pair.now());
        }
        assert!(pair.now() < since + STALL, "no stream made progress for {STALL:?}:\n{}", pair.report());
    }
    panic!("not finished after {MAX_STEPS} steps:\n{}", pair.report());
}

/// Virtual time without any stream moving a byte (heartbeats do not count) after which a
/// run is stuck.
const STALL: Duration = Duration::from_secs(60);

/// A bound on steps, so a livelock that keeps time still fails instead of hanging.
const MAX_STEPS: usize = 2_000_000;

/// What a step can do.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// Carrier bytes leave the local (up) or remote (down) end.
    Send(bool),
    /// Carrier bytes reach the other end.
    Deliver(bool),
    Accept(usize),
    ClientSends(usize),
    ClientShuts(usize),
    ClientReads(usize),
    TargetConnects(usize),
    TargetSends(usize),
    TargetShuts(usize),
    TargetReads(usize),
}

impl Pair<'_> {
    fn now(&self) -> Instant {
        self.local.driver.now().max(self.remote.driver.now())
    }

    /// The local end's first connect reaches the remote end at once.
    fn connect_carrier(&mut self) {
        let conn = self.local.live(|id, c| c.phase == Phase::Connecting && self.local.book.is_carrier(id));
        let local_conn = *conn.first().expect("the local end connects at start");
        let (accepted, outputs) = self.remote.accept(ListenerId(0), addr([10, 0, 1, 1], 40000), REMOTE_ADDR);
        let remote_conn = accepted.expect("the remote end accepts its first carrier");
        self.carrier = Some((local_conn, remote_conn));
        self.route(false, outputs);
        let outputs = self.local.input(Input::Connected { conn: local_conn, local: addr([10, 0, 1, 1], 40000) });
        self.route(true, outputs);
    }

    /// Takes in what an end wrote: carrier bytes into its pipe, stream bytes and closes to
    /// the app that owns the connection, target connects into `unmatched`.
    fn route(&mut self, local: bool, outputs: Vec<Output<TunnelEvent>>) {
        for output in outputs {
            match output {
                Output::Write { conn, bytes } if self.is_carrier(local, conn) => {
                    self.pipe(local).queue.extend_from_slice(&bytes);
                }
                Output::Write { conn, bytes } => self.app(local, conn).unread.extend_from_slice(&bytes),
                Output::Close { conn, how } if !self.is_carrier(local, conn) => {
                    let app = self.app(local, conn);
                    assert_ne!(how, CloseHow::Abort, "{conn} aborted in a run without faults");
                    app.closing = true;
                }
                Output::Close { conn, .. } => panic!("carrier {conn} closed in a run without faults"),
                Output::Connect { conn, .. } if !local => self.unmatched.push(conn),
                Output::Event(event) => match event {
                    TunnelEvent::StreamRefused { .. }
                    | TunnelEvent::StreamReset { .. }
                    | TunnelEvent::AuthFailed { .. } => {
                        panic!("{event:?} in a run without faults")
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }

    fn is_carrier(&self, local: bool, conn: ConnId) -> bool {
        self.carrier.is_some_and(|(l, r)| conn == if local { l } else { r })
    }

    fn pipe(&mut self, local: bool) -> &mut Pipe {
        if local {
            &mut self.up
        } else {
            &mut self.down
        }
    }

    fn app(&mut self, local: bool, conn: ConnId) -> &mut App {
        let apps = if local { &mut self.clients } else { &mut self.targets };
        apps.iter_mut().find(|a| a.conn == Some(conn)).unwrap_or_else(|| panic!("output for {conn}, no app's"))
    }

    /// The plan index of the target connection `conn`, found through the stream ids both
    /// ends agree on.
    fn plan_of_target(&self, conn: ConnId) -> Option<usize> {
        let stream = self.remote.book.stream_of(conn)?;
        self.clients.iter().position(|c| c.conn.is_some_and(|c| self.local.book.stream_of(c) == Some(stream)))
    }

    fn moves(&self) -> Vec<Move> {
        let mut moves = Vec::new();
        for local in [true, false] {
            let pipe = if local { &self.up } else { &self.down };
            if !pipe.queue.is_empty() {
                moves.push(Move::Send(local));
            }
            if !pipe.wire.is_empty() {
                moves.push(Move::Deliver(local));
            }
        }
        let live = |rig_conn: Option<ConnId>, local: bool| {
            let driver_conn = rig_conn.and_then(|id| {
                if local {
                    self.local.driver.conn(id).cloned()
                } else {
                    self.remote.driver.conn(id).cloned()
                }
            });
            driver_conn.filter(|c| c.is_live())
        };
        for (i, client) in self.clients.iter().enumerate() {
            let Some(conn) = client.conn else {
                if self.local.driver.machine.is_up() {
                    moves.push(Move::Accept(i));
                }
                continue;
            };
            let c = live(Some(conn), true);
            let plan = &self.scenario.streams[i];
            if let Some(c) = &c {
                if !client.done_sending() && !c.paused && !c.read_shut {
                    moves.push(Move::ClientSends(i));
                }
                let may_shut = plan.shut != Shut::TargetFirst || client.eof;
                if client.done_sending() && !client.shut && may_shut && !c.read_shut {
                    moves.push(Move::ClientShuts(i));
                }
            }
            if !client.unread.is_empty() {
                moves.push(Move::ClientReads(i));
            }
        }
        for &conn in &self.unmatched {
            if self.remote.driver.conn(conn).is_some_and(|c| c.phase == Phase::Connecting) {
                if let Some(i) = self.plan_of_target(conn) {
                    moves.push(Move::TargetConnects(i));
                }
            }
        }
        for (i, target) in self.targets.iter().enumerate() {
            let plan = &self.scenario.streams[i];
            if let Some(c) = live(target.conn, false) {
                if !target.done_sending() && !c.paused && !c.read_shut {
                    moves.push(Move::TargetSends(i));
                }
                let may_shut = plan.shut != Shut::ClientFirst || target.eof;
                if target.done_sending() && !target.shut && may_shut && !c.read_shut {
                    moves.push(Move::TargetShuts(i));
                }
            }
            if !target.unread.is_empty() {
                moves.push(Move::TargetReads(i));
            }
        }
        moves
    }

    /// Makes one move, or lets time pass (a little, or to the next deadline if nothing
    /// else can happen).
    fn step(&mut self) {
        let moves = self.moves();
        if moves.is_empty() || self.rng.below(40) == 0 {
            return self.tick(moves.is_empty());
        }
        let chosen = moves[self.rng.below(moves.len() as u64) as usize];
        self.make(chosen);
    }

    /// A measure that grows whenever any stream moves: bytes sent and read, shuts, ends
    /// seen, clients connected.
    fn progress(&self) -> usize {
        let apps = self.clients.iter().chain(&self.targets);
        apps.map(|a| a.sent + a.got.len() + usize::from(a.shut) + usize::from(a.eof) + usize::from(a.conn.is_some()))
            .sum()
    }

    fn chunk(&mut self, available: usize) -> usize {
        let n = match self.rng.below(4) {
            0 => 1,
            1 => 1 + self.rng.below(16) as usize,
            2 => 1 + self.rng.below(2048) as usize,
            _ => available,
        };
        n.min(available)
    }

    fn make(&mut self, chosen: Move) {
        let (local_carrier, remote_carrier) = self.carrier.expect("the carrier");
        match chosen {
            Move::Send(local) => {
                let available = self.pipe(local).queue.len();
                let n = self.chunk(available);
                let pipe = self.pipe(local);
                let bytes = pipe.queue.split_to(n);
                pipe.wire.extend_from_slice(&bytes);
                let conn = if local { local_carrier } else { remote_carrier };
                self.input(local, Input::Sent { conn, bytes: n });
            }
            Move::Deliver(local) => {
                let available = self.pipe(local).wire.len();
                let n = self.chunk(available);
                let bytes = self.pipe(local).wire.split_to(n);
                let conn = if local { remote_carrier } else { local_carrier };
                self.input(!local, Input::Received { conn, bytes: (&bytes[..]).into() });
            }
            Move::Accept(i) => {
                let listener = listener_of(&self.scenario.streams[i].entry);
                let peer = addr([10, 1, 0, i as u8 + 1], 50000);
                let (accepted, outputs) = self.local.accept(listener, peer, entrance_addr(listener));
                self.clients[i].conn = Some(accepted.expect("a client is accepted while the carrier is up"));
                self.route(true, outputs);
            }
            Move::ClientSends(i) | Move::TargetSends(i) => {
                let local = matches!(chosen, Move::ClientSends(_));
                let app = self.app_mut(local, i);
                let (conn, from, left) = (app.conn.expect("connected"), app.sent, app.out.len() - app.sent);
                let n = self.chunk(left);
                let app = self.app_mut(local, i);
                let bytes = app.out[from..from + n].to_vec();
                app.sent += n;
                self.input(local, Input::Received { conn, bytes: (&bytes[..]).into() });
            }
            Move::ClientShuts(i) | Move::TargetShuts(i) => {
                let local = matches!(chosen, Move::ClientShuts(_));
                let app = self.app_mut(local, i);
                app.shut = true;
                let conn = app.conn.expect("connected");
                self.input(local, Input::ReadClosed { conn });
            }
            Move::ClientReads(i) | Move::TargetReads(i) => {
                let local = matches!(chosen, Move::ClientReads(_));
                let available = self.app_mut(local, i).unread.len();
                let n = self.chunk(available);
                let app = self.app_mut(local, i);
                let bytes = app.unread.split_to(n);
                app.got.extend_from_slice(&bytes);
                let conn = app.conn.expect("connected");
                let live = if local { self.local.driver.conn(conn) } else { self.remote.driver.conn(conn) };
                // Once finished, the driver flushes without reporting (a graceful close).
                if live.is_some_and(|c| c.is_live()) {
                    self.input(local, Input::Sent { conn, bytes: n });
                }
                self.update_eof(local, i);
            }
            Move::TargetConnects(i) => {
                let conn = *self.unmatched.iter().find(|&&c| self.plan_of_target(c) == Some(i)).expect("unmatched");
                self.unmatched.retain(|&c| c != conn);
                let plan = &self.scenario.streams[i];
                let to = self.remote.driver.conn(conn).expect("target").addr;
                assert_eq!(to, target_of(&plan.entry), "stream {i} ({:?}) reached the wrong target", plan.entry);
                self.targets[i].conn = Some(conn);
                self.input(false, Input::Connected { conn, local: addr([10, 0, 1, 2], 30000 + i as u16) });
            }
        }
    }

    fn app_mut(&mut self, local: bool, i: usize) -> &mut App {
        if local {
            &mut self.clients[i]
        } else {
            &mut self.targets[i]
        }
    }

    /// An app has seen the end of its input once its tunnel end shut the write side and
    /// it read everything before that.
    fn update_eof(&mut self, local: bool, i: usize) {
        let app = self.app_mut(local, i);
        if app.closing && app.unread.is_empty() && !app.eof {
            app.eof = true;
        }
    }

    fn input(&mut self, local: bool, input: Input<'_>) {
        let outputs = if local { self.local.input(input) } else { self.remote.input(input) };
        self.route(local, outputs);
        for i in 0..self.clients.len() {
            self.update_eof(true, i);
            self.update_eof(false, i);
        }
    }

    /// Time moves on: a little, or (when nothing else can happen) to the next deadline.
    fn tick(&mut self, idle: bool) {
        let now = self.now();
        let next = [self.local.driver.machine.poll_timeout(), self.remote.driver.machine.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Instant::MAX);
        let to =
            if idle { next.max(now) } else { (now + Duration::from_millis(self.rng.below(20))).min(next.max(now)) };
        for local in [true, false] {
            let outputs = if local { self.local.timeout(to) } else { self.remote.timeout(to) };
            self.route(local, outputs);
        }
    }

    fn finished(&self) -> bool {
        let apps_done = self.clients.iter().chain(&self.targets).all(|a| a.shut && a.eof);
        apps_done && self.local.driver.machine.streams() == 0 && self.remote.driver.machine.streams() == 0
    }

    /// The reference model, at the end of the run.
    fn check_end(&mut self) {
        for (i, plan) in self.scenario.streams.iter().enumerate() {
            assert_eq!(self.targets[i].got, Scenario::target_bytes(i, plan), "stream {i}: the target got other bytes");
            assert_eq!(self.clients[i].got, plan.down, "stream {i}: the client got other bytes back");
        }
        // Flush the carrier both ways (heartbeats may be in flight), then nothing may be left.
        while let Some(m) = self.moves().into_iter().find(|m| matches!(m, Move::Send(_) | Move::Deliver(_))) {
            self.make(m);
        }
        for (name, rig_conns) in [("local", self.local.live(|_, _| true)), ("remote", self.remote.live(|_, _| true))] {
            let (l, r) = self.carrier.expect("carrier");
            let others: Vec<_> = rig_conns.into_iter().filter(|&c| c != l && c != r).collect();
            assert!(others.is_empty(), "{name} end still has {others:?} open");
        }
        let local = self.local.driver.conns().map(|(id, c)| ("local", id, c));
        for (name, id, c) in local.chain(self.remote.driver.conns().map(|(id, c)| ("remote", id, c))) {
            assert!(c.phase == Phase::Finished || c.unsent() == 0, "{name} {id}: {} bytes never sent", c.unsent());
        }
        assert!(self.unmatched.is_empty(), "connects never matched to a stream: {:?}", self.unmatched);
    }

    fn report(&self) -> String {
        let mut lines = vec![format!(
            "at {}: local streams {}, remote streams {}, carrier up {} B queued {} B in flight, down {} B queued {} B in flight",
            self.now(),
            self.local.driver.machine.streams(),
            self.remote.driver.machine.streams(),
            self.up.queue.len(),
            self.up.wire.len(),
            self.down.queue.len(),
            self.down.wire.len()
        )];
        for (i, plan) in self.scenario.streams.iter().enumerate() {
            let (c, t) = (&self.clients[i], &self.targets[i]);
            lines.push(format!(
                "stream {i} {:?} {:?}: client {:?} sent {}/{} shut {} got {}/{} eof {}; target {:?} sent {}/{} shut {} got {}/{} eof {}",
                plan.entry,
                plan.shut,
                c.conn,
                c.sent,
                c.out.len(),
                c.shut,
                c.got.len(),
                plan.down.len(),
                c.eof,
                t.conn,
                t.sent,
                t.out.len(),
                t.shut,
                t.got.len(),
                Scenario::target_bytes(i, plan).len(),
                t.eof
            ));
        }
        lines.join("\n")
    }
}
