//! UDP hole punching on loopback under both runtimes: a `Rendezvous` and `Peer`s on real
//! sockets, all on 127.0.0.31 (a loopback IP no other suite uses), each on a port of its
//! own. There is no NAT, so a peer's public endpoint is its socket's own address.
//!
//! Two peers register, punch a direct path and chat; malformed and spoofed datagrams to the
//! rendezvous are dropped or refused and change nothing; a second peer claiming a taken id
//! is refused while the first keeps working.

use async_channel::Receiver;
use bytes::Bytes;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_adapters::{AsyncUdpSocket, Driver, EventPolicy, Running, Runtime};
use switchyard_core::punch::{PathKind, Peer, PeerConfig, PeerEvent, Rendezvous, RendezvousConfig, RendezvousEvent};
use switchyard_core::wire::punch::{LeaveReason, PunchMsg, Token, COOKIE_LEN, MAX_DATAGRAM};
use switchyard_core::{Env, Instant};
use switchyard_tests::guarded;

/// The loopback IP of this suite.
const HOST: [u8; 4] = [127, 0, 0, 31];

/// Messages each side sends per chat round.
const MESSAGES: usize = 20;

/// A token nobody drew: the peers' tokens come from their seeded generators.
const WRONG_TOKEN: Token = [0xA5; 16];

fn any_port() -> SocketAddr {
    SocketAddr::from((HOST, 0))
}

