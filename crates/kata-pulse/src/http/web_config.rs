//! `--web.config.file`: TLS and basic auth in the Prometheus
//! exporter-toolkit format, so a node_exporter web config works unchanged.
//!
//! Differences, all refused with a clear error rather than ignored: the
//! inline-free subset of `tls_server_config` that rustls can honour
//! (`client_auth_type` values that verify nothing, cipher and curve lists,
//! `client_allowed_sans`, TLS below 1.2), `http_server_config.headers` and
//! `rate_limit` are not supported. The file and every file it names are
//! checked for changes on each new connection and request (a `stat` each):
//! a change is re-read at once; a broken new version keeps the last good
//! one (logged), and TLS cannot be switched on or off without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Largest web config, certificate or key file read (they are a few KiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsSection>,
    http_server_config: Option<HttpSection>,
    basic_auth_users: Option<HashMap<String, String>>,
    rate_limit: Option<serde_yaml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    http2: Option<bool>,
    headers: Option<HashMap<String, String>>,
}

/// One loaded version of the file.
pub struct WebSettings {
    /// Serve TLS with this; `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// User name → bcrypt hash; empty: no basic auth.
    pub users: HashMap<String, String>,
}

/// What identifies a version of a file without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

struct State {
    current: Arc<WebSettings>,
    /// The config file and the files it names, with their stamps when read.
    files: Vec<(PathBuf, Stamp)>,
}

/// The web config, re-read when it changes.
pub struct WebConfig {
    path: PathBuf,
    state: Mutex<State>,
}

impl WebConfig {
    /// Reads the file at start: any error is fatal (the agent does not
    /// start unprotected when protection was asked for).
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let (settings, files) = read(path)?;
        Ok(WebConfig {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                current: Arc::new(settings),
                files,
            }),
        })
    }

    /// The settings to apply now, re-read first if a file changed.
    pub fn current(&self) -> Arc<WebSettings> {
        let mut st = lock(&self.state);
        let changed = st.files.iter().any(|(p, s)| stamp(p) != *s);
        if changed {
            self.reload_locked(&mut st);
        }
        st.current.clone()
    }

    /// Re-reads the file now (SIGHUP).
    pub fn reload(&self) {
        let mut st = lock(&self.state);
        self.reload_locked(&mut st);
    }

    fn reload_locked(&self, st: &mut State) {
        match read(&self.path) {
            Ok((settings, files)) => {
                if settings.tls.is_some() != st.current.tls.is_some() {
                    tracing::error!(
                        file = %self.path.display(),
                        "web config change ignored: switching TLS on or off needs a restart"
                    );
                    st.files = files;
                    return;
                }
                tracing::info!(
                    file = %self.path.display(),
                    tls = settings.tls.is_some(),
                    users = settings.users.len(),
                    "web config reloaded"
                );
                st.current = Arc::new(settings);
                st.files = files;
            }
            Err(e) => {
                // Remember the broken version: it is reported once, not on
                // every request until it is fixed.
                for (p, s) in st.files.iter_mut() {
                    *s = stamp(p);
                }
                tracing::error!(file = %self.path.display(), error = %e, "web config reload failed; keeping the previous version");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(buf)
}

/// Parses the file and loads what it names; also returns every file read
/// with its stamp (taken before reading, so a change while reading is seen
/// next time).
fn read(path: &Path) -> Result<(WebSettings, Vec<(PathBuf, Stamp)>), String> {
    let mut files = vec![(path.to_path_buf(), stamp(path))];
    let text = read_bounded(path)?;
    let file: File = if text.iter().all(u8::is_ascii_whitespace) {
        File::default()
    } else {
        serde_yaml::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if file.rate_limit.is_some() {
        return Err("rate_limit is not supported (the agent bounds connections itself; see --max-connections-per-ip)".into());
    }
    if let Some(http) = &file.http_server_config {
        if http.headers.as_ref().is_some_and(|h| !h.is_empty()) {
            return Err("http_server_config.headers is not supported".into());
        }
        // `http2` is accepted and has no effect: the agent speaks HTTP/1.1.
        let _ = http.http2;
    }
    let users = file.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        if user.contains(':') {
            return Err(format!("basic_auth_users: user name {user:?} contains ':'"));
        }
        if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            return Err(format!(
                "basic_auth_users: the password of {user:?} is not a bcrypt hash ($2a$, $2b$ or $2y$)"
            ));
        }
    }
    let tls = match file.tls_server_config {
        Some(t) if enabled(&t) => Some(Arc::new(tls_config(&t, dir, &mut files)?)),
        _ => None,
    };
    Ok((WebSettings { tls, users }, files))
}

/// As exporter-toolkit: any TLS key given turns TLS on.
fn enabled(t: &TlsSection) -> bool {
    [
        &t.cert,
        &t.key,
        &t.client_ca,
        &t.cert_file,
        &t.key_file,
        &t.client_ca_file,
        &t.client_auth_type,
    ]
    .iter()
    .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()))
}

