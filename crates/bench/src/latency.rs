//! How fast an agent follows the node: a sandbox created (its pod in CRI, then its folder
//! and socket, as Kata does it) until listed in `/sandboxes`, until its pod's UID is there
//! (labelled from CRI), and removed until gone.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kata_sim::Flavour;

use crate::agent::Agent;
use crate::client::{self, Ask};
use crate::sim::SimNode;
use crate::stats::Summary;

/// How often `/sandboxes` is polled: the resolution of the latencies.
const POLL: Duration = Duration::from_millis(10);
/// Longest wait for one change: far above the 1 s target, short enough to end a run.
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub listed: Summary,
    pub labelled: Summary,
    pub gone: Summary,
}

pub async fn measure(agent: &Agent, node: &SimNode, repeats: usize) -> Result<Latencies> {
    let (mut listed, mut labelled, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..repeats {
        let layout = if k % 2 == 1 && agent.sees(Flavour::RuntimeRs) {
            Flavour::RuntimeRs
        } else {
            Flavour::Go
        };
        let sb = node.add(layout).await?;
        let uid = sb.pod.as_ref().map(|p| p.uid.clone()).unwrap_or_default();
        let start = Instant::now();
        listed.push(wait(agent, None, |t| t.contains(&sb.id), start).await?);
        labelled.push(
            wait(
                agent,
                Some("application/json"),
                |t| t.contains(&sb.id) && t.contains(&uid),
                start,
            )
            .await?,
        );
        node.remove(&sb.id).await?;
        let start = Instant::now();
        gone.push(wait(agent, None, |t| !t.contains(&sb.id), start).await?);
    }
    Ok(Latencies {
        listed: Summary::of_millis(&listed),
        labelled: Summary::of_millis(&labelled),
        gone: Summary::of_millis(&gone),
    })
}

/// Time since `start` until `/sandboxes` satisfies `done`.
async fn wait(
    agent: &Agent,
    accept: Option<&str>,
    done: impl Fn(&str) -> bool,
    start: Instant,
) -> Result<Duration> {
    loop {
        let ask = Ask {
            accept,
            keep_body: true,
            ..Default::default()
        };
        if let Ok(f) = client::get(agent.addr, "/sandboxes", ask).await {
            let body = f.body.unwrap_or_default();
            if f.status == 200 && done(&String::from_utf8_lossy(&body)) {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > LIMIT {
            bail!("/sandboxes did not follow the change within {LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
