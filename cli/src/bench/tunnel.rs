//! `switchyard bench tunnel`: the tunnel against direct TCP on loopback, figure by figure,
//! then a summary against the targets of the tunnel's issue.

use super::ends::{global_args, has_tunnel_command, own_executable, runtime_flag, Ends};
use super::load::{self, MESSAGE};
use super::os::{cpu_time, load_average, machine_busy, process_cpu, raise_nofile, rss, set_affinity, CpuSet, CpuSplit, Rss};
use super::split::{self, SyscallCounter, Watch};
use super::reference::{parse_tools, Reference, Tool, ToolList, ToolSpec};
use super::stats::{kib, median, megabytes, micros, parse_bytes, parse_counts, percentile, rate, size, Counts};
use super::targets::Targets;
use crate::runtime::Program;
use crate::CliError;
use argh::FromArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;
use switchyard_adapters::Runtime;
use switchyard_core::Env;

/// Handshakes timed for the TLS handshake figure (with `tunnel-tls` or `--tls`).
const HANDSHAKES: usize = 200;

/// Measure the tunnel against direct TCP on loopback: throughput, latency and memory.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "tunnel",
    example = "switchyard bench tunnel\nswitchyard bench tunnel --bytes 256M --streams 1,8 --runs 1 --idle-streams 0\nswitchyard --runtime smol bench tunnel\nswitchyard bench tunnel --against socat --idle-streams 0\nswitchyard bench tunnel --tls --streams 1,8 --idle-streams 0\nswitchyard bench tunnel --tls --against rathole-tls,rathole-noise --streams 1 --idle-streams 0\nswitchyard bench tunnel --against socat,bore=/opt/bore/bin/bore,rathole --idle-streams 0\nswitchyard bench tunnel --pin-cpu 0 --against socat --idle-streams 0 --streams 1\nswitchyard --busy-poll 50 bench tunnel --against socat --idle-streams 0",
    note = "Topology: client -> local end -> carrier -> remote end -> target. The targets are a sink that discards and counts and an echo (threads of this process) and a hold that keeps idle connections (a child process, `switchyard bench hold`); the ends are child processes (`switchyard tunnel local` and `switchyard tunnel remote`), as in a real deployment. Direct runs connect the client straight to the same targets.

Bulk: the client writes --bytes in total, split evenly over the streams, into a static forward whose route ends at the sink; the time runs from the first byte written to the sink having every byte (connections are opened first). Throughput is bytes over that time; the ratio is tunnel over direct at the same concurrency.

Latency: one connection per path (direct, the tunnel, each reference), one 64-byte message outstanding, echoed back; 200 warm-up round trips on each, then --messages timed ones, the paths taking turns 50 round trips at a time so that a slow spell of the machine (on a virtual machine, tens of milliseconds about once a second) hits them all alike. p50 and p99 are nearest-rank percentiles; added latency is tunnel minus direct. Every hop of a round trip wakes a sleeping process; where that process last ran on another CPU, the wake-up costs an inter-processor interrupt, which on a virtual machine can take longer than all the relaying (on the 2-core development VM a direct round trip takes about 55 µs across CPUs and 4 µs on one). --pin-cpu N puts everything on CPU N for the latency runs (direct, tunnel and references alike) and labels the figures so; it measures the relaying itself rather than the hypervisor's interrupts. `switchyard --busy-poll MICROS bench tunnel` starts the ends with that --busy-poll, so each keeps polling for a reply instead of sleeping until it is woken, and labels the figures so; the client and the targets are not changed.

