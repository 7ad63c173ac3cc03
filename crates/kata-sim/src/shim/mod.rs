//! A simulated shim monitor server (`shim-monitor.sock`).
//!
//! Behaves like the server the Go shim (`containerd-shim-kata-v2`) or the runtime-rs shim
//! runs for each sandbox: HTTP/1.1 on a unix socket, one task per connection, with the
//! routes, status codes, bodies, headers and framing of the chosen [`Flavour`]. Faults can
//! be switched at runtime through the [`ShimHandle`].

mod bodies;
mod pprof;
mod raw;
mod routes;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fault::{Fault, Truncation};
use crate::metrics::MetricsModel;

/// Which shim implementation to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// The Go runtime's `containerd-shim-kata-v2` (sandboxes under `/run/vc/sbs`).
    Go,
    /// The runtime-rs shim (sandboxes under `/run/kata`).
    RuntimeRs,
}

impl Flavour {
    /// Name used in events and on the command line: `go` or `runtime-rs`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Flavour::Go => "go",
            Flavour::RuntimeRs => "runtime-rs",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "go" => Ok(Flavour::Go),
            "rs" | "runtime-rs" | "rust" => Ok(Flavour::RuntimeRs),
            _ => Err(format!("unknown flavour `{s}` (go | runtime-rs)")),
        }
    }
}

/// How a simulated shim behaves.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    pub flavour: Flavour,
    /// Sandbox ID; defaults to the socket's directory name.
    pub sandbox_id: Option<String>,
    /// Serve `/debug/vars` and `/debug/pprof/*` (Go only, as with `enable_pprof = true`).
    pub pprof: bool,
    pub fault: Fault,
    /// Seed of the metric evolution and of derived identifiers (vsock CID ...).
    pub seed: u64,
    /// Body of `/agent-url`; defaults to `vsock://<cid>:1024` (Go, QEMU) or
    /// `hvsock://<sandbox dir>/root/kata.hvsock:1024` (runtime-rs, Dragonball).
    pub agent_url: Option<String>,
    /// A stopped clock: the sandbox started at this Unix time and every scrape sees this much
    /// time elapsed since, so a seed gives the same body on every machine (golden tests).
    /// `None`: the wall clock.
    pub fixed_clock: Option<(f64, Duration)>,
}

impl ShimOptions {
    pub fn new(flavour: Flavour) -> Self {
        ShimOptions {
            flavour,
            sandbox_id: None,
            pprof: false,
            fault: Fault::None,
            seed: 0,
            agent_url: None,
            fixed_clock: None,
        }
    }
    pub fn sandbox_id(mut self, id: impl Into<String>) -> Self {
        self.sandbox_id = Some(id.into());
        self
    }
    pub fn pprof(mut self, enabled: bool) -> Self {
        self.pprof = enabled;
        self
    }
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn agent_url(mut self, url: impl Into<String>) -> Self {
        self.agent_url = Some(url.into());
        self
    }
    /// Stops the clock: started at `start_unix`, `elapsed` ago at every scrape.
    pub fn fixed_clock(mut self, start_unix: f64, elapsed: Duration) -> Self {
        self.fixed_clock = Some((start_unix, elapsed));
        self
    }
}

/// State shared by the connection tasks of one shim.
pub(crate) struct Shared {
    pub flavour: Flavour,
    pub pprof: bool,
    pub sandbox_id: String,
    pub agent_url: String,
    pub fault: Mutex<Fault>,
    pub model: Mutex<MetricsModel>,
    pub started: Instant,
    /// Elapsed time every scrape sees, when the clock is stopped.
    pub fixed_elapsed: Option<Duration>,
    pub requests: AtomicU64,
    pub scrapes: AtomicU64,
}

impl Shared {
    pub fn fault(&self) -> Fault {
        self.fault.lock().map(|f| *f).unwrap_or_default()
    }

    /// Renders the next `/metrics` body, advancing the model to the current time.
    pub fn render_metrics(&self) -> String {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
        let elapsed = self.fixed_elapsed.unwrap_or_else(|| self.started.elapsed());
        match self.model.lock() {
            Ok(mut m) => m.render(elapsed),
            Err(poisoned) => poisoned.into_inner().render(elapsed),
        }
    }
}

