//! The Alertmanager receiver: authenticate, read a bounded body, parse,
//! queue, answer at once. Alertmanager retries 5xx and not 4xx, so what may
//! succeed later (not ready yet, queue full) is a 503 and what never will
//! (bad credentials, a malformed payload) is a 4xx.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::alert::Notification;
use crate::auth::{Auth, Denied};
use crate::metrics::{CodeLabel, Metrics};

/// Time a client has to send its whole body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies read at the same time (each at most `max_body`).
pub const CONCURRENT_BODIES: usize = 16;

/// An accepted notification, as received: it holds its share of the
/// queue's byte budget until processed.
pub struct Queued {
    pub body: Bytes,
    _budget: OwnedSemaphorePermit,
}

pub struct Webhook {
    pub auth: Arc<Auth>,
    pub queue: mpsc::Sender<Queued>,
    pub ready: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    /// Bytes the queue may hold (`--queue-max-bytes`).
    pub budget: Arc<Semaphore>,
    pub readers: Arc<Semaphore>,
}

impl Webhook {
    pub fn new(
        auth: Arc<Auth>,
        queue: mpsc::Sender<Queued>,
        ready: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        max_body: usize,
        queue_bytes: usize,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(queue_bytes.max(max_body)));
        let readers = Arc::new(Semaphore::new(CONCURRENT_BODIES));
        Self {
            auth,
            queue,
            ready,
            metrics,
            max_body,
            budget,
            readers,
        }
    }
}

pub fn router(path: &str, state: Arc<Webhook>) -> Router {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let path = path.trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/webhook".to_string()
    } else {
        path
    };
    Router::new()
        .route(
            "/health",
            get(|| async { Json(json!({"status": "healthy"})) }),
        )
        .route(&path, post(receive))
        .route(&format!("{path}/{{receiver}}"), post(receive))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

async fn receive(State(w): State<Arc<Webhook>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let response = handle(&w, &headers, body).await;
    w.metrics
        .webhook_duration
        .observe(started.elapsed().as_secs_f64());
    w.metrics
        .webhook_requests
        .get_or_create(&CodeLabel {
            code: response.status().as_u16(),
        })
        .inc();
    response
}

async fn handle(w: &Webhook, headers: &HeaderMap, body: Body) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(denied) = w.auth.check(authorization).await {
        let message = match denied {
            Denied::Missing => "credentials required",
            Denied::Invalid => "invalid credentials",
            Denied::Busy => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy checking credentials, retry later",
                )
            }
        };
        let mut r = error(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"karo\", Bearer realm=\"karo\""),
        );
        return r;
    }
    if !*w.ready.borrow() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: AlertReactions not synced yet",
        );
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > w.max_body {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {} bytes", w.max_body),
            );
        }
    }
    // Bounded memory: at most CONCURRENT_BODIES bodies in flight.
    let Ok(Ok(_reader)) =
        tokio::time::timeout(Duration::from_secs(1), w.readers.clone().acquire_owned()).await
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once, retry later",
        );
    };
    let limited = http_body_util::Limited::new(body, w.max_body);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {} bytes", w.max_body),
            )
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        Ok(Ok(b)) => b.to_bytes(),
    };
    let notification = match Notification::parse(&bytes) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let alerts = notification.alerts.len();
    drop(notification);
    let Ok(budget) = w
        .budget
        .clone()
        .try_acquire_many_owned(bytes.len().max(1) as u32)
    else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "queue full, retry later");
    };
    match w.queue.try_send(Queued {
        body: bytes,
        _budget: budget,
    }) {
        Ok(()) => {
            w.metrics.queue_depth.inc();
            (
                StatusCode::OK,
                Json(json!({"message": "Webhook accepted", "alerts": alerts})),
            )
                .into_response()
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "queue full, retry later")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    struct Setup {
        router: Router,
        rx: mpsc::Receiver<Queued>,
        ready: watch::Sender<bool>,
        metrics: Arc<Metrics>,
    }

    fn setup(capacity: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "s3cret\n").unwrap();
        let auth = Arc::new(Auth::new(Some(tokens), None, false).unwrap());
        let (tx, rx) = mpsc::channel(capacity);
        let (ready_tx, ready) = watch::channel(true);
        let metrics = Arc::new(Metrics::new());
        let w = Arc::new(Webhook::new(auth, tx, ready, metrics.clone(), 4096, 8192));
        Setup {
            router: router("/webhook", w),
            rx,
            ready: ready_tx,
            metrics,
        }
    }

    async fn send(
        router: &Router,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    const OK_BODY: &str = r#"{"version":"4","receiver":"karo","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"}}]}"#;

    #[tokio::test]
    async fn accepted_notifications_are_queued() {
        let mut s = setup(4);
        let (code, body) = send(&s.router, "/webhook", Some("Bearer s3cret"), OK_BODY).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["alerts"], 1);
        let (code, _) = send(
            &s.router,
            "/webhook/any-receiver",
            Some("Bearer s3cret"),
            OK_BODY,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        let q = s.rx.recv().await.unwrap();
        assert_eq!(Notification::parse(&q.body).unwrap().receiver, "karo");
        assert!(s.rx.try_recv().is_ok());
        assert!(s
            .metrics
            .encode()
            .contains("webhook_requests_total{code=\"200\"} 2"));
    }

    #[tokio::test]
    async fn unauthenticated_and_malformed_requests_queue_nothing() {
        let mut s = setup(4);
        assert_eq!(
            send(&s.router, "/webhook", None, OK_BODY).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&s.router, "/webhook", Some("Bearer nope"), OK_BODY)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        let (code, body) = send(&s.router, "/webhook", Some("Bearer s3cret"), "{not json").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().unwrap().starts_with("Invalid JSON"),
            "{body}"
        );
        let big = format!(r#"{{"receiver":"{}"}}"#, "x".repeat(5000));
        assert_eq!(
            send(&s.router, "/webhook", Some("Bearer s3cret"), &big)
                .await
                .0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert!(s.rx.try_recv().is_err());
        assert!(s
            .metrics
            .encode()
            .contains("webhook_requests_total{code=\"401\"} 2"));
    }

    #[tokio::test]
    async fn not_ready_and_full_queue_are_503() {
        let mut s = setup(1);
        s.ready.send(false).unwrap();
        assert_eq!(
            send(&s.router, "/webhook", Some("Bearer s3cret"), OK_BODY)
                .await
                .0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.ready.send(true).unwrap();
        assert_eq!(
            send(&s.router, "/webhook", Some("Bearer s3cret"), OK_BODY)
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            send(&s.router, "/webhook", Some("Bearer s3cret"), OK_BODY)
                .await
                .0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.rx.recv().await.unwrap();
        assert_eq!(
            send(&s.router, "/webhook", Some("Bearer s3cret"), OK_BODY)
                .await
                .0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_too() {
        let mut s = setup(100);
        let big = format!(r#"{{"receiver":"{}","alerts":[]}}"#, "x".repeat(3000));
        let auth = Some("Bearer s3cret");
        assert_eq!(
            send(&s.router, "/webhook", auth, &big).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(&s.router, "/webhook", auth, &big).await.0,
            StatusCode::OK
        );
        // 8192 bytes of budget: a third body of 3 KB does not fit.
        assert_eq!(
            send(&s.router, "/webhook", auth, &big).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(s.rx.recv().await.unwrap());
        assert_eq!(
            send(&s.router, "/webhook", auth, &big).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn health_needs_no_credentials() {
        let s = setup(1);
        let resp = s
            .router
            .clone()
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], br#"{"status":"healthy"}"#);
    }
}
