//! The HTTP server: kata-monitor's endpoints plus health and JSON views.
//!
//! Every request passes the same gates before a handler runs: its size
//! ([`limits`]), basic auth when the web config has users ([`basic_auth`]),
//! and a deadline for the whole response. Connections are bounded by
//! [`server`]; the probes can have a listener of their own, so a flood on
//! the main port never fails the kubelet's liveness probe.

pub mod basic_auth;
pub(crate) mod body;
mod debug;
mod index;
pub mod limits;
mod metrics;
mod negotiate;
mod per_ip;
mod sandboxes;
pub mod server;
mod stall;
pub mod status;
pub mod web_config;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::request::Parts;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::collect::Collector;
use crate::config::Config;
use crate::cri::CriStats;
use crate::discovery::DiscoveryStats;
use crate::registry::Registry;
use crate::sandbox_id;
use crate::self_metrics::RequestStats;
use crate::shim_client::{ShimClient, ShimResponse};
use server::Bounds;
use web_config::WebConfig;

/// Longest life of one connection (keep-alive included), so clients that
/// stop reading cannot hold connection slots; Prometheus simply reconnects.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Aggregate `/metrics` responses in flight (collected, then streamed to
/// their clients): each holds its per-request parts and one chunk.
pub(crate) const CONCURRENT_METRICS: usize = 8;
/// Of those, what one client address may hold: a client that stops
/// reading (until the write stall closes it) or opens many scrapes leaves
/// the other half to everyone else. Prometheus asks one at a time.
pub(crate) const METRICS_PER_CLIENT: usize = CONCURRENT_METRICS / 2;
/// The probe listener's bounds: the kubelet opens one connection per probe.
const PROBE_BOUNDS: Bounds = Bounds {
    max_connections: 16,
    max_per_ip: 16,
    header_timeout: Duration::from_secs(3),
    idle_timeout: Duration::from_secs(3),
    lifetime: Duration::from_secs(30),
    grace: Duration::from_secs(1),
};

/// The table of [`METRICS_PER_CLIENT`] slots.
pub(crate) fn metrics_clients() -> Arc<per_ip::PerIp> {
    Arc::new(per_ip::PerIp::new(METRICS_PER_CLIENT))
}

/// Shared state of all handlers.
pub struct App {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub collector: Arc<Collector>,
    pub shim: ShimClient,
    pub discovery: Arc<DiscoveryStats>,
    pub cri: Arc<CriStats>,
    pub requests: Arc<RequestStats>,
    /// Bounds aggregate `/metrics` builds in flight ([`CONCURRENT_METRICS`]).
    pub metrics_builds: Arc<Semaphore>,
    /// Aggregate responses in flight per client address
    /// ([`METRICS_PER_CLIENT`]).
    pub(crate) metrics_clients: Arc<per_ip::PerIp>,
}

pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/", get(index::index))
        .route("/metrics", get(metrics::metrics))
        .route("/sandboxes", get(sandboxes::sandboxes))
        .route("/agent-url", get(sandboxes::agent_url))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if app.config.enable_debug_proxy {
        r = r
            .route("/debug/vars", get(debug::proxy))
            .route("/debug/pprof", get(debug::redirect_index))
            .route("/debug/pprof/", get(debug::proxy))
            .route("/debug/pprof/{*rest}", get(debug::proxy));
    } else {
        r = r.route("/debug/{*rest}", get(debug::disabled));
    }
    r.fallback(not_found).with_state(app)
}

/// Serves the main listener (and the probe listener, if any) until `stop`
/// turns true, then lets in-flight responses finish within the grace
/// period.
pub async fn serve(
    listener: TcpListener,
    probe: Option<TcpListener>,
    app: Arc<App>,
    web: Option<Arc<WebConfig>>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = &app.config.server;
    // Profiles proxied by the debug endpoints may stream for minutes.
    let lifetime = if app.config.enable_debug_proxy {
        CONNECTION_LIFETIME + debug::MAX_PROFILE
    } else {
        CONNECTION_LIFETIME
    };
    let bounds = Bounds {
        max_connections: limits.max_connections,
        max_per_ip: limits.max_connections_per_ip,
        header_timeout: limits.header_timeout,
        idle_timeout: limits.idle_timeout,
        lifetime,
        grace: limits.shutdown_grace,
    };
    let main = server::serve(
        listener,
        service(app.clone(), web.clone()),
        web,
        bounds,
        stop.clone(),
    );
    match probe {
        None => main.await,
        Some(probe) => {
            let probes = server::serve(
                probe,
                probe_service(app),
                None,
                Bounds {
                    grace: bounds.grace.min(PROBE_BOUNDS.grace),
                    ..PROBE_BOUNDS
                },
                stop,
            );
            tokio::try_join!(main, probes).map(|_| ())
        }
    }
}

/// The response deadlines of `app`'s configuration.
fn deadlines(app: &App) -> limits::Deadlines {
    let normal = app.config.server.response_timeout;
    limits::Deadlines {
        normal,
        debug: debug::MAX_PROFILE + app.shim.timeout + normal,
    }
}

/// Every endpoint behind the request gates: sizes, then the deadline, then
/// basic auth (its wait inside the deadline).
pub fn service(app: Arc<App>, web: Option<Arc<WebConfig>>) -> Router {
    let deadlines = deadlines(&app);
    let mut r = router(app);
    if let Some(web) = web {
        let gate = basic_auth::Gate {
            web,
            auth: Arc::new(basic_auth::BasicAuth::default()),
        };
        r = r.layer(axum::middleware::from_fn_with_state(
            gate,
            basic_auth::require,
        ));
    }
    r.layer(axum::middleware::from_fn_with_state(
        deadlines,
        limits::deadline,
    ))
    .layer(axum::middleware::from_fn(limits::check_request))
}

