//! `/metrics`: the aggregate of every shim plus the agent's own metrics, or
//! one shim's raw body with `?sandbox=`.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue};
use prom_text::Rendered;

use super::negotiate::gzip_accepted;
use super::{App, HttpError, Params};
use crate::collect::Collection;
use crate::self_metrics::{self, Sources};
use crate::views;

pub async fn metrics(
    State(app): State<Arc<App>>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    app.requests
        .metrics_requests
        .fetch_add(1, Ordering::Relaxed);
    if params.wants_sandbox() {
        return raw_sandbox(&app, &params, &headers).await;
    }
    // The semaphore is never closed; holding a permit bounds how many whole
    // responses exist in memory at once.
    let _build = app.metrics_builds.clone().acquire_owned().await.ok();
    let collection = app.collector.collect().await;
    let ms = u64::try_from(collection.duration.as_millis()).unwrap_or(u64::MAX);
    app.requests.observe_collection_ms(ms);

    let prefixes: Vec<String> = family_prefixes(params.filter_family.as_deref())
        .into_iter()
        .map(String::from)
        .collect();
    let gzip = gzip_accepted(&headers);
    // Merging (and compressing) a large node's output is CPU work of tens
    // of milliseconds: keep it off the async workers that answer probes.
    let work_app = app.clone();
    let encoded =
        tokio::task::spawn_blocking(move || build(&work_app, &collection, &prefixes, gzip)).await;
    let (body, zipped) =
        encoded.map_err(|e| HttpError::Internal(format!("building the response failed: {e}")))?;
    Ok(exposition_response(body, zipped, None))
}

/// The whole aggregate response body: own metrics and every view's parts,
/// merged; gzip-compressed when `gzip` (the flag says if it is).
fn build(app: &App, collection: &Collection, prefixes: &[String], gzip: bool) -> (Vec<u8>, bool) {
    let keep =
        |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()));
    let view_parts = views::render(app.collector.views(), collection);
    let shown: Vec<&Rendered> = view_parts.iter().map(|p| &**p).collect();
    // Only shim families can conflict: the views' own families use the
    // agent's reserved prefixes, which shims cannot write.
    let conflicts = prom_text::merge_stats(&shown, &keep);
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
    let mut parts = Vec::with_capacity(shown.len() + 1);
    parts.push(&own);
    parts.extend(shown.iter().copied());
    let size: usize = parts.iter().map(|p| p.heap_bytes()).sum();
    let mut body = Vec::with_capacity(size);
    prom_text::merge(&parts, &keep, &mut body);
    if gzip {
        if let Some(zipped) = gzip_bytes(&body) {
            return (zipped, true);
        }
    }
    (body, false)
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
    body: Vec<u8>,
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
        body,
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
