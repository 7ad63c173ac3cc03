//! A simulated container runtime: an in-process CRI (`runtime.v1`) server on a unix socket.
//!
//! It keeps pods and containers in memory, created through `RunPodSandbox` /
//! `CreateContainer` exactly as a kubelet (or [`crate::cri::CriPods`]) would, and answers
//! the calls a node agent makes to label and account for Kata pods: `ListPodSandbox`,
//! `PodSandboxStatus`, `ListContainers`, `ContainerStatus`, `ListContainerStats` and
//! `ContainerStats`. Container usage moves like a running workload's: CPU time grows at a
//! per-container rate, memory wanders around a per-container level.
//!
//! It is what `kata-sim demo` runs, so the demo shows labelled series without containerd.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cri_api::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use cri_api::runtime::v1::{
    Container, ContainerAttributes, ContainerMetadata, ContainerResources, ContainerState,
    ContainerStats, ContainerStatsRequest, ContainerStatsResponse, ContainerStatus,
    ContainerStatusRequest, ContainerStatusResponse, CpuUsage, CreateContainerRequest,
    CreateContainerResponse, ImageSpec, LinuxContainerResources, ListContainerStatsRequest,
    ListContainerStatsResponse, ListContainersRequest, ListContainersResponse,
    ListPodSandboxRequest, ListPodSandboxResponse, MemoryUsage, PodSandbox, PodSandboxMetadata,
    PodSandboxState, PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
    RemoveContainerRequest, RemoveContainerResponse, RemovePodSandboxRequest,
    RemovePodSandboxResponse, RunPodSandboxRequest, RunPodSandboxResponse, StartContainerRequest,
    StartContainerResponse, StopContainerRequest, StopContainerResponse, StopPodSandboxRequest,
    StopPodSandboxResponse, UInt64Value, VersionRequest, VersionResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::ids;

/// Name the runtime reports in `Version`.
pub const RUNTIME_NAME: &str = "kata-sim";

/// CPU limit the simulated containers report (`cpu_quota / cpu_period` = 0.5 CPU).
const CPU_PERIOD: i64 = 100_000;
const CPU_QUOTA: i64 = 50_000;
/// Memory limit of the simulated containers.
const MEMORY_LIMIT: i64 = 256 * 1024 * 1024;

struct Pod {
    metadata: PodSandboxMetadata,
    labels: HashMap<String, String>,
    handler: String,
    created_ns: i64,
    ready: bool,
}

struct Ctr {
    pod: String,
    name: String,
    image: String,
    created_ns: i64,
    started: Option<(i64, Instant)>,
    /// CPU cores this container keeps busy on average.
    cores: f64,
    /// Working set it wanders around, in bytes.
    memory: f64,
    phase: f64,
    running: bool,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    containers: BTreeMap<String, Ctr>,
}

impl State {
    fn container(&self, id: &str) -> Result<&Ctr, Status> {
        self.containers.get(id).ok_or_else(|| not_found(id))
    }
}

fn not_found(container_id: &str) -> Status {
    Status::not_found(format!("container {container_id} not found"))
}

impl Ctr {
    fn metadata(&self) -> ContainerMetadata {
        ContainerMetadata {
            name: self.name.clone(),
            attempt: 0,
        }
    }

    fn image_spec(&self) -> ImageSpec {
        ImageSpec {
            image: self.image.clone(),
            ..Default::default()
        }
    }
}

