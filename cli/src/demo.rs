//! `switchyard demo`: start `up` in this process and run each flow of the original system
//! through the tunnel, and a hole punch through its rendezvous, printing what was sent, what
//! came back, and whether it was right.

use crate::runtime::Program;
use crate::session::Session;
use crate::up::{self, Up};
use crate::{within, CliError};
use argh::FromArgs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use switchyard_adapters::{Running, Runtime};
use switchyard_core::punch::{Peer, PeerConfig, PeerError, PeerEvent};
use switchyard_core::{Env, Instant};

/// Start the whole network (as `switchyard up` does) on a loopback address of its own and
/// run each flow through the tunnel: echo, time, two broadcast members, greet, stamp, a
/// static forward and a bad prefix; then two hole-punching peers meeting at the rendezvous. Prints a transcript; exits 0 only if every flow
/// passes.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "demo",
    example = "switchyard demo\nswitchyard demo --host 127.0.0.3",
    note = "The default host, 127.0.0.2, keeps the demo clear of a `switchyard up` on 127.0.0.1."
)]
pub struct DemoCmd {
    /// IP address the network listens on (default 127.0.0.2)
    #[argh(option, default = "IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))")]
    host: IpAddr,

    /// seconds each flow may take before it fails (default 10)
    #[argh(option, default = "10")]
    timeout: u64,
}

impl Program for DemoCmd {
    async fn run<R: Runtime>(self, rt: R, mut env: Env) -> Result<ExitCode, CliError> {
        // `up`'s time service ticks every minute: no tick lands inside a flow.
        let fleet = crate::launch::Fleet::new();
        let up = up::start(&rt, fleet, env.child(0), (self.host, crate::serve::DEFAULT_INTERVAL), None).await?;
        say!(
            "{}",
            up.table(&format!("switchyard demo: the whole network on {}, every flow through the tunnel", self.host))
        );
        let mut demo = Demo { rt: &rt, env, up: &up, timeout: Duration::from_secs(self.timeout), failed: 0, flows: 0 };
        demo.run_all().await;
        let Demo { failed, flows, .. } = demo;
        up.fleet.stop_and_join().await;
        if failed > 0 {
            return Err(CliError::new(format!("demo: {failed} of {flows} flows failed")));
        }
        say!("all {flows} flows passed");
        Ok(ExitCode::SUCCESS)
    }
}

/// What a flow saw: one entry per line sent (`→`) or received (`←`).
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn sent(&mut self, who: &str, text: &str) {
        self.0.push(format!("{who}→ {text}"));
    }

    fn received(&mut self, who: &str, text: &str) {
        self.0.push(format!("{who}← {text}"));
    }
}

struct Demo<'a, R> {
    rt: &'a R,
    env: Env,
    up: &'a Up,
    timeout: Duration,
    flows: usize,
    failed: usize,
}

