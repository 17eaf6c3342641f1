//! Reading CPU time and memory of processes from /proc (Linux only).

use std::collections::HashMap;

/// One process's name (`comm`) and CPU time (user + system) in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    pub ticks: u64,
    /// Nice value (-20..19).
    pub nice: i64,
}

/// Parses `/proc/<pid>/stat`. The command name sits between the first `(` and the last `)`
/// and may itself contain spaces or parentheses.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After ") ": field 3 (state) is index 0, so utime (field 14) is index 11, stime index 12.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let nice: i64 = fields.get(16)?.parse().ok()?;
    Some(ProcStat {
        comm,
        ticks: utime + stime,
        nice,
    })
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `VmHWM` (peak resident set size) in kB from the text of `/proc/<pid>/status`.
pub fn parse_vm_hwm(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn vm_hwm_kb(pid: i32) -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Every process's stat, by pid.
pub fn scan_all() -> HashMap<i32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = read_stat(pid) {
            out.insert(pid, stat);
        }
    }
    out
}

/// Whole-machine CPU from the first line of /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// Every state but idle and iowait.
    pub busy: u64,
    pub total: u64,
}

pub fn parse_machine(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user, so only the first eight add up to the total.
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some(MachineCpu {
        busy: total - idle,
        total,
    })
}

pub fn machine_cpu() -> MachineCpu {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_machine(&t))
        .unwrap_or_default()
}

/// Clock ticks per second (`USER_HZ`).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// CPU seconds (user + system) of this process so far.
pub fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    timeval_s(usage.ru_utime) + timeval_s(usage.ru_stime)
}

pub fn timeval_s(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// CPU of every process between a baseline and the latest scan. Processes that start after the
/// baseline count from zero; ones that exit keep the ticks of the last scan that saw them, so
/// scanning often loses little of short-lived processes (e.g. Postgres backends of a producer).
pub struct Sampler {
    base: HashMap<i32, ProcStat>,
    last: HashMap<i32, ProcStat>,
}

impl Sampler {
    pub fn start() -> Self {
        let base = scan_all();
        Self {
            last: base.clone(),
            base,
        }
    }

    pub fn tick(&mut self) {
        for (pid, stat) in scan_all() {
            self.last.insert(pid, stat);
        }
    }

    fn delta(&self, pid: i32, stat: &ProcStat) -> u64 {
        let before = self
            .base
            .get(&pid)
            .filter(|b| b.comm == stat.comm)
            .map_or(0, |b| b.ticks);
        stat.ticks.saturating_sub(before)
    }

    /// Ticks used by processes named `comm`, except `excluded` pids.
    pub fn ticks_named(&self, comm: &str, excluded: &[i32]) -> u64 {
        self.last
            .iter()
            .filter(|(pid, stat)| stat.comm == comm && !excluded.contains(pid))
            .map(|(pid, stat)| self.delta(*pid, stat))
            .sum()
    }

    /// Ticks used by processes running with a positive nice value, except `ours` and the
    /// services named in `services`: other people's background work (builds, fuzzers) sharing
    /// the machine.
    pub fn ticks_niced(&self, ours: &[i32], services: &[&str]) -> u64 {
        self.last
            .iter()
            .filter(|(pid, stat)| {
                stat.nice > 0 && !ours.contains(pid) && !services.contains(&stat.comm.as_str())
            })
            .map(|(pid, stat)| self.delta(*pid, stat))
            .sum()
    }

    /// Ticks used by one pid.
    pub fn ticks_of(&self, pid: i32) -> u64 {
        self.last.get(&pid).map_or(0, |stat| self.delta(pid, stat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let text = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 \
                    9 0 12345 1000000 500 18446744073709551615";
        let stat = parse_stat(text).expect("parses");
        assert_eq!(stat.comm, "tokio (rt) x");
        assert_eq!(stat.ticks, 325);
        assert_eq!(stat.nice, 0);
    }

    #[test]
    fn vm_hwm_and_machine() {
        let status = "Name:\tconsumer\nVmPeak:\t  100 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 2000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(23456));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        let stat = "cpu  100 5 50 1000 20 1 2 3 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let cpu = parse_machine(stat).expect("parses");
        assert_eq!(cpu.total, 1181);
        assert_eq!(cpu.busy, 161);
    }
}
