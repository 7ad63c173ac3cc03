//! A simulated node: many sandboxes under the Go and runtime-rs roots.
//!
//! Sandboxes are added and removed the way Kata does it (`<root>/<id>/shim-monitor.sock`,
//! directory removed at once on teardown), optionally churned at a steady rate, and every
//! change is published as an [`Event`] so a test can follow along.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, Mutex};
use tokio::task::JoinHandle;

use crate::cri::{CriOptions, CriPods};
use crate::event::Event;
use crate::fault::{Fault, FaultSpec, SandboxSelector};
use crate::shim::{Flavour, ShimHandle, ShimOptions, ShimServer};
use crate::{ids, GO_ROOT, RS_ROOT, SOCKET_NAME};

/// CRI identity of the pod behind a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
}

/// Public description of one simulated sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    pub id: String,
    /// Creation order on this node, from 0; initial sandboxes are Go ones first.
    pub index: usize,
    pub layout: Flavour,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub fault: Fault,
    pub pod: Option<PodInfo>,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Root of Go-runtime sandboxes (default `/run/vc/sbs`).
    pub go_root: PathBuf,
    /// Root of runtime-rs sandboxes (default `/run/kata`).
    pub rs_root: PathBuf,
    /// Initial number of Go sandboxes.
    pub go: usize,
    /// Initial number of runtime-rs sandboxes.
    pub rs: usize,
    /// Faults of initial sandboxes; such sandboxes are never churned.
    pub faults: Vec<FaultSpec>,
    /// Sandboxes replaced per minute (one removed, one of the same layout added); 0 = off.
    pub churn_per_min: f64,
    /// Enable pprof on Go shims.
    pub pprof: bool,
    /// Seed of everything random (IDs, metric evolution); random when `None`.
    pub seed: Option<u64>,
    /// Back every sandbox by a real CRI pod.
    pub cri: Option<CriOptions>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            go_root: PathBuf::from(GO_ROOT),
            rs_root: PathBuf::from(RS_ROOT),
            go: 0,
            rs: 0,
            faults: Vec::new(),
            churn_per_min: 0.0,
            pprof: false,
            seed: None,
            cri: None,
        }
    }
}

struct Entry {
    info: SandboxInfo,
    shim: ShimHandle,
    /// Explicitly faulted sandboxes stay put so tests can rely on them.
    pinned: bool,
}

struct Inner {
    go_root: PathBuf,
    rs_root: PathBuf,
    pprof: bool,
    seed: u64,
    rng: StdMutex<StdRng>,
    next_index: AtomicUsize,
    sandboxes: Mutex<BTreeMap<usize, Entry>>,
    events: broadcast::Sender<Event>,
    first_rx: StdMutex<Option<broadcast::Receiver<Event>>>,
    cri: Option<CriPods>,
}

/// A running simulated node. Dropping it removes its sandboxes (and CRI pods) as far as
/// possible without awaiting; prefer [`Node::shutdown`].
pub struct Node {
    inner: Arc<Inner>,
    churn: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts the initial sandboxes, applies the faults, emits `added` events and `ready`.
    pub async fn start(opts: NodeOptions) -> Result<Node> {
        let seed = opts.seed.unwrap_or_else(rand::random);
        let total = opts.go + opts.rs;
        let (events, first_rx) = broadcast::channel(4096.max(total * 4));
        let cri = opts.cri.clone().map(CriPods::connect).transpose()?;
        let inner = Arc::new(Inner {
            go_root: opts.go_root.clone(),
            rs_root: opts.rs_root.clone(),
            pprof: opts.pprof,
            seed,
            rng: StdMutex::new(StdRng::seed_from_u64(seed)),
            next_index: AtomicUsize::new(0),
            sandboxes: Mutex::new(BTreeMap::new()),
            events,
            first_rx: StdMutex::new(Some(first_rx)),
            cri,
        });
        let mut node = Node { inner, churn: None };
        for spec in &opts.faults {
            if let SandboxSelector::Index(i) = spec.target {
                if i >= total {
                    bail!("--fault {i}: there are only {total} initial sandboxes (0..{total})");
                }
            }
        }
        for i in 0..total {
            let layout = if i < opts.go {
                Flavour::Go
            } else {
                Flavour::RuntimeRs
            };
            let fault = opts
                .faults
                .iter()
                .rev()
                .find(|s| s.target == SandboxSelector::Index(i))
                .map(|s| s.fault);
            let r = node
                .inner
                .add(layout, fault.unwrap_or_default(), fault.is_some())
                .await;
            if let Err(e) = r {
                node.shutdown_ref().await;
                return Err(e.context(format!("starting sandbox #{i}")));
            }
        }
        for spec in &opts.faults {
            if let SandboxSelector::Id(id) = &spec.target {
                if let Err(e) = node.set_fault_pinned(id, spec.fault, true).await {
                    node.shutdown_ref().await;
                    return Err(e);
                }
            }
        }
        let _ = node.inner.events.send(Event::Ready { sandboxes: total });
        if opts.churn_per_min > 0.0 {
            node.churn = Some(tokio::spawn(churn(
                Arc::downgrade(&node.inner),
                opts.churn_per_min,
            )));
        }
        Ok(node)
    }

