//! Echo over loopback sockets under both adapters.
//!
//! Every test body is written once, generic over [`Runtime`], and instantiated for smol and
//! async-std at the bottom. Servers bind 127.0.0.1 port 0. Timeouts only guard against a
//! hang; nothing asserts on how long anything took.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use switchyard_adapters::{Config, Driver, EventPolicy, Running, Runtime};
use switchyard_core::service::echo::{EchoConfig, EchoServer};
use switchyard_core::service::line_client::{LineClient, LineClientConfig, LineClientEvent};
use switchyard_core::{Env, Instant, ListenerId, NetError};
use switchyard_tests::{guarded, GUARD};

fn start_echo<R: Runtime>(rt: &R, config: EchoConfig) -> (Running<EchoServer>, SocketAddr) {
    let server = EchoServer::new(Env::new(7), config);
    let running = rt
        .block_on(Driver::new(server).listen(ListenerId(0), "127.0.0.1:0".parse().unwrap()).start(rt.clone()))
        .expect("start the echo server");
    let addr = running.local_addr(ListenerId(0)).unwrap();
    (running, addr)
}

/// A blocking client speaking lines.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(GUARD)).unwrap();
        stream.set_write_timeout(Some(GUARD)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    fn send(&mut self, line: &str) {
        self.stream.write_all(format!("{line}\n").as_bytes()).expect("send");
    }

    fn recv(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("receive");
        line
    }

    fn echo(&mut self, line: &str) {
        self.send(line);
        assert_eq!(self.recv(), format!("{line}\n"));
    }
}

/// A `LineClient` machine under its own driver, as an app would run it.
fn line_client<R: Runtime>(rt: &R, to: SocketAddr) -> Running<LineClient> {
    let client = LineClient::connect(Env::new(11), Instant::ZERO, to, LineClientConfig::default());
    rt.block_on(Driver::new(client).event_policy(EventPolicy::Wait).start(rt.clone())).expect("start the client")
}