References (--against): socat runs as two relays in a row per target, each forking a process per connection, with nodelay and 64 KiB transfers; bore as `bore server` (its control port, 7835, must be free) and a `bore local` per target; rathole as a server and a client, TCP transport with nodelay, from configuration files written to the temporary directory; rathole-tls and rathole-noise as rathole with its tls transport (a fresh self-signed certificate in a PKCS#12 archive made by the openssl command) or its noise transport (its default Noise_NK_25519_ChaChaPoly_BLAKE2s, a key pair from `rathole --genkey`), from the same rathole executable; tunnel-tls (or --tls) as Switchyard's own two ends with the carrier over TLS 1.3, a fresh self-signed certificate pinned by the local end (from this executable, or --ends-binary). Each is found on the PATH unless given as NAME=PATH. Their figures: throughput with the relays' CPU per GiB (socat's from its two relays and the per-connection processes they fork and wait for: utime, stime, cutime and cstime of /proc/PID/stat, read once a run's processes are gone, 10 ms ticks), latency, and the idle RSS of the entry and the exit of one path (socat: its two relays; bore: the server and one client; rathole: the server and the client).

Ends' CPU: CPU time of both end processes (all threads, from /proc/PID/task/*/schedstat) per GiB and per round trip; it moves much less than the wall-clock figures when other work shares the machine (about ±15 % against several-fold), so it is the figure to compare builds by. Beside it, where each end's time goes: `entry U+S exit U+S` is the user and system CPU seconds per GiB of the entry process (the local end; a reference's server or first relay) and of the exit process (from utime and stime of /proc/PID/stat, 10 ms ticks, with the children each has waited for), and `syscalls/MiB E+X` the system calls per MiB each made (not for socat, whose per-connection processes start after perf attached), counted by `perf stat -e raw_syscalls:sys_enter` in one more, untimed run per relay (shown only where perf can count them: installed, and root or a low kernel.perf_event_paranoid).

Memory: VmRSS from /proc/PID/status of each end's process, once the carrier is up and idle, then with --idle-streams streams open end to end and silent; per-stream cost = (RSS with streams - idle RSS) / streams, both ends together. VmRSS counts the pages of the executable and libraries in each process, though the two ends share them: the file-pages line shows how much of the idle figure that is. The open-file limit is raised as far as allowed; the idle streams are reduced to fit if it cannot be.

Each figure is the median of --runs runs (direct, tunnel and reference runs alternate, so drift hits them all). Last comes the share of the machine's CPU that other processes took meanwhile (from /proc/stat, less what this process and its children used); above 10 % the wall-clock figures are unreliable. Everything talks to 127.0.0.1 only, every wait is bounded, and the command stops by itself. The ends run on --runtime (mio by default: each end one thread, one event loop); under smol each end runs every task and its reactor on one thread unless SMOL_THREADS asks for more. Build with --release."
)]
pub struct TunnelCmd {
    /// bytes per bulk run, split evenly over the streams; K, M, G suffixes are binary
    /// (default 1G)
    #[argh(option, default = "1 << 30", from_str_fn(parse_bytes))]
    bytes: u64,

    /// stream counts to measure bulk throughput at, comma-separated (default 1,8,64)
    #[argh(option, default = "Counts(vec![1, 8, 64])", from_str_fn(parse_counts))]
    streams: Counts,

    /// timed round trips per latency run (default 5000)
    #[argh(option, default = "5000")]
    messages: usize,

    /// idle streams to open for the memory figures; 0 skips them (default 10000)
    #[argh(option, default = "10_000")]
    idle_streams: usize,

    /// runs of each measurement; medians are reported (default 3)
    #[argh(option, default = "3")]
    runs: usize,

    /// run both ends inside this process instead of as child processes (for profiling
    /// the whole path in one process; no memory figures)
    #[argh(switch)]
    in_process: bool,

    /// also measure these relays beside the tunnel, in its shape, as references on this
    /// machine: comma-separated `socat` (a two-hop chain), `bore`, `rathole`,
    /// `rathole-tls`, `rathole-noise`, each found on the PATH (the rathole ones as
    /// `rathole`) or given as NAME=PATH, and `tunnel-tls` (see the note below)
    #[argh(option, default = "ToolList::default()", from_str_fn(parse_tools))]
    against: ToolList,

    /// run the latency measurement with every process and thread in it (client, echo,
    /// both ends, the references) on this one CPU, so that no round trip waits for a
    /// wake-up across CPUs (see the note below)
    #[argh(option)]
    pin_cpu: Option<usize>,

