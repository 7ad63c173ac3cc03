//! The agent's CRI client: maps Kata sandbox ids to Kubernetes pod identity.
//!
//! Unlike kata-monitor, every call carries a deadline and the connection is
//! made lazily, so a container runtime that is down, restarting or wedged
//! only delays labels; it can never block the agent or prevent start-up.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cri_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::runtime::v1::{
    Container, ContainerState, ContainerStats, ContainerStatusRequest, ListContainerStatsRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandbox, PodSandboxState,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Upper bound for one decoded CRI response. tonic's default (4 MiB) is too
/// small for very dense nodes; unbounded would let a broken or hostile
/// runtime make us allocate without limit.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// What the agent knows about a pod sandbox from CRI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// RuntimeClass handler the pod was started with (e.g. `kata`).
    pub runtime_handler: String,
    /// `SANDBOX_READY`; a not-ready sandbox is stopped or being torn down.
    pub ready: bool,
}

/// Why a CRI query failed. Callers typically retry later in every case.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The runtime could not be reached (socket missing, refused, reset).
    #[error("CRI runtime unavailable: {0}")]
    Unavailable(String),
    /// The deadline covering connect and call expired.
    #[error("CRI call timed out")]
    Timeout,
    /// The runtime answered with a gRPC error.
    #[error("CRI call failed: {0}")]
    Rpc(tonic::Status),
    /// The answer could not be used as a whole (too large, undecodable).
    #[error("invalid CRI response: {0}")]
    InvalidResponse(String),
    /// The client could not be set up (not a runtime availability issue).
    #[error("cannot set up CRI client: {0}")]
    Setup(#[from] cri_api::ChannelError),
}

/// Cheap to clone; clones share one lazily (re)connected channel.
#[derive(Clone)]
pub struct CriClient {
    client: RuntimeServiceClient<Channel>,
    /// The same connection, for containerd's own services on its socket.
    channel: Channel,
    call_timeout: Duration,
    /// For error messages: which runtime could not be reached.
    endpoint: String,
}

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient")
            .field("endpoint", &self.endpoint)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl CriClient {
    /// Never fails because the runtime is down: the connection is made lazily on first call.
    ///
    /// Must be called within a Tokio runtime (otherwise [`CriError::Setup`]).
    pub fn new(endpoint: &cri_api::Endpoint, call_timeout: Duration) -> Result<Self, CriError> {
        let channel = cri_api::channel(endpoint, call_timeout)?;
        Ok(Self {
            client: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            channel,
            call_timeout,
            endpoint: endpoint.to_string(),
        })
    }

    /// The lazily connected channel (containerd serves its task API on the
    /// CRI socket too).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Lowers the response size limit so tests need not build huge answers.
    #[cfg(test)]
    fn with_max_response_bytes(mut self, limit: usize) -> Self {
        self.client = self.client.max_decoding_message_size(limit);
        self
    }

    /// ListPodSandbox (all states, no filter) with a deadline covering connect + call; returns id -> meta.
    ///
    /// Not-ready sandboxes are included (with `ready == false`) so a caller
    /// can still label a sandbox that is shutting down. Entries without an id
    /// or metadata are skipped.
    pub async fn list_pod_sandboxes(&self) -> Result<HashMap<String, PodMeta>, CriError> {
        let response = self
            .call(
                ListPodSandboxRequest { filter: None },
                |mut c, r| async move { c.list_pod_sandbox(r).await },
            )
            .await?;
        Ok(pods_to_meta(response.items))
    }

    /// ListContainers (all states); entries without id or sandbox are skipped.
    pub async fn list_containers(&self) -> Result<Vec<ContainerInfo>, CriError> {
        let response = self
            .call(
                ListContainersRequest { filter: None },
                |mut c, r| async move { c.list_containers(r).await },
            )
            .await?;
        Ok(containers_to_info(response.containers))
    }

    /// ListContainerStats for every container: container id -> usage.
    /// For a Kata container the runtime answers from the guest's cgroups.
    pub async fn list_container_stats(&self) -> Result<HashMap<String, ContainerUsage>, CriError> {
        let response = self
            .call(
                ListContainerStatsRequest { filter: None },
                |mut c, r| async move { c.list_container_stats(r).await },
            )
            .await?;
        Ok(stats_to_usage(response.stats))
    }

    /// ContainerStatus: start time and the resources of the container's spec.
    pub async fn container_spec(&self, id: &str) -> Result<ContainerSpec, CriError> {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let response = self
            .call(req, |mut c, r| async move { c.container_status(r).await })
            .await?;
        let status = response
            .status
            .ok_or_else(|| CriError::InvalidResponse("ContainerStatus without status".into()))?;
        let linux = status.resources.and_then(|r| r.linux);
        Ok(ContainerSpec {
            started_at_ns: status.started_at,
            cpu_period: linux.as_ref().map(|l| l.cpu_period).filter(|v| *v > 0),
            cpu_quota: linux.as_ref().map(|l| l.cpu_quota).filter(|v| *v > 0),
            cpu_shares: linux.as_ref().map(|l| l.cpu_shares).filter(|v| *v > 0),
            memory_limit: linux
                .as_ref()
                .map(|l| l.memory_limit_in_bytes)
                .filter(|v| *v > 0),
            memory_swap_limit: linux
                .as_ref()
                .map(|l| l.memory_swap_limit_in_bytes)
                .filter(|v| *v > 0),
            has_resources: linux.is_some(),
        })
    }

    /// One call with the client's deadline: sent as `grpc-timeout` so the
    /// runtime can give up too, and enforced by an outer timer so we return
    /// on time whatever the peer does.
    async fn call<Req, Resp, F, Fut>(&self, req: Req, f: F) -> Result<Resp, CriError>
    where
        F: FnOnce(RuntimeServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut request = tonic::Request::new(req);
        request.set_timeout(self.call_timeout);
        let started = Instant::now();
        match tokio::time::timeout(self.call_timeout, f(self.client.clone(), request)).await {
            Err(_elapsed) => Err(CriError::Timeout),
            Ok(Err(status)) => {
                let deadline_passed = started.elapsed() >= self.call_timeout;
                Err(classify(status, deadline_passed, &self.endpoint))
            }
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}

/// A container as CRI lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub sandbox_id: String,
    /// Kubernetes container name (`metadata.name`).
    pub name: String,
    /// Image as requested (what the kubelet's cAdvisor reports as `image`).
    pub image: String,
    pub running: bool,
    pub created_at_ns: i64,
}

/// Usage figures of one container; `None` where the runtime left a field unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub cpu_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub swap: Option<u64>,
}

