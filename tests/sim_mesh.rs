//! The P2P mesh under the simulator: real `MeshServer` and `MeshClient` machines on
//! simulated hosts.
//!
//! The first tests pin one behaviour each at one seed; `mesh_survives_faults` sweeps 500
//! seeds of a 5-server mesh with 20 users, random traffic, latency and jitter, a dropped
//! peer link and a server crash and restart; `mesh_over_tls_survives_faults` 300 more with
//! every link over TLS 1.3 and the servers holding a mesh secret, as a mesh across the
//! internet runs; `mesh_admitted_by_a_mesh_ca_survives_faults` 300 more with the servers
//! admitting each other by certificates from a mesh CA instead. Every machine runs inside the TLS layer, as the CLI runs it (a
//! pass-through without TLS).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use switchyard_core::auth::Secret;
use switchyard_core::mesh::client::{ClientConfig, ClientEvent, MeshClient, Selection};
use switchyard_core::mesh::server::{MeshServer, ServerConfig};
use switchyard_core::mesh::tokens::UserTokens;
use switchyard_core::mesh::MeshEvent;
use switchyard_core::sim::{check_seeds, Cut, HostId, HostSpec, LinkConfig, NetConfig, Sim, TestId};
use switchyard_core::time::WallClock;
use switchyard_core::tls::{ClientCerts, Secure, Tls, TlsDial, TlsEvent, TlsServe, TlsSettings, Trust};
use switchyard_core::wire::mesh::ReceiptStatus;
use switchyard_core::{Env, Instant, ListenerId, Machine, Rng};
use switchyard_tests::{fixed_identity, fixed_mesh_ca};
use uuid::Uuid;

const PORT: u16 = 5001;

fn lan() -> LinkConfig {
    LinkConfig::new(Duration::from_millis(5), Duration::from_millis(1))
}

struct Mesh {
    sim: Sim,
    servers: Vec<(HostId, SocketAddr)>,
    users: BTreeMap<String, HostId>,
    /// How every link, users' and servers', is secured.
    links: Links,
}

/// How the mesh's links are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Links {
    /// In the clear.
    Plain,
    /// TLS 1.3: the servers serve one fixed certificate and everyone dials pinning it.
    Pinned,
    /// TLS 1.3 with a mesh CA (`mesh server --mesh-ca`): server i serves a certificate the
    /// CA issued for its IP, presents it to the peers it dials and admits peers by theirs;
    /// users trust the CA.
    MeshCa,
}

/// The mesh's machines run inside the TLS layer, as the CLI runs them: a pass-through
/// with [`Links::Plain`]. `server` is the index of the server the machine is, `None` for a
/// user.
fn secured<M: Machine>(machine: M, secret: [u8; 32], links: Links, server: Option<usize>) -> Tls<M> {
    let settings = match links {
        Links::Plain => TlsSettings::default(),
        Links::Pinned => {
            let identity = fixed_identity("mesh");
            let pin = identity.fingerprint().expect("a certificate");
            TlsSettings {
                serve: server.map(|_| TlsServe { identity, listeners: Secure::All, clients: ClientCerts::None }),
                dial: Some(TlsDial { trust: Trust::Pin(pin), server_name: None, to: Secure::All, identity: None }),
            }
        }
        Links::MeshCa => {
            let names: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}")).collect();
            let (ca, mut identities) = fixed_mesh_ca(&names);
            let trust = Trust::Authorities(vec![ca]);
            let own = server.map(|i| identities.swap_remove(i));
            TlsSettings {
                serve: own.clone().map(|identity| TlsServe {
                    identity,
                    listeners: Secure::All,
                    clients: ClientCerts::Optional(trust.clone()),
                }),
                dial: Some(TlsDial { trust, server_name: None, to: Secure::All, identity: own }),
            }
        }
    };
    let wall = WallClock::utc(1_796_083_200_000_000, Instant::ZERO);
    Tls::new(machine, settings, secret, wall).expect("usable TLS settings")
}

fn client_machine(env: Env, now: Instant, config: ClientConfig, links: Links) -> Tls<MeshClient> {
    let secret = env.secret(b"tls");
    secured(MeshClient::new(env, now, config), secret, links, None)
}

/// The inner machine's events among a TLS-wrapped machine's.
fn inner<E>((at, e): (Instant, &TlsEvent<E>)) -> Option<(Instant, &E)> {
    match e {
        TlsEvent::Inner(e) => Some((at, e)),
        _ => None,
    }
}

impl Mesh {
    /// `n` servers; server i is seeded with server i-1 only (a chain), so the full mesh
    /// must come from discovery.
    fn new(seed: u64, n: usize, link: LinkConfig) -> Mesh {
        Mesh::build(seed, n, link, Links::Plain, |_, config| config)
    }

    /// [`Mesh::new`] with every link over TLS 1.3 and every server holding one mesh secret.
    fn over_tls(seed: u64, n: usize, link: LinkConfig) -> Mesh {
        Mesh::build(seed, n, link, Links::Pinned, |_, config| ServerConfig {
            peer_secret: Secret::new(*b"the mesh secret"),
            ..config
        })
    }

    /// [`Mesh::new`] with every link over TLS 1.3, the servers admitting each other by
    /// certificates from a mesh CA and holding no secret.
    fn by_mesh_ca(seed: u64, n: usize, link: LinkConfig) -> Mesh {
        Mesh::build(seed, n, link, Links::MeshCa, |_, config| ServerConfig { peers_by_certificate: true, ..config })
    }