    /// Event stream. The first call gets every event since [`Node::start`] began (so the
    /// initial `added`/`ready` events are not lost); later calls see events from then on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        let first = self.inner.first_rx.lock().ok().and_then(|mut f| f.take());
        first.unwrap_or_else(|| self.inner.events.subscribe())
    }

    /// The seed in use (useful when it was chosen at random).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    pub fn go_root(&self) -> &Path {
        &self.inner.go_root
    }

    pub fn rs_root(&self) -> &Path {
        &self.inner.rs_root
    }

    /// Creates one more sandbox (and its CRI pod in CRI mode).
    pub async fn add_sandbox(&self, layout: Flavour, fault: Fault) -> Result<SandboxInfo> {
        self.inner.add(layout, fault, fault != Fault::None).await
    }

    /// Stops the sandbox's shim, removes its directory at once, then its CRI pod.
    pub async fn remove_sandbox(&self, id: &str) -> Result<SandboxInfo> {
        self.inner.remove(id).await
    }

    /// Current sandboxes in creation order.
    pub async fn list(&self) -> Vec<SandboxInfo> {
        let map = self.inner.sandboxes.lock().await;
        map.values().map(|e| e.info.clone()).collect()
    }

    /// Resolves an index (creation order) or ID to a sandbox ID.
    pub async fn resolve(&self, sel: &SandboxSelector) -> Option<String> {
        let map = self.inner.sandboxes.lock().await;
        match sel {
            SandboxSelector::Index(i) => map.get(i).map(|e| e.info.id.clone()),
            SandboxSelector::Id(id) => map
                .values()
                .find(|e| &e.info.id == id)
                .map(|e| e.info.id.clone()),
        }
    }

    /// Changes a sandbox's fault at runtime; faulted sandboxes are exempt from churn.
    pub async fn set_fault(&self, id: &str, fault: Fault) -> Result<()> {
        self.set_fault_pinned(id, fault, fault != Fault::None).await
    }

    async fn set_fault_pinned(&self, id: &str, fault: Fault, pinned: bool) -> Result<()> {
        let mut map = self.inner.sandboxes.lock().await;
        let entry = map
            .values_mut()
            .find(|e| e.info.id == id)
            .with_context(|| format!("no sandbox {id}"))?;
        entry.shim.set_fault(fault).await?;
        entry.info.fault = fault;
        entry.pinned = pinned;
        let _ = self.inner.events.send(Event::FaultChanged {
            sandbox_id: id.to_string(),
            fault,
        });
        Ok(())
    }

    /// Requests served by a sandbox's shim so far, and `/metrics` scrapes among them.
    pub async fn shim_counters(&self, id: &str) -> Option<(u64, u64)> {
        let map = self.inner.sandboxes.lock().await;
        map.values()
            .find(|e| e.info.id == id)
            .map(|e| (e.shim.requests(), e.shim.scrapes()))
    }

    /// Requests and `/metrics` scrapes served by each current sandbox's shim so far, in
    /// creation order: one lock for the whole node, so a benchmark can tell how often an
    /// agent asked every shim without a walk of the node per sandbox.
    pub async fn shim_counts(&self) -> Vec<(String, u64, u64)> {
        let map = self.inner.sandboxes.lock().await;
        map.values()
            .map(|e| (e.info.id.clone(), e.shim.requests(), e.shim.scrapes()))
            .collect()
    }

    /// Stops churn and removes every sandbox (and CRI pod), emitting `removed` events.
    pub async fn shutdown(mut self) -> Result<()> {
        self.shutdown_ref().await;
        Ok(())
    }

    async fn shutdown_ref(&mut self) {
        if let Some(c) = self.churn.take() {
            c.abort();
            let _ = c.await;
        }
        let indices: Vec<String> = {
            let map = self.inner.sandboxes.lock().await;
            map.values().map(|e| e.info.id.clone()).collect()
        };
        for id in indices {
            if let Err(e) = self.inner.remove(&id).await {
                let _ = self.inner.events.send(Event::Error {
                    message: format!("removing {id}: {e:#}"),
                });
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.churn.take() {
            c.abort();
        }
        let entries: Vec<Entry> = match self.inner.sandboxes.try_lock() {
            Ok(mut map) => std::mem::take(&mut *map).into_values().collect(),
            Err(_) => Vec::new(),
        };
        let mut pods = Vec::new();
        for e in entries {
            drop(e.shim);
            let _ = std::fs::remove_dir_all(&e.info.dir);
            if e.info.pod.is_some() {
                pods.push(e.info.id.clone());
            }
        }
        if let Some(cri) = &self.inner.cri {
            crate::cri::remove_pods_blocking(cri.options(), pods);
        }
    }
}

impl Inner {
    fn root(&self, layout: Flavour) -> &Path {
        match layout {
            Flavour::Go => &self.go_root,
            Flavour::RuntimeRs => &self.rs_root,
        }
    }

    async fn add(&self, layout: Flavour, fault: Fault, pinned: bool) -> Result<SandboxInfo> {
        let index = self.next_index.fetch_add(1, Ordering::SeqCst);
        let (id, uid, shim_seed) = {
            let mut rng = self
                .rng
                .lock()
                .map_err(|_| anyhow!("random generator poisoned"))?;
            (
                ids::hex_id(&mut *rng),
                ids::uuid_v4(&mut *rng),
                rng.random::<u64>(),
            )
        };
        let (id, pod) = match &self.cri {
            Some(cri) => {
                let p = cri.run_pod(index, uid).await?;
                (p.id, Some(p.info))
            }
            None => (id, None),
        };
        let dir = self.root(layout).join(&id);
        let socket = dir.join(SOCKET_NAME);
        let opts = ShimOptions::new(layout)
            .sandbox_id(id.clone())
            .pprof(self.pprof && layout == Flavour::Go)
            .fault(fault)
            .seed(shim_seed);
        let shim = match ShimServer::start(&socket, opts).await {
            Ok(s) => s,
            Err(e) => {
                if let (Some(cri), Some(_)) = (&self.cri, &pod) {
                    let _ = cri.remove_pod(&id).await;
                }
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let info = SandboxInfo {
            id,
            index,
            layout,
            dir,
            socket,
            fault,
            pod,
        };
        self.sandboxes.lock().await.insert(
            index,
            Entry {
                info: info.clone(),
                shim,
                pinned,
            },
        );
        let _ = self.events.send(Event::Added(info.clone()));
        Ok(info)
    }

    async fn remove(&self, id: &str) -> Result<SandboxInfo> {
        let entry = {
            let mut map = self.sandboxes.lock().await;
            let key = map
                .iter()
                .find(|(_, e)| e.info.id == id)
                .map(|(k, _)| *k)
                .with_context(|| format!("no sandbox {id}"))?;
            map.remove(&key)
                .with_context(|| format!("no sandbox {id}"))?
        };
        let info = entry.info.clone();
        let stop = entry.shim.stop().await;
        let rm = match std::fs::remove_dir_all(&info.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", info.dir.display()))
            }
            _ => Ok(()),
        };
        let pod = match (&self.cri, &info.pod) {
            (Some(cri), Some(_)) => cri.remove_pod(&info.id).await,
            _ => Ok(()),
        };
        let _ = self.events.send(Event::Removed(info.clone()));
        stop.and(rm).and(pod)?;
        Ok(info)
    }
}

/// Replaces one unpinned sandbox by a fresh one of the same layout at the given rate.
async fn churn(inner: std::sync::Weak<Inner>, per_min: f64) {
    // Clamped so that absurd rates neither spin nor overflow.
    let period = Duration::from_secs_f64((60.0 / per_min).clamp(0.001, 86_400.0));
    loop {
        let jitter = {
            let Some(inner) = inner.upgrade() else { return };
            let r = inner.rng.lock().map(|mut r| r.random_range(0.8..1.2));
            r.unwrap_or(1.0)
        };
        tokio::time::sleep(period.mul_f64(jitter)).await;
        let Some(inner) = inner.upgrade() else { return };
        let victim = {
            let map = inner.sandboxes.lock().await;
            let candidates: Vec<(String, Flavour)> = map
                .values()
                .filter(|e| !e.pinned)
                .map(|e| (e.info.id.clone(), e.info.layout))
                .collect();
            if candidates.is_empty() {
                None
            } else {
                let k = inner
                    .rng
                    .lock()
                    .map(|mut r| r.random_range(0..candidates.len()))
                    .unwrap_or(0);
                Some(candidates[k].clone())
            }
        };
        let Some((id, layout)) = victim else { continue };
        if let Err(e) = inner.remove(&id).await {
            let _ = inner.events.send(Event::Error {
                message: format!("churn: removing {id}: {e:#}"),
            });
        }
        if let Err(e) = inner.add(layout, Fault::None, false).await {
            let _ = inner.events.send(Event::Error {
                message: format!("churn: adding a {layout} sandbox: {e:#}"),
            });
        }
    }
}

#[cfg(test)]
mod tests;
