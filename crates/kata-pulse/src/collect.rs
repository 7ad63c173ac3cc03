//! Scrapes shims on demand, shared between concurrent requests.
//!
//! Semantics (documented in docs/architecture.md):
//! - every `/metrics` request gets, for each sandbox, a result at least as
//!   new as the request, unless one younger than `--metrics-interval-secs`
//!   exists, which is reused: one shim is scraped at most once per interval
//!   however many scrapers there are;
//! - concurrent requests share one in-flight scrape per shim (a per-sandbox
//!   async lock: the second request waits and then finds a fresh result);
//! - a request never waits longer than [`Collector::deadline`]: a shim still
//!   running then is reported failed for that request, and its scrape goes
//!   on in the background to serve the next one;
//! - at most `--shim-concurrency` shims are scraped at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cri::PodMeta;
use crate::exposition::{self, ShimExposition};
use crate::logging::RateLimit;
use crate::registry::{Registry, Sandbox};
use crate::shim_client::ShimClient;
use crate::views::{Prepared, View};

/// One scrape of one shim.
#[derive(Debug)]
pub struct ScrapeResult {
    /// Wall-clock end of the scrape, for `/sandboxes`.
    pub finished_at: std::time::SystemTime,
    pub started: Instant,
    pub finished: Instant,
    /// Metadata the labels were rendered with; a change forces a new scrape.
    pub meta: Option<Arc<PodMeta>>,
    pub outcome: Result<ShimExposition, ScrapeFailure>,
}

impl ScrapeResult {
    pub fn duration(&self) -> Duration {
        self.finished.saturating_duration_since(self.started)
    }

    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Why a scrape failed; `reason` is a bounded label value.
#[derive(Debug, Clone)]
pub struct ScrapeFailure {
    pub reason: &'static str,
    pub message: String,
}

/// Per-sandbox state that lives as long as the sandbox.
#[derive(Debug)]
pub struct Slot {
    last: tokio::sync::Mutex<Option<Arc<ScrapeResult>>>,
    /// Copy of the last result readable without waiting for a scrape.
    latest: Mutex<Option<Arc<ScrapeResult>>>,
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    pub parse_errors: AtomicU64,
    log_limit: RateLimit,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            last: tokio::sync::Mutex::new(None),
            latest: Mutex::new(None),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            log_limit: RateLimit::new(Duration::from_secs(60)),
        }
    }
}

/// What one request collected, in sandbox-id order.
pub struct Collection {
    pub sandboxes: Vec<SandboxScrape>,
    /// What each view's `prepare` produced, in the views' order (`None`
    /// when it has nothing to prepare or did not finish within the deadline).
    pub prepared: Vec<Option<Prepared>>,
    pub duration: Duration,
}

pub struct SandboxScrape {
    pub sandbox: Arc<Sandbox>,
    pub slot: Arc<Slot>,
    pub meta: Option<Arc<PodMeta>>,
    /// `None` when the shim did not finish within the request deadline.
    pub result: Option<Arc<ScrapeResult>>,
}

impl SandboxScrape {
    /// The pod's namespace and name, empty while CRI has not described it.
    pub fn pod(&self) -> (&str, &str) {
        self.meta
            .as_deref()
            .map(|m| (m.namespace.as_str(), m.name.as_str()))
            .unwrap_or(("", ""))
    }
}

/// Agent-wide collection counters.
#[derive(Debug, Default)]
pub struct CollectorStats {
    pub shim_failures: AtomicU64,
    pub dropped_families: AtomicU64,
    pub colliding_families: AtomicU64,
    pub label_limit_samples: AtomicU64,
}

pub struct Collector {
    registry: Arc<Registry>,
    client: ShimClient,
    views: Arc<[Arc<dyn View>]>,
    interval: Duration,
    permits: Arc<Semaphore>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    pub stats: CollectorStats,
}

impl Collector {
    /// A collector with the raw view only (tests).
    #[cfg(test)]
    pub fn new(
        registry: Arc<Registry>,
        client: ShimClient,
        interval: Duration,
        concurrency: usize,
    ) -> Arc<Collector> {
        let views: Vec<Arc<dyn View>> = vec![Arc::new(crate::views::raw::RawView::default())];
        Self::with_views(registry, client, interval, concurrency, views)
    }

