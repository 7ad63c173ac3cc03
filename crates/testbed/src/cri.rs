//! Blocking access to a CRI endpoint for tests and for the test bed's own
//! readiness checks and cleanup.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use cri_api::runtime::v1::image_service_client::ImageServiceClient;
use cri_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// A CRI `RuntimeService` client over a lazy channel.
pub type CriClient = RuntimeServiceClient<Channel>;

/// A CRI `ImageService` client over a lazy channel.
pub type CriImageClient = ImageServiceClient<Channel>;

/// Runs `f` with a gRPC channel to the CRI `endpoint`, bounded by `timeout`.
///
/// The work runs on a private current-thread Tokio runtime in its own
/// thread: blocking on a runtime from inside another one panics, and this
/// is called from `Drop` and from both sync and `#[tokio::test]` tests.
pub fn with_cri_channel<T, F, Fut>(endpoint: &str, timeout: Duration, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Channel) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let endpoint = cri_api::parse_endpoint(endpoint)?;
    std::thread::spawn(move || -> Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a Tokio runtime")?;
        rt.block_on(async move {
            let channel = cri_api::channel(&endpoint, timeout.min(Duration::from_secs(5)))?;
            tokio::time::timeout(timeout, f(channel))
                .await
                .map_err(|_| anyhow!("CRI call to {endpoint} timed out after {timeout:?}"))?
        })
    })
    .join()
    .map_err(|_| anyhow!("CRI client thread panicked"))?
}

/// Like [`with_cri_channel`], with a `RuntimeService` client.
pub fn with_cri<T, F, Fut>(endpoint: &str, timeout: Duration, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(CriClient) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    with_cri_channel(endpoint, timeout, |ch| f(RuntimeServiceClient::new(ch)))
}
