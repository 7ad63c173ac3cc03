//! Command line and environment.
//!
//! Both spellings are accepted: kata-pulse's (`--listen-address`, `-l`, env
//! vars) and kata-monitor's Go-flag style (`-listen-address`, `-log-level`,
//! `version`), so an existing kata-monitor DaemonSet can switch binaries
//! without editing its args. Every value is validated up front: a bad one is
//! a clear error and exit code 2, never a silent fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::registry::{RuntimeKind, SandboxRoot};

/// Long flags that kata-monitor users write with a single dash.
const GO_STYLE_FLAGS: &[&str] = &["listen-address", "runtime-endpoint", "log-level", "help"];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "kata-pulse",
    version,
    about = "Node agent for Kata Containers: discovers sandboxes, labels them from CRI and serves \
             their shim metrics (kata-monitor compatible) on one HTTP port.",
    after_help = "Durations: 500ms, 3s, 5m, 1h, 1h30m, or a bare number of seconds (2.5).\n\
                  kata-monitor spellings are accepted too: -listen-address, -runtime-endpoint, \
                  -log-level, `kata-pulse version`."
)]
pub struct Cli {
    /// TCP address to serve HTTP on. Keep the localhost default unless the
    /// endpoint must be reachable from the pod network.
    #[arg(
        short = 'l',
        long,
        env = "KATA_PULSE_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    pub listen_address: SocketAddr,

    /// CRI endpoint of the container manager (containerd, CRI-O): a socket
    /// path, `unix:///path` or `tcp://host:port`.
    #[arg(
        short = 'r',
        long,
        env = "RUNTIME_ENDPOINT",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub runtime_endpoint: String,

    /// Minimum time between two scrapes of one shim, in seconds. A scrape
    /// request younger than this reuses the last result; keep it below the
    /// Prometheus scrape interval.
    #[arg(
        short = 'm',
        long,
        env = "KATA_PULSE_METRICS_INTERVAL",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub metrics_interval_secs: u64,

    /// Log level: trace, debug, info, warn (or warning), error, off;
    /// kata-monitor's fatal and panic mean error. Or a tracing directive list
    /// such as `info,kata_pulse::cri=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(
        long,
        value_enum,
        env = "KATA_PULSE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Folders holding one sub-folder per sandbox (Go runtime, runtime-rs).
    /// Comma-separated; `go=PATH` or `rs=PATH` names the runtime, otherwise
    /// it is inferred from the path (`.../vc/sbs` is Go, `.../kata` runtime-rs).
    #[arg(
        long,
        env = "KATA_PULSE_SANDBOX_DIRS",
        value_delimiter = ',',
        default_value = "/run/vc/sbs,/run/kata"
    )]
    pub sandbox_dirs: Vec<String>,

    /// Deadline for one shim request: connect, headers and body (e.g. `3s`,
    /// `500ms`).
    #[arg(long, env = "KATA_PULSE_SHIM_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub shim_timeout: Duration,

    /// Deadline for one CRI call (e.g. `2s`).
    #[arg(long, env = "KATA_PULSE_CRI_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub cri_timeout: Duration,

    /// Fail `/healthz` once CRI, after having answered, stays unreachable
    /// this long (`0s`: never). For deployments that mount the CRI socket
    /// file alone: a runtime restart replaces the socket, and only a restart
    /// of the agent's container mounts the new one.
    #[arg(long, env = "KATA_PULSE_CRI_UNHEALTHY_AFTER", default_value = "0s", value_parser = parse_duration)]
    pub cri_unhealthy_after: Duration,

    /// Largest shim `/metrics` body accepted, in bytes; bigger ones fail the
    /// scrape instead of growing the agent's memory.
    #[arg(long, env = "KATA_PULSE_MAX_SHIM_BODY", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_shim_body_bytes: u64,

    /// How many shims are scraped at the same time.
    #[arg(long, env = "KATA_PULSE_SHIM_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub shim_concurrency: u64,

    /// Serve `/debug/vars` and `/debug/pprof/*` proxied to the shims. Off by
    /// default: it exposes profiling of processes running as root.
    #[arg(long, env = "KATA_PULSE_ENABLE_DEBUG_PROXY")]
    pub enable_debug_proxy: bool,

    /// Re-export every shim's raw `kata_*` families (kata-monitor's output).
    #[arg(long, env = "KATA_PULSE_KATA_METRICS", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub kata_metrics: bool,

    /// Emit cAdvisor-compatible `container_*` series for Kata pods and
    /// their host cost (`kata_pulse_pod_host_*`).
    #[arg(long, env = "KATA_PULSE_CADVISOR_METRICS", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cadvisor_metrics: bool,

    /// Where per-container usage comes from: `auto` asks containerd's task
    /// metrics (throttling, max usage, failcnt, threads, block I/O) and
    /// uses CRI `ListContainerStats` where the runtime has no such service
    /// (CRI-O) or the call fails; `containerd` or `cri` force one source.
    #[arg(
        long,
        value_enum,
        env = "KATA_PULSE_CONTAINER_STATS",
        default_value = "auto"
    )]
    pub container_stats: StatsMode,

    /// Also serve `/healthz` and `/readyz` on this address, alone: plain
    /// HTTP, no auth and connections of their own, so the kubelet's probes
    /// are answered whatever happens on the listen address (a connection
    /// flood, TLS, basic auth).
    #[arg(long, env = "KATA_PULSE_PROBE_LISTEN")]
    pub probe_listen_address: Option<SocketAddr>,

    /// TLS and basic auth, in the Prometheus exporter-toolkit format
    /// (node_exporter's `--web.config.file`); re-read when it or a file it
    /// names changes, and on SIGHUP.
    #[arg(
        long = "web.config.file",
        env = "KATA_PULSE_WEB_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Connections served at once on the listen address; more wait in the
    /// listen backlog.
    #[arg(long, env = "KATA_PULSE_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_connections: u64,

    /// Connections one client address may hold open; more get a 503 and are
    /// closed at once.
    #[arg(long, env = "KATA_PULSE_MAX_CONNECTIONS_PER_IP", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_connections_per_ip: u64,

    /// Time a client gets to send a complete request head (slowloris).
    #[arg(long, env = "KATA_PULSE_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time a kept-alive connection gets, after a response, to send its
    /// next complete request head; at most `--header-timeout`.
    #[arg(long, env = "KATA_PULSE_IDLE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Deadline of a whole response, head and body, of every endpoint (the
    /// debug proxy adds the longest profile, 600s, and --shim-timeout): no
    /// head by then is a 503, a body still in transfer is cut.
    #[arg(long, env = "KATA_PULSE_RESPONSE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub response_timeout: Duration,

    /// Time in-flight responses get to finish after SIGTERM or SIGINT; the
    /// agent then exits, cutting what is left (long debug streams).
    #[arg(long, env = "KATA_PULSE_SHUTDOWN_GRACE_PERIOD", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace_period: Duration,
}

