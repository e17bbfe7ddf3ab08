//! The container files, tested without a container engine: the compose file's config is the
//! seed topology and passes `config check`, and the ports the compose file publishes and the
//! Dockerfile exposes are exactly those the config listens on. (tests/all.sh's `docker`
//! stage runs the Dockerfile's build stage, docker/build.sh, the same way.)

mod support;

use std::collections::BTreeSet;
use support::{run, text};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The ports a config's sections listen on, `/udp` for the rendezvous, besides the carrier
/// (7001), which the local end reaches inside the container and nobody outside needs.
fn config_ports(config: &str) -> BTreeSet<String> {
    let mut ports = BTreeSet::new();
    let mut udp = false;
    for line in config.lines() {
        if line.starts_with("[[") {
            udp = line == "[[rendezvous]]";
        }
        if let Some(addr) = line.strip_prefix("listen = \"").and_then(|l| l.strip_suffix('"')) {
            let port = addr.rsplit(':').next().unwrap().to_owned();
            if port != "7001" {
                ports.insert(if udp { format!("{port}/udp") } else { port });
            }
        }
    }
    for forward in config.lines().filter_map(|l| l.strip_prefix("forwards = [")) {
        for item in forward.trim_end_matches(']').split(',') {
            ports.insert(item.trim().trim_matches('"').split('=').next().unwrap().to_owned());
        }
    }
    ports
}

#[test]
fn the_compose_config_is_the_seed_topology_and_passes_config_check() {
    let config = read("docker/switchyard.toml");
    let printed = run(&["up", "--host", "0.0.0.0", "--print-config"], b"");
    assert_eq!(
        config,
        text(&printed.stdout),
        "docker/switchyard.toml differs from the seed topology: regenerate it with \
         `switchyard up --host 0.0.0.0 --print-config > docker/switchyard.toml`"
    );
    let path = format!("{ROOT}/docker/switchyard.toml");
    let out = run(&["config", "check", &path], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains(": ok: 5 services"), "{out:?}");
}

#[test]
fn compose_and_the_dockerfile_publish_the_ports_the_config_listens_on() {
    let config = config_ports(&read("docker/switchyard.toml"));
    assert!(config.contains("7000") && config.contains("7090") && config.contains("9999/udp"), "{config:?}");

    let compose = read("compose.yaml");
    assert!(
        compose.contains("./docker/switchyard.toml:/etc/switchyard/switchyard.toml:ro"),
        "compose mounts the config"
    );
    assert!(compose.contains(r#"command: ["run", "/etc/switchyard/switchyard.toml"]"#), "compose runs the config");
    let published: BTreeSet<String> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- \"127.0.0.1:"))
        .map(|l| l.split('"').next().unwrap().split_once(':').unwrap().1.to_owned())
        .collect();
    assert_eq!(published, config, "compose.yaml's ports");

    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("RUN bash docker/build.sh /out"), "the build stage is docker/build.sh");
    assert!(dockerfile.contains("STOPSIGNAL SIGINT"), "docker stop stops it gracefully");
    let exposed: BTreeSet<String> = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("an EXPOSE line")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(exposed, config, "the Dockerfile's EXPOSE");
}