    /// A collector that hands every body to `views`.
    pub fn with_views(
        registry: Arc<Registry>,
        client: ShimClient,
        interval: Duration,
        concurrency: usize,
        views: Vec<Arc<dyn View>>,
    ) -> Arc<Collector> {
        Arc::new(Collector {
            registry,
            client,
            views: views.into(),
            interval,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            slots: Mutex::new(HashMap::new()),
            stats: CollectorStats::default(),
        })
    }

    /// A share of `--shim-concurrency` for a one-off shim request
    /// (`?sandbox=`, `/agent-url`), so they cannot swamp the shims either.
    pub async fn shim_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.permits.acquire().await.ok()
    }

    /// The views every body is handed to.
    pub fn views(&self) -> &[Arc<dyn View>] {
        &self.views
    }

    /// Longest a request waits for shims.
    pub fn deadline(&self) -> Duration {
        self.client.timeout * 2 + Duration::from_secs(1)
    }

    /// Collects every discovered sandbox (see the module docs).
    pub async fn collect(self: &Arc<Self>) -> Collection {
        let requested = Instant::now();
        let sandboxes = self.registry.list();
        let slots = self.slots_for(&sandboxes);
        let handles: Vec<_> = sandboxes
            .iter()
            .zip(&slots)
            .map(|(sb, slot)| {
                let this = self.clone();
                let (sb, slot) = (sb.clone(), slot.clone());
                tokio::spawn(async move { this.scrape(sb, slot, requested).await })
            })
            .collect();
        let preparing: Vec<_> = self
            .views
            .iter()
            .map(|v| v.prepare(requested, &sandboxes).map(tokio::spawn))
            .collect();
        let deadline = requested + self.deadline();
        let mut out = Vec::with_capacity(sandboxes.len());
        for ((sandbox, slot), handle) in sandboxes.into_iter().zip(slots).zip(handles) {
            let result = match tokio::time::timeout_at(deadline, handle).await {
                Ok(Ok(r)) => Some(r),
                _ => None,
            };
            let meta = match &result {
                Some(r) => r.meta.clone(),
                None => self.registry.meta(&sandbox.id),
            };
            out.push(SandboxScrape {
                sandbox,
                slot,
                meta,
                result,
            });
        }
        let mut prepared = Vec::with_capacity(preparing.len());
        for handle in preparing {
            prepared.push(match handle {
                Some(handle) => tokio::time::timeout_at(deadline, handle)
                    .await
                    .ok()
                    .and_then(|r| r.ok()),
                None => None,
            });
        }
        Collection {
            sandboxes: out,
            prepared,
            duration: requested.elapsed(),
        }
    }

    /// Scrapes one sandbox now, sharing with concurrent callers (used by
    /// the aggregate path only; `?sandbox=` reads the shim directly).
    async fn scrape(
        &self,
        sb: Arc<Sandbox>,
        slot: Arc<Slot>,
        requested: Instant,
    ) -> Arc<ScrapeResult> {
        let mut last = slot.last.lock().await;
        let meta = self.registry.meta(&sb.id);
        if let Some(prev) = last.as_ref() {
            let fresh = prev.started >= requested || prev.finished.elapsed() < self.interval;
            if fresh && prev.meta == meta {
                return prev.clone();
            }
        }
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = self.permits.acquire().await.ok();
        let started = Instant::now();
        slot.attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.client.get(&sb.socket, "/metrics").await {
            Ok(resp) => {
                // Parsing and rendering are CPU work proportional to what
                // the shim sent: keep them off the async workers.
                let (sandbox, m, views) = (sb.clone(), meta.clone(), self.views.clone());
                let body = resp.body;
                let at = Instant::now();
                match tokio::task::spawn_blocking(move || {
                    exposition::digest(&body, &sandbox, m.as_deref(), &views, at)
                })
                .await
                {
                    Ok(exp) => self.judge(&slot, &sb.id, exp),
                    Err(e) => Err(ScrapeFailure {
                        reason: "internal",
                        message: format!("parsing the body failed: {e}"),
                    }),
                }
            }
            Err(e) => Err(ScrapeFailure {
                reason: e.reason(),
                message: e.to_string(),
            }),
        };
        let was_ok = last.as_ref().map(|r| r.ok());
        if let Err(f) = &outcome {
            slot.failures.fetch_add(1, Ordering::Relaxed);
            self.stats.shim_failures.fetch_add(1, Ordering::Relaxed);
            if slot.log_limit.allow() {
                tracing::warn!(sandbox_id = %sb.id, reason = f.reason, error = %f.message, "shim scrape failed");
            }
        } else if was_ok == Some(false) {
            tracing::info!(sandbox_id = %sb.id, "shim scrape recovered");
        }
        let result = Arc::new(ScrapeResult {
            finished_at: std::time::SystemTime::now(),
            started,
            finished: Instant::now(),
            meta,
            outcome,
        });
        *last = Some(result.clone());
        *slot.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(result.clone());
        result
    }

    /// The last finished scrape of a sandbox, without scraping.
    pub fn latest(&self, id: &str) -> Option<Arc<ScrapeResult>> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get(id)?;
        let latest = slot.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.clone()
    }

    /// Counts what a parsed body cost and decides whether it is a usable
    /// scrape.
    fn judge(
        &self,
        slot: &Slot,
        id: &str,
        exp: ShimExposition,
    ) -> Result<ShimExposition, ScrapeFailure> {
        slot.parse_errors
            .fetch_add(u64::from(exp.parse_errors), Ordering::Relaxed);
        self.stats
            .dropped_families
            .fetch_add(u64::from(exp.dropped_families), Ordering::Relaxed);
        self.stats
            .colliding_families
            .fetch_add(u64::from(exp.colliding_families), Ordering::Relaxed);
        self.stats
            .label_limit_samples
            .fetch_add(u64::from(exp.label_limit_samples), Ordering::Relaxed);
        if exp.parse_errors > 0 && slot.log_limit.allow() {
            tracing::warn!(sandbox_id = %id, skipped_lines = exp.parse_errors,
                first = %exp.first_errors.iter().map(|(line, why)| format!("line {line}: {why}")).collect::<Vec<_>>().join("; "),
                "shim metrics had malformed lines; they were skipped");
        }
        if exp.over_limit {
            Err(ScrapeFailure {
                reason: "too_many_samples",
                message: format!(
                    "{} samples, more than the {} accepted from one shim",
                    exp.samples,
                    exposition::MAX_SHIM_SAMPLES
                ),
            })
        } else if exp.samples == 0 {
            Err(ScrapeFailure {
                reason: "parse",
                message: format!("no valid sample ({} malformed lines)", exp.parse_errors),
            })
        } else {
            Ok(exp)
        }
    }

    /// Slots of the given sandboxes; slots of vanished sandboxes are freed.
    fn slots_for(&self, sandboxes: &[Arc<Sandbox>]) -> Vec<Arc<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Always prune: under churn as many sandboxes come as go, and a
        // stale slot holds a whole rendered exposition.
        let live: std::collections::HashSet<&str> =
            sandboxes.iter().map(|s| s.id.as_str()).collect();
        slots.retain(|id, _| live.contains(id.as_str()));
        sandboxes
            .iter()
            .map(|s| slots.entry(s.id.clone()).or_default().clone())
            .collect()
    }

    /// Heap held by cached renders (for the agent's own metrics).
    pub fn cached_bytes(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .values()
            .filter_map(|s| {
                let latest = s.latest.lock().unwrap_or_else(|e| e.into_inner());
                latest
                    .as_ref()
                    .and_then(|r| r.outcome.as_ref().ok())
                    .map(|e| e.heap_bytes())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RuntimeKind;
    use crate::registry::SHIM_SOCKET;

    /// A fake shim at `path` answering `x 1` after `delay`.
    fn shim(path: std::path::PathBuf, delay: Duration) -> testbed::FakeBody {
        testbed::FakeBody::new("x 1\n")
            .delay(delay)
            .serve_unix(&path)
    }

    fn add(reg: &Registry, dir: &std::path::Path, id: &str) -> std::path::PathBuf {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        let socket = dir.join(id).join(SHIM_SOCKET);
        reg.insert(Sandbox {
            id: id.into(),
            root: dir.into(),
            socket: socket.clone(),
            runtime: RuntimeKind::Go,
            discovered_at: std::time::SystemTime::now(),
        });
        socket
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_scrape_and_interval_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let fake = shim(add(&reg, dir.path(), "a"), Duration::from_millis(200));
        let c = Collector::new(
            reg,
            ShimClient::new(Duration::from_secs(2), 1 << 20),
            Duration::from_secs(60),
            4,
        );
        let (r1, r2, r3) = tokio::join!(c.collect(), c.collect(), c.collect());
        assert_eq!(fake.hits(), 1);
        for r in [&r1, &r2, &r3] {
            assert!(r.sandboxes[0].result.as_ref().unwrap().ok());
        }
        // Younger than the interval: reused, no new request to the shim.
        c.collect().await;
        assert_eq!(fake.hits(), 1);
    }

    #[tokio::test]
    async fn slots_of_replaced_sandboxes_are_freed() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let _fake = shim(add(&reg, dir.path(), "old"), Duration::ZERO);
        let c = Collector::new(
            reg.clone(),
            ShimClient::new(Duration::from_secs(2), 1 << 20),
            Duration::from_secs(60),
            4,
        );
        c.collect().await;
        assert!(c.latest("old").is_some());
        // Churn: one sandbox goes, another comes; the count stays the same.
        reg.remove_from_root("old", dir.path());
        let _fake = shim(add(&reg, dir.path(), "new"), Duration::ZERO);
        c.collect().await;
        assert!(c.latest("old").is_none(), "stale slot kept");
        assert!(c.latest("new").is_some());
    }

    #[tokio::test]
    async fn short_interval_scrapes_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let fake = shim(add(&reg, dir.path(), "a"), Duration::ZERO);
        let c = Collector::new(
            reg,
            ShimClient::new(Duration::from_secs(2), 1 << 20),
            Duration::from_millis(1),
            4,
        );
        c.collect().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.collect().await;
        assert_eq!(fake.hits(), 2);
    }

    #[tokio::test]
    async fn slow_shim_does_not_hold_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let _fake = shim(add(&reg, dir.path(), "fast"), Duration::ZERO);
        let _fake = shim(add(&reg, dir.path(), "slow"), Duration::from_secs(30));
        add(&reg, dir.path(), "gone"); // no socket at all
        let c = Collector::new(
            reg,
            ShimClient::new(Duration::from_millis(300), 1 << 20),
            Duration::from_millis(1),
            4,
        );
        let started = std::time::Instant::now();
        let col = c.collect().await;
        assert!(started.elapsed() < c.deadline() + Duration::from_millis(500));
        let by_id: HashMap<&str, &SandboxScrape> = col
            .sandboxes
            .iter()
            .map(|s| (s.sandbox.id.as_str(), s))
            .collect();
        assert!(by_id["fast"].result.as_ref().unwrap().ok());
        let slow = by_id["slow"].result.as_ref().unwrap();
        assert_eq!(slow.outcome.as_ref().unwrap_err().reason, "timeout");
        let gone = by_id["gone"].result.as_ref().unwrap();
        assert_eq!(gone.outcome.as_ref().unwrap_err().reason, "connect");
        assert_eq!(c.stats.shim_failures.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn changed_cri_metadata_invalidates_a_cached_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let fake = shim(add(&reg, dir.path(), "a"), Duration::ZERO);
        let c = Collector::new(
            reg.clone(),
            ShimClient::new(Duration::from_secs(2), 1 << 20),
            Duration::from_secs(60),
            4,
        );
        c.collect().await;
        c.collect().await;
        assert_eq!(fake.hits(), 1, "reused within the interval");
        let meta = PodMeta {
            uid: "u".into(),
            name: "web".into(),
            namespace: "shop".into(),
            runtime_handler: "kata".into(),
            ready: true,
        };
        reg.apply_cri(HashMap::from([("a".to_string(), meta.clone())]));
        let col = c.collect().await;
        assert_eq!(fake.hits(), 2, "the labels are rendered in: scraped again");
        let result = col.sandboxes[0].result.as_ref().unwrap();
        assert_eq!(result.meta.as_deref(), Some(&meta));
    }

    #[tokio::test]
    async fn a_scrape_outliving_the_request_serves_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let fakes: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| shim(add(&reg, dir.path(), id), Duration::from_millis(1100)))
            .collect();
        // One shim at a time, 1.1 s each, and a deadline of 2 x 1.5 s + 1 s
        // = 4 s: the fourth scrape ends after it.
        let c = Collector::new(
            reg,
            ShimClient::new(Duration::from_millis(1500), 1 << 20),
            Duration::from_secs(60),
            1,
        );
        let first = c.collect().await;
        let late = first
            .sandboxes
            .iter()
            .filter(|s| s.result.is_none())
            .count();
        assert_eq!(late, 1, "one shim reported as not done");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let second = c.collect().await;
        assert!(second
            .sandboxes
            .iter()
            .all(|s| s.result.as_ref().is_some_and(|r| r.ok())));
        let hits: usize = fakes.iter().map(|f| f.hits()).sum();
        assert_eq!(
            hits, 4,
            "the late scrape finished in the background, not again"
        );
    }
}
