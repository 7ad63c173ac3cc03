//! The server's bounds and the liveness rule, on tokio's paused clock where
//! time matters.

use std::sync::atomic::Ordering;

use axum::body::Body;
use tokio::io::AsyncReadExt;
use tower::ServiceExt;

use super::*;
use crate::config::{parse_args, Invocation};

/// An agent with no sandbox folder and the given extra flags.
fn agent(flags: &[&str]) -> Arc<App> {
    let mut args = vec![
        "kata-pulse",
        "--sandbox-dirs",
        "/nonexistent-kata-pulse-test",
    ];
    args.extend_from_slice(flags);
    let Invocation::Run(config) = parse_args(args.iter().map(|s| s.to_string()).collect()) else {
        panic!("flags {flags:?} refused");
    };
    let registry = Registry::new();
    let shim = ShimClient::new(config.shim_timeout, config.max_shim_body_bytes);
    let collector = Collector::new(registry.clone(), shim.clone(), config.metrics_interval, 4);
    Arc::new(App {
        config: *config,
        registry,
        collector,
        shim,
        discovery: Arc::new(DiscoveryStats::default()),
        cri: Arc::new(CriStats::default()),
        requests: Arc::new(RequestStats::default()),
        metrics_builds: Arc::new(Semaphore::new(CONCURRENT_METRICS)),
    })
}

async fn get(app: &Arc<App>, path: &str) -> StatusCode {
    let req = http::Request::get(path).body(Body::empty()).unwrap();
    router(app.clone()).oneshot(req).await.unwrap().status()
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_no_request_is_dropped_after_the_header_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, agent(&[])));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    // Closed by the server: end of stream (or a reset).
    let _ = client.read_to_end(&mut buf).await;
    let waited = started.elapsed();
    assert!(
        waited >= HEADER_TIMEOUT && waited < HEADER_TIMEOUT + Duration::from_secs(1),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn healthz_fails_once_cri_stays_away_longer_than_allowed() {
    let app = agent(&["--cri-unhealthy-after", "5m"]);
    assert_eq!(
        get(&app, "/healthz").await,
        StatusCode::OK,
        "CRI never answered"
    );
    app.cri.record(true);
    app.cri.record(false);
    assert_eq!(
        get(&app, "/healthz").await,
        StatusCode::OK,
        "just went away"
    );
    let six_minutes_ago = crate::unix_ms() - 6 * 60 * 1000;
    app.cri
        .down_since_ms
        .store(six_minutes_ago, Ordering::Relaxed);
    assert_eq!(get(&app, "/healthz").await, StatusCode::SERVICE_UNAVAILABLE);
    app.cri.record(true);
    assert_eq!(get(&app, "/healthz").await, StatusCode::OK, "back");
    // Without the flag, CRI never makes the agent unhealthy.
    let app2 = agent(&[]);
    app2.cri.record(true);
    app2.cri.record(false);
    app2.cri.down_since_ms.store(1, Ordering::Relaxed);
    assert_eq!(get(&app2, "/healthz").await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn aggregate_responses_are_built_a_few_at_a_time() {
    let app = agent(&[]);
    let held: Vec<_> = (0..CONCURRENT_METRICS)
        .map(|_| app.metrics_builds.clone().try_acquire_owned().unwrap())
        .collect();
    let waiting = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/metrics").await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!waiting.is_finished(), "built without a permit");
    drop(held);
    assert_eq!(waiting.await.unwrap(), StatusCode::OK);
}
