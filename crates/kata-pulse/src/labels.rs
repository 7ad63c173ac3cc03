//! Keeps the registry's pod metadata in step with CRI.
//!
//! Runs beside discovery and scrapes, never in their way: a CRI outage only
//! means empty `cri_*` labels until it answers again. It asks CRI
//! - at once when a sandbox without metadata appears,
//! - with growing back-off while CRI fails (0.5 s up to 10 s),
//! - again soon while some sandbox is still unknown (1 s doubling to 30 s;
//!   kata-monitor asked every 5 s forever),
//! - every 30 s otherwise, so renamed or re-created pods are seen.

use std::sync::Arc;
use std::time::Duration;

use crate::cri::{CriClient, CriStats};
use crate::registry::Registry;

const REFRESH: Duration = Duration::from_secs(30);
const ERROR_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));
const UNKNOWN_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), REFRESH);
/// Floor between two calls, so a burst of new sandboxes is one call.
const MIN_GAP: Duration = Duration::from_millis(200);

/// Runs until the task is dropped.
pub async fn run(client: CriClient, registry: Arc<Registry>, stats: Arc<CriStats>) {
    let mut error_delay = ERROR_BACKOFF.0;
    let mut unknown_delay = UNKNOWN_BACKOFF.0;
    let mut was_up: Option<bool> = None;
    loop {
        let wait = match client.list_pod_sandboxes().await {
            Ok(pods) => {
                stats.record(true);
                if was_up == Some(false) {
                    tracing::info!("CRI runtime answers again");
                }
                was_up = Some(true);
                error_delay = ERROR_BACKOFF.0;
                for id in registry.apply_cri(pods) {
                    match registry.meta(&id) {
                        Some(m) => tracing::info!(sandbox_id = %id, cri_name = %m.name,
                            cri_namespace = %m.namespace, cri_uid = %m.uid,
                            runtime_handler = %m.runtime_handler, "sandbox labelled from CRI"),
                        None => {
                            tracing::debug!(sandbox_id = %id, "CRI no longer knows this sandbox")
                        }
                    }
                }
                let unknown = registry.unlabelled_ids();
                if unknown.is_empty() {
                    unknown_delay = UNKNOWN_BACKOFF.0;
                    REFRESH
                } else {
                    tracing::debug!(
                        count = unknown.len(),
                        "sandboxes still without CRI metadata"
                    );
                    let d = unknown_delay;
                    unknown_delay = (unknown_delay * 2).min(UNKNOWN_BACKOFF.1);
                    d
                }
            }
            Err(e) => {
                stats.record(false);
                if was_up != Some(false) {
                    tracing::warn!(error = %e, "CRI runtime unavailable; sandboxes are served with empty cri_* labels until it answers");
                } else {
                    tracing::debug!(error = %e, "CRI runtime still unavailable");
                }
                was_up = Some(false);
                let d = error_delay;
                error_delay = (error_delay * 2).min(ERROR_BACKOFF.1);
                d
            }
        };
        tokio::select! {
            _ = stats.went_down.notified() => {}
            _ = registry.wait_unlabelled() => {
                // A new sandbox: ask now, unless CRI is known to be down.
                if was_up == Some(false) {
                    tokio::time::sleep(error_delay.min(wait)).await;
                }
                unknown_delay = UNKNOWN_BACKOFF.0;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::tests::{pod, serve, FakeCri};
    use crate::registry::{RuntimeKind, Sandbox};
    use std::sync::atomic::Ordering;
    use std::time::SystemTime;

    use cri_api::runtime::v1::PodSandboxState;

    fn sandbox(id: &str) -> Sandbox {
        Sandbox {
            id: id.into(),
            root: "/r".into(),
            socket: "/r/x/shim-monitor.sock".into(),
            runtime: RuntimeKind::Go,
            discovered_at: SystemTime::UNIX_EPOCH,
        }
    }

    async fn eventually(f: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn labels_arrive_when_cri_comes_up_and_new_sandboxes_are_asked_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("cri.sock");
        let endpoint = cri_api::Endpoint::Unix(sock.clone());
        let client = CriClient::new(&endpoint, Duration::from_millis(500)).unwrap();
        let registry = Registry::new();
        let stats = Arc::new(CriStats::default());
        registry.insert(sandbox("s1"));
        let task = tokio::spawn(run(client, registry.clone(), stats.clone()));

        // CRI down: failures are counted, the sandbox stays unlabelled.
        assert!(eventually(|| stats.requests_failed.load(Ordering::Relaxed) >= 1).await);
        assert!(!stats.up.load(Ordering::Relaxed));
        assert!(registry.meta("s1").is_none());

        // CRI up: labelled within the back-off.
        let fake = FakeCri {
            pods: vec![
                pod("s1", PodSandboxState::SandboxReady, "kata"),
                pod("s2", PodSandboxState::SandboxReady, "kata"),
                pod("other", PodSandboxState::SandboxReady, "runc"),
            ],
            ..Default::default()
        };
        let server = serve(fake, &sock);
        assert!(eventually(|| registry.meta("s1").is_some()).await);
        assert_eq!(registry.meta("s1").unwrap().name, "pod-s1");
        assert!(stats.up.load(Ordering::Relaxed));
        assert!(
            registry.meta("other").is_none(),
            "non-sandbox pods are not kept"
        );

        // A new sandbox is labelled at once, not after the 30 s refresh
        // (`eventually` gives up after 5 s).
        registry.insert(sandbox("s2"));
        assert!(eventually(|| registry.meta("s2").is_some()).await);
        task.abort();
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_cri_is_asked_with_growing_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let ep = cri_api::Endpoint::Unix(dir.path().join("absent.sock"));
        let client = CriClient::new(&ep, Duration::from_secs(2)).unwrap();
        let stats = Arc::new(CriStats::default());
        let task = tokio::spawn(run(client, Registry::new(), stats.clone()));
        let started = tokio::time::Instant::now();
        // Calls at 0, then after 0.5 s, 1 s, 2 s, 4 s, 8 s, 10 s, 10 s of
        // back-off, each plus the 0.2 s gap: 0, 0.7, 1.9, 4.1, 8.3, 16.5,
        // 26.7 s.
        for (at, calls) in [
            (0.1, 1),
            (0.6, 1),
            (0.8, 2),
            (1.8, 2),
            (2.0, 3),
            (4.0, 3),
            (4.2, 4),
            (8.2, 4),
            (8.4, 5),
            (16.4, 5),
            (16.6, 6),
            (26.6, 6),
            (26.8, 7),
        ] {
            tokio::time::sleep_until(started + Duration::from_secs_f64(at)).await;
            assert_eq!(
                stats.requests_failed.load(Ordering::Relaxed),
                calls,
                "calls by {at} s"
            );
        }
        task.abort();
    }
}
