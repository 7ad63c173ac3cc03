//! `kata-sim demo`: the kata-pulse agent against a small simulated node, for a person to
//! look at.
//!
//! The agent binary is looked up next to kata-sim's own executable, which is where cargo
//! puts both (`target/release/`), so the demo needs no configuration.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::fault::Fault;
use crate::node::{Node, NodeOptions, SandboxInfo};

/// Name of the agent binary.
pub const AGENT_BIN: &str = "kata-pulse";

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Agent listen address.
    pub listen: String,
    /// Agent binary; next to the current executable when `None`.
    pub agent: Option<PathBuf>,
    /// Healthy Go sandboxes.
    pub go: usize,
    /// Healthy runtime-rs sandboxes.
    pub rs: usize,
    /// Additional Go sandboxes answering after 5 s (beyond the agent's shim timeout).
    pub slow: usize,
    pub seed: Option<u64>,
    /// Extra arguments for the agent.
    pub agent_args: Vec<String>,
    /// How long to wait for the agent to answer HTTP.
    pub startup_timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            listen: "127.0.0.1:8090".to_string(),
            agent: None,
            go: 3,
            rs: 2,
            slow: 1,
            seed: None,
            agent_args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// Locates the agent binary: `explicit`, or `kata-pulse` in the directory of the running
/// executable.
pub fn find_agent(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("locating the kata-sim executable")?;
            let dir = exe
                .parent()
                .ok_or_else(|| anyhow!("kata-sim executable has no directory"))?;
            dir.join(AGENT_BIN)
        }
    };
    if !path.is_file() {
        bail!(
            "agent binary not found at {}: build both binaries first with \
             `cargo build --release` (kata-sim looks for {AGENT_BIN} next to itself), \
             or pass --agent PATH",
            path.display()
        );
    }
    Ok(path)
}