/// From ContainerStatus; resource fields are `None` when unset or unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub started_at_ns: i64,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub memory_limit: Option<i64>,
    /// Memory plus swap (cgroup v1 `memsw`), as the kubelet sets it.
    pub memory_swap_limit: Option<i64>,
    /// False for runtimes that do not report resources (containerd < 1.6.9).
    pub has_resources: bool,
}

/// Turns a failed call into the error kind callers act on.
fn classify(status: Status, deadline_passed: bool, endpoint: &str) -> CriError {
    match status.code() {
        Code::Unavailable => CriError::Unavailable(format!("{endpoint}: {}", describe(&status))),
        Code::DeadlineExceeded => CriError::Timeout,
        // tonic reports its own expiry of the `grpc-timeout` as CANCELLED.
        Code::Cancelled if deadline_passed => CriError::Timeout,
        // Produced by tonic's decoder for oversized or malformed responses.
        Code::OutOfRange | Code::ResourceExhausted
            if status.message().contains("size limit")
                || status.message().contains("message length too large") =>
        {
            CriError::InvalidResponse(status.message().to_owned())
        }
        Code::Internal if status.message().contains("failed to decode") => {
            CriError::InvalidResponse(status.message().to_owned())
        }
        _ => CriError::Rpc(status),
    }
}

/// The status message followed by its cause chain, so logs say why (e.g.
/// "tcp connect error: Connection refused (os error 111)") and not only
/// that a connection failed. Causes already quoted by the text are skipped.
fn describe(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let part = err.to_string();
        if !part.is_empty() && !text.contains(&part) {
            if text.is_empty() {
                text = part;
            } else {
                text = format!("{text}: {part}");
            }
        }
        source = err.source();
    }
    if text.is_empty() {
        "no details".to_owned()
    } else {
        text
    }
}

