//! The cost of a TLS 1.3 handshake in Switchyard's TLS layer: a client (the line client
//! `send --tls-pin` runs) and a server (the echo service `serve echo --tls-cert` runs), each
//! inside the core's `Tls` wrapper, handshaking over an in-memory pipe on this thread.
//!
//! No sockets and no wake-ups: the figure is the CPU both ends spend on one handshake (key
//! exchange, signing, verifying, the record layer), what a loopback handshake costs on top
//! of its TCP round trips.

use super::stats::percentile;
use crate::CliError;
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallInstant};
use switchyard_core::service::echo::{EchoConfig, EchoServer};
use switchyard_core::service::line_client::{LineClient, LineClientConfig};
use switchyard_core::time::WallClock;
use switchyard_core::tls::{ClientCerts, Secure, Tls, TlsDial, TlsEvent, TlsServe, TlsSettings, Trust};
use switchyard_core::{Env, Input, Instant, ListenerId, Machine, Output};

/// p50 and p99 of `count` handshakes (after 20 not counted), each with fresh machines.
pub fn measure(count: usize, env: &mut Env) -> Result<(Duration, Duration), CliError> {
    let made = crate::cert::make(&["127.0.0.1".to_owned()], 1)?;
    let wall = WallClock::utc(switchyard_adapters::unix_micros_now(), Instant::ZERO);
    let mut times = Vec::with_capacity(count);
    for round in 0..count + 20 {
        let serve = TlsServe { identity: made.identity.clone(), listeners: Secure::All, clients: ClientCerts::None };
        let dial = TlsDial { trust: Trust::Pin(made.fingerprint), server_name: None, to: Secure::All, identity: None };
        let (mut server_env, mut client_env) = (env.child(2 * round as u16), env.child(2 * round as u16 + 1));
        let started = WallInstant::now();
        let server = EchoServer::new(server_env.child(0), EchoConfig::default());
        let server = Tls::new(server, TlsSettings { serve: Some(serve), dial: None }, server_env.secret(b"tls"), wall);
        let client = LineClient::connect(client_env.child(0), Instant::ZERO, server_addr(), LineClientConfig::default());
        let client = Tls::new(client, TlsSettings { serve: None, dial: Some(dial) }, client_env.secret(b"tls"), wall);
        let (server, client) = match (server, client) {
            (Ok(s), Ok(c)) => (s, c),
            (Err(e), _) | (_, Err(e)) => return Err(CliError::new(format!("cannot set up the handshake: {e}"))),
        };
        handshake(server, client)?;
        if round >= 20 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
}

fn server_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7007))
}

/// Carries bytes between the two until both report the connection secured.
fn handshake(mut server: Tls<EchoServer>, mut client: Tls<LineClient>) -> Result<(), CliError> {
    let now = Instant::ZERO;
    let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let mut server_conn = None;
    let (mut client_done, mut server_done) = (false, false);
    // A handshake is a few flights; far fewer rounds than this.
    for _ in 0..64 {
        while let Some(out) = client.poll_output() {
            match out {
                Output::Connect { conn, .. } => {
                    server_conn = Some(server.accept(now, ListenerId(0), peer).map_err(CliError::new)?);
                    client.handle_input(now, Input::Connected { conn, local: peer });
                }
                Output::Write { conn, bytes } => {
                    client.handle_input(now, Input::Sent { conn, bytes: bytes.len() });
                    if let Some(s) = server_conn {
                        server.handle_input(now, Input::Received { conn: s, bytes: (&bytes[..]).into() });
                    }
                }
                Output::Event(event) => client_done |= secured(event)?,
                _ => {}
            }
        }
        let client_conn = client.inner().conn();
        while let Some(out) = server.poll_output() {
            match out {
                Output::Write { conn, bytes } => {
                    server.handle_input(now, Input::Sent { conn, bytes: bytes.len() });
                    client.handle_input(now, Input::Received { conn: client_conn, bytes: (&bytes[..]).into() });
                }
                Output::Event(event) => server_done |= secured(event)?,
                _ => {}
            }
        }
        if client_done && server_done {
            return Ok(());
        }
    }
    Err(CliError::new("the benchmark handshake did not finish"))
}

/// True for the event that says a side finished its handshake; an error for a failure.
fn secured<E>(event: TlsEvent<E>) -> Result<bool, CliError> {
    match event {
        TlsEvent::Secured { .. } => Ok(true),
        TlsEvent::Failed { reason, .. } => Err(CliError::new(format!("the benchmark handshake failed: {reason}"))),
        TlsEvent::Inner(_) => Ok(false),
    }
}
