//! Command line and environment. Invalid values stop karo with exit code 2
//! and a message naming the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "karo",
    version,
    about = "Alert-reaction operator: Alertmanager webhooks -> AlertReaction matches -> Kubernetes Jobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the AlertReaction CRD (YAML) and exit.
    Crd,
    /// Print the version and exit.
    Version,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Webhook listener (Alertmanager's receiver URL points here). TLS when
    /// both --webhook-tls-cert-file and --webhook-tls-key-file are given.
    #[arg(long, env = "KARO_WEBHOOK_ADDRESS", default_value = "127.0.0.1:8080")]
    pub webhook_address: SocketAddr,
    /// Path of the webhook: POST PATH and POST PATH/{receiver}.
    #[arg(long, env = "KARO_WEBHOOK_PATH", default_value = "/webhook")]
    pub webhook_path: String,
    /// Bearer tokens, one per line (re-read when the file changes).
    #[arg(long, env = "KARO_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// htpasswd file with bcrypt hashes (re-read when it changes).
    #[arg(long, env = "KARO_WEBHOOK_BASIC_AUTH_FILE")]
    pub webhook_basic_auth_file: Option<PathBuf>,
    /// Accept webhook requests without credentials (test setups only).
    #[arg(long, env = "KARO_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// PEM certificate of the webhook listener (re-read when it changes).
    #[arg(
        long,
        env = "KARO_WEBHOOK_TLS_CERT_FILE",
        requires = "webhook_tls_key_file"
    )]
    pub webhook_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the webhook listener.
    #[arg(
        long,
        env = "KARO_WEBHOOK_TLS_KEY_FILE",
        requires = "webhook_tls_cert_file"
    )]
    pub webhook_tls_key_file: Option<PathBuf>,
    /// Largest accepted webhook body (bytes); larger ones get 413.
    #[arg(long, env = "KARO_WEBHOOK_MAX_BODY_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=64 << 20))]
    pub webhook_max_body_bytes: u64,
    /// Notifications accepted but not yet processed; beyond it, 503.
    #[arg(long, env = "KARO_QUEUE_CAPACITY", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub queue_capacity: u64,
    /// Bytes of accepted notifications waiting at most; beyond it, 503.
    #[arg(long, env = "KARO_QUEUE_MAX_BYTES", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(65536..=1 << 30))]
    pub queue_max_bytes: u64,
    /// How long the record of a handled episode is kept after its last
    /// delivery; longer than Alertmanager's repeat_interval.
    #[arg(long, env = "KARO_EPISODE_RETENTION", default_value = "168h", value_parser = parse_duration_long)]
    pub episode_retention: Duration,
    /// /healthz, /readyz and /metrics.
    #[arg(long, env = "KARO_HEALTH_ADDRESS", default_value = "127.0.0.1:8081")]
    pub health_address: SocketAddr,
    /// Run the controller only while holding a Lease (several replicas).
    #[arg(long, env = "KARO_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else the kubeconfig's).
    #[arg(long, env = "KARO_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease (Karo's, so a migration hands over cleanly).
    #[arg(
        long,
        env = "KARO_LEADER_ELECTION_ID",
        default_value = "f1c5ece8.karo.io"
    )]
    pub leader_election_id: String,
    /// Watch AlertReactions and Jobs of this namespace only (default: all;
    /// with a namespace, namespaced RBAC is enough).
    #[arg(long, env = "KARO_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Deadline of one Kubernetes API call.
    #[arg(long, env = "KARO_API_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub api_timeout: Duration,
    /// trace, debug, info, warn, error, or tracing directives.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// text or json.
    #[arg(long, env = "KARO_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn parse_duration_long(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(60) {
        return Err("must be at least 1m".into());
    }
    Ok(d)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = crate::reaction::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

impl Config {
    /// The seed chart's `WEBHOOK_PORT` environment variable, when set,
    /// replaces the port of the webhook address.
    pub fn apply_env_port(&mut self) -> anyhow::Result<()> {
        if let Ok(p) = std::env::var("WEBHOOK_PORT") {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("WEBHOOK_PORT={p:?} is not a port"))?;
            self.webhook_address.set_port(port);
        }
        Ok(())
    }

    pub fn identity() -> String {
        std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "karo".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_local_and_authenticated() {
        let cli = Cli::try_parse_from(["karo"]).unwrap();
        assert_eq!(cli.run.webhook_address.to_string(), "127.0.0.1:8080");
        assert_eq!(cli.run.health_address.to_string(), "127.0.0.1:8081");
        assert!(!cli.run.insecure_no_auth);
        assert!(cli.run.leader_elect);
        assert_eq!(cli.run.webhook_path, "/webhook");
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(Cli::try_parse_from(["karo", "--webhook-address", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["karo", "--api-timeout", "0s"]).is_err());
        assert!(Cli::try_parse_from(["karo", "--queue-capacity", "0"]).is_err());
        assert!(Cli::try_parse_from(["karo", "--log-format", "xml"]).is_err());
        assert!(
            Cli::try_parse_from(["karo", "--webhook-tls-cert-file", "c.pem"]).is_err(),
            "a cert needs its key"
        );
        assert!(Cli::try_parse_from(["karo", "--leader-elect", "false"]).is_ok());
        assert!(matches!(
            Cli::try_parse_from(["karo", "crd"]).unwrap().command,
            Some(Command::Crd)
        ));
    }
}
