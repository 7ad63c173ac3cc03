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

/// A deadline that passed: containerd's (`DEADLINE_EXCEEDED`) or the one
/// tonic enforces locally for `grpc-timeout` (`CANCELLED` caused by
/// [`tonic::TimeoutExpired`]).
fn is_timeout(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::DeadlineExceeded {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = e.source();
    }
    false
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
            Ok(Err(s)) if is_timeout(&s) => Err(Error::Timeout(self.timeout)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::containerd::services::tasks::v1::tasks_server::{Tasks, TasksServer};
    use crate::proto::containerd::services::tasks::v1::MetricsResponse;
    use crate::stats::CGROUPS_V1_METRICS;
    use prost::Message;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::{Request, Response, Status};

    #[test]
    fn identifiers_follow_containerd() {
        for ok in ["k8s.io", "default", "a", "0ab", "a-b_c.d", &"x".repeat(76)] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a b",
            "a/b",
            "a==b",
            "a,id==b",
            "é",
            &"x".repeat(77),
        ] {
            assert!(!is_identifier(bad), "{bad}");
        }
        assert_eq!(id_filter("abc123").unwrap(), "id==abc123");
        assert!(matches!(
            id_filter("a,id~=.*"),
            Err(Error::InvalidContainerId(id)) if id == "a,id~=.*"
        ));
    }

    #[test]
    fn recognises_timeouts() {
        assert!(is_timeout(&Status::deadline_exceeded("too slow")));
        assert!(!is_timeout(&Status::cancelled("gone")));
        assert!(!is_timeout(&Status::unavailable("down")));
    }

    #[tokio::test]
    async fn rejects_a_bad_namespace() {
        let ep = Endpoint::Unix(PathBuf::from("/nonexistent/containerd.sock"));
        for ns in ["", "k8s io", "k8s.io\n"] {
            let err = TaskMetricsClient::connect_lazy(&ep, ns, Duration::from_secs(1)).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidNamespace(n) if n == ns),
                "{err:?}"
            );
        }
    }

    #[test]
    fn needs_a_runtime() {
        let ep = Endpoint::Unix(PathBuf::from("/nonexistent/containerd.sock"));
        assert!(matches!(
            TaskMetricsClient::connect_lazy(&ep, CRI_NAMESPACE, Duration::from_secs(1)),
            Err(Error::NoRuntime)
        ));
    }

    #[test]
    fn converts_timestamps() {
        let t = |seconds, nanos| to_system_time(&prost_types::Timestamp { seconds, nanos });
        assert_eq!(t(1, 5), Some(UNIX_EPOCH + Duration::new(1, 5)));
        assert_eq!(t(-1, 0), None);
        assert_eq!(t(1, -1), None);
        assert_eq!(t(1, 1_000_000_000), None);
    }

    /// What the fake saw of each request.
    #[derive(Default)]
    struct Seen {
        namespaces: Vec<Option<String>>,
        filters: Vec<Vec<String>>,
        had_deadline: Vec<bool>,
    }

    struct FakeContainerd {
        seen: Arc<Mutex<Seen>>,
        delay: Duration,
        metrics: Vec<Metric>,
    }

    #[tonic::async_trait]
    impl Tasks for FakeContainerd {
        async fn metrics(
            &self,
            request: Request<MetricsRequest>,
        ) -> Result<Response<MetricsResponse>, Status> {
            {
                let mut seen = self.seen.lock().unwrap();
                let md = request.metadata();
                seen.namespaces.push(
                    md.get(NAMESPACE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from),
                );
                seen.had_deadline.push(md.get("grpc-timeout").is_some());
                seen.filters.push(request.get_ref().filters.clone());
            }
            tokio::time::sleep(self.delay).await;
            if request.metadata().get(NAMESPACE_HEADER).is_none() {
                return Err(Status::failed_precondition("namespace is required"));
            }
            Ok(Response::new(MetricsResponse {
                metrics: self.metrics.clone(),
            }))
        }
    }

    struct Fake {
        _dir: tempfile::TempDir,
        endpoint: Endpoint,
        seen: Arc<Mutex<Seen>>,
    }

    fn serve(delay: Duration, metrics: Vec<Metric>) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let fake = FakeContainerd {
            seen: Arc::clone(&seen),
            delay,
            metrics,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .serve_with_incoming(TasksServer::new(fake), UnixListenerStream::new(listener)),
        );
        Fake {
            _dir: dir,
            endpoint: Endpoint::Unix(sock),
            seen,
        }
    }

    fn v1_metric(id: &str) -> Metric {
        let payload = crate::proto::io::containerd::cgroups::v1::Metrics {
            pids: Some(crate::proto::io::containerd::cgroups::v1::PidsStat {
                current: 2,
                limit: 0,
            }),
            ..Default::default()
        };
        Metric {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 42,
            }),
            id: id.into(),
            data: Some(prost_types::Any {
                type_url: CGROUPS_V1_METRICS.into(),
                value: payload.encode_to_vec(),
            }),
        }
    }

    #[tokio::test]
    async fn sends_namespace_filters_and_deadline_and_decodes_each_metric() {
        let odd = Metric {
            id: "odd".into(),
            data: Some(prost_types::Any {
                type_url: "example.com/Other".into(),
                value: vec![1, 2, 3],
            }),
            ..Default::default()
        };
        let empty = Metric {
            id: "empty".into(),
            ..Default::default()
        };
        let fake = serve(Duration::ZERO, vec![v1_metric("abc"), odd, empty]);
        let client =
            TaskMetricsClient::connect_lazy(&fake.endpoint, CRI_NAMESPACE, Duration::from_secs(5))
                .unwrap();
        assert_eq!(client.timeout(), Duration::from_secs(5));

        let got = client.containers(&["abc", "def"]).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].id, "abc");
        assert_eq!(got[0].type_url, CGROUPS_V1_METRICS);
        assert_eq!(
            got[0].timestamp,
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 42))
        );
        let stats = got[0].stats.as_ref().unwrap();
        assert_eq!(stats.pids.as_ref().unwrap().current, 2);
        assert!(matches!(
            &got[1].stats,
            Err(DecodeError::UnknownType { type_url }) if type_url == "example.com/Other"
        ));
        assert!(matches!(&got[2].stats, Err(DecodeError::MissingData { id }) if id == "empty"));
        assert_eq!(got[2].timestamp, None);

        // One container: the matching entry only.
        let one = client.container("abc").await.unwrap().unwrap();
        assert_eq!(one.id, "abc");
        assert!(client.container("zzz").await.unwrap().is_none());
        client.all().await.unwrap();
        // Nothing asked: no call at all (an empty filter list means "all").
        assert!(client.containers::<&str>(&[]).await.unwrap().is_empty());

        let seen = fake.seen.lock().unwrap();
        assert_eq!(
            seen.filters,
            vec![
                vec!["id==abc".to_string(), "id==def".to_string()],
                vec!["id==abc".to_string()],
                vec!["id==zzz".to_string()],
                vec![],
            ]
        );
        assert!(seen
            .namespaces
            .iter()
            .all(|n| n.as_deref() == Some(CRI_NAMESPACE)));
        assert!(seen.had_deadline.iter().all(|d| *d), "grpc-timeout sent");
    }

    #[tokio::test]
    async fn rpc_errors_carry_the_status() {
        let fake = serve(Duration::ZERO, Vec::new());
        let channel = cri_api::channel(&fake.endpoint, Duration::from_secs(1)).unwrap();
        // Bypass the client to leave the namespace out, as a bug would.
        let status = TasksClient::new(channel.clone())
            .metrics(MetricsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let err = Error::Rpc(status);
        assert!(err.to_string().contains("namespace is required"), "{err}");
        // The client itself is fine with the same fake.
        let client =
            TaskMetricsClient::new(channel, CRI_NAMESPACE, Duration::from_secs(1)).unwrap();
        assert!(client.all().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn times_out_on_a_slow_answer() {
        let fake = serve(Duration::from_secs(30), vec![v1_metric("abc")]);
        let timeout = Duration::from_millis(300);
        let client =
            TaskMetricsClient::connect_lazy(&fake.endpoint, CRI_NAMESPACE, timeout).unwrap();
        let start = Instant::now();
        let err = client.container("abc").await.unwrap_err();
        assert!(matches!(err, Error::Timeout(t) if t == timeout), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("timed out after 300ms"), "{err}");
    }

    #[tokio::test]
    async fn times_out_on_a_peer_that_never_speaks() {
        // Connections are queued by the kernel but never accepted, so the
        // HTTP/2 handshake never completes.
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("mute.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let timeout = Duration::from_millis(300);
        let client =
            TaskMetricsClient::connect_lazy(&Endpoint::Unix(sock), CRI_NAMESPACE, timeout).unwrap();
        let start = Instant::now();
        let err = client.all().await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let ep = Endpoint::Unix(dir.path().join("absent.sock"));
        let client =
            TaskMetricsClient::connect_lazy(&ep, CRI_NAMESPACE, Duration::from_secs(2)).unwrap();
        let start = Instant::now();
        let err = client.all().await.unwrap_err();
        assert!(
            matches!(&err, Error::Rpc(s) if s.code() == tonic::Code::Unavailable),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