impl<R: Runtime> Demo<'_, R> {
    async fn run_all(&mut self) {
        let entrance = self.up.entrance;
        self.one_line("echo through the tunnel", entrance, "hello", |l| l == "hello").await;
        self.one_line("time through the tunnel", entrance, "9090:time", is_time).await;
        let mut transcript = Transcript::default();
        let result = self.broadcast(&mut transcript).await;
        self.report("broadcast: two members through the tunnel", transcript, result);
        let greeting = "Hello Good morning !!!! ::: John";
        self.one_line("greet through the tunnel", entrance, "12345:John", |l| l == greeting).await;
        let stamped = |l: &str| l.starts_with("Server received at ") && l.ends_with(": Hello, World!");
        self.one_line("stamp through the tunnel", entrance, "8080:Hello, World!", stamped).await;
        for (addr, route) in self.up.forwards.clone() {
            let title = format!("static forward {addr} → route {route}, no prefix");
            self.one_line(&title, addr, "what time is it?", is_time).await;
        }
        let refused = "error: unknown route 1234";
        self.one_line("a bad prefix is refused with a reason", entrance, "1234:x", |l| l == refused).await;
        let mut transcript = Transcript::default();
        let result = self.hole_punch(&mut transcript).await;
        self.report("hole punching: two peers meet at the rendezvous, then talk directly", transcript, result);
    }

    /// Peers A and B register at `up`'s rendezvous; A connects to B and says hello; B
    /// hears it over the path they punched.
    async fn hole_punch(&mut self, t: &mut Transcript) -> Result<(), CliError> {
        let host = self.up.entrance.ip();
        let rendezvous = SocketAddr::new(host, crate::rendezvous::DEFAULT_PORT);
        let mut peers = Vec::new();
        for id in ["A", "B"] {
            let config = PeerConfig::new(id, rendezvous);
            peers.push(crate::punch::start_peer(self.rt, self.env.child(0), config, SocketAddr::new(host, 0)).await?);
        }
        let flow = async {
            let [a, b] = [&peers[0], &peers[1]];
            for (who, peer) in [("A ", a), ("B ", b)] {
                let public = next_event(peer, |e| matches!(e, PeerEvent::Registered { .. })).await?;
                t.received(who, &public);
            }
            t.sent("A ", "CONNECT A B");
            command_peer(a, |p, now| p.connect(now, "B")).await?;
            for (who, peer) in [("A ", a), ("B ", b)] {
                let path = next_event(peer, |e| matches!(e, PeerEvent::Connected { .. })).await?;
                t.received(who, &path);
            }
            t.sent("A ", "hello from A");
            command_peer(a, |p, now| p.send(now, "hello from A")).await?;
            let heard = next_event(b, |e| matches!(e, PeerEvent::Message { .. })).await?;
            t.received("B ", &heard);
            if heard == "A: hello from A" {
                Ok(())
            } else {
                Err(CliError::new("B did not hear A"))
            }
        };
        let result = self.bounded(flow).await;
        for peer in &peers {
            peer.shutdown();
        }
        result
    }

    /// Sends `line` to `to` and checks the one line that comes back.
    async fn one_line(&mut self, title: &str, to: SocketAddr, line: &str, check: impl Fn(&str) -> bool) {
        let mut transcript = Transcript::default();
        transcript.sent("", &format!("{to}  {line}"));
        let result = self.exchange(to, line).await.and_then(|replies| {
            for reply in &replies {
                transcript.received("", reply);
            }
            match replies.as_slice() {
                [reply] if check(reply) => Ok(()),
                _ => Err(CliError::new("not the reply expected")),
            }
        });
        self.report(title, transcript, result);
    }

    /// Sends `line`, half-closes, and returns every line until the server closes.
    async fn exchange(&mut self, to: SocketAddr, line: &str) -> Result<Vec<String>, CliError> {
        let session = self.session(to).await?;
        let replies = async move {
            let mut session = session;
            session.send_line(line.to_owned()).await?;
            session.finish().await?;
            let mut replies = Vec::new();
            while let Some(reply) = session.next_line().await? {
                replies.push(String::from_utf8_lossy(&reply).into_owned());
            }
            Ok(replies)
        };
        self.bounded(replies).await
    }

    /// Two members join route 10000; the first says hi; the second hears it.
    async fn broadcast(&mut self, t: &mut Transcript) -> Result<(), CliError> {
        let (first, second) = (self.session(self.up.entrance).await?, self.session(self.up.entrance).await?);
        let flow = async {
            let (mut first, mut second) = (first, second);
            let name = join(&mut first, "member 1 ", t).await?;
            join(&mut second, "member 2 ", t).await?;
            first.send_line("hi".into()).await?;
            t.sent("member 1 ", "hi");
            let expected = format!("{name}: hi");
            loop {
                let line = next(&mut second).await?;
                t.received("member 2 ", &line);
                if line == expected {
                    return Ok(());
                }
            }
        };
        self.bounded(flow).await
    }

    async fn session(&mut self, to: SocketAddr) -> Result<Session, CliError> {
        Session::open(self.rt, self.env.child(0), to, self.timeout, None).await
    }

    /// `future`, failing after the flow timeout.
    async fn bounded<T>(&self, future: impl std::future::Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
        let secs = self.timeout.as_secs();
        within(self.rt, self.rt.now() + self.timeout, || CliError::new(format!("no answer within {secs} s")), future)
            .await
    }

    /// Prints one flow's outcome and transcript.
    fn report(&mut self, title: &str, transcript: Transcript, result: Result<(), CliError>) {
        self.flows += 1;
        match result {
            Ok(()) => say!("✓ {title}"),
            Err(e) => {
                self.failed += 1;
                say!("✗ {title}: {e}");
            }
        }
        for line in transcript.0 {
            say!("    {line}");
        }
        say!("");
    }
}

/// Joins the broadcast route and returns the member's name from the welcome line.
async fn join(session: &mut Session, who: &str, t: &mut Transcript) -> Result<String, CliError> {
    session.send_raw(b"10000:".to_vec()).await?;
    t.sent(who, &format!("{}  10000:", session.to()));
    let welcome = next(session).await?;
    t.received(who, &welcome);
    welcome
        .strip_prefix("* welcome ")
        .and_then(|rest| rest.split(',').next())
        .map(str::to_owned)
        .ok_or_else(|| CliError::new(format!("expected a welcome line, got {welcome:?}")))
}

/// The peer's next event that `wanted` picks, as the `punch` command prints it.
async fn next_event(peer: &Running<Option<Peer>>, wanted: impl Fn(&PeerEvent) -> bool) -> Result<String, CliError> {
    loop {
        let event = peer.events().recv().await.map_err(|_| CliError::new("the peer stopped"))?;
        if wanted(&event) {
            return Ok(match event {
                PeerEvent::Registered { public } => format!("REGISTERED {public}"),
                PeerEvent::Connected { addr, path, .. } => format!("CONNECTED to {addr} ({path})"),
                PeerEvent::Message { from, body } => format!("{from}: {body}"),
                other => format!("{other:?}"),
            });
        }
    }
}

/// The next line, which must come.
async fn next(session: &mut Session) -> Result<String, CliError> {
    match session.next_line().await? {
        Some(line) => Ok(String::from_utf8_lossy(&line).into_owned()),
        None => Err(CliError::new("the server closed the connection")),
    }
}

/// `YYYY-MM-DD HH:MM:SS`.
fn is_time(line: &str) -> bool {
    let shape = line.bytes().map(|b| if b.is_ascii_digit() { b'9' } else { b });
    line.len() == 19 && shape.eq(b"9999-99-99 99:99:99".iter().copied())
}


/// Runs `f` on a started peer (its slot fills once its socket is bound) and turns the
/// peer's refusal into an error. A peer that has stopped is left for the next event wait
/// to report.
async fn command_peer<T: Send + 'static>(
    peer: &Running<Option<Peer>>,
    f: impl FnOnce(&mut Peer, Instant) -> Result<T, PeerError> + Send + 'static,
) -> Result<(), CliError> {
    let outcome = peer.command(move |slot: &mut Option<Peer>, now| slot.as_mut().map(|p| f(p, now))).await;
    outcome.ok().flatten().transpose().map_err(CliError::new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_lines_have_the_date_shape() {
        assert!(is_time("2025-10-01 14:30:25"));
        assert!(!is_time("2025-10-01 14:30"));
        assert!(!is_time("hello there, world!"));
    }
}
