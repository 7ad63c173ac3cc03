//! What one request may cost: head and URL sizes, no request body, and a
//! deadline for the whole response. Each is checked before any handler
//! runs and answered at once (431, 414, 413, 503), so going over costs
//! nothing more. docs/operations.md lists these numbers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http_body::Frame;

use super::text_response;

/// Largest request head (request line and every header); more: 431 from
/// hyper, before anything is parsed further.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request; more: 431.
pub const MAX_HEADERS: usize = 64;
/// Largest single header field (name and value); more: 431.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;
/// Longest request target (path and query); more: 414.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Most `filter_family` prefixes in one request; more: 400 (each prefix
/// costs a comparison per family of every sandbox).
pub const MAX_FILTER_FAMILIES: usize = 64;

/// Response deadlines: `normal` for every endpoint, `debug` for the debug
/// proxy, whose profiles take as long as they are asked to.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub normal: Duration,
    pub debug: Duration,
}

/// Refuses heads with an oversized field or target, and requests with a
/// body (every endpoint is a GET; a body is never read, and the connection
/// is closed so it is not read as the next request either).
pub async fn check_request(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URL_BYTES {
        return refuse(
            StatusCode::URI_TOO_LONG,
            format!("request target longer than {MAX_URL_BYTES} bytes\n"),
        );
    }
    if let Some((name, _)) = req
        .headers()
        .iter()
        .find(|(n, v)| n.as_str().len() + v.len() > MAX_HEADER_BYTES)
    {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("header {name} longer than {MAX_HEADER_BYTES} bytes\n"),
        );
    }
    let headers = req.headers();
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted: every endpoint is a GET\n".to_string(),
        );
    }
    next.run(req).await
}

fn refuse(status: StatusCode, text: String) -> Response {
    let mut resp = text_response(status, text);
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// Bounds the whole response, head and body: no head by the deadline is a
/// 503; a body still in transfer then is cut (a client that reads slowly
/// cannot hold what it was sent for longer). The wait for a `/metrics`
/// build permit is inside it.
pub async fn deadline(State(d): State<Deadlines>, req: Request, next: Next) -> Response {
    let limit = if req.uri().path().starts_with("/debug/") {
        d.debug
    } else {
        d.normal
    };
    let at = tokio::time::Instant::now() + limit;
    match tokio::time::timeout_at(at, next.run(req)).await {
        Ok(resp) => resp.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep_until(at)),
            })
        }),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "5")],
            format!("no response within {}s\n", limit.as_secs_f64()),
        )
            .into_response(),
    }
}

/// A body that fails (hyper then closes the connection) at its deadline.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

#[derive(Debug, thiserror::Error)]
#[error("response deadline passed with the body still in transfer")]
struct DeadlinePassed;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(DeadlinePassed))));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(axum::BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Router {
        let deadlines = Deadlines {
            normal: Duration::from_secs(30),
            debug: Duration::from_secs(600),
        };
        Router::new()
            .route("/fast", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(31)).await;
                    "late"
                }),
            )
            .route(
                "/debug/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(31)).await;
                    "profile"
                }),
            )
            .route(
                "/stream",
                get(|| async {
                    // A body whose second half comes after the deadline.
                    let chunks = futures_util::stream::unfold(0, |n| async move {
                        match n {
                            0 => Some((Ok::<_, std::io::Error>(Bytes::from("first ")), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_secs(40)).await;
                                Some((Ok(Bytes::from("second")), 2))
                            }
                            _ => None,
                        }
                    });
                    Body::from_stream(chunks)
                }),
            )
            .layer(axum::middleware::from_fn_with_state(deadlines, deadline))
            .layer(axum::middleware::from_fn(check_request))
    }

    async fn status(req: http::Request<Body>) -> StatusCode {
        app().oneshot(req).await.unwrap().status()
    }

    fn get_req(uri: &str) -> http::request::Builder {
        http::Request::get(uri)
    }

    #[tokio::test]
    async fn oversized_heads_and_bodies_are_refused() {
        let ok = get_req("/fast").body(Body::empty()).unwrap();
        assert_eq!(status(ok).await, StatusCode::OK);
        let long = format!("/fast?x={}", "a".repeat(MAX_URL_BYTES));
        let req = get_req(&long).body(Body::empty()).unwrap();
        assert_eq!(status(req).await, StatusCode::URI_TOO_LONG);
        let big = "b".repeat(MAX_HEADER_BYTES);
        let req = get_req("/fast")
            .header("x-big", big)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            status(req).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let req = get_req("/fast")
            .header("content-length", "5")
            .body(Body::from("hello"))
            .unwrap();
        let resp = app().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()["connection"], "close");
        let req = get_req("/fast")
            .header("transfer-encoding", "chunked")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(req).await, StatusCode::PAYLOAD_TOO_LARGE);
        let req = get_req("/fast")
            .header("content-length", "0")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(req).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn no_head_by_the_deadline_is_503_except_for_debug_profiles() {
        let req = get_req("/slow").body(Body::empty()).unwrap();
        assert_eq!(status(req).await, StatusCode::SERVICE_UNAVAILABLE);
        let req = get_req("/debug/slow").body(Body::empty()).unwrap();
        assert_eq!(status(req).await, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_still_in_transfer_at_the_deadline_is_cut() {
        let req = get_req("/stream").body(Body::empty()).unwrap();
        let resp = app().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first ");
        let cut = body.frame().await.unwrap();
        assert!(cut.is_err(), "the second chunk came after the deadline");
    }
}
