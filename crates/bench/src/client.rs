//! One HTTP GET against an agent, timed from sending the request to the last body byte,
//! as a scraper experiences it. Bodies are counted, not decoded (a gzip body stays gzip).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest any request of the benchmark may take: a scrape of 1000 sandboxes takes
/// seconds on a busy machine, never a minute.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Largest body kept in memory when asked for one (a scrape of 1000 sandboxes is
/// about 140 MB of text); bigger ones are an error rather than unbounded memory.
const MAX_KEPT: usize = 1 << 30;

#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub wall: Duration,
    pub bytes: usize,
    /// `Content-Encoding` of the response, `identity` when absent.
    pub encoding: String,
    /// The body, when it was asked to be kept.
    pub body: Option<Bytes>,
}

/// What to ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub gzip: bool,
    pub accept: Option<&'a str>,
    pub keep_body: bool,
}

pub async fn get(addr: SocketAddr, path: &str, ask: Ask<'_>) -> Result<Fetched> {
    tokio::time::timeout(TIMEOUT, get_inner(addr, path, ask))
        .await
        .with_context(|| format!("GET {path} took over {TIMEOUT:?}"))?
}

async fn get_inner(addr: SocketAddr, path: &str, ask: Ask<'_>) -> Result<Fetched> {
    let start = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    if ask.gzip {
        req = req.header(http::header::ACCEPT_ENCODING, "gzip");
    }
    if let Some(a) = ask.accept {
        req = req.header(http::header::ACCEPT, a);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status().as_u16();
    let encoding = resp
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_string();
    let mut body = resp.into_body();
    let mut bytes = 0usize;
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("reading the body of {path}"))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len();
            if ask.keep_body {
                anyhow::ensure!(bytes <= MAX_KEPT, "body of {path} is over {MAX_KEPT} bytes");
                kept.extend_from_slice(data);
            }
        }
    }
    Ok(Fetched {
        status,
        wall: start.elapsed(),
        bytes,
        encoding,
        body: ask.keep_body.then(|| kept.freeze()),
    })
}
