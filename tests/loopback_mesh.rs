//! The P2P mesh on loopback under both runtimes: three `MeshServer`s and `MeshClient`s on
//! real sockets. Users on different servers exchange messages; a client that selects the
//! fastest server fails over when its server stops.

use async_channel::Receiver;
use std::net::{SocketAddr, TcpListener};
use switchyard_adapters::{Driver, EventPolicy, Running, Runtime};
use switchyard_core::mesh::client::{ClientConfig, ClientEvent, MeshClient, Selection};
use switchyard_core::mesh::server::{MeshServer, ServerConfig};
use switchyard_core::wire::mesh::ReceiptStatus;
use switchyard_core::{Env, Instant, ListenerId};
use switchyard_tests::guarded;

/// A loopback address with a port nothing listens on right now. The mesh names servers by
/// their listening address, so it must be known before the server starts.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

/// Three servers: the second and third seeded with the first only. Returns once each has
/// linked to both others, as a mesh that users join is running already.
fn start_servers<R: Runtime>(rt: &R) -> Vec<Running<MeshServer>> {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let servers: Vec<Running<MeshServer>> = addrs
        .iter()
        .enumerate()
        .map(|(i, &me)| {
            let seeds = if i == 0 { vec![] } else { vec![addrs[0]] };
            let server = MeshServer::new(Env::new(i as u64), Instant::ZERO, ServerConfig::new(me, seeds));
            rt.block_on(Driver::new(server).listen(ListenerId(0), me).start(rt.clone())).expect("start a mesh server")
        })
        .collect();
    guarded(rt, "the mesh to form", async {
        for server in &servers {
            while server.command(|m: &mut MeshServer, _| m.linked_peers().len()).await.expect("running") < 2 {
                rt.sleep_until(rt.now() + std::time::Duration::from_millis(10)).await;
            }
        }
    });
    servers
}

fn addr_of(server: &Running<MeshServer>) -> SocketAddr {
    server.local_addr(ListenerId(0)).expect("listener 0")
}

struct User {
    running: Running<MeshClient>,
    events: Receiver<ClientEvent>,
}

impl User {
    fn start<R: Runtime>(rt: &R, name: &str, servers: Vec<SocketAddr>, selection: Selection) -> User {
        let client = MeshClient::new(Env::new(100), Instant::ZERO, ClientConfig::new(name, servers, selection));
        let running = rt
            .block_on(Driver::new(client).event_policy(EventPolicy::Wait).start(rt.clone()))
            .expect("start a mesh client");
        let events = running.events();
        User { running, events }
    }

    /// Waits for the first event `pick` accepts, skipping the others.
    fn wait_for<R: Runtime, T>(&self, rt: &R, what: &str, mut pick: impl FnMut(ClientEvent) -> Option<T>) -> T {
        let seen = std::sync::Mutex::new(Vec::new());
        let found = guarded(rt, what, async {
            let deadline = rt.now() + std::time::Duration::from_secs(20);
            loop {
                let event = futures_lite::future::or(async { self.events.recv().await.ok() }, async {
                    rt.sleep_until(deadline).await;
                    None
                })
                .await;
                let event = event?;
                seen.lock().unwrap().push(format!("{event:?}"));
                if let Some(found) = pick(event) {
                    return Some(found);
                }
            }
        });
        found.unwrap_or_else(|| panic!("no {what} within 20 s; the client said: {:#?}", seen.lock().unwrap()))
    }

    fn registered<R: Runtime>(&self, rt: &R) -> SocketAddr {
        self.wait_for(rt, "registration", |e| match e {
            ClientEvent::Registered { server } => Some(server),
            ClientEvent::Refused { reason } => panic!("refused: {reason}"),
            _ => None,
        })
    }

    fn send<R: Runtime>(&self, rt: &R, to: &str, body: &str) -> uuid::Uuid {
        let (to, body) = (to.to_owned(), body.to_owned());
        rt.block_on(self.running.command(move |c: &mut MeshClient, now| c.send(now, &to, &body)))
            .expect("client running")
            .expect("message accepted")
    }
}

impl Drop for User {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

fn users_on_different_servers_exchange_messages<R: Runtime>(rt: R) {
    let servers = start_servers(&rt);
    let (s1, s3) = (addr_of(&servers[0]), addr_of(&servers[2]));
    let alice = User::start(&rt, "Alice", vec![s1], Selection::InOrder);
    let bob = User::start(&rt, "Bob", vec![s3], Selection::InOrder);
    assert_eq!(alice.registered(&rt), s1);
    assert_eq!(bob.registered(&rt), s3);
    let id = alice.send(&rt, "Bob", "Hello, how are you?");
    let got = bob.wait_for(&rt, "Bob's message", |e| match e {
        ClientEvent::Message { id, from, body } => Some((id, from, body)),
        _ => None,
    });
    assert_eq!(got, (id, "Alice".to_owned(), "Hello, how are you?".to_owned()));
    let receipt = alice.wait_for(&rt, "Alice's receipt", |e| match e {
        ClientEvent::Receipt { id, status, .. } => Some((id, status)),
        _ => None,
    });
    assert_eq!(receipt, (id, ReceiptStatus::Delivered));
    let nobody = alice.send(&rt, "Nobody", "hello?");
    let receipt = alice.wait_for(&rt, "the negative receipt", |e| match e {
        ClientEvent::Receipt { id, status, .. } => Some((id, status)),
        _ => None,
    });
    assert_eq!(receipt, (nobody, ReceiptStatus::NoSuchUser));
    for server in &servers {
        server.shutdown();
    }
}

fn a_fastest_client_fails_over_when_its_server_stops<R: Runtime>(rt: R) {
    let servers = start_servers(&rt);
    let all: Vec<SocketAddr> = servers.iter().map(addr_of).collect();
    // Carol knows only the first server, learns the others, and picks the fastest.
    let carol = User::start(&rt, "Carol", vec![all[0]], Selection::fastest());
    let first = carol.registered(&rt);
    let dying = all.iter().position(|&a| a == first).expect("one of ours");
    let others: Vec<SocketAddr> = all.iter().copied().filter(|&a| a != first).collect();
    let dave = User::start(&rt, "Dave", others.clone(), Selection::InOrder);
    dave.registered(&rt);
    servers[dying].shutdown();
    let second = carol.registered(&rt);
    assert!(others.contains(&second), "Carol moved from {first} to {second}");
    let id = dave.send(&rt, "Carol", "you moved");
    let got = carol.wait_for(&rt, "Carol's message", |e| match e {
        ClientEvent::Message { id, .. } => Some(id),
        _ => None,
    });
    assert_eq!(got, id);
    for server in &servers {
        server.shutdown();
    }
}

switchyard_tests::for_each_runtime!(
    users_on_different_servers_exchange_messages,
    a_fastest_client_fails_over_when_its_server_stops
);
