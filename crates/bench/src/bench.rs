//! One agent against one simulated node: the phases, each with an agent process of its
//! own where its memory must not carry over from an earlier phase.
//!
//! - cached: a long reuse window (every result reused after a first scrape): idle RSS,
//!   sequential and 8-wide scrapes with and without gzip, steady RSS, the gzip -1
//!   comparison, discovery latency;
//! - fresh: a 1 s window and pauses longer than it, so every round asks every shim; then
//!   the single-flight check (10 scrapes at once, one request per shim) against an agent
//!   with the default 5 s window;
//! - peak: fresh agents with the default window, 3 rounds of 4 (then 8) concurrent gzip
//!   scrapes, VmHWM of each.
//!
//! The legacy agent collects in the background on its own period and serves from that
//! cache, so it has no fresh phase.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent::{Agent, AgentSpec, Interval, Kind};
use crate::gzip_ref;
use crate::latency::{self, Latencies};
use crate::procfs::{self, PeakSampler};
use crate::scrape::{self, Plan, Series, SingleFlight};
use crate::sim::SimNode;
use crate::stats::Summary;

/// How much of everything.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    /// Sequential scrapes per measurement, and rounds of concurrent ones.
    pub repeats: usize,
    pub rounds: usize,
    /// Fresh agents per peak scenario.
    pub peak_repeats: usize,
    pub latency_repeats: usize,
}

/// A reuse window no run reaches: every result after the first is reused.
const LONG_WINDOW: Interval = Interval(3600);
/// The shortest window the agent takes; pauses longer than it make every scrape fresh.
const SHORT_WINDOW: Interval = Interval(1);
const FRESH_PAUSE: Duration = Duration::from_millis(1150);
/// The agent's default window, as the chart deploys it.
const DEFAULT_WINDOW: Interval = Interval(5);
/// The legacy agent's collection period: short enough to fill its cache soon after start.
const LEGACY_PERIOD: Interval = Interval(10);
/// Longest an agent may take to list and label the node.
const READY_LIMIT: Duration = Duration::from_secs(180);

/// One row of the scrape table.
#[derive(Debug, Clone)]
pub struct Row {
    pub fresh: bool,
    pub gzip: bool,
    pub width: usize,
    pub series: Series,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub agent: String,
    pub n: usize,
    /// Sandboxes this agent can see (the legacy one ignores runtime-rs).
    pub visible: usize,
    pub startup: Duration,
    pub samples: usize,
    pub body_bytes: usize,
    pub idle_rss: u64,
    /// VmRSS after each scrape of the cached sequential phases.
    pub steady_rss: Summary,
    /// Highest VmRSS sampled over the cached phase.
    pub cached_peak: u64,
    pub rows: Vec<Row>,
    /// (width, VmHWM of 3 rounds of `width` concurrent gzip scrapes, per fresh agent).
    pub peaks: Vec<(usize, Summary)>,
    pub single_flight: Option<SingleFlight>,
    /// gzip -1 CPU on the uncompressed body, in ms.
    pub gzip_one: Option<Summary>,
    pub latency: Option<Latencies>,
}

impl Outcome {
    pub fn row(&self, fresh: bool, gzip: bool, width: usize) -> Option<&Series> {
        self.rows
            .iter()
            .find(|r| r.fresh == fresh && r.gzip == gzip && r.width == width)
            .map(|r| &r.series)
    }
}

pub async fn run(spec: &AgentSpec, node: &SimNode, effort: Effort, logs: &Path) -> Result<Outcome> {
    let sandboxes = node.sandboxes().await;
    let mut out = Outcome {
        agent: spec.name.clone(),
        n: sandboxes.len(),
        ..Default::default()
    };
    let n = out.n;
    let log = |phase: &str| logs.join(format!("{}-{n}-{phase}.log", spec.name));
    let cached_window = match spec.kind {
        Kind::Current => LONG_WINDOW,
        Kind::Legacy => LEGACY_PERIOD,
    };
    cached(spec, node, effort, cached_window, &log("cached"), &mut out)
        .await
        .context("cached phase")?;
    if spec.kind == Kind::Current {
        fresh(spec, node, effort, &log("fresh"), &mut out)
            .await
            .context("fresh phase")?;
    }
    let peak_window = match spec.kind {
        Kind::Current => DEFAULT_WINDOW,
        Kind::Legacy => LEGACY_PERIOD,
    };
    for width in [4, 8] {
        let mut hwms = Vec::new();
        for k in 0..effort.peak_repeats {
            let mut agent =
                Agent::start(spec, node, peak_window, &log(&format!("peak{width}-{k}")))?;
            agent.wait_ready(node, READY_LIMIT).await?;
            if spec.kind == Kind::Legacy {
                wait_for_samples(&agent).await?;
            }
            let plan = Plan {
                gzip: true,
                width,
                rounds: 3,
                pause: Duration::ZERO,
            };
            scrape::run(&agent, node, plan)
                .await
                .with_context(|| format!("3 rounds of {width} gzip scrapes"))?;
            hwms.push(procfs::memory(agent.pid)?.hwm as f64);
            agent.stop().await;
        }
        out.peaks.push((width, Summary::of(&hwms)));
    }
    Ok(out)
}

