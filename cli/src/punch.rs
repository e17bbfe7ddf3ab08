//! `switchyard punch`: a hole-punching peer on one UDP socket, chatting with the peer the
//! rendezvous introduces, as the original `client.py` does.
//!
//! Three parties share the peer machine: the driver (datagrams and timers), the event
//! printer (the async side, which owns stdout) and the stdin thread (typed commands). The
//! printer tells the stdin thread what it has seen through [`Progress`], so that lines
//! typed (or piped) after a `CONNECT` wait for the rendezvous's answer instead of being
//! refused for want of a peer.

use crate::input::{self, End};
use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use async_channel::Receiver;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;
use switchyard_adapters::{Driver, EventPolicy, Handle, Running, Runtime, Stopped};
use switchyard_core::punch::{PathKind, Peer, PeerConfig, PeerEvent};
use switchyard_core::wire::punch::is_valid_name;
use switchyard_core::{Env, Instant};

/// How long lines typed after a `CONNECT` wait for the rendezvous to answer it: the
/// registration, then the peer's
/// [`CONNECT_TRIES`](switchyard_core::punch::peer::CONNECT_TRIES) requests a second apart.
/// Past it, lines are handled anyway (and refused if no peer came).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// At the end of input, how long the peer waits to be registered, for a path to the peer
/// it was introduced to and for every message it sent to be acknowledged before it leaves.
const EOF_ACK_WAIT: Duration = Duration::from_secs(5);

/// At the end of input, how long in all the peer waits while a path is being punched:
/// punching lasts 5 s by default before the relay takes over, so a pipe
/// (`printf 'CONNECT A B\nhello\n' | switchyard punch ...`) still delivers its lines.
const EOF_PATH_WAIT: Duration = Duration::from_secs(15);

/// How long to wait for the first registration before saying the rendezvous is silent.
const SILENCE_NOTICE: Duration = Duration::from_secs(3);

/// Register an id at a rendezvous server, connect to another peer by its id, punch a
/// direct UDP path to it through NATs (or fall back to the rendezvous as a relay), and
/// chat: each line typed goes to the connected peer.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "punch",
    example = "switchyard punch --id B\nswitchyard punch --id A --connect B\nprintf 'CONNECT A B\\nhello\\n' | switchyard punch --rendezvous 203.0.113.7:9999 --id A",
    note = "Prints `REGISTERED <ip:port>` (the public endpoint the rendezvous saw), then `CONNECTED to <ip:port> (direct)` or `(relayed via <rendezvous>)` once a path forms, again whenever it changes (a relayed path is upgraded to a direct one when punching later succeeds). Type `CONNECT <my_id> <dest_id>` (or `CONNECT <dest_id>`) to connect, as in the original; every other line is a message to the connected peer, and messages arrive as `<peer_id>: <text>`, each once, in order (they are acknowledged and resent). One session at a time: a peer in a session is not taken over by a third peer's CONNECT (the third peer is told `switchyard: cannot connect to <id>: peer <id> is busy in another session`); when the other side quits, expires or connects elsewhere, `PEER LEFT <id> (...)` is printed and the chat ends. quit, exit, q or Ctrl-C leaves at once. The end of input (Ctrl-D, or a pipe) leaves once it is registered, any session being punched has a path, and every message sent is acknowledged, waiting at most 5 s (15 s while a path is being punched); it exits 1 if the rendezvous never answered, if the last connect failed and no peer is connected, or if messages were never acknowledged. To keep a peer waiting for others in a script, keep its stdin open (`sleep infinity | switchyard punch --id B`). A refused registration (the id is taken) exits 1. Wire format: docs/PROTOCOL.md section 5."
)]
pub struct PunchCmd {
    /// the rendezvous server (default 127.0.0.1:9999)
    #[argh(
        option,
        default = "crate::addr::loopback(crate::rendezvous::DEFAULT_PORT)",
        from_str_fn(crate::addr::parse)
    )]
    rendezvous: SocketAddr,

    /// the id to register (1-32 bytes, no spaces)
    #[argh(option)]
    id: String,

    /// a peer to connect to at start, as if `CONNECT <id> <DEST>` were typed first
    #[argh(option)]
    connect: Option<String>,

    /// local UDP address to bind (default 0.0.0.0:0, `[::]:0` for an IPv6 rendezvous: any
    /// interface, a free port)
    #[argh(option, from_str_fn(crate::addr::parse))]
    bind: Option<SocketAddr>,

    /// never relay through the rendezvous: messages wait for a direct path
    #[argh(switch)]
    no_relay: bool,

    /// milliseconds each round of punching lasts before the relay takes over (default
    /// 5000)
    #[argh(option)]
    punch_ms: Option<u64>,
}