/// The CRI service; cheap to clone, clones share the state.
#[derive(Clone)]
pub struct SimRuntime {
    state: Arc<Mutex<State>>,
    rng: Arc<Mutex<StdRng>>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn u64v(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

impl SimRuntime {
    pub fn new(seed: u64) -> Self {
        SimRuntime {
            state: Arc::new(Mutex::new(State::default())),
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, Status> {
        self.state
            .lock()
            .map_err(|_| Status::internal("runtime state poisoned"))
    }

    fn new_id(&self) -> Result<String, Status> {
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| Status::internal("random generator poisoned"))?;
        Ok(ids::hex_id(&mut *rng))
    }

    /// Number of pods known (any state).
    pub fn pod_count(&self) -> usize {
        self.state.lock().map(|s| s.pods.len()).unwrap_or(0)
    }

    fn pod_message(id: &str, p: &Pod) -> PodSandbox {
        PodSandbox {
            id: id.to_string(),
            metadata: Some(p.metadata.clone()),
            state: if p.ready {
                PodSandboxState::SandboxReady as i32
            } else {
                PodSandboxState::SandboxNotready as i32
            },
            created_at: p.created_ns,
            labels: p.labels.clone(),
            annotations: HashMap::new(),
            runtime_handler: p.handler.clone(),
        }
    }

    fn state_of(c: &Ctr) -> i32 {
        match (c.started.is_some(), c.running) {
            (_, true) => ContainerState::ContainerRunning as i32,
            (true, false) => ContainerState::ContainerExited as i32,
            (false, false) => ContainerState::ContainerCreated as i32,
        }
    }

    /// Usage of a container now: CPU time grows with its rate (a little noise per
    /// second), the working set wanders by ±20 % over a few minutes.
    fn stats_of(id: &str, c: &Ctr) -> ContainerStats {
        let ts = now_ns();
        let elapsed = c
            .started
            .map(|(_, at)| at.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let wobble = (elapsed / 7.0 + c.phase).sin() * 0.15;
        let cpu_ns = (elapsed * c.cores * (1.0 + wobble) * 1e9) as u64;
        let working = (c.memory * (1.0 + 0.2 * (elapsed / 90.0 + c.phase).sin())) as u64;
        let cache = working / 4;
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: id.to_string(),
                metadata: Some(c.metadata()),
                labels: HashMap::new(),
                annotations: HashMap::new(),
            }),
            cpu: Some(CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: u64v(cpu_ns),
                usage_nano_cores: u64v((c.cores * 1e9) as u64),
            }),
            memory: Some(MemoryUsage {
                timestamp: ts,
                working_set_bytes: u64v(working),
                available_bytes: u64v((MEMORY_LIMIT as u64).saturating_sub(working)),
                usage_bytes: u64v(working + cache),
                rss_bytes: u64v(working * 9 / 10),
                page_faults: u64v((elapsed * 40.0) as u64 + 1_000),
                major_page_faults: u64v((elapsed / 30.0) as u64),
            }),
            writable_layer: None,
            swap: None,
        }
    }
}

