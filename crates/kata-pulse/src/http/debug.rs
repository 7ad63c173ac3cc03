//! `/debug/vars` and `/debug/pprof/*` proxied to a Go shim.
//!
//! Off unless `--enable-debug-proxy`: it hands out profiles of processes
//! that run as root. Bodies are streamed (a 30 s CPU profile is fine), the
//! shim's status is passed on (kata-monitor turned a shim 404 into 200), and
//! the index page's links are rewritten to keep `sandbox=`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::BodyExt;

use super::{text_response, App, HttpError, Params};

/// Longest profile or trace a client may ask for.
pub(crate) const MAX_PROFILE: Duration = Duration::from_secs(600);

pub async fn disabled() -> Response {
    text_response(
        StatusCode::NOT_FOUND,
        "the debug proxy is disabled; start kata-pulse with --enable-debug-proxy\n",
    )
}

pub async fn redirect_index(uri: Uri) -> Response {
    let target = match uri.query() {
        Some(q) => format!("/debug/pprof/?{q}"),
        None => "/debug/pprof/".to_string(),
    };
    (
        StatusCode::MOVED_PERMANENTLY,
        [(http::header::LOCATION, target)],
    )
        .into_response()
}

pub async fn proxy(
    State(app): State<Arc<App>>,
    params: Params,
    uri: Uri,
) -> Result<Response, HttpError> {
    let sandbox = app.sandbox(&params)?;
    let target = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    // Profiles answer only after `seconds`: allow for it before the headers.
    let seconds = params
        .seconds
        .as_deref()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        // Clamp before converting: a huge float would not fit a Duration.
        .map(|s| Duration::from_secs_f64(s.min(MAX_PROFILE.as_secs_f64())))
        .unwrap_or(Duration::ZERO);
    let header_timeout = app.shim.timeout + seconds;
    let resp = match app
        .shim
        .get_streaming(&sandbox.socket, &target, header_timeout)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, uri = %target, "debug proxy request failed");
            return Err(HttpError::Shim(format!(
                "failed to request {target} from sandbox {}: {e}",
                sandbox.id
            )));
        }
    };
    let (parts, body) = resp.into_parts();
    let mut out = if uri.path() == "/debug/pprof/" && parts.status.is_success() {
        let limited = http_body_util::Limited::new(body, app.config.max_shim_body_bytes);
        match tokio::time::timeout(app.shim.timeout, limited.collect()).await {
            Ok(Ok(collected)) => {
                let html = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
                Response::new(Body::from(rewrite_links(&html, &sandbox.id)))
            }
            _ => {
                return Err(HttpError::Shim(format!(
                    "failed to read the pprof index of sandbox {}",
                    sandbox.id
                )))
            }
        }
    } else {
        Response::new(Body::new(body))
    };
    *out.status_mut() = parts.status;
    for name in [
        http::header::CONTENT_TYPE,
        http::header::CONTENT_DISPOSITION,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(out)
}

/// Adds `sandbox=<id>` to the relative links of Go's pprof index
/// (`<a href='heap?debug=1'>` → `<a href='heap?sandbox=ID&debug=1'>`, and
/// `<a href='cmdline'>` → `<a href='cmdline?sandbox=ID'>`), so following a
/// link stays on the same shim.
pub fn rewrite_links(html: &str, sandbox: &str) -> String {
    const OPEN: &str = "<a href=";
    let mut out = String::with_capacity(html.len() + 64);
    let mut rest = html;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i + OPEN.len()]);
        rest = &rest[i + OPEN.len()..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        let inner = &rest[1..];
        let Some(end) = inner.find(quote) else {
            continue;
        };
        let target = &inner[..end];
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let word =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let query_ok = query.is_empty()
            || query
                .split_once('=')
                .is_some_and(|(k, v)| word(k) && word(v));
        if !word(path) || !query_ok {
            continue;
        }
        out.push(quote);
        out.push_str(path);
        out.push_str("?sandbox=");
        out.push_str(sandbox);
        if !query.is_empty() {
            out.push('&');
            out.push_str(query);
        }
        out.push(quote);
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kata-monitor's TestCopyResponseAddingSandboxIDToHref, re-expressed.
    #[test]
    fn pprof_index_links_carry_the_sandbox() {
        let input = "<tr><td>1</td><td><a href='allocs?debug=1'>allocs</a></td></tr>\n\
<a href=\"goroutine?debug=2\">full goroutine stack dump</a>\n\
<a href='cmdline'>cmdline</a> <a href='https://golang.org/pkg/net/http/pprof/'>doc</a>";
        let out = rewrite_links(input, "abc");
        assert_eq!(
            out,
            "<tr><td>1</td><td><a href='allocs?sandbox=abc&debug=1'>allocs</a></td></tr>\n\
<a href=\"goroutine?sandbox=abc&debug=2\">full goroutine stack dump</a>\n\
<a href='cmdline?sandbox=abc'>cmdline</a> <a href='https://golang.org/pkg/net/http/pprof/'>doc</a>"
        );
    }

    #[test]
    fn malformed_html_is_left_alone() {
        for s in ["<a href=", "<a href='x", "<a href=x>", "no links"] {
            assert_eq!(rewrite_links(s, "id"), s);
        }
    }
}
