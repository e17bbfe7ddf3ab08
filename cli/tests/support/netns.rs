//! Small internets of network namespaces for the NAT tests (`netns_punch`,
//! `netns_expose`): a bridge (`wan`) joining a public host (`rdv`, 198.51.100.1) and two
//! home routers (`ra` 198.51.100.2, `rb` 198.51.100.3) on 198.51.100.0/24, and behind each
//! router one host on a private LAN (`pa` 10.0.1.2, `pb` 10.0.2.2). Each router forwards,
//! does `iptables … MASQUERADE` for its LAN, and drops unsolicited inbound traffic to its
//! LAN (and UDP to itself), as real routers do. No packet leaves the namespaces.

use std::process::Command;

/// Runs a command that must succeed (the topology is useless otherwise).
pub fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Why these tests cannot run here, if they cannot. `tag` keeps the probe namespace apart
/// from other tests' (they run in parallel, in one process).
fn missing_requirement(tag: &str) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (network namespaces and iptables need it)".to_owned());
    }
    let tools = [("ip", "-V"), ("iptables", "--version"), ("conntrack", "--version"), ("sysctl", "--version")];
    for (tool, arg) in tools {
        if Command::new(tool).arg(arg).output().map(|o| !o.status.success()).unwrap_or(true) {
            return Some(format!("`{tool}` is not installed (apt-get install iproute2 iptables conntrack procps)"));
        }
    }
    let probe = format!("sy{}{tag}-probe", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Some(format!("`ip netns add {probe}` is not permitted here: {why}"));
        }
        Err(e) => return Some(format!("`ip netns add {probe}` failed: {e}")),
    }
    None
}

/// True when the test may go on; prints why not, or fails when requirements are required.
/// `tag` is the test's own namespace tag.
pub fn can_run(test: &str, tag: &str) -> bool {
    let Some(reason) = missing_requirement(tag) else { return true };
    if std::env::var("SWITCHYARD_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("{test}: SWITCHYARD_REQUIRE_NETNS=1 but {reason}");
    }
    eprintln!("{test}: skipped: {reason}");
    false
}

/// The namespaces of one test's internet; removed (with everything in them) on drop.
pub struct Internet {
    prefix: String,
}

impl Internet {
    /// Builds the topology; `random_ports` adds `--random` to both routers' MASQUERADE.
    pub fn build(tag: &str, random_ports: bool) -> Internet {
        let internet = Internet { prefix: format!("sy{}{tag}", std::process::id()) };
        for ns in ["wan", "rdv", "ra", "rb", "pa", "pb"] {
            run(&["ip", "netns", "add", &internet.ns(ns)]);
            run(&["ip", "-n", &internet.ns(ns), "link", "set", "lo", "up"]);
        }
        let wan = internet.ns("wan");
        run(&["ip", "-n", &wan, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &wan, "link", "set", "br0", "up"]);
        for (ns, addr) in [("rdv", "198.51.100.1/24"), ("ra", "198.51.100.2/24"), ("rb", "198.51.100.3/24")] {
            let (inside, port) = (internet.ns(ns), format!("{ns}-w"));
            run(&["ip", "-n", &wan, "link", "add", &port, "type", "veth", "peer", "name", "w0", "netns", &inside]);
            run(&["ip", "-n", &wan, "link", "set", &port, "master", "br0", "up"]);
            run(&["ip", "-n", &inside, "addr", "add", addr, "dev", "w0"]);
            run(&["ip", "-n", &inside, "link", "set", "w0", "up"]);
        }
        for (router, peer, lan) in [("ra", "pa", "10.0.1"), ("rb", "pb", "10.0.2")] {
            let (router, peer) = (internet.ns(router), internet.ns(peer));
            run(&["ip", "-n", &router, "link", "add", "l0", "type", "veth", "peer", "name", "e0", "netns", &peer]);
            run(&["ip", "-n", &router, "addr", "add", &format!("{lan}.1/24"), "dev", "l0"]);
            run(&["ip", "-n", &router, "link", "set", "l0", "up"]);
            run(&["ip", "-n", &peer, "addr", "add", &format!("{lan}.2/24"), "dev", "e0"]);
            run(&["ip", "-n", &peer, "link", "set", "e0", "up"]);
            run(&["ip", "-n", &peer, "route", "add", "default", "via", &format!("{lan}.1")]);
            let fw = |rule: &[&str]| {
                let mut args = vec!["ip", "netns", "exec", &router, "iptables"];
                args.extend(rule);
                run(&args);
            };
            run(&["ip", "netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let mut masquerade = vec!["-t", "nat", "-A", "POSTROUTING", "-o", "w0", "-j", "MASQUERADE"];
            if random_ports {
                masquerade.push("--random");
            }
            fw(&masquerade);
            // Replies to what the LAN sent are let in; anything unsolicited is dropped.
            fw(&["-A", "INPUT", "-i", "w0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]);
            fw(&["-A", "INPUT", "-i", "w0", "-p", "udp", "-j", "DROP"]);
            fw(&[
                "-A",
                "FORWARD",
                "-i",
                "w0",
                "-o",
                "l0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
            fw(&["-A", "FORWARD", "-i", "w0", "-o", "l0", "-j", "DROP"]);
        }
        internet
    }

    /// The full name of namespace `name` (`wan`, `rdv`, `ra`, `rb`, `pa`, `pb`).
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Router `router`'s conntrack table, for failure reports.
    pub fn conntrack(&self, router: &str) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.ns(router), "conntrack", "-L", "-p", "udp"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for ns in ["pa", "pb", "ra", "rb", "rdv", "wan"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(ns)]).output();
        }
    }
}
