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

        // A new sandbox is labelled at once, not after the 30 s refresh.
        let t = std::time::Instant::now();
        registry.insert(sandbox("s2"));
        assert!(eventually(|| registry.meta("s2").is_some()).await);
        assert!(t.elapsed() < Duration::from_secs(3));
        task.abort();
        server.abort();
    }
}