/// A ListContainers answer as the agent keeps it; entries without id or
/// sandbox are skipped. Public (like the two below) for the fuzz target.
pub fn containers_to_info(containers: Vec<Container>) -> Vec<ContainerInfo> {
    containers
        .into_iter()
        .filter(|c| !c.id.is_empty() && !c.pod_sandbox_id.is_empty())
        .map(|c| ContainerInfo {
            name: c.metadata.map(|m| m.name).unwrap_or_default(),
            image: c.image.map(|i| i.image).unwrap_or_default(),
            running: c.state == ContainerState::ContainerRunning as i32,
            created_at_ns: c.created_at,
            id: c.id,
            sandbox_id: c.pod_sandbox_id,
        })
        .collect()
}

/// A ListContainerStats answer: container id -> usage; entries without
/// an id are skipped, and of two with one id the later one counts.
pub fn stats_to_usage(stats: Vec<ContainerStats>) -> HashMap<String, ContainerUsage> {
    let mut out = HashMap::with_capacity(stats.len());
    for s in stats {
        let Some(id) = s.attributes.map(|a| a.id).filter(|id| !id.is_empty()) else {
            continue;
        };
        let cpu = s.cpu.as_ref();
        let mem = s.memory.as_ref();
        let v = |x: &Option<cri_api::runtime::v1::UInt64Value>| x.as_ref().map(|v| v.value);
        out.insert(
            id,
            ContainerUsage {
                cpu_ns: cpu.and_then(|c| v(&c.usage_core_nano_seconds)),
                memory_usage: mem.and_then(|m| v(&m.usage_bytes)),
                working_set: mem.and_then(|m| v(&m.working_set_bytes)),
                rss: mem.and_then(|m| v(&m.rss_bytes)),
                swap: s.swap.as_ref().and_then(|w| v(&w.swap_usage_bytes)),
            },
        );
    }
    out
}

/// A ListPodSandbox answer: sandbox id -> pod identity; entries without
/// id or metadata are skipped, and of two with one id a ready one wins.
pub fn pods_to_meta(items: Vec<PodSandbox>) -> HashMap<String, PodMeta> {
    let mut out = HashMap::with_capacity(items.len());
    for pod in items {
        if pod.id.is_empty() {
            tracing::debug!("CRI returned a pod sandbox without id; skipped");
            continue;
        }
        let Some(metadata) = pod.metadata else {
            tracing::debug!(sandbox = %pod.id, "CRI returned a pod sandbox without metadata; skipped");
            continue;
        };
        let meta = PodMeta {
            uid: metadata.uid,
            name: metadata.name,
            namespace: metadata.namespace,
            runtime_handler: pod.runtime_handler,
            // Unknown future states count as not ready.
            ready: pod.state == PodSandboxState::SandboxReady as i32,
        };
        match out.entry(pod.id) {
            Entry::Vacant(slot) => {
                slot.insert(meta);
            }
            // Ids are unique in practice; if not, the live sandbox wins.
            Entry::Occupied(mut slot) => {
                if meta.ready && !slot.get().ready {
                    slot.insert(meta);
                }
            }
        }
    }
    out
}

/// CRI health, for the agent's own metrics and `/readyz` details.
#[derive(Debug, Default)]
pub struct CriStats {
    pub up: AtomicBool,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    /// Unix time of the last successful call, in milliseconds.
    pub last_success_ms: AtomicU64,
    /// Unix time (ms) since which CRI fails after having answered; 0 while
    /// it answers or if it never did.
    pub down_since_ms: AtomicU64,
    /// Signalled when CRI goes from answering to failing, so the labeller
    /// leaves its long refresh sleep and retries with back-off.
    pub(crate) went_down: tokio::sync::Notify,
}

