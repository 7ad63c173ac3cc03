//! Kubernetes CRI (`runtime.v1`) gRPC types plus endpoint handling.
//!
//! The schema is a hand-written, wire-compatible subset of the upstream API
//! (see `proto/runtime_v1_subset.proto`), compiled at build time without a
//! system `protoc`. Client and server stubs are generated: the client is what
//! the agent uses, the server side exists so tests and simulators can run a
//! fake container runtime in-process.
//!
//! Endpoint strings follow the crictl/kubelet conventions; see
//! [`parse_endpoint`] for the accepted forms.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Uri};

/// Generated `runtime.v1` messages, `*_client` and `*_server` modules.
pub mod runtime {
    /// The `runtime.v1` package.
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

/// Where the container runtime's CRI service listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Absolute path of a unix domain socket (the usual case on Linux nodes).
    Unix(PathBuf),
    /// Plain-text HTTP/2 over TCP, `host:port` (IPv6 hosts bracketed).
    Tcp { host_port: String },
}

impl fmt::Display for Endpoint {
    /// Canonical URL form, suitable for logs and for feeding back to
    /// [`parse_endpoint`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp { host_port } => write!(f, "tcp://{host_port}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_endpoint(s)
    }
}

/// Why an endpoint string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("CRI endpoint is empty")]
    Empty,
    #[error("CRI endpoint {0:?} has no socket path (expected unix:///path/to/socket)")]
    MissingPath(String),
    #[error(
        "CRI endpoint {0:?} is a relative path; use an absolute socket path, \
         unix:///path or tcp://host:port"
    )]
    RelativePath(String),
    #[error(
        "CRI endpoint {endpoint:?}: unsupported scheme {scheme:?} \
         (supported: unix, tcp, or a bare absolute path)"
    )]
    UnsupportedScheme { endpoint: String, scheme: String },
    #[error("CRI endpoint {endpoint:?}: invalid tcp address: {reason}")]
    InvalidTcp {
        endpoint: String,
        reason: &'static str,
    },
}

/// Parses a CRI endpoint as given on a command line or in a config file.
///
/// Accepted:
/// - `/run/containerd/containerd.sock`: a bare absolute path means unix;
/// - `unix:///run/containerd/containerd.sock`: the canonical form;
/// - `unix:/run/containerd/containerd.sock`: accepted because URL parsers
///   (and gRPC's naming scheme) read it as the same absolute path;
/// - `tcp://host:port`, with IPv6 hosts bracketed (`tcp://[::1]:1234`).
///
/// Rejected: empty input, relative socket paths (`unix:run/x.sock`,
/// `unix://run/x.sock`, `x.sock`), because they would depend on the agent's
/// working directory; and any other scheme. Unlike kata-monitor, which
/// prefixes `unix://` to whatever it is given, a `tcp://` endpoint is kept as
/// TCP. Scheme names are case-insensitive; no whitespace is trimmed.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, EndpointError> {
    if s.trim().is_empty() {
        return Err(EndpointError::Empty);
    }
    if s.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(s)));
    }
    let Some((scheme, rest)) = split_scheme(s) else {
        return Err(EndpointError::RelativePath(s.to_owned()));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "unix" => {
            // `unix:///p` leaves `/p` after dropping the empty authority;
            // `unix:/p` is already `/p`; anything else is relative or a host.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                Err(EndpointError::MissingPath(s.to_owned()))
            } else if path.starts_with('/') {
                Ok(Endpoint::Unix(PathBuf::from(path)))
            } else {
                Err(EndpointError::RelativePath(s.to_owned()))
            }
        }
        "tcp" => parse_tcp(s, rest),
        _ => Err(EndpointError::UnsupportedScheme {
            endpoint: s.to_owned(),
            scheme: scheme.to_owned(),
        }),
    }
}

/// Splits `scheme:rest` when the prefix is a syntactically valid URL scheme
/// (RFC 3986: a letter followed by letters, digits, `+`, `-` or `.`).
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

fn parse_tcp(endpoint: &str, rest: &str) -> Result<Endpoint, EndpointError> {
    let invalid = |reason| EndpointError::InvalidTcp {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let Some(authority) = rest.strip_prefix("//") else {
        return Err(invalid("expected tcp://host:port"));
    };
    // Tolerate the trailing slash some tools print, nothing else after it.
    let host_port = authority.strip_suffix('/').unwrap_or(authority);
    if host_port.is_empty() {
        return Err(invalid("missing host:port"));
    }
    if host_port.contains(['/', '?', '#', '@']) || host_port.contains(char::is_whitespace) {
        return Err(invalid(
            "only host:port is allowed (no path, query or user info)",
        ));
    }
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return Err(invalid("missing port"));
    };
    if host.is_empty() || host == "[]" {
        return Err(invalid("missing host"));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err(invalid("IPv6 addresses must be bracketed, e.g. [::1]:1234"));
    }
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(invalid("port must be a number in 1..=65535"));
    }
    // What the gRPC channel is built from: refused here, not when the
    // channel is made after start-up.
    if format!("http://{host_port}").parse::<Uri>().is_err() {
        return Err(invalid("host:port is not a valid URI authority"));
    }
    Ok(Endpoint::Tcp {
        host_port: host_port.to_owned(),
    })
}

