//! Starting machines under drivers, logging their events, and stopping them together.
//!
//! Every server subcommand (`serve`, `tunnel`, `mesh server`, `rendezvous`, `up`) is the
//! same few steps: start one or more machines, each on its own [`Driver`], log their
//! events, stop them all on Ctrl-C and wait until each has closed its connections.
//! [`Fleet`] is those steps, written once. With `--metrics` it also counts each machine's
//! events and reads its driver's counters ([`crate::metrics`]), so no role counts by itself.

use crate::events::LogEvent;
#[cfg(feature = "full")]
use crate::metrics::{CountEvent, MachineLabels, Metrics, Sample};
use crate::CliError;
use async_channel::Receiver;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use switchyard_adapters::spread::Spread;
use switchyard_adapters::{Driver, Handle, Running, Runtime};
use switchyard_core::placement::{Load, Placement};
use switchyard_core::{ListenerId, Machine};

/// The minimal build has no metrics: every event and machine qualifies, and counts nothing.
#[cfg(not(feature = "full"))]
mod no_metrics {
    /// Stands in for [`crate::metrics::CountEvent`].
    pub trait CountEvent {}
    impl<T: ?Sized> CountEvent for T {}
    /// Stands in for [`crate::metrics::Sample`].
    pub trait Sample {}
    impl<T: ?Sized> Sample for T {}
}
#[cfg(not(feature = "full"))]
use no_metrics::{CountEvent, Sample};

/// Stops one machine; callable from any thread, any number of times.
type Stop = Arc<dyn Fn() + Send + Sync>;

/// One machine running under its own driver, its events being logged.
struct Launched {
    stop: Stop,
    /// Closed once the machine task has ended and every event is logged.
    done: Receiver<()>,
}

/// Whether a worker of [`Fleet::launch_spread`] can take connections.
pub struct Readiness<E> {
    /// Before its first event.
    pub at_start: bool,
    /// Its readiness after an event (`None`: unchanged).
    pub on_event: fn(&E) -> Option<bool>,
}

/// Logs a running machine's events as `name` (after `watch` sees each) until it stops,
/// then drops `done` (closing the channel is the signal).
async fn log_until_done<M: Launchable>(
    running: Running<M>,
    name: String,
    mut watch: impl FnMut(&M::Event),
    done: async_channel::Sender<()>,
) {
    let events = running.events();
    while let Ok(event) = events.recv().await {
        watch(&event);
        event.log(&name);
    }
    running.join().await;
    drop(done);
}

/// A machine that could not start: one of its listeners or sockets did not bind, or its
/// TLS settings were refused.
#[derive(Debug)]
pub struct LaunchError {
    /// The machine's name.
    pub name: String,
    /// Why, naming the address (from the driver).
    pub error: io::Error,
}

impl LaunchError {
    /// Machine `name` was not started because the core refused its TLS settings (a key
    /// that is not Ed25519, say).
    pub fn tls_refused(name: &str, error: switchyard_core::tls::TlsError) -> LaunchError {
        LaunchError { name: name.to_owned(), error: io::Error::new(io::ErrorKind::InvalidInput, error) }
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.error)
    }
}

impl From<LaunchError> for CliError {
    fn from(e: LaunchError) -> CliError {
        CliError::new(e)
    }
}

/// Machines started together and stopped together.
#[derive(Default)]
pub struct Fleet {
    machines: Vec<Launched>,
    /// Where their metrics go, with `--metrics`.
    #[cfg(feature = "full")]
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet").field("machines", &self.machines.len()).finish()
    }
}

/// A machine a [`Fleet`] can run: it moves to its driver's task, and its events are logged
/// (and counted) there. Every such machine is one; the trait only names the bounds once.
pub trait Launchable:
    Machine<Event: LogEvent + CountEvent + Send + fmt::Debug + 'static> + Sample + Send + 'static
{
}

