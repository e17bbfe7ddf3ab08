//! What the benchmark reads from and asks of the operating system (Linux): a process's
//! resident memory and CPU time, the load average, and enough file descriptors for
//! thousands of idle streams.

use std::io;
use std::time::Duration;

/// Resident memory of a process, from `/proc/PID/status` (Linux), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`: everything the process has in RAM, which is what the targets speak of;
    /// reserved but untouched address space does not count.
    pub total: u64,
    /// `RssFile`: pages of mapped files (the executable, shared libraries). Processes
    /// running the same executable share these pages, so two tunnel ends on one machine
    /// cost them once, though each one's `VmRSS` counts them.
    pub file: u64,
}

/// The resident memory of process `pid`.
pub fn rss(pid: u32) -> io::Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmRSS line in /proc/{pid}/status")))
}

/// The most memory process `pid` has had resident (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field(&status, "VmHWM:")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmHWM line in /proc/{pid}/status")))
}

/// The `VmRSS:` and `RssFile:` lines of a status file (`1234 kB`), in bytes.
fn parse_rss(status: &str) -> Option<Rss> {
    Some(Rss { total: status_field(status, "VmRSS:")?, file: status_field(status, "RssFile:").unwrap_or(0) })
}

/// A `NAME: 1234 kB` line of a status file, in bytes.
fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(name))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// CPU time process `pid` has used so far, all its threads together, in nanoseconds
/// (the first field of each `/proc/PID/task/TID/schedstat`). Unlike wall-clock figures,
/// this hardly moves when other work shares the machine, so it tracks the tunnel's own
/// cost per byte and per round trip.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended since the listing has no schedstat any more: it counts 0.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else { continue };
        total += stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(Duration::from_nanos(total))
}

/// CPU time process `pid` has used, every thread it ever had and every child process it
/// has waited for included (`utime`, `stime`, `cutime` and `cstime` of `/proc/PID/stat`;
/// clock-tick resolution, 10 ms on Linux). The children count is what covers socat's
/// processes forked per connection.
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let split = cpu_split(pid)?;
    Ok(split.user + split.system)
}

/// CPU time in user space and in the kernel, as [`process_cpu`] counts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    /// `utime + cutime`.
    pub user: Duration,
    /// `stime + cstime`.
    pub system: Duration,
}

/// Process `pid`'s CPU time so far, user and system apart (see [`process_cpu`]).
pub fn cpu_split(pid: u32) -> io::Result<CpuSplit> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after_name = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `utime` and `stime` are fields 14 and 15; `after_name` starts at field 3.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    match (ticks(14), ticks(15), ticks(16), ticks(17)) {
        (Some(user), Some(system), Some(children_user), Some(children_system)) => {
            Ok(CpuSplit { user: from_ticks(user + children_user), system: from_ticks(system + children_system) })
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse /proc/{pid}/stat"))),
    }
}

/// CPU time the whole machine has spent busy, all CPUs together: user, nice, system and
/// steal (time the hypervisor gave to others) from `/proc/stat`. Interrupt and softirq
/// time are left out: much of it is our own loopback traffic, which a kernel may not
/// charge to our processes, and counting it would blame others for it.
pub fn machine_busy() -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Ok(from_ticks(busy))
}

fn from_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / per_sec))
}

/// The one-minute load average, when `/proc/loadavg` can be read.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to at least `want` if it can (up to
/// the hard limit, or past it when privileged), and returns the soft limit now in force.
/// Child processes inherit it, so the tunnel ends started afterwards get it too.
pub fn raise_nofile(want: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur >= want {
        return limit.rlim_cur;
    }
    // First try past the hard limit (works as root), then settle for the hard limit.
    for (cur, max) in [(want, want.max(limit.rlim_max)), (want.min(limit.rlim_max), limit.rlim_max)] {
        let new = libc::rlimit { rlim_cur: cur, rlim_max: max };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return cur;
        }
    }
    limit.rlim_cur
}

/// A set of CPUs, for pinning processes with [`set_affinity`].
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The CPUs this process may run on now.
    pub fn allowed() -> io::Result<CpuSet> {
        // SAFETY: an all-zero cpu_set_t is a valid empty set; sched_getaffinity fills the
        // one we own and reads no more than its size.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(CpuSet(set))
    }

    /// CPU `cpu` alone, if this process may run on it.
    pub fn only(cpu: usize) -> io::Result<CpuSet> {
        let allowed = CpuSet::allowed()?;
        // SAFETY: CPU_ISSET and CPU_SET only touch the set we own, within its size.
        if cpu >= libc::CPU_SETSIZE as usize || !unsafe { libc::CPU_ISSET(cpu, &allowed.0) } {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {cpu} is not one this process may use"),
            ));
        }
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        Ok(CpuSet(set))
    }
}

/// Restricts every thread of process `pid` to the CPUs of `set`. Threads and processes
/// it starts afterwards inherit the set.
pub fn set_affinity(pid: u32, set: &CpuSet) -> io::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: sched_setaffinity only reads the set, within the size given.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set.0) } != 0 {
            let e = io::Error::last_os_error();
            // A thread that ended since the listing is no failure.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_in_bytes() {
        let status = "Name:\tswitchyard\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nRssFile:\t  4000 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(Rss { total: 4321 * 1024, file: 4000 * 1024 }));
        assert_eq!(parse_rss("Name: x\n"), None);
        assert!(rss(std::process::id()).unwrap().total > 0);
        assert!(cpu_time(std::process::id()).unwrap() > Duration::ZERO);
        // Ticks may still be 0 this early; both must parse.
        assert!(process_cpu(std::process::id()).is_ok());
        assert!(machine_busy().unwrap() > Duration::ZERO);
    }

    #[test]
    fn pins_a_process_to_one_cpu_and_back() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("start sleep");
        let pid = child.id();
        let allowed = CpuSet::allowed().expect("affinity");
        let first = (0..libc::CPU_SETSIZE as usize).find(|&c| unsafe { libc::CPU_ISSET(c, &allowed.0) }).unwrap();
        set_affinity(pid, &CpuSet::only(first).expect("a CPU we may use")).expect("pin");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("allowed list");
        assert_eq!(list.trim(), first.to_string());
        set_affinity(pid, &allowed).expect("unpin");
        assert!(CpuSet::only(libc::CPU_SETSIZE as usize).is_err());
        let _ = child.kill();
        let _ = child.wait();
    }
}
