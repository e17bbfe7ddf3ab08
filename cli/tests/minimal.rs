//! The minimal build (`--no-default-features`, built by `cli/minimal.sh`): a `switchyard`
//! with the `tunnel` subcommand only, as deployed where memory is short. Its two ends carry
//! the seed's flows in front of services run by the full binary under test.
//!
//! The minimal executable is named by `SWITCHYARD_MINIMAL_BIN`; `tests/all.sh` builds it
//! and sets it. Without it these tests print why and pass, unless
//! `SWITCHYARD_REQUIRE_MINIMAL=1` (set by `tests/all.sh` for its `minimal` stage).

mod support;

use support::{run, run_binary, text, Proc, TempFile};

/// The minimal executable, or `None` (with the reason printed) where the test must skip.
fn minimal_binary(test: &str) -> Option<String> {
    match std::env::var("SWITCHYARD_MINIMAL_BIN") {
        Ok(path) if !path.is_empty() => Some(path),
        _ if std::env::var("SWITCHYARD_REQUIRE_MINIMAL").is_ok_and(|v| v == "1") => {
            panic!("{test}: SWITCHYARD_REQUIRE_MINIMAL=1 but SWITCHYARD_MINIMAL_BIN is not set")
        }
        _ => {
            eprintln!("{test}: skipped: SWITCHYARD_MINIMAL_BIN is not set (build it with `bash cli/minimal.sh`)");
            None
        }
    }
}

#[test]
fn the_minimal_build_has_the_tunnel_and_nothing_else() {
    let Some(minimal) = minimal_binary("the_minimal_build_has_the_tunnel_and_nothing_else") else { return };
    let out = run_binary(&minimal, &["--help"], b"");
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    assert!(help.contains("tunnel"), "{help}");
    for absent in ["  up ", "  bench ", "  serve ", "  mesh "] {
        assert!(!help.contains(absent), "the minimal build lists {absent:?}:\n{help}");
    }
    let out = run_binary(&minimal, &["up"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run_binary(&minimal, &["--version"], b"");
    let version = text(&out.stdout);
    assert!(out.status.success() && version.contains("minimal build"), "{out:?}");
    let key = TempFile::new("minimal-runtime.key", "k");
    let out = run_binary(&minimal, &["--runtime", "smol", "tunnel", "local", "--secret-file", key.arg()], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("the minimal build has the mio runtime only"), "{out:?}");
    // Metrics are the full build's: the option is refused, before anything binds.
    let out = run_binary(&minimal, &["tunnel", "local", "--secret-file", key.arg(), "--metrics", "127.0.0.108:0"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("this minimal build has no metrics"), "{out:?}");
}

#[test]
fn minimal_ends_route_by_prefix_and_forward() {
    let Some(minimal) = minimal_binary("minimal_ends_route_by_prefix_and_forward") else { return };
    let host = "127.0.0.108";
    let at = |port: u16| format!("{host}:{port}");
    let echo = Proc::start(&["serve", "echo", "--listen", &at(7007)]);
    echo.wait_for_log("server listening on");
    let time = Proc::start(&["serve", "time", "--listen", &at(9090)]);
    time.wait_for_log("server listening on");
    let key = TempFile::new("minimal.key", "minimal secret");
    let routes = [format!("9090={}", at(9090)), format!("default={}", at(7007)), format!("7007={}", at(7007))];
    let carrier = at(7001);
    let mut remote_args = vec!["tunnel", "remote", "--listen", &carrier, "--secret-file", key.arg()];
    for route in &routes {
        remote_args.extend(["--route", route]);
    }
    let remote = Proc::start_binary(&minimal, &remote_args);
    remote.wait_for_log("tunnel remote end listening on");
    let (entrance, forward) = (at(7000), "7090=7007");
    let local_args = ["tunnel", "local", "--listen", &entrance, "--remote", &carrier, "--secret-file", key.arg()];
    let local = Proc::start_binary(&minimal, &[&local_args[..], &["--forward", forward]].concat());
    local.wait_for_log("carrier up");

    let out = run(&["send", "--to", &at(7000), "hello"], b"");
    assert_eq!(text(&out.stdout), "hello\n", "{out:?}");
    let out = run(&["send", "--to", &at(7000), "9090:time"], b"");
    assert!(support::is_time(text(&out.stdout).trim_end()), "{out:?}");
    let out = run(&["send", "--to", &at(7000), "1234:x"], b"");
    assert_eq!(text(&out.stderr), "error: unknown route 1234\n", "{out:?}");
    // Through the forward nothing is read as a prefix: echo gets the bytes as sent.
    let out = run(&["send", "--to", &at(7090), "9090:time"], b"");
    assert_eq!(text(&out.stdout), "9090:time\n", "{out:?}");
}
