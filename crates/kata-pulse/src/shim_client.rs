//! HTTP/1.1 client for a shim's `shim-monitor.sock`.
//!
//! hyper does the protocol (the Go shim answers chunked, runtime-rs with a
//! Content-Length); this module adds what a node agent needs around it: one
//! deadline covering connect, headers and body, a cap on the body size,
//! status codes that are checked instead of ignored, and a connect that
//! goes nowhere but to the socket file it checked ([`crate::shim_socket`]).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use crate::shim_socket;

/// Why a shim request failed; the variant names are used as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    /// The socket file is not one the agent talks to (a symlink, a hard
    /// link, not a socket): see [`crate::shim_socket`].
    #[error("refusing to connect to {socket}: {why}")]
    Refused { socket: String, why: &'static str },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP error: {0}")]
    Http(String),
    #[error("shim answered HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
}

impl ShimError {
    /// Short, bounded reason for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ShimError::Connect { .. } => "connect",
            ShimError::Refused { .. } => "refused",
            ShimError::Timeout(_) => "timeout",
            ShimError::Http(_) => "http",
            ShimError::Status { .. } => "status",
            ShimError::TooLarge(_) => "too_large",
        }
    }
}

/// A complete shim response.
#[derive(Debug)]
pub struct ShimResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Debug)]
pub struct ShimClient {
    pub timeout: Duration,
    pub max_body: usize,
}

impl ShimClient {
    pub fn new(timeout: Duration, max_body: usize) -> Self {
        ShimClient { timeout, max_body }
    }

    /// GET `path_and_query`, requiring a 2xx status; the whole exchange is
    /// bounded by the client's timeout and body cap.
    pub async fn get(
        &self,
        socket: &Path,
        path_and_query: &str,
    ) -> Result<ShimResponse, ShimError> {
        let resp = self.get_any_status(socket, path_and_query).await?;
        require_success(resp)
    }

    /// Like [`ShimClient::get`] but returns non-2xx answers as responses.
    pub async fn get_any_status(
        &self,
        socket: &Path,
        path_and_query: &str,
    ) -> Result<ShimResponse, ShimError> {
        let work = async {
            let stream = shim_socket::connect(socket).await?;
            self.exchange(stream, path_and_query).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(ShimError::Timeout(self.timeout)),
        }
    }

    /// One request and its whole response over `stream`, the body capped
    /// at `max_body`. No deadline of its own: [`ShimClient::get_any_status`]
    /// puts one around it. Public so the fuzz target can feed it any bytes.
    pub async fn exchange<S>(
        &self,
        stream: S,
        path_and_query: &str,
    ) -> Result<ShimResponse, ShimError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let max = self.max_body;
        let (resp, mut conn) = open(stream, path_and_query).await?;
        let (parts, body) = resp.into_parts();
        let collect = async {
            Limited::new(body, max)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        ShimError::TooLarge(max)
                    } else {
                        ShimError::Http(e.to_string())
                    }
                })
        };
        let body = drive(collect, &mut conn).await?;
        Ok(ShimResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Starts a GET and returns the streaming response once its headers
    /// arrived within `header_timeout`. The body is not time-limited here
    /// (CPU profiles stream for as long as asked); the connection task ends
    /// with the body.
    pub async fn get_streaming(
        &self,
        socket: &Path,
        path_and_query: &str,
        header_timeout: Duration,
    ) -> Result<http::Response<Incoming>, ShimError> {
        let work = async {
            let stream = shim_socket::connect(socket).await?;
            let (resp, _task) = self.open_streaming(stream, path_and_query).await?;
            Ok(resp)
        };
        match tokio::time::timeout(header_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(ShimError::Timeout(header_timeout)),
        }
    }

    /// The request over `stream` and the response head; the rest of the
    /// connection runs on the returned task (none when it already ended).
    /// Public for the fuzz target.
    pub async fn open_streaming<S>(
        &self,
        stream: S,
        path_and_query: &str,
    ) -> Result<(http::Response<Incoming>, Option<JoinHandle<()>>), ShimError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (resp, conn) = open(stream, path_and_query).await?;
        Ok((resp, conn.spawn()))
    }
}

