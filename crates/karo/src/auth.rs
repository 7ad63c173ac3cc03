//! Webhook authentication: bearer tokens (one per line) and/or htpasswd
//! lines with bcrypt hashes, each from a file re-read when it changes (a
//! mounted Secret rotates without a restart). Tokens are compared as SHA-256
//! digests in constant time; bcrypt results are cached by a digest of the
//! credentials, so a valid client costs one hash per credential and file
//! version, not one per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How often a credentials file is checked for changes (at most).
const RECHECK: Duration = Duration::from_secs(2);
/// Verified basic-auth credentials remembered.
const CACHE_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No usable Authorization header.
    Missing,
    /// Wrong credentials.
    Invalid,
    /// Too many password checks running: try again (503).
    Busy,
}

/// Password checks (bcrypt) running at once.
const VERIFIERS: usize = 2;
/// A bcrypt hash (cost 10) of a random password, verified against for
/// unknown users.
const DUMMY_HASH: &str = "$2b$10$NOCcp0MbhYWImdIYT0QJtOaQBPpurCzhaxDqfElrubshYdLn85Kva";

#[derive(Default)]
struct Loaded {
    tokens: Vec<[u8; 32]>,
    users: HashMap<String, String>,
}

struct Watched {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

pub struct Auth {
    insecure: bool,
    token_file: Option<Mutex<Watched>>,
    htpasswd_file: Option<Mutex<Watched>>,
    loaded: Mutex<Loaded>,
    verified: Mutex<std::collections::HashSet<[u8; 32]>>,
    verifiers: tokio::sync::Semaphore,
}

impl Auth {
    /// Fails when neither file is given (unless `insecure`) or a file cannot
    /// be read at start.
    pub fn new(
        token_file: Option<PathBuf>,
        htpasswd_file: Option<PathBuf>,
        insecure: bool,
    ) -> anyhow::Result<Self> {
        if !insecure && token_file.is_none() && htpasswd_file.is_none() {
            anyhow::bail!(
                "the webhook needs credentials: give --webhook-token-file and/or --webhook-basic-auth-file (or --insecure-no-auth for a test setup)"
            );
        }
        let watched = |p: Option<PathBuf>| {
            p.map(|path| {
                Mutex::new(Watched {
                    path,
                    stamp: None,
                    checked: None,
                })
            })
        };
        let auth = Self {
            insecure,
            token_file: watched(token_file),
            htpasswd_file: watched(htpasswd_file),
            loaded: Mutex::new(Loaded::default()),
            verified: Mutex::new(Default::default()),
            verifiers: tokio::sync::Semaphore::new(VERIFIERS),
        };
        auth.refresh(true)?;
        Ok(auth)
    }

    /// Re-reads changed files (at most every [`RECHECK`] unless `force`).
    /// A file that became unreadable keeps its last contents.
    fn refresh(&self, force: bool) -> anyhow::Result<()> {
        let mut changed = false;
        let mut loaded = Loaded::default();
        for slot in [&self.token_file, &self.htpasswd_file] {
            let Some(w) = slot else { continue };
            let mut w = lock(w);
            let due = force || w.checked.is_none_or(|t| t.elapsed() >= RECHECK);
            if due {
                w.checked = Some(Instant::now());
                let stamp = std::fs::metadata(&w.path)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                if stamp != w.stamp || force {
                    w.stamp = stamp;
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(());
        }
        for (slot, is_tokens) in [(&self.token_file, true), (&self.htpasswd_file, false)] {
            let Some(w) = slot else { continue };
            let path = lock(w).path.clone();
            match std::fs::read_to_string(&path) {
                Ok(text) if is_tokens => loaded.tokens = parse_tokens(&text),
                Ok(text) => loaded.users = parse_htpasswd(&text, &path),
                Err(e) if force => anyhow::bail!("cannot read {}: {e}", path.display()),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "credentials file unreadable; keeping the previous contents");
                    let old = lock(&self.loaded);
                    if is_tokens {
                        loaded.tokens = old.tokens.clone();
                    } else {
                        loaded.users = old.users.clone();
                    }
                }
            }
        }
        if loaded.tokens.is_empty() && loaded.users.is_empty() && !self.insecure {
            tracing::warn!(
                "the credentials files hold no token and no user: every webhook request is refused"
            );
        }
        tracing::info!(
            tokens = loaded.tokens.len(),
            users = loaded.users.len(),
            "webhook credentials loaded"
        );
        *lock(&self.loaded) = loaded;
        lock(&self.verified).clear();
        Ok(())
    }

