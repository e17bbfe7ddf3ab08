//! `--route NAME=ADDR,proxy=v1|v2` against a real consumer of the PROXY protocol: Debian's
//! nginx, run by the test as its own process on loopback with `listen … proxy_protocol` and
//! an access log of `$proxy_protocol_addr:$proxy_protocol_port`. A client bound to a
//! loopback address of its own (neither end's) sends an HTTP request through the tunnel's
//! local end; nginx must log that address and port, which it can only have learnt from the
//! header the remote end wrote.
//!
//! nginx comes from `.ci/run` (APT_PACKAGES). Without it the tests print why and skip,
//! except on CI (`CI=true`), where a missing nginx fails them. Each test has a loopback
//! address of its own (127.0.0.217, .218) for nginx and both ends, so they run in parallel.

mod support;

use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Proc, TempDir, TempFile, GUARD};

/// The nginx executable: on the PATH, or where Debian puts it (`/usr/sbin` is not on a
/// normal user's PATH).
fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.map(|dir| dir.join("nginx")).find(|exe| exe.is_file())
}

/// nginx, or `None` after saying why the test is skipped; on CI a missing nginx fails.
fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_nginx();
    if found.is_none() {
        let reason = "nginx is not installed (apt-get install nginx; .ci/run installs it)";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{test}: CI=true but {reason}");
        eprintln!("{test}: skipped: {reason}");
    }
    found
}

/// An nginx of the test's own: one process (no master, no daemon), every path inside `dir`,
/// one server on `listen` that expects a PROXY header and logs the client it names.
struct Nginx {
    child: Child,
    dir: TempDir,
}

impl Nginx {
    fn start(exe: &PathBuf, name: &str, listen: &str) -> Nginx {
        let dir = TempDir::new(name);
        let p = |f: &str| dir.file(f);
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {pid};\nerror_log {error} info;\nevents {{ worker_connections 64; }}\n\
             http {{\n\
               client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fastcgi;\n\
               uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;\n\
               log_format tunnel '$proxy_protocol_addr $proxy_protocol_port \"$request\" $status';\n\
               server {{\n\
                 listen {listen} proxy_protocol;\n\
                 access_log {access} tunnel;\n\
                 location / {{ return 200 \"hello through the tunnel\\n\"; }}\n\
               }}\n\
             }}\n",
            pid = p("nginx.pid"),
            error = p("error.log"),
            t = dir.path.display(),
            access = p("access.log"),
        );
        std::fs::write(p("nginx.conf"), conf).unwrap();
        // `-e`: the error log from the start, before the configuration names one, so a
        // non-root run does not try the system's /var/log/nginx.
        let child = Command::new(exe)
            .args(["-p", &p(""), "-c", &p("nginx.conf"), "-e", &p("error.log")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, dir };
        let deadline = Instant::now() + GUARD;
        while TcpStream::connect(listen).is_err() {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!("nginx exited ({status}): {}", nginx.error_log());
            }
            assert!(Instant::now() < deadline, "nginx is not listening on {listen}: {}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.file("error.log")).unwrap_or_default()
    }

    /// The first access-log line, once nginx has written it.
    fn first_access(&self) -> String {
        let deadline = Instant::now() + GUARD;
        loop {
            let log = std::fs::read_to_string(self.dir.file("access.log")).unwrap_or_default();
            if let Some(line) = log.lines().next() {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "nginx logged no request: {}", self.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP request to `to` from a socket bound to `from` (any port); returns the reply and
/// the client's address.
fn http_get_from(from: &str, to: &str) -> (String, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&from.parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&to.parse::<SocketAddr>().unwrap().into()).unwrap();
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let client = stream.local_addr().unwrap();
    stream.write_all(b"GET /who HTTP/1.0\r\nHost: tunnel\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    (reply, client)
}

/// nginx on `host`:8080 behind `tunnel remote` (route `web` with `proxy=VERSION`) and
/// `tunnel local` (forward 7090 → web), both with `threads`; a client at `client_ip`
/// through 7090 must be who nginx logs.
fn nginx_logs_the_client(test: &str, version: &str, host: &str, client_ip: &str, threads: &str) {
    let Some(exe) = nginx_or_skip(test) else { return };
    let at = |port: u16| format!("{host}:{port}");
    let nginx = Nginx::start(&exe, test, &at(8080));
    let key = TempFile::new(&format!("{test}.key"), "proxy protocol test secret");
    let route = format!("web={},proxy={version}", at(8080));
    let remote = Proc::start(
        &[
            &["tunnel", "remote", "--listen", &at(7001), "--secret-file", key.arg(), "--route", &route][..],
            &["--threads", threads],
        ]
        .concat(),
    );
    let listening = remote.wait_for_log("tunnel remote end listening on");
    assert!(listening.contains(&format!("web → {} (PROXY {version})", at(8080))), "{listening}");
    let local = Proc::start(
        &[
            &["tunnel", "local", "--listen", &at(7000), "--remote", &at(7001), "--secret-file", key.arg()][..],
            &["--forward", "7090=web", "--threads", threads],
        ]
        .concat(),
    );
    // Its listeners bind and its carriers come up in either order: wait for all of them.
    let (mut listening, mut up) = (false, 0);
    while !listening || up < threads.parse().unwrap() {
        let line = local.wait_for_log("");
        listening |= line.contains("tunnel local end listening on");
        up += usize::from(line.contains("carrier up"));
    }

    let (reply, client) = http_get_from(&format!("{client_ip}:0"), &at(7090));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello through the tunnel\n"), "{reply}");
    // nginx saw a connection from the remote end, on loopback: only the header can have
    // told it the client's address and port.
    assert_eq!(nginx.first_access(), format!("{} {} \"GET /who HTTP/1.0\" 200", client.ip(), client.port()));
    // The remote end's log names the client too, not only the carrier it came by.
    remote.wait_for_log(&format!("(client {client}) opened to route web"));
}

#[test]
fn nginx_logs_the_client_address_from_a_v1_header() {
    nginx_logs_the_client("proxy-v1", "v1", "127.0.0.217", "127.0.0.77", "1");
}

/// Over two carriers (`--threads 2`): a client handed to a worker by the accept thread
/// keeps its real address too.
#[test]
fn nginx_logs_the_client_address_from_a_v2_header_over_two_carriers() {
    nginx_logs_the_client("proxy-v2", "v2", "127.0.0.218", "127.0.0.78", "2");
}

#[test]
fn unknown_route_options_are_usage_errors() {
    let key = TempFile::new("proxy-usage.key", "proxy protocol test secret");
    support::assert_refused(&[
        (
            &["tunnel", "remote", "--secret-file", key.arg(), "--route", "web=127.0.0.1:80,proxy=v3"],
            2,
            "proxy takes v1 or v2",
        ),
        (
            &["tunnel", "remote", "--secret-file", key.arg(), "--route", "web=127.0.0.1:80,fast"],
            2,
            "unknown option \"fast\"",
        ),
    ]);
}
