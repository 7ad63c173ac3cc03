//! A real Prometheus server and `promtool`, for checking what the agent
//! exposes the way a real scraper sees it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::http::{http_get, url_encode};
use crate::util::{daemon_handle, require_program, wait_until, Daemon};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for a Prometheus instance; see [`Prometheus::builder`].
pub struct PrometheusBuilder {
    scrape_interval: Duration,
    scrape_configs: Vec<String>,
    self_scrape: bool,
    rule_files: Vec<PathBuf>,
    args: Vec<String>,
    ready_timeout: Duration,
}

impl Default for PrometheusBuilder {
    fn default() -> Self {
        Self {
            scrape_interval: Duration::from_secs(1),
            scrape_configs: Vec::new(),
            self_scrape: false,
            rule_files: Vec::new(),
            args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }
}

impl PrometheusBuilder {
    /// Global scrape and rule evaluation interval (default 1s, so tests see
    /// data quickly). The scrape timeout is set equal to it.
    pub fn scrape_interval(mut self, interval: Duration) -> Self {
        self.scrape_interval = interval;
        self
    }

    /// Adds raw YAML items of the `scrape_configs:` list, written at column 0:
    ///
    /// ```yaml
    /// - job_name: agent
    ///   static_configs:
    ///     - targets: ["127.0.0.1:8090"]
    /// ```
    pub fn scrape_configs(mut self, yaml: &str) -> Self {
        self.scrape_configs.push(yaml.to_string());
        self
    }

    /// Adds a job scraping `targets` (`host:port`) at `/metrics`.
    pub fn static_job(self, job: &str, targets: &[&str]) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
        self.scrape_configs(&format!(
            "- job_name: {job:?}\n  static_configs:\n    - targets: [{}]\n",
            targets.join(", ")
        ))
    }

    /// Adds a job `prometheus` scraping this Prometheus itself, whose port
    /// is only known at start.
    pub fn self_scrape(mut self) -> Self {
        self.self_scrape = true;
        self
    }

    /// Adds a rule file (recording or alerting rules) to load.
    pub fn rule_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.rule_files.push(path.into());
        self
    }

    /// Adds an extra command-line flag, e.g. `--web.enable-lifecycle`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// How long to wait for `/-/ready` (default 60s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn config_yaml(&self, addr: SocketAddr) -> Result<String> {
        let ms = self.scrape_interval.as_millis();
        let mut y = format!(
            "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n  evaluation_interval: {ms}ms\n"
        );
        if !self.rule_files.is_empty() {
            y.push_str("rule_files:\n");
            for f in &self.rule_files {
                let abs = std::fs::canonicalize(f)
                    .with_context(|| format!("rule file {}", f.display()))?;
                y.push_str(&format!("  - {:?}\n", abs.display().to_string()));
            }
        }
        y.push_str("scrape_configs:\n");
        if self.self_scrape {
            y.push_str(&format!(
                "- job_name: prometheus\n  static_configs:\n    - targets: [\"{addr}\"]\n"
            ));
        }
        for c in &self.scrape_configs {
            y.push_str(c);
            if !c.ends_with('\n') {
                y.push('\n');
            }
        }
        Ok(y)
    }

    /// Writes the config, starts Prometheus on a free loopback port and
    /// waits until it reports ready.
    pub fn start(self) -> Result<Prometheus> {
        let bin = require_program("prometheus", "prometheus")?;
        let daemon = Daemon::start("Prometheus", self.ready_timeout, |dir, addr| {
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, self.config_yaml(addr)?)?;
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .args(&self.args);
            Ok((config, cmd))
        })?;
        Ok(Prometheus { daemon })
    }
}

daemon_handle!(
    /// A running Prometheus with its own config and storage in a temporary
    /// folder; killed and removed on drop.
    Prometheus
);

