//! Wiring: check the configuration (exit 2 on anything unusable), connect,
//! then run the reflector, the webhook, the queue worker, the health
//! listener and (while leading) the controller until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::alert::Notification;
use crate::api::AlertReaction;
use crate::auth::Auth;
use crate::config::Config;
use crate::controller;
use crate::events::Events;
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Metrics;
use crate::tls::TlsConfig;
use crate::trigger::{Engine, EngineConfig};
use crate::webhook::{Queued, Webhook};

/// Time queued notifications get to be processed after a stop signal.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(15);

pub fn main(cfg: Config) -> ExitCode {
    if let Err(e) = init_logging(&cfg) {
        eprintln!("karo: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("karo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal::Config(e)) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
        Err(Fatal::Runtime(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Fatal {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}

fn init_logging(cfg: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(match cfg.log_level.as_str() {
        "warning" => "warn",
        other => other,
    })
    .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", cfg.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn run(mut cfg: Config) -> Result<(), Fatal> {
    cfg.apply_env_port().map_err(Fatal::Config)?;
    let auth = Auth::new(
        cfg.webhook_token_file.clone(),
        cfg.webhook_basic_auth_file.clone(),
        cfg.insecure_no_auth,
    )
    .map_err(Fatal::Config)?;
    if cfg.insecure_no_auth {
        tracing::warn!("--insecure-no-auth: anyone who reaches the webhook can create Jobs");
    }
    let tls = match (&cfg.webhook_tls_cert_file, &cfg.webhook_tls_key_file) {
        (Some(c), Some(k)) => Some(Arc::new(
            TlsConfig::new(c.clone(), k.clone()).map_err(Fatal::Config)?,
        )),
        _ => None,
    };
    let webhook_listener = TcpListener::bind(cfg.webhook_address).await.map_err(|e| {
        Fatal::Config(anyhow::anyhow!(
            "--webhook-address {}: {e}",
            cfg.webhook_address
        ))
    })?;
    let health_listener = TcpListener::bind(cfg.health_address).await.map_err(|e| {
        Fatal::Config(anyhow::anyhow!(
            "--health-address {}: {e}",
            cfg.health_address
        ))
    })?;

    let kube_cfg = kube::Config::infer().await.map_err(|e| {
        Fatal::Config(anyhow::anyhow!(
            "no Kubernetes configuration (in-cluster or kubeconfig): {e}"
        ))
    })?;
    let lease_ns = cfg
        .leader_election_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| kube_cfg.default_namespace.clone());
    let client = Client::try_from(kube_cfg).map_err(|e| Fatal::Config(e.into()))?;
    let identity = Config::identity();
    let metrics = Arc::new(Metrics::new());
    let events = Events::new(client.clone(), identity.clone(), metrics.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = watch::channel(false);
    let (reader, writer) = reflector::store::<AlertReaction>();
    let reflector_task = tokio::spawn(
        reflector(writer, watcher(scoped::<AlertReaction>(&client, &cfg.watch_namespace), watcher::Config::default()))
            .default_backoff()
            .for_each(|ev| async move {
                if let Err(e) = ev {
                    tracing::warn!(error = %e, "AlertReaction watch failed (is the CRD installed? does karo have RBAC for it?)");
                }
            }),
    );
    {
        let reader = reader.clone();
        tokio::spawn(async move {
            if reader.wait_until_ready().await.is_ok() {
                tracing::info!("AlertReactions synced; accepting webhooks");
                let _ = ready_tx.send(true);
            }
        });
    }

    let (queue_tx, mut queue_rx) = mpsc::channel::<Queued>(cfg.queue_capacity as usize);
    let engine_cfg = EngineConfig {
        api_timeout: cfg.api_timeout,
        episode_retention: cfg.episode_retention,
        identity: identity.clone(),
    };
    let engine = Arc::new(Engine::new(
        client.clone(),
        reader,
        events.clone(),
        metrics.clone(),
        engine_cfg,
    ));
    let worker = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            while let Some(queued) = queue_rx.recv().await {
                metrics.queue_depth.dec();
                // Checked when it was accepted; parsed again here so the queue
                // holds compact bytes, not the parsed form.
                match Notification::parse(&queued.body) {
                    Ok(n) => engine.process(&n).await,
                    Err(e) => tracing::warn!(error = %e, "queued notification unreadable"),
                }
            }
        })
    };

    let webhook = Arc::new(Webhook::new(
        Arc::new(auth),
        queue_tx,
        ready_rx.clone(),
        metrics.clone(),
        cfg.webhook_max_body_bytes as usize,
        cfg.queue_max_bytes as usize,
    ));
    tracing::info!(address = %cfg.webhook_address, tls = tls.is_some(), path = %cfg.webhook_path, "webhook listening");
    let webhook_server = tokio::spawn(crate::server::serve(
        webhook_listener,
        crate::webhook::router(&cfg.webhook_path, webhook),
        tls,
        stop_rx.clone(),
    ));
    tracing::info!(address = %cfg.health_address, "health and metrics listening");
    let health_server = tokio::spawn(crate::server::serve(
        health_listener,
        crate::health::router(metrics.clone(), ready_rx),
        None,
        stop_rx.clone(),
    ));

    let ctx = Arc::new(controller::Ctx {
        client: client.clone(),
        namespace: cfg.watch_namespace.clone(),
        events,
        metrics: metrics.clone(),
        api_timeout: cfg.api_timeout,
    });
    let leading = if cfg.leader_elect {
        let (leader_tx, leader_rx) = watch::channel(false);
        let lease = LeaseConfig {
            namespace: lease_ns.clone(),
            name: cfg.leader_election_id.clone(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            api_timeout: cfg.api_timeout.min(Duration::from_secs(5)),
        };
        tracing::info!(namespace = %lease_ns, lease = %cfg.leader_election_id, %identity, "leader election on");
        let elector =
            tokio::spawn(Elector::new(client.clone(), lease).run(leader_tx, stop_rx.clone()));
        tokio::spawn(follow_leadership(leader_rx, ctx, metrics.clone()));
        Some(elector)
    } else {
        metrics.leader.set(1);
        tokio::spawn(controller::run(ctx));
        None
    };

    let failed = tokio::select! {
        s = shutdown_signal() => {
            tracing::info!("stopping: {s}");
            None
        }
        _ = reflector_task => Some(anyhow::anyhow!("the AlertReaction watch ended")),
    };
    let _ = stop_tx.send(true);
    let _ = webhook_server.await;
    let _ = health_server.await;
    // The webhook's queue sender is gone with its server: the worker drains
    // what was accepted, then ends.
    if tokio::time::timeout(SHUTDOWN_DRAIN, worker).await.is_err() {
        tracing::warn!("queued notifications left unprocessed at shutdown");
    }
    if let Some(elector) = leading {
        let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    }
    failed.map_or(Ok(()), |e| Err(Fatal::Runtime(e)))
}

/// All namespaces, or the one `--watch-namespace` names.
pub fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller exactly while this replica leads.
async fn follow_leadership(
    mut leader: watch::Receiver<bool>,
    ctx: Arc<controller::Ctx>,
    metrics: Arc<Metrics>,
) {
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let leading = *leader.borrow_and_update();
        match (leading, running.is_some()) {
            (true, false) => {
                metrics.leader.set(1);
                running = Some(tokio::spawn(controller::run(ctx.clone())));
            }
            (false, true) => {
                metrics.leader.set(0);
                if let Some(h) = running.take() {
                    h.abort();
                }
            }
            _ => {}
        }
        if leader.changed().await.is_err() {
            if let Some(h) = running.take() {
                h.abort();
            }
            return;
        }
    }
}

async fn shutdown_signal() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM".into(),
        _ = int.recv() => "SIGINT".into(),
    }
}
