//! karo's one error type for API work; every call has a deadline.

use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubernetes API: {0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the AlertReaction was deleted or replaced meanwhile")]
    Gone,
    #[error("status of {0} kept changing under us ({1} attempts)")]
    Contended(String, usize),
}

impl Error {
    /// A 409 from the API server (optimistic-concurrency conflict or AlreadyExists).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 404)
    }
}

/// Runs one API call with a deadline.
pub async fn timed<T>(
    what: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::Timeout(what, limit)),
    }
}
