//! A client of containerd's `Tasks/Metrics`, with a deadline on every call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cri_api::Endpoint;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use crate::proto::containerd::services::tasks::v1::MetricsRequest;
use crate::proto::containerd::types::Metric;
use crate::stats::{decode_any, ContainerStats, DecodeError};

/// The gRPC metadata key containerd reads the namespace from.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The containerd namespace of the CRI plugin's containers.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// containerd's limit on identifiers (namespaces, container ids).
const MAX_IDENTIFIER_LEN: usize = 76;

/// Why a metrics call failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid containerd namespace {0:?} (letters, digits and inner '.', '_', '-'; at most 76)"
    )]
    InvalidNamespace(String),
    #[error("invalid container id {0:?} (letters, digits and inner '.', '_', '-'; at most 76)")]
    InvalidContainerId(String),
    #[error("a containerd channel must be created from within a Tokio runtime")]
    NoRuntime,
    #[error("invalid containerd endpoint: {0}")]
    Channel(String),
    #[error("containerd Tasks/Metrics timed out after {0:?}")]
    Timeout(Duration),
    #[error("containerd Tasks/Metrics failed: {} ({})", .0.message(), .0.code())]
    Rpc(#[source] tonic::Status),
}

/// The figures of one task, as containerd returned them.
#[derive(Debug)]
pub struct TaskMetrics {
    /// The task (container) id.
    pub id: String,
    /// When containerd collected the figures (`None` if it sent no time).
    pub timestamp: Option<SystemTime>,
    /// The type URL of the payload, as sent (for diagnostics).
    pub type_url: String,
    /// The decoded figures, or why they could not be decoded; one bad
    /// payload never hides the others.
    pub stats: Result<ContainerStats, DecodeError>,
}

impl TaskMetrics {
    /// Decodes one `containerd.types.Metric`.
    pub fn from_metric(m: &Metric) -> Self {
        let stats = match &m.data {
            Some(any) => decode_any(any),
            None => Err(DecodeError::MissingData { id: m.id.clone() }),
        };
        TaskMetrics {
            id: m.id.clone(),
            timestamp: m.timestamp.as_ref().and_then(to_system_time),
            type_url: m
                .data
                .as_ref()
                .map(|d| d.type_url.clone())
                .unwrap_or_default(),
            stats,
        }
    }
}

fn to_system_time(t: &prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Whether `s` is a containerd identifier: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`,
/// at most 76 bytes (containerd's `identifiers.Validate`). Such a value
/// needs no quoting in a filter and is a valid metadata value.
pub fn is_identifier(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_IDENTIFIER_LEN {
        return false;
    }
    let mut prev_sep = true; // no separator first
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => prev_sep = false,
            b'.' | b'_' | b'-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !prev_sep
}

/// The filter selecting one container's task.
pub fn id_filter(id: &str) -> Result<String, Error> {
    if !is_identifier(id) {
        return Err(Error::InvalidContainerId(id.to_owned()));
    }
    Ok(format!("id=={id}"))
}

/// A `Tasks/Metrics` client bound to one containerd namespace.
///
/// Cheap to clone; calls take `&self` and may run concurrently. Every call
/// is bounded by the timeout given at construction (sent to containerd as
/// the gRPC deadline too), whatever the peer does.
#[derive(Clone, Debug)]
pub struct TaskMetricsClient {
    client: TasksClient<Channel>,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    timeout: Duration,
}

impl TaskMetricsClient {
    /// A client over an existing channel (containerd serves its own API and
    /// CRI on the same socket, so a CRI channel can be shared).
    pub fn new(channel: Channel, namespace: &str, timeout: Duration) -> Result<Self, Error> {
        if !is_identifier(namespace) {
            return Err(Error::InvalidNamespace(namespace.to_owned()));
        }
        let namespace = MetadataValue::try_from(namespace)
            .map_err(|_| Error::InvalidNamespace(namespace.to_owned()))?;
        Ok(TaskMetricsClient {
            client: TasksClient::new(channel),
            namespace,
            timeout,
        })
    }

    /// A client over a lazy channel to `endpoint` (nothing is dialled
    /// before the first call). Must be called within a Tokio runtime.
    pub fn connect_lazy(
        endpoint: &Endpoint,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let channel = cri_api::channel(endpoint, timeout).map_err(|e| match e {
            cri_api::ChannelError::NoRuntime => Error::NoRuntime,
            other => Error::Channel(other.to_string()),
        })?;
        Self::new(channel, namespace, timeout)
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `Tasks/Metrics` with raw filters (ORed; none = every task of the
    /// namespace), undecoded.
    pub async fn raw_metrics(&self, filters: Vec<String>) -> Result<Vec<Metric>, Error> {
        let mut req = tonic::Request::new(MetricsRequest { filters });
        req.set_timeout(self.timeout);
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout, client.metrics(req)).await {
            Err(_) => Err(Error::Timeout(self.timeout)),
            // tonic reports its own deadline as Cancelled/DeadlineExceeded.
            Ok(Err(s)) if s.code() == tonic::Code::DeadlineExceeded => {
                Err(Error::Timeout(self.timeout))
            }
            Ok(Err(s)) => Err(Error::Rpc(s)),
            Ok(Ok(resp)) => Ok(resp.into_inner().metrics),
        }
    }

    /// Decoded figures of every task in the namespace (CRI: every container
    /// and every pod's sandbox container).
    pub async fn all(&self) -> Result<Vec<TaskMetrics>, Error> {
        let raw = self.raw_metrics(Vec::new()).await?;
        Ok(raw.iter().map(TaskMetrics::from_metric).collect())
    }

    /// Decoded figures of the given containers, in containerd's order; a
    /// container without a running task is simply absent. An empty list
    /// asks nothing (it does not mean "all").
    pub async fn containers<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<TaskMetrics>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filters = ids
            .iter()
            .map(|id| id_filter(id.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let raw = self.raw_metrics(filters).await?;
        Ok(raw.iter().map(TaskMetrics::from_metric).collect())
    }

    /// Decoded figures of one container; `Ok(None)` when it has no task.
    pub async fn container(&self, id: &str) -> Result<Option<TaskMetrics>, Error> {
        let found = self.containers(&[id]).await?;
        Ok(found.into_iter().find(|m| m.id == id))
    }
}