/// A non-2xx response as a [`ShimError::Status`] quoting the body's start.
pub fn require_success(resp: ShimResponse) -> Result<ShimResponse, ShimError> {
    if resp.status.is_success() {
        return Ok(resp);
    }
    let text = String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
        .trim()
        .to_string();
    Err(ShimError::Status {
        status: resp.status,
        body: text,
    })
}

/// hyper's connection future, which must be polled until the body is read,
/// and is polled no more once it has completed: like any `async` block it
/// panics when resumed after completion. On a `Connection: close` answer it
/// completes while the response head is still being awaited, and the
/// debug proxy used to spawn it again afterwards (a panicked task per
/// request).
struct Connection(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Connection {
    fn is_done(&self) -> bool {
        self.0.is_none()
    }

    /// Lets what is left of the connection run on its own task (a body
    /// streamed to someone else); nothing when it already completed.
    fn spawn(self) -> Option<JoinHandle<()>> {
        self.0.map(tokio::spawn)
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(fut) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.0 = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Sends the request and waits for the response head while driving the
/// connection.
async fn open<S>(
    stream: S,
    path_and_query: &str,
) -> Result<(http::Response<Incoming>, Connection), ShimError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ShimError::Http(e.to_string()))?;
    let mut conn = Connection(Some(Box::pin(async move {
        let _ = conn.await;
    })));
    let req = Request::get(path_and_query)
        .header(http::header::HOST, "shim")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ShimError::Http(e.to_string()))?;
    let resp = drive(
        async {
            sender
                .send_request(req)
                .await
                .map_err(|e| ShimError::Http(e.to_string()))
        },
        &mut conn,
    )
    .await?;
    Ok((resp, conn))
}