    /// run the tunnel ends from this `switchyard` executable instead of this one, e.g. the
    /// minimal tunnel-only build (see the README); it must have the `tunnel` subcommand
    #[argh(option)]
    ends_binary: Option<PathBuf>,

    /// also measure the tunnel with its carrier over TLS 1.3, beside the plaintext one
    /// (the same as adding `tunnel-tls` to --against)
    #[argh(switch)]
    tls: bool,

    /// run each tunnel end (child processes only) with `--threads N`: N carriers, each on
    /// an event loop of its own (default 1)
    #[argh(option, default = "1")]
    threads: usize,
}

/// A figure measured against its target, for the summary.
struct Check {
    what: String,
    target: &'static str,
    figure: String,
    met: bool,
}

impl Program for TunnelCmd {
    async fn run<R: Runtime>(mut self, rt: R, mut env: Env) -> Result<ExitCode, CliError> {
        if self.runs == 0 || self.messages == 0 {
            return Err(CliError::new("--runs and --messages must be at least 1"));
        }
        self.fit_open_files();
        if self.tls && !self.against.0.iter().any(|s| s.tool == Tool::TunnelTls) {
            let exe = self.ends_binary.clone().unwrap_or_else(|| PathBuf::from(Tool::TunnelTls.name()));
            self.against.0.push(ToolSpec { tool: Tool::TunnelTls, exe });
        }
        let targets = Targets::start().map_err(|e| CliError::new(format!("cannot start the targets: {e}")))?;
        if self.ends_binary.is_some() && self.in_process {
            return Err(CliError::usage("--ends-binary and --in-process exclude each other"));
        }
        let exe = match &self.ends_binary {
            Some(exe) => exe.clone(),
            None => own_executable()?,
        };
        let children = !self.in_process && has_tunnel_command(&exe);
        // Left out at 1, so that an --ends-binary from before `--threads` still runs.
        let end_args: Vec<String> =
            if self.threads > 1 { vec!["--threads".into(), self.threads.to_string()] } else { Vec::new() };
        if self.ends_binary.is_some() && !children {
            return Err(CliError::new(format!("{}: not a switchyard executable with `tunnel`", exe.display())));
        }
        let mut ends = if children {
            Ends::spawn::<R>(&exe, &mut env, &targets, &end_args)?
        } else {
            if !self.in_process {
                say!("note: this build has no `tunnel` subcommand; the ends run in-process (no memory figures)");
            }
            Ends::in_process(&rt, &mut env, &targets).await?
        };
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = runtime_flag::<R>();
        let busy_poll = crate::runtime::busy_poll();
        let threads = match (runtime, std::env::var("SMOL_THREADS")) {
            ("smol", Ok(n)) => format!(", SMOL_THREADS {n}"),
            ("smol", Err(_)) => ", one thread per end".to_string(),
            ("mio", _) if !busy_poll.is_zero() => format!(", busy-polling {} µs after traffic", busy_poll.as_micros()),
            _ => String::new(),
        };
        let placement = match &self.ends_binary {
            Some(exe) => format!("child processes of {}", exe.display()),
            None if children => "child processes".to_string(),
            None => "in this process".to_string(),
        };
        let carriers = if self.threads > 1 { format!(", {} carriers (--threads)", self.threads) } else { String::new() };
        say!("switchyard bench tunnel: loopback, {cpus} CPUs, tunnel ends {placement} on {runtime}{threads}{carriers}");
        say!("medians of {} run(s); ratios are tunnel / direct", self.runs);
        if let Some(load) = load_average() {
            let busy = if load > 0.5 { " (other work is running: wall-clock figures will be noisy)" } else { "" };
            say!("load average {load:.2} before the runs{busy}");
        }

        // The blocking calls below run on this thread while the runtime's own threads
        // drive any in-process ends, so nothing here starves them.
        let references =
            self.against.0.iter().map(|spec| Reference::start(spec, &targets, &global_args::<R>(), &end_args)).collect::<Result<Vec<_>, _>>()?;
        let mut checks = Vec::new();
        let others = Interference::start(&ends, &targets, &references);
        if let Some((local, remote)) = ends.pids() {
            checks.extend(self.memory(&mut ends, &targets, local, remote, &references)?);
        }
        checks.extend(self.throughput(&mut ends, &targets, &references)?);
        checks.extend(self.latency(&mut ends, &targets, &references)?);
        if references.iter().any(|r| r.tool == Tool::TunnelTls) {
            let (p50, p99) = super::handshake::measure(HANDSHAKES, &mut env)?;
            say!("\nTLS 1.3 handshake (X25519, Ed25519), client and server in one thread, in memory, {HANDSHAKES} handshakes:");
            say!("  p50 {}, p99 {} (the CPU both ends spend; a loopback handshake adds one TCP round trip)", micros(p50.as_secs_f64() * 1e6), micros(p99.as_secs_f64() * 1e6));
        }
        summary(&checks);
        if let Some(share) = others.and_then(|o| o.share(&ends, &targets, &references, cpus)) {
            let verdict = if share > 0.1 {
                ": the wall-clock figures are unreliable (the ends' CPU less so); rerun on an idle machine"
            } else {
                ""
            };
            say!("  other work used {:.0} % of the machine's CPU during the runs{verdict}", share * 100.0);
        }
        drop(ends);
        Ok(ExitCode::SUCCESS)
    }
}

