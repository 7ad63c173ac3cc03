//! Which source gives the containers' usage: containerd's task metrics
//! (`Tasks/Metrics`, the full cgroup figures) or CRI's `ListContainerStats`
//! (what every CRI runtime has).
//!
//! `--container-stats auto` (the default) asks containerd on the CRI
//! socket, which it serves beside CRI. A runtime without that service
//! (CRI-O) answers `UNIMPLEMENTED`: the source then uses CRI and asks
//! containerd again only after [`REPROBE`]. A failed or timed-out call
//! falls back to CRI for that listing. `containerd` never falls back, `cri`
//! never asks containerd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use containerd_api::{TaskMetricsClient, CRI_NAMESPACE};
use tokio::time::Instant;

use super::usage::Usage;
use crate::config::StatsMode;
use crate::logging::RateLimit;

/// How long `auto` keeps using CRI after containerd said it has no such
/// service (a runtime does not change under a running node often).
pub const REPROBE: Duration = Duration::from_secs(600);

/// Calls and payloads of containerd that could not be used.
#[derive(Debug, Default)]
pub struct TaskStatsErrors {
    /// `Tasks/Metrics` failed as a whole (timeout, unreachable, error).
    pub calls: AtomicU64,
    /// One task's payload could not be decoded (that container only).
    pub payloads: AtomicU64,
}

/// What a listing should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Ask containerd.
    Containerd,
    /// Ask CRI.
    Cri,
}

pub struct TaskStats {
    mode: StatsMode,
    client: Option<TaskMetricsClient>,
    /// `auto`: containerd said UNIMPLEMENTED at this time.
    absent_since: Mutex<Option<Instant>>,
    pub errors: TaskStatsErrors,
    log_limit: RateLimit,
}

