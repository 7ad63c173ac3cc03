//! `/`: every endpoint with its query parameters, as text (kata-monitor's
//! layout: `Available HTTP endpoints:` then one line per path) or HTML.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use std::sync::Arc;

use super::negotiate::{repr, Repr};
use super::status::{index_page, EndpointDoc};
use super::{text_response, App};

const SANDBOX: (&str, &str) = ("sandbox=<id>", "the sandbox (see /sandboxes); required");

const ENDPOINTS: &[EndpointDoc] = &[
    EndpointDoc {
        path: "/metrics",
        desc: "Get metrics from sandboxes: every shim's families labelled with sandbox_id and \
the pod's cri_uid, cri_name, cri_namespace, cAdvisor-compatible container_* series, the \
pods' host cost and the agent's own metrics. Always 200.",
        linked: true,
        params: &[
            (
                "filter_family=<prefix>[,<prefix>…]",
                "keep the families whose name starts with one of the prefixes",
            ),
            (
                "sandbox=<id>",
                "that sandbox's shim body, unchanged (an empty value means the aggregate, as \
with kata-monitor)",
            ),
            ("Accept-Encoding: gzip", "gzip-compressed response"),
        ],
    },
    EndpointDoc {
        path: "/sandboxes",
        desc: "List all Kata Containers sandboxes: a status page in a browser (pod, namespace, \
runtime, last scrape), one id per line for curl.",
        linked: true,
        params: &[(
            "Accept: application/json",
            "JSON: sandbox_id, pod_name, namespace, uid, runtime, runtime_handler, \
cri_metadata, discovered_at, last_scrape {ok, at, duration_seconds, samples, error}",
        )],
    },
    EndpointDoc {
        path: "/agent-url",
        desc: "Get sandbox agent URL (e.g. vsock://830455376:1024).",
        linked: false,
        params: &[SANDBOX],
    },
    EndpointDoc {
        path: "/healthz",
        desc: "Liveness probe: 200 while serving (503 once CRI stayed unreachable longer than \
--cri-unhealthy-after).",
        linked: true,
        params: &[],
    },
    EndpointDoc {
        path: "/readyz",
        desc: "Readiness probe: 200 once the sandbox folders were scanned; lists folders not \
present yet.",
        linked: true,
        params: &[],
    },
];

const DEBUG_ENDPOINTS: &[EndpointDoc] = &[
    EndpointDoc {
        path: "/debug/vars",
        desc: "Golang pprof `/debug/vars` endpoint for kata runtime shim process.",
        linked: false,
        params: &[SANDBOX],
    },
    EndpointDoc {
        path: "/debug/pprof/",
        desc: "Golang pprof `/debug/pprof/` endpoint for kata runtime shim process.",
        linked: false,
        params: &[SANDBOX],
    },
    EndpointDoc {
        path: "/debug/pprof/cmdline",
        desc: "Golang pprof `/debug/pprof/cmdline` endpoint for kata runtime shim process.",
        linked: false,
        params: &[SANDBOX],
    },
    EndpointDoc {
        path: "/debug/pprof/profile",
        desc: "Golang pprof `/debug/pprof/profile` endpoint for kata runtime shim process.",
        linked: false,
        params: &[SANDBOX, ("seconds=<n>", "profile length (default 30)")],
    },
    EndpointDoc {
        path: "/debug/pprof/symbol",
        desc: "Golang pprof `/debug/pprof/symbol` endpoint for kata runtime shim process.",
        linked: false,
        params: &[SANDBOX],
    },
    EndpointDoc {
        path: "/debug/pprof/trace",
        desc: "Golang pprof `/debug/pprof/trace` endpoint for kata runtime shim process.",
        linked: false,
        params: &[SANDBOX, ("seconds=<n>", "trace length (default 1)")],
    },
];

pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let debug = app.config.enable_debug_proxy;
    let endpoints: Vec<&EndpointDoc> = ENDPOINTS
        .iter()
        .chain(DEBUG_ENDPOINTS.iter().filter(|_| debug))
        .collect();
    match repr(&headers, false) {
        Repr::Html => (
            [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            index_page(&endpoints, debug),
        )
            .into_response(),
        _ => {
            let width = endpoints.iter().map(|e| e.path.len()).max().unwrap_or(0) + 3;
            let mut body = String::from("Available HTTP endpoints:\n");
            for e in &endpoints {
                body.push_str(&format!("{:<width$}: {}\n", e.path, e.desc));
                for (p, what) in e.params {
                    body.push_str(&format!("{:<width$}    {p}: {what}\n", ""));
                }
            }
            if !debug {
                body.push_str(
                    "(/debug/vars and /debug/pprof/* are off: start with --enable-debug-proxy)\n",
                );
            }
            text_response(http::StatusCode::OK, body)
        }
    }
}
