//! Wires the tasks together and serves until a signal arrives.

use std::sync::Arc;

use crate::collect::Collector;
use crate::config::Config;
use crate::cri::CriClient;
use crate::cri::CriStats;
use crate::discovery::{self, DiscoveryStats};
use crate::http::{self, App};
use crate::labels;
use crate::registry::Registry;
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

    let discovery = tokio::spawn(discovery::run(
        config.sandbox_roots.clone(),
        registry.clone(),
        discovery_stats.clone(),
    ));
    let labeller = tokio::spawn(labels::run(cri, registry.clone(), cri_stats.clone()));
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
    let mut discovery = discovery;
    let mut labeller = labeller;
    // The background tasks run forever; if one ends (a panic), exit so the
    // supervisor restarts the agent instead of serving a frozen view.
    let result = tokio::select! {
        r = http::serve(listener, app) => r.map_err(anyhow::Error::from),
        r = &mut discovery => Err(anyhow::anyhow!("sandbox discovery stopped: {r:?}")),
        r = &mut labeller => Err(anyhow::anyhow!("CRI labelling stopped: {r:?}")),
        _ = shutdown_signal() => {
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
