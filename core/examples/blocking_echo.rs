//! Embedding the core without any async runtime: the echo machine driven by plain std
//! blocking sockets and threads.
//!
//! ```text
//! cargo run -p switchyard-core --example blocking_echo [ADDR]     (default 127.0.0.1:7008)
//! ```
//!
//! The whole embedding is three kinds of thread and one channel:
//!
//! - an accept thread and one reader thread per connection turn what happens on the sockets
//!   into [`Net`] messages on a channel;
//! - the machine thread owns the [`EchoServer`]. It waits on the channel until the machine's
//!   next deadline (`recv_timeout`), feeds it what arrived (or `handle_timeout`), then drains
//!   `poll_output` and carries out each output — the order of calls in `switchyard_core::machine`.
//!
//! To stay short it writes with blocking `write_all` on the machine thread, so one peer that
//! stops reading would stall everyone; the real adapters (`switchyard-adapters`) queue writes
//! per connection instead. Everything else is what any driver does.

use bytes::BytesMut;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Instant as StdInstant;
use switchyard_core::service::echo::{EchoConfig, EchoServer};
use switchyard_core::{CloseHow, ConnId, Env, Input, Instant, ListenerId, Machine, NetError, Output};

/// What the socket threads tell the machine thread.
enum Net {
    Accepted(TcpStream, SocketAddr),
    Received(ConnId, BytesMut),
    Eof(ConnId),
    Failed(ConnId, io::Error),
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7008".into());
    let listener = TcpListener::bind(&addr)?;
    println!("blocking echo server on {}", listener.local_addr()?);
    // Any seed will do for echo; a real embedder draws one from the OS and logs it.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    serve(listener, EchoServer::new(Env::new(seed), EchoConfig::default()));
    Ok(())
}

/// Serves `machine` on `listener` until the process ends.
fn serve(listener: TcpListener, machine: EchoServer) {
    let (tx, rx) = mpsc::channel();
    let accept_tx = tx.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(peer) = stream.peer_addr() else { continue };
            if accept_tx.send(Net::Accepted(stream, peer)).is_err() {
                return;
            }
        }
    });
    run_machine(machine, rx, tx);
}

/// The machine thread.
fn run_machine(mut machine: EchoServer, rx: Receiver<Net>, tx: Sender<Net>) {
    let start = StdInstant::now();
    // The machine's time: microseconds since this driver started.
    let clock = || Instant::from_micros(start.elapsed().as_micros() as u64);
    let mut writers: HashMap<ConnId, TcpStream> = HashMap::new();
    loop {
        // Wait for input, or until the machine's deadline.
        let wait = machine.poll_timeout().map(|at| at.saturating_duration_since(clock()));
        let received = match wait {
            Some(wait) => rx.recv_timeout(wait),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = clock();
        match received {
            Ok(Net::Accepted(stream, peer)) => match machine.accept(now, ListenerId(0), peer) {
                Ok(conn) => {
                    let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else { continue };
                    writers.insert(conn, writer);
                    let tx = tx.clone();
                    thread::spawn(move || read_loop(conn, reader, tx));
                }
                Err(refusal) => eprintln!("refused {peer}: {refusal}"),
            },
            Ok(Net::Received(conn, bytes)) => machine.handle_input(now, Input::Received { conn, bytes }),
            Ok(Net::Eof(conn)) => machine.handle_input(now, Input::ReadClosed { conn }),
            Ok(Net::Failed(conn, error)) => {
                writers.remove(&conn);
                let reason = NetError::Other(error.to_string());
                machine.handle_input(now, Input::Closed { conn, reason });
            }
            Err(RecvTimeoutError::Timeout) => machine.handle_timeout(now),
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Drain after every call, carrying out each output.
        let mut sent = Vec::new();
        while let Some(output) = machine.poll_output() {
            match output {
                Output::Write { conn, bytes } => {
                    if let Some(stream) = writers.get_mut(&conn) {
                        if stream.write_all(&bytes).is_ok() {
                            sent.push((conn, bytes.len()));
                        }
                    }
                }
                Output::Close { conn, how } => {
                    if let Some(stream) = writers.get(&conn) {
                        // The reader thread keeps reading until the peer closes, so unread
                        // input cannot turn our close into a reset that loses the last reply.
                        let _ = stream.shutdown(if how == CloseHow::Abort { Shutdown::Both } else { Shutdown::Write });
                    }
                    if how != CloseHow::HalfClose {
                        writers.remove(&conn);
                    }
                }
                Output::Event(event) => println!("{event:?}"),
                // Writes complete before `Sent` is reported, so the echo server's backlog
                // never grows and it never asks to pause. It makes no outbound connections
                // and sends no datagrams.
                _ => {}
            }
        }
        // Reporting `Sent` is a call too: drain again (nothing comes out for echo).
        for (conn, bytes) in sent {
            machine.handle_input(now, Input::Sent { conn, bytes });
        }
        while machine.poll_output().is_some() {}
    }
}

/// One connection's reader thread.
fn read_loop(conn: ConnId, mut stream: TcpStream, tx: Sender<Net>) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let net = match stream.read(&mut buf) {
            Ok(0) => Net::Eof(conn),
            Ok(n) => Net::Received(conn, BytesMut::from(&buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Net::Failed(conn, e),
        };
        let last = !matches!(net, Net::Received(..));
        if tx.send(net).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn start(config: EchoConfig) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || serve(listener, EchoServer::new(Env::new(1), config)));
        addr
    }

    fn client(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream
    }

    #[test]
    fn echoes_a_line() {
        let mut c = client(start(EchoConfig::default()));
        c.write_all(b"hello\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "hello\n");
    }

    #[test]
    fn overlong_line_gets_the_error() {
        let mut c = client(start(EchoConfig { max_line: 1024, ..EchoConfig::default() }));
        c.write_all(&[b'x'; 5000]).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "error: line too long (limit 1024 bytes)\n");
    }
}
