//! The machine a run was made on, and how noisy it was: the same fixed piece of work
//! timed at the start and at the end of the run, next to the load average.

use std::time::{Duration, Instant};

use crate::stats::Summary;

#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cores: usize,
    pub model: String,
    pub kernel: String,
    pub memory_gib: f64,
}

pub fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        memory_gib: mem_kib / (1024.0 * 1024.0),
    }
}

/// The 1-minute load average.
pub fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Wall time of a fixed amount of integer work, repeated: its spread is the share of a
/// core other processes took from a single-threaded task during the run.
pub fn calibrate(repeats: usize) -> Summary {
    let runs: Vec<Duration> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..20_000_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            std::hint::black_box(x);
            start.elapsed()
        })
        .collect();
    Summary::of_millis(&runs)
}
