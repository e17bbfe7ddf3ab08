//! The TOML a config file holds: one table array per kind of role, each key named after the
//! command-line flag it stands for (`secret_file` is `--secret-file`). Values are checked
//! by the same parsers as the flags, so an address, a route or a forward means the same in
//! both places; a mistake is reported at its line and column.

use crate::tunnel::spec::{Forward, Publish, RouteSpec};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchyard_core::tls::Fingerprint;
use toml::Spanned;

/// A whole config file: every role it starts. Unknown keys are errors, so a typo never
/// silently drops a setting.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `metrics = "ADDR"`: Prometheus metrics of every role at http://ADDR/metrics, as
    /// `--metrics` serves them.
    #[serde(default, deserialize_with = "some_addr")]
    pub metrics: Option<SocketAddr>,
    /// `[[service]]`: line services.
    #[serde(default)]
    pub service: Vec<Spanned<ServiceSection>>,
    /// `[[tunnel_remote]]`: remote tunnel ends.
    #[serde(default)]
    pub tunnel_remote: Vec<Spanned<RemoteSection>>,
    /// `[[tunnel_local]]`: local tunnel ends.
    #[serde(default)]
    pub tunnel_local: Vec<Spanned<LocalSection>>,
    /// `[[tunnel_expose]]`: exposing ends of reverse tunnels.
    #[serde(default)]
    pub tunnel_expose: Vec<Spanned<ExposeSection>>,
    /// `[[mesh_server]]`: P2P mesh servers.
    #[serde(default)]
    pub mesh_server: Vec<Spanned<MeshSection>>,
    /// `[[rendezvous]]`: hole-punching rendezvous servers.
    #[serde(default)]
    pub rendezvous: Vec<Spanned<RendezvousSection>>,
}

/// The services `[[service]]` can run, as `switchyard serve KIND` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    /// `serve echo`.
    Echo,
    /// `serve time`.
    Time,
    /// `serve broadcast`.
    Broadcast,
    /// `serve hello`.
    Hello,
    /// `serve greet`.
    Greet,
    /// `serve stamp`.
    Stamp,
}

/// `[[service]]`: `switchyard serve KIND`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Which service.
    pub kind: ServiceName,
    /// `--listen` (default: the service's own port on 127.0.0.1).
    #[serde(default, deserialize_with = "some_addr")]
    pub listen: Option<SocketAddr>,
    /// `--interval` in seconds (time only).
    pub interval: Option<Spanned<u64>>,
    /// `--idle-timeout` in seconds, 0 for none (echo, hello, greet, stamp).
    pub idle_timeout: Option<Spanned<u64>>,
    /// `--max-line` in bytes.
    pub max_line: Option<Spanned<usize>>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
}

/// `[[tunnel_remote]]`: `switchyard tunnel remote`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// `--listen` (default 127.0.0.1:7001).
    #[serde(default, deserialize_with = "some_addr")]
    pub listen: Option<SocketAddr>,
    /// `--secret-file`; without one, this file's local ends that dial this one share a
    /// secret drawn for the run.
    pub secret_file: Option<PathBuf>,
    /// `--route NAME=ADDR[,proxy=v1|v2]`, each; reloaded on SIGHUP.
    #[serde(default = "no_routes", deserialize_with = "routes")]
    pub routes: Spanned<Vec<RouteSpec>>,
    /// `--allow-publish LO-HI`: exposing ends may publish these ports here.
    #[serde(default, deserialize_with = "some_port_range")]
    pub allow_publish: Option<std::ops::RangeInclusive<u16>>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-pin`.
    #[serde(default, deserialize_with = "some_pin")]
    pub tls_client_pin: Option<Fingerprint>,
    /// `--tls-client-ca`.
    pub tls_client_ca: Option<PathBuf>,
    /// `--threads`.
    #[serde(default, deserialize_with = "some_threads")]
    pub threads: Option<usize>,
}

/// `[[tunnel_local]]`: `switchyard tunnel local`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// `--listen` (default 127.0.0.1:7000).
    #[serde(default, deserialize_with = "some_addr")]
    pub listen: Option<SocketAddr>,
    /// `--remote` (default 127.0.0.1:7001).
    #[serde(default, deserialize_with = "some_addr")]
    pub remote: Option<SocketAddr>,
    /// `--secret-file`; without one, the end shares a secret drawn for the run with the
    /// `[[tunnel_remote]]` of this file it dials.
    pub secret_file: Option<PathBuf>,
    /// `--forward LISTEN=ROUTE`, each.
    #[serde(default, deserialize_with = "forwards")]
    pub forwards: Vec<Forward>,
    /// `--tls-pin`.
    #[serde(default, deserialize_with = "some_pin")]
    pub tls_pin: Option<Fingerprint>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-name`.
    pub tls_name: Option<String>,
    /// `--tls-client-cert`.
    pub tls_client_cert: Option<PathBuf>,
    /// `--tls-client-key`.
    pub tls_client_key: Option<PathBuf>,
    /// `--threads`.
    #[serde(default, deserialize_with = "some_threads")]
    pub threads: Option<usize>,
}