impl TunnelCmd {
    /// Raises the open-file limit for the idle streams (each costs this process its
    /// client socket; the far ends live in the hold process), or reduces the streams to
    /// what fits.
    fn fit_open_files(&mut self) {
        let reserve = 4 * self.streams.0.iter().max().copied().unwrap_or(1) as u64 + 256;
        let limit = raise_nofile(self.idle_streams as u64 + reserve);
        let fits = limit.saturating_sub(reserve) as usize;
        if fits < self.idle_streams {
            say!("note: open-file limit {limit}: idle streams reduced from {} to {fits}", self.idle_streams);
            self.idle_streams = fits;
        }
    }

    fn memory(
        &self,
        ends: &mut Ends,
        targets: &Targets,
        local: u32,
        remote: u32,
        references: &[Reference],
    ) -> Result<Vec<Check>, CliError> {
        let read = |pid| rss(pid).map_err(|e| CliError::new(format!("cannot read the RSS of process {pid}: {e}")));
        let row = |label: &str, (l, r): (Rss, Rss)| {
            let (l, r) = (l.total as f64, r.total as f64);
            say!("  {label:<20} local {}  remote {}  both {}", megabytes(l), megabytes(r), megabytes(l + r));
        };
        // Let start-up allocations settle before the idle figure.
        thread::sleep(Duration::from_millis(300));
        let idle = (read(local)?, read(remote)?);
        let both = (idle.0.total + idle.1.total) as f64;
        say!("\nmemory (VmRSS)");
        row("idle", idle);
        say!(
            "  of which file pages  local {}  remote {}  (executable and libraries, shared by the ends)",
            megabytes(idle.0.file as f64),
            megabytes(idle.1.file as f64)
        );
        for reference in references {
            if let Some(both) = reference.path_rss() {
                say!("  {:<20} {} (entry and exit of one path, idle)", reference.tool.name(), megabytes(both as f64));
            }
        }
        let mut checks = vec![Check {
            what: "idle RSS, both ends".into(),
            target: "<= 5 MB",
            figure: megabytes(both),
            met: both <= 5e6,
        }];
        if self.idle_streams == 0 {
            return Ok(checks);
        }
        let n = self.idle_streams;
        let conns = load::idle_streams(ends.forwards.hold, n, &targets.hold)?;
        thread::sleep(Duration::from_millis(300));
        ends.check_alive()?;
        let open = (read(local)?, read(remote)?);
        row(&format!("{n} idle streams"), open);
        let each = |open: Rss, idle: Rss| (open.total as f64 - idle.total as f64) / n as f64;
        let (local_each, remote_each) = (each(open.0, idle.0), each(open.1, idle.1));
        let per_stream = local_each + remote_each;
        say!("  per idle stream      local {}  remote {}  both {}", kib(local_each), kib(remote_each), kib(per_stream));
        checks.push(Check {
            what: "RSS per idle stream, both ends".into(),
            target: "<= 64 KiB",
            figure: kib(per_stream),
            met: per_stream <= 64.0 * 1024.0,
        });
        drop(conns);
        targets.hold.release();
        // Give the ends a moment to close ten thousand streams before timing anything.
        thread::sleep(Duration::from_millis(500));
        Ok(checks)
    }