impl CriStats {
    /// Records the outcome of a CRI listing (pods by the labeller,
    /// containers by the cAdvisor view), so health follows whichever runs.
    /// `ContainerStatus` calls are not recorded: one fails for a container
    /// that just ended, which says nothing about CRI.
    pub fn record(&self, ok: bool) {
        let was_up = self.up.swap(ok, Ordering::Relaxed);
        if was_up && !ok {
            self.went_down.notify_one();
        }
        if ok {
            self.requests_ok.fetch_add(1, Ordering::Relaxed);
            self.last_success_ms
                .store(crate::unix_ms(), Ordering::Relaxed);
            self.down_since_ms.store(0, Ordering::Relaxed);
        } else {
            self.requests_failed.fetch_add(1, Ordering::Relaxed);
            if self.last_success_ms.load(Ordering::Relaxed) > 0 {
                let _ = self.down_since_ms.compare_exchange(
                    0,
                    crate::unix_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// How long CRI has been unreachable after having answered once.
    pub fn down_for(&self, now_ms: u64) -> Option<Duration> {
        match self.down_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms.saturating_sub(since))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cri_api::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
    use cri_api::runtime::v1::{ListPodSandboxResponse, PodSandboxMetadata};
    use cri_api::Endpoint;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use tokio::net::UnixListener;
    use tokio::task::JoinHandle;
    use tonic::{Request, Response};

    /// Fake runtime: fixed answer, or never answers when `hang` is set.
    /// Records whether a request carried a filter, and counts
    /// ContainerStatus calls.
    #[derive(Clone, Default)]
    pub(crate) struct FakeCri {
        pub(crate) pods: Vec<PodSandbox>,
        pub(crate) containers: Arc<Mutex<Vec<cri_api::runtime::v1::Container>>>,
        pub(crate) hang: bool,
        /// ListContainers never answers while set.
        pub(crate) hang_containers: Arc<std::sync::atomic::AtomicBool>,
        pub(crate) saw_filter: Arc<Mutex<Vec<bool>>>,
        pub(crate) status_calls: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl RuntimeService for FakeCri {
        async fn list_pod_sandbox(
            &self,
            request: Request<ListPodSandboxRequest>,
        ) -> Result<Response<ListPodSandboxResponse>, Status> {
            self.saw_filter
                .lock()
                .unwrap()
                .push(request.get_ref().filter.is_some());
            if self.hang {
                std::future::pending::<()>().await;
            }
            Ok(Response::new(ListPodSandboxResponse {
                items: self.pods.clone(),
            }))
        }

        async fn list_containers(
            &self,
            _: Request<cri_api::runtime::v1::ListContainersRequest>,
        ) -> Result<Response<cri_api::runtime::v1::ListContainersResponse>, Status> {
            if self
                .hang_containers
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                std::future::pending::<()>().await;
            }
            Ok(Response::new(
                cri_api::runtime::v1::ListContainersResponse {
                    containers: self.containers.lock().unwrap().clone(),
                },
            ))
        }

        async fn list_container_stats(
            &self,
            _: Request<cri_api::runtime::v1::ListContainerStatsRequest>,
        ) -> Result<Response<cri_api::runtime::v1::ListContainerStatsResponse>, Status> {
            Ok(Response::new(Default::default()))
        }

        /// A started container with a 1 GiB memory limit.
        async fn container_status(
            &self,
            _: Request<cri_api::runtime::v1::ContainerStatusRequest>,
        ) -> Result<Response<cri_api::runtime::v1::ContainerStatusResponse>, Status> {
            use cri_api::runtime::v1::{
                ContainerResources, ContainerStatus, ContainerStatusResponse,
                LinuxContainerResources,
            };
            self.status_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let linux = LinuxContainerResources {
                memory_limit_in_bytes: 1 << 30,
                ..Default::default()
            };
            Ok(Response::new(ContainerStatusResponse {
                status: Some(ContainerStatus {
                    started_at: 1,
                    resources: Some(ContainerResources { linux: Some(linux) }),
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }
    }

    pub(crate) fn serve(fake: FakeCri, sock: &Path) -> JoinHandle<()> {
        let listener = UnixListener::bind(sock).unwrap();
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let next = l.accept().await.map(|(stream, _)| stream);
            Some((next, l))
        });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(RuntimeServiceServer::new(fake), incoming)
                .await;
        })
    }

    pub(crate) fn pod(id: &str, state: PodSandboxState, handler: &str) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: format!("pod-{id}"),
                uid: format!("uid-{id}"),
                namespace: format!("ns-{id}"),
                attempt: 0,
            }),
            state: state as i32,
            runtime_handler: handler.into(),
            ..Default::default()
        }
    }

    fn sock_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("cri.sock")
    }

