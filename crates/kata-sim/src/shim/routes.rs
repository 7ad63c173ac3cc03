//! Request routing of the two shim flavours, with faults applied.
//!
//! Connection-level faults (slow, hang, accept-close) affect every request; body faults
//! (garbage, truncated, endless, huge, http500) affect `/metrics`, the endpoint a node
//! agent scrapes.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::bodies::{self, Body};
use super::{pprof, Flavour, Shared};
use crate::fault::{Fault, Truncation};

pub(crate) const GO_TEXT: &str = "text/plain; charset=utf-8";
pub(crate) const GO_NOT_FOUND: &str = "404 page not found\n";
pub(crate) const RS_NOT_FOUND: &str = "URL NOT FOUND";
const FAILURE_TEXT: &str = "simulated shim failure: failed to get agent metrics: rpc error: \
code = Unavailable desc = transport is closing\n";
const IPTABLES: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let fault = shared.fault();
    match fault {
        Fault::Slow(d) => tokio::time::sleep(d).await,
        Fault::Hang => std::future::pending::<()>().await,
        Fault::AcceptClose | Fault::MissingSocket | Fault::StaleSocket => {
            // The fault changed while this connection was kept alive: drop it.
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "simulated connection drop",
            ));
        }
        _ => {}
    }
    match shared.flavour {
        Flavour::Go => go(&shared, req, fault).await,
        Flavour::RuntimeRs => rs(&shared, req, fault).await,
    }
}

pub(crate) fn response(
    status: StatusCode,
    headers: &[(&str, &str)],
    body: Body,
) -> Result<Response<Body>, io::Error> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body).map_err(io::Error::other)
}

/// A Go handler writing `body` without setting a type: net/http sniffs one (only when
/// there are bytes to sniff).
pub(crate) fn go_plain(
    status: StatusCode,
    body: impl Into<Bytes>,
) -> Result<Response<Body>, io::Error> {
    let body = body.into();
    if body.is_empty() {
        response(status, &[], bodies::full(body))
    } else {
        response(status, &[("Content-Type", GO_TEXT)], bodies::full(body))
    }
}

/// `http.Error` / `http.NotFound`.
pub(crate) fn go_error(status: StatusCode, text: &str) -> Result<Response<Body>, io::Error> {
    response(
        status,
        &[
            ("Content-Type", GO_TEXT),
            ("X-Content-Type-Options", "nosniff"),
        ],
        bodies::full(Bytes::copy_from_slice(text.as_bytes())),
    )
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn query_value<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    query_param(req.uri().query(), name)
}

/// ServeMux's path cleaning: `//metrics`, `/a/../metrics` ... get a 301 to the clean path.
fn clean_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    let trailing = path.ends_with('/') || path.ends_with("/.");
    if trailing && clean != "/" {
        clean.push('/');
    }
    (clean != path).then_some(clean)
}

fn go_redirect(req: &Request<Incoming>, to: &str) -> Result<Response<Body>, io::Error> {
    let location = match req.uri().query() {
        Some(q) => format!("{to}?{q}"),
        None => to.to_string(),
    };
    let body = if matches!(*req.method(), Method::GET | Method::HEAD) {
        format!("<a href=\"{location}\">Moved Permanently</a>.\n\n")
    } else {
        String::new()
    };
    let mut resp = response(
        StatusCode::MOVED_PERMANENTLY,
        &[("Content-Type", "text/html; charset=utf-8")],
        bodies::full(body),
    )?;
    let loc = HeaderValue::from_str(&location).map_err(io::Error::other)?;
    resp.headers_mut().insert(LOCATION, loc);
    Ok(resp)
}

async fn go(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    fault: Fault,
) -> Result<Response<Body>, io::Error> {
    let path = req.uri().path().to_string();
    if let Some(clean) = clean_path(&path) {
        return go_redirect(&req, &clean);
    }
    match path.as_str() {
        "/metrics" => go_metrics(shared, fault),
        "/agent-url" => go_plain(StatusCode::OK, shared.agent_url.clone()),
        "/direct-volume/stats" => match query_value(&req, "path") {
            None | Some("") => {
                go_plain(StatusCode::BAD_REQUEST, "Required parameter path not found")
            }
            Some(p) => go_plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no direct-assigned volume at {p}"),
            ),
        },
        "/direct-volume/resize" => {
            let body = read_body(req).await?;
            let msg = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) => format!(
                    "no direct-assigned volume at {}",
                    v.get("VolumePath").and_then(|p| p.as_str()).unwrap_or("")
                ),
                Err(e) => e.to_string(),
            };
            go_plain(StatusCode::INTERNAL_SERVER_ERROR, msg)
        }
        "/iptables" | "/ip6tables" => match *req.method() {
            Method::GET => go_plain(StatusCode::OK, IPTABLES),
            Method::PUT => {
                read_body(req).await?;
                go_plain(StatusCode::OK, "")
            }
            _ => go_plain(StatusCode::NOT_IMPLEMENTED, ""),
        },
        "/policy" => match *req.method() {
            Method::PUT => {
                read_body(req).await?;
                go_plain(StatusCode::OK, "")
            }
            _ => go_plain(StatusCode::NOT_IMPLEMENTED, ""),
        },
        "/debug/pprof" if shared.pprof => go_redirect(&req, "/debug/pprof/"),
        p if shared.pprof && (p == "/debug/vars" || p.starts_with("/debug/pprof/")) => {
            pprof::handle(shared, req).await
        }
        _ => go_error(StatusCode::NOT_FOUND, GO_NOT_FOUND),
    }
}