/// Why a channel could not be built. Never because the runtime is down.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// tonic spawns the connection worker on the current Tokio runtime.
    #[error("a CRI channel must be created from within a Tokio runtime")]
    NoRuntime,
    #[error("invalid CRI endpoint URI: {0}")]
    InvalidUri(#[source] tonic::transport::Error),
}

/// Builds a lazy gRPC channel to `endpoint`.
///
/// Nothing is dialled here: the first RPC connects, and after a failure the
/// next RPC reconnects. So an agent can start before the container runtime,
/// and survive its restarts, without special casing. `connect_timeout`
/// bounds each dial; callers still need per-call deadlines, since a peer
/// that accepts but never answers is not a connect failure.
///
/// Must be called from within a Tokio runtime.
pub fn channel(endpoint: &Endpoint, connect_timeout: Duration) -> Result<Channel, ChannelError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ChannelError::NoRuntime);
    }
    match endpoint {
        Endpoint::Unix(path) => {
            // The URI only feeds the HTTP/2 `:authority`; the connector
            // ignores it and always dials the socket path.
            let ep = tonic::transport::Endpoint::from_static("http://localhost")
                .connect_timeout(connect_timeout);
            let path: Arc<Path> = Arc::from(path.as_path());
            let connector = tower::service_fn(move |_: Uri| {
                let path = Arc::clone(&path);
                async move {
                    let stream = tokio::net::UnixStream::connect(&*path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            });
            Ok(ep.connect_with_connector_lazy(connector))
        }
        Endpoint::Tcp { host_port } => {
            let ep = tonic::transport::Endpoint::from_shared(format!("http://{host_port}"))
                .map_err(ChannelError::InvalidUri)?
                .connect_timeout(connect_timeout);
            Ok(ep.connect_lazy())
        }
    }
}

/// The Linux part of a pod sandbox config for a pod on the node's network
/// (what the kubelet sends for `hostNetwork: true`); test beds without CNI
/// plugins run every pod so.
pub fn host_network_linux() -> runtime::v1::LinuxPodSandboxConfig {
    use runtime::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode};
    LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(runtime::v1::NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::runtime::v1::runtime_service_client::RuntimeServiceClient;
    use super::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
    use super::runtime::v1::{
        ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxFilter,
        PodSandboxMetadata, PodSandboxState, PodSandboxStateValue, VersionRequest,
    };
    use super::*;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::{Code, Request, Response, Status};

    fn unix(p: &str) -> Result<Endpoint, EndpointError> {
        Ok(Endpoint::Unix(PathBuf::from(p)))
    }

    fn tcp(hp: &str) -> Result<Endpoint, EndpointError> {
        Ok(Endpoint::Tcp {
            host_port: hp.to_owned(),
        })
    }

    #[test]
    fn parses_unix_forms() {
        let sock = "/run/containerd/containerd.sock";
        assert_eq!(parse_endpoint(sock), unix(sock));
        assert_eq!(parse_endpoint(&format!("unix://{sock}")), unix(sock));
        assert_eq!(parse_endpoint(&format!("unix:{sock}")), unix(sock));
        assert_eq!(parse_endpoint(&format!("UNIX://{sock}")), unix(sock));
        assert_eq!(parse_endpoint("/weird://name"), unix("/weird://name"));
    }

    #[test]
    fn parses_tcp_forms() {
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:1234"),
            tcp("127.0.0.1:1234")
        );
        assert_eq!(
            parse_endpoint("tcp://localhost:1234/"),
            tcp("localhost:1234")
        );
        assert_eq!(parse_endpoint("tcp://[::1]:1234"), tcp("[::1]:1234"));
    }

    #[test]
    fn rejects_bad_endpoints() {
        use EndpointError::*;
        assert_eq!(parse_endpoint(""), Err(Empty));
        assert_eq!(parse_endpoint("   "), Err(Empty));
        assert_eq!(
            parse_endpoint("unix://"),
            Err(MissingPath("unix://".into()))
        );
        for rel in [
            "x.sock",
            "run/x.sock",
            "unix:run/x.sock",
            "unix://run/x.sock",
        ] {
            assert_eq!(parse_endpoint(rel), Err(RelativePath(rel.into())), "{rel}");
        }
        assert!(matches!(
            parse_endpoint("http://host:1"),
            Err(UnsupportedScheme { scheme, .. }) if scheme == "http"
        ));
        assert!(matches!(
            parse_endpoint("npipe:////./pipe/containerd"),
            Err(UnsupportedScheme { .. })
        ));
        for bad in [
            "tcp:host:1",
            "tcp://",
            "tcp://host",
            "tcp://:1234",
            "tcp://host:0",
            "tcp://host:99999",
            "tcp://host:port",
            "tcp://host:1/path",
            "tcp://user@host:1",
            "tcp://a%b:1",
            "tcp://::1:1234",
        ] {
            assert!(
                matches!(parse_endpoint(bad), Err(InvalidTcp { .. })),
                "{bad}: {:?}",
                parse_endpoint(bad)
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["unix:///run/x.sock", "tcp://[::1]:10010"] {
            let ep: Endpoint = s.parse().unwrap();
            assert_eq!(ep.to_string(), s);
            assert_eq!(ep.to_string().parse::<Endpoint>().unwrap(), ep);
        }
    }

    #[test]
    fn error_messages_name_the_input() {
        let msg = parse_endpoint("ftp://x").unwrap_err().to_string();
        assert!(msg.contains("ftp://x") && msg.contains("\"ftp\""), "{msg}");
    }

    #[test]
    fn channel_outside_runtime_is_an_error_not_a_panic() {
        let ep = Endpoint::Unix(PathBuf::from("/nonexistent.sock"));
        assert!(matches!(
            channel(&ep, Duration::from_secs(1)),
            Err(ChannelError::NoRuntime)
        ));
    }

    /// Answers ListPodSandbox from a fixed list, honouring the state filter
    /// so that the request encoding is exercised too.
    struct FakeRuntime {
        pods: Vec<PodSandbox>,
    }

    #[tonic::async_trait]
    impl RuntimeService for FakeRuntime {
        async fn list_pod_sandbox(
            &self,
            request: Request<ListPodSandboxRequest>,
        ) -> Result<Response<ListPodSandboxResponse>, Status> {
            let want = request
                .into_inner()
                .filter
                .and_then(|f| f.state)
                .map(|s| s.state);
            let items = self
                .pods
                .iter()
                .filter(|p| want.is_none_or(|w| w == p.state))
                .cloned()
                .collect();
            Ok(Response::new(ListPodSandboxResponse { items }))
        }
    }

    fn pod(id: &str, state: PodSandboxState) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: format!("name-{id}"),
                uid: format!("uid-{id}"),
                namespace: "default".into(),
                attempt: 1,
            }),
            state: state as i32,
            created_at: 1_700_000_000_000_000_000,
            runtime_handler: "kata".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn round_trip_over_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("cri.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let fake = FakeRuntime {
            pods: vec![
                pod("a", PodSandboxState::SandboxReady),
                pod("b", PodSandboxState::SandboxNotready),
            ],
        };
        let server = tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
            RuntimeServiceServer::new(fake),
            UnixListenerStream::new(listener),
        ));

        let ch = channel(&Endpoint::Unix(sock), Duration::from_secs(2)).unwrap();
        let mut client = RuntimeServiceClient::new(ch);

        let all = client
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.items.len(), 2);
        assert_eq!(all.items[0], pod("a", PodSandboxState::SandboxReady));
        assert_eq!(all.items[1].state(), PodSandboxState::SandboxNotready);

        let ready = client
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    state: Some(PodSandboxStateValue {
                        state: PodSandboxState::SandboxReady as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ready.items.len(), 1);
        assert_eq!(ready.items[0].id, "a");

        // Methods the fake does not implement answer UNIMPLEMENTED.
        let err = client.version(VersionRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);

        server.abort();
    }

    #[tokio::test]
    async fn lazy_channel_to_missing_socket_fails_per_call_only() {
        let dir = tempfile::tempdir().unwrap();
        let ep = Endpoint::Unix(dir.path().join("absent.sock"));
        // Creating the channel must not touch the socket.
        let ch = channel(&ep, Duration::from_secs(1)).unwrap();
        let mut client = RuntimeServiceClient::new(ch);
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            client.list_pod_sandbox(ListPodSandboxRequest::default()),
        )
        .await
        .expect("a missing socket must fail fast")
        .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }

    #[tokio::test]
    async fn lazy_tcp_channel_is_created_without_dialling() {
        // Port 1 on loopback is essentially never served; creation must
        // succeed regardless.
        let ep = parse_endpoint("tcp://127.0.0.1:1").unwrap();
        assert!(channel(&ep, Duration::from_millis(100)).is_ok());
    }
}
