//! `switchyard tunnel local` and `tunnel remote` as separate processes in front of real
//! services, under every runtime: routing by prefix (also with the event loop
//! busy-polling), static forwards, a refused route, a wrong secret, and bad arguments.
//! Each flow uses a loopback address of its own (127.0.0.10N) with the default ports, so
//! tests run in parallel.

mod support;

use support::{assert_refused, is_time, run, text, LineConn, Proc, TempFile};

/// A whole tunnel set-up on `host`: echo and time, the remote end routing to them, the
/// local end in front with a forward 7090 → route 7007 (echo).
struct Network {
    host: String,
    remote: Proc,
    local: Proc,
    _services: Vec<Proc>,
    _keys: Vec<TempFile>,
}

impl Network {
    /// `remote_key` and `local_key` are the secret files' contents; `rt` are the global
    /// options every process gets (`--runtime ...`).
    fn start(rt: &[&str], host: &str, remote_key: &str, local_key: &str) -> Network {
        let at = |port: u16| format!("{host}:{port}");
        let service = |args: &[&str]| {
            let p = Proc::start(&[rt, args].concat());
            p.wait_for_log("server listening on");
            p
        };
        let services = vec![
            service(&["serve", "echo", "--listen", &at(7007)]),
            service(&["serve", "time", "--listen", &at(9090)]),
        ];
        let keys = vec![
            TempFile::new(&format!("{host}-remote.key"), remote_key),
            TempFile::new(&format!("{host}-local.key"), local_key),
        ];
        let (to_time, to_echo) = (format!("9090={}", at(9090)), format!("default={}", at(7007)));
        let echo_route = format!("7007={}", at(7007));
        let remote = Proc::start(
            &[
                rt,
                &["tunnel", "remote", "--listen", &at(7001), "--secret-file", keys[0].arg()],
                &["--route", &to_time, "--route", &to_echo, "--route", &echo_route],
            ]
            .concat(),
        );
        remote.wait_for_log("tunnel remote end listening on");
        let local = Proc::start(
            &[
                rt,
                &["tunnel", "local", "--listen", &at(7000), "--remote", &at(7001), "--secret-file", keys[1].arg()],
                &["--forward", "7090=7007"],
            ]
            .concat(),
        );
        // No wait for its "listening" line: the carrier may come up, and log so, before it.
        // Each test waits for the carrier event it expects instead.
        Network { host: host.to_owned(), remote, local, _services: services, _keys: keys }
    }

    fn at(&self, port: u16) -> String {
        format!("{}:{port}", self.host)
    }
}

fn routes_by_prefix_and_forwards_untouched(rt: &[&str], host: &str) {
    let net = Network::start(rt, host, "same secret\n", "same secret");
    net.local.wait_for_log("carrier up");
    let send = |to: &str, line: &str| run(&[rt, &["send", "--to", to, line]].concat(), b"");

    let out = send(&net.at(7000), "hello");
    assert_eq!(text(&out.stdout), "hello\n", "{out:?}");
    assert!(out.status.success());

    let out = send(&net.at(7000), "9090:time");
    let stdout = text(&out.stdout);
    assert!(is_time(stdout.trim_end()), "{out:?}");

    // Through the forward nothing is read as a prefix: echo gets the bytes as sent.
    let out = send(&net.at(7090), "9090:time");
    assert_eq!(text(&out.stdout), "9090:time\n", "{out:?}");

    let out = send(&net.at(7000), "1234:x");
    assert_eq!(text(&out.stderr), "error: unknown route 1234\n", "{out:?}");
    assert_eq!(out.status.code(), Some(1));
    net.remote.wait_for_log("refused: unknown route 1234");
}

#[test]
fn routes_by_prefix_and_forwards_untouched_on_smol() {
    routes_by_prefix_and_forwards_untouched(&["--runtime", "smol"], "127.0.0.101");
}

#[test]
fn routes_by_prefix_and_forwards_untouched_on_async_std() {
    routes_by_prefix_and_forwards_untouched(&["--runtime", "async-std"], "127.0.0.102");
}

#[test]
fn routes_by_prefix_and_forwards_untouched_on_mio() {
    routes_by_prefix_and_forwards_untouched(&["--runtime", "mio"], "127.0.0.105");
}