/// `[[tunnel_expose]]`: `switchyard tunnel expose`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeSection {
    /// `--remote` (default 127.0.0.1:7001).
    #[serde(default, deserialize_with = "some_addr")]
    pub remote: Option<SocketAddr>,
    /// `--secret-file`; without one, the end shares a secret drawn for the run with the
    /// `[[tunnel_remote]]` of this file it dials.
    pub secret_file: Option<PathBuf>,
    /// `--publish PORT=ADDR`, each.
    #[serde(deserialize_with = "publishes")]
    pub publish: Spanned<Vec<Publish>>,
    /// `--tls-pin`.
    #[serde(default, deserialize_with = "some_pin")]
    pub tls_pin: Option<Fingerprint>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-name`.
    pub tls_name: Option<String>,
}

/// `[[mesh_server]]`: `switchyard mesh server`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// `--listen` (default 127.0.0.1:5001).
    #[serde(default, deserialize_with = "some_addr")]
    pub listen: Option<SocketAddr>,
    /// `--peer`, each (default: the other default ports on its IP, as the flag's).
    #[serde(default, deserialize_with = "some_addrs")]
    pub peers: Option<Spanned<Vec<SocketAddr>>>,
    /// `--mesh-secret-file`; without one (and without `insecure`), the mesh servers of
    /// this file share a secret drawn for the run, and link only with each other.
    pub mesh_secret_file: Option<PathBuf>,
    /// `--insecure`: no mesh secret at all.
    #[serde(default)]
    pub insecure: bool,
    /// `--user-token-file`: names registered only with their tokens.
    pub user_token_file: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--tls-pin` (for the peers).
    #[serde(default, deserialize_with = "some_pin")]
    pub tls_pin: Option<Fingerprint>,
    /// `--tls-ca` (for the peers).
    pub tls_ca: Option<PathBuf>,
    /// `--mesh-ca`: admit servers by a certificate from this CA; without
    /// `mesh_secret_file`, the server then shares no secret drawn for the run.
    pub mesh_ca: Option<PathBuf>,
}

/// `[[rendezvous]]`: `switchyard rendezvous`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RendezvousSection {
    /// `--listen` (default 127.0.0.1:9999).
    #[serde(default, deserialize_with = "some_addr")]
    pub listen: Option<SocketAddr>,
}

/// Reads a string and checks it with a flag's parser, whose message becomes the error at
/// the value's position.
fn parsed<'de, D: Deserializer<'de>, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

fn some_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parsed(d, crate::addr::parse).map(Some)
}

fn some_pin<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Fingerprint>, D::Error> {
    parsed(d, crate::tls::parse_pin).map(Some)
}

fn some_threads<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let threads = usize::deserialize(d)?;
    crate::tunnel::parse_threads(&threads.to_string()).map(Some).map_err(serde::de::Error::custom)
}

fn some_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<Vec<SocketAddr>>>, D::Error> {
    spanned_each(d, crate::addr::parse).map(Some)
}

fn routes<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<Vec<RouteSpec>>, D::Error> {
    spanned_each(d, crate::tunnel::spec::parse_route)
}

/// No `routes` key: an empty list (a remote end that only takes exposing ends).
fn no_routes() -> Spanned<Vec<RouteSpec>> {
    Spanned::new(0..0, Vec::new())
}

fn some_port_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::ops::RangeInclusive<u16>>, D::Error> {
    parsed(d, crate::tunnel::spec::parse_port_range).map(Some)
}

fn publishes<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<Vec<Publish>>, D::Error> {
    spanned_each(d, crate::tunnel::spec::parse_publish)
}

fn forwards<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Forward>, D::Error> {
    spanned_each(d, crate::tunnel::spec::parse_forward).map(Spanned::into_inner)
}

/// [`parsed`] for a list of strings, keeping where the list is for the checks made after
/// parsing.
fn spanned_each<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Spanned<Vec<T>>, D::Error> {
    let texts = Spanned::<Vec<String>>::deserialize(d)?;
    let span = texts.span();
    let values = texts.into_inner().iter().map(|t| parse(t).map_err(serde::de::Error::custom)).collect::<Result<_, _>>()?;
    Ok(Spanned::new(span, values))
}
