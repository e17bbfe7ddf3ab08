//! The tunnel's command-line values: `--forward`, `--route`, `--publish`,
//! `--allow-publish`, `--secret-file`, and the listeners of a local end.

use crate::CliError;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use switchyard_core::tunnel::auth::Secret;
use switchyard_core::tunnel::local::Entrance;
use switchyard_core::wire::proxy::ProxyVersion;
use switchyard_core::wire::tunnel::MAX_ROUTE;
use switchyard_core::ListenerId;

/// Where a static forward listens: a port on the entrance's IP, or a full address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardListen {
    /// `7090=…`: this port, on the same IP as the prefix entrance.
    Port(u16),
    /// `127.0.0.1:7090=…`.
    Addr(SocketAddr),
}

/// `--forward LISTEN=ROUTE`: every connection to LISTEN goes to ROUTE, bytes untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Where it listens.
    pub listen: ForwardListen,
    /// The route on the remote end.
    pub route: String,
}

/// Checks a route name: what the carrier can carry (1–32 printable ASCII bytes).
fn route_name(name: &str, whole: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > MAX_ROUTE || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("bad route name {name:?} in {whole:?}: use 1-{MAX_ROUTE} printable ASCII characters"));
    }
    Ok(name.to_owned())
}

/// Parses `--forward 7090=9090` or `--forward 127.0.0.1:7090=9090`.
pub fn parse_forward(s: &str) -> Result<Forward, String> {
    let (listen, route) =
        s.split_once('=').ok_or_else(|| format!("expected LISTEN=ROUTE, like 7090=9090 (got {s:?})"))?;
    let listen = match listen.parse::<u16>() {
        Ok(port) => ForwardListen::Port(port),
        Err(_) => ForwardListen::Addr(
            crate::addr::parse(listen).map_err(|e| format!("bad listen address in --forward {s:?}: {e}"))?,
        ),
    };
    Ok(Forward { listen, route: route_name(route, s)? })
}

/// `--route NAME=ADDR[,proxy=v1|v2]`: the remote end may connect streams for NAME to
/// ADDR, first writing a PROXY protocol header of that version if asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The route name; `default` is the route of clients that send no prefix.
    pub name: String,
    /// Where its streams go.
    pub target: SocketAddr,
    /// The PROXY protocol header its target gets first, if any.
    pub proxy: Option<ProxyVersion>,
}

/// Parses `--route 9090=127.0.0.1:9090`, `--route default=127.0.0.1:7007` or
/// `--route web=127.0.0.1:8080,proxy=v1`.
pub fn parse_route(s: &str) -> Result<RouteSpec, String> {
    let (name, rest) =
        s.split_once('=').ok_or_else(|| format!("expected NAME=ADDR, like 9090=127.0.0.1:9090 (got {s:?})"))?;
    let mut parts = rest.split(',');
    let target = parts.next().unwrap_or_default();
    let target = crate::addr::parse(target).map_err(|e| format!("bad target address in --route {s:?}: {e}"))?;
    let mut proxy = None;
    for option in parts {
        proxy = Some(match option {
            "proxy=v1" => ProxyVersion::V1,
            "proxy=v2" => ProxyVersion::V2,
            _ if option.starts_with("proxy=") => {
                return Err(format!("bad {option:?} in --route {s:?}: proxy takes v1 or v2"));
            }
            _ => return Err(format!("unknown option {option:?} in --route {s:?}: the one option is proxy=v1|v2")),
        });
    }
    Ok(RouteSpec { name: route_name(name, s)?, target, proxy })
}

/// `--publish PORT=ADDR`: publish PORT at the remote end, its visitors reaching ADDR here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// The port the remote end listens on.
    pub port: u16,
    /// The local service its visitors reach.
    pub service: SocketAddr,
}

/// The ports to publish, each once: an error names a port given twice, or says that none
/// is. `who` and `what` name the role and the option as the caller spells them
/// (`tunnel expose`, `--publish`).
pub fn publish_map(publish: &[Publish], (who, what): (&str, &str)) -> Result<BTreeMap<u16, SocketAddr>, String> {
    if publish.is_empty() {
        return Err(format!("{who} needs at least one {what}, like 12345=127.0.0.1:12345"));
    }
    let mut ports = BTreeMap::new();
    for p in publish {
        if ports.insert(p.port, p.service).is_some() {
            return Err(format!("{what} names port {} twice", p.port));
        }
    }
    Ok(ports)
}

