//! TLS for the webhook: a certificate and key from PEM files, re-read when
//! they change (cert-manager or a rotated Secret) without a restart. A
//! failed reload keeps serving the last good pair.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_rustls::rustls::crypto::ring::sign::any_supported_type;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

const RECHECK: Duration = Duration::from_secs(5);

pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    stamp: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

impl TlsConfig {
    pub fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let current = Arc::new(load(&cert, &key)?);
        let stamp = stamps(&cert, &key);
        let resolver = Reloading {
            cert,
            key,
            state: Mutex::new(State {
                current,
                stamp,
                checked: Instant::now(),
            }),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

fn stamps(cert: &PathBuf, key: &PathBuf) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn load(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<CertifiedKey> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate", cert.display());
    }
    let key_der =
        rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))
            .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?
            .ok_or_else(|| anyhow::anyhow!("{}: no private key", key.display()))?;
    let signing =
        any_supported_type(&key_der).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.elapsed() >= RECHECK {
            st.checked = Instant::now();
            let stamp = stamps(&self.cert, &self.key);
            if stamp != st.stamp {
                match load(&self.cert, &self.key) {
                    Ok(k) => {
                        tracing::info!("webhook TLS certificate reloaded");
                        st.current = Arc::new(k);
                        st.stamp = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificate reload failed; keeping the previous one")
                    }
                }
            }
        }
        Some(st.current.clone())
    }
}