/// The `--container-stats` choice.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsMode {
    /// containerd's task metrics where the runtime serves them, else CRI.
    Auto,
    /// containerd's task metrics only.
    Containerd,
    /// CRI `ListContainerStats` only.
    Cri,
}

/// How the HTTP server bounds its clients (docs/operations.md lists them).
#[derive(Clone, Debug)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub response_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated configuration the agent runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_address: SocketAddr,
    pub runtime_endpoint: cri_api::Endpoint,
    pub metrics_interval: Duration,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub sandbox_roots: Vec<SandboxRoot>,
    pub shim_timeout: Duration,
    pub cri_timeout: Duration,
    pub cri_unhealthy_after: Duration,
    pub max_shim_body_bytes: usize,
    pub shim_concurrency: usize,
    pub enable_debug_proxy: bool,
    pub kata_metrics: bool,
    pub cadvisor_metrics: bool,
    pub container_stats: StatsMode,
    pub probe_listen_address: Option<SocketAddr>,
    pub web_config_file: Option<PathBuf>,
    pub server: ServerLimits,
}

/// What `main` should do.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    /// Exit with this text and status (help, version, usage errors).
    Exit {
        text: String,
        code: i32,
    },
}

/// Rewrites kata-monitor's Go-style arguments into clap's spelling.
pub fn normalize_args(args: Vec<String>) -> Vec<String> {
    // `kata-monitor version` / `--version` as the only argument prints the version.
    if args.len() == 2 && args[1] == "version" {
        return vec![args[0].clone(), "--version".to_string()];
    }
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 || arg.starts_with("--") {
                return arg;
            }
            let Some(body) = arg.strip_prefix('-') else {
                return arg;
            };
            let name = body.split('=').next().unwrap_or(body);
            if GO_STYLE_FLAGS.contains(&name) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

/// Parses arguments (with environment fallbacks) into a validated [`Config`].
pub fn parse_args(args: Vec<String>) -> Invocation {
    let cli = match Cli::try_parse_from(normalize_args(args)) {
        Ok(cli) => cli,
        Err(e) => {
            return Invocation::Exit {
                text: e.render().to_string(),
                code: e.exit_code(),
            }
        }
    };
    match Config::from_cli(cli) {
        Ok(cfg) => Invocation::Run(Box::new(cfg)),
        Err(msg) => Invocation::Exit {
            text: format!("error: {msg}\n\nFor more information, try '--help'.\n"),
            code: 2,
        },
    }
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, String> {
        let runtime_endpoint = cri_api::parse_endpoint(&cli.runtime_endpoint)
            .map_err(|e| format!("invalid --runtime-endpoint {:?}: {e}", cli.runtime_endpoint))?;
        let log_filter = log_filter(&cli.log_level)?;
        let sandbox_roots = sandbox_roots(&cli.sandbox_dirs)?;
        if cli.shim_timeout.is_zero() || cli.shim_timeout > Duration::from_secs(300) {
            return Err("--shim-timeout must be between 1ms and 300s".into());
        }
        if cli.cri_timeout.is_zero() || cli.cri_timeout > Duration::from_secs(300) {
            return Err("--cri-timeout must be between 1ms and 300s".into());
        }
        let server = server_limits(&cli)?;
        Ok(Config {
            listen_address: cli.listen_address,
            runtime_endpoint,
            metrics_interval: Duration::from_secs(cli.metrics_interval_secs),
            log_filter,
            log_format: cli.log_format,
            sandbox_roots,
            shim_timeout: cli.shim_timeout,
            cri_timeout: cli.cri_timeout,
            cri_unhealthy_after: cli.cri_unhealthy_after,
            max_shim_body_bytes: usize::try_from(cli.max_shim_body_bytes).unwrap_or(usize::MAX),
            shim_concurrency: usize::try_from(cli.shim_concurrency).unwrap_or(32),
            enable_debug_proxy: cli.enable_debug_proxy,
            kata_metrics: cli.kata_metrics,
            cadvisor_metrics: cli.cadvisor_metrics,
            container_stats: cli.container_stats,
            probe_listen_address: cli.probe_listen_address,
            web_config_file: cli.web_config_file,
            server,
        })
    }
}

fn server_limits(cli: &Cli) -> Result<ServerLimits, String> {
    if cli.header_timeout.is_zero() || cli.header_timeout > Duration::from_secs(300) {
        return Err("--header-timeout must be between 1ms and 300s".into());
    }
    if cli.idle_timeout.is_zero() || cli.idle_timeout > cli.header_timeout {
        return Err("--idle-timeout must be between 1ms and --header-timeout".into());
    }
    if cli.response_timeout < Duration::from_secs(1)
        || cli.response_timeout > Duration::from_secs(3600)
    {
        return Err("--response-timeout must be between 1s and 1h".into());
    }
    if cli.shutdown_grace_period > Duration::from_secs(300) {
        return Err("--shutdown-grace-period must be at most 300s".into());
    }
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(ServerLimits {
        max_connections: count(cli.max_connections),
        max_connections_per_ip: count(cli.max_connections_per_ip),
        header_timeout: cli.header_timeout,
        idle_timeout: cli.idle_timeout,
        response_timeout: cli.response_timeout,
        shutdown_grace: cli.shutdown_grace_period,
    })
}

/// Maps a level name (kata-monitor's logrus names included) or validates a
/// tracing directive list.
pub fn log_filter(value: &str) -> Result<String, String> {
    let v = value.trim();
    let simple = match v.to_ascii_lowercase().as_str() {
        "trace" => Some("trace"),
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" | "warning" => Some("warn"),
        "error" | "fatal" | "panic" => Some("error"),
        "off" => Some("off"),
        _ => None,
    };
    if let Some(level) = simple {
        return Ok(level.to_string());
    }
    if v.is_empty() {
        return Err("--log-level must not be empty".into());
    }
    // A bare word is a target name to tracing, but here it is surely a
    // mistyped level: directive lists must say `target=level`.
    if !v.contains('=') {
        return Err(format!(
            "unknown log level {v:?} (use trace, debug, info, warn, error, or directives like info,kata_pulse=debug)"
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(v)
        .map(|_| v.to_string())
        .map_err(|e| format!("invalid --log-level / RUST_LOG {v:?}: {e}"))
}

fn sandbox_roots(values: &[String]) -> Result<Vec<SandboxRoot>, String> {
    let mut roots: Vec<SandboxRoot> = Vec::new();
    for raw in values.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (runtime, path) = match raw.split_once('=') {
            Some(("go", p)) => (RuntimeKind::Go, p),
            Some(("rs" | "runtime-rs", p)) => (RuntimeKind::RuntimeRs, p),
            Some((k, _)) => {
                return Err(format!(
                    "--sandbox-dirs: unknown runtime {k:?} in {raw:?} (use go= or rs=)"
                ))
            }
            None => (infer_runtime(raw), raw),
        };
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!("--sandbox-dirs: {raw:?} is not an absolute path"));
        }
        if roots.iter().any(|r| r.path == path) {
            return Err(format!("--sandbox-dirs: {raw:?} is listed twice"));
        }
        roots.push(SandboxRoot { path, runtime });
    }
    if roots.is_empty() {
        return Err("--sandbox-dirs needs at least one folder".into());
    }
    Ok(roots)
}

fn infer_runtime(path: &str) -> RuntimeKind {
    let p = path.trim_end_matches('/');
    if p.ends_with("/vc/sbs") {
        RuntimeKind::Go
    } else if p.ends_with("/kata") {
        RuntimeKind::RuntimeRs
    } else {
        RuntimeKind::Unknown
    }
}

/// Parses a duration: `500ms`, `3s`, `5m`, `1h`, combinations such as `1h30m`
/// (Go's spelling, which kata-monitor users know), or a bare number of
/// seconds (`2.5`). At most 24h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXAMPLES: &str = "examples: 500ms, 3s, 5m, 1h, 1h30m, or 2.5 for seconds";
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration ({EXAMPLES})"));
    }
    let bare: Option<f64> = text.parse().ok();
    let secs = match bare {
        Some(n) => n,
        None => {
            let mut total = 0.0;
            let mut rest = text;
            while !rest.is_empty() {
                let num_end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .ok_or_else(|| format!("duration {text:?} lacks a unit ({EXAMPLES})"))?;
                let unit_end = rest[num_end..]
                    .find(|c: char| c.is_ascii_digit() || c == '.')
                    .map_or(rest.len(), |i| num_end + i);
                let n: f64 = rest[..num_end]
                    .parse()
                    .map_err(|_| format!("invalid duration {text:?} ({EXAMPLES})"))?;
                let scale = match &rest[num_end..unit_end] {
                    "ms" => 0.001,
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    unit => {
                        return Err(format!(
                            "invalid duration unit {unit:?} in {text:?} (use ms, s, m or h; {EXAMPLES})"
                        ))
                    }
                };
                total += n * scale;
                rest = &rest[unit_end..];
            }
            total
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {text:?} out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        std::iter::once("kata-pulse")
            .chain(list.iter().copied())
            .map(String::from)
            .collect()
    }

    fn run(list: &[&str]) -> Result<Config, (String, i32)> {
        match parse_args(args(list)) {
            Invocation::Run(c) => Ok(*c),
            Invocation::Exit { text, code } => Err((text, code)),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.listen_address.to_string(), "127.0.0.1:8090");
        assert_eq!(
            c.runtime_endpoint,
            cri_api::Endpoint::Unix(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(c.shim_timeout, Duration::from_secs(3));
        assert_eq!(
            c.sandbox_roots,
            vec![
                SandboxRoot {
                    path: "/run/vc/sbs".into(),
                    runtime: RuntimeKind::Go
                },
                SandboxRoot {
                    path: "/run/kata".into(),
                    runtime: RuntimeKind::RuntimeRs
                },
            ]
        );
        assert!(!c.enable_debug_proxy);
        assert!(c.kata_metrics && c.cadvisor_metrics);
        assert_eq!(c.container_stats, StatsMode::Auto);
        let forced = run(&["--container-stats", "cri"]).unwrap();
        assert_eq!(forced.container_stats, StatsMode::Cri);
        assert_eq!(run(&["--container-stats", "docker"]).unwrap_err().1, 2);
    }

    #[test]
    fn metric_switches() {
        let c = run(&["--kata-metrics", "false", "--cadvisor-metrics=true"]).unwrap();
        assert!(!c.kata_metrics && c.cadvisor_metrics);
        let (_, code) = run(&["--kata-metrics", "maybe"]).unwrap_err();
        assert_eq!(code, 2);
    }

    #[test]
    fn kata_monitor_spellings() {
        let c = run(&[
            "-listen-address=0.0.0.0:9000",
            "-runtime-endpoint",
            "unix:///run/crio/crio.sock",
            "-log-level",
            "WARNING",
        ])
        .unwrap();
        assert_eq!(c.listen_address.to_string(), "0.0.0.0:9000");
        assert_eq!(
            c.runtime_endpoint,
            cri_api::Endpoint::Unix(PathBuf::from("/run/crio/crio.sock"))
        );
        assert_eq!(c.log_filter, "warn");
    }

    #[test]
    fn short_flags() {
        let c = run(&["-l", "127.0.0.1:1234", "-r", "/x.sock", "-m", "30"]).unwrap();
        assert_eq!(c.listen_address.port(), 1234);
        assert_eq!(c.metrics_interval, Duration::from_secs(30));
    }

    #[test]
    fn version_forms() {
        for form in [&["version"][..], &["--version"][..], &["-V"][..]] {
            let (text, code) = run(form).unwrap_err();
            assert_eq!(code, 0);
            assert!(text.contains("kata-pulse"), "{text}");
        }
    }

    #[test]
    fn invalid_values_exit_2() {
        for bad in [
            &["--listen-address", "nonsense"][..],
            &["-m", "0"],
            &["--log-level", "loud"],
            &["--shim-timeout", "3 parsecs"],
            &["--shim-timeout", "0s"],
            &["--sandbox-dirs", "relative/path"],
            &["--sandbox-dirs", "xx=/a"],
            &["--sandbox-dirs", ""],
            &["--runtime-endpoint", ""],
            &["--runtime-endpoint", "http://x"],
            &["--runtime-endpoint", "tcp://a%b:1"],
            &["--log-format", "xml"],
            &["--idle-timeout", "11s"],
            &["--header-timeout", "0s"],
            &["--response-timeout", "0s"],
            &["--max-connections", "0"],
            &["--max-connections-per-ip", "0"],
            &["--no-such-flag"],
        ] {
            let (text, code) = run(bad).unwrap_err();
            assert_eq!(code, 2, "{bad:?}: {text}");
            assert!(text.contains("error"), "{bad:?}: {text}");
        }
    }

    #[test]
    fn log_directives() {
        assert_eq!(log_filter("fatal").unwrap(), "error");
        assert_eq!(
            log_filter("info,kata_pulse=debug").unwrap(),
            "info,kata_pulse=debug"
        );
        assert!(log_filter("kata_pulse=notalevel").is_err());
    }

    #[test]
    fn sandbox_dir_runtimes() {
        let c = run(&["--sandbox-dirs", "go=/a,rs=/b,/c/vc/sbs,/d/kata/,/e"]).unwrap();
        let kinds: Vec<_> = c.sandbox_roots.iter().map(|r| r.runtime).collect();
        assert_eq!(
            kinds,
            vec![
                RuntimeKind::Go,
                RuntimeKind::RuntimeRs,
                RuntimeKind::Go,
                RuntimeKind::RuntimeRs,
                RuntimeKind::Unknown
            ]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1m0.5s").unwrap(),
            Duration::from_millis(60_500)
        );
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "s", "1x", "1d", "25h", "1h-1m", "3 s", "1..5s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("duration"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn cri_unhealthy_after_takes_hours() {
        let c = run(&["--cri-unhealthy-after", "1h"]).unwrap();
        assert_eq!(c.cri_unhealthy_after, Duration::from_secs(3600));
        let (text, code) = run(&["--cri-unhealthy-after", "1d"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(text.contains("use ms, s, m or h"), "{text}");
    }

    #[test]
    fn help_lists_levels_and_duration_forms() {
        let (text, code) = run(&["--help"]).unwrap_err();
        assert_eq!(code, 0);
        for word in ["warning", "fatal", "1h30m", "bare number"] {
            assert!(text.contains(word), "--help lacks {word}");
        }
    }

    #[test]
    fn help_documents_every_flag() {
        let (text, code) = run(&["--help"]).unwrap_err();
        assert_eq!(code, 0);
        for flag in [
            "--listen-address",
            "--runtime-endpoint",
            "--metrics-interval-secs",
            "--log-level",
            "--log-format",
            "--sandbox-dirs",
            "--shim-timeout",
            "--cri-timeout",
            "--cri-unhealthy-after",
            "--max-shim-body-bytes",
            "--shim-concurrency",
            "--enable-debug-proxy",
            "--kata-metrics",
            "--cadvisor-metrics",
            "--container-stats",
            "--probe-listen-address",
            "--web.config.file",
            "--max-connections",
            "--max-connections-per-ip",
            "--header-timeout",
            "--idle-timeout",
            "--response-timeout",
            "--shutdown-grace-period",
        ] {
            assert!(text.contains(flag), "missing {flag}");
        }
        let (go_help, code) = run(&["-help"]).unwrap_err();
        assert_eq!(code, 0);
        assert!(go_help.contains("--listen-address"));
    }
}
