//! CPU time and peak memory of a process tree, read from `/proc` (Linux only).
//!
//! A contender is its root process and every descendant (nginx: the master and its workers),
//! so that each proxy pays for all of its processes.

use std::collections::BTreeMap;
use std::fs;

/// `ps`-style facts of one process, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Parent pid.
    pub ppid: u32,
    /// User + system CPU time of all its threads, in clock ticks (`USER_HZ`).
    pub cpu_ticks: u64,
    /// The user part of `cpu_ticks`.
    pub user_ticks: u64,
    /// User + system CPU time of its children that it has waited for, clock ticks.
    pub waited_children_ticks: u64,
}

/// Parses the one line of `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) ... utime(14) stime(15); index 0 here is field 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(ProcStat {
        ppid,
        cpu_ticks: utime + stime,
        user_ticks: utime,
        waited_children_ticks: cutime + cstime,
    })
}

/// The value of a `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// `root` and all its descendants, given every process's parent.
pub fn descendants(root: u32, parents: &BTreeMap<u32, u32>) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&(_, &pp)| pp == parent)
                .map(|(&pid, _)| pid),
        );
        i += 1;
    }
    tree
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn all_parents() -> BTreeMap<u32, u32> {
    let mut parents = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let pid = entry.file_name().to_str().and_then(|s| s.parse().ok());
            if let Some((pid, stat)) = pid.and_then(|pid| Some((pid, read_stat(pid)?))) {
                parents.insert(pid, stat.ppid);
            }
        }
    }
    parents
}

/// The pids of `root`'s process tree as it is now.
pub fn tree(root: u32) -> Vec<u32> {
    descendants(root, &all_parents())
}

/// A snapshot of a process tree's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of the whole tree, clock ticks.
    pub cpu_ticks: u64,
    /// The user part of `cpu_ticks`.
    pub user_ticks: u64,
    /// Sum of every process's peak resident set (`VmHWM`), KiB. Pages shared between an nginx
    /// master and its workers are counted once per process: an upper bound.
    pub peak_rss_kib: u64,
    /// Processes in the tree.
    pub processes: u32,
}

/// Reads the resources of `root`'s tree now.
pub fn usage(root: u32) -> Usage {
    let mut u = Usage::default();
    for pid in tree(root) {
        if let Some(stat) = read_stat(pid) {
            u.cpu_ticks += stat.cpu_ticks;
            u.user_ticks += stat.user_ticks;
            u.processes += 1;
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            u.peak_rss_kib += parse_status_kib(&status, "VmHWM").unwrap_or(0);
        }
    }
    u
}

/// The machine's CPU time from the first line of `/proc/stat`, clock ticks summed over all
/// CPUs: (busy, total). Busy is everything but idle and iowait.
pub fn parse_machine_ticks(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The machine's (busy, total) CPU ticks now.
pub fn machine_ticks() -> (u64, u64) {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_machine_ticks(&t))
        .unwrap_or((0, 0))
}

/// This process's own CPU ticks plus those of the children it has waited for (the load
/// tool's runs, once they are over).
pub fn own_and_waited_ticks() -> u64 {
    read_stat(std::process::id()).map_or(0, |s| s.cpu_ticks + s.waited_children_ticks)
}

/// Clock ticks per second for `/proc/<pid>/stat` times. `USER_HZ` is 100 on every Linux
/// architecture weir runs on; `getconf CLK_TCK` is asked when it is there.
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}
