//! Sustained load: gzip scrapes at a steady rate for minutes, RSS sampled along the way,
//! for memory that only grows under a steady load (allocator arenas, caches).

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::agent::Agent;
use crate::client::{self, Ask};
use crate::procfs;

#[derive(Debug, Clone, Default)]
pub struct Sustained {
    /// (seconds since the start, VmRSS in bytes).
    pub rss: Vec<(u64, u64)>,
    pub hwm: u64,
    pub scrapes: u64,
    pub failed: u64,
    /// Agent CPU over the whole run per scrape, in ms.
    pub cpu_per_scrape: f64,
}

/// `per_sec` scrapes a second for `length`, one at a time (a scrape slower than the
/// period delays the next rather than piling up), RSS sampled `points` times.
pub async fn run(agent: &Agent, length: Duration, per_sec: f64, points: u32) -> Result<Sustained> {
    let period = Duration::from_secs_f64(1.0 / per_sec);
    let every = length / points.max(1);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let cpu_before = procfs::cpu_time(agent.pid)?;
    let mut out = Sustained {
        rss: vec![(0, procfs::memory(agent.pid)?.rss)],
        ..Default::default()
    };
    let mut next_sample = every;
    while start.elapsed() < length {
        tick.tick().await;
        let ask = Ask {
            gzip: true,
            ..Default::default()
        };
        match client::get(agent.addr, "/metrics", ask).await {
            Ok(f) if f.status == 200 => out.scrapes += 1,
            _ => out.failed += 1,
        }
        if start.elapsed() >= next_sample {
            out.rss
                .push((start.elapsed().as_secs(), procfs::memory(agent.pid)?.rss));
            next_sample += every;
        }
    }
    let cpu = procfs::cpu_time(agent.pid)?.saturating_sub(cpu_before);
    out.cpu_per_scrape = cpu.as_secs_f64() * 1e3 / out.scrapes.max(1) as f64;
    out.hwm = procfs::memory(agent.pid)?.hwm;
    Ok(out)
}
