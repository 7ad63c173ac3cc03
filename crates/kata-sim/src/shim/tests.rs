use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::fault::Truncation;
use testbed::{check_exposition, shim_get, shim_get_request, shim_raw, shim_request, RawReply};

fn sock_in(dir: &tempfile::TempDir, id: &str) -> PathBuf {
    dir.path().join(id).join(crate::SOCKET_NAME)
}

async fn start(flavour: Flavour, fault: Fault, pprof: bool) -> (tempfile::TempDir, ShimHandle) {
    let dir = tempfile::tempdir().unwrap();
    let path = sock_in(&dir, &"ab".repeat(32));
    let opts = ShimOptions::new(flavour).fault(fault).pprof(pprof).seed(1);
    let h = ShimServer::start(&path, opts).await.unwrap();
    (dir, h)
}

fn head_of(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    s.split("\r\n\r\n").next().unwrap_or("").to_string()
}

#[tokio::test]
async fn go_metrics_are_chunked_with_go_headers() {
    let (_d, h) = start(Flavour::Go, Fault::None, false).await;
    let r = shim_get(h.socket_path(), "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    check_exposition(&r.text()).unwrap();
    // Any method works on the Go mux.
    let r = shim_request(h.socket_path(), "POST", "/metrics")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // On the wire: canonical header names and 2 KiB chunks, like net/http.
    let RawReply { bytes, .. } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    let head = head_of(&bytes);
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("Date: "), "{head}");
    let body = &bytes[head.len() + 4..];
    assert!(body.starts_with(b"800\r\n"));
    assert_eq!(h.scrapes(), 3);
}

#[tokio::test]
async fn rs_metrics_have_content_length_and_no_type() {
    let (_d, h) = start(Flavour::RuntimeRs, Fault::None, false).await;
    let r = shim_get(h.socket_path(), "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    assert_eq!(r.header("content-type"), None);
    let p = check_exposition(&r.text()).unwrap();
    assert!(p.types.contains_key("kata_hypervisor_vcpu"));
    // Query strings are ignored, the method is not.
    assert_eq!(
        shim_get(h.socket_path(), "/metrics?x=1")
            .await
            .unwrap()
            .status,
        200
    );
    let r = shim_request(h.socket_path(), "POST", "/metrics")
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (404, "URL NOT FOUND"));
    let RawReply { bytes, .. } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    let head = head_of(&bytes);
    assert!(head.contains("content-length: "), "{head}");
}

#[tokio::test]
async fn not_found_bodies() {
    let (_d, go) = start(Flavour::Go, Fault::None, false).await;
    for path in ["/nope", "/metrics/", "/debug/pprof/", "/debug/vars", "/"] {
        let r = shim_get(go.socket_path(), path).await.unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.text(), "404 page not found\n");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    let r = shim_get(go.socket_path(), "//metrics").await.unwrap();
    assert_eq!((r.status, r.header("location")), (301, Some("/metrics")));
    let (_d2, rs) = start(Flavour::RuntimeRs, Fault::None, true).await;
    for path in ["/nope", "/metrics/", "/debug/pprof/", "/debug/vars", "/"] {
        let r = shim_get(rs.socket_path(), path).await.unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (404, "URL NOT FOUND"),
            "{path}"
        );
        assert_eq!(r.header("content-type"), None);
    }
}

#[tokio::test]
async fn agent_url_formats() {
    let (_d, go) = start(Flavour::Go, Fault::None, false).await;
    let r = shim_get(go.socket_path(), "/agent-url").await.unwrap();
    let body = r.text();
    let cid = body
        .strip_prefix("vsock://")
        .and_then(|s| s.strip_suffix(":1024"))
        .unwrap_or_else(|| panic!("{body:?}"));
    assert!(cid.parse::<u32>().unwrap() >= 3);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let (_d2, rs) = start(Flavour::RuntimeRs, Fault::None, false).await;
    let r = shim_get(rs.socket_path(), "/agent-url").await.unwrap();
    let dir = rs.socket_path().parent().unwrap().display().to_string();
    assert_eq!(r.text(), format!("hvsock://{dir}/root/kata.hvsock:1024"));
    assert_eq!(r.header("content-type"), None);
    let r = shim_request(rs.socket_path(), "PUT", "/agent-url")
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

/// On paused time: the profile waits are tokio timers, so they pass at once
/// and take exactly what they ask for.
#[tokio::test(start_paused = true)]
async fn pprof_when_enabled() {
    let (_d, h) = start(Flavour::Go, Fault::None, true).await;
    let s = h.socket_path();
    let r = shim_get(s, "/debug/pprof/").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert!(html.contains("<a href='heap?debug=1'>"), "{html}");
    assert!(html.contains("<a href=\"goroutine?debug=2\">"), "{html}");
    let r = shim_get(s, "/debug/pprof?debug=1").await.unwrap();
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("/debug/pprof/?debug=1"))
    );
    let r = shim_get(s, "/debug/vars").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["memstats"]["Alloc"].as_u64().unwrap() > 0);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let r = shim_get(s, "/debug/pprof/cmdline").await.unwrap();
    assert!(r.text().contains("containerd-shim-kata-v2\0"));
    let r = shim_get(s, "/debug/pprof/heap?debug=1").await.unwrap();
    assert!(r.text().starts_with("heap profile"));
    let r = shim_get(s, "/debug/pprof/goroutine?debug=2").await.unwrap();
    assert!(r.text().starts_with("goroutine 1 ["));
    let r = shim_get(s, "/debug/pprof/heap").await.unwrap();
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"heap\"")
    );
    assert_eq!(&r.body[..2], &[0x1f, 0x8b]);
    let r = shim_get(s, "/debug/pprof/nothing").await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (404, "Unknown profile\n"));
    let t0 = Instant::now();
    let r = shim_get(s, "/debug/pprof/profile?seconds=1").await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"profile\"")
    );
    let t0 = Instant::now();
    let r = shim_get(s, "/debug/pprof/trace?seconds=0.2").await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(200));
    assert!(r.body.starts_with(b"go 1."));
    let r = shim_request(s, "POST", "/debug/pprof/symbol")
        .await
        .unwrap();
    assert!(r.text().starts_with("num_symbols: 1\n"));
}