struct Listening {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Longest pathname a unix socket address can hold (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Entry point for starting simulated shims.
pub struct ShimServer;

impl ShimServer {
    /// Creates the sandbox directory (0700) if needed and serves on `socket_path` (0600),
    /// unless the initial fault says there must be no listening socket.
    pub async fn start(socket_path: impl AsRef<Path>, opts: ShimOptions) -> Result<ShimHandle> {
        let path = socket_path.as_ref().to_path_buf();
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            anyhow::bail!(
                "socket path {} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of unix \
                 socket addresses; use a shorter sandbox root",
                path.display()
            );
        }
        let dir = path
            .parent()
            .with_context(|| format!("socket path {} has no parent", path.display()))?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating sandbox dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        let sandbox_id = opts.sandbox_id.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let agent_url = opts
            .agent_url
            .clone()
            .unwrap_or_else(|| match opts.flavour {
                // QEMU picks a random 32-bit context ID above the reserved ones.
                Flavour::Go => {
                    let cid = 3 + (splitmix(opts.seed ^ 0xc1d) % (u32::MAX as u64 - 3));
                    format!("vsock://{cid}:1024")
                }
                Flavour::RuntimeRs => format!("hvsock://{}/root/kata.hvsock:1024", dir.display()),
            });
        let started_unix = match opts.fixed_clock {
            Some((start, _)) => start,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        };
        let shared = Arc::new(Shared {
            flavour: opts.flavour,
            pprof: opts.pprof,
            sandbox_id,
            agent_url,
            fault: Mutex::new(opts.fault),
            model: Mutex::new(MetricsModel::new(opts.flavour, opts.seed, started_unix)),
            started: Instant::now(),
            fixed_elapsed: opts.fixed_clock.map(|(_, elapsed)| elapsed),
            requests: AtomicU64::new(0),
            scrapes: AtomicU64::new(0),
        });
        let handle = ShimHandle {
            shared,
            path,
            listening: tokio::sync::Mutex::new(None),
        };
        {
            let mut l = handle.listening.lock().await;
            handle.apply_socket_state(&mut l, opts.fault).await?;
        }
        Ok(handle)
    }
}

/// A running simulated shim. Dropping it stops serving and removes the socket file.
pub struct ShimHandle {
    shared: Arc<Shared>,
    path: PathBuf,
    listening: tokio::sync::Mutex<Option<Listening>>,
}

impl ShimHandle {
    pub fn socket_path(&self) -> &Path {
        &self.path
    }
    pub fn flavour(&self) -> Flavour {
        self.shared.flavour
    }
    pub fn sandbox_id(&self) -> &str {
        &self.shared.sandbox_id
    }
    pub fn agent_url(&self) -> &str {
        &self.shared.agent_url
    }
    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }
    /// HTTP requests received so far (all paths; not counting `accept-close` connections).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
    /// `/metrics` bodies rendered so far.
    pub fn scrapes(&self) -> u64 {
        self.shared.scrapes.load(Ordering::Relaxed)
    }

    /// Switches the fault mode. Socket-level changes (`missing-socket`, `stale-socket` and
    /// back) are in effect when this returns; open connections of a listener that is taken
    /// down are closed, like when a shim process dies.
    pub async fn set_fault(&self, fault: Fault) -> Result<()> {
        let mut l = self.listening.lock().await;
        if let Ok(mut f) = self.shared.fault.lock() {
            *f = fault;
        }
        self.apply_socket_state(&mut l, fault).await
    }

    /// Stops serving, closes open connections and removes the socket file.
    pub async fn stop(self) -> Result<()> {
        let mut l = self.listening.lock().await;
        if let Some(cur) = l.take() {
            let _ = cur.stop.send(true);
            let _ = cur.task.await;
        }
        remove_if_exists(&self.path)
    }

    async fn apply_socket_state(&self, l: &mut Option<Listening>, fault: Fault) -> Result<()> {
        if fault.listens() {
            if l.is_none() {
                *l = Some(self.bind()?);
            }
            return Ok(());
        }
        if let Some(cur) = l.take() {
            let _ = cur.stop.send(true);
            let _ = cur.task.await;
        }
        remove_if_exists(&self.path)?;
        if fault == Fault::StaleSocket {
            // Binding creates the socket file; dropping the listener leaves it behind with
            // nobody accepting, so connects fail with ECONNREFUSED.
            let listener = std::os::unix::net::UnixListener::bind(&self.path)
                .with_context(|| format!("binding {}", self.path.display()))?;
            drop(listener);
        }
        Ok(())
    }

    fn bind(&self) -> Result<Listening> {
        remove_if_exists(&self.path)?;
        let listener = UnixListener::bind(&self.path)
            .with_context(|| format!("binding {}", self.path.display()))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", self.path.display()))?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, self.shared.clone(), stop_rx));
        Ok(Listening { stop, task })
    }
}

impl Drop for ShimHandle {
    fn drop(&mut self) {
        if let Some(cur) = self.listening.get_mut().take() {
            let _ = cur.stop.send(true);
            cur.task.abort();
        }
        let _ = remove_if_exists(&self.path);
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Connections watch their own receivers; `wait_for` checks the current value first, so
    // a stop signalled before a connection task starts is not missed.
    let proto = stop.clone();
    loop {
        tokio::select! {
            _ = until_stopped(&mut stop) => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let conn_stop = proto.clone();
                    tokio::spawn(serve_connection(stream, shared.clone(), conn_stop));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn serve_connection(
    stream: UnixStream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let work = async {
        match shared.fault() {
            Fault::AcceptClose => drop(stream),
            Fault::Truncated(t) => raw::truncated_or_serve(stream, shared.clone(), t).await,
            _ => serve_http(stream, shared.clone()).await,
        }
    };
    tokio::select! {
        _ = work => {}
        _ = until_stopped(&mut stop) => {}
    }
}

/// Whether a truncation must cut a chunked body (which hyper cannot do mid-chunk).
pub(crate) fn chunked_truncation(flavour: Flavour, t: Truncation) -> bool {
    match t {
        Truncation::Chunked => true,
        Truncation::Length => false,
        Truncation::Auto => flavour == Flavour::Go,
    }
}

/// Serves HTTP/1.1 on `io` with hyper until the client goes away.
pub(crate) async fn serve_http<I>(io: I, shared: Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Go's net/http writes canonical header names; hyper 0.14 (runtime-rs) lowercase ones.
    let go = shared.flavour == Flavour::Go;
    let svc = service_fn(move |req| routes::handle(shared.clone(), req));
    let mut builder = http1::Builder::new();
    builder.title_case_headers(go);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).await {
        tracing::debug!(error = %e, "shim connection ended with an error");
    }
}

/// A well-mixed 64-bit value from a seed, for identifiers derived from a shim's seed.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