/// Runs the demo until Ctrl-C / SIGTERM or until the agent exits.
pub async fn run(opts: DemoOptions) -> Result<()> {
    let agent = find_agent(opts.agent.as_deref())?;
    let base = demo_dir()?;
    // Named like the real roots so the agent recognises which runtime each one is.
    let go_root = base.path().join("vc").join("sbs");
    let rs_root = base.path().join("kata");
    let no_cri = base.path().join("no-cri.sock");
    let slow = opts.slow;
    let node = Node::start(NodeOptions {
        go_root: go_root.clone(),
        rs_root: rs_root.clone(),
        go: opts.go + slow,
        rs: opts.rs,
        faults: (0..slow)
            .map(|k| crate::fault::FaultSpec {
                target: crate::fault::SandboxSelector::Index(opts.go + k),
                fault: Fault::Slow(crate::fault::DEFAULT_SLOW),
            })
            .collect(),
        pprof: true,
        seed: opts.seed,
        ..Default::default()
    })
    .await?;
    let sandboxes = node.list().await;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    let mut child = Command::new(&agent)
        .arg("--sandbox-dirs")
        .arg(format!("{},{}", go_root.display(), rs_root.display()))
        .arg("--listen-address")
        .arg(&opts.listen)
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", no_cri.display()))
        .args(&opts.agent_args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;

    let outcome = tokio::select! {
        r = wait_until_answering(&opts.listen, opts.startup_timeout, &mut child) => r,
        _ = sigint.recv() => Ok(false),
        _ = sigterm.recv() => Ok(false),
    };
    let result = match outcome {
        Err(e) => Err(e),
        Ok(false) => Ok(()),
        Ok(true) => {
            println!("{}", instructions(&opts.listen, &sandboxes, base.path()));
            tokio::select! {
                _ = sigint.recv() => { forward(&child, libc::SIGINT); Ok(()) }
                _ = sigterm.recv() => { forward(&child, libc::SIGTERM); Ok(()) }
                status = child.wait() => Err(anyhow!("{AGENT_BIN} exited: {}",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
            }
        }
    };
    stop_agent(&mut child).await;
    node.shutdown().await?;
    drop(base);
    result
}

/// A temporary directory short enough for `<dir>/vc/sbs/<64 hex>/shim-monitor.sock` to fit
/// in a unix socket address; falls back to `/tmp` when `TMPDIR` is too long.
fn demo_dir() -> Result<tempfile::TempDir> {
    // "/vc/sbs/" + 64-hex ID + "/shim-monitor.sock", plus the 9 characters of the name.
    let needed = 8 + 64 + 18 + 9;
    let mut parent = std::env::temp_dir();
    if parent.as_os_str().len() + needed > crate::shim::MAX_SOCKET_PATH {
        parent = PathBuf::from("/tmp");
    }
    tempfile::Builder::new()
        .prefix("ksim-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a demo directory in {}", parent.display()))
}

fn forward(child: &Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// Gives the agent a few seconds to exit after a signal, then kills it.
async fn stop_agent(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    forward(child, libc::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Polls `GET /` until the agent answers anything over HTTP.
async fn wait_until_answering(addr: &str, limit: Duration, child: &mut Child) -> Result<bool> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("checking the agent process")? {
            bail!("{AGENT_BIN} exited during startup: {status}");
        }
        if http_get_status(addr, "/").await.is_ok() {
            return Ok(true);
        }
        if start.elapsed() > limit {
            bail!("{AGENT_BIN} did not answer on {addr} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Status code of `GET path` on a TCP address.
pub async fn http_get_status(addr: &str, path: &str) -> Result<u16> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .uri(path)
        .header("Host", addr)
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .context("request timed out")??;
    Ok(resp.status().as_u16())
}

/// What to look at, with commands ready to paste.
pub fn instructions(addr: &str, sandboxes: &[SandboxInfo], base: &Path) -> String {
    let url = format!("http://{addr}");
    let mut s = String::new();
    s.push_str(&format!(
        "\n{AGENT_BIN} is up on {url}, watching {} simulated sandboxes under {}:\n",
        sandboxes.len(),
        base.display()
    ));
    for sb in sandboxes {
        let note = if sb.fault == Fault::None {
            String::new()
        } else {
            format!("  [{}]", sb.fault)
        };
        s.push_str(&format!("  {:<10} {}{note}\n", sb.layout.as_str(), sb.id));
    }
    let example = sandboxes
        .iter()
        .find(|s| s.fault == Fault::None)
        .or_else(|| sandboxes.first())
        .map(|s| s.id.as_str())
        .unwrap_or("<sandbox-id>");
    s.push_str(&format!(
        "\nTry:\n  curl -s {url}/metrics | less\n  curl -s {url}/sandboxes\n  \
curl -s -H 'Accept: application/json' {url}/sandboxes\n  \
curl -s '{url}/metrics?sandbox={example}'\n\nPress Ctrl-C to stop (the agent and the \
simulated sandboxes are cleaned up).\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_agent_says_how_to_build() {
        let e = find_agent(Some(Path::new("/nonexistent/kata-pulse"))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("cargo build --release"), "{msg}");
        assert!(msg.contains("/nonexistent/kata-pulse"));
    }

    #[tokio::test]
    async fn instructions_list_urls() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(NodeOptions {
            go_root: dir.path().join("vc/sbs"),
            rs_root: dir.path().join("kata"),
            go: 1,
            rs: 1,
            seed: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
        let l = node.list().await;
        let text = instructions("127.0.0.1:8090", &l, dir.path());
        assert!(text.contains("curl -s http://127.0.0.1:8090/metrics"));
        assert!(
            text.contains("curl -s -H 'Accept: application/json' http://127.0.0.1:8090/sandboxes")
        );
        assert!(text.contains(&format!("/metrics?sandbox={}'", l[0].id)));
        node.shutdown().await.unwrap();
    }
}
