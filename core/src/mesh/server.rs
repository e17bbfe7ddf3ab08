//! A mesh server: accepts users and other servers on one port, keeps a link to every
//! server it knows, and relays messages between users anywhere in the mesh.
//!
//! **Discovery.** The server dials its seeds (its configured peers). The first message on
//! each link is `Announce` (its own address and every server it knows); a server that
//! learns of another dials it too, so any connected set of seeds becomes a full mesh.
//! Links are pinged every `ping_interval`; one silent for `dead_after` is closed and dialled
//! again with jittered exponential backoff. A server writes to a peer on its own outbound
//! link when it is up, else on the peer's inbound link; replies go back where the request
//! came from.
//!
//! **Peers.** With a mesh secret ([`ServerConfig::peer_secret`]), a server links only
//! with servers that prove they hold it (`mesh::peer_auth`); with
//! [`ServerConfig::peers_by_certificate`], with those whose TLS client certificate is from
//! the mesh CA ([`Machine::peer_certified`]); with both, either admits. Any other server
//! is refused with `PeerRefused` and the reason.
//!
//! **Users.** `Register` at one server sends `Claim` to every linked peer; the user is
//! registered once every peer has answered `ClaimOk` (or `claim_timeout` passed: an
//! unreachable peer cannot veto). A `ClaimConflict` refuses it. Two servers claiming the
//! same name at once, or both holding it when a partition heals (each answers the other's
//! claim with a conflict), settle it by address: the lower address keeps the name. `Leave`, or the user's connection closing, sends `Gone`.
//! When a link to a peer dies, the users it held are forgotten.
//!
//! **Tokens.** A name listed in [`ServerConfig::user_tokens`] is registered only by a
//! client that proves its token ([`super::tokens`]); such a registration takes the name
//! over instead of being refused `taken`: `Takeover` in place of `Claim`, and whoever holds
//! the name (here or at a peer) is told and disconnected, so the name never has two holders
//! that messages could reach.
//!
//! **Messages.** Every message carries the sending client's UUID. A server remembers the
//! ids it has seen ([`SeenCache`]) and passes no copy on, so nothing loops; it delivers an
//! id to its users at most once, and answers a copy of a message it delivered with its
//! `Delivered` receipt again (so a client that resends after moving servers learns the
//! outcome). A recipient that moved between servers may be offered a message by both;
//! its client drops the second copy by id, so the user sees every message once. A message to a user
//! whose server is known goes there in one hop; otherwise it floods to every peer with a
//! hop limit. The origin server turns the destination's receipt into a `Receipt` for the
//! sender; a receipt that cannot go straight to the origin is relayed through other
//! servers. When no receipt comes within `flood_timeout` of a flood, the sender is told
//! "no such user" if the name is unknown and has been for `gone_grace`; otherwise nothing
//! is said and the client resends (see [`super::client`]), so a message to a user who is
//! between servers waits for it.
//!
//! **Limits** (each with its policy when reached): `max_connections` (refused at accept),
//! `max_users` names known mesh-wide (registrations refused; peers' claims beyond it are
//! accepted but not recorded, so messages to those users flood), [`MAX_SERVERS`] servers
//! (others ignored), `max_pending` messages awaiting receipts (oldest answered "no such
//! user"), the dedup cache (oldest id forgotten), names recently known (`max_users`; the
//! one that expires first goes first), and the driver's write queue per connection (a user
//! that does not read is disconnected).

use super::peer_auth::{self, Nonce};
use super::reader::MsgReader;
use super::seen::SeenCache;
use super::tokens::UserTokens;
use super::MeshEvent;
use crate::auth::Secret;
use crate::backoff::Backoff;
use crate::id::{ConnId, ListenerId};
use crate::machine::{CloseHow, Input, Machine, NetError, Output, OutputQueue, Refusal};
use crate::time::{Clock, Deadlines, Instant};
use crate::wire::frame::starts_with_text;
use crate::wire::mesh::{is_valid_name, MeshMsg, ReceiptStatus, MAX_SERVERS};
use crate::Env;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use uuid::Uuid;

/// The original's server ports: a server with no `--peer` seeds from the others.
pub const DEFAULT_PORTS: [u16; 5] = [5001, 5002, 5003, 5004, 5005];

/// Settings of a mesh server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This server's listening address: its identity in the mesh.
    pub me: SocketAddr,
    /// Servers to dial at start.
    pub seeds: Vec<SocketAddr>,
    /// How often a link is pinged.
    pub ping_interval: Duration,
    /// A link silent this long is dead.
    pub dead_after: Duration,
    /// First reconnect delay; doubles per failure.
    pub backoff_first: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// A dial that has not connected (and, with a `peer_secret`, proved the peer holds
    /// it) after this long has failed.
    pub connect_timeout: Duration,
    /// How long a registration waits for peers' answers.
    pub claim_timeout: Duration,
    /// How long the origin waits for the receipt of a message sent to a known server
    /// before it floods it instead.
    pub receipt_timeout: Duration,
    /// How long the origin waits for the receipt of a flooded message before it answers
    /// "no such user".
    pub flood_timeout: Duration,
    /// Server-to-server hops a message may take.
    pub max_hops: u8,
    /// Most connections (users, peers, probes) at once.
    pub max_connections: usize,
    /// Most user names known mesh-wide.
    pub max_users: usize,
    /// Most messages awaiting receipts.
    pub max_pending: usize,
    /// How long a message id is remembered.
    pub dedup_ttl: Duration,
    /// Most message ids remembered.
    pub dedup_cap: usize,
    /// A connection that has not said what it is after this long is closed.
    pub hello_timeout: Duration,
    /// How long a name stays "recently known" after its user left or its server went:
    /// a message to it waits for the user to come back (the client resends) instead of
    /// being answered "no such user".
    pub gone_grace: Duration,
    /// What a client that speaks text (a `telnet` user's line) is told before its
    /// connection is closed: one line, ending in a newline.
    pub text_client_reply: String,
    /// The mesh secret every server of the mesh holds. With it, a server links only with
    /// servers that prove they hold it too (see `mesh::peer_auth` and docs/PROTOCOL.md §4.3) and refuses any
    /// other that speaks the server protocol; without it, any server that connects joins.
    pub peer_secret: Option<Secret>,
    /// Names that only the holder of their token may register (`--user-token-file`, the
    /// same on every server); empty: every name is first come, first served.
    pub user_tokens: UserTokens,
    /// Admit servers by a certificate from the mesh CA: a connection whose TLS client
    /// certificate the [`Tls`](crate::tls::Tls) layer verified against the mesh CA
    /// ([`Machine::peer_certified`], from [`ClientCerts::Optional`](crate::tls::ClientCerts))
    /// may announce itself without the secret's exchange, and any other `Announce` (or,
    /// without a secret, `PeerHello`) is refused. For the dialling side, the embedder dials
    /// peers over TLS trusting only the mesh CA and presenting this server's certificate
    /// (`mesh server --mesh-ca`). With a `peer_secret` as well, either admits.
    pub peers_by_certificate: bool,
}

/// The start of what a server that admits peers by certificate tells one that has none.
const BY_CERTIFICATE: &str = "this mesh admits servers by a certificate from its CA (--mesh-ca): connect with one";

/// The default [`ServerConfig::text_client_reply`].
pub const TEXT_CLIENT_REPLY: &str =
    "error: this port speaks the Switchyard mesh protocol (binary frames, docs/PROTOCOL.md section 4), not text lines\n";

impl ServerConfig {
    /// Defaults for a server listening on `me` that dials `seeds`.
    pub fn new(me: SocketAddr, seeds: Vec<SocketAddr>) -> ServerConfig {
        ServerConfig {
            me,
            seeds,
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(3),
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            claim_timeout: Duration::from_secs(1),
            receipt_timeout: Duration::from_secs(2),
            flood_timeout: Duration::from_secs(2),
            max_hops: 3,
            max_connections: 4096,
            max_users: 100_000,
            max_pending: 65_536,
            dedup_ttl: Duration::from_secs(120),
            dedup_cap: 1 << 20,
            hello_timeout: Duration::from_secs(10),
            gone_grace: Duration::from_secs(30),
            text_client_reply: TEXT_CLIENT_REPLY.to_owned(),
            peer_secret: None,
            user_tokens: UserTokens::default(),
            peers_by_certificate: false,
        }
    }
}

/// What a connection is, once its first message said so.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Nothing but `ListServers`/`Ping` yet.
    Unknown,
    /// A user session; `name` once registered (or while its claim is pending).
    User { name: Option<String> },
    /// A user asked for `name`, which needs its token: our challenge `nonce` is out, the
    /// proof is due.
    UserProving { name: String, nonce: Nonce },
    /// Another server dialled us and said `PeerHello`; our challenge is out, its proof due.
    PeerProving { dialler: Nonce, own: Nonce },
    /// Another server proved it holds the mesh secret; its `Announce` is due.
    PeerProved,
    /// Another server dialled us.
    PeerIn { server: SocketAddr },
    /// We dialled another server.
    PeerOut { server: SocketAddr },
}

#[derive(Debug)]
struct Conn {
    role: Role,
    reader: MsgReader,
    /// The remote address of the socket, for logs.
    addr: SocketAddr,
    last_heard: Instant,
    /// Its TLS client presented a certificate the mesh CA issued (see
    /// [`ServerConfig::peers_by_certificate`]).
    certified: bool,
}

/// Our outbound link to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Waiting to dial (after a failure: backoff).
    Idle,
    /// Dialled, not connected yet.
    Connecting(ConnId),
    /// Connected, `PeerHello` with this nonce sent: the peer's challenge is due.
    Proving(ConnId, Nonce),
    /// Connected and announced.
    Up(ConnId),
}

