//! Real CRI pod sandboxes behind simulated sandboxes.
//!
//! A node agent labels sandboxes from CRI (`ListPodSandbox`), so for end-to-end tests each
//! simulated sandbox can be backed by a real pod in a container runtime (e.g. a test
//! containerd): the pod's ID becomes the sandbox directory name, exactly as on a Kata node.
//! Host networking is used because a test node has no CNI.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use cri_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::runtime::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use tonic::transport::Channel;

use crate::node::PodInfo;

/// How simulated sandboxes are created as CRI pods.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// CRI endpoint, e.g. `unix:///run/containerd/containerd.sock`.
    pub endpoint: String,
    /// Namespace of the pods (default `kata-sim`).
    pub namespace: String,
    /// Pod names are `<prefix>-<n>` (default `kata-sim`).
    pub name_prefix: String,
    /// Names of the first pods, by creation index, as `name` or `namespace/name`; pods
    /// beyond the list are named `<prefix>-<n>` in `namespace`.
    pub pod_names: Vec<String>,
    /// RuntimeClass handler (default `kata`).
    pub runtime_handler: String,
    /// Containers to create and start in every pod (needs `container_image`).
    pub containers_per_pod: usize,
    /// Image for those containers, already present in the runtime (e.g. a pause image).
    pub container_image: Option<String>,
    /// Names of those containers, by position; `c<k>` beyond the list.
    pub container_names: Vec<String>,
    /// Deadline of every CRI call.
    pub call_timeout: Duration,
    /// Parent of the pods' log directories; a temporary directory when `None`.
    pub log_root: Option<PathBuf>,
}

impl CriOptions {
    pub fn new(endpoint: impl Into<String>) -> Self {
        CriOptions {
            endpoint: endpoint.into(),
            namespace: "kata-sim".to_string(),
            name_prefix: "kata-sim".to_string(),
            pod_names: Vec::new(),
            runtime_handler: "kata".to_string(),
            containers_per_pod: 0,
            container_image: None,
            container_names: Vec::new(),
            call_timeout: Duration::from_secs(60),
            log_root: None,
        }
    }
}

/// A pod created through CRI.
#[derive(Debug, Clone, PartialEq)]
pub struct CriPod {
    pub id: String,
    pub info: PodInfo,
    pub containers: Vec<String>,
}

/// CRI client for creating and removing pods.
pub struct CriPods {
    client: RuntimeServiceClient<Channel>,
    opts: CriOptions,
    log_root: PathBuf,
    _log_tmp: Option<tempfile::TempDir>,
}

