//! `switchyard run FILE`, `config check FILE` and `up --print-config` as a user runs them:
//! the printed seed config starts what `up` starts, a file's mistakes are named at their
//! line and column, and SIGHUP replaces a remote end's routes without touching open
//! streams. Each test runs on a loopback address of its own (127.0.0.14N).

mod support;

use support::{is_time, run, text, LineConn, Proc, TempDir};

/// `switchyard config check PATH`: (exit code, stdout, stderr).
fn check(path: &str) -> (Option<i32>, String, String) {
    let out = run(&["config", "check", path], b"");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_printed_seed_config_checks_and_runs_what_up_runs() {
    let host = "127.0.0.141";
    let dir = TempDir::new("config-seed");
    let out = run(&["up", "--host", host, "--print-config"], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let path = dir.file("switchyard.toml");
    std::fs::write(&path, &out.stdout).unwrap();

    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        format!("{path}: ok: 5 services, 1 tunnel remote (5 routes), 1 tunnel local (1 forward), 3 mesh servers, 1 rendezvous\n")
    );

    let mut served = Proc::start(&["run", &path]);
    // The mesh servers of the file share their secret, so they link.
    served.wait_for_logs(&["SIGHUP reloads it", "tunnel local: carrier up", "mesh: linked to server"]);
    let entrance = format!("{host}:7000");
    let send = |line: &str| run(&["send", "--to", &entrance, line], b"");
    let out = send("hello");
    assert_eq!(text(&out.stdout), "hello\n", "echo by default: {out:?}");
    let out = send("9090:time");
    assert!(is_time(text(&out.stdout).trim_end()), "{out:?}");
    let out = send("12345:John");
    assert_eq!(text(&out.stdout), "Hello Good morning !!!! ::: John\n", "{out:?}");
    let out = run(&["send", "--to", &format!("{host}:7090"), "anything"], b"");
    assert!(is_time(text(&out.stdout).trim_end()), "the forward reaches time: {out:?}");
    assert!(served.interrupt().success());
}

#[test]
fn mistakes_are_named_at_their_line_and_column_and_nothing_starts() {
    let dir = TempDir::new("config-mistakes");
    let cases: &[(&str, &str)] = &[
        ("[[service]]\nkind = \"echo\"\nlisten = \"nowhere\"\n", ":3:10: expected HOST:PORT"),
        ("[[service]]\nkind = \"ech\"\n", ":2:8: unknown variant `ech`"),
        ("[[service]]\nkind = \"echo\"\nlisen = \"127.0.0.142:1\"\n", ":3:1: unknown field `lisen`"),
        ("[[service]]\nkind = \"echo\"\ninterval = 5\n", ":1:1: interval is for the time service, not echo"),
        ("[[tunnel_remote]]\nroutes = [\"9090\"]\n", ":2:10: expected NAME=ADDR"),
        ("\n[[tunnel_remote]]\nroutes = []\n", ":3:10: a [[tunnel_remote]] needs at least one route"),
        ("[[tunnel_remote]]\n[[tunnel_expose]]\npublish = [\"12000\"]\n", ":3:11: expected PORT=ADDR"),
        ("[[tunnel_remote]]\nallow_publish = \"9-1\"\n", ":2:17: "),
        ("[[tunnel_local]]\nforwards = [\"7090=9090\"]\n", ":1:1: this [[tunnel_local]] has no secret_file"),
        (
            "[[tunnel_remote]]\nsecret_file = \"missing.key\"\nroutes = [\"default=127.0.0.1:7\"]\n",
            "cannot read secret file",
        ),
        (
            "[[mesh_server]]\nlisten = \"127.0.0.142:5001\"\npeers = [\"127.0.0.142:5009\"]\n",
            "peer 127.0.0.142:5009 is not a [[mesh_server]] of this file",
        ),
        ("[[mesh_server]]\npeers = []\nuser_token_file = \"missing.tokens\"\n", "cannot read token file"),
        (
            "[[mesh_server]]\npeers = []\nuser_token_file = \"short.tokens\"\n",
            "short.tokens, line 2: the token of Alice is 5 bytes",
        ),
        (
            "[[service]]\nkind = \"echo\"\n[[service]]\nkind = \"echo\"\n",
            ":3:1: echo and the echo of line 1 both listen on 127.0.0.1:7007",
        ),
        ("x = [\n", ":2:1: "),
    ];
    std::fs::write(dir.file("short.tokens"), "# users\nAlice short\n").unwrap();
    for (i, (toml, wanted)) in cases.iter().enumerate() {
        let path = dir.file(&format!("bad{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let (code, stdout, stderr) = check(&path);
        assert_eq!(code, Some(1), "{toml:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.starts_with(&format!("switchyard: {path}")), "{toml:?}: {stderr}");
        assert!(stderr.contains(wanted), "{toml:?}: wanted {wanted:?} in {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        // `run` refuses the same file before anything listens.
        let out = run(&["run", &path], b"");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(text(&out.stderr).lines().last().unwrap_or(""), stderr.trim_end());
    }
    let (code, _, stderr) = check(&dir.file("absent.toml"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

/// The config of the reload test: echo and greet behind a tunnel whose remote end routes
/// `routes`; the secret file is named relative to the config's directory.
fn tunnel_config(host: &str, routes: &[&str]) -> String {
    tunnel_config_with(host, routes, &[])
}

/// [`tunnel_config`] with static `forwards` at the local end.
fn tunnel_config_with(host: &str, routes: &[&str], forwards: &[&str]) -> String {
    let quoted = |items: &[&str]| items.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
    let forwards = quoted(forwards);
    let routes: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[service]]\nkind = \"echo\"\nlisten = \"{host}:7007\"\n\n\
         [[service]]\nkind = \"greet\"\nlisten = \"{host}:12345\"\n\n\
         [[tunnel_remote]]\nlisten = \"{host}:7001\"\nsecret_file = \"tunnel.key\"\nroutes = [{}]\n\n\
         [[tunnel_local]]\nlisten = \"{host}:7000\"\nremote = \"{host}:7001\"\nsecret_file = \"tunnel.key\"\nforwards = [{forwards}]\n",
        routes.join(", ")
    )
}

#[test]
fn sighup_replaces_routes_without_touching_open_streams_and_refuses_a_broken_file() {
    let host = "127.0.0.143";
    let dir = TempDir::new("config-reload");
    std::fs::write(dir.file("tunnel.key"), "reload test secret\n").unwrap();
    let path = dir.file("switchyard.toml");
    let echo = format!("default={host}:7007");
    let greet = format!("12345={host}:12345");
    std::fs::write(&path, tunnel_config(host, &[&echo])).unwrap();

    let served = Proc::start(&["run", &path]);
    served.wait_for_log("tunnel local: carrier up");
    let entrance = format!("{host}:7000");
    // A stream opened before the reload, to the default route.
    let mut open = LineConn::connect(&entrance);
    open.send(b"before\n");
    assert_eq!(open.line(), "before");
    let mut refused = LineConn::connect(&entrance);
    refused.send(b"12345:John\n");
    assert_eq!(refused.line(), "error: unknown route 12345");

    // Add the greet route: new streams reach it, the open one carries on.
    std::fs::write(&path, tunnel_config(host, &[&echo, &greet])).unwrap();
    served.signal("HUP");
    let applied = served.wait_for_log("reload: tunnel remote #1: routes now");
    assert!(applied.contains(&format!("12345 → {host}:12345")), "{applied}");
    let mut greeted = LineConn::connect(&entrance);
    greeted.send(b"12345:John\n");
    assert_eq!(greeted.line(), "Hello Good morning !!!! ::: John");
    open.send(b"during\n");
    assert_eq!(open.line(), "during");

    // A broken file, and one that changes more than routes: both refused, routes stay.
    std::fs::write(&path, "[[tunnel_remote]\n").unwrap();
    served.signal("HUP");
    let refusal = served.wait_for_log("reload refused");
    assert!(refusal.contains(&format!("{path}:1:")), "{refusal}");
    std::fs::write(&path, tunnel_config(host, &[&echo]).replace("7007", "7008")).unwrap();
    served.signal("HUP");
    let refusal = served.wait_for_log("reload refused, the running config stays: only routes of [[tunnel_remote]]");
    assert!(refusal.contains("[[service]] #1 changed"), "{refusal}");
    let mut still = LineConn::connect(&entrance);
    still.send(b"12345:Ann\n");
    assert_eq!(still.line(), "Hello Good morning !!!! ::: Ann");

    // Remove the default route: new default streams are refused; the open one still
    // echoes, since routes are looked up only when a stream opens.
    std::fs::write(&path, tunnel_config(host, &[&greet])).unwrap();
    served.signal("HUP");
    served.wait_for_log("reload: tunnel remote #1: routes now");
    let mut late = LineConn::connect(&entrance);
    late.send(b"after\n");
    assert_eq!(late.line(), "error: no default route on the remote end");
    open.send(b"still open\n");
    assert_eq!(open.line(), "still open");
}

#[test]
fn sighup_opens_and_closes_forwards_and_streams_through_a_closed_one_carry_on() {
    let host = "127.0.0.144";
    let dir = TempDir::new("config-forwards");
    std::fs::write(dir.file("tunnel.key"), "forward reload secret\n").unwrap();
    let path = dir.file("switchyard.toml");
    let routes = [format!("default={host}:7007"), format!("12345={host}:12345")];
    let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
    std::fs::write(&path, tunnel_config(host, &routes)).unwrap();
    let served = Proc::start(&["run", &path]);
    served.wait_for_log("tunnel local: carrier up");
    let forward = format!("{host}:7090");
    assert!(std::net::TcpStream::connect(&forward).is_err(), "no forward yet");

    // Add a forward to greet: it listens, and its clients need no prefix.
    std::fs::write(&path, tunnel_config_with(host, &routes, &["7090=12345"])).unwrap();
    served.signal("HUP");
    served.wait_for_log(&format!("reload: tunnel local #1: opening a forward on {forward} to route 12345"));
    served.wait_for_log(&format!("tunnel local: forward on {forward} to route 12345 listening"));
    let mut open = LineConn::connect(&forward);
    open.send(b"John\n");
    assert_eq!(open.line(), "Hello Good morning !!!! ::: John");

    // Move it to another port: the old one closes, the new one listens, and the client
    // that came in through the old one is still served.
    std::fs::write(&path, tunnel_config_with(host, &routes, &["7091=12345"])).unwrap();
    served.signal("HUP");
    served.wait_for_log(&format!("reload: tunnel local #1: closing the forward on {forward} to route 12345"));
    served.wait_for_log(&format!("tunnel local: forward on {host}:7091 to route 12345 listening"));
    let deadline = std::time::Instant::now() + support::GUARD;
    while std::net::TcpStream::connect(&forward).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the removed forward still accepts");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    open.send(b"Ann\n");
    assert_eq!(open.line(), "Hello Good morning !!!! ::: Ann");
    let mut moved = LineConn::connect(&format!("{host}:7091"));
    moved.send(b"Bob\n");
    assert_eq!(moved.line(), "Hello Good morning !!!! ::: Bob");

    // A forward on a port something else holds is reported, and the others carry on.
    let _holder = std::net::TcpListener::bind(format!("{host}:7092")).unwrap();
    std::fs::write(&path, tunnel_config_with(host, &routes, &["7091=12345", "7092=12345"])).unwrap();
    served.signal("HUP");
    let failed = served.wait_for_log(&format!("forward on {host}:7092 to route 12345 cannot listen"));
    assert!(failed.contains("in use"), "{failed}");
    let mut still = LineConn::connect(&format!("{host}:7091"));
    still.send(b"Cy\n");
    assert_eq!(still.line(), "Hello Good morning !!!! ::: Cy");

    // Once the port is free, the next reload of the same file tries that forward again.
    drop(_holder);
    served.signal("HUP");
    served.wait_for_log(&format!("tunnel local: forward on {host}:7092 to route 12345 listening"));
    let mut retried = LineConn::connect(&format!("{host}:7092"));
    retried.send(b"Di\n");
    assert_eq!(retried.line(), "Hello Good morning !!!! ::: Di");
}

#[test]
fn a_config_runs_both_ends_of_a_reverse_tunnel() {
    let host = "127.0.0.145";
    let dir = TempDir::new("config-expose");
    let path = dir.file("switchyard.toml");
    let config = format!(
        "[[service]]\nkind = \"greet\"\nlisten = \"{host}:12345\"\n\n\
         [[tunnel_remote]]\nlisten = \"{host}:7001\"\nallow_publish = \"12000-12100\"\n\n\
         [[tunnel_expose]]\nremote = \"{host}:7001\"\npublish = [\"12050={host}:12345\", \"13000={host}:12345\"]\n"
    );
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("1 tunnel remote (0 routes), 1 tunnel expose (2 published ports)"), "{stdout}");

    let served = Proc::start(&["run", &path]);
    served.wait_for_logs(&[&format!("tunnel expose: published 12050 at {host}:12050"), "port 13000 not published"]);
    let mut visitor = LineConn::connect(&format!("{host}:12050"));
    visitor.send(b"John\n");
    assert_eq!(visitor.line(), "Hello Good morning !!!! ::: John");
}

/// `mesh_ca` in a `[[mesh_server]]` is `--mesh-ca`: such servers share no secret drawn for
/// the run, so they may peer with servers outside the file, and their own certificates are
/// checked against the CA by `config check` as at start.
#[test]
fn mesh_servers_of_a_config_file_may_be_admitted_by_a_mesh_ca() {
    let dir = TempDir::new("config-mesh-ca");
    let cert = |args: &[&str]| assert!(run(&[&["cert"][..], args].concat(), b"").status.success());
    cert(&["--ca", "--out", &dir.file("ca")]);
    cert(&["--name", "127.0.0.143", "--issuer", &dir.file("ca"), "--out", &dir.file("s1")]);
    cert(&["--name", "127.0.0.143", "--out", &dir.file("self")]);
    let section = |name: &str| {
        format!(
            "[[mesh_server]]\nlisten = \"127.0.0.143:5001\"\npeers = [\"127.0.0.143:5009\"]\n\
             tls_cert = \"{name}/cert.pem\"\ntls_key = \"{name}/key.pem\"\nmesh_ca = \"ca/cert.pem\"\n"
        )
    };
    let good = dir.file("good.toml");
    std::fs::write(&good, section("s1")).unwrap();
    let (code, stdout, stderr) = check(&good);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, format!("{good}: ok: 1 mesh server\n"));
    let bad = dir.file("bad.toml");
    std::fs::write(&bad, section("self")).unwrap();
    let (code, _, stderr) = check(&bad);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a certificate the mesh CA") && stderr.contains("issued for 127.0.0.143"), "{stderr}");
}

/// SIGHUP reads a `[[mesh_server]]`'s `user_token_file` again: a name the new file lists
/// needs its token from then on, and a file that does not read is refused with its line
/// while the tokens running stay.
#[test]
fn sighup_reloads_a_mesh_servers_user_tokens() {
    let host = "127.0.0.146";
    let server = format!("{host}:5001");
    let dir = TempDir::new("config-mesh-tokens");
    let tokens = dir.file("users.tokens");
    std::fs::write(&tokens, "carol 0123456789abcdef0123\n").unwrap();
    let path = dir.file("switchyard.toml");
    let config = format!(
        "[[mesh_server]]\nlisten = \"{server}\"\npeers = []\ninsecure = true\nuser_token_file = \"users.tokens\"\n"
    );
    std::fs::write(&path, config).unwrap();
    let served = Proc::start(&["run", &path]);
    served.wait_for_log("1 name(s) only with their tokens");
    let alice_without_token = || run(&["mesh", "chat", "--server", &server, "--user", "alice"], b"");
    let out = alice_without_token();
    assert_eq!(out.status.code(), Some(0), "alice is not listed yet: {out:?}");

    std::fs::write(&tokens, "carol 0123456789abcdef0123\nalice abcdef0123456789abcd\n").unwrap();
    served.signal("HUP");
    served.wait_for_log("reload: mesh server #1: 2 name(s) now only with their tokens");
    let out = alice_without_token();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("asks for the token of alice"), "{}", text(&out.stderr));

    std::fs::write(&tokens, "alice short\n").unwrap();
    served.signal("HUP");
    let refusal = served.wait_for_log("reload refused, the running config stays");
    assert!(refusal.contains("users.tokens, line 1"), "{refusal}");
    let out = alice_without_token();
    assert_eq!(out.status.code(), Some(1), "the tokens running stay: {out:?}");
}