#[derive(Debug)]
struct Peer {
    link: Link,
    /// Consecutive failed dials, for the backoff.
    backoff: Backoff,
    /// The peer's own link to us, if it has one.
    inbound: Option<ConnId>,
}

/// A registration waiting for peers' answers.
#[derive(Debug)]
struct PendingClaim {
    conn: ConnId,
    /// The user proved the name's token: peers are sent `Takeover`, not `Claim`.
    proved: bool,
    waiting: BTreeSet<SocketAddr>,
    deadline: Instant,
}

/// A message from a local user awaiting its receipt.
#[derive(Debug)]
struct PendingSend {
    /// The sender's connection.
    conn: ConnId,
    from: String,
    to: String,
    body: String,
    flooded: bool,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Periodic: pings, dead links, claim and receipt deadlines, idle hellos.
    Tick,
    /// Dial this peer (after backoff).
    Dial(SocketAddr),
    /// This dial has taken too long.
    ConnectTimeout(ConnId),
}

/// A mesh server, as a [`Machine`]. Listener 0 takes users and servers alike.
#[derive(Debug)]
pub struct MeshServer {
    config: ServerConfig,
    env: Env,
    clock: Clock,
    conns: BTreeMap<ConnId, Conn>,
    peers: BTreeMap<SocketAddr, Peer>,
    /// Registered users here → their connection.
    local: BTreeMap<String, ConnId>,
    /// Registrations waiting for peers.
    claims: BTreeMap<String, PendingClaim>,
    /// Users elsewhere → their server.
    remote: BTreeMap<String, SocketAddr>,
    /// Names known until recently (see [`ServerConfig::gone_grace`]).
    recent: RecentNames,
    pending: BTreeMap<Uuid, PendingSend>,
    /// `pending` ids in arrival order, to answer the oldest when full (answered ids are
    /// removed lazily, see `track`).
    pending_order: VecDeque<Uuid>,
    seen: SeenCache,
    timers: Deadlines<Timer>,
    out: OutputQueue<MeshEvent>,
    counts: MessageCounts,
}

/// What a mesh server has done with messages since it started, for operators (the CLI's
/// `--metrics`): counts that only grow, kept here because no event reports each one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// Copies of user messages sent on to other servers (one per server each went to).
    pub forwarded: u64,
    /// Copies dropped because their id was already seen (a server's copy of an attempt
    /// passed on before, or a client's resend of a message already delivered).
    pub deduplicated: u64,
}

impl MeshServer {
    /// A server that will dial `config.seeds` as soon as it runs.
    pub fn new(env: Env, now: Instant, config: ServerConfig) -> MeshServer {
        let seen = SeenCache::new(config.dedup_ttl, config.dedup_cap);
        let mut server = MeshServer {
            env,
            clock: Clock::new(now),
            conns: BTreeMap::new(),
            peers: BTreeMap::new(),
            local: BTreeMap::new(),
            claims: BTreeMap::new(),
            remote: BTreeMap::new(),
            recent: RecentNames::default(),
            counts: MessageCounts::default(),
            pending: BTreeMap::new(),
            pending_order: VecDeque::new(),
            seen,
            timers: Deadlines::new(),
            out: OutputQueue::default(),
            config,
        };
        for seed in server.config.seeds.clone() {
            server.learn(seed);
        }
        server.timers.set(Timer::Tick, now + server.config.ping_interval);
        server
    }

    /// Replaces the names that need a token and their tokens (a token file read again, on
    /// a config reload). Sessions already registered keep their names: one that holds a
    /// newly listed name without its token keeps it until a login with the token takes it
    /// over, as it can at any time. From now on, registrations of a listed name are
    /// challenged, and a proof is checked against the token the name has when it arrives
    /// (a name no longer listed is registered as any other).
    pub fn set_user_tokens(&mut self, tokens: UserTokens) {
        self.config.user_tokens = tokens;
    }

    /// This server's address in the mesh.
    pub fn me(&self) -> SocketAddr {
        self.config.me
    }

    /// Servers with an outbound link up.
    pub fn linked_peers(&self) -> Vec<SocketAddr> {
        self.peers.iter().filter(|(_, p)| matches!(p.link, Link::Up(_))).map(|(a, _)| *a).collect()
    }

    /// Every server this one knows of (itself excluded).
    pub fn known_peers(&self) -> Vec<SocketAddr> {
        self.peers.keys().copied().collect()
    }

    /// Users registered here.
    pub fn local_users(&self) -> Vec<String> {
        self.local.keys().cloned().collect()
    }

    /// Where this server believes `name` is: itself, a peer, or nowhere.
    pub fn location(&self, name: &str) -> Option<SocketAddr> {
        if self.local.contains_key(name) {
            return Some(self.config.me);
        }
        self.remote.get(name).copied()
    }

    /// The dedup cache (its size, cap and evictions).
    pub fn seen(&self) -> &SeenCache {
        &self.seen
    }

    /// Messages awaiting receipts.
    pub fn pending_receipts(&self) -> usize {
        self.pending.len()
    }

    /// Messages forwarded and copies deduplicated so far.
    pub fn message_counts(&self) -> MessageCounts {
        self.counts
    }

    // --- peers -------------------------------------------------------------------------

    /// Adds `server` to the known set and dials it, unless it is us, known already, or the
    /// set is full.
    fn learn(&mut self, server: SocketAddr) {
        if server == self.config.me || self.peers.contains_key(&server) || self.peers.len() + 1 >= MAX_SERVERS {
            return;
        }
        self.peers.insert(
            server,
            Peer {
                link: Link::Idle,
                backoff: Backoff::new(self.config.backoff_first, self.config.backoff_max),
                inbound: None,
            },
        );
        self.out.event(MeshEvent::PeerLearned { server });
        self.dial(server);
    }