impl TaskStats {
    /// `channel` is the CRI channel (containerd serves both on one
    /// socket); every call is bounded by `timeout`.
    pub fn new(
        mode: StatsMode,
        channel: tonic::transport::Channel,
        timeout: Duration,
    ) -> TaskStats {
        let client = match mode {
            StatsMode::Cri => None,
            _ => match TaskMetricsClient::new(channel, CRI_NAMESPACE, timeout) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "containerd task metrics unavailable; using CRI");
                    None
                }
            },
        };
        TaskStats {
            mode,
            client,
            absent_since: Mutex::new(None),
            errors: TaskStatsErrors::default(),
            log_limit: RateLimit::new(Duration::from_secs(60)),
        }
    }

    /// Whether the next listing asks containerd or CRI.
    pub fn plan(&self) -> Plan {
        if self.client.is_none() {
            return Plan::Cri;
        }
        if self.mode == StatsMode::Auto {
            let absent = self.absent_since.lock().unwrap_or_else(|e| e.into_inner());
            if absent.is_some_and(|t| t.elapsed() < REPROBE) {
                return Plan::Cri;
            }
        }
        Plan::Containerd
    }

    /// Usage of the given containers from containerd: `None` when the call
    /// failed and the caller should fall back to CRI (`auto`), an empty map
    /// when it failed in `containerd` mode. A container whose payload is
    /// bad is left out and counted.
    pub async fn fetch(&self, ids: &[&str]) -> Option<HashMap<String, Usage>> {
        let client = self.client.as_ref()?;
        // containerd rejects a filter with an invalid id; CRI ids never are.
        let ids: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| containerd_api::is_identifier(id))
            .collect();
        match client.containers(&ids).await {
            Ok(tasks) => {
                let mut out = HashMap::with_capacity(tasks.len());
                for t in tasks {
                    match t.stats {
                        Ok(s) => {
                            out.insert(t.id, Usage::from_containerd(&s));
                        }
                        Err(e) => {
                            self.errors.payloads.fetch_add(1, Ordering::Relaxed);
                            if self.log_limit.allow() {
                                tracing::warn!(container_id = %t.id, type_url = %t.type_url, error = %e,
                                    "containerd task metrics of a container not decodable; skipped");
                            }
                        }
                    }
                }
                Some(out)
            }
            Err(containerd_api::Error::Rpc(s))
                if s.code() == tonic::Code::Unimplemented && self.mode == StatsMode::Auto =>
            {
                *self.absent_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                tracing::info!(
                    "the runtime serves no containerd task metrics; container usage from CRI"
                );
                None
            }
            Err(e) => {
                self.errors.calls.fetch_add(1, Ordering::Relaxed);
                if self.log_limit.allow() {
                    tracing::warn!(error = %e, "containerd task metrics failed");
                }
                match self.mode {
                    StatsMode::Containerd => Some(HashMap::new()),
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_api::proto::containerd::services::tasks::v1::tasks_server::{
        Tasks, TasksServer,
    };
    use containerd_api::proto::containerd::services::tasks::v1::{MetricsRequest, MetricsResponse};
    use containerd_api::proto::containerd::types::Metric;
    use containerd_api::proto::io::containerd::cgroups::v1;
    use prost::Message;
    use std::path::Path;
    use tonic::{Request, Response, Status};

    /// containerd's Tasks service answering fixed metrics.
    #[derive(Clone, Default)]
    struct FakeTasks {
        metrics: Vec<Metric>,
    }

    #[tonic::async_trait]
    impl Tasks for FakeTasks {
        async fn metrics(
            &self,
            _: Request<MetricsRequest>,
        ) -> Result<Response<MetricsResponse>, Status> {
            Ok(Response::new(MetricsResponse {
                metrics: self.metrics.clone(),
            }))
        }
    }

    /// containerd's Tasks service on `sock`, or (`None`) CRI only, as
    /// CRI-O's socket.
    fn serve(tasks: Option<FakeTasks>, sock: &Path) -> tokio::task::JoinHandle<()> {
        let Some(tasks) = tasks else {
            return crate::cri::tests::serve(crate::cri::tests::FakeCri::default(), sock);
        };
        let listener = tokio::net::UnixListener::bind(sock).unwrap();
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(TasksServer::new(tasks), incoming)
                .await;
        })
    }

    fn metric(id: &str, type_url: &str, value: Vec<u8>) -> Metric {
        Metric {
            id: id.into(),
            data: Some(prost_types::Any {
                type_url: type_url.into(),
                value,
            }),
            ..Default::default()
        }
    }

    fn stats(mode: StatsMode, sock: &Path) -> TaskStats {
        let ep = cri_api::Endpoint::Unix(sock.to_path_buf());
        let channel = cri_api::channel(&ep, Duration::from_secs(2)).unwrap();
        TaskStats::new(mode, channel, Duration::from_secs(2))
    }

    #[tokio::test]
    async fn a_bad_payload_is_a_counted_skip() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctd.sock");
        let good = v1::Metrics {
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 7_000_000_000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let server = serve(
            Some(FakeTasks {
                metrics: vec![
                    metric(
                        "c1",
                        containerd_api::CGROUPS_V1_METRICS,
                        good.encode_to_vec(),
                    ),
                    metric(
                        "c2",
                        containerd_api::CGROUPS_V1_METRICS,
                        vec![0xff, 0xff, 0xff],
                    ),
                    metric("c3", "example.com/Unknown", vec![]),
                ],
            }),
            &sock,
        );
        let s = stats(StatsMode::Auto, &sock);
        assert_eq!(s.plan(), Plan::Containerd);
        let usage = s
            .fetch(&["c1", "c2", "c3"])
            .await
            .expect("containerd answered");
        assert_eq!(usage.len(), 1);
        assert_eq!(usage["c1"].cpu_ns, Some(7_000_000_000));
        assert_eq!(s.errors.payloads.load(Ordering::Relaxed), 2);
        assert_eq!(s.errors.calls.load(Ordering::Relaxed), 0);
        server.abort();
    }

    /// A runtime without containerd's Tasks service (CRI-O): `auto` uses
    /// CRI, and asks containerd again only after REPROBE.
    #[tokio::test(start_paused = true)]
    async fn auto_falls_back_to_cri_without_containerd() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("crio.sock");
        let server = serve(None, &sock);
        let s = stats(StatsMode::Auto, &sock);
        assert_eq!(s.fetch(&["c1"]).await, None, "fall back to CRI");
        assert_eq!(s.errors.calls.load(Ordering::Relaxed), 0, "not an error");
        assert_eq!(s.plan(), Plan::Cri);
        tokio::time::advance(REPROBE).await;
        assert_eq!(s.plan(), Plan::Containerd);
        // Forced to containerd, the same answer is an error and no CRI.
        let forced = stats(StatsMode::Containerd, &sock);
        assert_eq!(forced.fetch(&["c1"]).await, Some(HashMap::new()));
        assert_eq!(forced.errors.calls.load(Ordering::Relaxed), 1);
        assert_eq!(forced.plan(), Plan::Containerd);
        server.abort();
    }

    #[tokio::test]
    async fn cri_mode_never_asks_containerd_and_failures_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.sock");
        let cri_only = stats(StatsMode::Cri, &absent);
        assert_eq!(cri_only.plan(), Plan::Cri);
        assert_eq!(cri_only.fetch(&["c1"]).await, None);
        assert_eq!(cri_only.errors.calls.load(Ordering::Relaxed), 0);
        // auto and an unreachable runtime: counted, CRI for this listing.
        let auto = stats(StatsMode::Auto, &absent);
        assert_eq!(auto.fetch(&["c1"]).await, None);
        assert_eq!(auto.errors.calls.load(Ordering::Relaxed), 1);
        assert_eq!(auto.plan(), Plan::Containerd, "asked again next time");
    }
}