impl Program for PunchCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        if !is_valid_name(&self.id) {
            return Err(CliError::usage(format!("--id {:?}: an id is 1-32 bytes with no spaces", self.id)));
        }
        if let Some(dest) = &self.connect {
            if !is_valid_name(dest) || *dest == self.id {
                return Err(CliError::usage(format!("--connect {dest:?}: expected another peer's id")));
            }
        }
        let mut config = PeerConfig::new(&self.id, self.rendezvous);
        config.relay = !self.no_relay;
        if let Some(ms) = self.punch_ms {
            config.punch_for = Duration::from_millis(ms);
        }
        let bind = self.bind.unwrap_or_else(|| SocketAddr::new(unspecified_like(self.rendezvous.ip()), 0));
        let running = start_peer(&rt, env, config, bind).await?;

        let peer = PeerHandle(running.handle());
        leave_on_ctrl_c(peer.clone())?;
        let progress = std::sync::Arc::new(Progress::default());
        let typed = {
            let session = Session { me: self.id.clone(), rendezvous: self.rendezvous, started: std::time::Instant::now() };
            let (peer, progress, connect) = (peer.clone(), progress.clone(), self.connect);
            input::spawn(move || read_commands(&peer, &session, connect, &progress))?
        };
        let view = View { rendezvous: self.rendezvous, progress: &progress };
        let print = print_events(&rt, running.events(), view);
        let quit = async {
            let code = typed.recv().await.unwrap_or(ExitCode::SUCCESS);
            rt.sleep_until(rt.now() + input::LEAVE_GRACE).await;
            code
        };
        let code = futures_lite::future::or(print, quit).await;
        running.shutdown();
        Ok(code)
    }
}

/// Binds a UDP socket on `bind` and starts a peer on it, reporting the socket's own
/// endpoints as its private ones (they are known only once it is bound). Events wait for
/// the reader rather than being dropped.
pub(crate) async fn start_peer<R: Runtime>(
    rt: &R,
    env: Env,
    mut config: PeerConfig,
    bind: SocketAddr,
) -> Result<Running<Option<Peer>>, CliError> {
    let running = Driver::new(None::<Peer>)
        .bind_udp(config.socket, bind)
        .event_policy(EventPolicy::Wait)
        .start(rt.clone())
        .await
        .map_err(CliError::new)?;
    let bound = running.udp_local_addr(config.socket).unwrap_or(bind);
    config.private = private_endpoints(bound, config.rendezvous);
    tracing::debug!(%bound, private = ?config.private, "registering {} at {}", config.id, config.rendezvous);
    running
        .command(move |slot: &mut Option<Peer>, now| *slot = Some(Peer::new(env, now, config)))
        .await
        .map_err(|_| CliError::new("the peer stopped before it started"))?;
    Ok(running)
}

/// Prints the peer's events until one ends the session (its exit code) or the machine
/// stops (Ctrl-C: exit 0). Until the first registration, a timer says so if the
/// rendezvous is silent: the peer itself reports silence only once it was registered.
async fn print_events<R: Runtime>(rt: &R, events: Receiver<PeerEvent>, view: View<'_>) -> ExitCode {
    let mut notice = Some(rt.now() + SILENCE_NOTICE);
    loop {
        let next = async { Some(events.recv().await) };
        let event = match notice {
            Some(at) => {
                let quiet = async {
                    rt.sleep_until(at).await;
                    None
                };
                futures_lite::future::or(next, quiet).await
            }
            None => next.await,
        };
        match event {
            None => {
                notice = None;
                view.silent();
            }
            Some(Ok(event)) => {
                if matches!(event, PeerEvent::Registered { .. }) {
                    notice = None;
                }
                if let Some(code) = view.show(&event) {
                    return code;
                }
            }
            Some(Err(_)) => return ExitCode::SUCCESS,
        }
    }
}

/// The unspecified address of `ip`'s family: binding it takes any interface.
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// This peer's own endpoints, for the rendezvous to pass on, so that a peer on the same
/// network (behind the same NAT, which may not hairpin) can reach it directly: the bound
/// address if it names an IP, else the IP this host uses towards the rendezvous, with the
/// bound port. None if the route cannot be found: the public endpoint still works.
fn private_endpoints(bound: SocketAddr, rendezvous: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    match route_ip(rendezvous) {
        Ok(ip) => vec![SocketAddr::new(ip, bound.port())],
        Err(e) => {
            tracing::debug!("no local address towards {rendezvous}: {e}");
            Vec::new()
        }
    }
}

