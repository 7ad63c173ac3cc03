//! `kata-sim demo`: the kata-pulse agent against a small simulated node, for a person to
//! look at.
//!
//! The node has Go and runtime-rs sandboxes, one slow and one failing shim, and a simulated
//! container runtime ([`crate::runtime`]) that knows every sandbox as a pod with containers,
//! so the agent's output is what it is on a real Kata node: labelled `kata_*` series,
//! cAdvisor-compatible `container_*` series and a status page with pod names.
//! `--cri-endpoint` uses a real CRI runtime (e.g. a test containerd) instead.
//!
//! The agent binary is looked up next to kata-sim's own executable, which is where cargo
//! puts both (`target/release/`), so the demo needs no configuration.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::cri::CriOptions;
use crate::fault::{Fault, FaultSpec, SandboxSelector, DEFAULT_SLOW};
use crate::node::{Node, NodeOptions, SandboxInfo};
use crate::runtime::RuntimeServer;

/// Name of the agent binary.
pub const AGENT_BIN: &str = "kata-pulse";

/// Image the demo's containers report (the simulated runtime pulls nothing).
pub const DEMO_IMAGE: &str = "docker.io/library/nginx:1.27";
/// Containers of every demo pod.
pub const DEMO_CONTAINERS: &[&str] = &["app", "sidecar"];
/// Namespace/name of the healthy Go, healthy runtime-rs, slow and failing pods.
const GO_PODS: &[&str] = &["shop/web-frontend", "shop/cart", "payments/api"];
const RS_PODS: &[&str] = &["ml/inference", "ml/feature-store"];
const SLOW_POD: &str = "analytics/slow-report";
const FAILING_POD: &str = "batch/broken-exporter";

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
    /// Additional Go sandboxes whose shim answers `/metrics` with HTTP 500.
    pub failing: usize,
    pub seed: Option<u64>,
    /// A real CRI runtime to create the pods in; the simulated one when `None`.
    pub cri_endpoint: Option<String>,
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
            failing: 1,
            seed: None,
            cri_endpoint: None,
            agent_args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// `namespace/name` of the demo pod with creation index `i` (Go healthy, slow and failing
/// ones first, then runtime-rs, as the node creates them).
fn pod_names(opts: &DemoOptions) -> Vec<String> {
    let pick = |list: &[&str], k: usize| {
        let base = list[k % list.len()];
        match k / list.len() {
            0 => base.to_string(),
            n => format!("{base}-{}", n + 1),
        }
    };
    let mut names: Vec<String> = (0..opts.go).map(|k| pick(GO_PODS, k)).collect();
    names.extend((0..opts.slow).map(|k| pick(&[SLOW_POD], k)));
    names.extend((0..opts.failing).map(|k| pick(&[FAILING_POD], k)));
    names.extend((0..opts.rs).map(|k| pick(RS_PODS, k)));
    names
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

/// Refuses an address another process already listens on: the agent would fail to bind
/// while the other process answered the demo's readiness checks.
fn check_port_free(addr: &str) -> Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) => bail!(
            "cannot listen on {addr}: {e}; another process (an earlier demo, a kata-monitor?) \
             holds it: stop it, or pick another address with --listen 127.0.0.1:8091"
        ),
    }
}

