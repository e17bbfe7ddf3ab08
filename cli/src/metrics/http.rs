//! The scrape endpoint: a small, bounded HTTP/1.x server on std threads.
//!
//! `GET /metrics` gets the text exposition; any other path 404, any other method 405, a
//! request that is not HTTP 400, headers over [`MAX_REQUEST`] 431. Each connection carries
//! one request and is closed after the answer. It runs on threads of its own, apart from
//! every machine's loop: a scraper that stalls holds one of [`MAX_SCRAPES`] threads for at
//! most [`IO_TIMEOUT`] each way, and further scrapers meanwhile get 503.

use super::Metrics;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of request line and headers read; a longer request is refused (431).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Most scrapes served at once; more are answered 503 at once.
pub const MAX_SCRAPES: usize = 4;
/// How long one read or write of a scrape may wait for the scraper.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The exposition's content type (Prometheus text format 0.0.4).
const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Binds `addr` and serves `metrics` there from a thread of its own, for as long as the
/// process runs. Returns the address bound (the real port for port 0).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || accept_loop(listener, metrics))?;
    Ok(bound)
}

fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT)).and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_SCRAPES {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = respond(&mut stream, "503 Service Unavailable", "text/plain", "too many scrapes at once\n");
            continue;
        }
        let (metrics, held) = (metrics.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("metrics scrape".into()).spawn(move || {
            if handle(&mut stream, &metrics).is_ok() {
                close_after_answer(&mut stream);
            }
            held.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            // No thread to be had: the scraper sees its connection close, and tries again.
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Most unread request bytes drained after an answer, and for how long.
const DRAIN: (u64, Duration) = (64 * 1024, Duration::from_secs(1));

/// Ends the answer (FIN), then reads and drops what the client still sends, bounded by
/// [`DRAIN`]: closing with unread input would reset the connection, and a reset can
/// destroy the answer (a 431 to a client still sending its headers) before it is read.
fn close_after_answer(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(DRAIN.1));
    let _ = io::copy(&mut stream.take(DRAIN.0), &mut io::sink());
}

/// Answers one request on `stream`.
fn handle(stream: &mut TcpStream, metrics: &Metrics) -> io::Result<()> {
    let head = match read_head(stream)? {
        Head::Complete(head) => head,
        Head::TooLong => return respond(stream, "431 Request Header Fields Too Large", "text/plain", "request too long\n"),
        Head::Ended => return Ok(()),
    };
    match route(&head) {
        Route::Metrics => respond(stream, "200 OK", CONTENT_TYPE, &metrics.encode()),
        Route::NotFound => respond(stream, "404 Not Found", "text/plain", "not found: try GET /metrics\n"),
        Route::BadMethod => respond(stream, "405 Method Not Allowed", "text/plain", "only GET is served\n"),
        Route::BadRequest => respond(stream, "400 Bad Request", "text/plain", "not an HTTP request\n"),
    }
}

/// How reading a request's head went.
enum Head {
    /// Up to the blank line.
    Complete(Vec<u8>),
    /// Past [`MAX_REQUEST`] without a blank line.
    TooLong,
    /// The scraper closed (or timed out) first.
    Ended,
}

/// Reads up to the end of the headers (`\r\n\r\n`, or `\n\n` from a lax client).
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(Head::Ended),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(Head::Ended),
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_end(&head) {
            head.truncate(end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(Head::TooLong);
        }
    }
}

fn find_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    BadRequest,
}

/// Routes a request by its first line, `METHOD TARGET HTTP/1.x`.
fn route(head: &[u8]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else { return Route::BadRequest };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::BadMethod;
    }
    // Prometheus may add a query string; it selects nothing here.
    match target.split('?').next() {
        Some("/metrics") => Route::Metrics,
        _ => Route::NotFound,
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_the_request_line() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?name[]=x HTTP/1.0"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::BadMethod);
        assert_eq!(route(b"hello"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SMTP/1.0"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(&[0xff, 0xfe]), Route::BadRequest);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