fn go_metrics(shared: &Shared, fault: Fault) -> Result<Response<Body>, io::Error> {
    let text = [("Content-Type", GO_TEXT)];
    match fault {
        Fault::Garbage => response(
            StatusCode::OK,
            &[("Content-Type", "application/octet-stream")],
            bodies::full(Bytes::from_static(bodies::GARBAGE)),
        ),
        Fault::Http500 => go_error(StatusCode::INTERNAL_SERVER_ERROR, FAILURE_TEXT),
        Fault::Truncated(t) => broken(shared, t, &text),
        Fault::Endless => response(
            StatusCode::OK,
            &text,
            bodies::endless(shared.render_metrics()),
        ),
        Fault::Huge(n) => {
            let (_, body) = bodies::huge(shared.render_metrics(), n);
            response(StatusCode::OK, &text, body)
        }
        _ => response(
            StatusCode::OK,
            &text,
            bodies::chunked(Bytes::from(shared.render_metrics())),
        ),
    }
}

/// A truncated `/metrics` answer through hyper: a short Content-Length body, or a chunked
/// one cut at a chunk boundary when the connection was already being served by hyper.
fn broken(
    shared: &Shared,
    t: Truncation,
    headers: &[(&str, &str)],
) -> Result<Response<Body>, io::Error> {
    let data = Bytes::from(shared.render_metrics());
    let full_len = data.len();
    let mut resp = response(StatusCode::OK, headers, bodies::cut_short(data))?;
    if !super::chunked_truncation(shared.flavour, t) {
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(full_len));
    }
    Ok(resp)
}

async fn rs(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    fault: Fault,
) -> Result<Response<Body>, io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (method, path.as_str()) {
        (Method::GET, "/agent-url") => {
            response(StatusCode::OK, &[], bodies::full(shared.agent_url.clone()))
        }
        (Method::GET, "/metrics") => rs_metrics(shared, fault),
        (Method::GET, "/iptables" | "/ip6tables") => {
            response(StatusCode::OK, &[], bodies::full(IPTABLES))
        }
        (Method::PUT, "/iptables" | "/ip6tables" | "/policy") => {
            read_body(req).await?;
            response(StatusCode::OK, &[], bodies::full(""))
        }
        // The real handlers fail here without a guest volume; a handler error makes hyper
        // drop the connection without a response.
        (Method::POST, "/direct-volume/stats" | "/direct-volume/resize") => Err(io::Error::other(
            "handler: no direct-assigned volume in a simulated sandbox",
        )),
        _ => response(StatusCode::NOT_FOUND, &[], bodies::full(RS_NOT_FOUND)),
    }
}

fn rs_metrics(shared: &Shared, fault: Fault) -> Result<Response<Body>, io::Error> {
    match fault {
        Fault::Garbage => response(
            StatusCode::OK,
            &[],
            bodies::full(Bytes::from_static(bodies::GARBAGE)),
        ),
        Fault::Http500 => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &[],
            bodies::full(FAILURE_TEXT),
        ),
        Fault::Truncated(t) => broken(shared, t, &[]),
        Fault::Endless => response(
            StatusCode::OK,
            &[],
            bodies::endless(shared.render_metrics()),
        ),
        Fault::Huge(n) => {
            let (len, body) = bodies::huge(shared.render_metrics(), n);
            let mut resp = response(StatusCode::OK, &[], body)?;
            resp.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            Ok(resp)
        }
        _ => response(StatusCode::OK, &[], bodies::full(shared.render_metrics())),
    }
}

pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, io::Error> {
    // Bodies of management requests are tiny; cap them so a hostile client cannot make the
    // simulator buffer without bound.
    let limited = http_body_util::Limited::new(req.into_body(), 1 << 20);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_cleaning() {
        assert_eq!(clean_path("/metrics"), None);
        assert_eq!(clean_path("//metrics").as_deref(), Some("/metrics"));
        assert_eq!(clean_path("/a/../metrics").as_deref(), Some("/metrics"));
        assert_eq!(clean_path("/debug/pprof/"), None);
        assert_eq!(
            clean_path("/debug//pprof/").as_deref(),
            Some("/debug/pprof/")
        );
        assert_eq!(clean_path("/"), None);
    }

    #[test]
    fn query_parsing() {
        assert_eq!(query_param(Some("seconds=5&debug=1"), "debug"), Some("1"));
        assert_eq!(query_param(Some("gc"), "gc"), Some(""));
        assert_eq!(query_param(None, "x"), None);
    }
}