/// Runs the demo until Ctrl-C / SIGTERM (`Ok`) or until the agent exits (an error).
pub async fn run(opts: DemoOptions) -> Result<()> {
    let agent = find_agent(opts.agent.as_deref())?;
    check_port_free(&opts.listen)?;
    let base = demo_dir()?;
    // Named like the real roots so the agent recognises which runtime each one is.
    let go_root = base.path().join("vc").join("sbs");
    let rs_root = base.path().join("kata");
    let seed = opts.seed.unwrap_or_else(rand::random);
    let runtime = match &opts.cri_endpoint {
        Some(_) => None,
        None => Some(RuntimeServer::start(&base.path().join("cri.sock"), seed).await?),
    };
    let endpoint = match (&opts.cri_endpoint, &runtime) {
        (Some(ep), _) => ep.clone(),
        (None, Some(rt)) => rt.endpoint(),
        (None, None) => unreachable!("a runtime is started when no endpoint is given"),
    };
    let cri = demo_cri(&opts, &endpoint, base.path(), runtime.is_some());
    let go_total = opts.go + opts.slow + opts.failing;
    let faults = demo_faults(&opts);
    let node = Node::start(NodeOptions {
        go_root: go_root.clone(),
        rs_root: rs_root.clone(),
        go: go_total,
        rs: opts.rs,
        faults,
        pprof: true,
        seed: Some(seed),
        cri: Some(cri),
        ..Default::default()
    })
    .await?;
    let sandboxes = node.list().await;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    let mut child = spawn_agent(&agent, &go_root, &rs_root, &opts, &endpoint)?;

    let outcome = tokio::select! {
        r = wait_until_ready(&opts.listen, opts.startup_timeout, &mut child, sandboxes.len()) => r,
        _ = sigint.recv() => Ok(false),
        _ = sigterm.recv() => Ok(false),
    };
    let result = match outcome {
        Err(e) => Err(e),
        Ok(false) => Ok(()),
        Ok(true) => {
            let banner = Banner {
                addr: &opts.listen,
                sandboxes: &sandboxes,
                base: base.path(),
                cri: &endpoint,
                simulated_cri: runtime.is_some(),
                pid: child.id(),
            };
            println!("{}", banner.render());
            // Scrape like a Prometheus would, so the status page stays current.
            let scraper = tokio::spawn(scrape_every(opts.listen.clone(), SCRAPE_EVERY));
            let stopped = tokio::select! {
                _ = sigint.recv() => { forward(&child, libc::SIGINT); Ok(()) }
                _ = sigterm.recv() => { forward(&child, libc::SIGTERM); Ok(()) }
                status = child.wait() => Err(anyhow!("{AGENT_BIN} exited: {}; the demo stops",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
            };
            scraper.abort();
            stopped
        }
    };
    stop_agent(&mut child).await;
    node.shutdown().await?;
    if let Some(rt) = runtime {
        rt.shutdown().await;
    }
    drop(base);
    result
}

/// The CRI side of the demo's node: pods in namespace `demo`, with the demo
/// containers when the runtime is the simulated one (which takes any image).
fn demo_cri(opts: &DemoOptions, endpoint: &str, base: &Path, simulated: bool) -> CriOptions {
    let mut cri = CriOptions::new(endpoint.to_string());
    cri.namespace = "demo".into();
    cri.pod_names = pod_names(opts);
    cri.call_timeout = Duration::from_secs(10);
    cri.log_root = Some(base.join("pod-logs"));
    if simulated {
        // A real runtime would need the image present; the simulated one takes any.
        cri.containers_per_pod = DEMO_CONTAINERS.len();
        cri.container_image = Some(DEMO_IMAGE.into());
        cri.container_names = DEMO_CONTAINERS.iter().map(|s| s.to_string()).collect();
    }
    cri
}

/// The slow Go shims after the healthy ones, then the failing ones.
fn demo_faults(opts: &DemoOptions) -> Vec<FaultSpec> {
    let mut faults: Vec<FaultSpec> = (0..opts.slow)
        .map(|k| FaultSpec {
            target: SandboxSelector::Index(opts.go + k),
            fault: Fault::Slow(DEFAULT_SLOW),
        })
        .collect();
    faults.extend((0..opts.failing).map(|k| FaultSpec {
        target: SandboxSelector::Index(opts.go + opts.slow + k),
        fault: Fault::Http500,
    }));
    faults
}

fn spawn_agent(
    agent: &Path,
    go_root: &Path,
    rs_root: &Path,
    opts: &DemoOptions,
    endpoint: &str,
) -> Result<tokio::process::Child> {
    Command::new(agent)
        .arg("--sandbox-dirs")
        .arg(format!("{},{}", go_root.display(), rs_root.display()))
        .arg("--listen-address")
        .arg(&opts.listen)
        .arg("--runtime-endpoint")
        .arg(endpoint)
        .args(&opts.agent_args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))
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

/// Waits until the agent serves: `/readyz` answers 200 and, for a few seconds at most,
/// until CRI labelled every sandbox (so the banner's first `curl` shows pod labels). The
/// agent process must be alive before and after: a dead agent is an error, never "up".
async fn wait_until_ready(
    addr: &str,
    limit: Duration,
    child: &mut Child,
    sandboxes: usize,
) -> Result<bool> {
    let start = Instant::now();
    let exited = |status: std::process::ExitStatus| {
        anyhow!("{AGENT_BIN} exited during startup ({status}); its message is above")
    };
    loop {
        if let Some(status) = child.try_wait().context("checking the agent process")? {
            return Err(exited(status));
        }
        if matches!(http_get(addr, "/readyz").await, Ok((200, _))) {
            break;
        }
        if start.elapsed() > limit {
            bail!("{AGENT_BIN} did not answer on {addr} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let labelled_by = Instant::now() + Duration::from_secs(5);
    while Instant::now() < labelled_by {
        if labelled(addr).await >= sandboxes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A first scrape, so the status page has results when it is first opened.
    let _ = http_get(addr, "/metrics").await;
    if let Some(status) = child.try_wait().context("checking the agent process")? {
        return Err(exited(status));
    }
    Ok(true)
}

/// How often the demo scrapes `/metrics` itself.
const SCRAPE_EVERY: Duration = Duration::from_secs(10);

async fn scrape_every(addr: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = http_get(&addr, "/metrics").await;
    }
}

/// Sandboxes the agent lists with CRI metadata.
async fn labelled(addr: &str) -> usize {
    let Ok((200, body)) = http_get_with(addr, "/sandboxes", Some("application/json")).await else {
        return 0;
    };
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .map(|a| {
            a.iter()
                .filter(|s| s["cri_metadata"].as_bool() == Some(true))
                .count()
        })
        .unwrap_or(0)
}

/// Status code of `GET path` on a TCP address.
pub async fn http_get_status(addr: &str, path: &str) -> Result<u16> {
    Ok(http_get(addr, path).await?.0)
}

/// Status and body of `GET path` on a TCP address.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, Bytes)> {
    http_get_with(addr, path, None).await
}

async fn http_get_with(addr: &str, path: &str, accept: Option<&str>) -> Result<(u16, Bytes)> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder().uri(path).header("Host", addr);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    })
    .await
    .context("request timed out")??;
    Ok(resp)
}

/// What the demo prints once the agent serves.
pub struct Banner<'a> {
    pub addr: &'a str,
    pub sandboxes: &'a [SandboxInfo],
    pub base: &'a Path,
    pub cri: &'a str,
    pub simulated_cri: bool,
    pub pid: Option<u32>,
}

