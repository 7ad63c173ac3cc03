//! The agent's own process figures from `/proc/self`, exported under
//! kata-monitor's `kata_monitor_process_*` names.

/// A snapshot; fields are `None` where `/proc` could not tell.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub threads: Option<f64>,
}

/// Host clock ticks per second (USER_HZ), the unit of `/proc/<pid>/stat`
/// times; the shims report their processes' times in it.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Reads the current process's figures.
pub fn read_self() -> ProcessStats {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let mut out = parse_stat(&stat, ticks as f64, page as f64, boot);
    out.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        out.max_fds = Some(lim.rlim_cur as f64);
    }
    out
}

fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and
/// parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str, ticks: f64, page: f64, boot: Option<f64>) -> ProcessStats {
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return ProcessStats::default();
    };
    // After ")": field 3 (state) is index 0.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<f64>().ok());
    let ticks_ok = ticks > 0.0;
    ProcessStats {
        cpu_seconds: match (num(14), num(15)) {
            (Some(u), Some(s)) if ticks_ok => Some((u + s) / ticks),
            _ => None,
        },
        threads: num(20),
        start_time_seconds: match (num(22), boot) {
            (Some(st), Some(b)) if ticks_ok => Some(b + st / ticks),
            _ => None,
        },
        virtual_bytes: num(23),
        resident_bytes: num(24).map(|p| p * page),
        open_fds: None,
        max_fds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        let stat = "1234 (kata pulse) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 2048 18446744073709551615";
        let p = parse_stat(stat, 100.0, 4096.0, Some(1_700_000_000.0));
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.threads, Some(7.0));
        assert_eq!(p.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(p.virtual_bytes, Some(123456789.0));
        assert_eq!(p.resident_bytes, Some(2048.0 * 4096.0));
    }

    #[test]
    fn garbage_gives_nothing() {
        assert_eq!(parse_stat("", 100.0, 4096.0, None), ProcessStats::default());
        assert_eq!(parse_stat("x) y", 100.0, 4096.0, None).cpu_seconds, None);
    }

    #[test]
    fn reads_this_process() {
        let p = read_self();
        assert!(p.resident_bytes.unwrap_or(0.0) > 0.0);
        assert!(p.open_fds.unwrap_or(0.0) >= 3.0);
        assert!(p.start_time_seconds.unwrap_or(0.0) > 1.0e9);
    }

    #[test]
    fn boot_time_line() {
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
        assert_eq!(boot_time("cpu 1 2\n"), None);
    }
}