/// Parses `--publish 12345=127.0.0.1:12345`.
pub fn parse_publish(s: &str) -> Result<Publish, String> {
    let (port, service) =
        s.split_once('=').ok_or_else(|| format!("expected PORT=ADDR, like 12345=127.0.0.1:12345 (got {s:?})"))?;
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => return Err(format!("bad port {port:?} in --publish {s:?}: use 1-65535")),
    };
    let service = crate::addr::parse(service).map_err(|e| format!("bad service address in --publish {s:?}: {e}"))?;
    Ok(Publish { port, service })
}

/// Parses `--allow-publish 12000-13000` (or one port, `12345`): the ports exposing ends may
/// publish.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let port = |p: &str| match p.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("bad port {p:?} in {s:?}: expected LO-HI like 12000-13000, ports 1-65535")),
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(s)?, port(s)?),
    };
    if lo > hi {
        return Err(format!("empty port range {s:?}: the first port is above the last"));
    }
    Ok(lo..=hi)
}

/// Reads the shared secret. Surrounding whitespace is not part of it; an empty or
/// unreadable file is an error that says how to make one.
pub fn read_secret(path: &Path) -> Result<Secret, CliError> {
    let contents = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => String::from("no such file"),
            std::io::ErrorKind::PermissionDenied => String::from("permission denied"),
            _ => e.to_string(),
        };
        CliError::new(format!("cannot read secret file {}: {why}", path.display()))
    })?;
    Secret::from_file_contents(&contents).ok_or_else(|| {
        CliError::new(format!(
            "secret file {} is empty: put the same random text in it at both ends, e.g. `head -c 32 /dev/urandom | base64 > {}`",
            path.display(),
            path.display()
        ))
    })
}

/// The listeners of a local end: listener 0 is the prefix entrance, the forwards follow.
#[derive(Debug, Clone)]
pub struct Entrances {
    /// (listener, address, what it is for), entrance first.
    listeners: Vec<(ListenerId, SocketAddr, Entrance)>,
}

impl Entrances {
    /// The prefix entrance on `listen`, and `forwards` (a bare port listens on `listen`'s
    /// IP).
    pub fn new(listen: SocketAddr, forwards: &[Forward]) -> Entrances {
        let forwards = forwards.iter().map(|f| {
            let addr = match f.listen {
                ForwardListen::Port(port) => SocketAddr::new(listen.ip(), port),
                ForwardListen::Addr(addr) => addr,
            };
            (addr, Entrance::Forward { route: f.route.clone() })
        });
        let listeners = std::iter::once((listen, Entrance::Prefix))
            .chain(forwards)
            .zip(0..)
            .map(|((addr, entrance), id)| (ListenerId(id), addr, entrance))
            .collect();
        Entrances { listeners }
    }

    /// No listeners at all: an exposing end, whose visitors arrive over the carrier.
    pub fn none() -> Entrances {
        Entrances { listeners: Vec::new() }
    }

    /// What each listener is for, as the local end's configuration takes it.
    pub fn config(&self) -> BTreeMap<ListenerId, Entrance> {
        self.listeners.iter().map(|(id, _, entrance)| (*id, entrance.clone())).collect()
    }

    /// The static forwards: listener, address and route of each.
    pub fn forwards(&self) -> Vec<(ListenerId, SocketAddr, String)> {
        let forward = |(id, addr, entrance): &(ListenerId, SocketAddr, Entrance)| match entrance {
            Entrance::Forward { route } => Some((*id, *addr, route.clone())),
            _ => None,
        };
        self.listeners.iter().filter_map(forward).collect()
    }

    /// The addresses to listen on.
    pub fn listeners(&self) -> Vec<(ListenerId, SocketAddr)> {
        self.listeners.iter().map(|(id, addr, _)| (*id, *addr)).collect()
    }

    /// Each listener's address (as bound) and what it is for, entrance first.
    pub fn describe<'a>(
        &'a self,
        bound: &'a BTreeMap<ListenerId, SocketAddr>,
    ) -> impl Iterator<Item = (SocketAddr, EntranceKind<'a>)> + 'a {
        self.listeners.iter().map(|(id, addr, entrance)| {
            let addr = bound.get(id).copied().unwrap_or(*addr);
            let kind = match entrance {
                Entrance::Prefix => EntranceKind::Prefix,
                Entrance::Forward { route } => EntranceKind::Forward(route),
            };
            (addr, kind)
        })
    }
}

