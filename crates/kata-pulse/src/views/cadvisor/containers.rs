//! Kata containers as CRI reports them: names and images
//! (`ListContainers`), usage from inside the guest (`ListContainerStats`,
//! which the Kata shim answers from the guest's cgroups) and limits
//! (`ContainerStatus`).
//!
//! A snapshot is taken per `/metrics` request with the collector's rules:
//! shared by concurrent requests, reused within the metrics interval, never
//! waiting past the CRI deadline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cri::CriStats;
use crate::cri::{ContainerInfo, ContainerSpec, ContainerUsage, CriClient};
use crate::logging::RateLimit;

/// How long a container's spec (limits, start time) is reused.
const SPEC_TTL: Duration = Duration::from_secs(60);
/// ContainerStatus calls per snapshot at most; the rest wait for the next.
const MAX_SPEC_CALLS: usize = 64;

/// What CRI said about containers at one point in time.
#[derive(Debug, Default)]
pub struct ContainerSnapshot {
    pub taken: Option<Instant>,
    pub containers: Vec<ContainerInfo>,
    pub usage: HashMap<String, ContainerUsage>,
    pub specs: HashMap<String, ContainerSpec>,
}

pub struct ContainerSource {
    cri: CriClient,
    health: Arc<CriStats>,
    interval: Duration,
    last: tokio::sync::Mutex<Option<Arc<ContainerSnapshot>>>,
    specs: std::sync::Mutex<HashMap<String, (Instant, ContainerSpec)>>,
    log_limit: RateLimit,
}

impl ContainerSource {
    pub fn new(cri: CriClient, interval: Duration, health: Arc<CriStats>) -> Arc<ContainerSource> {
        Arc::new(ContainerSource {
            cri,
            health,
            interval,
            last: tokio::sync::Mutex::new(None),
            specs: std::sync::Mutex::new(HashMap::new()),
            log_limit: RateLimit::new(Duration::from_secs(60)),
        })
    }

    /// Containers of the given sandboxes, fresh for a request that arrived
    /// at `requested` (or younger than the interval).
    pub async fn snapshot(
        &self,
        requested: Instant,
        sandboxes: &HashSet<String>,
    ) -> Arc<ContainerSnapshot> {
        let mut last = self.last.lock().await;
        if let Some(prev) = last.as_ref() {
            if let Some(taken) = prev.taken {
                if taken >= requested || taken.elapsed() < self.interval {
                    return prev.clone();
                }
            }
        }
        let started = Instant::now();
        let (containers, usage) =
            tokio::join!(self.cri.list_containers(), self.cri.list_container_stats());
        self.health.record(containers.is_ok() && usage.is_ok());
        let snap = match (containers, usage) {
            (Ok(containers), Ok(usage)) => {
                let containers: Vec<ContainerInfo> = containers
                    .into_iter()
                    .filter(|c| c.running && sandboxes.contains(&c.sandbox_id))
                    .collect();
                let ids: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
                let usage = usage
                    .into_iter()
                    .filter(|(id, _)| ids.contains(id.as_str()))
                    .collect();
                let specs = self.specs_for(&containers).await;
                ContainerSnapshot {
                    taken: Some(started),
                    containers,
                    usage,
                    specs,
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                if self.log_limit.allow() {
                    tracing::warn!(error = %e, "cannot list containers from CRI; container series are missing until it answers");
                }
                ContainerSnapshot {
                    taken: Some(started),
                    ..ContainerSnapshot::default()
                }
            }
        };
        let snap = Arc::new(snap);
        *last = Some(snap.clone());
        snap
    }

    /// Specs of `containers`, from the cache or ContainerStatus.
    async fn specs_for(&self, containers: &[ContainerInfo]) -> HashMap<String, ContainerSpec> {
        let stale: Vec<&str> = {
            let mut cache = self.specs.lock().unwrap_or_else(|e| e.into_inner());
            let live: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
            cache.retain(|id, _| live.contains(id.as_str()));
            containers
                .iter()
                .map(|c| c.id.as_str())
                .filter(|id| cache.get(*id).is_none_or(|(t, _)| t.elapsed() >= SPEC_TTL))
                .take(MAX_SPEC_CALLS)
                .collect()
        };
        let fetched =
            futures_util::future::join_all(stale.iter().map(|id| self.cri.container_spec(id)))
                .await;
        let mut cache = self.specs.lock().unwrap_or_else(|e| e.into_inner());
        for (id, result) in stale.iter().zip(fetched) {
            match result {
                Ok(spec) => {
                    cache.insert(id.to_string(), (Instant::now(), spec));
                }
                Err(e) => tracing::debug!(container_id = id, error = %e, "ContainerStatus failed"),
            }
        }
        containers
            .iter()
            .filter_map(|c| cache.get(&c.id).map(|(_, s)| (c.id.clone(), s.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn cri_down_gives_an_empty_snapshot_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let ep = cri_api::Endpoint::Unix(dir.path().join("absent.sock"));
        let cri = CriClient::new(&ep, Duration::from_secs(1)).unwrap();
        let health = Arc::new(CriStats::default());
        let source = ContainerSource::new(cri, Duration::from_secs(60), health.clone());
        let ids = HashSet::from(["sb".to_string()]);
        let snap = source.snapshot(Instant::now(), &ids).await;
        assert!(snap.containers.is_empty() && snap.usage.is_empty());
        assert_eq!(health.requests_failed.load(Ordering::Relaxed), 1);
        // Within the interval the failed snapshot is reused, not retried.
        let again = source
            .snapshot(Instant::now() - Duration::from_secs(1), &ids)
            .await;
        assert!(Arc::ptr_eq(&snap, &again));
        assert_eq!(health.requests_failed.load(Ordering::Relaxed), 1);
    }

    /// Specs are asked for once per container and reused by later
    /// snapshots within their time to live; a new container is asked for.
    #[tokio::test]
    async fn specs_are_cached_between_snapshots() {
        use crate::cri::tests::{serve, FakeCri};
        use cri_api::runtime::v1::{Container, ContainerState};
        let running = |id: &str| Container {
            id: id.into(),
            pod_sandbox_id: "sb".into(),
            state: ContainerState::ContainerRunning as i32,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("cri.sock");
        let fake = FakeCri::default();
        fake.containers.lock().unwrap().push(running("c1"));
        let calls = fake.status_calls.clone();
        let server = serve(fake.clone(), &sock);
        let cri = CriClient::new(
            &cri_api::Endpoint::Unix(sock.clone()),
            Duration::from_secs(5),
        )
        .unwrap();
        // No interval: every request takes a new snapshot.
        let source = ContainerSource::new(cri, Duration::ZERO, Arc::new(CriStats::default()));
        let ids = HashSet::from(["sb".to_string()]);
        let first = source.snapshot(Instant::now(), &ids).await;
        assert_eq!(first.specs["c1"].memory_limit, Some(1 << 30));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let second = source.snapshot(Instant::now(), &ids).await;
        assert!(!Arc::ptr_eq(&first, &second), "the snapshot was reused");
        assert_eq!(second.specs["c1"].memory_limit, Some(1 << 30));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "ContainerStatus asked again"
        );

        // The runtime now lists a second container: only that one is asked for.
        fake.containers.lock().unwrap().push(running("c2"));
        let third = source.snapshot(Instant::now(), &ids).await;
        assert_eq!(third.specs.len(), 2);
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        server.abort();
    }
}
