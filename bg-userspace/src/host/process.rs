//! The agent's own footprint, read from `/proc/self` at scrape time: CPU,
//! resident memory, descriptors and threads. Growth between scrapes is
//! how a leak shows in Prometheus.
use std::path::Path;

/// One reading. A field that could not be read is None and its metric is
/// left out rather than reported as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    /// Since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads this process's numbers.
pub fn read_self() -> ProcessStats {
    read("self")
}

/// Reads another process's numbers (the bench watches the agent's).
pub fn read_pid(pid: u32) -> ProcessStats {
    read(&pid.to_string())
}

/// `/proc/<who>`: "self" or a pid.
fn read(who: &str) -> ProcessStats {
    let proc = Path::new("/proc");
    let stat = std::fs::read_to_string(proc.join(who).join("stat")).unwrap_or_default();
    let boot = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| boot_time(&s));
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let mut out = parse_stat(&stat, ticks.max(1) as u64, page.max(1) as u64, boot);
    out.open_fds = std::fs::read_dir(proc.join(who).join("fd"))
        .ok()
        .map(|d| d.count() as u64);
    // The soft limit is this process's; another's is not read.
    out.max_fds = (who == "self").then(super::resources::open_file_limit);
    out
}

/// `btime` of `/proc/stat`: when the host booted, in Unix seconds.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Fields of `/proc/self/stat` (proc(5)). The command name may hold spaces
/// and parentheses, so fields are counted from the last ')'.
fn parse_stat(stat: &str, ticks_per_s: u64, page: u64, boot: Option<u64>) -> ProcessStats {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcessStats::default();
    };
    // After the name, field 3 (state) is index 0: field N is index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu = match (num(14), num(15)) {
        (Some(u), Some(s)) => Some((u + s) as f64 / ticks_per_s as f64),
        _ => None,
    };
    ProcessStats {
        cpu_seconds: cpu,
        threads: num(20),
        start_time_seconds: boot
            .zip(num(22))
            .map(|(b, t)| b as f64 + t as f64 / ticks_per_s as f64),
        virtual_bytes: num(23),
        resident_bytes: num(24).map(|p| p * page),
        ..ProcessStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from proc(5)'s layout, with a name holding ") (".
    const STAT: &str = "4242 (bg ) (ctl) S 1 4242 4242 0 -1 4194560 2345 0 0 0 150 50 0 0 20 0 7 0 9000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT, 100, 4096, Some(1_700_000_000));
        assert_eq!(s.cpu_seconds, Some(2.0), "utime 150 + stime 50 at 100 Hz");
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.start_time_seconds, Some(1_700_000_090.0));
        assert_eq!(s.virtual_bytes, Some(123_456_789));
        assert_eq!(s.resident_bytes, Some(2048 * 4096));
    }

    #[test]
    fn unreadable_fields_are_none_not_zero() {
        assert_eq!(parse_stat("", 100, 4096, None), ProcessStats::default());
        let s = parse_stat("1 (x) S 1 2", 100, 4096, None);
        assert_eq!((s.cpu_seconds, s.resident_bytes), (None, None));
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads() {
        let s = read_self();
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(s.threads.unwrap() >= 1);
        assert!(s.start_time_seconds.unwrap() > 1.6e9);
        // By pid, the same process reads the same, but for the limit.
        let p = read_pid(std::process::id());
        assert_eq!(p.start_time_seconds, s.start_time_seconds);
        assert!(p.cpu_seconds.unwrap() >= s.cpu_seconds.unwrap());
        assert_eq!((p.max_fds, s.max_fds.is_some()), (None, true));
    }
}