/// The local IP the OS would send from to reach `to`. Connecting a UDP socket sends
/// nothing: it only picks the route and so the source address.
fn route_ip(to: SocketAddr) -> io::Result<IpAddr> {
    let probe = std::net::UdpSocket::bind((unspecified_like(to.ip()), 0))?;
    probe.connect(to)?;
    Ok(probe.local_addr()?.ip())
}

/// Commands the peer (built once its socket is bound, hence the `Option`) from a plain
/// thread.
#[derive(Clone)]
struct PeerHandle(Handle<Option<Peer>>);

impl PeerHandle {
    /// Runs `f` on the peer; [`Stopped`] if the machine has stopped (or never started).
    fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Peer, Instant) -> T + Send + 'static) -> Result<T, Stopped> {
        self.0.command_blocking(move |slot: &mut Option<Peer>, now| slot.as_mut().map(|p| f(p, now)))?.ok_or(Stopped)
    }

    /// Unregisters, so the id is free at once rather than when its registration expires.
    fn leave(&self) {
        let _ = self.run(|p, now| p.leave(now));
    }
}

/// Ctrl-C leaves the rendezvous and ends the program (exit 0), as `quit` does; a second
/// Ctrl-C exits at once with 130.
fn leave_on_ctrl_c(peer: PeerHandle) -> Result<(), CliError> {
    let interrupted = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if interrupted.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        peer.leave();
        std::thread::sleep(input::LEAVE_GRACE);
        peer.0.shutdown();
    })
    .map_err(|e| CliError::new(format!("cannot install the Ctrl-C handler: {e}")))
}

/// What the event printer has seen that the stdin thread waits for.
#[derive(Debug, Default)]
struct Seen {
    /// The peer of the latest introduction.
    introduced: Option<String>,
    /// How many connects failed so far.
    failures: u64,
    /// The latest answer to a connect was a failure (not an introduction).
    last_connect_failed: bool,
    /// The registration was refused: nothing will be answered any more.
    over: bool,
}

/// [`Seen`], shared between the printer (which updates it) and the stdin thread (which
/// waits on it).
#[derive(Debug, Default)]
struct Progress {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_all();
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits (at most `limit`) until `dest` is introduced, a connect fails after
    /// `failures_before` failures, or the session is over.
    fn wait_for_answer(&self, dest: &str, failures_before: u64, limit: Duration) {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let unanswered =
            |s: &mut Seen| !s.over && s.failures == failures_before && s.introduced.as_deref() != Some(dest);
        let _ = self.changed.wait_timeout_while(seen, limit, unanswered);
    }
}

/// One typed line.
#[derive(Debug, PartialEq, Eq)]
enum Typed<'a> {
    /// `CONNECT <my_id> <dest_id>` or `CONNECT <dest_id>`.
    Connect(&'a str),
    /// A `CONNECT` that cannot be followed, and why.
    BadConnect(String),
    /// Anything else: a message to the peer.
    Chat(&'a str),
}

fn parse_line<'a>(line: &'a str, me: &str) -> Typed<'a> {
    let mut words = line.split_whitespace();
    if words.next() != Some("CONNECT") {
        return Typed::Chat(line);
    }
    match (words.next(), words.next(), words.next()) {
        (Some(dest), None, _) => Typed::Connect(dest),
        (Some(mine), Some(dest), None) if mine == me => Typed::Connect(dest),
        (Some(mine), Some(dest), None) => {
            Typed::BadConnect(format!("this peer is {me}, not {mine}: type CONNECT {me} {dest} (or CONNECT {dest})"))
        }
        _ => Typed::BadConnect("type CONNECT <my_id> <dest_id> (or CONNECT <dest_id>)".to_owned()),
    }
}

/// What the stdin thread knows of the run: who this peer is, where it registers, and
/// since when.
struct Session {
    me: String,
    rendezvous: SocketAddr,
    started: std::time::Instant,
}

