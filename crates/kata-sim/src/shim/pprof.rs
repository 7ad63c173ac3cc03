//! `/debug/vars` and `/debug/pprof/*` of a Go shim started with `enable_pprof = true`.
//!
//! Bodies are synthetic but shaped like the real handlers' (content types, attachment
//! headers, index links, `seconds=` waits), which is what a proxying agent depends on.

use std::io;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::bodies::{self, Body};
use super::routes::{self, go_error, query_value, response, GO_TEXT};
use super::Shared;

/// Named profiles served under `/debug/pprof/<name>`.
const PROFILES: [&str; 6] = [
    "allocs",
    "block",
    "goroutine",
    "heap",
    "mutex",
    "threadcreate",
];

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/debug/vars" => vars(shared),
        "/debug/pprof/" => index(),
        "/debug/pprof/cmdline" => response(
            StatusCode::OK,
            &[
                ("Content-Type", GO_TEXT),
                ("X-Content-Type-Options", "nosniff"),
            ],
            bodies::full(cmdline(shared).join("\0")),
        ),
        "/debug/pprof/profile" => {
            let secs = positive(query_value(&req, "seconds"), 30.0, true);
            tokio::time::sleep(wait(secs)).await;
            attachment("profile", profile_proto(secs, "cpu", "nanoseconds"))
        }
        "/debug/pprof/trace" => {
            let secs = positive(query_value(&req, "seconds"), 1.0, false);
            tokio::time::sleep(wait(secs)).await;
            let mut t = b"go 1.26 trace\x00\x00\x00".to_vec();
            t.extend_from_slice(&[0x01, 0x0c, 0x00, 0x85, 0x02]);
            attachment("trace", Bytes::from(t))
        }
        "/debug/pprof/symbol" => symbol(req).await,
        p => {
            let name = p.trim_start_matches("/debug/pprof/");
            if !PROFILES.contains(&name) {
                let mut r = go_error(StatusCode::NOT_FOUND, "Unknown profile\n")?;
                r.headers_mut()
                    .insert("X-Go-Pprof", http::HeaderValue::from_static("1"));
                return Ok(r);
            }
            let debug = query_value(&req, "debug")
                .and_then(|d| d.parse::<u32>().ok())
                .unwrap_or(0);
            if debug > 0 {
                response(
                    StatusCode::OK,
                    &[
                        ("Content-Type", GO_TEXT),
                        ("X-Content-Type-Options", "nosniff"),
                    ],
                    bodies::full(text_profile(shared, name, debug)),
                )
            } else {
                attachment(name, profile_proto(0.0, "inuse_space", "bytes"))
            }
        }
    }
}

/// Any `seconds=` a client sends, without overflowing `Duration`.
fn wait(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(86_400 * 365))
}

/// `seconds=` as the Go handlers read it: invalid or non-positive means the default.
fn positive(v: Option<&str>, default: f64, integer: bool) -> f64 {
    let parsed = if integer {
        v.and_then(|s| s.parse::<i64>().ok()).map(|n| n as f64)
    } else {
        v.and_then(|s| s.parse::<f64>().ok())
    };
    match parsed {
        Some(s) if s > 0.0 && s.is_finite() => s,
        _ => default,
    }
}

fn attachment(name: &str, data: Bytes) -> Result<Response<Body>, io::Error> {
    let disp = format!("attachment; filename=\"{name}\"");
    response(
        StatusCode::OK,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", &disp),
            ("X-Content-Type-Options", "nosniff"),
        ],
        bodies::full(data),
    )
}