/// What a local-end listener is for, for people.
#[derive(Debug, Clone, Copy)]
pub enum EntranceKind<'a> {
    /// Routes by prefix.
    Prefix,
    /// Forwards to this route.
    Forward(&'a str),
}

impl fmt::Display for EntranceKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntranceKind::Prefix => f.write_str("prefix entrance"),
            EntranceKind::Forward(route) => write!(f, "forward to route {route}, no prefix"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_take_a_port_or_an_address() {
        assert_eq!(parse_forward("7090=9090"), Ok(Forward { listen: ForwardListen::Port(7090), route: "9090".into() }));
        let full = parse_forward("127.0.0.2:7090=ssh").unwrap();
        assert_eq!(full.listen, ForwardListen::Addr("127.0.0.2:7090".parse().unwrap()));
        assert!(parse_forward("7090").unwrap_err().contains("\"7090\""));
        assert!(parse_forward("7090=").is_err());
        assert!(parse_forward(&format!("1={}", "9".repeat(33))).is_err());
        assert!(parse_forward("nowhere:x=9090").is_err());
    }

    #[test]
    fn routes_need_a_name_and_an_address() {
        let route = parse_route("default=127.0.0.1:7007").unwrap();
        assert_eq!((route.name.as_str(), route.target), ("default", "127.0.0.1:7007".parse().unwrap()));
        assert!(parse_route("9090").unwrap_err().contains("\"9090\""));
        assert!(parse_route("9090=nowhere").is_err());
        assert!(parse_route("=127.0.0.1:1").is_err());
    }

    #[test]
    fn routes_take_a_proxy_option() {
        assert_eq!(parse_route("web=127.0.0.1:80").unwrap().proxy, None);
        assert_eq!(parse_route("web=127.0.0.1:80,proxy=v1").unwrap().proxy, Some(ProxyVersion::V1));
        let v6 = parse_route("web=[::1]:80,proxy=v2").unwrap();
        assert_eq!((v6.target, v6.proxy), ("[::1]:80".parse().unwrap(), Some(ProxyVersion::V2)));
        assert!(parse_route("web=127.0.0.1:80,proxy=v3").unwrap_err().contains("proxy takes v1 or v2"));
        assert!(parse_route("web=127.0.0.1:80,fast").unwrap_err().contains("unknown option \"fast\""));
        assert!(parse_route("web=127.0.0.1:80,").unwrap_err().contains("unknown option \"\""));
    }

    #[test]
    fn publishes_take_a_port_and_a_service() {
        let publish = parse_publish("12345=127.0.0.1:8080").unwrap();
        assert_eq!((publish.port, publish.service), (12345, "127.0.0.1:8080".parse().unwrap()));
        assert!(parse_publish("12345").unwrap_err().contains("PORT=ADDR"));
        assert!(parse_publish("0=127.0.0.1:1").unwrap_err().contains("1-65535"));
        assert!(parse_publish("web=127.0.0.1:1").is_err());
        assert!(parse_publish("1=nowhere").unwrap_err().contains("bad service address"));
    }

    #[test]
    fn allowed_ports_are_a_range_or_one_port() {
        assert_eq!(parse_port_range("12000-13000"), Ok(12000..=13000));
        assert_eq!(parse_port_range("12345"), Ok(12345..=12345));
        assert!(parse_port_range("13000-12000").unwrap_err().contains("empty port range"));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("1-x").is_err());
        assert!(parse_port_range("").is_err());
    }

    #[test]
    fn bare_forward_ports_listen_on_the_entrance_ip() {
        let forwards = [parse_forward("7090=9090").unwrap(), parse_forward("127.0.0.3:80=web").unwrap()];
        let entrances = Entrances::new("127.0.0.2:7000".parse().unwrap(), &forwards);
        let addrs: Vec<String> = entrances.listeners().iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.2:7000", "127.0.0.2:7090", "127.0.0.3:80"]);
        assert_eq!(entrances.config()[&ListenerId(1)], Entrance::Forward { route: "9090".into() });
    }
}
