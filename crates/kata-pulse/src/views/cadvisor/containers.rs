//! Kata containers as the runtime reports them: names and images (CRI
//! `ListContainers`), usage from inside the guest (containerd's task
//! metrics or CRI `ListContainerStats`, see [`super::task_stats`]; a Kata
//! shim answers both from the container's cgroup in the guest) and limits
//! (CRI `ContainerStatus`).
//!
//! A snapshot is shared by concurrent requests and reused within the
//! metrics interval. It is refreshed in the background: a request waits
//! for a refresh at most [`MAX_WAIT`], then is served the last snapshot
//! (its age is in `kata_pulse_container_snapshot_age_seconds`), so a hung
//! runtime never adds its timeout to a scrape.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::task_stats::{Plan, TaskStats};
use super::usage::Usage;
use crate::config::StatsMode;
use crate::cri::CriStats;
use crate::cri::{ContainerInfo, ContainerSpec, CriClient, CriError};
use crate::logging::RateLimit;

/// How long a container's spec (limits, start time) is reused.
const SPEC_TTL: Duration = Duration::from_secs(60);
/// ContainerStatus calls per snapshot at most; the rest wait for the next.
const MAX_SPEC_CALLS: usize = 64;
/// The longest a request waits for a refresh before it is served the last
/// snapshot (a healthy runtime lists in milliseconds).
pub const MAX_WAIT: Duration = Duration::from_millis(500);

/// What the runtime said about containers at one point in time.
#[derive(Debug, Default)]
pub struct ContainerSnapshot {
    /// When the listing started; `None` for the empty stand-in served
    /// before any listing finished.
    pub taken: Option<Instant>,
    pub containers: Vec<ContainerInfo>,
    pub usage: HashMap<String, Usage>,
    pub specs: HashMap<String, ContainerSpec>,
}

/// Takes listings: CRI, containerd, the spec cache.
struct Lister {
    cri: CriClient,
    health: Arc<CriStats>,
    tasks: TaskStats,
    specs: std::sync::Mutex<HashMap<String, (Instant, ContainerSpec)>>,
    log_limit: RateLimit,
}

type Pending = watch::Receiver<Option<Arc<ContainerSnapshot>>>;

#[derive(Default)]
struct State {
    last: Option<Arc<ContainerSnapshot>>,
    /// The refresh under way: when it started and where it will report.
    refresh: Option<(Instant, Pending)>,
}

pub struct ContainerSource {
    lister: Arc<Lister>,
    interval: Duration,
    state: Arc<std::sync::Mutex<State>>,
}

impl ContainerSource {
    /// `stats` picks the usage source (`--container-stats`); containerd is
    /// asked on the CRI client's connection, with its deadline.
    pub fn new(
        cri: CriClient,
        interval: Duration,
        stats: StatsMode,
        health: Arc<CriStats>,
    ) -> Arc<ContainerSource> {
        let tasks = TaskStats::new(stats, cri.channel(), cri.timeout());
        Arc::new(ContainerSource {
            lister: Arc::new(Lister {
                cri,
                health,
                tasks,
                specs: std::sync::Mutex::new(HashMap::new()),
                log_limit: RateLimit::new(Duration::from_secs(60)),
            }),
            interval,
            state: Arc::new(std::sync::Mutex::new(State::default())),
        })
    }

    /// containerd's unusable answers, for the view's own series.
    pub fn task_errors(&self) -> &super::task_stats::TaskStatsErrors {
        &self.lister.tasks.errors
    }

    /// Containers of the given sandboxes for a request that arrived at
    /// `requested`: the last snapshot if it is that recent (or younger than
    /// the interval), else a new one if it comes within [`MAX_WAIT`], else
    /// the last one (stale) while the refresh goes on in the background.
    pub async fn snapshot(
        &self,
        requested: Instant,
        sandboxes: &HashSet<String>,
    ) -> Arc<ContainerSnapshot> {
        let (mut pending, deadline) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = &st.last {
                if last
                    .taken
                    .is_some_and(|t| t >= requested || t.elapsed() < self.interval)
                {
                    return last.clone();
                }
            }
            let (started, pending) = match &st.refresh {
                Some((started, pending)) => (*started, pending.clone()),
                None => {
                    let now = Instant::now();
                    let pending = self.start_refresh(sandboxes.clone());
                    st.refresh = Some((now, pending.clone()));
                    (now, pending)
                }
            };
            (pending, started + MAX_WAIT)
        };
        let fresh = tokio::time::timeout_at(deadline, pending.wait_for(|s| s.is_some())).await;
        if let Ok(Ok(snap)) = fresh {
            if let Some(snap) = snap.as_ref() {
                return snap.clone();
            }
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last.clone().unwrap_or_default()
    }

    /// Spawns one listing; its result becomes the last snapshot.
    fn start_refresh(&self, sandboxes: HashSet<String>) -> Pending {
        let (tx, rx) = watch::channel(None);
        let lister = self.lister.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let snap = Arc::new(lister.list(&sandboxes).await);
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            st.last = Some(snap.clone());
            st.refresh = None;
            drop(st);
            let _ = tx.send(Some(snap));
        });
        rx
    }
}