#[tonic::async_trait]
impl RuntimeService for SimRuntime {
    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("missing sandbox config"))?;
        let metadata = config
            .metadata
            .ok_or_else(|| Status::invalid_argument("missing sandbox metadata"))?;
        if metadata.name.is_empty() {
            return Err(Status::invalid_argument("pod name is empty"));
        }
        let id = self.new_id()?;
        let pod = Pod {
            metadata,
            labels: config.labels,
            handler: req.runtime_handler,
            created_ns: now_ns(),
            ready: true,
        };
        self.lock()?.pods.insert(id.clone(), pod);
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let mut st = self.lock()?;
        // Stopping an unknown pod succeeds, as with containerd (idempotent).
        if let Some(p) = st.pods.get_mut(&id) {
            p.ready = false;
        }
        for c in st.containers.values_mut().filter(|c| c.pod == id) {
            c.running = false;
        }
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let mut st = self.lock()?;
        st.pods.remove(&id);
        st.containers.retain(|_, c| c.pod != id);
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let st = self.lock()?;
        let p = st
            .pods
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id} not found")))?;
        let m = Self::pod_message(&id, p);
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: m.id,
                metadata: m.metadata,
                state: m.state,
                created_at: m.created_at,
                labels: m.labels,
                runtime_handler: m.runtime_handler,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        _req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let st = self.lock()?;
        let items = st
            .pods
            .iter()
            .map(|(id, p)| Self::pod_message(id, p))
            .collect();
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("missing container config"))?;
        let name = config.metadata.map(|m| m.name).unwrap_or_default();
        let image = config.image.map(|i| i.image).unwrap_or_default();
        if name.is_empty() || image.is_empty() {
            return Err(Status::invalid_argument(
                "container name and image are required",
            ));
        }
        let id = self.new_id()?;
        let (cores, memory, phase) = {
            let mut rng = self
                .rng
                .lock()
                .map_err(|_| Status::internal("random generator poisoned"))?;
            (
                rng.random_range(0.02..0.4),
                rng.random_range(24.0..160.0) * 1024.0 * 1024.0,
                rng.random_range(0.0..std::f64::consts::TAU),
            )
        };
        let mut st = self.lock()?;
        if !st.pods.contains_key(&req.pod_sandbox_id) {
            return Err(Status::not_found(format!(
                "pod sandbox {} not found",
                req.pod_sandbox_id
            )));
        }
        st.containers.insert(
            id.clone(),
            Ctr {
                pod: req.pod_sandbox_id,
                name,
                image,
                created_ns: now_ns(),
                started: None,
                cores,
                memory,
                phase,
                running: false,
            },
        );
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        let mut st = self.lock()?;
        let c = st.containers.get_mut(&id).ok_or_else(|| not_found(&id))?;
        c.started = Some((now_ns(), Instant::now()));
        c.running = true;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        if let Some(c) = self.lock()?.containers.get_mut(&id) {
            c.running = false;
        }
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.lock()?.containers.remove(&id);
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        _req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let st = self.lock()?;
        let containers = st
            .containers
            .iter()
            .map(|(id, c)| Container {
                id: id.clone(),
                pod_sandbox_id: c.pod.clone(),
                metadata: Some(c.metadata()),
                image: Some(c.image_spec()),
                image_ref: c.image.clone(),
                state: Self::state_of(c),
                created_at: c.created_ns,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let id = req.into_inner().container_id;
        let st = self.lock()?;
        let c = st.container(&id)?;
        Ok(Response::new(ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: id.clone(),
                metadata: Some(c.metadata()),
                state: Self::state_of(c),
                created_at: c.created_ns,
                started_at: c.started.map(|(ns, _)| ns).unwrap_or(0),
                image: Some(c.image_spec()),
                image_ref: c.image.clone(),
                resources: Some(ContainerResources {
                    linux: Some(LinuxContainerResources {
                        cpu_period: CPU_PERIOD,
                        cpu_quota: CPU_QUOTA,
                        cpu_shares: 512,
                        memory_limit_in_bytes: MEMORY_LIMIT,
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            info: HashMap::new(),
        }))
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        let st = self.lock()?;
        let c = st.container(&id)?;
        Ok(Response::new(ContainerStatsResponse {
            stats: Some(Self::stats_of(&id, c)),
        }))
    }

    async fn list_container_stats(
        &self,
        _req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let st = self.lock()?;
        let stats = st
            .containers
            .iter()
            .filter(|(_, c)| c.running)
            .map(|(id, c)| Self::stats_of(id, c))
            .collect();
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }
}

/// A [`SimRuntime`] serving on a unix socket; stops (and removes the socket) on
/// [`RuntimeServer::shutdown`] or drop.
pub struct RuntimeServer {
    runtime: SimRuntime,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RuntimeServer {
    /// Binds `socket` (replacing a stale file) and serves until shut down.
    pub async fn start(socket: &Path, seed: u64) -> Result<RuntimeServer> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)
            .with_context(|| format!("binding the simulated CRI socket {}", socket.display()))?;
        let runtime = SimRuntime::new(seed);
        let (stop, stopped) = oneshot::channel::<()>();
        let service = RuntimeServiceServer::new(runtime.clone());
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulated CRI runtime stopped");
            }
        });
        Ok(RuntimeServer {
            runtime,
            socket: socket.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `unix://` endpoint of the socket, as a CRI client takes it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn runtime(&self) -> &SimRuntime {
        &self.runtime
    }

    /// Stops serving and waits (briefly) for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::debug!("simulated CRI runtime did not stop in time");
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for RuntimeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{CriOptions, CriPods};
    use cri_api::runtime::v1::runtime_service_client::RuntimeServiceClient;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pods_created_through_cri_are_listed_with_moving_stats() {
        let dir = tempfile::tempdir().unwrap();
        let server = RuntimeServer::start(&dir.path().join("cri.sock"), 7)
            .await
            .unwrap();
        let mut opts = CriOptions::new(server.endpoint());
        opts.containers_per_pod = 2;
        opts.container_image = Some("docker.io/library/nginx:1.27".into());
        opts.namespace = "shop".into();
        opts.call_timeout = Duration::from_secs(5);
        opts.log_root = Some(dir.path().to_path_buf());
        let pods = CriPods::connect(opts).unwrap();
        let pod = pods.run_pod(0, "uid-0".into()).await.unwrap();
        assert!(ids::is_hex_id(&pod.id));
        assert_eq!(pod.containers.len(), 2);

        let ep = cri_api::parse_endpoint(&server.endpoint()).unwrap();
        let mut client =
            RuntimeServiceClient::new(cri_api::channel(&ep, Duration::from_secs(5)).unwrap());
        let listed = client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(listed.len(), 1);
        let md = listed[0].metadata.as_ref().unwrap();
        assert_eq!(
            (md.name.as_str(), md.namespace.as_str(), md.uid.as_str()),
            ("kata-sim-0", "shop", "uid-0")
        );
        assert_eq!(listed[0].runtime_handler, "kata");
        let ctrs = client
            .list_containers(ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(ctrs.len(), 2);
        assert!(ctrs
            .iter()
            .all(|c| c.state == ContainerState::ContainerRunning as i32
                && c.pod_sandbox_id == pod.id));
        let cpu = |s: &ListContainerStatsResponse| {
            s.stats[0]
                .cpu
                .as_ref()
                .unwrap()
                .usage_core_nano_seconds
                .as_ref()
                .unwrap()
                .value
        };
        let first = client
            .list_container_stats(ListContainerStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = client
            .list_container_stats(ListContainerStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.stats.len(), 2);
        assert!(cpu(&second) > cpu(&first), "CPU time must grow");
        let status = client
            .container_status(ContainerStatusRequest {
                container_id: ctrs[0].id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert!(status.started_at > 0);
        assert_eq!(
            status
                .resources
                .unwrap()
                .linux
                .unwrap()
                .memory_limit_in_bytes,
            MEMORY_LIMIT
        );

        pods.remove_pod(&pod.id).await.unwrap();
        assert_eq!(server.runtime().pod_count(), 0);
        server.shutdown().await;
    }
}
