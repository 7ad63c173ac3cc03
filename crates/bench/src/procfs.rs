//! What the kernel says a process costs: CPU time from `/proc/<pid>/stat`, resident memory
//! from `/proc/<pid>/status`, and a sampler for the peak of a phase (VmHWM never resets).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// CPU time of `pid`: the run time of each of its threads from
/// `/proc/<pid>/task/*/schedstat`, in nanoseconds. utime + stime of `/proc/<pid>/stat`
/// count whole clock ticks (10 ms), coarser than a scrape of a small node; the price is
/// that a thread ending between two readings takes its time with it (the agent's
/// runtime threads live as long as it does). Falls back to utime + stime where
/// schedstat is missing.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    match threads_run_time(pid) {
        Some(d) => Ok(d),
        None => stat_cpu_time(pid),
    }
}

fn threads_run_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended since the listing has no run time left to count.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// utime + stime of every thread of `pid`, dead ones included.
pub fn stat_cpu_time(pid: u32) -> Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&text)?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

/// Kernel clock ticks per second (`USER_HZ`).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a stat line; the command name, in parentheses,
/// may itself hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_ticks(text: &str) -> Result<u64> {
    let Some(end) = text.rfind(')') else {
        bail!("no command name in a stat line")
    };
    let fields: Vec<&str> = text[end + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let get = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("stat line has no field {}", i + 3))?
            .parse::<u64>()
            .with_context(|| format!("stat field {} is not a number", i + 3))
    };
    Ok(get(11)? + get(12)?)
}

/// Resident memory now and its high-water mark, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_status(&text)
}

fn parse_status(text: &str) -> Result<Memory> {
    let kib = |key: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in a status file"))?;
        let n = line.trim().trim_end_matches("kB").trim();
        Ok(n.parse::<u64>()
            .with_context(|| format!("{key} {n:?} is not a number"))?
            * 1024)
    };
    Ok(Memory {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
    })
}

/// Samples VmRSS every few milliseconds on a thread of its own until stopped: the peak of
/// one phase of a long-lived process, which VmHWM (a lifetime maximum) cannot give.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl PeakSampler {
    pub fn start(pid: u32, every: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                match memory(pid) {
                    Ok(m) => peak = peak.max(m.rss),
                    Err(_) => break,
                }
                std::thread::sleep(every);
            }
            peak
        });
        PeakSampler { stop, thread }
    }

    /// The highest VmRSS seen, in bytes (0 if the process was gone from the start).
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_command_name() {
        let line = "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 \
                    9 0 123 456 789";
        assert_eq!(parse_stat_ticks(line).unwrap(), 325);
        assert!(parse_stat_ticks("4242 (cut) S 1 2").is_err());
        assert!(parse_stat_ticks("no name").is_err());
    }

    #[test]
    fn status_rss_and_hwm_in_bytes() {
        let text = "Name:\tkata-pulse\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        let m = parse_status(text).unwrap();
        assert_eq!((m.rss, m.hwm), (10 << 20, 20 << 20));
        assert!(parse_status("Name:\tx\nVmRSS:\t  lots kB\nVmHWM:\t1 kB\n").is_err());
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        let m = memory(pid).unwrap();
        assert!(m.rss > 0 && m.hwm >= m.rss);
        let before = cpu_time(pid).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(
            cpu_time(pid).unwrap() > before,
            "60 ms of spinning shows as CPU time"
        );
        let sampler = PeakSampler::start(pid, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(10));
        assert!(sampler.finish() > 0);
    }
}