#[tokio::test]
async fn permissions_and_cleanup() {
    let (_d, h) = start(Flavour::Go, Fault::None, false).await;
    let path = h.socket_path().to_path_buf();
    let dir = path.parent().unwrap().to_path_buf();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&path), 0o600);
    h.stop().await.unwrap();
    assert!(!path.exists());
    assert!(dir.exists());
    let (_d, h) = start(Flavour::RuntimeRs, Fault::None, false).await;
    let path = h.socket_path().to_path_buf();
    drop(h);
    assert!(!path.exists(), "dropping the handle removes the socket");
}

#[tokio::test]
async fn bad_requests_do_not_break_the_server() {
    for flavour in [Flavour::Go, Flavour::RuntimeRs] {
        let (_d, h) = start(flavour, Fault::None, true).await;
        for junk in [
            "BLAH\r\n\r\n",
            "GET\r\n\r\n",
            "\x00\x01\x02",
            "GET /metrics HTTP/9.9\r\n\r\n",
        ] {
            let _ = shim_raw(h.socket_path(), junk, Duration::from_millis(200)).await;
        }
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let p = h.socket_path().to_path_buf();
            tasks.push(tokio::spawn(async move { shim_get(&p, "/metrics").await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().status, 200);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fault_slow() {
    let (_d, h) = start(Flavour::Go, Fault::Slow(Duration::from_millis(300)), false).await;
    let t0 = Instant::now();
    let r = shim_get(h.socket_path(), "/agent-url").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
}

#[tokio::test]
async fn fault_hang_reads_request_and_never_answers() {
    let (_d, h) = start(Flavour::RuntimeRs, Fault::Hang, false).await;
    let RawReply { bytes, eof } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_millis(400),
    )
    .await
    .unwrap();
    assert!(bytes.is_empty() && !eof);
    assert_eq!(h.requests(), 1, "the request was read");
    // Flip back: new connections are served.
    h.set_fault(Fault::None).await.unwrap();
    assert_eq!(
        shim_get(h.socket_path(), "/metrics").await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn fault_garbage() {
    for flavour in [Flavour::Go, Flavour::RuntimeRs] {
        let (_d, h) = start(flavour, Fault::Garbage, false).await;
        let r = shim_get(h.socket_path(), "/metrics").await.unwrap();
        assert_eq!(r.status, 200);
        assert!(check_exposition(&r.text()).is_err());
        // Other endpoints are unaffected.
        assert_eq!(
            shim_get(h.socket_path(), "/agent-url")
                .await
                .unwrap()
                .status,
            200
        );
    }
}

#[tokio::test]
async fn fault_truncated_go_cuts_mid_chunk() {
    let (_d, h) = start(Flavour::Go, Fault::Truncated(Truncation::Auto), false).await;
    assert!(shim_get(h.socket_path(), "/metrics").await.is_err());
    let RawReply { bytes, eof } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(eof, "connection closed");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("Transfer-Encoding: chunked"));
    assert!(!text.ends_with("0\r\n\r\n"));
    // Last chunk announced 0x800 bytes but fewer follow.
    let last = text.rfind("\r\n800\r\n").unwrap();
    assert!(bytes.len() - (last + 7) < 2048);
    // Non-metrics requests on such a shim still work.
    assert_eq!(
        shim_get(h.socket_path(), "/agent-url")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn fault_truncated_rs_short_content_length() {
    let (_d, h) = start(
        Flavour::RuntimeRs,
        Fault::Truncated(Truncation::Auto),
        false,
    )
    .await;
    assert!(shim_get(h.socket_path(), "/metrics").await.is_err());
    let RawReply { bytes, eof } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(eof);
    let head = head_of(&bytes);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    let body = bytes.len() - head.len() - 4;
    assert!(body < len, "{body} < {len}");
    // Forced chunked truncation on runtime-rs framing.
    h.set_fault(Fault::Truncated(Truncation::Chunked))
        .await
        .unwrap();
    let RawReply { bytes, eof } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(eof && String::from_utf8_lossy(&bytes).contains("transfer-encoding: chunked"));
}

#[tokio::test]
async fn fault_endless() {
    let (_d, h) = start(Flavour::RuntimeRs, Fault::Endless, false).await;
    let RawReply { bytes, eof } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_millis(700),
    )
    .await
    .unwrap();
    assert!(!eof);
    assert!(bytes.len() > 40_000, "{}", bytes.len());
    assert!(String::from_utf8_lossy(&bytes).contains("transfer-encoding: chunked"));
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        shim_get(h.socket_path(), "/metrics"),
    )
    .await;
    assert!(r.is_err(), "a client never sees the end");
}

#[tokio::test]
async fn fault_huge() {
    for flavour in [Flavour::Go, Flavour::RuntimeRs] {
        let (_d, h) = start(flavour, Fault::Huge(4 << 20), false).await;
        let r = shim_get(h.socket_path(), "/metrics").await.unwrap();
        assert!(r.body.len() >= 4 << 20);
        check_exposition(&r.text()).unwrap();
        match flavour {
            Flavour::Go => assert_eq!(r.header("transfer-encoding"), Some("chunked")),
            Flavour::RuntimeRs => assert_eq!(
                r.header("content-length"),
                Some(r.body.len().to_string().as_str())
            ),
        }
    }
}

#[tokio::test]
async fn fault_http500() {
    let (_d, h) = start(Flavour::Go, Fault::Http500, false).await;
    let r = shim_get(h.socket_path(), "/metrics").await.unwrap();
    assert_eq!(r.status, 500);
    assert!(r.text().contains("simulated shim failure"));
}

#[tokio::test]
async fn fault_socket_states() {
    let (_d, h) = start(Flavour::Go, Fault::MissingSocket, false).await;
    let path = h.socket_path().to_path_buf();
    assert!(path.parent().unwrap().is_dir());
    assert!(!path.exists());
    let e = UnixStream::connect(&path).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    h.set_fault(Fault::StaleSocket).await.unwrap();
    assert!(path.exists());
    let e = UnixStream::connect(&path).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    h.set_fault(Fault::None).await.unwrap();
    assert_eq!(shim_get(&path, "/metrics").await.unwrap().status, 200);
    // Taking the socket away closes kept-alive connections too.
    h.set_fault(Fault::MissingSocket).await.unwrap();
    assert!(!path.exists());
    h.set_fault(Fault::None).await.unwrap();
    assert!(path.exists());
}

#[tokio::test]
async fn fault_accept_close() {
    let (_d, h) = start(Flavour::RuntimeRs, Fault::None, false).await;
    h.set_fault(Fault::AcceptClose).await.unwrap();
    let RawReply { bytes, eof } = shim_raw(
        h.socket_path(),
        &shim_get_request("/metrics"),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert!(bytes.is_empty() && eof);
    assert!(shim_get(h.socket_path(), "/metrics").await.is_err());
    assert_eq!(h.fault(), Fault::AcceptClose);
}

#[tokio::test]
async fn stop_ends_hung_connections() {
    let (_d, h) = start(Flavour::Go, Fault::Hang, false).await;
    let p = h.socket_path().to_path_buf();
    let pending = tokio::spawn(async move {
        shim_raw(&p, &shim_get_request("/metrics"), Duration::from_secs(5)).await
    });
    // Stop only once the shim holds the connection (it has read the request).
    for _ in 0..500 {
        if h.requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.stop().await.unwrap();
    let RawReply { bytes, eof } = pending.await.unwrap().unwrap();
    assert!(
        bytes.is_empty() && eof,
        "stopping closes the hung connection"
    );
}

#[tokio::test]
async fn faults_apply_to_kept_alive_connections() {
    use http_body_util::{BodyExt, Empty};
    let (_d, h) = start(Flavour::RuntimeRs, Fault::None, false).await;
    let stream = UnixStream::connect(h.socket_path()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = || {
        http::Request::get("/metrics")
            .header("Host", "shim")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let r = sender.send_request(req()).await.unwrap();
    r.into_body().collect().await.unwrap();
    // Same connection, now truncated: the body ends early with an error.
    h.set_fault(Fault::Truncated(Truncation::Length))
        .await
        .unwrap();
    let r = sender.send_request(req()).await.unwrap();
    assert!(r.into_body().collect().await.is_err());
    // A new connection that hangs.
    h.set_fault(Fault::Hang).await.unwrap();
    let stream = UnixStream::connect(h.socket_path()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let pending = tokio::time::timeout(Duration::from_millis(300), sender.send_request(req()));
    assert!(pending.await.is_err());
}
