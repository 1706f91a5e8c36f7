//! Resource usage of a process as the kernel sees it: CPU time from `/proc/PID/stat`, resident
//! memory and threads from `/proc/PID/status`, open files from `/proc/PID/fd`. CPU % is the
//! caller's, from two samples.

use std::fs;
use std::io;
use std::time::Duration;

/// What `/proc` says about a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory (VmRSS), in bytes; 0 for a process that has exited.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Entries in `/proc/PID/fd`.
    pub open_files: u64,
}

/// Reads the sample of process `pid`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let cpu_ticks = parse_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let open_files = fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok(ProcSample {
        cpu_ticks,
        rss_bytes: status_field(&status, "VmRSS:").unwrap_or(0) * 1024,
        threads: status_field(&status, "Threads:").unwrap_or(0),
        open_files,
    })
}

/// utime + stime: fields 14 and 15 of `/proc/PID/stat`, counted after the command name in
/// parentheses (which may hold spaces and parentheses itself).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// The number after `key` in `/proc/PID/status` (`VmRSS:  1234 kB` → 1234).
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// Clock ticks per second of the CPU times in `/proc` (USER_HZ).
pub fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as u64,
        _ => 100,
    }
}

/// CPU use in percent of one core: `ticks` of CPU time over `elapsed` of wall time.
pub fn cpu_percent(ticks: u64, elapsed: Duration, ticks_per_second: u64) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 || ticks_per_second == 0 {
        return 0.0;
    }
    ticks as f64 / ticks_per_second as f64 / seconds * 100.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let stat = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
        assert_eq!(parse_cpu_ticks("1234 (x) S 1"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nVmRSS:\t    5120 kB\nThreads:\t4\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(5120));
        assert_eq!(status_field(status, "Threads:"), Some(4));
        assert_eq!(status_field(status, "VmSwap:"), None);
    }

    #[test]
    fn own_process() {
        let own = sample(std::process::id()).unwrap();
        assert!(own.rss_bytes > 0);
        assert!(own.threads >= 1);
        assert!(own.open_files >= 3);
    }

    #[test]
    fn percent() {
        assert_eq!(cpu_percent(50, Duration::from_secs(1), 100), 50.0);
        assert_eq!(cpu_percent(50, Duration::ZERO, 100), 0.0);
    }
}
