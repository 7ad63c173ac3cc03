//! Basic auth against the web config's `basic_auth_users` (bcrypt hashes).
//!
//! bcrypt is slow on purpose, so a verified password is remembered (by a
//! digest of user, password and hash: a changed hash is a miss) and at
//! most [`VERIFIERS`] hashes run at once; beyond that a request gets 503 at
//! once instead of queueing, so wrong passwords cannot take the CPU from
//! scrapes. Unknown users cost a bcrypt run too: timing does not tell which
//! users exist.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::web_config::WebConfig;

/// bcrypt verifications running at once.
pub const VERIFIERS: usize = 2;
/// Verified credentials remembered (cleared when full).
const REMEMBERED: usize = 256;
/// A bcrypt hash (cost 10, as users' hashes usually are) checked for
/// unknown users only for the time it takes (they are refused whatever the
/// result); made once, on first use.
static DECOY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| bcrypt::hash("decoy", 10).unwrap_or_default());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, wrong ones, or a malformed header: 401.
    Unauthorized,
    /// Every verifier is busy: 503, try again.
    Busy,
}

pub struct BasicAuth {
    verified: Mutex<HashSet<[u8; 32]>>,
    verifiers: tokio::sync::Semaphore,
}

impl Default for BasicAuth {
    fn default() -> Self {
        BasicAuth {
            verified: Mutex::new(HashSet::new()),
            verifiers: tokio::sync::Semaphore::new(VERIFIERS),
        }
    }
}

impl BasicAuth {
    /// Checks an `Authorization` header against `users` (none: no auth).
    pub async fn check(
        &self,
        users: &HashMap<String, String>,
        header: Option<&HeaderValue>,
    ) -> Result<(), Denied> {
        if users.is_empty() {
            return Ok(());
        }
        let (user, password) = credentials(header).ok_or(Denied::Unauthorized)?;
        let known = users.get(&user).cloned();
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            for part in [
                user.as_bytes(),
                password.as_bytes(),
                known.as_deref().unwrap_or("").as_bytes(),
            ] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            h.finalize().into()
        };
        if known.is_some() && lock(&self.verified).contains(&key) {
            return Ok(());
        }
        let Ok(_permit) = self.verifiers.try_acquire() else {
            return Err(Denied::Busy);
        };
        let hash = known.clone().unwrap_or_else(|| DECOY.clone());
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !ok || known.is_none() {
            return Err(Denied::Unauthorized);
        }
        let mut remembered = lock(&self.verified);
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key);
        Ok(())
    }
}

/// What [`require`] checks against.
#[derive(Clone)]
pub struct Gate {
    pub web: Arc<WebConfig>,
    pub auth: Arc<BasicAuth>,
}

/// Lets a request through when the web config's current users accept it.
pub async fn require(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let users = gate.web.current();
    let header = req.headers().get(http::header::AUTHORIZATION);
    match gate.auth.check(&users.users, header).await {
        Ok(()) => next.run(req).await,
        Err(Denied::Unauthorized) => (
            StatusCode::UNAUTHORIZED,
            [(http::header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response(),
        Err(Denied::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
            "too many password checks at once; try again\n",
        )
            .into_response(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// User and password of a `Basic` header.
fn credentials(header: Option<&HeaderValue>) -> Option<(String, String)> {
    let value = header?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {v}")).unwrap()
    }

    #[tokio::test]
    async fn only_the_right_password_passes() {
        let auth = BasicAuth::default();
        let users = HashMap::from([("prom".to_string(), bcrypt::hash("secret", 4).unwrap())]);
        assert_eq!(
            auth.check(&users, Some(&basic("prom", "secret"))).await,
            Ok(())
        );
        // Remembered, and still right.
        assert_eq!(
            auth.check(&users, Some(&basic("prom", "secret"))).await,
            Ok(())
        );
        for bad in [
            Some(basic("prom", "wrong")),
            Some(basic("nobody", "secret")),
            Some(HeaderValue::from_static("Bearer secret")),
            Some(HeaderValue::from_static("Basic !!!")),
            None,
        ] {
            assert_eq!(
                auth.check(&users, bad.as_ref()).await,
                Err(Denied::Unauthorized),
                "{bad:?}"
            );
        }
        // No users: no auth.
        assert_eq!(auth.check(&HashMap::new(), None).await, Ok(()));
        // A changed hash is not answered from memory.
        let changed = HashMap::from([("prom".to_string(), bcrypt::hash("new", 4).unwrap())]);
        assert_eq!(
            auth.check(&changed, Some(&basic("prom", "secret"))).await,
            Err(Denied::Unauthorized)
        );
    }

    #[tokio::test]
    async fn verifications_are_bounded() {
        let auth = BasicAuth::default();
        let users = HashMap::from([("u".to_string(), bcrypt::hash("pw", 4).unwrap())]);
        assert_eq!(auth.check(&users, Some(&basic("u", "pw"))).await, Ok(()));
        let _held: Vec<_> = (0..VERIFIERS)
            .map(|_| auth.verifiers.try_acquire().unwrap())
            .collect();
        assert_eq!(
            auth.check(&users, Some(&basic("u", "guess"))).await,
            Err(Denied::Busy)
        );
        // A remembered success needs no verifier.
        assert_eq!(auth.check(&users, Some(&basic("u", "pw"))).await, Ok(()));
    }

    #[test]
    fn the_decoy_is_a_real_bcrypt_hash() {
        assert_eq!(bcrypt::verify("anything", DECOY.as_str()).ok(), Some(false));
    }
}