impl Lister {
    /// One listing: containers, their usage, their specs. Every call has
    /// the CRI deadline.
    async fn list(&self, sandboxes: &HashSet<String>) -> ContainerSnapshot {
        let started = Instant::now();
        let plan = self.tasks.plan();
        let (containers, cri_usage) = if plan == Plan::Cri {
            let (c, u) = tokio::join!(self.cri.list_containers(), self.cri.list_container_stats());
            (c, Some(u))
        } else {
            (self.cri.list_containers().await, None)
        };
        let containers: Vec<ContainerInfo> = match containers {
            Ok(list) => list
                .into_iter()
                .filter(|c| c.running && sandboxes.contains(&c.sandbox_id))
                .collect(),
            Err(e) => {
                self.health.record(false);
                self.warn(&e);
                return ContainerSnapshot {
                    taken: Some(started),
                    ..ContainerSnapshot::default()
                };
            }
        };
        let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        let from_tasks = match plan {
            Plan::Containerd => self.tasks.fetch(&ids).await,
            Plan::Cri => None,
        };
        let usage = match (from_tasks, cri_usage) {
            (Some(usage), _) => Ok(usage),
            (None, Some(cri)) => cri.map(|u| cri_to_usage(u, &ids)),
            // containerd failed in `auto`: CRI for this listing.
            (None, None) => self
                .cri
                .list_container_stats()
                .await
                .map(|u| cri_to_usage(u, &ids)),
        };
        self.health.record(usage.is_ok());
        let usage = usage.unwrap_or_else(|e| {
            self.warn(&e);
            HashMap::new()
        });
        let specs = self.specs_for(&containers).await;
        ContainerSnapshot {
            taken: Some(started),
            containers,
            usage,
            specs,
        }
    }

    fn warn(&self, e: &CriError) {
        if self.log_limit.allow() {
            tracing::warn!(error = %e, "cannot list containers from CRI; container series are missing until it answers");
        }
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

/// CRI's usage of the listed containers.
fn cri_to_usage(
    all: HashMap<String, crate::cri::ContainerUsage>,
    ids: &[&str],
) -> HashMap<String, Usage> {
    let ids: HashSet<&str> = ids.iter().copied().collect();
    all.iter()
        .filter(|(id, _)| ids.contains(id.as_str()))
        .map(|(id, u)| (id.clone(), Usage::from_cri(u)))
        .collect()
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
        let source = ContainerSource::new(
            cri,
            Duration::from_secs(60),
            StatsMode::Auto,
            health.clone(),
        );
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
        let source = ContainerSource::new(
            cri,
            Duration::ZERO,
            StatsMode::Auto,
            Arc::new(CriStats::default()),
        );
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

    /// A runtime that stops answering never holds a request longer than
    /// MAX_WAIT: the last snapshot is served (its age shows it), later
    /// requests do not wait at all while the refresh hangs, and the hung
    /// listing ends at the CRI deadline.
    #[tokio::test(start_paused = true)]
    async fn a_hung_runtime_never_delays_a_request() {
        use crate::cri::tests::{serve, FakeCri};
        use cri_api::runtime::v1::{Container, ContainerState};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("cri.sock");
        let fake = FakeCri::default();
        fake.containers.lock().unwrap().push(Container {
            id: "c1".into(),
            pod_sandbox_id: "sb".into(),
            state: ContainerState::ContainerRunning as i32,
            ..Default::default()
        });
        let server = serve(fake.clone(), &sock);
        let cri_timeout = Duration::from_secs(2);
        let cri = CriClient::new(&cri_api::Endpoint::Unix(sock), cri_timeout).unwrap();
        let interval = Duration::from_secs(5);
        let health = Arc::new(CriStats::default());
        let source = ContainerSource::new(cri, interval, StatsMode::Cri, health.clone());
        let ids = HashSet::from(["sb".to_string()]);

        let first = source.snapshot(Instant::now(), &ids).await;
        assert_eq!(
            first.containers.len(),
            1,
            "a healthy runtime answers at once"
        );
        let taken = first.taken.unwrap();

        fake.hang_containers.store(true, Ordering::Relaxed);
        tokio::time::advance(interval).await;
        let asked = Instant::now();
        let second = source.snapshot(asked, &ids).await;
        assert_eq!(asked.elapsed(), MAX_WAIT);
        assert!(Arc::ptr_eq(&first, &second), "the last snapshot is served");
        assert_eq!(
            taken.elapsed(),
            interval + MAX_WAIT,
            "its age says how stale"
        );

        // The refresh still hangs: no more waiting.
        let asked = Instant::now();
        let third = source.snapshot(asked, &ids).await;
        assert_eq!(asked.elapsed(), Duration::ZERO);
        assert!(Arc::ptr_eq(&first, &third));

        // At the CRI deadline the hung listing fails: the runtime is down,
        // and the failed (empty) listing is what the next request gets.
        tokio::time::sleep(cri_timeout).await;
        let fourth = source.snapshot(Instant::now(), &ids).await;
        assert!(fourth.containers.is_empty());
        assert_eq!(health.requests_failed.load(Ordering::Relaxed), 1);
        server.abort();
    }
}
