//! A real Alertmanager that delivers webhook notifications to the system
//! under test, for checking a receiver against what Alertmanager really
//! sends (payload, authentication, retries, resolved notifications).
//!
//! Measured with Debian bookworm's Alertmanager 0.25.0 (`prometheus-alertmanager`):
//!
//! - With `group_wait` 0s the first notification arrives a few ms after
//!   [`Alertmanager::post_alerts`] returns. A resolved one is sent at the
//!   next `group_interval` tick after [`Alertmanager::resolve`] (within
//!   about 1s with the 1s default).
//! - **Retries.** A 5xx answer or a connection error is retried within one
//!   flush of the alert group with exponential backoff. The observed gaps
//!   between attempts (0.64, 0.92, 1.14, 1.42, 2.02, 3.53 s in one run;
//!   0.60, 0.43, 1.47 s in another) fit a 500 ms start, x1.5 per attempt and
//!   ±50% jitter. With `group_interval` 1s, a flush gave up after 10.0 s,
//!   which fits Alertmanager's per-flush limit of `max(group_interval, 10s)`,
//!   and counted one failed notification. The next flush started right away
//!   with a fresh backoff, so it never stops trying. A receiver that answers
//!   503 a few times gets the alert about 0.5–1.5 s after each failure.
//! - A 4xx answer is not retried within the flush, but every later flush
//!   (each `group_interval`) sends the notification again until one
//!   succeeds.
//! - Counters on `/metrics` (see [`WebhookStats`]):
//!   `alertmanager_notification_requests_total` and
//!   `alertmanager_notification_requests_failed_total` count HTTP attempts.
//!   `alertmanager_notifications_total` and
//!   `alertmanager_notifications_failed_total` count flushes, and a flush
//!   counts as failed only after its retries have run out. So "has it
//!   retried after a 503" is `requests_failed >= 1`, and `notifications_failed`
//!   usually stays 0.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::http::{http_get, http_post};
use crate::util::{daemon_handle, require_program, wait_until, Daemon};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the single receiver in the generated config. Webhook payloads carry
/// it as `receiver`.
pub const ALERTMANAGER_RECEIVER: &str = "sut";

/// How Alertmanager authenticates to the webhook (`http_config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    None,
    /// `basic_auth: {username, password}`: `Authorization: Basic base64(u:p)`.
    Basic {
        username: String,
        password: String,
    },
    /// `authorization: {type: Bearer, credentials}`: `Authorization: Bearer <token>`.
    Bearer(String),
}

/// Settings for an Alertmanager instance; see [`Alertmanager::builder`].
///
/// The config has one route and one receiver ([`ALERTMANAGER_RECEIVER`])
/// with one webhook. Its timings are short so tests run fast.
#[derive(Debug, Clone)]
pub struct AlertmanagerBuilder {
    webhook_url: String,
    auth: WebhookAuth,
    send_resolved: bool,
    max_alerts: Option<u32>,
    tls_ca_file: Option<PathBuf>,
    tls_client_cert: Option<(PathBuf, PathBuf)>,
    tls_server_name: Option<String>,
    tls_insecure_skip_verify: bool,
    group_by: Vec<String>,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
    resolve_timeout: Duration,
    args: Vec<String>,
    ready_timeout: Duration,
}