impl<M> Launchable for M where
    M: Machine<Event: LogEvent + CountEvent + Send + fmt::Debug + 'static> + Sample + Send + 'static
{
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Fleet {
        Fleet::default()
    }

    /// An empty fleet that, given `--metrics ADDR`, serves the metrics of every machine it
    /// will start on ADDR (bound now, so a bad address fails before any machine starts).
    /// The minimal build refuses the option.
    pub fn with_metrics(addr: Option<SocketAddr>) -> Result<Fleet, CliError> {
        let Some(addr) = addr else { return Ok(Fleet::new()) };
        #[cfg(feature = "full")]
        {
            let metrics = Metrics::new();
            let bound = crate::metrics::http::serve(addr, metrics.clone()).map_err(|e| {
                CliError::new(format!("cannot serve metrics on {addr}: {}", switchyard_adapters::describe(&e)))
            })?;
            tracing::info!("metrics: serving http://{bound}/metrics");
            Ok(Fleet { machines: Vec::new(), metrics: Some(metrics) })
        }
        #[cfg(not(feature = "full"))]
        Err(CliError::usage(format!("--metrics {addr}: this minimal build has no metrics; use the full build")))
    }

    /// `watch`, and then the count of each event when the fleet has metrics.
    fn counted<M: Launchable>(
        &self,
        name: &str,
        listen: Option<SocketAddr>,
        mut watch: impl FnMut(&M::Event) + Send + 'static,
    ) -> impl FnMut(&M::Event) + Send + 'static {
        #[cfg(feature = "full")]
        let counting = self.metrics.as_ref().map(|m| m.counting(MachineLabels::new(name, listen)));
        #[cfg(not(feature = "full"))]
        let _ = (name, listen);
        move |event: &M::Event| {
            watch(event);
            #[cfg(feature = "full")]
            if let Some(counting) = &counting {
                event.count(counting);
            }
        }
    }

    /// With metrics, makes the driver behind `handle` one that scrapes read, and samples
    /// its machine's state every [`crate::metrics::SAMPLE_INTERVAL`] from a task on `rt`
    /// until the machine stops.
    fn measure<R: Runtime, M: Launchable>(&self, rt: &R, name: &str, listen: Option<SocketAddr>, handle: &Handle<M>) {
        #[cfg(feature = "full")]
        if let Some(metrics) = &self.metrics {
            let h = handle.clone();
            let slot = metrics.add_source(&MachineLabels::new(name, listen), move || h.stats());
            let (h, on) = (handle.clone(), rt.clone());
            rt.spawn(async move {
                while let Ok(sampled) = h.command(|m: &mut M, _| m.sample()).await {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(sampled);
                    on.sleep_until(on.now() + crate::metrics::SAMPLE_INTERVAL).await;
                }
            });
        }
        #[cfg(not(feature = "full"))]
        let _ = (rt, name, listen, handle);
    }

    /// Starts `machine` under its own driver on `rt`, listening on `listeners`, and logs its
    /// events as `name`. Returns the address each listener got (the real port for port 0).
    ///
    /// If a listener cannot bind, nothing of this machine runs; the machines already in the
    /// fleet keep running (see [`Fleet::stop_and_join`] to undo a partial start).
    #[cfg(feature = "full")]
    pub async fn launch<R, M>(
        &mut self,
        rt: &R,
        name: &str,
        machine: M,
        listeners: &[(ListenerId, SocketAddr)],
    ) -> Result<BTreeMap<ListenerId, SocketAddr>, LaunchError>
    where
        R: Runtime,
        M: Launchable,
    {
        Ok(self.launch_controlled(rt, name, machine, listeners, |_| {}).await?.0)
    }

    /// [`Fleet::launch`], where `watch` sees each event before it is logged (for a caller
    /// that waits for one, say a tunnel carrier coming up), also returning the machine's
    /// handle, through which the caller may command it while it runs (a config reload).
    pub async fn launch_controlled<R, M>(
        &mut self,
        rt: &R,
        name: &str,
        machine: M,
        listeners: &[(ListenerId, SocketAddr)],
        watch: impl FnMut(&M::Event) + Send + 'static,
    ) -> Result<(BTreeMap<ListenerId, SocketAddr>, Handle<M>), LaunchError>
    where
        R: Runtime,
        M: Launchable,
    {
        let driver = listeners.iter().fold(Driver::new(machine), |driver, &(id, addr)| driver.listen(id, addr));
        self.start(rt, name, driver, listeners, Running::local_addr, watch).await
    }

    /// Starts `machines` (equivalent workers, e.g. the tunnel end of each carrier) each
    /// under its own driver on an event loop of its own
    /// ([`Runtime::spawn_on_new_loop`]), and binds `listeners` once for all of them: an
    /// accept thread per listener hands each connection to the worker that [`Placement`]
    /// picks, the least loaded of those `ready` says can serve it. Worker `i` logs as
    /// `name[i]`. Returns the address each listener got, and each worker's handle.
    pub async fn launch_spread<R, M>(
        &mut self,
        rt: &R,
        name: &str,
        machines: Vec<M>,
        listeners: &[(ListenerId, SocketAddr)],
        ready: Readiness<M::Event>,
    ) -> Result<(BTreeMap<ListenerId, SocketAddr>, Vec<Handle<M>>), LaunchError>
    where
        R: Runtime,
        M: Launchable,
    {
        let failed = |error| LaunchError { name: name.to_owned(), error };
        // The workers of one role share its labels: their counts add up.
        let listen = listeners.first().map(|&(_, addr)| addr);
        let mut workers = Vec::new();
        for (i, machine) in machines.into_iter().enumerate() {
            let worker = format!("{name}[{i}]");
            let is_ready = Arc::new(AtomicBool::new(ready.at_start));
            let flag = is_ready.clone();
            let on_event = ready.on_event;
            let watch = self.counted::<M>(name, listen, move |event: &M::Event| {
                if let Some(now_ready) = on_event(event) {
                    flag.store(now_ready, Ordering::SeqCst);
                }
            });
            let (started_tx, started) = async_channel::bounded(1);
            let (done_tx, done) = async_channel::bounded::<()>(1);
            let on_loop = rt.clone();
            rt.spawn_on_new_loop(async move {
                match Driver::new(machine).start(on_loop).await {
                    Ok(running) => {
                        let _ = started_tx.send(Ok(running.handle())).await;
                        log_until_done(running, worker, watch, done_tx).await;
                    }
                    Err(error) => drop(started_tx.send(Err(error)).await),
                }
            })
            .map_err(failed)?;
            let handle = started.recv().await.map_err(|_| failed(io::Error::other("the worker did not start")))?;
            let handle = handle.map_err(failed)?;
            self.measure(rt, name, listen, &handle);
            self.machines.push(Launched {
                stop: Arc::new({
                    let h = handle.clone();
                    move || h.shutdown()
                }),
                done,
            });
            workers.push((handle, is_ready));
        }
        let workers = Arc::new(workers);
        let mut bound = BTreeMap::new();
        for &(id, addr) in listeners {
            let (workers, mut placement) = (workers.clone(), Placement::new());
            let spread = Spread::start(id, addr, move |listener, stream, peer| {
                let loads: Vec<Load> = workers
                    .iter()
                    .map(|(handle, ready)| Load {
                        ready: ready.load(Ordering::SeqCst),
                        open: handle.stats().connections,
                    })
                    .collect();
                let Some(chosen) = placement.choose(&loads) else { return };
                // A stopped worker drops the connection; the others are stopping too.
                let _ = workers[chosen].0.adopt_blocking(listener, stream, peer);
            })
            .map_err(failed)?;
            bound.insert(id, spread.local_addr());
            let spread = std::sync::Mutex::new(Some(spread));
            let (done_tx, done) = async_channel::bounded::<()>(1);
            let stop = move || {
                if let Some(spread) = spread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    spread.stop();
                }
                // Closing the channel is the signal.
                done_tx.close();
            };
            self.machines.push(Launched { stop: Arc::new(stop), done });
        }
        Ok((bound, workers.iter().map(|(handle, _)| handle.clone()).collect()))
    }

    /// [`Fleet::launch`] for a machine that speaks datagrams: binds the UDP `sockets`
    /// instead of TCP listeners. Returns the address each socket got.
    #[cfg(feature = "full")]
    pub async fn launch_udp<R, M>(
        &mut self,
        rt: &R,
        name: &str,
        machine: M,
        sockets: &[(switchyard_core::SocketId, SocketAddr)],
    ) -> Result<BTreeMap<switchyard_core::SocketId, SocketAddr>, LaunchError>
    where
        R: Runtime,
        M: Launchable,
    {
        let driver = sockets.iter().fold(Driver::new(machine), |driver, &(id, addr)| driver.bind_udp(id, addr));
        Ok(self.start(rt, name, driver, sockets, Running::udp_local_addr, |_| {}).await?.0)
    }

    /// Starts `driver` and adopts its machine; returns the address each of `sockets` got,
    /// as `bound_addr` reads it off the running driver, and the machine's handle.
    async fn start<R, M, Id: Ord + Copy>(
        &mut self,
        rt: &R,
        name: &str,
        driver: Driver<M>,
        sockets: &[(Id, SocketAddr)],
        bound_addr: impl Fn(&Running<M>, Id) -> Option<SocketAddr>,
        watch: impl FnMut(&M::Event) + Send + 'static,
    ) -> Result<(BTreeMap<Id, SocketAddr>, Handle<M>), LaunchError>
    where
        R: Runtime,
        M: Launchable,
    {
        let running = driver.start(rt.clone()).await.map_err(|error| LaunchError { name: name.to_owned(), error })?;
        let bound: BTreeMap<Id, SocketAddr> =
            sockets.iter().filter_map(|&(id, _)| Some((id, bound_addr(&running, id)?))).collect();
        let listen = bound.values().next().copied();
        let handle = running.handle();
        self.measure(rt, name, listen, &handle);
        let watch = self.counted::<M>(name, listen, watch);
        self.adopt(rt, name, running, watch);
        Ok((bound, handle))
    }

    /// Logs the events of a started machine (after `watch` sees each) and makes it one of
    /// the fleet.
    fn adopt<R, M>(&mut self, rt: &R, name: &str, running: Running<M>, watch: impl FnMut(&M::Event) + Send + 'static)
    where
        R: Runtime,
        M: Launchable,
    {
        let handle = running.handle();
        let (done_tx, done) = async_channel::bounded::<()>(1);
        rt.spawn(log_until_done(running, name.to_owned(), watch, done_tx));
        self.machines.push(Launched { stop: Arc::new(move || handle.shutdown()), done });
    }

    /// Asks every machine to stop (each closes its connections gracefully).
    #[cfg(feature = "full")]
    pub fn stop(&self) {
        for machine in &self.machines {
            (machine.stop)();
        }
    }

    /// Waits until every machine has stopped.
    pub async fn join(self) {
        for machine in self.machines {
            // Err means closed: that machine is done.
            let _ = machine.done.recv().await;
        }
    }

    /// Stops every machine and waits until each has: undoes a partial start, or ends a run.
    #[cfg(feature = "full")]
    pub async fn stop_and_join(self) {
        self.stop();
        self.join().await;
    }

    /// Serves until Ctrl-C: installs the handler, calls `started` (which announces what
    /// listens where: whoever waits for that line may then interrupt), waits for every
    /// machine to stop and logs `stopped`. A second Ctrl-C exits at once with 130.
    pub async fn serve_until_ctrl_c(self, started: impl FnOnce()) -> Result<(), CliError> {
        let stops: Vec<Stop> = self.machines.iter().map(|m| m.stop.clone()).collect();
        let interrupted = AtomicBool::new(false);
        ctrlc::set_handler(move || {
            if interrupted.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C while shutting down: give up waiting.
                std::process::exit(130);
            }
            tracing::info!("interrupted: shutting down");
            for stop in &stops {
                stop();
            }
        })
        .map_err(|e| CliError::new(format!("cannot install the Ctrl-C handler: {e}")))?;
        started();
        self.join().await;
        tracing::info!("stopped");
        Ok(())
    }
}
