//! What karo's end-to-end tests share: the real control plane (from
//! `KARO_E2E_KUBECONFIG`, started by `scripts/kube-control-plane.sh`), a
//! namespace per test, karo run as users run it (its binary, a kubeconfig,
//! credential files), and a stand-in for the kubelet that finishes pods.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use karo::api::AlertReaction;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use testbed::{free_port, http_get, http_post_with, workspace_bin, ChildGuard, HttpResponse};

pub const KUBECONFIG_ENV: &str = "KARO_E2E_KUBECONFIG";
pub const TOKEN: &str = "e2e-token-0123456789";

pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub ns: String,
}

impl Cluster {
    /// Connects, makes sure the CRD is installed and creates a fresh namespace.
    pub async fn new(test: &str) -> Result<Self> {
        let kubeconfig = PathBuf::from(std::env::var_os(KUBECONFIG_ENV).with_context(|| {
            format!(
                "{KUBECONFIG_ENV} is not set: run scripts/test.sh, which starts a control plane"
            )
        })?);
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = Client::try_from(cfg)?;
        install_crd(&client).await?;
        let suffix: String = format!(
            "{:x}",
            std::process::id() as u64 * 1_000_003 + nanos() % 1_000_000
        );
        let ns = format!(
            "e2e-{}-{}",
            test.replace('_', "-"),
            &suffix[suffix.len().saturating_sub(6)..]
        );
        let ns = ns
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        namespaces.create(&PostParams::default(), &obj).await?;
        Ok(Self {
            client,
            kubeconfig,
            ns,
        })
    }

    pub fn reactions(&self) -> Api<AlertReaction> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn apply(&self, manifest: Value) -> Result<AlertReaction> {
        let mut ar: AlertReaction = serde_json::from_value(manifest)?;
        ar.metadata.namespace = Some(self.ns.clone());
        Ok(self.reactions().create(&PostParams::default(), &ar).await?)
    }

    pub async fn job_list(&self) -> Result<Vec<Job>> {
        Ok(self.jobs().list(&ListParams::default()).await?.items)
    }