    #[tokio::test]
    async fn maps_pods_and_sends_no_filter() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let fake = FakeCri {
            pods: vec![
                pod("a", PodSandboxState::SandboxReady, "kata"),
                pod("b", PodSandboxState::SandboxNotready, "kata-qemu"),
                pod("c", PodSandboxState::SandboxReady, ""),
            ],
            ..Default::default()
        };
        let saw_filter = Arc::clone(&fake.saw_filter);
        let server = serve(fake, &sock);

        let client = CriClient::new(&Endpoint::Unix(sock), Duration::from_secs(5)).unwrap();
        let pods = client.list_pod_sandboxes().await.unwrap();

        assert_eq!(pods.len(), 3);
        assert_eq!(
            pods["a"],
            PodMeta {
                uid: "uid-a".into(),
                name: "pod-a".into(),
                namespace: "ns-a".into(),
                runtime_handler: "kata".into(),
                ready: true,
            }
        );
        assert_eq!(pods["b"].runtime_handler, "kata-qemu");
        assert!(!pods["b"].ready);
        assert_eq!(pods["c"].runtime_handler, "");
        assert_eq!(*saw_filter.lock().unwrap(), vec![false]);
        server.abort();
    }

    #[tokio::test]
    async fn skips_invalid_entries() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let mut no_metadata = pod("nometa", PodSandboxState::SandboxReady, "kata");
        no_metadata.metadata = None;
        let mut unknown_state = pod("future", PodSandboxState::SandboxReady, "kata");
        unknown_state.state = 42;
        let fake = FakeCri {
            pods: vec![
                no_metadata,
                pod("", PodSandboxState::SandboxReady, "kata"),
                unknown_state,
                // Duplicate id: the ready one must win, in either order.
                pod("dup", PodSandboxState::SandboxNotready, "old"),
                pod("dup", PodSandboxState::SandboxReady, "new"),
                pod("dup", PodSandboxState::SandboxNotready, "older"),
                pod("ok", PodSandboxState::SandboxReady, "kata"),
            ],
            ..Default::default()
        };
        let server = serve(fake, &sock);

        let client = CriClient::new(&Endpoint::Unix(sock), Duration::from_secs(5)).unwrap();
        let pods = client.list_pod_sandboxes().await.unwrap();

        let mut ids: Vec<_> = pods.keys().cloned().collect();
        ids.sort();
        assert_eq!(ids, ["dup", "future", "ok"]);
        assert!(!pods["future"].ready);
        assert_eq!(pods["dup"].runtime_handler, "new");
        assert!(pods["dup"].ready);
        server.abort();
    }

    /// A runtime that is not there fails the call as `Unavailable`, before
    /// the call deadline; had the client waited the deadline out, the
    /// error would be `Timeout`.
    async fn assert_unavailable(sock: PathBuf) {
        let client = CriClient::new(&Endpoint::Unix(sock), Duration::from_secs(10)).unwrap();
        let err = client.list_pod_sandboxes().await.unwrap_err();
        assert!(matches!(err, CriError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        assert_unavailable(sock_in(&dir)).await;
    }

    #[tokio::test]
    async fn stale_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        // The socket file stays behind after the listener is gone, as after
        // a runtime crash: connecting is refused.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert_unavailable(sock).await;
    }

    #[tokio::test]
    async fn errors_carry_their_cause() {
        // A TCP port nobody listens on: tonic says "tcp connect error"; the
        // OS error under it is what tells an operator what to fix.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ep = Endpoint::Tcp {
            host_port: format!("127.0.0.1:{port}"),
        };
        let client = CriClient::new(&ep, Duration::from_secs(5)).unwrap();
        let err = client.list_pod_sandboxes().await.unwrap_err().to_string();
        assert!(err.contains("Connection refused"), "{err}");
        assert!(err.contains(&format!("tcp://127.0.0.1:{port}")), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let client =
            CriClient::new(&Endpoint::Unix(sock_in(&dir)), Duration::from_secs(5)).unwrap();
        let err = client.list_pod_sandboxes().await.unwrap_err().to_string();
        assert!(err.contains("No such file or directory"), "{err}");
    }

    #[tokio::test]
    async fn recovers_when_runtime_comes_up_later() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let client = CriClient::new(&Endpoint::Unix(sock.clone()), Duration::from_secs(5)).unwrap();
        assert!(matches!(
            client.list_pod_sandboxes().await,
            Err(CriError::Unavailable(_))
        ));

        let fake = FakeCri {
            pods: vec![pod("a", PodSandboxState::SandboxReady, "kata")],
            ..Default::default()
        };
        let server = serve(fake, &sock);
        let pods = client.list_pod_sandboxes().await.unwrap();
        assert!(pods["a"].ready);
        server.abort();
    }

    /// These peers answer over a real socket, so the tests run on the wall
    /// clock; a client that ignored its own deadline fails here after a
    /// minute instead of hanging the run.
    async fn within_a_minute<T>(call: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("the client's own deadline ends the call")
    }

    #[tokio::test]
    async fn handler_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let server = serve(
            FakeCri {
                hang: true,
                ..Default::default()
            },
            &sock,
        );
        let deadline = Duration::from_millis(300);
        let client = CriClient::new(&Endpoint::Unix(sock), deadline).unwrap();
        let started = Instant::now();
        let err = within_a_minute(client.list_pod_sandboxes()).await;
        assert!(matches!(err, Err(CriError::Timeout)), "{err:?}");
        assert!(started.elapsed() >= deadline);
        server.abort();
    }

    #[tokio::test]
    async fn peer_that_accepts_but_never_speaks_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let listener = UnixListener::bind(&sock).unwrap();
        // Accept and hold connections without ever writing a byte.
        let mute = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = CriClient::new(&Endpoint::Unix(sock), Duration::from_millis(300)).unwrap();
        let err = within_a_minute(client.list_pod_sandboxes()).await;
        assert!(matches!(err, Err(CriError::Timeout)), "{err:?}");
        mute.abort();
    }

    #[tokio::test]
    async fn oversized_response_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let sock = sock_in(&dir);
        let pods = (0..200)
            .map(|i| pod(&format!("{i:064}"), PodSandboxState::SandboxReady, "kata"))
            .collect();
        let server = serve(
            FakeCri {
                pods,
                ..Default::default()
            },
            &sock,
        );
        let client = CriClient::new(&Endpoint::Unix(sock), Duration::from_secs(5))
            .unwrap()
            .with_max_response_bytes(4096);
        let err = client.list_pod_sandboxes().await.unwrap_err();
        assert!(matches!(err, CriError::InvalidResponse(_)), "{err:?}");
        server.abort();
    }

    #[test]
    fn new_outside_a_runtime_is_an_error_not_a_panic() {
        let ep = Endpoint::Unix(PathBuf::from("/nonexistent/cri.sock"));
        assert!(matches!(
            CriClient::new(&ep, Duration::from_secs(1)),
            Err(CriError::Setup(_))
        ));
    }

    #[test]
    fn classifies_statuses() {
        assert!(matches!(
            classify(Status::deadline_exceeded("x"), false, "ep"),
            CriError::Timeout
        ));
        assert!(matches!(
            classify(Status::cancelled("Timeout expired"), true, "ep"),
            CriError::Timeout
        ));
        assert!(matches!(
            classify(Status::cancelled("x"), false, "ep"),
            CriError::Rpc(_)
        ));
        assert!(matches!(
            classify(Status::permission_denied("x"), false, "ep"),
            CriError::Rpc(s) if s.code() == Code::PermissionDenied
        ));
        assert!(matches!(
            classify(Status::unavailable("down"), false, "ep"),
            CriError::Unavailable(m) if m == "ep: down"
        ));
    }

    #[test]
    fn cri_counts_as_down_only_after_having_answered() {
        let stats = CriStats::default();
        stats.record(false);
        assert_eq!(stats.down_for(crate::unix_ms()), None, "never answered");
        stats.record(true);
        assert_eq!(stats.down_for(crate::unix_ms()), None);
        stats.record(false);
        stats.record(false);
        let since = stats.down_since_ms.load(Ordering::Relaxed);
        assert!(since > 0);
        // /healthz compares this with --cri-unhealthy-after.
        let later = since + 5 * 60 * 1000;
        assert_eq!(stats.down_for(later), Some(Duration::from_secs(300)));
        stats.record(true);
        assert_eq!(stats.down_for(later), None, "recovered");
        assert_eq!(stats.requests_ok.load(Ordering::Relaxed), 2);
        assert_eq!(stats.requests_failed.load(Ordering::Relaxed), 3);
    }
}
