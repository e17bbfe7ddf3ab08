//! The options every `serve <line service>` subcommand shares, declared once.
//!
//! Each line service has `--listen` (with its own default address), its own options, and
//! the limits of [`LineServerConfig`]: `--max-line`, `--max-connections`, and
//! `--idle-timeout` for the services that time silent clients out (time and broadcast never
//! do: their clients listen quietly), and `--tls-cert`/`--tls-key`. argh cannot flatten one options struct into several
//! subcommands, so [`line_service_cmd!`] writes those fields and the code that turns them
//! into a [`LineServerConfig`] into every subcommand struct from one definition.
//!
//! [`LineServerConfig`]: switchyard_core::service::line_server::LineServerConfig

/// Declares a `serve` subcommand struct for a line service:
///
/// ```ignore
/// line_service_cmd! {
///     /// Help text.
///     #[argh(subcommand, name = "echo", example = "…")]
///     pub struct EchoCmd {
///         listen: "crate::addr::loopback(7007)", "address to listen on (default 127.0.0.1:7007)",
///         idle_timeout: on,
///         // the service's own fields, if any, as in any argh struct
///     }
/// }
/// ```
///
/// The struct gets `listen: SocketAddr`, `--tls-cert`/`--tls-key`, `--metrics`, a `config()` method
/// giving the shared limits as a `LineServerConfig`, and `tls()` reading the TLS files.
macro_rules! line_service_cmd {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            listen: $default:tt, $listen_doc:tt,
            idle_timeout: $idle:ident,
            $($fields:tt)*
        }
    ) => {
        $crate::serve::line_cmd::line_service_cmd!(
            @idle $idle [$(#[$meta])*] $name $default $listen_doc [$($fields)*]
        );
    };
    // `idle_timeout: on`: an `--idle-timeout` option, 0 meaning none.
    (@idle on $meta:tt $name:ident $default:tt $listen_doc:tt [$($fields:tt)*]) => {
        $crate::serve::line_cmd::line_service_cmd!(@emit $meta $name $default $listen_doc [
            /// close a connection after this many seconds without input; 0 never does
            /// (default 300)
            #[argh(option, default = "300")]
            idle_timeout: u64,
            $($fields)*
        ] |cmd: &$name| (cmd.idle_timeout > 0).then(|| std::time::Duration::from_secs(cmd.idle_timeout)));
    };
    // `idle_timeout: off`: no option; the service keeps silent clients.
    (@idle off $meta:tt $name:ident $default:tt $listen_doc:tt $fields:tt) => {
        $crate::serve::line_cmd::line_service_cmd!(@emit $meta $name $default $listen_doc $fields |_: &$name| None);
    };
    (@emit [$($meta:tt)*] $name:ident $default:tt $listen_doc:tt [$($fields:tt)*] $idle:expr) => {
        // The derive comes first: it introduces the `argh` attributes in `$meta`.
        #[derive(argh::FromArgs, Debug)]
        $($meta)*
        pub struct $name {
            #[doc = $listen_doc]
            #[argh(option, default = $default, from_str_fn(crate::addr::parse))]
            listen: std::net::SocketAddr,

            $($fields)*

            /// longest line accepted, in bytes, newline excluded (default 65536)
            #[argh(option, default = "switchyard_core::wire::line::DEFAULT_MAX_LINE")]
            max_line: usize,

            /// most connections served at once; further ones are refused (default 10000)
            #[argh(option, default = "10_000")]
            max_connections: usize,

            /// serve TLS 1.3 with this PEM certificate (chain) and --tls-key: clients then
            /// need TLS (`switchyard send --tls-pin`, `openssl s_client`); `switchyard cert`
            /// makes both files
            #[argh(option)]
            tls_cert: Option<std::path::PathBuf>,

            /// the PEM private key (Ed25519) of --tls-cert
            #[argh(option)]
            tls_key: Option<std::path::PathBuf>,

            /// serve Prometheus metrics at http://ADDR/metrics (connections, bytes, closes
            /// by reason; see the README's Metrics section)
            #[argh(option, from_str_fn(crate::addr::parse))]
            metrics: Option<std::net::SocketAddr>,
        }

        impl $name {
            /// The certificate and key to serve TLS with, read from --tls-cert and
            /// --tls-key; `None` for plaintext.
            fn tls(&self) -> Result<Option<switchyard_core::tls::TlsIdentity>, $crate::CliError> {
                $crate::tls::server_identity(self.tls_cert.as_deref(), self.tls_key.as_deref())
            }

            /// The shared limits, as the line server takes them.
            fn config(&self) -> switchyard_core::service::line_server::LineServerConfig {
                let idle_timeout = $idle;
                switchyard_core::service::line_server::LineServerConfig {
                    max_line: self.max_line,
                    max_connections: self.max_connections,
                    idle_timeout: idle_timeout(self),
                    ..Default::default()
                }
            }
        }
    };
}

pub(crate) use line_service_cmd;