/// (1) Lines come back in order, to a plain std client and to `LineClient` under the driver.
fn one_client_gets_its_lines_in_order<R: Runtime>(rt: R) {
    let (server, addr) = start_echo(&rt, EchoConfig::default());
    let mut c = Client::connect(addr);
    let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    for line in &lines {
        c.send(line);
    }
    for line in &lines {
        assert_eq!(c.recv(), format!("{line}\n"));
    }

    let client = line_client(&rt, addr);
    let to_send = lines.clone();
    let sent = guarded(&rt, "send lines", async {
        client
            .command(move |c: &mut LineClient, now| {
                for line in &to_send {
                    c.send_line(now, line.as_bytes())?;
                }
                c.finish(now);
                Ok::<_, switchyard_core::service::line_client::SendError>(())
            })
            .await
    });
    sent.expect("machine running").expect("lines accepted");
    let events = client.events();
    let got = guarded(&rt, "the echoes", async {
        let mut got = Vec::new();
        loop {
            match events.recv().await.expect("events until closed") {
                LineClientEvent::Line(line) => got.push(String::from_utf8(line.to_vec()).unwrap()),
                LineClientEvent::Closed(None) => return got,
                LineClientEvent::Connected { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    assert_eq!(got, lines);
    client.shutdown();
    server.shutdown();
}

/// (2) 200 clients at once, 20 lines each: every client gets exactly its own lines back.
fn many_concurrent_clients<R: Runtime>(rt: R) {
    const CLIENTS: usize = 200;
    const LINES: usize = 20;
    let (server, addr) = start_echo(&rt, EchoConfig::default());
    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                start.wait();
                let lines: Vec<String> = (0..LINES).map(|j| format!("client {i} line {j}")).collect();
                for line in &lines {
                    c.send(line);
                }
                for line in &lines {
                    assert_eq!(c.recv(), format!("{line}\n"));
                }
                c.stream.shutdown(Shutdown::Write).unwrap();
                assert_eq!(c.recv(), "", "nothing but our own lines, then the end");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    server.shutdown();
}

/// (3) An over-long line gets the error and that connection closes; clients connected
/// before and after keep getting echoes.
fn overlong_line_is_refused_alone<R: Runtime>(rt: R) {
    let config = EchoConfig { max_line: 1024, ..EchoConfig::default() };
    let (server, addr) = start_echo(&rt, config);
    let mut before = Client::connect(addr);
    before.echo("before");

    let mut bad = Client::connect(addr);
    bad.stream.write_all(&[b'x'; 5000]).unwrap();
    let mut reply = String::new();
    bad.reader.read_to_string(&mut reply).expect("the error, then an orderly end");
    assert_eq!(reply, "error: line too long (limit 1024 bytes)\n");

    before.echo("still here");
    let mut after = Client::connect(addr);
    after.echo("after");
    server.shutdown();
}

/// (4) A client that half-closes still gets every reply, the unterminated last line too.
fn half_close_gets_everything<R: Runtime>(rt: R) {
    let (server, addr) = start_echo(&rt, EchoConfig::default());
    let mut c = Client::connect(addr);
    c.stream.write_all(b"a\nb\nlast").unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    c.reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "a\nb\nlast\n");
    server.shutdown();
}

/// (5) A client that writes 32 MiB and never reads is paused (TCP pushes back on it, so it
/// is neither buffered nor disconnected); the server's queued bytes stay bounded and other
/// clients keep getting echoes.
fn non_reader_does_not_stall_others<R: Runtime>(rt: R) {
    const FLOOD: usize = 32 << 20;
    let config = EchoConfig::default();
    // Replies wait once past `pause_above`; at most `read_ahead` more input (plus the read
    // under way) is still echoed after the pause; the other client adds a few short lines.
    let driver = Config::default();
    let bound = config.pause_above + driver.read_ahead + driver.read_size + 4096;
    let (server, addr) = start_echo(&rt, config);
    let hog = Client::connect(addr);
    let hog_socket = hog.stream.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let flood = {
        let written = written.clone();
        let mut stream = hog.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let line = [[b'h'; 1023].as_slice(), b"\n"].concat();
            while written.load(Ordering::Relaxed) < FLOOD {
                if stream.write_all(&line).is_err() {
                    return;
                }
                written.fetch_add(line.len(), Ordering::Relaxed);
            }
        })
    };

    guarded(&rt, "the server pausing the hog", async {
        while server.stats().paused_readers == 0 {
            rt.sleep_until(rt.now() + Duration::from_millis(5)).await;
        }
    });
    let mut other = Client::connect(addr);
    for i in 0..50 {
        other.echo(&format!("other {i}"));
        let queued = server.stats().queued_write_bytes;
        assert!(queued <= bound, "{queued} bytes queued, bound {bound}");
    }
    assert!(written.load(Ordering::Relaxed) < FLOOD, "the hog was pushed back, not buffered");

    hog_socket.shutdown(Shutdown::Both).unwrap();
    flood.join().unwrap();
    drop(hog);
    other.echo("after the hog");
    server.shutdown();
}

/// (6) Connecting to a port nobody listens on reports `ConnectFailed(Refused)`.
fn connect_to_closed_port_is_refused<R: Runtime>(rt: R) {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = line_client(&rt, closed);
    let events = client.events();
    let event = guarded(&rt, "the connect failure", async { events.recv().await.expect("an event") });
    assert_eq!(event, LineClientEvent::ConnectFailed(NetError::Refused));
    client.shutdown();
}

/// (7) Past the connection cap a new client is reset; the ones already served carry on.
fn refused_past_the_connection_cap<R: Runtime>(rt: R) {
    let (server, addr) = start_echo(&rt, EchoConfig { max_connections: 1, ..EchoConfig::default() });
    let mut first = Client::connect(addr);
    first.echo("first");
    let mut second = Client::connect(addr);
    let mut buf = [0; 1];
    let err = second.stream.read(&mut buf).expect_err("refused means reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    first.echo("still served");
    assert_eq!(server.stats().refused, 1);
    server.shutdown();
}

switchyard_tests::for_each_runtime!(
    one_client_gets_its_lines_in_order,
    many_concurrent_clients,
    overlong_line_is_refused_alone,
    half_close_gets_everything,
    non_reader_does_not_stall_others,
    connect_to_closed_port_is_refused,
    refused_past_the_connection_cap,
);
