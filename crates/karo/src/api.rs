//! The `AlertReaction` custom resource (`karo.io/v1alpha1`).
//!
//! Every field of Karo v0.2.0's schema keeps its name and shape, so existing
//! manifests apply unchanged; `actions` became optional because a reaction may
//! give a native `jobTemplate` instead (the form the Karo chart README shows).
//! The fields added after Karo are all optional and default to Karo's
//! behaviour. The CRD YAML is generated from these types (`karo crd`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an alert must look like for the reaction to run, and what it runs.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "karo.io",
    version = "v1alpha1",
    kind = "AlertReaction",
    plural = "alertreactions",
    singular = "alertreaction",
    namespaced,
    status = "AlertReactionStatus",
    printcolumn = r#"{"name":"Alert Name","type":"string","jsonPath":".spec.alertName"}"#,
    printcolumn = r#"{"name":"Actions","type":"integer","jsonPath":".status.actionCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Triggered","type":"date","jsonPath":".status.lastTriggered"}"#,
    printcolumn = r#"{"name":"Trigger Count","type":"integer","jsonPath":".status.triggerCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AlertReactionSpec {
    /// Exact (case-sensitive) value of the alert's `alertname` label.
    pub alert_name: String,
    /// All must hold (AND). A name is a label, `annotations.<key>`, or a
    /// top-level alert field (`status`, `fingerprint`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Matcher>,
    /// One Job per action per trigger. Either this or `jobTemplate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Volumes added to every Job of the `actions` form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// A native `batch/v1` JobTemplateSpec, used as given (plus karo's labels
    /// and `KARO_*` env). Secrets and ConfigMaps referenced here are resolved
    /// by the kubelet, never read by karo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub job_template: Option<serde_json::Value>,
    /// Minimum time between two triggers of this reaction (Go duration:
    /// `90s`, `5m`, `1h30m`). Alerts inside the window are skipped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    /// At most this many of the reaction's Jobs active at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_jobs: Option<i32>,
    /// What a trigger does when `maxConcurrentJobs` are active: `Forbid`
    /// (default: skip it) or `Replace` (delete the active Jobs first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "concurrency_policy_schema")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// Matching alerts are counted and reported, nothing runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Triggers are recorded (status, Event with the Job names) but no Job is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// What a resolved notification of a matching alert does (Karo ignored them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_resolved: Option<OnResolved>,
    /// Seconds a finished Job is kept (default 300, as Karo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Retries of a failed Job (Kubernetes' default is 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backoff_limit: Option<i32>,
    /// Deadline of each Job, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// React only to alerts whose `namespace` label is this reaction's
    /// namespace (a tenant sees no other tenant's alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_own_namespace: Option<bool>,
    /// `Karo` (default): Karo v0.2.0's matching (unanchored regex, a missing
    /// label fails every operator). `Alertmanager`: anchored regex and a
    /// missing label reads as "", as in Alertmanager routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "matcher_semantics_schema")]
    pub matcher_semantics: Option<MatcherSemantics>,
}

/// The object schema of a field kept as given (`x-kubernetes-preserve-unknown-fields`).
fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// An optional string enum without the `null` member schemars would add
/// (kubectl's client-side validation rejects it).
fn optional_enum(values: &[&str]) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": values })
}

fn concurrency_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    optional_enum(&["Forbid", "Replace"])
}

fn matcher_semantics_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    optional_enum(&["Karo", "Alertmanager"])
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Matcher {
    pub name: String,
    pub operator: MatchOperator,
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MatchOperator {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "=~")]
    Regex,
    #[serde(rename = "!~")]
    NotRegex,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MatcherSemantics {
    Karo,
    Alertmanager,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    Forbid,
    Replace,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnResolved {
    /// Delete this alert's Jobs that are still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_jobs: Option<bool>,
    /// Run the actions (or jobTemplate) once more, with `KARO_ALERT_STATUS=resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_actions: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// The pod's service account (empty: the namespace's `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    /// A literal; when non-empty it wins over `valueFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Priority when several are given: `alertRef`, `configMapKeyRef`, `secretKeyRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_ref: Option<AlertRef>,
    /// Passed through to the pod as a native reference (karo never reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    /// Passed through to the pod as a native reference (karo never reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRef {
    /// `labels.<k>`, `annotations.<k>`, `status`, `fingerprint`, ...; `""` or
    /// `.` is the whole alert as JSON.
    pub field_path: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct KeyRef {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Exactly one source per volume.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolume>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolume {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcVolume {
    pub claim_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct HostPathVolume {
    pub path: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// Written by two parties that never overwrite each other's fields: the
/// trigger path (`lastTriggered`, `triggerCount`, `lastJobsCreated`,
/// `history`, with an optimistic-concurrency patch) and the controller
/// (conditions and Job counts).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertReactionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_triggered: Option<Time>,
    /// Triggers that ran (or would have run, with dryRun): deduplicated,
    /// cooled-down and suspended alerts are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_jobs_created: Option<Vec<JobReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Number of actions (1 for the jobTemplate form); a printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_count: Option<i32>,
    /// Of the reaction's Jobs that still exist: running ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_jobs: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last triggers (newest last, at most 10), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<TriggerRecord>>,
    /// The record that makes a repeated episode a no-op across retries,
    /// repeats and replicas: per `<fingerprint>/<firing|resolved>`, the
    /// episode last handled. A map, so each trigger patches one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes: Option<BTreeMap<String, EpisodeRecord>>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EpisodeRecord {
    /// The alert's startsAt: a new value is a new episode.
    pub starts_at: String,
    pub claimed_at: Time,
    /// Last delivery of this episode (records unseen for the retention are pruned).
    pub seen: Time,
    /// Who claimed it (replica and attempt), to recognise one's own claim.
    pub claim: String,
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobReference {
    pub name: String,
    pub namespace: String,
    pub action_name: String,
    pub created_at: Time,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerRecord {
    /// The episode key: fingerprint, startsAt and firing/resolved.
    pub episode: String,
    pub fingerprint: String,
    pub status: String,
    pub triggered_at: Time,
    #[serde(default)]
    pub jobs: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl AlertReaction {
    pub fn namespace_or_default(&self) -> String {
        self.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }
}

/// The CRD as YAML, as committed in `charts/karo/crds/`.
pub fn crd_yaml() -> anyhow::Result<String> {
    use kube::CustomResourceExt;
    let crd = AlertReaction::crd();
    let yaml = serde_yaml::to_string(&crd)?;
    // A plain `=` is YAML 1.1's "value" indicator to PyYAML-based tools.
    let yaml: Vec<String> = yaml
        .lines()
        .map(|l| match l.trim_start() {
            "- =" => l.replacen("- =", "- '='", 1),
            _ => l.to_string(),
        })
        .collect();
    Ok(format!(
        "# Generated by `karo crd` from crates/karo/src/api.rs; do not edit.\n{}\n",
        yaml.join("\n")
    ))
}