impl AlertmanagerBuilder {
    /// A builder delivering to `webhook_url` (e.g.
    /// `http://127.0.0.1:PORT/webhook`, or `https://...` with the TLS
    /// options). The defaults are: no auth, `send_resolved` true (as in
    /// Alertmanager), no `max_alerts`, `group_by: [alertname]`,
    /// `group_wait` 0s, `group_interval` 1s, `repeat_interval` 1h (so a
    /// test sees no repeats it did not ask for) and `resolve_timeout` 5m.
    pub fn new(webhook_url: &str) -> Self {
        Self {
            webhook_url: webhook_url.to_string(),
            auth: WebhookAuth::None,
            send_resolved: true,
            max_alerts: None,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_server_name: None,
            tls_insecure_skip_verify: false,
            group_by: vec!["alertname".to_string()],
            group_wait: Duration::ZERO,
            group_interval: Duration::from_secs(1),
            repeat_interval: Duration::from_secs(3600),
            resolve_timeout: Duration::from_secs(300),
            args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// Sends `Authorization: Basic ...` (`http_config.basic_auth`). Replaces
    /// a bearer token, because Alertmanager accepts only one of the two.
    pub fn basic_auth(mut self, username: &str, password: &str) -> Self {
        self.auth = WebhookAuth::Basic {
            username: username.to_string(),
            password: password.to_string(),
        };
        self
    }

    /// Sends `Authorization: Bearer <token>` (`http_config.authorization`).
    /// Replaces basic auth.
    pub fn bearer_token(mut self, token: &str) -> Self {
        self.auth = WebhookAuth::Bearer(token.to_string());
        self
    }

    /// Whether resolved alerts are notified too (default true).
    pub fn send_resolved(mut self, send: bool) -> Self {
        self.send_resolved = send;
        self
    }

    /// At most `n` alerts per webhook message. The rest are dropped and
    /// counted in the payload's `truncatedAlerts`. 0 means no limit.
    pub fn max_alerts(mut self, n: u32) -> Self {
        self.max_alerts = Some(n);
        self
    }

    /// CA file (PEM) to verify an https receiver (`tls_config.ca_file`).
    /// Alertmanager reads it when it loads the config, so the file must exist.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Client certificate and key (PEM) for mutual TLS.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Name to verify the receiver's certificate against, if it is not the
    /// URL's host.
    pub fn tls_server_name(mut self, name: &str) -> Self {
        self.tls_server_name = Some(name.to_string());
        self
    }

    /// Skips verification of the receiver's certificate.
    pub fn tls_insecure_skip_verify(mut self, skip: bool) -> Self {
        self.tls_insecure_skip_verify = skip;
        self
    }

    /// Labels that group alerts into one notification (default
    /// `["alertname"]`; `["..."]` groups by all labels).
    pub fn group_by(mut self, labels: &[&str]) -> Self {
        self.group_by = labels.iter().map(|l| l.to_string()).collect();
        self
    }

    /// Wait before the first notification of a new group (default 0s).
    pub fn group_wait(mut self, d: Duration) -> Self {
        self.group_wait = d;
        self
    }

    /// Interval between flushes of a group (default 1s; must not be 0). New
    /// or resolved alerts of a group are sent at the next flush, and failed
    /// notifications are sent again (see the module docs).
    pub fn group_interval(mut self, d: Duration) -> Self {
        self.group_interval = d;
        self
    }

    /// Interval before a notification that has not changed is sent again
    /// (default 1h; must not be 0).
    pub fn repeat_interval(mut self, d: Duration) -> Self {
        self.repeat_interval = d;
        self
    }

    /// How long an alert posted without `endsAt` stays firing without being
    /// posted again (global `resolve_timeout`, default 5m).
    pub fn resolve_timeout(mut self, d: Duration) -> Self {
        self.resolve_timeout = d;
        self
    }

    /// Adds an extra command-line flag, e.g. `--log.level=debug`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// How long to wait for `/-/ready` (default 60s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The config as JSON. YAML is a superset of JSON, and writing JSON keeps
    /// every URL, password and path safely quoted.
    fn config(&self) -> Value {
        let mut http_config = serde_json::Map::new();
        match &self.auth {
            WebhookAuth::None => {}
            WebhookAuth::Basic { username, password } => {
                http_config.insert(
                    "basic_auth".into(),
                    json!({"username": username, "password": password}),
                );
            }
            WebhookAuth::Bearer(token) => {
                http_config.insert(
                    "authorization".into(),
                    json!({"type": "Bearer", "credentials": token}),
                );
            }
        }
        let mut tls = serde_json::Map::new();
        if let Some(ca) = &self.tls_ca_file {
            tls.insert("ca_file".into(), json!(ca.display().to_string()));
        }
        if let Some((cert, key)) = &self.tls_client_cert {
            tls.insert("cert_file".into(), json!(cert.display().to_string()));
            tls.insert("key_file".into(), json!(key.display().to_string()));
        }
        if let Some(name) = &self.tls_server_name {
            tls.insert("server_name".into(), json!(name));
        }
        if self.tls_insecure_skip_verify {
            tls.insert("insecure_skip_verify".into(), json!(true));
        }
        if !tls.is_empty() {
            http_config.insert("tls_config".into(), Value::Object(tls));
        }
        let mut webhook = json!({
            "url": self.webhook_url,
            "send_resolved": self.send_resolved,
        });
        if let Some(n) = self.max_alerts {
            webhook["max_alerts"] = json!(n);
        }
        if !http_config.is_empty() {
            webhook["http_config"] = Value::Object(http_config);
        }
        json!({
            "global": {"resolve_timeout": duration(self.resolve_timeout)},
            "route": {
                "receiver": ALERTMANAGER_RECEIVER,
                "group_by": self.group_by,
                "group_wait": duration(self.group_wait),
                "group_interval": duration(self.group_interval),
                "repeat_interval": duration(self.repeat_interval),
            },
            "receivers": [{"name": ALERTMANAGER_RECEIVER, "webhook_configs": [webhook]}],
        })
    }

    /// Writes the config, then starts Alertmanager on a free loopback port
    /// with clustering disabled, and waits until it reports ready.
    pub fn start(self) -> Result<Alertmanager> {
        let bin = require_program("prometheus-alertmanager", "prometheus-alertmanager")
            .or_else(|_| require_program("alertmanager", "prometheus-alertmanager"))?;
        let daemon = Daemon::start("Alertmanager", self.ready_timeout, |dir, addr| {
            let config = dir.join("alertmanager.yml");
            std::fs::write(&config, serde_json::to_string_pretty(&self.config())?)?;
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg(format!("--web.external-url=http://{addr}"))
                // Empty disables clustering; otherwise it listens on
                // 0.0.0.0:9094 and tries to gossip with peers.
                .arg("--cluster.listen-address=")
                .args(&self.args);
            Ok((config, cmd))
        })?;
        Ok(Alertmanager { daemon })
    }
}

daemon_handle!(
    /// A running Alertmanager with its own config and storage in a temporary
    /// folder. It is killed and the folder removed on drop.
    /// Its `url()` is also its `--web.external-url`, so payloads carry it as
    /// `externalURL`.
    Alertmanager
);

impl Alertmanager {
    /// Starts Alertmanager delivering to `webhook_url` with the defaults of
    /// [`AlertmanagerBuilder::new`].
    pub fn start(webhook_url: &str) -> Result<Self> {
        Self::builder(webhook_url).start()
    }

    pub fn builder(webhook_url: &str) -> AlertmanagerBuilder {
        AlertmanagerBuilder::new(webhook_url)
    }

    /// POSTs `alerts` to `/api/v2/alerts`. The value is a JSON array of
    /// `{labels, annotations, startsAt, endsAt, generatorURL}`, where only
    /// `labels` is required. Without `startsAt`, Alertmanager uses the time
    /// it receives the alert. Without `endsAt`, the alert fires until
    /// `resolve_timeout`. Fails unless the answer is 200.
    pub fn post_alerts(&self, alerts: &Value) -> Result<()> {
        if !alerts.is_array() {
            bail!("alerts must be a JSON array, got {alerts}");
        }
        let url = format!("{}/api/v2/alerts", self.url());
        let body = serde_json::to_vec(alerts)?;
        let resp = http_post(&url, "application/json", &body, HTTP_TIMEOUT)
            .with_context(|| format!("{url}; last log lines:\n{}", self.log_tail(20)))?;
        if resp.status != 200 {
            bail!(
                "POST {url}: HTTP {}: {}; last log lines:\n{}",
                resp.status,
                resp.text(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// Resolves `alerts` (the array given to [`Self::post_alerts`]) by
    /// posting them again with `endsAt` set to now. With `send_resolved`,
    /// a `resolved` notification follows at the next `group_interval`.
    pub fn resolve(&self, alerts: &Value) -> Result<()> {
        let Some(list) = alerts.as_array() else {
            bail!("alerts must be a JSON array, got {alerts}");
        };
        let now = rfc3339(SystemTime::now());
        let mut resolved = Vec::with_capacity(list.len());
        for a in list {
            let mut a = a.clone();
            let Some(obj) = a.as_object_mut() else {
                bail!("an alert must be a JSON object, got {a}");
            };
            obj.insert("endsAt".into(), json!(now));
            resolved.push(a);
        }
        self.post_alerts(&Value::Array(resolved))
    }

    /// The alerts it holds (`GET /api/v2/alerts`, active ones by default).
    /// `query` is an optional query string such as `active=false`.
    pub fn alerts(&self, query: &str) -> Result<Value> {
        let mut url = format!("{}/api/v2/alerts", self.url());
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let resp = http_get(&url, HTTP_TIMEOUT)?;
        if resp.status != 200 {
            bail!("GET {url}: HTTP {}: {}", resp.status, resp.text());
        }
        serde_json::from_slice(&resp.body)
            .with_context(|| format!("{url}: non-JSON body: {}", resp.text()))
    }

    /// Its own `/metrics` exposition text.
    pub fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.url());
        let resp = http_get(&url, HTTP_TIMEOUT)?;
        if resp.status != 200 {
            bail!("GET {url}: HTTP {}: {}", resp.status, resp.text());
        }
        Ok(resp.text())
    }

    /// The sum of the samples of metric `name` whose labels include all of
    /// `labels`. Returns `None` when no sample matches.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        Ok(sum_samples(&self.metrics()?, name, labels))
    }

    /// The webhook delivery counters from `/metrics` (absent ones read as 0).
    pub fn webhook_stats(&self) -> Result<WebhookStats> {
        let text = self.metrics()?;
        let get = |name: &str| sum_samples(&text, name, &[("integration", "webhook")]);
        if get("alertmanager_notifications_total").is_none() {
            bail!("no alertmanager_notifications_total{{integration=\"webhook\"}} in /metrics");
        }
        Ok(WebhookStats {
            notifications: get("alertmanager_notifications_total").unwrap_or(0.0),
            notifications_failed: get("alertmanager_notifications_failed_total").unwrap_or(0.0),
            requests: get("alertmanager_notification_requests_total").unwrap_or(0.0),
            requests_failed: get("alertmanager_notification_requests_failed_total").unwrap_or(0.0),
        })
    }

    /// Polls [`Self::webhook_stats`] until `predicate` accepts them, for up
    /// to `timeout`. On timeout the error shows the last stats and the log tail.
    pub fn wait_for_webhook_stats(
        &self,
        mut predicate: impl FnMut(&WebhookStats) -> bool,
        timeout: Duration,
    ) -> Result<WebhookStats> {
        let mut last = String::new();
        wait_until(timeout, Duration::from_millis(100), || {
            match self.webhook_stats() {
                Ok(s) if predicate(&s) => return Ok(Some(s)),
                Ok(s) => last = format!("{s:?}"),
                Err(e) => last = format!("{e:#}"),
            }
            Ok(None)
        })
        .with_context(|| {
            format!(
                "waiting for webhook stats; last: {last}; last Alertmanager log lines:\n{}",
                self.log_tail(20)
            )
        })
    }
}

/// Webhook delivery counters of an [`Alertmanager`] (`integration="webhook"`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WebhookStats {
    /// `alertmanager_notifications_total`: flushes, one per notification
    /// however many attempts it took.
    pub notifications: f64,
    /// `alertmanager_notifications_failed_total`: flushes that gave up, after
    /// `max(group_interval, 10s)` of retries or at a 4xx answer.
    pub notifications_failed: f64,
    /// `alertmanager_notification_requests_total`: HTTP attempts.
    pub requests: f64,
    /// `alertmanager_notification_requests_failed_total`: failed HTTP
    /// attempts (non-2xx or connection errors). Each one is a retry to come.
    pub requests_failed: f64,
}

/// Formats a Go duration such as `0s`, `1s` or `1500ms`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match (ms / 1000, ms % 1000) {
        (s, 0) => format!("{s}s"),
        _ => format!("{ms}ms"),
    }
}