    /// Waits until `check` on the namespace's Jobs returns true.
    pub async fn wait_jobs(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Job]) -> bool,
    ) -> Result<Vec<Job>> {
        let start = Instant::now();
        loop {
            let jobs = self.job_list().await?;
            if check(&jobs) {
                return Ok(jobs);
            }
            if start.elapsed() > timeout {
                let names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
                bail!("{what}: not within {timeout:?}; Jobs now: {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn reaction(&self, name: &str) -> Result<AlertReaction> {
        Ok(self.reactions().get(name).await?)
    }

    /// Waits until `check` holds on the reaction's current state.
    pub async fn wait_reaction(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&AlertReaction) -> bool,
    ) -> Result<AlertReaction> {
        let start = Instant::now();
        loop {
            let ar = self.reaction(name).await?;
            if check(&ar) {
                return Ok(ar);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{what}: not within {timeout:?}; status now: {}",
                    serde_json::to_string(&ar.status)?
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stands in for the kubelet: every pod of `job` ends in `phase`.
    pub async fn finish_pods(&self, job: &str, phase: &str) -> Result<()> {
        let start = Instant::now();
        let pods = loop {
            let pods = self
                .pods()
                .list(&ListParams::default().labels(&format!("job-name={job}")))
                .await?
                .items;
            if !pods.is_empty() {
                break pods;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the Job controller made no pod for {job}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for pod in pods {
            let exit = if phase == "Succeeded" { 0 } else { 1 };
            let status = json!({"status": {
                "phase": phase,
                "containerStatuses": [{
                    "name": pod.spec.as_ref().map(|s| s.containers[0].name.clone()).unwrap_or_default(),
                    "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": exit, "reason": if exit == 0 { "Completed" } else { "Error" }}}
                }]
            }});
            self.pods()
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await?;
        }
        Ok(())
    }

    /// Reasons of the Events about the reaction `name`.
    pub async fn event_reasons(&self, name: &str) -> Result<Vec<String>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason.clone())
            .collect())
    }

    pub async fn cleanup(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// The committed CRD, server-side applied (idempotent across tests), then
/// waited on until it is Established.
async fn install_crd(client: &Client) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts/karo/crds/alertreactions.karo.io.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("karo-e2e").force();
    api.patch("alertreactions.karo.io", &pp, &Patch::Apply(&crd))
        .await?;
    let start = Instant::now();
    loop {
        let c = api.get("alertreactions.karo.io").await?;
        let established = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the CRD did not become Established");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A karo process of the binary under test, scoped to one namespace.
pub struct Karo {
    pub guard: ChildGuard,
    pub webhook: String,
    pub health: String,
    pub dir: tempfile::TempDir,
}

pub struct KaroOptions {
    pub extra: Vec<String>,
    pub htpasswd: Option<String>,
    pub identity: String,
    /// Another identity than the admin's (e.g. a service account's token).
    pub kubeconfig: Option<PathBuf>,
    /// Watch every namespace, as the chart runs it (default: the test's only).
    pub all_namespaces: bool,
}

impl Default for KaroOptions {
    fn default() -> Self {
        Self {
            extra: Vec::new(),
            htpasswd: None,
            identity: "karo-0".into(),
            kubeconfig: None,
            all_namespaces: false,
        }
    }
}

impl Karo {
    pub fn start(c: &Cluster, opts: KaroOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("{TOKEN}\n"))?;
        let webhook_port = free_port()?;
        let health_port = free_port()?;
        let mut cmd = Command::new(workspace_bin("karo")?);
        cmd.env(
            "KUBECONFIG",
            opts.kubeconfig.as_ref().unwrap_or(&c.kubeconfig),
        )
        .env("POD_NAME", &opts.identity)
        .env("LOG_LEVEL", "info,karo=debug")
        .env_remove("WEBHOOK_PORT")
        .arg(format!("--webhook-address=127.0.0.1:{webhook_port}"))
        .arg(format!("--health-address=127.0.0.1:{health_port}"))
        .arg(format!("--webhook-token-file={}", tokens.display()))
        .arg(format!("--leader-election-namespace={}", c.ns));
        if !opts.all_namespaces {
            cmd.arg(format!("--watch-namespace={}", c.ns));
        }
        if let Some(h) = &opts.htpasswd {
            let f = dir.path().join("htpasswd");
            std::fs::write(&f, h)?;
            cmd.arg(format!("--webhook-basic-auth-file={}", f.display()));
        }
        cmd.args(&opts.extra);
        let log = dir.path().join("karo.log");
        let mut guard = ChildGuard::spawn_logging_to("karo", &mut cmd, &log)?;
        let health = format!("http://127.0.0.1:{health_port}");
        let start = Instant::now();
        loop {
            guard.ensure_running()?;
            if http_get(&format!("{health}/readyz"), Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200)
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("karo not ready within 30 s:\n{}", guard.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            guard,
            webhook: format!("http://127.0.0.1:{webhook_port}/webhook"),
            health,
            dir,
        })
    }

    pub fn post(&self, auth: Option<&str>, body: &Value) -> Result<HttpResponse> {
        let mut headers = Vec::new();
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        http_post_with(
            &self.webhook,
            &headers,
            "application/json",
            body.to_string().as_bytes(),
            Duration::from_secs(10),
        )
    }

    pub fn post_ok(&self, body: &Value) -> Result<()> {
        let r = self.post(Some(&format!("Bearer {TOKEN}")), body)?;
        if r.status != 200 {
            bail!("webhook answered {}: {}", r.status, r.text());
        }
        Ok(())
    }

    /// The value of one sample of karo's /metrics (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        let Ok(r) = http_get(&format!("{}/metrics", self.health), Duration::from_secs(5)) else {
            return f64::NAN;
        };
        r.text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn log(&self) -> String {
        self.guard.log_tail(200)
    }
}

/// A v4 notification with the given alerts.
pub fn notification(status: &str, alerts: Vec<Value>) -> Value {
    json!({"version": "4", "receiver": "karo", "status": status, "groupKey": "{}:{}", "alerts": alerts})
}

pub fn alert(name: &str, fingerprint: &str, starts_at: &str, labels: &[(&str, &str)]) -> Value {
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("alertname".into(), name.into());
    json!({"status": "firing", "labels": l, "annotations": {"summary": "s"}, "startsAt": starts_at,
           "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fingerprint, "generatorURL": "http://prometheus/graph"})
}

/// Env value of `name` in the first container of `job`.
pub fn job_env(job: &Job, name: &str) -> Option<k8s_openapi::api::core::v1::EnvVar> {
    job.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .cloned()
}
