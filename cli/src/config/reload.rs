//! Reloading a running config on SIGHUP: the file is read and checked again in full; if
//! the only changes are to the routes of `[[tunnel_remote]]` sections and the forwards of
//! `[[tunnel_local]]` sections, the new routes are given to every worker of those ends and
//! the forwards opened and closed. Streams already open carry on. Anything else is
//! refused with the reason, and the running config stays.

use super::plan::{Plan, Running};
use super::schema::ConfigFile;
use crate::CliError;
use async_channel::Receiver;
use std::path::Path;

/// SIGHUPs as they arrive, from a thread that waits for them. At most one waits unread:
/// two signals close together reload once, with the file as it is by then.
pub fn on_sighup() -> Result<Receiver<()>, CliError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| CliError::new(format!("cannot catch SIGHUP: {e}")))?;
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                if tx.is_closed() {
                    return;
                }
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| CliError::new(format!("cannot start the SIGHUP thread: {e}")))?;
    Ok(rx)
}

/// The file with every route and forward list and every user token file emptied: two
/// files the same but for those have the same shape. (Spans are not compared, so moving a
/// section is no change.)
fn shape(mut parsed: ConfigFile) -> ConfigFile {
    for remote in &mut parsed.tunnel_remote {
        remote.get_mut().routes.get_mut().clear();
    }
    for local in &mut parsed.tunnel_local {
        local.get_mut().forwards.clear();
    }
    for mesh in &mut parsed.mesh_server {
        mesh.get_mut().user_token_file = None;
    }
    parsed
}

/// Reloads `path` into `running`, logging what changed or why nothing did.
pub async fn apply(path: &Path, running: &mut Running) {
    tracing::info!("SIGHUP: reloading {}", path.display());
    let plan = match Plan::load(path) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!("reload refused, the running config stays: {e}");
            return;
        }
    };
    let tokens = plan.mesh_tokens();
    let new = plan.parsed;
    let refuse = |why: String| tracing::error!("reload refused, the running config stays: {why}");
    if let Some(change) = first_change(&shape(running.parsed.clone()), &shape(new.clone())) {
        return refuse(format!(
            "only routes of [[tunnel_remote]], forwards of [[tunnel_local]] and the user token files of [[mesh_server]] reload, and {change}; restart to apply it"
        ));
    }
    let forwards_changed: Vec<usize> = (0..new.tunnel_local.len())
        .filter(|&i| running.parsed.tunnel_local[i].get_ref().forwards != new.tunnel_local[i].get_ref().forwards)
        .collect();
    if let Some(&i) = forwards_changed.iter().find(|&&i| running.locals[i].workers() > 1) {
        return refuse(format!("[[tunnel_local]] #{} runs threads > 1: its forwards reload only on a restart", i + 1));
    }
    let mut changed = 0;
    let old_routes = routes_of(&running.parsed);
    for (i, (control, (old, new))) in running.remotes.iter().zip(old_routes.iter().zip(routes_of(&new))).enumerate() {
        if *old == new {
            continue;
        }
        let routes = crate::tunnel::routes(&new);
        let listed = crate::tunnel::describe_routes(&routes);
        match control.each(move |end| end.set_routes(routes.clone())).await {
            Ok(()) => tracing::info!("reload: tunnel remote #{}: routes now {listed}", i + 1),
            Err(e) => tracing::warn!("reload: tunnel remote #{}: {e}", i + 1),
        }
        changed += 1;
    }
    // Every single-worker local end, changed or not: one whose forward could not listen
    // tries it again.
    for (i, local) in running.locals.iter_mut().enumerate().filter(|(_, l)| l.workers() == 1) {
        let section = new.tunnel_local[i].get_ref();
        let who = format!("tunnel local #{}", i + 1);
        match local.replace(&who, super::plan::local_listen(section), &section.forwards).await {
            Ok(changes) => changed += changes,
            Err(e) => tracing::warn!("reload: {who}: {e}"),
        }
    }
    for (i, ((control, running_tokens), tokens)) in running.meshes.iter_mut().zip(tokens).enumerate() {
        if *running_tokens == tokens {
            continue;
        }
        let listed = tokens.len();
        let given = tokens.clone();
        match control.each(move |server| server.set_user_tokens(given.clone())).await {
            Ok(()) => {
                tracing::info!("reload: mesh server #{}: {listed} name(s) now only with their tokens", i + 1);
                *running_tokens = tokens;
            }
            Err(e) => tracing::warn!("reload: mesh server #{}: {e}", i + 1),
        }
        changed += 1;
    }
    if changed == 0 {
        tracing::info!("reload: nothing changed");
    }
    running.parsed = new;
}

/// What differs between two shapes, first: `[[service]] #2 changed`.
fn first_change(old: &ConfigFile, new: &ConfigFile) -> Option<String> {
    fn compare<T: PartialEq>(kind: &str, old: &[T], new: &[T]) -> Option<String> {
        if old.len() != new.len() {
            return Some(format!("the number of [[{kind}]] sections changed ({} to {})", old.len(), new.len()));
        }
        let i = old.iter().zip(new).position(|(a, b)| a != b)?;
        Some(format!("[[{kind}]] #{} changed", i + 1))
    }
    if old.metrics != new.metrics {
        return Some(String::from("metrics changed"));
    }
    compare("service", &old.service, &new.service)
        .or_else(|| compare("tunnel_remote", &old.tunnel_remote, &new.tunnel_remote))
        .or_else(|| compare("tunnel_local", &old.tunnel_local, &new.tunnel_local))
        .or_else(|| compare("tunnel_expose", &old.tunnel_expose, &new.tunnel_expose))
        .or_else(|| compare("mesh_server", &old.mesh_server, &new.mesh_server))
        .or_else(|| compare("rendezvous", &old.rendezvous, &new.rendezvous))
}

type RouteLists = Vec<Vec<crate::tunnel::spec::RouteSpec>>;

fn routes_of(parsed: &ConfigFile) -> RouteLists {
    parsed.tunnel_remote.iter().map(|r| r.get_ref().routes.get_ref().clone()).collect()
}
