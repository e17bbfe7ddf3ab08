//! Commands to the machines of a running role, for `switchyard run`'s reload: a call runs
//! on each worker's machine (inside its TLS layer, if any), on that worker's own loop.

use crate::launch::Launchable;
use futures_lite::future::Boxed;
use switchyard_adapters::{Handle, Stopped};
use switchyard_core::tls::Tls;
use switchyard_core::Instant;

/// A machine, plain or under TLS: runs a call on the protocol machine inside.
pub trait Wraps<T> {
    /// Runs `f` on the machine inside, at `now`.
    fn on_inner(&mut self, now: Instant, f: Box<dyn FnOnce(&mut T) + Send>);
}

impl<T> Wraps<T> for T {
    fn on_inner(&mut self, _now: Instant, f: Box<dyn FnOnce(&mut T) + Send>) {
        f(self)
    }
}

impl<T: switchyard_core::Machine> Wraps<T> for Tls<T> {
    fn on_inner(&mut self, now: Instant, f: Box<dyn FnOnce(&mut T) + Send>) {
        self.command(now, |inner, _| f(inner));
    }
}

/// Runs calls on the machine of every worker of a running role, each on its own loop: how
/// a config reload replaces a remote end's routes, a local end's forwards and a mesh
/// server's user tokens while connections stay open.
// Only `switchyard run` reloads, and the minimal build has no `run`.
#[cfg_attr(not(feature = "full"), allow(dead_code))]
pub struct Control<T> {
    workers: Vec<OnWorker<T>>,
}

/// Runs one call on one worker's machine, on its loop.
type OnWorker<T> = Box<dyn Fn(Box<dyn FnOnce(&mut T) + Send>) -> Boxed<Result<(), Stopped>> + Send + Sync>;

impl<T: 'static> Control<T> {
    /// The control of the machines behind `handles` (one per worker).
    pub fn over<M: Wraps<T> + Launchable>(handles: Vec<Handle<M>>) -> Control<T> {
        let workers = handles
            .into_iter()
            .map(|handle| {
                Box::new(move |f: Box<dyn FnOnce(&mut T) + Send>| {
                    let handle = handle.clone();
                    Box::pin(async move { handle.command(move |m, now| m.on_inner(now, f)).await }) as Boxed<_>
                }) as OnWorker<T>
            })
            .collect();
        Control { workers }
    }

    /// How many workers (`--threads`) the end runs.
    #[cfg(feature = "full")]
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Runs `f` on every worker's machine; returns once each has run it (its outputs
    /// carried out). [`Stopped`] if the end has stopped.
    #[cfg(feature = "full")]
    pub async fn each(&self, f: impl Fn(&mut T) + Clone + Send + 'static) -> Result<(), Stopped> {
        for worker in &self.workers {
            worker(Box::new(f.clone())).await?;
        }
        Ok(())
    }
}