/// The PEM text of `inline` or of the file `path` (relative to the config's
/// folder); `None` when neither is given.
fn pem(
    what: &str,
    inline: &Option<String>,
    path: &Option<String>,
    dir: &Path,
    files: &mut Vec<(PathBuf, Stamp)>,
) -> Result<Option<Vec<u8>>, String> {
    let inline = inline.as_deref().filter(|s| !s.is_empty());
    let path = path.as_deref().filter(|s| !s.is_empty());
    match (inline, path) {
        (Some(_), Some(_)) => Err(format!("both {what} and {what}_file are given; keep one")),
        (Some(text), None) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(p)) => {
            let full = dir.join(p);
            files.push((full.clone(), stamp(&full)));
            read_bounded(&full)
                .map(Some)
                .map_err(|e| format!("{what}_file: {e}"))
        }
        (None, None) => Ok(None),
    }
}

fn tls_config(
    t: &TlsSection,
    dir: &Path,
    files: &mut Vec<(PathBuf, Stamp)>,
) -> Result<ServerConfig, String> {
    for (key, given) in [
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
    ] {
        if given {
            return Err(format!(
                "tls_server_config.{key} is not supported (rustls' safe defaults apply)"
            ));
        }
    }
    let cert = pem("cert", &t.cert, &t.cert_file, dir, files)?
        .ok_or("tls_server_config: missing one of cert or cert_file")?;
    let key = pem("key", &t.key, &t.key_file, dir, files)?
        .ok_or("tls_server_config: missing one of key or key_file")?;
    let ca = pem("client_ca", &t.client_ca, &t.client_ca_file, dir, files)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no PEM certificate found".into());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key.as_slice())
        .map_err(|e| format!("key: {e}"))?
        .ok_or("key: no PEM private key found")?;

    let versions = versions(t.min_version.as_deref(), t.max_version.as_deref())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mandatory = match t.client_auth_type.as_deref().unwrap_or("") {
        "" | "NoClientCert" => None,
        "VerifyClientCertIfGiven" => Some(false),
        "RequireAndVerifyClientCert" => Some(true),
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            return Err(format!(
                "client_auth_type {:?} is not supported: it accepts certificates nobody verified; use RequireAndVerifyClientCert",
                t.client_auth_type.as_deref().unwrap_or("")
            ))
        }
        other => return Err(format!("invalid client_auth_type {other:?}")),
    };
    let builder = match (mandatory, ca) {
        (None, Some(_)) => {
            return Err(
                "a client CA is configured without a client_auth_type that uses it (RequireAndVerifyClientCert)"
                    .into(),
            )
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(
                "client_auth_type verifies client certificates: give client_ca_file".into(),
            )
        }
        (Some(mandatory), Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut ca.as_slice()) {
                let c = c.map_err(|e| format!("client CA: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("client CA: {e}"))?;
            }
            if roots.is_empty() {
                return Err("client CA: no PEM certificate found".into());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mandatory {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    Ok(config)
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |v: Option<&str>, default: u8, key: &str| -> Result<u8, String> {
        match v.unwrap_or("") {
            "" => Ok(default),
            "TLS12" => Ok(12),
            "TLS13" => Ok(13),
            "TLS10" | "TLS11" => Err(format!("{key} {v:?}: only TLS12 and TLS13 are supported")),
            other => Err(format!("invalid {key} {other:?} (TLS12 or TLS13)")),
        }
    };
    let (lo, hi) = (rank(min, 12, "min_version")?, rank(max, 13, "max_version")?);
    if lo > hi {
        return Err("min_version is above max_version".into());
    }
    let mut out = Vec::new();
    if lo <= 12 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= 13 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A self-signed certificate and its key, made by openssl.
    fn cert_pair(dir: &Path) {
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=kata-pulse", "-keyout"])
            .arg(dir.join("tls.key"))
            .arg("-out")
            .arg(dir.join("tls.crt"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn error_of(dir: &Path, text: &str) -> String {
        let p = write(dir, "web.yml", text);
        match WebConfig::load(&p) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_exporter_toolkit_format_loads() {
        let dir = tempfile::tempdir().unwrap();
        cert_pair(dir.path());
        // Relative paths are relative to the config's folder.
        let p = write(
            dir.path(),
            "web.yml",
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: tls.crt\n  min_version: TLS12\nhttp_server_config:\n  http2: true\nbasic_auth_users:\n  prometheus: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n",
        );
        let web = WebConfig::load(&p).unwrap();
        let now = web.current();
        assert!(now.tls.is_some());
        assert_eq!(now.users.len(), 1);
        // An empty file: plain HTTP, no auth.
        let empty = write(dir.path(), "empty.yml", "\n");
        let web = WebConfig::load(&empty).unwrap();
        assert!(web.current().tls.is_none() && web.current().users.is_empty());
    }

    #[test]
    fn mistakes_and_unsupported_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        cert_pair(dir.path());
        let tls = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n";
        for (text, expect) in [
            ("tls_server_config:\n  cert_fiel: x\n", "unknown field"),
            ("basic_auth_user:\n  a: b\n", "unknown field"),
            (
                "tls_server_config:\n  cert_file: tls.crt\n",
                "missing one of key",
            ),
            (
                "tls_server_config:\n  key_file: tls.key\n",
                "missing one of cert",
            ),
            (
                "tls_server_config:\n  cert_file: nope.crt\n  key_file: tls.key\n",
                "nope.crt",
            ),
            ("basic_auth_users:\n  a: plaintext\n", "not a bcrypt hash"),
            ("rate_limit:\n  interval: 1s\n  burst: 2\n", "rate_limit"),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
                "headers",
            ),
        ] {
            let e = error_of(dir.path(), text);
            assert!(e.contains(expect), "{text}: {e}");
        }
        for (extra, expect) in [
            (
                "  client_auth_type: RequireAnyClientCert\n",
                "not supported",
            ),
            (
                "  client_auth_type: Sometimes\n",
                "invalid client_auth_type",
            ),
            ("  client_ca_file: tls.crt\n", "without a client_auth_type"),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "give client_ca_file",
            ),
            ("  min_version: TLS11\n", "only TLS12 and TLS13"),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "above max_version",
            ),
            (
                "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites",
            ),
            ("  cert: inline\n", "both cert and cert_file"),
        ] {
            let e = error_of(dir.path(), &format!("{tls}{extra}"));
            assert!(e.contains(expect), "{extra}: {e}");
        }
    }

    #[test]
    fn a_changed_file_is_re_read_and_a_broken_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let p = write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  a: {hash}\n"),
        );
        let web = WebConfig::load(&p).unwrap();
        assert!(web.current().users.contains_key("a"));
        write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  bb: {hash}\n"),
        );
        let now = web.current();
        assert!(now.users.contains_key("bb") && !now.users.contains_key("a"));
        write(dir.path(), "web.yml", "basic_auth_users: [broken\n");
        assert!(
            web.current().users.contains_key("bb"),
            "kept the last good one"
        );
        // TLS cannot be switched on by a reload.
        cert_pair(dir.path());
        write(
            dir.path(),
            "web.yml",
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n",
        );
        assert!(web.current().tls.is_none());
    }
}