    /// `n` servers as [`Mesh::new`] makes them, server i's configuration changed by
    /// `configure(i, …)`, every link secured as `links` says.
    fn build(
        seed: u64,
        n: usize,
        link: LinkConfig,
        links: Links,
        configure: impl Fn(usize, ServerConfig) -> ServerConfig,
    ) -> Mesh {
        let mut sim = Sim::new(seed, NetConfig { link, ..NetConfig::default() });
        let mut servers = Vec::new();
        for i in 0..n {
            let ip: IpAddr = [10, 0, 0, i as u8 + 1].into();
            let me = SocketAddr::new(ip, PORT);
            let seeds: Vec<SocketAddr> = servers.last().map(|&(_, a)| a).into_iter().collect();
            let config = configure(i, ServerConfig::new(me, seeds));
            let host = sim
                .add_host(&format!("server{}", i + 1), ip, move |env, now| {
                    let secret = env.secret(b"tls");
                    secured(MeshServer::new(env, now, config.clone()), secret, links, Some(i))
                })
                .unwrap();
            let addr = sim.listen(host, ListenerId(0), PORT).unwrap();
            assert_eq!(addr, me);
            servers.push((host, addr));
        }
        Mesh { sim, servers, users: BTreeMap::new(), links }
    }

    /// A user on `servers` (in that order of preference), booting at `at`.
    fn user(&mut self, name: &str, servers: Vec<SocketAddr>, selection: Selection, at: Instant) -> HostId {
        self.user_with(name, ClientConfig::new(name, servers, selection), at)
    }

    /// A user host `name` running a client with `config`, booting at `at`.
    fn user_with(&mut self, name: &str, config: ClientConfig, at: Instant) -> HostId {
        let n = self.users.len() as u16 + 1;
        let [hi, lo] = n.to_be_bytes();
        let spec = HostSpec::new(format!("user-{name}"), [10, 1, hi, lo].into()).down();
        let links = self.links;
        let host =
            self.sim.add_host_with(spec, move |env, now| client_machine(env, now, config.clone(), links)).unwrap();
        self.sim.schedule(at, move |sim| sim.restart(host));
        self.users.insert(name.to_owned(), host);
        host
    }

    fn server(&self, i: usize) -> &MeshServer {
        self.sim.machine::<Tls<MeshServer>>(self.servers[i].0).map(Tls::inner).expect("server up")
    }

    fn send(&mut self, from: &str, to: &str, body: &str) -> Uuid {
        let host = self.users[from];
        self.sim
            .with_machine(host, |c: &mut Tls<MeshClient>, now| c.command(now, |c, now| c.send(now, to, body)))
            .unwrap()
            .unwrap()
    }

    fn send_at(&mut self, at: Instant, from: &str, to: &str, body: String) {
        let host = self.users[from];
        let to = to.to_owned();
        self.sim.schedule(at, move |sim| {
            // A user whose host is down cannot send; the sweep only sends from live users.
            let _ =
                sim.with_machine(host, |c: &mut Tls<MeshClient>, now| c.command(now, |c, now| c.send(now, &to, &body)));
        });
    }

    fn run(&mut self, d: Duration) {
        self.sim.run_for(d).unwrap_or_else(|e| panic!("seed {}: {e}", self.sim.seed()));
    }

    fn events(&self, user: &str) -> Vec<ClientEvent> {
        self.sim.events::<TlsEvent<ClientEvent>>(self.users[user]).filter_map(inner).map(|(_, e)| e.clone()).collect()
    }

    fn received(&self, user: &str) -> Vec<(Uuid, String, String)> {
        self.events(user)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message { id, from, body } => Some((id, from, body)),
                _ => None,
            })
            .collect()
    }

    fn receipts(&self, user: &str) -> BTreeMap<Uuid, ReceiptStatus> {
        self.events(user)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Receipt { id, status, .. } => Some((id, status)),
                _ => None,
            })
            .collect()
    }

    fn registered_at(&self, user: &str) -> Option<SocketAddr> {
        self.sim.machine::<Tls<MeshClient>>(self.users[user]).map(Tls::inner).ok()?.server()
    }
}

#[test]
fn a_chain_of_seeds_becomes_a_full_mesh() {
    let mut m = Mesh::new(1, 5, lan());
    m.run(Duration::from_secs(3));
    for i in 0..5 {
        let mut linked = m.server(i).linked_peers();
        linked.sort();
        let mut others: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).filter(|&a| a != m.servers[i].1).collect();
        others.sort();
        assert_eq!(linked, others, "server{} links", i + 1);
    }
}

