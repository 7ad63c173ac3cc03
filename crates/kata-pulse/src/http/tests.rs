//! The server's bounds and the liveness rule, on tokio's paused clock where
//! time matters.

use std::sync::atomic::Ordering;

use axum::body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

/// Sends one `/healthz` request on `conn`; true when an answer came back
/// (false when the server closed the connection).
async fn healthz_on(conn: &mut TcpStream) -> bool {
    let req = b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n";
    if conn.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    // The answer is small: read until its body ("ok\n") is in.
    while !got.ends_with(b"ok\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}

/// A server with the given bounds; its address.
async fn server(max_connections: usize, lifetime: Duration) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_bounded(
        listener,
        agent(&[]),
        max_connections,
        lifetime,
    ));
    addr
}

#[tokio::test]
async fn a_connection_beyond_the_limit_waits_until_one_closes() {
    let addr = server(2, CONNECTION_LIFETIME).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert!(healthz_on(&mut c).await);
        held.push(c);
    }
    // Accepted by the kernel (the backlog), not served by the agent.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let waiting = tokio::spawn(async move { healthz_on(&mut third).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served while the limit was reached");
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert!(
        served.expect("not served after a slot was freed").unwrap(),
        "no answer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_is_closed_at_its_lifetime() {
    let addr = server(MAX_CONNECTIONS, CONNECTION_LIFETIME).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    // A request every 5 s, well within the header timeout.
    let mut answered = 0;
    while healthz_on(&mut conn).await {
        answered += 1;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let lived = started.elapsed();
    assert!(answered >= 20, "closed early: {answered} answers");
    assert!(
        lived >= CONNECTION_LIFETIME && lived < CONNECTION_LIFETIME + Duration::from_secs(6),
        "closed after {lived:?}"
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
