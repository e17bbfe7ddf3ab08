//! `switchyard run FILE` and `switchyard config check FILE`: any set of roles from one TOML
//! file, checked before anything starts, with the tunnel ends' routes and forwards
//! reloaded on SIGHUP.
//!
//! - [`schema`]: what the file may hold, key by key.
//! - [`plan`]: the file checked and turned into what each role starts with.
//! - [`seed`]: the built-in config `switchyard up --print-config` prints.

pub mod plan;
pub mod schema;
pub mod seed;

use crate::launch::Fleet;
use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use plan::Plan;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use switchyard_adapters::Runtime;
use switchyard_core::Env;

/// Start every role a TOML config file describes (services, tunnel ends, mesh servers,
/// rendezvous), in one process, until Ctrl-C. `kill -HUP` reloads the file: routes of
/// `[[tunnel_remote]]` and forwards of `[[tunnel_local]]` sections change without touching
/// open streams.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "run",
    example = "switchyard up --print-config > switchyard.toml\nswitchyard config check switchyard.toml\nswitchyard run switchyard.toml\nkill -HUP $(pidof switchyard)",
    note = "Keys are the flags of the role's own command, with _ for - (secret_file is --secret-file); relative paths are relative to the file's directory. A tunnel end or mesh server with no secret file shares a secret drawn for the run with the other roles of the file (as `up` does). On SIGHUP the file is read again: if only routes, forwards and mesh servers' user token files changed they are applied, and logged; anything else, or a file with a mistake, is refused with the reason and the running config stays. Ctrl-C stops (exit 0)."
)]
pub struct RunCmd {
    /// the config file (TOML)
    #[argh(positional)]
    file: PathBuf,
}

/// Work with config files.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "config")]
pub struct ConfigCmd {
    #[argh(subcommand)]
    what: ConfigWhat,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum ConfigWhat {
    Check(CheckCmd),
}

/// Check a config file without starting anything: its syntax, every value, the secret and
/// certificate files it names, and how its roles fit together. Prints what it would start
/// (exit 0), or the first mistake as FILE:LINE:COLUMN: WHAT (exit 1).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check", example = "switchyard config check switchyard.toml")]
pub struct CheckCmd {
    /// the config file (TOML)
    #[argh(positional)]
    file: PathBuf,
}

impl Program for ConfigCmd {
    async fn run<R: Runtime>(self, _rt: R, _env: Env) -> Result<ExitCode, CliError> {
        let ConfigWhat::Check(cmd) = self.what;
        let plan = Plan::load(&cmd.file)?;
        say!("{}: ok: {}", cmd.file.display(), plan.summary());
        Ok(ExitCode::SUCCESS)
    }
}

impl Program for RunCmd {
    async fn run<R: Runtime>(self, rt: R, env: Env) -> Result<ExitCode, CliError> {
        let plan = Plan::load(&self.file)?;
        let summary = plan.summary();
        let mut fleet = Fleet::with_metrics(plan.parsed.metrics)?;
        let started = match plan.start(&rt, &mut fleet, env).await {
            Ok(started) => started,
            Err(e) => {
                fleet.stop_and_join().await;
                return Err(e);
            }
        };
        let reloads = reload::on_sighup()?;
        let file = self.file.clone();
        rt.spawn(async move {
            let mut running = started.running;
            while reloads.recv().await.is_ok() {
                reload::apply(&file, &mut running).await;
            }
        });
        let announce = started.announce;
        let path = self.file.display().to_string();
        fleet
            .serve_until_ctrl_c(move || {
                for line in &announce {
                    tracing::info!("{line}");
                }
                tracing::info!("running {path}: {summary}; SIGHUP reloads it");
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// A path from the file, taken relative to the file's directory.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

mod reload;