#[test]
fn a_server_with_another_mesh_secret_is_refused_on_both_ends_and_the_rest_link() {
    // A chain 1 ← 2 ← 3 ← 4 where server 3 holds another secret: 2–1 link, 4 reaches
    // nobody (it only knew 3), and 3 is refused by 2 and by 4 alike.
    let mut m = Mesh::build(7, 4, lan(), Links::Plain, |i, config| ServerConfig {
        peer_secret: Secret::new(if i == 2 { &b"another"[..] } else { &b"ours"[..] }),
        ..config
    });
    m.run(Duration::from_secs(3));
    let addr = |i: usize| m.servers[i].1;
    assert_eq!(m.server(0).linked_peers(), [addr(1)]);
    assert_eq!(m.server(1).linked_peers(), [addr(0)]);
    assert!(m.server(2).linked_peers().is_empty() && m.server(3).linked_peers().is_empty());
    let refusals = |i: usize| -> Vec<String> {
        m.sim
            .events::<TlsEvent<MeshEvent>>(m.servers[i].0)
            .filter_map(inner)
            .filter_map(|(_, e)| match e {
                MeshEvent::PeerRefused { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    };
    let wrong = "wrong mesh secret: the two servers hold different ones";
    // Server 3 dials 2: 2's proof fails at 3, which refuses it and says so to 2.
    assert!(refusals(2).contains(&format!("we refused it: {wrong}")), "{:?}", refusals(2));
    assert!(refusals(1).contains(&format!("it refused us: {wrong}")), "{:?}", refusals(1));
    // Server 4 dials 3: 3's proof fails at 4.
    assert!(refusals(3).contains(&format!("we refused it: {wrong}")), "{:?}", refusals(3));
    assert!(!m.server(1).known_peers().contains(&addr(3)), "2 never learned of 4 through 3");
}

#[test]
fn users_on_different_servers_exchange_messages_with_receipts() {
    let mut m = Mesh::new(2, 3, lan());
    let (s1, s3) = (m.servers[0].1, m.servers[2].1);
    m.user("Alice", vec![s1], Selection::InOrder, Instant::from_secs(2));
    m.user("Bob", vec![s3], Selection::InOrder, Instant::from_secs(2));
    m.run(Duration::from_secs(4));
    assert_eq!(m.registered_at("Alice"), Some(s1));
    assert_eq!(m.registered_at("Bob"), Some(s3));
    let id = m.send("Alice", "Bob", "Hello, how are you?");
    m.run(Duration::from_secs(1));
    assert_eq!(m.received("Bob"), vec![(id, "Alice".to_owned(), "Hello, how are you?".to_owned())]);
    assert_eq!(m.receipts("Alice").get(&id), Some(&ReceiptStatus::Delivered));
    assert_eq!(m.server(1).location("Bob"), Some(s3), "every server knows where Bob is");
}

#[test]
fn a_message_to_nobody_gets_a_negative_receipt() {
    let mut m = Mesh::new(3, 3, lan());
    let s2 = m.servers[1].1;
    m.user("Alice", vec![s2], Selection::InOrder, Instant::from_secs(2));
    m.run(Duration::from_secs(4));
    let id = m.send("Alice", "Nobody", "anyone there?");
    m.run(Duration::from_secs(5));
    assert_eq!(m.receipts("Alice").get(&id), Some(&ReceiptStatus::NoSuchUser));
}

#[test]
fn a_name_live_on_one_server_is_refused_on_another() {
    let mut m = Mesh::new(4, 3, lan());
    let (s1, s2) = (m.servers[0].1, m.servers[1].1);
    m.user("Alice", vec![s1], Selection::InOrder, Instant::from_secs(2));
    m.run(Duration::from_secs(4));
    m.user("Alice2", vec![s2], Selection::InOrder, Instant::from_secs(5));
    // Same name as a live user, registered at another server.
    let impostor = {
        let config = ClientConfig::new("Alice", vec![s2], Selection::InOrder);
        let spec = HostSpec::new("impostor", [10, 2, 0, 1].into());
        m.sim.add_host_with(spec, move |env, now| client_machine(env, now, config.clone(), Links::Plain)).unwrap()
    };
    m.run(Duration::from_secs(3));
    let refused: Vec<String> = m
        .sim
        .events::<TlsEvent<ClientEvent>>(impostor)
        .filter_map(inner)
        .filter_map(|(_, e)| match e {
            ClientEvent::Refused { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![format!("name Alice is taken (at {s1})")]);
    assert_eq!(m.registered_at("Alice"), Some(s1), "the first Alice keeps her name");
}

const TOKEN_FILE: &str = "Alice 0123456789abcdef0123\n";

/// Alice's laptop drops off the network (its server never hears it go, so the name stays
/// held there); on her phone, with her token, she registers at another server at once:
/// the laptop's session is closed, and a message to Alice reaches the phone exactly once.
/// Without the token, the phone is refused: the name is taken. Over 100 seeds.
fn token_takeover(seed: u64) -> Result<(), String> {
    let tokens = UserTokens::parse(TOKEN_FILE).expect("a token file");
    let with_tokens = move |_, config| ServerConfig { user_tokens: tokens.clone(), ..config };
    let mut m = Mesh::build(seed, 3, lan(), Links::Plain, with_tokens);
    let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();
    let token = UserTokens::parse(TOKEN_FILE).expect("a token file").token("Alice").cloned();
    let mut laptop = ClientConfig::new("Alice", vec![all[0]], Selection::InOrder);
    laptop.token = token.clone();
    let laptop = m.user_with("laptop", laptop, Instant::from_secs(2));
    m.user("Bob", vec![all[2]], Selection::InOrder, Instant::from_secs(2));
    m.run(Duration::from_secs(3));
    let s1 = m.servers[0].0;
    m.sim.partition(laptop, s1, Cut::BothWays);
    let impostor = ClientConfig::new("Alice", vec![all[1]], Selection::InOrder);
    m.user_with("impostor", impostor, Instant::from_secs(6));
    let mut phone = ClientConfig::new("Alice", vec![all[1]], Selection::InOrder);
    phone.token = token;
    m.user_with("phone", phone, Instant::from_secs(6));
    m.run(Duration::from_secs(4));
    let refused = |who: &str| {
        m.events(who).into_iter().find_map(|e| match e {
            ClientEvent::Refused { reason } => Some(reason),
            _ => None,
        })
    };
    let impostor_told = refused("impostor").ok_or("the client without the token was not refused")?;
    if !impostor_told.contains("asks for the token of Alice") {
        return Err(format!("the client without the token was told {impostor_told:?}"));
    }
    if m.registered_at("phone") != Some(all[1]) {
        return Err(format!("the phone is not registered at {}: {:?}", all[1], m.events("phone")));
    }
    if m.server(0).local_users().contains(&"Alice".to_owned()) {
        return Err("the laptop's server still holds Alice".into());
    }
    let id = m.send("Bob", "Alice", "found you");
    m.run(Duration::from_secs(3));
    let phone_got: Vec<Uuid> = m.received("phone").into_iter().map(|(id, ..)| id).collect();
    if phone_got != vec![id] {
        return Err(format!("the phone got {phone_got:?}, not the one message"));
    }
    if !m.received("laptop").is_empty() {
        return Err("the laptop got a message after the takeover".into());
    }
    if m.receipts("Bob").get(&id) != Some(&ReceiptStatus::Delivered) {
        return Err("Bob has no delivered receipt".into());
    }
    Ok(())
}

const TAKEOVER: TestId = TestId::integration("switchyard-tests", "sim_mesh", "a_user_with_a_token_takes_its_name_back");

#[test]
fn a_user_with_a_token_takes_its_name_back() {
    check_seeds(&TAKEOVER, 0..100, token_takeover);
}

#[test]
fn a_user_whose_server_crashes_fails_over_and_nothing_is_lost_or_doubled() {
    let mut m = Mesh::new(5, 3, lan());
    let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();
    m.user("Alice", vec![all[0]], Selection::InOrder, Instant::from_secs(2));
    m.user("Bob", vec![all[1], all[2]], Selection::InOrder, Instant::from_secs(2));
    m.run(Duration::from_secs(4));
    assert_eq!(m.registered_at("Bob"), Some(all[1]));
    let crash = m.servers[1].0;
    m.sim.crash(crash);
    // Bob sends while his server is dead: the outbox keeps it until he is back.
    let from_bob = m.send("Bob", "Alice", "sent during the crash");
    m.run(Duration::from_secs(3));
    assert_eq!(m.registered_at("Bob"), Some(all[2]), "Bob is on another server within 3 s");
    let to_bob = m.send("Alice", "Bob", "welcome back");
    m.run(Duration::from_secs(3));
    let alice_got: Vec<Uuid> = m.received("Alice").into_iter().map(|(id, ..)| id).collect();
    assert_eq!(alice_got, vec![from_bob], "delivered exactly once");
    assert_eq!(m.receipts("Bob").get(&from_bob), Some(&ReceiptStatus::Delivered));
    let bob_got: Vec<Uuid> = m.received("Bob").into_iter().map(|(id, ..)| id).collect();
    assert_eq!(bob_got, vec![to_bob]);
}

#[test]
fn fastest_selection_picks_the_lowest_rtt_and_moves_only_when_clearly_better() {
    let mut m = Mesh::new(6, 3, LinkConfig::new(Duration::from_millis(30), Duration::from_millis(3)));
    let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();
    let alice = m.user("Alice", vec![all[0]], Selection::fastest(), Instant::from_secs(2));
    // Server 3 is much closer to Alice.
    let near = m.servers[2].0;
    m.sim.set_link(alice, near, LinkConfig::new(Duration::from_millis(3), Duration::from_millis(1)));
    m.run(Duration::from_secs(5));
    assert_eq!(m.registered_at("Alice"), Some(all[2]), "{:#?}", m.events("Alice"));
    let moves = |m: &Mesh| m.events("Alice").iter().filter(|e| matches!(e, ClientEvent::Selected { .. })).count();
    let before = moves(&m);
    // Server 2 becomes slightly faster than server 3: not clearly better, so no move.
    let other = m.servers[1].0;
    m.sim.set_link(alice, other, LinkConfig::new(Duration::from_millis(2), Duration::from_millis(1)));
    m.run(Duration::from_secs(600));
    assert_eq!(moves(&m), before, "no flapping over ten minutes");
    assert_eq!(m.registered_at("Alice"), Some(all[2]));
}

const SWEEP: TestId = TestId::integration("switchyard-tests", "sim_mesh", "mesh_survives_faults");

/// One sent message and what the sweep knows about it.
struct Sent {
    from: String,
    to: String,
    body: String,
    at: Instant,
}

fn mesh_sweep(seed: u64) -> Result<(), String> {
    mesh_sweep_with(seed, Links::Plain)
}

/// [`mesh_sweep`], with every link secured as `links` says.
fn mesh_sweep_with(seed: u64, links: Links) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0x3e5b);
    let latency = Duration::from_millis(rng.range_inclusive(1, 20));
    let link = LinkConfig::new(latency, latency.mul_f64(0.3));
    let mut m = match links {
        Links::Plain => Mesh::new(seed, 5, link),
        Links::Pinned => Mesh::over_tls(seed, 5, link),
        Links::MeshCa => Mesh::by_mesh_ca(seed, 5, link),
    };
    let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();

    // 20 users, each preferring a random server, failing over along the others.
    let mut names = Vec::new();
    for u in 0..20 {
        let name = format!("user{u}");
        let first = rng.below(5) as usize;
        let order: Vec<SocketAddr> = (0..5).map(|k| all[(first + k) % 5]).collect();
        m.user(&name, order, Selection::InOrder, Instant::from_millis(rng.range_inclusive(1_000, 3_000)));
        names.push(name);
    }

    // Faults: a peer link cut for a while, then a server crash and restart.
    let (a, b) = (rng.below(5) as usize, rng.below(5) as usize);
    let cut_at = Instant::from_secs(rng.range_inclusive(8, 12));
    let heal_at = cut_at + Duration::from_secs(rng.range_inclusive(2, 6));
    if a != b {
        let (ha, hb) = (m.servers[a].0, m.servers[b].0);
        m.sim.schedule(cut_at, move |sim| sim.partition(ha, hb, Cut::BothWays));
        m.sim.schedule(heal_at, move |sim| sim.heal(ha, hb, Cut::BothWays));
    }
    let victim = m.servers[rng.below(5) as usize].0;
    let crash_at = Instant::from_secs(rng.range_inclusive(15, 20));
    let restart_at = crash_at + Duration::from_secs(rng.range_inclusive(1, 5));
    m.sim.schedule(crash_at, move |sim| sim.crash(victim));
    m.sim.schedule(restart_at, move |sim| sim.restart(victim));

    // Traffic from 5 s to 30 s, some of it to names nobody has.
    let mut sent = Vec::new();
    for k in 0..rng.range_inclusive(60, 120) {
        let at = Instant::from_millis(rng.range_inclusive(5_000, 30_000));
        let from = names[rng.below(20) as usize].clone();
        let to = if rng.chance(0.1) { format!("ghost{}", rng.below(3)) } else { names[rng.below(20) as usize].clone() };
        let body = format!("message {k} from {from}");
        m.send_at(at, &from, &to, body.clone());
        sent.push(Sent { from, to, body, at });
    }
    m.sim.run_until(Instant::from_secs(60)).map_err(|e| e.to_string())?;

    // Every user is registered again somewhere after the faults.
    for name in &names {
        if m.registered_at(name).is_none() {
            return Err(format!("{name} is not registered at the end"));
        }
    }
    // Match each sent message to its id through the sender's events (sends happen in
    // order, so the n-th send of a user is its n-th outbox id).
    let mut receipts: BTreeMap<Uuid, ReceiptStatus> = BTreeMap::new();
    let mut delivered: BTreeMap<Uuid, usize> = BTreeMap::new();
    let mut bodies: BTreeMap<String, Uuid> = BTreeMap::new();
    for name in &names {
        receipts.extend(m.receipts(name));
        for (id, from, body) in m.received(name) {
            *delivered.entry(id).or_default() += 1;
            bodies.insert(format!("{from}:{body}:{name}"), id);
        }
    }
    for (id, n) in &delivered {
        if *n != 1 {
            return Err(format!("message {id} delivered {n} times"));
        }
    }
    for s in &sent {
        let key = format!("{}:{}:{}", s.from, s.body, s.to);
        let got = bodies.get(&key);
        if s.to.starts_with("ghost") {
            if got.is_some() {
                return Err(format!("a message to {} was delivered", s.to));
            }
            continue;
        }
        if got.is_none() {
            return Err(format!("message {:?} from {} to {} at {} was never delivered", s.body, s.from, s.to, s.at));
        }
        if let Some(id) = got {
            if receipts.get(id) == Some(&ReceiptStatus::NoSuchUser) {
                return Err(format!(
                    "message {id} ({:?} from {} to {} at {}) was delivered but its receipt says no such user; \
                     cut {a}-{b} {cut_at}..{heal_at}, crash server{} {crash_at}..{restart_at}",
                    s.body,
                    s.from,
                    s.to,
                    s.at,
                    m.servers.iter().position(|&(h, _)| h == victim).unwrap() + 1
                ));
            }
        }
    }
    // Every message got a receipt: nothing is left in any outbox.
    for name in &names {
        let client =
            m.sim.machine::<Tls<MeshClient>>(m.users[name]).map(Tls::inner).map_err(|_| format!("{name} is down"))?;
        if client.outbox_len() != 0 {
            let at = client.server();
            let rest: Vec<String> = client
                .outbox()
                .into_iter()
                .map(|(id, to)| {
                    format!("{id} to {to} (on {:?}, delivered {})", m.registered_at(&to), delivered.contains_key(&id))
                })
                .collect();
            return Err(format!("{name} (on {at:?}) still waits for receipts: {}", rest.join(", ")));
        }
    }
    let ghost_receipts = receipts.values().filter(|s| **s == ReceiptStatus::NoSuchUser).count();
    let ghosts = sent.iter().filter(|s| s.to.starts_with("ghost")).count();
    if ghost_receipts < ghosts {
        return Err(format!("{ghosts} messages to unknown users but {ghost_receipts} negative receipts"));
    }
    for (i, &(host, _)) in m.servers.iter().enumerate() {
        let server = m
            .sim
            .machine::<Tls<MeshServer>>(host)
            .map(Tls::inner)
            .map_err(|_| format!("server{} down at the end", i + 1))?;
        if server.seen().len() > server.seen().cap() {
            return Err(format!("server{} dedup cache over its cap", i + 1));
        }
    }
    Ok(())
}

#[test]
fn mesh_survives_faults() {
    check_seeds(&SWEEP, 0..500, mesh_sweep);
}

const SWEEP_TLS: TestId = TestId::integration("switchyard-tests", "sim_mesh", "mesh_over_tls_survives_faults");

#[test]
fn mesh_over_tls_survives_faults() {
    check_seeds(&SWEEP_TLS, 0..300, |seed| mesh_sweep_with(seed, Links::Pinned));
}

const SWEEP_CA: TestId =
    TestId::integration("switchyard-tests", "sim_mesh", "mesh_admitted_by_a_mesh_ca_survives_faults");

/// The TLS sweep with the servers admitting each other by certificates from a mesh CA
/// instead of a secret, as `mesh server --mesh-ca` runs: the same guarantees.
#[test]
fn mesh_admitted_by_a_mesh_ca_survives_faults() {
    check_seeds(&SWEEP_CA, 0..300, |seed| mesh_sweep_with(seed, Links::MeshCa));
}

/// `latency` one way with ±30 % jitter: uniform in [0.7, 1.3] × `latency`.
fn jittery(latency: Duration) -> LinkConfig {
    LinkConfig::new(latency.mul_f64(0.7), latency.mul_f64(0.6))
}

/// When `user` was first registered at a server after `after`, and where.
fn registered_after(m: &Mesh, user: &str, after: Instant) -> Option<(Instant, SocketAddr)> {
    m.sim.events::<TlsEvent<ClientEvent>>(m.users[user]).filter_map(inner).find_map(|(at, e)| match e {
        ClientEvent::Registered { server } if at >= after => Some((at, *server)),
        _ => None,
    })
}

/// The first server `user` chose.
fn first_choice(m: &Mesh, user: &str) -> Option<SocketAddr> {
    m.sim.events::<TlsEvent<ClientEvent>>(m.users[user]).filter_map(inner).find_map(|(_, e)| match e {
        ClientEvent::Selected { server, .. } => Some(*server),
        _ => None,
    })
}

/// Servers at clearly different distances (each 1.5-4x the fastest), ±30 % jitter on every
/// round trip: the client's first choice must be the truly fastest in at least 99 % of
/// seeds.
#[test]
fn fastest_selection_finds_the_truly_fastest_server() {
    let seeds = 0..300u64;
    let mut missed = Vec::new();
    for seed in seeds.clone() {
        let mut rng = Rng::new(seed ^ 0xfa57);
        let mut m = Mesh::new(seed, 4, lan());
        let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();
        let alice = m.user("Alice", vec![all[0]], Selection::fastest(), Instant::from_secs(2));
        let fastest = rng.below(4) as usize;
        let base = Duration::from_millis(rng.range_inclusive(2, 20));
        for (i, &(host, _)) in m.servers.clone().iter().enumerate() {
            let factor = if i == fastest { 1.0 } else { 1.5 + 2.5 * rng.unit_f64() };
            m.sim.set_link(alice, host, jittery(base.mul_f64(factor)));
        }
        m.run(Duration::from_secs(6));
        if first_choice(&m, "Alice") != Some(all[fastest]) {
            missed.push(seed);
        }
    }
    let total = seeds.end - seeds.start;
    let picked = total as usize - missed.len();
    eprintln!("fastest server chosen first in {picked} of {total} seeds; missed: {missed:?}");
    assert!(picked * 100 >= total as usize * 99, "only {picked} of {total} seeds chose the fastest; missed {missed:?}");
}

/// Servers within a third of each other (or within 10 ms): over one simulated hour of
/// jittery probes the client never moves.
#[test]
fn no_switch_in_an_hour_when_no_server_is_clearly_better() {
    for seed in 0..10u64 {
        let mut rng = Rng::new(seed ^ 0xf1a9);
        let mut m = Mesh::new(seed, 3, lan());
        let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();
        let alice = m.user("Alice", vec![all[0]], Selection::fastest(), Instant::from_secs(2));
        // Half the seeds: big RTTs a fifth apart (over 10 ms, under a third); the others:
        // small RTTs far apart in ratio but under 10 ms apart.
        let base = if seed % 2 == 0 { Duration::from_millis(60) } else { Duration::from_millis(2) };
        for &(host, _) in &m.servers.clone() {
            let factor = if seed % 2 == 0 { 1.0 + 0.2 * rng.unit_f64() } else { 1.0 + 1.5 * rng.unit_f64() };
            m.sim.set_link(alice, host, jittery(base.mul_f64(factor)));
        }
        m.run(Duration::from_secs(3600));
        let moves = m.events("Alice").iter().filter(|e| matches!(e, ClientEvent::Selected { .. })).count();
        let selections: Vec<String> = m
            .sim
            .events::<TlsEvent<ClientEvent>>(m.users["Alice"])
            .filter_map(inner)
            .filter(|(_, e)| matches!(e, ClientEvent::Selected { .. } | ClientEvent::Lost { .. }))
            .map(|(at, e)| format!("{at} {e:?}"))
            .collect();
        assert_eq!(moves, 1, "seed {seed}: the client moved {} times: {selections:#?}", moves - 1);
        assert!(m.registered_at("Alice").is_some(), "seed {seed}: still registered");
    }
}

const FAILOVER: TestId =
    TestId::integration("switchyard-tests", "sim_mesh", "fastest_client_fails_over_within_three_seconds");

/// A client on the fastest server talks both ways with a user elsewhere; its server
/// crashes: it is registered on another within 3 s, and every message either way is
/// delivered exactly once with a `Delivered` receipt.
fn failover_sweep(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0xfa11);
    let mut m = Mesh::new(seed, 3, jittery(Duration::from_millis(rng.range_inclusive(1, 10))));
    let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();
    let alice = m.user("Alice", vec![all[0]], Selection::fastest(), Instant::from_secs(2));
    for &(host, _) in &m.servers.clone() {
        m.sim.set_link(alice, host, jittery(Duration::from_millis(rng.range_inclusive(2, 30))));
    }
    m.run(Duration::from_secs(6));
    let home = m.registered_at("Alice").ok_or("Alice is not registered")?;
    let other = *all.iter().find(|&&a| a != home).expect("three servers");
    m.user("Bob", vec![other], Selection::InOrder, Instant::from_secs(6));
    let mut sent = Vec::new();
    let mut at = Instant::from_secs(8);
    while at < Instant::from_secs(20) {
        let (from, to) = if rng.chance(0.5) { ("Alice", "Bob") } else { ("Bob", "Alice") };
        let body = format!("{from} {}", sent.len());
        m.send_at(at, from, to, body.clone());
        sent.push((to, body));
        at = at + Duration::from_millis(rng.range_inclusive(50, 400));
    }
    let crash_at = Instant::from_millis(rng.range_inclusive(10_000, 15_000));
    let victim = m.servers.iter().find(|&&(_, a)| a == home).expect("home").0;
    m.sim.schedule(crash_at, move |sim| sim.crash(victim));
    m.sim.run_until(Instant::from_secs(40)).map_err(|e| e.to_string())?;

    let (again, on) = registered_after(&m, "Alice", crash_at).ok_or("Alice never registered again")?;
    if on == home || again.saturating_duration_since(crash_at) > Duration::from_secs(3) {
        return Err(format!("Alice was back on {on} {:?} after the crash", again.saturating_duration_since(crash_at)));
    }
    for (to, body) in &sent {
        let copies = m.received(to).iter().filter(|(_, _, b)| b == body).count();
        if copies != 1 {
            let log: Vec<String> = m
                .sim
                .events::<TlsEvent<ClientEvent>>(m.users[*to])
                .filter_map(inner)
                .filter(|(_, e)| !matches!(e, ClientEvent::Rtt { .. } | ClientEvent::Message { .. }))
                .map(|(at, e)| format!("{at} {e:?}"))
                .collect();
            let servers: Vec<String> = m
                .servers
                .iter()
                .flat_map(|&(host, addr)| {
                    m.sim.events::<TlsEvent<switchyard_core::mesh::MeshEvent>>(host).filter_map(inner).filter_map(
                        move |(at, e)| match e {
                            switchyard_core::mesh::MeshEvent::NoSuchUser { .. }
                            | switchyard_core::mesh::MeshEvent::ReceiptOverdue { .. }
                            | switchyard_core::mesh::MeshEvent::UserRegistered { .. }
                            | switchyard_core::mesh::MeshEvent::UserLeft { .. } => Some(format!("{addr} {at} {e:?}")),
                            _ => None,
                        },
                    )
                })
                .collect();
            return Err(format!("{body:?} reached {to} {copies} times; {to}: {log:#?} servers: {servers:#?}"));
        }
    }
    for user in ["Alice", "Bob"] {
        let receipts = m.receipts(user);
        if receipts.values().any(|s| *s != ReceiptStatus::Delivered) {
            return Err(format!("{user} got a negative receipt"));
        }
        let left = m.sim.machine::<Tls<MeshClient>>(m.users[user]).map(Tls::inner).map_err(|_| "down")?.outbox_len();
        if left != 0 {
            return Err(format!("{user} still waits for {left} receipts"));
        }
    }
    Ok(())
}

#[test]
fn fastest_client_fails_over_within_three_seconds() {
    check_seeds(&FAILOVER, 0..200, failover_sweep);
}

// ---------------------------------------------------------------------------------------
// Random operations against a reference model
// ---------------------------------------------------------------------------------------

/// One thing that happens in a [`Scenario`].
#[derive(Clone, Debug)]
enum Op {
    /// User `from` sends to user `to` (an index past the last user is a name nobody has),
    /// `gap` ms after the previous operation.
    Send { from: usize, to: usize, gap: u16 },
    /// Server `server` crashes and comes back `down` ms later.
    Crash { server: usize, down: u16, gap: u16 },
    /// The link between two servers is cut both ways for `ms` ms.
    Cut { a: usize, b: usize, ms: u16, gap: u16 },
}

/// A small mesh, users placed on it, and a sequence of operations.
#[derive(Clone, Debug)]
struct Scenario {
    seed: u64,
    servers: usize,
    /// Each user's first server.
    homes: Vec<usize>,
    ops: Vec<Op>,
}

impl quickcheck::Arbitrary for Op {
    fn arbitrary(g: &mut quickcheck::Gen) -> Op {
        let small = |g: &mut quickcheck::Gen, n: usize| usize::arbitrary(g) % n;
        let gap = u16::arbitrary(g) % 2_000;
        match u8::arbitrary(g) % 10 {
            0 => Op::Crash { server: small(g, 8), down: 500 + u16::arbitrary(g) % 4_000, gap },
            1 => Op::Cut { a: small(g, 8), b: small(g, 8), ms: 500 + u16::arbitrary(g) % 6_000, gap },
            _ => Op::Send { from: small(g, 8), to: small(g, 9), gap },
        }
    }
}

impl quickcheck::Arbitrary for Scenario {
    fn arbitrary(g: &mut quickcheck::Gen) -> Scenario {
        let servers = 2 + usize::arbitrary(g) % 3;
        let users = 2 + usize::arbitrary(g) % 4;
        let homes = (0..users).map(|_| usize::arbitrary(g) % servers).collect();
        let ops = (0..usize::arbitrary(g) % 30).map(|_| Op::arbitrary(g)).collect();
        Scenario { seed: u64::arbitrary(g), servers, homes, ops }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Scenario>> {
        let base = self.clone();
        Box::new(self.ops.shrink().map(move |ops| Scenario { ops, ..base.clone() }))
    }
}

/// What the reference model expects of one message.
struct Expected {
    from: String,
    to: String,
    body: String,
    /// A real user (not a name nobody has).
    real: bool,
    /// When it was sent.
    sent: Instant,
    /// The recipient's server crashed while the message could be on its way: the
    /// recipient may have been registered nowhere, so "no such user" is a right answer too.
    recipient_moved: bool,
}

/// Runs `scenario` and compares the outcome with the reference model: every message is
/// delivered at most once; a message to a real user is delivered exactly once with a
/// `Delivered` receipt (or, if its recipient's server crashed meanwhile, answered "no such
/// user" and never delivered); a message to a name nobody has gets "no such user"; and
/// nothing is left without a receipt.
fn model_holds(scenario: &Scenario) -> Result<(), String> {
    let mut m = Mesh::new(scenario.seed, scenario.servers, lan());
    let all: Vec<SocketAddr> = m.servers.iter().map(|&(_, a)| a).collect();
    let names: Vec<String> = (0..scenario.homes.len()).map(|u| format!("u{u}")).collect();
    for (name, &home) in names.iter().zip(&scenario.homes) {
        let order: Vec<SocketAddr> = (0..all.len()).map(|k| all[(home + k) % all.len()]).collect();
        m.user(name, order, Selection::InOrder, Instant::from_secs(2));
    }
    let mut at = Instant::from_secs(5);
    let mut expected = Vec::new();
    let mut crashes: Vec<(usize, Instant, Instant)> = Vec::new();
    for op in &scenario.ops {
        let (Op::Send { gap, .. } | Op::Crash { gap, .. } | Op::Cut { gap, .. }) = *op;
        at = at + Duration::from_millis(u64::from(gap));
        match *op {
            Op::Send { from, to, .. } => {
                let from = &names[from % names.len()];
                let real = to < names.len();
                let to = if real { names[to].clone() } else { "nobody".to_owned() };
                let body = format!("m{}", expected.len());
                m.send_at(at, from, &to, body.clone());
                expected.push(Expected { from: from.clone(), to, body, real, sent: at, recipient_moved: false });
            }
            Op::Crash { server, down, .. } => {
                let server = server % m.servers.len();
                let host = m.servers[server].0;
                let back = at + Duration::from_millis(u64::from(down));
                m.sim.schedule(at, move |sim| sim.crash(host));
                m.sim.schedule(back, move |sim| sim.restart(host));
                crashes.push((server, at, back));
            }
            Op::Cut { a, b, ms, .. } => {
                let (a, b) = (m.servers[a % m.servers.len()].0, m.servers[b % m.servers.len()].0);
                if a != b {
                    m.sim.schedule(at, move |sim| sim.partition(a, b, Cut::BothWays));
                    m.sim.schedule(at + Duration::from_millis(u64::from(ms)), move |sim| sim.heal(a, b, Cut::BothWays));
                }
            }
        }
    }
    // Which recipients' servers crashed while their messages could be travelling.
    for e in &mut expected {
        if let Some(u) = names.iter().position(|n| *n == e.to) {
            let home = scenario.homes[u];
            e.recipient_moved =
                crashes.iter().any(|&(s, down, _)| s == home && down <= e.sent + Duration::from_secs(15));
        }
    }
    m.sim.run_until(at + Duration::from_secs(60)).map_err(|e| e.to_string())?;

    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for name in &names {
        for (_, from, body) in m.received(name) {
            *delivered.entry(format!("{from}>{name}:{body}")).or_default() += 1;
        }
    }
    for name in &names {
        let client =
            m.sim.machine::<Tls<MeshClient>>(m.users[name]).map(Tls::inner).map_err(|_| format!("{name} is down"))?;
        if client.outbox_len() != 0 {
            let events: Vec<String> = m
                .sim
                .events::<TlsEvent<ClientEvent>>(m.users[name])
                .filter_map(inner)
                .filter(|(_, e)| !matches!(e, ClientEvent::Rtt { .. }))
                .map(|(at, e)| format!("{at} {e:?}"))
                .collect();
            return Err(format!("{name} still waits for {} receipts: {events:#?}", client.outbox_len()));
        }
    }
    for e in &expected {
        let key = format!("{}>{}:{}", e.from, e.to, e.body);
        let copies = delivered.get(&key).copied().unwrap_or(0);
        match (e.real, copies) {
            (_, n) if n > 1 => return Err(format!("{key} delivered {n} times")),
            (false, 1) => return Err(format!("{key} delivered to nobody")),
            (true, 0) if !e.recipient_moved => return Err(format!("{key} never delivered")),
            _ => {}
        }
    }
    // Receipts agree with deliveries: as many `Delivered` receipts per sender as messages
    // of theirs delivered, and a "no such user" for each message to nobody.
    for name in &names {
        let events = m.events(name);
        let ok = events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Receipt { status: ReceiptStatus::Delivered, .. }))
            .count();
        let mine = expected.iter().filter(|e| &e.from == name);
        let got = mine.clone().filter(|e| delivered.contains_key(&format!("{}>{}:{}", e.from, e.to, e.body))).count();
        if ok != got {
            return Err(format!("{name}: {ok} delivered receipts for {got} messages delivered"));
        }
        let nobody = mine.filter(|e| !e.real).count();
        let negative = events
            .iter()
            .filter(
                |e| matches!(e, ClientEvent::Receipt { status: ReceiptStatus::NoSuchUser, to, .. } if to == "nobody"),
            )
            .count();
        if negative != nobody {
            return Err(format!("{name}: {negative} negative receipts for {nobody} messages to nobody"));
        }
    }
    Ok(())
}

impl Scenario {
    /// A scenario drawn from `seed` with the same shape as the quickcheck generator, for
    /// the deterministic sweep CI runs.
    fn from_seed(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed ^ 0x6d0d);
        let servers = 2 + rng.below(3) as usize;
        let users = 2 + rng.below(4) as usize;
        let homes = (0..users).map(|_| rng.below(servers as u64) as usize).collect();
        let mut ops = Vec::new();
        for _ in 0..rng.below(30) {
            let small = |rng: &mut Rng, n: u64| rng.below(n) as usize;
            let gap = rng.below(2_000) as u16;
            ops.push(match rng.below(10) {
                0 => Op::Crash { server: small(&mut rng, 8), down: 500 + rng.below(4_000) as u16, gap },
                1 => Op::Cut { a: small(&mut rng, 8), b: small(&mut rng, 8), ms: 500 + rng.below(6_000) as u16, gap },
                _ => Op::Send { from: small(&mut rng, 8), to: small(&mut rng, 9), gap },
            });
        }
        Scenario { seed, servers, homes, ops }
    }
}