    fn dial(&mut self, server: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&server) else { return };
        if peer.link != Link::Idle {
            return;
        }
        let conn = self.env.conn_ids.next();
        peer.link = Link::Connecting(conn);
        let now = self.clock.now();
        self.conns.insert(
            conn,
            Conn {
                role: Role::PeerOut { server },
                reader: MsgReader::default(),
                addr: server,
                last_heard: now,
                certified: false,
            },
        );
        self.timers.set(Timer::ConnectTimeout(conn), now + self.config.connect_timeout);
        self.out.push(Output::Connect { conn, to: server });
    }

    /// Our outbound link to `server` failed or died: forget its users if we have no other
    /// way to it, and dial again after a backoff.
    fn link_down(&mut self, server: SocketAddr, reason: &str) {
        let now = self.clock.now();
        let Some(peer) = self.peers.get_mut(&server) else { return };
        let was_up = matches!(peer.link, Link::Up(_));
        peer.link = Link::Idle;
        if was_up {
            peer.backoff.reset();
        }
        let delay = peer.backoff.next_delay(&mut self.env.rng);
        self.timers.set(Timer::Dial(server), now + delay);
        if was_up {
            self.out.event(MeshEvent::PeerDown { server, reason: reason.to_owned() });
        }
        if self.channel(server).is_none() {
            self.release_claims_waiting_on(server);
        }
    }

    /// Forgets where users of `server` were. Called when our link to it comes up: it
    /// claims its users again right after, so entries left from before (a crash, a
    /// partition) do not outlive it. Entries are *not* dropped when a link dies: the users
    /// may still be reachable through other servers, and a message to them floods.
    fn forget_users_at(&mut self, server: SocketAddr) {
        let gone: Vec<String> = self.remote.iter().filter(|(_, h)| **h == server).map(|(n, _)| n.clone()).collect();
        for name in gone {
            self.remote.remove(&name);
            self.forgot(name);
        }
    }

    /// `name` is no longer known anywhere, as of now.
    fn forgot(&mut self, name: String) {
        let (now, grace, cap) = (self.clock.now(), self.config.gone_grace, self.config.max_users);
        self.recent.insert(now + grace, name, cap);
    }

    /// The connection to write to `server` on: our link if up, else its link to us if we
    /// heard on it within `dead_after` (the peer pings on it every `ping_interval`, so a
    /// silent one leads to a server that is gone or cut off). `None`: unreachable now.
    fn channel(&self, server: SocketAddr) -> Option<ConnId> {
        let peer = self.peers.get(&server)?;
        match peer.link {
            Link::Up(conn) => Some(conn),
            _ => peer.inbound.filter(|conn| {
                let now = self.clock.now();
                self.conns
                    .get(conn)
                    .is_some_and(|c| now.saturating_duration_since(c.last_heard) < self.config.dead_after)
            }),
        }
    }

    fn send(&mut self, conn: ConnId, msg: &MeshMsg) {
        self.out.write(conn, msg.to_bytes());
    }

    fn send_to_server(&mut self, server: SocketAddr, msg: &MeshMsg) -> bool {
        match self.channel(server) {
            Some(conn) => {
                if let MeshMsg::Forward { .. } = msg {
                    self.counts.forwarded += 1;
                }
                self.send(conn, msg);
                true
            }
            None => false,
        }
    }

    /// Servers we can write to now.
    fn reachable_peers(&self) -> Vec<SocketAddr> {
        self.peers.keys().copied().filter(|&s| self.channel(s).is_some()).collect()
    }

    fn announce(&self) -> MeshMsg {
        MeshMsg::Announce { server: self.config.me, known: self.peers.keys().copied().collect() }
    }

    /// This server and the peers it can reach now: a client fails over along this list, so
    /// a configured peer that never answered is not on it.
    fn server_list(&self) -> MeshMsg {
        let mut servers = vec![self.config.me];
        servers.extend(self.reachable_peers().into_iter().take(MAX_SERVERS - 1));
        MeshMsg::ServerList { servers }
    }

    /// A peer's identity is known on `conn` and it can be written to: tell it our users.
    fn peer_reachable(&mut self, server: SocketAddr, conn: ConnId) {
        let claims: Vec<MeshMsg> = self
            .local
            .keys()
            .chain(self.claims.keys())
            .map(|name| MeshMsg::Claim { name: name.clone(), home: self.config.me })
            .collect();
        for claim in claims {
            self.send(conn, &claim);
        }
        // A pending registration now waits for this peer too.
        let deadline = self.clock.now() + self.config.claim_timeout;
        for claim in self.claims.values_mut() {
            if claim.waiting.insert(server) {
                claim.deadline = claim.deadline.max(deadline);
            }
        }
    }

    // --- connections -------------------------------------------------------------------

    fn close(&mut self, conn: ConnId, how: CloseHow, reason: &str) {
        if self.conns.contains_key(&conn) {
            self.out.close(conn, how);
        }
        self.gone(conn, reason);
    }

    /// `conn` is finished (closed by us or by the peer): undo whatever it was.
    fn gone(&mut self, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.remove(&conn) else { return };
        self.timers.cancel(Timer::ConnectTimeout(conn));
        match c.role {
            Role::Unknown | Role::UserProving { .. } | Role::PeerProving { .. } | Role::PeerProved => {}
            Role::User { name } => {
                if let Some(name) = name {
                    self.user_left(&name, conn, reason);
                }
                // Its messages' receipts have nowhere to go; the client resends after it
                // reconnects, and the destinations' dedup keeps that exactly-once.
                self.pending.retain(|_, p| p.conn != conn);
            }
            Role::PeerIn { server } => {
                if let Some(peer) = self.peers.get_mut(&server) {
                    if peer.inbound == Some(conn) {
                        peer.inbound = None;
                    }
                }
                if self.channel(server).is_none() {
                    self.release_claims_waiting_on(server);
                }
            }
            Role::PeerOut { server } => {
                let ours = self.peers.get(&server).is_some_and(
                    |p| matches!(p.link, Link::Connecting(c) | Link::Proving(c, _) | Link::Up(c) if c == conn),
                );
                if ours {
                    self.link_down(server, reason);
                }
            }
        }
    }

    fn user_left(&mut self, name: &str, conn: ConnId, reason: &str) {
        if self.local.get(name) == Some(&conn) {
            self.local.remove(name);
            self.forgot(name.to_owned());
            let gone = MeshMsg::Gone { name: name.to_owned(), home: self.config.me };
            for server in self.reachable_peers() {
                self.send_to_server(server, &gone);
            }
            self.out.event(MeshEvent::UserLeft { name: name.to_owned(), reason: reason.to_owned() });
        } else if self.claims.get(name).is_some_and(|c| c.conn == conn) {
            self.claims.remove(name);
        }
    }

    fn protocol_error(&mut self, conn: ConnId, reason: String) {
        let addr = self.conns.get(&conn).map(|c| c.addr);
        if let Some(addr) = addr {
            self.out.event(MeshEvent::ProtocolError { peer: addr, reason: reason.clone() });
        }
        self.close(conn, CloseHow::Abort, &format!("protocol error: {reason}"));
    }

    fn received(&mut self, conn: ConnId, bytes: &[u8]) {
        let now = self.clock.now();
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.role == Role::Unknown && c.reader.is_empty() && starts_with_text(bytes) {
            return self.text_client(conn, bytes);
        }
        c.last_heard = now;
        c.reader.push(bytes);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else { return };
            match c.reader.next_msg() {
                None => return,
                Some(Ok(msg)) => self.message(conn, msg),
                Some(Err(e)) => return self.protocol_error(conn, e.to_string()),
            }
        }
    }

    /// A client typed text at this port (`telnet HOST 5001` expecting the hello service):
    /// tell it in words what the port speaks, then close once that is sent.
    fn text_client(&mut self, conn: ConnId, first: &[u8]) {
        let shown = &first[..first.len().min(40)];
        let reason = format!("sent text, not mesh frames (first bytes \"{}\"); told it so", shown.escape_ascii());
        if let Some(c) = self.conns.get(&conn) {
            self.out.event(MeshEvent::ProtocolError { peer: c.addr, reason: reason.clone() });
        }
        self.out.write(conn, Bytes::from(self.config.text_client_reply.clone()));
        self.close(conn, CloseHow::Graceful, &reason);
    }

    fn message(&mut self, conn: ConnId, msg: MeshMsg) {
        let Some(c) = self.conns.get(&conn) else { return };
        let role = c.role.clone();
        match (role, msg) {
            (_, MeshMsg::Ping { token }) => self.send(conn, &MeshMsg::Pong { token }),
            (_, MeshMsg::Pong { .. }) => {}
            (_, MeshMsg::ListServers) => {
                let list = self.server_list();
                self.send(conn, &list);
            }
            (Role::Unknown, MeshMsg::Register { name }) => {
                self.set_role(conn, Role::User { name: None });
                self.asked_for(conn, name);
            }
            (Role::UserProving { name, nonce: ours }, MeshMsg::RegisterProof { nonce: theirs, proof }) => {
                self.set_role(conn, Role::User { name: None });
                if !self.config.user_tokens.lists(&name) {
                    // Unlisted (by a reload) since the challenge: any client may have it.
                    self.register(conn, name, false);
                } else if self.config.user_tokens.check(&name, &ours, &theirs, &proof) {
                    self.register(conn, name, true);
                } else {
                    self.refuse(conn, name.clone(), format!("wrong token for {name}"));
                    self.close(conn, CloseHow::Graceful, "wrong token");
                }
            }
            (Role::Unknown, MeshMsg::PeerHello { nonce }) => match self.config.peer_secret.clone() {
                None if self.config.peers_by_certificate => self.refuse_peer(conn, &format!("{BY_CERTIFICATE}, not by a secret")),
                None => self.refuse_peer(conn, "this server has no mesh secret; give every server of the mesh the same --mesh-secret-file, or none"),
                Some(secret) => {
                    let (own, challenge) = peer_auth::challenge(&secret, &mut self.env.rng, &nonce);
                    self.set_role(conn, Role::PeerProving { dialler: nonce, own });
                    self.send(conn, &challenge);
                }
            },
            (Role::PeerProving { dialler, own }, MeshMsg::PeerProof { proof }) => {
                let proved = self.config.peer_secret.as_ref().is_some_and(|s| peer_auth::check(s, &own, &dialler, &proof));
                if proved {
                    self.set_role(conn, Role::PeerProved);
                } else {
                    self.refuse_peer(conn, "wrong mesh secret: the two servers hold different ones");
                }
            }
            (Role::Unknown, MeshMsg::Announce { .. }) if !self.may_announce(conn) => {
                let reason = self.announce_refusal();
                self.refuse_peer(conn, &reason)
            }
            (Role::PeerOut { server }, MeshMsg::PeerChallenge { nonce, proof }) => self.on_challenge(conn, server, nonce, proof),
            (role, MeshMsg::PeerRefused { reason }) if !matches!(role, Role::User { .. }) => {
                if let Role::PeerOut { server } = role {
                    // Refused is a failed dial, not a link that was up and died: the backoff
                    // grows instead of starting again from its first delay.
                    if let Some(peer) = self.peers.get_mut(&server) {
                        peer.link = Link::Connecting(conn);
                    }
                }
                let reason = format!("it refused us: {reason}");
                self.out.event(MeshEvent::PeerRefused { peer: c.addr, reason: reason.clone() });
                self.close(conn, CloseHow::Graceful, &reason);
            }
            (Role::PeerOut { server }, _) if !self.link_is_up(server, conn) => {
                self.protocol_error(conn, "a server sent peer messages before proving the mesh secret".into())
            }
            (Role::Unknown | Role::PeerProved, MeshMsg::Announce { server, known }) => {
                self.set_role(conn, Role::PeerIn { server });
                self.learn(server);
                // A server announcing itself claims all its users next: what we had
                // recorded there may predate a restart.
                self.forget_users_at(server);
                if let Some(peer) = self.peers.get_mut(&server) {
                    peer.inbound = Some(conn);
                }
                self.learn_all(known);
                self.peer_reachable(server, conn);
            }
            (Role::PeerIn { .. } | Role::PeerOut { .. }, MeshMsg::Announce { server: _, known }) => {
                self.learn_all(known)
            }
            (Role::User { name: None }, MeshMsg::Register { name }) if !self.is_pending(conn) => {
                self.asked_for(conn, name)
            }
            (Role::User { name: Some(held) }, MeshMsg::Register { name }) => {
                let reason = format!("already registered as {held}");
                self.send(conn, &MeshMsg::RegisterRefused { name, reason });
            }
            (Role::User { name: Some(from) }, MeshMsg::Send { id, to, body })
                if self.local.get(&from) == Some(&conn) =>
            {
                self.user_send(conn, id, from, to, body)
            }
            (Role::User { .. }, MeshMsg::Send { id, .. }) => {
                let status = ReceiptStatus::NoSuchUser;
                self.send(conn, &MeshMsg::Receipt { id, status });
                self.protocol_error(conn, "sent a message before registering".into());
            }
            // A client may leave before it registered: one asked for a token it lacks does.
            (Role::Unknown | Role::User { .. } | Role::UserProving { .. }, MeshMsg::Leave) => {
                self.close(conn, CloseHow::Graceful, "left")
            }
            (Role::PeerIn { server } | Role::PeerOut { server }, msg) => self.peer_message(conn, server, msg),
            (_, msg) => {
                let (kind, subtype) = msg.kind();
                self.protocol_error(conn, format!("unexpected message type {} subtype {subtype}", kind.0));
            }
        }
    }

    /// True when a server may announce itself on `conn` with no secret's exchange before:
    /// its certificate is from the mesh CA, or the mesh authenticates no server at all.
    fn may_announce(&self, conn: ConnId) -> bool {
        if self.config.peers_by_certificate {
            return self.conns.get(&conn).is_some_and(|c| c.certified);
        }
        self.config.peer_secret.is_none()
    }

    /// Why an `Announce` that [`Self::may_announce`] refuses is refused: what would admit it.
    fn announce_refusal(&self) -> String {
        match (self.config.peers_by_certificate, self.config.peer_secret.is_some()) {
            (true, true) => format!("{BY_CERTIFICATE}, or prove the mesh secret (PeerHello) first"),
            (true, false) => BY_CERTIFICATE.to_owned(),
            (false, _) => {
                "this mesh has a secret: a server proves it holds it (PeerHello) before it announces itself".to_owned()
            }
        }
    }

    /// True when `conn` is our link to `server` and it is up (connected and, with a mesh
    /// secret, the peer proved it).
    fn link_is_up(&self, server: SocketAddr, conn: ConnId) -> bool {
        self.peers.get(&server).is_some_and(|p| p.link == Link::Up(conn))
    }

    /// Our link to `server` is connected: with a mesh secret, prove ourselves first (the
    /// peer's challenge brings the link up); without one, it is up now.
    fn link_connected(&mut self, server: SocketAddr, conn: ConnId) {
        if self.config.peer_secret.is_none() {
            return self.link_up(server, conn);
        }
        let nonce = peer_auth::nonce(&mut self.env.rng);
        if let Some(peer) = self.peers.get_mut(&server) {
            peer.link = Link::Proving(conn, nonce);
        }
        self.send(conn, &MeshMsg::PeerHello { nonce });
    }

    /// The peer at `server` answered our `PeerHello`: if its proof is right, prove ourselves
    /// and bring the link up; else refuse it.
    fn on_challenge(&mut self, conn: ConnId, server: SocketAddr, nonce: Nonce, proof: Nonce) {
        let own = match self.peers.get(&server).map(|p| p.link) {
            Some(Link::Proving(c, own)) if c == conn => own,
            _ => return self.protocol_error(conn, "a challenge that answers no hello of ours".into()),
        };
        let answer = self.config.peer_secret.as_ref().and_then(|s| peer_auth::answer(s, &own, &nonce, &proof));
        match answer {
            Some(answer) => {
                self.send(conn, &answer);
                self.link_up(server, conn);
            }
            None => self.refuse_peer(conn, "wrong mesh secret: the two servers hold different ones"),
        }
    }

    /// Our link to `server` is up: announce ourselves and claim our users there.
    fn link_up(&mut self, server: SocketAddr, conn: ConnId) {
        self.timers.cancel(Timer::ConnectTimeout(conn));
        if let Some(peer) = self.peers.get_mut(&server) {
            peer.link = Link::Up(conn);
        }
        self.forget_users_at(server);
        let announce = self.announce();
        self.send(conn, &announce);
        self.out.event(MeshEvent::PeerUp { server });
        self.peer_reachable(server, conn);
    }

    /// `conn` ended for a TLS reason (the layer's reasons start `TLS: `) before it said what
    /// it is, or as our dial. In a mesh that admits servers by certificate that is how a
    /// server with a certificate from another CA is refused, at either end, so it is told
    /// once per attempt: as a refused peer for our dial, which is a server link; as a failed
    /// handshake for a connection that came in, which may as well have been a user's.
    fn refused_by_tls(&mut self, conn: ConnId, error: &NetError) {
        let NetError::Other(reason) = error else { return };
        let Some(c) = self.conns.get(&conn) else { return };
        if !self.config.peers_by_certificate || !reason.starts_with("TLS: ") {
            return;
        }
        let (peer, reason) = (c.addr, reason.clone());
        match c.role {
            Role::PeerOut { .. } => self.out.event(MeshEvent::PeerRefused { peer, reason }),
            Role::Unknown => self.out.event(MeshEvent::HandshakeFailed { peer, reason }),
            _ => {}
        }
    }

    /// Refuses the server link on `conn`: tells the other side why, then closes.
    fn refuse_peer(&mut self, conn: ConnId, reason: &str) {
        let Some(addr) = self.conns.get(&conn).map(|c| c.addr) else { return };
        self.out.event(MeshEvent::PeerRefused { peer: addr, reason: format!("we refused it: {reason}") });
        self.send(conn, &MeshMsg::PeerRefused { reason: reason.to_owned() });
        self.close(conn, CloseHow::Graceful, &format!("refused: {reason}"));
    }

    fn set_role(&mut self, conn: ConnId, role: Role) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.role = role;
        }
    }

    fn learn_all(&mut self, servers: Vec<SocketAddr>) {
        let before = self.peers.len();
        for server in servers {
            self.learn(server);
        }
        if self.peers.len() > before {
            // Tell everyone we link to about the newcomers, so the mesh closes quickly.
            let announce = self.announce();
            for server in self.linked_peers() {
                self.send_to_server(server, &announce);
            }
        }
    }

    fn is_pending(&self, conn: ConnId) -> bool {
        self.claims.values().any(|c| c.conn == conn)
    }

    // --- users -------------------------------------------------------------------------

    fn refuse(&mut self, conn: ConnId, name: String, reason: String) {
        self.out.event(MeshEvent::RegisterRefused { name: name.clone(), reason: reason.clone() });
        self.send(conn, &MeshMsg::RegisterRefused { name, reason });
    }

    fn known_names(&self) -> usize {
        self.local.len() + self.claims.len() + self.remote.len()
    }

    /// A user on `conn` asked for `name`: a name with a token is challenged first, any
    /// other registered at once.
    fn asked_for(&mut self, conn: ConnId, name: String) {
        if !self.config.user_tokens.lists(&name) {
            return self.register(conn, name, false);
        }
        let nonce = peer_auth::nonce(&mut self.env.rng);
        self.set_role(conn, Role::UserProving { name, nonce });
        self.send(conn, &MeshMsg::RegisterChallenge { nonce });
    }

    /// Registers `name` for the user on `conn`. A `proved` user (it proved the name's
    /// token) takes the name from whoever holds it; any other is refused a name held live.
    fn register(&mut self, conn: ConnId, name: String, proved: bool) {
        if !is_valid_name(&name) {
            return self.refuse(conn, name, "invalid name".into());
        }
        if proved {
            let reason = taken_over(&name, self.config.me);
            self.give_up_name(&name, &reason, &reason);
        }
        // A name held at a server we cannot reach is not live: its user is moving away
        // from a server that died (the old entry goes when that server is back).
        let live = |at: SocketAddr| at == self.config.me || self.channel(at).is_some();
        if let Some(at) = self.location(&name).filter(|&at| live(at) && !proved) {
            return self.refuse(conn, name.clone(), format!("name {name} is taken (at {at})"));
        }
        if self.claims.contains_key(&name) {
            return self.refuse(conn, name.clone(), format!("name {name} is being registered by someone else"));
        }
        let known = proved && self.remote.remove(&name).is_some();
        if self.known_names() >= self.config.max_users && !known {
            return self.refuse(conn, name, format!("the mesh is full ({} users)", self.config.max_users));
        }
        self.set_role(conn, Role::User { name: Some(name.clone()) });
        let waiting: BTreeSet<SocketAddr> = self.reachable_peers().into_iter().collect();
        let (to_claim, home) = (name.clone(), self.config.me);
        let claim =
            if proved { MeshMsg::Takeover { name: to_claim, home } } else { MeshMsg::Claim { name: to_claim, home } };
        for &server in &waiting {
            self.send_to_server(server, &claim);
        }
        let deadline = self.clock.now() + self.config.claim_timeout;
        self.claims.insert(name.clone(), PendingClaim { conn, proved, waiting, deadline });
        self.settle_claim(&name);
    }

    /// Registers `name` if no peer is left to answer its claim.
    fn settle_claim(&mut self, name: &str) {
        let now = self.clock.now();
        let Some(claim) = self.claims.get(name) else { return };
        if !claim.waiting.is_empty() && claim.deadline > now {
            return;
        }
        let conn = claim.conn;
        self.claims.remove(name);
        self.local.insert(name.to_owned(), conn);
        self.send(conn, &MeshMsg::Registered { name: name.to_owned() });
        self.out.event(MeshEvent::UserRegistered { name: name.to_owned() });
    }

    fn release_claims_waiting_on(&mut self, server: SocketAddr) {
        let names: Vec<String> =
            self.claims.iter_mut().filter_map(|(n, c)| c.waiting.remove(&server).then(|| n.clone())).collect();
        for name in names {
            self.settle_claim(&name);
        }
    }

    /// A local registration or user lost `name` to `holder`; `record` says whether to note
    /// the holder as the name's home.
    fn lose_name(&mut self, name: &str, holder: SocketAddr, record: bool) {
        // A partition healed with the name held on both sides: the lower address keeps it.
        let taken = format!("name {name} is taken (at {holder})");
        self.give_up_name(name, &taken, &format!("name {name} is also held at {holder}, which keeps it"));
        if record && self.known_names() < self.config.max_users {
            self.remote.insert(name.to_owned(), holder);
        }
    }

    /// Gives up this server's pending registration of `name` (refused with `pending`) or
    /// its registered user (told `held` and disconnected).
    fn give_up_name(&mut self, name: &str, pending: &str, held: &str) {
        if let Some(claim) = self.claims.remove(name) {
            self.refuse(claim.conn, name.to_owned(), pending.to_owned());
        } else if let Some(conn) = self.local.remove(name) {
            self.set_role(conn, Role::User { name: None });
            self.out.event(MeshEvent::UserLeft { name: name.to_owned(), reason: held.to_owned() });
            self.send(conn, &MeshMsg::RegisterRefused { name: name.to_owned(), reason: held.to_owned() });
            self.close(conn, CloseHow::Graceful, "name lost");
        }
    }

    /// A peer's user proved `name`'s token at `home`: the name is `home`'s now, whoever
    /// held it, unless our own proved registration of it is pending and our address is
    /// lower (two logins with the token at once: the lower address keeps the name, as for
    /// claims). A name our tokens do not list is only claimed.
    fn on_takeover(&mut self, conn: ConnId, name: String, home: SocketAddr) {
        let me = self.config.me;
        if !self.config.user_tokens.lists(&name) {
            return self.on_claim(conn, name, home);
        }
        if self.claims.get(&name).is_some_and(|c| c.proved) && me < home {
            return self.send(conn, &MeshMsg::ClaimConflict { name, holder: me });
        }
        let reason = taken_over(&name, home);
        self.give_up_name(&name, &reason, &reason);
        self.accept_claim(conn, name, home);
    }

    /// Records `home` as where `name` lives (a name already known, or one more within
    /// `max_users`) and answers the claimant `ClaimOk`.
    fn accept_claim(&mut self, conn: ConnId, name: String, home: SocketAddr) {
        if self.remote.contains_key(&name) || self.known_names() < self.config.max_users {
            self.remote.insert(name.clone(), home);
        }
        self.send(conn, &MeshMsg::ClaimOk { name, home });
    }

    fn on_claim(&mut self, conn: ConnId, name: String, home: SocketAddr) {
        let me = self.config.me;
        // A user registered here is never given up on a claim alone: the claim may be news
        // from before a crash, held up by a partition. If the claimant holds the name too
        // (a healed partition), it answers our claim with a conflict, and the lower address
        // keeps the name then. Nor is a pending registration that proved the name's token.
        if self.local.contains_key(&name) || self.claims.get(&name).is_some_and(|c| c.proved) {
            return self.send(conn, &MeshMsg::ClaimConflict { name, holder: me });
        }
        let holder = if self.claims.contains_key(&name) {
            Some(me)
        } else {
            self.remote.get(&name).copied().filter(|&h| h != home && self.channel(h).is_some())
        };
        match holder {
            Some(holder) if holder < home => {
                self.send(conn, &MeshMsg::ClaimConflict { name, holder });
            }
            Some(holder) if holder == me => {
                self.lose_name(&name, home, true);
                self.send(conn, &MeshMsg::ClaimOk { name, home });
            }
            _ => self.accept_claim(conn, name, home),
        }
    }

    // --- messages ----------------------------------------------------------------------

    fn user_send(&mut self, conn: ConnId, id: Uuid, from: String, to: String, body: String) {
        let now = self.clock.now();
        if self.seen.delivered(&id) {
            self.counts.deduplicated += 1;
            return self.send(conn, &MeshMsg::Receipt { id, status: ReceiptStatus::Delivered });
        }
        if let Some(&recipient) = self.local.get(&to) {
            self.seen.insert(now, id);
            self.send(recipient, &MeshMsg::Deliver { id, from, body });
            self.seen.mark_delivered(&id);
            self.send(conn, &MeshMsg::Receipt { id, status: ReceiptStatus::Delivered });
            return self.out.event(MeshEvent::Delivered { id, to });
        }
        if let Some(p) = self.pending.get_mut(&id) {
            // A resend while the first is on its way: its receipt will come to this session.
            p.conn = conn;
            return;
        }
        let send = PendingSend { conn, from, to, body, flooded: false, deadline: now };
        self.route(id, send);
    }

    /// Routes a message from a user here as a new attempt: in one hop to the recipient's
    /// server if it is known and reachable (unless `send.flooded` asks for a flood), else
    /// to every reachable peer; then waits for its receipt. Each attempt is a fresh copy
    /// for every server, so one that only passed on an earlier attempt, or dropped it,
    /// delivers this one if the recipient is there now.
    fn route(&mut self, id: Uuid, mut send: PendingSend) {
        let now = self.clock.now();
        let attempt = self.seen.next_attempt(&id);
        self.seen.record(now, id, attempt);
        let forward = MeshMsg::Forward {
            id,
            attempt,
            hops: self.config.max_hops,
            origin: self.config.me,
            from: send.from.clone(),
            to: send.to.clone(),
            body: send.body.clone(),
        };
        let home = self.remote.get(&send.to).copied().filter(|&h| self.channel(h).is_some());
        match home.filter(|_| !send.flooded) {
            Some(home) => {
                self.send_to_server(home, &forward);
                send.deadline = now + self.config.receipt_timeout;
            }
            None => {
                self.flood(&forward, &[]);
                send.flooded = true;
                send.deadline = now + self.config.flood_timeout;
            }
        }
        self.track(id, send);
    }

    fn track(&mut self, id: Uuid, send: PendingSend) {
        let cap = self.config.max_pending.max(1);
        while self.pending.len() >= cap {
            // Ids answered meanwhile are still in the order: they are skipped here.
            let Some(oldest) = self.pending_order.pop_front() else { break };
            if let Some(p) = self.pending.remove(&oldest) {
                self.send(p.conn, &MeshMsg::Receipt { id: oldest, status: ReceiptStatus::NoSuchUser });
            }
        }
        if self.pending.insert(id, send).is_none() {
            self.pending_order.push_back(id);
        }
        // Answered ids leave the order lazily; drop them in one pass once they are half of
        // it, so it stays within twice the cap and a receipt costs no scan.
        if self.pending_order.len() >= 2 * cap {
            let pending = &self.pending;
            self.pending_order.retain(|id| pending.contains_key(id));
        }
    }

    /// Sends `msg` to every reachable peer except `skip`.
    fn flood(&mut self, msg: &MeshMsg, skip: &[SocketAddr]) {
        for server in self.reachable_peers() {
            if !skip.contains(&server) {
                self.send_to_server(server, msg);
            }
        }
    }

    fn peer_message(&mut self, conn: ConnId, server: SocketAddr, msg: MeshMsg) {
        match msg {
            MeshMsg::Claim { name, home } => self.on_claim(conn, name, home),
            MeshMsg::Takeover { name, home } => self.on_takeover(conn, name, home),
            MeshMsg::ClaimOk { name, home } if home == self.config.me => {
                if let Some(claim) = self.claims.get_mut(&name) {
                    claim.waiting.remove(&server);
                }
                self.settle_claim(&name);
            }
            MeshMsg::ClaimOk { .. } => {}
            MeshMsg::ClaimConflict { name, holder } => {
                // A pending registration yields to any conflict. A registered user yields
                // only to the holder's own word (a healed partition), never to a third
                // server's, which may predate a crash of the holder; and where a user
                // lives is recorded only from its own server, for the same reason.
                let first_hand = holder == server;
                let registered_loses = first_hand && holder < self.config.me;
                if holder != self.config.me && (self.claims.contains_key(&name) || registered_loses) {
                    self.lose_name(&name, holder, first_hand);
                }
            }
            MeshMsg::Gone { name, home } => {
                if self.remote.get(&name) == Some(&home) {
                    self.remote.remove(&name);
                    self.forgot(name);
                }
            }
            MeshMsg::Forward { id, attempt, hops, origin, from, to, body } => {
                self.on_forward(server, id, attempt, hops, origin, from, to, body)
            }
            MeshMsg::ReceiptRelay { id, status, hops, origin } if origin != self.config.me => {
                // Each relayed receipt is passed on once: its id, with the top bit of the
                // UUID's first byte flipped, marks it in the dedup cache.
                let mut mark = *id.as_bytes();
                mark[0] ^= 0x80;
                if self.seen.insert(self.clock.now(), Uuid::from_bytes(mark)) {
                    if let Some(hops) = hops.checked_sub(1) {
                        self.receipt_to(origin, id, status, hops, &[server]);
                    }
                }
            }
            MeshMsg::Receipt { id, status } | MeshMsg::ReceiptRelay { id, status, .. } => self.peer_receipt(id, status),
            msg => {
                let (kind, subtype) = msg.kind();
                self.protocol_error(
                    conn,
                    format!("unexpected message type {} subtype {subtype} from a server", kind.0),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_forward(
        &mut self,
        via: SocketAddr,
        id: Uuid,
        attempt: u8,
        hops: u8,
        origin: SocketAddr,
        from: String,
        to: String,
        body: String,
    ) {
        let now = self.clock.now();
        let new = self.seen.record(now, id, attempt);
        if self.seen.delivered(&id) {
            self.counts.deduplicated += 1;
            return self.receipt_to(origin, id, ReceiptStatus::Delivered, self.config.max_hops, &[via]);
        }
        // Copies of one attempt are passed on and delivered once. A later attempt may find
        // the recipient here though an earlier one did not (it moved here since); if it
        // got the message on its old server, its client drops this copy by id.
        if !new {
            self.counts.deduplicated += 1;
            return;
        }
        if let Some(&recipient) = self.local.get(&to) {
            self.send(recipient, &MeshMsg::Deliver { id, from, body });
            self.seen.mark_delivered(&id);
            self.receipt_to(origin, id, ReceiptStatus::Delivered, self.config.max_hops, &[via]);
            return self.out.event(MeshEvent::Delivered { id, to });
        }
        let Some(hops) = hops.checked_sub(1) else { return };
        let forward = MeshMsg::Forward { id, attempt, hops, origin, from, to: to.clone(), body };
        match self.remote.get(&to).copied().filter(|&h| h != via && h != origin && self.channel(h).is_some()) {
            Some(home) => {
                self.send_to_server(home, &forward);
            }
            None => self.flood(&forward, &[via, origin]),
        }
    }

    /// A receipt for a message from a user here: hand it to the user's session.
    fn peer_receipt(&mut self, id: Uuid, status: ReceiptStatus) {
        let Some(p) = self.pending.remove(&id) else { return };
        self.send(p.conn, &MeshMsg::Receipt { id, status });
        let event = match status {
            ReceiptStatus::Delivered => MeshEvent::Delivered { id, to: p.to },
            ReceiptStatus::NoSuchUser => MeshEvent::NoSuchUser { id, to: p.to },
        };
        self.out.event(event);
    }

    /// Sends a receipt to the origin server: directly when there is a link to it, else
    /// relayed through every other reachable peer but `skip`, with `hops` left.
    fn receipt_to(&mut self, origin: SocketAddr, id: Uuid, status: ReceiptStatus, hops: u8, skip: &[SocketAddr]) {
        if origin == self.config.me {
            return self.peer_receipt(id, status);
        }
        if !self.send_to_server(origin, &MeshMsg::Receipt { id, status }) {
            let mut skip = skip.to_vec();
            skip.push(origin);
            self.flood(&MeshMsg::ReceiptRelay { id, status, hops, origin }, &skip);
        }
    }

    // --- time --------------------------------------------------------------------------

    fn tick(&mut self) {
        let now = self.clock.now();
        self.timers.set(Timer::Tick, now + self.config.ping_interval);
        self.seen.expire(now);
        self.recent.expire(now);
        // Links: ping the live ones, close the silent ones; close connections that never
        // said what they are.
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        for (&id, c) in &self.conns {
            let silent = now.saturating_duration_since(c.last_heard);
            match c.role {
                Role::PeerOut { server } if self.peers.get(&server).is_some_and(|p| p.link == Link::Up(id)) => {
                    if silent >= self.config.dead_after {
                        dead.push((id, "no answer to pings"));
                    } else {
                        ping.push(id);
                    }
                }
                // The peer pings on its link to us as we do on ours: as silent as a dead one
                // is dead (and whatever it held back, say a partition, stays unread).
                Role::PeerIn { .. } if silent >= self.config.dead_after => dead.push((id, "silent peer")),
                Role::Unknown if silent >= self.config.hello_timeout => dead.push((id, "said nothing")),
                Role::UserProving { .. } if silent >= self.config.hello_timeout => {
                    dead.push((id, "did not answer the token challenge"))
                }
                Role::PeerProving { .. } | Role::PeerProved if silent >= self.config.hello_timeout => {
                    dead.push((id, "did not finish proving the mesh secret"))
                }
                _ => {}
            }
        }
        for (id, reason) in dead {
            self.close(id, CloseHow::Abort, reason);
        }
        let token = now.since_zero().as_micros() as u64;
        for id in ping {
            self.send(id, &MeshMsg::Ping { token });
        }
        // Registrations whose peers did not all answer in time.
        let due: Vec<String> = self.claims.iter().filter(|(_, c)| c.deadline <= now).map(|(n, _)| n.clone()).collect();
        for name in due {
            self.settle_claim(&name);
        }
        // Messages whose receipt did not come, in the order they arrived (not by id, which
        // is random), so their next attempts keep each sender's order.
        let mut taken = BTreeSet::new();
        let due: Vec<Uuid> = self
            .pending_order
            .iter()
            .filter(|id| self.pending.get(id).is_some_and(|p| p.deadline <= now) && taken.insert(**id))
            .copied()
            .collect();
        for id in due {
            self.receipt_overdue(id);
        }
    }

    fn receipt_overdue(&mut self, id: Uuid) {
        let Some(p) = self.pending.remove(&id) else { return };
        if !p.flooded {
            // The user may have moved: look for it everywhere, as a new attempt.
            return self.route(id, PendingSend { flooded: true, ..p });
        }
        let now = self.clock.now();
        if self.location(&p.to).is_some() || self.recent.contains(&p.to, now) {
            // The recipient exists, or did a moment ago (between servers, say), but its
            // receipt did not come: say nothing. The client resends with the same id,
            // and the recipient's server answers a copy with its receipt.
            return self.out.event(MeshEvent::ReceiptOverdue { id, to: p.to });
        }
        self.send(p.conn, &MeshMsg::Receipt { id, status: ReceiptStatus::NoSuchUser });
        self.out.event(MeshEvent::NoSuchUser { id, to: p.to });
    }
}

impl Machine for MeshServer {
    type Event = MeshEvent;

    fn accept(&mut self, now: Instant, listener: ListenerId, peer: SocketAddr) -> Result<ConnId, Refusal> {
        let now = self.clock.advance(now);
        if listener != ListenerId(0) {
            return Err(Refusal::UnknownListener(listener));
        }
        if self.conns.len() >= self.config.max_connections {
            return Err(Refusal::AtCapacity { limit: self.config.max_connections });
        }
        let conn = self.env.conn_ids.next();
        let reader = MsgReader::default();
        self.conns.insert(conn, Conn { role: Role::Unknown, reader, addr: peer, last_heard: now, certified: false });
        Ok(conn)
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.clock.advance(now);
        match input {
            Input::Connected { conn, .. } => {
                let Some(Conn { role: Role::PeerOut { server }, .. }) = self.conns.get(&conn) else { return };
                let server = *server;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_heard = self.clock.now();
                }
                self.link_connected(server, conn);
            }
            Input::ConnectFailed { conn, error } => {
                self.refused_by_tls(conn, &error);
                self.gone(conn, &format!("connect failed: {error}"))
            }
            Input::Received { conn, bytes } => self.received(conn, &bytes),
            Input::ReadClosed { conn } => self.close(conn, CloseHow::Graceful, "closed by peer"),
            Input::Closed { conn, reason } => {
                self.refused_by_tls(conn, &reason);
                self.gone(conn, &reason.to_string())
            }
            Input::Sent { .. } | Input::Datagram { .. } | Input::Listened { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Tick => self.tick(),
                Timer::Dial(server) => self.dial(server),
                Timer::ConnectTimeout(conn) => self.close(conn, CloseHow::Abort, "connect timed out"),
            }
        }
    }

    fn peer_certified(&mut self, now: Instant, conn: ConnId, _fingerprint: crate::tls::Fingerprint) {
        self.clock.advance(now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.certified = true;
        }
    }

    fn poll_output(&mut self) -> Option<Output<MeshEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }
}

/// Why a holder of `name` lost it to a login with its token at `home`.
fn taken_over(name: &str, home: SocketAddr) -> String {
    format!("name {name} was taken over by a login with its token at {home}")
}

/// Names known until recently, each until an expiry; bounded by the server's `max_users`
/// (when full, the one that expires first goes first).
#[derive(Debug, Default)]
struct RecentNames {
    until: BTreeMap<String, Instant>,
    /// (expiry, name) in expiry order; an entry whose name was recorded again later is
    /// stale and skipped.
    order: VecDeque<(Instant, String)>,
}

impl RecentNames {
    fn insert(&mut self, until: Instant, name: String, cap: usize) {
        while self.until.len() >= cap.max(1) {
            let Some((at, oldest)) = self.order.pop_front() else { break };
            if self.until.get(&oldest) == Some(&at) {
                self.until.remove(&oldest);
            }
        }
        self.until.insert(name.clone(), until);
        self.order.push_back((until, name));
    }

    fn contains(&self, name: &str, now: Instant) -> bool {
        self.until.get(name).is_some_and(|&until| until > now)
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            let (at, name) = self.order.pop_front().expect("front exists");
            if self.until.get(&name) == Some(&at) {
                self.until.remove(&name);
            }
        }
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod token_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::fixture::Fixture;

    fn server() -> Fixture<MeshServer> {
        let me = "127.0.0.1:5001".parse().unwrap();
        Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, ServerConfig::new(me, vec![])))
    }

    #[test]
    fn a_text_client_is_told_what_the_port_speaks_and_the_others_carry_on() {
        let mut f = server();
        let user = f.connect();
        f.send(user, &MeshMsg::Register { name: "alice".into() }.to_bytes());
        f.advance_to(Instant::from_secs(2));
        let telnet = f.connect();
        f.send(telnet, b"hello\r\n");
        assert_eq!(f.take(telnet), TEXT_CLIENT_REPLY);
        assert_eq!(f.closed.get(&telnet), Some(&CloseHow::Graceful), "closed once the line is sent");
        assert!(f
            .events
            .iter()
            .any(|e| matches!(e, MeshEvent::ProtocolError { reason, .. } if reason.contains("\"hello\\r\\n\""))));
        // The registered user is untouched and still answered.
        assert!(!f.closed.contains_key(&user));
        f.take(user);
        f.send(user, &MeshMsg::Ping { token: 9 }.to_bytes());
        assert_eq!(&f.written[&user][..], &MeshMsg::Pong { token: 9 }.to_bytes()[..]);
    }

    #[test]
    fn a_frame_that_breaks_the_protocol_is_still_aborted_without_a_text_reply() {
        let mut f = server();
        let conn = f.connect();
        f.send(conn, &[3, 0, 0, 0, 0, 1]);
        assert_eq!(f.take(conn), "");
        assert_eq!(f.closed.get(&conn), Some(&CloseHow::Abort));
    }

    #[test]
    fn overdue_messages_are_answered_in_the_order_they_arrived_not_by_id() {
        let mut f = server();
        let alice = f.connect();
        f.send(alice, &MeshMsg::Register { name: "alice".into() }.to_bytes());
        f.advance_to(Instant::from_secs(2));
        f.take(alice);
        // Ids in descending order: an answer sorted by id would come out reversed.
        let ids: Vec<Uuid> = (1..=4u128).rev().map(Uuid::from_u128).collect();
        for &id in &ids {
            f.send(alice, &MeshMsg::Send { id, to: "nobody".into(), body: "hi".into() }.to_bytes());
        }
        f.advance_to(Instant::from_secs(10));
        let mut reader = MsgReader::default();
        reader.push(&f.written.remove(&alice).unwrap_or_default());
        let answered: Vec<Uuid> = std::iter::from_fn(|| reader.next_msg())
            .filter_map(|m| match m {
                Ok(MeshMsg::Receipt { id, status: ReceiptStatus::NoSuchUser }) => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(answered, ids, "no such user, each in the order sent");
    }

    fn secured_server(secret: &[u8]) -> Fixture<MeshServer> {
        let me = "127.0.0.1:5001".parse().unwrap();
        let config = ServerConfig { peer_secret: Secret::new(secret), ..ServerConfig::new(me, vec![]) };
        Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, config))
    }

    /// Every message written to `conn` since the last call.
    pub(super) fn messages(f: &mut Fixture<MeshServer>, conn: ConnId) -> Vec<MeshMsg> {
        let mut reader = MsgReader::default();
        reader.push(&f.written.remove(&conn).unwrap_or_default());
        std::iter::from_fn(|| reader.next_msg()).map(|m| m.expect("a valid message")).collect()
    }

    pub(super) fn registered(f: &mut Fixture<MeshServer>, name: &str) -> ConnId {
        let conn = f.connect();
        f.send(conn, &MeshMsg::Register { name: name.into() }.to_bytes());
        assert_eq!(messages(f, conn), [MeshMsg::Registered { name: name.into() }]);
        conn
    }

    fn refusal(f: &Fixture<MeshServer>) -> Option<&str> {
        f.events.iter().rev().find_map(|e| match e {
            MeshEvent::PeerRefused { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
    }

    /// The four attacks of issue 13, each from a process that connects and announces itself
    /// as a server without the mesh secret: each is refused at the `Announce`, the
    /// connection is closed with a reason, and the users and their messages are untouched.
    #[test]
    fn a_server_without_the_mesh_secret_can_neither_forge_veto_steal_nor_evict() {
        attacks_are_refused(secured_server(b"mesh secret"), "this mesh has a secret");
    }

    /// A server that admits peers by a certificate from the mesh CA, with the mesh secret
    /// too if `secret`.
    fn by_certificate(secret: Option<&[u8]>) -> Fixture<MeshServer> {
        let me = "127.0.0.1:5001".parse().unwrap();
        let peer_secret = secret.and_then(Secret::new);
        let config = ServerConfig { peer_secret, peers_by_certificate: true, ..ServerConfig::new(me, vec![]) };
        Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, config))
    }

    /// The same four attacks at a server that admits peers by certificate, from connections
    /// whose TLS client presented none (users registered on such connections all the same).
    #[test]
    fn a_server_without_a_certificate_from_the_mesh_ca_can_neither_forge_veto_steal_nor_evict() {
        attacks_are_refused(by_certificate(None), BY_CERTIFICATE);
        let both = format!("{BY_CERTIFICATE}, or prove the mesh secret");
        attacks_are_refused(by_certificate(Some(b"mesh secret")), &both);
    }

    /// Registers two users on `f`, then tries the four attacks, each on a connection of its
    /// own after an `Announce`: each must be refused with a reason starting `reason`.
    fn attacks_are_refused(mut f: Fixture<MeshServer>, reason: &str) {
        let alice = registered(&mut f, "alice");
        let bob = registered(&mut f, "bob");
        let attacker: SocketAddr = "127.0.0.1:5009".parse().unwrap();
        let lower: SocketAddr = "0.0.0.1:1".parse().unwrap();
        let attacks = [
            // (1) a Forward that bob would receive as from alice;
            MeshMsg::Forward {
                id: Uuid::from_u128(7),
                attempt: 0,
                hops: 3,
                origin: attacker,
                from: "alice".into(),
                to: "bob".into(),
                body: "send me your password".into(),
            },
            // (2) a conflict to veto the next registration;
            MeshMsg::ClaimConflict { name: "carol".into(), holder: lower },
            // (3) a claim on bob from a lower home address, to take his messages;
            MeshMsg::Claim { name: "bob".into(), home: lower },
            // (4) an unsolicited conflict to evict alice;
            MeshMsg::ClaimConflict { name: "alice".into(), holder: lower },
            // and a takeover of alice, which a proved peer may send for a user with a token.
            MeshMsg::Takeover { name: "alice".into(), home: lower },
        ];
        for attack in attacks {
            let conn = f.connect();
            let mut bytes = MeshMsg::Announce { server: attacker, known: vec![] }.to_bytes().to_vec();
            bytes.extend_from_slice(&attack.to_bytes());
            f.send(conn, &bytes);
            let answer = messages(&mut f, conn);
            assert!(
                matches!(&answer[..], [MeshMsg::PeerRefused { reason: r }] if r.starts_with(reason)),
                "{attack:?} answered {answer:?}"
            );
            assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful), "closed after {attack:?}");
            let logged = refusal(&f).unwrap_or_default();
            assert!(logged.starts_with(&format!("we refused it: {reason}")), "{logged}");
        }
        assert_eq!(messages(&mut f, bob), [], "bob got no forged message");
        assert_eq!(messages(&mut f, alice), [], "alice was not evicted");
        assert_eq!(f.machine.local_users(), ["alice", "bob"]);
        assert_eq!(f.machine.location("bob"), Some(f.machine.me()), "bob still lives here");
        assert!(f.machine.known_peers().is_empty(), "the attacker's address was not learned");
        registered(&mut f, "carol");
    }

    /// A dialler's connection to `f` that said `PeerHello`: the connection, its nonce, and
    /// the server's nonce and proof from the challenge.
    fn challenged(f: &mut Fixture<MeshServer>) -> (ConnId, Nonce, Nonce, Nonce) {
        let conn = f.connect();
        let nonce = peer_auth::nonce(&mut crate::Rng::new(9));
        f.send(conn, &MeshMsg::PeerHello { nonce }.to_bytes());
        let [MeshMsg::PeerChallenge { nonce: theirs, proof }] = messages(f, conn)[..] else { panic!("a challenge") };
        (conn, nonce, theirs, proof)
    }

    #[test]
    fn a_server_with_another_secret_is_refused_after_its_proof() {
        let mut f = secured_server(b"mesh secret");
        let bob = registered(&mut f, "bob");
        let (conn, nonce, theirs, proof) = challenged(&mut f);
        let (theirs, proof) = (&theirs, &proof);
        let wrong = Secret::new(*b"a guess").unwrap();
        assert!(peer_auth::answer(&wrong, &nonce, theirs, proof).is_none(), "the guesser sees the server's proof fail");
        // It answers anyway, with a proof made from its own secret, then forges.
        let forged = wrong.prove(b"switchyard mesh v1 dialler", theirs, &nonce);
        let mut bytes = MeshMsg::PeerProof { proof: forged }.to_bytes().to_vec();
        bytes.extend_from_slice(&MeshMsg::Claim { name: "bob".into(), home: "0.0.0.1:1".parse().unwrap() }.to_bytes());
        f.send(conn, &bytes);
        assert!(
            matches!(&messages(&mut f, conn)[..], [MeshMsg::PeerRefused { reason }] if reason.starts_with("wrong mesh secret"))
        );
        assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful));
        assert_eq!(refusal(&f), Some("we refused it: wrong mesh secret: the two servers hold different ones"));
        assert_eq!(f.machine.location("bob"), Some(f.machine.me()));
        assert_eq!(messages(&mut f, bob), []);
    }

    #[test]
    fn a_server_with_the_secret_links_and_its_claims_count() {
        let secret = Secret::new(*b"mesh secret").unwrap();
        let mut f = secured_server(b"mesh secret");
        let (conn, nonce, theirs, proof) = challenged(&mut f);
        let answer = peer_auth::answer(&secret, &nonce, &theirs, &proof).expect("the server proves the secret");
        links_and_claims(&mut f, conn, answer.to_bytes().to_vec());
    }

    /// Sends `first`, then the `Announce` of a peer and its claim of `dave` on `conn`: the
    /// claim must be taken and the peer known.
    fn links_and_claims(f: &mut Fixture<MeshServer>, conn: ConnId, mut first: Vec<u8>) {
        let peer: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        first.extend_from_slice(&MeshMsg::Announce { server: peer, known: vec![] }.to_bytes());
        first.extend_from_slice(&MeshMsg::Claim { name: "dave".into(), home: peer }.to_bytes());
        f.send(conn, &first);
        assert_eq!(messages(f, conn), [MeshMsg::ClaimOk { name: "dave".into(), home: peer }]);
        assert!(!f.closed.contains_key(&conn));
        assert_eq!(f.machine.location("dave"), Some(peer));
        assert_eq!(f.machine.known_peers(), [peer]);
    }

    /// A copy of a message already delivered is dropped and counted; a message to a user
    /// nowhere known floods to the linked server and is counted as forwarded once per copy.
    #[test]
    fn forwarded_messages_and_dropped_copies_are_counted() {
        let mut f = server();
        let bob = registered(&mut f, "bob");
        let peer_addr: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        let peer = f.connect();
        f.send(peer, &MeshMsg::Announce { server: peer_addr, known: vec![] }.to_bytes());
        let forward = MeshMsg::Forward {
            id: Uuid::from_u128(42),
            attempt: 0,
            hops: 3,
            origin: peer_addr,
            from: "alice".into(),
            to: "bob".into(),
            body: "hi".into(),
        };
        f.send(peer, &forward.to_bytes());
        f.send(peer, &forward.to_bytes());
        let delivered = messages(&mut f, bob).into_iter().filter(|m| matches!(m, MeshMsg::Deliver { .. })).count();
        assert_eq!(delivered, 1);
        assert_eq!(f.machine.message_counts(), MessageCounts { forwarded: 0, deduplicated: 1 });
        messages(&mut f, peer);
        f.send(bob, &MeshMsg::Send { id: Uuid::from_u128(43), to: "carol".into(), body: "hi".into() }.to_bytes());
        let copies = messages(&mut f, peer).into_iter().filter(|m| matches!(m, MeshMsg::Forward { .. })).count();
        assert_eq!(copies, 1, "flooded to the one linked server");
        assert_eq!(f.machine.message_counts(), MessageCounts { forwarded: 1, deduplicated: 1 });
    }

    /// A connection whose TLS client proved a certificate from the mesh CA links without
    /// the secret, with or without one configured, and its claims count.
    #[test]
    fn a_server_with_a_certificate_from_the_mesh_ca_links_without_the_secret() {
        for secret in [None, Some(&b"mesh secret"[..])] {
            let mut f = by_certificate(secret);
            let conn = f.connect();
            f.machine.peer_certified(f.now, conn, crate::tls::Fingerprint([7; 32]));
            f.drain();
            links_and_claims(&mut f, conn, Vec::new());
        }
    }

    /// In a mesh that admits servers by certificate, a TLS handshake that fails on our dial
    /// is told as a refused server link. One that fails on a connection that came in and had
    /// not said what it is is told as a failed handshake and never as a server link: it may
    /// be a user's. Elsewhere such an end stays quiet as before.
    #[test]
    fn a_tls_failure_is_told_as_a_refused_server_link_only_on_our_dial() {
        let reason = "TLS: the server's certificate is not signed by a trusted authority";
        let (me, peer) = ("127.0.0.1:5001".parse().unwrap(), "127.0.0.1:5002".parse().unwrap());
        let config = ServerConfig { peers_by_certificate: true, ..ServerConfig::new(me, vec![peer]) };
        let mut f = Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, config));
        let [(link, _)] = f.dialled[..] else { panic!("one dial: {:?}", f.dialled) };
        f.input(Input::ConnectFailed { conn: link, error: NetError::Other(reason.into()) });
        assert_eq!(refusal(&f), Some(reason));
        assert!(!f.events.iter().any(|e| matches!(e, MeshEvent::HandshakeFailed { .. })), "{:?}", f.events);

        let reason = "TLS: the peer refused our certificate";
        let mut f = by_certificate(None);
        let conn = f.connect();
        f.input(Input::Closed { conn, reason: NetError::Other(reason.into()) });
        assert_eq!(refusal(&f), None, "not told as a server link: {:?}", f.events);
        let failed = MeshEvent::HandshakeFailed { peer: "127.0.0.1:40000".parse().unwrap(), reason: reason.into() };
        assert_eq!(f.events.last(), Some(&failed));

        let mut f = server();
        let conn = f.connect();
        f.input(Input::Closed { conn, reason: NetError::Other(reason.into()) });
        assert_eq!(refusal(&f), None);
        assert!(!f.events.iter().any(|e| matches!(e, MeshEvent::HandshakeFailed { .. })), "{:?}", f.events);
    }

    /// At a server that admits by certificate and has no secret, a hello is answered with
    /// what would admit the server instead.
    #[test]
    fn a_server_by_certificate_refuses_a_hello_saying_what_admits() {
        let mut f = by_certificate(None);
        let conn = f.connect();
        f.send(conn, &MeshMsg::PeerHello { nonce: [1; 32] }.to_bytes());
        let answer = messages(&mut f, conn);
        assert!(
            matches!(&answer[..], [MeshMsg::PeerRefused { reason }] if reason.starts_with(BY_CERTIFICATE)),
            "{answer:?}"
        );
        assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful));
    }

    #[test]
    fn a_server_without_a_secret_refuses_a_hello_saying_why() {
        let mut f = server();
        let conn = f.connect();
        f.send(conn, &MeshMsg::PeerHello { nonce: [1; 32] }.to_bytes());
        assert!(
            matches!(&messages(&mut f, conn)[..], [MeshMsg::PeerRefused { reason }] if reason.contains("no mesh secret"))
        );
        assert_eq!(f.closed.get(&conn), Some(&CloseHow::Graceful));
    }

    /// A server with the secret dialling `peer`, connected: returns the link and the nonce
    /// of the hello it sent.
    fn dialling(peer: SocketAddr) -> (Fixture<MeshServer>, ConnId, Nonce) {
        let me = "127.0.0.1:5001".parse().unwrap();
        let config = ServerConfig { peer_secret: Secret::new(*b"mesh secret"), ..ServerConfig::new(me, vec![peer]) };
        let mut f = Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, config));
        let [(link, to)] = f.dialled[..] else { panic!("one dial: {:?}", f.dialled) };
        assert_eq!(to, peer);
        f.input(Input::Connected { conn: link, local: "127.0.0.1:40001".parse().unwrap() });
        let [MeshMsg::PeerHello { nonce }] = messages(&mut f, link)[..] else { panic!("a hello first") };
        (f, link, nonce)
    }

    #[test]
    fn a_dialler_believes_nothing_before_the_peer_proves_the_secret() {
        let peer: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        // An impostor at the peer's address answers the hello with a claim, not a challenge.
        let (mut f, link, _) = dialling(peer);
        f.send(link, &MeshMsg::Claim { name: "eve".into(), home: peer }.to_bytes());
        assert_eq!(f.closed.get(&link), Some(&CloseHow::Abort));
        assert_eq!(f.machine.location("eve"), None);
        assert!(f.machine.linked_peers().is_empty());

        // One that holds another secret: its proof fails, and the dialler refuses it.
        let (mut f, link, nonce) = dialling(peer);
        let (_, challenge) = peer_auth::challenge(&Secret::new(*b"other").unwrap(), &mut crate::Rng::new(3), &nonce);
        f.send(link, &challenge.to_bytes());
        assert!(
            matches!(&messages(&mut f, link)[..], [MeshMsg::PeerRefused { reason }] if reason.starts_with("wrong mesh secret"))
        );
        assert_eq!(refusal(&f), Some("we refused it: wrong mesh secret: the two servers hold different ones"));
        assert!(f.machine.linked_peers().is_empty());

        // The real peer: the dialler proves itself, announces, and the link is up.
        let (mut f, link, nonce) = dialling(peer);
        let (theirs, challenge) =
            peer_auth::challenge(&Secret::new(*b"mesh secret").unwrap(), &mut crate::Rng::new(3), &nonce);
        f.send(link, &challenge.to_bytes());
        let sent = messages(&mut f, link);
        let [MeshMsg::PeerProof { proof }, MeshMsg::Announce { .. }, ..] = &sent[..] else { panic!("{sent:?}") };
        assert!(peer_auth::check(&Secret::new(*b"mesh secret").unwrap(), &theirs, &nonce, proof));
        assert_eq!(f.machine.linked_peers(), [peer]);
    }

    #[test]
    fn a_dialler_refused_by_its_peer_says_why_and_dials_again_later() {
        let peer: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        let (mut f, link, _) = dialling(peer);
        f.send(
            link,
            &MeshMsg::PeerRefused { reason: "wrong mesh secret: the two servers hold different ones".into() }
                .to_bytes(),
        );
        assert_eq!(refusal(&f), Some("it refused us: wrong mesh secret: the two servers hold different ones"));
        assert_eq!(f.closed.get(&link), Some(&CloseHow::Graceful));
        f.advance_to(Instant::from_secs(1));
        assert_eq!(f.dialled.len(), 2, "redialled after a backoff: {:?}", f.dialled);
    }

    /// A dialler without a secret brings its link up at once; refused by a server with one,
    /// it must back off as after a failed dial, not start again from the first delay.
    #[test]
    fn a_refused_link_backs_off_like_a_failed_dial() {
        let me = "127.0.0.1:5001".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        let mut f = Fixture::new(MeshServer::new(Env::new(1), Instant::ZERO, ServerConfig::new(me, vec![peer])));
        let refusal = MeshMsg::PeerRefused { reason: "this mesh has a secret".into() }.to_bytes();
        let mut dials = Vec::new();
        for _ in 0..6 {
            let (link, _) = *f.dialled.last().expect("a dial");
            dials.push(f.now);
            f.input(Input::Connected { conn: link, local: "127.0.0.1:40001".parse().unwrap() });
            f.send(link, &refusal);
            while f.dialled.last().map(|d| d.0) == Some(link) {
                let next = f.machine.poll_timeout().expect("a redial is due");
                f.advance_to(next);
            }
        }
        let gaps: Vec<Duration> = dials.windows(2).map(|w| w[1].saturating_duration_since(w[0])).collect();
        assert!(gaps.windows(2).all(|g| g[1] > g[0]) && gaps[4] > Duration::from_millis(1000), "{gaps:?}");
        assert!(
            !f.events.iter().any(|e| matches!(e, MeshEvent::PeerDown { .. })),
            "never reported as a link that went down"
        );
    }

    #[test]
    fn recent_names_expire_and_stay_within_their_cap() {
        let mut recent = RecentNames::default();
        let at = |s| Instant::from_secs(s);
        recent.insert(at(10), "a".into(), 2);
        recent.insert(at(20), "b".into(), 2);
        assert!(recent.contains("a", at(5)));
        assert!(!recent.contains("a", at(10)), "gone at its expiry");
        // Full: the one that expires first makes room.
        recent.insert(at(30), "c".into(), 2);
        assert!(!recent.contains("a", at(5)));
        assert!(recent.contains("b", at(5)) && recent.contains("c", at(5)));
        // Recorded again later: the older expiry no longer removes it.
        recent.insert(at(40), "b".into(), 3);
        recent.expire(at(25));
        assert!(recent.contains("b", at(25)));
        recent.expire(at(40));
        assert!(!recent.contains("b", at(39)) && !recent.contains("c", at(29)));
    }
}