async fn cached(
    spec: &AgentSpec,
    node: &SimNode,
    effort: Effort,
    window: Interval,
    log: &Path,
    out: &mut Outcome,
) -> Result<()> {
    let mut agent = Agent::start(spec, node, window, log)?;
    out.startup = agent.wait_ready(node, READY_LIMIT).await?;
    out.visible = node
        .sandboxes()
        .await
        .iter()
        .filter(|s| agent.sees(s.layout))
        .count();
    out.idle_rss = procfs::memory(agent.pid)?.rss;
    if spec.kind == Kind::Legacy {
        // It serves what its background collection gathered: wait for a first one.
        wait_for_samples(&agent).await?;
    }
    let body = scrape::body(&agent).await?;
    out.samples = scrape::samples(&body);
    out.body_bytes = body.len();
    out.gzip_one = Some(gzip_ref::cpu_ms(&body, effort.repeats.min(5))?);
    drop(body);
    let sampler = PeakSampler::start(agent.pid, Duration::from_millis(2));
    let mut steady = Vec::new();
    for gzip in [false, true] {
        let plan = Plan {
            gzip,
            width: 1,
            rounds: effort.repeats,
            // Steady RSS is read between scrapes, once the previous one is done.
            pause: Duration::from_millis(100),
        };
        let s = scrape::run(&agent, node, plan).await?;
        steady.push(s.rss_after.median);
        out.rows.push(Row {
            fresh: false,
            gzip,
            width: 1,
            series: s,
        });
    }
    for gzip in [false, true] {
        let plan = Plan {
            gzip,
            width: 8,
            rounds: effort.rounds,
            pause: Duration::from_millis(100),
        };
        let s = scrape::run(&agent, node, plan).await?;
        out.rows.push(Row {
            fresh: false,
            gzip,
            width: 8,
            series: s,
        });
    }
    out.cached_peak = sampler.finish();
    out.steady_rss = Summary::of(&steady);
    out.latency = Some(latency::measure(&agent, node, effort.latency_repeats).await?);
    agent.stop().await;
    Ok(())
}

async fn fresh(
    spec: &AgentSpec,
    node: &SimNode,
    effort: Effort,
    log: &Path,
    out: &mut Outcome,
) -> Result<()> {
    let mut agent = Agent::start(spec, node, SHORT_WINDOW, log)?;
    agent.wait_ready(node, READY_LIMIT).await?;
    for (gzip, width, rounds) in [
        (false, 1, effort.repeats),
        (true, 1, effort.repeats),
        (false, 8, effort.rounds),
        (true, 8, effort.rounds),
    ] {
        let plan = Plan {
            gzip,
            width,
            rounds,
            pause: FRESH_PAUSE,
        };
        let s = scrape::run(&agent, node, plan).await?;
        out.rows.push(Row {
            fresh: true,
            gzip,
            width,
            series: s,
        });
    }
    agent.stop().await;
    // Against the default window: "one request per shim per reuse window" with rounds
    // that may take longer than the 1 s window of the fresh phase.
    let mut agent = Agent::start(
        spec,
        node,
        DEFAULT_WINDOW,
        &log.with_extension("flight.log"),
    )?;
    agent.wait_ready(node, READY_LIMIT).await?;
    let pause = Duration::from_secs(DEFAULT_WINDOW.0) + Duration::from_millis(200);
    out.single_flight = Some(scrape::single_flight(&agent, node, 10, effort.rounds, pause).await?);
    agent.stop().await;
    Ok(())
}

/// Until the legacy agent's `/metrics` has samples (a first collection ran). What it
/// serves later may vary: it serves its cache while a collection refills it.
pub async fn wait_for_samples(agent: &Agent) -> Result<()> {
    let limit = std::time::Instant::now() + READY_LIMIT;
    loop {
        if let Ok(body) = scrape::body(agent).await {
            if scrape::samples(&body) > 0 {
                return Ok(());
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < limit,
            "no samples on /metrics within {READY_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