impl Prometheus {
    /// Starts Prometheus with `scrape_configs_yaml` (items of the
    /// `scrape_configs:` list, see [`PrometheusBuilder::scrape_configs`])
    /// and a 1s scrape interval.
    pub fn start(scrape_configs_yaml: &str) -> Result<Self> {
        Self::builder().scrape_configs(scrape_configs_yaml).start()
    }

    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    /// GETs an API path such as `/api/v1/targets` and returns its `data`,
    /// failing unless `status` is `success`.
    pub fn api(&self, path_and_query: &str) -> Result<Value> {
        let url = format!("{}{path_and_query}", self.url());
        let resp = http_get(&url, HTTP_TIMEOUT)?;
        let v: Value = serde_json::from_slice(&resp.body).with_context(|| {
            format!(
                "{url}: HTTP {} with a non-JSON body: {}",
                resp.status,
                resp.text()
            )
        })?;
        if v["status"] != "success" {
            bail!("{url}: HTTP {}: {v}", resp.status);
        }
        Ok(v["data"].clone())
    }

    /// Instant query; returns the API's `data` (`resultType` and `result`).
    pub fn query(&self, expr: &str) -> Result<Value> {
        self.api(&format!("/api/v1/query?query={}", url_encode(expr)))
    }

    /// Repeats `query(expr)` until `predicate` accepts its `data`, for up to
    /// `timeout`; the error shows the last answer and the log tail.
    pub fn wait_for(
        &self,
        expr: &str,
        mut predicate: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        let mut last = Value::Null;
        wait_until(timeout, Duration::from_millis(250), || {
            match self.query(expr) {
                Ok(data) if predicate(&data) => return Ok(Some(data)),
                Ok(data) => last = data,
                Err(e) => last = Value::String(format!("{e:#}")),
            }
            Ok(None)
        })
        .with_context(|| {
            format!(
                "waiting for `{expr}`; last answer: {last}; last Prometheus log lines:\n{}",
                self.log_tail(20)
            )
        })
    }

    /// `/api/v1/targets` data (`activeTargets` with `health`, `lastError`, ...).
    pub fn targets(&self) -> Result<Value> {
        self.api("/api/v1/targets")
    }

    /// `/api/v1/rules` data (loaded rule groups and their health).
    pub fn rules(&self) -> Result<Value> {
        self.api("/api/v1/rules")
    }
}

/// The samples of an instant-vector answer as (labels, value) pairs.
pub fn vector_samples(data: &Value) -> Vec<(BTreeMap<String, String>, f64)> {
    let Some(result) = data["result"].as_array() else {
        return Vec::new();
    };
    result
        .iter()
        .filter_map(|s| {
            let labels = s["metric"]
                .as_object()?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s["value"][1].as_str()?.parse().ok()?;
            Some((labels, value))
        })
        .collect()
}

/// Runs `promtool check metrics` on an exposition body.
///
/// promtool (2.42) exits 1 when the text cannot be parsed, which includes
/// a second HELP or TYPE line for one family, and 3 when it only has lint
/// hints (e.g. "no help text", counters without `_total`). Only the former
/// is an error here; the hints are returned (empty when clean) so a test
/// can assert on them if it wants to be strict.
pub fn promtool_check_metrics(body: &[u8]) -> Result<String> {
    let promtool = require_program("promtool", "prometheus")?;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning promtool")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = body.to_vec();
    // Write from a thread: promtool may answer before reading everything.
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) | Some(3) => Ok(text),
        _ => bail!("promtool check metrics failed ({}):\n{text}", out.status),
    }
}

/// Runs `promtool check rules <path>`; returns its output, or an error with
/// it when the file is invalid. Lint findings (duplicate rules) do not fail
/// promtool unless `--lint-fatal` is given, so they only show in the text.
pub fn promtool_check_rules(path: &Path) -> Result<String> {
    let promtool = require_program("promtool", "prometheus")?;
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(path)
        .output()
        .context("spawning promtool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "promtool check rules {} failed ({}):\n{text}",
            path.display(),
            out.status
        );
    }
    Ok(text)
}