    fn throughput(
        &self,
        ends: &mut Ends,
        targets: &Targets,
        references: &[Reference],
    ) -> Result<Vec<Check>, CliError> {
        say!("\nbulk throughput ({} per run)", size(self.bytes));
        let gib = self.bytes as f64 / f64::from(1 << 30);
        let mut checks = Vec::new();
        for &streams in &self.streams.0 {
            let (mut direct, mut tunnel, mut cpu, mut split) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut reference: Vec<Samples> = references.iter().map(|_| Default::default()).collect();
            let ends_pids = ends.pids().map(|(local, remote)| [local, remote]);
            for _ in 0..self.runs {
                let rate_of = |d: Duration| self.bytes as f64 / d.as_secs_f64().max(1e-9);
                direct.push(rate_of(load::bulk(targets.sink.addr, streams, self.bytes, &targets.sink)?));
                for (tool, (rates, cpu, split)) in references.iter().zip(&mut reference) {
                    let before = tool.cpu();
                    let watch = tool.relay_pids().and_then(Watch::start);
                    rates.push(rate_of(load::bulk(tool.sink, streams, self.bytes, &targets.sink)?));
                    cpu.extend(tool.cpu().zip(before).map(|(after, before)| (after - before).as_secs_f64()));
                    split.extend(watch.and_then(Watch::stop));
                }
                let before = ends_cpu(ends);
                let watch = ends_pids.and_then(Watch::start);
                tunnel.push(rate_of(load::bulk(ends.forwards.sink, streams, self.bytes, &targets.sink)?));
                cpu.extend(ends_cpu(ends).zip(before).map(|(after, before)| (after - before).as_secs_f64()));
                split.extend(watch.and_then(Watch::stop));
                ends.check_alive()?;
            }
            // System calls in one more, untimed run per relay: counting them costs each
            // call a little, which the timed runs should not carry.
            let count = |pids: Option<[u32; 2]>, sink: std::net::SocketAddr| -> Result<Option<Vec<u64>>, CliError> {
                let Some(counter) = pids.and_then(|p| SyscallCounter::start(&p)) else { return Ok(None) };
                load::bulk(sink, streams, self.bytes, &targets.sink)?;
                Ok(counter.stop())
            };
            let tunnel_syscalls = count(ends_pids, ends.forwards.sink)?;
            let reference_syscalls: Vec<Option<Vec<u64>>> =
                references.iter().map(|tool| count(tool.syscall_pids(), tool.sink)).collect::<Result<_, _>>()?;
            let (direct, tunnel) = (median(&direct), median(&tunnel));
            let ratio = tunnel / direct;
            let label = if streams == 1 { "1 stream".to_string() } else { format!("{streams} streams") };
            let cpu_per_gib = |cpu: &[f64]| {
                if cpu.is_empty() {
                    String::new()
                } else {
                    format!("  CPU {:.2} s/GiB", median(cpu) / gib)
                }
            };
            say!(
                "  {label:<11} {:<13} {:>11}  direct {:>11}  ratio {ratio:.2}x{}{}",
                "tunnel",
                rate(tunnel),
                rate(direct),
                cpu_per_gib(&cpu),
                split::describe(&split, tunnel_syscalls.as_deref(), gib)
            );
            for ((tool, (rates, cpu, split)), syscalls) in references.iter().zip(&reference).zip(&reference_syscalls) {
                let r = median(rates);
                let detail = split::describe(split, syscalls.as_deref(), gib);
                say!("  {:<11} {:<13} {:>11}  {:<18} ratio {:.2}x{}{detail}", "", tool.tool.name(), rate(r), "", r / direct, cpu_per_gib(cpu));
            }
            let what = match streams {
                1 => "single-stream throughput",
                8 => "8-stream throughput",
                _ => continue,
            };
            checks.push(Check {
                what: what.into(),
                target: ">= 0.45x direct",
                figure: format!("{ratio:.2}x"),
                met: ratio >= 0.45,
            });
        }
        Ok(checks)
    }