/// `t` as RFC 3339 in UTC with nanoseconds, e.g. `2023-11-14T22:13:20.000000000Z`,
/// the format of `startsAt` and `endsAt`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Sums the samples of `name` in exposition `text` whose labels include
/// all of `want` (parsed by prom-text).
fn sum_samples(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let exp = prom_text::parse(text.as_bytes());
    let matching = exp.samples.iter().filter(|s| {
        s.name == name
            && want.iter().all(|(k, v)| {
                exp.label(s, k)
                    .is_some_and(|raw| prom_text::unescape_label_value(raw) == *v)
            })
    });
    matching.map(|s| s.value).reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 5);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000005Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123000000Z");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_secs(60)), "60s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn sums_matching_samples() {
        let text = "# HELP alertmanager_notifications_total x\n\
            alertmanager_notifications_total{integration=\"email\"} 4\n\
            alertmanager_notifications_total{integration=\"webhook\"} 2\n\
            alertmanager_notifications_total_other{integration=\"webhook\"} 9\n\
            alertmanager_notifications_failed_total{integration=\"webhook\",reason=\"a\"} 1\n\
            alertmanager_notifications_failed_total{integration=\"webhook\",reason=\"b\\\"c\"} 2\n\
            plain 7\n";
        let wh = [("integration", "webhook")];
        assert_eq!(
            sum_samples(text, "alertmanager_notifications_total", &wh),
            Some(2.0)
        );
        assert_eq!(
            sum_samples(text, "alertmanager_notifications_failed_total", &wh),
            Some(3.0)
        );
        assert_eq!(
            sum_samples(
                text,
                "alertmanager_notifications_failed_total",
                &[("reason", "b\"c")]
            ),
            Some(2.0)
        );
        assert_eq!(sum_samples(text, "plain", &[]), Some(7.0));
        assert_eq!(sum_samples(text, "missing", &[]), None);
    }

    #[test]
    fn config_has_one_auth_and_tls() {
        let c = AlertmanagerBuilder::new("https://127.0.0.1:1/webhook")
            .basic_auth("u", "p")
            .bearer_token("t")
            .max_alerts(2)
            .tls_ca_file("/ca.pem")
            .tls_insecure_skip_verify(true)
            .send_resolved(false)
            .config();
        let wh = &c["receivers"][0]["webhook_configs"][0];
        assert_eq!(wh["url"], "https://127.0.0.1:1/webhook");
        assert_eq!(wh["send_resolved"], false);
        assert_eq!(wh["max_alerts"], 2);
        let hc = &wh["http_config"];
        assert!(hc.get("basic_auth").is_none(), "{hc}");
        assert_eq!(
            hc["authorization"],
            json!({"type": "Bearer", "credentials": "t"})
        );
        assert_eq!(
            hc["tls_config"],
            json!({"ca_file": "/ca.pem", "insecure_skip_verify": true})
        );
        assert_eq!(c["route"]["group_by"], json!(["alertname"]));
        assert_eq!(c["route"]["group_wait"], "0s");
        assert_eq!(c["route"]["group_interval"], "1s");
    }
}