/// Polls `work` to completion while also driving the connection until it
/// completes (it must keep running until the body is read).
async fn drive<T>(
    work: impl Future<Output = Result<T, ShimError>>,
    conn: &mut Connection,
) -> Result<T, ShimError> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            result = &mut work => return result,
            _ = &mut *conn, if !conn.is_done() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// Serves one canned raw HTTP response per connection.
    async fn raw_server(
        dir: &Path,
        response: &'static [u8],
        delay: Duration,
    ) -> std::path::PathBuf {
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = s.write_all(response).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        path
    }

    /// An in-memory shim that reads the request head, answers `response`
    /// and closes.
    fn answering(response: &'static [u8]) -> tokio::io::DuplexStream {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.ends_with(b"\r\n\r\n") {
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = theirs.write_all(response).await;
        });
        ours
    }

    fn client() -> ShimClient {
        ShimClient::new(Duration::from_millis(500), 1024)
    }

    #[tokio::test]
    async fn chunked_body_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let sock = raw_server(
            dir.path(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nkata_g\r\nb\r\nuest_load 1\r\n1\r\n\n\r\n0\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        let resp = client().get(&sock, "/metrics").await.unwrap();
        assert_eq!(&resp.body[..], b"kata_guest_load 1\n");
    }

    #[tokio::test]
    async fn content_length_body() {
        let dir = tempfile::tempdir().unwrap();
        let sock = raw_server(
            dir.path(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\na 1\n",
            Duration::ZERO,
        )
        .await;
        let resp = client().get(&sock, "/metrics").await.unwrap();
        assert_eq!(&resp.body[..], b"a 1\n");
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = raw_server(
            dir.path(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\na 1\n",
            Duration::ZERO,
        )
        .await;
        let err = client().get(&sock, "/metrics").await.unwrap_err();
        assert_eq!(err.reason(), "http", "{err}");
    }

    #[tokio::test]
    async fn status_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let sock = raw_server(
            dir.path(),
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom",
            Duration::ZERO,
        )
        .await;
        let err = client().get(&sock, "/metrics").await.unwrap_err();
        assert!(
            matches!(err, ShimError::Status { status, .. } if status == 500),
            "{err}"
        );
        let resp = client().get_any_status(&sock, "/x").await.unwrap();
        assert_eq!(resp.status, 500);
    }

    #[tokio::test]
    async fn body_cap() {
        let dir = tempfile::tempdir().unwrap();
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n".to_vec();
            v.extend(std::iter::repeat_n(b'x', 4096));
            v
        });
        let sock = raw_server(dir.path(), big, Duration::ZERO).await;
        let err = client().get(&sock, "/metrics").await.unwrap_err();
        assert_eq!(err.reason(), "too_large");
    }

    #[tokio::test]
    async fn deadline_covers_a_silent_server() {
        let dir = tempfile::tempdir().unwrap();
        let sock = raw_server(
            dir.path(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Duration::from_secs(5),
        )
        .await;
        let started = std::time::Instant::now();
        let err = client().get(&sock, "/metrics").await.unwrap_err();
        assert_eq!(err.reason(), "timeout");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// A shim that closes after its answer (as every shim does on
    /// `Connection: close`) ends hyper's connection future before the head
    /// is handed over; it must never be polled again (it was, by the debug
    /// proxy: "async fn resumed after completion" in a task per request).
    #[tokio::test]
    async fn a_completed_connection_is_never_resumed() {
        for response in [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof",
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let (resp, mut conn) = open(answering(response), "/debug/vars").await.unwrap();
            // Streaming: the rest of the connection on a task of its own.
            let body = drive(
                async {
                    resp.into_body()
                        .collect()
                        .await
                        .map_err(|e| ShimError::Http(e.to_string()))
                },
                &mut conn,
            )
            .await
            .unwrap();
            assert!(!body.to_bytes().is_empty() || response.starts_with(b"HTTP/1.1 404"));
            (&mut conn).await;
            (&mut conn).await;
            if let Some(task) = conn.spawn() {
                task.await.expect("the connection task panicked");
            }
        }
        // The same through get_streaming, whose task used to panic.
        let ok = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        let (resp, conn) = open(answering(ok), "/").await.unwrap();
        let task = conn.spawn();
        assert_eq!(
            &resp.into_body().collect().await.unwrap().to_bytes()[..],
            b"ok"
        );
        if let Some(task) = task {
            task.await.expect("the connection task panicked");
        }
    }

    /// The fuzz target's finding (`corpus/regressions/
    /// shim-close-before-head-resumed.bin`, found against a build without
    /// the fix): a status out of range with a mangled header, streamed.
    #[tokio::test]
    async fn the_fuzzed_answer_that_resumed_a_completed_connection() {
        let client = ShimClient::new(Duration::from_secs(1), 256);
        let answer = b"HTTP/1.1 600 OKtent-th\xff;TTsa\n\r\n";
        if let Ok((_, Some(task))) = client.open_streaming(answering(answer), "/").await {
            task.await.expect("the connection task panicked");
        }
    }

    /// Every byte sequence a shim may send ends in a response or an error
    /// within the cap (the fuzz target's property, on a few fixed cases).
    #[tokio::test]
    async fn exchange_over_any_stream_keeps_the_cap() {
        let client = ShimClient::new(Duration::from_secs(1), 8);
        for response in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n123456789",
        ] {
            let err = client
                .exchange(answering(response), "/metrics")
                .await
                .unwrap_err();
            assert_eq!(err.reason(), "too_large", "{err}");
        }
        for garbage in [
            &b""[..],
            b"\0\0\0",
            b"HTTP/1.1 999999 X\r\n\r\n",
            b"SSH-2.0\r\n",
        ] {
            let err = client
                .exchange(answering(garbage), "/metrics")
                .await
                .unwrap_err();
            assert_eq!(err.reason(), "http", "{err}");
        }
    }

    #[tokio::test]
    async fn missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let err = client()
            .get(&dir.path().join("none.sock"), "/metrics")
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "connect");
    }
}
