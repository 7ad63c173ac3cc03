//! Hand-written truncated responses: hyper will not cut a chunk in the middle, and an
//! aborted hyper response may lose its buffered bytes, while a test needs to see exactly
//! the partial answer a shim dying mid-response leaves behind.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;

use super::bodies::GO_CHUNK;
use super::{chunked_truncation, serve_http, Flavour, Shared};
use crate::fault::Truncation;
use crate::format::http_date;

const MAX_HEAD: usize = 64 * 1024;

/// Reads the first request; if it is a `/metrics` scrape, answers with a truncated body
/// (chunked and cut mid-chunk, or shorter than its Content-Length) and closes. Anything else
/// is handed to the normal server, bytes already read included.
pub(crate) async fn truncated_or_serve(mut stream: UnixStream, shared: Arc<Shared>, t: Truncation) {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(p) = find_head_end(&buf) {
            break p;
        }
        if buf.len() >= MAX_HEAD {
            return;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("");
    let path = first.next().unwrap_or("").split('?').next().unwrap_or("");
    let is_scrape = path == "/metrics" && (shared.flavour == Flavour::Go || method == "GET");
    if !is_scrape {
        let io = Rewind {
            prefix: Bytes::from(buf),
            inner: stream,
        };
        serve_http(io, shared).await;
        return;
    }
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let body = shared.render_metrics().into_bytes();
    let _ = if chunked_truncation(shared.flavour, t) {
        write_cut_chunked(&mut stream, shared.flavour, &body).await
    } else {
        write_short_length(&mut stream, shared.flavour, &body).await
    };
}

async fn write_short_length(
    stream: &mut UnixStream,
    flavour: Flavour,
    body: &[u8],
) -> io::Result<()> {
    let date = http_date(SystemTime::now());
    let len = body.len();
    let head = match flavour {
        Flavour::Go => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: text/plain; charset=utf-8\r\n\
Date: {date}\r\n\r\n"
        ),
        Flavour::RuntimeRs => format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\ndate: {date}\r\n\r\n"),
    };
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body[..len / 2]).await?;
    stream.flush().await?;
    stream.shutdown().await
}

async fn write_cut_chunked(
    stream: &mut UnixStream,
    flavour: Flavour,
    body: &[u8],
) -> io::Result<()> {
    let date = http_date(SystemTime::now());
    let head = match flavour {
        Flavour::Go => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: {date}\r\n\
Transfer-Encoding: chunked\r\n\r\n"
        ),
        Flavour::RuntimeRs => {
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: {date}\r\n\r\n")
        }
    };
    stream.write_all(head.as_bytes()).await?;
    // About half the body in whole chunks, then a chunk announced in full but sent in part.
    let whole = (body.len() / 2) / GO_CHUNK;
    for c in body.chunks(GO_CHUNK).take(whole) {
        stream
            .write_all(format!("{:x}\r\n", c.len()).as_bytes())
            .await?;
        stream.write_all(c).await?;
        stream.write_all(b"\r\n").await?;
    }
    let rest = &body[(whole * GO_CHUNK).min(body.len())..];
    let next = &rest[..rest.len().min(GO_CHUNK)];
    stream
        .write_all(format!("{:x}\r\n", next.len().max(2)).as_bytes())
        .await?;
    stream.write_all(&next[..next.len() / 2]).await?;
    stream.flush().await?;
    stream.shutdown().await
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// A stream that replays bytes already read before reading from the socket again.
struct Rewind {
    prefix: Bytes,
    inner: UnixStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
