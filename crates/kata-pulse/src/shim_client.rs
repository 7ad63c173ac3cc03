//! HTTP/1.1 client for a shim's `shim-monitor.sock`.
//!
//! hyper does the protocol (the Go shim answers chunked, runtime-rs with a
//! Content-Length); this module adds what a node agent needs around it: one
//! deadline covering connect, headers and body, a cap on the body size, and
//! status codes that are checked instead of ignored.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a shim request failed; the variant names are used as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
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
        if !resp.status.is_success() {
            let text = String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
                .trim()
                .to_string();
            return Err(ShimError::Status {
                status: resp.status,
                body: text,
            });
        }
        Ok(resp)
    }

    /// Like [`ShimClient::get`] but returns non-2xx answers as responses.
    pub async fn get_any_status(
        &self,
        socket: &Path,
        path_and_query: &str,
    ) -> Result<ShimResponse, ShimError> {
        let max = self.max_body;
        let work = async {
            let (resp, conn) = open(socket, path_and_query).await?;
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
            let body = drive(collect, conn).await?;
            Ok(ShimResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(ShimError::Timeout(self.timeout)),
        }
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
            let (resp, conn) = open(socket, path_and_query).await?;
            tokio::spawn(conn);
            Ok(resp)
        };
        match tokio::time::timeout(header_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(ShimError::Timeout(header_timeout)),
        }
    }
}

type Conn = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Connects, sends the request and waits for the response head while
/// driving the connection.
async fn open(
    socket: &Path,
    path_and_query: &str,
) -> Result<(http::Response<Incoming>, Conn), ShimError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ShimError::Connect {
            socket: socket.display().to_string(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ShimError::Http(e.to_string()))?;
    let mut conn: Conn = Box::pin(async move {
        let _ = conn.await;
    });
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

/// Polls `work` to completion while also driving the connection future,
/// which must keep running until the body is read.
async fn drive<T>(
    work: impl std::future::Future<Output = Result<T, ShimError>>,
    mut conn: impl std::future::Future<Output = ()> + Unpin,
) -> Result<T, ShimError> {
    tokio::pin!(work);
    let mut conn_done = false;
    loop {
        tokio::select! {
            biased;
            result = &mut work => return result,
            _ = &mut conn, if !conn_done => conn_done = true,
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