/// The stdin thread: connects (`--connect`, then each `CONNECT` line), sends every other
/// line to the peer, and leaves on a quit word or at the end of input. Returns the exit
/// code: 1 if the end of input came before the peer did what it was asked (see [`drain`]).
fn read_commands(peer: &PeerHandle, session: &Session, connect: Option<String>, progress: &Progress) -> ExitCode {
    let me = session.me.as_str();
    if let Some(dest) = connect {
        if connect_to(peer, &dest, progress).is_break() {
            return ExitCode::SUCCESS;
        }
    }
    let end = input::commands(|line| match parse_line(line, me) {
        Typed::Connect(dest) => connect_to(peer, dest, progress),
        Typed::BadConnect(why) => {
            eprintln!("switchyard: {why}");
            ControlFlow::Continue(())
        }
        Typed::Chat(text) => {
            let text = text.to_owned();
            match peer.run(move |p, now| p.send(now, &text)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("switchyard: not sent: {e}"),
                Err(Stopped) => return ControlFlow::Break(()),
            }
            ControlFlow::Continue(())
        }
    });
    let code = match end {
        // The machine stopped: whoever stopped it decides the exit code.
        End::Stopped => return ExitCode::SUCCESS,
        End::Quit => ExitCode::SUCCESS,
        End::Eof => drain(peer, session, progress),
    };
    // The caller lets the datagram go out, then stops the machine.
    peer.leave();
    code
}

/// Asks the rendezvous to introduce `dest`, then holds the next lines until it answers:
/// they are for `dest`, and a pipe delivers them before any answer could arrive.
fn connect_to(peer: &PeerHandle, dest: &str, progress: &Progress) -> ControlFlow<()> {
    let failures = progress.seen(|s| s.failures);
    let to = dest.to_owned();
    match peer.run(move |p, now| p.connect(now, &to)) {
        Ok(Ok(())) => progress.wait_for_answer(dest, failures, CONNECT_WAIT),
        Ok(Err(e)) => eprintln!("switchyard: cannot connect: {e}"),
        Err(Stopped) => return ControlFlow::Break(()),
    }
    ControlFlow::Continue(())
}

/// At the end of input: waits until registered and every message is acknowledged (see
/// [`EOF_ACK_WAIT`], [`EOF_PATH_WAIT`]). Exit code 1, with one line on stderr saying why, if
/// the rendezvous never answered or some message was never acknowledged; exit code 1 too
/// if the last connect failed and no peer is connected (the failure was printed when it
/// came).
fn drain(peer: &PeerHandle, session: &Session, progress: &Progress) -> ExitCode {
    let start = std::time::Instant::now();
    let settled = || peer.run(|p, _| p.public().is_some() && p.unacked() == 0 && !punching(p));
    if !input::wait_until(start + EOF_ACK_WAIT, settled) && peer.run(|p, _| punching(p)) == Ok(true) {
        // A path (direct, or the relay) may yet come for the messages queued meanwhile.
        input::wait_until(start + EOF_PATH_WAIT, settled);
    }
    let Ok((unanswered, unacked, connected)) =
        peer.run(|p, _| (p.unanswered_registers(), p.unacked(), p.session().is_some()))
    else {
        return ExitCode::SUCCESS;
    };
    if let Some(attempts) = unanswered {
        let waited = session.started.elapsed().as_secs();
        let rendezvous = session.rendezvous;
        eprintln!("switchyard: the rendezvous {rendezvous} never answered ({attempts} registration attempts in {waited} s)");
        return ExitCode::FAILURE;
    }
    if unacked > 0 {
        eprintln!("switchyard: {unacked} message(s) not acknowledged by the peer");
        return ExitCode::FAILURE;
    }
    if !connected && progress.seen(|s| s.last_connect_failed) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// True while the peer is in a session without a path: the path, or the other side's
/// refusal (a declined introduction), is still to come.
fn punching(p: &Peer) -> bool {
    p.session().is_some() && p.path().is_none()
}

/// Prints the peer's events as status lines, as the original client does.
struct View<'a> {
    rendezvous: SocketAddr,
    progress: &'a Progress,
}