    /// Checks an `Authorization` header value.
    pub async fn check(&self, header: Option<&str>) -> Result<(), Denied> {
        if self.insecure {
            return Ok(());
        }
        if let Err(e) = self.refresh(false) {
            tracing::warn!(error = %e, "credentials refresh failed");
        }
        let header = header.ok_or(Denied::Missing)?;
        let (scheme, value) = header.split_once(' ').ok_or(Denied::Missing)?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
            let loaded = lock(&self.loaded);
            // Compare with every token so timing says nothing about which.
            let mut ok = subtle::Choice::from(0);
            for t in &loaded.tokens {
                ok |= t.ct_eq(&digest);
            }
            return if bool::from(ok) {
                Ok(())
            } else {
                Err(Denied::Invalid)
            };
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Denied::Missing);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| Denied::Invalid)?;
        let text = String::from_utf8(decoded).map_err(|_| Denied::Invalid)?;
        let (user, password) = text.split_once(':').ok_or(Denied::Invalid)?;
        let known = lock(&self.loaded).users.get(user).cloned();
        let key: [u8; 32] = Sha256::digest(
            format!("{user}\0{password}\0{}", known.as_deref().unwrap_or("")).as_bytes(),
        )
        .into();
        if known.is_some() && lock(&self.verified).contains(&key) {
            return Ok(());
        }
        // Unknown users cost a bcrypt run too (timing says nothing about
        // which users exist), and at most VERIFIERS run at once: wrong
        // passwords cannot take the CPU from everything else.
        let Ok(_permit) = self.verifiers.try_acquire() else {
            return Err(Denied::Busy);
        };
        let hash = known.clone().unwrap_or_else(|| DUMMY_HASH.to_string());
        let password = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !ok || known.is_none() {
            return Err(Denied::Invalid);
        }
        // Only successes are cached, so failures cannot evict a client's entry.
        let mut cache = lock(&self.verified);
        if cache.len() >= CACHE_LEN {
            cache.clear();
        }
        cache.insert(key);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_tokens(text: &str) -> Vec<[u8; 32]> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Sha256::digest(l.as_bytes()).into())
        .collect()
}

/// `user:hash` lines; only bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) are accepted.
fn parse_htpasswd(text: &str, path: &Path) -> HashMap<String, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) => {
                users.insert(user.to_string(), hash.to_string());
            }
            _ => {
                tracing::warn!(file = %path.display(), line = n + 1, "htpasswd line skipped: not user:<bcrypt hash>")
            }
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    }

    #[tokio::test]
    async fn tokens_and_basic_auth() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "# comment\nfirst-token\n\n  second-token  \n").unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(
            &htpasswd,
            format!("alertmanager:{hash}\nbroken-line\nmd5:$apr1$xyz\n"),
        )
        .unwrap();
        let auth = Auth::new(Some(tokens), Some(htpasswd), false).unwrap();
        assert_eq!(auth.check(Some("Bearer first-token")).await, Ok(()));
        assert_eq!(auth.check(Some("bearer second-token")).await, Ok(()));
        assert_eq!(auth.check(Some("Bearer first")).await, Err(Denied::Invalid));
        assert_eq!(auth.check(None).await, Err(Denied::Missing));
        assert_eq!(auth.check(Some("Digest x")).await, Err(Denied::Missing));
        assert_eq!(
            auth.check(Some(&basic("alertmanager", "secret"))).await,
            Ok(())
        );
        // Cached answers stay right.
        assert_eq!(
            auth.check(Some(&basic("alertmanager", "secret"))).await,
            Ok(())
        );
        assert_eq!(
            auth.check(Some(&basic("alertmanager", "wrong"))).await,
            Err(Denied::Invalid)
        );
        assert_eq!(
            auth.check(Some(&basic("md5", "xyz"))).await,
            Err(Denied::Invalid)
        );
        assert_eq!(auth.check(Some("Basic !!!")).await, Err(Denied::Invalid));
    }

    #[tokio::test]
    async fn a_changed_file_is_re_read() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "old\n").unwrap();
        let auth = Auth::new(Some(tokens.clone()), None, false).unwrap();
        assert_eq!(auth.check(Some("Bearer old")).await, Ok(()));
        std::fs::write(&tokens, "new-and-longer\n").unwrap();
        // Force the recheck interval to pass.
        lock(auth.token_file.as_ref().unwrap()).checked = None;
        assert_eq!(auth.check(Some("Bearer new-and-longer")).await, Ok(()));
        assert_eq!(auth.check(Some("Bearer old")).await, Err(Denied::Invalid));
        // An unreadable file keeps the last good contents.
        std::fs::remove_file(&tokens).unwrap();
        lock(auth.token_file.as_ref().unwrap()).checked = None;
        assert_eq!(auth.check(Some("Bearer new-and-longer")).await, Ok(()));
    }

    #[test]
    fn the_dummy_hash_is_a_real_bcrypt_hash() {
        // Else unknown users would be refused without the work (a timing tell).
        assert_eq!(bcrypt::verify("anything", DUMMY_HASH).ok(), Some(false));
    }

    #[tokio::test]
    async fn password_checks_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("u:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
        let auth = std::sync::Arc::new(Auth::new(None, Some(htpasswd), false).unwrap());
        // Hold every verifier: a further unknown password is "busy", not checked.
        let held: Vec<_> = (0..VERIFIERS)
            .map(|_| auth.verifiers.try_acquire().unwrap())
            .collect();
        assert_eq!(
            auth.check(Some(&basic("u", "wrong"))).await,
            Err(Denied::Busy)
        );
        drop(held);
        assert_eq!(auth.check(Some(&basic("u", "pw"))).await, Ok(()));
        // A cached success needs no verifier.
        let _held: Vec<_> = (0..VERIFIERS)
            .map(|_| auth.verifiers.try_acquire().unwrap())
            .collect();
        assert_eq!(auth.check(Some(&basic("u", "pw"))).await, Ok(()));
        assert_eq!(
            auth.check(Some(&basic("nobody", "pw"))).await,
            Err(Denied::Busy)
        );
    }

    #[test]
    fn credentials_are_required_unless_insecure() {
        assert!(Auth::new(None, None, false).is_err());
        assert!(Auth::new(None, None, true).is_ok());
        assert!(Auth::new(Some("/nonexistent/tokens".into()), None, false).is_err());
    }
}