    fn latency(&self, ends: &mut Ends, targets: &Targets, references: &[Reference]) -> Result<Vec<Check>, CliError> {
        let (pinned, placement) = match self.pin_cpu {
            Some(cpu) => (Some(Pinned::new(cpu, ends, references)?), format!(", all on CPU {cpu}")),
            None => (None, String::new()),
        };
        // The summary names what the figures were measured under.
        let busy_poll = crate::runtime::busy_poll();
        let conditions = [
            pinned.is_some().then(|| ", one CPU".to_string()),
            (!busy_poll.is_zero()).then(|| format!(", busy-poll {} µs", busy_poll.as_micros())),
        ]
        .into_iter()
        .flatten()
        .collect::<String>();
        say!("\nround-trip latency ({MESSAGE}-byte messages, {} per run, one outstanding{placement})", self.messages);
        // p50 and p99 of each run, per path: direct, the tunnel, then each reference.
        let mut runs: Vec<[Vec<f64>; 2]> = (0..2 + references.len()).map(|_| Default::default()).collect();
        let paths: Vec<_> = [targets.echo, ends.forwards.echo].into_iter().chain(references.iter().map(|r| r.echo)).collect();
        let mut cpu = Vec::new();
        for _ in 0..self.runs {
            let before = ends_cpu(ends);
            let samples = load::round_trips(&paths, self.messages)?;
            cpu.extend(ends_cpu(ends).zip(before).map(|(after, before)| (after - before).as_secs_f64()));
            for (samples, [p50, p99]) in samples.iter().zip(&mut runs) {
                p50.push(percentile(samples, 50.0).as_secs_f64() * 1e6);
                p99.push(percentile(samples, 99.0).as_secs_f64() * 1e6);
            }
            ends.check_alive()?;
        }
        let medians: Vec<[f64; 2]> = runs.iter().map(|[p50, p99]| [median(p50), median(p99)]).collect();
        let ([d50, d99], [t50, t99]) = (medians[0], medians[1]);
        if !cpu.is_empty() {
            // Warm-up round trips ran on the same clock.
            let per_trip = median(&cpu) / (self.messages + load::WARM_UP) as f64;
            say!("  ends' CPU {} per round trip", micros(per_trip * 1e6));
        }
        let mut checks = Vec::new();
        for (i, (name, direct, tunnel, limit)) in [("p50", d50, t50, 25.0), ("p99", d99, t99, 40.0)].into_iter().enumerate()
        {
            let added = tunnel - direct;
            say!(
                "  {name}   {:<13} {:>9}  direct {:>9}  ratio {:.2}x  added {:+.1} µs",
                "tunnel",
                micros(tunnel),
                micros(direct),
                tunnel / direct,
                added
            );
            for (tool, figures) in references.iter().zip(&medians[2..]) {
                let figure = figures[i];
                say!("        {:<13} {:>9}  {:<16} added {:+.1} µs", tool.tool.name(), micros(figure), "", figure - direct);
            }
            let target = if name == "p50" { "<= 25 µs" } else { "<= 40 µs" };
            let what = format!("added latency {name}{conditions}");
            checks.push(Check { what, target, figure: format!("{added:+.1} µs"), met: added <= limit });
        }
        drop(pinned);
        Ok(checks)
    }
}