impl CriPods {
    /// Prepares a lazy channel; nothing is dialled until the first call.
    pub fn connect(opts: CriOptions) -> Result<Self> {
        if opts.containers_per_pod > 0 && opts.container_image.is_none() {
            return Err(anyhow!("containers per pod need a container image"));
        }
        let endpoint = cri_api::parse_endpoint(&opts.endpoint)
            .map_err(|e| anyhow!("CRI endpoint {}: {e}", opts.endpoint))?;
        let channel = cri_api::channel(&endpoint, opts.call_timeout.min(Duration::from_secs(10)))
            .map_err(|e| anyhow!("CRI channel to {}: {e}", opts.endpoint))?;
        let (log_root, log_tmp) = match &opts.log_root {
            Some(p) => (p.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kata-sim-pod-logs-")
                    .tempdir()
                    .context("creating a pod log directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(CriPods {
            client: RuntimeServiceClient::new(channel),
            opts,
            log_root,
            _log_tmp: log_tmp,
        })
    }

    pub fn options(&self) -> &CriOptions {
        &self.opts
    }

    pub fn log_root(&self) -> &Path {
        &self.log_root
    }

    async fn call<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.opts.call_timeout, fut).await {
            Err(_) => Err(anyhow!(
                "CRI {what} timed out after {:?}",
                self.opts.call_timeout
            )),
            Ok(Err(status)) => Err(anyhow!(
                "CRI {what} failed: {} ({:?})",
                status.message(),
                status.code()
            )),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// Namespace and name of the pod with creation index `n`.
    fn pod_name(&self, n: usize) -> (String, String) {
        match self.opts.pod_names.get(n) {
            Some(given) => match given.split_once('/') {
                Some((ns, name)) => (ns.to_string(), name.to_string()),
                None => (self.opts.namespace.clone(), given.clone()),
            },
            None => (
                self.opts.namespace.clone(),
                format!("{}-{n}", self.opts.name_prefix),
            ),
        }
    }

    /// `RunPodSandbox` (+ containers). On a partial failure the pod is removed again.
    pub async fn run_pod(&self, n: usize, uid: String) -> Result<CriPod> {
        let (namespace, name) = self.pod_name(n);
        let log_dir = self.log_root.join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.clone()),
            ("io.kubernetes.pod.namespace".to_string(), namespace.clone()),
            ("io.kubernetes.pod.uid".to_string(), uid.clone()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "kata-sim".to_string(),
            ),
        ]);
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            // Host-network pods share the node's UTS namespace: setting a
            // hostname would make runc fail, as the kubelet knows.
            hostname: String::new(),
            log_directory: log_dir.display().to_string(),
            labels,
            linux: Some(cri_api::host_network_linux()),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let resp = self
            .call(
                "RunPodSandbox",
                client.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: self.opts.runtime_handler.clone(),
                }),
            )
            .await?;
        let id = resp.pod_sandbox_id;
        let mut containers = Vec::new();
        if let Err(e) = self.start_containers(&id, &config, &mut containers).await {
            let _ = self.remove_pod(&id).await;
            return Err(e);
        }
        Ok(CriPod {
            id,
            info: PodInfo {
                uid,
                name,
                namespace,
            },
            containers,
        })
    }

    async fn start_containers(
        &self,
        pod: &str,
        sandbox_config: &PodSandboxConfig,
        out: &mut Vec<String>,
    ) -> Result<()> {
        let Some(image) = self.opts.container_image.clone() else {
            return Ok(());
        };
        for k in 0..self.opts.containers_per_pod {
            let cname = self
                .opts
                .container_names
                .get(k)
                .cloned()
                .unwrap_or_else(|| format!("c{k}"));
            let mut client = self.client.clone();
            let created = self
                .call(
                    "CreateContainer",
                    client.create_container(CreateContainerRequest {
                        pod_sandbox_id: pod.to_string(),
                        config: Some(ContainerConfig {
                            metadata: Some(ContainerMetadata {
                                name: cname.clone(),
                                attempt: 0,
                            }),
                            image: Some(ImageSpec {
                                image: image.clone(),
                                ..Default::default()
                            }),
                            log_path: format!("{cname}/0.log"),
                            ..Default::default()
                        }),
                        sandbox_config: Some(sandbox_config.clone()),
                    }),
                )
                .await?;
            let cid = created.container_id;
            out.push(cid.clone());
            self.call(
                "StartContainer",
                client.start_container(StartContainerRequest { container_id: cid }),
            )
            .await?;
        }
        Ok(())
    }

    /// `StopPodSandbox` + `RemovePodSandbox` (which also removes its containers).
    pub async fn remove_pod(&self, id: &str) -> Result<()> {
        let mut client = self.client.clone();
        let stop = self
            .call(
                "StopPodSandbox",
                client.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                }),
            )
            .await;
        let remove = self
            .call(
                "RemovePodSandbox",
                client.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                }),
            )
            .await;
        remove.and(stop).map(|_| ())
    }
}

/// Removes pods from a context that cannot await (a `Drop`): runs on its own thread with
/// its own runtime and channel, so it works whatever state the caller's runtime is in.
pub(crate) fn remove_pods_blocking(opts: &CriOptions, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    let mut opts = opts.clone();
    opts.containers_per_pod = 0;
    opts.log_root = Some(std::env::temp_dir());
    let worker = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "cannot clean up CRI pods");
                return;
            }
        };
        rt.block_on(async move {
            let pods = match CriPods::connect(opts) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot clean up CRI pods");
                    return;
                }
            };
            for id in ids {
                if let Err(e) = pods.remove_pod(&id).await {
                    tracing::warn!(pod = %id, error = %e, "CRI pod cleanup failed");
                }
            }
        });
    });
    let _ = worker.join();
}
