//! Log set-up: `tracing` to stderr, filtered by `RUST_LOG` or `-v`.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How chatty a subcommand is by default: servers report their connections, clients
/// keep stderr for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quietness {
    /// `info` by default.
    Server,
    /// `warn` by default.
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
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("switchyard: ignoring RUST_LOG={spec:?}: {e}");
            EnvFilter::new(&default)
        }),
        _ => EnvFilter::new(&default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(verbose > 0)
        .init();
}
