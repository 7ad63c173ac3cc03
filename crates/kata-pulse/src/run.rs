//! Wires the tasks together and serves until a signal arrives.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::collect::Collector;
use crate::config::Config;
use crate::cri::CriClient;
use crate::cri::CriStats;
use crate::discovery::{self, DiscoveryStats};
use crate::http::{self, App};
use crate::incidents;
use crate::labels;
use crate::registry::Registry;
use crate::restart;
use crate::self_metrics::RequestStats;
use crate::shim_client::ShimClient;
use crate::views;

/// The agent could not start with this configuration (the listen address is
/// taken, ...): like an invalid flag, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Runs the agent; returns when SIGINT/SIGTERM arrives or serving fails.
/// Errors that stop it from starting are [`StartupError`]s.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "; another process (a kata-monitor, another kata-pulse?) listens there: \
                     stop it or pick another --listen-address"
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "; that address is not one of this host's (use 0.0.0.0:PORT for all)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
                }
                _ => "",
            };
            StartupError(format!(
                "cannot listen on {}: {e}{hint}",
                config.listen_address
            ))
        })?;
    let registry = Registry::new();
    let discovery_stats = Arc::new(DiscoveryStats::default());
    let cri_stats = Arc::new(CriStats::default());
    let shim = ShimClient::new(config.shim_timeout, config.max_shim_body_bytes);
    let cri = CriClient::new(&config.runtime_endpoint, config.cri_timeout)
        .map_err(|e| StartupError(format!("invalid CRI endpoint: {e}")))?;
    let collector = Collector::with_views(
        registry.clone(),
        shim.clone(),
        config.metrics_interval,
        config.shim_concurrency,
        views::for_config(&config, &cri, &cri_stats),
    );

    let discovery = {
        let (roots, registry, stats) = (
            config.sandbox_roots.clone(),
            registry.clone(),
            discovery_stats.clone(),
        );
        tokio::spawn(restart::keep_running(
            "discovery",
            &incidents::DISCOVERY_RESTARTS,
            move || discovery::run(roots.clone(), registry.clone(), stats.clone()),
        ))
    };
    let labeller = {
        let (registry, stats) = (registry.clone(), cri_stats.clone());
        tokio::spawn(restart::keep_running(
            "labeller",
            &incidents::LABELLER_RESTARTS,
            move || labels::run(cri.clone(), registry.clone(), stats.clone()),
        ))
    };
    tracing::info!(
        listen_address = %config.listen_address,
        runtime_endpoint = %config.runtime_endpoint,
        sandbox_dirs = %config.sandbox_roots.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>().join(","),
        metrics_interval_secs = config.metrics_interval.as_secs(),
        debug_proxy = config.enable_debug_proxy,
        kata_metrics = config.kata_metrics,
        cadvisor_metrics = config.cadvisor_metrics,
        "kata-pulse serving"
    );
    let app = Arc::new(App {
        config,
        registry,
        collector,
        shim,
        discovery: discovery_stats,
        cri: cri_stats,
        requests: Arc::new(RequestStats::default()),
        metrics_builds: Arc::new(tokio::sync::Semaphore::new(http::CONCURRENT_METRICS)),
    });
    supervise(
        http::serve(listener, app),
        discovery,
        labeller,
        shutdown_signal(),
    )
    .await
}

/// Serves until `shutdown`. The background tasks restart themselves
/// ([`restart::keep_running`]), so if one still ends that is an error: the
/// agent exits and its supervisor restarts it instead of it serving a
/// frozen view.
async fn supervise(
    serving: impl std::future::Future<Output = std::io::Result<()>>,
    mut discovery: JoinHandle<()>,
    mut labeller: JoinHandle<()>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let result = tokio::select! {
        r = serving => r.map_err(anyhow::Error::from),
        r = &mut discovery => Err(anyhow::anyhow!("sandbox discovery stopped: {r:?}")),
        r = &mut labeller => Err(anyhow::anyhow!("CRI labelling stopped: {r:?}")),
        _ = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    discovery.abort();
    labeller.abort();
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    fn forever() -> JoinHandle<()> {
        tokio::spawn(pending())
    }

    /// A supervised task that still stops (here a panic) ends the agent
    /// with an error that is not a start-up one: main logs it and exits 1.
    #[tokio::test]
    async fn a_stopped_background_task_ends_the_agent_with_an_error() {
        let serving = pending::<std::io::Result<()>>();
        let panicked = tokio::spawn(async { panic!("lost the registry") });
        let err = supervise(serving, panicked, forever(), pending())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("sandbox discovery stopped"),
            "{err}"
        );
        assert!(err.downcast_ref::<StartupError>().is_none());

        let discovery = forever();
        let watched = discovery.abort_handle();
        let ended = tokio::spawn(async {});
        let err = supervise(pending(), discovery, ended, pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CRI labelling stopped"), "{err}");
        // The other task does not outlive the agent.
        tokio::task::yield_now().await;
        assert!(watched.is_finished());
    }

    #[tokio::test]
    async fn a_signal_ends_the_agent_cleanly() {
        let discovery = forever();
        let watched = discovery.abort_handle();
        supervise(pending(), discovery, forever(), async {})
            .await
            .unwrap();
        tokio::task::yield_now().await;
        assert!(watched.is_finished());
    }
}
