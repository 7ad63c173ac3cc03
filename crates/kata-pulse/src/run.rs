//! Wires the tasks together and serves until a signal arrives.
//!
//! SIGTERM and SIGINT stop the agent gracefully (no new connections,
//! in-flight responses get `--shutdown-grace-period`); SIGHUP re-reads
//! `--web.config.file` (without one it is logged and ignored).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
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
    let listener = bind(config.listen_address, "--listen-address").await?;
    let probe = match config.probe_listen_address {
        Some(addr) => Some(bind(addr, "--probe-listen-address").await?),
        None => None,
    };
    let web = match &config.web_config_file {
        Some(path) => Some(Arc::new(http::web_config::WebConfig::load(path).map_err(
            |e| StartupError(format!("invalid --web.config.file {}: {e}", path.display())),
        )?)),
        None => None,
    };
    // Installed before serving, so SIGHUP never takes the default action
    // (terminate).
    let hangups = hangup_handler(web.clone())?;
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
    // Nothing depends on it: if it ever stopped, only the heap figures
    // would stand still.
    tokio::spawn(crate::allocator::sample_periodically());
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
        metrics_clients: http::metrics_clients(),
    });
    let (stop, stopped) = watch::channel(false);
    let result = supervise(
        http::serve(listener, probe, app, web, stopped),
        discovery,
        labeller,
        shutdown_signal(),
        stop,
    )
    .await;
    hangups.abort();
    result
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener, StartupError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process (a kata-monitor, another kata-pulse?) listens there: \
                 stop it or pick another address"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "; that address is not one of this host's (use 0.0.0.0:PORT for all)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
            }
            _ => "",
        };
        StartupError(format!("cannot listen on {addr} ({flag}): {e}{hint}"))
    })
}

/// SIGHUP re-reads the web config, or is logged and ignored.
fn hangup_handler(
    web: Option<Arc<http::web_config::WebConfig>>,
) -> Result<JoinHandle<()>, StartupError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| StartupError(format!("cannot handle SIGHUP: {e}")))?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &web {
                Some(web) => {
                    tracing::info!("SIGHUP: re-reading --web.config.file");
                    web.reload();
                }
                None => tracing::info!("SIGHUP ignored: there is no --web.config.file to re-read"),
            }
        }
    }))
}

/// Serves until `shutdown`, then tells the server to `stop` and waits for
/// its drain (bounded by the grace period; discovery and labelling keep
/// running meanwhile for the responses in flight). The background tasks
/// restart themselves ([`restart::keep_running`]), so if one still ends
/// that is an error: the agent exits and its supervisor restarts it
/// instead of it serving a frozen view.
async fn supervise(
    serving: impl std::future::Future<Output = std::io::Result<()>>,
    mut discovery: JoinHandle<()>,
    mut labeller: JoinHandle<()>,
    shutdown: impl std::future::Future<Output = ()>,
    stop: watch::Sender<bool>,
) -> anyhow::Result<()> {
    tokio::pin!(serving);
    let result = tokio::select! {
        r = &mut serving => r.map_err(anyhow::Error::from),
        r = &mut discovery => Err(anyhow::anyhow!("sandbox discovery stopped: {r:?}")),
        r = &mut labeller => Err(anyhow::anyhow!("CRI labelling stopped: {r:?}")),
        _ = shutdown => {
            tracing::info!("shutting down: no new connections, finishing the responses in flight");
            let _ = stop.send(true);
            let r = serving.await.map_err(anyhow::Error::from);
            tracing::info!("stopped");
            r
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
        let err = supervise(
            serving,
            panicked,
            forever(),
            pending(),
            watch::channel(false).0,
        )
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
        let err = supervise(
            pending(),
            discovery,
            ended,
            pending(),
            watch::channel(false).0,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("CRI labelling stopped"), "{err}");
        // The other task does not outlive the agent.
        tokio::task::yield_now().await;
        assert!(watched.is_finished());
    }

    /// A signal tells the server to stop and waits for its drain, during
    /// which the background tasks still run; then they are stopped too.
    #[tokio::test]
    async fn a_signal_stops_serving_and_waits_for_the_drain() {
        let discovery = forever();
        let watched = discovery.abort_handle();
        let (stop, mut stopped) = watch::channel(false);
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serving = {
            let drained = drained.clone();
            let watched = watched.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
                // Draining: discovery is still there for the responses in flight.
                tokio::task::yield_now().await;
                assert!(!watched.is_finished());
                drained.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        };
        supervise(serving, discovery, forever(), async {}, stop)
            .await
            .unwrap();
        assert!(drained.load(std::sync::atomic::Ordering::SeqCst));
        tokio::task::yield_now().await;
        assert!(watched.is_finished());
    }
}
