//! The agents under test: which binary, how it is told where the node is, and its process.
//!
//! Two kinds: kata-pulse of this repository (any revision: told the sandbox roots, CRI
//! endpoint and reuse window by flags) and the older Rust kata-pulse (DiverOfDark), which
//! reads the fixed roots `/run/vc/sbs` and `/run/kata`: it runs in a private mount
//! namespace (`unshare -m`) where those paths are bind mounts of the node's roots, so
//! both see the same sandboxes without touching the machine's `/run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};

use crate::client::{self, Ask};
use crate::sim::SimNode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// kata-pulse of this repository.
    Current,
    /// github.com/DiverOfDark/kata-pulse.
    Legacy,
}

/// `NAME=PATH` from the command line.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
}

impl AgentSpec {
    pub fn parse(s: &str, kind: Kind) -> Result<AgentSpec, String> {
        let (name, path) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=PATH"))?;
        if name.is_empty() || name.contains('|') {
            return Err(format!("{s:?}: the name must be non-empty, without '|'"));
        }
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!("{}: no such agent binary", path.display()));
        }
        Ok(AgentSpec {
            name: name.to_string(),
            path,
            kind,
        })
    }
}

/// A current-kind agent spec, for clap.
#[derive(Debug, Clone)]
pub struct CurrentArg(pub AgentSpec);
impl FromStr for CurrentArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AgentSpec::parse(s, Kind::Current).map(CurrentArg)
    }
}

/// A legacy-kind agent spec, for clap.
#[derive(Debug, Clone)]
pub struct LegacyArg(pub AgentSpec);
impl FromStr for LegacyArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AgentSpec::parse(s, Kind::Legacy).map(LegacyArg)
    }
}

/// The reuse window (current kind) or collection period (legacy kind) an agent runs with.
#[derive(Debug, Clone, Copy)]
pub struct Interval(pub u64);

/// A running agent; killed on drop.
pub struct Agent {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub kind: Kind,
    pub log: PathBuf,
}

/// Bind mounts for the legacy agent's fixed roots, then the agent itself (`exec`, so its
/// PID is the one measured).
const LEGACY_WRAPPER: &str = "mount -t tmpfs bench-run /run && mkdir -p /run/vc/sbs /run/kata \
&& mount --bind \"$1\" /run/vc/sbs && mount --bind \"$2\" /run/kata && shift 2 && exec \"$@\"";

impl Agent {
    pub fn start(
        spec: &AgentSpec,
        node: &SimNode,
        interval: Interval,
        log: &Path,
    ) -> Result<Agent> {
        let addr = free_addr()?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = match spec.kind {
            Kind::Current => {
                let mut c = Command::new(&spec.path);
                c.arg("--sandbox-dirs")
                    .arg(format!(
                        "go={},rs={}",
                        node.go_root.display(),
                        node.rs_root.display()
                    ))
                    .arg("--runtime-endpoint")
                    .arg(node.cri_endpoint())
                    .arg("--log-level")
                    .arg("warn");
                c
            }
            Kind::Legacy => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(LEGACY_WRAPPER)
                    .arg("sh")
                    .arg(&node.go_root)
                    .arg(&node.rs_root)
                    .arg(&spec.path)
                    .arg("--runtime-endpoint")
                    .arg(node.cri_endpoint().trim_start_matches("unix://"))
                    .arg("--log-level")
                    .arg("warn");
                c
            }
        };
        cmd.arg("--listen-address")
            .arg(addr.to_string())
            .arg("--metrics-interval-secs")
            .arg(interval.0.to_string())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", spec.path.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the agent exited at once"))?;
        Ok(Agent {
            child,
            pid,
            addr,
            kind: spec.kind,
            log: log.to_path_buf(),
        })
    }

    /// Waits until the agent answers HTTP, lists every sandbox it can see and has CRI
    /// metadata for each (its pod's UID in `/sandboxes`); returns how long that took.
    /// The legacy agent watches `/run/vc/sbs` alone: it is waited for on the Go ones.
    pub async fn wait_ready(&mut self, node: &SimNode, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        let want: Vec<(String, String)> = node
            .sandboxes()
            .await
            .into_iter()
            .filter(|s| self.sees(s.layout))
            .map(|s| (s.id, s.pod.map(|p| p.uid).unwrap_or_default()))
            .collect();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the agent exited ({status}) while starting; its log: {}",
                    tail(&self.log)
                );
            }
            let ask = Ask {
                accept: Some("application/json"),
                keep_body: true,
                ..Default::default()
            };
            if let Ok(f) = client::get(self.addr, "/sandboxes", ask).await {
                let body = f.body.unwrap_or_default();
                let text = String::from_utf8_lossy(&body);
                if f.status == 200
                    && want
                        .iter()
                        .all(|(id, uid)| text.contains(id.as_str()) && text.contains(uid.as_str()))
                {
                    return Ok(start.elapsed());
                }
            }
            if start.elapsed() > limit {
                bail!(
                    "the agent did not list and label all {} sandboxes within {limit:?}; log: {}",
                    want.len(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this agent discovers sandboxes of that runtime.
    pub fn sees(&self, layout: kata_sim::Flavour) -> bool {
        self.kind == Kind::Current || layout == kata_sim::Flavour::Go
    }

    /// SIGTERM, a few seconds to exit, then SIGKILL.
    pub async fn stop(mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the PID of our own child, not reaped yet.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
    }
}

/// A free local port (bound and released: the agent binds it right after).
fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// The last lines of an agent's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
