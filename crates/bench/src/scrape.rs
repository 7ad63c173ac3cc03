//! Scrapes of `/metrics` as Prometheus does them, one at a time or several at once, with
//! what each cost the agent (CPU from /proc) and the shims (requests counted by kata-sim).

use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use futures_util::future::join_all;

use crate::agent::Agent;
use crate::client::{self, Ask};
use crate::procfs;
use crate::sim::SimNode;
use crate::stats::Summary;

/// How a series of scrapes is run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub gzip: bool,
    /// Scrapers sending at the same time.
    pub width: usize,
    /// Rounds (of `width` scrapes each).
    pub rounds: usize,
    /// Pause before each round: longer than the agent's reuse window makes every
    /// round a fresh one (each shim asked again).
    pub pause: Duration,
}

/// What a series of scrapes measured.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Wall time of every scrape, in ms.
    pub wall: Summary,
    /// Agent CPU per scrape of each round (the round's CPU over its width), in ms.
    pub cpu: Summary,
    /// Requests the shims got per scrape.
    pub shim_requests: f64,
    /// Bytes of one response as sent (compressed when gzip was served).
    pub bytes: usize,
    /// `Content-Encoding` the agent answered with.
    pub encoding: String,
    /// VmRSS right after each round, in bytes.
    pub rss_after: Summary,
}

pub async fn run(agent: &Agent, node: &SimNode, plan: Plan) -> Result<Series> {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut rss = Vec::new();
    let mut requests = 0u64;
    let (mut bytes, mut encoding) = (0, String::new());
    for _ in 0..plan.rounds {
        tokio::time::sleep(plan.pause).await;
        let before_req = node.shim_requests().await;
        let before_cpu = procfs::cpu_time(agent.pid)?;
        let round = join_all((0..plan.width).map(|_| scrape(agent, plan.gzip))).await;
        let cpu = procfs::cpu_time(agent.pid)?.saturating_sub(before_cpu);
        requests += node.requests_since(&before_req).await;
        cpus.push(cpu.as_secs_f64() * 1e3 / plan.width as f64);
        rss.push(procfs::memory(agent.pid)?.rss as f64);
        for r in round {
            let f = r?;
            walls.push(f.wall);
            bytes = f.bytes;
            encoding = f.encoding;
        }
    }
    let scrapes = (plan.rounds * plan.width).max(1);
    Ok(Series {
        wall: Summary::of_millis(&walls),
        cpu: Summary::of(&cpus),
        shim_requests: requests as f64 / scrapes as f64,
        bytes,
        encoding,
        rss_after: Summary::of(&rss),
    })
}

async fn scrape(agent: &Agent, gzip: bool) -> Result<client::Fetched> {
    let f = client::get(
        agent.addr,
        "/metrics",
        Ask {
            gzip,
            ..Default::default()
        },
    )
    .await?;
    ensure!(f.status == 200, "/metrics answered {}", f.status);
    Ok(f)
}

/// One uncompressed scrape, kept: the body the gzip comparison compresses, and its size.
pub async fn body(agent: &Agent) -> Result<Bytes> {
    let f = client::get(
        agent.addr,
        "/metrics",
        Ask {
            keep_body: true,
            ..Default::default()
        },
    )
    .await?;
    ensure!(f.status == 200, "/metrics answered {}", f.status);
    Ok(f.body.unwrap_or_default())
}

/// Samples (lines that are not comments or blank) of an exposition.
pub fn samples(body: &[u8]) -> usize {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .count()
}

/// `width` fresh scrapes at once, `rounds` times: how many requests each shim got per
/// round (the agent should ask each exactly once) and how the slowest scrape of a round
/// compares with one fresh scrape alone.
#[derive(Debug, Clone, Default)]
pub struct SingleFlight {
    pub width: usize,
    /// Fewest and most requests one shim got in one round.
    pub per_shim_min: u64,
    pub per_shim_max: u64,
    /// Slowest scrape of each round, in ms.
    pub slowest: Summary,
    /// The agent's reuse window.
    pub window: Duration,
}

pub async fn single_flight(
    agent: &Agent,
    node: &SimNode,
    width: usize,
    rounds: usize,
    pause: Duration,
) -> Result<SingleFlight> {
    let (mut lo, mut hi) = (u64::MAX, 0);
    let mut slowest = Vec::new();
    for _ in 0..rounds {
        tokio::time::sleep(pause).await;
        let before = node.shim_requests().await;
        let round = join_all((0..width).map(|_| scrape(agent, true))).await;
        let after = node.shim_requests().await;
        let mut worst = Duration::ZERO;
        for r in round {
            worst = worst.max(r?.wall);
        }
        slowest.push(worst);
        for (id, n) in &after {
            let asked = n.saturating_sub(before.get(id).copied().unwrap_or(0));
            lo = lo.min(asked);
            hi = hi.max(asked);
        }
    }
    Ok(SingleFlight {
        width,
        per_shim_min: if lo == u64::MAX { 0 } else { lo },
        per_shim_max: hi,
        slowest: Summary::of_millis(&slowest),
        window: pause.saturating_sub(Duration::from_millis(200)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_skip_comments_and_blank_lines() {
        let body = b"# HELP a x\n# TYPE a gauge\na 1\na{b=\"c\"} 2\n\nb_total 3\n";
        assert_eq!(samples(body), 3);
        assert_eq!(samples(b""), 0);
    }
}