fn cmdline(shared: &Shared) -> Vec<String> {
    [
        "/opt/kata/bin/containerd-shim-kata-v2",
        "-namespace",
        "k8s.io",
        "-address",
        "/run/containerd/containerd.sock",
        "-publish-binary",
        "/usr/bin/containerd",
        "-id",
        &shared.sandbox_id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn index() -> Result<Response<Body>, io::Error> {
    let mut rows = String::new();
    let mut all: Vec<&str> = PROFILES.to_vec();
    all.extend(["cmdline", "profile", "trace"]);
    all.sort_unstable();
    for (n, name) in all.iter().enumerate() {
        rows.push_str(&format!(
            "<tr><td>{}</td><td><a href='{name}?debug=1'>{name}</a></td></tr>\n",
            (n * 7) % 23
        ));
    }
    let html = format!(
        "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/\n<br>\n\
<p>Add debug=1 to a link for the legacy text format.</p>\n<br>\nProfiles:\n<table>\n\
<thead><td>Count</td><td>Profile</td></thead>\n{rows}</table>\n\
<a href=\"goroutine?debug=2\">all goroutine stacks</a>\n<br>\n</body>\n</html>\n"
    );
    response(
        StatusCode::OK,
        &[
            ("Content-Type", "text/html; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
        ],
        bodies::full(html),
    )
}

fn vars(shared: &Shared) -> Result<Response<Body>, io::Error> {
    let (alloc, sys, objects, gcs) = match shared.model.lock() {
        Ok(m) => (
            m.value("go_memstats_alloc_bytes", &[]).unwrap_or(0.0),
            m.value("go_memstats_sys_bytes", &[]).unwrap_or(0.0),
            m.value("go_memstats_heap_objects", &[]).unwrap_or(0.0),
            m.value("go_gc_duration_seconds_count", &[]).unwrap_or(0.0),
        ),
        Err(_) => (0.0, 0.0, 0.0, 0.0),
    };
    let cmd = serde_json::to_string(&cmdline(shared)).unwrap_or_else(|_| "[]".into());
    let mem = serde_json::json!({
        "Alloc": alloc as u64,
        "HeapAlloc": alloc as u64,
        "Sys": sys as u64,
        "HeapObjects": objects as u64,
        "NumGC": gcs as u64,
    });
    // expvar writes one top-level key per line.
    let body = format!("{{\n\"cmdline\": {cmd},\n\"memstats\": {mem}\n}}\n");
    response(
        StatusCode::OK,
        &[("Content-Type", "application/json; charset=utf-8")],
        bodies::full(body),
    )
}

fn text_profile(shared: &Shared, name: &str, debug: u32) -> String {
    if name == "goroutine" && debug >= 2 {
        return "goroutine 1 [running]:\nmain.main()\n\t/kata/src/runtime/cmd/containerd-shim-kata-v2/main.go:20 +0x1d\n\n\
goroutine 7 [IO wait]:\nnet/http.(*Server).Serve(0xc000180000)\n\t/usr/local/go/src/net/http/server.go:3360 +0x2a5\n"
            .to_string();
    }
    let id = &shared.sandbox_id;
    format!(
        "{name} profile: total 2\n1 @ 0x43a0f6 0x46b5e1\n#\t0x46b5e0\tmain.main+0x20\n\n\
1 @ 0x43a0f6 0x6cf2a5\n#\t0x6cf2a4\tnet/http.(*Server).Serve+0x2a4\n\n# sandbox {id}\n"
    )
}

/// A minimal valid `profile.proto` message, gzip-compressed as the Go runtime sends it.
fn profile_proto(secs: f64, kind: &str, unit: &str) -> Bytes {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
        varint(out, field << 3);
        varint(out, v);
    }
    fn field_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let strings = ["", "samples", "count", kind, unit];
    let mut value_type = Vec::new();
    field_varint(&mut value_type, 1, 3);
    field_varint(&mut value_type, 2, 4);
    let mut p = Vec::new();
    let mut samples_count = Vec::new();
    field_varint(&mut samples_count, 1, 1);
    field_varint(&mut samples_count, 2, 2);
    field_bytes(&mut p, 1, &samples_count);
    field_bytes(&mut p, 1, &value_type);
    for s in strings {
        field_bytes(&mut p, 6, s.as_bytes());
    }
    field_varint(&mut p, 10, (secs * 1e9) as u64);
    field_bytes(&mut p, 11, &value_type);
    field_varint(&mut p, 12, 10_000_000);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    if gz.write_all(&p).is_err() {
        return Bytes::new();
    }
    gz.finish().map(Bytes::from).unwrap_or_default()
}

async fn symbol(req: Request<Incoming>) -> Result<Response<Body>, io::Error> {
    let mut out = String::from("num_symbols: 1\n");
    if req.method() == Method::POST {
        let body = routes::read_body(req).await?;
        for addr in String::from_utf8_lossy(&body).split('+') {
            let addr = addr.trim();
            if !addr.is_empty() {
                out.push_str(&format!("{addr} main.main\n"));
            }
        }
    }
    response(
        StatusCode::OK,
        &[("Content-Type", GO_TEXT)],
        bodies::full(out),
    )
}
