//! HTTP to a shim's monitor socket, the way the agent and kata-monitor talk
//! to it: HTTP/1.1 over a unix socket with `Host: shim`.
//!
//! Async (tokio), unlike the blocking [`crate::http_get`], because the
//! simulated shims these tests talk to run on the test's own runtime. The
//! answer is the same [`HttpResponse`] the TCP client returns.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::http::HttpResponse;

/// One request on a fresh connection, the body read to its end; an error
/// when the connection breaks or the framing is cut short. No timeout of
/// its own: wrap it in `tokio::time::timeout` where a peer may hang.
pub async fn shim_request(sock: &Path, method: &str, path: &str) -> Result<HttpResponse> {
    let stream = UnixStream::connect(sock)
        .await
        .with_context(|| format!("connect {}", sock.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "shim")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_owned(), v)
        })
        .collect();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// [`shim_request`] with `GET`.
pub async fn shim_get(sock: &Path, path: &str) -> Result<HttpResponse> {
    shim_request(sock, "GET", path).await
}

/// Bytes as they come off the wire, for what a client library would hide
/// (header spelling, chunk sizes, a cut-off body).
pub struct RawReply {
    pub bytes: Vec<u8>,
    /// The peer closed the connection (rather than `limit` running out).
    pub eof: bool,
}

/// Writes `request` as is and reads until the peer closes or `limit` has
/// passed, whichever is first.
pub async fn shim_raw(sock: &Path, request: &str, limit: Duration) -> Result<RawReply> {
    let mut s = UnixStream::connect(sock)
        .await
        .with_context(|| format!("connect {}", sock.display()))?;
    s.write_all(request.as_bytes()).await?;
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Ok(RawReply { bytes, eof: false }),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(RawReply { bytes, eof: true }),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// A bare `GET path` request as kata-monitor sends it, for [`shim_raw`].
pub fn shim_get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: shim\r\n\r\n")
}
