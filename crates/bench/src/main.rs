//! `kata-bench`: node agents (release builds, given by path) against a simulated Kata
//! node of N sandboxes, measured from outside as a node would see them: scrape wall
//! time, agent CPU and RSS from /proc, shim requests counted by the simulated shims,
//! discovery and label latency. Every agent runs against the same node in the same run,
//! so they are compared under the same machine noise. Markdown on stdout.

mod agent;
mod bench;
mod client;
mod gzip_ref;
mod latency;
mod machine;
mod procfs;
mod report;
mod scrape;
mod sim;
mod stats;
mod sustained;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::agent::{Agent, AgentSpec, CurrentArg, Interval, LegacyArg};
use crate::bench::Effort;
use crate::sim::SimNode;

#[derive(Parser)]
#[command(
    name = "kata-bench",
    about = "End-to-end benchmark of node agents against a simulated Kata node (kata-sim)",
    after_help = "Agents run one after the other against the same simulated node per size. \
                  Give release builds. Runs as root when a --legacy-agent is given (it needs \
                  a private mount namespace). docs/benchmarks.md describes every table."
)]
struct Cli {
    /// kata-pulse of this repository (any revision), as NAME=PATH; repeatable.
    #[arg(long = "agent", value_name = "NAME=PATH")]
    agents: Vec<CurrentArg>,
    /// The older Rust kata-pulse (github.com/DiverOfDark/kata-pulse), as NAME=PATH;
    /// run with its fixed /run/vc/sbs and /run/kata bind-mounted from the node.
    #[arg(long = "legacy-agent", value_name = "NAME=PATH")]
    legacy: Vec<LegacyArg>,
    /// Numbers of sandboxes, one simulated node each.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500,1000")]
    sizes: Vec<usize>,
    /// Share of runtime-rs shims, in percent; the rest are Go-runtime shims.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    rs_percent: u8,
    /// Sequential scrapes per measurement.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    repeats: u64,
    /// Rounds of concurrent scrapes per measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rounds: u64,
    /// Fresh agents per peak-RSS scenario (3 rounds of 4, and of 8, gzip scrapes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    peak_repeats: u64,
    /// Sandboxes added and removed per discovery-latency measurement.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    latency_repeats: u64,
    /// Length of the sustained run (2 gzip scrapes a second) per agent; 0s: none.
    #[arg(long, default_value = "0s", value_parser = kata_sim::fault::parse_duration)]
    sustained: Duration,
    /// Sandboxes of the sustained run.
    #[arg(long, default_value_t = 500)]
    sustained_size: usize,
    /// Seed of the simulated node (sandbox IDs, metric values).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the Markdown to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Keep the agents' logs in this folder (default: a temporary one, removed).
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kata-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let agents: Vec<AgentSpec> = cli
        .agents
        .iter()
        .map(|a| a.0.clone())
        .chain(cli.legacy.iter().map(|a| a.0.clone()))
        .collect();
    if agents.is_empty() {
        bail!("no agent to measure: give --agent NAME=PATH (or --legacy-agent)");
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let tmp_logs = tempfile::tempdir().context("creating a log folder")?;
    let logs = cli
        .logs
        .clone()
        .unwrap_or_else(|| tmp_logs.path().to_path_buf());
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let effort = Effort {
        repeats: cli.repeats as usize,
        rounds: cli.rounds as usize,
        peak_repeats: cli.peak_repeats as usize,
        latency_repeats: cli.latency_repeats as usize,
    };
    let machine = machine::describe();
    let noise_start = (machine::load(), machine::calibrate(5));
    let mut outcomes = Vec::new();
    for &n in &cli.sizes {
        eprintln!("kata-bench: starting a simulated node of {n} sandboxes");
        let node = SimNode::start(n, cli.rs_percent, cli.seed).await?;
        for spec in &agents {
            eprintln!("kata-bench: {} at N = {n}", spec.name);
            let o = bench::run(spec, &node, effort, &logs)
                .await
                .with_context(|| format!("{} at N = {n}", spec.name));
            match o {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    let _ = node.stop().await;
                    return Err(e);
                }
            }
        }
        node.stop().await?;
    }
    let mut sustained = Vec::new();
    if !cli.sustained.is_zero() {
        let n = cli.sustained_size;
        let node = SimNode::start(n, cli.rs_percent, cli.seed).await?;
        for spec in &agents {
            eprintln!(
                "kata-bench: {} sustained at N = {n} for {:?}",
                spec.name, cli.sustained
            );
            let log = logs.join(format!("{}-{n}-sustained.log", spec.name));
            let mut agent = Agent::start(spec, &node, Interval(5), &log)?;
            agent.wait_ready(&node, Duration::from_secs(180)).await?;
            if spec.kind == agent::Kind::Legacy {
                bench::wait_for_samples(&agent).await?;
            }
            let r = sustained::run(&agent, cli.sustained, 2.0, 15).await?;
            agent.stop().await;
            sustained.push((spec.name.clone(), n, cli.sustained, r));
        }
        node.stop().await?;
    }
    let noise_end = (machine::load(), machine::calibrate(5));
    let text = report::render(&report::Run {
        command: &command,
        machine: &machine,
        rs_percent: cli.rs_percent,
        noise: [noise_start, noise_end],
        outcomes: &outcomes,
        sustained: &sustained,
    });
    print!("{text}");
    if let Some(path) = &cli.out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
