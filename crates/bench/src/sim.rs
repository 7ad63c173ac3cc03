//! The node under test: kata-sim's sandboxes (Go-runtime and runtime-rs shims serving the
//! fixtures, answering at once) backed by pods of kata-sim's simulated CRI runtime, each
//! with two running containers, so an agent labels and accounts for them as on a node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use kata_sim::runtime::RuntimeServer;
use kata_sim::{CriOptions, Fault, Flavour, Node, NodeOptions, SandboxInfo};

pub struct SimNode {
    pub node: Node,
    pub runtime: RuntimeServer,
    pub go_root: PathBuf,
    pub rs_root: PathBuf,
    dir: tempfile::TempDir,
}

impl SimNode {
    /// `total` sandboxes, `rs_percent` of them runtime-rs (rounded down), Go ones first.
    pub async fn start(total: usize, rs_percent: u8, seed: u64) -> Result<SimNode> {
        // Short, so that <dir>/vc/sbs/<64 hex>/shim-monitor.sock fits a socket address.
        let dir = tempfile::Builder::new()
            .prefix("kb-")
            .tempdir_in("/tmp")
            .context("creating the node's folder")?;
        let go_root = dir.path().join("vc").join("sbs");
        let rs_root = dir.path().join("kata");
        let runtime = RuntimeServer::start(&dir.path().join("cri.sock"), seed).await?;
        let mut cri = CriOptions::new(runtime.endpoint());
        cri.namespace = "bench".into();
        cri.name_prefix = "pod".into();
        cri.containers_per_pod = kata_sim::demo::DEMO_CONTAINERS.len();
        cri.container_image = Some(kata_sim::demo::DEMO_IMAGE.into());
        cri.container_names = kata_sim::demo::DEMO_CONTAINERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        cri.call_timeout = Duration::from_secs(10);
        cri.log_root = Some(dir.path().join("logs"));
        let rs = total * usize::from(rs_percent.min(100)) / 100;
        let node = Node::start(NodeOptions {
            go_root: go_root.clone(),
            rs_root: rs_root.clone(),
            go: total - rs,
            rs,
            seed: Some(seed),
            cri: Some(cri),
            ..Default::default()
        })
        .await
        .with_context(|| format!("starting a simulated node of {total} sandboxes"))?;
        Ok(SimNode {
            node,
            runtime,
            go_root,
            rs_root,
            dir,
        })
    }

    pub fn cri_endpoint(&self) -> String {
        self.runtime.endpoint()
    }

    pub async fn sandboxes(&self) -> Vec<SandboxInfo> {
        self.node.list().await
    }

    /// `/metrics` requests each shim has answered so far, by sandbox ID.
    pub async fn shim_requests(&self) -> HashMap<String, u64> {
        self.node
            .shim_counts()
            .await
            .into_iter()
            .map(|(id, requests, _)| (id, requests))
            .collect()
    }

    /// Requests to all shims since `before`.
    pub async fn requests_since(&self, before: &HashMap<String, u64>) -> u64 {
        let now = self.shim_requests().await;
        now.iter()
            .map(|(id, n)| n.saturating_sub(before.get(id).copied().unwrap_or(0)))
            .sum()
    }

    pub async fn add(&self, layout: Flavour) -> Result<SandboxInfo> {
        self.node.add_sandbox(layout, Fault::None).await
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        self.node.remove_sandbox(id).await.map(|_| ())
    }

    pub async fn stop(self) -> Result<()> {
        let r = self.node.shutdown().await;
        self.runtime.shutdown().await;
        drop(self.dir);
        r
    }
}