/// Waits for the first event `pick` accepts, skipping (and logging) the others. The log is
/// shown only when the test fails.
fn wait_for<R: Runtime, E: Debug, T>(
    rt: &R,
    who: &str,
    events: &Receiver<E>,
    what: &str,
    mut pick: impl FnMut(E) -> Option<T>,
) -> T {
    guarded(rt, &format!("{who}: {what}"), async {
        loop {
            let event = events.recv().await.unwrap_or_else(|_| panic!("{who} stopped while waiting for {what}"));
            eprintln!("{who}: {event:?}");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
}

/// A rendezvous server on its own driver; stopped when dropped.
struct Server {
    running: Running<Rendezvous>,
    events: Receiver<RendezvousEvent>,
    addr: SocketAddr,
}

impl Server {
    fn start<R: Runtime>(rt: &R) -> Server {
        let config = RendezvousConfig::default();
        let socket = config.socket;
        let rendezvous = Rendezvous::new(Env::new(100), Instant::ZERO, config);
        let running = rt
            .block_on(
                Driver::new(rendezvous).bind_udp(socket, any_port()).event_policy(EventPolicy::Wait).start(rt.clone()),
            )
            .expect("start the rendezvous");
        let addr = running.udp_local_addr(socket).expect("the rendezvous socket");
        let events = running.events();
        Server { running, events, addr }
    }

    fn wait_for<R: Runtime, T>(&self, rt: &R, what: &str, pick: impl FnMut(RendezvousEvent) -> Option<T>) -> T {
        wait_for(rt, "rendezvous", &self.events, what, pick)
    }

    fn query<R: Runtime, T: Send + 'static>(&self, rt: &R, f: impl FnOnce(&Rendezvous) -> T + Send + 'static) -> T {
        guarded(rt, "a query to the rendezvous", self.running.command(move |r: &mut Rendezvous, _| f(r)))
            .expect("the rendezvous is running")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

/// A punching peer on its own driver and socket; stopped when dropped.
struct TestPeer {
    id: String,
    running: Running<Option<Peer>>,
    events: Receiver<PeerEvent>,
    /// The peer socket's address: its private endpoint, and (no NAT) its public one.
    addr: SocketAddr,
}

impl TestPeer {
    /// Starts a peer for `id` (each peer needs a `seed` of its own: its token comes from it).
    fn start<R: Runtime>(rt: &R, id: &str, seed: u64, rendezvous: SocketAddr) -> TestPeer {
        let mut config = PeerConfig::new(id, rendezvous);
        let socket = config.socket;
        let running = rt
            .block_on(
                Driver::new(None::<Peer>)
                    .bind_udp(socket, any_port())
                    .event_policy(EventPolicy::Wait)
                    .start(rt.clone()),
            )
            .expect("start a peer");
        let addr = running.udp_local_addr(socket).expect("the peer socket");
        config.private = vec![addr];
        let start =
            running.command(move |slot: &mut Option<Peer>, now| *slot = Some(Peer::new(Env::new(seed), now, config)));
        guarded(rt, "the peer to start", start).expect("the peer is running");
        let events = running.events();
        TestPeer { id: id.to_owned(), running, events, addr }
    }

    fn wait_for<R: Runtime, T>(&self, rt: &R, what: &str, pick: impl FnMut(PeerEvent) -> Option<T>) -> T {
        wait_for(rt, &format!("peer {}", self.id), &self.events, what, pick)
    }

    fn command<R: Runtime, T: Send + 'static>(
        &self,
        rt: &R,
        f: impl FnOnce(&mut Peer, Instant) -> T + Send + 'static,
    ) -> T {
        let call = self.running.command(move |slot: &mut Option<Peer>, now| f(slot.as_mut().expect("started"), now));
        guarded(rt, "a command to a peer", call).expect("the peer is running")
    }

    /// Waits for the registration; returns the public endpoint the rendezvous saw.
    fn registered<R: Runtime>(&self, rt: &R) -> SocketAddr {
        self.wait_for(rt, "registration", |e| match e {
            PeerEvent::Registered { public } => Some(public),
            PeerEvent::RegistrationRefused { reason } => panic!("registration refused: {reason}"),
            _ => None,
        })
    }

    fn connect<R: Runtime>(&self, rt: &R, dest: &str) {
        let dest = dest.to_owned();
        self.command(rt, move |p, now| p.connect(now, &dest)).expect("a valid connect");
    }

    fn send<R: Runtime>(&self, rt: &R, body: String) {
        self.command(rt, move |p, now| p.send(now, &body)).expect("message accepted");
    }

    /// Messages sent but not acknowledged yet (for use inside a guarded wait).
    async fn unacked(&self) -> usize {
        let call = self.running.command(|slot: &mut Option<Peer>, _| slot.as_ref().map_or(0, Peer::unacked));
        call.await.expect("the peer is running")
    }

    /// Waits for the next `count` chat messages, which must all come from `from`.
    fn messages<R: Runtime>(&self, rt: &R, from: &str, count: usize) -> Vec<String> {
        let mut got = Vec::new();
        self.wait_for(rt, &format!("{count} messages from {from}"), |e| match e {
            PeerEvent::Message { from: sender, body } => {
                assert_eq!(sender, from, "a message from {sender}: {body:?}");
                got.push(body);
                (got.len() == count).then_some(())
            }
            _ => None,
        });
        got
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

/// A rendezvous and peers A and B, both registered, with the public endpoint each was told
/// equal to its socket's address, and the rendezvous reporting both.
fn start_two<R: Runtime>(rt: &R) -> (Server, TestPeer, TestPeer) {
    let server = Server::start(rt);
    let a = TestPeer::start(rt, "A", 1, server.addr);
    let b = TestPeer::start(rt, "B", 2, server.addr);
    assert_eq!(a.registered(rt), a.addr);
    assert_eq!(b.registered(rt), b.addr);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(server.wait_for(rt, "both registrations", |e| match e {
            RendezvousEvent::Registered { id, public } => Some((id, public)),
            _ => None,
        }));
    }
    seen.sort();
    assert_eq!(seen, [("A".to_owned(), a.addr), ("B".to_owned(), b.addr)]);
    (server, a, b)
}

/// `from` connects to `to`; both must be introduced to the other at its socket's address
/// and then report a direct path to exactly that address.
fn connect_directly<R: Runtime>(rt: &R, from: &TestPeer, to: &TestPeer) {
    from.connect(rt, &to.id);
    for (me, other) in [(from, to), (to, from)] {
        let mut introduced = None;
        let (peer, addr) = me.wait_for(rt, &format!("a direct path to {}", other.id), |e| match e {
            PeerEvent::Introduced { peer, public } => {
                introduced = Some((peer, public));
                None
            }
            PeerEvent::Connected { peer, addr, path: PathKind::Direct } => Some((peer, addr)),
            _ => None,
        });
        assert_eq!(introduced, Some((other.id.clone(), other.addr)), "{} was introduced to", me.id);
        assert_eq!((peer, addr), (other.id.clone(), other.addr), "{} connected to", me.id);
        let path = me.command(rt, |p, _| p.path().map(|(peer, addr, kind)| (peer.to_owned(), addr, kind)));
        assert_eq!(path, Some((other.id.clone(), other.addr, PathKind::Direct)));
    }
}

/// Each of `a` and `b` sends [`MESSAGES`] messages to the other; each arrives exactly once,
/// in order. Once both sides have every message acknowledged, one more message each way
/// must be the next thing delivered: no late duplicate came before it.
fn chat<R: Runtime>(rt: &R, a: &TestPeer, b: &TestPeer, round: &str) {
    let body = |from: &TestPeer, i: usize| format!("{round}: {} says {i}", from.id);
    for i in 0..MESSAGES {
        a.send(rt, body(a, i));
        b.send(rt, body(b, i));
    }
    for (from, to) in [(a, b), (b, a)] {
        let expected: Vec<String> = (0..MESSAGES).map(|i| body(from, i)).collect();
        assert_eq!(to.messages(rt, &from.id, MESSAGES), expected, "what {} got from {}", to.id, from.id);
    }
    guarded(rt, "every message to be acknowledged", async {
        while a.unacked().await + b.unacked().await > 0 {
            rt.sleep_until(rt.now() + Duration::from_millis(10)).await;
        }
    });
    for (from, to) in [(a, b), (b, a)] {
        let last = format!("{round}: {} is done", from.id);
        from.send(rt, last.clone());
        assert_eq!(to.messages(rt, &from.id, 1), [last]);
    }
}

fn two_peers_register_punch_directly_and_chat<R: Runtime>(rt: R) {
    let (server, a, b) = start_two(&rt);
    connect_directly(&rt, &a, &b);
    let introduced = server.wait_for(&rt, "the introduction", |e| match e {
        RendezvousEvent::Introduced { from, to, .. } => Some((from, to)),
        _ => None,
    });
    assert_eq!(introduced, ("A".to_owned(), "B".to_owned()));
    chat(&rt, &a, &b, "hello");
}

fn bad_input_to_the_rendezvous_changes_nothing<R: Runtime>(rt: R) {
    let (server, a, b) = start_two(&rt);
    connect_directly(&rt, &a, &b);
    chat(&rt, &a, &b, "before");

    let raw = guarded(&rt, "bind a raw socket", rt.udp_bind(any_port())).expect("a raw UDP socket");
    let raw_addr = raw.local_addr().expect("its address");
    let send = |bytes: &[u8]| {
        let sent = guarded(&rt, "send a raw datagram", raw.send_to(bytes, server.addr)).expect("sent");
        assert_eq!(sent, bytes.len());
    };
    let receive = || {
        guarded(&rt, "the rendezvous's answer to the raw socket", async {
            let mut buf = vec![0; 65_536];
            let (n, from) = raw.recv_from(&mut buf).await.expect("a datagram");
            assert_eq!(from, server.addr);
            PunchMsg::from_datagram(Bytes::copy_from_slice(&buf[..n])).expect("a punch message")
        })
    };

    // Dropped without an answer: garbage, and datagrams longer than any valid one.
    send(b"hello rendezvous, this is not a frame");
    send(&vec![0x18; MAX_DATAGRAM + 1]);
    send(&vec![0x18; 16 * 1024]);
    // Well formed, but without A's token. The raw socket has not proved its address, so its
    // Register gets only a Verify, smaller than it; with the cookie, it is refused as taken.
    // Every refusal longer than its request becomes a Verify too: nothing sent to it is
    // longer than what it sent (or the answers, in order, show nothing answered the garbage).
    let register =
        |cookie| PunchMsg::Register { token: WRONG_TOKEN, cookie, id: "A".to_owned(), private: vec![raw_addr] };
    send(&register([0; COOKIE_LEN]).to_bytes());
    let PunchMsg::Verify { cookie } = receive() else {
        panic!("a Register from a new address is answered with a Verify")
    };
    let data = PunchMsg::Data { session: 1, epoch: 1, seq: 0, body: "spoofed".to_owned() };
    let spoofs = [
        register(cookie),
        PunchMsg::Connect { token: WRONG_TOKEN, id: "A".to_owned(), dest: "B".to_owned() },
        PunchMsg::RelayTo { token: WRONG_TOKEN, from: "A".to_owned(), to: "B".to_owned(), inner: data.to_bytes() },
        PunchMsg::Unregister { token: WRONG_TOKEN, id: "A".to_owned() },
    ];
    let mut answers = Vec::new();
    for spoof in &spoofs {
        let bytes = spoof.to_bytes();
        send(&bytes);
        let answer = receive();
        assert!(answer.to_bytes().len() <= bytes.len(), "{spoof:?} was answered with the longer {answer:?}");
        answers.push(answer);
    }
    assert!(
        matches!(&answers[0], PunchMsg::Refused { id, reason, .. } if id == "A" && reason.contains("taken")),
        "{answers:?}"
    );
    assert!(matches!(answers[1], PunchMsg::Verify { .. }), "{answers:?}");
    assert!(
        matches!(&answers[2], PunchMsg::Refused { id, reason, .. } if id == "A" && reason.contains("not registered as A")),
        "{answers:?}"
    );
    assert!(matches!(answers[3], PunchMsg::Verify { .. }), "{answers:?}");

    // The rendezvous reports each, in order, and nothing happens to A.
    let mut reported = Vec::new();
    while reported.len() < 3 + spoofs.len() {
        reported.push(server.wait_for(&rt, "the reports of the bad datagrams", |e| match e {
            RendezvousEvent::BadDatagram { from, .. } if from == raw_addr => Some(None),
            RendezvousEvent::Refused { from, id, reason } if from == raw_addr => {
                assert_eq!(id, "A");
                Some(Some(reason))
            }
            e @ (RendezvousEvent::Moved { .. } | RendezvousEvent::Forgotten { .. }) => panic!("{e:?}"),
            _ => None,
        }));
    }
    assert_eq!(reported[..3], [None, None, None]);
    assert!(reported[3].as_deref().is_some_and(|r| r.contains("taken")), "{reported:?}");
    assert!(
        reported[4..].iter().all(|r| r.as_deref().is_some_and(|r| r.contains("not registered as A"))),
        "{reported:?}"
    );
    assert_eq!(server.query(&rt, |r| (r.registrations(), r.endpoint_of("A"))), (2, Some(a.addr)));
    assert_eq!(a.command(&rt, |p, _| p.public()), Some(a.addr));

    // A and B chat on; the spoofed relay never reached B (chat checks every message B gets).
    chat(&rt, &a, &b, "after");

    // Once B leaves (A is told at once), a newcomer is told A's real endpoint.
    b.command(&rt, |p, now| p.leave(now));
    let left = a.wait_for(&rt, "B to leave", |e| match e {
        PeerEvent::PeerLeft { peer, why, .. } => Some((peer, why)),
        _ => None,
    });
    assert_eq!(left, ("B".to_owned(), LeaveReason::Quit));
    let c = TestPeer::start(&rt, "C", 4, server.addr);
    assert_eq!(c.registered(&rt), c.addr);
    c.connect(&rt, "A");
    let told = c.wait_for(&rt, "the introduction to A", |e| match e {
        PeerEvent::Introduced { peer, public } => Some((peer, public)),
        _ => None,
    });
    assert_eq!(told, ("A".to_owned(), a.addr));
}

fn a_taken_id_is_refused_and_its_holder_keeps_working<R: Runtime>(rt: R) {
    let (server, a, b) = start_two(&rt);
    let impostor = TestPeer::start(&rt, "A", 3, server.addr);
    let reason = impostor.wait_for(&rt, "the refusal", |e| match e {
        PeerEvent::RegistrationRefused { reason } => Some(reason),
        e @ PeerEvent::Registered { .. } => panic!("the impostor was told {e:?}"),
        _ => None,
    });
    assert!(reason.contains("taken"), "{reason}");
    let refused = server.wait_for(&rt, "the refusal", |e| match e {
        RendezvousEvent::Refused { from, id, .. } => Some((from, id)),
        e @ (RendezvousEvent::Moved { .. } | RendezvousEvent::Forgotten { .. }) => panic!("{e:?}"),
        _ => None,
    });
    assert_eq!(refused, (impostor.addr, "A".to_owned()));
    assert_eq!(impostor.command(&rt, |p, _| p.public()), None);
    assert_eq!(server.query(&rt, |r| (r.registrations(), r.endpoint_of("A"))), (2, Some(a.addr)));

    connect_directly(&rt, &a, &b);
    chat(&rt, &a, &b, "still A");
}

switchyard_tests::for_each_runtime!(
    two_peers_register_punch_directly_and_chat,
    bad_input_to_the_rendezvous_changes_nothing,
    a_taken_id_is_refused_and_its_holder_keeps_working,
);
