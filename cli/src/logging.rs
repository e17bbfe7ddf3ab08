//! Log set-up: `tracing` to stderr, filtered by `RUST_LOG` or `-v`.
//!
//! `RUST_LOG` takes `target=level` directives and a bare default level
//! (`RUST_LOG=debug`, `RUST_LOG=warn,switchyard_adapters=trace`), the syntax of
//! `tracing_subscriber`'s `Targets`. `EnvFilter`'s span and field filters are not offered:
//! they need the `regex` crates, a quarter of a megabyte of code in every process.

use std::io::IsTerminal;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How chatty a subcommand is by default: servers report their connections, clients
/// keep stderr for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quietness {
    /// `info` by default.
    Server,
    /// `warn` by default.
    // The minimal build (`tunnel` only) has no client commands.
    #[cfg_attr(not(feature = "full"), allow(dead_code))]
    Client,
}

/// Installs the global subscriber. `RUST_LOG` wins when set; otherwise Switchyard's own
/// crates log at `info` (servers) or `warn` (clients), `-v` at `debug`, `-v -v` at `trace`,
/// and every other crate at `warn`.
pub fn init(verbose: u8, quietness: Quietness) {
    let level = match (verbose, quietness) {
        (0, Quietness::Server) => "info",
        (0, Quietness::Client) => "warn",
        (1, _) => "debug",
        _ => "trace",
    };
    // Targets match by prefix, so `switchyard` covers switchyard_core and
    // switchyard_adapters too.
    let default = format!("warn,switchyard={level}");
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("switchyard: ignoring RUST_LOG={spec:?}: {e}");
            default_targets(&default)
        }),
        _ => default_targets(&default),
    };
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(verbose > 0);
    tracing_subscriber::registry().with(format).with(filter).init();
}

/// Parses a filter this module wrote itself.
fn default_targets(spec: &str) -> Targets {
    spec.parse().unwrap_or_else(|e| unreachable!("the default filter {spec:?} parses: {e}"))
}
