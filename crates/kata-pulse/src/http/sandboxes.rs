//! `/sandboxes` (text, HTML or JSON) and `/agent-url`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::negotiate::{repr, Repr};
use super::{status, text_response, App, HttpError, Params};

/// One element of the JSON view (the shape the kata-pulse README documents,
/// plus runtime and scrape status).
#[derive(Serialize)]
struct SandboxJson<'a> {
    sandbox_id: &'a str,
    pod_name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    runtime: &'a str,
    runtime_handler: &'a str,
    cri_metadata: bool,
    discovered_at: f64,
    last_scrape: Option<ScrapeJson>,
}

#[derive(Serialize)]
struct ScrapeJson {
    ok: bool,
    at: f64,
    duration_seconds: f64,
    samples: u64,
    error: Option<String>,
}

pub async fn sandboxes(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let list = app.registry.list();
    match repr(&headers, true) {
        Repr::Text => {
            let body: String = list.iter().map(|s| format!("{}\n", s.id)).collect();
            text_response(StatusCode::OK, body)
        }
        Repr::Html => (
            [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            status_page(&app, &list),
        )
            .into_response(),
        Repr::Json => {
            let metas: Vec<_> = list.iter().map(|s| app.registry.meta(&s.id)).collect();
            let scrapes: Vec<_> = list.iter().map(|s| app.collector.latest(&s.id)).collect();
            let items: Vec<SandboxJson<'_>> = list
                .iter()
                .zip(&metas)
                .zip(&scrapes)
                .map(|((s, m), r)| SandboxJson {
                    sandbox_id: &s.id,
                    pod_name: m.as_ref().map(|m| m.name.as_str()).unwrap_or(""),
                    namespace: m.as_ref().map(|m| m.namespace.as_str()).unwrap_or(""),
                    uid: m.as_ref().map(|m| m.uid.as_str()).unwrap_or(""),
                    runtime: s.runtime.as_str(),
                    runtime_handler: m.as_ref().map(|m| m.runtime_handler.as_str()).unwrap_or(""),
                    cri_metadata: m.is_some(),
                    discovered_at: crate::unix_seconds(s.discovered_at),
                    last_scrape: r.as_ref().map(|r| ScrapeJson {
                        ok: r.ok(),
                        at: crate::unix_seconds(r.finished_at),
                        duration_seconds: r.duration().as_secs_f64(),
                        samples: r.outcome.as_ref().map(|e| e.samples).unwrap_or(0),
                        error: r.outcome.as_ref().err().map(|f| f.message.clone()),
                    }),
                })
                .collect();
            match serde_json::to_vec(&items) {
                Ok(body) => {
                    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
                }
                Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
    }
}

/// The status table of `/sandboxes` for browsers.
fn status_page(app: &App, list: &[Arc<crate::registry::Sandbox>]) -> String {
    let now = SystemTime::now();
    let rows: Vec<status::Row> = list
        .iter()
        .map(|s| {
            let meta = app.registry.meta(&s.id);
            let scrape = app.collector.latest(&s.id);
            status::Row {
                id: s.id.clone(),
                pod: meta.map(|m| status::PodView {
                    name: m.name.clone(),
                    namespace: m.namespace.clone(),
                    uid: m.uid.clone(),
                    handler: m.runtime_handler.clone(),
                }),
                runtime: s.runtime.as_str(),
                age: now.duration_since(s.discovered_at).unwrap_or_default(),
                scrape: scrape.map(|r| status::ScrapeView {
                    ok: r.ok(),
                    ago: r.finished.elapsed(),
                    duration: r.duration(),
                    samples: r.outcome.as_ref().map(|e| e.samples).unwrap_or(0),
                    error: r.outcome.as_ref().err().map(|f| f.message.clone()),
                }),
            }
        })
        .collect();
    // A person looks for a pod: by namespace and name, unnamed ones last.
    let mut rows = rows;
    rows.sort_by(|a, b| {
        let key = |r: &status::Row| {
            r.pod
                .as_ref()
                .map(|p| (false, p.namespace.clone(), p.name.clone()))
                .unwrap_or((true, String::new(), String::new()))
        };
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
    let asked = app.cri.requests_ok.load(Ordering::Relaxed)
        + app.cri.requests_failed.load(Ordering::Relaxed);
    let summary = status::Summary {
        cri_up: (asked > 0).then(|| app.cri.up.load(Ordering::Relaxed)),
        cri_endpoint: app.config.runtime_endpoint.to_string(),
        missing_roots: app
            .discovery
            .missing_roots()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        metrics_interval: app.config.metrics_interval,
        debug_proxy: app.config.enable_debug_proxy,
    };
    status::sandboxes_page(&rows, &summary)
}

/// The shim's agent URL (`vsock://<cid>:1024` …), with a trailing newline
/// as kata-monitor writes it. Shim errors are errors here, not 200s.
pub async fn agent_url(State(app): State<Arc<App>>, params: Params) -> Result<Response, HttpError> {
    let (sandbox, resp) = app.shim_get(&params, "/agent-url", "the agent URL").await?;
    let url = String::from_utf8_lossy(&resp.body).trim().to_string();
    if url.is_empty() {
        // runtime-rs answers 200 with an empty body when it fails.
        return Err(HttpError::Shim(format!(
            "shim of sandbox {} returned an empty agent URL",
            sandbox.id
        )));
    }
    Ok(text_response(StatusCode::OK, format!("{url}\n")))
}