const MODEL: TestId =
    TestId::integration("switchyard-tests", "sim_mesh", "random_operations_keep_exactly_once_against_the_model");

/// 300 seeded scenarios of random sends, crashes and cuts on small meshes, each checked
/// against the reference model ([`model_holds`]). Deterministic, so CI never flakes; the
/// quickcheck explorer below draws new ones and shrinks what it finds.
#[test]
fn random_operations_keep_exactly_once_against_the_model() {
    check_seeds(&MODEL, 0..300, |seed| model_holds(&Scenario::from_seed(seed)));
}

/// The same property under quickcheck: fresh random scenarios every run, shrunk to a
/// minimal failing one. Not run by default (each run explores new cases, so a rare
/// failure would make CI flaky); run it with
/// `QUICKCHECK_TESTS=5000 cargo test -p switchyard-tests --test sim_mesh -- --ignored`
/// and add what it finds to [`model_regressions`].
#[test]
#[ignore]
fn explore_random_operations_with_quickcheck() {
    fn property(scenario: Scenario) -> quickcheck::TestResult {
        match model_holds(&scenario) {
            Ok(()) => quickcheck::TestResult::passed(),
            Err(e) => quickcheck::TestResult::error(format!("{e}\n{scenario:#?}")),
        }
    }
    let tests = std::env::var("QUICKCHECK_TESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    quickcheck::QuickCheck::new().tests(tests).quickcheck(property as fn(Scenario) -> quickcheck::TestResult);
}

/// Scenarios the explorer found, each a bug fixed since: a stale inbound link still
/// counted as a way to its server; a third server's outdated conflict recorded as where
/// a user lives; a claim held up by a partition from before a crash taking a registered
/// user's name; "no such user" answered for a user between servers, whose copy was then
/// delivered all the same.
#[test]
fn model_regressions() {
    let scenario = Scenario {
        seed: 7334854415552025005,
        servers: 3,
        homes: vec![0, 2, 0],
        ops: vec![
            Op::Send { from: 3, to: 8, gap: 780 },
            Op::Cut { a: 4, b: 3, ms: 3869, gap: 1043 },
            Op::Send { from: 5, to: 8, gap: 1446 },
            Op::Crash { server: 0, down: 1994, gap: 429 },
        ],
    };
    model_holds(&scenario).unwrap();
    let scenario = Scenario {
        seed: 11677945085116081228,
        servers: 3,
        homes: vec![0, 2, 1, 0, 2],
        ops: vec![
            Op::Cut { a: 7, b: 0, ms: 2371, gap: 961 },
            Op::Crash { server: 0, down: 501, gap: 1487 },
            Op::Send { from: 0, to: 0, gap: 587 },
        ],
    };
    model_holds(&scenario).unwrap();
    let scenario = Scenario {
        seed: 13040423554995669594,
        servers: 3,
        homes: vec![1, 0],
        ops: vec![
            Op::Crash { server: 4, down: 4387, gap: 1180 },
            Op::Send { from: 4, to: 0, gap: 697 },
            Op::Crash { server: 2, down: 2349, gap: 962 },
            Op::Send { from: 3, to: 3, gap: 728 },
            Op::Cut { a: 5, b: 6, ms: 5830, gap: 1938 },
            Op::Send { from: 3, to: 6, gap: 1668 },
            Op::Crash { server: 4, down: 2507, gap: 1067 },
            Op::Crash { server: 3, down: 2524, gap: 16 },
        ],
    };
    model_holds(&scenario).unwrap();
}