/// `/healthz` and `/readyz` alone, for the probe listener: plain HTTP and
/// no auth (the kubelet has no credentials); they tell nothing secret.
fn probe_service(app: Arc<App>) -> Router {
    let deadlines = deadlines(&app);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(
            deadlines,
            limits::deadline,
        ))
        .layer(axum::middleware::from_fn(limits::check_request))
}

pub(crate) fn text_response(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn not_found() -> Response {
    text_response(
        StatusCode::NOT_FOUND,
        "404 page not found: see / for the endpoints\n",
    )
}

/// Alive while serving; with `--cri-unhealthy-after`, not alive once CRI
/// has been unreachable that long after having answered (a restart of the
/// container mounts the runtime's new socket).
async fn healthz(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    let limit = app.config.cri_unhealthy_after;
    if !limit.is_zero() {
        if let Some(down) = app.cri.down_for(crate::unix_ms()) {
            if down >= limit {
                return text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "CRI unreachable for {}s (a runtime restart replaces its socket; restarting mounts the new one)\n",
                        down.as_secs()
                    ),
                );
            }
        }
    }
    text_response(StatusCode::OK, "ok\n")
}

/// Ready once every sandbox folder was scanned, so a fresh agent never
/// serves an empty node as if it were the truth. CRI is not required: the
/// agent serves without it (empty cri_* labels).
async fn readyz(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    if app.discovery.initial_scan_done.load(Ordering::Acquire) {
        let mut body = String::from("ready\n");
        for root in app.discovery.missing_roots() {
            body.push_str(&format!(
                "sandbox folder {}: not present yet; watching for it\n",
                root.display()
            ));
        }
        text_response(StatusCode::OK, body)
    } else {
        text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "initial sandbox scan not finished\n",
        )
    }
}

/// What a handler can fail with; each is a status and a one-line text.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// No `sandbox=` (or an empty one) where one is needed.
    MissingSandbox,
    /// A `sandbox=` that is not a sandbox id.
    InvalidSandbox(String),
    /// A valid id of no running sandbox.
    UnknownSandbox(String),
    /// A query the endpoints cannot take (400), with why.
    BadQuery(String),
    /// The shim failed to answer (502), with what happened.
    Shim(String),
    /// The agent failed (500).
    Internal(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            HttpError::MissingSandbox => (
                StatusCode::BAD_REQUEST,
                "missing query parameter: sandbox=<sandbox id>".to_string(),
            ),
            HttpError::InvalidSandbox(why) => (
                StatusCode::BAD_REQUEST,
                format!("invalid sandbox id: {why}"),
            ),
            HttpError::UnknownSandbox(id) => (
                StatusCode::NOT_FOUND,
                format!("sandbox {id} not found: it may be stopped or deleted (see /sandboxes)"),
            ),
            HttpError::BadQuery(why) => (StatusCode::BAD_REQUEST, why),
            HttpError::Shim(what) => (StatusCode::BAD_GATEWAY, what),
            HttpError::Internal(what) => (StatusCode::INTERNAL_SERVER_ERROR, what),
        };
        text_response(status, text + "\n")
    }
}

/// The query parameters the endpoints take (a repeated one: the last).
#[derive(Debug, Default)]
pub(crate) struct Params {
    pub sandbox: Option<String>,
    pub filter_family: Option<String>,
    pub seconds: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(mut q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::BadQuery(e.body_text()))?;
        let prefixes = q
            .get("filter_family")
            .map_or(0, |v| v.split(',').filter(|p| !p.trim().is_empty()).count());
        if prefixes > limits::MAX_FILTER_FAMILIES {
            return Err(HttpError::BadQuery(format!(
                "filter_family has {prefixes} prefixes; at most {} are taken",
                limits::MAX_FILTER_FAMILIES
            )));
        }
        Ok(Params {
            sandbox: q.remove("sandbox"),
            filter_family: q.remove("filter_family"),
            seconds: q.remove("seconds"),
        })
    }
}

impl Params {
    /// A `sandbox=` that names a sandbox (an empty one does not).
    pub fn wants_sandbox(&self) -> bool {
        self.sandbox.as_deref().is_some_and(|s| !s.is_empty())
    }
}

impl App {
    /// The running sandbox `sandbox=` names.
    pub(crate) fn sandbox(
        &self,
        params: &Params,
    ) -> Result<Arc<crate::registry::Sandbox>, HttpError> {
        let id = match params.sandbox.as_deref() {
            None | Some("") => return Err(HttpError::MissingSandbox),
            Some(id) => id,
        };
        sandbox_id::validate(id).map_err(|e| HttpError::InvalidSandbox(e.to_string()))?;
        self.registry
            .get(id)
            .ok_or_else(|| HttpError::UnknownSandbox(id.to_string()))
    }

    /// GET `path` from the shim of the sandbox `sandbox=` names, holding a
    /// shim permit; `what` says what was asked for in the error.
    async fn shim_get(
        &self,
        params: &Params,
        path: &str,
        what: &str,
    ) -> Result<(Arc<crate::registry::Sandbox>, ShimResponse), HttpError> {
        let sandbox = self.sandbox(params)?;
        let _permit = self.collector.shim_permit().await;
        match self.shim.get(&sandbox.socket, path).await {
            Ok(resp) => Ok((sandbox, resp)),
            Err(e) => Err(HttpError::Shim(format!(
                "failed to get {what} of sandbox {}: {e}",
                sandbox.id
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