#[test]
fn routes_by_prefix_and_forwards_untouched_on_mio_busy_polling() {
    // Every process spins up to 200 µs after traffic; nothing it relays may change.
    routes_by_prefix_and_forwards_untouched(&["--runtime", "mio", "--busy-poll", "200"], "127.0.0.107");
}

fn a_wrong_secret_is_refused_and_clients_are_told(runtime: &str, host: &str) {
    let net = Network::start(&["--runtime", runtime], host, "one secret", "another secret");
    let line = net.remote.wait_for_log("different secrets");
    assert!(line.contains("ERROR") && line.contains("authentication"), "{line}");
    let line = net.local.wait_for_log("different secrets");
    assert!(line.contains("ERROR"), "{line}");

    let out = run(&["--runtime", runtime, "send", "--to", &net.at(7000), "hello"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).starts_with("error: tunnel is down"), "{out:?}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn a_wrong_secret_is_refused_and_clients_are_told_on_smol() {
    a_wrong_secret_is_refused_and_clients_are_told("smol", "127.0.0.103");
}

#[test]
fn a_wrong_secret_is_refused_and_clients_are_told_on_async_std() {
    a_wrong_secret_is_refused_and_clients_are_told("async-std", "127.0.0.104");
}

#[test]
fn a_wrong_secret_is_refused_and_clients_are_told_on_mio() {
    a_wrong_secret_is_refused_and_clients_are_told("mio", "127.0.0.106");
}

#[test]
fn bad_arguments_are_named_in_one_line() {
    let key = TempFile::new("args.key", "k");
    let empty = TempFile::new("args-empty.key", "\n");
    let missing = format!("{}.missing", key.arg());
    let cases: &[(&[&str], i32, &str)] = &[
        (&["tunnel", "local", "--secret-file", key.arg(), "--forward", "7090"], 2, "\"7090\""),
        (&["tunnel", "local", "--secret-file", key.arg(), "--forward", "7090=bad route"], 2, "bad route"),
        (&["tunnel", "remote", "--secret-file", key.arg(), "--route", "9090"], 2, "\"9090\""),
        (&["tunnel", "remote", "--secret-file", key.arg()], 2, "at least one --route"),
        (&["tunnel", "remote", "--secret-file", &missing, "--route", "default=127.0.0.1:1"], 1, &missing),
        (&["tunnel", "local", "--secret-file", empty.arg()], 1, "is empty"),
        (&["--busy-poll", "5000", "tunnel", "local", "--secret-file", key.arg()], 2, "over the cap of 1000 µs"),
        (&["tunnel", "local", "--secret-file", key.arg(), "--threads", "0"], 2, "--threads takes 1 to 64, not \"0\""),
        (
            &["--runtime", "smol", "--busy-poll", "50", "tunnel", "local", "--secret-file", key.arg()],
            1,
            "needs --runtime mio",
        ),
    ];
    assert_refused(cases);
}

/// A TCP relay between the local end and the remote end that the test can cut: every
/// carrier crosses it, so one carrier of several can be lost while the others carry on.
struct CarrierCut {
    addr: String,
    /// Both sockets of each relayed connection, in the order they arrived.
    links: std::sync::Arc<std::sync::Mutex<Vec<[std::net::TcpStream; 2]>>>,
    /// While set, new connections are dropped at once (the remote end "unreachable").
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CarrierCut {
    fn start(listen: &str, to: &str) -> CarrierCut {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind(listen).unwrap();
        let cut = CarrierCut { addr: listen.to_owned(), links: Default::default(), refuse: Default::default() };
        let (links, refuse, to) = (cut.links.clone(), cut.refuse.clone(), to.to_owned());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&to) else { continue };
                let pump = |mut from: TcpStream, mut into: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Write);
                    })
                };
                pump(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pump(outbound.try_clone().unwrap(), inbound.try_clone().unwrap());
                links.lock().unwrap().push([inbound, outbound]);
            }
        });
        cut
    }

    /// Cuts the `n`th connection relayed (both sides see it end) and refuses new ones.
    fn cut(&self, n: usize) {
        self.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        for socket in &self.links.lock().unwrap()[n] {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    fn heal(&self) {
        self.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The worker (`local[K]`) named in a log line.
fn worker(line: &str) -> String {
    let start = line.find("local[").unwrap_or_else(|| panic!("no worker in {line:?}"));
    line[start..].split(']').next().unwrap().to_owned() + "]"
}

/// `--threads 2` at both ends: two carriers, clients spread over them; losing one carrier
/// ends only its own streams, new clients go to the carrier that is up meanwhile, and the
/// lost one reconnects and takes clients again.
fn carriers_spread_and_one_lost_spares_the_others(runtime: &str, host: &str) {
    let rt = ["--runtime", runtime];
    let at = |port: u16| format!("{host}:{port}");
    let echo = Proc::start(&[&rt[..], &["serve", "echo", "--listen", &at(7007)]].concat());
    echo.wait_for_log("server listening on");
    let key = TempFile::new(&format!("{host}-threads.key"), "shared secret");
    let route = format!("default={}", at(7007));
    let remote_args = ["tunnel", "remote", "--listen", &at(7001), "--secret-file", key.arg(), "--route", &route];
    let remote = Proc::start(&[&rt[..], &remote_args, &["--threads", "2"]].concat());
    remote.wait_for_log("tunnel remote end listening on");
    let relay = CarrierCut::start(&at(7011), &at(7001));
    let local_args = ["tunnel", "local", "--listen", &at(7000), "--remote", &relay.addr, "--secret-file", key.arg()];
    let local = Proc::start(&[&rt[..], &local_args, &["--threads", "2"]].concat());
    let mut up = [worker(&local.wait_for_log("carrier up")), worker(&local.wait_for_log("carrier up"))];
    up.sort();
    assert_eq!(up, ["local[0]", "local[1]"]);

    // Four clients, two on each carrier.
    let mut clients = Vec::new();
    let mut placed = Vec::new();
    for k in 0..4 {
        let mut client = LineConn::connect(&at(7000));
        client.send(format!("client {k}\n").as_bytes());
        assert_eq!(client.line(), format!("client {k}"));
        placed.push(worker(&local.wait_for_log("opened to route")));
        clients.push(client);
    }
    let on = |w: &str| placed.iter().filter(|p| *p == w).count();
    assert_eq!((on("local[0]"), on("local[1]")), (2, 2), "{placed:?}");

    // Cut the first carrier: its streams end, the others' go on.
    relay.cut(0);
    let lost = worker(&local.wait_for_log("carrier down"));
    for (client, at_worker) in clients.iter_mut().zip(&placed) {
        if *at_worker == lost {
            assert_eq!(client.line_or_end(), None, "a stream of the lost carrier is still open");
        } else {
            client.send(b"still there?\n");
            assert_eq!(client.line(), "still there?");
        }
    }
    // While it cannot reconnect, new clients all go to the carrier that is up.
    for k in 0..4 {
        let out = run(&[&rt[..], &["send", "--to", &at(7000), &format!("meanwhile {k}")]].concat(), b"");
        assert_eq!(text(&out.stdout), format!("meanwhile {k}\n"), "{out:?}");
        assert_ne!(worker(&local.wait_for_log("opened to route")), lost);
    }
    // Once it is back, it takes clients again.
    relay.heal();
    let back = local.wait_for_log("carrier up");
    assert_eq!(worker(&back), lost);
    let mut after = Vec::new();
    for k in 0..2 {
        let out = run(&[&rt[..], &["send", "--to", &at(7000), &format!("after {k}")]].concat(), b"");
        assert_eq!(text(&out.stdout), format!("after {k}\n"), "{out:?}");
        after.push(worker(&local.wait_for_log("opened to route")));
    }
    assert!(after.contains(&lost), "the reconnected carrier took no client: {after:?}");
    drop(remote);
}

#[test]
fn carriers_spread_and_one_lost_spares_the_others_on_smol() {
    carriers_spread_and_one_lost_spares_the_others("smol", "127.0.0.131");
}

#[test]
fn carriers_spread_and_one_lost_spares_the_others_on_async_std() {
    carriers_spread_and_one_lost_spares_the_others("async-std", "127.0.0.132");
}

#[test]
fn carriers_spread_and_one_lost_spares_the_others_on_mio() {
    carriers_spread_and_one_lost_spares_the_others("mio", "127.0.0.133");
}