impl View<'_> {
    /// One status line on stdout, flushed at once (a script may be waiting for it). A
    /// stdout nobody reads is no reason to stop chatting.
    fn line(&self, text: std::fmt::Arguments<'_>) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }

    /// Says the rendezvous does not answer: the peer's own [`PeerEvent::RendezvousSilent`],
    /// or the printer's timer before the first registration.
    fn silent(&self) {
        self.line(format_args!("rendezvous {} not answering; retrying", self.rendezvous));
    }

    /// Prints `event`; returns an exit code when the session is over for good.
    fn show(&self, event: &PeerEvent) -> Option<ExitCode> {
        match event {
            PeerEvent::Registered { public } => self.line(format_args!("REGISTERED {public}")),
            PeerEvent::RegistrationRefused { reason } => {
                self.progress.update(|s| s.over = true);
                eprintln!("switchyard: registration refused: {reason}");
                return Some(ExitCode::FAILURE);
            }
            PeerEvent::RendezvousSilent => self.silent(),
            PeerEvent::Refused { reason } => self.line(format_args!("rendezvous refused: {reason}")),
            PeerEvent::ConnectFailed { dest, reason } => {
                self.progress.update(|s| {
                    s.failures += 1;
                    s.last_connect_failed = true;
                });
                eprintln!("switchyard: cannot connect to {dest}: {reason}");
            }
            PeerEvent::Introduced { peer, public } => {
                self.progress.update(|s| {
                    s.introduced = Some(peer.clone());
                    s.last_connect_failed = false;
                });
                self.line(format_args!("{peer} introduced ({public}); punching"));
            }
            PeerEvent::Connected { addr, path: PathKind::Direct, .. } => {
                self.line(format_args!("CONNECTED to {addr} (direct)"))
            }
            PeerEvent::Connected { addr, path: PathKind::Relayed, .. } => {
                self.line(format_args!("CONNECTED to {addr} (relayed via {})", self.rendezvous))
            }
            PeerEvent::PathLost { peer, addr } => {
                self.line(format_args!("path to {peer} at {addr} lost; punching again"))
            }
            PeerEvent::Message { from, body } => self.line(format_args!("{from}: {body}")),
            PeerEvent::Abandoned { peer, unacked } => {
                self.line(format_args!("chat with {peer} ended{}", maybe_lost(*unacked)))
            }
            PeerEvent::PeerLeft { peer, why, unacked } => {
                self.line(format_args!("PEER LEFT {peer} ({}){}", crate::events::left_because(*why), maybe_lost(*unacked)))
            }
            PeerEvent::Declined { peer, busy_with } => {
                self.line(format_args!("{peer} asked to connect; declined (in a session with {busy_with})"))
            }
            PeerEvent::BadDatagram { from, error } => tracing::warn!("bad datagram from {from}: {error}"),
        }
        None
    }
}

/// What a chat that ended says of its unacknowledged messages: nothing if there are none.
fn maybe_lost(unacked: usize) -> String {
    match unacked {
        0 => String::new(),
        n => format!("; {n} message(s) may not have arrived"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_take_both_ids_or_just_the_destination() {
        assert_eq!(parse_line("CONNECT A B", "A"), Typed::Connect("B"));
        assert_eq!(parse_line("CONNECT  B", "A"), Typed::Connect("B"));
        assert!(matches!(parse_line("CONNECT C B", "A"), Typed::BadConnect(why) if why.contains("CONNECT A B")));
        assert!(matches!(parse_line("CONNECT", "A"), Typed::BadConnect(_)));
        assert!(matches!(parse_line("CONNECT A B C", "A"), Typed::BadConnect(_)));
    }

    #[test]
    fn other_lines_are_messages() {
        assert_eq!(parse_line("hello there", "A"), Typed::Chat("hello there"));
        assert_eq!(parse_line("connect me", "A"), Typed::Chat("connect me"));
        assert_eq!(parse_line("CONNECTED", "A"), Typed::Chat("CONNECTED"));
    }

    /// The help is written out by hand: it must say what the code really does.
    #[test]
    fn the_help_states_the_defaults() {
        let punch_for = PeerConfig::new("A", crate::addr::loopback(9999)).punch_for;
        let wanted = [
            format!("(default {})", punch_for.as_millis()),
            format!("at most {} s ({} s while", EOF_ACK_WAIT.as_secs(), EOF_PATH_WAIT.as_secs()),
        ];
        crate::assert_help_says::<PunchCmd>("punch", &wanted);
    }

    #[test]
    fn a_bound_ip_is_the_private_endpoint_itself() {
        let bound = "127.0.0.22:4000".parse().unwrap();
        assert_eq!(private_endpoints(bound, "127.0.0.21:9999".parse().unwrap()), vec![bound]);
    }

    #[test]
    fn an_unspecified_bind_reports_the_route_to_the_rendezvous_with_the_bound_port() {
        let private = private_endpoints("0.0.0.0:4000".parse().unwrap(), "127.0.0.1:9999".parse().unwrap());
        assert_eq!(private, vec!["127.0.0.1:4000".parse().unwrap()]);
    }
}
