//! The HTTP/1.1 accept loop both listeners use: a connection cap, a header
//! read timeout (slowloris), a connection lifetime, optional TLS, and a
//! graceful stop (no new connections; open ones finish their request).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::tls::TlsConfig;

/// Open connections per listener.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Largest request head (hyper's buffer), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time open connections get to finish after a stop.
const DRAIN: Duration = Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<TlsConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (drain_tx, drain_rx) = watch::channel(false);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
        let tls = tls.clone();
        let mut drain = drain_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let work = async {
                match tls {
                    None => connection(TokioIo::new(stream), router, &mut drain).await,
                    Some(tls) => {
                        let acceptor = tls.acceptor();
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => connection(TokioIo::new(s), router, &mut drain).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            };
            if tokio::time::timeout(CONNECTION_LIFETIME, work)
                .await
                .is_err()
            {
                tracing::debug!("connection closed at its maximum lifetime");
            }
        });
    }
    let _ = drain_tx.send(true);
    // Wait until every connection has ended, or the drain time is over.
    let _ = tokio::time::timeout(DRAIN, permits.acquire_many(MAX_CONNECTIONS as u32)).await;
}

async fn connection<I>(io: TokioIo<I>, router: Router, drain: &mut watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = drain.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