impl Banner<'_> {
    /// What to look at, with commands ready to paste.
    pub fn render(&self) -> String {
        let url = format!("http://{}", self.addr);
        let mut s = String::new();
        let pid = self.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        s.push_str(&format!(
            "\n{AGENT_BIN} is up on {url}{pid}, watching {} simulated Kata sandboxes under {}\n",
            self.sandboxes.len(),
            self.base.display()
        ));
        if self.simulated_cri {
            s.push_str(&format!(
                "and asking a simulated CRI runtime ({}) which pod each one is.\n\n",
                self.cri
            ));
        } else {
            s.push_str(&format!(
                "and asking the CRI runtime at {} which pod each one is.\n\n",
                self.cri
            ));
        }
        s.push_str(&self.table());
        let example = self
            .sandboxes
            .iter()
            .find(|s| s.fault == Fault::None)
            .or_else(|| self.sandboxes.first())
            .map(|s| s.id.as_str())
            .unwrap_or("<sandbox-id>");
        let example_pod = self
            .sandboxes
            .iter()
            .find(|s| s.fault == Fault::None)
            .and_then(|s| s.pod.as_ref())
            .map(|p| p.name.as_str())
            .unwrap_or("web-frontend");
        s.push_str(&format!(
            "\nLook at:\n  \
{url}/sandboxes   the status page (in a browser): pod, runtime, last scrape per sandbox\n  \
                  (the demo scrapes /metrics every 10s, as a Prometheus would)\n  \
{url}/            every endpoint and query parameter\n\n\
Try:\n  \
curl -s {url}/metrics | grep 'cri_name=\"{example_pod}\"' | head   # shim series, labelled with the pod\n  \
curl -s '{url}/metrics?filter_family=container_memory_working_set' | grep -v '^#'   # cAdvisor-style: per container, and per pod (container=\"\")\n  \
curl -s '{url}/metrics?filter_family=kata_pulse_pod_host_'   # host cost of each pod: shim, hypervisor, virtiofsd\n  \
curl -s '{url}/metrics?filter_family=kata_pulse_shim_up'   # which shims answered\n  \
curl -s -H 'Accept: application/json' {url}/sandboxes\n  \
curl -s '{url}/metrics?sandbox={example}'   # one shim's body, unchanged\n"
        ));
        s.push_str(&self.bad_day());
        s.push_str(
            "\nPress Ctrl-C to stop (the agent and the simulated sandboxes are cleaned up).\n",
        );
        s
    }

    /// A line per sandbox: runtime, pod, id and its fault.
    fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("  {:<10} {:<28} sandbox\n", "runtime", "pod"));
        for sb in self.sandboxes {
            let pod = sb
                .pod
                .as_ref()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .unwrap_or_else(|| "-".into());
            let note = match &sb.fault {
                Fault::None => String::new(),
                Fault::Slow(d) => format!("  <- slow: answers after {d:?}"),
                Fault::Http500 => "  <- failing: its shim answers HTTP 500".to_string(),
                other => format!("  <- fault: {other}"),
            };
            s.push_str(&format!(
                "  {:<10} {:<28} {}…{note}\n",
                sb.layout.as_str(),
                pod,
                &sb.id[..12.min(sb.id.len())]
            ));
        }
        s
    }

    /// What is broken on purpose, and how to leave it out.
    fn bad_day(&self) -> String {
        let mut s = String::new();
        let slow = self.count(|f| matches!(f, Fault::Slow(_)));
        let failing = self.count(|f| *f == Fault::Http500);
        if slow + failing > 0 {
            s.push_str("\nOn purpose, like a real node's bad day:\n");
        }
        if slow > 0 {
            s.push_str(
                "  - the slow shim answers after 5s, beyond the agent's 3s --shim-timeout: a \
/metrics that has to ask it\n    waits 3s and reports it failed (kata_pulse_shim_up 0). \
Results are reused for 5s\n    (--metrics-interval-secs), so about every other scrape takes \
3s. Leave it out: --slow 0.\n",
            );
        }
        if failing > 0 {
            s.push_str(
                "  - the failing shim answers 500: its row on /sandboxes shows the error, its \
series are absent,\n    the rest of the node is served. Leave it out: --failing 0.\n",
            );
        }
        s
    }

    fn count(&self, f: impl Fn(&Fault) -> bool) -> usize {
        self.sandboxes.iter().filter(|s| f(&s.fault)).count()
    }
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

    #[test]
    fn pod_names_cover_every_sandbox() {
        let opts = DemoOptions {
            go: 4,
            ..Default::default()
        };
        let names = pod_names(&opts);
        assert_eq!(names.len(), 4 + 1 + 1 + 2);
        assert_eq!(names[0], "shop/web-frontend");
        assert_eq!(names[3], "shop/web-frontend-2");
        assert_eq!(names[4], SLOW_POD);
        assert_eq!(names[5], FAILING_POD);
        assert_eq!(names[6], "ml/inference");
    }

    #[test]
    fn a_taken_port_is_refused_before_starting() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let msg = check_port_free(&addr).unwrap_err().to_string();
        assert!(msg.contains(&addr) && msg.contains("--listen"), "{msg}");
    }

    #[tokio::test]
    async fn banner_lists_pods_faults_and_urls() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(NodeOptions {
            go_root: dir.path().join("vc/sbs"),
            rs_root: dir.path().join("kata"),
            go: 2,
            rs: 1,
            faults: vec![
                FaultSpec {
                    target: SandboxSelector::Index(0),
                    fault: Fault::Slow(DEFAULT_SLOW),
                },
                FaultSpec {
                    target: SandboxSelector::Index(1),
                    fault: Fault::Http500,
                },
            ],
            seed: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
        let l = node.list().await;
        let text = Banner {
            addr: "127.0.0.1:8090",
            sandboxes: &l,
            base: dir.path(),
            cri: "unix:///x/cri.sock",
            simulated_cri: true,
            pid: Some(42),
        }
        .render();
        assert!(text.contains("is up on http://127.0.0.1:8090 (pid 42)"));
        assert!(text.contains("simulated CRI runtime (unix:///x/cri.sock)"));
        assert!(text.contains("http://127.0.0.1:8090/sandboxes"));
        assert!(
            text.contains("curl -s -H 'Accept: application/json' http://127.0.0.1:8090/sandboxes")
        );
        assert!(text.contains("filter_family=container_memory_working_set"));
        assert!(text.contains(&format!("/metrics?sandbox={}'", l[2].id)));
        assert!(text.contains("slow: answers after 5s") && text.contains("--slow 0"));
        assert!(
            text.contains("failing: its shim answers HTTP 500") && text.contains("--failing 0")
        );
        node.shutdown().await.unwrap();
    }
}