/// Every process of a latency measurement pinned to one CPU, until dropped: then each
/// goes back to the CPUs this process was allowed at the start.
struct Pinned {
    pids: Vec<u32>,
    allowed: CpuSet,
}

impl Pinned {
    fn new(cpu: usize, ends: &Ends, references: &[Reference]) -> Result<Pinned, CliError> {
        let fail = |e: std::io::Error| CliError::new(format!("--pin-cpu {cpu}: {e}"));
        let allowed = CpuSet::allowed().map_err(fail)?;
        let one = CpuSet::only(cpu).map_err(fail)?;
        let mut pids = vec![std::process::id()];
        pids.extend(ends.pids().map(|(local, remote)| [local, remote]).into_iter().flatten());
        pids.extend(references.iter().flat_map(Reference::pids));
        // Restores whatever was pinned if a later one fails.
        let mut pinned = Pinned { pids: Vec::new(), allowed };
        for pid in pids {
            set_affinity(pid, &one).map_err(fail)?;
            pinned.pids.push(pid);
        }
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if let Err(e) = set_affinity(pid, &self.allowed) {
                tracing::warn!("cannot unpin process {pid}: {e}");
            }
        }
    }
}

/// How much of the machine other work took while the benchmark ran: CPU time the machine
/// was busy (or stolen by the hypervisor) minus what this process and its children used.
struct Interference {
    at: std::time::Instant,
    busy: Duration,
    own: Duration,
}

impl Interference {
    fn start(ends: &Ends, targets: &Targets, references: &[Reference]) -> Option<Interference> {
        let own = own_cpu(ends, targets, references)?;
        Some(Interference { at: std::time::Instant::now(), busy: machine_busy().ok()?, own })
    }

    /// The share of all CPUs' time that others used since `start`, 0 to 1.
    fn share(&self, ends: &Ends, targets: &Targets, references: &[Reference], cpus: usize) -> Option<f64> {
        let busy = machine_busy().ok()?.saturating_sub(self.busy);
        let own = own_cpu(ends, targets, references)?.saturating_sub(self.own);
        let wall = self.at.elapsed().as_secs_f64() * cpus as f64;
        Some((busy.saturating_sub(own).as_secs_f64() / wall.max(1e-9)).clamp(0.0, 1.0))
    }
}

/// CPU time used so far by this process (sink, echo, clients), the hold process, the
/// reference tools and, when they are child processes, both ends. The hold process is
/// gone once the memory figures are taken, and then counts among this process's children.
fn own_cpu(ends: &Ends, targets: &Targets, references: &[Reference]) -> Option<Duration> {
    let mut own = process_cpu(std::process::id()).ok()?;
    own += process_cpu(targets.hold.pid()).unwrap_or_default();
    own += references.iter().flat_map(Reference::pids).map(|pid| process_cpu(pid).unwrap_or_default()).sum::<Duration>();
    if let Some((local, remote)) = ends.pids() {
        own += process_cpu(local).ok()? + process_cpu(remote).ok()?;
    }
    Some(own)
}

/// CPU time used so far by both ends together, when they are child processes.
/// One relay's samples over the runs: throughput, CPU seconds, and the CPU split.
type Samples = (Vec<f64>, Vec<f64>, Vec<[CpuSplit; 2]>);

fn ends_cpu(ends: &Ends) -> Option<Duration> {
    let (local, remote) = ends.pids()?;
    Some(cpu_time(local).ok()? + cpu_time(remote).ok()?)
}

fn summary(checks: &[Check]) {
    say!("\nagainst the targets of issue 3");
    for check in checks {
        let verdict = if check.met { "met" } else { "MISSED" };
        say!("  {:<40} {:>12}   target {:<16} {verdict}", check.what, check.figure, check.target);
    }
    let met = checks.iter().filter(|c| c.met).count();
    say!("  {met} of {} targets met", checks.len());
}
