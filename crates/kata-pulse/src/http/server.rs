//! The accept loop: how many connections, from whom, for how long, over
//! TLS or not, and how they end when the agent stops.
//!
//! - At most `max_connections` are served; more wait in the listen backlog.
//! - One client IP holds at most `max_per_ip`; more get a 503 and are closed
//!   at once, so one client cannot take every slot.
//! - A client has `header_timeout` to send each request head (slowloris),
//!   and after a response `idle_timeout` to send the next complete head
//!   (shorter: idle keep-alive connections free their slot sooner).
//! - No connection lives longer than `lifetime`.
//! - On stop: no new connections; open ones finish their request (idle ones
//!   close at once) within `grace`, then whatever is left is cut.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tower::ServiceExt;

use super::limits::{MAX_HEADERS, MAX_HEAD_BYTES};
use super::per_ip::{PeerIp, PerIp};
use super::stall::{StallGuard, WRITE_STALL};
use super::web_config::WebConfig;

/// The bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub grace: Duration,
}

/// Serves `router` on `listener` until `stop` turns true, then drains.
/// With `web`, each connection gets the TLS settings current when it was
/// accepted (plain HTTP when the web config has none).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Option<Arc<WebConfig>>,
    bounds: Bounds,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(bounds.max_connections));
    let per_ip = Arc::new(PerIp::new(bounds.max_per_ip));
    let (drain_tx, drain_rx) = watch::channel(false);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = per_ip.take(peer.ip()) else {
            refuse(&stream);
            continue;
        };
        let stream = StallGuard::new(stream, WRITE_STALL);
        let tls = web.as_ref().and_then(|w| w.current().tls.clone());
        let router = router.clone();
        let drain = drain_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let work = async {
                match tls {
                    None => {
                        connection(TokioIo::new(stream), peer.ip(), router, bounds, drain).await
                    }
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        match tokio::time::timeout(bounds.header_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => {
                                connection(TokioIo::new(s), peer.ip(), router, bounds, drain).await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            };
            if tokio::time::timeout(bounds.lifetime, work).await.is_err() {
                tracing::debug!("HTTP connection closed at its maximum lifetime");
            }
        });
    }
    // Stop accepting: connections still in the backlog are refused.
    drop(listener);
    let _ = drain_tx.send(true);
    let all = u32::try_from(bounds.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(bounds.grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = bounds.max_connections - permits.available_permits(),
            "shutdown grace period over: cutting the connections still open"
        );
    }
    Ok(())
}

/// Over the per-IP limit: a short 503 if the socket takes it now, then close.
fn refuse(stream: &TcpStream) {
    const BODY: &str = "too many connections from your address\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    tracing::debug!(
        peer = ?stream.peer_addr().ok(),
        "connection refused: per-IP connection limit reached"
    );
}

async fn connection<I>(
    io: TokioIo<I>,
    peer: IpAddr,
    router: Router,
    bounds: Bounds,
    mut drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(PeerIp(peer));
            let guard = InFlight::begin(activity.clone());
            let router = router.clone();
            async move {
                let resp = router.oneshot(req.map(Body::new)).await;
                resp.map(|r| {
                    r.map(|inner| {
                        Body::new(Tracked {
                            inner,
                            _guard: guard,
                        })
                    })
                })
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            return;
        }
        _ = activity.idle_for(bounds.idle_timeout) => {
            tracing::debug!("idle keep-alive connection closed");
        }
        _ = drain.wait_for(|d| *d) => {}
    }
    // Idle: closes now; a request in flight: after its response.
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Requests of one connection: how many are in flight, how many began.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    begun: AtomicU64,
    /// One permit per finished response.
    finished: Notify,
}

impl Activity {
    /// Returns once a response is over and no next request came within
    /// `limit` (never before the first response: the head timeout covers
    /// a connection's first request).
    async fn idle_for(&self, limit: Duration) {
        loop {
            self.finished.notified().await;
            if self.in_flight.load(Ordering::Acquire) > 0 {
                continue;
            }
            let begun = self.begun.load(Ordering::Acquire);
            tokio::time::sleep(limit).await;
            if self.begun.load(Ordering::Acquire) == begun
                && self.in_flight.load(Ordering::Acquire) == 0
            {
                return;
            }
        }
    }
}

/// Counts a request from its head until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> InFlight {
        activity.begun.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_one();
    }
}

/// A response body that holds its request's [`InFlight`] until hyper
/// drops it (sent or abandoned).
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
