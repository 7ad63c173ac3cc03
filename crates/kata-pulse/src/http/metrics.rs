//! `/metrics`: the aggregate of every shim plus the agent's own metrics, or
//! one shim's raw body with `?sandbox=`.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{HeaderMap, HeaderValue};
use prom_text::Merger;

use super::body::ExpositionBody;
use super::negotiate::gzip_accepted;
use super::per_ip::PeerIp;
use super::{App, HttpError, Params};
use crate::collect::Collection;
use crate::self_metrics::{self, Sources};
use crate::views::{self, Part};

pub async fn metrics(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerIp>>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    app.requests
        .metrics_requests
        .fetch_add(1, Ordering::Relaxed);
    if params.wants_sandbox() {
        return raw_sandbox(&app, &params, &headers).await;
    }
    // Requests that come through the server carry their client's address;
    // one address waits (inside the response deadline) for its own share
    // of the response slots.
    let slot = match peer {
        Some(Extension(PeerIp(ip))) => Some(app.metrics_clients.acquire(ip).await),
        None => None,
    };
    // The semaphore is never closed; a permit is held until the body is
    // sent, which bounds the responses in flight.
    let permit = app.metrics_builds.clone().acquire_owned().await.ok();
    let collection = app.collector.collect().await;
    let ms = u64::try_from(collection.duration.as_millis()).unwrap_or(u64::MAX);
    app.requests.observe_collection_ms(ms);

    let prefixes: Vec<String> = family_prefixes(params.filter_family.as_deref())
        .into_iter()
        .map(String::from)
        .collect();
    let gzip = gzip_accepted(&headers);
    // Rendering the per-request parts and listing every family of a large
    // node is CPU work of milliseconds: keep it off the async workers that
    // answer probes. The body is then written a chunk at a time.
    let work_app = app.clone();
    let merger = tokio::task::spawn_blocking(move || plan(&work_app, &collection, &prefixes))
        .await
        .map_err(|e| HttpError::Internal(format!("building the response failed: {e}")))?;
    let body = ExpositionBody::new(merger, gzip, (permit, slot));
    Ok(exposition_response(Body::new(body), gzip, None))
}

/// The merge of one aggregate response, ready to be written: the agent's
/// own metrics first, then every view's parts.
fn plan(app: &App, collection: &Collection, prefixes: &[String]) -> Merger<Part> {
    let keep =
        |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()));
    let parts = views::render(app.collector.views(), collection);
    // Only shim families can conflict: the views' own families use the
    // agent's reserved prefixes, which shims cannot write. Counted before
    // the own metrics are rendered, so this response reports its own.
    let conflicts = Merger::new(parts.iter().collect::<Vec<_>>(), &keep).count();
    app.requests
        .type_conflicts
        .fetch_add(u64::from(conflicts.type_conflicts), Ordering::Relaxed);
    app.requests
        .conflict_samples
        .fetch_add(conflicts.conflict_samples, Ordering::Relaxed);

    let own = self_metrics::render(
        &Sources {
            registry: &app.registry,
            collector: &app.collector,
            discovery: &app.discovery,
            cri: &app.cri,
            requests: &app.requests,
        },
        collection,
    );
    let mut all = Vec::with_capacity(parts.len() + 1);
    all.push(Part::Fresh(own));
    all.extend(parts);
    Merger::new(all, &keep)
}

fn gzip_bytes(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 5 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// `filter_family=a,b`: prefixes to keep; empty elements are ignored (in
/// kata-monitor they matched everything) and the agent's own families are
/// filtered like any other.
fn family_prefixes(value: Option<&str>) -> Vec<&str> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `?sandbox=<id>`: the shim's body as it sent it (kata-monitor parity),
/// with its HTTP status checked.
async fn raw_sandbox(
    app: &App,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let (_, resp) = app.shim_get(params, "/metrics", "metrics").await?;
    let ct = resp.headers.get(http::header::CONTENT_TYPE).cloned();
    let body = resp.body.to_vec();
    Ok(
        match gzip_accepted(headers).then(|| gzip_bytes(&body)).flatten() {
            Some(zipped) => exposition_response(zipped, true, ct),
            None => exposition_response(body, false, ct),
        },
    )
}

fn exposition_response(
    body: impl Into<Body>,
    gzipped: bool,
    content_type: Option<HeaderValue>,
) -> Response {
    let ct = content_type.unwrap_or(HeaderValue::from_static(prom_text::CONTENT_TYPE));
    let mut resp = (
        [
            (http::header::CONTENT_TYPE, ct),
            (
                http::header::VARY,
                HeaderValue::from_static("Accept-Encoding"),
            ),
        ],
        body.into(),
    )
        .into_response();
    if gzipped {
        resp.headers_mut().insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_family_prefixes() {
        assert!(family_prefixes(None).is_empty());
        assert!(family_prefixes(Some("")).is_empty());
        assert!(family_prefixes(Some(",,")).is_empty());
        assert_eq!(family_prefixes(Some("a,,b ")), vec!["a", "b"]);
    }
}
