//! The server's bounds and the liveness rule, on tokio's paused clock where
//! time matters.

use std::sync::atomic::Ordering;

use axum::body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::*;
use crate::config::{parse_args, Invocation};
use server::Bounds;

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
        metrics_clients: super::metrics_clients(),
    })
}

async fn get(app: &Arc<App>, path: &str) -> StatusCode {
    let req = http::Request::get(path).body(Body::empty()).unwrap();
    router(app.clone()).oneshot(req).await.unwrap().status()
}

/// The bounds the agent runs with by default.
fn default_bounds() -> Bounds {
    let c = &agent(&[]).config.server;
    Bounds {
        max_connections: c.max_connections,
        max_per_ip: c.max_connections_per_ip,
        header_timeout: c.header_timeout,
        idle_timeout: c.idle_timeout,
        lifetime: CONNECTION_LIFETIME,
        grace: c.shutdown_grace,
    }
}

/// A server of `app` with the given bounds: its address, the switch that
/// stops it and its task.
async fn server_of(
    app: Arc<App>,
    bounds: Bounds,
) -> (
    std::net::SocketAddr,
    watch::Sender<bool>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(server::serve(
        listener,
        service(app, None),
        None,
        bounds,
        stopped,
    ));
    (addr, stop, task)
}

/// A server with the given bounds; its address.
async fn server(bounds: Bounds) -> std::net::SocketAddr {
    let (addr, stop, _) = server_of(agent(&[]), bounds).await;
    // Serves until the test ends.
    std::mem::forget(stop);
    addr
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_no_request_is_dropped_after_the_header_timeout() {
    let bounds = default_bounds();
    let addr = server(bounds).await;
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    // Closed by the server: end of stream (or a reset).
    let _ = client.read_to_end(&mut buf).await;
    let waited = started.elapsed();
    assert!(
        waited >= bounds.header_timeout && waited < bounds.header_timeout + Duration::from_secs(1),
        "closed after {waited:?}"
    );
}

/// A client that trickles its head (slowloris) is cut at the head timeout
/// however steadily it sends.
#[tokio::test(start_paused = true)]
async fn a_head_sent_byte_by_byte_is_cut_at_the_header_timeout() {
    let bounds = default_bounds();
    let addr = server(bounds).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: agent\r\nX-Slow: ";
    let mut sent = 0;
    loop {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if client.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(1), client.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => panic!("answered a head that never ended"),
            Err(_) => {}
        }
        assert!(started.elapsed() < bounds.header_timeout * 2, "never cut");
    }
    let lived = started.elapsed();
    assert!(lived >= bounds.header_timeout, "cut after {lived:?}");
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

#[tokio::test]
async fn a_connection_beyond_the_limit_waits_until_one_closes() {
    let addr = server(Bounds {
        max_connections: 2,
        ..default_bounds()
    })
    .await;
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

/// Reads what the server sends until it closes.
async fn read_all(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn one_address_beyond_its_limit_gets_503_at_once() {
    let addr = server(Bounds {
        max_per_ip: 2,
        ..default_bounds()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert!(healthz_on(&mut c).await);
        held.push(c);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_all(&mut third))
        .await
        .expect("the refusal was not at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    // A slot given back is a slot to take.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        if healthz_on(&mut c).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed slot was not reused");
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_is_closed_at_its_lifetime() {
    let addr = server(default_bounds()).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let started = tokio::time::Instant::now();
    // A request every 2 s, well within the idle timeout.
    let mut answered = 0;
    while healthz_on(&mut conn).await {
        answered += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let lived = started.elapsed();
    assert!(answered >= 50, "closed early: {answered} answers");
    assert!(
        lived >= CONNECTION_LIFETIME && lived < CONNECTION_LIFETIME + Duration::from_secs(3),
        "closed after {lived:?}"
    );
}

/// After a response, a kept-alive connection gets the idle timeout, which
/// is shorter than the head timeout, to send its next request.
#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_before_the_header_timeout() {
    let bounds = default_bounds();
    assert!(bounds.idle_timeout < bounds.header_timeout);
    let addr = server(bounds).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    assert!(healthz_on(&mut conn).await);
    let answered = tokio::time::Instant::now();
    let rest = read_all(&mut conn).await;
    let idle = answered.elapsed();
    assert!(rest.is_empty(), "{rest}");
    assert!(
        idle >= bounds.idle_timeout && idle < bounds.header_timeout,
        "closed after {idle:?}"
    );
}

/// Raw request `head` (ending in a blank line) on a fresh connection: the
/// status line of the answer.
async fn status_of(addr: std::net::SocketAddr, head: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it read all of a huge head.
    let _ = conn.write_all(head).await;
    let text = read_all(&mut conn).await;
    text.lines().next().unwrap_or("").to_string()
}

/// Each head limit answers at once with its status, and the server goes on
/// serving.
#[tokio::test]
async fn oversized_requests_get_their_status_and_the_server_keeps_serving() {
    let addr = server(default_bounds()).await;
    let get = |target: String, headers: String| {
        format!("GET {target} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n{headers}\r\n")
            .into_bytes()
    };
    let big = format!("X-Big: {}\r\n", "b".repeat(200 * 1024));
    let one_long = format!("X-Long: {}\r\n", "l".repeat(limits::MAX_HEADER_BYTES));
    let many: String = (0..limits::MAX_HEADERS + 1)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let long_url = format!("/metrics?x={}", "u".repeat(limits::MAX_URL_BYTES));
    let huge_url = format!("/metrics?x={}", "u".repeat(limits::MAX_HEAD_BYTES));
    let prefixes: Vec<String> = (0..=limits::MAX_FILTER_FAMILIES)
        .map(|i| format!("p{i}"))
        .collect();
    let too_many = format!("/metrics?filter_family={}", prefixes.join(","));
    let fine: Vec<String> = (0..limits::MAX_FILTER_FAMILIES)
        .map(|i| format!("p{i}"))
        .collect();
    let enough = format!("/metrics?filter_family={}", fine.join(","));
    for (what, head, status) in [
        ("a 200 KB header", get("/healthz".into(), big), "431"),
        ("one long header", get("/healthz".into(), one_long), "431"),
        ("too many headers", get("/healthz".into(), many), "431"),
        ("a long URL", get(long_url, String::new()), "414"),
        (
            "a URL longer than the head",
            get(huge_url, String::new()),
            "431",
        ),
        ("too many prefixes", get(too_many, String::new()), "400"),
        ("the most prefixes", get(enough, String::new()), "200"),
        (
            "a body",
            get("/healthz".into(), "Content-Length: 5\r\n".into())
                .into_iter()
                .chain(*b"hello")
                .collect(),
            "413",
        ),
        (
            "a chunked body",
            get("/healthz".into(), "Transfer-Encoding: chunked\r\n".into()),
            "413",
        ),
    ] {
        let line = tokio::time::timeout(Duration::from_secs(10), status_of(addr, &head))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer at once"));
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {line}"
        );
        let mut conn = TcpStream::connect(addr).await.unwrap();
        assert!(healthz_on(&mut conn).await, "{what}: no longer serving");
    }
}

/// On stop, a response in flight (a `/metrics` waiting for a build permit)
/// is finished, new connections are refused and the server returns.
#[tokio::test]
async fn a_stop_finishes_the_response_in_flight() {
    let app = agent(&[]);
    let (addr, stop, task) = server_of(app.clone(), default_bounds()).await;
    let held: Vec<_> = (0..CONCURRENT_METRICS)
        .map(|_| app.metrics_builds.clone().try_acquire_owned().unwrap())
        .collect();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(healthz_on(&mut idle).await);
    let in_flight = tokio::spawn(async move {
        status_of(addr, b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n").await
    });
    // In flight once its handler counted it (it then waits for a permit).
    while app.requests.metrics_requests.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    // The idle connection is closed at once.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), read_all(&mut idle))
            .await
            .unwrap(),
        ""
    );
    drop(held);
    let line = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("not stopped after the last response")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

/// What is still in flight at the end of the grace period is cut.
#[tokio::test(start_paused = true)]
async fn the_grace_period_bounds_the_drain() {
    let app = agent(&[]);
    let bounds = default_bounds();
    let (addr, stop, task) = server_of(app.clone(), bounds).await;
    let _held: Vec<_> = (0..CONCURRENT_METRICS)
        .map(|_| app.metrics_builds.clone().try_acquire_owned().unwrap())
        .collect();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = tokio::time::Instant::now();
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let drained = stopped_at.elapsed();
    assert!(
        drained >= bounds.grace && drained < bounds.grace + Duration::from_secs(1),
        "returned after {drained:?}"
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
