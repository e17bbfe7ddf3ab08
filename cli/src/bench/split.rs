//! Where a relay's time goes during a bulk transfer: the user and system CPU of its entry
//! and its exit process, and the system calls each makes (counted by `perf stat`, where it
//! can run).

use super::os::{cpu_split, CpuSplit};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// How long `perf stat` gets to attach before the counted transfer starts.
const PERF_ATTACH: Duration = Duration::from_millis(200);
/// How long a stopped `perf stat` gets to print its count.
const PERF_REPORT: Duration = Duration::from_secs(5);

/// The CPU both processes of a relay used between [`Watch::start`] and [`Watch::stop`].
pub struct Watch {
    pids: [u32; 2],
    before: [CpuSplit; 2],
}

impl Watch {
    /// Starts watching the entry and exit processes `pids`; `None` if either cannot be read.
    pub fn start(pids: [u32; 2]) -> Option<Watch> {
        Some(Watch { pids, before: [cpu_split(pids[0]).ok()?, cpu_split(pids[1]).ok()?] })
    }

    /// What each used since the start, entry first.
    pub fn stop(self) -> Option<[CpuSplit; 2]> {
        let used = |i: usize| -> Option<CpuSplit> {
            let now = cpu_split(self.pids[i]).ok()?;
            Some(CpuSplit {
                user: now.user.saturating_sub(self.before[i].user),
                system: now.system.saturating_sub(self.before[i].system),
            })
        };
        Some([used(0)?, used(1)?])
    }
}

/// True when `perf stat` can count this machine's system calls (installed, and allowed to
/// read the `raw_syscalls` tracepoint: root, or `kernel.perf_event_paranoid` low enough).
pub fn can_count_syscalls() -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    *CAN.get_or_init(|| {
        Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `perf stat` counting the system calls of some processes, one counter per process.
pub struct SyscallCounter {
    perfs: Vec<Child>,
}

impl SyscallCounter {
    /// Attaches a counter to each of `pids` and gives them time to attach; `None` if perf
    /// cannot count here.
    pub fn start(pids: &[u32]) -> Option<SyscallCounter> {
        if !can_count_syscalls() {
            return None;
        }
        let mut perfs = Vec::new();
        for pid in pids {
            let perf = Command::new("perf")
                .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .ok()?;
            perfs.push(perf);
        }
        thread::sleep(PERF_ATTACH);
        Some(SyscallCounter { perfs })
    }

    /// Stops the counters; the system calls of each process since it attached.
    pub fn stop(mut self) -> Option<Vec<u64>> {
        let counts = self.perfs.iter_mut().map(stop_perf).collect();
        self.perfs.clear();
        counts
    }
}

impl Drop for SyscallCounter {
    fn drop(&mut self) {
        for perf in &mut self.perfs {
            let _ = perf.kill();
            let _ = perf.wait();
        }
    }
}

/// Interrupts one `perf stat` (which then prints its count) and reads the count.
fn stop_perf(perf: &mut Child) -> Option<u64> {
    let pid = libc::pid_t::try_from(perf.id()).ok()?;
    // SAFETY: kill only sends a signal to our own child, which has not been waited for.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + PERF_REPORT;
    while perf.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = perf.kill();
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut report = String::new();
    perf.stderr.take()?.read_to_string(&mut report).ok()?;
    parse_count(&report)
}

/// The count in `perf stat -x,`'s line for the event: its first field, where `<not
/// counted>` means the process never ran while counted.
fn parse_count(report: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.contains("raw_syscalls:sys_enter"))?;
    match line.split(',').next()? {
        "<not counted>" => Some(0),
        count => count.trim().parse().ok(),
    }
}

/// A relay's figures per GiB: each side's user and system seconds, and, when counted,
/// each side's system calls per MiB.
pub fn describe(cpu: &[[CpuSplit; 2]], syscalls: Option<&[u64]>, gib: f64) -> String {
    if cpu.is_empty() {
        return String::new();
    }
    let median_of = |f: &dyn Fn(&[CpuSplit; 2]) -> Duration| {
        let values: Vec<f64> = cpu.iter().map(|s| f(s).as_secs_f64()).collect();
        super::stats::median(&values) / gib
    };
    let side = |i: usize| format!("{:.2}u+{:.2}s", median_of(&|s| s[i].user), median_of(&|s| s[i].system));
    let mut text = format!("  entry {} exit {}", side(0), side(1));
    if let Some([entry, exit]) = syscalls {
        let mib = gib * 1024.0;
        text.push_str(&format!("  syscalls/MiB {:.1}+{:.1}", *entry as f64 / mib, *exit as f64 / mib));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_counts_are_read_from_its_csv_line() {
        assert_eq!(parse_count("123456,,raw_syscalls:sys_enter,2000000000,100.00,,\n"), Some(123_456));
        assert_eq!(parse_count("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n"), Some(0));
        assert_eq!(parse_count("perf: permission denied\n"), None);
    }

    #[test]
    fn the_split_is_per_gib_and_per_side() {
        let s = |u: u64, k: u64| CpuSplit { user: Duration::from_millis(u), system: Duration::from_millis(k) };
        let runs = [[s(100, 400), s(50, 300)], [s(120, 420), s(70, 320)], [s(110, 410), s(60, 310)]];
        let text = describe(&runs, Some(&[1024, 2048]), 0.5);
        assert_eq!(text, "  entry 0.22u+0.82s exit 0.12u+0.62s  syscalls/MiB 2.0+4.0");
        assert_eq!(describe(&[], None, 1.0), "");
    }
}
