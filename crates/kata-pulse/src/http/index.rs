//! `/`: the list of endpoints, as text or HTML (kata-monitor's layout).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use std::sync::Arc;

use super::negotiate::{repr, Repr};
use super::{text_response, App};

struct Endpoint {
    path: &'static str,
    desc: &'static str,
    linked: bool,
    debug: bool,
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/metrics",
        desc: "Get metrics from sandboxes.",
        linked: true,
        debug: false,
    },
    Endpoint {
        path: "/sandboxes",
        desc: "List all Kata Containers sandboxes.",
        linked: true,
        debug: false,
    },
    Endpoint {
        path: "/agent-url",
        desc: "Get sandbox agent URL.",
        linked: false,
        debug: false,
    },
    Endpoint {
        path: "/healthz",
        desc: "Liveness probe.",
        linked: false,
        debug: false,
    },
    Endpoint {
        path: "/readyz",
        desc: "Readiness probe.",
        linked: false,
        debug: false,
    },
    Endpoint {
        path: "/debug/vars",
        desc: "Golang pprof `/debug/vars` endpoint for kata runtime shim process.",
        linked: false,
        debug: true,
    },
    Endpoint {
        path: "/debug/pprof/",
        desc: "Golang pprof `/debug/pprof/` endpoint for kata runtime shim process.",
        linked: false,
        debug: true,
    },
    Endpoint {
        path: "/debug/pprof/cmdline",
        desc: "Golang pprof `/debug/pprof/cmdline` endpoint for kata runtime shim process.",
        linked: false,
        debug: true,
    },
    Endpoint {
        path: "/debug/pprof/profile",
        desc: "Golang pprof `/debug/pprof/profile` endpoint for kata runtime shim process.",
        linked: false,
        debug: true,
    },
    Endpoint {
        path: "/debug/pprof/symbol",
        desc: "Golang pprof `/debug/pprof/symbol` endpoint for kata runtime shim process.",
        linked: false,
        debug: true,
    },
    Endpoint {
        path: "/debug/pprof/trace",
        desc: "Golang pprof `/debug/pprof/trace` endpoint for kata runtime shim process.",
        linked: false,
        debug: true,
    },
];

pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let endpoints: Vec<&Endpoint> = ENDPOINTS
        .iter()
        .filter(|e| !e.debug || app.config.enable_debug_proxy)
        .collect();
    match repr(&headers, false) {
        Repr::Html => {
            let mut body = String::from("<h1>Available HTTP endpoints:</h1>\n<ul>");
            for e in &endpoints {
                if e.linked {
                    body.push_str(&format!(
                        "<li><b><a href='{0}'>{0}</a></b>: {1}\n</li>",
                        e.path, e.desc
                    ));
                } else {
                    body.push_str(&format!("<li><b>{}</b>: {}\n</li>", e.path, e.desc));
                }
            }
            body.push_str("</ul>");
            (
                [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response()
        }
        _ => {
            let width = endpoints.iter().map(|e| e.path.len()).max().unwrap_or(0) + 3;
            let mut body = String::from("Available HTTP endpoints:\n");
            for e in &endpoints {
                body.push_str(&format!("{:<width$}: {}\n", e.path, e.desc));
            }
            text_response(http::StatusCode::OK, body)
        }
    }
}
